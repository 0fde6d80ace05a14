//! The values a resource has for its search parameters, normalized for matching.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::decimal::Decimal;

/// The version of what [`super::extract`] and [`normalize_string`] make of a given input. An index built from values of another version must be rebuilt, so
/// a store includes it in what decides whether its index is current. Bump it with any
/// change to their output; the test `extraction_output_is_pinned` fails until it is.
pub const EXTRACTION_VERSION: u32 = 1;

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
    /// A number as a range, inclusive at both ends, an absent bound open: a plain value is
    /// the range of one point (`low == high == value`); a `Range` has `value` `None` and its
    /// bounds. (The implicit precision of R4 search applies to the *query* value:
    /// [`super::QueryValue::Number`].)
    Number { value: Option<Decimal>, low: Option<Decimal>, high: Option<Decimal> },
    /// A quantity (`Quantity`, `Age`, `Duration`, `Money`, a `Range`'s bounds), as the range
    /// of [`IndexValue::Number`] with its unit: `system` and `code` (a Money's currency has
    /// the system `urn:iso:std:iso:4217`), and the human `unit`. A comparator opens the range
    /// on its side (`<5` → `low` `None`, `high` 5).
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
/// `"  Zoë  O'Brien"` → `"zoe o'brien"`, `"Ｍüller"` → `"muller"`.
pub fn normalize_string(text: &str) -> String {
    let folded: String = text.nfkd().filter(|character| !is_combining_mark(*character)).collect();
    let mut normalized = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !normalized.is_empty() {
            normalized.push(' ');
        }
        normalized.extend(word.chars().flat_map(char::to_lowercase));
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_fold_case_accents_width_and_spaces() {
        assert_eq!(normalize_string("  Zoë \t O'Brien "), "zoe o'brien");
        assert_eq!(normalize_string("Ｍüller"), "muller");
        assert_eq!(normalize_string("ÅNGSTRÖM"), "angstrom");
        assert_eq!(normalize_string("Dvořák"), "dvorak");
        assert_eq!(normalize_string("ﬁle"), "file");
        assert_eq!(normalize_string(""), "");
        assert_eq!(normalize_string("Σίσυφος"), "σισυφος");
    }
}
