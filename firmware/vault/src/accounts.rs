//! Administrator accounts of the admin plane: a name, a role and an Argon2id password hash.
//!
//! The accounts live in the vault (table `admin_accounts`, created on first use, so older
//! vaults read as having none) so that they share its one-writer database and its audit
//! chain: every creation and deletion is one write transaction with its audit entry, and the
//! admin API records logins, failures and logouts through [`Vault::record_admin_event`].
//!
//! Passwords are hashed with Argon2id (RFC 9106; the `argon2` crate's defaults: 19 MiB, two
//! passes, one lane) with a random 128-bit salt, stored in the PHC string format. No default
//! password exists: the first account is made with the box's one-time setup token
//! ([`Vault::create_first_admin`] refuses once any account exists).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use crate::cipher;
use crate::error::{Result, VaultError};
use crate::record::now;
use crate::store::Vault;
use crate::totp::StoredTotp;

/// Username → [`StoredAccount`] (JSON).
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_accounts");

/// Shortest password taken (characters).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password taken (bytes): bounds what one login makes the box hash.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest username (characters).
pub const MAX_USERNAME_CHARS: usize = 64;
/// Most accounts the vault holds.
pub const MAX_ACCOUNTS: usize = 256;

/// What an administrator may do (see README "Administering the box").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// The audit log; read-only elsewhere.
    Auditor,
    /// Read-only.
    ReadOnly,
}

impl Role {
    /// The role's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::ReadOnly => "read-only",
        }
    }
}

/// An account as the admin API shows it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Login name (lower case).
    pub username: String,
    /// Its role.
    pub role: Role,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// Whether login asks for a TOTP code (see `totp.rs`).
    #[serde(default)]
    pub totp: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredAccount {
    pub(crate) username: String,
    role: Role,
    created: i64,
    /// Argon2id PHC string.
    password: String,
    /// The second factor, if enrolled (see `totp.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) totp: Option<StoredTotp>,
}

/// Checks and normalises a username: 1 to [`MAX_USERNAME_CHARS`] of `a-z 0-9 . _ -`
/// (upper case is folded).
pub fn normalise_username(name: &str) -> Result<String> {
    let n = name.trim().to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.chars().count() <= MAX_USERNAME_CHARS
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(n)
    } else {
        Err(VaultError::Usage(format!(
            "a username is 1 to {MAX_USERNAME_CHARS} characters of a-z, 0-9, '.', '_' and '-'"
        )))
    }
}

/// Checks a new password's length.
pub fn check_password_policy(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(VaultError::Usage(format!(
            "a password is {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes long"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    cipher::random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| VaultError::Storage(format!("password salt: {e}")))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| VaultError::Storage(format!("password hash: {e}")))?
        .to_string())
}

fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches in practice, checked for unknown usernames so that a login
/// costs the same whether the account exists.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password("sealgate: no such account, never a password")
            .unwrap_or_else(|_| String::from("$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
    })
}

fn decode(v: &[u8]) -> Result<StoredAccount> {
    serde_json::from_slice(v)
        .map_err(|_| VaultError::Corrupt("an administrator account record is unreadable".into()))
}

fn info(a: &StoredAccount) -> AccountInfo {
    AccountInfo {
        username: a.username.clone(),
        role: a.role,
        created: a.created,
        totp: a.totp.as_ref().is_some_and(|t| t.active),
    }
}

impl Vault {
    /// Appends an admin-plane event (`admin.login`, `admin.login-failed`, `admin.logout`,
    /// ...) to the audit chain, naming `actor` (an account, or `-`).
    pub fn record_admin_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<()> {
        self.audited_by(actor, |_| Ok(()), action, subject, detail)
    }

    pub(crate) fn stored_accounts(&self) -> Result<Vec<StoredAccount>> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(ACCOUNTS) {
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

    /// Rewrites the account `name` inside `txn` with `change` (`NoKey` if there is none).
    pub(crate) fn update_account(
        &self,
        txn: &redb::WriteTransaction,
        name: &str,
        change: impl FnOnce(&mut StoredAccount) -> Result<()>,
    ) -> Result<()> {
        let mut t = txn.open_table(ACCOUNTS)?;
        let mut rec = match t.get(name)? {
            Some(v) => decode(v.value())?,
            None => return Err(VaultError::NoKey(format!("no account {name:?}"))),
        };
        change(&mut rec)?;
        let json = serde_json::to_vec(&rec)
            .map_err(|e| VaultError::Storage(format!("account record: {e}")))?;
        t.insert(name, json.as_slice())?;
        Ok(())
    }

    /// Every administrator account, by name.
    pub fn admin_accounts(&self) -> Result<Vec<AccountInfo>> {
        Ok(self.stored_accounts()?.iter().map(info).collect())
    }

    /// The account `username`, if it exists.
    pub fn admin_account(&self, username: &str) -> Result<Option<AccountInfo>> {
        let Ok(name) = normalise_username(username) else {
            return Ok(None);
        };
        Ok(self
            .stored_accounts()?
            .iter()
            .find(|a| a.username == name)
            .map(info))
    }

    /// Checks `password` for `username`: the account if it matches. An unknown name costs
    /// the same hashing as a known one.
    pub fn authenticate_admin(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<AccountInfo>> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let name = normalise_username(username).unwrap_or_default();
        let found = self
            .stored_accounts()?
            .into_iter()
            .find(|a| a.username == name);
        match found {
            Some(a) if verify_password(&a.password, password) => Ok(Some(info(&a))),
            Some(_) => Ok(None),
            None => {
                let _ = verify_password(dummy_hash(), password);
                Ok(None)
            }
        }
    }

    /// Creates the box's first administrator (role `admin`): refused with
    /// [`VaultError::Usage`] once any account exists. Audited (`admin.account-create`).
    pub fn create_first_admin(
        &self,
        actor: &str,
        username: &str,
        password: &str,
    ) -> Result<AccountInfo> {
        self.create_account(actor, username, Role::Admin, password, true)
    }

    /// Creates an account. Audited (`admin.account-create`).
    pub fn create_admin_account(
        &self,
        actor: &str,
        username: &str,
        role: Role,
        password: &str,
    ) -> Result<AccountInfo> {
        self.create_account(actor, username, role, password, false)
    }

    fn create_account(
        &self,
        actor: &str,
        username: &str,
        role: Role,
        password: &str,
        first: bool,
    ) -> Result<AccountInfo> {
        let name = normalise_username(username)?;
        check_password_policy(password)?;
        let phc = hash_password(password)?;
        let rec = StoredAccount {
            username: name.clone(),
            role,
            created: now(),
            password: phc,
            totp: None,
        };
        let json = serde_json::to_vec(&rec)
            .map_err(|e| VaultError::Storage(format!("account record: {e}")))?;
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(ACCOUNTS)?;
                let n = t.iter()?.count();
                if first && n > 0 {
                    return Err(VaultError::Usage(
                        "the box has an administrator already".into(),
                    ));
                }
                if n >= MAX_ACCOUNTS {
                    return Err(VaultError::Usage(format!(
                        "the box holds at most {MAX_ACCOUNTS} accounts"
                    )));
                }
                if t.get(name.as_str())?.is_some() {
                    return Err(VaultError::Usage(format!("an account {name:?} exists")));
                }
                t.insert(name.as_str(), json.as_slice())?;
                Ok(())
            },
            "admin.account-create",
            &name,
            &format!("role={}", role.name()),
        )?;
        Ok(info(&rec))
    }

    /// Changes `username`'s password after checking the current one (`Ok(false)`: it did not
    /// match, nothing changed). Audited (`admin.password-change`), `actor` = the account.
    pub fn change_admin_password(&self, username: &str, current: &str, new: &str) -> Result<bool> {
        check_password_policy(new)?;
        let Some(account) = self.authenticate_admin(username, current)? else {
            return Ok(false);
        };
        let phc = hash_password(new)?;
        let name = account.username.clone();
        self.audited_by(
            &name,
            |txn| {
                let mut t = txn.open_table(ACCOUNTS)?;
                let rec = match t.get(name.as_str())? {
                    Some(v) => decode(v.value())?,
                    None => return Err(VaultError::NoKey(format!("no account {name:?}"))),
                };
                let rec = StoredAccount {
                    password: phc,
                    ..rec
                };
                let json = serde_json::to_vec(&rec)
                    .map_err(|e| VaultError::Storage(format!("account record: {e}")))?;
                t.insert(name.as_str(), json.as_slice())?;
                Ok(())
            },
            "admin.password-change",
            &name,
            "",
        )?;
        Ok(true)
    }

    /// Deletes every account (the console's "reset admin access": every earlier admin
    /// credential dies, and the next setup token claims the box again). Returns the deleted
    /// names; idempotent. Audited (`admin.accounts-reset`) when there was any.
    pub fn remove_all_admin_accounts(&self, actor: &str) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .admin_accounts()?
            .into_iter()
            .map(|a| a.username)
            .collect();
        if names.is_empty() {
            return Ok(names);
        }
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(ACCOUNTS)?;
                t.retain(|_, _| false)?;
                Ok(())
            },
            "admin.accounts-reset",
            "admin-accounts",
            &format!("removed={}", names.join(",")),
        )?;
        Ok(names)
    }

    /// Deletes an account; the last `admin` cannot be deleted. Audited
    /// (`admin.account-delete`).
    pub fn delete_admin_account(&self, actor: &str, username: &str) -> Result<()> {
        let name = normalise_username(username)?;
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(ACCOUNTS)?;
                let mut admins = 0;
                let mut target = None;
                for row in t.iter()? {
                    let a = decode(row?.1.value())?;
                    if a.role == Role::Admin {
                        admins += 1;
                    }
                    if a.username == name {
                        target = Some(a.role);
                    }
                }
                match target {
                    None => Err(VaultError::NoKey(format!("no account {name:?}"))),
                    Some(Role::Admin) if admins <= 1 => Err(VaultError::Usage(
                        "the last admin account cannot be deleted".into(),
                    )),
                    Some(_) => {
                        t.remove(name.as_str())?;
                        Ok(())
                    }
                }
            },
            "admin.account-delete",
            &name,
            "",
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SoftwareSealer;

    fn vault() -> (tempfile::TempDir, Vault) {
        let d = tempfile::tempdir().unwrap();
        let (v, _) = Vault::init(d.path(), &mut SoftwareSealer::danger_new()).unwrap();
        (d, v)
    }

    #[test]
    fn first_admin_once_passwords_hashed_and_checked() {
        let (_d, v) = vault();
        assert!(v.admin_accounts().unwrap().is_empty());
        assert!(
            v.create_first_admin("setup-token", "Root", "short")
                .is_err()
        );
        let a = v
            .create_first_admin("setup-token", "Root", "correct horse battery")
            .unwrap();
        assert_eq!((a.username.as_str(), a.role), ("root", Role::Admin));
        assert!(
            v.create_first_admin("setup-token", "other", "correct horse battery")
                .is_err(),
            "only the first"
        );
        assert_eq!(
            v.authenticate_admin("ROOT", "correct horse battery")
                .unwrap(),
            Some(a.clone())
        );
        assert_eq!(
            v.authenticate_admin("root", "wrong password!!").unwrap(),
            None
        );
        assert_eq!(
            v.authenticate_admin("nobody", "correct horse battery")
                .unwrap(),
            None
        );
        assert_eq!(
            v.authenticate_admin("../x", "correct horse battery")
                .unwrap(),
            None
        );
        // The stored form is an Argon2id PHC string, not the password.
        let stored = v.stored_accounts().unwrap();
        assert!(stored[0].password.starts_with("$argon2id$"));
        assert!(!stored[0].password.contains("horse"));
        let log = v.audit().unwrap();
        assert!(log.iter().any(|e| e.action == "admin.account-create"
            && e.actor == "setup-token"
            && e.subject == "root"));
    }

    #[test]
    fn roles_names_and_the_last_admin() {
        let (_d, v) = vault();
        v.create_first_admin("setup-token", "root", "correct horse battery")
            .unwrap();
        assert!(
            v.create_admin_account("root", "bad name", Role::Auditor, "correct horse battery")
                .is_err()
        );
        v.create_admin_account("root", "aud", Role::Auditor, "correct horse battery")
            .unwrap();
        assert!(
            v.create_admin_account("root", "aud", Role::ReadOnly, "correct horse battery")
                .is_err()
        );
        assert_eq!(v.admin_accounts().unwrap().len(), 2);
        assert!(
            v.delete_admin_account("root", "root").is_err(),
            "last admin"
        );
        v.delete_admin_account("root", "aud").unwrap();
        assert!(matches!(
            v.delete_admin_account("root", "aud"),
            Err(VaultError::NoKey(_))
        ));
        assert!(
            !v.change_admin_password("root", "wrong password!!", "another long password")
                .unwrap()
        );
        assert!(
            v.change_admin_password("root", "correct horse battery", "short")
                .is_err()
        );
        assert!(
            v.change_admin_password("root", "correct horse battery", "another long password")
                .unwrap()
        );
        assert!(
            v.authenticate_admin("root", "correct horse battery")
                .unwrap()
                .is_none()
        );
        assert!(
            v.authenticate_admin("root", "another long password")
                .unwrap()
                .is_some()
        );
        v.record_admin_event("root", "admin.logout", "root", "")
            .unwrap();
        assert_eq!(
            v.remove_all_admin_accounts("console").unwrap(),
            vec!["root"]
        );
        assert!(v.admin_accounts().unwrap().is_empty());
        assert!(v.remove_all_admin_accounts("console").unwrap().is_empty());
        v.create_first_admin("setup-token", "new", "correct horse battery")
            .unwrap();
        let log = v.audit().unwrap();
        assert!(
            log.iter()
                .any(|e| e.action == "admin.account-delete" && e.actor == "root")
        );
        assert!(log.iter().any(|e| e.action == "admin.logout"));
        assert!(
            log.iter()
                .any(|e| e.action == "admin.password-change" && e.actor == "root")
        );
    }
}
