//! What the database stores per key, and what `keys list` shows.

use sealgate_smime::cert::{Certificate, hex};
use serde::{Deserialize, Serialize};

use crate::cipher;
use crate::error::{Result, VaultError};

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Signing and decrypting (one dual-use key).
    Dual,
    /// Signing only.
    Signing,
    /// Decrypting only.
    Encryption,
}

impl Purpose {
    /// May sign mail.
    pub fn signs(self) -> bool {
        matches!(self, Purpose::Dual | Purpose::Signing)
    }

    /// May receive (decrypt) mail.
    pub fn decrypts(self) -> bool {
        matches!(self, Purpose::Dual | Purpose::Encryption)
    }
}

/// A user's key pair as stored: the private key only as AES-256-GCM ciphertext.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub id: u64,
    pub user: String,
    pub purpose: Purpose,
    /// `pkcs12`, `pem` or `ca`.
    pub source: String,
    pub created: i64,
    /// Set when a newer key replaced it (renewal) or it was revoked: kept for decryption only.
    pub retired: Option<i64>,
    pub revoked: Option<i64>,
    #[serde(with = "b64")]
    pub cert: Vec<u8>,
    #[serde(with = "b64_list")]
    pub chain: Vec<Vec<u8>>,
    /// `nonce || ciphertext || tag` of the PKCS#8 key, AAD = [`key_aad`] of `id`.
    #[serde(with = "b64")]
    pub encrypted_key: Vec<u8>,
}

/// The associated data that binds an encrypted private key to its record.
pub(crate) fn key_aad(id: u64) -> Vec<u8> {
    format!("sealgate key record {id}").into_bytes()
}

impl KeyRecord {
    pub(crate) fn certificate(&self) -> Result<Certificate> {
        Certificate::from_der(&self.cert)
            .map_err(|e| VaultError::Corrupt(format!("key record {}: certificate: {e}", self.id)))
    }

    pub(crate) fn chain_certs(&self) -> Result<Vec<Certificate>> {
        self.chain
            .iter()
            .map(|c| {
                Certificate::from_der(c)
                    .map_err(|e| VaultError::Corrupt(format!("key record {}: chain: {e}", self.id)))
            })
            .collect()
    }

    pub(crate) fn active(&self) -> bool {
        self.retired.is_none() && self.revoked.is_none()
    }

    pub(crate) fn info(&self) -> Result<KeyInfo> {
        let c = self.certificate()?;
        Ok(KeyInfo {
            id: self.id,
            user: self.user.clone(),
            purpose: self.purpose,
            source: self.source.clone(),
            status: if self.revoked.is_some() {
                "revoked"
            } else if self.retired.is_some() {
                "retired"
            } else {
                "active"
            }
            .to_string(),
            created: rfc3339(self.created),
            subject: c.subject_text(),
            issuer: c.issuer_text(),
            serial: hex(&c.serial),
            key_type: c.key_kind.label(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            sha256_fingerprint: cipher::hex(&cipher::sha256(&[c.der()])),
        })
    }
}

/// A key as `keys list` shows it (no key material).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The record id.
    pub id: u64,
    /// The user (email address, lower case).
    pub user: String,
    /// What the key is for.
    pub purpose: Purpose,
    /// Where it came from: `pkcs12`, `pem` or `ca`.
    pub source: String,
    /// `active`, `retired` (kept for decryption) or `revoked`.
    pub status: String,
    /// When it entered the vault (RFC 3339).
    pub created: String,
    /// The certificate's subject.
    pub subject: String,
    /// The certificate's issuer.
    pub issuer: String,
    /// The certificate's serial number (hex).
    pub serial: String,
    /// Key type, e.g. `RSA-3072`.
    pub key_type: String,
    /// Validity start (RFC 3339).
    pub not_before: String,
    /// Validity end (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the certificate's DER.
    pub sha256_fingerprint: String,
}

pub(crate) fn rfc3339(t: i64) -> String {
    sealgate_smime::message::rfc3339(t)
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod b64_list {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| STANDARD.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}
