//! The reference evaluator: whether a resource satisfies a clause, computed directly from
//! its JSON with the rules of <https://hl7.org/fhir/R4/search.html>. It is the oracle the
//! store's indexes are tested against, and the executor's post-filter.
//!
//! Choices the specification leaves open:
//! - `ap` (approximately): a number or quantity within 10 % of the search value (or its
//!   implicit range, if wider); a date range within a tenth of the search range's own width
//!   on either side (a day: ±2.4 hours), since the specification's "10 % of the gap between
//!   now and the date" would make results depend on the clock.
//! - a number or quantity in a resource is exact: `eq` asks that it lie in the search value's
//!   implicit range (`100` → `[99.5, 100.5)`); a `Range` or comparator must lie within it.
//! - quantities compare units by system and code, or by code or human unit when the search
//!   gives no system; there is no UCUM unit conversion (`1000 mg` does not match `1 g`).
//! - `:text` on a token: like a string search, a prefix of the normalized text (a
//!   `CodeableConcept.text`, a `Coding.display`, an `Identifier.type.text`).
//! - a reference by id matches relative references only; an absolute URL matches the same
//!   URL (a canonical without `|version` matches every version).

use serde_json::Value;

use super::decimal::Decimal;
use super::extract::extract_param;
use super::fhirpath::Item;
use super::query::{Clause, Modifier, Prefix, QueryValue};
use super::table::{param, SearchParam};
use super::value::IndexValue;

/// Whether `resource` satisfies `clause`: a plain clause (a chained clause is false here;
/// the caller resolves chains and `_has`). `:missing=true` holds when the resource has no
/// value for the parameter; `:not` when none of its values matches any of the clause's.
pub fn matches(resource: &Value, clause: &Clause) -> bool {
    if clause.chain.is_some() {
        return false;
    }
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    let Some(search_param) = param(resource_type, &clause.param) else {
        return false;
    };
    let values = extract_param(resource, search_param);
    let any_matches = |modifier: Option<&Modifier>| {
        clause.values.iter().any(|query| values.iter().any(|value| value_matches(search_param, modifier, query, value)))
    };
    match &clause.modifier {
        Some(Modifier::OfType) => {
            clause.values.iter().any(|query| identifier_of_type_matches(resource, search_param, query))
        }
        Some(Modifier::Missing(missing)) => values.is_empty() == *missing,
        Some(Modifier::Not) => !any_matches(None),
        modifier => any_matches(modifier.as_ref()),
    }
}

/// Whether one value of a resource satisfies one query value under `modifier`. For `:not`
/// this is the positive test (the clause negates it over all values); for `:missing` it is
/// not called. For `:of-type` it compares the identifier's value only (an index value does
/// not carry the identifier's type): a necessary condition, which [`matches`] completes.
/// `param` is the parameter the value belongs to (the rules depend on the values alone today).
pub fn value_matches(param: &SearchParam, modifier: Option<&Modifier>, query: &QueryValue, value: &IndexValue) -> bool {
    let _ = param;
    match (query, value) {
        (QueryValue::Token { system, code }, IndexValue::Token { system: value_system, code: value_code }) => {
            let system_matches = match system {
                None => true,
                Some(None) => value_system.is_none(),
                Some(Some(system)) => value_system.as_deref() == Some(system.as_str()),
            };
            let code_matches = code.as_ref().is_none_or(|code| code == value_code);
            !matches!(modifier, Some(Modifier::Text)) && system_matches && code_matches
        }
        (QueryValue::TokenOfType { value: identifier, .. }, IndexValue::Token { code, .. }) => {
            matches!(modifier, Some(Modifier::OfType)) && code == identifier
        }
        (QueryValue::String { normalized, .. }, IndexValue::TokenText(text)) => {
            matches!(modifier, Some(Modifier::Text)) && text.starts_with(normalized.as_str())
        }
        (QueryValue::String { normalized, .. }, IndexValue::String(text)) => match modifier {
            None => text.starts_with(normalized.as_str()),
            Some(Modifier::Contains) => text.contains(normalized.as_str()),
            _ => false,
        },
        (QueryValue::String { exact, .. }, IndexValue::StringExact(text)) => {
            matches!(modifier, Some(Modifier::Exact)) && text == exact
        }
        (
            QueryValue::Reference { resource_type, id, url },
            IndexValue::Reference { resource_type: value_type, id: value_id, url: value_url },
        ) => match id {
            Some(id) => {
                value_id.as_deref() == Some(id.as_str())
                    && resource_type.as_ref().is_none_or(|resource_type| value_type.as_ref() == Some(resource_type))
            }
            None => value_url == url || value_url.split_once('|').is_some_and(|(canonical, _)| canonical == url),
        },
        (QueryValue::Date { prefix, low, high }, IndexValue::Date { low: value_low, high: value_high }) => {
            date_matches(*prefix, (*low, *high), (*value_low, *value_high))
        }
        (
            QueryValue::Number { prefix, value, low, high },
            IndexValue::Number { low: value_low, high: value_high, .. },
        ) => number_matches(*prefix, *value, (*low, *high), (*value_low, *value_high)),
        (
            QueryValue::Quantity { prefix, value, low, high, system, code },
            IndexValue::Quantity {
                low: value_low, high: value_high, system: value_system, code: value_code, unit, ..
            },
        ) => {
            let system_matches = system.as_ref().is_none_or(|system| value_system.as_ref() == Some(system));
            let code_matches = match (code, system) {
                (None, _) => true,
                (Some(code), Some(_)) => value_code.as_ref() == Some(code),
                (Some(code), None) => value_code.as_ref() == Some(code) || unit.as_ref() == Some(code),
            };
            system_matches && code_matches && number_matches(*prefix, *value, (*low, *high), (*value_low, *value_high))
        }
        (QueryValue::Uri(uri), IndexValue::Uri(value_uri)) => match modifier {
            None => value_uri == uri,
            Some(Modifier::Below) => value_uri.starts_with(uri.as_str()),
            Some(Modifier::Above) => uri.starts_with(value_uri.as_str()),
            _ => false,
        },
        _ => false,
    }
}

/// R4's prefixes on ranges: `search` is the search value's range, `target` the resource's,
/// both inclusive in epoch milliseconds (open ends are `i64::MIN` / `i64::MAX`).
fn date_matches(prefix: Prefix, search: (i64, i64), target: (i64, i64)) -> bool {
    let (search_low, search_high) = search;
    let (target_low, target_high) = target;
    let contains = search_low <= target_low && target_high <= search_high;
    match prefix {
        Prefix::Eq => contains,
        Prefix::Ne => !contains,
        // The range above the search value intersects the target.
        Prefix::Gt => target_high > search_high,
        // The range below the search value intersects the target.
        Prefix::Lt => target_low < search_low,
        Prefix::Ge => target_high > search_high || contains,
        Prefix::Le => target_low < search_low || contains,
        Prefix::Sa => target_low > search_high,
        Prefix::Eb => target_high < search_low,
        Prefix::Ap => {
            let margin = (search_high - search_low) / 10;
            target_low <= search_high.saturating_add(margin) && target_high >= search_low.saturating_sub(margin)
        }
    }
}

/// R4's prefixes on numbers: `eq`/`ne` use the search value's implicit range `[low, high)`;
/// the others compare with the exact search value. The target is `[low, high]`, an absent
/// bound open.
fn number_matches(
    prefix: Prefix,
    value: Decimal,
    search: (Decimal, Decimal),
    target: (Option<Decimal>, Option<Decimal>),
) -> bool {
    let (search_low, search_high) = search;
    let (target_low, target_high) = target;
    // An open bound is below (low) or above (high) every value.
    let low_below =
        |x: Decimal, inclusive: bool| target_low.is_none_or(|low| if inclusive { low <= x } else { low < x });
    let high_above =
        |x: Decimal, inclusive: bool| target_high.is_none_or(|high| if inclusive { high >= x } else { high > x });
    let within = match (target_low, target_high) {
        (Some(low), Some(high)) => search_low <= low && high < search_high,
        _ => false,
    };
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => !within,
        Prefix::Gt => high_above(value, false),
        Prefix::Lt => low_below(value, false),
        Prefix::Ge => high_above(value, true),
        Prefix::Le => low_below(value, true),
        Prefix::Sa => target_low.is_some_and(|low| low > value),
        Prefix::Eb => target_high.is_some_and(|high| high < value),
        Prefix::Ap => {
            let tenth = Decimal::new(value.mantissa().abs(), value.exponent() - 1).unwrap_or(Decimal::ZERO);
            let low = value.checked_sub(tenth).map_or(search_low, |low| low.min(search_low));
            let high = value.checked_add(tenth).map_or(search_high, |high| high.max(search_high));
            low_below(high, true) && high_above(low, true)
        }
    }
}

/// `:of-type`: an Identifier of the parameter whose `type` has a coding with the query's
/// system and code, and whose `value` is the query's value.
fn identifier_of_type_matches(resource: &Value, search_param: &SearchParam, query: &QueryValue) -> bool {
    let QueryValue::TokenOfType { system, code, value } = query else {
        return false;
    };
    search_param.compiled.evaluate(resource).iter().any(|item| {
        let Item::Value { json, type_name: "Identifier", .. } = item else {
            return false;
        };
        let codings = json.get("type").and_then(|concept| concept.get("coding")).and_then(Value::as_array);
        json.get("value").and_then(Value::as_str) == Some(value.as_str())
            && codings.into_iter().flatten().any(|coding| {
                coding.get("system").and_then(Value::as_str) == Some(system.as_str())
                    && coding.get("code").and_then(Value::as_str) == Some(code.as_str())
            })
    })
}
