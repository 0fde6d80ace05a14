//! Accepting connections: plain HTTP on loopback, or TLS 1.2/1.3 through rustls anywhere
//! else. Binding a non-loopback address without TLS is refused before any socket opens.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; beyond this, accepting waits.
pub const CONNECTIONS_MAX: usize = 4096;
/// Time a client has to send its request headers.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve {0} without TLS: only loopback addresses may be served in plain HTTP; \
         give --tls-cert and --tls-key (or create an evaluation certificate with `medvault init --self-signed-cert`)"
    )]
    PlaintextOffLoopback(SocketAddr),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Refuses plain HTTP anywhere but loopback.
pub fn check_plaintext_allowed(address: SocketAddr, tls: bool) -> Result<(), ServeError> {
    if tls || address.ip().is_loopback() {
        Ok(())
    } else {
        Err(ServeError::PlaintextOffLoopback(address))
    }
}

/// A rustls server configuration with TLS 1.3 and 1.2 only, ring's provider, no client auth.
pub fn tls_config(certificate_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate_path)
        .map_err(|e| ServeError::Tls(format!("cannot read certificate {}: {e}", certificate_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("bad certificate in {}: {e}", certificate_path.display())))?;
    if certificates.is_empty() {
        return Err(ServeError::Tls(format!("no certificate in {}", certificate_path.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| ServeError::Tls(format!("cannot read private key {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls client configuration with TLS 1.3 and 1.2 only, ring's provider, trusting only
/// the certificates in the PEM file `ca_certificates` (there is no system trust store): what
/// the server's outgoing connections use (alerts over TLS, `witness cosign --url`).
pub fn client_config_trusting(ca_certificates: &Path) -> Result<Arc<rustls::ClientConfig>, ServeError> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca_certificates)
        .map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", ca_certificates.display())))?;
    for certificate in certificates {
        let certificate = certificate
            .map_err(|e| ServeError::Tls(format!("{}: a bad certificate: {e}", ca_certificates.display())))?;
        roots
            .add(certificate)
            .map_err(|e| ServeError::Tls(format!("{}: an unusable certificate: {e}", ca_certificates.display())))?;
    }
    if roots.is_empty() {
        return Err(ServeError::Tls(format!("{} holds no certificate", ca_certificates.display())));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Each request learns the address it came from (login throttling per address).
        let with_peer =
            tower::ServiceExt::map_request(app.clone(), move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(crate::admin::PeerAddr(peer));
                request
            });
        let service = TowerToHyperService::new(with_peer);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS));
        match &acceptor {
            None => {
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS), acceptor.accept(stream))
                            .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("connections still open after 10 s; closing"),
    }
}
