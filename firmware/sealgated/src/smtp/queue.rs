//! The durable queue every SMTP role shares, on top of the spool's files.
//!
//! A message in `DATA/spool/` is `ID.eml` (the message), `ID.json` (its envelope, written
//! once when it is accepted: its presence is what makes the message exist) and, once it has
//! been tried, `ID.state` (this module's [`Delivery`]: the state, each recipient's status,
//! the attempts, the next attempt, the last error). `held/` keeps messages that wait for an
//! administrator (same files; the envelope has `held_reason`); `bounced/` keeps the envelope
//! and state of messages whose delivery failed for good (the body is removed: a DSN carries
//! its header to the sender), for one lifetime.
//!
//! States: **queued** (never tried, or due now) → **deferred** (a temporary failure; retried
//! after `retry_min_secs`, doubling up to `retry_max_secs`) → delivered (gone) / **bounced**
//! (every recipient has a final status and at least one failed) / **held**.
//!
//! Crash safety: every state file is written to `NAME.tmp`, fsynced, renamed and the
//! directory fsynced. The delivery result is written that way right after the next hop's
//! answer to the end of DATA, before anything else happens (DSN, removal, audit), so a kill
//! at any moment either finds the recipients marked delivered (never sent again) or not (sent
//! again: the only duplicates are those of a kill between the next hop's `250` and this
//! write). A DSN's id is derived from the message's id and its round, so a DSN written
//! before a kill is not written twice after it.
//!
//! Attackers: whoever writes messages (their envelope and header decide DSNs: never to `<>`,
//! never for a DSN, so two boxes cannot bounce a message between them forever; `Received`
//! fields beyond `max_received` stop a loop); an administrator's ids (checked to be ids, so no
//! path leaves the spool).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::spool::{Envelope, Spool};

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its first attempt, or due now.
    Queued,
    /// A temporary failure; tried again at `next_attempt`.
    Deferred,
    /// Kept for an administrator; never sent until released.
    Held,
    /// Failed for good (for at least one recipient); the sender was told.
    Bounced,
}

impl State {
    /// The name used in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Deferred => "deferred",
            State::Held => "held",
            State::Bounced => "bounced",
        }
    }

    /// Parses [`State::name`].
    pub fn parse(s: &str) -> Option<State> {
        [State::Queued, State::Deferred, State::Held, State::Bounced]
            .into_iter()
            .find(|st| st.name() == s)
    }
}

/// One recipient's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    /// Not tried yet.
    Pending,
    /// Refused for now.
    Deferred,
    /// Taken by the next hop.
    Delivered,
    /// Refused for good (or expired, or looping).
    Failed,
}

/// A recipient and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// Its status.
    pub status: RcptStatus,
    /// The next hop's last reply for it (or why it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// A failure the sender has been told about (or cannot be: null sender, a DSN).
    #[serde(default)]
    pub notified: bool,
}

/// The delivery record of a message (`ID.state`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// The state.
    pub state: State,
    /// Every recipient of the envelope.
    pub recipients: Vec<Recipient>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before (Unix time).
    #[serde(default)]
    pub next_attempt: i64,
    /// The last attempt (Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<i64>,
    /// Why the last attempt did not deliver everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// This message is a DSN the box made: it is never returned to anyone.
    #[serde(default)]
    pub dsn: bool,
    /// DSNs sent for this message so far.
    #[serde(default)]
    pub dsn_rounds: u32,
}

/// What an attempt did for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The next hop took it (its reply).
    Delivered(String),
    /// Refused for now (4xx, a network or TLS failure).
    Temporary(String),
    /// Refused for good (5xx, too large).
    Permanent(String),
}

/// Retry and lifetime settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The first retry delay.
    pub retry_min: u64,
    /// The longest retry delay.
    pub retry_max: u64,
    /// How long a message may wait.
    pub lifetime: u64,
    /// `Received` fields beyond which a message is looping.
    pub max_received: usize,
}

impl Policy {
    /// From the settings.
    pub fn from_settings(s: &crate::settings::Settings) -> Policy {
        Policy {
            retry_min: s.queue.retry_min_secs.unwrap_or(s.smtp.retry_secs).0,
            retry_max: s.queue.retry_max_secs.0,
            lifetime: s.queue.lifetime_secs,
            max_received: s.queue.max_received,
        }
    }
}

/// Seconds to wait after the `attempts`-th failed attempt: `min`, doubling, capped at `max`.
pub fn backoff(attempts: u32, min: u64, max: u64) -> u64 {
    let shift = attempts.saturating_sub(1).min(32);
    min.saturating_mul(1u64 << shift).min(max.max(min))
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect()
}

impl Delivery {
    /// A new record: every recipient pending.
    pub fn fresh(to: &[String]) -> Delivery {
        Delivery {
            state: State::Queued,
            recipients: to
                .iter()
                .map(|a| Recipient {
                    address: a.clone(),
                    status: RcptStatus::Pending,
                    reply: None,
                    notified: false,
                })
                .collect(),
            attempts: 0,
            next_attempt: 0,
            last_attempt: None,
            last_error: None,
            dsn: false,
            dsn_rounds: 0,
        }
    }

    /// Indexes of the recipients still to be tried.
    pub fn open(&self) -> Vec<usize> {
        (0..self.recipients.len())
            .filter(|&i| {
                matches!(
                    self.recipients[i].status,
                    RcptStatus::Pending | RcptStatus::Deferred
                )
            })
            .collect()
    }

    /// Every recipient has a final status.
    pub fn finished(&self) -> bool {
        self.open().is_empty()
    }

    /// Records an attempt's result for the recipients `tried` (in that order).
    pub fn record(&mut self, tried: &[usize], fates: &[Fate], now: i64, policy: &Policy) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_attempt = Some(now);
        let mut error = None;
        for (&i, fate) in tried.iter().zip(fates) {
            let Some(r) = self.recipients.get_mut(i) else {
                continue;
            };
            let (status, reply) = match fate {
                Fate::Delivered(t) => (RcptStatus::Delivered, t),
                Fate::Temporary(t) => (RcptStatus::Deferred, t),
                Fate::Permanent(t) => (RcptStatus::Failed, t),
            };
            r.status = status;
            r.reply = Some(one_line(reply));
            if status != RcptStatus::Delivered && error.is_none() {
                error = Some(format!("{}: {}", r.address, one_line(reply)));
            }
        }
        if error.is_some() {
            self.last_error = error;
        }
        if self.finished() {
            self.state = State::Queued;
        } else {
            self.state = State::Deferred;
            let wait = backoff(self.attempts, policy.retry_min, policy.retry_max);
            self.next_attempt = now.saturating_add(wait as i64);
        }
    }

    /// Fails every open recipient with `reason` (expiry, a loop).
    pub fn fail_open(&mut self, reason: &str) {
        for i in self.open() {
            self.recipients[i].status = RcptStatus::Failed;
            self.recipients[i].reply = Some(one_line(reason));
        }
        self.last_error = Some(one_line(reason));
    }

    /// Whether the message is past its lifetime with recipients still open; if so they fail
    /// (`4.4.7`, with the last error).
    pub fn expire(&mut self, now: i64, received: i64, policy: &Policy) -> bool {
        if self.finished() || now.saturating_sub(received) < policy.lifetime as i64 {
            return false;
        }
        let reason = format!(
            "4.4.7 delivery time expired after {} attempts over {} hours; last error: {}",
            self.attempts,
            policy.lifetime / 3600,
            self.last_error.as_deref().unwrap_or("none")
        );
        self.fail_open(&reason);
        true
    }

    /// Failed recipients the sender has not been told about.
    pub fn to_notify(&self) -> Vec<usize> {
        (0..self.recipients.len())
            .filter(|&i| {
                self.recipients[i].status == RcptStatus::Failed && !self.recipients[i].notified
            })
            .collect()
    }

    /// Whether a DSN goes to `sender` for this message at all: never to `<>` (a DSN or
    /// another automatic message), never for a DSN the box made.
    pub fn may_notify(&self, sender: &str) -> bool {
        !self.dsn && !sender.trim().is_empty()
    }
}

/// Counts the `Received` fields of the message's header.
pub fn received_count(msg: &[u8]) -> usize {
    sealgate_smime::mime::Entity::parse(msg)
        .headers_named("Received")
        .count()
}

/// Whether `id` is a queue id (so that it names no other file): `[0-9a-z-]`, at most 80.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// Writes `data` to `path` durably: `path.tmp`, fsync, rename, fsync of the directory.
pub(super) fn write_durable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What the admin API and `sealctl queue` show of a message (never its body).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The queue id.
    pub id: String,
    /// Its state.
    pub state: State,
    /// The listener that took it.
    pub direction: super::Direction,
    /// The envelope sender (`""` for `<>`).
    pub from: String,
    /// The recipients with their status.
    pub recipients: Vec<Recipient>,
    /// The client that sent it.
    pub client: String,
    /// When it was accepted (Unix time).
    pub received: i64,
    /// Its size in bytes (0 once bounced: the body is gone).
    pub size: u64,
    /// Delivery attempts.
    pub attempts: u32,
    /// The next attempt (Unix time), for a deferred message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<i64>,
    /// The last attempt (Unix time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<i64>,
    /// Why it is not delivered yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why it is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
    /// A DSN the box made.
    pub dsn: bool,
}

/// Why a queue operation did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// No such message (or not in a state the operation applies to).
    NotFound,
    /// The operation does not apply to the message's state.
    Conflict(String),
    /// The message is being delivered right now.
    Busy,
    /// The disk.
    Io(String),
}

impl From<std::io::Error> for QueueError {
    fn from(e: std::io::Error) -> Self {
        QueueError::Io(e.to_string())
    }
}

impl From<serde_json::Error> for QueueError {
    fn from(e: serde_json::Error) -> Self {
        QueueError::Io(e.to_string())
    }
}

/// Marks a message as being worked on until dropped.
pub(super) struct Claim<'a> {
    spool: &'a Spool,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.spool.busy.lock() {
            b.remove(&self.id);
        }
    }
}

impl Spool {
    fn sub(&self, state: State) -> PathBuf {
        match state {
            State::Held => self.dir.join("held"),
            State::Bounced => self.dir.join("bounced"),
            State::Queued | State::Deferred => self.dir.clone(),
        }
    }

    /// Claims `id` for the caller (the delivery loop or an administrator); `None` if
    /// someone has it.
    pub(super) fn claim(&self, id: &str) -> Option<Claim<'_>> {
        let mut b = self.busy.lock().ok()?;
        if !b.insert(id.to_string()) {
            return None;
        }
        Some(Claim {
            spool: self,
            id: id.to_string(),
        })
    }

    /// The delivery record of a queued message (a fresh one if it was never tried; one that
    /// does not parse is started again: at worst a recipient is tried twice).
    pub(super) fn delivery(&self, id: &str, env: &Envelope) -> Delivery {
        self.delivery_in(&self.dir, id, env)
    }

    fn delivery_in(&self, dir: &Path, id: &str, env: &Envelope) -> Delivery {
        match std::fs::read(dir.join(format!("{id}.state"))) {
            Ok(b) => match serde_json::from_slice::<Delivery>(&b) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(id, error = %e, "unreadable delivery state: starting again");
                    Delivery::fresh(&env.to)
                }
            },
            Err(_) => Delivery::fresh(&env.to),
        }
    }

    /// Writes the delivery record durably.
    pub(super) fn save_delivery(&self, id: &str, d: &Delivery) -> std::io::Result<()> {
        let dir = self.sub(d.state);
        let data = serde_json::to_vec_pretty(d).map_err(std::io::Error::other)?;
        if dir != self.dir {
            return write_durable(&dir.join(format!("{id}.state")), &data);
        }
        // In the queue's own directory: its fsync grouped with the other messages'.
        let path = dir.join(format!("{id}.state"));
        let tmp = dir.join(format!("{id}.state.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        self.sync_dir()
    }

    /// When a queued message is due (Unix time; 0 if never tried).
    pub(super) fn due(&self, id: &str) -> i64 {
        if let Some(t) = self.due.lock().ok().and_then(|d| d.get(id).copied()) {
            return t;
        }
        let t = std::fs::read(self.dir.join(format!("{id}.state")))
            .ok()
            .and_then(|b| serde_json::from_slice::<Delivery>(&b).ok())
            .map_or(0, |d| d.next_attempt);
        self.set_due(id, t);
        t
    }

    pub(super) fn set_due(&self, id: &str, t: i64) {
        if let Ok(mut d) = self.due.lock() {
            d.insert(id.to_string(), t);
        }
    }

    /// Forgets the due times of ids no longer queued.
    pub(super) fn forget_due(&self, present: &HashSet<&String>) {
        if let Ok(mut d) = self.due.lock() {
            d.retain(|id, _| present.contains(id));
        }
    }

    /// Puts a DSN (`msg`, to `to`, from `<>`) into the queue under `id` unless it is there
    /// already (a DSN written before a crash is not written twice).
    pub(super) fn enqueue_dsn(
        &self,
        id: &str,
        env: &Envelope,
        msg: &[u8],
    ) -> std::io::Result<bool> {
        let json = self.dir.join(format!("{id}.json"));
        if json.exists() || self.dir.join("held").join(format!("{id}.json")).exists() {
            return Ok(false);
        }
        let mut d = Delivery::fresh(&env.to);
        d.dsn = true;
        let eml = self.dir.join(format!("{id}.eml"));
        let mut tmp = std::fs::File::create(self.dir.join(format!("{id}.eml.tmp")))?;
        tmp.write_all(msg)?;
        tmp.sync_all()?;
        drop(tmp);
        std::fs::rename(self.dir.join(format!("{id}.eml.tmp")), &eml)?;
        self.save_delivery(id, &d)?;
        // The envelope last: its presence makes the message exist.
        write_durable(
            &json,
            &serde_json::to_vec(env).map_err(std::io::Error::other)?,
        )?;
        self.on_disk.fetch_add(msg.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Moves a finished message that failed for at least one recipient to `bounced/`
    /// (envelope and state; the body is removed).
    pub(super) fn bounce(&self, id: &str, env: &Envelope, d: &Delivery) -> std::io::Result<()> {
        let b = self.dir.join("bounced");
        std::fs::create_dir_all(&b)?;
        let mut d = d.clone();
        d.state = State::Bounced;
        self.save_delivery(id, &d)?;
        write_durable(
            &b.join(format!("{id}.json")),
            &serde_json::to_vec_pretty(env).map_err(std::io::Error::other)?,
        )?;
        self.remove(id);
        sync_dir(&self.dir)
    }

    /// Removes bounced records older than `max_age` seconds.
    pub(super) fn expire_bounced(&self, max_age: u64) {
        let dir = self.dir.join("bounced");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age.as_secs() > max_age);
            if old {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    fn ids_in(dir: &Path) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .filter(|n| valid_id(n))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn entry(&self, dir: &Path, id: &str, held: bool, bounced: bool) -> Option<Entry> {
        let env: Envelope =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).ok()?).ok()?;
        let d = self.delivery_in(dir, id, &env);
        let state = if held {
            State::Held
        } else if bounced {
            State::Bounced
        } else if d.state == State::Deferred {
            State::Deferred
        } else {
            State::Queued
        };
        let size = std::fs::metadata(dir.join(format!("{id}.eml")))
            .map(|m| m.len())
            .unwrap_or(0);
        Some(Entry {
            id: id.to_string(),
            state,
            direction: env.direction,
            from: env.from,
            recipients: d.recipients,
            client: env.client,
            received: env.received,
            size,
            attempts: d.attempts,
            next_attempt: (state == State::Deferred).then_some(d.next_attempt),
            last_attempt: d.last_attempt,
            last_error: d.last_error,
            held_reason: env.held_reason,
            dsn: d.dsn,
        })
    }

    /// Every message (in `state` if given), oldest first.
    pub fn list(&self, state: Option<State>) -> Vec<Entry> {
        let mut out = Vec::new();
        for (dir, held, bounced) in [
            (self.dir.clone(), false, false),
            (self.dir.join("held"), true, false),
            (self.dir.join("bounced"), false, true),
        ] {
            for id in Self::ids_in(&dir) {
                if let Some(e) = self.entry(&dir, &id, held, bounced)
                    && state.is_none_or(|s| s == e.state)
                {
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| (a.received, &a.id).cmp(&(b.received, &b.id)));
        out
    }

    /// One message.
    pub fn show(&self, id: &str) -> Option<Entry> {
        if !valid_id(id) {
            return None;
        }
        for (dir, held, bounced) in [
            (self.dir.clone(), false, false),
            (self.dir.join("held"), true, false),
            (self.dir.join("bounced"), false, true),
        ] {
            if dir.join(format!("{id}.json")).exists() {
                return self.entry(&dir, id, held, bounced);
            }
        }
        None
    }

    fn load_env(path: &Path) -> Result<Envelope, QueueError> {
        serde_json::from_slice(&std::fs::read(path)?).map_err(|e| {
            QueueError::Conflict(format!(
                "the message's envelope cannot be read ({e}): delete it"
            ))
        })
    }

    /// The directory holding `id` (queued, held or bounced), whether or not its files parse.
    fn dir_of(&self, id: &str) -> Option<PathBuf> {
        if !valid_id(id) {
            return None;
        }
        [
            self.dir.clone(),
            self.dir.join("held"),
            self.dir.join("bounced"),
        ]
        .into_iter()
        .find(|d| d.join(format!("{id}.json")).exists())
    }

    /// Makes a queued or deferred message due now.
    pub fn retry_now(&self, id: &str) -> Result<Entry, QueueError> {
        let e = self.show(id).ok_or(QueueError::NotFound)?;
        if !matches!(e.state, State::Queued | State::Deferred) {
            return Err(QueueError::Conflict(format!(
                "the message is {}: only queued or deferred messages are retried (release a held one)",
                e.state.name()
            )));
        }
        let _c = self.claim(id).ok_or(QueueError::Busy)?;
        let env = Self::load_env(&self.dir.join(format!("{id}.json")))?;
        let mut d = self.delivery(id, &env);
        d.next_attempt = 0;
        self.save_delivery(id, &d)?;
        self.set_due(id, 0);
        self.show(id).ok_or(QueueError::NotFound)
    }

    /// Holds a queued or deferred message (`reason` in its envelope).
    pub fn hold_by_admin(&self, id: &str, reason: &str) -> Result<Entry, QueueError> {
        let e = self.show(id).ok_or(QueueError::NotFound)?;
        if !matches!(e.state, State::Queued | State::Deferred) {
            return Err(QueueError::Conflict(format!(
                "the message is {}: only queued or deferred messages are held",
                e.state.name()
            )));
        }
        let _c = self.claim(id).ok_or(QueueError::Busy)?;
        let mut env = Self::load_env(&self.dir.join(format!("{id}.json")))?;
        env.held_reason = Some(reason.to_string());
        self.hold(id, &env)
            .map_err(|e| QueueError::Io(e.to_string()))?;
        self.show(id).ok_or(QueueError::NotFound)
    }

    /// Puts a held message back in the queue, due now (its processing attempts reset).
    pub fn release(&self, id: &str) -> Result<Entry, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::NotFound);
        }
        let held = self.dir.join("held");
        if !held.join(format!("{id}.json")).exists() {
            return match self.show(id) {
                Some(e) => Err(QueueError::Conflict(format!(
                    "the message is {}: only held messages are released",
                    e.state.name()
                ))),
                None => Err(QueueError::NotFound),
            };
        }
        let _c = self.claim(id).ok_or(QueueError::Busy)?;
        let mut env = Self::load_env(&held.join(format!("{id}.json")))?;
        env.held_reason = None;
        env.attempts = 0;
        let mut d = self.delivery_in(&held, id, &env);
        d.state = State::Queued;
        d.next_attempt = 0;
        if !held.join(format!("{id}.eml")).exists() {
            return Err(QueueError::Conflict(
                "the held message has no body file: delete it".into(),
            ));
        }
        // The body and state first, the envelope last (it makes the message exist).
        std::fs::rename(
            held.join(format!("{id}.eml")),
            self.dir.join(format!("{id}.eml")),
        )?;
        let _ = std::fs::remove_file(held.join(format!("{id}.state")));
        self.save_delivery(id, &d)?;
        write_durable(
            &self.dir.join(format!("{id}.json")),
            &serde_json::to_vec(&env)?,
        )?;
        std::fs::remove_file(held.join(format!("{id}.json")))?;
        sync_dir(&held)?;
        self.set_due(id, 0);
        self.show(id).ok_or(QueueError::NotFound)
    }

    /// Deletes a message in any state (no DSN), also one whose files do not parse.
    pub fn delete(&self, id: &str) -> Result<Option<Entry>, QueueError> {
        let dir = self.dir_of(id).ok_or(QueueError::NotFound)?;
        let e = self.show(id);
        let _c = self.claim(id).ok_or(QueueError::Busy)?;
        // The envelope first: without it the message no longer exists.
        std::fs::remove_file(dir.join(format!("{id}.json")))?;
        for ext in ["state", "eml"] {
            let _ = std::fs::remove_file(dir.join(format!("{id}.{ext}")));
        }
        sync_dir(&dir)?;
        self.recount();
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Direction;

    const POLICY: Policy = Policy {
        retry_min: 60,
        retry_max: 3600,
        lifetime: 5 * 86_400,
        max_received: 30,
    };

    fn to(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}@example.org")).collect()
    }

    #[test]
    fn backoff_doubles_from_the_minimum_to_the_cap() {
        let got: Vec<u64> = (1..=9).map(|a| backoff(a, 60, 3600)).collect();
        assert_eq!(got, vec![60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(0, 60, 3600), 60);
        assert_eq!(backoff(u32::MAX, 60, 3600), 3600, "no overflow");
        assert_eq!(backoff(3, 7200, 3600), 7200, "a minimum above the cap wins");
    }

    #[test]
    fn per_recipient_results_defer_only_what_is_open() {
        let mut d = Delivery::fresh(&to(3));
        assert_eq!(d.open(), vec![0, 1, 2]);
        d.record(
            &[0, 1, 2],
            &[
                Fate::Delivered("250 ok".into()),
                Fate::Temporary("450 4.2.0 busy".into()),
                Fate::Permanent("550 5.1.1 no such user".into()),
            ],
            1000,
            &POLICY,
        );
        assert_eq!(d.state, State::Deferred);
        assert_eq!(d.next_attempt, 1060);
        assert_eq!(d.open(), vec![1]);
        assert_eq!(d.to_notify(), vec![2]);
        assert_eq!(d.recipients[0].status, RcptStatus::Delivered);
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains("450")));
        // The second attempt waits twice as long; then the recipient is taken.
        d.record(&[1], &[Fate::Temporary("421 down".into())], 2000, &POLICY);
        assert_eq!(d.next_attempt, 2120);
        d.record(&[1], &[Fate::Delivered("250 ok".into())], 3000, &POLICY);
        assert!(d.finished());
        assert_eq!(d.attempts, 3);
        assert_eq!(d.recipients[0].status, RcptStatus::Delivered, "never again");
    }

    #[test]
    fn expiry_fails_the_open_recipients_with_the_last_error() {
        let mut d = Delivery::fresh(&to(2));
        d.record(
            &[0, 1],
            &[
                Fate::Delivered("250".into()),
                Fate::Temporary("451 later".into()),
            ],
            100,
            &POLICY,
        );
        assert!(!d.expire(100 + 3600, 100, &POLICY));
        assert!(d.expire(100 + 5 * 86_400, 100, &POLICY));
        assert!(d.finished());
        assert_eq!(d.to_notify(), vec![1]);
        let r = d.recipients[1].reply.clone().unwrap_or_default();
        assert!(r.starts_with("4.4.7") && r.contains("451 later"), "{r}");
        assert_eq!(d.recipients[0].status, RcptStatus::Delivered);
        // Nothing open: nothing expires.
        assert!(!d.expire(i64::MAX, 100, &POLICY));
    }

    #[test]
    fn no_dsn_to_the_null_sender_or_for_a_dsn() {
        let d = Delivery::fresh(&to(1));
        assert!(d.may_notify("alice@example.org"));
        assert!(!d.may_notify(""));
        assert!(!d.may_notify("  "));
        let mut dsn = Delivery::fresh(&to(1));
        dsn.dsn = true;
        assert!(!dsn.may_notify("alice@example.org"));
    }

    #[test]
    fn ids_never_name_other_files() {
        assert!(valid_id("1700000000-0a1b2c3d4e5f"));
        assert!(valid_id("1700000000-0a1b2c3d4e5f-dsn1"));
        for bad in [
            "",
            "../x",
            "a/b",
            "A",
            "x.json",
            "-x",
            &"1".repeat(81),
            "a\0",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn received_fields_are_counted_in_the_header_only() {
        let mut m = Vec::new();
        for i in 0..3 {
            m.extend_from_slice(format!("Received: from h{i}\r\n by x\r\n").as_bytes());
        }
        m.extend_from_slice(b"Subject: s\r\n\r\nReceived: in the body\r\n");
        assert_eq!(received_count(&m), 3);
        assert_eq!(received_count(b""), 0);
    }

    fn env(to: Vec<String>) -> Envelope {
        Envelope {
            direction: Direction::Decrypt,
            from: "a@example.org".into(),
            to,
            client: "127.0.0.1".into(),
            client_name: None,
            received: 1,
            attempts: 0,
            held_reason: None,
            released: None,
            auth: None,
        }
    }

    async fn accept(spool: &Spool, e: &Envelope) -> String {
        let mut inc = spool.receive(e.received).await.expect("receive");
        assert!(inc.line(b"Subject: q").await.expect("line"));
        inc.commit(e).await.expect("commit")
    }

    #[tokio::test]
    async fn admin_operations_move_messages_between_states() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 20).expect("spool");
        let e = env(to(2));
        let id = accept(&spool, &e).await;
        assert_eq!(spool.list(None).len(), 1);
        assert_eq!(spool.list(Some(State::Queued))[0].id, id);
        // Deferred after a failure; retry makes it due now.
        let mut d = spool.delivery(&id, &e);
        d.record(
            &[0, 1],
            &[Fate::Temporary("421".into()), Fate::Temporary("421".into())],
            10,
            &POLICY,
        );
        spool.save_delivery(&id, &d).expect("save");
        spool.set_due(&id, d.next_attempt);
        assert_eq!(spool.show(&id).expect("show").state, State::Deferred);
        assert_eq!(spool.retry_now(&id).expect("retry").next_attempt, Some(0));
        assert_eq!(spool.due(&id), 0);
        // Hold, then a second hold and a retry are conflicts, release brings it back.
        let h = spool.hold_by_admin(&id, "held by admin").expect("hold");
        assert_eq!(h.state, State::Held);
        assert_eq!(h.attempts, 1, "the state moves with it");
        assert!(matches!(
            spool.hold_by_admin(&id, "x"),
            Err(QueueError::Conflict(_))
        ));
        assert!(matches!(spool.retry_now(&id), Err(QueueError::Conflict(_))));
        assert!(spool.queued().is_empty());
        let r = spool.release(&id).expect("release");
        assert_eq!(r.state, State::Queued);
        assert_eq!(r.held_reason, None);
        assert_eq!(spool.queued(), vec![id.clone()]);
        assert!(matches!(spool.release(&id), Err(QueueError::Conflict(_))));
        // Busy while the delivery loop has it.
        let c = spool.claim(&id).expect("claim");
        assert_eq!(spool.delete(&id).err(), Some(QueueError::Busy));
        drop(c);
        spool.delete(&id).expect("delete");
        assert!(spool.show(&id).is_none());
        assert_eq!(spool.delete(&id).err(), Some(QueueError::NotFound));
        assert_eq!(
            spool.delete("../../etc/passwd").err(),
            Some(QueueError::NotFound)
        );
        assert!(spool.has_room(1 << 20), "the room is given back");
        // A held message whose envelope does not parse: not listed, release refused with
        // the reason (no 5xx), delete works.
        let bad = dir.path().join("held");
        std::fs::write(bad.join("5-bad.json"), b"{not json").expect("json");
        std::fs::write(bad.join("5-bad.eml"), b"x").expect("eml");
        assert!(spool.list(None).is_empty());
        assert!(matches!(
            spool.release("5-bad"),
            Err(QueueError::Conflict(_))
        ));
        spool.delete("5-bad").expect("delete");
        assert!(!bad.join("5-bad.eml").exists() && !bad.join("5-bad.json").exists());
    }

    #[tokio::test]
    async fn a_dsn_is_written_once_and_a_bounce_keeps_no_body() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 20).expect("spool");
        let e = env(to(1));
        let id = accept(&spool, &e).await;
        let dsn_env = env(vec!["a@example.org".into()]);
        let dsn_id = format!("{id}-dsn1");
        assert!(spool.enqueue_dsn(&dsn_id, &dsn_env, b"dsn").expect("dsn"));
        assert!(!spool.enqueue_dsn(&dsn_id, &dsn_env, b"dsn").expect("again"));
        let shown = spool.show(&dsn_id).expect("dsn queued");
        assert!(shown.dsn);
        let mut d = spool.delivery(&id, &e);
        d.record(&[0], &[Fate::Permanent("550 no".into())], 5, &POLICY);
        spool.bounce(&id, &e, &d).expect("bounce");
        let b = spool.show(&id).expect("bounced");
        assert_eq!(b.state, State::Bounced);
        assert_eq!(b.size, 0);
        assert!(!dir.path().join(format!("{id}.eml")).exists());
        assert_eq!(spool.queued(), vec![dsn_id]);
    }
}
