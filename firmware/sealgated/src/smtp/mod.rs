//! The SMTP hand-off, for security gateways that only speak SMTP: one listener decrypts, the
//! other encrypts (and signs, by policy); results go to the configured next hop.
//!
//! A message's life: **connect** (the client's address must be in `[smtp] allow_addresses`,
//! or in `certificate_addresses` and then authenticated by a pinned client certificate over
//! STARTTLS; everyone else gets `554` and is audited) → **inbound** (`protocol.rs`: a small
//! SMTP server state machine; only CRLF ends a line, only CRLF.CRLF ends DATA; DATA is
//! streamed to the spool, never buffered whole) → **spool** (`spool.rs`: `ID.part`, renamed
//! `ID.eml`, then `ID.json`, each fsynced, and the directory fsynced, before the `250`; a
//! disk quota answers `452`) → **process** (`process.rs`: incoming `X-Sealgate-*` fields
//! removed, then the same blocking operations as the HTTPS API on a blocking thread under
//! `catch_unwind`; a decryption failure passes unchanged with a result header, an encryption
//! failure is held unless the policy allows cleartext) → **outbound** (`relay.rs`: plain SMTP
//! to the next hop; deleted from the spool only after the next hop's `250`; a temporary
//! failure is retried every `retry_secs`; a permanent one moves the message, unchanged, to
//! `DATA/spool/held/` with the reason in its envelope).
//!
//! Loops: every result carries `X-Sealgate-Loop: BOX-ID; dir=VERB; t=TIME; mac=HMAC` (keyed
//! with a per-box random key over the box id, the listener, the time and the Message-ID); a
//! message that comes back to the listener whose marker it carries, verified, is relayed
//! without processing; any other marker is removed.

mod process;
mod protocol;
mod relay;
mod spool;

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
}

/// Which way a listener works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Decrypt and relay.
    Decrypt,
    /// Encrypt (sign by policy) and relay.
    Encrypt,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Decrypt => "smtp-decrypt",
            Direction::Encrypt => "smtp-encrypt",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Direction::Decrypt => "decrypt",
            Direction::Encrypt => "encrypt",
        }
    }

    /// The `[[auth.clients]]` scope a pinned certificate needs for this listener.
    fn scope(self) -> crate::settings::Scope {
        match self {
            Direction::Decrypt => crate::settings::Scope::Decrypt,
            Direction::Encrypt => crate::settings::Scope::Encrypt,
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
    spool: spool::Spool,
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
    let Some(_) = h.settings.smtp.next_hop else {
        return Ok(Running {
            listening,
            stop,
            tasks,
        });
    };
    let spool = spool::Spool::open(
        &h.data_dir.join("spool"),
        h.settings.smtp.spool_max_bytes.0 as u64,
    )?;
    let box_id = box_id(&h.data_dir)?;
    let loop_key = h.loop_key.clone();
    let shared = Arc::new(Shared {
        sessions: Arc::new(Semaphore::new(h.settings.smtp.max_sessions)),
        h,
        box_id,
        loop_key,
        spool,
        wake: Notify::new(),
        per_address: Mutex::new(HashMap::new()),
        refused: Mutex::new(HashMap::new()),
    });
    for (dir, addr) in [
        (Direction::Decrypt, shared.h.settings.smtp.decrypt_listen),
        (Direction::Encrypt, shared.h.settings.smtp.encrypt_listen),
    ] {
        let Some(addr) = addr else { continue };
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

async fn delivery_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let retry = sh.h.settings.smtp.retry_secs.duration();
    let mut last_attempt: HashMap<String, Instant> = Default::default();
    let mut last_recount = Instant::now();
    loop {
        if last_recount.elapsed() > Duration::from_secs(60) {
            // Held messages an administrator removed give their room back.
            sh.spool.recount();
            last_recount = Instant::now();
        }
        let ids = sh.spool.queued();
        let present: std::collections::HashSet<&String> = ids.iter().collect();
        last_attempt.retain(|id, _| present.contains(id));
        for id in ids {
            if *stop.borrow() {
                return;
            }
            if last_attempt.get(&id).is_some_and(|t| t.elapsed() < retry) {
                continue;
            }
            last_attempt.insert(id.clone(), Instant::now());
            if deliver(&sh, &id).await {
                last_attempt.remove(&id);
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = sh.wake.notified() => {}
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

/// Processes and relays one spooled message. True when it left the queue.
async fn deliver(sh: &Arc<Shared>, id: &str) -> bool {
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
    let max = sh.h.settings.smtp.max_processing_attempts;
    if env.attempts >= max {
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
    let Ok(worker) = sh.h.workers.clone().acquire_owned().await else {
        return false;
    };
    // Counted before processing, so that a crash of the whole daemon counts too.
    env.attempts += 1;
    if let Err(e) = sh.spool.save_envelope(id, &env) {
        tracing::error!(id, error = %e, "cannot update the spool envelope");
        return false;
    }
    let sh2 = sh.clone();
    let to = env.to.clone();
    let from = env.from.clone();
    let direction = env.direction;
    // Key uses are audited under the hand-off, the client's pinned name if any, and the
    // address that submitted the message.
    let actor = crate::keys::actor(
        match direction {
            Direction::Decrypt => "smtp-decrypt",
            Direction::Encrypt => "smtp-encrypt",
        },
        env.client_name.as_deref().unwrap_or_default(),
        &env.client,
    );
    let processed = tokio::task::spawn_blocking(move || {
        let _w = worker;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        process::guarded(|| process::process(&sh2, direction, &actor, &from, &to, msg, now))
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
    if let Err(e) = sh.spool.save_envelope(id, &env) {
        tracing::warn!(id, error = %e, "cannot update the spool envelope");
    }
    let (out, outcome) = match processed {
        process::Processed::Relay { out, outcome } => (out, outcome),
        process::Processed::Hold { reason, outcome } => {
            return hold(sh, id, &mut env, mid, &outcome, reason, started);
        }
    };
    let Some(next_hop) = sh.h.settings.smtp.next_hop else {
        return false;
    };
    let result = relay::relay(
        next_hop,
        &sh.h.settings.smtp.hostname,
        &env.from,
        &env.to,
        &out,
    )
    .await;
    let op = env.direction.name();
    match result {
        Ok(()) => {
            sh.spool.remove(id);
            sh.h.audit.record(
                &env.audit_name(),
                &env.client,
                op,
                mid,
                &outcome,
                250,
                started.elapsed(),
            );
            true
        }
        Err(relay::RelayError::Permanent(e)) => {
            let reason = format!("the next hop refused the message: {e}");
            hold(sh, id, &mut env, mid, "held", reason, started)
        }
        Err(relay::RelayError::Temporary(e)) => {
            tracing::warn!(id, error = %e, "next hop unavailable: will retry");
            false
        }
    }
}
