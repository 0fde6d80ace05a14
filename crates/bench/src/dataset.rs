//! The synthetic dataset: copies of the bundled `carebundle-*.json` transaction Bundles,
//! each with fresh `urn:uuid:` fullUrls (and the references that name them), other names,
//! other identifier values and dates shifted by up to two years. Deterministic for a seed.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

/// The dataset, generated once and shared by the floor, sealed and unsealed runs.
#[derive(Debug)]
pub struct Dataset {
    pub bundles: Vec<DatasetBundle>,
    /// Resources across all bundles.
    pub resources: usize,
    /// Bytes of all Bundle bodies, as sent over HTTP.
    pub body_bytes: usize,
}

/// One `transaction` Bundle and the same resources one by one.
#[derive(Debug)]
pub struct DatasetBundle {
    /// The Bundle as POSTed to `/fhir` (compact JSON).
    pub body: Vec<u8>,
    /// Its resources as plain rows, for the storage floor.
    pub rows: Vec<FloorRow>,
}

/// One resource as the storage floor stores it.
#[derive(Debug)]
pub struct FloorRow {
    pub resource_type: String,
    /// The uuid of the entry's fullUrl.
    pub id: String,
    pub json: Vec<u8>,
}

/// Generates copies of the bundled templates until at least `resources_min` resources.
pub fn generate(resources_min: usize, seed: u64) -> anyhow::Result<Dataset> {
    let templates = load_templates()?;
    let mut bundles = Vec::new();
    let mut resources = 0;
    let mut body_bytes = 0;
    let mut copy: u64 = 0;
    while resources < resources_min {
        let template_index = usize::try_from(copy % templates.len() as u64).unwrap_or(0);
        let bundle = copy_bundle(&templates[template_index], seed, copy)?;
        resources += bundle.rows.len();
        body_bytes += bundle.body.len();
        bundles.push(bundle);
        copy += 1;
    }
    Ok(Dataset { bundles, resources, body_bytes })
}

/// The bundled carebundle transaction Bundles (`crates/cli/demo-data`), sorted by name.
fn load_templates() -> anyhow::Result<Vec<Value>> {
    let directory = medvault_testkit::demo_data_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&directory)
        .with_context(|| format!("cannot read the bundled dataset in {}", directory.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("carebundle-") && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "no carebundle-*.json in {}", directory.display());
    paths
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let bundle: Value =
                serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
            anyhow::ensure!(
                bundle.get("type").and_then(Value::as_str) == Some("transaction"),
                "{} is not a transaction Bundle",
                path.display()
            );
            Ok(bundle)
        })
        .collect()
}

const FAMILY_NAMES: &[&str] =
    &["Syntheson", "Mocklin", "Fakeley", "Testwood", "Placeholm", "Dummerston", "Samplewright", "Fictive"];
const GIVEN_NAMES: &[&str] = &["Juno", "Fen", "Ari", "Noor", "Tove", "Ilse", "Kai", "Remy", "Odile", "Sami"];
/// Dates of a copy move back by up to this many days (all by the same amount, so the order
/// of events within a patient's record is kept).
const DATE_SHIFT_DAYS_MAX: u64 = 730;

fn copy_bundle(template: &Value, seed: u64, copy: u64) -> anyhow::Result<DatasetBundle> {
    let mut random = Xorshift64::new(seed, copy);
    let mut bundle = template.clone();
    let entries =
        bundle.get_mut("entry").and_then(Value::as_array_mut).context("a template Bundle has no entry array")?;
    // Fresh fullUrls first, so that every reference to them can be rewritten.
    let mut new_urls: HashMap<String, String> = HashMap::new();
    for entry in entries.iter_mut() {
        let old = entry.get("fullUrl").and_then(Value::as_str).context("a template entry has no fullUrl")?;
        anyhow::ensure!(old.starts_with("urn:uuid:"), "a template fullUrl is not a urn:uuid: {old}");
        let new = format!("urn:uuid:{}", random.uuid());
        new_urls.insert(old.to_string(), new.clone());
        entry["fullUrl"] = Value::String(new);
    }
    let variation = Variation {
        new_urls: &new_urls,
        date_shift_days: -i64::try_from(random.below(DATE_SHIFT_DAYS_MAX + 1)).unwrap_or(0),
        family: FAMILY_NAMES[usize::try_from(random.below(FAMILY_NAMES.len() as u64)).unwrap_or(0)],
        given: GIVEN_NAMES[usize::try_from(random.below(GIVEN_NAMES.len() as u64)).unwrap_or(0)],
        identifier_suffix: format!("-{copy:06X}"),
    };
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries.iter_mut() {
        let id = entry["fullUrl"].as_str().and_then(|url| url.strip_prefix("urn:uuid:")).unwrap_or("").to_string();
        let resource = entry.get_mut("resource").context("a template entry has no resource")?;
        variation.apply(resource, None);
        let resource_type =
            resource.get("resourceType").and_then(Value::as_str).context("a resource without resourceType")?;
        rows.push(FloorRow { resource_type: resource_type.to_string(), id, json: serde_json::to_vec(resource)? });
    }
    Ok(DatasetBundle { body: serde_json::to_vec(&bundle)?, rows })
}

/// What changes in one copy.
struct Variation<'a> {
    new_urls: &'a HashMap<String, String>,
    date_shift_days: i64,
    family: &'a str,
    given: &'a str,
    identifier_suffix: String,
}

impl Variation<'_> {
    /// Walks a resource; `field` is the name of the member `value` is held in.
    fn apply(&self, value: &mut Value, field: Option<&str>) {
        match value {
            Value::Object(object) => {
                for (name, child) in object.iter_mut() {
                    match (name.as_str(), field) {
                        ("reference", _) => self.rewrite_reference(child),
                        ("family", _) => *child = Value::String(self.family.to_string()),
                        ("given", _) => *child = Value::Array(vec![Value::String(self.given.to_string())]),
                        ("value", Some("identifier")) => {
                            if let Value::String(text) = child {
                                text.push_str(&self.identifier_suffix);
                            }
                        }
                        // The narrative keeps its words; it is not parsed by anything.
                        ("div", _) => {}
                        _ => self.apply(child, Some(name)),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.apply(item, field)),
            Value::String(text) => {
                if let Some(shifted) = shift_date(text, self.date_shift_days) {
                    *text = shifted;
                }
            }
            _ => {}
        }
    }

    fn rewrite_reference(&self, reference: &mut Value) {
        if let Value::String(text) = reference {
            if let Some(new) = self.new_urls.get(text.as_str()) {
                *text = new.clone();
            }
        }
    }
}

/// Shifts a FHIR `date`, `dateTime` or `instant` (`YYYY-MM-DD…`) by whole days; `None` for
/// anything else.
fn shift_date(text: &str, days: i64) -> Option<String> {
    let bytes = text.as_bytes();
    let is_date = bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
        && bytes[8..10].iter().all(u8::is_ascii_digit)
        && (bytes.len() == 10 || bytes[10] == b'T');
    if !is_date {
        return None;
    }
    let year: i64 = text[..4].parse().ok()?;
    let month: u32 = text[5..7].parse().ok()?;
    let day: u32 = text[8..10].parse().ok()?;
    let shifted_days = medvault_base::time::days_from_civil(year, month, day) + days;
    let civil = medvault_base::time::civil_from_ms(shifted_days * 86_400_000);
    Some(format!("{:04}-{:02}-{:02}{}", civil.year, civil.month, civil.day, &text[10..]))
}

/// A tiny seeded generator (xorshift64), enough for picking ids and names reproducibly.
#[derive(Debug, Clone)]
pub struct Xorshift64(u64);

impl Xorshift64 {
    /// A generator for one stream (`stream`) of a seed; never zero.
    pub fn new(seed: u64, stream: u64) -> Self {
        // splitmix64 of the pair, so neighbouring streams start far apart.
        let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..bound` (`bound` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A version-4-shaped uuid.
    pub fn uuid(&mut self) -> String {
        let high = self.next_u64();
        let low = self.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex = medvault_base::hex::encode(&bytes);
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_shift_by_whole_days_and_keep_their_time() {
        assert_eq!(shift_date("2026-01-01T09:00:00Z", -1).as_deref(), Some("2025-12-31T09:00:00Z"));
        assert_eq!(shift_date("1980-03-01", -1).as_deref(), Some("1980-02-29"));
        assert_eq!(shift_date("E1035AC9", -1), None);
        assert_eq!(shift_date("2026-01", -1), None);
    }

    #[test]
    fn copies_have_fresh_urls_and_every_reference_follows_them() {
        let dataset = generate(200, 7).expect("dataset");
        assert!(dataset.resources >= 200);
        let mut urls = std::collections::HashSet::new();
        for bundle in &dataset.bundles {
            let value: Value = serde_json::from_slice(&bundle.body).expect("json");
            let entries = value["entry"].as_array().expect("entries");
            let own: std::collections::HashSet<&str> =
                entries.iter().map(|e| e["fullUrl"].as_str().expect("fullUrl")).collect();
            for url in &own {
                assert!(urls.insert(url.to_string()), "fullUrl {url} repeats across copies");
            }
            let text = String::from_utf8(bundle.body.clone()).expect("utf8");
            for reference in text.split("\"reference\":\"").skip(1) {
                let target = reference.split('"').next().expect("reference");
                if target.starts_with("urn:uuid:") {
                    assert!(own.contains(target), "reference {target} names no entry of its own Bundle");
                }
            }
        }
        let again = generate(200, 7).expect("dataset");
        assert_eq!(dataset.bundles[1].body, again.bundles[1].body, "generation is deterministic");
    }
}
