//! Admin-plane API tokens: bearer credentials for machine clients of the admin API, each
//! with one role (`admin`, `auditor`, `read-only`), separate from the docking API's tokens.
//!
//! They live in the vault (table `admin_tokens`) rather than in the docking token file:
//! they are credentials for the admin plane, so making, using and revoking one shares the
//! accounts' one-writer database and audit chain, and the console's reset of admin access
//! removes them with the accounts. Only the SHA-256 of a token is stored (a token is 256
//! random bits, so a plain hash is enough); the token itself is returned once, at creation.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::accounts::Role;
use crate::cipher;
use crate::error::{Result, VaultError};
use crate::record::now;
use crate::store::Vault;

/// Name → [`StoredToken`] (JSON).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_tokens");

/// Prefix of every admin-plane token (the docking API's are `sgt_`), so secret scanners and
/// people can tell them apart.
pub const ADMIN_TOKEN_PREFIX: &str = "sga_";
/// Most admin-plane tokens the vault holds.
pub const MAX_ADMIN_TOKENS: usize = 256;

/// An admin-plane token as listed (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenInfo {
    /// Unique name: the actor (`token:NAME`) in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// Who made it.
    pub created_by: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    name: String,
    role: Role,
    created: i64,
    created_by: String,
    /// SHA-256 of the token, hex.
    sha256: String,
}

fn info(t: &StoredToken) -> AdminTokenInfo {
    AdminTokenInfo {
        name: t.name.clone(),
        role: t.role,
        created: t.created,
        created_by: t.created_by.clone(),
    }
}

fn decode(v: &[u8]) -> Result<StoredToken> {
    serde_json::from_slice(v)
        .map_err(|_| VaultError::Corrupt("an admin API token record is unreadable".into()))
}

fn hash(token: &str) -> String {
    cipher::hex(&cipher::sha256(&[token.as_bytes()]))
}

/// Checks a token name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::Usage(
            "a token name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
        ))
    }
}

impl Vault {
    fn stored_admin_tokens(&self) -> Result<Vec<StoredToken>> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(TOKENS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            out.push(decode(row?.1.value())?);
        }
        Ok(out)
    }

    /// Every admin-plane token, by name.
    pub fn admin_api_tokens(&self) -> Result<Vec<AdminTokenInfo>> {
        Ok(self.stored_admin_tokens()?.iter().map(info).collect())
    }

    /// Makes an admin-plane token `name` with `role`; returns the token (shown once; only its
    /// hash is kept). Audited (`admin.api-token-create`, `actor` = who asked).
    pub fn create_admin_api_token(&self, actor: &str, name: &str, role: Role) -> Result<String> {
        check_name(name)?;
        let mut raw = [0u8; 32];
        cipher::random(&mut raw)?;
        let token = format!("{ADMIN_TOKEN_PREFIX}{}", cipher::hex(&raw));
        let rec = StoredToken {
            name: name.to_string(),
            role,
            created: now(),
            created_by: actor.to_string(),
            sha256: hash(&token),
        };
        let json = serde_json::to_vec(&rec)
            .map_err(|e| VaultError::Storage(format!("token record: {e}")))?;
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(TOKENS)?;
                if t.iter()?.count() >= MAX_ADMIN_TOKENS {
                    return Err(VaultError::Usage(format!(
                        "the box holds at most {MAX_ADMIN_TOKENS} admin API tokens"
                    )));
                }
                if t.get(name)?.is_some() {
                    return Err(VaultError::Usage(format!("a token named {name:?} exists")));
                }
                t.insert(name, json.as_slice())?;
                Ok(())
            },
            "admin.api-token-create",
            name,
            &format!("role={}", role.name()),
        )?;
        Ok(token)
    }

    /// The admin-plane token whose hash matches `token`, if any.
    pub fn admin_api_token(&self, token: &str) -> Result<Option<AdminTokenInfo>> {
        if !token.starts_with(ADMIN_TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let h = hash(token);
        // The compared values are hashes of the presented token, so timing tells nothing
        // about a stored one.
        Ok(self
            .stored_admin_tokens()?
            .iter()
            .find(|t| t.sha256 == h)
            .map(info))
    }

    /// Revokes the admin-plane token `name` (`NoKey` if there is none). Audited
    /// (`admin.api-token-revoke`).
    pub fn revoke_admin_api_token(&self, actor: &str, name: &str) -> Result<()> {
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(TOKENS)?;
                if t.remove(name)?.is_none() {
                    return Err(VaultError::NoKey(format!("no token {name:?}")));
                }
                Ok(())
            },
            "admin.api-token-revoke",
            name,
            "",
        )
    }

    /// Revokes every admin-plane token (reset of admin access). Returns their names;
    /// idempotent. Audited (`admin.api-tokens-reset`) when there was any.
    pub fn remove_all_admin_api_tokens(&self, actor: &str) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .stored_admin_tokens()?
            .into_iter()
            .map(|t| t.name)
            .collect();
        if names.is_empty() {
            return Ok(names);
        }
        self.audited_by(
            actor,
            |txn| {
                txn.open_table(TOKENS)?.retain(|_, _| false)?;
                Ok(())
            },
            "admin.api-tokens-reset",
            "admin-api-tokens",
            &format!("removed={}", names.join(",")),
        )?;
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SoftwareSealer;

    #[test]
    fn tokens_are_hashed_found_revoked_and_reset() {
        let d = tempfile::tempdir().unwrap();
        let (v, _) = Vault::init(d.path(), &mut SoftwareSealer::danger_new()).unwrap();
        assert!(v.admin_api_tokens().unwrap().is_empty());
        let t = v
            .create_admin_api_token("root", "ci", Role::ReadOnly)
            .unwrap();
        assert!(t.starts_with(ADMIN_TOKEN_PREFIX) && t.len() == 68, "{t}");
        assert!(v.create_admin_api_token("root", "ci", Role::Admin).is_err());
        assert!(
            v.create_admin_api_token("root", "bad name", Role::Admin)
                .is_err()
        );
        let found = v.admin_api_token(&t).unwrap().unwrap();
        assert_eq!((found.name.as_str(), found.role), ("ci", Role::ReadOnly));
        assert!(v.admin_api_token("sga_nope").unwrap().is_none());
        assert!(
            v.admin_api_token(&t.replace("sga_", "sgt_"))
                .unwrap()
                .is_none()
        );
        let stored = v.stored_admin_tokens().unwrap();
        assert!(
            !serde_json::to_string(&stored[0].sha256)
                .unwrap()
                .contains(&t)
        );
        v.revoke_admin_api_token("root", "ci").unwrap();
        assert!(v.admin_api_token(&t).unwrap().is_none());
        assert!(matches!(
            v.revoke_admin_api_token("root", "ci"),
            Err(VaultError::NoKey(_))
        ));
        let t2 = v
            .create_admin_api_token("root", "ops", Role::Admin)
            .unwrap();
        assert_eq!(v.remove_all_admin_api_tokens("api").unwrap(), vec!["ops"]);
        assert!(v.admin_api_token(&t2).unwrap().is_none());
        assert!(v.remove_all_admin_api_tokens("api").unwrap().is_empty());
        let log = v.audit().unwrap();
        for a in [
            "admin.api-token-create",
            "admin.api-token-revoke",
            "admin.api-tokens-reset",
        ] {
            assert!(log.iter().any(|e| e.action == a), "{a}");
        }
    }
}
