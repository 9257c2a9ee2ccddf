//! External recipients' certificates waiting for an administrator's decision.
//!
//! The docking API stores a recipient certificate directly only when it chains to a trust
//! anchor and does not displace a certificate of another issuer; any other is kept here,
//! *pending*: never used to encrypt, until an administrator approves it (it then joins the
//! recipient certificates) or rejects it (it is dropped). Every step is audited in the same
//! transaction as the change. The table is created on first use, so vaults made before it
//! existed read as having nothing pending.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use sealgate_smime::cert::Certificate;
use serde::{Deserialize, Serialize};

use crate::cipher;
use crate::error::{Result, VaultError};
use crate::record::now;
use crate::store::{RECIPIENTS, Vault, normalise};

/// SHA-256 (hex) of the certificate → [`PendingRecord`] (JSON).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending_recipient_certs");

/// Most certificates pending at once; beyond that new ones are refused (so a caller cannot
/// grow the vault without bound).
pub const MAX_PENDING: u64 = 1000;

/// Longest reason kept (characters).
const MAX_REASON_CHARS: usize = 1000;

/// A certificate waiting for an administrator (no key material: certificates are public).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCertificate {
    /// SHA-256 of the DER certificate, hex: what `approve` and `reject` take.
    pub sha256: String,
    /// The addresses it would be used for.
    pub emails: Vec<String>,
    /// Subject, readable.
    pub subject: String,
    /// Issuer, readable.
    pub issuer: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Why it was not stored directly.
    pub reason: String,
    /// Who asked to store it (the docking API client).
    pub requested_by: String,
    /// When, Unix seconds.
    pub requested_at: i64,
    /// The certificate, PEM.
    pub pem: String,
}

/// What [`Vault::add_pending_certificate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOutcome {
    /// Now pending.
    Added,
    /// It was pending already (its first reason and requester are kept).
    AlreadyPending,
    /// [`MAX_PENDING`] certificates are pending: nothing was stored.
    Full,
}

fn fingerprint(cert: &Certificate) -> String {
    cipher::hex(&cipher::sha256(&[cert.der()]))
}

fn decode(v: &[u8]) -> Result<PendingCertificate> {
    serde_json::from_slice(v)
        .map_err(|_| VaultError::Corrupt("a pending certificate record is unreadable".into()))
}

impl Vault {
    /// Keeps `cert` pending for an administrator's decision, with the `reason` it was not
    /// stored and who asked (`requested_by`). Audited (`cert.pending-recipient`).
    pub fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome> {
        let emails: Vec<String> = cert
            .emails
            .iter()
            .filter_map(|e| normalise(e).ok())
            .collect();
        if emails.is_empty() {
            return Err(VaultError::Usage(
                "the certificate names no usable email address".into(),
            ));
        }
        let fp = fingerprint(cert);
        // The reason may quote names from the certificate: bounded.
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let reason = reason.as_str();
        let rec = PendingCertificate {
            sha256: fp.clone(),
            emails: emails.clone(),
            subject: cert.subject_text(),
            issuer: cert.issuer_text(),
            not_after: cert.not_after,
            reason: reason.to_string(),
            requested_by: requested_by.to_string(),
            requested_at: now(),
            pem: cert.to_pem(),
        };
        let json = serde_json::to_vec(&rec)
            .map_err(|e| VaultError::Storage(format!("pending record: {e}")))?;
        // Checked first in a read transaction so that a refused or repeated request writes
        // nothing (no audit entry either); the write below re-checks.
        match self.pending_state(&fp)? {
            (true, _) => return Ok(PendingOutcome::AlreadyPending),
            (false, n) if n >= MAX_PENDING => return Ok(PendingOutcome::Full),
            _ => {}
        }
        self.audited(
            |txn| {
                let mut t = txn.open_table(PENDING)?;
                if t.get(fp.as_str())?.is_some() {
                    return Ok(PendingOutcome::AlreadyPending);
                }
                if t.len()? >= MAX_PENDING {
                    return Ok(PendingOutcome::Full);
                }
                t.insert(fp.as_str(), json.as_slice())?;
                Ok(PendingOutcome::Added)
            },
            "cert.pending-recipient",
            &emails.join(","),
            &format!("sha256={fp} requested-by={requested_by} reason={reason}"),
        )
    }

    /// (whether `fp` is pending, how many are).
    fn pending_state(&self, fp: &str) -> Result<(bool, u64)> {
        let txn = self.db.begin_read()?;
        match txn.open_table(PENDING) {
            Ok(t) => Ok((t.get(fp)?.is_some(), t.len()?)),
            Err(TableError::TableDoesNotExist(_)) => Ok((false, 0)),
            Err(e) => Err(e.into()),
        }
    }

    /// Every pending certificate, oldest request first.
    pub fn pending_certificates(&self) -> Result<Vec<PendingCertificate>> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(PENDING) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        out.sort_by_key(|p| p.requested_at);
        Ok(out)
    }

    /// Approves the pending certificate `sha256` (hex; a unique prefix of at least 8 digits
    /// will do): it becomes a recipient certificate for its addresses, used by `encrypt`
    /// from now on. Audited (`cert.approve-recipient`).
    pub fn approve_pending_certificate(&self, sha256: &str) -> Result<PendingCertificate> {
        self.decide(sha256, true)
    }

    /// Rejects (drops) the pending certificate `sha256`. Audited (`cert.reject-recipient`).
    pub fn reject_pending_certificate(&self, sha256: &str) -> Result<PendingCertificate> {
        self.decide(sha256, false)
    }

    fn decide(&self, sha256: &str, approve: bool) -> Result<PendingCertificate> {
        let wanted = sha256.trim().replace(':', "").to_ascii_lowercase();
        if wanted.len() < 8 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(VaultError::Usage(format!(
                "{sha256:?} is not a SHA-256 fingerprint (hex, at least 8 digits)"
            )));
        }
        let matching: Vec<PendingCertificate> = self
            .pending_certificates()?
            .into_iter()
            .filter(|p| p.sha256.starts_with(&wanted))
            .collect();
        let rec = match matching.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(VaultError::Usage(format!(
                    "no pending certificate {wanted}"
                )));
            }
            _ => {
                return Err(VaultError::Usage(format!(
                    "{wanted} matches several pending certificates: give more digits"
                )));
            }
        };
        let cert = Certificate::parse_many(rec.pem.as_bytes())
            .ok()
            .and_then(|v| v.into_iter().next())
            .ok_or_else(|| VaultError::Corrupt("a pending certificate is unreadable".into()))?;
        let fp = rec.sha256.clone();
        let (action, detail) = if approve {
            ("cert.approve-recipient", format!("sha256={fp}"))
        } else {
            ("cert.reject-recipient", format!("sha256={fp}"))
        };
        self.audited(
            |txn| {
                let mut t = txn.open_table(PENDING)?;
                if t.remove(fp.as_str())?.is_none() {
                    return Err(VaultError::Usage(format!("no pending certificate {fp}")));
                }
                if approve {
                    let mut r = txn.open_table(RECIPIENTS)?;
                    for e in &rec.emails {
                        r.insert(format!("{e}\n{fp}").as_str(), cert.der())?;
                    }
                }
                Ok(())
            },
            action,
            &rec.emails.join(","),
            &detail,
        )?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareSealer;

    fn cert(email: &str) -> Certificate {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().expect("ia5"))];
        let key = rcgen::KeyPair::generate().expect("key");
        let c = p.self_signed(&key).expect("cert");
        Certificate::from_der(c.der()).expect("parse")
    }

    #[test]
    fn pending_certificates_are_not_recipients_until_approved() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sealer = SoftwareSealer::danger_new();
        let (vault, _) = Vault::init(dir.path(), &mut sealer).expect("init");
        assert!(vault.pending_certificates().expect("list").is_empty());
        let a = cert("carol@example.org");
        let b = cert("carol@example.org");
        assert_eq!(
            vault
                .add_pending_certificate(&a, "not anchored", "gw1")
                .expect("add"),
            PendingOutcome::Added
        );
        assert_eq!(
            vault
                .add_pending_certificate(&a, "again", "gw2")
                .expect("add"),
            PendingOutcome::AlreadyPending
        );
        vault
            .add_pending_certificate(&b, "not anchored", "gw1")
            .expect("add");
        let list = vault.pending_certificates().expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].requested_by, "gw1");
        assert_eq!(list[0].reason, "not anchored");
        assert!(
            vault
                .recipient_certificates("carol@example.org")
                .expect("recipients")
                .is_empty(),
            "pending is never a recipient certificate"
        );
        let fp_a = fingerprint(&a);
        assert!(
            vault.approve_pending_certificate("12").is_err(),
            "too short"
        );
        vault
            .approve_pending_certificate(&fp_a[..16])
            .expect("approve");
        assert_eq!(
            vault
                .recipient_certificates("carol@example.org")
                .expect("recipients"),
            vec![a]
        );
        vault
            .reject_pending_certificate(&fingerprint(&b))
            .expect("reject");
        assert!(vault.pending_certificates().expect("list").is_empty());
        assert!(vault.approve_pending_certificate(&fp_a).is_err(), "gone");
        let actions: Vec<String> = vault
            .audit()
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect();
        for a in [
            "cert.pending-recipient",
            "cert.approve-recipient",
            "cert.reject-recipient",
        ] {
            assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
        }
    }
}
