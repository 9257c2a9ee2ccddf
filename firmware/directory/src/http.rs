//! HTTP certificate directories (`[[directory.http]]`): `GET URL?address=ADDRESS` over TLS
//! (verified against `ca` or the system's CAs), answered with PEM certificates (200, or a
//! single DER certificate) or nothing (404).
//!
//! A minimal HTTP/1.0 client (one request per connection, the answer read to its end, at most
//! [`MAX_ANSWER`] bytes), every read and write bounded by the lookup deadline.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use crate::{Fetched, HttpSettings, MAX_CANDIDATES};

/// Largest answer read.
pub const MAX_ANSWER: u64 = 256 * 1024;

/// One configured HTTP directory.
pub struct HttpSource {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Arc<rustls::ClientConfig>,
}

impl HttpSource {
    /// Parses its URL and reads its CA file.
    pub fn new(s: &HttpSettings) -> Result<HttpSource, String> {
        let rest = s
            .url
            .strip_prefix("https://")
            .ok_or_else(|| format!("directory.http url {:?} is not https://", s.url))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("directory.http url {:?}: no host", s.url))?;
        if path.contains('?')
            || path.contains('#')
            || path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(format!(
                "directory.http url {:?}: the path must have no query",
                s.url
            ));
        }
        Ok(HttpSource {
            url: s.url.clone(),
            host,
            port,
            path: path.to_string(),
            tls: crate::tls_config(s.ca.as_deref())?,
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks for `address` before `deadline`.
    pub fn fetch(&self, address: &str, deadline: Instant) -> Fetched {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {} ({e})", self.host))?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", self.host))?;
        let tcp = TcpStream::connect_timeout(&addr, left())
            .map_err(|e| format!("cannot connect ({e})"))?;
        let timeouts = |t: &TcpStream| {
            t.set_read_timeout(Some(left()))
                .and_then(|_| t.set_write_timeout(Some(left())))
        };
        timeouts(&tcp).map_err(|e| e.to_string())?;
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| format!("{}: {e}", self.host))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| format!("TLS: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let host_header = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let req = format!(
            "GET {}?address={} HTTP/1.0\r\nHost: {host_header}\r\nAccept: application/pem-certificate-chain\r\nConnection: close\r\n\r\n",
            self.path,
            query_value(address)
        );
        tls.write_all(req.as_bytes())
            .map_err(|e| format!("cannot send the query ({e})"))?;
        let mut answer = Vec::new();
        let mut reader = (&mut tls).take(MAX_ANSWER + 1);
        loop {
            timeouts(reader.get_ref().get_ref()).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 8192];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A server that closes without close_notify: what came is the answer.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(format!("cannot read the answer ({e})")),
            }
            if Instant::now() >= deadline {
                return Err("no complete answer within the lookup deadline".into());
            }
        }
        if answer.len() as u64 > MAX_ANSWER {
            return Err(format!(
                "the answer is larger than {} KiB",
                MAX_ANSWER / 1024
            ));
        }
        read_answer(&answer)
    }
}

/// The candidates (DER) in a whole HTTP answer (status line, header, body), or why none can be
/// taken: 200 with certificates, 404 for none, anything else a failure.
pub fn read_answer(answer: &[u8]) -> Fetched {
    let (status, body) = parse_answer(answer).ok_or("the answer is not HTTP")?;
    match status {
        200 => {}
        404 => return Ok(Vec::new()),
        s => return Err(format!("HTTP status {s}")),
    }
    certificates_of(body)
}

/// The DER certificates of an answer's body: PEM blocks, or one DER certificate.
fn certificates_of(body: &[u8]) -> Fetched {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    if body.windows(10).any(|w| w == b"-----BEGIN") {
        let blocks = pem::parse_many(body).map_err(|e| format!("unreadable PEM ({e})"))?;
        let mut out: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect();
        out.truncate(MAX_CANDIDATES);
        return Ok(out);
    }
    Ok(vec![body.to_vec()])
}

/// (status, body) of an HTTP/1.x answer read to its end.
fn parse_answer(a: &[u8]) -> Option<(u16, &[u8])> {
    let end = a.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&a[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        // An HTTP/1.0 request is never answered chunked by a conforming server.
        return None;
    }
    Some((status, &a[end + 4..]))
}

fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 443,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 443)),
    }
}

/// `s` percent-encoded for a query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_urls_are_read_strictly() {
        assert_eq!(
            parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\n"),
            Some((404, &b""[..]))
        );
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\nbody"),
            Some((200, &b"body"[..]))
        );
        assert_eq!(parse_answer(b"garbage"), None);
        assert_eq!(parse_answer(b"SMTP/1.0 200 OK\r\n\r\n"), None);
        assert_eq!(
            parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            None
        );
        assert_eq!(split_host_port("a.test"), Some(("a.test".into(), 443)));
        assert_eq!(
            split_host_port("127.0.0.1:8443"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(split_host_port("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(split_host_port("u@h"), None);
        assert_eq!(query_value("a+b@c.d\r\n"), "a%2Bb%40c.d%0D%0A");
        assert_eq!(certificates_of(b"  \n").ok(), Some(Vec::new()));
    }
}
