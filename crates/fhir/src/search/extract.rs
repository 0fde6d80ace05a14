//! Extraction of the typed, normalized search values of a resource, per the R4 search
//! specification's rules for each data type.

use std::collections::HashSet;

use serde_json::Value;

use super::date::date_range;
use super::decimal::Decimal;
use super::fhirpath::{is_type, reference_type_and_id, Item};
use super::table::{params, ParamType, SearchParam};
use super::value::{normalize_string, IndexEntry, IndexValue, DATE_MAX_MS, DATE_MIN_MS};
use crate::compartment::parse_relative_reference;
use crate::model::model;

/// The system of a Money's currency code.
const CURRENCY_SYSTEM: &str = "urn:iso:std:iso:4217";

/// Every value of every supported parameter of `resource` (its type from `resourceType`),
/// parameter by parameter in code order, without duplicates within a parameter; empty for
/// a JSON value that is not a resource of a known type.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for search_param in params(resource_type) {
        for value in extract_param(resource, search_param) {
            entries.push(IndexEntry { param: search_param.code.clone(), value });
        }
    }
    entries
}

/// The values of one parameter of `resource`, without duplicates, in document order.
/// `search_param` must be a parameter of the resource's type (else nothing is found).
pub fn extract_param(resource: &Value, search_param: &SearchParam) -> Vec<IndexValue> {
    let is_its_type = resource.get("resourceType").and_then(Value::as_str) == Some(search_param.base.as_str());
    if !is_its_type {
        return Vec::new();
    }
    let mut values = Vec::new();
    for item in search_param.compiled.evaluate(resource) {
        index_item(search_param.kind, &item, &mut values);
    }
    let mut seen = HashSet::with_capacity(values.len());
    values.retain(|value| seen.insert(value.clone()));
    values
}

fn index_item(kind: ParamType, item: &Item<'_>, out: &mut Vec<IndexValue>) {
    let (json, type_name, binding) = match item {
        Item::Value { json, type_name, binding, .. } => (*json, *type_name, *binding),
        Item::Boolean(value) if kind == ParamType::Token => {
            out.push(IndexValue::Token { system: None, code: value.to_string() });
            return;
        }
        _ => return,
    };
    match kind {
        ParamType::Token => token_values(json, type_name, binding, out),
        ParamType::String => string_values(json, type_name, out),
        ParamType::Date => date_values(json, type_name, out),
        ParamType::Reference => reference_values(json, type_name, out),
        ParamType::Uri => {
            if is_type(type_name, "uri") {
                if let Some(uri) = json.as_str() {
                    out.push(IndexValue::Uri(uri.to_string()));
                }
            }
        }
        ParamType::Number => number_values(json, type_name, out),
        ParamType::Quantity => quantity_values(json, type_name, out),
    }
}

fn text(json: &Value, field: &str) -> Option<String> {
    json.get(field).and_then(Value::as_str).filter(|text| !text.is_empty()).map(str::to_string)
}

fn push_text(out: &mut Vec<IndexValue>, text: Option<String>) {
    if let Some(text) = text {
        let normalized = normalize_string(&text);
        if !normalized.is_empty() {
            out.push(IndexValue::TokenText(normalized));
        }
    }
}

/// Token values: Coding (system|code, display as text), CodeableConcept (each coding, text),
/// Identifier (system|value, type.text as text), ContactPoint (system|value: the system is
/// `phone`, `email`…), boolean, and string-like primitives (a `code` under a required binding
/// drawn from one code system gets that system, as if written as a Coding).
fn token_values(json: &Value, type_name: &str, binding: Option<u16>, out: &mut Vec<IndexValue>) {
    match type_name {
        "Coding" => coding_values(json, out),
        "CodeableConcept" => {
            for coding in json.get("coding").and_then(Value::as_array).into_iter().flatten() {
                coding_values(coding, out);
            }
            push_text(out, text(json, "text"));
        }
        "Identifier" => {
            if let Some(value) = text(json, "value") {
                out.push(IndexValue::Token { system: text(json, "system"), code: value });
            }
            push_text(out, json.get("type").and_then(|concept| text(concept, "text")));
        }
        "ContactPoint" => {
            if let Some(value) = text(json, "value") {
                out.push(IndexValue::Token { system: text(json, "system"), code: value });
            }
        }
        _ => match json {
            Value::Bool(value) => out.push(IndexValue::Token { system: None, code: value.to_string() }),
            Value::String(code) if !code.is_empty() => {
                let system = if type_name == "code" { implicit_system(binding, code) } else { None };
                out.push(IndexValue::Token { system, code: code.clone() });
            }
            _ => {}
        },
    }
}

fn coding_values(coding: &Value, out: &mut Vec<IndexValue>) {
    if let Some(code) = text(coding, "code") {
        out.push(IndexValue::Token { system: text(coding, "system"), code });
    }
    push_text(out, text(coding, "display"));
}

/// The code system of a `code` under a required binding, when exactly one of the value
/// set's systems has the code.
fn implicit_system(binding: Option<u16>, code: &str) -> Option<String> {
    let value_set = model().value_sets.get(usize::from(binding?))?;
    let mut systems = value_set.systems.iter().filter(|(_, codes)| codes.contains(code));
    match (systems.next(), systems.next()) {
        (Some((system, _)), None) => Some(system.to_string()),
        _ => None,
    }
}

/// String values: each string; each part of a HumanName (family, given, prefix, suffix,
/// text) and of an Address (line, city, district, state, postalCode, country, text).
fn string_values(json: &Value, type_name: &str, out: &mut Vec<IndexValue>) {
    let parts: &[&str] = match type_name {
        "HumanName" => &["family", "given", "prefix", "suffix", "text"],
        "Address" => &["line", "city", "district", "state", "postalCode", "country", "text"],
        _ => {
            if let Some(text) = json.as_str() {
                push_string(out, text);
            }
            return;
        }
    };
    for part in parts {
        match json.get(part) {
            Some(Value::String(text)) => push_string(out, text),
            Some(Value::Array(texts)) => texts.iter().filter_map(Value::as_str).for_each(|text| push_string(out, text)),
            _ => {}
        }
    }
}

fn push_string(out: &mut Vec<IndexValue>, text: &str) {
    let normalized = normalize_string(text);
    if normalized.is_empty() {
        return;
    }
    out.push(IndexValue::String(normalized));
    out.push(IndexValue::StringExact(text.to_string()));
}

/// Date values: a date, dateTime or instant covers its precision; a Period runs from its
/// start's first to its end's last millisecond (open where absent); a Timing covers its
/// outer limits (earliest to latest of its events and `repeat.boundsPeriod`), as R4 says.
fn date_values(json: &Value, type_name: &str, out: &mut Vec<IndexValue>) {
    let range = match type_name {
        "Period" => period_range(json),
        "Timing" => timing_range(json),
        _ => json.as_str().and_then(date_range),
    };
    if let Some((low, high)) = range {
        out.push(IndexValue::Date { low, high });
    }
}

fn period_range(period: &Value) -> Option<(i64, i64)> {
    let start = period.get("start").and_then(Value::as_str).and_then(date_range);
    let end = period.get("end").and_then(Value::as_str).and_then(date_range);
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((start.map_or(DATE_MIN_MS, |(low, _)| low), end.map_or(DATE_MAX_MS, |(_, high)| high)))
}

fn timing_range(timing: &Value) -> Option<(i64, i64)> {
    let events = timing.get("event").and_then(Value::as_array).into_iter().flatten();
    let mut ranges: Vec<(i64, i64)> = events.filter_map(Value::as_str).filter_map(date_range).collect();
    if let Some(bounds) = timing.get("repeat").and_then(|repeat| repeat.get("boundsPeriod")) {
        ranges.extend(period_range(bounds));
    }
    let low = ranges.iter().map(|(low, _)| *low).min()?;
    let high = ranges.iter().map(|(_, high)| *high).max()?;
    Some((low, high))
}

/// Reference values: a relative literal reference gives its type and id (`_history` dropped);
/// an absolute URL or URN is kept as written (with the type its path names); a contained
/// reference (`#…`) is not indexed; `Reference.identifier` gives a token. A `canonical` or
/// `uri` is a reference by URL.
fn reference_values(json: &Value, type_name: &str, out: &mut Vec<IndexValue>) {
    if type_name != "Reference" {
        if let Some(url) = json.as_str().filter(|url| !url.is_empty()) {
            out.push(IndexValue::Reference { resource_type: None, id: None, url: url.to_string() });
        }
        return;
    }
    if let Some(reference) = text(json, "reference") {
        if let Some((resource_type, id)) = parse_relative_reference(&reference) {
            out.push(IndexValue::Reference {
                resource_type: Some(resource_type.to_string()),
                id: Some(id.to_string()),
                url: format!("{resource_type}/{id}"),
            });
        } else if !reference.starts_with('#') {
            let resource_type = reference_type_and_id(&reference).map(|(resource_type, _)| resource_type.to_string());
            out.push(IndexValue::Reference { resource_type, id: None, url: reference });
        }
    }
    if let Some(identifier) = json.get("identifier") {
        if let Some(value) = text(identifier, "value") {
            out.push(IndexValue::Token { system: text(identifier, "system"), code: value });
        }
    }
}

fn decimal_of(json: Option<&Value>) -> Option<Decimal> {
    match json? {
        Value::Number(number) => Decimal::parse(&number.to_string()),
        _ => None,
    }
}

/// Number values: an integer or decimal is a point; a Range is its bounds.
fn number_values(json: &Value, type_name: &str, out: &mut Vec<IndexValue>) {
    if type_name == "Range" {
        let low = decimal_of(json.get("low").and_then(|low| low.get("value")));
        let high = decimal_of(json.get("high").and_then(|high| high.get("value")));
        if low.is_some() || high.is_some() {
            out.push(IndexValue::Number { value: None, low, high });
        }
    } else if let Some(value) = decimal_of(Some(json)) {
        out.push(IndexValue::Number { value: Some(value), low: Some(value), high: Some(value) });
    }
}

/// Quantity values: a Quantity (and Age, Duration, …) with its comparator opening one side;
/// a Money with its currency; a Range with its bounds and the unit of its low (else high) bound.
fn quantity_values(json: &Value, type_name: &str, out: &mut Vec<IndexValue>) {
    if type_name == "Range" {
        let (low_json, high_json) = (json.get("low"), json.get("high"));
        let low = decimal_of(low_json.and_then(|low| low.get("value")));
        let high = decimal_of(high_json.and_then(|high| high.get("value")));
        let unit_source = low_json.filter(|low| low.get("value").is_some()).or(high_json).unwrap_or(&Value::Null);
        if low.is_some() || high.is_some() {
            out.push(IndexValue::Quantity {
                value: None,
                low,
                high,
                system: text(unit_source, "system"),
                code: text(unit_source, "code"),
                unit: text(unit_source, "unit"),
            });
        }
        return;
    }
    let Some(value) = decimal_of(json.get("value")) else {
        return;
    };
    if type_name == "Money" {
        let currency = text(json, "currency");
        out.push(IndexValue::Quantity {
            value: Some(value),
            low: Some(value),
            high: Some(value),
            system: currency.as_ref().map(|_| CURRENCY_SYSTEM.to_string()),
            code: currency,
            unit: None,
        });
        return;
    }
    let (low, high) = match json.get("comparator").and_then(Value::as_str) {
        Some("<" | "<=") => (None, Some(value)),
        Some(">" | ">=") => (Some(value), None),
        _ => (Some(value), Some(value)),
    };
    out.push(IndexValue::Quantity {
        value: Some(value),
        low,
        high,
        system: text(json, "system"),
        code: text(json, "code"),
        unit: text(json, "unit"),
    });
}
