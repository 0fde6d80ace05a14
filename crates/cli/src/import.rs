//! `medvault import`: Bundles (`transaction`, `batch`, `collection`) and Bulk Data NDJSON,
//! through the same validation and write path as the HTTP API, with a progress bar.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use medvault_base::limits::{IMPORT_CHUNK_RESOURCES_MAX, NDJSON_LINE_BYTES_MAX, REQUEST_BODY_BYTES_MAX};
use medvault_server::auth::ClinicalAccess;
use medvault_server::bundle::ReturnPreference;
use medvault_server::Service;
use serde_json::Value;

use crate::{exit, StoreArgs};

/// Errors shown per file before the rest are only counted.
const ERRORS_SHOWN_MAX: usize = 10;
const IMPORT_BASE: &str = "urn:medvault:import";

#[derive(Debug, Default)]
pub struct Tally {
    pub stored: u64,
    pub rejected: u64,
    pub errors: Vec<String>,
}

impl Tally {
    fn reject(&mut self, count: u64, message: String) {
        self.rejected += count;
        if self.errors.len() < ERRORS_SHOWN_MAX {
            self.errors.push(message);
        }
    }
}

pub fn run(store_args: &StoreArgs, files: &[PathBuf], quiet: bool) -> anyhow::Result<ExitCode> {
    for file in files {
        if !file.is_file() {
            anyhow::bail!("{} is not a readable file", file.display());
        }
    }
    let store = std::sync::Arc::new(store_args.open()?);
    let service = Service::new(store.clone());
    let tally = import_files(&service, files, quiet)?;
    store.close();
    println!("imported {} resources from {} file(s); {} rejected", tally.stored, files.len(), tally.rejected);
    for error in &tally.errors {
        eprintln!("  rejected: {error}");
    }
    Ok(if tally.rejected > 0 { ExitCode::from(exit::IMPORT_REJECTED) } else { ExitCode::SUCCESS })
}

/// Something to import: a file, or bytes already in memory (the demo's embedded dataset,
/// which is never written to disk in the clear).
pub enum Source<'a> {
    File(&'a Path),
    Memory { name: &'a str, bytes: &'a [u8] },
}

pub fn import_files(service: &Service, files: &[PathBuf], quiet: bool) -> anyhow::Result<Tally> {
    let sources: Vec<Source<'_>> = files.iter().map(|file| Source::File(file)).collect();
    import_sources(service, &sources, quiet)
}

pub fn import_sources(service: &Service, sources: &[Source<'_>], quiet: bool) -> anyhow::Result<Tally> {
    let access = ClinicalAccess::local_operator("import");
    let progress = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg:30!} [{bar:30}] {pos}/{len} resources ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut tally = Tally::default();
    for source in sources {
        match source {
            Source::File(file) => {
                progress.set_message(file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                import_file(service, &access, file, &progress, &mut tally)
                    .with_context(|| format!("importing {}", file.display()))?;
            }
            Source::Memory { name, bytes } => {
                progress.set_message(name.to_string());
                import_bundle_bytes(service, &access, name, bytes, &progress, &mut tally);
            }
        }
    }
    progress.finish_and_clear();
    Ok(tally)
}

fn import_file(
    service: &Service,
    access: &ClinicalAccess,
    path: &Path,
    progress: &ProgressBar,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let name = path.display().to_string();
    if path.extension().is_some_and(|e| e == "ndjson") {
        return import_ndjson(service, access, path, progress, tally);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(REQUEST_BODY_BYTES_MAX).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut bytes)?;
    import_bundle_bytes(service, access, &name, &bytes, progress, tally);
    Ok(())
}

fn import_bundle_bytes(
    service: &Service,
    access: &ClinicalAccess,
    name: &str,
    bytes: &[u8],
    progress: &ProgressBar,
    tally: &mut Tally,
) {
    let mut bundle = match medvault_server::json::parse_body(bytes, REQUEST_BODY_BYTES_MAX) {
        Ok(bundle) => bundle,
        Err(error) => {
            tally.reject(1, format!("{name}: {}", describe(&error)));
            return;
        }
    };
    let entries = bundle.get("entry").and_then(Value::as_array).map_or(0, Vec::len) as u64;
    progress.inc_length(entries);
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") | Some("batch") => {
            match service.process_bundle(access, bundle, IMPORT_BASE, ReturnPreference::Minimal) {
                Ok(response) => count_response(&response, name, tally),
                Err(error) => tally.reject(entries, format!("{name}: {}", describe(&error))),
            }
        }
        Some("collection") | Some("searchset") => {
            let resources: Vec<Value> = bundle
                .get_mut("entry")
                .and_then(Value::as_array_mut)
                .map(|entries| entries.iter_mut().filter_map(|e| e.get_mut("resource").map(Value::take)).collect())
                .unwrap_or_default();
            let mut numbered = resources.into_iter().enumerate().peekable();
            while numbered.peek().is_some() {
                let chunk: Vec<(usize, Value)> = numbered.by_ref().take(IMPORT_CHUNK_RESOURCES_MAX).collect();
                import_chunk(service, access, chunk, name, "entry", tally);
            }
        }
        other => tally.reject(
            entries.max(1),
            format!(
                "{name}: a Bundle of type {} cannot be imported (transaction, batch or collection)",
                other.unwrap_or("(none)")
            ),
        ),
    }
    progress.inc(entries);
}

fn import_ndjson(
    service: &Service,
    access: &ClinicalAccess,
    path: &Path,
    progress: &ProgressBar,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK_RESOURCES_MAX);
    let mut line_number = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .by_ref()
            .take(u64::try_from(NDJSON_LINE_BYTES_MAX).unwrap_or(u64::MAX) + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.len() > NDJSON_LINE_BYTES_MAX {
            anyhow::bail!("line {line_number} is longer than {NDJSON_LINE_BYTES_MAX} bytes");
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        progress.inc_length(1);
        match medvault_server::json::parse_body(&line, NDJSON_LINE_BYTES_MAX) {
            Ok(resource) => chunk.push((line_number, resource)),
            Err(error) => tally.reject(1, format!("{name} line {line_number}: {}", describe(&error))),
        }
        if chunk.len() == IMPORT_CHUNK_RESOURCES_MAX {
            progress.inc(chunk.len() as u64);
            import_chunk(service, access, std::mem::take(&mut chunk), &name, "line", tally);
        }
    }
    progress.inc(chunk.len() as u64);
    import_chunk(service, access, chunk, &name, "line", tally);
    Ok(())
}

/// Imports numbered resources; `unit` names what the numbers count in error messages.
fn import_chunk(
    service: &Service,
    access: &ClinicalAccess,
    numbered: Vec<(usize, Value)>,
    name: &str,
    unit: &str,
    tally: &mut Tally,
) {
    let (numbers, resources): (Vec<usize>, Vec<Value>) = numbered.into_iter().unzip();
    for (number, result) in numbers.into_iter().zip(service.import_resources(access, resources)) {
        match result {
            Ok(_) => tally.stored += 1,
            Err(error) => tally.reject(1, format!("{name} {unit} {number}: {}", describe(&error))),
        }
    }
}

fn count_response(response: &[u8], name: &str, tally: &mut Tally) {
    let Ok(bundle) = serde_json::from_slice::<Value>(response) else {
        tally.reject(1, format!("{name}: unreadable response"));
        return;
    };
    for (index, entry) in bundle.get("entry").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let status = entry.pointer("/response/status").and_then(Value::as_str).unwrap_or("");
        if status.starts_with('2') {
            tally.stored += 1;
        } else {
            let reason =
                entry.pointer("/response/outcome/issue/0/diagnostics").and_then(Value::as_str).unwrap_or(status);
            tally.reject(1, format!("{name} entry {index}: {reason}"));
        }
    }
}

fn describe(error: &medvault_server::ApiError) -> String {
    error.issues.iter().map(|issue| issue.diagnostics.as_str()).collect::<Vec<_>>().join("; ")
}
