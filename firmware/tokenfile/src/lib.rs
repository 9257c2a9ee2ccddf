//! `sealgate-tokenfile`: the docking API's token file, `DATA/api-tokens.json`, owned here and
//! nowhere else: its format, its lock and its atomic writes.
//!
//! Writers: `sealgated` (the admin API's create and revoke, the reset of admin access) and
//! `sealctl api-token` when no daemon answers on the data directory (with a daemon it asks
//! the daemon). Every writer holds the exclusive lock on `DATA/api-tokens.lock` (`flock`, so
//! it is released if a writer dies) from reading the file to replacing it, so two writers
//! never lose each other's change. Readers take no lock: the file is only ever replaced
//! whole (temporary file, fsync, rename, fsync of the folder), so a reader sees the old or
//! the new file. The lock file holds nothing and is mode 0644, so the daemon's unprivileged
//! user can lock a file that root's `sealctl` created.
//!
//! The format (version 1); the file holds only SHA-256 hashes of the tokens (a token is
//! 256 random bits, so a plain hash is enough):
//!
//! ```json
//! {"version":1,"tokens":[{"name":"gw1","sha256":"<hex>","scopes":["decrypt"],"created":"<RFC 3339>"}]}
//! ```
//!
//! Scopes are generic (`S`): the daemon reads them into its settings' `Scope`, `sealctl`
//! keeps them as checked strings; the JSON is the same.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use aws_lc_rs::rand::SecureRandom;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The token file's name in the data directory.
pub const TOKENS_FILE: &str = "api-tokens.json";
/// The writers' lock file's name in the data directory.
pub const LOCK_FILE: &str = "api-tokens.lock";
/// Prefix of every docking token, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "sgt_";
/// The format's version.
pub const VERSION: u32 = 1;

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord<S> {
    /// Unique name (the client in the audit log).
    pub name: String,
    /// SHA-256 of the token text, hex.
    pub sha256: String,
    /// What it may call.
    pub scopes: Vec<S>,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile<S> {
    /// [`VERSION`].
    pub version: u32,
    /// The tokens.
    pub tokens: Vec<TokenRecord<S>>,
}

impl<S> Default for TokenFile<S> {
    fn default() -> Self {
        TokenFile {
            version: VERSION,
            tokens: Vec::new(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    // One allocation, no formatter: this runs for every fingerprint a request computes.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

/// A fresh token: [`TOKEN_PREFIX`] + 256 random bits in hex.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the random number generator failed"))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&b)))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// The writers' exclusive lock on a data directory's token file; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
}

/// Takes the writers' lock of `data_dir` (waits for another writer).
pub fn lock(data_dir: &Path) -> Result<Lock> {
    let path = data_dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .or_else(|_| fs::File::open(&path))
        .with_context(|| format!("opening {}", path.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock { _file: f })
}

/// Reads the file of `data_dir` (a missing file is an empty one). A file that does not
/// parse, or has another version, is an error: it accepts no token (fails closed).
pub fn load<S: DeserializeOwned>(data_dir: &Path) -> Result<TokenFile<S>> {
    let path = data_dir.join(TOKENS_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let f: TokenFile<S> =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        f.version == VERSION,
        "{}: unknown version {}",
        path.display(),
        f.version
    );
    Ok(f)
}

/// Replaces the file of `data_dir` with `f`; `_lock` shows the writer holds the lock.
pub fn store<S: Serialize>(data_dir: &Path, f: &TokenFile<S>, _lock: &Lock) -> Result<()> {
    write_atomic(&data_dir.join(TOKENS_FILE), &serde_json::to_vec_pretty(f)?)
}

/// Adds a token `name` with `scopes` (under the lock); fails if the name exists. Returns the
/// token text (shown once).
pub fn create<S: Serialize + DeserializeOwned + Clone>(
    data_dir: &Path,
    name: &str,
    scopes: &[S],
) -> Result<String> {
    let l = lock(data_dir)?;
    let mut f = load::<S>(data_dir)?;
    anyhow::ensure!(
        !f.tokens.iter().any(|t| t.name == name),
        "a token named {name:?} exists"
    );
    let token = new_token()?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    f.tokens.push(TokenRecord {
        name: name.to_string(),
        sha256: token_hash(&token),
        scopes: scopes.to_vec(),
        created,
    });
    store(data_dir, &f, &l)?;
    Ok(token)
}

/// Removes the token `name` (under the lock): `Ok(false)` if there is none.
pub fn revoke<S: Serialize + DeserializeOwned>(data_dir: &Path, name: &str) -> Result<bool> {
    let l = lock(data_dir)?;
    if !data_dir.join(TOKENS_FILE).exists() {
        return Ok(false);
    }
    let mut f = load::<S>(data_dir)?;
    let before = f.tokens.len();
    f.tokens.retain(|t| t.name != name);
    if f.tokens.len() == before {
        return Ok(false);
    }
    store(data_dir, &f, &l)?;
    Ok(true)
}

/// Writes `data` atomically (mode 0600) with `sealgate-local`'s one atomic write: temporary
/// file, fsync, rename over `path`, fsync of the folder: readers see the old or the new file, and a power cut
/// leaves one of them.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    sealgate_local::fsio::write_atomic(path, data, sealgate_local::fsio::Mode::Exactly(0o600))
        .with_context(|| format!("replacing {}", path.display()))
}

/// fsyncs a folder (so a rename or removal in it is durable).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    sealgate_local::fsio::sync_folder(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_created_hashed_found_and_revoked() {
        let d = tempfile::tempdir().unwrap();
        let t = create(d.path(), "gw", &["decrypt".to_string()]).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() == 68);
        let text = fs::read_to_string(d.path().join(TOKENS_FILE)).unwrap();
        assert!(!text.contains(&t) && text.contains(&token_hash(&t)));
        assert!(create(d.path(), "gw", &["sign".to_string()]).is_err());
        let f = load::<String>(d.path()).unwrap();
        assert_eq!(f.tokens[0].scopes, ["decrypt"]);
        assert!(revoke::<String>(d.path(), "gw").unwrap());
        assert!(!revoke::<String>(d.path(), "gw").unwrap());
        assert!(load::<String>(d.path()).unwrap().tokens.is_empty());
        // Unknown versions and fields fail closed.
        fs::write(d.path().join(TOKENS_FILE), br#"{"version":2,"tokens":[]}"#).unwrap();
        assert!(load::<String>(d.path()).is_err());
        fs::write(
            d.path().join(TOKENS_FILE),
            br#"{"version":1,"tokens":[],"x":1}"#,
        )
        .unwrap();
        assert!(load::<String>(d.path()).is_err());
    }

    /// Regression: three writers shared the file without a lock, so concurrent creates lost
    /// each other's token. With the lock every one of them stays.
    #[test]
    fn concurrent_writers_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        create(&dir, &format!("t{i}-{j}"), &["verify".to_string()]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(load::<String>(d.path()).unwrap().tokens.len(), 80);
    }
}
