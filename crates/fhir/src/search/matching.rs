//! The reference evaluator: whether a resource satisfies a clause, computed directly from
//! its JSON. Used as the oracle of the store's indexes and as the executor's post-filter.

use serde_json::Value;

use super::query::{Clause, Modifier, QueryValue};
use super::table::SearchParam;
use super::value::IndexValue;

/// Whether `resource` satisfies `clause` (a plain clause: a chained clause is false here;
/// the caller resolves chains and `_has`).
pub fn matches(resource: &Value, clause: &Clause) -> bool {
    let _ = (resource, clause);
    false
}

/// Whether one value of a resource satisfies one query value under `modifier`. For `:not`
/// this is the positive test (the clause negates it over all values); for `:missing` it is
/// not called.
pub fn value_matches(param: &SearchParam, modifier: Option<&Modifier>, query: &QueryValue, value: &IndexValue) -> bool {
    let _ = (param, modifier, query, value);
    false
}
