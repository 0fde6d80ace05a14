//! The values a resource has for its search parameters, normalized for matching.

use super::decimal::Decimal;

/// The earliest time a date range can start: an open start (`Period` without `start`).
pub const DATE_MIN_MS: i64 = i64::MIN;
/// The latest time a date range can end: an open end (`Period` without `end`).
pub const DATE_MAX_MS: i64 = i64::MAX;

/// One value of one search parameter of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexValue {
    /// A code in an optional system: `Coding` (system, code), each coding of a
    /// `CodeableConcept`, `Identifier` (system, value), `ContactPoint` (system-less value),
    /// a `code`, `id`, `uri` or `string` searched as a token, a `boolean` (`true`/`false`).
    Token { system: Option<String>, code: String },
    /// The text of a token value, normalized as [`normalize_string`]: a `CodeableConcept`'s
    /// `text`, a `Coding`'s `display`, an `Identifier`'s `type.text`. For `:text`.
    TokenText(String),
    /// A string value normalized by [`normalize_string`] (the default string match is a prefix
    /// of this).
    String(String),
    /// The same string as written (for `:exact`).
    StringExact(String),
    /// A reference. `url` is the reference as a comparable string: `Type/id` for a relative
    /// literal reference (without `_history`), the absolute URL or canonical otherwise (a
    /// canonical's `|version` kept). `resource_type` and `id` are set for relative
    /// references only; `resource_type` alone for an absolute URL ending in `Type/id`
    /// (so the target type is known), never `id`. Contained (`#`) references are not indexed.
    /// A `Reference.identifier` gives a [`IndexValue::Token`] entry of the same parameter
    /// (for `:identifier`).
    Reference { resource_type: Option<String>, id: Option<String>, url: String },
    /// A time range, inclusive at both ends, in milliseconds since the Unix epoch (UTC). A
    /// partial date covers its whole precision (`2020` → 2020-01-01T00:00:00.000Z ..=
    /// 2020-12-31T23:59:59.999Z); an open `Period` end is [`DATE_MIN_MS`] / [`DATE_MAX_MS`].
    Date { low: i64, high: i64 },
    /// A number, with the range its written precision implies (`100` → `[99.5, 100.5)`,
    /// `low` inclusive, `high` exclusive); `value` is `None` for a `Range`, whose bounds are
    /// then `low` and `high` inclusive; an absent bound is open (`None`).
    Number { value: Option<Decimal>, low: Option<Decimal>, high: Option<Decimal> },
    /// A quantity (`Quantity`, `Age`, `Duration`, `Money`, `SimpleQuantity`, or a `Range`'s
    /// bounds), with its unit's system and code and its human unit, and the range of
    /// [`IndexValue::Number`]. A comparator (`<5`) opens the range on its side.
    Quantity {
        value: Option<Decimal>,
        low: Option<Decimal>,
        high: Option<Decimal>,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    /// A `uri`, `url`, `canonical`, `oid` or `uuid` as written.
    Uri(String),
}

/// One value of one parameter: what an index stores for a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    /// The parameter's code (`code`, `subject`, `_lastUpdated`).
    pub param: String,
    pub value: IndexValue,
}

/// The form string search compares: Unicode compatibility decomposition (NFKD), combining
/// marks removed, lower-cased, runs of whitespace collapsed to one space and trimmed.
/// `"  Zoë  O'Brien"` → `"zoe o'brien"`.
pub fn normalize_string(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}
