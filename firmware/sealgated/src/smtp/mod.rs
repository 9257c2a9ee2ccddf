//! The SMTP hand-off, for security gateways that only speak SMTP: one listener decrypts, the
//! other encrypts (and signs, by policy); results go to the configured next hop.
//!
//! A message's life: **connect** (the client's address must be in `[smtp] allow_addresses`,
//! or in `certificate_addresses` and then authenticated by a pinned client certificate over
//! STARTTLS; everyone else gets `554` and is audited) → **inbound** (`protocol.rs`: an I/O
//! driver over the protocol layer `sealgate_smtp::Session`; only CRLF ends a line, only
//! CRLF.CRLF ends DATA; DATA is streamed to the spool, never buffered whole) → **spool** (`spool.rs`: `ID.part`, renamed
//! `ID.eml`, then `ID.json`, each fsynced, and the directory fsynced, before the `250`; a
//! disk quota answers `452`) → **process** (`process.rs`: incoming `X-Sealgate-*` fields
//! removed, then the same blocking operations as the HTTPS API on a blocking thread under
//! `catch_unwind`; a decryption failure passes unchanged with a result header, an encryption
//! failure is held unless the policy allows cleartext) → **queue** (`queue.rs`: per-recipient
//! status, retries with exponential backoff up to a lifetime, DSNs by `dsn.rs`) →
//! **outbound** (`client.rs`: STARTTLS by `[smtp] next_hop_tls`, PIPELINING, SIZE; the
//! result written durably right after the next hop's answer; a temporary failure is
//! deferred, a permanent one (or expiry, or a `Received` loop) is returned to the sender).
//!
//! Loops: every result carries `X-Sealgate-Loop: BOX-ID; dir=VERB; t=TIME; mac=HMAC` (keyed
//! with a per-box random key over the box id, the listener, the time and the Message-ID); a
//! message that comes back to the listener whose marker it carries, verified, is relayed
//! without processing; any other marker is removed. The MX and submission stamp the same
//! marker and refuse a message carrying more than `[queue] max_loop_markers` valid ones
//! (`loops.rs`; there a marker never skips processing). The `Received` field the box adds to
//! everything it relays ends loops the marker does not (`[queue] max_received`).

pub(crate) mod client;
mod dsn;
pub mod inbound;
mod loops;
pub(crate) mod marker;
mod process;
mod protocol;
pub mod queue;
mod spool;
mod verify;

pub use spool::{Envelope, Spool};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sealgate_smime::cert::Certificate;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::docking;
use crate::identity::{hex, random};
use crate::keys::KeyStore;
use crate::settings::Settings;

pub(crate) use loops::Loops;
pub use process::loop_key;

/// What the hand-off needs from the daemon.
pub struct HandOff {
    /// Settings.
    pub settings: Settings,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Keys and certificates.
    pub keys: Arc<dyn KeyStore>,
    /// Configured trust anchors.
    pub anchors: Arc<Vec<Certificate>>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The box certificate for STARTTLS (asking for the pinned client certificates).
    pub tls: Arc<rustls::ServerConfig>,
    /// The crypto workers shared with the HTTPS API.
    pub workers: Arc<Semaphore>,
    /// The loop-marker key ([`loop_key`], from the vault).
    pub loop_key: aws_lc_rs::hmac::Key,
    /// The queue ([`open_queue`]), shared with the admin API.
    pub queue: Arc<Spool>,
}

/// Opens the queue in `DATA/spool` (created if missing).
pub fn open_queue(data_dir: &Path, settings: &Settings) -> anyhow::Result<Arc<Spool>> {
    Ok(Arc::new(Spool::open(
        &data_dir.join("spool"),
        settings.smtp.spool_max_bytes.0 as u64,
    )?))
}

/// Which way a listener works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Decrypt and relay.
    Decrypt,
    /// Encrypt (sign by policy) and relay.
    Encrypt,
    /// Mail from the Internet (`[inbound]`, the MX): checked, verified, relayed to the
    /// internal server (`inbound.rs`).
    Inbound,
    /// Mail employees submitted (`gateway/submission.rs`), signed and encrypted before its
    /// `250`: relayed as it is to the organisation's server (`[submission] relay`).
    Submission,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Decrypt => "smtp-decrypt",
            Direction::Encrypt => "smtp-encrypt",
            Direction::Inbound => "smtp-inbound",
            Direction::Submission => "submission",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Direction::Decrypt => "decrypt",
            Direction::Encrypt => "encrypt",
            Direction::Inbound => "inbound",
            Direction::Submission => "submit",
        }
    }

    /// The `[[auth.clients]]` scope a pinned certificate needs for this listener.
    fn scope(self) -> Option<crate::settings::Scope> {
        match self {
            Direction::Decrypt => Some(crate::settings::Scope::Decrypt),
            Direction::Encrypt => Some(crate::settings::Scope::Encrypt),
            Direction::Inbound | Direction::Submission => None,
        }
    }
}

/// The running hand-off.
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

    /// Stops accepting, lets the delivery loop finish its current message.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

struct Shared {
    h: HandOff,
    box_id: String,
    loop_key: aws_lc_rs::hmac::Key,
    /// The loop marker of the MX (`loops.rs`).
    loops: Loops,
    spool: Arc<Spool>,
    /// The hand-off's next hop (`[smtp] next_hop`).
    next_hop: Option<client::NextHop>,
    /// The internal server (`[inbound] next_hop`).
    inbound_hop: Option<client::NextHop>,
    /// The organisation's server for submitted mail (`[submission] relay`).
    submission_hop: Option<client::NextHop>,
    /// Connections per client address in the current minute (`[inbound]`).
    inbound_rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// The recipient check at the internal server (`[inbound] verify_recipients`).
    verifier: Option<verify::Verifier>,
    /// Content scanning (`scan.rs`).
    scanner: Arc<dyn crate::scan::Scanner>,
    policy: queue::Policy,
    wake: Notify,
    sessions: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// When each refused address was last logged and audited (at most once a minute each,
    /// so that a flood of refused connections cannot fill the disk).
    refused: Mutex<HashMap<IpAddr, Instant>>,
}

/// Who may connect: `[smtp] allow_addresses` and `certificate_addresses`.
#[derive(Debug, Clone, Default)]
pub struct AccessLists {
    /// Clients that may send mail.
    pub allow: Vec<crate::settings::Cidr>,
    /// Clients that must present a pinned certificate first.
    pub certificate: Vec<crate::settings::Cidr>,
}

/// The access lists the admin API set after start (they apply to the next connection);
/// `None`: the hand-off's own settings.
static ACCESS: std::sync::RwLock<Option<Arc<AccessLists>>> = std::sync::RwLock::new(None);

/// Sets the access lists of the running listeners from changed settings.
pub fn configure_access(settings: &Settings) {
    let lists = Arc::new(AccessLists {
        allow: settings.smtp.allow_addresses.clone(),
        certificate: settings.smtp.certificate_addresses.clone(),
    });
    match ACCESS.write() {
        Ok(mut g) => *g = Some(lists),
        Err(e) => *e.into_inner() = Some(lists),
    }
}

/// The access lists in force: the admin API's latest, else `own`'s.
fn access_lists(own: &Settings) -> Arc<AccessLists> {
    let set = match ACCESS.read() {
        Ok(g) => g.clone(),
        Err(e) => e.into_inner().clone(),
    };
    set.unwrap_or_else(|| {
        Arc::new(AccessLists {
            allow: own.smtp.allow_addresses.clone(),
            certificate: own.smtp.certificate_addresses.clone(),
        })
    })
}

/// Binds the configured listeners and starts the delivery loop.
pub async fn start(h: HandOff) -> anyhow::Result<Running> {
    let (stop, stop_rx) = watch::channel(false);
    let mut listening = Vec::new();
    let mut tasks = Vec::new();
    let next_hop = client::NextHop::from_settings(&h.settings)?;
    let inbound_hop = match h.settings.inbound.next_hop {
        Some(a) if h.settings.inbound.listen.is_some() => {
            // The internal server, with its own TLS settings (`[inbound] next_hop_*`).
            let i = &h.settings.inbound;
            Some(client::NextHop::new(
                a,
                &client::TlsPolicy {
                    mode: i.next_hop_tls,
                    ca: i.next_hop_ca.as_deref(),
                    fingerprint: i.next_hop_fingerprint.map(|f| f.0),
                    name: i.next_hop_name.as_deref(),
                    what: "[inbound] next_hop",
                },
            )?)
        }
        _ => None,
    };
    let submission_hop = submission_hop(&h.settings)?;
    if next_hop.is_none() && inbound_hop.is_none() && submission_hop.is_none() {
        return Ok(Running {
            listening,
            stop,
            tasks,
        });
    };
    let spool = h.queue.clone();
    let policy = queue::Policy::from_settings(&h.settings);
    let box_id = box_id(&h.data_dir)?;
    let loop_key = h.loop_key.clone();
    let scanner = crate::scan::configured(&h.settings, &h.data_dir);
    let loops = Loops::new(
        loop_key.clone(),
        box_id.clone(),
        h.settings.queue.max_loop_markers,
    );
    let verifier =
        (h.settings.inbound.verify_recipients).then(|| verify::Verifier::new(&h.settings.inbound));
    let shared = Arc::new(Shared {
        sessions: Arc::new(Semaphore::new(h.settings.smtp.max_sessions)),
        h,
        box_id,
        loop_key,
        loops,
        spool,
        next_hop,
        inbound_hop,
        submission_hop,
        inbound_rate: Mutex::new(HashMap::new()),
        verifier,
        scanner,
        policy,
        wake: Notify::new(),
        per_address: Mutex::new(HashMap::new()),
        refused: Mutex::new(HashMap::new()),
    });
    let hand_off = shared.next_hop.is_some();
    for (dir, addr) in [
        (Direction::Decrypt, shared.h.settings.smtp.decrypt_listen),
        (Direction::Encrypt, shared.h.settings.smtp.encrypt_listen),
        (Direction::Inbound, shared.h.settings.inbound.listen),
    ] {
        let Some(addr) = addr
            .filter(|_| hand_off || (dir == Direction::Inbound && shared.inbound_hop.is_some()))
        else {
            continue;
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {} to {addr}", dir.name()))?;
        listening.push((dir.name(), listener.local_addr()?));
        tasks.push(tokio::spawn(protocol::accept_loop(
            listener,
            dir,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(delivery_loop(shared, stop_rx)));
    Ok(Running {
        listening,
        stop,
        tasks,
    })
}

impl Shared {
    /// Where messages of `direction` go.
    fn hop(&self, direction: Direction) -> Option<&client::NextHop> {
        match direction {
            Direction::Inbound => self.inbound_hop.as_ref(),
            Direction::Submission => self.submission_hop.as_ref(),
            Direction::Decrypt | Direction::Encrypt => self.next_hop.as_ref(),
        }
    }
}

/// The organisation's server that submitted mail is relayed to, when the submission
/// listeners are configured: TLS as `relay_tls` says (default: STARTTLS when it offers it;
/// `[smtp] next_hop_*` are the hand-off's next hop's); with the box's own login
/// (`relay_username`), STARTTLS required and the certificate verified (`relay_fingerprint`,
/// or `auth_ca` or the system's roots for `relay_name` or the address), so the password
/// never goes out in clear or to an impostor.
fn submission_hop(s: &Settings) -> anyhow::Result<Option<client::NextHop>> {
    let sub = &s.submission;
    let Some(relay) = sub
        .relay
        .filter(|_| sub.listen.is_some() || sub.listen_tls.is_some())
    else {
        return Ok(None);
    };
    let login = sub.relay_username.is_some();
    // `relay_tls` (validated: `require` whenever the box logs in).
    let mode = sub.relay_tls.unwrap_or(if login {
        crate::settings::TlsMode::Require
    } else {
        crate::settings::TlsMode::Opportunistic
    });
    let hop = client::NextHop::new(
        relay,
        &client::TlsPolicy {
            mode,
            ca: sub
                .auth_ca
                .as_deref()
                .filter(|_| sub.relay_fingerprint.is_none()),
            fingerprint: sub.relay_fingerprint.map(|f| f.0),
            name: sub.relay_name.as_deref(),
            what: "[submission] relay",
        },
    )?;
    let (Some(username), Some(file)) = (&sub.relay_username, &sub.relay_password_file) else {
        return Ok(Some(hop));
    };
    let password = relay_password(file)?;
    Ok(Some(hop.with_login(client::RelayLogin {
        username: username.clone(),
        password,
    })))
}

/// The first line of `[submission] relay_password_file` (its content never in an error).
fn relay_password(file: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let raw = zeroize::Zeroizing::new(std::fs::read(file).map_err(|e| {
        anyhow::anyhow!("[submission] relay_password_file {}: {e}", file.display())
    })?);
    let line = raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let password = std::str::from_utf8(line).map_err(|_| {
        anyhow::anyhow!(
            "[submission] relay_password_file {}: the password is not UTF-8",
            file.display()
        )
    })?;
    anyhow::ensure!(
        !password.is_empty() && !password.contains('\0'),
        "[submission] relay_password_file {}: the first line holds no password",
        file.display()
    );
    Ok(zeroize::Zeroizing::new(password.to_string()))
}

/// A random id for this box, kept in `DATA/box-id`, used in the loop header.
fn box_id(data_dir: &Path) -> anyhow::Result<String> {
    let p = data_dir.join("box-id");
    if let Ok(s) = std::fs::read_to_string(&p)
        && !s.trim().is_empty()
    {
        return Ok(s.trim().to_string());
    }
    let id = hex(&random(8)?);
    std::fs::write(&p, &id)?;
    Ok(id)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Messages the delivery loop works on at once.
const DELIVERIES_AT_ONCE: usize = 16;

/// A message the delivery loop is working on, until its task ends (also by a panic).
struct InFlight {
    ids: Arc<Mutex<std::collections::HashSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.ids.lock() {
            s.remove(&self.id);
        }
    }
}

async fn delivery_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut last_recount = Instant::now();
    // Several messages at once (each claims its id): one slow next hop, fsync or signature
    // does not hold up the rest of the queue. The queue is looked at again whenever one of
    // them ends or a message arrives, so new mail does not wait for a whole round.
    let mut running = tokio::task::JoinSet::new();
    let inflight: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    loop {
        if last_recount.elapsed() > Duration::from_secs(60) {
            // Held messages an administrator removed give their room back.
            sh.spool.recount();
            sh.spool.expire_bounced(sh.policy.lifetime);
            last_recount = Instant::now();
        }
        let ids = sh.spool.queued();
        let present: std::collections::HashSet<&String> = ids.iter().collect();
        sh.spool.forget_due(&present);
        for id in ids {
            if *stop.borrow() || running.len() >= DELIVERIES_AT_ONCE {
                break;
            }
            if sh.spool.due(&id) > unix_now() {
                continue;
            }
            let Ok(mut set) = inflight.lock() else {
                break;
            };
            if !set.insert(id.clone()) {
                continue;
            }
            drop(set);
            let guard = InFlight {
                ids: inflight.clone(),
                id: id.clone(),
            };
            let sh = sh.clone();
            running.spawn(async move {
                let _guard = guard;
                // Still in the queue and due at once (busy, no next hop, processing
                // stopped): not before the next second, as the loop's own pace.
                if !deliver(&sh, &id).await && sh.spool.due(&id) <= unix_now() {
                    sh.spool.set_due(&id, unix_now() + 1);
                }
            });
        }
        tokio::select! {
            _ = stop.changed() => {
                // The messages being delivered finish (their results are recorded).
                while running.join_next().await.is_some() {}
                return;
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = sh.wake.notified() => {}
            _ = sh.spool.arrived.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Holds a message with a reason, audited. True (it left the queue).
fn hold(
    sh: &Shared,
    id: &str,
    env: &mut spool::Envelope,
    mid: Option<String>,
    outcome: &str,
    reason: String,
    started: Instant,
) -> bool {
    tracing::error!(id, reason = %reason, "message held in spool/held");
    sh.h.audit.record(
        &env.audit_name(),
        &env.client,
        env.direction.name(),
        mid,
        outcome,
        550,
        started.elapsed(),
    );
    env.held_reason = Some(reason);
    if let Err(e) = sh.spool.hold(id, env) {
        tracing::error!(id, error = %e, "cannot move the message to spool/held");
        return false;
    }
    true
}

/// The `Received` field the box adds to what it relays.
fn received_field(sh: &Shared, env: &spool::Envelope, id: &str, now: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let host: String =
        sh.h.settings
            .smtp
            .hostname
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
    format!(
        "Received: from [{}]\r\n\tby {host} (Sealgate) with ESMTP id {id};\r\n\t{date}\r\n",
        env.client
    )
}

/// Processes and relays one queued message. True when it left the queue.
async fn deliver(sh: &Arc<Shared>, id: &str) -> bool {
    // An administrator may be holding or deleting it right now: next round.
    let Some(_claim) = sh.spool.claim(id) else {
        return false;
    };
    let started = Instant::now();
    let (mut env, msg) = match sh.spool.load(id) {
        Ok(Some(v)) => v,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(id, error = %e, "unreadable spool envelope: held");
            let _ = sh.spool.hold_raw(id);
            return true;
        }
    };
    let mid = docking::message_id(&msg);
    let mut d = sh.spool.delivery(id, &env);
    let now = unix_now();
    if d.finished() {
        // A kill after the result was written, before the message left the queue.
        return finish(sh, id, &env, d, &msg, mid, started);
    }
    // A message the engine keeps failing on waits for an administrator, whatever its age.
    if !d.dsn && env.attempts >= sh.h.settings.smtp.max_processing_attempts {
        let reason = format!(
            "processing did not finish in {} attempts (the engine failed or the daemon stopped while processing it)",
            env.attempts
        );
        return hold(
            sh,
            id,
            &mut env,
            mid,
            "held:processing-failed",
            reason,
            started,
        );
    }
    if d.expire(now, env.received, &sh.policy) {
        tracing::warn!(id, "delivery time expired: returned to the sender");
        return finish(sh, id, &env, d, &msg, mid, started);
    }
    let received = queue::received_count(&msg);
    if received > sh.policy.max_received {
        d.fail_open(&format!(
            "5.4.6 mail loop: the message has {received} Received fields (more than [queue] max_received = {})",
            sh.policy.max_received
        ));
        return finish(sh, id, &env, d, &msg, mid, started);
    }
    let open = d.open();
    let rcpts: Vec<String> = open
        .iter()
        .map(|&i| d.recipients[i].address.clone())
        .collect();
    let (out, outcome) = if d.dsn {
        // The box's own DSN: relayed as it is.
        (msg.clone(), "dsn".to_string())
    } else if env.direction == Direction::Submission {
        // Signed and encrypted before it was accepted: relayed as it is.
        (msg.clone(), "relayed".to_string())
    } else if env.released.is_some() {
        // Released from the quarantine (or a copy for the auditor): as it came, with the
        // result field the release wrote.
        (msg.clone(), "released".to_string())
    } else {
        let Ok(worker) = sh.h.workers.clone().acquire_owned().await else {
            return false;
        };
        // Counted before processing, so that a crash of the whole daemon counts too.
        env.attempts += 1;
        if let Err(e) = sh.spool.save_envelope_cached(id, &env) {
            tracing::error!(id, error = %e, "cannot update the spool envelope");
            return false;
        }
        let sh2 = sh.clone();
        let to = rcpts.clone();
        let from = env.from.clone();
        let direction = env.direction;
        // Key uses are audited under the hand-off, the client's pinned name if any, and the
        // address that submitted the message.
        let actor = crate::keys::actor(
            direction.name(),
            env.client_name.as_deref().unwrap_or_default(),
            &env.client,
        );
        let client = env.client.clone();
        let auth = env.auth.clone();
        let processed = tokio::task::spawn_blocking(move || {
            let _w = worker;
            let now = unix_now();
            process::guarded(|| match direction {
                Direction::Inbound => {
                    inbound::process(&sh2, &actor, &client, &from, &to, msg, now, auth.as_ref())
                }
                _ => process::process(&sh2, direction, &actor, &from, &to, msg, now),
            })
        })
        .await;
        let processed = match processed {
            Ok(Ok(p)) => p,
            Ok(Err(panic)) => {
                tracing::error!(id, attempt = env.attempts, panic = %panic, "processing failed: will be tried again, then held");
                return false;
            }
            Err(e) => {
                tracing::error!(id, error = %e, "processing task failed");
                return false;
            }
        };
        env.attempts = 0;
        if let Err(e) = sh.spool.save_envelope_cached(id, &env) {
            tracing::warn!(id, error = %e, "cannot update the spool envelope");
        }
        match processed {
            process::Processed::Relay { out, outcome } => (out, outcome),
            process::Processed::Hold { reason, outcome } => {
                // Encryption failures are held for an administrator, never returned.
                return hold(sh, id, &mut env, mid, &outcome, reason, started);
            }
            process::Processed::Quarantined { qid } => {
                // Durably in the quarantine: the queue's copy goes.
                tracing::info!(id, quarantine = %qid, "message quarantined");
                sh.h.audit.record(
                    &env.audit_name(),
                    &env.client,
                    env.direction.name(),
                    mid,
                    "quarantined",
                    250,
                    started.elapsed(),
                );
                sh.spool.remove(id);
                return true;
            }
        }
    };
    let mut relayed = received_field(sh, &env, id, now).into_bytes();
    relayed.extend_from_slice(&out);
    let Some(hop) = sh.hop(env.direction) else {
        tracing::warn!(
            id,
            listener = env.direction.name(),
            "no next hop configured for this message: it waits"
        );
        return false;
    };
    let fates = client::send(
        hop,
        &sh.h.settings.smtp.hostname,
        &env.from,
        &rcpts,
        &relayed,
    )
    .await;
    d.record(&open, &fates, unix_now(), &sh.policy);
    // Before anything else: what the next hop took is never sent again. Everything taken:
    // the envelope's removal is the record, made at once (a kill -9 from here on finds the
    // message gone: the page cache keeps the unlink), then made durable against a power
    // loss off the executor (the directory's fsync, grouped with the other messages'). The
    // window in which a kill sends a message twice is the next hop's answer to this
    // unlink, not to an fsync.
    let all_delivered = d
        .recipients
        .iter()
        .all(|r| r.status == queue::RcptStatus::Delivered);
    if all_delivered && let Err(e) = sh.spool.unlink_envelope(id) {
        tracing::error!(id, error = %e, "cannot remove the delivered message's envelope");
    }
    let (spool, id2, d2) = (sh.spool.clone(), id.to_string(), d.clone());
    let saved = tokio::task::spawn_blocking(move || {
        if all_delivered {
            spool.remove_delivered(&id2)
        } else {
            spool.save_delivery(&id2, &d2)
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    if let Err(e) = saved {
        tracing::error!(id, error = %e, "cannot record the delivery result: recipients the next hop took may get the message again");
    }
    sh.spool.set_due(id, d.next_attempt);
    let delivered = fates
        .iter()
        .filter(|f| matches!(f, queue::Fate::Delivered(_)))
        .count();
    if delivered > 0 {
        sh.h.audit.record(
            &env.audit_name(),
            &env.client,
            env.direction.name(),
            mid.clone(),
            &outcome,
            250,
            started.elapsed(),
        );
    }
    if !d.finished() {
        tracing::warn!(
            id,
            error = d.last_error.as_deref().unwrap_or_default(),
            next_attempt = d.next_attempt,
            "deferred"
        );
        if !d.to_notify().is_empty() {
            notify(sh, id, &env, &mut d, &msg_header(sh, id));
        }
        return false;
    }
    finish(sh, id, &env, d, &[], mid, started)
}

/// The original message again (for a DSN's header), read from the queue.
fn msg_header(sh: &Shared, id: &str) -> Vec<u8> {
    sh.spool
        .load(id)
        .ok()
        .flatten()
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// Sends the sender a DSN for the failed recipients not yet reported (never to `<>`, never
/// for a DSN), then records that they were reported.
fn notify(sh: &Shared, id: &str, env: &spool::Envelope, d: &mut queue::Delivery, original: &[u8]) {
    let failed = d.to_notify();
    if failed.is_empty() {
        return;
    }
    if d.may_notify(&env.from) {
        let round = d.dsn_rounds + 1;
        let dsn_id = format!("{id}-dsn{round}");
        let list: Vec<&queue::Recipient> = failed.iter().map(|&i| &d.recipients[i]).collect();
        let body = dsn::build(
            &sh.h.settings.smtp.hostname,
            &env.from,
            id,
            env.received,
            &list,
            original,
            unix_now(),
        );
        let dsn_env = spool::Envelope {
            direction: env.direction,
            from: String::new(),
            to: vec![env.from.clone()],
            client: "127.0.0.1".into(),
            client_name: Some("dsn".into()),
            received: unix_now(),
            attempts: 0,
            held_reason: None,
            released: None,
            auth: None,
        };
        match sh.spool.enqueue_dsn(&dsn_id, &dsn_env, &body) {
            Ok(_) => {
                tracing::info!(id, dsn = %dsn_id, "delivery status notification queued for the sender");
                d.dsn_rounds = round;
            }
            Err(e) => {
                tracing::error!(id, error = %e, "cannot queue the delivery status notification: tried again later");
                return;
            }
        }
    } else {
        tracing::warn!(
            id,
            "delivery failed; no notification (null sender or a notification itself)"
        );
    }
    for i in failed {
        d.recipients[i].notified = true;
    }
    if let Err(e) = sh.spool.save_delivery(id, d) {
        tracing::error!(id, error = %e, "cannot record the notification");
    }
    sh.wake.notify_one();
}

/// A message whose recipients all have a final status: the sender told of failures, then
/// it leaves the queue (to `bounced/` if anything failed). True.
fn finish(
    sh: &Shared,
    id: &str,
    env: &spool::Envelope,
    mut d: queue::Delivery,
    original: &[u8],
    mid: Option<String>,
    started: Instant,
) -> bool {
    let any_failed = d
        .recipients
        .iter()
        .any(|r| r.status == queue::RcptStatus::Failed);
    if !d.to_notify().is_empty() {
        let original = if original.is_empty() {
            msg_header(sh, id)
        } else {
            original.to_vec()
        };
        notify(sh, id, env, &mut d, &original);
        if !d.to_notify().is_empty() {
            // The DSN could not be queued: keep the message, try again later.
            return false;
        }
    }
    if any_failed {
        let reason = d.last_error.clone().unwrap_or_default();
        tracing::warn!(id, reason = %reason, "delivery failed: bounced");
        sh.h.audit.record(
            &env.audit_name(),
            &env.client,
            env.direction.name(),
            mid,
            "bounced",
            550,
            started.elapsed(),
        );
        if let Err(e) = sh.spool.bounce(id, env, &d) {
            tracing::error!(id, error = %e, "cannot move the message to spool/bounced");
            sh.spool.remove(id);
        }
    } else {
        sh.spool.remove(id);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TlsMode;

    fn settings(toml: &str) -> Settings {
        Settings::parse(toml).expect("settings")
    }

    #[test]
    fn each_next_hop_has_its_own_tls_setting() {
        let base = "[submission]\nlisten = \"127.0.0.1:2587\"\nauth = \"smtp://127.0.0.1:3587\"\nrelay = \"127.0.0.1:3525\"\n";
        let hop = |extra: &str| {
            submission_hop(&settings(&format!("{base}{extra}")))
                .expect("hop")
                .expect("some")
        };
        assert_eq!(hop("").mode, TlsMode::Opportunistic);
        assert_eq!(hop("relay_tls = \"none\"\n").mode, TlsMode::None);
        let pin = "ab".repeat(32);
        let pinned = hop(&format!(
            "relay_tls = \"require\"\nrelay_fingerprint = \"{pin}\"\n"
        ));
        assert_eq!(pinned.mode, TlsMode::Require);
        // The box's password never goes to an unverified server, nor a pin without require.
        for bad in [
            "relay_username = \"box\"\nrelay_password_file = \"/x\"\nrelay_tls = \"opportunistic\"\n".to_string(),
            format!("relay_fingerprint = \"{pin}\"\n"),
        ] {
            let e = Settings::parse(&format!("{base}{bad}")).err().map(|e| format!("{e:#}"));
            assert!(e.as_deref().is_some_and(|e| e.contains("relay_tls")), "{bad}: {e:?}");
        }
        let s = settings(&format!(
            "[inbound]\nlisten = \"127.0.0.1:2525\"\ndomains = [\"example.org\"]\nnext_hop = \"127.0.0.1:3526\"\nnext_hop_tls = \"require\"\nnext_hop_name = \"mx.example.org\"\nnext_hop_fingerprint = \"{pin}\"\n"
        ));
        assert_eq!(s.inbound.next_hop_tls, TlsMode::Require);
        assert_eq!(s.inbound.next_hop_name.as_deref(), Some("mx.example.org"));
        assert!(
            Settings::parse(&format!(
                "[inbound]\nnext_hop_ca = \"/ca.pem\"\nnext_hop_fingerprint = \"{pin}\"\n"
            ))
            .is_err()
        );
    }
}
