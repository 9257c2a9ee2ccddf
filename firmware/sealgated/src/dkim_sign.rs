//! DKIM signing of submission mail (`[[dkim]] domain, selector, key`): the message as it
//! leaves (after S/MIME signing and encryption, after the loop marker) gets a
//! `DKIM-Signature:` (RSA-SHA256, relaxed/relaxed) with the key of its From domain, when one
//! is configured. Without a key for the domain it leaves unsigned.
//!
//! The key is a PEM file (PKCS#1 as `opendkim-genkey` writes it, or PKCS#8) that only the
//! daemon may read: a file readable by its group or by others is refused (logged), never
//! used. Attacker: a local account on the box that would read the key and sign as the
//! organisation; and the message's author, whose From chooses the key (only a configured
//! domain's, and submission already checked the user may send as that address).

use std::path::PathBuf;

use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// One `[[dkim]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The signing domain (`d=`): mail whose From is in this domain is signed.
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The private key's PEM file, readable by the daemon only.
    pub key: PathBuf,
}

/// The header fields signed (those present).
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

fn plain_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks the entries: plain domain and selector names, one entry per domain.
pub fn validate(keys: &[DkimKey]) -> Result<(), String> {
    for (i, k) in keys.iter().enumerate() {
        if !plain_label(&k.domain) || !plain_label(&k.selector) {
            return Err(format!(
                "[[dkim]] domain {:?} / selector {:?} must be DNS names",
                k.domain, k.selector
            ));
        }
        if keys[..i]
            .iter()
            .any(|o| o.domain.eq_ignore_ascii_case(&k.domain))
        {
            return Err(format!("[[dkim]] domain {} is listed twice", k.domain));
        }
    }
    Ok(())
}

/// Reads a key file: refused when others or the group may read it.
fn load(path: &std::path::Path) -> Result<RsaKey<Sha256>, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: readable by others than the daemon (mode {:o}): not used",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| format!("{}: not a PEM private key", path.display()))?;
    RsaKey::<Sha256>::from_key_der(der)
        .map_err(|_| format!("{}: not an RSA private key", path.display()))
}

/// The domain of the message's (first) From address, lower case.
fn from_domain(msg: &[u8]) -> Option<String> {
    let e = sealgate_smime::mime::Entity::parse(msg);
    let h = e.header_list();
    let from = h.get("From")?.value().to_string();
    let addr = from
        .rsplit_once('<')
        .map_or(from.as_str(), |(_, a)| a.split('>').next().unwrap_or(a));
    let d = addr.rsplit_once('@')?.1.trim().trim_end_matches('.');
    Some(d.to_ascii_lowercase())
}

/// `msg` with a `DKIM-Signature:` of its From domain's key on top, or unchanged (no key for
/// the domain, or the key cannot be used: logged).
pub fn sign(keys: &[DkimKey], msg: &[u8]) -> Vec<u8> {
    let Some(domain) = from_domain(msg) else {
        return msg.to_vec();
    };
    let Some(k) = keys.iter().find(|k| k.domain.eq_ignore_ascii_case(&domain)) else {
        return msg.to_vec();
    };
    match sign_with(k, msg) {
        Ok(signed) => signed,
        Err(e) => {
            tracing::error!(domain = %k.domain, error = %e, "DKIM signing failed: the message leaves unsigned");
            msg.to_vec()
        }
    }
}

/// Signs with one key.
pub fn sign_with(k: &DkimKey, msg: &[u8]) -> Result<Vec<u8>, String> {
    let key = load(&k.key)?;
    let present: Vec<&str> = {
        let e = sealgate_smime::mime::Entity::parse(msg);
        let h = e.header_list();
        SIGNED
            .iter()
            .copied()
            .filter(|n| h.get(n).is_some())
            .collect()
    };
    let sig = DkimSigner::from_key(key)
        .domain(k.domain.to_ascii_lowercase())
        .selector(k.selector.clone())
        .headers(present)
        .sign(msg)
        .map_err(|e| e.to_string())?;
    let mut out = sig.to_header().into_bytes();
    out.extend_from_slice(msg);
    Ok(out)
}
