//! The append-only, hash-chained audit log of key operations.
//!
//! Each entry carries the SHA-256 of the previous one; `hash` covers every other field. An
//! entry is written in the same redb write transaction as the change it records, so a log
//! entry exists exactly when its change does. Entries name users, certificates and record
//! ids, never key material.
//!
//! Key *uses* (each decrypt and sign through a [`crate::VaultKey`]) are recorded through a
//! [`UseLog`], which batches them: see its documentation.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::cipher;
use crate::error::{Result, VaultError};

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When (Unix seconds, UTC).
    pub time: i64,
    /// Who (the operator or service that asked).
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

/// Appends an entry inside the caller's write transaction.
pub(crate) fn append(
    table: &mut Table<'_, u64, &[u8]>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    append_at(table, crate::record::now(), actor, action, subject, detail)
}

/// Appends an entry that happened at `time` (a buffered key use).
fn append_at(
    table: &mut Table<'_, u64, &[u8]>,
    time: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    let (seq, prev) = match table.last()? {
        Some((k, v)) => {
            let last: AuditEntry = serde_json::from_slice(v.value())?;
            (k.value() + 1, last.hash)
        }
        None => (1, GENESIS.to_string()),
    };
    let mut e = AuditEntry {
        seq,
        time,
        actor: actor.to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail: detail.to_string(),
        prev,
        hash: String::new(),
    };
    e.hash = entry_hash(&e)?;
    table.insert(seq, serde_json::to_vec(&e)?.as_slice())?;
    Ok(())
}

/// Reads every entry and checks the chain; fails naming the first bad entry.
pub(crate) fn read_verified(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<AuditEntry>> {
    let mut out: Vec<AuditEntry> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (n, row) in table.iter()?.enumerate() {
        let expect = n as u64 + 1;
        let (k, v) = row?;
        let e: AuditEntry = serde_json::from_slice(v.value())
            .map_err(|_| VaultError::Corrupt(format!("audit entry {} is unreadable", k.value())))?;
        if e.seq != k.value() || e.seq != expect {
            return Err(VaultError::Corrupt(format!(
                "audit log: entry {} is out of sequence",
                k.value()
            )));
        }
        if e.prev != prev || entry_hash(&e)? != e.hash {
            return Err(VaultError::Corrupt(format!(
                "audit log: the hash chain breaks at entry {}",
                e.seq
            )));
        }
        prev = e.hash.clone();
        out.push(e);
    }
    Ok(out)
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
    buffer: Mutex<Vec<KeyUse>>,
    /// Held while a batch is written, so batches reach the log in the order they were taken.
    writing: Mutex<()>,
    max_entries: AtomicUsize,
    max_delay_ms: AtomicU64,
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
                let mut t = txn.open_table(crate::store::AUDIT)?;
                for u in &batch {
                    append_at(&mut t, u.time, &u.actor, u.action, &u.subject, &u.detail)?;
                }
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
/// same hash chain, when [`USE_BATCH_ENTRIES`] have accumulated (by the thread whose use
/// filled it), when the oldest has waited [`USE_BATCH_DELAY`] (a timer thread, started at the
/// first use), before any other change to the vault is written, when the audit log is read,
/// and when the last handle (the [`crate::Vault`] and its keys) is dropped. The price: a
/// crash (kill -9, power cut) loses at most the uses of the last batch window; a use is never
/// recorded that did not at least start. With a batch size of 1
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
    pub(crate) fn new(db: &Arc<Database>) -> UseLog {
        UseLog {
            inner: Arc::new(UseLogInner {
                db: Arc::downgrade(db),
                buffer: Mutex::new(Vec::new()),
                writing: Mutex::new(()),
                max_entries: AtomicUsize::new(USE_BATCH_ENTRIES),
                max_delay_ms: AtomicU64::new(USE_BATCH_DELAY.as_millis() as u64),
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
        if len >= max {
            self.inner.flush()?;
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

    fn start_timer(&self) {
        let mut t = lock(&self.timer);
        if t.is_some() {
            return;
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
                    let wait = Duration::from_millis(inner.max_delay_ms.load(Ordering::Relaxed));
                    stop = inner
                        .wake
                        .wait_timeout(stop, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stop {
                        return;
                    }
                    drop(stop);
                    // A failed write keeps the uses buffered; the next tick retries.
                    let _ = inner.flush();
                    stop = lock(&inner.stop);
                }
            });
        // Without a timer thread the uses are still written by size, other writes and drop.
        if let Ok(h) = spawned {
            *t = Some(h);
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

    fn count(db: &Database) -> usize {
        let txn = db.begin_read().expect("read");
        let t = txn.open_table(crate::store::AUDIT).expect("table");
        read_verified(&t).expect("chain verifies").len()
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
            let log = UseLog::new(&db);
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
        let db = Arc::new(Database::create(tmp.path().join("a.redb")).expect("db"));
        {
            let txn = db.begin_write().expect("w");
            txn.open_table(crate::store::AUDIT).expect("t");
            txn.commit().expect("c");
        }
        let log = UseLog::new(&db);
        log.configure(3, Duration::from_secs(3600));
        log.record(a_use(1)).expect("1");
        log.record(a_use(2)).expect("2");
        assert_eq!(count(&db), 0, "below the batch size nothing is written");
        log.record(a_use(3)).expect("3");
        assert_eq!(count(&db), 3, "a full batch is written");
        assert_eq!(log.pending(), 0);

        // The timer writes a partial batch.
        log.configure(100, Duration::from_millis(50));
        log.record(a_use(4)).expect("4");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while count(&db) < 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count(&db), 4, "the timer wrote the use");

        // Drop writes what is left.
        log.configure(100, Duration::from_secs(3600));
        log.record(a_use(5)).expect("5");
        drop(log);
        assert_eq!(count(&db), 5);
    }
}
