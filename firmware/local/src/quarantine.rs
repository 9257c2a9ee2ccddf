//! The quarantine: messages content scanning kept from delivery, on the data directory
//! (`DATA/quarantine/`), encrypted at rest, until an auditor releases or deletes them or
//! their retention ends. Shared by the daemon (which writes and releases) and `sealctl
//! quarantine` (which reads it without a daemon).
//!
//! One entry is two files, each `nonce || AES-256-GCM(...)` under the key the vault derives
//! for the quarantine (`Vault::derived_key("quarantine")`, never stored):
//! - `ID.msg`: the message as it came (incoming `X-Sealgate-*` fields removed);
//! - `ID.idx`: the index record ([`Meta`]: time, direction, sender, recipients, action,
//!   labels, score, reason), written last: its presence makes the entry exist.
//!
//! The associated data names the file's kind and id, so a record moved to another id or kind
//! does not decrypt. Nothing about a message is in clear on disk but its id (its arrival
//! time and random hex) and its size; the index is decrypted to list (entries are few, and
//! a listing reads one small file per entry). Durability is the queue's: every file is
//! written to a temporary name, fsynced, renamed, and the folder fsynced before [`Store::put`]
//! returns (the SMTP `250` comes after it). Attacker: whoever reads the data partition
//! without the vault (a stolen disk, a backup): sees ids and sizes only; whoever writes it:
//! can delete entries, not forge or alter one (GCM).

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The purpose the vault's derived key is asked for.
pub const KEY_PURPOSE: &str = "quarantine";

/// An entry's index record (encrypted at rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The quarantine id (`TIME-HEX`).
    #[serde(default)]
    pub id: String,
    /// When it was quarantined (Unix seconds).
    pub time: i64,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The envelope sender (empty for `<>`).
    pub from: String,
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The client's address.
    #[serde(default)]
    pub client: String,
    /// The scanner's action (`quarantine`, `reject`, ...).
    pub action: String,
    /// The scanner's labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The scanner's score.
    #[serde(default)]
    pub score: f64,
    /// Why it is here (the scanner's verdict line).
    #[serde(default)]
    pub reason: String,
    /// The message's size in bytes.
    #[serde(default)]
    pub size: u64,
}

/// Whether `id` may name an entry (`[0-9a-z-]`, not starting with `-`, at most 80).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// The quarantine folder and its key.
pub struct Store {
    dir: PathBuf,
    key: LessSafeKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn aad(kind: &str, id: &str) -> Vec<u8> {
    format!("sealgate quarantine {kind} v1\n{id}").into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// Opens (creating, mode 0700) `dir` with the quarantine key; removes what an interrupted
    /// write left (temporary files, a message without its index).
    pub fn open(dir: &Path, key: &[u8; 32]) -> std::io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key)
                .map_err(|_| std::io::Error::other("quarantine key"))?,
        );
        let s = Store {
            dir: dir.to_path_buf(),
            key,
        };
        s.clean();
        Ok(s)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn clean(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let orphan = match name.strip_suffix(".msg") {
                Some(id) => !self.dir.join(format!("{id}.idx")).exists(),
                None => name.ends_with(".tmp"),
            };
            if orphan {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn seal(&self, kind: &str, id: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("no randomness"))?;
        let mut buf = data.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(kind, id)),
                &mut buf,
            )
            .map_err(|_| std::io::Error::other("cannot encrypt"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn unseal(&self, kind: &str, id: &str, sealed: &[u8]) -> std::io::Result<Vec<u8>> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("quarantine entry {id}: does not decrypt (another vault, or altered)"),
            )
        };
        if sealed.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(kind, id)), &mut buf)
            .map_err(|_| bad())?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }

    fn write_synced(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.dir.join(format!("{name}.tmp"));
        let r = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Stores a message durably (both files and the folder fsynced); returns its id.
    pub fn put(&self, meta: &Meta, message: &[u8]) -> std::io::Result<String> {
        let mut rnd = [0u8; 6];
        SystemRandom::new()
            .fill(&mut rnd)
            .map_err(|_| std::io::Error::other("no randomness"))?;
        let id = format!("{}-{}", meta.time.max(0), hex(&rnd));
        let mut meta = meta.clone();
        meta.id = id.clone();
        meta.size = message.len() as u64;
        let index = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        let r = (|| {
            self.write_synced(&format!("{id}.msg"), &self.seal("message", &id, message)?)?;
            self.write_synced(&format!("{id}.idx"), &self.seal("index", &id, &index)?)?;
            self.sync_dir()
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.idx")));
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.msg")));
            return Err(e);
        }
        Ok(id)
    }

    /// The ids present, oldest first.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().to_string();
                        n.strip_suffix(".idx")
                            .filter(|id| valid_id(id))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_by(|a, b| {
            let t = |s: &str| s.split('-').next().and_then(|t| t.parse::<i64>().ok());
            (t(a), a).cmp(&(t(b), b))
        });
        ids
    }

    /// One entry's index record (`None`: no such entry).
    pub fn meta(&self, id: &str) -> std::io::Result<Option<Meta>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let sealed = match std::fs::read(self.dir.join(format!("{id}.idx"))) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = self.unseal("index", id, &sealed)?;
        let mut m: Meta = serde_json::from_slice(&plain).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("index {id}: {e}"))
        })?;
        m.id = id.to_string();
        Ok(Some(m))
    }

    /// Every entry's index record, oldest first (an entry that does not decrypt is left out
    /// and named in the second list).
    pub fn list(&self) -> (Vec<Meta>, Vec<String>) {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for id in self.ids() {
            match self.meta(&id) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(_) => bad.push(id),
            }
        }
        (out, bad)
    }

    /// One entry: its index record and the message.
    pub fn get(&self, id: &str) -> std::io::Result<Option<(Meta, Vec<u8>)>> {
        let Some(m) = self.meta(id)? else {
            return Ok(None);
        };
        let sealed = std::fs::read(self.dir.join(format!("{id}.msg")))?;
        Ok(Some((m, self.unseal("message", id, &sealed)?)))
    }

    /// Rewrites an entry's index record durably (a release to some of its recipients leaves
    /// the others); false when there is no such entry.
    pub fn update_meta(&self, meta: &Meta) -> std::io::Result<bool> {
        let id = meta.id.as_str();
        if !valid_id(id) || !self.dir.join(format!("{id}.idx")).exists() {
            return Ok(false);
        }
        let index = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        self.write_synced(&format!("{id}.idx"), &self.seal("index", id, &index)?)?;
        self.sync_dir()?;
        Ok(true)
    }

    /// Removes an entry durably (its index first); false when there was none.
    pub fn remove(&self, id: &str) -> std::io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        match std::fs::remove_file(self.dir.join(format!("{id}.idx"))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.msg")));
        self.sync_dir()?;
        Ok(true)
    }

    /// Bytes on disk (both files of every entry).
    pub fn bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Removes the entries quarantined more than `days` days before `now`; their ids. The
    /// time is the id's (written in clear at quarantine), so even an entry that no longer
    /// decrypts (an earlier vault) leaves when its time is up.
    pub fn purge(&self, now: i64, days: u32) -> Vec<String> {
        let limit = now - i64::from(days) * 86_400;
        let mut gone = Vec::new();
        for id in self.ids() {
            let t = id.split('-').next().and_then(|t| t.parse::<i64>().ok());
            if t.is_some_and(|t| t < limit) && self.remove(&id).unwrap_or(false) {
                gone.push(id);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(t: i64) -> Meta {
        Meta {
            id: String::new(),
            time: t,
            direction: "inbound".into(),
            from: "sender@example.net".into(),
            to: vec!["alice@example.org".into()],
            client: "192.0.2.1".into(),
            action: "quarantine".into(),
            labels: vec!["virus".into()],
            score: 100.0,
            reason: "action=quarantine; score=100; labels=virus".into(),
            size: 0,
        }
    }

    #[test]
    fn entries_are_encrypted_durable_and_bound_to_their_id() {
        let d = tempfile::tempdir().expect("tmp");
        let dir = d.path().join("quarantine");
        let s = Store::open(&dir, &[7u8; 32]).expect("open");
        let msg = b"Subject: secret plans\r\n\r\nthe cleartext body\r\n";
        let id = s.put(&meta(1_700_000_000), msg).expect("put");
        assert!(valid_id(&id));
        for e in std::fs::read_dir(&dir).expect("dir").flatten() {
            let b = std::fs::read(e.path()).expect("read");
            for needle in [&b"cleartext"[..], b"alice", b"sender", b"virus"] {
                assert!(!b.windows(needle.len()).any(|w| w == needle));
            }
        }
        let (m, got) = s.get(&id).expect("get").expect("present");
        assert_eq!(got, msg);
        assert_eq!(m.id, id);
        assert_eq!(m.size, msg.len() as u64);
        assert_eq!(s.list().0.len(), 1);
        // Another key reads nothing; a record moved to another id does not decrypt.
        let other = Store::open(&dir, &[8u8; 32]).expect("open");
        assert!(other.get(&id).is_err());
        assert_eq!(other.list().1, vec![id.clone()]);
        let id2 = s.put(&meta(1_700_000_001), b"x").expect("put");
        std::fs::copy(
            dir.join(format!("{id}.msg")),
            dir.join(format!("{id2}.msg")),
        )
        .expect("cp");
        assert!(s.get(&id2).is_err());
        // An index rewritten keeps its message.
        let (mut m1, _) = s.get(&id).expect("get").expect("present");
        m1.to.clear();
        assert!(s.update_meta(&m1).expect("update"));
        assert!(s.meta(&id).expect("meta").expect("present").to.is_empty());
        assert_eq!(s.get(&id).expect("get").expect("present").1, msg);
        // Paths are never ids.
        assert!(s.get("../x").expect("refused").is_none());
        assert!(!s.remove("../../etc").expect("refused"));
        // Retention: the older one goes.
        assert_eq!(s.purge(1_700_000_000 + 86_400 + 1, 1), vec![id.clone()]);
        assert!(s.get(&id).expect("get").is_none());
        assert!(s.remove(&id2).expect("rm"));
        assert!(s.list().0.is_empty());
        // What an interrupted write left is removed at open.
        std::fs::write(dir.join("1-aa.msg"), b"x").expect("w");
        std::fs::write(dir.join("1-ab.idx.tmp"), b"x").expect("w");
        let _ = Store::open(&dir, &[7u8; 32]).expect("open");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    }
}
