//! An update bundle fetched from a URL (`POST /api/v1/admin/update/url`): HTTPS only, the
//! server's certificate verified against the system's trust anchors (`rustls-native-certs`:
//! the box's `/etc/ssl/certs`, `SSL_CERT_FILE` honoured) plus the PEM anchors the request
//! names for this fetch (an organisation's own update server), the body streamed to a file
//! with the upload's size limit. A blocking client (the caller runs it on the blocking pool):
//! one `GET` as HTTP/1.0 (so the answer is never chunked), no redirects followed, every wait
//! bounded. With `[proxy] url` the connection goes through that HTTP proxy (`CONNECT
//! host:port`, the proxy's answer head bounded like the server's); TLS runs end to end
//! through the tunnel, so the proxy sees only the host name and port.
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

/// `host:port`, with brackets around an IPv6 address.
fn authority(t: &Target) -> String {
    if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    }
}

/// A TCP connection to `t` (its addresses in turn), with the read and write waits bounded.
fn connect(t: &Target) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", t.host))?
        .collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, WAIT) {
            Ok(s) => {
                s.set_read_timeout(Some(WAIT))
                    .and_then(|()| s.set_write_timeout(Some(WAIT)))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(format!("cannot connect to {}: {last}", t.host))
}

/// Reads one HTTP answer head (up to the blank line, at most [`MAX_HEAD`] bytes) from `r`.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .take((MAX_HEAD - head.len()) as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Ok(None);
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

/// A tunnel to `t` through the HTTP proxy `proxy` (`CONNECT`).
fn tunnel(proxy: &Target, t: &Target) -> Result<TcpStream, String> {
    let via = authority(proxy);
    let mut tcp = connect(proxy).map_err(|e| format!("the proxy {via}: {e}"))?;
    let to = authority(t);
    tcp.write_all(
        format!(
            "CONNECT {to} HTTP/1.1\r\nHost: {to}\r\nUser-Agent: sealgated/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    )
    .map_err(|e| format!("the proxy {via}: {e}"))?;
    // Byte by byte up to the blank line: what follows is the server's TLS, not the proxy's.
    let mut r = BufReader::with_capacity(1, &tcp);
    let head = read_head(&mut r)
        .map_err(|e| format!("the proxy {via}: {e}"))?
        .ok_or_else(|| format!("the proxy {via} answered no complete HTTP head to CONNECT"))?;
    let Head { status, .. } = parse_head(&head).map_err(|e| format!("the proxy {via}: {e}"))?;
    if !(200..=299).contains(&status) {
        return Err(format!(
            "the proxy {via} answered {status} to CONNECT {to} (does it allow that port?)"
        ));
    }
    drop(r);
    Ok(tcp)
}

/// Fetches `t` into `out` (at most `max` bytes), through `proxy` if given; the number of
/// bytes.
pub fn fetch(
    t: &Target,
    proxy: Option<&Target>,
    tls: rustls::ClientConfig,
    out: &Path,
    max: u64,
    deadline: Instant,
) -> Result<u64, FetchError> {
    let failed = |s: String| FetchError::Failed(s);
    let tcp = match proxy {
        Some(p) => tunnel(p, t),
        None => connect(t),
    }
    .map_err(failed)?;
    let name = ServerName::try_from(t.host.clone())
        .map_err(|_| failed(format!("{:?} is not a host name", t.host)))?;
    let conn = rustls::ClientConnection::new(Arc::new(tls), name)
        .map_err(|e| failed(format!("TLS: {e}")))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let host = authority(t);
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
    let head = read_head(&mut r).map_err(tls_err)?.ok_or_else(|| {
        failed(format!(
            "{host} answered no complete HTTP head (at most {MAX_HEAD} bytes)"
        ))
    })?;
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
