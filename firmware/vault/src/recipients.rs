//! External recipients' certificates stored in the vault (table `recipient_certs`, keyed
//! `ADDRESS\nSHA256`): list, show and remove. Adding is [`Vault::add_recipient_certificate_by`]
//! in `store.rs`; which certificates may be added is the daemon's decision (`certs.rs`).

use redb::{ReadableDatabase, ReadableTable};
use sealgate_smime::cert::{Certificate, hex};
use serde::Serialize;

use crate::cipher;
use crate::error::{Result, VaultError};
use crate::store::{RECIPIENTS, Vault};

/// An external recipient's certificate as the admin API shows it (public facts and the PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientCertificate {
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    /// The addresses it is stored (and used) for.
    pub emails: Vec<String>,
    /// The certificate's subject.
    pub subject: String,
    /// The certificate's issuer.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Key type, e.g. `RSA-2048`.
    pub key_type: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The certificate, PEM.
    pub pem: String,
}

impl RecipientCertificate {
    fn new(cert: &Certificate, sha256: String, emails: Vec<String>) -> RecipientCertificate {
        RecipientCertificate {
            sha256,
            emails,
            subject: cert.subject_text(),
            issuer: cert.issuer_text(),
            serial: hex(&cert.serial),
            key_type: cert.key_kind.label(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            pem: cert.to_pem(),
        }
    }
}

/// `sha256` as a fingerprint prefix: hex (colons allowed), at least 8 digits.
fn wanted(sha256: &str) -> Result<String> {
    let w = sha256.trim().replace(':', "").to_ascii_lowercase();
    if w.len() < 8 || w.len() > 64 || !w.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(VaultError::Usage(format!(
            "{sha256:?} is not a SHA-256 fingerprint (hex, at least 8 digits)"
        )));
    }
    Ok(w)
}

impl Vault {
    /// Every stored external recipient certificate, by fingerprint (each with all the
    /// addresses it is stored for), ordered by fingerprint.
    pub fn recipient_certificate_list(&self) -> Result<Vec<RecipientCertificate>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RECIPIENTS)?;
        let mut by_fp: std::collections::BTreeMap<String, (Vec<u8>, Vec<String>)> =
            Default::default();
        for row in t.iter()? {
            let (k, v) = row?;
            let Some((email, fp)) = k.value().split_once('\n') else {
                continue;
            };
            let e = by_fp
                .entry(fp.to_string())
                .or_insert_with(|| (v.value().to_vec(), Vec::new()));
            e.1.push(email.to_string());
        }
        by_fp
            .into_iter()
            .map(|(fp, (der, emails))| {
                let c = Certificate::from_der(&der)
                    .map_err(|e| VaultError::Corrupt(format!("recipient certificate: {e}")))?;
                Ok(RecipientCertificate::new(&c, fp, emails))
            })
            .collect()
    }

    /// The stored recipient certificate whose fingerprint starts with `sha256` (hex, colons
    /// allowed, at least 8 digits). `NoKey` when none matches; `Usage` when the prefix is
    /// malformed or matches several.
    pub fn recipient_certificate(&self, sha256: &str) -> Result<RecipientCertificate> {
        let w = wanted(sha256)?;
        let matching: Vec<RecipientCertificate> = self
            .recipient_certificate_list()?
            .into_iter()
            .filter(|c| c.sha256.starts_with(&w))
            .collect();
        match <[RecipientCertificate; 1]>::try_from(matching) {
            Ok([one]) => Ok(one),
            Err(v) if v.is_empty() => Err(VaultError::NoKey(format!(
                "no stored recipient certificate {w}"
            ))),
            Err(_) => Err(VaultError::Usage(format!(
                "{w} matches several stored certificates: give more digits"
            ))),
        }
    }

    /// Removes the stored recipient certificate `sha256` (as in
    /// [`Vault::recipient_certificate`]) for every address; `encrypt` no longer uses it.
    /// Audited (`cert.remove-recipient`) as `actor`. Returns what was removed.
    pub fn remove_recipient_certificate_by(
        &self,
        sha256: &str,
        actor: &str,
    ) -> Result<RecipientCertificate> {
        let c = self.recipient_certificate(sha256)?;
        let fp = c.sha256.clone();
        let emails = c.emails.clone();
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(RECIPIENTS)?;
                let mut removed = 0;
                for e in &emails {
                    if t.remove(format!("{e}\n{fp}").as_str())?.is_some() {
                        removed += 1;
                    }
                }
                if removed == 0 {
                    return Err(VaultError::NoKey(format!(
                        "no stored recipient certificate {fp}"
                    )));
                }
                Ok(())
            },
            "cert.remove-recipient",
            &emails.join(","),
            &format!("sha256={fp}"),
        )?;
        Ok(c)
    }
}

/// SHA-256 of a certificate's DER, hex (the fingerprint the recipient table is keyed by).
pub fn fingerprint(cert: &Certificate) -> String {
    cipher::hex(&cipher::sha256(&[cert.der()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareSealer;

    fn cert(emails: &[&str]) -> Certificate {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = emails
            .iter()
            .map(|e| rcgen::SanType::Rfc822Name((*e).try_into().expect("ia5")))
            .collect();
        let key = rcgen::KeyPair::generate().expect("key");
        Certificate::from_der(p.self_signed(&key).expect("cert").der()).expect("parse")
    }

    #[test]
    fn recipient_certificates_are_listed_shown_and_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (v, _) = Vault::init(dir.path(), &mut SoftwareSealer::danger_new()).expect("init");
        assert!(v.recipient_certificate_list().expect("list").is_empty());
        let a = cert(&["carol@example.org", "c@example.org"]);
        let b = cert(&["dave@example.org"]);
        v.add_recipient_certificate_by(&a, "admin:root").expect("a");
        v.add_recipient_certificate_by(&b, "admin:root").expect("b");
        let list = v.recipient_certificate_list().expect("list");
        assert_eq!(list.len(), 2);
        let fa = fingerprint(&a);
        let shown = v.recipient_certificate(&fa[..12]).expect("show");
        assert_eq!(shown.emails, vec!["c@example.org", "carol@example.org"]);
        assert!(shown.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(matches!(
            v.recipient_certificate("abc"),
            Err(VaultError::Usage(_))
        ));
        assert!(matches!(
            v.recipient_certificate(&"0".repeat(64)),
            Err(VaultError::NoKey(_))
        ));
        v.remove_recipient_certificate_by(&fa, "admin:root")
            .expect("remove");
        assert!(
            v.recipient_certificates("carol@example.org")
                .expect("left")
                .is_empty()
        );
        assert_eq!(
            v.recipient_certificates("dave@example.org")
                .expect("left")
                .len(),
            1
        );
        assert!(matches!(
            v.remove_recipient_certificate_by(&fa, "admin:root"),
            Err(VaultError::NoKey(_))
        ));
        let log = v.audit().expect("audit");
        assert!(
            log.iter()
                .any(|e| e.action == "cert.remove-recipient" && e.actor == "admin:root")
        );
    }
}
