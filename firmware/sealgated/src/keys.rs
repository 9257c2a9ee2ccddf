//! Where the docking operations get keys and certificates: a narrow trait, so the vault (today
//! redb, later maybe a shared database or an HSM) stays behind one boundary.

use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::PrivateKey;
use sealgate_vault::{Vault, VaultError};

/// A private key the engine may use from any thread.
pub type Key = Box<dyn PrivateKey + Send + Sync>;

/// Keys and certificates by email address.
pub trait KeyDirectory: Send + Sync {
    /// Every key (all states: old keys still decrypt) of the local user `address`; empty if
    /// the box holds none.
    fn decryption_keys(&self, address: &str) -> Result<Vec<Key>, VaultError>;
    /// The key `address` signs with, if the box holds one.
    fn signing_key(&self, address: &str) -> Result<Option<Key>, VaultError>;
    /// The certificate to encrypt to for `address`: a local user's own, else a stored
    /// recipient certificate valid now (the newest).
    fn encryption_certificate(&self, address: &str, now: i64) -> Result<Option<Certificate>, VaultError>;
    /// Everything the box knows of `address`: (local user's certificate, stored recipient certificates).
    fn certificates(&self, address: &str) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError>;
    /// Trust anchors the box itself provides (its CA).
    fn anchors(&self) -> Vec<Certificate>;
}

/// Unknown address (or not an address): "holds nothing", not an error.
fn absent<T>(r: Result<T, VaultError>) -> Result<Option<T>, VaultError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoKey(_) | VaultError::Usage(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl KeyDirectory for Vault {
    fn decryption_keys(&self, address: &str) -> Result<Vec<Key>, VaultError> {
        Ok(absent(self.keys_for(address))?
            .unwrap_or_default()
            .into_iter()
            .filter(|k| k.purpose().decrypts())
            .map(|k| Box::new(k) as Key)
            .collect())
    }

    fn signing_key(&self, address: &str) -> Result<Option<Key>, VaultError> {
        Ok(absent(Vault::signing_key(self, address))?.map(|k| Box::new(k) as Key))
    }

    fn encryption_certificate(&self, address: &str, now: i64) -> Result<Option<Certificate>, VaultError> {
        if let Some(c) = absent(self.certificate(address))? {
            return Ok(Some(c));
        }
        let mut certs: Vec<Certificate> = absent(self.recipient_certificates(address))?
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.not_before <= now && now <= c.not_after)
            .collect();
        certs.sort_by_key(|c| std::cmp::Reverse(c.not_before));
        Ok(certs.into_iter().next())
    }

    fn certificates(&self, address: &str) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
        Ok((absent(self.certificate(address))?, absent(self.recipient_certificates(address))?.unwrap_or_default()))
    }

    fn anchors(&self) -> Vec<Certificate> {
        self.ca_certificate().ok().into_iter().collect()
    }
}
