//! The search-parameter table: for each resource type, the parameters of a supported type
//! (token, reference, string, date, uri, number, quantity) with their FHIRPath expression
//! restricted to that type, plus the `Resource` parameters `_id`, `_lastUpdated`, `_tag`,
//! `_profile`, `_security` and `_source`.

/// The type of a search parameter (R4 `SearchParameter.type`), for the supported types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Token,
    Reference,
    String,
    Date,
    Uri,
    Number,
    Quantity,
}

impl ParamType {
    /// The R4 code of the type (`token`, `reference`, …), as in a CapabilityStatement.
    pub fn code(self) -> &'static str {
        match self {
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::String => "string",
            ParamType::Date => "date",
            ParamType::Uri => "uri",
            ParamType::Number => "number",
            ParamType::Quantity => "quantity",
        }
    }
}

/// One supported search parameter of one resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParam {
    /// The name used in a query (`code`, `subject`, `_lastUpdated`).
    pub code: String,
    /// The resource type this entry is for (a parameter with several bases has one entry
    /// per type, each with the part of the expression for that type).
    pub base: String,
    pub kind: ParamType,
    /// The FHIRPath expression, restricted to `base`.
    pub expression: String,
    /// For a reference parameter, the resource types it may point to (sorted).
    pub targets: Vec<String>,
    /// The canonical URL of the official SearchParameter (for a CapabilityStatement).
    pub url: String,
}

/// A parameter of the definitions that this server does not support, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedParam {
    pub code: String,
    pub base: String,
    /// `composite`, `special`, or the supported type whose expression could not be handled.
    pub kind: String,
    pub reason: String,
}

/// The supported parameters of a resource type (empty for an unknown type).
pub fn params(resource_type: &str) -> &'static [SearchParam] {
    let _ = resource_type;
    &[]
}

/// One supported parameter of a resource type by its code.
pub fn param(resource_type: &str, code: &str) -> Option<&'static SearchParam> {
    params(resource_type).iter().find(|search_param| search_param.code == code)
}

/// The same as [`params`]; named for the CapabilityStatement, which lists exactly these.
pub fn supported_params(resource_type: &str) -> &'static [SearchParam] {
    params(resource_type)
}

/// The parameters of the definitions for this type that are not supported.
pub fn unsupported_params(resource_type: &str) -> &'static [UnsupportedParam] {
    let _ = resource_type;
    &[]
}
