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
            "Using the existing store in {} (its demo credentials were printed when it was created;",
            args.store.data_dir.display()
        );
        println!(
            "make others with `medvault user create --data-dir {}` and `medvault token create`)",
            args.store.data_dir.display()
        );
        return crate::serve(args, None);
    }
    let store = crate::create_store(&args.store)?;
    let store = std::sync::Arc::new(store);
    let service = medvault_server::Service::new(store.clone());
    let sources: Vec<crate::import::Source<'_>> =
        DEMO_FILES.iter().map(|(name, text)| crate::import::Source::Memory { name, bytes: text.as_bytes() }).collect();
    let tally = crate::import::import_sources(&service, &sources, false)?;
    drop(service);
    let store = std::sync::Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("the store is still shared"))?;
    let clinician = make_demo_clinician(&store)?;
    let service_token = store.create_service_token("demo-integration", "system/*.rs", None)?;
    let root = format!("http://{}", args.listen);
    let base = format!("{root}/fhir");
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
    println!("Credentials, shown once (the store keeps only hashes and wrapped secrets):");
    println!("  service client 'demo-integration' (reads every patient, system/*.rs): {}", service_token.as_str());
    println!(
        "  clinician 'demo-clinician' ({}; sees the {} patients in their care, no others): password {}",
        clinician.practitioner.as_deref().unwrap_or("no Practitioner"),
        clinician.patients,
        clinician.password.as_str()
    );
    crate::users::print_enrolment("demo-clinician", &clinician.enrolment);
    println!();
    println!("Try:");
    println!("  curl -s {base}/metadata | head -c 300");
    println!("  curl -s -H 'Authorization: Bearer {}' '{base}/Patient/_history?_count=5'", service_token.as_str());
    println!("Log in as the clinician (password, then the code from an authenticator app or");
    println!(
        "`MEDVAULT_TOTP={} medvault totp-code --secret-env MEDVAULT_TOTP`):",
        clinician.enrolment.secret_base32.as_str()
    );
    println!(
        "  curl -s -X POST {root}/auth/login -H 'content-type: application/json' -d '{{\"username\":\"demo-clinician\",\"password\":\"{}\"}}'",
        clinician.password.as_str()
    );
    println!(
        "  curl -s -X POST {root}/auth/mfa -H 'content-type: application/json' -d '{{\"mfa_ticket\":\"<mfa_ticket>\",\"code\":\"<code>\"}}'"
    );
    println!("  curl -s -H 'Authorization: Bearer <access_token>' '{base}/Patient/_history'");
    println!();
    crate::serve(args, Some(store))
}

struct DemoClinician {
    password: zeroize::Zeroizing<String>,
    practitioner: Option<String>,
    patients: usize,
    enrolment: medvault_server::accounts::Enrolment,
}

/// A clinician who is the Practitioner of the most demo Encounters, and is explicitly
/// assigned to three more patients: enough to show care relationships both ways.
fn make_demo_clinician(store: &medvault_store::Store) -> anyhow::Result<DemoClinician> {
    use medvault_store::engine::HistoryPage;
    use medvault_store::History;
    let page = HistoryPage { count: 1000, before_seq: None, since_ms: None };
    let mut counts: std::collections::BTreeMap<String, (usize, std::collections::BTreeSet<String>)> =
        std::collections::BTreeMap::new();
    for version in store.history(&History::Type("Encounter".into()), page)? {
        let resource: serde_json::Value = serde_json::from_slice(&version.json)?;
        let patient = medvault_fhir::patient_compartment_owner(&resource).unwrap_or_default();
        for practitioner in medvault_fhir::care_relationships(&resource).unwrap_or_default() {
            let entry = counts.entry(practitioner).or_default();
            entry.0 += 1;
            entry.1.insert(patient.clone());
        }
    }
    let chosen = counts.iter().max_by_key(|(_, (n, _))| *n).map(|(id, (_, patients))| (id.clone(), patients.clone()));
    let password = zeroize::Zeroizing::new(
        medvault_auth::recovery::generate_recovery_codes(1)?.pop().ok_or_else(|| anyhow::anyhow!("no password"))?,
    );
    let practitioner = chosen.as_ref().map(|(id, _)| format!("Practitioner/{id}"));
    let account = medvault_server::accounts::NewAccount {
        username: "demo-clinician",
        role: Role::Clinician,
        password: &password,
        fhir_user: practitioner.as_deref(),
        scopes: None,
        mfa: true,
    };
    let (user_id, enrolment) =
        medvault_server::accounts::create_account(store, medvault_auth::password::PasswordParams::DEFAULT, &account)
            .map_err(|e| anyhow::anyhow!(e.issues[0].diagnostics.clone()))?;
    let enrolment = enrolment.ok_or_else(|| anyhow::anyhow!("the demo clinician has no second factor"))?;
    let mut patients = chosen.map(|(_, patients)| patients).unwrap_or_default();
    let mut assigned = 0;
    for version in store.history(&History::Type("Patient".into()), page)?.iter().rev() {
        if assigned == 3 {
            break;
        }
        if patients.insert(version.id.clone()) {
            store.assign_patient(user_id, &version.id, "demo")?;
            assigned += 1;
        }
    }
    Ok(DemoClinician { password, practitioner, patients: patients.len(), enrolment })
}
