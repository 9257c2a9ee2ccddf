//! The append-only, keyed, hash-chained audit log of key operations.
//!
//! Each entry carries the SHA-256 of the previous one (`prev`) and its own (`hash`, over
//! every other field), and since the vault's key was added to the chain, also `mac`:
//! HMAC-SHA256 of its `hash` under the *audit key*, which is derived from the vault key. So
//! whoever can write `vault.redb` but does not hold the vault key (the TPM) cannot rewrite an
//! entry, even if they recompute the plain hashes: the MAC of the first changed entry fails.
//!
//! Two records in the `audit_meta` table, each with its own MAC, complete the chain:
//!
//! - the **head** (last sequence number and hash, and `keyed_from`: the first entry that has
//!   a MAC), rewritten in the transaction of every append, so dropping entries at the end is
//!   detected too;
//! - the **checkpoint**: the entry up to which a keyed verification succeeded. `vault status`
//!   ([`crate::Vault::check_audit`]) verifies only the entries after it and then moves it, so
//!   its cost does not grow with the log; [`crate::Vault::audit`] and `vault verify` re-read
//!   the whole chain.
//!
//! **Migration.** A vault whose chain predates the key (its key-check record is the old
//! version) is migrated when it is first opened with its key: the plain chain is verified
//! whole, an `audit.keyed` entry with a MAC is appended (its `prev` pins every older entry),
//! the head is written, and the key-check record is replaced by one whose associated data
//! says "audit keyed", in one transaction. A keyed vault therefore cannot be passed off as an
//! unkeyed one by stripping the MACs: the key check would have to be forged.
//!
//! An entry is written in the same redb write transaction as the change it records, so a log
//! entry exists exactly when its change does. Entries name users, certificates, record ids
//! and who asked (the daemon's client and peer address), never key material.
//!
//! Key *uses* (each decrypt and sign through a [`crate::VaultKey`]) are recorded through a
//! [`UseLog`], which batches them: see its documentation.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_lc_rs::hmac;
use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};

/// The head and checkpoint records.
pub(crate) const AUDIT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When (Unix seconds, UTC).
    pub time: i64,
    /// Who (the operator or service that asked; for the daemon the client and its address).
    pub actor: String,
    /// What, e.g. `key.import`, `ca.issue`, `key.export-pkcs12`.
    pub action: String,
    /// On what: a user, a serial number, the vault.
    pub subject: String,
    /// Details (record ids, certificate fingerprints, sealer kind).
    pub detail: String,
    /// Hash of the previous entry (hex; 64 zeros for the first).
    pub prev: String,
    /// Hash of this entry (hex).
    pub hash: String,
    /// HMAC-SHA256 of `hash` under the audit key (hex); empty in entries written before the
    /// chain was keyed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: i64,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    detail: &'a str,
    prev: &'a str,
}

fn entry_hash(e: &AuditEntry) -> Result<String> {
    let body = Body {
        seq: e.seq,
        time: e.time,
        actor: &e.actor,
        action: &e.action,
        subject: &e.subject,
        detail: &e.detail,
        prev: &e.prev,
    };
    let bytes = serde_json::to_vec(&body)?;
    Ok(cipher::hex(&cipher::sha256(&[
        b"sealgate audit v1\n",
        &bytes,
    ])))
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key that MACs the audit chain: HMAC-SHA256(vault key, label). Never stored.
pub(crate) struct AuditKey(hmac::Key);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub(crate) fn derive(vault_key: &VaultSecret) -> AuditKey {
        let k = hmac::Key::new(hmac::HMAC_SHA256, vault_key.bytes());
        let derived = zeroize::Zeroizing::new(
            hmac::sign(&k, b"sealgate audit chain key v1")
                .as_ref()
                .to_vec(),
        );
        AuditKey(hmac::Key::new(hmac::HMAC_SHA256, &derived))
    }

    fn tag(&self, domain: &str, fields: &[&str]) -> String {
        let mut c = hmac::Context::with_key(&self.0);
        c.update(domain.as_bytes());
        for f in fields {
            c.update(b"\n");
            c.update(f.as_bytes());
        }
        cipher::hex(c.sign().as_ref())
    }

    fn check(&self, domain: &str, fields: &[&str], tag: &str) -> bool {
        let Some(t) = unhex(tag) else { return false };
        let mut msg = domain.as_bytes().to_vec();
        for f in fields {
            msg.push(b'\n');
            msg.extend_from_slice(f.as_bytes());
        }
        hmac::verify(&self.0, &msg, &t).is_ok()
    }

    fn entry_mac(&self, e: &AuditEntry) -> String {
        self.tag(
            "sealgate audit entry v2",
            &[e.seq.to_string().as_str(), e.hash.as_str()],
        )
    }

    fn entry_ok(&self, e: &AuditEntry) -> bool {
        self.check(
            "sealgate audit entry v2",
            &[e.seq.to_string().as_str(), e.hash.as_str()],
            &e.mac,
        )
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The last entry, rewritten with every append.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    keyed_from: u64,
    mac: String,
}

impl Head {
    fn tag(&self, key: &AuditKey) -> String {
        key.tag(
            "sealgate audit head v2",
            &[
                self.seq.to_string().as_str(),
                self.hash.as_str(),
                self.keyed_from.to_string().as_str(),
            ],
        )
    }

    fn verifies(&self, key: &AuditKey) -> bool {
        key.check(
            "sealgate audit head v2",
            &[
                self.seq.to_string().as_str(),
                self.hash.as_str(),
                self.keyed_from.to_string().as_str(),
            ],
            &self.mac,
        )
    }
}

/// The entry up to which a keyed verification succeeded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    hash: String,
    mac: String,
}

const HEAD: &str = "head";
const CHECKPOINT: &str = "checkpoint";

fn corrupt(what: impl std::fmt::Display) -> VaultError {
    VaultError::Corrupt(format!("audit log: {what}"))
}

/// Appends entries inside the caller's write transaction, keeping the head current.
pub(crate) struct Writer<'t> {
    entries: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    key: &'t AuditKey,
    /// The chain's end as this writer left it, read from the tables at the first append: the
    /// transaction's tables are this writer's alone while it lives (redb opens a table once
    /// per transaction), so a batch reads the last entry and the head once, not per entry.
    tail: Option<Tail>,
}

/// Where the next entry goes: after entry `seq` (0: none yet) whose hash is `hash`; the chain
/// is keyed from entry `keyed_from`.
struct Tail {
    seq: u64,
    hash: String,
    keyed_from: u64,
}

impl<'t> Writer<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction, key: &'t AuditKey) -> Result<Writer<'t>> {
        Ok(Writer {
            entries: txn.open_table(crate::store::AUDIT)?,
            meta: txn.open_table(AUDIT_META)?,
            key,
            tail: None,
        })
    }

    fn head(&self) -> Result<Option<Head>> {
        match self.meta.get(HEAD)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(|_| corrupt("the head is unreadable"))?,
            )),
            None => Ok(None),
        }
    }

    /// The chain's end: the last entry and the head, read once.
    fn tail(&mut self) -> Result<&mut Tail> {
        if self.tail.is_none() {
            let (seq, hash) = match self.entries.last()? {
                Some((k, v)) => {
                    let last: AuditEntry = serde_json::from_slice(v.value())?;
                    (k.value(), last.hash)
                }
                None => (0, GENESIS.to_string()),
            };
            // Without a head the next entry is the first keyed one (a new vault, or the
            // migration).
            let keyed_from = self.head()?.map_or(seq + 1, |h| h.keyed_from);
            self.tail = Some(Tail {
                seq,
                hash,
                keyed_from,
            });
        }
        self.tail
            .as_mut()
            .ok_or_else(|| corrupt("the chain's end was not read"))
    }

    /// Appends an entry that happened at `time`, without rewriting the head.
    fn push(
        &mut self,
        time: i64,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<()> {
        let tail = self.tail()?;
        let mut e = AuditEntry {
            seq: tail.seq + 1,
            time,
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            detail: detail.to_string(),
            prev: tail.hash.clone(),
            hash: String::new(),
            mac: String::new(),
        };
        e.hash = entry_hash(&e)?;
        e.mac = self.key.entry_mac(&e);
        self.entries
            .insert(e.seq, serde_json::to_vec(&e)?.as_slice())?;
        let tail = self.tail()?;
        tail.seq = e.seq;
        tail.hash = e.hash;
        Ok(())
    }

    /// Rewrites the head to the chain's end.
    fn write_head(&mut self) -> Result<()> {
        let tail = self.tail()?;
        let mut head = Head {
            seq: tail.seq,
            hash: tail.hash.clone(),
            keyed_from: tail.keyed_from,
            mac: String::new(),
        };
        head.mac = head.tag(self.key);
        self.meta
            .insert(HEAD, serde_json::to_vec(&head)?.as_slice())?;
        Ok(())
    }

    /// Appends a batch of key uses; the head is rewritten once, after the last.
    fn append_uses(&mut self, uses: &[KeyUse]) -> Result<()> {
        for u in uses {
            self.push(u.time, &u.actor, u.action, &u.subject, &u.detail)?;
        }
        self.write_head()
    }
}

/// Appends an entry inside the caller's write transaction.
pub(crate) fn append(
    w: &mut Writer<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    w.push(crate::record::now(), actor, action, subject, detail)?;
    w.write_head()
}

/// Checks one entry's place in the plain chain.
fn check_link(e: &AuditEntry, key: u64, expect_seq: u64, prev: &str) -> Result<()> {
    if e.seq != key || e.seq != expect_seq {
        return Err(corrupt(format!("entry {key} is out of sequence")));
    }
    if e.prev != prev || entry_hash(e)? != e.hash {
        return Err(corrupt(format!("the hash chain breaks at entry {}", e.seq)));
    }
    Ok(())
}

pub(crate) fn parse_entry(k: u64, v: &[u8]) -> Result<AuditEntry> {
    serde_json::from_slice(v).map_err(|_| corrupt(format!("entry {k} is unreadable")))
}

/// The verified head (`None`: the chain is not keyed yet).
fn read_head(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &AuditKey,
) -> Result<Option<Head>> {
    let Some(v) = meta.get(HEAD)? else {
        return Ok(None);
    };
    let h: Head =
        serde_json::from_slice(v.value()).map_err(|_| corrupt("the head is unreadable"))?;
    if !h.verifies(key) {
        return Err(corrupt(
            "the head's MAC does not verify (rewritten without the vault key)",
        ));
    }
    Ok(Some(h))
}

/// Verifies the plain chain only (no key): for the migration of an unkeyed log.
pub(crate) fn verify_unkeyed(entries: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64> {
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    for row in entries.iter()? {
        let (k, v) = row?;
        let e = parse_entry(k.value(), v.value())?;
        check_link(&e, k.value(), n + 1, &prev)?;
        prev = e.hash;
        n += 1;
    }
    Ok(n)
}

/// Reads every entry and checks the whole chain: links, hashes, the MAC of every keyed
/// entry, and the head. `keyed`: whether the vault's key check says the chain is keyed (then
/// the head must exist).
pub(crate) fn read_verified(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &AuditKey,
    keyed: bool,
) -> Result<Vec<AuditEntry>> {
    let head = read_head(meta, key)?;
    if keyed && head.is_none() {
        return Err(corrupt("the keyed chain's head is missing"));
    }
    let mut out: Vec<AuditEntry> = Vec::new();
    let mut prev = GENESIS.to_string();
    for row in entries.iter()? {
        let (k, v) = row?;
        let e = parse_entry(k.value(), v.value())?;
        check_link(&e, k.value(), out.len() as u64 + 1, &prev)?;
        if let Some(h) = &head
            && e.seq >= h.keyed_from
            && !key.entry_ok(&e)
        {
            return Err(corrupt(format!(
                "the MAC of entry {} does not verify (rewritten without the vault key)",
                e.seq
            )));
        }
        prev = e.hash.clone();
        out.push(e);
    }
    if let Some(h) = &head {
        check_end(h, out.last())?;
    }
    Ok(out)
}

fn check_end(h: &Head, last: Option<&AuditEntry>) -> Result<()> {
    match last {
        Some(e) if e.seq == h.seq && e.hash == h.hash => Ok(()),
        Some(e) if e.seq < h.seq => Err(corrupt(format!(
            "entries {}..{} are missing (the log was cut short)",
            e.seq + 1,
            h.seq
        ))),
        _ => Err(corrupt("the last entry is not the head the vault wrote")),
    }
}

/// What a tail verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCheck {
    /// Entries in the log.
    pub entries: u64,
    /// Entries whose links and MACs were verified now (those after the checkpoint).
    pub verified: u64,
    /// The checkpoint the verification started from (0: the start of the log).
    pub checkpoint: u64,
}

/// Verifies the entries after the checkpoint (and the checkpoint's own entry), and the head.
#[cfg(test)]
pub(crate) fn verify_tail(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &AuditKey,
) -> Result<AuditCheck> {
    verify_tail_at(entries, meta, key).map(|(c, _)| c)
}

/// [`verify_tail`], and the last verified entry (sequence number and hash).
pub(crate) fn verify_tail_at(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &AuditKey,
) -> Result<(AuditCheck, (u64, String))> {
    let head = read_head(meta, key)?.ok_or_else(|| corrupt("the keyed chain's head is missing"))?;
    let cp = match meta.get(CHECKPOINT)? {
        Some(v) => {
            let c: Checkpoint = serde_json::from_slice(v.value())
                .map_err(|_| corrupt("the checkpoint is unreadable"))?;
            if !key.check(
                "sealgate audit checkpoint v2",
                &[c.seq.to_string().as_str(), c.hash.as_str()],
                &c.mac,
            ) {
                return Err(corrupt("the checkpoint's MAC does not verify"));
            }
            Some(c)
        }
        None => None,
    };
    let (start, mut prev) = match &cp {
        Some(c) => {
            let v = entries
                .get(c.seq)?
                .ok_or_else(|| corrupt(format!("checkpoint entry {} is missing", c.seq)))?;
            let e = parse_entry(c.seq, v.value())?;
            if e.hash != c.hash || entry_hash(&e)? != e.hash {
                return Err(corrupt(format!("checkpoint entry {} was changed", c.seq)));
            }
            (c.seq, e.hash)
        }
        None => (0, GENESIS.to_string()),
    };
    let mut last: Option<AuditEntry> = None;
    let mut verified = 0u64;
    for row in entries.range(start + 1..)? {
        let (k, v) = row?;
        let e = parse_entry(k.value(), v.value())?;
        check_link(&e, k.value(), start + verified + 1, &prev)?;
        if e.seq >= head.keyed_from && !key.entry_ok(&e) {
            return Err(corrupt(format!(
                "the MAC of entry {} does not verify (rewritten without the vault key)",
                e.seq
            )));
        }
        prev = e.hash.clone();
        verified += 1;
        last = Some(e);
    }
    match (&last, &cp) {
        (Some(_), _) => check_end(&head, last.as_ref())?,
        (None, Some(c)) if c.seq == head.seq && c.hash == head.hash => {}
        (None, _) if head.seq == 0 => {}
        (None, _) => check_end(&head, None)?,
    }
    Ok((
        AuditCheck {
            entries: head.seq,
            verified,
            checkpoint: start,
        },
        (head.seq, head.hash),
    ))
}

/// Moves the checkpoint to entry `seq` (whose hash is `hash`), which a keyed verification
/// just reached.
pub(crate) fn advance_checkpoint(
    txn: &WriteTransaction,
    key: &AuditKey,
    (seq, hash): (u64, String),
) -> Result<()> {
    let mut meta = txn.open_table(AUDIT_META)?;
    let mac = key.tag(
        "sealgate audit checkpoint v2",
        &[seq.to_string().as_str(), hash.as_str()],
    );
    let cp = Checkpoint { seq, hash, mac };
    meta.insert(CHECKPOINT, serde_json::to_vec(&cp)?.as_slice())?;
    Ok(())
}

/// Default number of buffered key uses that triggers a write.
pub const USE_BATCH_ENTRIES: usize = 64;
/// Default longest time a key use waits in the buffer before it is written.
pub const USE_BATCH_DELAY: Duration = Duration::from_millis(500);

/// One key use, waiting to be written. Names the key, never its material.
pub(crate) struct KeyUse {
    pub time: i64,
    pub actor: String,
    pub action: &'static str,
    pub subject: String,
    pub detail: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct UseLogInner {
    /// Weak: keys handed out do not keep the database open once their vault is dropped
    /// (their uses are then refused).
    db: Weak<Database>,
    key: Arc<AuditKey>,
    buffer: Mutex<Vec<KeyUse>>,
    /// Held while a batch is written, so batches reach the log in the order they were taken.
    writing: Mutex<()>,
    max_entries: AtomicUsize,
    max_delay_ms: AtomicU64,
    /// Set when a full batch waits: the writer thread writes it without waiting out the delay.
    due: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl UseLogInner {
    /// Writes every buffered use in one write transaction (one commit, one fsync). On failure
    /// the uses go back to the front of the buffer, to be written by the next flush.
    fn flush(&self) -> Result<()> {
        let _w = lock(&self.writing);
        let batch = std::mem::take(&mut *lock(&self.buffer));
        if batch.is_empty() {
            return Ok(());
        }
        let write = || -> Result<()> {
            let db = self.db.upgrade().ok_or_else(|| {
                VaultError::Usage("the vault this key belongs to is closed".into())
            })?;
            let txn = db.begin_write()?;
            {
                Writer::open(&txn, &self.key)?.append_uses(&batch)?;
            }
            txn.commit()?;
            Ok(())
        };
        let result = write();
        if result.is_err() {
            let mut b = lock(&self.buffer);
            let newer = std::mem::take(&mut *b);
            *b = batch;
            b.extend(newer);
        }
        result
    }
}

/// The audit of key uses: every decrypt and sign through a [`crate::VaultKey`] appends an
/// entry (who: the vault handle's actor; what: `key.decrypt` / `key.sign`; which: the user and
/// the key's record id; when: the time of the use). Never content or key material.
///
/// A redb commit per use would cost an fsync per decryption, so uses are **batched**: they
/// wait in a bounded in-memory buffer that is written, in one transaction that extends the
/// same hash chain, when [`USE_BATCH_ENTRIES`] have accumulated (by the writer thread, woken
/// at once, so the use that filled the batch does not wait for the fsync; by the using thread
/// itself when two batches wait, i.e. the writer is behind), when the oldest has waited
/// [`USE_BATCH_DELAY`] (the same writer thread, started at the first use), before any other
/// change to the vault is written, when the audit log is read, and when the last handle (the
/// [`crate::Vault`] and its keys) is dropped. The price: a crash (kill -9, power cut) loses at
/// most the uses of the last batch window (at most two batches); a use is never recorded that
/// did not at least start. With a batch size of 1
/// ([`crate::Vault::set_use_audit_batch`]) every use is committed before the key is used.
///
/// The buffer is bounded: when it cannot be written (disk full, I/O error) and holds
/// `4 x batch size` uses, further uses are refused rather than left unaudited. Keys can be
/// used only while their vault is open: the vault's drop writes the buffer, and a use after it
/// cannot be recorded, so it is refused.
pub(crate) struct UseLog {
    inner: Arc<UseLogInner>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl UseLog {
    pub(crate) fn new(db: &Arc<Database>, key: Arc<AuditKey>) -> UseLog {
        UseLog {
            inner: Arc::new(UseLogInner {
                db: Arc::downgrade(db),
                key,
                buffer: Mutex::new(Vec::new()),
                writing: Mutex::new(()),
                max_entries: AtomicUsize::new(USE_BATCH_ENTRIES),
                max_delay_ms: AtomicU64::new(USE_BATCH_DELAY.as_millis() as u64),
                due: AtomicBool::new(false),
                stop: Mutex::new(false),
                wake: Condvar::new(),
            }),
            timer: Mutex::new(None),
        }
    }

    /// Sets the batch size (1 = a commit per use) and the longest wait.
    pub(crate) fn configure(&self, max_entries: usize, max_delay: Duration) {
        self.inner
            .max_entries
            .store(max_entries.max(1), Ordering::Relaxed);
        self.inner
            .max_delay_ms
            .store((max_delay.as_millis() as u64).max(1), Ordering::Relaxed);
        self.inner.wake.notify_all();
    }

    /// Records a use *before* the key is used. Fails (and the caller must not use the key)
    /// when the use cannot be recorded: the buffer is full and cannot be written, or (batch
    /// size 1) the entry could not be committed.
    pub(crate) fn record(&self, u: KeyUse) -> Result<()> {
        // A use after the vault was closed can never be written: refused at once (the batch
        // that would find out may be written by the writer thread, after the use).
        if self.inner.db.strong_count() == 0 {
            return Err(VaultError::Usage(
                "the vault this key belongs to is closed".into(),
            ));
        }
        let max = self.inner.max_entries.load(Ordering::Relaxed);
        let cap = max.saturating_mul(4).max(4);
        if lock(&self.inner.buffer).len() >= cap {
            self.inner.flush()?;
        }
        let len = {
            let mut b = lock(&self.inner.buffer);
            b.push(u);
            b.len()
        };
        if max == 1 || len >= max.saturating_mul(2) {
            // A commit per use, or the writer is a whole batch behind: this thread writes.
            self.inner.flush()?;
        } else if len >= max {
            // A full batch: the writer thread commits it, so the use (and whatever else runs
            // on this thread) does not wait for the commit's fsync.
            self.inner.due.store(true, Ordering::Release);
            if !self.start_timer() {
                self.inner.flush()?;
            }
            // Taking the lock orders this notification after the writer's check of `due`.
            drop(lock(&self.inner.stop));
            self.inner.wake.notify_all();
        } else {
            self.start_timer();
        }
        Ok(())
    }

    /// Writes the buffered uses now.
    pub(crate) fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Uses waiting in the buffer.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.inner.buffer).len()
    }

    /// Starts the writer thread if it is not running; whether it runs.
    fn start_timer(&self) -> bool {
        let mut t = lock(&self.timer);
        if t.is_some() {
            return true;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("vault-audit".into())
            .spawn(move || {
                let mut stop = lock(&inner.stop);
                // `stop` is checked before every wait: a stop (and its notification) that
                // came while this thread was flushing, without the lock, must not be missed,
                // or the drop that set it would wait out a whole `max_delay`.
                while !*stop {
                    // A full batch that came while this thread was writing is written at
                    // once (`due` is checked under the lock its setter takes to notify).
                    if !inner.due.load(Ordering::Acquire) {
                        let wait =
                            Duration::from_millis(inner.max_delay_ms.load(Ordering::Relaxed));
                        stop = inner
                            .wake
                            .wait_timeout(stop, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if *stop {
                        return;
                    }
                    inner.due.store(false, Ordering::Release);
                    drop(stop);
                    // A failed write keeps the uses buffered; the next tick retries.
                    let _ = inner.flush();
                    stop = lock(&inner.stop);
                }
            });
        // Without a timer thread the uses are still written by size, other writes and drop.
        match spawned {
            Ok(h) => {
                *t = Some(h);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for UseLog {
    fn drop(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.wake.notify_all();
        if let Some(h) = lock(&self.timer).take() {
            let _ = h.join();
        }
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn test_key() -> Arc<AuditKey> {
        Arc::new(AuditKey::derive(&VaultSecret::from_bytes(
            zeroize::Zeroizing::new([7u8; 32]),
        )))
    }

    fn new_db(dir: &std::path::Path) -> Arc<Database> {
        let db = Arc::new(Database::create(dir.join("a.redb")).expect("db"));
        let txn = db.begin_write().expect("w");
        txn.open_table(crate::store::AUDIT).expect("t");
        txn.open_table(AUDIT_META).expect("t");
        txn.commit().expect("c");
        db
    }

    fn read_all(db: &Database, key: &AuditKey) -> Result<Vec<AuditEntry>> {
        let txn = db.begin_read()?;
        let t = txn.open_table(crate::store::AUDIT)?;
        let m = txn.open_table(AUDIT_META)?;
        read_verified(&t, &m, key, false)
    }

    fn tail(db: &Database, key: &AuditKey) -> Result<AuditCheck> {
        let txn = db.begin_read()?;
        let t = txn.open_table(crate::store::AUDIT)?;
        let m = txn.open_table(AUDIT_META)?;
        verify_tail(&t, &m, key)
    }

    fn count(db: &Database) -> usize {
        read_all(db, &test_key()).expect("chain verifies").len()
    }

    fn append_n(db: &Database, key: &AuditKey, n: u64) {
        let txn = db.begin_write().expect("w");
        {
            let mut w = Writer::open(&txn, key).expect("writer");
            for i in 0..n {
                append(
                    &mut w,
                    "test",
                    "key.import",
                    "u@example.org",
                    &format!("n={i}"),
                )
                .expect("append");
            }
        }
        txn.commit().expect("c");
    }

    /// Replaces entry `seq` with `f(entry)`, recomputing the plain hashes of it and of every
    /// later entry, as someone with write access to the file but without the key can.
    fn rewrite(db: &Database, seq: u64, f: impl Fn(&mut AuditEntry)) {
        let txn = db.begin_write().expect("w");
        {
            let mut t = txn.open_table(crate::store::AUDIT).expect("t");
            let all: Vec<AuditEntry> = t
                .iter()
                .expect("iter")
                .map(|r| {
                    let (_, v) = r.expect("row");
                    serde_json::from_slice(v.value()).expect("entry")
                })
                .collect();
            let mut prev = if seq == 1 {
                GENESIS.to_string()
            } else {
                all[seq as usize - 2].hash.clone()
            };
            for mut e in all.into_iter().skip(seq as usize - 1) {
                if e.seq == seq {
                    f(&mut e);
                }
                e.prev = prev;
                e.hash = entry_hash(&e).expect("hash");
                prev = e.hash.clone();
                t.insert(e.seq, serde_json::to_vec(&e).expect("json").as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("c");
    }

    #[test]
    fn a_rewritten_entry_with_recomputed_hashes_is_detected() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = new_db(tmp.path());
        let key = test_key();
        append_n(&db, &key, 5);
        assert_eq!(read_all(&db, &key).expect("verifies").len(), 5);
        rewrite(&db, 3, |e| e.actor = "someone-else".into());
        // The plain chain still links: only the key tells.
        {
            let txn = db.begin_read().expect("r");
            let t = txn.open_table(crate::store::AUDIT).expect("t");
            assert_eq!(verify_unkeyed(&t).expect("plain chain links"), 5);
        }
        let e = read_all(&db, &key).expect_err("detected");
        assert!(e.to_string().contains("MAC of entry 3"), "{e}");
        let e = tail(&db, &key).expect_err("detected by the tail check too");
        assert!(e.to_string().contains("MAC of entry 3"), "{e}");
        // Another key cannot verify (or forge) the chain either.
        let other = AuditKey::derive(&VaultSecret::from_bytes(zeroize::Zeroizing::new([8u8; 32])));
        assert!(read_all(&db, &other).is_err());
    }

    #[test]
    fn dropping_entries_at_the_end_is_detected() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = new_db(tmp.path());
        let key = test_key();
        append_n(&db, &key, 4);
        let txn = db.begin_write().expect("w");
        txn.open_table(crate::store::AUDIT)
            .expect("t")
            .remove(4)
            .expect("remove");
        txn.commit().expect("c");
        let e = read_all(&db, &key).expect_err("detected");
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(tail(&db, &key).is_err());
    }

    #[test]
    fn the_tail_check_starts_at_the_checkpoint() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = new_db(tmp.path());
        let key = test_key();
        append_n(&db, &key, 10);
        assert_eq!(
            tail(&db, &key).expect("ok"),
            AuditCheck {
                entries: 10,
                verified: 10,
                checkpoint: 0
            }
        );
        let at = {
            let txn = db.begin_read().expect("r");
            let t = txn.open_table(crate::store::AUDIT).expect("t");
            let m = txn.open_table(AUDIT_META).expect("m");
            verify_tail_at(&t, &m, &key).expect("ok").1
        };
        let txn = db.begin_write().expect("w");
        advance_checkpoint(&txn, &key, at).expect("checkpoint");
        txn.commit().expect("c");
        assert_eq!(tail(&db, &key).expect("ok").verified, 0);
        append_n(&db, &key, 3);
        assert_eq!(
            tail(&db, &key).expect("ok"),
            AuditCheck {
                entries: 13,
                verified: 3,
                checkpoint: 10
            }
        );
        // The checkpoint's own entry is still checked against the checkpoint.
        rewrite(&db, 10, |e| e.detail = "changed".into());
        assert!(tail(&db, &key).is_err());
        // A full read catches a change anywhere.
        assert!(read_all(&db, &key).is_err());
    }

    fn a_use(n: u64) -> KeyUse {
        KeyUse {
            time: crate::record::now(),
            actor: "test".into(),
            action: "key.decrypt",
            subject: "u@example.org".into(),
            detail: format!("record={n}"),
        }
    }

    /// A drop that comes while the timer thread is flushing (woken by `configure`) must not
    /// be lost: the timer would then sleep out its whole delay (an hour here) and the drop,
    /// which joins it, would hang. The race is hit within a few rounds without the check.
    #[test]
    fn drop_during_a_timer_flush_does_not_hang() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = Arc::new(Database::create(tmp.path().join("a.redb")).expect("db"));
        {
            let txn = db.begin_write().expect("w");
            txn.open_table(crate::store::AUDIT).expect("t");
            txn.commit().expect("c");
        }
        for round in 0..200u64 {
            let log = UseLog::new(&db, test_key());
            log.configure(100, Duration::from_millis(1));
            log.record(a_use(round)).expect("use");
            log.configure(100, Duration::from_secs(3600));
            log.record(a_use(round)).expect("use");
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(log);
                let _ = done.send(());
            });
            assert!(
                finished.recv_timeout(Duration::from_secs(60)).is_ok(),
                "round {round}: dropping the use log hung (lost stop notification)"
            );
        }
    }

    #[test]
    fn uses_are_batched_by_size_timer_and_drop() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = new_db(tmp.path());
        let log = UseLog::new(&db, test_key());
        log.configure(3, Duration::from_secs(3600));
        log.record(a_use(1)).expect("1");
        log.record(a_use(2)).expect("2");
        assert_eq!(count(&db), 0, "below the batch size nothing is written");
        log.record(a_use(3)).expect("3");
        // The writer thread writes a full batch at once (the delay is an hour here).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(&db) < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count(&db), 3, "a full batch is written");
        assert_eq!(log.pending(), 0);
        // A batch that fills while a write is under way does not block the using thread;
        // the writer thread writes it once the other write is done.
        let stalled = log.inner.writing.lock().expect("writing");
        for n in 0..3 {
            log.record(a_use(10 + n)).expect("batch");
        }
        drop(stalled);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(&db) < 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count(&db), 6, "the writer thread wrote the second batch");

        // The timer writes a partial batch.
        log.configure(100, Duration::from_millis(50));
        log.record(a_use(4)).expect("4");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while count(&db) < 7 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count(&db), 7, "the timer wrote the use");

        // Drop writes what is left.
        log.configure(100, Duration::from_secs(3600));
        log.record(a_use(5)).expect("5");
        drop(log);
        assert_eq!(count(&db), 8);
    }
}
