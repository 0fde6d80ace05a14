//! Where alerts go besides the log and the auditors' list: a SIEM's syslog receiver, as
//! RFC 5424 messages over UDP (RFC 5426: one datagram each, unprotected, may be lost), or
//! over TLS (RFC 5425: one TCP connection, TLS 1.3 or 1.2, the receiver's certificate
//! checked against the certificates the operator gives, each message framed as
//! `MSG-LEN SP SYSLOG-MSG`).
//!
//! A message is handed over without waiting: the TLS connection is made, kept and remade
//! by a thread of its own, from a queue of at most `ALERT_SYSLOG_QUEUE_MAX` messages. When
//! the receiver is unreachable the queue fills and further messages are dropped and
//! counted (an alert is never held up, and never lost from the log or `GET /admin/alerts`).

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;

/// Messages waiting for the TLS connection.
pub const ALERT_SYSLOG_QUEUE_MAX: usize = 1_024;
/// Longest wait to connect, or for the receiver to take a message.
pub const ALERT_SYSLOG_TIMEOUT_MS: u64 = 5_000;

/// A syslog receiver for alerts.
#[derive(Debug)]
pub enum AlertSink {
    Udp { socket: std::net::UdpSocket, target: std::net::SocketAddr },
    Tls(TlsSyslog),
}

impl AlertSink {
    /// A receiver over UDP.
    pub fn udp(target: std::net::SocketAddr) -> std::io::Result<Self> {
        let bind: std::net::SocketAddr =
            if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        Ok(AlertSink::Udp { socket: std::net::UdpSocket::bind(bind)?, target })
    }

    /// Sends one RFC 5424 message; a failure is logged (the alert is in the log anyway).
    pub fn send(&self, message: &str) {
        match self {
            AlertSink::Udp { socket, target } => {
                if let Err(error) = socket.send_to(message.as_bytes(), target) {
                    tracing::error!(%error, "an alert could not be sent to the syslog target");
                }
            }
            AlertSink::Tls(tls) => tls.send(message),
        }
    }
}

/// The TLS transport: a queue and the thread that drains it into one connection.
#[derive(Debug)]
pub struct TlsSyslog {
    queue: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl TlsSyslog {
    /// Trusts the certificates in the PEM file `ca_certificates` for the receiver at
    /// `address` (`HOST:PORT`; `HOST` is the name its certificate must carry), and starts
    /// the sending thread. Connects on the first message.
    pub fn start(address: &str, ca_certificates: &Path) -> Result<Self, String> {
        let (host, _) = address.rsplit_once(':').ok_or_else(|| format!("'{address}' is not HOST:PORT"))?;
        let host = host.trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string()).map_err(|_| format!("'{host}' is not a host name"))?;
        let config = crate::serve::client_config_trusting(ca_certificates).map_err(|error| error.to_string())?;
        let (queue, messages) = std::sync::mpsc::sync_channel(ALERT_SYSLOG_QUEUE_MAX);
        let dropped = Arc::new(AtomicU64::new(0));
        let peer = SyslogPeer { address: address.to_string(), name, config };
        std::thread::Builder::new()
            .name("alert-syslog".into())
            .spawn(move || peer.run(messages))
            .map_err(|error| format!("cannot start the syslog thread: {error}"))?;
        Ok(Self { queue, dropped })
    }

    fn send(&self, message: &str) {
        match self.queue.try_send(message.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(dropped, "the syslog receiver is not keeping up: an alert was not sent to it");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("the syslog thread stopped: an alert was not sent to the receiver");
            }
        }
    }

    /// Alerts not sent because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The sending thread's side.
struct SyslogPeer {
    address: String,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl SyslogPeer {
    /// Sends every message, in order, until the server drops its side of the queue. A
    /// message that cannot be sent on the kept connection is tried once on a new one.
    fn run(self, messages: std::sync::mpsc::Receiver<String>) {
        let mut stream: Option<TlsStream> = None;
        while let Ok(message) = messages.recv() {
            let frame = format!("{} {message}", message.len());
            let mut sent = false;
            for _ in 0..2 {
                if stream.is_none() {
                    match self.connect() {
                        Ok(connected) => stream = Some(connected),
                        Err(error) => {
                            tracing::error!(address = %self.address, %error, "cannot reach the syslog receiver over TLS");
                            break;
                        }
                    }
                }
                let Some(open) = stream.as_mut() else { break };
                match open.write_all(frame.as_bytes()).and_then(|()| open.flush()) {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(address = %self.address, %error, "the syslog connection failed; reconnecting");
                        stream = None;
                    }
                }
            }
            if !sent {
                tracing::error!(address = %self.address, "an alert was not sent to the syslog receiver");
            }
        }
        if let Some(mut open) = stream {
            open.conn.send_close_notify();
            let _ = open.flush();
        }
    }

    fn connect(&self) -> std::io::Result<TlsStream> {
        let timeout = Duration::from_millis(ALERT_SYSLOG_TIMEOUT_MS);
        let address = std::net::ToSocketAddrs::to_socket_addrs(self.address.as_str())?
            .next()
            .ok_or_else(|| std::io::Error::other("the address resolves to nothing"))?;
        let socket = TcpStream::connect_timeout(&address, timeout)?;
        socket.set_write_timeout(Some(timeout))?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_nodelay(true)?;
        let connection =
            rustls::ClientConnection::new(self.config.clone(), self.name.clone()).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(connection, socket);
        // The handshake now, so that a certificate the receiver cannot prove fails here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }
}
