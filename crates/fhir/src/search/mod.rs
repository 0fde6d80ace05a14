//! FHIR R4 search, the pure side: which search parameters each resource type has
//! (generated from the official SearchParameter definitions into
//! `model/r4-search-parameters.json`), the FHIRPath subset their expressions use, the typed
//! and normalized values a resource has for each parameter ([`extract`]), a search query
//! parsed into typed clauses ([`parse_query`]), and a reference evaluator ([`matches`],
//! [`value_matches`]) that decides whether a resource satisfies a clause by reading its JSON.
//!
//! Knows nothing of storage, indexes, keys or HTTP: the store turns [`IndexValue`]s into
//! keyed tokens, and resolves references for chains and `_has` itself.
//!
//! Semantics follow <https://hl7.org/fhir/R4/search.html>; where the specification leaves a
//! choice open, the choice is written on the item that makes it.

mod date;
mod decimal;
mod extract;
mod fhirpath;
mod matching;
mod query;
mod table;
mod value;

pub use decimal::Decimal;
pub use extract::{extract, extract_param};
pub use matching::{matches, value_matches};
pub use query::{
    parse_query, Chain, Clause, Handling, Has, Include, Modifier, Prefix, Query, QueryValue, SearchError,
    SearchWarning, Summary, Total,
};
pub use table::{param, params, supported_params, unsupported_params, ParamType, SearchParam, UnsupportedParam};
pub use value::{normalize_string, IndexEntry, IndexValue, DATE_MAX_MS, DATE_MIN_MS, EXTRACTION_VERSION};
