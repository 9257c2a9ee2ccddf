//! The client of the running daemon's admin socket: `DATA/admin.sock` on a developer's host
//! (on the box a link to `/run/sealgate/admin.sock`). While `sealgated` runs it owns the vault
//! (redb admits one process), the token files and the settings, so the other programs ask it
//! through its admin API instead of editing them. The daemon admits uid 0 and its own uid as
//! `admin` there (SO_PEERCRED) and audits the call as `uid:N`.
//!
//! A minimal HTTP/1.0 client: one request per connection, the answer read to its end.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// The socket's file name in the data directory (the daemon's `admin::socket::SOCKET`).
pub const SOCKET: &str = "admin.sock";
/// Where the box's daemon listens (a link in its data directory points here).
pub const BOX_SOCKET: &str = "/run/sealgate/admin.sock";
/// Largest answer read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// Why a call failed: one line for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// The HTTP status of a refusal, `None` when the daemon was not reached or did not
    /// answer readably.
    pub status: Option<u16>,
    /// What went wrong (a refusal's problem detail).
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// A daemon's admin socket.
#[derive(Debug, Clone)]
pub struct AdminSocket {
    path: PathBuf,
}

impl AdminSocket {
    /// The socket at `path`, if a daemon answers there (a missing file, or a stale socket of
    /// a stopped daemon, is `None`). Follows a link.
    pub fn answering(path: &Path) -> Option<AdminSocket> {
        use std::os::unix::fs::FileTypeExt;
        let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
        if !is_socket || UnixStream::connect(path).is_err() {
            return None;
        }
        Some(AdminSocket {
            path: path.to_path_buf(),
        })
    }

    /// The socket of the daemon that runs on `data_dir`, if it answers.
    pub fn for_data_dir(data_dir: &Path) -> Option<AdminSocket> {
        AdminSocket::answering(&data_dir.join(SOCKET))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `METHOD /api/v1/admin{path}` with an optional JSON body: (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        self.call_accepting(method, path, body, None)
    }

    /// [`AdminSocket::call`] with an `Accept` header (PEM, DER or PKCS#7 answers).
    pub fn call_accepting(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let fail = |e: &dyn std::fmt::Display| CallError {
            status: None,
            message: format!("the daemon's admin socket {}: {e}", self.path.display()),
        };
        let mut s = UnixStream::connect(&self.path).map_err(|e| fail(&e))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| fail(&e))?;
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| fail(&e))?,
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
        s.write_all(req.as_bytes()).map_err(|e| fail(&e))?;
        s.write_all(&body).map_err(|e| fail(&e))?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .map_err(|e| fail(&e))?;
        parse(&answer).ok_or_else(|| fail(&"unreadable answer"))
    }

    /// `POST /api/v1/admin{path}` with `len` bytes of `body` as `content_type` (a bundle
    /// streamed from a file): (status, answer).
    pub fn post_stream(
        &self,
        path: &str,
        content_type: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let fail = |e: &dyn std::fmt::Display| CallError {
            status: None,
            message: format!("the daemon's admin socket {}: {e}", self.path.display()),
        };
        let mut s = UnixStream::connect(&self.path).map_err(|e| fail(&e))?;
        s.set_read_timeout(Some(Duration::from_secs(600)))
            .map_err(|e| fail(&e))?;
        let req = format!(
            "POST /api/v1/admin{path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).map_err(|e| fail(&e))?;
        let sent = std::io::copy(&mut body.take(len), &mut s);
        // A refusal may come before the whole body was taken (too large, a second upload):
        // its answer is read either way.
        let mut answer = Vec::new();
        let read = (&mut s).take(MAX_ANSWER).read_to_end(&mut answer);
        match (parse(&answer), sent, read) {
            (Some(a), _, _) => Ok(a),
            (None, Err(e), _) | (None, _, Err(e)) => Err(fail(&e)),
            (None, Ok(_), Ok(_)) => Err(fail(&"unreadable answer")),
        }
    }

    /// Calls and decodes a 2xx JSON answer; a problem answer becomes an error naming its
    /// detail.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CallError> {
        let (status, answer) = self.call(method, path, body)?;
        check(status, &answer)?;
        serde_json::from_slice(&answer).map_err(|e| CallError {
            status: Some(status),
            message: format!("sealgated's answer is not the expected JSON: {e}"),
        })
    }

    /// Calls and returns a 2xx answer's body as it is (PEM, DER, PKCS#12), asking for
    /// `accept` if given.
    pub fn bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<Vec<u8>, CallError> {
        let (status, answer) = self.call_accepting(method, path, body, accept)?;
        check(status, &answer)?;
        Ok(answer)
    }

    /// [`AdminSocket::bytes`] as text (PEM).
    pub fn text(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        accept: Option<&str>,
    ) -> Result<String, CallError> {
        String::from_utf8(self.bytes(method, path, body, accept)?).map_err(|_| CallError {
            status: None,
            message: format!(
                "the daemon's admin socket {}: the answer is not text",
                self.path.display()
            ),
        })
    }

    /// Calls and expects a 2xx answer whose body does not matter.
    pub fn done(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), CallError> {
        let (status, answer) = self.call(method, path, body)?;
        check(status, &answer)
    }
}

/// `s` as one URL path segment (everything but unreserved characters percent-encoded).
pub fn segment(s: &str) -> String {
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

fn check(status: u16, answer: &[u8]) -> Result<(), CallError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|p| p["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned());
    Err(CallError {
        status: Some(status),
        message: format!("sealgated refused ({status}): {detail}"),
    })
}

/// (status, body) of an HTTP/1.x answer (content-length or to the end; chunked decoded);
/// `None` for anything else. Never panics (fuzzed: `fuzz/fuzz_targets/admin_answer.rs`).
pub fn parse_answer(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    parse(answer)
}

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
        let e = check(404, br#"{"detail":"no token of this name"}"#).expect_err("refused");
        assert!(e.message.contains("no token of this name"));
        assert_eq!(e.status, Some(404));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("gw-1.a_b"), "gw-1.a_b");
        assert_eq!(segment("a/../b c?"), "a%2F..%2Fb%20c%3F");
    }

    #[test]
    fn no_daemon_means_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(AdminSocket::for_data_dir(dir.path()).is_none());
        // A stale socket (nobody accepts) is not a daemon.
        let p = dir.path().join(SOCKET);
        drop(std::os::unix::net::UnixListener::bind(&p).expect("bind"));
        assert!(AdminSocket::answering(&p).is_none());
    }
}
