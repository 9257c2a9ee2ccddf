//! Certificates harvested from validated signatures of inbound mail (the `harvested` source):
//! `DATA/directory-harvested.json`, written by the daemon's inbound MX (only for a signature
//! that verified, chained to an anchor and was bound to the From address) and read back into
//! the [`crate::Directory`]. Each entry keeps the sender's S/MIME capabilities.
//!
//! **The attacker** is whoever sends mail to the box: a harvested certificate must not
//! displace a partner's key. So an address keeps at most [`PER_ADDRESS`] certificates, and a
//! certificate from another issuer than a still-valid one already harvested for the address
//! is not stored (it waits for an administrator); the file is bounded ([`MAX_HARVESTED`],
//! the oldest entries go first). At lookup every harvested certificate is validated again
//! like any answer from outside (path to an anchor, revocation, block list).

use serde::{Deserialize, Serialize};
use std::path::Path;

use sealgate_smime::cert::Certificate;

/// The file's name in the data directory.
pub const FILE: &str = "directory-harvested.json";
/// Entries kept at most.
pub const MAX_HARVESTED: usize = 10_000;
/// Certificates kept per address at most.
pub const PER_ADDRESS: usize = 4;

/// One harvested certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Harvested {
    /// The signer's address (the message's From).
    pub address: String,
    /// SHA-256 of the certificate (lowercase hex).
    pub sha256: String,
    /// Its issuer (text).
    pub issuer: String,
    /// Its notAfter (RFC 3339).
    pub not_after: String,
    /// The signer's S/MIME capabilities (algorithm names), newest message's.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// When it was harvested (last seen, RFC 3339).
    pub at: String,
    /// Which listener and client brought it.
    pub by: String,
    /// The certificate (PEM).
    pub certificate: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    harvested: Vec<Harvested>,
}

/// The list (empty when the file does not exist).
pub fn load(data_dir: &Path) -> Result<Vec<Harvested>, String> {
    let p = data_dir.join(FILE);
    match std::fs::read(&p) {
        Ok(d) => serde_json::from_slice::<File>(&d)
            .map(|f| f.harvested)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Replaces the list (atomically).
pub fn save(data_dir: &Path, list: &[Harvested]) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(&File {
        version: 1,
        harvested: list.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    crate::blocklist::write_atomically(data_dir, FILE, &text)
}

/// What [`add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Stored (new).
    Stored,
    /// Already there (its capabilities and time updated).
    Known,
    /// Not stored: the address has a still-valid harvested certificate from another issuer
    /// (the reason, for an administrator).
    OtherIssuer(String),
}

/// Adds `cert` harvested for `address` to `list` (see the module's rules).
pub fn add(
    list: &mut Vec<Harvested>,
    address: &str,
    cert: &Certificate,
    capabilities: &[String],
    by: &str,
    now: i64,
) -> Added {
    let address = address.to_ascii_lowercase();
    let sha256 = crate::validate::sha256_hex(cert.der());
    let at = sealgate_smime::chain::rfc3339(now);
    if let Some(e) = list
        .iter_mut()
        .find(|e| e.sha256 == sha256 && e.address == address)
    {
        e.capabilities = capabilities.to_vec();
        e.at = at;
        return Added::Known;
    }
    let issuer = cert.issuer_text();
    let other = list
        .iter()
        .filter(|e| e.address == address)
        .find(|e| e.issuer != issuer && parse(e).is_some_and(|c| c.not_after >= now));
    if let Some(o) = other {
        return Added::OtherIssuer(format!(
            "{address} has a harvested certificate from another issuer ({}) in use",
            o.issuer
        ));
    }
    list.push(Harvested {
        address: address.clone(),
        sha256,
        issuer,
        not_after: sealgate_smime::chain::rfc3339(cert.not_after),
        capabilities: capabilities.iter().take(32).cloned().collect(),
        at,
        by: by.chars().take(200).collect(),
        certificate: cert.to_pem(),
    });
    // Bounded: the oldest of the address, then the oldest of all, go first.
    while list.iter().filter(|e| e.address == address).count() > PER_ADDRESS {
        if let Some(i) = list.iter().position(|e| e.address == address) {
            list.remove(i);
        }
    }
    while list.len() > MAX_HARVESTED {
        list.remove(0);
    }
    Added::Stored
}

/// The certificate of an entry (`None` if it cannot be read).
pub fn parse(e: &Harvested) -> Option<Certificate> {
    Certificate::parse_many(e.certificate.as_bytes())
        .ok()
        .and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
}

/// Removes every entry of the certificate `sha256` (a fingerprint) from `list`: the entries
/// removed (none when it was not harvested).
pub fn forget(list: &mut Vec<Harvested>, sha256: &str) -> Vec<Harvested> {
    let (gone, kept) = std::mem::take(list)
        .into_iter()
        .partition(|e| e.sha256 == sha256);
    *list = kept;
    gone
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

    use super::*;

    fn cert(email: &str, issuer: &str) -> Certificate {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, issuer);
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = rcgen::Issuer::new(ca, ca_key);
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        let key = KeyPair::generate().unwrap();
        Certificate::from_der(p.signed_by(&key, &ca).unwrap().der()).unwrap()
    }

    #[test]
    fn an_address_keeps_its_issuer_and_a_bounded_number_of_certificates() {
        let now = crate::unix_now();
        let mut list = Vec::new();
        let a = cert("p@partner.test", "Partner CA");
        assert_eq!(
            add(
                &mut list,
                "P@partner.test",
                &a,
                &["aes256-cbc".into()],
                "smtp-inbound 192.0.2.1",
                now
            ),
            Added::Stored
        );
        assert_eq!(
            add(&mut list, "p@partner.test", &a, &[], "x", now),
            Added::Known
        );
        assert_eq!(list.len(), 1);
        assert!(list[0].capabilities.is_empty());
        assert_eq!(parse(&list[0]).unwrap(), a);
        // Another issuer for the same address: not stored.
        let evil = cert("p@partner.test", "Mallory CA");
        assert!(matches!(
            add(&mut list, "p@partner.test", &evil, &[], "x", now),
            Added::OtherIssuer(_)
        ));
        assert_eq!(list.len(), 1);
        // Bounded per address.
        let tmp = tempfile::tempdir().unwrap();
        for _ in 0..(PER_ADDRESS + 2) {
            let c = cert("q0@partner.test", "Partner CA");
            let _ = add(&mut list, "q0@partner.test", &c, &[], "x", now);
        }
        // Every q0 certificate has its own "Partner CA" (another key, same name): same issuer.
        assert_eq!(
            list.iter()
                .filter(|e| e.address == "q0@partner.test")
                .count(),
            PER_ADDRESS
        );
        save(tmp.path(), &list).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), list);
    }
}
