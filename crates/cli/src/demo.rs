//! `medvault demo`: the first run. Creates a store with the bundled synthetic dataset and
//! two tokens when the data directory has none, then serves it on loopback.

use std::process::ExitCode;

use medvault_server::auth::Role;

use crate::ServeArgs;

/// The bundled synthetic dataset (see `crates/cli/demo-data/README.md`).
pub const DEMO_FILES: &[(&str, &str)] = &[
    ("carebundle-0000.json", include_str!("../demo-data/carebundle-0000.json")),
    ("carebundle-0001.json", include_str!("../demo-data/carebundle-0001.json")),
    ("carebundle-0002.json", include_str!("../demo-data/carebundle-0002.json")),
    ("carebundle-0003.json", include_str!("../demo-data/carebundle-0003.json")),
    ("carebundle-0004.json", include_str!("../demo-data/carebundle-0004.json")),
    ("carebundle-0005.json", include_str!("../demo-data/carebundle-0005.json")),
    ("carebundle-0006.json", include_str!("../demo-data/carebundle-0006.json")),
    ("carebundle-0007.json", include_str!("../demo-data/carebundle-0007.json")),
    ("carebundle-0008.json", include_str!("../demo-data/carebundle-0008.json")),
    ("carebundle-0009.json", include_str!("../demo-data/carebundle-0009.json")),
    ("synthea-lovetta-hand.json", include_str!("../demo-data/synthea-lovetta-hand.json")),
    ("synthea-orpha-sawayn.json", include_str!("../demo-data/synthea-orpha-sawayn.json")),
];

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let database = args.store.data_dir.join(medvault_store::sqlite::DATABASE_FILE);
    if database.exists() {
        println!(
            "Using the existing store in {} (tokens were printed when it was created;",
            args.store.data_dir.display()
        );
        println!(
            "mint another with: medvault token create --data-dir {} --client NAME --role clinician)",
            args.store.data_dir.display()
        );
        return crate::serve(args, None);
    }
    let (store, admin_token) = crate::create_store(&args.store, "admin")?;
    let clinician_token = store.create_token("demo-clinician", Role::Clinician.name(), None)?;
    let store = std::sync::Arc::new(store);
    let service = medvault_server::Service::new(store.clone());
    let sources: Vec<crate::import::Source<'_>> =
        DEMO_FILES.iter().map(|(name, text)| crate::import::Source::Memory { name, bytes: text.as_bytes() }).collect();
    let tally = crate::import::import_sources(&service, &sources, false)?;
    drop(service);
    let store = std::sync::Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("the store is still shared"))?;
    let base = format!("http://{}/fhir", args.listen);
    println!();
    println!(
        "medvault demo: a new store in {} with {} synthetic resources ({} rejected).",
        args.store.data_dir.display(),
        tally.stored,
        tally.rejected
    );
    for error in &tally.errors {
        println!("  rejected: {error}");
    }
    println!("Master key file: {}", args.store.key_file_path().display());
    println!();
    println!("Tokens, shown once and stored only as digests:");
    println!("  administrator (no clinical data): {}", admin_token.as_str());
    println!("  demo-clinician (reads and writes): {}", clinician_token.as_str());
    println!();
    println!("Try:");
    println!("  curl -s {base}/metadata | head -c 300");
    println!("  curl -s -H 'Authorization: Bearer {}' '{base}/Patient/_history?_count=5'", clinician_token.as_str());
    println!();
    crate::serve(args, Some(store))
}
