//! The submission listeners: employees' mail clients on 587 (STARTTLS) and 465 (implicit
//! TLS). The I/O driver around the protocol crate's server session (`sealgate_smtp`).
//!
//! Life of a message: TLS (STARTTLS first, or implicit) → AUTH PLAIN/LOGIN, verified against
//! the organisation's server (`auth.rs`; the session offers and accepts AUTH only over TLS,
//! and MAIL only after AUTH) → `MAIL FROM` must be one of the login's own addresses
//! (`policy::may_send_as`, else `550 5.7.1`) → recipients → DATA (in memory, bounded by
//! `[docking] max_message_bytes`) → the From field must be one of them too → policy
//! (`policy::apply`, on the blocking pool: sign, encrypt, split, or `550 5.7.1` naming the
//! recipients without a certificate) → every copy and its envelope fsynced in the shared
//! queue (`smtp::Spool::enqueue`, direction `submission`: relayed as it is) → `250` → the
//! queue's delivery loop relays it to `[submission] relay` (retries, DSNs to the envelope
//! sender, `sealctl queue`). One audit line per message (never content); the keys used are
//! recorded in the vault's chain as `submission:LOGIN from ADDRESS`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate_smtp::{Config, Event, Reply, Session};
use sealgate_vault::Vault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::auth::{AuthError, Credentials, Verifier};
use super::policy::{self, Refusal};
use crate::audit::AuditLog;
use crate::keys::{Acting, KeyStore};
use crate::settings::Settings;
use crate::smtp::{Direction, Envelope};

/// What the submission listeners need.
pub struct Submission {
    /// The settings (`[submission]`, `[policy]`, `[smtp] hostname`, limits).
    pub settings: Settings,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// The queue shared by every SMTP role (`smtp::open_queue`).
    pub queue: Arc<crate::smtp::Spool>,
    /// Keys and certificates.
    pub keys: Arc<dyn KeyStore>,
    /// The vault, for auto-enrolment (the box CA issues a key).
    pub vault: Arc<Vault>,
    /// The per-call audit log.
    pub audit: Arc<AuditLog>,
    /// The box's TLS configuration (its certificate, no client certificates).
    pub tls: Arc<rustls::ServerConfig>,
    /// The crypto workers shared with the HTTPS API and the hand-off (one per core): at most
    /// that many messages are signed and encrypted at once, however many sessions wait.
    pub workers: Arc<tokio::sync::Semaphore>,
}

/// The running listeners.
pub struct Running {
    listening: Vec<(&'static str, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound listeners.
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listening.clone()
    }

    /// Stops accepting and delivering.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

struct Shared {
    s: Submission,
    verifier: Verifier,
    sessions: Arc<Semaphore>,
    /// Message bytes held in memory by all sessions together, in KiB (`[docking]
    /// max_buffered_bytes`): a message that finds no room is refused with `452`.
    memory: Arc<Semaphore>,
    /// Sessions per client address (IPv6 per /64), capped by `[smtp] max_sessions_per_address`.
    per_address: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The box's loop marker (`smtp/loops.rs`).
    loops: crate::smtp::Loops,
}

/// One session's place in [`Shared::per_address`], given back on drop.
struct AddressSlot<'a> {
    sh: &'a Shared,
    key: String,
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.sh.per_address.lock()
            && let Some(n) = m.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Shared {
    fn address_slot(&self, ip: IpAddr) -> Option<AddressSlot<'_>> {
        let key = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        let mut m = self.per_address.lock().ok()?;
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= self.s.settings.smtp.max_sessions_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot { sh: self, key })
    }
}

/// Binds the configured submission listeners (none unless configured) and starts delivery.
pub async fn start(s: Submission) -> anyhow::Result<Running> {
    let (stop, stop_rx) = watch::channel(false);
    let sub = &s.settings.submission;
    let mut running = Running {
        listening: Vec::new(),
        stop,
        tasks: Vec::new(),
    };
    if sub.listen.is_none() && sub.listen_tls.is_none() {
        return Ok(running);
    }
    let Some(verifier) = super::verifier(sub, &s.settings.smtp.hostname)? else {
        anyhow::bail!("[submission] listeners need auth");
    };
    if sub.relay.is_none() {
        anyhow::bail!("[submission] listeners need relay");
    }
    // The relay is the queue's (`smtp::start` runs its delivery loop).
    import_old_outbox(&s.data_dir, &s.queue)?;
    let mut binds = Vec::new();
    if let Some(a) = sub.listen {
        binds.push(("submission", a, false));
    }
    if let Some(a) = sub.listen_tls {
        binds.push(("submission-tls", a, true));
    }
    let sessions = Arc::new(Semaphore::new(s.settings.smtp.max_sessions));
    let memory = Arc::new(Semaphore::new(
        s.settings.docking.max_buffered_bytes.0.div_ceil(1024),
    ));
    let loops = crate::smtp::Loops::open(&s.data_dir, &s.vault, &s.settings)?;
    let sh = Arc::new(Shared {
        loops,
        s,
        verifier,
        sessions,
        memory,
        per_address: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    for (name, addr, implicit) in binds {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the {name} listener to {addr}: {e}"))?;
        running.listening.push((name, l.local_addr()?));
        running.tasks.push(tokio::spawn(accept_loop(
            sh.clone(),
            l,
            implicit,
            stop_rx.clone(),
        )));
    }
    Ok(running)
}

async fn accept_loop(
    sh: Arc<Shared>,
    l: TcpListener,
    implicit: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "submission accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = sh.sessions.clone().try_acquire_owned() else {
            let mut tcp = tcp;
            let _ = tcp
                .write_all(b"421 4.3.2 too many sessions, try again later\r\n")
                .await;
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let Some(slot) = sh.address_slot(peer.ip()) else {
                let mut tcp = tcp;
                let _ = tcp
                    .write_all(b"421 4.7.0 too many sessions from your address\r\n")
                    .await;
                return;
            };
            let timeout = sh.s.settings.smtp.session_timeout_secs.duration();
            let _ = tokio::time::timeout(timeout, session(&sh, tcp, peer, implicit)).await;
            drop(slot);
            drop(permit);
        });
    }
}

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a client may stay silent (RFC 5321 §4.5.3.2 gives the server 5 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The connection, plain until STARTTLS (or TLS from the start).
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl Conn {
    async fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        match self {
            Conn::Plain(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }
}

/// What one transaction collected.
#[derive(Default)]
struct Txn {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    /// The memory `data` holds, in KiB permits.
    permits: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The message did not fit the memory bound: dropped, refused at its end.
    over: bool,
}

impl Txn {
    fn clear_data(&mut self) {
        self.data = Vec::new();
        self.permits = None;
        self.over = false;
    }

    /// Keeps `bytes` if the memory bound has room for them.
    fn add(&mut self, memory: &Arc<Semaphore>, bytes: &[u8]) {
        if self.over {
            return;
        }
        let need = (self.data.len() + bytes.len()).div_ceil(1024) as u32;
        let have = self.permits.as_ref().map_or(0, |p| p.num_permits() as u32);
        if need > have {
            match memory.clone().try_acquire_many_owned(need - have) {
                Ok(p) => match &mut self.permits {
                    Some(held) => held.merge(p),
                    None => self.permits = Some(p),
                },
                Err(_) => {
                    self.clear_data();
                    self.over = true;
                    return;
                }
            }
        }
        self.data.extend_from_slice(bytes);
    }
}

fn reply(code: u16, esc: [u16; 3], text: impl Into<String>) -> Reply {
    let t: String = text
        .into()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    Reply::new(code, esc, t)
}

async fn session(sh: &Shared, tcp: TcpStream, peer: SocketAddr, implicit: bool) {
    let acceptor = TlsAcceptor::from(sh.s.tls.clone());
    let mut conn = if implicit {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(t)) => Conn::Tls(Box::new(t)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "submission TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Conn::Plain(tcp)
    };
    let mut cfg = Config::new(sh.s.settings.smtp.hostname.clone());
    cfg.tls = implicit;
    cfg.require_auth = true;
    cfg.extensions.starttls = !implicit;
    cfg.extensions.auth = true;
    // BDAT chunks arrive as sent (no line-end check): submission takes DATA only.
    cfg.extensions.chunking = false;
    cfg.max_message_bytes = sh.s.settings.docking.max_message_bytes.0 as u64;
    let mut s = Session::new(cfg);
    let mut txn = Txn::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.next_event() {
            Event::NeedInput => {
                if conn.write(&s.take_output()).await.is_err() {
                    return;
                }
                match tokio::time::timeout(IDLE_TIMEOUT, conn.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => return,
                    Ok(Ok(n)) => s.feed(&buf[..n]),
                    Err(_) => {
                        let _ = conn.write(b"421 4.4.2 idle too long, closing\r\n").await;
                        return;
                    }
                }
            }
            Event::Flush => {
                if conn.write(&s.take_output()).await.is_err() {
                    return;
                }
            }
            Event::StartTls => {
                if conn.write(&s.take_output()).await.is_err() {
                    return;
                }
                let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                    return;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => {
                        conn = Conn::Tls(Box::new(t));
                        s.tls_started();
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "STARTTLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
            Event::Auth { credentials, .. } => {
                let user = credentials.username.clone();
                if !credentials.authzid.is_empty() && credentials.authzid != user {
                    s.refuse(reply(535, [5, 7, 8], "authorisation identity not allowed"));
                    continue;
                }
                let creds = Credentials {
                    user: user.clone(),
                    password: Zeroizing::new(credentials.password.as_str().to_string()),
                };
                drop(credentials);
                match sh.verifier.verify(&creds, peer.ip()).await {
                    Ok(()) => {
                        tracing::info!(%peer, login = %user, "submission login");
                        s.accept();
                    }
                    Err(AuthError::Rejected) => {
                        tracing::info!(%peer, login = %user, "submission login refused");
                        audit(sh, &user, peer, None, "auth-refused", 535, Instant::now());
                        s.refuse(reply(535, [5, 7, 8], "authentication failed"));
                    }
                    Err(AuthError::Throttled) => {
                        tracing::warn!(%peer, login = %user, "submission login throttled");
                        audit(sh, &user, peer, None, "auth-throttled", 454, Instant::now());
                        s.refuse(reply(
                            454,
                            [4, 7, 0],
                            "too many failed logins, try again later",
                        ));
                    }
                    Err(e @ AuthError::Unavailable(_)) => {
                        tracing::warn!(%peer, login = %user, error = %e, "submission login could not be verified");
                        s.refuse(reply(454, [4, 7, 0], "temporary authentication failure"));
                    }
                }
            }
            Event::MailFrom(m) => {
                let login = s.authenticated().unwrap_or_default().to_string();
                if policy::may_send_as(&sh.s.settings.submission, &login, &m.address) {
                    txn = Txn {
                        from: m.address.to_ascii_lowercase(),
                        ..Txn::default()
                    };
                    s.accept();
                } else {
                    audit(
                        sh,
                        &login,
                        peer,
                        None,
                        "sender-refused",
                        550,
                        Instant::now(),
                    );
                    s.refuse(reply(
                        550,
                        [5, 7, 1],
                        format!("{login} may not send as <{}>", m.address),
                    ));
                }
            }
            Event::RcptTo(r) => {
                let a = r.address.to_ascii_lowercase();
                if !txn.to.contains(&a) {
                    txn.to.push(a);
                }
                s.accept();
            }
            Event::DataStart => {
                txn.clear_data();
                s.accept();
            }
            Event::Data(bytes) => txn.add(&sh.memory, &bytes),
            Event::DataAborted => txn.clear_data(),
            Event::EndOfMessage => {
                if txn.over {
                    txn.clear_data();
                    s.refuse(reply(
                        452,
                        [4, 3, 1],
                        "the box is busy with other messages, try again later",
                    ));
                    continue;
                }
                let login = s.authenticated().unwrap_or_default().to_string();
                let msg = std::mem::take(&mut txn.data);
                let r = end_of_message(sh, &login, peer, &txn, msg).await;
                txn.clear_data();
                txn.to.clear();
                match r {
                    Ok(r) => s.accept_with(r),
                    Err(r) => s.refuse(r),
                }
            }
            // QUIT, the session closed for abuse, or an event this role does not expect.
            _ => {
                let _ = conn.write(&s.take_output()).await;
                return;
            }
        }
    }
}

/// The message's one From address, if it has exactly one.
pub(crate) fn header_from(msg: &[u8]) -> Option<String> {
    let e = sealgate_smime::mime::Entity::parse(msg);
    let mut from = e
        .header_list()
        .fields()
        .iter()
        .filter(|f| f.is("From"))
        .map(|f| f.value().into_owned())
        .collect::<Vec<_>>();
    if from.len() != 1 {
        return None;
    }
    match sealgate_smime::message::mailbox_addresses(&from.remove(0)).as_slice() {
        [one] => Some(one.to_ascii_lowercase()),
        _ => None,
    }
}

async fn end_of_message(
    sh: &Shared,
    login: &str,
    peer: SocketAddr,
    txn: &Txn,
    msg: Vec<u8>,
) -> Result<Reply, Reply> {
    let started = Instant::now();
    let mid = crate::docking::message_id(&msg);
    let Some(from) = header_from(&msg) else {
        audit(sh, login, peer, mid, "from-refused", 550, started);
        return Err(reply(
            550,
            [5, 7, 1],
            "the message needs exactly one From address",
        ));
    };
    if !policy::may_send_as(&sh.s.settings.submission, login, &from) {
        audit(sh, login, peer, mid, "from-refused", 550, started);
        return Err(reply(
            550,
            [5, 7, 1],
            format!("{login} may not send as {from} (From)"),
        ));
    }
    // A message that passed through this box too often is looping (`smtp/loops.rs`); its
    // valid markers go on with it, any other `X-Sealgate-*` field is removed by the policy.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let kept = sh.loops.own(&msg, now);
    if let Some(refused) = sh.loops.refusal(&kept) {
        tracing::warn!(%peer, %login, "a message looping through the box refused (554 5.4.6)");
        audit(sh, login, peer, mid, "refused-loop", 554, started);
        return Err(refused);
    }
    // Content scanning (`scan.rs`) on the cleartext, before it is signed and encrypted. A
    // quarantine keeps the cleartext as submitted (encrypted at rest); its release runs the
    // policy then (`admin/quarantine.rs`). A reject, or a quarantine without a store, is
    // refused.
    let decision =
        crate::scan::configured(&sh.s.settings, &sh.s.data_dir).decide(&crate::scan::Scanned {
            flow: crate::scan::Flow::Outbound,
            from: &txn.from,
            to: &txn.to,
            content: &msg,
            auth: None,
        });
    match decision.verdict {
        crate::scan::Verdict::Pass | crate::scan::Verdict::Tag(_) => {}
        crate::scan::Verdict::Hold(why) if crate::quarantine::store().is_some() => {
            return quarantine(sh, login, peer, mid, txn, msg, &why, started).await;
        }
        crate::scan::Verdict::Hold(why) | crate::scan::Verdict::Reject(why) => {
            audit(sh, login, peer, mid, "scan-refused", 550, started);
            return Err(reply(
                550,
                [5, 7, 1],
                format!("refused by content scanning: {why}"),
            ));
        }
    }
    let auditor_copy = decision.extras.copy_auditor.clone().map(|a| {
        let mut env = envelope(login, &peer_ip(peer.ip()), &txn.from, vec![a]);
        env.released = Some("a copy for the auditor (DLP rule copy-auditor)".into());
        let mut copy = format!(
            "X-Sealgate-Auditor-Copy: original recipients: {}\r\n",
            txn.to.join(", ")
        )
        .into_bytes();
        copy.extend_from_slice(&msg);
        (env, copy)
    });
    let keys = sh.s.keys.clone();
    let vault = sh.s.vault.clone();
    let mut policy_settings = sh.s.settings.policy.clone();
    if decision.extras.require_encryption {
        // A DLP rule `require-encryption`: this message is encrypted to every recipient or
        // refused, whatever the sender's or domain's policy says.
        policy_settings.encrypt = crate::settings::EncryptPolicy::Mandatory;
        for o in policy_settings
            .domains
            .values_mut()
            .chain(policy_settings.users.values_mut())
        {
            o.encrypt = Some(crate::settings::EncryptPolicy::Mandatory);
        }
    }
    let actor = crate::keys::actor("submission", login, &peer_ip(peer.ip()));
    let recipients = txn.to.clone();
    let sender = from.clone();
    let Ok(worker) = sh.s.workers.clone().acquire_owned().await else {
        return Err(reply(
            451,
            [4, 3, 0],
            "the box is stopping; try again later",
        ));
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let _worker = worker;
        let acting = Acting::new(keys.as_ref(), actor.clone());
        let enrol = |addr: &str| -> Result<(), String> {
            vault
                .ca_issue(addr)
                .map_err(|e| format!("auto-enrolment of {addr}: {e}"))?;
            keys.forget_cached();
            // The issuance names the daemon; this entry names the login it was for.
            vault
                .record_event(
                    &actor,
                    "submission.auto-enrol",
                    addr,
                    "key issued by the box CA at the first submitted message",
                )
                .map_err(|e| format!("auditing the auto-enrolment of {addr}: {e}"))?;
            Ok(())
        };
        policy::apply(
            &acting,
            &policy_settings,
            &enrol,
            &sender,
            &recipients,
            &msg,
            now,
        )
    })
    .await
    .map_err(|_| reply(451, [4, 3, 0], "the message could not be processed"))?;
    let outcome = match outcome {
        Ok(o) => o,
        Err(Refusal::Policy(why)) => {
            audit(sh, login, peer, mid, "policy-refused", 550, started);
            return Err(reply(550, [5, 7, 1], why));
        }
        Err(Refusal::Content(why)) => {
            tracing::info!(%peer, %login, reason = %why, "submitted message refused");
            audit(sh, login, peer, mid, "content-refused", 554, started);
            return Err(reply(
                554,
                [5, 6, 0],
                "the message cannot be signed or encrypted as it is",
            ));
        }
        Err(Refusal::Temporary(why)) => {
            tracing::warn!(%peer, %login, reason = %why, "submission processing failed");
            audit(sh, login, peer, mid, "failed", 451, started);
            return Err(reply(
                451,
                [4, 3, 0],
                "the message could not be processed now, try again later",
            ));
        }
    };
    if outcome.enrolled {
        tracing::info!(%login, sender = %from, "auto-enrolled: the box CA issued a key");
    }
    let queue = sh.s.queue.clone();
    let envelopes: Vec<Envelope> = outcome
        .copies
        .iter()
        .map(|c| envelope(login, &peer_ip(peer.ip()), &txn.from, c.recipients.clone()))
        .collect();
    let copies: Vec<Vec<u8>> = outcome
        .copies
        .into_iter()
        .map(|c| sh.loops.stamp("submit", &kept, &c.message, now))
        // DKIM last: the signature covers what leaves (S/MIME done, the loop marker on).
        .map(|m| crate::dkim_sign::sign(&sh.s.settings.dkim, &m))
        .collect();
    let queued = tokio::task::spawn_blocking(move || {
        let mut messages: Vec<(Envelope, &[u8])> = envelopes
            .into_iter()
            .zip(&copies)
            .map(|(e, c)| (e, c.as_slice()))
            .collect();
        if let Some((env, copy)) = &auditor_copy {
            messages.push((env.clone(), copy.as_slice()));
        }
        queue.enqueue(&messages)
    })
    .await
    .map_err(|_| reply(451, [4, 3, 0], "the message could not be queued"))?;
    match queued {
        Ok(Some(ids)) => {
            audit(sh, login, peer, mid, &outcome.summary, 250, started);
            Ok(reply(
                250,
                [2, 0, 0],
                format!("OK queued as {}", ids.join(" ")),
            ))
        }
        Ok(None) => {
            audit(sh, login, peer, mid, "queue-full", 452, started);
            Err(reply(452, [4, 3, 1], "the queue is full, try again later"))
        }
        Err(e) => {
            tracing::error!(error = %e, "the queue could not store a message");
            audit(sh, login, peer, mid, "queue-failed", 451, started);
            Err(reply(451, [4, 3, 0], "the message could not be queued"))
        }
    }
}

/// Keeps a submitted message in the quarantine (the cleartext as submitted, encrypted at
/// rest, durably before the `250`).
#[allow(clippy::too_many_arguments)]
async fn quarantine(
    sh: &Shared,
    login: &str,
    peer: SocketAddr,
    mid: Option<String>,
    txn: &Txn,
    msg: Vec<u8>,
    why: &str,
    started: Instant,
) -> Result<Reply, Reply> {
    let Some(store) = crate::quarantine::store() else {
        return Err(reply(451, [4, 3, 0], "the message could not be stored"));
    };
    let quota = sh.s.settings.smtp.spool_max_bytes.0 as u64;
    let meta = crate::quarantine::meta("outbound", &txn.from, &txn.to, &peer_ip(peer.ip()), why);
    let stored = tokio::task::spawn_blocking(move || {
        if store.bytes() + msg.len() as u64 > quota {
            return Ok(None);
        }
        store.put(&meta, &msg).map(Some)
    })
    .await;
    match stored {
        Ok(Ok(Some(id))) => {
            tracing::info!(%peer, %login, quarantine = %id, "submitted message quarantined");
            audit(sh, login, peer, mid, "quarantined", 250, started);
            Ok(reply(250, [2, 0, 0], format!("OK queued as {id}")))
        }
        Ok(Ok(None)) => {
            audit(sh, login, peer, mid, "quarantine-full", 452, started);
            Err(reply(452, [4, 3, 1], "the queue is full, try again later"))
        }
        _ => {
            audit(sh, login, peer, mid, "quarantine-failed", 451, started);
            Err(reply(451, [4, 3, 0], "the message could not be stored"))
        }
    }
}

/// The queue envelope of one submitted copy.
fn envelope(login: &str, client: &str, from: &str, to: Vec<String>) -> Envelope {
    let login: String = login
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect();
    Envelope {
        direction: Direction::Submission,
        from: from.to_string(),
        to,
        client: client.to_string(),
        client_name: Some(format!("submission:{login}")),
        received: time::OffsetDateTime::now_utc().unix_timestamp(),
        attempts: 0,
        held_reason: None,
        released: None,
        auth: None,
    }
}

/// Moves what an earlier version left in its own outbox (`DATA/submission/outbox/`,
/// `ID.eml` + `ID.json` with `from`, `to`, `login`) into the shared queue, then removes it.
fn import_old_outbox(data_dir: &std::path::Path, queue: &crate::smtp::Spool) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Old {
        from: String,
        to: Vec<String>,
        #[serde(default)]
        login: String,
    }
    let dir = data_dir.join("submission").join("outbox");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    for name in names {
        let json = dir.join(format!("{name}.json"));
        let eml = dir.join(format!("{name}.eml"));
        let (Ok(j), Ok(m)) = (std::fs::read(&json), std::fs::read(&eml)) else {
            continue;
        };
        let Ok(old) = serde_json::from_slice::<Old>(&j) else {
            tracing::error!(copy = %name, "an earlier outbox envelope does not parse: left in place");
            continue;
        };
        let env = envelope(&old.login, "127.0.0.1", &old.from, old.to);
        match queue.enqueue(&[(env, m.as_slice())])? {
            Some(ids) => {
                tracing::info!(copy = %name, id = %ids.join(" "), "moved from the earlier outbox into the queue");
                std::fs::remove_file(&json)?;
                let _ = std::fs::remove_file(&eml);
            }
            None => anyhow::bail!("the queue has no room for the earlier outbox's messages"),
        }
    }
    Ok(())
}

fn audit(
    sh: &Shared,
    login: &str,
    peer: SocketAddr,
    mid: Option<String>,
    outcome: &str,
    code: u16,
    started: Instant,
) {
    let client: String = login
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect();
    sh.s.audit.record(
        &client,
        &peer_ip(peer.ip()),
        "submission",
        mid,
        outcome,
        code,
        started.elapsed(),
    );
}

fn peer_ip(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}
