//! Alerts to a syslog receiver over TLS (RFC 5425): delivered as octet-counted frames to a
//! receiver whose certificate chains to the given certificates, and never to one whose
//! certificate does not.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use medvault_server::alert_sink::{AlertSink, TlsSyslog};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the receiver saw on one connection: the frames, or the TLS error that ended it.
type Seen = Result<Vec<String>, String>;

/// A one-connection syslog receiver over TLS on localhost with a new self-signed
/// certificate; returns its port, the certificate (PEM) and what it saw.
fn receiver(frames_wanted: usize) -> (u16, String, mpsc::Receiver<Seen>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let certificate_pem = certified.cert.pem();
    let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes()).expect("pem");
    let key = PrivateKeyDer::from_pem_slice(certified.signing_key.serialize_pem().as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (seen, result) = mpsc::channel();
    std::thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let connection = rustls::ServerConnection::new(Arc::new(config)).expect("connection");
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let _ = seen.send(read_frames(&mut stream, frames_wanted));
    });
    (port, certificate_pem, result)
}

/// Reads `MSG-LEN SP SYSLOG-MSG` frames.
fn read_frames(stream: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>, wanted: usize) -> Seen {
    let mut frames = Vec::new();
    let mut byte = [0u8; 1];
    while frames.len() < wanted {
        let mut length = String::new();
        loop {
            stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
            if byte[0] == b' ' {
                break;
            }
            length.push(char::from(byte[0]));
        }
        let length: usize = length.parse().map_err(|_| format!("not a frame length: {length:?}"))?;
        let mut message = vec![0u8; length];
        stream.read_exact(&mut message).map_err(|e| e.to_string())?;
        frames.push(String::from_utf8(message).map_err(|e| e.to_string())?);
    }
    Ok(frames)
}

fn ca_file(pem: &str) -> medvault_testkit::TempDir {
    let dir = medvault_testkit::TempDir::new("syslog-ca");
    std::fs::write(dir.path().join("ca.pem"), pem).expect("write");
    dir
}

#[test]
fn alerts_reach_a_trusted_receiver_as_octet_counted_frames() {
    let (port, certificate, seen) = receiver(2);
    let ca = ca_file(&certificate);
    let sink =
        AlertSink::Tls(TlsSyslog::start(&format!("localhost:{port}"), &ca.path().join("ca.pem")).expect("start"));
    let first =
        "<130>1 2026-11-29T10:00:00.000Z medvault medvault - Alert [medvault@32473 alert=\"canary\"] Patient/p1 opened";
    let second = "<130>1 2026-11-29T10:00:01.000Z medvault medvault - Alert - a second one, with ünïcode";
    sink.send(first);
    sink.send(second);
    let frames = seen.recv_timeout(Duration::from_secs(30)).expect("the receiver answers").expect("frames");
    assert_eq!(frames, vec![first.to_string(), second.to_string()]);
}

#[test]
fn a_receiver_whose_certificate_is_not_trusted_gets_nothing() {
    let (port, _, seen) = receiver(1);
    // Trust another certificate than the receiver's.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let ca = ca_file(&other.cert.pem());
    let sink =
        AlertSink::Tls(TlsSyslog::start(&format!("localhost:{port}"), &ca.path().join("ca.pem")).expect("start"));
    sink.send("<130>1 2026-11-29T10:00:00.000Z medvault medvault - Alert - must not arrive");
    let seen = seen.recv_timeout(Duration::from_secs(30)).expect("the receiver answers");
    let error = seen.expect_err("no frame reaches an untrusted receiver");
    assert!(!error.is_empty());
}

#[test]
fn bad_settings_are_refused_at_start() {
    let dir = medvault_testkit::TempDir::new("syslog-ca-bad");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let refused = TlsSyslog::start("localhost:6514", &empty).expect_err("no certificate");
    assert!(refused.contains("holds no certificate"), "{refused}");
    let refused = TlsSyslog::start("localhost:6514", &dir.path().join("missing.pem")).expect_err("missing file");
    assert!(refused.contains("cannot read"), "{refused}");
    let refused = TlsSyslog::start("no-port", &empty).expect_err("no port");
    assert!(refused.contains("HOST:PORT"), "{refused}");
}
