//! The running daemon's admin socket, `DATA/admin.sock`: while `sealgated` runs on a data
//! directory it holds the vault (redb admits one process) and writes the token file, so
//! `sealctl certs pending|approve|reject` and `sealctl api-token list|create|revoke` ask it
//! (and every `sealctl keys` and `sealctl ca` command) through the admin API instead (one line
//! on stderr says so). The daemon admits uid 0 and
//! its own uid as `admin` there (SO_PEERCRED) and audits the call as `uid:N`; its changes
//! take effect at once (no restart, no stale cache). When no daemon answers on the socket
//! (no file, or a stale one from a stopped daemon), the commands open the files themselves.
//!
//! A minimal HTTP/1.0 client: one request per connection, the answer read to its end.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::Failure;

/// The socket's file name in the data directory (the daemon's `admin::socket::SOCKET`).
const SOCKET: &str = "admin.sock";
/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// A daemon that answers on the data directory's admin socket.
pub(crate) struct AdminSocket {
    path: PathBuf,
}

/// The running daemon's admin socket, if one answers on `data_dir` (then says so on stderr).
pub(crate) fn running(data_dir: &Path) -> Option<AdminSocket> {
    let path = data_dir.join(SOCKET);
    let is_socket = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket || UnixStream::connect(&path).is_err() {
        return None;
    }
    eprintln!(
        "sealctl: sealgated runs on {}: asking it through {}",
        data_dir.display(),
        path.display()
    );
    Some(AdminSocket { path })
}

/// A file's content for a JSON field that takes PEM text or base64 of DER: PEM as it is,
/// anything else base64.
pub(crate) fn pem_or_base64(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(t) if t.contains("-----BEGIN") => t.to_string(),
        _ => base64(data),
    }
}

/// `data` in base64 (standard alphabet, padded).
pub(crate) fn base64(data: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(data)
}

/// `s` as one URL path segment (everything but unreserved characters percent-encoded).
pub(crate) fn segment(s: &str) -> String {
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

impl AdminSocket {
    /// Calls `METHOD /api/v1/admin{path}` with an optional JSON body: (status, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), Failure> {
        self.call_accepting(method, path, body, None)
    }

    /// [`AdminSocket::call`] with an `Accept` header.
    fn call_accepting(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let fail = |e: std::io::Error| {
            Failure(
                format!("the daemon's admin socket {}: {e}", self.path.display()),
                1,
            )
        };
        let mut s = UnixStream::connect(&self.path).map_err(fail)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(fail)?;
        let body = match body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let mut req = format!(
            "{method} /api/v1/admin{path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(a) = accept {
            req.push_str(&format!("Accept: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(fail)?;
        s.write_all(&body).map_err(fail)?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut answer).map_err(fail)?;
        parse(&answer).ok_or_else(|| {
            Failure(
                format!(
                    "the daemon's admin socket {}: unreadable answer",
                    self.path.display()
                ),
                1,
            )
        })
    }

    /// Calls and decodes a 2xx JSON answer; a problem answer becomes a failure naming its
    /// detail.
    pub(crate) fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, Failure> {
        let (status, answer) = self.call(method, path, body)?;
        check(status, &answer)?;
        Ok(serde_json::from_slice(&answer)?)
    }

    /// Calls and returns a 2xx answer's body as it is (PEM, DER, PKCS#12), asking for
    /// `accept` if given.
    pub(crate) fn bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, Failure> {
        let (status, answer) = self.call_accepting(method, path, body, accept)?;
        check(status, &answer)?;
        Ok(answer)
    }

    /// [`AdminSocket::bytes`] as text (PEM).
    pub(crate) fn text(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<String, Failure> {
        String::from_utf8(self.bytes(method, path, body, accept)?).map_err(|_| {
            Failure(
                format!(
                    "the daemon's admin socket {}: the answer is not text",
                    self.path.display()
                ),
                1,
            )
        })
    }

    /// Calls and expects a 2xx answer whose body does not matter.
    pub(crate) fn done(&self, method: &str, path: &str) -> Result<(), Failure> {
        let (status, answer) = self.call(method, path, None)?;
        check(status, &answer)
    }
}

fn check(status: u16, answer: &[u8]) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|p| p["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned());
    Err(Failure(
        format!("sealgated refused ({status}): {detail}"),
        1,
    ))
}

/// (status, body) of an HTTP/1.x answer (content-length or to the end; chunked decoded).
fn parse(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let body = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = Some(v.parse::<usize>().ok()?);
        }
    }
    if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..nl]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                return Some((status, out));
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    }
    match length {
        Some(n) => Some((status, body.get(..n)?.to_vec())),
        None => Some((status, body.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_refuses_garbage() {
        let (s, b) = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]").expect("plain");
        assert_eq!((s, b.as_slice()), (200, &b"[]"[..]));
        let (s, b) =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n")
                .expect("chunked");
        assert_eq!((s, b.as_slice()), (200, &b"[]"[..]));
        let (s, b) = parse(b"HTTP/1.0 204 No Content\r\n\r\n").expect("empty");
        assert_eq!((s, b.len()), (204, 0));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n[]",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\n[]",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(
            check(404, br#"{"detail":"no token of this name"}"#)
                .is_err_and(|f| f.0.contains("no token of this name"))
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("gw-1.a_b"), "gw-1.a_b");
        assert_eq!(segment("a/../b c?"), "a%2F..%2Fb%20c%3F");
    }
}
