//! The network services of content scanning, asked between [`Pipeline::prepare`] and
//! [`Pipeline::finish`] when `[scan]` configures them:
//!
//! - **The URL reputation service** (`reputation_url`, HTTPS only, its certificate verified
//!   against `reputation_ca` or the system's CAs): one `POST` per batch of at most
//!   `reputation_batch` hashes, HTTP/1.0, `Content-Type: application/json`, body
//!   `{"sha256": ["<64 hex>", ...]}` (the SHA-256 of each normalised URL, see
//!   `sealgate_scan::urls`; never the URLs themselves); the answer is `200` with
//!   `{"malicious": ["<64 hex>", ...]}` (hashes it was not asked about are ignored), at most
//!   256 KiB. Everything (connection, TLS, every batch) within `reputation_timeout_ms`.
//! - **clamd** (`clamd`: a Unix socket path or `HOST:PORT`): `zINSTREAM`, the cleartext in
//!   chunks of at most 64 KiB (4-byte big-endian length each, a zero length at the end), the
//!   answer `stream: OK` or `stream: NAME FOUND`, within `clamd_timeout_ms`.
//!
//! A service that does not answer, answers late or answers nonsense gives an answer with an
//! `error`, which the pipeline labels (`reputation-unavailable`, `clamd-unavailable`, score
//! 0): mail is never held or refused because a service is down.
//!
//! Attacker: the network between the box and the services, and a service that lies or
//! stalls. TLS is verified (no option turns that off); answers are bounded in size and time;
//! nothing here panics on what comes back. An encrypted message the box cannot decrypt is
//! never sent to clamd (its cleartext is unknown).

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate_scan::{ClamdAnswer, Pipeline, Prepared, Remote, Report, ReputationAnswer, Settings};

/// Largest answer read from the reputation service.
pub const MAX_ANSWER: u64 = 256 * 1024;

/// Largest message sent to clamd (its default `StreamMaxLength` is 25 MiB).
pub const MAX_CLAMD_BYTES: usize = 25 << 20;

/// The configured services, ready to ask (TLS configuration loaded once).
#[derive(Clone)]
pub struct Services {
    reputation: Option<ReputationClient>,
    clamd: Option<ClamdClient>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("reputation", &self.reputation.as_ref().map(|r| &r.url))
            .field("clamd", &self.clamd.as_ref().map(|c| &c.socket))
            .finish()
    }
}

impl Services {
    /// The services `[scan]` configures; an error when the reputation CA file does not load
    /// or the URL does not parse (a settings error).
    pub fn new(s: &Settings) -> Result<Services, String> {
        let reputation = match &s.reputation_url {
            Some(url) => Some(ReputationClient::new(
                url,
                s.reputation_ca.as_deref(),
                Duration::from_millis(s.reputation_timeout_ms),
                s.reputation_batch,
            )?),
            None => None,
        };
        let clamd = s.clamd.as_ref().map(|socket| ClamdClient {
            socket: socket.clone(),
            timeout: Duration::from_millis(s.clamd_timeout_ms),
        });
        Ok(Services { reputation, clamd })
    }

    /// Does it ask anything?
    pub fn is_empty(&self) -> bool {
        self.reputation.is_none() && self.clamd.is_none()
    }

    /// Asks every configured service about a prepared message.
    pub fn ask(&self, prepared: &Prepared<'_>) -> Remote {
        let mut remote = Remote::default();
        if let Some(r) = &self.reputation {
            let hashes: Vec<String> = prepared.urls().iter().map(|u| sha256_hex(u)).collect();
            remote.reputation = r.ask(&hashes);
        }
        if let Some(c) = &self.clamd
            && let Some(clear) = prepared.cleartext()
        {
            remote.clamd = c.ask(clear);
        }
        remote
    }

    /// The whole pipeline on one message: prepare, ask, finish.
    pub fn scan(
        &self,
        pipeline: &Pipeline,
        input: &sealgate_scan::Input<'_>,
        auth: Option<(
            &sealgate_scan::checks::AuthResults,
            sealgate_scan::checks::DmarcMode,
        )>,
    ) -> Report {
        let prepared = pipeline.prepare(input);
        let remote = if self.is_empty() {
            Remote::default()
        } else {
            self.ask(&prepared)
        };
        pipeline.finish(&prepared, &remote, auth)
    }
}

fn sha256_hex(s: &str) -> String {
    use sealgate_scan::hashdb::{Digests, hex};
    hex(&Digests::of(s.as_bytes()).sha256)
}

/// The reputation service.
#[derive(Clone)]
pub struct ReputationClient {
    url: String,
    host: String,
    port: u16,
    path: String,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    batch: usize,
}

impl ReputationClient {
    /// A client of `url` (`https://HOST[:PORT][/PATH]`).
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        timeout: Duration,
        batch: usize,
    ) -> Result<ReputationClient, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("reputation_url {url:?} is not https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("reputation_url {url:?}: no host"))?;
        if path.chars().any(|c| c.is_control() || c == ' ' || c == '#') {
            return Err(format!("reputation_url {url:?}: bad path"));
        }
        Ok(ReputationClient {
            url: url.to_string(),
            host,
            port,
            path: path.to_string(),
            tls: tls_config(ca)?,
            timeout,
            batch: batch.clamp(1, 1000),
        })
    }

    /// Asks about these hashes (lower-case hex SHA-256), in batches, within the timeout.
    pub fn ask(&self, hashes: &[String]) -> ReputationAnswer {
        let mut answer = ReputationAnswer::default();
        let deadline = Instant::now() + self.timeout;
        for chunk in hashes.chunks(self.batch) {
            match self.post(chunk, deadline) {
                Ok(listed) => answer
                    .malicious
                    .extend(listed.into_iter().filter(|h| chunk.contains(h))),
                Err(e) => {
                    answer.error = Some(format!("reputation service {}: {e}", self.url));
                    break;
                }
            }
        }
        answer
    }

    fn post(&self, hashes: &[String], deadline: Instant) -> Result<Vec<String>, String> {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        if Instant::now() >= deadline {
            return Err("no answer within the timeout".into());
        }
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
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{}: {e}", self.host))?;
        let conn = rustls::ClientConnection::new(self.tls.clone(), name)
            .map_err(|e| format!("TLS: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = serde_json::json!({ "sha256": hashes }).to_string();
        let host_header = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let req = format!(
            "POST {} HTTP/1.0\r\nHost: {host_header}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            body.len()
        );
        tls.write_all(req.as_bytes())
            .map_err(|e| format!("cannot send ({e})"))?;
        let mut answer = Vec::new();
        let mut reader = (&mut tls).take(MAX_ANSWER + 1);
        loop {
            timeouts(reader.get_ref().get_ref()).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 8192];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(format!("cannot read the answer ({e})")),
            }
            if Instant::now() >= deadline {
                return Err("no complete answer within the timeout".into());
            }
        }
        if answer.len() as u64 > MAX_ANSWER {
            return Err(format!("answer larger than {} KiB", MAX_ANSWER / 1024));
        }
        read_answer(&answer)
    }
}

/// The listed hashes of a whole HTTP answer, or why it is not one.
pub fn read_answer(a: &[u8]) -> Result<Vec<String>, String> {
    let end = a
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let head = std::str::from_utf8(&a[..end]).map_err(|_| "the answer is not HTTP")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| {
            let mut p = l.split(' ');
            p.next()
                .filter(|v| v.starts_with("HTTP/1."))
                .and(p.next())
                .and_then(|s| s.parse::<u16>().ok())
        })
        .ok_or("the answer is not HTTP")?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:"))
    {
        return Err("a chunked answer to an HTTP/1.0 request".into());
    }
    let v: serde_json::Value = serde_json::from_slice(&a[end + 4..])
        .map_err(|e| format!("the answer is not JSON ({e})"))?;
    let list = v
        .get("malicious")
        .and_then(|m| m.as_array())
        .ok_or("the answer has no \"malicious\" list")?;
    Ok(list
        .iter()
        .filter_map(|h| h.as_str())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .collect())
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

/// Roots from `ca` (PEM), or the system's bundle.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let path = ca.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    match (std::fs::read(path), ca) {
        (Ok(d), _) => {
            for block in pem::parse_many(&d).map_err(|e| format!("{}: {e}", path.display()))? {
                if block.tag() == "CERTIFICATE" {
                    roots
                        .add(rustls_pki_types::CertificateDer::from(
                            block.into_contents(),
                        ))
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
        }
        (Err(e), Some(_)) => return Err(format!("{}: {e}", path.display())),
        (Err(_), None) => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// clamd over its socket.
#[derive(Debug, Clone)]
pub struct ClamdClient {
    socket: String,
    timeout: Duration,
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl ClamdClient {
    /// A client of clamd at `socket` (a path, or `HOST:PORT`).
    pub fn new(socket: &str, timeout: Duration) -> ClamdClient {
        ClamdClient {
            socket: socket.to_string(),
            timeout,
        }
    }

    /// Scans `data` with INSTREAM.
    pub fn ask(&self, data: &[u8]) -> ClamdAnswer {
        match self.instream(data) {
            Ok(viruses) => ClamdAnswer {
                viruses,
                error: None,
            },
            Err(e) => ClamdAnswer {
                viruses: Vec::new(),
                error: Some(format!("clamd {}: {e}", self.socket)),
            },
        }
    }

    fn connect(&self) -> Result<Box<dyn Stream>, String> {
        if self.socket.starts_with('/') {
            let s = std::os::unix::net::UnixStream::connect(&self.socket)
                .map_err(|e| format!("cannot connect ({e})"))?;
            s.set_read_timeout(Some(self.timeout))
                .and_then(|_| s.set_write_timeout(Some(self.timeout)))
                .map_err(|e| e.to_string())?;
            Ok(Box::new(s))
        } else {
            let addr = self
                .socket
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve ({e})"))?
                .next()
                .ok_or("cannot resolve")?;
            let s = TcpStream::connect_timeout(&addr, self.timeout)
                .map_err(|e| format!("cannot connect ({e})"))?;
            s.set_read_timeout(Some(self.timeout))
                .and_then(|_| s.set_write_timeout(Some(self.timeout)))
                .map_err(|e| e.to_string())?;
            Ok(Box::new(s))
        }
    }

    fn instream(&self, data: &[u8]) -> Result<Vec<String>, String> {
        if data.len() > MAX_CLAMD_BYTES {
            return Err(format!(
                "the message is larger than {} MiB",
                MAX_CLAMD_BYTES >> 20
            ));
        }
        let started = Instant::now();
        let mut s = self.connect()?;
        let send = |s: &mut Box<dyn Stream>, b: &[u8]| {
            s.write_all(b).map_err(|e| format!("cannot send ({e})"))
        };
        send(&mut s, b"zINSTREAM\0")?;
        for chunk in data.chunks(64 * 1024) {
            let len = u32::try_from(chunk.len()).map_err(|e| e.to_string())?;
            send(&mut s, &len.to_be_bytes())?;
            send(&mut s, chunk)?;
            if started.elapsed() > self.timeout {
                return Err("no answer within the timeout".into());
            }
        }
        send(&mut s, &[0, 0, 0, 0])?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.contains(&0) || answer.len() > 4096 {
                        break;
                    }
                }
                Err(e) => return Err(format!("cannot read the answer ({e})")),
            }
            if started.elapsed() > self.timeout {
                return Err("no answer within the timeout".into());
            }
        }
        parse_clamd(&answer)
    }
}

/// The viruses of a clamd answer (`stream: OK`, `stream: NAME FOUND`), or its error.
pub fn parse_clamd(answer: &[u8]) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(answer);
    let line = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let body = line.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => Ok(Vec::new()),
        Some(b) if b.ends_with(" FOUND") => {
            let name = b.trim_end_matches(" FOUND").trim();
            if name.is_empty() || name.len() > 256 {
                return Err("a FOUND answer without a usable name".into());
            }
            Ok(vec![name.to_string()])
        }
        _ => Err(format!(
            "unexpected answer {:?}",
            line.chars().take(120).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_are_errors() {
        let h = "ab".repeat(32);
        let ok = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{{\"malicious\": [\"{}\", \"x\"]}}",
            h.to_uppercase()
        );
        assert_eq!(read_answer(ok.as_bytes()), Ok(vec![h]));
        assert!(read_answer(b"HTTP/1.0 500 no\r\n\r\n{}").is_err());
        assert!(read_answer(b"HTTP/1.0 200 OK\r\n\r\n{}").is_err());
        assert!(read_answer(b"garbage").is_err());
        assert_eq!(parse_clamd(b"stream: OK\0"), Ok(vec![]));
        assert_eq!(
            parse_clamd(b"stream: Clamav.Test.File-6 FOUND\0"),
            Ok(vec!["Clamav.Test.File-6".to_string()])
        );
        assert!(parse_clamd(b"INSTREAM size limit exceeded. ERROR\0").is_err());
    }

    #[test]
    fn a_service_that_is_down_is_an_error_not_a_hold() {
        let c = ClamdClient::new("/nonexistent/clamd.ctl", Duration::from_millis(200));
        assert!(c.ask(b"x").error.is_some());
        let r = ReputationClient::new(
            "https://127.0.0.1:1/check",
            None,
            Duration::from_millis(300),
            10,
        )
        .expect("client");
        let a = r.ask(&["00".repeat(32)]);
        assert!(a.error.is_some() && a.malicious.is_empty());
    }
}
