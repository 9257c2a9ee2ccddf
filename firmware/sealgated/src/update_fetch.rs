//! An update bundle fetched from a URL (`POST /api/v1/admin/update/url`): HTTPS only, the
//! server's certificate verified against the system's trust anchors (`rustls-native-certs`:
//! the box's `/etc/ssl/certs`, `SSL_CERT_FILE` honoured) plus the PEM anchors the request
//! names for this fetch (an organisation's own update server), the body streamed to a file
//! with the upload's size limit. A blocking client (the caller runs it on the blocking pool):
//! one `GET` as HTTP/1.0 (so the answer is never chunked), no redirects followed, every wait
//! bounded. The box has no proxy settings: it connects directly.
//!
//! The attacker: whoever answers at the URL's address (a wrong certificate is refused; a
//! lying length, an endless body or slow trickle is cut off by the limit and the deadline),
//! and an administrator's typo. What arrives is still only a file: the caller checks its
//! signature with `rauc info` before anything is installed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

pub use crate::update_url::{Head, MAX_HEAD, Target, parse_head, parse_url};

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The body is larger than the limit (declared or streamed).
    TooLarge,
    /// Anything else, said for the administrator.
    Failed(String),
}

/// How long the whole fetch may take.
pub const DEADLINE: Duration = Duration::from_secs(30 * 60);
/// How long one connect or read may wait.
const WAIT: Duration = Duration::from_secs(30);

/// The TLS client: the system's roots plus `extra_pem`'s certificates.
pub fn client_config(extra_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    // A single unusable root in a system bundle is skipped, as browsers do.
    roots.add_parsable_certificates(found.certs);
    if let Some(pem) = extra_pem {
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("ca: {e}"))?;
            roots.add(c).map_err(|e| format!("ca: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("ca has no PEM certificate".into());
        }
    }
    if roots.is_empty() {
        return Err("no trust anchor: the system has none and the request named none".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Fetches `t` into `out` (at most `max` bytes); the number of bytes.
pub fn fetch(
    t: &Target,
    tls: rustls::ClientConfig,
    out: &Path,
    max: u64,
    deadline: Instant,
) -> Result<u64, FetchError> {
    let failed = |s: String| FetchError::Failed(s);
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| failed(format!("{}: {e}", t.host)))?
        .collect();
    let mut tcp = None;
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, WAIT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let tcp = tcp.ok_or_else(|| failed(format!("cannot connect to {}: {last}", t.host)))?;
    tcp.set_read_timeout(Some(WAIT))
        .and_then(|()| tcp.set_write_timeout(Some(WAIT)))
        .map_err(|e| failed(e.to_string()))?;
    let name = ServerName::try_from(t.host.clone())
        .map_err(|_| failed(format!("{:?} is not a host name", t.host)))?;
    let conn = rustls::ClientConnection::new(Arc::new(tls), name)
        .map_err(|e| failed(format!("TLS: {e}")))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let host = if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let tls_err = |e: std::io::Error| failed(format!("{host}: {e}"));
    tls.write_all(
        format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: sealgated/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            t.path,
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    )
    .map_err(tls_err)?;
    let mut r = BufReader::new(tls);
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut r)
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut line)
            .map_err(tls_err)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(failed(format!(
                "{host} answered no complete HTTP head (at most {MAX_HEAD} bytes)"
            )));
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let Head { status, length } = parse_head(&head).map_err(|e| failed(format!("{host}: {e}")))?;
    match status {
        200 => {}
        c @ 300..=399 => {
            return Err(failed(format!(
                "{host} answered {c} (a redirect): give the bundle's final URL"
            )));
        }
        c => return Err(failed(format!("{host} answered {c}"))),
    }
    if length.is_some_and(|l| l > max) {
        return Err(FetchError::TooLarge);
    }
    let mut file = File::create(out).map_err(|e| failed(format!("writing the bundle: {e}")))?;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the download took longer than {} s",
                DEADLINE.as_secs()
            )));
        }
        let want = match length {
            Some(l) if total >= l => break,
            Some(l) => buf.len().min((l - total) as usize),
            None => buf.len(),
        };
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            // Without a length the end must be TLS's own (close_notify), never a cut.
            Err(e) => return Err(tls_err(e)),
        };
        total += n as u64;
        if total > max {
            return Err(FetchError::TooLarge);
        }
        file.write_all(&buf[..n])
            .map_err(|e| failed(format!("writing the bundle: {e}")))?;
    }
    if let Some(l) = length
        && total != l
    {
        return Err(failed(format!(
            "{host} ended the body after {total} of {l} bytes"
        )));
    }
    if total == 0 {
        return Err(failed(format!("{host} sent an empty body")));
    }
    file.sync_all()
        .map_err(|e| failed(format!("writing the bundle: {e}")))?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_that_is_no_certificate_is_refused() {
        assert!(client_config(Some(b"not pem")).is_err());
    }
}
