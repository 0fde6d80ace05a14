//! Every official R4 example validates, except those listed in
//! `testdata/r4-examples/INVALID.md`, each of which must still fail with the issue listed
//! there (so the list cannot go stale).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medvault_fhir::validate_resource;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/r4-examples")
}

/// The allow-list: file name → the issue (`path: message` start) the validator reports.
/// Rows of the table in INVALID.md: `| file | issue | why |`.
fn allow_list() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(examples_dir().join("INVALID.md")).expect("INVALID.md");
    text.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_string();
            (unquote(cells[1]), unquote(cells[2]))
        })
        .collect()
}

#[test]
fn official_examples_validate() {
    let allowed = allow_list();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .collect();
    entries.sort();
    for path in &entries {
        let name = path.file_name().and_then(|name| name.to_str()).expect("utf-8 name").to_string();
        let text = std::fs::read_to_string(path).expect("readable");
        let resource: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let result = validate_resource(&resource);
        checked += 1;
        match (result, allowed.get(&name)) {
            (Ok(()), None) => {}
            (Err(error), None) => {
                for issue in error.issues.iter().take(5) {
                    failures.push(format!("{name}: {:?} {}: {}", issue.kind, issue.path, issue.message));
                }
            }
            (Ok(()), Some(_)) => failures.push(format!("{name}: listed in INVALID.md but now validates")),
            (Err(error), Some(expected)) => {
                let reported: Vec<String> =
                    error.issues.iter().map(|issue| format!("{}: {}", issue.path, issue.message)).collect();
                if !reported.iter().any(|issue| issue.starts_with(expected.as_str())) {
                    failures.push(format!("{name}: expected `{expected}`, got {reported:?}"));
                }
            }
        }
    }
    assert!(checked >= 700, "only {checked} examples found");
    for listed in allowed.keys() {
        if !entries.iter().any(|path| path.ends_with(listed)) {
            failures.push(format!("{listed}: listed in INVALID.md but not present"));
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}
