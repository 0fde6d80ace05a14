//! The search executor against an oracle: for the bundled synthetic dataset (plus small
//! synthetic resources for the parameter types it lacks), after updates and deletions,
//! many generated queries — every parameter type, modifiers, prefixes, AND and OR,
//! sorting, paging, totals, restricted callers — must return exactly the resources a
//! straightforward evaluation over the decrypted resources returns. The oracle shares only
//! `extract`'s normalization and `value_matches` with the executor, never the index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use medvault_base::SystemClock;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_fhir::search::{
    extract, param, parse_query, Clause, Handling, IndexEntry, IndexValue, Modifier, Query, QueryValue,
};
use medvault_store::search::{Previous, SearchOptions, Visibility};
use medvault_store::{Store, StoreError, Write, WriteAction};
use medvault_testkit::TempDir;
use serde_json::{json, Value};

/// One current resource as the oracle sees it.
struct Known {
    resource_type: String,
    id: String,
    entries: Vec<IndexEntry>,
    compartment: Option<[u8; 32]>,
}

struct World {
    _dir: TempDir,
    store: Store,
    known: Vec<Known>,
}

/// A small deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The bundled dataset's resources, with `urn:uuid:` references rewritten to `Type/id`.
fn dataset() -> Vec<(String, String, Value)> {
    let mut resources = Vec::new();
    for path in medvault_testkit::demo_bundle_files() {
        let bundle = medvault_testkit::read_json(&path);
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let mut names: HashMap<String, String> = HashMap::new();
        for entry in &entries {
            let url = entry["fullUrl"].as_str().unwrap_or_default().to_string();
            let resource_type = entry["resource"]["resourceType"].as_str().unwrap_or_default();
            let id = url.trim_start_matches("urn:uuid:").to_string();
            names.insert(url, format!("{resource_type}/{id}"));
        }
        for entry in entries {
            let url = entry["fullUrl"].as_str().unwrap_or_default().to_string();
            let mut resource = entry["resource"].clone();
            rewrite_references(&mut resource, &names);
            let resource_type = resource["resourceType"].as_str().unwrap_or_default().to_string();
            resources.push((resource_type, url.trim_start_matches("urn:uuid:").to_string(), resource));
        }
    }
    resources.extend(synthetic());
    resources
}

fn rewrite_references(value: &mut Value, names: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (name, child) in object.iter_mut() {
                if name == "reference" {
                    if let Some(target) = child.as_str().and_then(|r| names.get(r)) {
                        *child = Value::String(target.clone());
                    }
                } else {
                    rewrite_references(child, names);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_references(item, names)),
        _ => {}
    }
}

/// Resources for what the dataset lacks: uris and canonicals, numbers, quantities with
/// comparators, open periods, accents, and many patients (so a clinician's visibility is
/// checked candidate by candidate too).
fn synthetic() -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for index in 0..70 {
        let id = format!("syn-p{index}");
        let family = ["Zoë", "Ødegaard", "Müller", "O'Brien", "Nguyễn"][index % 5];
        out.push((
            "Patient".to_string(),
            id.clone(),
            json!({"resourceType": "Patient", "id": id, "active": index % 3 == 0,
                "name": [{"family": format!("{family}{}", index % 7), "given": ["Ana Lucía"]}],
                "birthDate": format!("{}-0{}-1{}", 1930 + index, 1 + index % 9, index % 10),
                "identifier": [{"system": "urn:oid:1.2.3", "value": format!("MRN{index:04}")}]}),
        ));
        let comparator = ["<", ">=", "", "", ""][index % 5];
        let mut quantity = json!({"value": (index as f64) * 1.25 - 20.0, "unit": "mg/dL",
            "system": "http://unitsofmeasure.org", "code": "mg/dL"});
        if !comparator.is_empty() {
            quantity["comparator"] = json!(comparator);
        }
        out.push((
            "Observation".to_string(),
            format!("syn-o{index}"),
            json!({"resourceType": "Observation", "id": format!("syn-o{index}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": format!("99{}-{}", index % 4, index % 3)}],
                         "text": "Synthetic glucose panel"},
                "subject": {"reference": format!("Patient/{id}")},
                "effectivePeriod": if index % 4 == 0 { json!({"start": "2021-03-04T10:00:00Z"}) }
                                   else { json!({"start": format!("20{:02}-01-01", index % 25), "end": format!("20{:02}-06-30", index % 25)}) },
                "valueQuantity": quantity}),
        ));
        out.push((
            "RiskAssessment".to_string(),
            format!("syn-r{index}"),
            json!({"resourceType": "RiskAssessment", "id": format!("syn-r{index}"), "status": "final",
                "subject": {"reference": format!("Patient/{id}")},
                "prediction": [{"probabilityDecimal": (index as f64) / 70.0}]}),
        ));
    }
    for index in 0..12 {
        let id = format!("syn-vs{index}");
        out.push((
            "ValueSet".to_string(),
            id.clone(),
            json!({"resourceType": "ValueSet", "id": id, "status": "active",
                "url": format!("http://example.org/fhir/ValueSet/set-{}", index % 5),
                "version": format!("{}.0", index % 3), "name": format!("SyntheticSet{index}")}),
        ));
    }
    out
}

fn open_world() -> World {
    let dir = TempDir::new("search-oracle");
    let key = dir.path().join("master.key");
    MasterKey::generate().expect("random").create_key_file(&key).expect("key file");
    let store = Store::create(&dir.path().join("data"), &KeyFile { path: key }, Arc::new(SystemClock)).expect("create");
    let resources = dataset();
    let writes: Vec<Write> = resources
        .iter()
        .map(|(resource_type, id, body)| Write {
            resource_type: resource_type.clone(),
            id: id.clone(),
            action: WriteAction::Put(body.clone()),
            if_match: None,
            must_be_new: false,
        })
        .collect();
    // Two thirds of the documents are posted before the updates and deletions below (which
    // then change posting lists), the last third stays pending (they change pending
    // documents): searches read both (`index-token.md`, *Pending documents and posting*).
    store.hold_search_posts(true);
    let (posted, in_post) = (writes.len() * 2 / 3, writes.len() * 5 / 6);
    let write_all = |writes: &[Write]| {
        for chunk in writes.chunks(200) {
            for written in store.write_each(chunk, "oracle") {
                written.expect("write");
            }
        }
    };
    write_all(&writes[..posted]);
    assert!(store.post_search_documents().expect("post") > 0);
    write_all(&writes[posted..in_post]);
    // A post that has inserted part of its entries: the next sixth stays in it, half
    // posted, while the last sixth is written (pending, not in the post).
    assert!(!store.post_search_documents_step(2_000).expect("slice"));
    assert!(!store.post_search_documents_step(2_000).expect("slice"));
    write_all(&writes[in_post..]);
    assert!(store.pending_search_documents() > 0);
    // Updates and deletions, so the index must follow them.
    let mut random = Random(0x5eed_0f5e_a4c4);
    let mut changes = Vec::new();
    for (resource_type, id, body) in &resources {
        if random.chance(4) {
            changes.push(Write {
                resource_type: resource_type.clone(),
                id: id.clone(),
                action: WriteAction::Delete,
                if_match: None,
                must_be_new: false,
            });
        } else if random.chance(6) {
            let mut body = body.clone();
            if body.get("status").is_some() {
                body["status"] = json!("entered-in-error");
            }
            if let Some(text) = body.pointer_mut("/code/text") {
                *text = json!("Revised finding");
            }
            changes.push(Write {
                resource_type: resource_type.clone(),
                id: id.clone(),
                action: WriteAction::Put(body),
                if_match: None,
                must_be_new: false,
            });
        }
    }
    for written in store.write_each(&changes, "oracle") {
        written.expect("change");
    }
    let mut known = Vec::new();
    for (resource_type, id, _) in &resources {
        let stored = store.read(resource_type, id).expect("read").expect("exists");
        if stored.deleted {
            continue;
        }
        let json: Value = serde_json::from_slice(&stored.json).expect("json");
        known.push(Known {
            resource_type: resource_type.clone(),
            id: id.clone(),
            entries: extract(&json),
            compartment: stored.compartment,
        });
    }
    World { _dir: dir, store, known }
}

/// The oracle: does a resource satisfy a plain clause, by its extracted values.
fn oracle_clause(known: &Known, clause: &Clause) -> bool {
    let Some(search_param) = param(&known.resource_type, &clause.param) else { return false };
    let values: Vec<&IndexValue> = known.entries.iter().filter(|e| e.param == clause.param).map(|e| &e.value).collect();
    let any = |modifier: Option<&Modifier>| {
        clause
            .values
            .iter()
            .any(|q| values.iter().any(|v| medvault_fhir::search::value_matches(search_param, modifier, q, v)))
    };
    match &clause.modifier {
        Some(Modifier::Missing(missing)) => values.is_empty() == *missing,
        Some(Modifier::Not) => !any(None),
        modifier => any(modifier.as_ref()),
    }
}

/// The oracle's result set: ids of the visible resources of the type satisfying every
/// clause (chains and `_has` resolved over the same visible resources).
fn oracle(world: &World, query: &Query, visibility: &Visibility) -> BTreeSet<String> {
    let visible = |known: &Known| match (visibility, &known.compartment) {
        (Visibility::All, _) | (_, None) => true,
        (Visibility::Patients(patients), Some(compartment)) => patients.contains(compartment),
    };
    let resolve = |clause: &Clause| -> Clause {
        let Some(chain) = &clause.chain else { return clause.clone() };
        let inner = Clause {
            param: chain.param.clone(),
            modifier: clause.modifier.clone(),
            chain: None,
            values: clause.values.clone(),
        };
        let values = world
            .known
            .iter()
            .filter(|k| k.resource_type == chain.target_type && visible(k) && oracle_clause(k, &inner))
            .map(|k| QueryValue::Reference {
                resource_type: Some(k.resource_type.clone()),
                id: Some(k.id.clone()),
                url: format!("{}/{}", k.resource_type, k.id),
            })
            .collect();
        Clause { param: clause.param.clone(), modifier: None, chain: None, values }
    };
    let clauses: Vec<Clause> = query.clauses.iter().map(resolve).collect();
    let mut has_ids: Vec<BTreeSet<String>> = Vec::new();
    for has in &query.has {
        let mut ids = BTreeSet::new();
        for source in world.known.iter().filter(|k| k.resource_type == has.source_type && visible(k)) {
            if !oracle_clause(source, &has.clause) {
                continue;
            }
            for entry in source.entries.iter().filter(|e| e.param == has.reference_param) {
                if let IndexValue::Reference { resource_type: Some(t), id: Some(id), .. } = &entry.value {
                    if *t == query.resource_type {
                        ids.insert(id.clone());
                    }
                }
            }
        }
        has_ids.push(ids);
    }
    world
        .known
        .iter()
        .filter(|k| k.resource_type == query.resource_type && visible(k))
        .filter(|k| clauses.iter().all(|c| oracle_clause(k, c)))
        .filter(|k| has_ids.iter().all(|ids| ids.contains(&k.id)))
        .map(|k| k.id.clone())
        .collect()
}

/// Runs a search page by page; returns the ids in order, the total, and the pages.
fn run(
    world: &World,
    query: &Query,
    visibility: &Visibility,
    page_size: usize,
    label: &str,
) -> (Vec<String>, Option<u64>, usize) {
    let digest = medvault_crypto::sha256(label.as_bytes());
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut total = None;
    let mut first_page: Option<Vec<String>> = None;
    loop {
        let options =
            SearchOptions { visibility, page_size, cursor: cursor.as_deref(), query_digest: digest, total: pages == 0 };
        let result = world.store.search(query, &options).unwrap_or_else(|e| panic!("{label}: {e}"));
        let page: Vec<String> = result.matches.iter().map(|m| m.id.clone()).collect();
        if pages == 0 {
            total = result.total;
            first_page = Some(page.clone());
        }
        if pages == 1 {
            // The previous link of page 2 is the first page.
            assert_eq!(result.previous, Some(Previous::First), "{label}: previous of page 2");
        }
        if pages == 2 {
            let Some(Previous::Cursor(previous)) = &result.previous else { panic!("{label}: previous of page 3") };
            let back = world
                .store
                .search(query, &SearchOptions { cursor: Some(previous), total: false, ..options.clone() })
                .expect("previous page");
            assert_eq!(back.matches.len(), page_size, "{label}: page 2 again");
        }
        ids.extend(page);
        pages += 1;
        match result.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10_000, "{label}: paging does not end");
    }
    let _ = first_page;
    (ids, total, pages)
}

/// Query strings for one value of one parameter of a resource.
fn queries_for(entry: &IndexEntry, resource_type: &str, random: &mut Random) -> Vec<String> {
    let code = &entry.param;
    let mut out = Vec::new();
    match &entry.value {
        IndexValue::Token { system, code: value } => {
            out.push(format!("{code}={value}"));
            match system {
                Some(system) => {
                    out.push(format!("{code}={system}|{value}"));
                    out.push(format!("{code}={system}|"));
                }
                None => out.push(format!("{code}=|{value}")),
            }
            out.push(format!("{code}:not={value}"));
        }
        IndexValue::TokenText(text) => {
            let word = text.split(' ').nth(random.below(3)).unwrap_or(text);
            out.push(format!("{code}:text={}", &word[..word.char_indices().nth(3).map_or(word.len(), |(i, _)| i)]));
            out.push(format!("{code}:text={text}"));
        }
        IndexValue::String(text) => {
            let cut = |n: usize| text.char_indices().nth(n).map_or(text.as_str(), |(i, _)| &text[..i]).to_string();
            out.push(format!("{code}={}", cut(1 + random.below(4))));
            out.push(format!("{code}={text}"));
            out.push(format!("{code}={}", cut(9)));
            out.push(format!("{code}={}", text.to_uppercase()));
            if text.chars().count() > 4 {
                let middle: String = text.chars().skip(1).take(3).collect();
                out.push(format!("{code}:contains={middle}"));
            }
        }
        IndexValue::StringExact(text) => {
            out.push(format!("{code}:exact={text}"));
            out.push(format!("{code}:exact={}", text.to_lowercase()));
        }
        IndexValue::Reference { resource_type: Some(target), id: Some(id), .. } => {
            out.push(format!("{code}={target}/{id}"));
            out.push(format!("{code}={id}"));
            out.push(format!("{code}:{target}={id}"));
        }
        IndexValue::Reference { url, .. } => out.push(format!("{code}={url}")),
        IndexValue::Uri(uri) => {
            out.push(format!("{code}={uri}"));
            out.push(format!("{code}:below={}", &uri[..uri.len().min(28)]));
        }
        IndexValue::Date { low, high } => {
            let at = if *low > -62_135_596_800_000 { *low } else { *high };
            if at <= -62_135_596_800_000 || at >= 253_402_300_799_999 {
                return out;
            }
            let instant = medvault_base::time::format_instant(at);
            let forms = [&instant[..4], &instant[..7], &instant[..10], &instant[..19]];
            for prefix in ["", "eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"] {
                let form = forms[random.below(forms.len())];
                let form = if form.len() == 19 { format!("{form}Z") } else { form.to_string() };
                out.push(format!("{code}={prefix}{form}"));
            }
        }
        IndexValue::Number { value: Some(value), .. } => {
            for prefix in ["", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"] {
                out.push(format!("{code}={prefix}{}", decimal_text(value.to_f64(), random)));
            }
        }
        IndexValue::Quantity { value: Some(value), system, code: unit_code, unit, .. } => {
            for prefix in ["", "ne", "lt", "gt", "le", "ge", "ap"] {
                let number = decimal_text(value.to_f64(), random);
                out.push(format!("{code}={prefix}{number}"));
                if let (Some(system), Some(unit_code)) = (system, unit_code) {
                    out.push(format!("{code}={prefix}{number}|{system}|{unit_code}"));
                }
                if let Some(unit) = unit {
                    out.push(format!("{code}={prefix}{number}||{unit}"));
                }
            }
        }
        _ => {}
    }
    out.push(format!("{code}:missing={}", random.chance(50)));
    let _ = resource_type;
    out
}

/// A number near `value`, written with a random precision.
fn decimal_text(value: f64, random: &mut Random) -> String {
    match random.below(4) {
        0 => format!("{value}"),
        1 => format!("{:.0}", value),
        2 => format!("{:.1}", value + 0.05),
        _ => format!("{:.2}", value * 1.01),
    }
}

fn compare(world: &World, text: &str, resource_type: &str, visibility: &Visibility, random: &mut Random) -> bool {
    let (query, _) = match parse_query(resource_type, &medvault_testkit::query_pairs(text), Handling::Strict) {
        Ok(parsed) => parsed,
        Err(_) => return false,
    };
    let expected = oracle(world, &query, visibility);
    // Small pages where there are few results, so every query also pages.
    let page_size = if expected.len() > 40 { [25, 50][random.below(2)] } else { [1, 3, 7][random.below(3)] };
    let who = match visibility {
        Visibility::All => "everyone".to_string(),
        Visibility::Patients(patients) => format!("{} patients", patients.len()),
    };
    let label = format!("{resource_type}?{text} (pages of {page_size}, {who})");
    let (ids, total, _) = run(world, &query, visibility, page_size, &label);
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "{label}: a resource on two pages");
    assert_eq!(unique, expected, "{label}");
    if let Some(total) = total {
        assert_eq!(total, expected.len() as u64, "{label}: total");
    }
    true
}

#[test]
fn every_generated_query_returns_what_the_oracle_returns() {
    let world = open_world();
    // Posted documents, documents half-way through a post, pending ones.
    compare_generated_queries(&world, 0x0a11_ce5e_a4c4);
    // The same with every document posted.
    assert!(world.store.post_search_documents().expect("post") > 0);
    assert_eq!(world.store.pending_search_documents(), 0);
    compare_generated_queries(&world, 0x0a11_ce5e_a4c5);
}

fn compare_generated_queries(world: &World, seed: u64) {
    let mut random = Random(seed);
    let types: BTreeSet<&str> = world.known.iter().map(|k| k.resource_type.as_str()).collect();
    let mut compared = 0usize;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for resource_type in &types {
        let of_type: Vec<&Known> = world.known.iter().filter(|k| k.resource_type == *resource_type).collect();
        let samples = of_type.len().min(6);
        let mut singles: Vec<String> = Vec::new();
        for _ in 0..samples {
            let known = of_type[random.below(of_type.len())];
            for entry in &known.entries {
                if !random.chance(35) {
                    continue;
                }
                for text in queries_for(entry, resource_type, &mut random) {
                    if compare(world, &text, resource_type, &Visibility::All, &mut random) {
                        compared += 1;
                        let kind = param(resource_type, &entry.param).map(|p| p.kind.code()).unwrap_or("?");
                        *kinds.entry(kind.to_string()).or_default() += 1;
                        singles.push(text);
                    }
                }
            }
        }
        // AND of two clauses, OR of two values, with sorting.
        for _ in 0..singles.len().min(25) {
            let a = &singles[random.below(singles.len())];
            let b = &singles[random.below(singles.len())];
            if compare(world, &format!("{a}&{b}"), resource_type, &Visibility::All, &mut random) {
                compared += 1;
            }
            let (name_a, value_a) = a.split_once('=').unwrap_or((a, ""));
            let Some((name_b, value_b)) = b.split_once('=') else { continue };
            let or = format!("{name_a}={value_a},{value_b}");
            let plain = name_a == name_b && !value_a.contains(',') && !value_b.contains(',');
            if plain && compare(world, &or, resource_type, &Visibility::All, &mut random) {
                compared += 1;
            }
        }
    }
    assert!(compared > 1500, "compared {compared} queries: {kinds:?}");
    for kind in ["token", "reference", "string", "date", "uri", "number", "quantity"] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= 5, "too few {kind} queries: {kinds:?}");
    }
}

#[test]
fn restricted_callers_get_exactly_their_patients_records() {
    let world = open_world();
    let mut random = Random(0xface_b00c);
    let compartments: Vec<[u8; 32]> = {
        let mut all: Vec<[u8; 32]> = world.known.iter().filter_map(|k| k.compartment).collect();
        all.sort();
        all.dedup();
        all
    };
    assert!(compartments.len() > 64, "enough patients to leave the plan ({})", compartments.len());
    // Two patients (in the plan), and all but three of them (checked candidate by candidate).
    let few = Visibility::Patients(vec![compartments[3], compartments[compartments.len() - 2]]);
    let many = Visibility::Patients(compartments[3..].to_vec());
    let nobody = Visibility::Patients(Vec::new());
    let mut compared = 0;
    for visibility in [&few, &many, &nobody] {
        for text in [
            "status=final",
            "code:missing=false",
            "_lastUpdated=gt2000",
            "date=ge1900",
            "code:text=glu",
            "subject:Patient.name=m",
            "_has:Observation:subject:status=final",
            "_sort=-date",
        ] {
            for resource_type in ["Observation", "Patient", "Condition", "Encounter", "Practitioner", "Organization"] {
                if compare(&world, text, resource_type, visibility, &mut random) {
                    compared += 1;
                }
            }
        }
    }
    assert!(compared > 30, "compared {compared}");
}

#[test]
fn sorted_results_are_in_order_and_page_without_gaps() {
    let world = open_world();
    let mut random = Random(0x5047);
    for (resource_type, text) in [
        ("Observation", "_sort=date"),
        ("Observation", "_sort=-date&status=final"),
        ("Patient", "_sort=family,-birthdate"),
        ("Observation", "_sort=-_lastUpdated&code:missing=false"),
        ("Condition", "_sort=onset-date"),
        ("Observation", "_sort=value-quantity"),
    ] {
        assert!(compare(&world, text, resource_type, &Visibility::All, &mut random), "{text} parses");
        let (query, _) =
            parse_query(resource_type, &medvault_testkit::query_pairs(text), Handling::Strict).expect("parse");
        let (ids, _, _) = run(&world, &query, &Visibility::All, 5, text);
        let (code, descending) = query.sort[0].clone();
        let keys: Vec<Option<String>> = ids
            .iter()
            .map(|id| {
                let known =
                    world.known.iter().find(|k| &k.id == id && k.resource_type == resource_type).expect("known");
                sort_key(known, &code, descending)
            })
            .collect();
        let present: Vec<&String> = keys.iter().flatten().collect();
        let first_missing = keys.iter().position(Option::is_none).unwrap_or(keys.len());
        assert!(keys[first_missing..].iter().all(Option::is_none), "{text}: missing values last");
        for pair in present.windows(2) {
            let ordered = if descending { pair[0] >= pair[1] } else { pair[0] <= pair[1] };
            assert!(ordered, "{text}: {} then {}", pair[0], pair[1]);
        }
    }
}

/// A comparable form of the first sort field (dates as zero-padded numbers).
fn sort_key(known: &Known, code: &str, descending: bool) -> Option<String> {
    let keys = known.entries.iter().filter(|e| e.param == code).filter_map(|e| match &e.value {
        IndexValue::Date { low, high } => {
            Some(format!("{:020}", i128::from(if descending { *high } else { *low }) + i128::from(i64::MAX)))
        }
        IndexValue::String(text) => Some(text.clone()),
        IndexValue::Quantity { value: Some(v), .. } => Some(format!("{:030.10}", v.to_f64() + 1e15)),
        _ => None,
    });
    if descending {
        keys.max()
    } else {
        keys.min()
    }
}

#[test]
fn a_cursor_works_only_for_its_own_query() {
    let world = open_world();
    let (query, _) =
        parse_query("Observation", &medvault_testkit::query_pairs("status=final"), Handling::Strict).expect("parse");
    let options = SearchOptions {
        visibility: &Visibility::All,
        page_size: 2,
        cursor: None,
        query_digest: medvault_crypto::sha256(b"one"),
        total: false,
    };
    let first = world.store.search(&query, &options).expect("page 1");
    let cursor = first.next_cursor.expect("a next page");
    let other =
        SearchOptions { cursor: Some(&cursor), query_digest: medvault_crypto::sha256(b"two"), ..options.clone() };
    assert!(matches!(world.store.search(&query, &other), Err(StoreError::SearchRefused(_))));
    let mut forged = cursor.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let tampered = SearchOptions { cursor: Some(&forged), ..options.clone() };
    assert!(matches!(world.store.search(&query, &tampered), Err(StoreError::SearchRefused(_))));
    let same = SearchOptions { cursor: Some(&cursor), ..options };
    let second = world.store.search(&query, &same).expect("page 2");
    assert!(second.matches.iter().all(|m| first.matches.iter().all(|f| f.id != m.id)));
}

fn count(world: &World, resource_type: &str, text: &str) -> Result<u64, StoreError> {
    let (query, _) = parse_query(resource_type, &medvault_testkit::query_pairs(text), Handling::Strict).expect("parse");
    let options =
        SearchOptions { visibility: &Visibility::All, page_size: 0, cursor: None, query_digest: [0; 32], total: true };
    Ok(world.store.search(&query, &options)?.total.expect("a total"))
}

#[test]
fn a_reindex_runs_online_rotates_the_key_and_a_store_without_index_waits_for_one() {
    let mut world = open_world();
    let status = world.store.search_status().expect("status");
    assert_eq!((status.active_generation, status.searchable), (Some(1), true));
    let before = count(&world, "Observation", "status=final").expect("count");
    assert!(before > 100);
    let observation = |id: &str| Write {
        resource_type: "Observation".into(),
        id: id.into(),
        action: WriteAction::Put(json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "reindex-1"}]}})),
        if_match: None,
        must_be_new: false,
    };
    // Writes land between the rebuild's batches: each is indexed in both generations.
    let mut calls = 0;
    let mut progress = |done: u64, total: u64| {
        assert!(done <= total);
        calls += 1;
        if calls == 2 {
            world.store.write(&[observation("during-reindex")], "oracle").expect("write during the rebuild");
        }
    };
    let report = world
        .store
        .reindex(medvault_store::search::ReindexOptions { force: true, rotate_key: false }, &mut progress)
        .expect("reindex");
    assert!(calls > 2, "progress was reported batch by batch ({calls})");
    assert_eq!(report.generation, 2);
    assert_eq!(count(&world, "Observation", "status=final").expect("count"), before + 1);
    assert_eq!(count(&world, "Observation", "code=reindex-1").expect("count"), 1);
    // Old generation rows are gone: every document is of generation 2.
    let database = rusqlite::Connection::open(world._dir.path().join("data/medvault.db")).expect("sqlite");
    let stale: i64 =
        database.query_row("SELECT COUNT(*) FROM search_docs WHERE gen != 2", [], |row| row.get(0)).expect("docs");
    assert_eq!(stale, 0);

    let report = world
        .store
        .reindex(medvault_store::search::ReindexOptions { force: false, rotate_key: true }, &mut |_, _| {})
        .expect("rotate");
    assert!(report.rotated_key && report.generation == 3);
    assert_eq!(count(&world, "Observation", "status=final").expect("count"), before + 1);
    let live_keys: i64 = database
        .query_row("SELECT COUNT(*) FROM keys WHERE purpose = 7 AND wrapped IS NOT NULL", [], |row| row.get(0))
        .expect("keys");
    let erased: i64 = database
        .query_row("SELECT COUNT(*) FROM keys WHERE purpose = 7 AND wrapped IS NULL", [], |row| row.get(0))
        .expect("keys");
    assert_eq!((live_keys, erased), (1, 1), "the old search key is erased after a rotation");
    let nothing = world.store.reindex(Default::default(), &mut |_, _| {}).expect("current");
    assert!(nothing.nothing_to_do);

    // A store whose index generations are unknown (a restored backup, an upgraded format-3
    // store) refuses searches until it is reindexed.
    database.execute("DELETE FROM meta WHERE name = 'search_active'", []).expect("forget");
    drop(database);
    assert!(world.store.search_needs_reindex().expect("status"));
    assert!(matches!(count(&world, "Observation", "status=final"), Err(StoreError::SearchUnavailable(_))));
    world.store.reindex(Default::default(), &mut |_, _| {}).expect("reindex");
    assert_eq!(count(&world, "Observation", "status=final").expect("count"), before + 1);
    world.store.close();
    let key = KeyFile { path: world._dir.path().join("master.key") };
    world.store = Store::open(&world._dir.path().join("data"), &key, Arc::new(SystemClock)).expect("reopen");
    assert_eq!(count(&world, "Observation", "status=final").expect("count"), before + 1);
}
