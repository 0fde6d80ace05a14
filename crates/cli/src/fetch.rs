//! A minimal HTTP/1.1 GET for `witness cosign --url`: plain HTTP, or HTTPS through rustls
//! (TLS 1.3/1.2) trusting only the certificates given. One request per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

/// Largest response read, in bytes (a consistency document is a few kilobytes).
const RESPONSE_BYTES_MAX: u64 = 4 * 1024 * 1024;
const TIMEOUT_S: u64 = 30;

/// GETs `url` with a bearer token; returns the status and the body.
pub fn get(url: &str, token: &str, ca_cert: Option<&Path>) -> anyhow::Result<(u16, Vec<u8>)> {
    let (tls, rest) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => anyhow::bail!("{url}: only http:// and https:// URLs are supported"),
    };
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host).trim_matches(['[', ']']);
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let socket = TcpStream::connect(&address).with_context(|| format!("cannot connect to {address}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(TIMEOUT_S)))?;
    socket.set_write_timeout(Some(Duration::from_secs(TIMEOUT_S)))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut response = Vec::new();
    if tls {
        let ca_cert = ca_cert.context("an https URL needs --ca-cert (the certificates to trust)")?;
        let config = medvault_server::serve::client_config_trusting(ca_cert)?;
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).context("bad host name")?;
        let connection = rustls::ClientConnection::new(config, name)?;
        let mut stream = rustls::StreamOwned::new(connection, socket);
        stream.write_all(request.as_bytes())?;
        read_all(&mut stream, &mut response)?;
    } else {
        let mut socket = socket;
        socket.write_all(request.as_bytes())?;
        read_all(&mut socket, &mut response)?;
    }
    parse(&response)
}

fn read_all(stream: &mut impl Read, into: &mut Vec<u8>) -> anyhow::Result<()> {
    let read = stream.take(RESPONSE_BYTES_MAX + 1).read_to_end(into);
    // A TLS peer that closes without close_notify still sent a complete response.
    if let Err(error) = read {
        if into.is_empty() || error.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(error.into());
        }
    }
    anyhow::ensure!(into.len() as u64 <= RESPONSE_BYTES_MAX, "the response is larger than {RESPONSE_BYTES_MAX} bytes");
    Ok(())
}

fn parse(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header in the response")?;
    let head = std::str::from_utf8(&response[..split]).context("the response header is not text")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let body = &response[split + 4..];
    let chunked = head.lines().any(|l| {
        let lower = l.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut decoded = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end])?.trim(), 16).context("bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, decoded));
        }
        decoded.extend_from_slice(rest.get(..size).context("truncated chunk")?);
        rest = rest.get(size + 2..).context("truncated chunk")?;
    }
}
