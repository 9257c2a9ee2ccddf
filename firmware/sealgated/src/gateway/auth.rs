//! Submission logins, verified against the organisation's own mail server: the box holds no
//! passwords.
//!
//! One of three ways, as `[submission] auth` names it: `smtp://` (EHLO, STARTTLS required,
//! AUTH PLAIN), `smtps://` (implicit TLS, AUTH PLAIN) or `imaps://` (implicit TLS, LOGIN).
//! The server's certificate is always verified (the system's roots, or `auth_ca`); a server
//! that does not offer STARTTLS is an error, never a reason to send the password in clear.
//!
//! A success is remembered for a few minutes as an HMAC-SHA256 of user and password under a
//! random key made at start and never stored, so memory holds no password between logins and
//! a restart forgets everything. Failures are counted per user and per client address (IPv6
//! per /64); past the limit a login is refused without asking the server, so the box cannot
//! be used to guess passwords against the organisation's server at its speed, nor to lock
//! users out there. A password still in the success cache passes while throttled, so a
//! guesser cannot lock out a user who logged in recently. Passwords live in zeroizing buffers, and nothing here logs or formats one.
//!
//! SMTP replies are parsed by the protocol crate (`sealgate_smtp::client`, fuzzed); IMAP
//! answers are only matched by their tag and first word. This file uses no other module of
//! the daemon, so the integration tests compile it as it is and run it against real servers
//! (Dovecot, Postfix with Dovecot SASL).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use sealgate_smtp::client::{Capabilities, ReplyReader, ServerReply};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// How the organisation's server is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// SMTP submission: EHLO, STARTTLS (required), EHLO, AUTH PLAIN.
    Smtp,
    /// SMTP over implicit TLS: EHLO, AUTH PLAIN.
    Smtps,
    /// IMAP over implicit TLS: LOGIN.
    Imaps,
}

/// The server that verifies logins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// How to ask.
    pub scheme: Scheme,
    /// Connected to, and the name its certificate must carry (a DNS name or an IP address).
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// A login as a mail client sent it. The password is never shown by `Debug`.
pub struct Credentials {
    /// The login name.
    pub user: String,
    /// The password (zeroized when dropped).
    pub password: Zeroizing<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why a login did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The server said no (wrong user or password).
    Rejected,
    /// Too many recent failures of this user or from this address: not asked.
    Throttled,
    /// The server could not be asked (down, TLS failure, unexpected answer); the text is
    /// for the log and never holds the password.
    Unavailable(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Rejected => f.write_str("the organisation's server refused the login"),
            AuthError::Throttled => f.write_str("too many failed logins"),
            AuthError::Unavailable(why) => {
                write!(
                    f,
                    "the organisation's server could not verify the login: {why}"
                )
            }
        }
    }
}

/// Limits of the verifier.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a success is remembered.
    pub cache_ttl: Duration,
    /// Failures of one user, or from one address, within `window` after which logins are
    /// refused without asking the server.
    pub max_failures: u32,
    /// See `max_failures`.
    pub window: Duration,
    /// The longest one conversation with the server may take.
    pub timeout: Duration,
}

/// Entries kept in each table at most (successes, failure windows).
const MAX_ENTRIES: usize = 16_384;
/// The longest line read from the server.
const MAX_LINE: usize = 8 * 1024;
/// The most lines of one reply (EHLO) or untagged lines before a tagged answer.
const MAX_LINES: usize = 64;

/// Verifies logins against [`Server`]; shared by every submission session.
pub struct Verifier {
    server: Server,
    tls: Arc<rustls::ClientConfig>,
    limits: Limits,
    /// Per-process random key of the success cache's HMAC.
    key: aws_lc_rs::hmac::Key,
    /// user → (HMAC of user and password, when verified).
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// user or address → (failures, window start).
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// Our name in EHLO.
    ehlo_name: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The rustls client configuration for the server's certificate: the PEM anchors in
/// `ca_pem`, else the system's roots (as the outbound client reads them:
/// `rustls-native-certs`, which honours `SSL_CERT_FILE`).
pub fn client_config(ca_pem: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(c.map_err(|e| anyhow::anyhow!("trust anchors: {e}"))?)
                    .map_err(|e| anyhow::anyhow!("trust anchors: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // A single unusable root in a system bundle is skipped, as browsers do.
            roots.add_parsable_certificates(found.certs);
        }
    }
    anyhow::ensure!(!roots.is_empty(), "no usable trust anchor");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Verifier {
    /// A verifier asking `server`, whose certificate `tls` checks.
    pub fn new(
        server: Server,
        tls: rustls::ClientConfig,
        limits: Limits,
        ehlo_name: &str,
    ) -> anyhow::Result<Verifier> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut())
            .map_err(|_| anyhow::anyhow!("the random generator failed"))?;
        Ok(Verifier {
            server,
            tls: Arc::new(tls),
            limits,
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, k.as_ref()),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            ehlo_name: ehlo_name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                .collect(),
        })
    }

    /// Checks a login from a client at `peer`: from the cache, else by asking the server.
    pub async fn verify(&self, creds: &Credentials, peer: IpAddr) -> Result<(), AuthError> {
        let user_key = format!("user:{}", creds.user.to_lowercase());
        let addr_key = format!("addr:{}", address_bucket(peer));
        // A password verified within the cache time passes even while the user or address
        // is throttled, so a guesser cannot lock out a user who is logging in anyway.
        let mac = self.mac(creds);
        if self.cached(&creds.user, &mac) {
            return Ok(());
        }
        if self.throttled(&user_key) || self.throttled(&addr_key) {
            return Err(AuthError::Throttled);
        }
        if creds.user.is_empty()
            || creds.user.len() > 256
            || creds.password.is_empty()
            || creds.password.len() > 1024
            || creds.user.contains(['\0', '\r', '\n'])
            || creds.password.contains(['\0', '\r', '\n'])
        {
            self.fail(&[&user_key, &addr_key]);
            return Err(AuthError::Rejected);
        }
        let asked = tokio::time::timeout(self.limits.timeout, self.ask(creds)).await;
        match asked {
            Ok(Ok(())) => {
                self.remember(&creds.user, mac);
                if let Ok(mut f) = self.failures.lock() {
                    f.remove(&user_key);
                }
                Ok(())
            }
            Ok(Err(AuthError::Rejected)) => {
                self.fail(&[&user_key, &addr_key]);
                Err(AuthError::Rejected)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AuthError::Unavailable(format!(
                "no answer within {} s",
                self.limits.timeout.as_secs()
            ))),
        }
    }

    fn mac(&self, creds: &Credentials) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.key);
        ctx.update(&(creds.user.len() as u64).to_be_bytes());
        ctx.update(creds.user.as_bytes());
        ctx.update(creds.password.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn cached(&self, user: &str, mac: &[u8; 32]) -> bool {
        let Ok(m) = self.verified.lock() else {
            return false;
        };
        m.get(user).is_some_and(|(known, at)| {
            at.elapsed() < self.limits.cache_ttl
                && aws_lc_rs::constant_time::verify_slices_are_equal(known, mac).is_ok()
        })
    }

    fn remember(&self, user: &str, mac: [u8; 32]) {
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= MAX_ENTRIES {
                let ttl = self.limits.cache_ttl;
                m.retain(|_, (_, at)| at.elapsed() < ttl);
                if m.len() >= MAX_ENTRIES {
                    m.clear();
                }
            }
            m.insert(user.to_string(), (mac, Instant::now()));
        }
    }

    fn throttled(&self, key: &str) -> bool {
        let Ok(f) = self.failures.lock() else {
            return true;
        };
        f.get(key).is_some_and(|(n, since)| {
            since.elapsed() < self.limits.window && *n >= self.limits.max_failures
        })
    }

    fn fail(&self, keys: &[&str]) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        if f.len() >= MAX_ENTRIES {
            let window = self.limits.window;
            f.retain(|_, (_, since)| since.elapsed() < window);
            if f.len() >= MAX_ENTRIES {
                f.clear();
            }
        }
        for k in keys {
            let e = f.entry((*k).to_string()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= self.limits.window {
                *e = (0, Instant::now());
            }
            e.0 = e.0.saturating_add(1);
        }
    }

    async fn ask(&self, creds: &Credentials) -> Result<(), AuthError> {
        let tcp = TcpStream::connect((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|e| unavailable(format!("connect to {}: {e}", self.server.host)))?;
        match self.server.scheme {
            Scheme::Smtp => {
                let mut s = SmtpConn::new(tcp);
                s.expect(220).await?;
                s.send(format!("EHLO {}\r\n", self.ehlo_name).as_bytes())
                    .await?;
                let ehlo = s.expect(250).await?;
                if !Capabilities::from_ehlo(&ehlo).is_some_and(|c| c.starttls) {
                    return Err(unavailable(
                        "the server offers no STARTTLS: the password is not sent in clear",
                    ));
                }
                s.send(b"STARTTLS\r\n").await?;
                s.expect(220).await?;
                // Whatever the server sent after its 220 is dropped with the reader (a
                // STARTTLS injection cannot answer for the TLS session).
                let tls = self.handshake(s.stream).await?;
                self.smtp_auth(SmtpConn::new(tls), creds).await
            }
            Scheme::Smtps => {
                let mut s = SmtpConn::new(self.handshake(tcp).await?);
                s.expect(220).await?;
                self.smtp_auth(s, creds).await
            }
            Scheme::Imaps => {
                let s = BufReader::new(self.handshake(tcp).await?);
                imap_login(s, creds).await
            }
        }
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AuthError> {
        let name = ServerName::try_from(self.server.host.clone())
            .map_err(|_| unavailable("the server's name is not a DNS name or address"))?;
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable(format!("TLS: {e}")))
    }

    async fn smtp_auth<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: SmtpConn<S>,
        creds: &Credentials,
    ) -> Result<(), AuthError> {
        s.send(format!("EHLO {}\r\n", self.ehlo_name).as_bytes())
            .await?;
        s.expect(250).await?;
        let mut plain = Zeroizing::new(Vec::with_capacity(creds.user.len() + 64));
        plain.push(0);
        plain.extend_from_slice(creds.user.as_bytes());
        plain.push(0);
        plain.extend_from_slice(creds.password.as_bytes());
        let line = Zeroizing::new(format!(
            "AUTH PLAIN {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(&plain[..])
        ));
        s.send(line.as_bytes()).await?;
        let reply = s.reply().await?;
        let result = match reply.code {
            235 => Ok(()),
            535 => Err(AuthError::Rejected),
            other => Err(unavailable(format!("AUTH answered {other}"))),
        };
        let _ = s.send(b"QUIT\r\n").await;
        result
    }
}

/// An SMTP conversation: replies parsed by the protocol crate's client side (smtp-proto's
/// fuzzed reply parser), bounded.
struct SmtpConn<S> {
    stream: S,
    replies: ReplyReader,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpConn<S> {
    fn new(stream: S) -> SmtpConn<S> {
        SmtpConn {
            stream,
            replies: ReplyReader::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), AuthError> {
        send(&mut self.stream, bytes).await
    }

    async fn reply(&mut self) -> Result<ServerReply, AuthError> {
        let mut buf = [0u8; 2048];
        loop {
            match self.replies.next_reply() {
                Some(Ok(r)) => return Ok(r),
                Some(Err(_)) => return Err(unavailable("a malformed SMTP reply")),
                None => {}
            }
            if self.replies.buffered() > MAX_LINE * MAX_LINES {
                return Err(unavailable("an over-long SMTP reply"));
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| unavailable(format!("read: {e}")))?;
            if n == 0 {
                return Err(unavailable("the server closed the connection"));
            }
            self.replies.feed(&buf[..n]);
        }
    }

    async fn expect(&mut self, want: u16) -> Result<ServerReply, AuthError> {
        let r = self.reply().await?;
        if r.code != want {
            return Err(unavailable(format!("expected {want}, got {}", r.code)));
        }
        Ok(r)
    }
}

fn unavailable(why: impl Into<String>) -> AuthError {
    AuthError::Unavailable(why.into())
}

/// Failures from one IPv6 /64 count together (one host has them all).
fn address_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Result<(), AuthError> {
    s.write_all(bytes)
        .await
        .map_err(|e| unavailable(format!("write: {e}")))?;
    s.flush()
        .await
        .map_err(|e| unavailable(format!("write: {e}")))
}

/// One line, without its line end; bounded.
async fn read_line<S: AsyncRead + Unpin>(s: &mut BufReader<S>) -> Result<String, AuthError> {
    let mut buf = Vec::new();
    let n = (&mut *s)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| unavailable(format!("read: {e}")))?;
    if n == 0 {
        return Err(unavailable("the server closed the connection"));
    }
    if buf.last() != Some(&b'\n') {
        return Err(unavailable("an over-long line from the server"));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// An IMAP astring for LOGIN: a quoted string when the value is printable ASCII, else a
/// literal (sent after the server's continuation).
enum Astring<'a> {
    Quoted(Zeroizing<String>),
    Literal(&'a [u8]),
}

fn astring(v: &str) -> Astring<'_> {
    if v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let mut q = Zeroizing::new(String::with_capacity(v.len() + 2));
        q.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        Astring::Quoted(q)
    } else {
        Astring::Literal(v.as_bytes())
    }
}

async fn imap_login<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufReader<S>,
    creds: &Credentials,
) -> Result<(), AuthError> {
    let greeting = read_line(&mut s).await?;
    if !greeting.starts_with("* OK") {
        return Err(unavailable("the IMAP server did not greet with OK"));
    }
    // Sent in pieces: a literal waits for the server's "+".
    let mut pending = Zeroizing::new(b"a1 LOGIN ".to_vec());
    for (i, part) in [creds.user.as_str(), creds.password.as_str()]
        .into_iter()
        .enumerate()
    {
        if i == 1 {
            pending.push(b' ');
        }
        match astring(part) {
            Astring::Quoted(q) => pending.extend_from_slice(q.as_bytes()),
            Astring::Literal(bytes) => {
                pending.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                send(&mut s, &pending).await?;
                pending.clear();
                let mut n = 0;
                loop {
                    let line = read_line(&mut s).await?;
                    if line.starts_with('+') {
                        break;
                    }
                    if line.starts_with("a1 ") {
                        return Err(unavailable("the IMAP server refused a literal"));
                    }
                    n += 1;
                    if n > MAX_LINES {
                        return Err(unavailable("no continuation from the IMAP server"));
                    }
                }
                pending.extend_from_slice(bytes);
            }
        }
    }
    pending.extend_from_slice(b"\r\n");
    send(&mut s, &pending).await?;
    let mut n = 0;
    let result = loop {
        let line = read_line(&mut s).await?;
        if let Some(rest) = line.strip_prefix("a1 ") {
            let word = rest.split_whitespace().next().unwrap_or_default();
            break if word.eq_ignore_ascii_case("OK") {
                Ok(())
            } else if word.eq_ignore_ascii_case("NO") {
                Err(AuthError::Rejected)
            } else {
                Err(unavailable(format!("LOGIN answered {word}")))
            };
        }
        n += 1;
        if n > MAX_LINES {
            break Err(unavailable("no answer to LOGIN"));
        }
    };
    let _ = send(&mut s, b"a2 LOGOUT\r\n").await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_in_debug() {
        let c = Credentials {
            user: "alice".into(),
            password: Zeroizing::new("s3cret-pw".into()),
        };
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("s3cret"), "{d}");
    }

    #[test]
    fn imap_strings_are_quoted_or_literal() {
        match astring(r#"pa"ss\word"#) {
            Astring::Quoted(q) => assert_eq!(q.as_str(), r#""pa\"ss\\word""#),
            Astring::Literal(_) => unreachable!("quoted expected"),
        }
        assert!(matches!(astring("pässword"), Astring::Literal(_)));
    }

    #[test]
    fn trust_anchors_must_be_usable() {
        assert!(client_config(Some(b"")).is_err());
        assert!(
            client_config(Some(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        assert_eq!(
            address_bucket("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
            address_bucket("2001:db8:1:2:ffff::1".parse().expect("ip"))
        );
        assert_eq!(
            address_bucket("::ffff:192.0.2.1".parse().expect("ip")),
            "192.0.2.1"
        );
    }
}
