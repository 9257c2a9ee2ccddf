//! LDAP directories (`[[directory.ldap]]`): `userSMIMECertificate` and
//! `userCertificate;binary` of the entries the filter finds, through `ldap3` on rustls.
//!
//! The server is not trusted: its answer is bounded (entries, values, sizes), a value that
//! is not a certificate is a refusal, and every certificate is validated by the directory
//! like any other candidate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry, SearchOptions, ldap_escape};

use crate::{Fetched, LdapSettings, MAX_CANDIDATES};

/// Entries taken from one search at most.
const MAX_ENTRIES: i32 = 8;
/// The attributes asked for.
const ATTRIBUTES: [&str; 3] = [
    "userSMIMECertificate",
    "userSMIMECertificate;binary",
    "userCertificate;binary",
];

/// One configured LDAP directory.
pub struct LdapSource {
    settings: LdapSettings,
    tls: Arc<rustls::ClientConfig>,
    password: Option<String>,
}

impl LdapSource {
    /// Reads its CA and password files.
    pub fn new(s: &LdapSettings) -> Result<LdapSource, String> {
        let password = match &s.bind_password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: {e}", p.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => None,
        };
        Ok(LdapSource {
            tls: crate::tls_config(s.ca.as_deref())?,
            settings: s.clone(),
            password,
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// Searches for `address` and returns the certificates found (DER), before `deadline`.
    pub fn fetch(&self, address: &str, deadline: Instant) -> Fetched {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let conn = LdapConnSettings::new()
            .set_conn_timeout(left())
            .set_starttls(self.settings.starttls)
            .set_config(self.tls.clone());
        let mut ldap = LdapConn::with_settings(conn, &self.settings.url)
            .map_err(|e| format!("cannot connect ({e})"))?;
        if let (Some(dn), Some(pw)) = (&self.settings.bind_dn, &self.password) {
            ldap.with_timeout(left())
                .simple_bind(dn, pw)
                .and_then(|r| r.success())
                .map_err(|e| format!("bind refused ({e})"))?;
        }
        let filter = self
            .settings
            .filter
            .replace("{address}", &ldap_escape(address));
        let secs = i32::try_from(left().as_secs().max(1)).unwrap_or(60);
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(MAX_ENTRIES).timelimit(secs))
            .with_timeout(left())
            .search(&self.settings.base, Scope::Subtree, &filter, ATTRIBUTES)
            .map_err(|e| format!("search failed ({e})"))?;
        let _ = ldap.unbind();
        // A size limit exceeded still returns the entries sent (rc 4): take them.
        let (entries, res) = (result.0, result.1);
        if res.rc != 0 && res.rc != 4 {
            return Err(format!("search failed ({res})"));
        }
        let mut out = Vec::new();
        for e in entries.into_iter().take(MAX_ENTRIES as usize) {
            let Ok(e) = std::panic::catch_unwind(|| SearchEntry::construct(e)) else {
                return Err("an entry in the answer is malformed".into());
            };
            let mut values: Vec<Vec<u8>> = Vec::new();
            for (name, v) in &e.bin_attrs {
                if is_certificate_attribute(name) {
                    values.extend(v.iter().cloned());
                }
            }
            for (name, v) in &e.attrs {
                if is_certificate_attribute(name) {
                    values.extend(v.iter().map(|s| s.as_bytes().to_vec()));
                }
            }
            for v in values {
                out.extend(certificates_in(&v));
                if out.len() >= MAX_CANDIDATES {
                    out.truncate(MAX_CANDIDATES);
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

fn is_certificate_attribute(name: &str) -> bool {
    let base = name.split(';').next().unwrap_or("");
    base.eq_ignore_ascii_case("userSMIMECertificate")
        || base.eq_ignore_ascii_case("userCertificate")
}

/// The certificates in one attribute value: a DER certificate, or (as Outlook stores
/// `userSMIMECertificate`) a PKCS#7 SignedData carrying certificates.
pub fn certificates_in(value: &[u8]) -> Vec<Vec<u8>> {
    if sealgate_smime::cert::Certificate::from_der(value).is_ok() {
        return vec![value.to_vec()];
    }
    match sealgate_smime::signed::all_certificates(value) {
        Ok(certs) => certs.iter().map(|c| c.der().to_vec()).collect(),
        Err(_) => vec![value.to_vec()],
    }
}
