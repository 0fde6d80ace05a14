//! Tidy checks that run as ordinary tests: documentation that must stay in step with code.

use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("workspace root")
}

fn constants(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|rest| rest.split(':').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_limit_is_documented() {
    let limits_doc = std::fs::read_to_string(workspace().join("docs/LIMITS.md")).expect("docs/LIMITS.md");
    let mut names = constants(include_str!("../src/limits.rs"));
    for file in [
        "crates/server/src/serve.rs",
        "crates/fhir/src/validate.rs",
        "crates/ledger/src/leaf.rs",
        "crates/ledger/src/note.rs",
        "crates/auth/src/password.rs",
        "crates/auth/src/totp.rs",
        "crates/auth/src/recovery.rs",
        "crates/auth/src/scope.rs",
        "crates/auth/src/jwt.rs",
        "crates/server/src/login.rs",
        "crates/audit/src/record.rs",
        "crates/audit/src/alerts.rs",
        "crates/audit/src/export.rs",
        "crates/server/src/audit_search.rs",
        "crates/store/src/sqlite.rs",
        "crates/ledger/src/leaf.rs",
    ] {
        let source = std::fs::read_to_string(workspace().join(file)).expect("source file");
        names.extend(constants(&source).into_iter().filter(|name| name.ends_with("_MAX") || name.ends_with("_MS")));
    }
    assert!(names.len() >= 15, "found the constants: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|name| !limits_doc.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "limits missing from docs/LIMITS.md: {missing:?}");
}

#[test]
fn no_unsafe_and_no_reference_to_the_shared_folder() {
    let mut pending = vec![workspace().join("crates")];
    let mut checked = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with("testdata") && !path.ends_with("demo-data") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("utf8 source");
                let needle = ["unsafe", " {"].concat();
                assert!(!text.contains(&needle), "{} uses unsafe", path.display());
                assert!(!text.contains(&["..", "/shared"].concat()), "{} refers to the shared folder", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "checked {checked} files");
}
