//! [`Vault`]: the database, opening and recovery, import, export and the key queries.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::{SoftwareKey, load_private_key};
use sealgate_tpm::PcrSelection;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::audit::{self, AuditCheck, AuditEntry, AuditKey, UseLog};
use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};
use crate::key::VaultKey;
use crate::record::{KeyInfo, KeyRecord, Purpose, key_aad, now};
use crate::recovery::RecoverySecret;
use crate::sealer::{self, Sealer, SealerKind};

/// The database file in the data directory.
pub const DB_FILE: &str = "vault.redb";

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("keys");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const CA: TableDefinition<&str, &[u8]> = TableDefinition::new("ca");
pub(crate) const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked");
pub(crate) const RECIPIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("recipient_certs");

const FORMAT: &[u8] = b"sealgate-vault 1";
const KEY_CHECK_AAD: &[u8] = b"sealgate vault key check";
/// Associated data of the box's TLS key record.
const TLS_KEY_AAD: &[u8] = b"sealgate box tls key";
const SMTP_LOOP_KEY_AAD: &[u8] = b"sealgate smtp loop key";
/// The key check of a vault whose audit chain is keyed (see `audit.rs`, "Migration").
const KEY_CHECK_AAD_KEYED: &[u8] = b"sealgate vault key check v2: audit chain keyed";
const KEY_CHECK_PLAIN: &[u8] = b"sealgate vault key check value";
/// A PKCS#8 key and its certificates (leaf first), DER.
type KeyAndCerts = (Zeroizing<Vec<u8>>, Vec<Vec<u8>>);
/// How long `open` waits for another process to release the database.
const BUSY_WAIT: Duration = Duration::from_secs(3);
/// Most sealed copies of the vault key kept at once (the one that opened, older fallbacks,
/// and the newest for an update).
const MAX_SEALED_COPIES: usize = 4;

/// The key vault. See the crate documentation.
///
/// Dropping it writes the key uses still buffered for the audit log (see
/// [`Vault::set_use_audit_batch`]); the [`VaultKey`]s it handed out are usable only while it
/// is open (a use that cannot be audited is refused).
pub struct Vault {
    pub(crate) db: Arc<Database>,
    dir: PathBuf,
    pub(crate) key: Arc<VaultSecret>,
    /// MACs the audit chain; derived from the vault key.
    pub(crate) audit_key: Arc<AuditKey>,
    sealer_kind: SealerKind,
    pub(crate) actor: String,
    uses: Arc<UseLog>,
    /// The sealed copy of the vault key that opened this handle.
    opened_blob: Vec<u8>,
}

impl Drop for Vault {
    fn drop(&mut self) {
        // Keys handed out keep the log alive and write the rest when they go.
        let _ = self.uses.flush();
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("sealer", &self.sealer_kind)
            .finish_non_exhaustive()
    }
}

/// Public certificate export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFormat {
    /// PEM certificates (leaf first, then its chain).
    Pem,
    /// The leaf certificate as DER.
    Der,
    /// A certs-only CMS SignedData (`.p7c`, DER) with the leaf and its chain.
    P7c,
}

/// What `vault status` reports. Needs no unsealing.
#[derive(Debug, Clone, Serialize)]
pub struct VaultStatus {
    /// The data directory.
    pub data_dir: String,
    /// `tpm` or `software`.
    pub sealed_by: SealerKind,
    /// The PCR selection the sealed vault key is bound to (TPM only), e.g. `sha256:7`: the
    /// setting chosen at `vault init --pcrs`.
    pub pcrs: Option<String>,
    /// Sealed copies of the vault key: 1, or 2+ while an update is staged and not committed.
    pub sealed_copies: usize,
    /// Users with at least one key.
    pub users: usize,
    /// Keys in the vault (all states).
    pub keys: usize,
    /// Active keys.
    pub active_keys: usize,
    /// The CA's subject, if there is a CA.
    pub ca: Option<String>,
    /// Revoked certificates.
    pub revoked: usize,
    /// Audit entries.
    pub audit_entries: usize,
    /// `ok`, or why the chain does not verify. The chain is keyed with the vault key, so
    /// [`Vault::status`] alone cannot verify it (`not verified: ...`); `sealctl vault status`
    /// opens the vault and fills in [`Vault::check_audit`]'s answer.
    pub audit_chain: String,
    /// Entries verified by that check: those after the last checkpoint.
    pub audit_verified_now: Option<u64>,
    /// Whether the vault key could be unsealed now (set by callers that tried).
    pub unsealed: Option<bool>,
    /// Why unsealing failed.
    pub unseal_error: Option<String>,
    /// Things the operator must know (e.g. the software sealer).
    pub warnings: Vec<String>,
}

fn open_db(path: &Path) -> Result<Database> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match Database::open(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(VaultError::Busy(path.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn meta_get(txn: &redb::ReadTransaction, name: &str) -> Result<Option<Vec<u8>>> {
    let t = txn.open_table(META)?;
    Ok(t.get(name)?.map(|v| v.value().to_vec()))
}

/// The sealed copies of the vault key, oldest first (`sealed_keys`: a JSON list of base64
/// blobs; vaults made before the list hold one `sealed_key`).
fn sealed_blobs(txn: &redb::ReadTransaction) -> Result<Vec<Vec<u8>>> {
    if let Some(list) = meta_get(txn, "sealed_keys")? {
        return decode_blobs(&list);
    }
    match meta_get(txn, "sealed_key")? {
        Some(b) => Ok(vec![b]),
        None => Err(VaultError::Corrupt("no sealed vault key".into())),
    }
}

fn sealed_blobs_w(m: &redb::Table<'_, &str, &[u8]>) -> Result<Vec<Vec<u8>>> {
    if let Some(list) = m.get("sealed_keys")? {
        return decode_blobs(list.value());
    }
    match m.get("sealed_key")? {
        Some(b) => Ok(vec![b.value().to_vec()]),
        None => Err(VaultError::Corrupt("no sealed vault key".into())),
    }
}

fn decode_blobs(list: &[u8]) -> Result<Vec<Vec<u8>>> {
    use base64::Engine;
    let v: Vec<String> = serde_json::from_slice(list)
        .map_err(|_| VaultError::Corrupt("the sealed vault key list is unreadable".into()))?;
    let blobs = v
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| VaultError::Corrupt("the sealed vault key list is unreadable".into()))?;
    if blobs.is_empty() {
        return Err(VaultError::Corrupt("no sealed vault key".into()));
    }
    Ok(blobs)
}

fn put_blobs(m: &mut redb::Table<'_, &str, &[u8]>, blobs: &[Vec<u8>]) -> Result<()> {
    use base64::Engine;
    let v: Vec<String> = blobs
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .collect();
    m.insert("sealed_keys", serde_json::to_vec(&v)?.as_slice())?;
    m.remove("sealed_key")?;
    Ok(())
}

fn put_pcrs(m: &mut redb::Table<'_, &str, &[u8]>, pcrs: Option<&PcrSelection>) -> Result<()> {
    match pcrs {
        Some(p) => {
            m.insert("pcrs", p.to_string().as_bytes())?;
        }
        None => {
            m.remove("pcrs")?;
        }
    }
    Ok(())
}

fn default_actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

pub(crate) fn normalise_user(user: &str) -> Result<String> {
    let u = user.trim().to_ascii_lowercase();
    let ok = u.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
    }) && !u
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if !ok {
        return Err(VaultError::Usage(format!(
            "{user:?} is not an email address"
        )));
    }
    Ok(u)
}

pub(crate) fn normalise(user: &str) -> Result<String> {
    normalise_user(user)
}

impl Vault {
    /// Creates a vault in `data_dir` (created if missing): a random vault key, sealed by
    /// `sealer`, and a recovery secret that wraps it independently. Show the returned secret
    /// to the operator once; it is not stored.
    pub fn init(data_dir: &Path, sealer: &mut dyn Sealer) -> Result<(Vault, RecoverySecret)> {
        fs::create_dir_all(data_dir)?;
        let dir = data_dir.canonicalize()?;
        let path = dir.join(DB_FILE);
        if path.exists() {
            return Err(VaultError::AlreadyInitialised(dir));
        }
        let key = VaultSecret::generate()?;
        let sealed = sealer::seal_key(sealer, &dir, &key)?;
        let recovery = RecoverySecret::generate()?;
        let wrapped = recovery.wrap(&key)?;
        let check = cipher::seal(key.bytes(), KEY_CHECK_AAD_KEYED, KEY_CHECK_PLAIN)?;
        let audit_key = AuditKey::derive(&key);
        // Build the database under a temporary name and rename it into place, so a crash
        // during init leaves no half-made vault.
        let tmp = dir.join(format!("{DB_FILE}.init"));
        let _ = fs::remove_file(&tmp);
        let actor = default_actor();
        {
            let db = Database::create(&tmp)?;
            let txn = db.begin_write()?;
            {
                let mut m = txn.open_table(META)?;
                m.insert("format", FORMAT)?;
                m.insert("sealer", sealer.kind().name().as_bytes())?;
                put_blobs(&mut m, std::slice::from_ref(&sealed))?;
                put_pcrs(&mut m, sealer.pcrs().as_ref())?;
                m.insert("recovery_wrap", wrapped.as_slice())?;
                m.insert("key_check", check.as_slice())?;
                m.insert("created", now().to_string().as_bytes())?;
                txn.open_table(KEYS)?;
                txn.open_table(CA)?;
                txn.open_table(REVOKED)?;
                txn.open_table(RECIPIENTS)?;
                let mut a = audit::Writer::open(&txn, &audit_key)?;
                audit::append(
                    &mut a,
                    &actor,
                    "vault.init",
                    "vault",
                    &format!("sealer={}", sealer.kind().name()),
                )?;
            }
            txn.commit()?;
        }
        // Only the vault's owner reads it (the keys in it are encrypted; the rest is not).
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        }
        sealgate_local::fsio::rename_durably(&tmp, &path)?;
        let db = open_db(&path)?;
        let vault = Vault::assemble(db, dir, key, sealer.kind(), actor, sealed);
        Ok((vault, recovery))
    }

    fn assemble(
        db: Database,
        dir: PathBuf,
        key: VaultSecret,
        sealer_kind: SealerKind,
        actor: String,
        opened_blob: Vec<u8>,
    ) -> Vault {
        let db = Arc::new(db);
        let audit_key = Arc::new(AuditKey::derive(&key));
        Vault {
            uses: Arc::new(UseLog::new(&db, audit_key.clone())),
            db,
            dir,
            audit_key,
            key: Arc::new(key),
            sealer_kind,
            actor,
            opened_blob,
        }
    }

    /// Opens the vault in `data_dir`, unsealing its key with `sealer` (which must be of the
    /// kind the vault was created with).
    ///
    /// The vault may hold several sealed copies of its key (see
    /// [`Vault::reseal_for_update`]): they are tried newest first, and the first that unseals
    /// and passes the key check opens the vault. When none does, the error of the newest is
    /// reported.
    pub fn open(data_dir: &Path, sealer: &mut dyn Sealer) -> Result<Vault> {
        let (db, dir) = Self::open_existing(data_dir)?;
        let txn = db.begin_read()?;
        let kind = stored_sealer(&txn)?;
        if kind != sealer.kind() {
            return Err(VaultError::SealerMismatch {
                vault: kind,
                given: sealer.kind(),
            });
        }
        let blobs = sealed_blobs(&txn)?;
        let mut first_error = None;
        for blob in blobs.iter().rev() {
            let attempt = sealer
                .unseal(&dir, blob)
                .map(VaultSecret::from_bytes)
                .and_then(|key| check_key(&txn, &key).map(|keyed| (key, keyed)));
            match attempt {
                Ok((key, keyed)) => {
                    drop(txn);
                    let actor = default_actor();
                    if !keyed {
                        migrate_audit(&db, &key, &actor)?;
                    }
                    let mut vault = Vault::assemble(db, dir, key, kind, actor, blob.clone());
                    if !sealer.is_erasable(blob) {
                        // Sealed before erasable sealing: re-seal so a wipe erases it. Best
                        // effort: if the TPM cannot, the vault still opens and `vault status`
                        // warns that a wipe would not make copies useless.
                        let _ = vault.reseal_erasable(sealer);
                    }
                    return Ok(vault);
                }
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        Err(match first_error {
            Some(VaultError::Unseal(s)) if blobs.len() > 1 => VaultError::Unseal(format!(
                "none of the {} sealed copies opens (newest: {s})",
                blobs.len()
            )),
            Some(e) => e,
            None => VaultError::Corrupt("no sealed vault key".into()),
        })
    }

    /// Opens the vault with its recovery secret and re-seals the vault key with `sealer`
    /// (e.g. a new TPM); the old sealed blob is replaced. Audited.
    pub fn recover(
        data_dir: &Path,
        secret: &RecoverySecret,
        sealer: &mut dyn Sealer,
    ) -> Result<Vault> {
        let (db, dir) = Self::open_existing(data_dir)?;
        let txn = db.begin_read()?;
        let old_kind = stored_sealer(&txn)?;
        let wrapped = meta_get(&txn, "recovery_wrap")?
            .ok_or_else(|| VaultError::Corrupt("no recovery record".into()))?;
        let key = secret.unwrap(&wrapped)?;
        let keyed = check_key(&txn, &key)?;
        drop(txn);
        let actor = default_actor();
        if !keyed {
            migrate_audit(&db, &key, &actor)?;
        }
        let sealed = sealer::seal_key(sealer, &dir, &key)?;
        let audit_key = AuditKey::derive(&key);
        let w = db.begin_write()?;
        {
            let mut m = w.open_table(META)?;
            m.insert("sealer", sealer.kind().name().as_bytes())?;
            put_blobs(&mut m, std::slice::from_ref(&sealed))?;
            put_pcrs(&mut m, sealer.pcrs().as_ref())?;
            drop(m);
            let mut a = audit::Writer::open(&w, &audit_key)?;
            audit::append(
                &mut a,
                &actor,
                "vault.recover",
                "vault",
                &format!("re-sealed: {} -> {}", old_kind.name(), sealer.describe()),
            )?;
        }
        w.commit()?;
        if old_kind == SealerKind::Software && sealer.kind() == SealerKind::Tpm {
            let _ = fs::remove_file(dir.join(crate::sealer::SOFTWARE_KEY_FILE));
        }
        Ok(Vault::assemble(db, dir, key, sealer.kind(), actor, sealed))
    }

    fn open_existing(data_dir: &Path) -> Result<(Database, PathBuf)> {
        let dir = data_dir
            .canonicalize()
            .map_err(|_| VaultError::NotInitialised(data_dir.to_path_buf()))?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Err(VaultError::NotInitialised(dir));
        }
        let db = open_db(&path)?;
        {
            let txn = db.begin_read()?;
            if meta_get(&txn, "format")?.as_deref() != Some(FORMAT) {
                return Err(VaultError::Corrupt(format!(
                    "{} is not a Sealgate vault of a known format",
                    path.display()
                )));
            }
        }
        Ok((db, dir))
    }

    /// Reads the vault's status without unsealing it.
    pub fn status(data_dir: &Path) -> Result<VaultStatus> {
        let (db, dir) = Self::open_existing(data_dir)?;
        let txn = db.begin_read()?;
        let kind = stored_sealer(&txn)?;
        let blobs = sealed_blobs(&txn).unwrap_or_default();
        let stored_pcrs = meta_get(&txn, "pcrs")?.map(|p| String::from_utf8_lossy(&p).to_string());
        let pending_ca = crate::ca::pending_ca_name(&txn)?;
        let keys = read_keys(&txn)?;
        let mut users: Vec<&str> = keys.iter().map(|k| k.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let ca = crate::ca::read_ca(&txn)?
            .and_then(|c| c.certificate().ok())
            .map(|c| c.subject_text());
        let revoked = txn.open_table(REVOKED)?.len()? as usize;
        // The chain is keyed: verifying it needs the vault key (`Vault::check_audit`).
        let audit_entries = txn.open_table(AUDIT)?.len()? as usize;
        let audit_chain = "not verified: the vault is not open".to_string();
        let mut warnings = Vec::new();
        if kind == SealerKind::Software {
            warnings.push("software sealer: NOT protected by a TPM".to_string());
        }
        if kind == SealerKind::Tpm && blobs.iter().any(|b| !sealer::blob_erasable(b)) {
            warnings.push(
                "the vault key is sealed without the TPM's erase secret: a factory wipe would not make copies of vault.redb useless (opening the vault re-seals it)"
                    .to_string(),
            );
        }
        if blobs.len() > 1 {
            warnings.push(format!(
                "{} sealed copies of the vault key: an update is staged or not committed",
                blobs.len()
            ));
        }
        if let Some(name) = pending_ca {
            warnings.push(format!(
                "the intermediate CA {name:?} waits for its signed certificate (`sealctl ca import-cert`)"
            ));
        }
        Ok(VaultStatus {
            data_dir: dir.display().to_string(),
            sealed_by: kind,
            pcrs: if kind == SealerKind::Tpm {
                stored_pcrs.or_else(|| blobs.last().and_then(|b| sealer::blob_pcrs(b)))
            } else {
                None
            },
            sealed_copies: blobs.len(),
            users: users.len(),
            keys: keys.len(),
            active_keys: keys.iter().filter(|k| k.active()).count(),
            ca,
            revoked,
            audit_entries,
            audit_chain,
            audit_verified_now: None,
            unsealed: None,
            unseal_error: None,
            warnings,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The sealer the vault was created (or last recovered) with.
    pub fn sealer_kind(&self) -> SealerKind {
        self.sealer_kind
    }

    /// Sets who is named in the audit entries of this handle's operations, including the
    /// uses of the keys it hands out afterwards.
    pub fn set_actor(&mut self, actor: &str) {
        self.actor = actor.to_string();
    }

    /// How key uses are written to the audit log: a batch of `max_entries` uses (1: a commit
    /// per use, before the key is used) or whatever accumulated within `max_delay`, whichever
    /// comes first. Defaults: [`crate::USE_BATCH_ENTRIES`], [`crate::USE_BATCH_DELAY`]. Applies
    /// to keys already handed out too.
    pub fn set_use_audit_batch(&self, max_entries: usize, max_delay: Duration) {
        self.uses.configure(max_entries, max_delay);
    }

    /// Writes the key uses still buffered to the audit log now.
    pub fn flush_audit(&self) -> Result<()> {
        self.uses.flush()
    }

    /// A write transaction, after the buffered key uses are written (so the log stays in
    /// order). Never use a key while holding one: a full use buffer writes too.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction> {
        self.uses.flush()?;
        Ok(self.db.begin_write()?)
    }

    /// The PCR selection of this vault's TPM seal (`None` for the software sealer).
    pub fn pcrs(&self) -> Result<Option<PcrSelection>> {
        let txn = self.db.begin_read()?;
        match meta_get(&txn, "pcrs")? {
            Some(p) => Ok(Some(String::from_utf8_lossy(&p).parse().map_err(|e| {
                VaultError::Corrupt(format!("stored PCR selection: {e}"))
            })?)),
            None if self.sealer_kind == SealerKind::Tpm => Ok(Some(PcrSelection::default())),
            None => Ok(None),
        }
    }

    /// How many sealed copies of the vault key are stored, and which of them (0 = oldest)
    /// opened this handle (`None` if it is no longer stored).
    pub fn sealed_copies(&self) -> Result<(usize, Option<usize>)> {
        let blobs = sealed_blobs(&self.db.begin_read()?)?;
        let pos = blobs.iter().position(|b| *b == self.opened_blob);
        Ok((blobs.len(), pos))
    }

    /// Update, step 1 (while the running system still unseals): seals the vault key again
    /// for the PCR values the updated system will have (`predicted`: every PCR of the vault's
    /// selection, e.g. computed with `sealgate_tpm::pcr_extend_sha256`) and stores the new
    /// blob next to the current one. Copies newer than the one that opened this handle
    /// (earlier predictions) are replaced. At open the newest copy that unseals wins, so the
    /// updated system opens with the new blob and the old one still opens if the update is
    /// rolled back. Audited. See ARCHITECTURE.md "Updates must not brick the vault".
    pub fn reseal_for_update(
        &self,
        sealer: &mut dyn Sealer,
        predicted: &[(u32, [u8; 32])],
    ) -> Result<()> {
        if sealer.kind() != self.sealer_kind {
            return Err(VaultError::SealerMismatch {
                vault: self.sealer_kind,
                given: sealer.kind(),
            });
        }
        let pcrs = self.pcrs()?.unwrap_or_default();
        let blob = sealer.seal_predicted(&self.dir, self.key.bytes(), &pcrs, predicted)?;
        let values: Vec<String> = predicted
            .iter()
            .map(|(i, v)| format!("{i}:{}", cipher::hex(v)))
            .collect();
        self.audited(
            |txn| {
                let mut m = txn.open_table(META)?;
                let blobs = sealed_blobs_w(&m)?;
                let mut keep = match blobs.iter().position(|b| *b == self.opened_blob) {
                    Some(pos) => blobs[..=pos].to_vec(),
                    None => blobs,
                };
                while keep.len() >= MAX_SEALED_COPIES {
                    keep.remove(0);
                }
                keep.push(blob);
                put_blobs(&mut m, &keep)?;
                Ok(())
            },
            "vault.reseal-for-update",
            "vault",
            &format!("pcrs={pcrs} predicted={}", values.join(",")),
        )
    }

    /// Replaces the sealed copy that opened this handle (sealed before erasable sealing
    /// existed) by one sealed erasably now. Audited.
    fn reseal_erasable(&mut self, sealer: &mut dyn Sealer) -> Result<()> {
        let blob = sealer::seal_key(sealer, &self.dir, &self.key)?;
        let old = self.opened_blob.clone();
        self.audited(
            |txn| {
                let mut m = txn.open_table(META)?;
                let mut blobs = sealed_blobs_w(&m)?;
                match blobs.iter().position(|b| *b == old) {
                    Some(pos) => blobs[pos] = blob.clone(),
                    None => return Err(VaultError::Usage("the opened copy is gone".into())),
                }
                put_blobs(&mut m, &blobs)?;
                Ok(())
            },
            "vault.reseal-erasable",
            "vault",
            "the vault key is now sealed with the TPM's erase secret (a wipe makes copies useless)",
        )?;
        self.opened_blob = blob;
        Ok(())
    }

    /// Update, step 2 (after the updated system opened the vault and passed its health
    /// check): drops the sealed copies older than the one that opened this handle. Returns
    /// how many were dropped. Audited.
    pub fn commit_update(&self) -> Result<usize> {
        self.audited(
            |txn| {
                let mut m = txn.open_table(META)?;
                let blobs = sealed_blobs_w(&m)?;
                let pos = blobs
                    .iter()
                    .position(|b| *b == self.opened_blob)
                    .ok_or_else(|| {
                        VaultError::Usage(
                            "the sealed copy that opened this vault is no longer stored: reopen the vault"
                                .into(),
                        )
                    })?;
                put_blobs(&mut m, &blobs[pos..])?;
                Ok(pos)
            },
            "vault.commit-update",
            "vault",
            "dropped the sealed copies older than the one that opened",
        )
    }

    /// Imports every key of a PKCS#12 file (OpenSSL 3 default or `-legacy`). `user` names the
    /// owner; without it, the certificate's email address is used. All keys or none: a wrong
    /// password or a key that does not match its certificate changes nothing. Keys already in
    /// the vault for that user are skipped. Returns the imported keys.
    pub fn import_pkcs12(
        &self,
        data: &[u8],
        password: &str,
        user: Option<&str>,
    ) -> Result<Vec<KeyInfo>> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            data,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => {
                VaultError::Import("PKCS#12: wrong password (or corrupt file)".into())
            }
            other => VaultError::Import(format!("PKCS#12: cannot read the file: {other}")),
        })?;
        let mut items = Vec::new();
        for (_, entry) in store.entries() {
            if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
                let certs: Vec<Vec<u8>> =
                    chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
                if certs.is_empty() {
                    return Err(VaultError::Import(
                        "PKCS#12: a private key has no certificate".into(),
                    ));
                }
                let pkcs8 = Zeroizing::new(chain.key().as_der().to_vec());
                items.push((pkcs8, certs));
            }
        }
        if items.is_empty() {
            return Err(VaultError::Import(
                "PKCS#12: no private key with a certificate in the file".into(),
            ));
        }
        self.import_items(items, user, "pkcs12")
    }

    /// Imports a PEM (or DER) private key and its certificate (further certificates in the
    /// certificate file become the chain).
    pub fn import_pem(&self, key: &[u8], cert: &[u8], user: Option<&str>) -> Result<Vec<KeyInfo>> {
        let pkcs8 = load_private_key(key).map_err(|e| VaultError::Import(e.to_string()))?;
        let certs = Certificate::parse_many(cert).map_err(|e| VaultError::Import(e.to_string()))?;
        let certs: Vec<Vec<u8>> = certs.iter().map(|c| c.der().to_vec()).collect();
        self.import_items(vec![(pkcs8, certs)], user, "pem")
    }

    fn import_items(
        &self,
        items: Vec<KeyAndCerts>,
        user: Option<&str>,
        source: &str,
    ) -> Result<Vec<KeyInfo>> {
        // Validate everything before writing anything.
        let mut prepared = Vec::new();
        for (pkcs8, certs) in items {
            let parsed: Vec<Certificate> = certs
                .iter()
                .map(|c| {
                    Certificate::from_der(c)
                        .map_err(|e| VaultError::Import(format!("certificate: {e}")))
                })
                .collect::<Result<_>>()?;
            let leaf = parsed[0].clone();
            SoftwareKey::new(&pkcs8, leaf.clone(), parsed[1..].to_vec())
                .map_err(|e| VaultError::Import(e.to_string()))?;
            let owner = match user {
                Some(u) => normalise_user(u)?,
                None => match leaf.emails.first() {
                    Some(e) => normalise_user(e)?,
                    None => {
                        return Err(VaultError::Import(
                            "the certificate names no email address: give the user (--user EMAIL)"
                                .into(),
                        ));
                    }
                },
            };
            prepared.push((pkcs8, certs, owner));
        }
        let txn = self.begin_write()?;
        let mut out = Vec::new();
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            for (pkcs8, certs, owner) in prepared {
                let exists = keys.iter()?.any(|row| {
                    row.ok()
                        .and_then(|(_, v)| serde_json::from_slice::<KeyRecord>(v.value()).ok())
                        .is_some_and(|r| r.user == owner && r.cert == certs[0])
                });
                if exists {
                    continue;
                }
                let rec =
                    self.insert_key(&mut keys, &owner, Purpose::Dual, source, &pkcs8, certs)?;
                let info = rec.info()?;
                audit::append(
                    &mut a,
                    &self.actor,
                    "key.import",
                    &owner,
                    &format!(
                        "record={} source={source} serial={} sha256={}",
                        rec.id, info.serial, info.sha256_fingerprint
                    ),
                )?;
                out.push(info);
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// Encrypts and inserts a key record; the caller audits and commits.
    pub(crate) fn insert_key(
        &self,
        keys: &mut redb::Table<'_, u64, &[u8]>,
        user: &str,
        purpose: Purpose,
        source: &str,
        pkcs8: &[u8],
        certs: Vec<Vec<u8>>,
    ) -> Result<KeyRecord> {
        let id = match keys.last()? {
            Some((k, _)) => k.value() + 1,
            None => 1,
        };
        let encrypted_key = cipher::seal(self.key.bytes(), &key_aad(id), pkcs8)?;
        let mut certs = certs.into_iter();
        let cert = certs
            .next()
            .ok_or_else(|| VaultError::Import("no certificate".into()))?;
        let rec = KeyRecord {
            id,
            user: user.to_string(),
            purpose,
            source: source.to_string(),
            created: now(),
            retired: None,
            revoked: None,
            cert,
            chain: certs.collect(),
            encrypted_key,
        };
        keys.insert(id, serde_json::to_vec(&rec)?.as_slice())?;
        Ok(rec)
    }

    pub(crate) fn records(&self) -> Result<Vec<KeyRecord>> {
        read_keys(&self.db.begin_read()?)
    }

    fn user_records(&self, user: &str) -> Result<Vec<KeyRecord>> {
        let u = normalise_user(user)?;
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.user == u)
            .collect())
    }

    /// Every key of `user`, newest first, including retired and revoked ones (they still
    /// decrypt old mail).
    pub fn keys_for(&self, user: &str) -> Result<Vec<VaultKey>> {
        let mut recs = self.user_records(user)?;
        recs.sort_by_key(|r| std::cmp::Reverse(r.id));
        recs.iter().map(|r| self.vault_key(r)).collect()
    }

    /// The key `user` signs with: the newest active key whose purpose allows signing.
    pub fn signing_key(&self, user: &str) -> Result<VaultKey> {
        let mut recs = self.user_records(user)?;
        recs.sort_by_key(|r| std::cmp::Reverse(r.id));
        let r = recs
            .iter()
            .find(|r| r.active() && r.purpose.signs())
            .ok_or_else(|| VaultError::NoKey(format!("{user} has no active signing key")))?;
        self.vault_key(r)
    }

    fn vault_key(&self, r: &KeyRecord) -> Result<VaultKey> {
        VaultKey::from_record(r, self.key.clone(), &self.actor, self.uses.clone())
    }

    /// The certificate others encrypt to for `user`: the newest active key's that decrypts.
    pub fn certificate(&self, user: &str) -> Result<Certificate> {
        let mut recs = self.user_records(user)?;
        recs.sort_by_key(|r| std::cmp::Reverse(r.id));
        recs.iter()
            .find(|r| r.active() && r.purpose.decrypts())
            .ok_or_else(|| VaultError::NoKey(format!("{user} has no active encryption key")))?
            .certificate()
    }

    /// The keys in the vault (of one user, or all), oldest first.
    pub fn list(&self, user: Option<&str>) -> Result<Vec<KeyInfo>> {
        let recs = match user {
            Some(u) => self.user_records(u)?,
            None => self.records()?,
        };
        recs.iter().map(KeyRecord::info).collect()
    }

    /// The user's current certificates (encryption first, then signing if separate) with
    /// their chains, in `format`.
    pub fn export_cert(&self, user: &str, format: CertFormat) -> Result<Vec<u8>> {
        let mut recs = self.user_records(user)?;
        recs.sort_by_key(|r| std::cmp::Reverse(r.id));
        let mut chosen: Vec<&KeyRecord> = Vec::new();
        if let Some(r) = recs.iter().find(|r| r.active() && r.purpose.decrypts()) {
            chosen.push(r);
        }
        if let Some(r) = recs
            .iter()
            .find(|r| r.active() && r.purpose == Purpose::Signing)
        {
            chosen.push(r);
        }
        if chosen.is_empty() {
            return Err(VaultError::NoKey(format!(
                "{user} has no active certificate"
            )));
        }
        let mut ders: Vec<Vec<u8>> = Vec::new();
        for r in &chosen {
            for d in std::iter::once(&r.cert).chain(r.chain.iter()) {
                if !ders.contains(d) {
                    ders.push(d.clone());
                }
            }
        }
        Ok(match format {
            CertFormat::Pem => ders
                .iter()
                .map(|d| {
                    pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())).replace("\r\n", "\n")
                })
                .collect::<String>()
                .into_bytes(),
            CertFormat::Der => chosen[0].cert.clone(),
            CertFormat::P7c => certs_only(&ders),
        })
    }

    /// Exports every key of `user` (all states) as a PKCS#12 file protected by `password`
    /// (PBES2/AES-256, HMAC-SHA-256: what OpenSSL 3 writes by default). Refuses an empty
    /// password. Audited.
    pub fn export_pkcs12(&self, user: &str, password: &str) -> Result<Vec<u8>> {
        if password.is_empty() {
            return Err(VaultError::Usage(
                "a private key is exported only with a password".into(),
            ));
        }
        // PKCS#12 passwords are BMPStrings (UCS-2): nothing beyond U+FFFF.
        if password.chars().any(|c| u32::from(c) > 0xFFFF) {
            return Err(VaultError::Usage(
                "a PKCS#12 password holds no characters beyond U+FFFF (such as emoji)".into(),
            ));
        }
        let recs = self.user_records(user)?;
        if recs.is_empty() {
            return Err(VaultError::NoKey(format!("{user} has no key")));
        }
        let mut store = p12_keystore::KeyStore::new();
        for r in &recs {
            let pkcs8 = cipher::open(self.key.bytes(), &key_aad(r.id), &r.encrypted_key)
                .ok_or_else(|| {
                    VaultError::Corrupt(format!("key record {} does not decrypt", r.id))
                })?;
            let key = p12_keystore::PrivateKey::from_der(&pkcs8)
                .map_err(|e| VaultError::Corrupt(e.to_string()))?;
            let certs = std::iter::once(&r.cert)
                .chain(r.chain.iter())
                .map(|c| {
                    p12_keystore::Certificate::from_der(c)
                        .map_err(|e| VaultError::Corrupt(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let key_id = cipher::sha256(&[&r.cert])[..20].to_vec();
            let chain = p12_keystore::PrivateKeyChain::new(key_id, key, certs);
            store.add_entry(
                &format!("{}-{}", r.user, r.id),
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
            );
        }
        let out = store
            .writer(password)
            .write()
            .map_err(|e| VaultError::Storage(format!("PKCS#12: {e}")))?;
        let ids: Vec<String> = recs.iter().map(|r| r.id.to_string()).collect();
        self.audited(
            |_| Ok(()),
            "key.export-pkcs12",
            &normalise_user(user)?,
            &format!("records={}", ids.join(",")),
        )?;
        Ok(out)
    }

    /// Runs `change` and appends its audit entry in one write transaction.
    pub(crate) fn audited<T>(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<T>,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<T> {
        self.audited_by(&self.actor, change, action, subject, detail)
    }

    /// [`Vault::audited`] with the entry naming `actor`.
    pub(crate) fn audited_by<T>(
        &self,
        actor: &str,
        change: impl FnOnce(&WriteTransaction) -> Result<T>,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<T> {
        let txn = self.begin_write()?;
        let v = change(&txn)?;
        {
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            audit::append(&mut a, actor, action, subject, detail)?;
        }
        txn.commit()?;
        Ok(v)
    }

    /// The box's own TLS private key (PEM), if one is stored. It is kept like users' keys,
    /// AES-256-GCM under the vault key, so it is never in clear on the disk. Unlike users'
    /// keys it leaves the vault as bytes: the daemon's TLS library holds it in the same
    /// process that holds the vault key.
    pub fn tls_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let txn = self.db.begin_read()?;
        match meta_get(&txn, "tls_key")? {
            Some(sealed) => cipher::open(self.key.bytes(), TLS_KEY_AAD, &sealed)
                .map(Some)
                .ok_or_else(|| VaultError::Corrupt("the TLS key record does not decrypt".into())),
            None => Ok(None),
        }
    }

    /// Stores (replaces) the box's TLS private key (PEM) encrypted under the vault key.
    /// Audited with `why` (e.g. `created`, `moved from tls/box.key`).
    pub fn store_tls_key(&self, pem: &[u8], why: &str) -> Result<()> {
        let sealed = cipher::seal(self.key.bytes(), TLS_KEY_AAD, pem)?;
        self.audited(
            |txn| {
                txn.open_table(META)?.insert("tls_key", sealed.as_slice())?;
                Ok(())
            },
            "vault.tls-key",
            "box",
            why,
        )
    }

    /// The SMTP hand-off's loop-marker HMAC key, if one is stored. Kept like the TLS key,
    /// AES-256-GCM under the vault key (its own associated data, so neither record can be
    /// swapped for the other).
    pub fn smtp_loop_key(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let txn = self.db.begin_read()?;
        match meta_get(&txn, "smtp_loop_key")? {
            Some(sealed) => cipher::open(self.key.bytes(), SMTP_LOOP_KEY_AAD, &sealed)
                .map(Some)
                .ok_or_else(|| {
                    VaultError::Corrupt("the SMTP loop key record does not decrypt".into())
                }),
            None => Ok(None),
        }
    }

    /// Stores (replaces) the SMTP loop-marker key encrypted under the vault key. Audited with
    /// `why` (e.g. `created`, `moved from smtp-loop.key`).
    pub fn store_smtp_loop_key(&self, key: &[u8], why: &str) -> Result<()> {
        let sealed = cipher::seal(self.key.bytes(), SMTP_LOOP_KEY_AAD, key)?;
        self.audited(
            |txn| {
                txn.open_table(META)?
                    .insert("smtp_loop_key", sealed.as_slice())?;
                Ok(())
            },
            "vault.smtp-loop-key",
            "box",
            why,
        )
    }

    /// A 256-bit key for `purpose`, derived from the vault key (HMAC-SHA256 of a fixed label
    /// and the purpose) and never stored: what it protects (e.g. the IMAP proxy's cache of
    /// decrypted views) can be read only while this vault is open, and a new vault (a factory
    /// reset) makes it unreadable. Distinct purposes give unrelated keys.
    pub fn derived_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.key.bytes());
        let mut c = aws_lc_rs::hmac::Context::with_key(&k);
        c.update(b"sealgate derived key v1\n");
        c.update(purpose.as_bytes());
        let tag = c.sign();
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Appends an audit entry for an administrative action taken outside the vault (e.g. the
    /// daemon's reset of admin access), named by `actor`. `action` must not use the vault's
    /// own prefixes (`vault.`, `key.`, `ca.`, `cert.`).
    pub fn record_event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<()> {
        if ["vault.", "key.", "ca.", "cert."]
            .iter()
            .any(|p| action.starts_with(p))
        {
            return Err(VaultError::Usage(format!(
                "{action:?} is one of the vault's own actions"
            )));
        }
        let txn = self.begin_write()?;
        {
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            audit::append(&mut a, actor, action, subject, detail)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The audit log (buffered key uses written first), after verifying the whole chain:
    /// links, plain hashes, every entry's MAC and the head.
    pub fn audit(&self) -> Result<Vec<AuditEntry>> {
        self.uses.flush()?;
        let txn = self.db.begin_read()?;
        let keyed = check_key(&txn, &self.key)?;
        let t = txn.open_table(AUDIT)?;
        match open_audit_meta(&txn)? {
            Some(m) => audit::read_verified(&t, &m, &self.audit_key, keyed),
            None if keyed => Err(VaultError::Corrupt(
                "audit log: the keyed chain's head is missing".into(),
            )),
            // An unkeyed chain that did not verify at open (so it was not migrated).
            None => audit::verify_unkeyed(&t).and_then(|_| {
                Err(VaultError::Corrupt(
                    "audit log: the chain is not keyed".into(),
                ))
            }),
        }
    }

    /// A page of the audit log *without* verifying the chain (pair it with
    /// [`Vault::check_audit`], whose cost does not grow with the log): the entries `keep`
    /// selects, oldest first, from the `offset`th selected on, at most `limit`; and how many
    /// were selected in all.
    pub fn audit_page(
        &self,
        keep: impl Fn(&AuditEntry) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<AuditEntry>)> {
        self.uses.flush()?;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let (mut total, mut out) = (0usize, Vec::new());
        for row in t.iter()? {
            let (k, v) = row?;
            let e = audit::parse_entry(k.value(), v.value())?;
            if !keep(&e) {
                continue;
            }
            if total >= offset && out.len() < limit {
                out.push(e);
            }
            total += 1;
        }
        Ok((total, out))
    }

    /// The fast check `vault status` runs: verifies the entries after the last checkpoint
    /// (links, hashes, MACs), the checkpoint's own entry and the head, then moves the
    /// checkpoint to the last verified entry. Its cost does not grow with the log;
    /// [`Vault::audit`] and [`Vault::verify`] read the whole chain.
    pub fn check_audit(&self) -> Result<AuditCheck> {
        self.uses.flush()?;
        let (check, at) = {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(AUDIT)?;
            let m = open_audit_meta(&txn)?.ok_or_else(|| {
                VaultError::Corrupt("audit log: the keyed chain's head is missing".into())
            })?;
            audit::verify_tail_at(&t, &m, &self.audit_key)?
        };
        if check.verified > 0 {
            let txn = self.db.begin_write()?;
            audit::advance_checkpoint(&txn, &self.audit_key, at)?;
            txn.commit()?;
        }
        Ok(check)
    }

    /// Full integrity check: the audit chain verifies and every stored private key decrypts
    /// and matches its certificate. Returns the number of keys checked.
    pub fn verify(&self) -> Result<usize> {
        self.audit()?;
        let recs = self.records()?;
        for r in &recs {
            self.vault_key(r)?.check()?;
        }
        if let Some(ca) = crate::ca::read_ca(&self.db.begin_read()?)? {
            ca.signing_key(&self.key)?;
        }
        Ok(recs.len())
    }

    /// Stores an external recipient's certificate (public only), keyed by its email addresses.
    pub fn add_recipient_certificate(&self, cert: &Certificate) -> Result<()> {
        self.add_recipient_certificate_by(cert, &self.actor)
    }

    /// [`Vault::add_recipient_certificate`] on behalf of `actor` (named in the audit entry).
    pub fn add_recipient_certificate_by(&self, cert: &Certificate, actor: &str) -> Result<()> {
        if cert.emails.is_empty() {
            return Err(VaultError::Usage(
                "the certificate names no email address".into(),
            ));
        }
        let fp = cipher::hex(&cipher::sha256(&[cert.der()]));
        // Stored under the same normal form the lookup uses; addresses that are not usable
        // as one (no domain, say) are skipped, and a certificate with none is refused.
        let emails: Vec<String> = cert
            .emails
            .iter()
            .filter_map(|e| normalise_user(e).ok())
            .collect();
        if emails.is_empty() {
            return Err(VaultError::Usage(
                "the certificate names no usable email address".into(),
            ));
        }
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(RECIPIENTS)?;
                for e in &emails {
                    t.insert(format!("{e}\n{fp}").as_str(), cert.der())?;
                }
                Ok(())
            },
            "cert.add-recipient",
            &cert.emails.join(","),
            &format!("sha256={fp}"),
        )
    }

    /// External recipients' certificates stored for `email`.
    pub fn recipient_certificates(&self, email: &str) -> Result<Vec<Certificate>> {
        let e = normalise_user(email)?;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECIPIENTS)?;
        let prefix = format!("{e}\n");
        let mut out = Vec::new();
        for row in t.range(prefix.as_str()..)? {
            let (k, v) = row?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(
                Certificate::from_der(v.value()).map_err(|e| VaultError::Corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }
}

fn stored_sealer(txn: &redb::ReadTransaction) -> Result<SealerKind> {
    match meta_get(txn, "sealer")?.as_deref() {
        Some(b"tpm") => Ok(SealerKind::Tpm),
        Some(b"software") => Ok(SealerKind::Software),
        _ => Err(VaultError::Corrupt("unknown sealer kind".into())),
    }
}

/// The audit chain's head and checkpoint table (`None`: never written, or removed).
fn open_audit_meta(
    txn: &redb::ReadTransaction,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>> {
    match txn.open_table(audit::AUDIT_META) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Checks that `key` is this vault's key; `Ok(true)` when its audit chain is keyed.
fn check_key(txn: &redb::ReadTransaction, key: &VaultSecret) -> Result<bool> {
    let check = meta_get(txn, "key_check")?
        .ok_or_else(|| VaultError::Corrupt("no key check record".into()))?;
    for (aad, keyed) in [(KEY_CHECK_AAD_KEYED, true), (KEY_CHECK_AAD, false)] {
        if let Some(p) = cipher::open(key.bytes(), aad, &check)
            && p.as_slice() == KEY_CHECK_PLAIN
        {
            return Ok(keyed);
        }
    }
    Err(VaultError::Unseal(
        "the unsealed key is not this vault's key".into(),
    ))
}

/// Keys the audit chain of a vault made before it was keyed (see `audit.rs`, "Migration"):
/// verifies the plain chain, appends a keyed `audit.keyed` entry (which pins every older one)
/// and marks the key check, in one transaction. A plain chain that does not verify is left
/// as it is (its error shows in every read), never blessed.
fn migrate_audit(db: &Database, key: &VaultSecret, actor: &str) -> Result<()> {
    let audit_key = AuditKey::derive(key);
    let txn = db.begin_write()?;
    {
        let n = match audit::verify_unkeyed(&txn.open_table(AUDIT)?) {
            Ok(n) => n,
            Err(_) => return Ok(()),
        };
        let mut a = audit::Writer::open(&txn, &audit_key)?;
        audit::append(
            &mut a,
            actor,
            "audit.keyed",
            "vault",
            &format!(
                "the chain is keyed from here on; entries 1..={n} were hash-chained without a key"
            ),
        )?;
        drop(a);
        let mut m = txn.open_table(META)?;
        m.insert(
            "key_check",
            cipher::seal(key.bytes(), KEY_CHECK_AAD_KEYED, KEY_CHECK_PLAIN)?.as_slice(),
        )?;
    }
    txn.commit()?;
    Ok(())
}

pub(crate) fn read_keys(txn: &redb::ReadTransaction) -> Result<Vec<KeyRecord>> {
    let t = txn.open_table(KEYS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        out.push(
            serde_json::from_slice(v.value()).map_err(|_| {
                VaultError::Corrupt(format!("key record {} is unreadable", k.value()))
            })?,
        );
    }
    Ok(out)
}

/// A certs-only SignedData (RFC 5652 / RFC 8551 `.p7c`).
fn certs_only(ders: &[Vec<u8>]) -> Vec<u8> {
    use sealgate_smime::asn1::der;
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let certs: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
    let sd = der::seq(&[
        &der::uint(1),
        &der::set_of(&[]),
        &der::seq(&[&der::oid(DATA)]),
        &der::cons(0xa0, &certs),
        &der::set_of(&[]),
    ]);
    der::seq(&[&der::oid(SIGNED_DATA), &der::cons(0xa0, &[&sd])])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareSealer;

    fn software_key(dir: &Path) -> VaultSecret {
        VaultSecret::from_bytes(
            SoftwareSealer::danger_new()
                .unseal(dir, b"")
                .expect("software key"),
        )
    }

    /// Rewrites the audit log in place; `f` gets every entry (plain hashes are recomputed by
    /// the caller if it wants them consistent).
    fn edit_entries(dir: &Path, f: impl Fn(&mut AuditEntry)) {
        let db = Database::open(dir.join(DB_FILE)).expect("db");
        let txn = db.begin_write().expect("w");
        {
            let mut t = txn.open_table(AUDIT).expect("t");
            let all: Vec<AuditEntry> = t
                .iter()
                .expect("iter")
                .map(|r| serde_json::from_slice(r.expect("row").1.value()).expect("entry"))
                .collect();
            for mut e in all {
                f(&mut e);
                t.insert(e.seq, serde_json::to_vec(&e).expect("json").as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    /// What the code before the keyed chain left: entries without MACs, no head, the old key
    /// check.
    fn make_legacy(dir: &Path) {
        let key = software_key(dir);
        edit_entries(dir, |e| e.mac.clear());
        let db = Database::open(dir.join(DB_FILE)).expect("db");
        let txn = db.begin_write().expect("w");
        txn.delete_table(audit::AUDIT_META).expect("drop head");
        txn.open_table(META)
            .expect("meta")
            .insert(
                "key_check",
                cipher::seal(key.bytes(), KEY_CHECK_AAD, KEY_CHECK_PLAIN)
                    .expect("seal")
                    .as_slice(),
            )
            .expect("insert");
        txn.commit().expect("commit");
    }

    fn new_vault(dir: &Path) {
        let (v, _) = Vault::init(dir, &mut SoftwareSealer::danger_new()).expect("init");
        v.record_event("test", "test.one", "vault", "1")
            .expect("event");
        v.record_event("test", "test.two", "vault", "2")
            .expect("event");
    }

    #[test]
    fn derived_keys_are_stable_per_vault_and_purpose() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let (va, _) = Vault::init(a.path(), &mut SoftwareSealer::danger_new()).expect("init");
        let (vb, _) = Vault::init(b.path(), &mut SoftwareSealer::danger_new()).expect("init");
        let k = va.derived_key("imap view cache");
        assert_ne!(*k, *va.derived_key("other purpose"));
        assert_ne!(*k, *vb.derived_key("imap view cache"));
        drop(va);
        let va = Vault::open(a.path(), &mut SoftwareSealer::danger_new()).expect("open");
        assert_eq!(*k, *va.derived_key("imap view cache"));
    }

    #[test]
    fn an_unkeyed_chain_is_keyed_when_the_vault_is_first_opened() {
        let tmp = tempfile::tempdir().expect("tmp");
        new_vault(tmp.path());
        make_legacy(tmp.path());
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        let log = v.audit().expect("the migrated chain verifies");
        assert_eq!(log.len(), 4);
        assert!(log[..3].iter().all(|e| e.mac.is_empty()));
        assert_eq!(log[3].action, "audit.keyed");
        assert!(!log[3].mac.is_empty());
        assert_eq!(
            log[3].prev, log[2].hash,
            "the keyed entry pins the older ones"
        );
        v.record_event("test", "test.three", "vault", "3")
            .expect("event");
        assert_eq!(v.check_audit().expect("check").entries, 5);
        drop(v);
        // Opened again: nothing more to migrate.
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        assert_eq!(v.audit().expect("audit").len(), 5);
        drop(v);

        // An older entry rewritten with recomputed plain hashes is detected.
        edit_entries(tmp.path(), |e| {
            if e.seq == 2 {
                e.detail = "forged".into();
            }
        });
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        assert!(v.audit().is_err());
    }

    #[test]
    fn stripping_the_macs_does_not_pass_a_keyed_chain_off_as_unkeyed() {
        let tmp = tempfile::tempdir().expect("tmp");
        new_vault(tmp.path());
        // The attacker strips the MACs and the head, but cannot write the old key check.
        edit_entries(tmp.path(), |e| e.mac.clear());
        {
            let db = Database::open(tmp.path().join(DB_FILE)).expect("db");
            let txn = db.begin_write().expect("w");
            txn.delete_table(audit::AUDIT_META).expect("drop head");
            txn.commit().expect("commit");
        }
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        let e = v.audit().expect_err("a keyed vault needs its head");
        assert!(e.to_string().contains("head is missing"), "{e}");
        assert!(v.check_audit().is_err());
        assert!(
            !v.audit()
                .map(|l| l.iter().any(|e| e.action == "audit.keyed"))
                .unwrap_or(false),
            "it was not migrated again"
        );
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        new_vault(tmp.path());
        let mode = fs::metadata(tmp.path().join(DB_FILE))
            .expect("db")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn status_verifies_only_what_came_after_the_checkpoint() {
        let tmp = tempfile::tempdir().expect("tmp");
        new_vault(tmp.path());
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        let first = v.check_audit().expect("check");
        assert_eq!((first.entries, first.verified), (3, 3));
        for i in 0..50 {
            v.record_event("test", "test.more", "vault", &i.to_string())
                .expect("event");
        }
        let second = v.check_audit().expect("check");
        assert_eq!(
            (second.entries, second.verified, second.checkpoint),
            (53, 50, 3)
        );
        assert_eq!(v.check_audit().expect("check").verified, 0);
        drop(v);
        // The plain status does not need the key and reads no entries.
        let st = Vault::status(tmp.path()).expect("status");
        assert_eq!(st.audit_entries, 53);
    }
    #[test]
    fn the_smtp_loop_key_is_sealed_apart_from_the_tls_key_and_survives_a_reopen() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (v, _) = Vault::init(tmp.path(), &mut SoftwareSealer::danger_new()).expect("init");
        assert!(v.smtp_loop_key().expect("read").is_none());
        v.store_smtp_loop_key(b"loop-secret", "created")
            .expect("store");
        assert!(v.tls_key().expect("read").is_none(), "a record of its own");
        drop(v);
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        assert_eq!(
            v.smtp_loop_key().expect("read").expect("kept").as_slice(),
            b"loop-secret"
        );
        // The sealed record is bound to its purpose: moved into the TLS key's place, it
        // does not decrypt.
        drop(v);
        let db = Database::open(tmp.path().join(DB_FILE)).expect("db");
        let txn = db.begin_write().expect("w");
        {
            let mut meta = txn.open_table(META).expect("meta");
            let sealed = meta
                .get("smtp_loop_key")
                .expect("get")
                .expect("present")
                .value()
                .to_vec();
            meta.insert("tls_key", sealed.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
        drop(db);
        let v = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
        assert!(v.tls_key().is_err());
        let log = v.audit().expect("audit");
        assert!(log.iter().any(|e| e.action == "vault.smtp-loop-key"));
    }
}
