//! Development tasks for medvault, run as `cargo run -p xtask -- <task>`.
//!
//! Tasks:
//! - `gen-fhir --definitions DIR [--out DIR]`: reads the official FHIR R4 definitions in
//!   `DIR` and writes the validation model `crates/fhir/model/r4-model.json` and its
//!   `README.md` (see `gen_fhir.rs`).

mod gen_fhir;

use anyhow::bail;

const USAGE: &str = "usage: cargo run -p xtask -- gen-fhir --definitions DIR [--out DIR]";

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.split_first() {
        Some((task, rest)) if task == "gen-fhir" => gen_fhir::run(rest),
        _ => bail!("{USAGE}"),
    }
}
