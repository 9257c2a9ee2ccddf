//! The spool: `DATA/spool/ID.part` while a message arrives (streamed, never held whole in
//! memory), `ID.eml` + `ID.json` (the envelope) once it is complete and fsynced, and
//! `held/ID.eml` + `held/ID.json` (with `held_reason`) for messages that will not be relayed.
//! A quota on the bytes of all of them (queued and held) answers `452` when full.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::Direction;
use crate::identity::{hex, random};

/// The envelope stored beside a spooled message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub direction: Direction,
    pub from: String,
    pub to: Vec<String>,
    /// The client's address.
    pub client: String,
    /// The client's name in the audit log (`smtp:ADDRESS` or `cert:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub received: i64,
    /// Processing attempts that did not finish (a panic or a stop).
    #[serde(default)]
    pub attempts: u32,
    /// Why the message is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
    /// Relayed as it is, without processing or scanning: why (released from the quarantine
    /// by an auditor, a copy for the auditor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    /// The MX's sender authentication and DNS list results (`mailauth.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<sealgate_scan::checks::AuthResults>,
}

impl Envelope {
    pub fn audit_name(&self) -> String {
        self.client_name
            .clone()
            .unwrap_or_else(|| format!("smtp:{}", self.client))
    }
}

pub struct Spool {
    pub(super) dir: PathBuf,
    quota: u64,
    /// Bytes of complete messages on disk (queued and held).
    pub(super) on_disk: AtomicU64,
    /// Bytes of messages being received.
    arriving: AtomicU64,
    /// Messages someone works on (the delivery loop, an administrator): see `queue.rs`.
    pub(super) busy: Mutex<HashSet<String>>,
    /// When queued messages are due (a cache of their state files).
    pub(super) due: Mutex<HashMap<String, i64>>,
    /// Wakes the delivery loop when a message was queued by a role outside it (submission).
    pub(super) arrived: tokio::sync::Notify,
    /// Group commit of the spool directory's fsync.
    dir_sync: std::sync::Arc<GroupSync>,
}

/// Group commit of a directory's fsync: every caller whose renames or unlinks are done asks
/// for a sync, and returns once an fsync that *started after it asked* has succeeded; one
/// fsync serves every caller that asked before it started. Under load (many sessions
/// accepting at once, the delivery loop removing what it relayed) the directory is fsynced
/// once per batch instead of once per message, and no caller returns before its own change
/// is durable.
#[derive(Default)]
struct GroupSync {
    /// (tickets issued, tickets covered by a finished fsync, an fsync running).
    state: Mutex<(u64, u64, bool)>,
    done: std::sync::Condvar,
}

impl GroupSync {
    /// Blocking: call it off the executor.
    fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut g = lock();
        g.0 += 1;
        let ticket = g.0;
        loop {
            if g.1 >= ticket {
                return Ok(());
            }
            if g.2 {
                g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Covers every ticket issued so far: their changes were made before they asked.
            g.2 = true;
            let covers = g.0;
            drop(g);
            let r = std::fs::File::open(dir).and_then(|f| f.sync_all());
            g = lock();
            g.2 = false;
            if r.is_ok() {
                g.1 = g.1.max(covers);
            }
            self.done.notify_all();
            r?;
        }
    }
}

/// Envelopes up to this size are rewritten in place (one page: one write the kernel does
/// not split).
const ENVELOPE_IN_PLACE: usize = 4096;

fn dir_bytes(dir: &Path, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Spool {
    /// Creates the directories, removes messages whose reception never finished (they were
    /// never acknowledged), and counts what is on disk.
    pub fn open(dir: &Path, quota: u64) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir.join("held"))?;
        std::fs::create_dir_all(dir.join("bounced"))?;
        for d in [dir.to_path_buf(), dir.join("held"), dir.join("bounced")] {
            for e in std::fs::read_dir(&d)?.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().to_string();
                if n.ends_with(".part") || n.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let s = Spool {
            dir: dir.to_path_buf(),
            quota,
            on_disk: AtomicU64::new(0),
            arriving: AtomicU64::new(0),
            busy: Mutex::new(HashSet::new()),
            due: Mutex::new(HashMap::new()),
            arrived: tokio::sync::Notify::new(),
            dir_sync: std::sync::Arc::new(GroupSync::default()),
        };
        s.recount();
        Ok(s)
    }

    pub fn recount(&self) {
        let n = dir_bytes(&self.dir, ".eml") + dir_bytes(&self.dir.join("held"), ".eml");
        self.on_disk.store(n, Ordering::Relaxed);
    }

    /// Whether `n` more bytes fit now (a hint before the data arrives).
    pub fn has_room(&self, n: u64) -> bool {
        self.on_disk.load(Ordering::Relaxed) + self.arriving.load(Ordering::Relaxed) + n
            <= self.quota
    }

    fn reserve(&self, n: u64) -> bool {
        let before = self.arriving.fetch_add(n, Ordering::Relaxed);
        if self.on_disk.load(Ordering::Relaxed) + before + n > self.quota {
            self.arriving.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Starts receiving a message.
    pub(super) async fn receive(&self, received: i64) -> anyhow::Result<Incoming<'_>> {
        let id = format!("{received}-{}", hex(&random(6)?));
        let part = self.dir.join(format!("{id}.part"));
        let file = tokio::fs::File::create(&part).await?;
        Ok(Incoming {
            spool: self,
            id,
            part,
            // Each write of a tokio file is a trip to the blocking pool: 64 KiB at a time.
            file: Some(tokio::io::BufWriter::with_capacity(64 * 1024, file)),
            reserved: 0,
            full: false,
            done: false,
        })
    }

    /// Ids of complete queued messages, oldest first.
    pub fn queued(&self) -> Vec<String> {
        let mut ids: Vec<String> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                Vec::new()
            }
        };
        ids.sort();
        ids
    }

    /// The envelope and message; `None` if gone. An envelope that does not parse is an error.
    pub fn load(&self, id: &str) -> anyhow::Result<Option<(Envelope, Vec<u8>)>> {
        let env_path = self.dir.join(format!("{id}.json"));
        let msg_path = self.dir.join(format!("{id}.eml"));
        let (Ok(e), Ok(m)) = (std::fs::read(&env_path), std::fs::read(&msg_path)) else {
            // Moved to held/ by an interrupted hold: finish it.
            if !msg_path.exists() && self.dir.join("held").join(format!("{id}.eml")).exists() {
                let _ = std::fs::remove_file(&env_path);
            }
            return Ok(None);
        };
        Ok(Some((serde_json::from_slice(&e)?, m)))
    }

    /// Fsyncs the spool directory (group commit: one fsync for every caller waiting).
    /// Blocking.
    pub(super) fn sync_dir(&self) -> std::io::Result<()> {
        self.dir_sync.sync(&self.dir)
    }

    /// Rewrites the envelope without fsync: for its processing-attempts counter, which must
    /// survive a crash of the daemon (the page cache keeps it) but not of the machine (a
    /// message then counts one attempt less).
    ///
    /// In place when it fits in one page (one `pwrite` at offset 0 that is never shorter
    /// than what it replaces, padded with JSON whitespace, so even a kill in the middle
    /// leaves one whole envelope): no new inode per write, which is what the file system
    /// spends most of its time on under load. A larger one: tmp file and rename.
    pub(super) fn save_envelope_cached(&self, id: &str, env: &Envelope) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join(format!("{id}.json"));
        let mut data = serde_json::to_vec(env)?;
        if data.len() <= ENVELOPE_IN_PLACE
            && let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path)
        {
            let old = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
            if old <= ENVELOPE_IN_PLACE {
                if data.len() < old {
                    data.resize(old, b' ');
                }
                f.write_all_at(&data, 0)?;
                return Ok(());
            }
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Unlinks a message's envelope (the message no longer exists; gone already: fine).
    /// One metadata operation, no fsync: see [`Spool::remove_delivered`].
    pub(super) fn unlink_envelope(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes a message every recipient of which the next hop took: the envelope first,
    /// durably (the message no longer exists, so it is never sent again), then the rest.
    /// Blocking.
    pub(super) fn remove_delivered(&self, id: &str) -> std::io::Result<()> {
        self.unlink_envelope(id)?;
        self.sync_dir()?;
        self.remove(id);
        Ok(())
    }

    /// Deletes a delivered message.
    pub fn remove(&self, id: &str) {
        let msg_path = self.dir.join(format!("{id}.eml"));
        let size = std::fs::metadata(&msg_path).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.state")));
        if let Ok(mut d) = self.due.lock() {
            d.remove(id);
        }
        if std::fs::remove_file(&msg_path).is_ok() {
            let _ = self
                .on_disk
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(size))
                });
        }
    }

    /// Moves a message, unchanged, to `held/`, its envelope (with the reason) first.
    pub fn hold(&self, id: &str, env: &Envelope) -> anyhow::Result<()> {
        let held = self.dir.join("held");
        write_synced(
            &held.join(format!("{id}.json")),
            &serde_json::to_vec_pretty(env)?,
        )?;
        let state = self.dir.join(format!("{id}.state"));
        if state.exists() {
            std::fs::rename(&state, held.join(format!("{id}.state")))?;
        }
        std::fs::rename(
            self.dir.join(format!("{id}.eml")),
            held.join(format!("{id}.eml")),
        )?;
        std::fs::File::open(&held)?.sync_all()?;
        std::fs::remove_file(self.dir.join(format!("{id}.json")))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        if let Ok(mut d) = self.due.lock() {
            d.remove(id);
        }
        Ok(())
    }

    /// Queues messages that are complete in memory and relayed as they are (submission's
    /// signed and encrypted copies), all or none: every message file is written and fsynced,
    /// then every envelope (its presence makes the message exist), then the directory is
    /// fsynced once. Blocking: call it off the executor. Returns the ids, in order; `Ok(None)`
    /// when the quota has no room for them.
    pub fn enqueue(&self, messages: &[(Envelope, &[u8])]) -> anyhow::Result<Option<Vec<String>>> {
        let total: u64 = messages.iter().map(|(_, m)| m.len() as u64).sum();
        if !self.reserve(total) {
            return Ok(None);
        }
        let r = self.enqueue_reserved(messages);
        self.arriving.fetch_sub(total, Ordering::Relaxed);
        let ids = r?;
        self.on_disk.fetch_add(total, Ordering::Relaxed);
        self.arrived.notify_one();
        Ok(Some(ids))
    }

    fn enqueue_reserved(&self, messages: &[(Envelope, &[u8])]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut written: Vec<PathBuf> = Vec::new();
        let result = (|| -> anyhow::Result<()> {
            for (env, msg) in messages {
                let id = format!("{}-{}", env.received, hex(&random(6)?));
                let part = self.dir.join(format!("{id}.part"));
                written.push(part.clone());
                let mut f = std::fs::File::create(&part)?;
                f.write_all(msg)?;
                f.sync_all()?;
                let eml = self.dir.join(format!("{id}.eml"));
                std::fs::rename(&part, &eml)?;
                written.push(eml);
                ids.push(id);
            }
            for ((env, _), id) in messages.iter().zip(&ids) {
                let json = self.dir.join(format!("{id}.json"));
                let tmp = self.dir.join(format!("{id}.json.tmp"));
                written.push(tmp.clone());
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&serde_json::to_vec(env)?)?;
                f.sync_all()?;
                written.push(json.clone());
                std::fs::rename(&tmp, &json)?;
            }
            self.sync_dir()?;
            Ok(())
        })();
        if let Err(e) = result {
            // Nothing was acknowledged: none of it stays.
            for p in written.iter().rev() {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        Ok(ids)
    }

    /// Moves a message whose envelope cannot be read to `held/` as it is.
    pub fn hold_raw(&self, id: &str) -> std::io::Result<()> {
        for ext in ["eml", "json"] {
            std::fs::rename(
                self.dir.join(format!("{id}.{ext}")),
                self.dir.join("held").join(format!("{id}.{ext}")),
            )?;
        }
        Ok(())
    }
}

/// A message being received; removed unless [`Incoming::commit`] is called.
pub(super) struct Incoming<'a> {
    spool: &'a Spool,
    id: String,
    part: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    reserved: u64,
    full: bool,
    done: bool,
}

impl Incoming<'_> {
    /// Appends a line (given without its line end); false once the quota is reached (the
    /// rest is discarded).
    pub async fn line(&mut self, line: &[u8]) -> anyhow::Result<bool> {
        self.write(&[line, b"\r\n"]).await
    }

    /// Appends bytes as they are (BDAT chunks); false once the quota is reached.
    pub async fn bytes(&mut self, bytes: &[u8]) -> anyhow::Result<bool> {
        self.write(&[bytes]).await
    }

    async fn write(&mut self, parts: &[&[u8]]) -> anyhow::Result<bool> {
        if self.full {
            return Ok(false);
        }
        let n: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if !self.spool.reserve(n) {
            self.full = true;
            return Ok(false);
        }
        self.reserved += n;
        let Some(f) = self.file.as_mut() else {
            anyhow::bail!("spool file closed");
        };
        for p in parts {
            f.write_all(p).await?;
        }
        Ok(true)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.reserved
    }

    /// The bytes received so far, read back (for the scan before the `250`).
    pub async fn contents(&mut self) -> anyhow::Result<Vec<u8>> {
        let Some(f) = self.file.as_mut() else {
            anyhow::bail!("spool file closed");
        };
        f.flush().await?;
        Ok(tokio::fs::read(&self.part).await?)
    }

    /// Makes the message durable and visible to the delivery loop; returns its id.
    pub async fn commit(mut self, env: &Envelope) -> anyhow::Result<String> {
        let Some(mut f) = self.file.take() else {
            anyhow::bail!("spool file closed");
        };
        f.flush().await?;
        let f = f.into_inner().into_std().await;
        let dir = self.spool.dir.clone();
        let dir_sync = self.spool.dir_sync.clone();
        let id = self.id.clone();
        let part = self.part.clone();
        let env = serde_json::to_vec(env)?;
        let json = dir.join(format!("{id}.json"));
        let json_tmp = dir.join(format!("{id}.json.tmp"));
        // The message and its envelope fsynced side by side (two waits become one), both
        // before either is renamed into place; the envelope, which makes the message exist,
        // is renamed last, then the directory fsynced (grouped with other sessions').
        let tmp = json_tmp.clone();
        let (body, envelope) = tokio::join!(
            tokio::task::spawn_blocking(move || f.sync_all()),
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut j = std::fs::File::create(&tmp)?;
                j.write_all(&env)?;
                j.sync_all()
            }),
        );
        body??;
        envelope??;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            std::fs::rename(&part, dir.join(format!("{id}.eml")))?;
            std::fs::rename(&json_tmp, &json)?;
            dir_sync.sync(&dir)?;
            Ok(())
        })
        .await??;
        self.done = true;
        self.spool
            .arriving
            .fetch_sub(self.reserved, Ordering::Relaxed);
        self.spool
            .on_disk
            .fetch_add(self.reserved, Ordering::Relaxed);
        Ok(self.id.clone())
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.spool
                .arriving
                .fetch_sub(self.reserved, Ordering::Relaxed);
            let _ = std::fs::remove_file(&self.part);
            let _ = std::fs::remove_file(self.spool.dir.join(format!("{}.eml", self.id)));
            let _ = std::fs::remove_file(self.spool.dir.join(format!("{}.json", self.id)));
            let _ = std::fs::remove_file(self.spool.dir.join(format!("{}.json.tmp", self.id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            direction: Direction::Decrypt,
            from: "a@b".into(),
            to: vec!["c@d".into()],
            client: "127.0.0.1".into(),
            client_name: None,
            received: 1,
            attempts: 0,
            held_reason: None,
            released: None,
            auth: None,
        }
    }

    #[test]
    fn concurrent_directory_syncs_are_grouped_and_all_return() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = std::sync::Arc::new(GroupSync::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, d) = (g.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || g.sync(&d))
            })
            .collect();
        for t in threads {
            t.join().expect("join").expect("sync");
        }
        let s = g.state.lock().expect("lock");
        assert_eq!((s.0, s.1, s.2), (8, 8, false), "every ticket covered");
        drop(s);
        // A directory that cannot be opened: the error, and nothing counted as covered.
        assert!(g.sync(&dir.path().join("missing")).is_err());
        assert_eq!(g.state.lock().expect("lock").1, 8);
    }

    #[test]
    fn the_attempts_counter_is_rewritten_in_place_and_reads_back_whole() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 1 << 20).expect("spool");
        let mut e = env();
        e.attempts = 9;
        let json = dir.path().join("m1.json");
        std::fs::write(&json, serde_json::to_vec(&e).expect("json")).expect("write");
        let inode = std::fs::metadata(&json).expect("meta").ino();
        // Longer (10), then shorter (0): the same file, padded, and it parses.
        for n in [10, 0] {
            e.attempts = n;
            spool.save_envelope_cached("m1", &e).expect("save");
            assert_eq!(std::fs::metadata(&json).expect("meta").ino(), inode);
            let back: Envelope =
                serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("parse");
            assert_eq!(back.attempts, n);
        }
        // One that does not fit in a page: replaced whole.
        e.to = (0..400).map(|i| format!("r{i}@example.org")).collect();
        spool.save_envelope_cached("m1", &e).expect("save");
        let back: Envelope =
            serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("parse");
        assert_eq!(back.to.len(), 400);
    }

    #[tokio::test]
    async fn quota_refuses_lines_beyond_it_and_drops_the_partial_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let spool = Spool::open(dir.path(), 100).expect("spool");
        let mut a = spool.receive(1).await.expect("receive");
        assert!(a.line(&[b'a'; 58]).await.expect("line"));
        let id = a.commit(&env()).await.expect("commit");
        assert!(dir.path().join(format!("{id}.eml")).exists());
        assert!(!spool.has_room(50));
        let mut b = spool.receive(2).await.expect("receive");
        assert!(b.line(&[b'b'; 30]).await.expect("line"));
        assert!(!b.line(&[b'b'; 30]).await.expect("line"), "over the quota");
        drop(b);
        assert_eq!(
            std::fs::read_dir(dir.path())
                .expect("dir")
                .filter(|e| e
                    .as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".part")))
                .count(),
            0
        );
        // Delivery gives the room back.
        spool.remove(&id);
        assert!(spool.has_room(90));
        // Held messages keep counting, also after a restart.
        let mut c = spool.receive(3).await.expect("receive");
        assert!(c.line(&[b'c'; 58]).await.expect("line"));
        let id = c.commit(&env()).await.expect("commit");
        let mut e = env();
        e.held_reason = Some("test".into());
        spool.hold(&id, &e).expect("hold");
        let spool = Spool::open(dir.path(), 100).expect("reopen");
        assert!(!spool.has_room(50));
        assert!(spool.queued().is_empty());
        let held: Envelope = serde_json::from_slice(
            &std::fs::read(dir.path().join("held").join(format!("{id}.json"))).expect("held"),
        )
        .expect("json");
        assert_eq!(held.held_reason.as_deref(), Some("test"));
    }
}
