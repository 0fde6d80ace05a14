//! Search over the official R4 examples: every value `extract` finds is found again by a
//! query built from it (through `parse_query` and `matches`), every parameter without a
//! value matches `:missing=true`, and extraction finds values for most parameters.

use std::collections::BTreeSet;
use std::path::Path;

use medvault_base::time::format_instant;
use medvault_fhir::search::{
    extract, matches, param, params, parse_query, Handling, IndexValue, ParamType, EXTRACTION_VERSION,
};
use serde_json::Value;

/// Years 0001–9999 are what a search date can say.
const INSTANT_MIN_MS: i64 = -62_135_596_800_000;
const INSTANT_MAX_MS: i64 = 253_402_300_799_999;

fn examples() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/r4-examples");
    let mut examples: Vec<(String, Value)> = std::fs::read_dir(dir)
        .expect("examples dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            (
                path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string(),
                serde_json::from_str(&text).expect("JSON"),
            )
        })
        .collect();
    examples.sort_by(|a, b| a.0.cmp(&b.0));
    examples
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace(',', "\\,").replace('|', "\\|").replace('$', "\\$")
}

/// A query (name, value) that the value must satisfy; `None` where none can be written.
fn query_for(resource_type: &str, code: &str, value: &IndexValue) -> Option<(String, String)> {
    let is_reference = param(resource_type, code).is_some_and(|search_param| search_param.kind == ParamType::Reference);
    // A Reference.identifier is searched with `:identifier`.
    let param = if is_reference && matches!(value, IndexValue::Token { .. }) {
        format!("{code}:identifier")
    } else {
        code.to_string()
    };
    let param = param.as_str();
    let units = |system: &Option<String>, code: &Option<String>| match (system, code) {
        (Some(system), Some(code)) => format!("|{}|{}", escape(system), escape(code)),
        (None, Some(code)) => format!("||{}", escape(code)),
        _ => String::new(),
    };
    Some(match value {
        IndexValue::Token { system: Some(system), code } => {
            (param.to_string(), format!("{}|{}", escape(system), escape(code)))
        }
        IndexValue::Token { system: None, code } => (param.to_string(), format!("|{}", escape(code))),
        IndexValue::TokenText(text) => (format!("{param}:text"), escape(text)),
        IndexValue::String(text) => (param.to_string(), escape(text)),
        IndexValue::StringExact(text) => (format!("{param}:exact"), escape(text)),
        IndexValue::Reference { resource_type: Some(resource_type), id: Some(id), .. } => {
            (param.to_string(), format!("{resource_type}/{id}"))
        }
        IndexValue::Reference { url, .. } if url.contains("://") || url.starts_with("urn:") => {
            (param.to_string(), escape(url))
        }
        IndexValue::Reference { .. } => return None,
        IndexValue::Date { low, high } => {
            if (INSTANT_MIN_MS..=INSTANT_MAX_MS).contains(low) {
                (param.to_string(), format!("ge{}", format_instant(*low)))
            } else if (INSTANT_MIN_MS..=INSTANT_MAX_MS).contains(high) {
                (param.to_string(), format!("le{}", format_instant(*high)))
            } else {
                return None;
            }
        }
        IndexValue::Number { low: Some(low), .. } => (param.to_string(), format!("ge{low}")),
        IndexValue::Number { high: Some(high), .. } => (param.to_string(), format!("le{high}")),
        IndexValue::Quantity { low: Some(low), system, code, .. } => {
            (param.to_string(), format!("ge{low}{}", units(system, code)))
        }
        IndexValue::Quantity { high: Some(high), system, code, .. } => {
            (param.to_string(), format!("le{high}{}", units(system, code)))
        }
        IndexValue::Number { .. } | IndexValue::Quantity { .. } => return None,
        IndexValue::Uri(uri) => (param.to_string(), escape(uri)),
    })
}

fn satisfies(resource: &Value, pair: (String, String)) -> Result<bool, String> {
    let resource_type = resource["resourceType"].as_str().unwrap_or_default();
    let (query, warnings) = parse_query(resource_type, &[pair], Handling::Strict).map_err(|error| error.to_string())?;
    if !warnings.is_empty() {
        return Err(format!("{warnings:?}"));
    }
    Ok(query.clauses.iter().all(|clause| matches(resource, clause)))
}

#[test]
fn every_extracted_value_is_found_by_a_query_built_from_it() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut params_with_values = BTreeSet::new();
    let mut params_seen = BTreeSet::new();
    for (name, resource) in examples() {
        let resource_type = resource["resourceType"].as_str().unwrap_or_default().to_string();
        let entries = extract(&resource);
        for entry in &entries {
            params_with_values.insert(format!("{resource_type}.{}", entry.param));
            let Some(pair) = query_for(&resource_type, &entry.param, &entry.value) else {
                continue;
            };
            checked += 1;
            match satisfies(&resource, pair.clone()) {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{name}: {}={} does not match {:?}", pair.0, pair.1, entry.value)),
                Err(error) => failures.push(format!("{name}: {}={}: {error}", pair.0, pair.1)),
            }
        }
        for search_param in params(&resource_type) {
            params_seen.insert(format!("{resource_type}.{}", search_param.code));
            if entries.iter().all(|entry| entry.param != search_param.code) {
                let pair = (format!("{}:missing", search_param.code), "true".to_string());
                if satisfies(&resource, pair) != Ok(true) {
                    failures.push(format!("{name}: {} has no value but is not :missing", search_param.code));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures of {checked}:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 8_000, "checked {checked} values");
    // The examples give values for a little over half the parameters of the types they
    // cover. Where a parameter's path is present but yields no value, it was checked to be
    // for want of data: contained (`#`) or display-only references, identifiers without a
    // value, a Timing without events or bounds, or a type the parameter skips.
    let coverage = params_with_values.len() * 100 / params_seen.len();
    println!(
        "{checked} values checked; {} of {} parameters have values ({coverage} %)",
        params_with_values.len(),
        params_seen.len()
    );
    assert!(coverage >= 55, "only {coverage} % of parameters found a value");
}

/// What `extract` makes of the official examples is pinned to `EXTRACTION_VERSION`: a change
/// to extraction or normalization changes the digest, and this test fails until the version
/// is bumped (so that stores rebuild their indexes) and the digest updated.
#[test]
fn extraction_output_is_pinned() {
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    let mut entries = 0usize;
    for (name, resource) in examples() {
        for entry in extract(&resource) {
            entries += 1;
            for byte in format!("{name} {} {:?}\n", entry.param, entry.value).bytes() {
                digest ^= u64::from(byte);
                digest = digest.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    println!("extraction digest {digest:#018x} over {entries} entries");
    assert_eq!(
        (EXTRACTION_VERSION, digest),
        (1, 0x6911_b46d_d784_b117),
        "extraction changed: bump EXTRACTION_VERSION and update the digest"
    );
}
