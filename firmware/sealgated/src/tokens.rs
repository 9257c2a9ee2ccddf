//! API tokens and the one-time setup token.
//!
//! Docking tokens live in `DATA/api-tokens.json`, not in the vault's database: redb allows
//! one process at a time, and `sealctl api-token` must work when no daemon runs. The file's
//! format, its writers' lock and its atomic replacement belong to one module,
//! `sealgate-tokenfile` (`firmware/tokenfile`), which `sealctl` uses too; this store reads it
//! through a cache that is refreshed when the file's modification time or size changes.
//! (The admin plane's own API tokens are in the vault: `admin/machine_tokens.rs`.)
//!
//! The setup token's hash is `DATA/setup-token.sha256`; claiming the box with it through the
//! admin API (`POST /api/v1/admin/setup`, [`TokenStore::claim_setup`]) renames that file to
//! `setup-token.used` (atomic: it works once and only once).
//!
//! **Resetting admin access** (the console's menu entry, or the admin API's
//! `POST setup-token/reset`) revokes every token that carries the `admin` scope, whatever its
//! name, and opens setup again. The console does not edit this file itself: it drops the
//! request file `DATA/reset-admin.request` and restarts the daemon, which applies it at start
//! ([`TokenStore::apply_admin_reset_request`]) before it issues the new setup token.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sealgate_tokenfile::{TOKENS_FILE, TokenFile, sync_dir, token_hash, write_atomic};

use crate::settings::Scope;

const SETUP_FILE: &str = "setup-token.sha256";
const SETUP_USED: &str = "setup-token.used";
/// The console's request to reset admin access (see the module documentation).
pub const ADMIN_RESET_REQUEST: &str = "reset-admin.request";

/// One stored token, with the daemon's scopes.
pub type TokenRecord = sealgate_tokenfile::TokenRecord<Scope>;

/// The file's (modification time, size) when read, and its records.
type Cache = (Option<(SystemTime, u64)>, Vec<TokenRecord>);

/// The token store, cached and re-read when the file changes.
pub struct TokenStore {
    path: PathBuf,
    dir: PathBuf,
    cache: Mutex<Cache>,
    setup_lock: Mutex<()>,
}

impl TokenStore {
    /// The store of `data_dir`.
    pub fn new(data_dir: &Path) -> TokenStore {
        TokenStore {
            path: data_dir.join(TOKENS_FILE),
            dir: data_dir.to_path_buf(),
            cache: Mutex::new((None, Vec::new())),
            setup_lock: Mutex::new(()),
        }
    }

    /// The record whose hash matches `token`, if any.
    pub fn lookup(&self, token: &str) -> anyhow::Result<Option<TokenRecord>> {
        let h = token_hash(token);
        // The compared values are hashes of the presented token, so timing tells nothing
        // about a stored token. Only the matching record is copied (once per request).
        self.with_records(|records| records.iter().find(|r| r.sha256 == h).cloned())
    }

    fn records(&self) -> anyhow::Result<Vec<TokenRecord>> {
        self.with_records(<[TokenRecord]>::to_vec)
    }

    /// Runs `f` on the records, read again from the file only when it changed.
    fn with_records<T>(&self, f: impl FnOnce(&[TokenRecord]) -> T) -> anyhow::Result<T> {
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
                sealgate_tokenfile::load::<Scope>(&self.dir)?.tokens
            } else {
                Vec::new()
            };
            *cache = (meta, records);
        }
        Ok(f(&cache.1))
    }

    /// Adds a token; fails if the name exists. Returns the token text (shown once).
    pub fn create(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<String> {
        sealgate_tokenfile::create(&self.dir, name, scopes)
    }

    /// Revokes the token `name` (the admin API): `Ok(false)` if there is none. The cache is
    /// emptied, so the next request with the token is refused whatever the file's time says.
    pub fn revoke(&self, name: &str) -> anyhow::Result<bool> {
        let gone = sealgate_tokenfile::revoke::<Scope>(&self.dir, name)?;
        if gone && let Ok(mut c) = self.cache.lock() {
            *c = (None, Vec::new());
        }
        Ok(gone)
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
        let token = sealgate_tokenfile::new_token()?;
        write_atomic(&self.dir.join(SETUP_FILE), token_hash(&token).as_bytes())?;
        Ok(token)
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
    /// `Err(SetupError::Done)`: the token was used.
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
        let lock = sealgate_tokenfile::lock(&self.dir)?;
        if self.path.exists() {
            let mut f = match sealgate_tokenfile::load::<Scope>(&self.dir) {
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
                    TokenFile::default()
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
                sealgate_tokenfile::store(&self.dir, &f, &lock)?;
            }
        }
        drop(lock);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_found() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let t = store.create("gw", &[Scope::Decrypt]).expect("create");
        assert!(t.starts_with(sealgate_tokenfile::TOKEN_PREFIX) && t.len() > 40);
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
        // No admin token was issued.
        assert!(store.list().expect("list").is_empty());
    }

    /// A damaged token file (a power cut, a bad disk) must not keep the console's reset from
    /// giving admin access back: the reset sets it aside and opens setup, instead of failing
    /// (which stopped the daemon from starting at all, in a restart loop).
    #[test]
    fn reset_admin_access_sets_a_damaged_token_file_aside() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        store.create("ops", &[Scope::Admin]).expect("admin");
        let setup = store.issue_setup_token().expect("issue");
        assert!(matches!(
            store.claim_setup(&setup, || Ok::<_, ()>(())),
            Ok(Some(Ok(())))
        ));
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
        assert!(matches!(
            store.claim_setup(&setup, || Ok::<_, ()>(())),
            Ok(Some(Ok(())))
        ));
    }

    /// Regression: the reset removed only a token named exactly `admin`, but setup names its
    /// token `admin-<time>`, so the old admin token kept working.
    #[test]
    fn reset_admin_access_revokes_every_admin_scoped_token() {
        let d = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(d.path());
        let setup = store.issue_setup_token().expect("issue");
        // An admin token as the retired `POST /api/v1/setup` named them.
        let from_setup = store
            .create("admin-1700000000", &[Scope::Admin])
            .expect("setup's");
        assert!(matches!(
            store.claim_setup(&setup, || Ok::<_, ()>(())),
            Ok(Some(Ok(())))
        ));
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
        // Setup works again.
        let setup = store.issue_setup_token().expect("issue");
        assert!(matches!(
            store.claim_setup(&setup, || Ok::<_, ()>(())),
            Ok(Some(Ok(())))
        ));
    }
}
