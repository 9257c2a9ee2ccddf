//! Certificates an administrator blocked: `DATA/directory-blocked.json`, never used to encrypt
//! whatever the source (the vault's own users included), next to `[directory] blocked` of the
//! settings. Written by the daemon's admin API (`POST/DELETE directory/blocked`) or, without a
//! daemon, by `sealctl`; each write is a temporary file, fsync, rename, fsync of the folder,
//! so a crash leaves the old or the new list.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
pub const FILE: &str = "directory-blocked.json";
/// Entries kept at most.
pub const MAX_BLOCKED: usize = 10_000;

/// One blocked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    /// SHA-256 of the certificate (lowercase hex).
    pub sha256: String,
    /// Why (free text, from the administrator).
    #[serde(default)]
    pub reason: String,
    /// Who blocked it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    blocked: Vec<Blocked>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The list (empty when the file does not exist).
pub fn load(data_dir: &Path) -> Result<Vec<Blocked>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(d) => serde_json::from_slice::<File>(&d)
            .map(|f| f.blocked)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Replaces the list.
pub fn save(data_dir: &Path, blocked: &[Blocked]) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(&File {
        version: 1,
        blocked: blocked.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    write_atomically(data_dir, FILE, &text)
}

/// Writes `DATA/name`: a temporary file, fsync, rename, fsync of the folder.
pub(crate) fn write_atomically(data_dir: &Path, name: &str, text: &[u8]) -> Result<(), String> {
    let p = data_dir.join(name);
    let tmp = data_dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", p.display()))
}

/// `s` as a SHA-256 fingerprint (hex, colons allowed), lowercase; `None` if it is not one.
pub fn fingerprint(s: &str) -> Option<String> {
    let f: String = s.chars().filter(|c| *c != ':').collect();
    (f.len() == 64 && f.chars().all(|c| c.is_ascii_hexdigit())).then(|| f.to_ascii_lowercase())
}

/// Why `reason` cannot be stored, if it cannot: at most 500 characters, no control character.
pub fn reason_problem(reason: &str) -> Option<&'static str> {
    (reason.chars().count() > 500 || reason.chars().any(char::is_control))
        .then_some("must be at most 500 characters, without control characters")
}

/// The list is full ([`MAX_BLOCKED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Blocks `sha256` (a [`fingerprint`]) in `list`: the entry already there, or a new one by
/// `by`, now.
pub fn block(
    list: &mut Vec<Blocked>,
    sha256: &str,
    reason: &str,
    by: &str,
) -> Result<Blocked, Full> {
    if let Some(e) = list.iter().find(|e| e.sha256 == sha256) {
        return Ok(e.clone());
    }
    if list.len() >= MAX_BLOCKED {
        return Err(Full);
    }
    let e = Blocked {
        sha256: sha256.to_string(),
        reason: reason.to_string(),
        by: by.to_string(),
        at: sealgate_smime::chain::rfc3339(crate::unix_now()),
    };
    list.push(e.clone());
    Ok(e)
}

/// Removes `sha256` from `list`: the entry, or `None` when it was not blocked.
pub fn unblock(list: &mut Vec<Blocked>, sha256: &str) -> Option<Blocked> {
    let i = list.iter().position(|e| e.sha256 == sha256)?;
    Some(list.remove(i))
}
