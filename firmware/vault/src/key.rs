//! [`VaultKey`]: a decrypt/sign capability over a key kept encrypted in the vault.

use std::sync::Arc;

use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::{OaepParams, PrivateKey, SignScheme, SoftwareKey};
use zeroize::Zeroizing;

use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};
use crate::record::{KeyRecord, Purpose, key_aad};

/// One of a user's keys, as the S/MIME engine uses it.
///
/// Holds the certificate and the *encrypted* private key. Each operation decrypts the PKCS#8
/// key, builds a [`SoftwareKey`] for that one call and drops it (both zeroize), so the clear
/// key lives in memory only while it is used.
pub struct VaultKey {
    id: u64,
    user: String,
    purpose: Purpose,
    active: bool,
    cert: Certificate,
    chain: Vec<Certificate>,
    encrypted_key: Vec<u8>,
    vault_key: Arc<VaultSecret>,
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
    pub(crate) fn from_record(r: &KeyRecord, vault_key: Arc<VaultSecret>) -> Result<VaultKey> {
        Ok(VaultKey {
            id: r.id,
            user: r.user.clone(),
            purpose: r.purpose,
            active: r.active(),
            cert: r.certificate()?,
            chain: r.chain_certs()?,
            encrypted_key: r.encrypted_key.clone(),
            vault_key,
        })
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
        self.with_key(|_| Ok(()))
    }

    /// Runs `f` with the clear key; the key is zeroized when `f` returns.
    fn with_key<T>(&self, f: impl FnOnce(&SoftwareKey) -> sealgate_smime::Result<T>) -> Result<T> {
        let pkcs8: Zeroizing<Vec<u8>> = cipher::open(
            self.vault_key.bytes(),
            &key_aad(self.id),
            &self.encrypted_key,
        )
        .ok_or_else(|| VaultError::Corrupt(format!("key record {} does not decrypt", self.id)))?;
        let key = SoftwareKey::new(&pkcs8, self.cert.clone(), self.chain.clone())
            .map_err(|e| VaultError::Corrupt(format!("key record {}: {e}", self.id)))?;
        f(&key).map_err(|e| VaultError::Usage(e.to_string()))
    }

    fn engine<T>(
        &self,
        f: impl FnOnce(&SoftwareKey) -> sealgate_smime::Result<T>,
    ) -> sealgate_smime::Result<T> {
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
        self.engine(|k| k.rsa_pkcs1_decrypt(encrypted_key, key_len))
    }

    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.engine(|k| k.rsa_oaep_decrypt(encrypted_key, params, label, key_len))
    }

    fn ecdh(&self, peer_public: &[u8]) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.engine(|k| k.ecdh(peer_public))
    }

    fn sign(&self, scheme: SignScheme, message: &[u8]) -> sealgate_smime::Result<Vec<u8>> {
        self.engine(|k| k.sign(scheme, message))
    }
}
