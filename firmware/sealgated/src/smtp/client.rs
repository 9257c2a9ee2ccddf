//! The outbound SMTP client: one message to one next hop, with each recipient's result.
//!
//! - **TLS**: STARTTLS when the next hop offers it (`opportunistic`, the default: the
//!   certificate is not enforced, and a failed handshake is followed by a plain attempt),
//!   required with a verified certificate (`require`: against the system's roots, a
//!   configured CA file, or a pinned SHA-256 fingerprint; otherwise the message waits with
//!   the reason), or never (`none`).
//! - **PIPELINING** when offered: MAIL, every RCPT and DATA in one write.
//! - **SIZE** when offered: declared in MAIL; a message over the next hop's limit fails for
//!   good before anything is sent.
//! - The message goes out with every line end normalised to CRLF (a bare CR or LF in the
//!   engine's output, e.g. from decrypted content an outsider wrote, becomes a line end) and
//!   every line starting with "." dot-stuffed, so nothing in the content can end DATA early
//!   at the next hop (no smuggling through the box).
//!
//! Attacker: the next hop, or whoever sits between it and the box. Replies are read by the
//! protocol crate's `ReplyReader` (smtp-proto's parser, 4 KiB per reply, fuzzed) and EHLO by
//! its `Capabilities`, with a timeout per reply; nothing they say can make the client panic;
//! a reply that is not SMTP is a temporary failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sealgate_smtp::client::{Capabilities, ReplyError, ReplyReader, ServerReply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::queue::Fate;
use crate::identity::{hex, provider, sha256};
use crate::settings::{Settings, TlsMode};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 §4.5.3.2's timeouts, shortened: one for commands, a longer one for the end of
/// DATA.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const GREETING_TIMEOUT: Duration = Duration::from_secs(120);

/// A next hop and how to reach it.
#[derive(Clone)]
pub struct NextHop {
    /// Its address.
    pub addr: SocketAddr,
    /// TLS.
    pub mode: TlsMode,
    /// The name its certificate must carry.
    pub name: ServerName<'static>,
    /// The configuration for `require` (verifying) and `opportunistic` (not enforcing).
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
    /// The box's own login at this hop, if any (AUTH PLAIN after STARTTLS only).
    login: Option<Arc<RelayLogin>>,
    /// Sessions kept open for the next message (shared by the clones of this hop).
    pool: Arc<Pool>,
}

/// The box's credentials at a next hop. The password is wiped on drop and never shown.
pub struct RelayLogin {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for RelayLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to check a next hop's TLS (the `next_hop_*` keys of a section; other SMTP roles'
/// next hops use the same).
pub struct TlsPolicy<'a> {
    /// `none`, `opportunistic` or `require`.
    pub mode: TlsMode,
    /// Trust anchors instead of the system's.
    pub ca: Option<&'a std::path::Path>,
    /// A pinned SHA-256 of the certificate instead of a chain.
    pub fingerprint: Option<[u8; 32]>,
    /// The name the certificate must carry (default: the IP address).
    pub name: Option<&'a str>,
    /// The settings key prefix for error messages (`[smtp] next_hop`).
    pub what: &'a str,
}

impl NextHop {
    /// The `[smtp]` next hop; `None` if there is none.
    pub fn from_settings(s: &Settings) -> anyhow::Result<Option<NextHop>> {
        let Some(addr) = s.smtp.next_hop else {
            return Ok(None);
        };
        NextHop::new(
            addr,
            &TlsPolicy {
                mode: s.smtp.next_hop_tls,
                ca: s.smtp.next_hop_ca.as_deref(),
                fingerprint: s.smtp.next_hop_fingerprint.map(|f| f.0),
                name: s.smtp.next_hop_name.as_deref(),
                what: "[smtp] next_hop",
            },
        )
        .map(Some)
    }

    /// A next hop at `addr` with TLS as `tls` says.
    pub fn new(addr: SocketAddr, tls: &TlsPolicy<'_>) -> anyhow::Result<NextHop> {
        let what = tls.what;
        let name = match tls.name {
            Some(n) => ServerName::try_from(n.to_string())
                .map_err(|e| anyhow::anyhow!("{what}_name {n:?}: {e}"))?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let verified = if let Some(pin) = tls.fingerprint {
            config_with(Arc::new(Pinned {
                pin,
                algs: provider().signature_verification_algorithms,
            }))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match tls.ca {
                Some(p) => {
                    let pem = std::fs::read(p)
                        .map_err(|e| anyhow::anyhow!("{what}_ca {}: {e}", p.display()))?;
                    for c in pem::parse_many(&pem)
                        .map_err(|e| anyhow::anyhow!("{what}_ca {}: {e}", p.display()))?
                        .into_iter()
                        .filter(|c| c.tag() == "CERTIFICATE")
                    {
                        roots
                            .add(CertificateDer::from(c.into_contents()))
                            .map_err(|e| anyhow::anyhow!("{what}_ca {}: {e}", p.display()))?;
                    }
                    anyhow::ensure!(
                        !roots.is_empty(),
                        "{what}_ca {} holds no certificate",
                        p.display()
                    );
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for e in &found.errors {
                        tracing::warn!(error = %e, "reading the system's trust anchors");
                    }
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 && tls.mode == TlsMode::Require {
                        tracing::warn!(
                            "no system trust anchors: next_hop_tls = require will not verify any next hop (set next_hop_ca)"
                        );
                    }
                }
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build();
            match verifier {
                Ok(v) => config_with(v)?,
                // No anchors: nothing verifies; `require` then always defers, with the reason.
                Err(_) => config_with(Arc::new(Pinned {
                    pin: [0; 32],
                    algs: provider().signature_verification_algorithms,
                }))?,
            }
        };
        let unverified = config_with(Arc::new(crate::identity::AnyCertificate {
            algs: provider().signature_verification_algorithms,
        }))?;
        Ok(NextHop {
            addr,
            mode: tls.mode,
            name,
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
            login: None,
            pool: Arc::default(),
        })
    }

    /// The same hop, where the box logs in with `login` (give it a `require` hop: the
    /// password is sent only over STARTTLS, and never after a failed handshake).
    pub fn with_login(mut self, login: RelayLogin) -> NextHop {
        self.login = Some(Arc::new(login));
        self
    }
}

fn config_with(v: Arc<dyn ServerCertVerifier>) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(v)
        .with_no_client_auth())
}

/// Accepts the certificate whose SHA-256 is pinned; the handshake signature is checked.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the certificate's SHA-256 {} is not the pinned one",
                hex(&sha256(end_entity.as_ref()))
            )))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A reply as the protocol crate read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(ServerReply);

impl Reply {
    /// Its code, its enhanced code if given, its lines joined by " / " (no control
    /// characters), as the DSN and the queue's last error show it.
    fn text(&self) -> String {
        let r = &self.0;
        let mut t = r.code.to_string();
        if let Some([a, b, c]) = r.enhanced {
            t.push_str(&format!(" {a}.{b}.{c}"));
        }
        let lines: Vec<String> = r
            .text
            .split('\n')
            .map(|l| {
                l.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(512)
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .take(20)
            .collect();
        let lines = lines.join(" / ");
        if !lines.is_empty() {
            t.push(' ');
            t.push_str(&lines);
        }
        t
    }

    fn code(&self) -> u16 {
        self.0.code
    }

    /// The capabilities of an EHLO reply (none if it cannot be read).
    fn capabilities(&self) -> Capabilities {
        Capabilities::from_ehlo(&self.0).unwrap_or_default()
    }
    fn positive(&self) -> bool {
        (200..400).contains(&self.code())
    }
    fn fate_if_not(&self, ok: u16) -> Option<Fate> {
        if self.code() / 100 == ok / 100 {
            None
        } else if self.code() >= 500 {
            Some(Fate::Permanent(self.text()))
        } else {
            Some(Fate::Temporary(self.text()))
        }
    }
}

/// Why an attempt stopped before the transaction.
#[derive(Debug)]
enum Stop {
    /// Applies to every recipient.
    All(Fate),
    /// The TLS handshake failed (`opportunistic` tries again without TLS).
    Tls(String),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::All(Fate::Temporary(format!("the connection failed: {e}")))
    }
}

fn temp(s: impl Into<String>) -> Stop {
    Stop::All(Fate::Temporary(s.into()))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    replies: ReplyReader,
}

impl Conn {
    fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            replies: ReplyReader::new(),
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, Stop> {
        let mut buf = [0u8; 4096];
        loop {
            match self.replies.next_reply() {
                Some(Ok(r)) => return Ok(Reply(r)),
                Some(Err(ReplyError::TooLong)) => {
                    return Err(temp("the next hop sent an over-long reply"));
                }
                Some(Err(e)) => {
                    return Err(temp(format!("the next hop's reply is not SMTP ({e})")));
                }
                None => {}
            }
            let n = tokio::time::timeout(timeout, self.io.read(&mut buf))
                .await
                .map_err(|_| temp("the next hop did not answer in time"))??;
            if n == 0 {
                return Err(temp("the next hop closed the connection"));
            }
            self.replies.feed(&buf[..n]);
        }
    }

    async fn send(&mut self, data: &[u8]) -> Result<(), Stop> {
        let w = &mut self.io;
        tokio::time::timeout(REPLY_TIMEOUT, async {
            w.write_all(data).await?;
            w.flush().await
        })
        .await
        .map_err(|_| temp("writing to the next hop timed out"))??;
        Ok(())
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, Stop> {
        self.send(format!("{cmd}\r\n").as_bytes()).await?;
        self.read_reply(REPLY_TIMEOUT).await
    }
}

/// Sends `msg` from `from` to `to` through `hop`; one [`Fate`] per recipient, in order.
///
/// A session that ended its last transaction cleanly is kept open for a few seconds and
/// used for the next message to the same hop (no new connection, greeting, EHLO, TLS
/// handshake or login per message); one that fails before the message was sent is dropped
/// and the message tried at once on a new connection.
pub async fn send(
    hop: &NextHop,
    hostname: &str,
    from: &str,
    to: &[String],
    msg: &[u8],
) -> Vec<Fate> {
    let data = data_section(msg);
    let mut r = attempt(hop, hostname, from, to, &data, msg, hop.mode).await;
    if let Err(Stop::Tls(e)) = &r
        && hop.mode == TlsMode::Opportunistic
        && hop.login.is_none()
    {
        tracing::warn!(next_hop = %hop.addr, error = %e, "STARTTLS failed: trying again without TLS (next_hop_tls = opportunistic)");
        r = attempt(hop, hostname, from, to, &data, msg, TlsMode::None).await;
    }
    match r {
        Ok(f) => f,
        Err(Stop::All(f)) => vec![f; to.len()],
        Err(Stop::Tls(e)) => vec![Fate::Temporary(e); to.len()],
    }
}

async fn connect(hop: &NextHop) -> Result<Conn, Stop> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(hop.addr))
        .await
        .map_err(|_| temp(format!("connecting to {} timed out", hop.addr)))?
        .map_err(|e| temp(format!("cannot connect to {}: {e}", hop.addr)))?;
    Ok(Conn::new(Box::new(tcp)))
}

/// How long an idle session to a next hop stays open for the next message.
const IDLE: Duration = Duration::from_secs(5);
/// Messages per session before it is closed (a new one is opened for the next).
const MESSAGES_PER_SESSION: u32 = 100;
/// Idle sessions kept per next hop.
const IDLE_SESSIONS: usize = 32;

/// An open session after EHLO (and STARTTLS, AUTH): ready for MAIL.
struct Session {
    c: Conn,
    ext: Capabilities,
    /// The TLS mode it was opened with (a session without TLS never serves `require`).
    mode: TlsMode,
    /// Transactions it carried.
    used: u32,
}

/// Idle sessions of one next hop.
#[derive(Default)]
pub(super) struct Pool {
    idle: std::sync::Mutex<Vec<(u64, Session)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Pool {
    fn take(&self, mode: TlsMode) -> Option<Session> {
        let mut idle = self.idle.lock().ok()?;
        let i = idle.iter().rposition(|(_, s)| s.mode == mode)?;
        Some(idle.swap_remove(i).1)
    }

    /// Keeps `s` for the next message; a task closes it with QUIT when it stays idle.
    fn put(self: &Arc<Self>, s: Session) {
        if s.used >= MESSAGES_PER_SESSION {
            quit(s);
            return;
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= IDLE_SESSIONS {
            drop(idle);
            quit(s);
            return;
        }
        idle.push((id, s));
        drop(idle);
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE).await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let s = pool.idle.lock().ok().and_then(|mut idle| {
                let i = idle.iter().position(|(x, _)| *x == id)?;
                Some(idle.swap_remove(i).1)
            });
            if let Some(s) = s {
                quit(s);
            }
        });
    }
}

/// Ends a session politely, off the caller's path.
fn quit(mut s: Session) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(10), s.c.command("QUIT")).await;
    });
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    hop: &NextHop,
    hostname: &str,
    from: &str,
    to: &[String],
    data: &[u8],
    msg: &[u8],
    mode: TlsMode,
) -> Result<Vec<Fate>, Stop> {
    // A kept session first; if it fails before the message went out (the next hop closed
    // it meanwhile), the message goes on a new one at once.
    if let Some(mut s) = hop.pool.take(mode) {
        let mut progress = Progress::Envelope;
        let r = transaction(&mut s, from, to, data, msg, &mut progress).await;
        match progress {
            Progress::Done => {
                s.used += 1;
                hop.pool.put(s);
                return r;
            }
            // The next hop may have the message: its fate stands (never sent twice).
            Progress::Data => return r,
            Progress::Envelope => {}
        }
        match &r {
            // Answered before DATA by a live session: the answer stands.
            Ok(_) | Err(Stop::All(Fate::Permanent(_))) => {
                quit(s);
                return r;
            }
            Err(Stop::All(Fate::Temporary(e))) => {
                tracing::debug!(next_hop = %hop.addr, error = %e, "a kept session failed before the message: a new one");
            }
            Err(_) => {}
        }
    }
    let mut s = open(hop, hostname, mode).await?;
    let mut progress = Progress::Envelope;
    let r = transaction(&mut s, from, to, data, msg, &mut progress).await;
    if progress == Progress::Done {
        s.used += 1;
        hop.pool.put(s);
    } else if r.is_ok() {
        quit(s);
    }
    r
}

/// The next hop's answer about one recipient (the RCPT probe of `[inbound]
/// verify_recipients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Probe {
    /// `2xx` to RCPT.
    Known,
    /// `5xx` to RCPT (its reply, for the box's log only).
    Unknown(String),
    /// A temporary answer, a refused null sender, or no answer at all.
    Unsure(String),
}

/// Asks `hop` whether it takes mail for `rcpt`: `MAIL FROM:<>` (never the client's sender),
/// `RCPT TO:<rcpt>`, `RSET`, on a kept session of the hop where there is one (the session
/// goes back to the pool after the `RSET`).
pub(super) async fn probe(hop: &NextHop, hostname: &str, rcpt: &str) -> Probe {
    let mut r = probe_attempt(hop, hostname, rcpt, hop.mode).await;
    if let Err(Stop::Tls(_)) = &r
        && hop.mode == TlsMode::Opportunistic
        && hop.login.is_none()
    {
        r = probe_attempt(hop, hostname, rcpt, TlsMode::None).await;
    }
    match r {
        Ok(reply) if reply.positive() => Probe::Known,
        Ok(reply) if reply.code() >= 500 => Probe::Unknown(reply.text()),
        Ok(reply) => Probe::Unsure(reply.text()),
        Err(Stop::All(Fate::Permanent(t) | Fate::Temporary(t)) | Stop::Tls(t)) => Probe::Unsure(t),
        Err(Stop::All(f)) => Probe::Unsure(format!("{f:?}")),
    }
}

async fn probe_attempt(
    hop: &NextHop,
    hostname: &str,
    rcpt: &str,
    mode: TlsMode,
) -> Result<Reply, Stop> {
    // A kept session first; one closed meanwhile is replaced by a new one.
    if let Some(mut s) = hop.pool.take(mode)
        && let Ok(r) = probe_on(&mut s, rcpt).await
    {
        hop.pool.put(s);
        return Ok(r);
    }
    let mut s = open(hop, hostname, mode).await?;
    let r = probe_on(&mut s, rcpt).await?;
    hop.pool.put(s);
    Ok(r)
}

/// `MAIL FROM:<>`, `RCPT TO`, `RSET` on an open session (in one write with PIPELINING):
/// the RCPT reply. Err when the session is not usable afterwards.
async fn probe_on(s: &mut Session, rcpt: &str) -> Result<Reply, Stop> {
    let utf8 = !rcpt.is_ascii();
    if utf8 && !s.ext.smtputf8 {
        return Err(temp(
            "the next hop does not offer SMTPUTF8 for a UTF-8 address",
        ));
    }
    let mail = if utf8 {
        "MAIL FROM:<> SMTPUTF8"
    } else {
        "MAIL FROM:<>"
    };
    let rcpt_cmd = format!("RCPT TO:<{rcpt}>");
    let c = &mut s.c;
    let (m, r, rset) = if s.ext.pipelining {
        c.send(format!("{mail}\r\n{rcpt_cmd}\r\nRSET\r\n").as_bytes())
            .await?;
        let m = c.read_reply(PROBE_TIMEOUT).await?;
        let r = c.read_reply(PROBE_TIMEOUT).await?;
        (m, r, c.read_reply(PROBE_TIMEOUT).await?)
    } else {
        let m = c.command(mail).await?;
        if !m.positive() {
            let rset = c.command("RSET").await?;
            return Err(if rset.positive() {
                temp(format!(
                    "the next hop refused the null sender: {}",
                    m.text()
                ))
            } else {
                temp(rset.text())
            });
        }
        let r = c.command(&rcpt_cmd).await?;
        (m, r, c.command("RSET").await?)
    };
    if !rset.positive() {
        return Err(temp(format!("RSET: {}", rset.text())));
    }
    if !m.positive() {
        // Not an answer about the recipient.
        return Ok(Reply(ServerReply {
            code: 450,
            enhanced: None,
            text: format!("the next hop refused the null sender: {}", m.text()),
        }));
    }
    Ok(r)
}

/// How long a probe waits for each reply (the client at the MX waits meanwhile).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How far a transaction went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Before the message's content was sent: trying again elsewhere sends it once.
    Envelope,
    /// The content was sent: the next hop may have taken it.
    Data,
    /// The next hop answered the end of DATA: the session is ready for the next message.
    Done,
}

/// Opens a session: greeting, EHLO, STARTTLS and AUTH as `mode` and the hop say.
async fn open(hop: &NextHop, hostname: &str, mode: TlsMode) -> Result<Session, Stop> {
    let mut c = connect(hop).await?;
    let greeting = c.read_reply(GREETING_TIMEOUT).await?;
    if let Some(f) = greeting.fate_if_not(220) {
        return Err(Stop::All(f));
    }
    let ehlo = format!("EHLO {hostname}");
    let mut reply = c.command(&ehlo).await?;
    if let Some(f) = reply.fate_if_not(250) {
        return Err(Stop::All(f));
    }
    let mut ext = reply.capabilities();
    let mut tls_on = false;
    if mode != TlsMode::None && ext.starttls {
        let r = c.command("STARTTLS").await?;
        if let Some(f) = r.fate_if_not(220) {
            if mode == TlsMode::Require {
                return Err(Stop::All(match f {
                    Fate::Permanent(t) | Fate::Temporary(t) => Fate::Temporary(format!(
                        "the next hop refused STARTTLS ({t}) and next_hop_tls = require"
                    )),
                    other => other,
                }));
            }
            return Err(Stop::Tls(format!("STARTTLS refused: {}", r.text())));
        }
        if c.replies.buffered() != 0 {
            // Anything sent before the handshake could be an injected command (CVE-2011-0411
            // in reverse): refuse the session.
            return Err(temp("the next hop sent data after its STARTTLS reply"));
        }
        let config = if mode == TlsMode::Require {
            hop.verified.clone()
        } else {
            hop.unverified.clone()
        };
        let plain = c.io;
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = tokio::time::timeout(
            REPLY_TIMEOUT,
            connector.connect(hop.name.clone(), plain),
        )
        .await
        .map_err(|_| Stop::Tls("the TLS handshake with the next hop timed out".into()))?
        .map_err(|e| {
            let what = if mode == TlsMode::Require {
                "the next hop's certificate or TLS handshake was refused (next_hop_tls = require)"
            } else {
                "the TLS handshake with the next hop failed"
            };
            Stop::Tls(format!("{what}: {e}"))
        })?;
        c = Conn::new(Box::new(stream));
        tls_on = true;
        tracing::debug!(next_hop = %hop.addr, verified = mode == TlsMode::Require, "STARTTLS established");
        reply = c.command(&ehlo).await?;
        if let Some(f) = reply.fate_if_not(250) {
            return Err(Stop::All(f));
        }
        ext = reply.capabilities();
    } else if mode == TlsMode::Require {
        return Err(temp(
            "the next hop does not offer STARTTLS and next_hop_tls = require",
        ));
    }
    if let Some(login) = &hop.login {
        // The box's own credentials: only inside TLS, only AUTH PLAIN.
        if !tls_on {
            return Err(temp(
                "the box's relay credentials are sent only over STARTTLS, which the next hop did not offer",
            ));
        }
        if !ext.auth_plain {
            return Err(temp(
                "the next hop does not offer AUTH PLAIN for the box's relay credentials",
            ));
        }
        let cmd = sealgate_smtp::client::Command::AuthPlain {
            username: &login.username,
            password: &login.password,
        }
        .encode()
        .map(zeroize::Zeroizing::new)
        .map_err(|e| temp(e.to_string()))?;
        c.send(&cmd).await?;
        drop(cmd);
        let r = c.read_reply(REPLY_TIMEOUT).await?;
        if r.code() != 235 {
            let _ = c.command("QUIT").await;
            return Err(temp(format!(
                "the next hop refused the box's relay credentials: {}",
                r.text()
            )));
        }
    }
    Ok(Session {
        c,
        ext,
        mode,
        used: 0,
    })
}

/// One transaction on an open session; `progress` tells how far it went.
async fn transaction(
    s: &mut Session,
    from: &str,
    to: &[String],
    data: &[u8],
    msg: &[u8],
    progress: &mut Progress,
) -> Result<Vec<Fate>, Stop> {
    let (c, ext) = (&mut s.c, &s.ext);
    if let Some(limit) = ext.size
        && limit > 0
        && data.len() as u64 > limit
    {
        return Err(Stop::All(Fate::Permanent(format!(
            "552 5.3.4 the message ({} bytes) is larger than the next hop's limit ({limit} bytes)",
            data.len()
        ))));
    }
    // A UTF-8 address (from an SMTPUTF8 sender at the MX) travels only to a next hop that
    // takes it (RFC 6531); there is no downgrade of an address.
    let utf8 = !from.is_ascii() || to.iter().any(|t| !t.is_ascii());
    if utf8 && !ext.smtputf8 {
        return Err(Stop::All(Fate::Permanent(
            "553 5.6.7 the next hop does not offer SMTPUTF8 for a UTF-8 address".into(),
        )));
    }
    let mut mail = format!("MAIL FROM:<{from}>");
    if utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if ext.size.is_some() {
        mail.push_str(&format!(" SIZE={}", data.len()));
    }
    if ext.eight_bit_mime && msg.iter().any(|b| *b >= 0x80) {
        mail.push_str(" BODY=8BITMIME");
    }
    let rcpts: Vec<String> = to.iter().map(|t| format!("RCPT TO:<{t}>")).collect();
    let mut fates: Vec<Option<Fate>> = vec![None; to.len()];
    let data_reply;
    if ext.pipelining {
        let mut batch = format!("{mail}\r\n");
        for r in &rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        c.send(batch.as_bytes()).await?;
        let m = c.read_reply(REPLY_TIMEOUT).await?;
        let mut rcpt_replies = Vec::with_capacity(to.len());
        for _ in &rcpts {
            rcpt_replies.push(c.read_reply(REPLY_TIMEOUT).await?);
        }
        data_reply = c.read_reply(REPLY_TIMEOUT).await?;
        if let Some(f) = m.fate_if_not(250) {
            if data_reply.code() == 354 {
                // RFC 2920: DATA went through after all; end it empty.
                c.send(b".\r\n").await?;
                let _ = c.read_reply(REPLY_TIMEOUT).await;
            }
            return Err(Stop::All(f));
        }
        for (i, r) in rcpt_replies.iter().enumerate() {
            fates[i] = r.fate_if_not(250);
        }
    } else {
        let m = c.command(&mail).await?;
        if let Some(f) = m.fate_if_not(250) {
            return Err(Stop::All(f));
        }
        for (i, r) in rcpts.iter().enumerate() {
            fates[i] = c.command(r).await?.fate_if_not(250);
        }
        if fates.iter().all(Option::is_some) {
            return Ok(fates.into_iter().flatten().collect());
        }
        data_reply = c.command("DATA").await?;
    }
    let accepted = fates.iter().filter(|f| f.is_none()).count();
    if data_reply.code() != 354 {
        let f = data_reply
            .fate_if_not(354)
            .unwrap_or(Fate::Temporary(data_reply.text()));
        return Ok(fates.into_iter().map(|x| x.unwrap_or(f.clone())).collect());
    }
    if accepted == 0 {
        c.send(b".\r\n").await?;
        let _ = c.read_reply(REPLY_TIMEOUT).await;
        return Ok(fates.into_iter().flatten().collect());
    }
    *progress = Progress::Data;
    c.send(data).await?;
    // From here on the next hop may have taken the message: a lost answer is a temporary
    // failure (sent again later: the one window for a duplicate).
    let end = c.read_reply(REPLY_TIMEOUT * 2).await?;
    // The result goes back at once, to be written durably: the session is put back for
    // the next message (or QUIT later, off this path), so no round trip widens the window
    // in which a crash makes the message go out twice.
    *progress = Progress::Done;
    let result = if end.positive() {
        Fate::Delivered(end.text())
    } else {
        end.fate_if_not(250).unwrap_or(Fate::Temporary(end.text()))
    };
    Ok(fates
        .into_iter()
        .map(|x| x.unwrap_or(result.clone()))
        .collect())
}

/// The DATA section for `msg`: CRLF line ends, dot-stuffed, ending with CRLF "." CRLF.
pub(super) fn data_section(msg: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(msg.len() + msg.len() / 50 + 8);
    // Line by line (a line's bytes copied at once): each line starting with "." gets another,
    // each CR, LF or CRLF becomes CRLF.
    let mut rest = msg;
    let mut ends_in_line_end = true;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            data.push(b'.');
        }
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                data.extend_from_slice(rest);
                ends_in_line_end = false;
                break;
            }
            Some(n) => {
                data.extend_from_slice(&rest[..n]);
                data.extend_from_slice(b"\r\n");
                // CRLF is one line end.
                let end = if rest[n] == b'\r' && rest.get(n + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[n + end..];
            }
        }
    }
    if !ends_in_line_end {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn nothing_in_the_content_ends_data_at_the_next_hop() {
        // The byte-by-byte definition, against every short message over the characters
        // that matter.
        fn reference(msg: &[u8]) -> Vec<u8> {
            let mut data = Vec::new();
            let mut at_line_start = true;
            let mut i = 0;
            while i < msg.len() {
                let b = msg[i];
                if b == b'\r' || b == b'\n' {
                    data.extend_from_slice(b"\r\n");
                    at_line_start = true;
                    if b == b'\r' && msg.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                } else {
                    if at_line_start && b == b'.' {
                        data.push(b'.');
                    }
                    data.push(b);
                    at_line_start = false;
                }
                i += 1;
            }
            if !at_line_start {
                data.extend_from_slice(b"\r\n");
            }
            data.extend_from_slice(b".\r\n");
            data
        }
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let msg: Vec<u8> = (0..len)
                    .map(|k| alphabet[(n / 4usize.pow(k)) % 4])
                    .collect();
                assert_eq!(data_section(&msg), reference(&msg), "{msg:?}");
            }
        }
        assert_eq!(data_section(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n".to_vec());
        assert_eq!(data_section(b"a"), b"a\r\n.\r\n".to_vec());
        assert_eq!(data_section(b""), b".\r\n".to_vec());
        assert_eq!(data_section(b".x\r\n"), b"..x\r\n.\r\n".to_vec());
        for smuggle in [
            &b"a\n.\nMAIL"[..],
            b"a\n.\r\nMAIL",
            b"a\r.\rMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n.\r\r\nMAIL",
            b"a\r\n.\r\nMAIL",
        ] {
            let d = data_section(smuggle);
            // The only CRLF "." CRLF is the final one.
            let ends = d.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert_eq!(ends, 1, "{:?}", String::from_utf8_lossy(&d));
            assert!(d.ends_with(b"\r\n.\r\n"));
            assert!(
                !d.windows(2)
                    .enumerate()
                    .any(|(i, w)| (w[0] == b'\r' && w[1] != b'\n')
                        || (w[1] == b'\n' && w[0] != b'\r' && i + 1 < d.len())),
                "only CRLF line ends"
            );
        }
    }

    fn read(wire: &[u8]) -> Reply {
        let mut r = ReplyReader::new();
        r.feed(wire);
        Reply(r.next_reply().expect("a reply").expect("parsed"))
    }

    #[test]
    fn reply_texts_keep_the_enhanced_code_and_no_control_characters() {
        assert_eq!(
            read(b"550 5.1.1 no such user\r\n").text(),
            "550 5.1.1 no such user"
        );
        assert_eq!(
            read(b"451-first\r\n451 second\r\n").text(),
            "451 first / second"
        );
        assert_eq!(read(b"220\r\n").text(), "220");
        let t = read(b"451 a\x1b[31mb\r\n").text();
        assert!(!t.chars().any(char::is_control), "{t:?}");
        assert_eq!(
            read(b"550 5.1.1 no\r\n").fate_if_not(250),
            Some(Fate::Permanent("550 5.1.1 no".into()))
        );
        assert_eq!(read(b"250 ok\r\n").fate_if_not(250), None);
    }

    #[test]
    fn the_relay_password_is_never_shown() {
        let l = RelayLogin {
            username: "box@example.org".into(),
            password: zeroize::Zeroizing::new("s3cret-Pw".into()),
        };
        let d = format!("{l:?}");
        assert!(
            d.contains("box@example.org") && !d.contains("s3cret"),
            "{d}"
        );
    }

    #[test]
    fn ehlo_capabilities_are_read() {
        let e = read(
            b"250-mx.example.org hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-starttls\r\n250 8BITMIME\r\n",
        )
        .capabilities();
        assert!(e.starttls && e.pipelining && e.eight_bit_mime && !e.smtputf8);
        assert_eq!(e.size, Some(10_240_000));
        // Not a 250: nothing offered.
        assert_eq!(read(b"502 no\r\n").capabilities(), Capabilities::default());
    }

    #[test]
    fn next_hop_tls_settings_that_cannot_work_are_refused_at_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let addr: SocketAddr = "127.0.0.1:25".parse().expect("addr");
        fn policy<'a>(ca: Option<&'a std::path::Path>, name: Option<&'a str>) -> TlsPolicy<'a> {
            TlsPolicy {
                mode: TlsMode::Require,
                ca,
                fingerprint: None,
                name,
                what: "[smtp] next_hop",
            }
        }
        let e = NextHop::new(addr, &policy(Some(&garbage), None))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("holds no certificate")),
            "{e:?}"
        );
        let missing = dir.path().join("missing.pem");
        let e = NextHop::new(addr, &policy(Some(&missing), None))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("next_hop_ca")),
            "{e:?}"
        );
        let e = NextHop::new(addr, &policy(None, Some("not a name!")))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("next_hop_name")),
            "{e:?}"
        );
        let ok = NextHop::new(addr, &policy(None, Some("mx.example.org"))).expect("system roots");
        assert_eq!(ok.mode, TlsMode::Require);
    }

    /// A next hop that offers STARTTLS and then answers it with `after` (and, for a plain
    /// session, takes the message); serves `n` connections, returns what each saw.
    async fn broken_tls(
        after: &'static [u8],
        n: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = tokio::spawn(async move {
            let mut all = Vec::new();
            for _ in 0..n {
                let Ok((s, _)) = l.accept().await else { break };
                let mut r = BufReader::new(s);
                let mut seen = Vec::new();
                let _ = r.get_mut().write_all(b"220 test\r\n").await;
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end().to_string();
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let _ = r.get_mut().write_all(b"250 taken\r\n").await;
                        }
                        continue;
                    }
                    seen.push(line.clone());
                    let up = line.to_ascii_uppercase();
                    let answer: &[u8] = if up.starts_with("EHLO") {
                        b"250-test\r\n250 STARTTLS\r\n"
                    } else if up == "STARTTLS" {
                        let _ = r.get_mut().write_all(after).await;
                        break;
                    } else if up == "DATA" {
                        in_data = true;
                        b"354 go\r\n"
                    } else if up == "QUIT" {
                        let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = r.get_mut().write_all(answer).await;
                }
                all.push(seen);
            }
            all
        });
        (addr, h)
    }

    #[tokio::test]
    async fn opportunistic_falls_back_to_plain_but_require_does_not() {
        let to = vec!["a@x".to_string()];
        // The handshake fails (the next hop hangs up): opportunistic sends in plain.
        let (addr, h) = broken_tls(b"220 go\r\n", 2).await;
        let f = send(
            &hop(addr, TlsMode::Opportunistic),
            "box",
            "s@x",
            &to,
            b"x\r\n",
        )
        .await;
        assert!(matches!(&f[0], Fate::Delivered(_)), "{f:?}");
        let seen = h.await.expect("server");
        assert_eq!(seen.len(), 2);
        assert!(seen[0].contains(&"STARTTLS".to_string()));
        assert!(!seen[1].contains(&"STARTTLS".to_string()), "{seen:?}");
        // Under require the message waits, with the reason, and goes nowhere in plain.
        let (addr, h) = broken_tls(b"220 go\r\n", 1).await;
        let f = send(&hop(addr, TlsMode::Require), "box", "s@x", &to, b"x\r\n").await;
        assert!(
            matches!(&f[0], Fate::Temporary(t) if t.contains("require")),
            "{f:?}"
        );
        assert!(
            !h.await.expect("server")[0]
                .iter()
                .any(|l| l.starts_with("MAIL"))
        );
        // Data pipelined behind the 220 (a command injected before the handshake): refused.
        let (addr, _h) = broken_tls(b"220 go\r\n250 injected\r\n", 1).await;
        let f = send(&hop(addr, TlsMode::Require), "box", "s@x", &to, b"x\r\n").await;
        assert!(
            matches!(&f[0], Fate::Temporary(t) if t.contains("after its STARTTLS reply")),
            "{f:?}"
        );
    }

    /// A scripted next hop on a local socket: answers each command with the given reply.
    async fn scripted(
        script: Vec<(&'static str, &'static str)>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let mut r = BufReader::new(s);
            let mut seen = Vec::new();
            r.get_mut()
                .write_all(b"220 test ESMTP\r\n")
                .await
                .expect("greet");
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return seen;
                }
                let line = line.trim_end().to_string();
                if in_data {
                    if line == "." {
                        in_data = false;
                        seen.push(".".into());
                        r.get_mut()
                            .write_all(b"250 2.0.0 taken\r\n")
                            .await
                            .expect("w");
                    }
                    continue;
                }
                let verb = line
                    .split([' ', ':'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                seen.push(line.clone());
                let answer = script
                    .iter()
                    .find(|(k, _)| line.to_ascii_uppercase().starts_with(k))
                    .map(|(_, a)| *a)
                    .unwrap_or(match verb.as_str() {
                        "EHLO" => "250 test",
                        "DATA" => "354 go",
                        "QUIT" => "221 bye",
                        _ => "250 ok",
                    });
                if verb == "DATA" && answer.starts_with("354") {
                    in_data = true;
                }
                r.get_mut()
                    .write_all(format!("{answer}\r\n").as_bytes())
                    .await
                    .expect("w");
                if verb == "QUIT" {
                    return seen;
                }
            }
        });
        (addr, h)
    }

    fn hop(addr: SocketAddr, mode: TlsMode) -> NextHop {
        let mut s = Settings::default();
        s.smtp.next_hop = Some(addr);
        s.smtp.next_hop_tls = mode;
        NextHop::from_settings(&s).expect("hop").expect("some")
    }

    #[tokio::test]
    async fn a_session_carries_the_next_messages() {
        let (addr, h) = scripted(vec![("EHLO", "250-test\r\n250 PIPELINING")]).await;
        let hop = hop(addr, TlsMode::None);
        let to = vec!["a@x".to_string()];
        for _ in 0..3 {
            let f = send(&hop, "box", "s@x", &to, b"Subject: x\r\n\r\nhi\r\n").await;
            assert!(matches!(&f[0], Fate::Delivered(_)), "{f:?}");
        }
        drop(hop);
        // The scripted server takes one connection: all three went over it.
        let seen = h.await.expect("server");
        assert_eq!(seen.iter().filter(|l| l.starts_with("EHLO")).count(), 1);
        assert_eq!(seen.iter().filter(|l| *l == ".").count(), 3, "{seen:?}");
    }

    /// A next hop that ends every session after one message (or, with `refuse_mail`, answers
    /// a kept session's MAIL with 421 and closes): (connections, messages taken).
    async fn one_message_per_session(
        refuse_mail: bool,
    ) -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (conns, taken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c2, t2) = (conns.clone(), taken.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::SeqCst);
                let t2 = t2.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    let _ = r.get_mut().write_all(b"220 test ESMTP\r\n").await;
                    let (mut in_data, mut messages) = (false, 0);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end().to_ascii_uppercase();
                        if in_data {
                            if line == "." {
                                in_data = false;
                                messages += 1;
                                t2.fetch_add(1, Ordering::SeqCst);
                                let _ = r.get_mut().write_all(b"250 2.0.0 taken\r\n").await;
                                if !refuse_mail {
                                    return;
                                }
                            }
                            continue;
                        }
                        let answer: &[u8] = if line.starts_with("EHLO") {
                            b"250-test\r\n250 PIPELINING\r\n"
                        } else if line.starts_with("MAIL") && messages > 0 {
                            let _ = r.get_mut().write_all(b"421 4.4.2 idle too long\r\n").await;
                            return;
                        } else if line.starts_with("DATA") {
                            in_data = true;
                            b"354 go\r\n"
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = r.get_mut().write_all(answer).await;
                    }
                });
            }
        });
        (addr, conns, taken)
    }

    #[tokio::test]
    async fn a_kept_session_the_next_hop_ended_is_replaced_and_nothing_goes_twice() {
        use std::sync::atomic::Ordering;
        for refuse_mail in [false, true] {
            let (addr, conns, taken) = one_message_per_session(refuse_mail).await;
            let hop = hop(addr, TlsMode::None);
            let to = vec!["a@x".to_string()];
            for _ in 0..3 {
                // The server's close is seen before the next message (or its 421 is).
                tokio::time::sleep(Duration::from_millis(50)).await;
                let f = send(&hop, "box", "s@x", &to, b"Subject: x\r\n\r\nhi\r\n").await;
                assert!(matches!(&f[0], Fate::Delivered(_)), "{refuse_mail}: {f:?}");
            }
            assert_eq!(taken.load(Ordering::SeqCst), 3, "{refuse_mail}");
            assert_eq!(conns.load(Ordering::SeqCst), 3, "{refuse_mail}");
        }
    }

    #[tokio::test]
    async fn each_recipient_gets_its_own_result() {
        let (addr, h) = scripted(vec![
            ("RCPT TO:<B@", "450 4.2.1 try later"),
            ("RCPT TO:<C@", "550 5.1.1 unknown"),
        ])
        .await;
        let to: Vec<String> = ["a@x", "b@x", "c@x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = send(
            &hop(addr, TlsMode::Opportunistic),
            "box",
            "s@x",
            &to,
            b"Subject: x\r\n\r\nhi\r\n",
        )
        .await;
        assert!(
            matches!(&f[0], Fate::Delivered(t) if t.contains("taken")),
            "{f:?}"
        );
        assert!(
            matches!(&f[1], Fate::Temporary(t) if t.contains("450")),
            "{f:?}"
        );
        assert!(
            matches!(&f[2], Fate::Permanent(t) if t.contains("550")),
            "{f:?}"
        );
        let seen = h.await.expect("server");
        assert!(seen.contains(&".".to_string()));
    }

    #[tokio::test]
    async fn utf8_addresses_go_only_to_a_next_hop_with_smtputf8() {
        let to = vec!["jörg@example.org".to_string()];
        let msg = b"Subject: x\r\n\r\nhi\r\n";
        let (addr, h) = scripted(vec![("EHLO", "250-test\r\n250 SMTPUTF8")]).await;
        let f = send(&hop(addr, TlsMode::None), "box", "s@x", &to, msg).await;
        assert!(matches!(&f[0], Fate::Delivered(_)), "{f:?}");
        let seen = h.await.expect("server");
        assert!(
            seen.contains(&"MAIL FROM:<s@x> SMTPUTF8".to_string()),
            "{seen:?}"
        );
        let (addr, h) = scripted(vec![]).await;
        let f = send(&hop(addr, TlsMode::None), "box", "s@x", &to, msg).await;
        assert!(
            matches!(&f[0], Fate::Permanent(t) if t.contains("5.6.7")),
            "{f:?}"
        );
        let seen = h.await.expect("server");
        assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
    }

    #[tokio::test]
    async fn pipelining_sends_the_envelope_in_one_go_and_size_is_respected() {
        let (addr, h) = scripted(vec![(
            "EHLO",
            "250-test\r\n250-PIPELINING\r\n250 SIZE 100000",
        )])
        .await;
        let to = vec!["a@x".to_string()];
        let f = send(
            &hop(addr, TlsMode::None),
            "box",
            "s@x",
            &to,
            b"Subject: x\r\n\r\nhi\r\n",
        )
        .await;
        assert!(matches!(&f[0], Fate::Delivered(_)), "{f:?}");
        let seen = h.await.expect("server");
        assert!(
            seen.iter().any(|l| l.starts_with("MAIL FROM:<s@x> SIZE=")),
            "{seen:?}"
        );
        // Too large: refused for good before MAIL.
        let (addr, h) = scripted(vec![("EHLO", "250-test\r\n250 SIZE 10")]).await;
        let f = send(&hop(addr, TlsMode::None), "box", "s@x", &to, &[b'x'; 100]).await;
        assert!(
            matches!(&f[0], Fate::Permanent(t) if t.contains("larger than")),
            "{f:?}"
        );
        let seen = h.await.expect("server");
        assert!(!seen.iter().any(|l| l.starts_with("MAIL")), "{seen:?}");
    }

    #[tokio::test]
    async fn require_without_starttls_defers_and_a_dead_hop_is_temporary() {
        let (addr, _h) = scripted(vec![]).await;
        let to = vec!["a@x".to_string()];
        let f = send(&hop(addr, TlsMode::Require), "box", "s@x", &to, b"x").await;
        assert!(
            matches!(&f[0], Fate::Temporary(t) if t.contains("does not offer STARTTLS")),
            "{f:?}"
        );
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = dead.local_addr().expect("addr");
        drop(dead);
        let f = send(&hop(addr, TlsMode::Opportunistic), "box", "s@x", &to, b"x").await;
        assert!(
            matches!(&f[0], Fate::Temporary(t) if t.contains("cannot connect")),
            "{f:?}"
        );
        // A greeting that is not SMTP.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad\r\n\r\n").await;
            }
        });
        let f = send(&hop(addr, TlsMode::Opportunistic), "box", "s@x", &to, b"x").await;
        assert!(
            matches!(&f[0], Fate::Temporary(t) if t.contains("not SMTP")),
            "{f:?}"
        );
    }
}
