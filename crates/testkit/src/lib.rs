//! Dev-only fixtures shared by tests and benchmarks: a small blocking HTTP/1.1 client that
//! keeps its connection alive, self-removing temporary directories, and the bundled
//! synthetic dataset.

pub mod http;

use std::path::{Path, PathBuf};

pub use http::{HttpClient, HttpResponse};

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("medvault-test-{label}-{}-{unique}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The bundled synthetic dataset (`crates/cli/demo-data`).
pub fn demo_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/demo-data")
}

/// The dataset's Bundle files, sorted.
pub fn demo_bundle_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(demo_data_dir())
        .expect("the bundled dataset")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// The official R4 examples carried in `crates/fhir/testdata/r4-examples`.
pub fn r4_examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fhir/testdata/r4-examples")
}

/// The `name=value` pairs of a query string (`a=b&c`, not percent-encoded), as a server
/// hands them to `medvault_fhir::search::parse_query`; a pair without `=` has an empty value.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect()
}

/// Parses a JSON file, panicking with its path on failure (test fixtures only).
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
