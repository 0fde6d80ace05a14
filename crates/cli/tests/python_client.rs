//! A real FHIR client library against a real server: `tests/python/fhirpy_search.py` drives
//! `medvault serve` with the Python `fhirpy` package (creates, searches with prefixes and
//! modifiers, follows the paging links, counts, includes, conditional update and delete).
//!
//! Without Python or `fhirpy` on a developer's machine the test says so loudly and stops;
//! in CI (`CI=true`, where `.ci/run` installs `fhirpy`) their absence is a failure.

mod common;

use std::io::Write as _;
use std::process::Command;

use common::{init, token, ServerProcess};
use medvault_testkit::TempDir;

fn python_with_fhirpy() -> Result<String, String> {
    for python in ["python3", "python"] {
        match Command::new(python).args(["-c", "import fhirpy"]).output() {
            Ok(output) if output.status.success() => return Ok(python.to_string()),
            Ok(output) => {
                return Err(format!(
                    "{python} cannot import fhirpy: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
            Err(_) => continue,
        }
    }
    Err("no python3 or python on PATH".to_string())
}

#[test]
fn fhirpy_searches_and_pages_through_a_real_server() {
    let python = match python_with_fhirpy() {
        Ok(python) => python,
        Err(reason) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!in_ci, "CI must run the Python client test: {reason} (.ci/run installs fhirpy)");
            // Straight to the terminal: the test harness would swallow `eprintln!`.
            let banner = "!".repeat(80);
            let _ = writeln!(
                std::io::stderr(),
                "\n{banner}\n!!! SKIPPED the Python FHIR client test: {reason}\n\
                 !!! Install it with `pip install fhirpy` to run it (CI always does).\n{banner}\n"
            );
            return;
        }
    };
    let dir = TempDir::new("python-client");
    init(dir.path());
    let client = token(dir.path(), "fhirpy", "system/*.cruds");
    let mut server = ServerProcess::start(dir.path(), &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fhirpy_search.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}/fhir", server.address))
        .arg(&client)
        .output()
        .expect("python runs");
    server.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the fhirpy script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let passed: usize = stdout
        .lines()
        .find_map(|line| line.strip_suffix(" passed, 0 failed").and_then(|n| n.trim().parse().ok()))
        .expect("a summary line");
    assert!(passed >= 13, "every check ran: {stdout}");
}
