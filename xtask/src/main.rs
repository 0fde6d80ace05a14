//! Development tasks for medvault, run as `cargo run -p xtask -- <task>`.
//!
//! Tasks:
//! - `gen-fhir --definitions DIR [--out DIR]`: reads the official FHIR R4 definitions in
//!   `DIR` and writes the validation model `crates/fhir/model/r4-model.json` and its
//!   `README.md` (see `gen_fhir.rs`).
//! - `audit [--lock FILE] [--db DIR]`: checks `Cargo.lock` against the RustSec advisory
//!   database snapshot in `third_party/rustsec-advisory-db`, offline; fails on a
//!   vulnerability (see `audit.rs`). CI runs it.

mod audit;
mod gen_fhir;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo run -p xtask -- gen-fhir --definitions DIR [--out DIR]
       cargo run -p xtask -- audit [--lock FILE] [--db DIR]";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match arguments.split_first() {
        Some((task, rest)) if task == "gen-fhir" => gen_fhir::run(rest),
        Some((task, rest)) if task == "audit" => audit::run(rest),
        _ => Err(anyhow::anyhow!("{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // A plain message: the cause chain, no backtrace.
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
