//! Which external recipient certificates `POST /api/v1/certificates` may put to use.
//!
//! Who calls it: any client with the `encrypt` scope (a mail gateway, or whoever stole its
//! token). What it could make the box do: encrypt mail for someone to the caller's key,
//! if a certificate it posts for that address were used. So a certificate is put to use
//! directly only when
//!
//! 1. it chains to a trust anchor of the box (`[docking] trust_anchors`, or the box's own
//!    CA), at the time of the request, for email protection; and
//! 2. none of its addresses already has a certificate in use (stored and valid now) from
//!    another issuer (compared by issuer name; the new one's issuer is vouched for by the
//!    anchor's path, so the name cannot be borrowed by an unanchored certificate).
//!
//! Any other certificate is kept *pending* in the vault, never used to encrypt, until an
//! administrator approves it (`sealctl certs approve`); the certificate in use stays in use.
//! A certificate naming a local user's address (the box holds keys for it) is refused: a local
//! user's own certificate is never replaced through the API.

use sealgate_smime::cert::{Certificate, names_equal};
use sealgate_vault::VaultError;

use crate::keys::KeyDirectory;

/// What becomes of one posted certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Put to use for its addresses.
    Store,
    /// In use already for every address it names; nothing to do.
    AlreadyStored,
    /// Kept for an administrator, for this reason.
    Pending(String),
    /// Refused: it names this local user's address.
    LocalUser(String),
}

pub use sealgate_directory::validate::{chains_to_anchor, unusable_reason};

/// The normalised, distinct addresses of `cert`.
pub fn addresses(cert: &Certificate) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in &cert.emails {
        let e = e.trim().to_ascii_lowercase();
        if !e.is_empty() && !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// Decides what becomes of `leaf` (already checked to be usable for encryption); see the
/// module documentation.
pub fn decide(
    keys: &dyn KeyDirectory,
    anchors: &[Certificate],
    leaf: &Certificate,
    intermediates: &[Certificate],
    now: i64,
) -> Result<Decision, VaultError> {
    let emails = addresses(leaf);
    for e in &emails {
        let (own, _) = keys.certificates(e)?;
        if own.is_some() || !keys.decryption_keys(e)?.is_empty() {
            return Ok(Decision::LocalUser(e.clone()));
        }
    }
    let mut already = true;
    let mut conflicts = Vec::new();
    for e in &emails {
        let (_, stored) = keys.certificates(e)?;
        if stored.iter().any(|c| c.der() == leaf.der()) {
            continue;
        }
        already = false;
        let in_use: Vec<&Certificate> = stored
            .iter()
            .filter(|c| c.not_before <= now && now <= c.not_after)
            .collect();
        if let Some(other) = in_use.first()
            && !in_use.iter().any(|c| names_equal(&c.issuer, &leaf.issuer))
        {
            conflicts.push(format!(
                "{e} already has a certificate in use from another issuer ({})",
                other.issuer_text()
            ));
        }
    }
    if already {
        return Ok(Decision::AlreadyStored);
    }
    if let Err(why) = chains_to_anchor(leaf, intermediates, anchors, now) {
        return Ok(Decision::Pending(format!(
            "it does not chain to a trust anchor of the box: {why}"
        )));
    }
    if !conflicts.is_empty() {
        return Ok(Decision::Pending(conflicts.join("; ")));
    }
    Ok(Decision::Store)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use sealgate_vault::PendingOutcome;

    use super::*;
    use crate::keys::Key;

    /// Addresses → (local user's certificate, stored recipient certificates).
    #[derive(Default)]
    struct Fake(HashMap<String, (Option<Certificate>, Vec<Certificate>)>);

    impl KeyDirectory for Fake {
        fn decryption_keys(&self, _: &str) -> Result<Vec<Key>, VaultError> {
            Ok(Vec::new())
        }
        fn signing_key(&self, _: &str) -> Result<Option<Key>, VaultError> {
            Ok(None)
        }
        fn encryption_certificate(
            &self,
            _: &str,
            _: i64,
        ) -> Result<Option<Certificate>, VaultError> {
            Ok(None)
        }
        fn certificates(
            &self,
            address: &str,
        ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
            Ok(self.0.get(address).cloned().unwrap_or_default())
        }
        fn anchors(&self) -> Vec<Certificate> {
            Vec::new()
        }
        fn add_recipient_certificate(&self, _: &Certificate) -> Result<(), VaultError> {
            Ok(())
        }
        fn add_pending_certificate(
            &self,
            _: &Certificate,
            _: &str,
            _: &str,
        ) -> Result<PendingOutcome, VaultError> {
            Ok(PendingOutcome::Added)
        }
    }

    struct Ca {
        cert: Certificate,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let der = p.self_signed(&key).expect("ca").der().to_vec();
        Ca {
            cert: Certificate::from_der(&der).expect("parse"),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(email: &str, by: Option<&Ca>) -> Certificate {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, email.to_string());
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().expect("ia5"))];
        let key = KeyPair::generate().expect("key");
        let c = match by {
            Some(ca) => p.signed_by(&key, &ca.issuer).expect("leaf"),
            None => p.self_signed(&key).expect("leaf"),
        };
        Certificate::from_der(c.der()).expect("parse")
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn only_anchored_certificates_that_displace_no_other_issuer_are_stored() {
        let trusted = ca("Trusted CA");
        let other = ca("Other Trusted CA");
        let untrusted = ca("Untrusted CA");
        let anchors = vec![trusted.cert.clone(), other.cert.clone()];
        let carol = leaf("carol@example.org", Some(&trusted));
        let mut dir = Fake::default();
        dir.0
            .insert("carol@example.org".into(), (None, vec![carol.clone()]));
        let alice_own = leaf("alice@example.org", Some(&trusted));
        dir.0
            .insert("alice@example.org".into(), (Some(alice_own), vec![]));
        let t = now();
        let d = |c: &Certificate, inter: &[Certificate]| {
            decide(&dir, &anchors, c, inter, t).expect("decide")
        };

        // A new address, anchored: stored. Renewal from the same issuer: stored.
        assert_eq!(
            d(&leaf("dave@example.org", Some(&trusted)), &[]),
            Decision::Store
        );
        assert_eq!(
            d(&leaf("carol@example.org", Some(&trusted)), &[]),
            Decision::Store
        );
        // The same certificate again: nothing to do.
        assert_eq!(d(&carol, &[]), Decision::AlreadyStored);
        // Takeovers: self-signed, an untrusted CA (even with its certificate as the chain),
        // another trusted CA than the one in use.
        for (c, inter) in [
            (leaf("carol@example.org", None), vec![]),
            (
                leaf("carol@example.org", Some(&untrusted)),
                vec![untrusted.cert.clone()],
            ),
            (leaf("carol@example.org", Some(&other)), vec![]),
        ] {
            assert!(matches!(d(&c, &inter), Decision::Pending(_)), "{c:?}");
        }
        // Self-signed for a new address: pending too (nothing vouches for it).
        assert!(matches!(
            d(&leaf("erin@example.org", None), &[]),
            Decision::Pending(_)
        ));
        // A pinned partner certificate (itself an anchor) is stored.
        let pinned = leaf("frank@example.org", None);
        let mut with_pin = anchors.clone();
        with_pin.push(pinned.clone());
        assert_eq!(
            decide(&dir, &with_pin, &pinned, &[], t).expect("decide"),
            Decision::Store
        );
        // A local user's address: refused, even from a trusted CA.
        assert_eq!(
            d(&leaf("alice@example.org", Some(&trusted)), &[]),
            Decision::LocalUser("alice@example.org".into())
        );
        // No anchors at all: everything waits.
        assert!(matches!(
            decide(&dir, &[], &leaf("gina@example.org", Some(&trusted)), &[], t).expect("decide"),
            Decision::Pending(_)
        ));
    }
}
