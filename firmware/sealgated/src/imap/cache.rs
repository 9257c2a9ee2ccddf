//! What the proxy has shown for each message, per `(account, mailbox, UIDVALIDITY, UID)`:
//! a bounded memory tier in front of a persistent one on disk (`DATA/imap-cache/`), so a
//! message keeps the same look and size across sessions and restarts.
//!
//! **On disk, everything is encrypted** (AES-256-GCM under a key derived from the vault key,
//! [`sealgate_vault::Vault::derived_key`], never stored): a record's associated data is its
//! whole cache key, so a record moved to another user's, mailbox's or message's place does
//! not open (it is then removed and the message decrypted again). Folder names are an HMAC of
//! account and mailbox (the names are not on the disk); file names are `UIDVALIDITY.UID`.
//! The disk tier is bounded in bytes and evicts the least recently used records; a new
//! UIDVALIDITY for a mailbox removes every record of the old one.
//!
//! Attackers: *another user of the proxy* (their records are in other folders under other
//! associated data: a key that names alice never opens a record written for mallory);
//! *someone who reads the disk* (ciphertext and UIDs only); *someone who writes the disk*
//! (a changed or swapped record fails to open and counts as absent).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use sealgate_imap::view::View;
use zeroize::Zeroizing;

/// What the proxy shows for one message.
#[derive(Debug)]
pub enum Shown {
    /// As the server stores it (not encrypted to this user's keys, or nothing to do).
    Stored,
    /// The decrypted view (or the stored message with a header saying why it was not).
    View(View),
}

/// `(account, mailbox, UIDVALIDITY, UID)`.
pub type CacheKey = (String, String, u32, u32);

/// Records on disk at most (each message is one file).
const MAX_RECORDS: usize = 200_000;

/// The memory tier, bounded in bytes (oldest first out), and the disk tier if there is one.
pub struct ViewCache {
    inner: Mutex<CacheInner>,
    max_bytes: usize,
    disk: Option<DiskCache>,
}

struct CacheInner {
    map: HashMap<CacheKey, Arc<Shown>>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

fn weight(s: &Shown) -> usize {
    match s {
        Shown::Stored => 64,
        Shown::View(v) => v.bytes().len() * 2 + 64,
    }
}

impl ViewCache {
    /// A cache of at most `max_bytes` of views in memory, backed by `disk` if given.
    pub fn new(max_bytes: usize, disk: Option<DiskCache>) -> ViewCache {
        ViewCache {
            inner: Mutex::new(CacheInner {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            max_bytes,
            disk,
        }
    }

    /// The entry for `k` (memory, else disk). Blocking: call it off the async threads.
    pub fn get(&self, k: &CacheKey) -> Option<Arc<Shown>> {
        if let Some(s) = self.inner.lock().ok()?.map.get(k).cloned() {
            return Some(s);
        }
        let s = Arc::new(self.disk.as_ref()?.get(k)?);
        self.remember(k.clone(), s.clone());
        Some(s)
    }

    /// Whether `k` is kept (memory, or a record on disk), without opening it. Blocking.
    pub fn contains(&self, k: &CacheKey) -> bool {
        if self.inner.lock().is_ok_and(|c| c.map.contains_key(k)) {
            return true;
        }
        self.disk.as_ref().is_some_and(|d| d.path(k).exists())
    }

    /// Keeps `v` for `k` (memory and disk). Blocking: call it off the async threads.
    pub fn put(&self, k: CacheKey, v: Arc<Shown>) {
        if let Some(d) = &self.disk {
            d.put(&k, &v);
        }
        self.remember(k, v);
    }

    /// Drops every entry of `account`'s `mailbox` whose UIDVALIDITY is not `uidvalidity`.
    pub fn retain_uidvalidity(&self, account: &str, mailbox: &str, uidvalidity: u32) {
        if let Ok(mut c) = self.inner.lock() {
            let stale: Vec<CacheKey> = c
                .map
                .keys()
                .filter(|k| k.0 == account && k.1 == mailbox && k.2 != uidvalidity)
                .cloned()
                .collect();
            for k in stale {
                if let Some(old) = c.map.remove(&k) {
                    c.bytes = c.bytes.saturating_sub(weight(&old));
                }
            }
            let CacheInner { map, order, .. } = &mut *c;
            order.retain(|k| map.contains_key(k));
        }
        if let Some(d) = &self.disk {
            d.retain_uidvalidity(account, mailbox, uidvalidity);
        }
    }

    fn remember(&self, k: CacheKey, v: Arc<Shown>) {
        let Ok(mut c) = self.inner.lock() else {
            return;
        };
        let n = weight(&v);
        if let Some(old) = c.map.insert(k.clone(), v) {
            c.bytes = c.bytes.saturating_sub(weight(&old));
        } else {
            c.order.push_back(k);
        }
        c.bytes += n;
        while c.bytes > self.max_bytes {
            let Some(oldest) = c.order.pop_front() else {
                break;
            };
            if let Some(old) = c.map.remove(&oldest) {
                c.bytes = c.bytes.saturating_sub(weight(&old));
            }
        }
    }
}

/// The persistent tier: one encrypted file per message.
pub struct DiskCache {
    root: PathBuf,
    aead: LessSafeKey,
    names: hmac::Key,
    max_bytes: u64,
    index: Mutex<Index>,
}

/// Sizes and recency of the records on disk.
#[derive(Default)]
struct Index {
    /// Path → (bytes, last use).
    files: HashMap<PathBuf, (u64, u64)>,
    /// Last use → path (the oldest first).
    lru: BTreeMap<u64, PathBuf>,
    clock: u64,
    bytes: u64,
}

impl Index {
    fn touch(&mut self, p: &Path, size: u64) {
        self.clock += 1;
        let now = self.clock;
        if let Some((old_size, used)) = self.files.insert(p.to_path_buf(), (size, now)) {
            self.lru.remove(&used);
            self.bytes = self.bytes.saturating_sub(old_size);
        }
        self.lru.insert(now, p.to_path_buf());
        self.bytes += size;
    }

    fn forget(&mut self, p: &Path) {
        if let Some((size, used)) = self.files.remove(p) {
            self.lru.remove(&used);
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("root", &self.root)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

const RECORD_LABEL: &[u8] = b"sealgate imap view v1";

fn subkey(key: &[u8; 32], label: &[u8]) -> Zeroizing<Vec<u8>> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    Zeroizing::new(hmac::sign(&k, label).as_ref().to_vec())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The associated data of a record: the whole cache key, unambiguous (NUL never occurs in
/// the names: IMAP forbids it).
fn aad(k: &CacheKey) -> Vec<u8> {
    let mut a = RECORD_LABEL.to_vec();
    for part in [k.0.as_bytes(), k.1.as_bytes()] {
        a.push(0);
        a.extend_from_slice(&(part.len() as u64).to_be_bytes());
        a.extend_from_slice(part);
    }
    a.extend_from_slice(&k.2.to_be_bytes());
    a.extend_from_slice(&k.3.to_be_bytes());
    a
}

impl DiskCache {
    /// The cache under `root` (created 0700), keyed by `key`, holding at most `max_bytes`.
    /// Records already there are indexed (oldest modification first out); stray temporary
    /// files are removed.
    pub fn open(root: &Path, key: &[u8; 32], max_bytes: u64) -> anyhow::Result<DiskCache> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        let aead_key = subkey(key, b"records");
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &aead_key)
                .map_err(|_| anyhow::anyhow!("the cache key is not an AES key"))?,
        );
        let names = hmac::Key::new(hmac::HMAC_SHA256, &subkey(key, b"names"));
        let mut found: Vec<(std::time::SystemTime, PathBuf, u64)> = Vec::new();
        for dir in std::fs::read_dir(root)?.flatten() {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "tmp") {
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
                if let Ok(m) = f.metadata()
                    && found.len() < MAX_RECORDS
                {
                    found.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), p, m.len()));
                }
            }
        }
        found.sort();
        let mut index = Index::default();
        for (_, p, size) in found {
            index.touch(&p, size);
        }
        let c = DiskCache {
            root: root.to_path_buf(),
            aead,
            names,
            max_bytes,
            index: Mutex::new(index),
        };
        c.evict();
        Ok(c)
    }

    fn folder(&self, account: &str, mailbox: &str) -> PathBuf {
        let mut ctx = hmac::Context::with_key(&self.names);
        ctx.update(&(account.len() as u64).to_be_bytes());
        ctx.update(account.as_bytes());
        ctx.update(mailbox.as_bytes());
        self.root.join(hex(&ctx.sign().as_ref()[..16]))
    }

    fn path(&self, k: &CacheKey) -> PathBuf {
        self.folder(&k.0, &k.1).join(format!("{}.{}", k.2, k.3))
    }

    /// The record for `k`, if it is there and opens.
    pub fn get(&self, k: &CacheKey) -> Option<Shown> {
        let p = self.path(k);
        let sealed = std::fs::read(&p).ok()?;
        match self.open_record(k, &sealed) {
            Some(s) => {
                if let Ok(mut i) = self.index.lock() {
                    i.touch(&p, sealed.len() as u64);
                }
                Some(s)
            }
            None => {
                // Changed, moved here from elsewhere, or written under another vault.
                tracing::warn!(path = %p.display(), "imap cache: a record does not open; removed");
                let _ = std::fs::remove_file(&p);
                if let Ok(mut i) = self.index.lock() {
                    i.forget(&p);
                }
                None
            }
        }
    }

    fn open_record(&self, k: &CacheKey, sealed: &[u8]) -> Option<Shown> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad(k)), &mut buf)
            .ok()?;
        match plain.split_first()? {
            (0, []) => Some(Shown::Stored),
            (1, bytes) => Some(Shown::View(View::new(bytes))),
            _ => None,
        }
    }

    /// Writes the record for `k` (atomically: a temporary file renamed), then evicts the
    /// least recently used records past the bound. A failure only costs a later decryption.
    pub fn put(&self, k: &CacheKey, s: &Shown) {
        if self.max_bytes == 0 {
            return;
        }
        let mut plain = Zeroizing::new(Vec::new());
        match s {
            Shown::Stored => plain.push(0),
            Shown::View(v) => {
                plain.reserve(v.bytes().len() + 1);
                plain.push(1);
                plain.extend_from_slice(v.bytes());
            }
        }
        if plain.len() as u64 > self.max_bytes {
            return;
        }
        let mut nonce = [0u8; NONCE_LEN];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            return;
        }
        let mut buf = plain.to_vec();
        if self
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(k)),
                &mut buf,
            )
            .is_err()
        {
            return;
        }
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&buf);
        let p = self.path(k);
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            if let Some(dir) = p.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            let tmp = p.with_extension("tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&sealed)?;
            drop(f);
            std::fs::rename(&tmp, &p)
        })();
        if let Err(e) = written {
            tracing::warn!(error = %e, "imap cache: a record could not be written");
            return;
        }
        if let Ok(mut i) = self.index.lock() {
            i.touch(&p, sealed.len() as u64);
        }
        self.evict();
    }

    fn evict(&self) {
        let Ok(mut i) = self.index.lock() else {
            return;
        };
        while i.bytes > self.max_bytes || i.files.len() > MAX_RECORDS {
            let Some((_, p)) = i.lru.pop_first() else {
                break;
            };
            let _ = std::fs::remove_file(&p);
            if let Some((size, _)) = i.files.remove(&p) {
                i.bytes = i.bytes.saturating_sub(size);
            }
        }
    }

    /// Removes every record of `account`'s `mailbox` under another UIDVALIDITY.
    pub fn retain_uidvalidity(&self, account: &str, mailbox: &str, uidvalidity: u32) {
        let dir = self.folder(account, mailbox);
        let Ok(files) = std::fs::read_dir(&dir) else {
            return;
        };
        let keep = format!("{uidvalidity}.");
        let mut removed = 0usize;
        for f in files.flatten() {
            let name = f.file_name();
            if !name.to_string_lossy().starts_with(&keep) {
                let p = f.path();
                let _ = std::fs::remove_file(&p);
                if let Ok(mut i) = self.index.lock() {
                    i.forget(&p);
                }
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "imap cache: the mailbox's UIDVALIDITY changed; its records are removed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str, m: &str, v: u32, u: u32) -> CacheKey {
        (a.to_string(), m.to_string(), v, u)
    }

    fn view(text: &str) -> Shown {
        Shown::View(View::new(
            format!("Subject: s\r\n\r\n{text}\r\n").as_bytes(),
        ))
    }

    fn bytes(s: &Shown) -> Vec<u8> {
        match s {
            Shown::Stored => b"(stored)".to_vec(),
            Shown::View(v) => v.bytes().to_vec(),
        }
    }

    #[test]
    fn records_survive_a_reopen_and_are_encrypted() {
        let dir = tempfile::tempdir().expect("tmp");
        let k = [7u8; 32];
        let c = DiskCache::open(dir.path(), &k, 1 << 20).expect("open");
        c.put(&key("alice@x", "INBOX", 5, 1), &view("the secret plans"));
        c.put(&key("alice@x", "INBOX", 5, 2), &Shown::Stored);
        drop(c);
        let c = DiskCache::open(dir.path(), &k, 1 << 20).expect("reopen");
        let got = c.get(&key("alice@x", "INBOX", 5, 1)).expect("view");
        assert!(bytes(&got).ends_with(b"the secret plans\r\n"));
        assert!(matches!(
            c.get(&key("alice@x", "INBOX", 5, 2)),
            Some(Shown::Stored)
        ));
        // Nothing on disk names the account or the mailbox or holds the text.
        for d in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("alice") && !name.contains("INBOX"), "{name}");
            for f in std::fs::read_dir(d.path()).expect("dir").flatten() {
                let b = std::fs::read(f.path()).expect("read");
                assert!(!b.windows(6).any(|w| w == b"secret"));
            }
        }
        // Another vault (key) finds nothing, and a record put where it would look does not
        // open (and is removed).
        let other = DiskCache::open(dir.path(), &[8u8; 32], 1 << 20).expect("other");
        let k1 = key("alice@x", "INBOX", 5, 1);
        assert!(other.get(&k1).is_none());
        let dst = other.path(&k1);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(c.path(&k1), &dst).expect("copy");
        assert!(other.get(&k1).is_none());
        assert!(!dst.exists());
        assert!(c.get(&k1).is_some());
    }

    #[test]
    fn a_record_moved_to_another_users_place_does_not_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = DiskCache::open(dir.path(), &[1u8; 32], 1 << 20).expect("open");
        let alice = key("alice@x", "INBOX", 5, 1);
        c.put(&alice, &view("for alice only"));
        // Mallory's message with the same UIDs: alice's record copied into its place.
        for (to, _) in [
            (key("mallory@x", "INBOX", 5, 1), ()),
            (key("alice@x", "Other", 5, 1), ()),
            (key("alice@x", "INBOX", 5, 2), ()),
            (key("alice@x", "INBOX", 6, 1), ()),
        ] {
            let dst = c.path(&to);
            std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            std::fs::copy(c.path(&alice), &dst).expect("copy");
            assert!(c.get(&to).is_none(), "{to:?}");
            assert!(!dst.exists(), "{to:?}");
        }
        // A changed byte: not opened either.
        let p = c.path(&alice);
        let mut b = std::fs::read(&p).expect("read");
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&p, b).expect("write");
        assert!(c.get(&alice).is_none());
    }

    #[test]
    fn the_disk_is_bounded_least_recently_used_first_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = "x".repeat(1000);
        // Room for about three records.
        let c = DiskCache::open(dir.path(), &[2u8; 32], 3500).expect("open");
        for uid in 1..=3 {
            c.put(&key("a@x", "INBOX", 1, uid), &view(&text));
        }
        // UID 1 used again: UID 2 is now the least recently used.
        assert!(c.get(&key("a@x", "INBOX", 1, 1)).is_some());
        c.put(&key("a@x", "INBOX", 1, 4), &view(&text));
        assert!(c.get(&key("a@x", "INBOX", 1, 2)).is_none());
        for uid in [1, 3, 4] {
            assert!(c.get(&key("a@x", "INBOX", 1, uid)).is_some(), "{uid}");
        }
        // The bound holds across a reopen with a smaller size.
        drop(c);
        let c = DiskCache::open(dir.path(), &[2u8; 32], 1200).expect("reopen");
        let left = [1, 3, 4]
            .iter()
            .filter(|u| c.get(&key("a@x", "INBOX", 1, **u)).is_some())
            .count();
        assert_eq!(left, 1);
    }

    #[test]
    fn a_new_uidvalidity_drops_the_old_records_of_that_mailbox_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = ViewCache::new(
            1 << 20,
            Some(DiskCache::open(dir.path(), &[3u8; 32], 1 << 20).expect("open")),
        );
        c.put(key("a@x", "INBOX", 1, 1), Arc::new(view("old")));
        c.put(key("a@x", "Sent", 1, 1), Arc::new(view("sent")));
        c.put(key("b@x", "INBOX", 1, 1), Arc::new(view("b's")));
        c.retain_uidvalidity("a@x", "INBOX", 2);
        assert!(c.get(&key("a@x", "INBOX", 1, 1)).is_none());
        assert!(c.get(&key("a@x", "Sent", 1, 1)).is_some());
        assert!(c.get(&key("b@x", "INBOX", 1, 1)).is_some());
    }
}
