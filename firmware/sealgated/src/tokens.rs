//! API tokens and the one-time setup token.
//!
//! Tokens live in `DATA/api-tokens.json`, not in the vault's database: redb allows one
//! process at a time, and `sealctl api-token create` must work while the daemon runs. The
//! file holds only SHA-256 hashes of the tokens (a token is 256 random bits, so a plain hash
//! is enough); it is replaced atomically (write, fsync, rename) and the daemon re-reads it
//! when its modification time or size changes. `sealctl`'s `api_token_cmd.rs` writes the
//! same format (version 1):
//!
//! ```json
//! {"version":1,"tokens":[{"name":"gw1","sha256":"<hex>","scopes":["decrypt"],"created":"<RFC 3339>"}]}
//! ```
//!
//! The setup token's hash is `DATA/setup-token.sha256`; using it renames that file to
//! `setup-token.used` (atomic: it works once and only once) and creates an admin token named
//! `admin-<unix time>`.
//!
//! **Resetting admin access** (the console's menu entry) revokes every token that carries the
//! `admin` scope, whatever its name (setup's `admin-<time>`, or one made with `sealctl
//! api-token create --scope admin`), and opens setup again. The console does not edit this
//! file itself: it drops the request file `DATA/reset-admin.request` and restarts the daemon,
//! which applies it at start ([`TokenStore::apply_admin_reset_request`]) before it issues the
//! new setup token, so only the daemon's user ever writes the token files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::identity::{hex, random, sha256};
use crate::settings::Scope;

/// The token file.
pub const TOKENS_FILE: &str = "api-tokens.json";
const SETUP_FILE: &str = "setup-token.sha256";
const SETUP_USED: &str = "setup-token.used";
/// The console's request to reset admin access (see the module documentation).
pub const ADMIN_RESET_REQUEST: &str = "reset-admin.request";
/// Prefix of every token, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "sgt_";

/// One stored token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Unique name (the client in the audit log).
    pub name: String,
    /// SHA-256 of the token text, hex.
    pub sha256: String,
    /// What it may call.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

/// A fresh token: prefix + 256 random bits in hex (what `sealctl api-token create` makes too).
pub fn new_token() -> anyhow::Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", hex(&random(32)?)))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

/// The file's (modification time, size) when read, and its records.
type Cache = (Option<(SystemTime, u64)>, Vec<TokenRecord>);

/// The token store, cached and re-read when the file changes.
pub struct TokenStore {
    path: PathBuf,
    dir: PathBuf,
    cache: Mutex<Cache>,
    setup_lock: Mutex<()>,
    /// Serialises the daemon's own writes of the token file (create, revoke).
    write_lock: Mutex<()>,
}

impl TokenStore {
    /// The store of `data_dir`.
    pub fn new(data_dir: &Path) -> TokenStore {
        TokenStore {
            path: data_dir.join(TOKENS_FILE),
            dir: data_dir.to_path_buf(),
            cache: Mutex::new((None, Vec::new())),
            setup_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
        }
    }

    /// The record whose hash matches `token`, if any.
    pub fn lookup(&self, token: &str) -> anyhow::Result<Option<TokenRecord>> {
        let h = token_hash(token);
        let records = self.records()?;
        // The compared values are hashes of the presented token, so timing tells nothing
        // about a stored token.
        Ok(records.into_iter().find(|r| r.sha256 == h))
    }

    fn records(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => Some((m.modified()?, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| anyhow::anyhow!("token cache poisoned"))?;
        if cache.0 != meta || meta.is_none() {
            let records = if meta.is_some() {
                read_file(&self.path)?.tokens
            } else {
                Vec::new()
            };
            *cache = (meta, records);
        }
        Ok(cache.1.clone())
    }

    /// Adds a token; fails if the name exists. Returns the token text (shown once).
    pub fn create(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<String> {
        let _w = self
            .write_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("token write lock poisoned"))?;
        create_token(&self.dir, name, scopes)
    }

    /// Revokes the token `name` (the admin API): `Ok(false)` if there is none. The cache is
    /// emptied, so the next request with the token is refused whatever the file's time says.
    pub fn revoke(&self, name: &str) -> anyhow::Result<bool> {
        let _w = self
            .write_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("token write lock poisoned"))?;
        if !self.path.exists() {
            return Ok(false);
        }
        let mut f = read_file(&self.path)?;
        let before = f.tokens.len();
        f.tokens.retain(|t| t.name != name);
        if f.tokens.len() == before {
            return Ok(false);
        }
        write_atomic(&self.path, &serde_json::to_vec_pretty(&f)?)?;
        if let Ok(mut c) = self.cache.lock() {
            *c = (None, Vec::new());
        }
        Ok(true)
    }

    /// Whether first-boot setup is still open (no admin token made through it yet).
    pub fn setup_pending(&self) -> bool {
        !self.dir.join(SETUP_USED).exists()
    }

    /// Makes a new setup token (replacing an unused one) and returns it for the console.
    pub fn issue_setup_token(&self) -> anyhow::Result<String> {
        let _g = self
            .setup_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("setup lock poisoned"))?;
        let token = new_token()?;
        write_atomic(&self.dir.join(SETUP_FILE), token_hash(&token).as_bytes())?;
        Ok(token)
    }

    /// Uses the setup token: `Ok(Some(admin token))` once; `Ok(None)` if the token is wrong;
    /// `Err(SetupDone)` after it was used.
    pub fn complete_setup(&self, presented: &str) -> Result<Option<String>, SetupError> {
        let _g = self
            .setup_lock
            .lock()
            .map_err(|_| SetupError::Internal("setup lock poisoned".into()))?;
        if !self.setup_pending() {
            return Err(SetupError::Done);
        }
        let stored = fs::read_to_string(self.dir.join(SETUP_FILE))
            .map_err(|e| SetupError::Internal(e.to_string()))?;
        if stored.trim() != token_hash(presented.trim()) {
            return Ok(None);
        }
        fs::rename(self.dir.join(SETUP_FILE), self.dir.join(SETUP_USED))
            .map_err(|e| SetupError::Internal(e.to_string()))?;
        sync_dir(&self.dir).map_err(|e| SetupError::Internal(e.to_string()))?;
        let name = format!("admin-{}", time::OffsetDateTime::now_utc().unix_timestamp());
        self.create(&name, &[Scope::Admin])
            .map(Some)
            .map_err(|e| SetupError::Internal(e.to_string()))
    }
}

impl TokenStore {
    /// Every token's record (names, scopes, hashes), for the admin API.
    pub fn list(&self) -> anyhow::Result<Vec<TokenRecord>> {
        self.records()
    }

    /// Uses the setup token to claim the box through the admin API: under the setup lock,
    /// runs `claim` (which creates the first administrator) if `presented` is the setup
    /// token, and spends the token only if `claim` succeeded. `Ok(None)`: wrong token;
    /// `Err(SetupError::Done)`: the token was used (here or by `POST /api/v1/setup`).
    pub fn claim_setup<T, E>(
        &self,
        presented: &str,
        claim: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<Result<T, E>>, SetupError> {
        let _g = self
            .setup_lock
            .lock()
            .map_err(|_| SetupError::Internal("setup lock poisoned".into()))?;
        if !self.setup_pending() {
            return Err(SetupError::Done);
        }
        let stored = fs::read_to_string(self.dir.join(SETUP_FILE))
            .map_err(|e| SetupError::Internal(e.to_string()))?;
        // Both sides are hashes: comparing them tells nothing about the stored token.
        if stored.trim() != token_hash(presented.trim()) {
            return Ok(None);
        }
        let v = match claim() {
            Ok(v) => v,
            Err(e) => return Ok(Some(Err(e))),
        };
        fs::rename(self.dir.join(SETUP_FILE), self.dir.join(SETUP_USED))
            .map_err(|e| SetupError::Internal(e.to_string()))?;
        sync_dir(&self.dir).map_err(|e| SetupError::Internal(e.to_string()))?;
        Ok(Some(Ok(v)))
    }

    /// Revokes every token with the `admin` scope (whatever its name) and opens first-boot
    /// setup again. Returns the names of the revoked tokens. Idempotent.
    pub fn reset_admin_access(&self) -> anyhow::Result<Vec<String>> {
        let _g = self
            .setup_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("setup lock poisoned"))?;
        let mut revoked = Vec::new();
        if self.path.exists() {
            let mut f = match read_file(&self.path) {
                Ok(f) => f,
                Err(e) => {
                    // An unreadable file accepts no token (it fails closed), so nothing in it
                    // still works; it must not also keep the technician from getting admin
                    // access back. It is set aside, not deleted, for whoever repairs it.
                    let aside = self.dir.join(format!(
                        "{TOKENS_FILE}.damaged-{}",
                        time::OffsetDateTime::now_utc().unix_timestamp()
                    ));
                    fs::rename(&self.path, &aside)?;
                    sync_dir(&self.dir)?;
                    tracing::warn!(error = %e, aside = %aside.display(), "unreadable API token file set aside by the admin reset");
                    revoked.push(format!(
                        "(every token of the unreadable file, kept as {})",
                        aside.display()
                    ));
                    TokenFile {
                        version: 1,
                        tokens: Vec::new(),
                    }
                }
            };
            f.tokens.retain(|t| {
                let admin = t.scopes.contains(&Scope::Admin);
                if admin {
                    revoked.push(t.name.clone());
                }
                !admin
            });
            if !revoked.is_empty() {
                write_atomic(&self.path, &serde_json::to_vec_pretty(&f)?)?;
            }
        }
        match fs::remove_file(self.dir.join(SETUP_USED)) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(revoked)
    }

    /// Applies the console's pending request to reset admin access, if there is one:
    /// `Some(revoked token names)`. The request is removed only after the reset is durable,
    /// so a crash in between resets again at the next start.
    pub fn apply_admin_reset_request(&self) -> anyhow::Result<Option<Vec<String>>> {
        let request = self.dir.join(ADMIN_RESET_REQUEST);
        if fs::symlink_metadata(&request).is_err() {
            return Ok(None);
        }
        let revoked = self.reset_admin_access()?;
        fs::remove_file(&request)?;
        sync_dir(&self.dir)?;
        Ok(Some(revoked))
    }
}

/// Why setup failed.
#[derive(Debug)]
pub enum SetupError {
    /// Setup was completed before.
    Done,
    /// Storage failed.
    Internal(String),
}

fn read_file(path: &Path) -> anyhow::Result<TokenFile> {
    let text = fs::read(path)?;
    let f: TokenFile =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        f.version == 1,
        "{}: unknown version {}",
        path.display(),
        f.version
    );
    Ok(f)
}

/// Adds a token to the file in `data_dir` (the daemon and tests use this; `sealctl` has its own
/// copy of the format).
pub fn create_token(data_dir: &Path, name: &str, scopes: &[Scope]) -> anyhow::Result<String> {
    let path = data_dir.join(TOKENS_FILE);
    let mut f = if path.exists() {
        read_file(&path)?
    } else {
        TokenFile {
            version: 1,
            tokens: vec![],
        }
    };
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
    write_atomic(&path, &serde_json::to_vec_pretty(&f)?)?;
    Ok(token)
}

/// Write to a temporary file (mode 0600), fsync, rename over `path`, fsync the directory.
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    sealgate_local::fsio::write_atomic(path, data, sealgate_local::fsio::Mode::Exactly(0o600))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let t = store.create("gw", &[Scope::Decrypt]).expect("create");
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40);
        let text = fs::read_to_string(d.path().join(TOKENS_FILE)).expect("file");
        assert!(!text.contains(&t), "the token itself is never stored");
        assert_eq!(
            store.lookup(&t).expect("lookup").map(|r| r.name),
            Some("gw".into())
        );
        assert!(store.lookup("sgt_wrong").expect("lookup").is_none());
        assert!(store.create("gw", &[]).is_err(), "names are unique");
    }

    #[test]
    fn a_claim_spends_the_setup_token_only_when_it_succeeds() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let setup = store.issue_setup_token().expect("issue");
        let wrong = store.claim_setup("sgt_nope", || Ok::<_, ()>(1));
        assert!(matches!(wrong, Ok(None)));
        let failed = store.claim_setup(&setup, || Err::<u8, _>("vault full"));
        assert!(matches!(failed, Ok(Some(Err("vault full")))));
        assert!(store.setup_pending(), "a failed claim keeps the token");
        let ok = store.claim_setup(&setup, || Ok::<_, ()>(7));
        assert!(matches!(ok, Ok(Some(Ok(7)))));
        assert!(matches!(
            store.claim_setup(&setup, || Ok::<_, ()>(8)),
            Err(SetupError::Done)
        ));
        // The older endpoint's path is dead too, and issued no admin token.
        assert!(matches!(
            store.complete_setup(&setup),
            Err(SetupError::Done)
        ));
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn setup_works_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let setup = store.issue_setup_token().expect("issue");
        assert!(matches!(store.complete_setup("sgt_nope"), Ok(None)));
        let admin = store
            .complete_setup(&setup)
            .expect("first use")
            .expect("admin token");
        assert_eq!(
            store.lookup(&admin).expect("lookup").map(|r| r.scopes),
            Some(vec![Scope::Admin])
        );
        assert!(matches!(
            store.complete_setup(&setup),
            Err(SetupError::Done)
        ));
    }

    /// A damaged token file (a power cut, a bad disk) must not keep the console's reset from
    /// giving admin access back: the reset sets it aside and opens setup, instead of failing
    /// (which stopped the daemon from starting at all, in a restart loop).
    #[test]
    fn reset_admin_access_sets_a_damaged_token_file_aside() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let setup = store.issue_setup_token().expect("issue");
        store.complete_setup(&setup).expect("setup").expect("admin");
        fs::write(d.path().join(TOKENS_FILE), b"{\"version\":1,\"tok").expect("damage");
        assert!(
            store.lookup("sgt_x").is_err(),
            "a damaged file fails closed"
        );
        fs::write(d.path().join(ADMIN_RESET_REQUEST), b"").expect("request");
        let revoked = store
            .apply_admin_reset_request()
            .expect("the reset works on a damaged file")
            .expect("a request was pending");
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        let aside: Vec<_> = fs::read_dir(d.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("api-tokens.json.damaged-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "the damaged file is kept aside");
        assert!(store.lookup("sgt_x").expect("readable again").is_none());
        assert!(store.setup_pending(), "setup is open again");
        let setup = store.issue_setup_token().expect("issue");
        assert!(store.complete_setup(&setup).expect("setup").is_some());
    }

    /// Regression: the reset removed only a token named exactly `admin`, but setup names its
    /// token `admin-<time>`, so the old admin token kept working.
    #[test]
    fn reset_admin_access_revokes_every_admin_scoped_token() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let setup = store.issue_setup_token().expect("issue");
        let from_setup = store
            .complete_setup(&setup)
            .expect("setup")
            .expect("admin token");
        let ops = store
            .create("ops", &[Scope::Decrypt, Scope::Admin])
            .expect("ops");
        let legacy = store.create("admin", &[Scope::Admin]).expect("admin");
        let gateway = store.create("gw1", &Scope::DOCKING).expect("gw1");
        // A docking token whose name merely looks like an admin's stays.
        let lookalike = store.create("admin-mx", &[Scope::Decrypt]).expect("mx");
        assert!(!store.setup_pending());

        // Nothing happens without the console's request.
        assert!(store.apply_admin_reset_request().expect("none").is_none());
        fs::write(d.path().join(ADMIN_RESET_REQUEST), b"").expect("request");
        let mut revoked = store
            .apply_admin_reset_request()
            .expect("apply")
            .expect("a request was pending");
        revoked.sort();
        assert_eq!(revoked.len(), 3, "{revoked:?}");
        assert!(
            revoked
                .iter()
                .any(|n| n.starts_with("admin-") && n != "admin-mx")
        );
        for dead in [&from_setup, &ops, &legacy] {
            assert!(
                store.lookup(dead).expect("lookup").is_none(),
                "an earlier admin credential still works"
            );
        }
        for alive in [&gateway, &lookalike] {
            assert!(store.lookup(alive).expect("lookup").is_some());
        }
        assert!(store.setup_pending(), "setup is open again");
        assert!(!d.path().join(ADMIN_RESET_REQUEST).exists());
        // Setup works again and yields a working admin token.
        let setup = store.issue_setup_token().expect("issue");
        let again = store.complete_setup(&setup).expect("setup").expect("token");
        assert!(store.lookup(&again).expect("lookup").is_some());
    }
}
