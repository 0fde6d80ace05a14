//! A query's clauses as a plan over posting lists: unions for a clause's values, an
//! intersection for the clauses, differences for `:not` and `:missing=true`. Each clause
//! knows whether its tokens decide it alone (`exact`); candidates of inexact clauses are
//! decrypted and tested (`docs/format/index-token.md`, *Queries*).

use medvault_fhir::search::{param, Clause, Decimal, Modifier, ParamType, Prefix, QueryValue};

use super::token::{
    self, prefix_of, query_prefix, query_regions, SearchKey, DATE_LEVELS, KIND_DATE, KIND_NUMBER, KIND_QUANTITY,
    KIND_REFERENCE, KIND_REFERENCE_ID, KIND_REFERENCE_URL, KIND_STRING_EXACT, KIND_STRING_PREFIX, KIND_TOKEN_CODE,
    KIND_TOKEN_SYSTEM_CODE, KIND_TOKEN_TEXT, KIND_URI, NUMBER_LEVELS,
};
use crate::engine::SearchToken;

/// A set of resource row ids, as an expression over posting lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No resource.
    Empty,
    /// The rids that have this token.
    Token(SearchToken),
    Or(Vec<Plan>),
    And(Vec<Plan>),
    /// The first set without the second.
    Minus(Box<Plan>, Box<Plan>),
}

impl Plan {
    pub fn or(plans: Vec<Plan>) -> Plan {
        let mut children: Vec<Plan> = Vec::with_capacity(plans.len());
        for plan in plans {
            match plan {
                Plan::Empty => {}
                Plan::Or(inner) => children.extend(inner),
                other => children.push(other),
            }
        }
        children.dedup();
        match children.len() {
            0 => Plan::Empty,
            1 => children.pop().unwrap_or(Plan::Empty),
            _ => Plan::Or(children),
        }
    }

    pub fn and(plans: Vec<Plan>) -> Plan {
        let mut children: Vec<Plan> = Vec::with_capacity(plans.len());
        for plan in plans {
            match plan {
                Plan::Empty => return Plan::Empty,
                Plan::And(inner) => children.extend(inner),
                other => children.push(other),
            }
        }
        children.dedup();
        match children.len() {
            0 => Plan::Empty,
            1 => children.pop().unwrap_or(Plan::Empty),
            _ => Plan::And(children),
        }
    }

    pub fn minus(universe: Plan, minus: Plan) -> Plan {
        match (universe, minus) {
            (Plan::Empty, _) => Plan::Empty,
            (universe, Plan::Empty) => universe,
            (universe, minus) => Plan::Minus(Box::new(universe), Box::new(minus)),
        }
    }
}

/// A clause's plan and whether its tokens decide it alone.
#[derive(Debug, Clone)]
pub(crate) struct ClausePlan {
    pub plan: Plan,
    pub exact: bool,
}

/// Plans one plain clause (no chain) of `resource_type`. `approximate` turns the range of
/// an `ap` value into the range it matches. A parameter this build does not know plans as
/// `Empty`, exactly: it matches nothing.
pub(crate) fn plan_clause(
    key: &SearchKey,
    resource_type: &str,
    clause: &Clause,
    approximate: &dyn Fn(&QueryValue) -> Option<(i64, i64)>,
) -> ClausePlan {
    let Some(search_param) = param(resource_type, &clause.param) else {
        return ClausePlan { plan: Plan::Empty, exact: true };
    };
    let code = clause.param.as_str();
    let present = || Plan::Token(key.present_token(resource_type, code));
    let universe = || Plan::Token(key.type_token(resource_type));
    match &clause.modifier {
        Some(Modifier::Missing(true)) => return ClausePlan { plan: Plan::minus(universe(), present()), exact: true },
        Some(Modifier::Missing(false)) => return ClausePlan { plan: present(), exact: true },
        Some(Modifier::Not) => {
            let positive: Vec<ClausePlan> = clause
                .values
                .iter()
                .map(|value| plan_value(key, resource_type, code, search_param.kind, None, value, approximate))
                .collect();
            let exact = positive.iter().all(|p| p.exact);
            let positive = Plan::or(positive.into_iter().map(|p| p.plan).collect());
            // An inexact positive set cannot be subtracted: its complement would lose
            // resources; then every resource of the type is a candidate.
            let plan = if exact { Plan::minus(universe(), positive) } else { universe() };
            return ClausePlan { plan, exact };
        }
        Some(Modifier::Contains | Modifier::Above | Modifier::Below | Modifier::In | Modifier::NotIn) => {
            return ClausePlan { plan: present(), exact: false };
        }
        _ => {}
    }
    let values: Vec<ClausePlan> = clause
        .values
        .iter()
        .map(|value| {
            plan_value(key, resource_type, code, search_param.kind, clause.modifier.as_ref(), value, approximate)
        })
        .collect();
    let exact = values.iter().all(|v| v.exact);
    ClausePlan { plan: Plan::or(values.into_iter().map(|v| v.plan).collect()), exact }
}

fn plan_value(
    key: &SearchKey,
    resource_type: &str,
    code: &str,
    kind: ParamType,
    modifier: Option<&Modifier>,
    value: &QueryValue,
    approximate: &dyn Fn(&QueryValue) -> Option<(i64, i64)>,
) -> ClausePlan {
    let token = |kind: u8, fields: &[&[u8]]| Plan::Token(key.token(kind, resource_type, code, fields));
    let exact = |plan: Plan| ClausePlan { plan, exact: true };
    let present = || Plan::Token(key.present_token(resource_type, code));
    match value {
        QueryValue::Token { system, code: value_code } => match (system, value_code) {
            (None, Some(c)) => exact(token(KIND_TOKEN_CODE, &[c.as_bytes()])),
            (Some(Some(s)), Some(c)) => exact(token(KIND_TOKEN_SYSTEM_CODE, &[s.as_bytes(), c.as_bytes()])),
            // `|code`: the code's resources, of which those without a system match.
            (Some(None), Some(c)) => ClausePlan { plan: token(KIND_TOKEN_CODE, &[c.as_bytes()]), exact: false },
            // `system|`, `|` or nothing: no token decides it; the matcher does.
            _ => ClausePlan { plan: present(), exact: false },
        },
        QueryValue::TokenOfType { value: identifier, .. } => {
            ClausePlan { plan: token(KIND_TOKEN_CODE, &[identifier.as_bytes()]), exact: false }
        }
        QueryValue::String { exact: written, normalized } => {
            if matches!(modifier, Some(Modifier::Exact)) {
                return exact(token(KIND_STRING_EXACT, &[written.as_bytes()]));
            }
            let family = if matches!(modifier, Some(Modifier::Text)) || kind == ParamType::Token {
                KIND_TOKEN_TEXT
            } else {
                KIND_STRING_PREFIX
            };
            if normalized.is_empty() {
                return ClausePlan { plan: present(), exact: family == KIND_STRING_PREFIX };
            }
            let (prefix, decides) = query_prefix(normalized);
            ClausePlan { plan: token(family, &[prefix.as_bytes()]), exact: decides }
        }
        QueryValue::Reference { resource_type: target, id, url } => match (
            target.as_ref().or(match modifier {
                Some(Modifier::Type(target)) => Some(target),
                _ => None,
            }),
            id,
        ) {
            (Some(target), Some(id)) => exact(token(KIND_REFERENCE, &[target.as_bytes(), id.as_bytes()])),
            (None, Some(id)) => exact(token(KIND_REFERENCE_ID, &[id.as_bytes()])),
            _ => exact(token(KIND_REFERENCE_URL, &[url.as_bytes()])),
        },
        QueryValue::Uri(uri) => exact(token(KIND_URI, &[uri.as_bytes()])),
        QueryValue::Date { low, high, .. } => {
            let (low_key, high_key) = (token::date_key(*low), token::date_key(*high));
            let approximate =
                approximate(value).map_or((0, u64::MAX), |(a, b)| (token::date_key(a), token::date_key(b)));
            let prefix = prefix_of(value).unwrap_or(Prefix::Eq);
            let regions = query_regions(prefix, (low_key, high_key), (low_key, high_key), approximate);
            let plans = regions
                .into_iter()
                .flat_map(|region| key.region_tokens(resource_type, code, KIND_DATE, None, &DATE_LEVELS, region))
                .map(Plan::Token)
                .collect();
            ClausePlan { plan: Plan::or(plans), exact: false }
        }
        QueryValue::Number { low, high, value: pivot, .. } => {
            number_plan(key, resource_type, code, KIND_NUMBER, None, value, (*low, *high, *pivot))
        }
        QueryValue::Quantity { low, high, value: pivot, .. } => {
            number_plan(key, resource_type, code, KIND_QUANTITY, None, value, (*low, *high, *pivot))
        }
    }
}

fn number_plan(
    key: &SearchKey,
    resource_type: &str,
    code: &str,
    family: u8,
    unit: Option<&str>,
    value: &QueryValue,
    (low, high, pivot): (Decimal, Decimal, Decimal),
) -> ClausePlan {
    let present = Plan::Token(key.present_token(resource_type, code));
    let (Some(low_key), Some(high_key), Some(pivot_key)) =
        (token::number_key(low), token::number_key(high), token::number_key(pivot))
    else {
        return ClausePlan { plan: present, exact: false };
    };
    // `ap` on numbers: ±10 % of the value (the R4 suggestion), widened to the whole
    // line when the bounds cannot be converted.
    let spread = |d: medvault_fhir::search::Decimal| {
        let float = d.to_f64();
        (float - float.abs() * 0.25, float + float.abs() * 0.25)
    };
    let (a, _) = spread(low.min(pivot));
    let (_, b) = spread(high.max(pivot));
    let float_key = |f: f64| {
        let bits = f.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    };
    let approximate = if a.is_finite() && b.is_finite() { (float_key(a), float_key(b)) } else { (0, u64::MAX) };
    let regions =
        query_regions(prefix_of(value).unwrap_or(Prefix::Eq), (low_key, high_key), (pivot_key, pivot_key), approximate);
    let plans = regions
        .into_iter()
        .flat_map(|region| key.region_tokens(resource_type, code, family, unit, &NUMBER_LEVELS, region))
        .map(Plan::Token)
        .collect();
    ClausePlan { plan: Plan::or(plans), exact: false }
}
