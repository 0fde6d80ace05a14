//! A medvault server in this process, on a fresh store in a temporary directory, sealed or
//! (benchmark-only) unsealed or without a ledger; and the import phase that POSTs the
//! dataset to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use medvault_crypto::master::KeyFile;
use medvault_crypto::MasterKey;
use medvault_store::Store;
use serde_json::Value;

use crate::dataset::Dataset;

/// Whether new versions are sealed (the product) or written in plaintext (benchmark only),
/// or sealed without ledger leaves and checkpoints (benchmark only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Sealed,
    DangerUnsealed,
    DangerNoLedger,
}

impl Sealing {
    pub fn label(self) -> &'static str {
        match self {
            Sealing::Sealed => "sealed",
            Sealing::DangerUnsealed => "unsealed",
            Sealing::DangerNoLedger => "no-ledger",
        }
    }
}

/// A running server; stopped (and its store closed and removed) by [`BenchServer::stop`].
#[derive(Debug)]
pub struct BenchServer {
    pub address: SocketAddr,
    token: String,
    store: Arc<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _directory: medvault_testkit::TempDir,
}

/// What [`BenchServer::settled_ledger`] found.
#[derive(Debug, Clone, Copy)]
pub struct SettledLedger {
    pub leaves: u64,
    pub audit_blocks: u64,
    pub checkpoint: Option<u64>,
}

impl BenchServer {
    /// Creates a store, reopens it in `sealing` mode, mints a clinician token and serves it
    /// on a loopback port from a multi-threaded runtime, as `medvault serve` does.
    pub fn start(sealing: Sealing) -> anyhow::Result<Self> {
        let directory = medvault_testkit::TempDir::new(&format!("bench-{}", sealing.label()));
        let key_file = KeyFile { path: directory.path().join("master.key") };
        MasterKey::generate()?.create_key_file(&key_file.path)?;
        let data_dir = directory.path().join("data");
        let clock: Arc<dyn medvault_base::Clock> = Arc::new(medvault_base::SystemClock);
        let created = Store::create(&data_dir, &key_file, clock.clone()).context("cannot create the store")?;
        created.close();
        drop(created);
        let store = match sealing {
            Sealing::Sealed => Store::open(&data_dir, &key_file, clock),
            Sealing::DangerUnsealed => Store::danger_open_unsealed_for_benchmark(&data_dir, &key_file, clock),
            Sealing::DangerNoLedger => Store::danger_open_without_ledger_for_benchmark(&data_dir, &key_file, clock),
        }
        .context("cannot reopen the store")?;
        let store = Arc::new(store);
        let token = store.create_service_token("bench", "system/*.cruds", None)?.as_str().to_string();

        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        let (shutdown, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
        let service = medvault_server::Service::new(store.clone());
        let thread = std::thread::Builder::new().name("bench-server".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let address = listener.local_addr()?;
                let config = medvault_server::http::HttpConfig {
                    scheme: "http",
                    fallback_authority: address.to_string(),
                    public_base: None,
                };
                let app = medvault_server::http::router(medvault_server::http::AppState::new(service, config));
                let _ = address_sender.send(address);
                medvault_server::serve::serve(listener, app, None, async {
                    let _ = shutdown_receiver.await;
                })
                .await;
                anyhow::Ok(())
            })
        })?;
        let address = address_receiver.recv_timeout(Duration::from_secs(30)).context("the server did not start")?;
        Ok(Self { address, token, store, shutdown: Some(shutdown), thread: Some(thread), _directory: directory })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Current (not deleted) resources in the store.
    pub fn resources_stored(&self) -> anyhow::Result<u64> {
        Ok(self.store.status()?.by_type.iter().map(|(_, current, _)| current).sum())
    }

    /// The size of the store's latest signed checkpoint (`None`: no checkpoint at all).
    pub fn latest_checkpoint_size(&self) -> anyhow::Result<Option<u64>> {
        Ok(self.store.latest_checkpoint()?.map(|checkpoint| checkpoint.tree_size))
    }

    /// Posts every pending search document (`docs/format/index-token.md`), so that the
    /// work an import left the writer is counted in the import.
    pub fn post_search_documents(&self) -> anyhow::Result<u64> {
        Ok(self.store.post_search_documents()?)
    }

    /// The ledger once every audit record committed so far is in it (and signed).
    pub fn settled_ledger(&self) -> anyhow::Result<SettledLedger> {
        self.store.settle_audit()?;
        let status = self.store.status()?;
        Ok(SettledLedger {
            leaves: status.ledger_leaves,
            audit_blocks: status.audit_blocks,
            checkpoint: status.checkpoint_size,
        })
    }

    /// Stops serving, waits for open connections, closes the store.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
        }
        self.store.close();
        Ok(())
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.store.close();
    }
}

/// What the import phase measured, and the ids the server gave the resources.
#[derive(Debug)]
pub struct ImportRun {
    pub resources: usize,
    pub elapsed: Duration,
    /// `Type/id` of every stored resource, for the read phase.
    pub references: Vec<String>,
    /// CPU seconds the server spent: this process's, less the import threads' own.
    pub server_cpu_s: Option<f64>,
}

impl ImportRun {
    pub fn resources_per_s(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64()
    }
}

/// POSTs every Bundle of `dataset` to `/fhir` from `connections` kept-alive connections,
/// each taking the next Bundle when its previous one is answered. Every answer must be a
/// 200 `transaction-response` with one `201 Created` entry per resource. The import ends
/// when the search documents it wrote are posted too (their time and CPU are counted).
pub fn import(server: &BenchServer, dataset: &Dataset, connections: usize) -> anyhow::Result<ImportRun> {
    let next = AtomicUsize::new(0);
    let authorization = format!("Bearer {}", server.token());
    let started = Instant::now();
    let process_cpu_started = crate::cpu::process_s();
    let per_connection: Vec<anyhow::Result<(Vec<String>, Option<f64>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                std::thread::Builder::new().name("bench-import".into()).spawn_scoped(scope, || {
                    let cpu_started = crate::cpu::thread_s();
                    let references = import_worker(server.address, &authorization, dataset, &next)?;
                    let cpu_s = crate::cpu::thread_s().zip(cpu_started).map(|(end, start)| end - start);
                    Ok((references, cpu_s))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| match worker {
                Ok(worker) => worker.join().unwrap_or_else(|_| Err(anyhow::anyhow!("an import thread panicked"))),
                Err(error) => Err(anyhow::anyhow!("cannot start an import thread: {error}")),
            })
            .collect()
    });
    server.post_search_documents()?;
    let elapsed = started.elapsed();
    let process_cpu_s = crate::cpu::process_s().zip(process_cpu_started).map(|(end, start)| end - start);
    let mut references = Vec::with_capacity(dataset.resources);
    let mut client_cpu_s = Some(0.0);
    for result in per_connection {
        let (worker_references, worker_cpu_s) = result?;
        references.extend(worker_references);
        client_cpu_s = client_cpu_s.zip(worker_cpu_s).map(|(sum, cpu)| sum + cpu);
    }
    let server_cpu_s = process_cpu_s.zip(client_cpu_s).map(|(process, client)| (process - client).max(0.0));
    anyhow::ensure!(
        references.len() == dataset.resources,
        "the server acknowledged {} resources of {}",
        references.len(),
        dataset.resources
    );
    Ok(ImportRun { resources: references.len(), elapsed, references, server_cpu_s })
}

fn import_worker(
    address: SocketAddr,
    authorization: &str,
    dataset: &Dataset,
    next: &AtomicUsize,
) -> anyhow::Result<Vec<String>> {
    let mut client = medvault_testkit::HttpClient::connect(address)?;
    let headers = [
        ("Authorization", authorization),
        ("Content-Type", "application/fhir+json"),
        ("Accept", "application/fhir+json"),
        ("Prefer", "return=minimal"),
    ];
    let mut references = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(bundle) = dataset.bundles.get(index) else { break };
        let response = client.request("POST", "/fhir", &headers, Some(&bundle.body))?;
        anyhow::ensure!(
            response.status == 200,
            "Bundle {index} was answered {}: {}",
            response.status,
            response.text().chars().take(500).collect::<String>()
        );
        let answer: Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("the answer to Bundle {index} is not JSON"))?;
        let entries = answer.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        anyhow::ensure!(
            entries.len() == bundle.rows.len(),
            "Bundle {index} had {} entries, its answer {}",
            bundle.rows.len(),
            entries.len()
        );
        for entry in entries {
            let status = entry.pointer("/response/status").and_then(Value::as_str).unwrap_or("");
            let location = entry.pointer("/response/location").and_then(Value::as_str).unwrap_or("");
            anyhow::ensure!(status.starts_with("201"), "an entry of Bundle {index} was answered '{status}'");
            let reference = location.split("/_history").next().unwrap_or("");
            anyhow::ensure!(reference.contains('/'), "an entry of Bundle {index} has no location");
            references.push(reference.to_string());
        }
    }
    Ok(references)
}

/// Reads `count` of the imported resources back over HTTP, spread over the list, and checks
/// each is the resource asked for; and checks that a read without the token is refused, so
/// that the read figures are of authenticated reads of real rows.
pub fn verify_reads(server: &BenchServer, references: &[String], count: usize) -> anyhow::Result<()> {
    let mut client = medvault_testkit::HttpClient::connect(server.address)?;
    let authorization = format!("Bearer {}", server.token());
    let headers = [("Authorization", authorization.as_str()), ("Accept", "application/fhir+json")];
    let step = (references.len() / count.max(1)).max(1);
    for reference in references.iter().step_by(step).take(count) {
        let response = client.request("GET", &format!("/fhir/{reference}"), &headers, None)?;
        anyhow::ensure!(response.status == 200, "GET {reference} was answered {}", response.status);
        let resource: Value =
            serde_json::from_slice(&response.body).with_context(|| format!("GET {reference}: not JSON"))?;
        let (resource_type, id) = reference.split_once('/').context("a reference without '/'")?;
        anyhow::ensure!(
            resource.get("resourceType").and_then(Value::as_str) == Some(resource_type)
                && resource.get("id").and_then(Value::as_str) == Some(id),
            "GET {reference} returned another resource"
        );
    }
    let reference = references.first().context("nothing was imported")?;
    let anonymous =
        client.request("GET", &format!("/fhir/{reference}"), &[("Accept", "application/fhir+json")], None)?;
    anyhow::ensure!(anonymous.status == 401, "a read without a token was answered {}", anonymous.status);
    Ok(())
}
