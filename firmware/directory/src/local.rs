//! The box's own side of the directory: the vault's users, pinned certificates, the box CA.

use sealgate_smime::cert::Certificate;
use sealgate_smime::signed::Revoked;
use sealgate_vault::{Vault, VaultError};

/// What the box itself knows; errors are reasons shown as refusals.
pub trait Local: Send + Sync {
    /// The local user's own certificate for `address`.
    fn own(&self, address: &str) -> Result<Option<Certificate>, String>;
    /// External certificates stored for `address` (by an administrator, or accepted through
    /// the docking API because they chained to a trust anchor).
    fn stored(&self, address: &str) -> Result<Vec<Certificate>, String>;
    /// Certificates harvested from validated signatures (none until harvesting exists).
    fn harvested(&self, _address: &str) -> Result<Vec<Certificate>, String> {
        Ok(Vec::new())
    }
    /// Trust anchors the box provides (its CA).
    fn anchors(&self) -> Vec<Certificate>;
    /// Certificates the box's CA revoked.
    fn revoked(&self) -> Vec<Revoked>;
}

/// No local side (remote sources only).
pub(crate) struct Nothing;

impl Local for Nothing {
    fn own(&self, _: &str) -> Result<Option<Certificate>, String> {
        Ok(None)
    }
    fn stored(&self, _: &str) -> Result<Vec<Certificate>, String> {
        Ok(Vec::new())
    }
    fn anchors(&self) -> Vec<Certificate> {
        Vec::new()
    }
    fn revoked(&self) -> Vec<Revoked> {
        Vec::new()
    }
}

/// Unknown address (or not an address): "holds nothing", not an error.
fn absent<T>(r: Result<T, VaultError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoKey(_) | VaultError::Usage(_)) => Ok(None),
        Err(e) => Err(format!("the vault: {e}")),
    }
}

impl Local for Vault {
    fn own(&self, address: &str) -> Result<Option<Certificate>, String> {
        absent(self.certificate(address))
    }

    fn stored(&self, address: &str) -> Result<Vec<Certificate>, String> {
        Ok(absent(self.recipient_certificates(address))?.unwrap_or_default())
    }

    fn anchors(&self) -> Vec<Certificate> {
        self.ca_certificate().ok().into_iter().collect()
    }

    fn revoked(&self) -> Vec<Revoked> {
        let Ok(ca) = self.ca_certificate() else {
            return Vec::new();
        };
        self.revoked_serials()
            .unwrap_or_default()
            .into_iter()
            .map(|serial| Revoked {
                issuer: ca.subject.clone(),
                serial,
            })
            .collect()
    }
}
