//! A search query parsed into typed clauses, per <https://hl7.org/fhir/R4/search.html>.

use std::fmt;

use medvault_base::limits::{SEARCH_COUNT_MAX, SEARCH_INCLUDES_MAX, SEARCH_PARAMETERS_MAX, SEARCH_VALUES_MAX};

use super::date::date_range;
use super::decimal::Decimal;
use super::table::{param, unsupported_params, ParamType, SearchParam};
use super::value::normalize_string;
use crate::compartment::parse_relative_reference;
use crate::model::model;
use crate::validate::{is_resource_type, is_valid_id};

/// How to treat a parameter the server cannot honour (R4 `Prefer: handling=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handling {
    /// Refuse the search with an error naming the parameter.
    Strict,
    /// Ignore the parameter and report it ([`SearchWarning`]); the default of R4 servers.
    #[default]
    Lenient,
}

impl Handling {
    /// From the value of a `Prefer` header: `handling=strict` → strict, anything else lenient.
    pub fn from_prefer(prefer: &str) -> Handling {
        let strict = prefer.split([',', ';']).any(|part| part.trim().eq_ignore_ascii_case("handling=strict"));
        if strict {
            Handling::Strict
        } else {
            Handling::Lenient
        }
    }
}

/// A comparison prefix of a date, number or quantity value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Prefix {
    #[default]
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
    Ap,
}

/// A parameter modifier (`code:not=…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// `:missing=true|false`; the clause then has no values.
    Missing(bool),
    /// String: the whole value, exactly as written.
    Exact,
    /// String: anywhere in the normalized value; uri: not used.
    Contains,
    /// Token: a prefix of the normalized text of the code ([`super::IndexValue::TokenText`]).
    Text,
    /// Token: the resource has no value equal to any of the clause's values.
    Not,
    /// Reference `:Patient`: the target's type.
    Type(String),
    /// Reference: matches `Reference.identifier` (the values are tokens).
    Identifier,
    /// Uri: the value is a prefix of the query URL (hierarchy above).
    Above,
    /// Uri: the query URL is a prefix of the value.
    Below,
    /// Token `:in` a value set (not supported: needs a terminology service).
    In,
    /// Token `:not-in` a value set (not supported).
    NotIn,
    /// Token `:of-type` on an Identifier: `type system|type code|value`
    /// ([`QueryValue::TokenOfType`]).
    OfType,
}

/// One value of a clause (values of one clause are alternatives: OR).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryValue {
    /// `system|code`: `system` is `None` for any system (`code`), `Some(None)` for no system
    /// (`|code`), `Some(Some(s))` for that system; `code` is `None` for `system|` (any code
    /// of the system). For `:of-type`, `system|code` is the identifier type and the
    /// identifier value is in [`QueryValue::TokenOfType`] instead.
    Token { system: Option<Option<String>>, code: Option<String> },
    /// `:of-type`: an identifier whose type has this system and code and whose value is `value`.
    TokenOfType { system: String, code: String, value: String },
    /// A string value as written (for `:exact`) and normalized (for the default and
    /// `:contains`; also the value of a token `:text`).
    String { exact: String, normalized: String },
    /// A reference: `id` alone (any type, or the type of a `:Type` modifier), `Type/id`, or
    /// an absolute URL / canonical (`url` set, no `id`). `url` is `Type/id` for the relative
    /// forms (with a known type), the value as written otherwise.
    Reference { resource_type: Option<String>, id: Option<String>, url: String },
    /// A date with its prefix and the range its precision covers, inclusive, epoch ms.
    Date { prefix: Prefix, low: i64, high: i64 },
    /// A number with its prefix and its implicit range `[low, high)`.
    Number { prefix: Prefix, value: Decimal, low: Decimal, high: Decimal },
    /// A quantity `[prefix]value|system|code`: `system` `None` for any; `code` `None` for any
    /// unit; with an empty system (`5||mg`) the code is compared to the code or the human unit.
    Quantity {
        prefix: Prefix,
        value: Decimal,
        low: Decimal,
        high: Decimal,
        system: Option<String>,
        code: Option<String>,
    },
    /// A uri as written.
    Uri(String),
}

/// One level of chaining: `subject:Patient.name=x` is the clause on `subject` with
/// `Chain { target_type: "Patient", param: "name" }`; its modifier and values are those of
/// the chained parameter (`name`) on `target_type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub target_type: String,
    pub param: String,
}

/// One parameter of the query (clauses are combined with AND).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Clause {
    /// The parameter's code on the searched type.
    pub param: String,
    pub modifier: Option<Modifier>,
    pub chain: Option<Chain>,
    /// Alternatives (OR); empty only with `:missing`.
    pub values: Vec<QueryValue>,
}

/// `_has:Observation:patient:code=1234-5`: resources referred to by an Observation, through
/// its `patient` parameter, that satisfies `code=1234-5`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Has {
    pub source_type: String,
    /// The reference parameter of `source_type` that points at the searched resource.
    pub reference_param: String,
    /// The clause on `source_type` (no chain).
    pub clause: Clause,
}

/// `_include=MedicationRequest:patient[:Patient]` (`source_type:param[:target_type]`);
/// `iterate` for `:iterate` (`:recurse` is read the same).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Include {
    pub source_type: String,
    pub param: String,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// A parsed search query. Parameters that only steer the response (`_format`, `_pretty`)
/// are dropped; paging state is the caller's (remove its own parameters before parsing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub resource_type: String,
    /// Combined with AND.
    pub clauses: Vec<Clause>,
    /// Combined with AND, with each other and with `clauses`.
    pub has: Vec<Has>,
    /// `_count`, at most `SEARCH_COUNT_MAX`; `None` when not given (the caller applies
    /// `SEARCH_COUNT_DEFAULT`).
    pub count: Option<usize>,
    /// `_sort`: (parameter code, descending), in priority order.
    pub sort: Vec<(String, bool)>,
    pub total: Option<Total>,
    pub summary: Option<Summary>,
    /// `_elements`, as given (top-level element names).
    pub elements: Vec<String>,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
}

/// A parameter ignored under lenient handling, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchWarning {
    pub parameter: String,
    pub message: String,
}

/// Why a query was refused (strict handling, or an error no handling can ignore). Messages
/// name the parameter and never repeat its value, which may be clinical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchError {
    /// The parameter is not a known parameter of the type.
    UnknownParameter { parameter: String },
    /// The value cannot be read for the parameter's type (`message` says what was expected).
    BadValue { parameter: String, message: String },
    /// The modifier does not exist or does not apply to the parameter's type.
    BadModifier { parameter: String, modifier: String },
    /// `_count` above the largest page.
    CountTooLarge { requested: usize, max: usize },
    /// A known parameter or feature this server does not support.
    Unsupported { parameter: String, message: String },
    /// More parameters or values than the limits allow.
    TooMany { what: &'static str, max: usize },
    /// The resource type is not a FHIR resource type.
    UnknownType { resource_type: String },
}

impl fmt::Display for SearchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchError::UnknownParameter { parameter } => write!(formatter, "unknown search parameter '{parameter}'"),
            SearchError::BadValue { parameter, message } => {
                write!(formatter, "invalid value for search parameter '{parameter}': {message}")
            }
            SearchError::BadModifier { parameter, modifier } => {
                write!(formatter, "modifier ':{modifier}' does not apply to search parameter '{parameter}'")
            }
            SearchError::CountTooLarge { requested, max } => {
                write!(formatter, "_count {requested} is larger than the largest page, {max}")
            }
            SearchError::Unsupported { parameter, message } => {
                write!(formatter, "search parameter '{parameter}' is not supported: {message}")
            }
            SearchError::TooMany { what, max } => write!(formatter, "too many {what} in the search (at most {max})"),
            SearchError::UnknownType { resource_type } => write!(formatter, "unknown resource type '{resource_type}'"),
        }
    }
}

impl std::error::Error for SearchError {}

/// Parses the query's `(name, value)` pairs (percent-decoded, in order) for `resource_type`.
/// Under [`Handling::Strict`] the first problem is an error; under [`Handling::Lenient`] a
/// parameter that cannot be honoured is dropped and reported as a warning (errors remain
/// for what cannot be ignored safely: an unknown type, more parameters or values than the
/// limits allow). An empty value is ignored with a warning under both (R4 search).
pub fn parse_query(
    resource_type: &str,
    pairs: &[(String, String)],
    handling: Handling,
) -> Result<(Query, Vec<SearchWarning>), SearchError> {
    if !is_resource_type(resource_type) {
        return Err(SearchError::UnknownType { resource_type: resource_type.to_string() });
    }
    if pairs.len() > SEARCH_PARAMETERS_MAX {
        return Err(SearchError::TooMany { what: "parameters", max: SEARCH_PARAMETERS_MAX });
    }
    let mut parser = QueryParser {
        query: Query { resource_type: resource_type.to_string(), ..Query::default() },
        warnings: Vec::new(),
        handling,
    };
    for (name, value) in pairs {
        match parser.pair(name, value) {
            Ok(()) => {}
            Err(error @ SearchError::TooMany { .. }) => return Err(error),
            Err(error) if handling == Handling::Strict => return Err(error),
            Err(error) => parser.warn(name, error.to_string()),
        }
    }
    if parser.query.include.len() + parser.query.revinclude.len() > SEARCH_INCLUDES_MAX {
        return Err(SearchError::TooMany { what: "_include and _revinclude parameters", max: SEARCH_INCLUDES_MAX });
    }
    Ok((parser.query, parser.warnings))
}

struct QueryParser {
    query: Query,
    warnings: Vec<SearchWarning>,
    handling: Handling,
}

fn bad_value(parameter: &str, message: impl Into<String>) -> SearchError {
    SearchError::BadValue { parameter: parameter.to_string(), message: message.into() }
}

fn unsupported(parameter: &str, message: impl Into<String>) -> SearchError {
    SearchError::Unsupported { parameter: parameter.to_string(), message: message.into() }
}

impl QueryParser {
    fn warn(&mut self, parameter: &str, message: String) {
        self.warnings.push(SearchWarning { parameter: parameter.to_string(), message });
    }

    fn pair(&mut self, name: &str, value: &str) -> Result<(), SearchError> {
        if value.is_empty() {
            self.warn(name, format!("search parameter '{name}' has no value and was ignored"));
            return Ok(());
        }
        let (base_name, modifier) = match name.split_once(':') {
            Some((base_name, modifier)) => (base_name, Some(modifier)),
            None => (name, None),
        };
        match base_name {
            "_format" | "_pretty" => Ok(()),
            "_count" => self.count(name, value, modifier),
            "_sort" => self.sort(name, value, modifier),
            "_total" => {
                no_modifier(name, modifier)?;
                self.query.total = Some(match value {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    _ => return Err(bad_value(name, "expected none, estimate or accurate")),
                });
                Ok(())
            }
            "_summary" => {
                no_modifier(name, modifier)?;
                self.query.summary = Some(match value {
                    "true" => Summary::True,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    "false" => Summary::False,
                    _ => return Err(bad_value(name, "expected true, text, data, count or false")),
                });
                Ok(())
            }
            "_elements" => self.elements(name, value, modifier),
            "_include" | "_revinclude" => self.include(name, base_name == "_revinclude", value, modifier),
            "_has" => self.has(name, value),
            "_contained" | "_containedType" | "_type" | "_list" | "_filter" | "_query" | "_text" | "_content" => {
                Err(unsupported(name, "this server does not support it"))
            }
            _ => {
                let clause = parse_clause(&self.query.resource_type, name, value)?;
                self.query.clauses.push(clause);
                Ok(())
            }
        }
    }

    fn count(&mut self, name: &str, value: &str, modifier: Option<&str>) -> Result<(), SearchError> {
        no_modifier(name, modifier)?;
        if value.is_empty() || value.len() > 9 || !value.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad_value(name, "expected a whole number of resources per page"));
        }
        let requested: usize = value.parse().map_err(|_| bad_value(name, "expected a whole number"))?;
        if requested > SEARCH_COUNT_MAX {
            let error = SearchError::CountTooLarge { requested, max: SEARCH_COUNT_MAX };
            if self.handling == Handling::Strict {
                return Err(error);
            }
            self.warn(name, format!("{error}; pages hold {SEARCH_COUNT_MAX}"));
            self.query.count = Some(SEARCH_COUNT_MAX);
            return Ok(());
        }
        self.query.count = Some(requested);
        Ok(())
    }

    fn sort(&mut self, name: &str, value: &str, modifier: Option<&str>) -> Result<(), SearchError> {
        no_modifier(name, modifier)?;
        let mut sort = Vec::new();
        for key in value.split(',') {
            let (code, descending) = match key.strip_prefix('-') {
                Some(code) => (code, true),
                None => (key, false),
            };
            if param(&self.query.resource_type, code).is_none() {
                let message =
                    format!("cannot sort by '{code}': not a supported parameter of {}", self.query.resource_type);
                return Err(if code.is_empty() {
                    bad_value(name, "an empty sort key")
                } else {
                    bad_value(name, message)
                });
            }
            sort.push((code.to_string(), descending));
        }
        if sort.len() > SEARCH_VALUES_MAX {
            return Err(SearchError::TooMany { what: "sort keys", max: SEARCH_VALUES_MAX });
        }
        self.query.sort = sort;
        Ok(())
    }

    fn elements(&mut self, name: &str, value: &str, modifier: Option<&str>) -> Result<(), SearchError> {
        no_modifier(name, modifier)?;
        let mut elements = Vec::new();
        for element in value.split(',').map(str::trim) {
            if !is_element_of(&self.query.resource_type, element) {
                return Err(bad_value(name, format!("'{element}' is not an element of {}", self.query.resource_type)));
            }
            elements.push(element.to_string());
        }
        if elements.len() > SEARCH_VALUES_MAX {
            return Err(SearchError::TooMany { what: "_elements", max: SEARCH_VALUES_MAX });
        }
        self.query.elements = elements;
        Ok(())
    }

    fn include(&mut self, name: &str, reverse: bool, value: &str, modifier: Option<&str>) -> Result<(), SearchError> {
        let iterate = match modifier {
            None => false,
            Some("iterate" | "recurse") => true,
            Some(other) => {
                return Err(SearchError::BadModifier { parameter: name.to_string(), modifier: other.to_string() })
            }
        };
        if value == "*" || value.ends_with(":*") {
            return Err(unsupported(name, "wildcard includes are not supported; name the parameter"));
        }
        let mut parts = value.split(':');
        let (Some(source_type), Some(code), target_type, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad_value(name, "expected SourceType:parameter[:TargetType]"));
        };
        if !is_resource_type(source_type) {
            return Err(bad_value(name, format!("'{source_type}' is not a resource type")));
        }
        let search_param = param(source_type, code)
            .filter(|search_param| search_param.kind == ParamType::Reference)
            .ok_or_else(|| bad_value(name, format!("'{code}' is not a reference parameter of {source_type}")))?;
        if let Some(target_type) = target_type {
            if !is_resource_type(target_type) || !allows_target(search_param, target_type) {
                return Err(bad_value(name, format!("'{source_type}:{code}' does not refer to '{target_type}'")));
            }
        }
        let searched = self.query.resource_type.as_str();
        if !iterate {
            let relevant = if reverse { allows_target(search_param, searched) } else { source_type == searched };
            if !relevant {
                let message = if reverse {
                    format!("'{source_type}:{code}' does not refer to {searched}")
                } else {
                    format!("the source type must be {searched} (or use :iterate)")
                };
                return Err(bad_value(name, message));
            }
        }
        let include = Include {
            source_type: source_type.to_string(),
            param: code.to_string(),
            target_type: target_type.map(str::to_string),
            iterate,
        };
        if reverse {
            self.query.revinclude.push(include);
        } else {
            self.query.include.push(include);
        }
        Ok(())
    }

    /// `_has:Source:reference_param:param[:modifier]=value`.
    fn has(&mut self, name: &str, value: &str) -> Result<(), SearchError> {
        let parts: Vec<&str> = name.split(':').collect();
        if parts.get(3) == Some(&"_has") {
            return Err(unsupported(name, "nested _has is not supported"));
        }
        let (source_type, reference_code, rest) = match parts.as_slice() {
            ["_has", source_type, reference_code, _, modifier @ ..] if modifier.len() <= 1 => {
                (*source_type, *reference_code, parts[3..].join(":"))
            }
            _ => return Err(bad_value(name, "expected _has:Type:reference:parameter")),
        };
        if !is_resource_type(source_type) {
            return Err(bad_value(name, format!("'{source_type}' is not a resource type")));
        }
        let reference = param(source_type, reference_code)
            .filter(|search_param| search_param.kind == ParamType::Reference)
            .ok_or_else(|| {
                bad_value(name, format!("'{reference_code}' is not a reference parameter of {source_type}"))
            })?;
        if !allows_target(reference, &self.query.resource_type) {
            let message = format!("'{source_type}:{reference_code}' does not refer to {}", self.query.resource_type);
            return Err(bad_value(name, message));
        }
        let clause = parse_clause(source_type, &rest, value).map_err(|error| rename(error, name))?;
        if clause.chain.is_some() {
            return Err(unsupported(name, "a chain inside _has is not supported"));
        }
        self.query.has.push(Has {
            source_type: source_type.to_string(),
            reference_param: reference_code.to_string(),
            clause,
        });
        Ok(())
    }
}

/// An error about an inner parameter, reported under the whole name the client wrote.
fn rename(error: SearchError, name: &str) -> SearchError {
    match error {
        SearchError::UnknownParameter { .. } => SearchError::UnknownParameter { parameter: name.to_string() },
        SearchError::BadValue { message, .. } => SearchError::BadValue { parameter: name.to_string(), message },
        SearchError::BadModifier { modifier, .. } => SearchError::BadModifier { parameter: name.to_string(), modifier },
        SearchError::Unsupported { message, .. } => SearchError::Unsupported { parameter: name.to_string(), message },
        other => other,
    }
}

fn no_modifier(name: &str, modifier: Option<&str>) -> Result<(), SearchError> {
    match modifier {
        None => Ok(()),
        Some(modifier) => Err(SearchError::BadModifier { parameter: name.to_string(), modifier: modifier.to_string() }),
    }
}

fn allows_target(search_param: &SearchParam, target_type: &str) -> bool {
    search_param.targets.is_empty() || search_param.targets.iter().any(|target| target == target_type)
}

fn is_element_of(resource_type: &str, element: &str) -> bool {
    let model = model();
    let Some(node) = model.resource_node(resource_type) else {
        return false;
    };
    model.node(node).elements.iter().any(|candidate| &*candidate.name == element)
}

/// One search parameter `name` (with its modifier or chain) and its value on `resource_type`.
fn parse_clause(resource_type: &str, name: &str, value: &str) -> Result<Clause, SearchError> {
    let (head, chained) = match name.split_once('.') {
        Some((head, chained)) => (head, Some(chained)),
        None => (name, None),
    };
    let (code, modifier_text) = match head.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (head, None),
    };
    let search_param = match param(resource_type, code) {
        Some(search_param) => search_param,
        None if unsupported_params(resource_type).iter().any(|entry| entry.code == code) => {
            let entry = unsupported_params(resource_type).iter().find(|entry| entry.code == code);
            let reason = entry.map_or_else(String::new, |entry| entry.reason.clone());
            return Err(unsupported(name, reason));
        }
        None => return Err(SearchError::UnknownParameter { parameter: name.to_string() }),
    };
    let Some(chained) = chained else {
        let modifier = modifier_text.map(|text| parse_modifier(name, search_param, text)).transpose()?;
        let values = parse_values(name, search_param, modifier.as_ref(), value)?;
        let modifier = match modifier {
            // `parse_values` accepted only `true` or `false`.
            Some(Modifier::Missing(_)) => Some(Modifier::Missing(value == "true")),
            other => other,
        };
        return Ok(Clause { param: code.to_string(), modifier, chain: None, values });
    };
    // A chain: `subject:Patient.name[:modifier]=value`.
    if search_param.kind != ParamType::Reference {
        return Err(bad_value(name, format!("'{code}' is not a reference parameter, so it cannot be chained")));
    }
    let target_type = match modifier_text {
        Some(target_type) if is_resource_type(target_type) && allows_target(search_param, target_type) => {
            target_type.to_string()
        }
        Some(other) => {
            return Err(SearchError::BadModifier { parameter: name.to_string(), modifier: other.to_string() })
        }
        None => match search_param.targets.as_slice() {
            [only] => only.clone(),
            _ => {
                let message = format!("'{code}' may refer to several types: name one, as in {code}:Patient.{chained}");
                return Err(bad_value(name, message));
            }
        },
    };
    if chained.contains('.') {
        return Err(unsupported(name, "only one level of chaining is supported"));
    }
    let (chained_code, chained_modifier) = match chained.split_once(':') {
        Some((chained_code, modifier)) => (chained_code, Some(modifier)),
        None => (chained, None),
    };
    let chained_param = param(&target_type, chained_code)
        .ok_or_else(|| SearchError::UnknownParameter { parameter: name.to_string() })?;
    let modifier = chained_modifier.map(|text| parse_modifier(name, chained_param, text)).transpose()?;
    if matches!(modifier, Some(Modifier::Missing(_))) {
        return Err(unsupported(name, ":missing in a chain is not supported"));
    }
    let values = parse_values(name, chained_param, modifier.as_ref(), value)?;
    Ok(Clause {
        param: code.to_string(),
        modifier,
        chain: Some(Chain { target_type, param: chained_code.to_string() }),
        values,
    })
}

/// A modifier's name, checked against the parameter's type. `:missing` gets its value from
/// the caller.
fn parse_modifier(name: &str, search_param: &SearchParam, text: &str) -> Result<Modifier, SearchError> {
    let bad = || SearchError::BadModifier { parameter: name.to_string(), modifier: text.to_string() };
    let modifier = match text {
        "missing" => Modifier::Missing(true),
        "exact" => Modifier::Exact,
        "contains" => Modifier::Contains,
        "text" => Modifier::Text,
        "not" => Modifier::Not,
        "identifier" => Modifier::Identifier,
        "above" => Modifier::Above,
        "below" => Modifier::Below,
        "in" => Modifier::In,
        "not-in" => Modifier::NotIn,
        "of-type" => Modifier::OfType,
        type_name if is_resource_type(type_name) => Modifier::Type(type_name.to_string()),
        _ => return Err(bad()),
    };
    let applies = match (&modifier, search_param.kind) {
        (Modifier::Missing(_), _) => true,
        (Modifier::Exact | Modifier::Contains, ParamType::String) => true,
        (Modifier::Text | Modifier::Not, ParamType::Token) => true,
        (Modifier::OfType, ParamType::Token) => true,
        (Modifier::In | Modifier::NotIn, ParamType::Token) => {
            return Err(unsupported(
                name,
                format!(":{text} needs a terminology service, which this server does not have"),
            ));
        }
        (Modifier::Above | Modifier::Below, ParamType::Token) => {
            return Err(unsupported(
                name,
                format!(":{text} needs a terminology service, which this server does not have"),
            ));
        }
        (Modifier::Above | Modifier::Below, ParamType::Uri) => true,
        (Modifier::Identifier, ParamType::Reference) => true,
        (Modifier::Type(type_name), ParamType::Reference) => allows_target(search_param, type_name),
        _ => false,
    };
    if applies {
        Ok(modifier)
    } else {
        Err(bad())
    }
}

/// The comma-separated alternatives of a value, each parsed for the parameter's type.
fn parse_values(
    name: &str,
    search_param: &SearchParam,
    modifier: Option<&Modifier>,
    value: &str,
) -> Result<Vec<QueryValue>, SearchError> {
    if let Some(Modifier::Missing(_)) = modifier {
        return match value {
            "true" | "false" => Ok(Vec::new()),
            _ => Err(bad_value(name, "expected true or false")),
        };
    }
    let alternatives = split_escaped(value, ',');
    if alternatives.len() > SEARCH_VALUES_MAX {
        return Err(SearchError::TooMany { what: "values in one parameter", max: SEARCH_VALUES_MAX });
    }
    let mut values = Vec::with_capacity(alternatives.len());
    for alternative in alternatives {
        if alternative.is_empty() {
            return Err(bad_value(name, "an empty value in a comma-separated list"));
        }
        values.push(parse_value(name, search_param, modifier, alternative)?);
    }
    Ok(values)
}

fn parse_value(
    name: &str,
    search_param: &SearchParam,
    modifier: Option<&Modifier>,
    raw: &str,
) -> Result<QueryValue, SearchError> {
    match (search_param.kind, modifier) {
        (ParamType::Token, Some(Modifier::Text)) | (ParamType::String, _) => Ok(string_value(&unescape(raw))),
        (ParamType::Token, Some(Modifier::OfType)) => match split_escaped(raw, '|').as_slice() {
            [system, code, value] if !system.is_empty() && !code.is_empty() && !value.is_empty() => {
                Ok(QueryValue::TokenOfType { system: unescape(system), code: unescape(code), value: unescape(value) })
            }
            _ => Err(bad_value(name, "expected [type system]|[type code]|[identifier value]")),
        },
        (ParamType::Token, _) | (ParamType::Reference, Some(Modifier::Identifier)) => token_value(name, raw),
        (ParamType::Reference, _) => {
            let type_from_modifier = match modifier {
                Some(Modifier::Type(type_name)) => Some(type_name.as_str()),
                _ => None,
            };
            reference_value(name, &unescape(raw), type_from_modifier)
        }
        (ParamType::Uri, _) => Ok(QueryValue::Uri(unescape(raw))),
        (ParamType::Date, _) => {
            let (prefix, rest) = split_prefix(raw);
            let (low, high) = date_range(rest).ok_or_else(|| {
                bad_value(name, "expected a date: YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]][Z|±hh:mm], after an optional prefix (eq, ne, lt, gt, le, ge, sa, eb, ap)")
            })?;
            Ok(QueryValue::Date { prefix, low, high })
        }
        (ParamType::Number, _) => {
            let (prefix, rest) = split_prefix(raw);
            let (value, low, high) =
                number_with_range(rest).ok_or_else(|| bad_value(name, "expected a number after an optional prefix"))?;
            Ok(QueryValue::Number { prefix, value, low, high })
        }
        (ParamType::Quantity, _) => quantity_value(name, raw),
    }
}

fn string_value(text: &str) -> QueryValue {
    QueryValue::String { exact: text.to_string(), normalized: normalize_string(text) }
}

/// `code`, `|code`, `system|code` or `system|`.
fn token_value(name: &str, raw: &str) -> Result<QueryValue, SearchError> {
    let parts = split_escaped(raw, '|');
    let value = match parts.as_slice() {
        [code] => QueryValue::Token { system: None, code: Some(unescape(code)) },
        ["", ""] => return Err(bad_value(name, "a token needs a system or a code")),
        ["", code] => QueryValue::Token { system: Some(None), code: Some(unescape(code)) },
        [system, ""] => QueryValue::Token { system: Some(Some(unescape(system))), code: None },
        [system, code] => QueryValue::Token { system: Some(Some(unescape(system))), code: Some(unescape(code)) },
        _ => return Err(bad_value(name, "expected [system]|[code]; escape a literal '|' as '\\|'")),
    };
    Ok(value)
}

/// `id`, `Type/id`, `Type/id/_history/v` (the version is ignored), or an absolute URL or
/// canonical (compared as written).
fn reference_value(name: &str, text: &str, type_from_modifier: Option<&str>) -> Result<QueryValue, SearchError> {
    if text.contains("://") || text.starts_with("urn:") {
        if type_from_modifier.is_some() {
            return Err(bad_value(name, "a type modifier takes an id, not a URL"));
        }
        return Ok(QueryValue::Reference { resource_type: None, id: None, url: text.to_string() });
    }
    if let Some((resource_type, id)) = parse_relative_reference(text) {
        if type_from_modifier.is_some_and(|type_name| type_name != resource_type) {
            return Err(bad_value(name, "the type modifier and the reference name different types"));
        }
        return Ok(QueryValue::Reference {
            resource_type: Some(resource_type.to_string()),
            id: Some(id.to_string()),
            url: format!("{resource_type}/{id}"),
        });
    }
    if is_valid_id(text) {
        let resource_type = type_from_modifier.map(str::to_string);
        let url = match &resource_type {
            Some(resource_type) => format!("{resource_type}/{text}"),
            None => text.to_string(),
        };
        return Ok(QueryValue::Reference { resource_type, id: Some(text.to_string()), url });
    }
    Err(bad_value(name, "expected an id, Type/id or an absolute URL"))
}

/// `[prefix]number[|system|code]`: `5.4`, `5.4|http://unitsofmeasure.org|mmol/L`, `5.4||mg`.
fn quantity_value(name: &str, raw: &str) -> Result<QueryValue, SearchError> {
    let (prefix, rest) = split_prefix(raw);
    let parts = split_escaped(rest, '|');
    let (number, system, code) = match parts.as_slice() {
        [number] => (*number, None, None),
        [number, system, code] => {
            let system = (!system.is_empty()).then(|| unescape(system));
            let code = (!code.is_empty()).then(|| unescape(code));
            (*number, system, code)
        }
        _ => return Err(bad_value(name, "expected [prefix]number[|system|code]")),
    };
    let (value, low, high) =
        number_with_range(number).ok_or_else(|| bad_value(name, "expected a number, then optionally |system|code"))?;
    Ok(QueryValue::Quantity { prefix, value, low, high, system, code })
}

fn number_with_range(text: &str) -> Option<(Decimal, Decimal, Decimal)> {
    let (value, precision) = Decimal::parse_with_precision(text)?;
    let (low, high) = value.precision_range(precision)?;
    Some((value, low, high))
}

/// A two-letter comparison prefix, if the value starts with one.
fn split_prefix(raw: &str) -> (Prefix, &str) {
    let prefix = match raw.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("lt") => Prefix::Lt,
        Some("gt") => Prefix::Gt,
        Some("le") => Prefix::Le,
        Some("ge") => Prefix::Ge,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, raw),
    };
    (prefix, &raw[2..])
}

/// Splits on `separator` where it is not escaped by a backslash; the parts keep their escapes.
fn split_escaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if character == '\\' {
            escaped = true;
        } else if character == separator {
            parts.push(&text[start..index]);
            start = index + separator.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Removes the search escapes `\,` `\|` `\$` `\\` (a backslash before anything else stays).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\\' {
            if let Some(next @ (',' | '|' | '$' | '\\')) = characters.peek().copied() {
                out.push(next);
                characters.next();
                continue;
            }
        }
        out.push(character);
    }
    out
}
