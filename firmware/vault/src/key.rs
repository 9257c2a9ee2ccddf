//! [`VaultKey`]: a decrypt/sign capability over a key kept encrypted in the vault.

use std::sync::{Arc, OnceLock};

use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::{OaepParams, PrivateKey, SignScheme, SoftwareKey};
use zeroize::Zeroizing;

use crate::audit::{KeyUse, UseLog};
use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};
use crate::record::{KeyRecord, Purpose, key_aad, now};

/// One of a user's keys, as the S/MIME engine uses it.
///
/// Holds the certificate and the *encrypted* private key. The first operation decrypts the
/// PKCS#8 key and builds a [`SoftwareKey`] (validating an RSA key costs several times more
/// than using it); later operations on the same `VaultKey` reuse it, and dropping the
/// `VaultKey` drops it (the PKCS#8 bytes and the implicit-rejection secret zeroize, AWS-LC
/// clears its key memory on free). Keeping it adds no exposure: the vault secret that opens
/// every key record is resident in the same process anyway. Callers that want the clear key
/// gone sooner drop the `VaultKey` (the daemon's directory cache does after its TTL).
///
/// Every decrypt and sign is audited before the key is used (see the vault's audit log):
/// who (the actor of the [`crate::Vault`] handle that made this key, or [`VaultKey::set_actor`]),
/// what (`key.decrypt` / `key.sign` and the operation), which key (user and record id), when.
/// A use that cannot be recorded is refused, and so is a use after the vault was dropped.
pub struct VaultKey {
    id: u64,
    user: String,
    purpose: Purpose,
    active: bool,
    cert: Certificate,
    chain: Vec<Certificate>,
    encrypted_key: Vec<u8>,
    vault_key: Arc<VaultSecret>,
    actor: String,
    /// Where uses are recorded; `None` only in this crate's own benchmarks.
    uses: Option<Arc<UseLog>>,
    /// The clear key, opened on first use.
    opened: OnceLock<SoftwareKey>,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

impl VaultKey {
    pub(crate) fn from_record(
        r: &KeyRecord,
        vault_key: Arc<VaultSecret>,
        actor: &str,
        uses: Arc<UseLog>,
    ) -> Result<VaultKey> {
        Ok(VaultKey {
            id: r.id,
            user: r.user.clone(),
            purpose: r.purpose,
            active: r.active(),
            cert: r.certificate()?,
            chain: r.chain_certs()?,
            encrypted_key: r.encrypted_key.clone(),
            vault_key,
            actor: actor.to_string(),
            uses: Some(uses),
            opened: OnceLock::new(),
        })
    }

    /// Names who uses this key in its audit entries (e.g. the daemon's request context);
    /// defaults to the actor of the vault handle that made it.
    pub fn set_actor(&mut self, actor: &str) {
        self.actor = actor.to_string();
    }

    #[cfg(test)]
    pub(crate) fn without_audit(mut self) -> VaultKey {
        self.uses = None;
        self
    }

    /// The record id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The user the key belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// What the key is for.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// False for retired (renewed) and revoked keys, which are kept to decrypt old mail.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Decrypts the key and checks that it matches its certificate (integrity check).
    pub fn check(&self) -> Result<()> {
        self.open().map(|_| ())
    }

    /// Runs `f` with the clear key, opening it on first use.
    fn with_key<T>(&self, f: impl FnOnce(&SoftwareKey) -> sealgate_smime::Result<T>) -> Result<T> {
        let key = match self.opened.get() {
            Some(k) => k,
            None => {
                let k = self.open()?;
                // A concurrent first use may have won; either key is the same.
                let _ = self.opened.set(k);
                self.opened.get().ok_or_else(|| {
                    VaultError::Corrupt(format!("key record {} did not open", self.id))
                })?
            }
        };
        f(key).map_err(|e| VaultError::Usage(e.to_string()))
    }

    /// Decrypts the PKCS#8 key and checks it against the certificate.
    fn open(&self) -> Result<SoftwareKey> {
        let pkcs8: Zeroizing<Vec<u8>> = cipher::open(
            self.vault_key.bytes(),
            &key_aad(self.id),
            &self.encrypted_key,
        )
        .ok_or_else(|| VaultError::Corrupt(format!("key record {} does not decrypt", self.id)))?;
        SoftwareKey::new(&pkcs8, self.cert.clone(), self.chain.clone())
            .map_err(|e| VaultError::Corrupt(format!("key record {}: {e}", self.id)))
    }

    /// This key with its uses attributed to `actor`, for a key shared between callers (the
    /// daemon caches keys across requests and names each request's client and peer).
    pub fn acting_as(self: &Arc<Self>, actor: &str) -> ActingKey {
        ActingKey {
            key: self.clone(),
            actor: actor.to_string(),
        }
    }

    /// Audits a use (`action` on this key by `op`) by this key's actor, then runs it.
    fn engine<T>(
        &self,
        action: &'static str,
        op: &str,
        f: impl FnOnce(&SoftwareKey) -> sealgate_smime::Result<T>,
    ) -> sealgate_smime::Result<T> {
        self.engine_as(&self.actor, action, op, f)
    }

    /// Audits a use (`action` on this key by `op`) by `actor`, then runs it.
    fn engine_as<T>(
        &self,
        actor: &str,
        action: &'static str,
        op: &str,
        f: impl FnOnce(&SoftwareKey) -> sealgate_smime::Result<T>,
    ) -> sealgate_smime::Result<T> {
        if let Some(log) = &self.uses {
            log.record(KeyUse {
                time: now(),
                actor: actor.to_string(),
                action,
                subject: self.user.clone(),
                detail: format!("record={} op={op}", self.id),
            })
            .map_err(|e| {
                sealgate_smime::Error::Key(format!("key use refused: it cannot be audited: {e}"))
            })?;
        }
        let mut inner_err = None;
        let r = self.with_key(|k| f(k).inspect_err(|e| inner_err = Some(e.clone())));
        match (r, inner_err) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(sealgate_smime::Error::Key(e.to_string())),
        }
    }
}

impl PrivateKey for VaultKey {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    fn rsa_pkcs1_decrypt(
        &self,
        encrypted_key: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.engine("key.decrypt", "rsa-pkcs1", |k| {
            k.rsa_pkcs1_decrypt(encrypted_key, key_len)
        })
    }

    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.engine("key.decrypt", "rsa-oaep", |k| {
            k.rsa_oaep_decrypt(encrypted_key, params, label, key_len)
        })
    }

    fn ecdh(&self, peer_public: &[u8]) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.engine("key.decrypt", "ecdh", |k| k.ecdh(peer_public))
    }

    fn sign(&self, scheme: SignScheme, message: &[u8]) -> sealgate_smime::Result<Vec<u8>> {
        self.engine("key.sign", sign_op(scheme), |k| k.sign(scheme, message))
    }
}

/// A shared [`VaultKey`] whose uses are audited under one caller's name
/// ([`VaultKey::acting_as`]).
#[derive(Debug, Clone)]
pub struct ActingKey {
    key: Arc<VaultKey>,
    actor: String,
}

impl ActingKey {
    /// The key.
    pub fn key(&self) -> &VaultKey {
        &self.key
    }
}

impl PrivateKey for ActingKey {
    fn certificate(&self) -> &Certificate {
        &self.key.cert
    }

    fn chain(&self) -> &[Certificate] {
        &self.key.chain
    }

    fn rsa_pkcs1_decrypt(
        &self,
        encrypted_key: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key
            .engine_as(&self.actor, "key.decrypt", "rsa-pkcs1", |k| {
                k.rsa_pkcs1_decrypt(encrypted_key, key_len)
            })
    }

    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key
            .engine_as(&self.actor, "key.decrypt", "rsa-oaep", |k| {
                k.rsa_oaep_decrypt(encrypted_key, params, label, key_len)
            })
    }

    fn ecdh(&self, peer_public: &[u8]) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key
            .engine_as(&self.actor, "key.decrypt", "ecdh", |k| k.ecdh(peer_public))
    }

    fn sign(&self, scheme: SignScheme, message: &[u8]) -> sealgate_smime::Result<Vec<u8>> {
        self.key
            .engine_as(&self.actor, "key.sign", sign_op(scheme), |k| {
                k.sign(scheme, message)
            })
    }
}

fn sign_op(scheme: SignScheme) -> &'static str {
    match scheme {
        SignScheme::RsaPkcs1(_) => "rsa-pkcs1",
        SignScheme::RsaPss(_) => "rsa-pss",
        SignScheme::Ecdsa(_) => "ecdsa",
        SignScheme::Ed25519 => "ed25519",
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use sealgate_smime::crypto::CipherChoice;
    use sealgate_smime::envelope::Recipient;
    use sealgate_smime::keys::PrivateKey;
    use sealgate_smime::message::{self, OpenMode};
    use sealgate_smime::signed::VerifyOptions;

    use crate::{CaSettings, SoftwareSealer, Vault};

    fn rate(key: &dyn PrivateKey, enc: &[u8], n: u32) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            let out = message::open(enc, &[key], &VerifyOptions::default(), OpenMode::Decrypt)
                .expect("decrypt");
            assert!(out.decrypted());
        }
        f64::from(n) / start.elapsed().as_secs_f64()
    }

    /// The cost of auditing each decryption: message decryptions/s through a `VaultKey`
    /// (RSA-3072, AES-256-CBC) without the audit, with the batched audit (the default) and
    /// with a redb commit per use. Prints the numbers; asserts only that every use was logged.
    #[test]
    fn audited_decrypt_throughput() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (vault, _) = Vault::init(tmp.path(), &mut SoftwareSealer::danger_new()).expect("init");
        vault
            .ca_init("Bench CA", &CaSettings::default())
            .expect("ca");
        vault.ca_issue("bench@example.org").expect("issue");
        let cert = vault.certificate("bench@example.org").expect("cert");
        let enc = message::encrypt_message(
            b"Subject: b\r\n\r\nbench\r\n",
            &[Recipient::new(cert).expect("recipient")],
            CipherChoice::Aes256Cbc,
        )
        .expect("encrypt");
        let key = || vault.signing_key("bench@example.org").expect("key");
        let before = vault.audit().expect("audit").len();

        const N: u32 = 200;
        let plain = rate(&key().without_audit(), &enc, N);
        let batched = rate(&key(), &enc, N);
        vault.set_use_audit_batch(1, Duration::from_secs(1));
        let immediate = rate(&key(), &enc, N / 2);
        eprintln!(
            "timing: VaultKey RSA-3072 message decrypts/s: no audit {plain:.0}, batched audit {batched:.0} ({:.1}% of no audit), commit per use {immediate:.0} ({:.1}%)",
            100.0 * batched / plain,
            100.0 * immediate / plain
        );
        let log = vault.audit().expect("audit");
        let uses = log[before..]
            .iter()
            .filter(|e| e.action == "key.decrypt")
            .count();
        assert_eq!(uses as u32, N + N / 2, "every audited decrypt is logged");
    }

    /// A key used after its vault was dropped is refused at its first use, batch or not:
    /// the use could never be written.
    #[test]
    fn a_use_after_the_vault_closed_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (vault, _) = Vault::init(tmp.path(), &mut SoftwareSealer::danger_new()).expect("init");
        vault
            .ca_init("Test CA", &CaSettings::default())
            .expect("ca");
        vault.ca_issue("late@example.org").expect("issue");
        let cert = vault.certificate("late@example.org").expect("cert");
        let enc = message::encrypt_message(
            b"Subject: b\r\n\r\nlate\r\n",
            &[Recipient::new(cert).expect("recipient")],
            CipherChoice::Aes256Cbc,
        )
        .expect("encrypt");
        let key = vault.signing_key("late@example.org").expect("key");
        assert!(message::open(&enc, &[&key], &VerifyOptions::default(), OpenMode::Decrypt).is_ok());
        drop(vault);
        assert!(
            message::open(&enc, &[&key], &VerifyOptions::default(), OpenMode::Decrypt).is_err(),
            "a use that cannot be audited is refused"
        );
    }
}
