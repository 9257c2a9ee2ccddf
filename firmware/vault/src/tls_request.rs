//! The request for a new TLS certificate of the box: a private key made on the box, waiting
//! (sealed under the vault key, like the TLS key itself) beside its CSR until the certificate
//! an organisation's CA signed for it arrives. Installing that certificate moves the waiting
//! key into the TLS key's place and ends the request in one write transaction, so the box
//! never holds half of a change.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cipher;
use crate::error::{Result, VaultError};
use crate::record::now;
use crate::store::{META, Vault};

/// Associated data of the waiting key: its own, so it cannot be swapped for the TLS key's
/// record (or another sealed record) under the same vault key.
const TLS_REQUEST_KEY_AAD: &[u8] = b"sealgate box tls key request";
/// The meta record of the waiting request.
const RECORD: &str = "tls_request";
/// The meta record of the box's TLS key (as in `store.rs`).
const TLS_KEY: &str = "tls_key";
/// The TLS key's associated data (as in `store.rs`).
const TLS_KEY_AAD: &[u8] = b"sealgate box tls key";

#[derive(Serialize, Deserialize)]
struct Stored {
    sealed_key: Vec<u8>,
    csr_pem: String,
    created: i64,
}

/// A request for the box's TLS certificate that waits for the signed certificate.
pub struct TlsRequest {
    /// The waiting private key (PEM). Never leaves the daemon.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// The CSR (PEM) for the organisation's CA.
    pub csr_pem: String,
    /// When it was made (Unix seconds).
    pub created: i64,
}

impl std::fmt::Debug for TlsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRequest")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Stores a new request (its key sealed under the vault key), replacing any earlier one.
    /// Audited as `vault.tls-request` with the CSR's SHA-256.
    pub fn store_tls_request(&self, key_pem: &[u8], csr_pem: &str) -> Result<()> {
        let rec = Stored {
            sealed_key: cipher::seal(self.key.bytes(), TLS_REQUEST_KEY_AAD, key_pem)?,
            csr_pem: csr_pem.to_string(),
            created: now(),
        };
        let json = serde_json::to_vec(&rec)?;
        let csr_fp = cipher::hex(&cipher::sha256(&[csr_pem.as_bytes()]));
        self.audited(
            |txn| {
                txn.open_table(META)?.insert(RECORD, json.as_slice())?;
                Ok(())
            },
            "vault.tls-request",
            "box",
            &format!("csr_sha256={csr_fp}"),
        )
    }

    /// The request that waits for its certificate, if any.
    pub fn tls_request(&self) -> Result<Option<TlsRequest>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        let Some(v) = t.get(RECORD)? else {
            return Ok(None);
        };
        let rec: Stored = serde_json::from_slice(v.value())
            .map_err(|e| VaultError::Corrupt(format!("the TLS request record: {e}")))?;
        let key_pem = cipher::open(self.key.bytes(), TLS_REQUEST_KEY_AAD, &rec.sealed_key)
            .ok_or_else(|| VaultError::Corrupt("the TLS request's key does not decrypt".into()))?;
        Ok(Some(TlsRequest {
            key_pem,
            csr_pem: rec.csr_pem,
            created: rec.created,
        }))
    }

    /// Makes the waiting request's key the box's TLS key and ends the request, in one write
    /// transaction (audited as `vault.tls-key` with `why`). `csr_pem` names the request the
    /// caller checked the certificate against: if another request replaced it meanwhile,
    /// nothing changes.
    pub fn install_tls_request(&self, csr_pem: &str, why: &str) -> Result<()> {
        let current = self
            .tls_request()?
            .filter(|r| r.csr_pem == csr_pem)
            .ok_or_else(|| {
                VaultError::Usage("the TLS request changed or ended meanwhile".into())
            })?;
        let sealed = cipher::seal(self.key.bytes(), TLS_KEY_AAD, &current.key_pem)?;
        self.audited(
            |txn| {
                let mut t = txn.open_table(META)?;
                let same = t
                    .get(RECORD)?
                    .and_then(|v| serde_json::from_slice::<Stored>(v.value()).ok())
                    .is_some_and(|r| r.csr_pem == csr_pem);
                if !same {
                    return Err(VaultError::Usage(
                        "the TLS request changed or ended meanwhile".into(),
                    ));
                }
                t.insert(TLS_KEY, sealed.as_slice())?;
                t.remove(RECORD)?;
                Ok(())
            },
            "vault.tls-key",
            "box",
            why,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{SoftwareSealer, Vault};

    #[test]
    fn a_request_waits_sealed_and_its_key_becomes_the_tls_key_once() {
        let d = tempfile::tempdir().expect("tmp");
        let v = Vault::init(d.path(), &mut SoftwareSealer::danger_new())
            .expect("vault")
            .0;
        assert!(v.tls_request().expect("read").is_none());
        v.store_tls_key(b"OLD KEY", "created").expect("old key");
        v.store_tls_request(b"NEW KEY", "CSR 1").expect("request");
        let r = v.tls_request().expect("read").expect("waits");
        assert_eq!(
            (r.key_pem.as_slice(), r.csr_pem.as_str()),
            (&b"NEW KEY"[..], "CSR 1")
        );
        // A request that was replaced is not installed.
        v.store_tls_request(b"NEWER KEY", "CSR 2")
            .expect("request 2");
        assert!(v.install_tls_request("CSR 1", "signed").is_err());
        assert_eq!(
            v.tls_key().expect("key").expect("set").as_slice(),
            b"OLD KEY"
        );
        v.install_tls_request("CSR 2", "signed").expect("install");
        assert_eq!(
            v.tls_key().expect("key").expect("set").as_slice(),
            b"NEWER KEY"
        );
        assert!(
            v.tls_request().expect("read").is_none(),
            "the request ended"
        );
        assert!(v.install_tls_request("CSR 2", "again").is_err());
        let audit = v.audit().expect("audit");
        assert!(audit.iter().any(|e| e.action == "vault.tls-request"));
        assert!(
            audit
                .iter()
                .any(|e| e.action == "vault.tls-key" && e.detail == "signed")
        );
    }
}
