//! Certificate path validation for signers: rustls-webpki plus the checks S/MIME needs and
//! webpki does not do.
//!
//! webpki builds and checks the path (signatures, validity, basic constraints, name
//! constraints, the emailProtection extended key usage, CRLs). On top of that we check the
//! signer's key usage (digitalSignature or nonRepudiation when the extension is present), bind
//! the signer's address (rfc822Name SAN or emailAddress) to the message's From, and accept a
//! leaf that is itself one of the anchors (a pinned partner certificate, often self-signed,
//! which webpki refuses as its own anchor). Every failure becomes a readable reason.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::cert::{Certificate, key_usage};
use crate::oid;

/// The verdict on one signer's certificate path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainVerdict {
    /// True if a path to an anchor was found and every check passed.
    pub valid: bool,
    /// Subjects from the signer to the anchor (as far as a path was built).
    pub path: Vec<String>,
    /// Why the path is not valid (empty when valid).
    pub reasons: Vec<String>,
}

/// What to validate a signer certificate against.
#[derive(Debug, Clone, Copy)]
pub struct ChainParams<'a> {
    /// Trusted anchors (CA certificates, or pinned end-entity certificates).
    pub anchors: &'a [Certificate],
    /// Untrusted certificates that may be intermediates (e.g. from the message).
    pub intermediates: &'a [Certificate],
    /// DER CRLs to check revocation with; none means no revocation checking.
    pub crls: &'a [Vec<u8>],
    /// The time to validate at, Unix seconds.
    pub time: i64,
    /// The From address the signer's certificate must name, if any.
    pub from: Option<&'a str>,
}

/// RFC 3339 text of a Unix time (UTC).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Validates `leaf` as an S/MIME signer certificate.
pub fn validate_signer(leaf: &Certificate, params: &ChainParams<'_>) -> ChainVerdict {
    let mut reasons = Vec::new();
    let mut path = vec![leaf.subject_text()];

    // Our own checks on the leaf, whatever webpki says.
    if let Some(ku) = leaf.key_usage
        && ku & (key_usage::DIGITAL_SIGNATURE | key_usage::NON_REPUDIATION) == 0
    {
        reasons.push("key usage of the signer certificate does not allow signing".to_string());
    }
    if let Some(from) = params.from
        && !leaf.has_email(from)
    {
        reasons.push(format!("signer certificate is not for {}", from.trim()));
    }

    // webpki's required EKU would apply to intermediates too (most CAs carry none), so it
    // checks "if present" along the path and we require emailProtection on the leaf here.
    if !eku_allows_email(leaf) {
        reasons.push("not valid for email protection".to_string());
    }

    if params.anchors.is_empty() {
        reasons.push("no trust anchors configured".to_string());
        return ChainVerdict {
            valid: false,
            path,
            reasons,
        };
    }

    if params.anchors.iter().any(|a| a.der() == leaf.der()) {
        // Pinned: the signer's own certificate is trusted. Check what webpki would have.
        check_validity(leaf, params.time, &mut reasons);
        path.push("(pinned)".to_string());
        return ChainVerdict {
            valid: reasons.is_empty(),
            path,
            reasons,
        };
    }

    let webpki_reasons = run_webpki(leaf, params, &mut path);
    for r in webpki_reasons {
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }
    ChainVerdict {
        valid: reasons.is_empty(),
        path,
        reasons,
    }
}

/// RFC 8550 §4.4.4: when the extension is present it must allow emailProtection (or any
/// purpose); a certificate without it is not restricted.
pub fn eku_allows_email(cert: &Certificate) -> bool {
    match &cert.ext_key_usage {
        Some(list) => list
            .iter()
            .any(|o| o == oid::KP_EMAIL_PROTECTION || o == oid::KP_ANY),
        None => true,
    }
}

fn check_validity(cert: &Certificate, at: i64, reasons: &mut Vec<String>) {
    if at > cert.not_after {
        reasons.push(format!("expired at {}", rfc3339(cert.not_after)));
    } else if at < cert.not_before {
        reasons.push(format!(
            "not yet valid: not valid before {}",
            rfc3339(cert.not_before)
        ));
    }
}

fn unix(t: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

fn run_webpki(leaf: &Certificate, params: &ChainParams<'_>, path: &mut Vec<String>) -> Vec<String> {
    let mut reasons = Vec::new();
    let anchor_ders: Vec<CertificateDer<'_>> = params
        .anchors
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let mut anchors = Vec::new();
    for (der, cert) in anchor_ders.iter().zip(params.anchors) {
        match webpki::anchor_from_trusted_cert(der) {
            Ok(a) => anchors.push(a),
            Err(e) => reasons.push(format!(
                "trust anchor {} is unusable: {e:?}",
                cert.subject_text()
            )),
        }
    }
    let intermediates: Vec<CertificateDer<'_>> = params
        .intermediates
        .iter()
        .filter(|c| c.der() != leaf.der())
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.der());
    let ee = match EndEntityCert::try_from(&leaf_der) {
        Ok(ee) => ee,
        Err(e) => {
            reasons.push(format!(
                "the signer certificate cannot be parsed for path validation: {e:?}"
            ));
            return reasons;
        }
    };

    let mut crls: Vec<CertRevocationList<'_>> = Vec::new();
    for (i, c) in params.crls.iter().enumerate() {
        match BorrowedCertRevocationList::from_der(c) {
            Ok(crl) => crls.push(crl.into()),
            Err(e) => reasons.push(format!("CRL #{} cannot be read: {e:?}", i + 1)),
        }
    }
    let crl_refs: Vec<&CertRevocationList<'_>> = crls.iter().collect();
    let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
        b.with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Allow)
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build()
    });

    let result = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        unix(params.time),
        KeyUsage::required_if_present(oid::KP_EMAIL_PROTECTION),
        revocation,
        None,
    );
    match result {
        Ok(verified) => {
            for inter in verified.intermediate_certificates() {
                let der = inter.der();
                let name = params
                    .intermediates
                    .iter()
                    .find(|c| c.der() == der.as_ref())
                    .map_or_else(|| "<intermediate>".to_string(), Certificate::subject_text);
                path.push(name);
            }
            let anchor = verified.anchor();
            let name = params
                .anchors
                .iter()
                .find(|c| {
                    let value = |d: &[u8]| {
                        crate::asn1::Tlv::parse(d)
                            .map(|t| t.value.to_vec())
                            .unwrap_or_default()
                    };
                    value(&c.subject) == anchor.subject.as_ref()
                        && value(&c.spki) == anchor.subject_public_key_info.as_ref()
                })
                .map_or_else(|| "<anchor>".to_string(), Certificate::subject_text);
            path.push(name);
        }
        Err(e) => reasons.push(describe(&e, leaf)),
    }
    reasons
}

/// A readable reason for a webpki error.
#[allow(deprecated)] // match the old unit variants too, whichever webpki returns.
fn describe(e: &webpki::Error, leaf: &Certificate) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { not_after, .. } => {
            let t = i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX);
            if t == leaf.not_after {
                format!("expired at {}", rfc3339(t))
            } else {
                format!("a certificate in the chain expired at {}", rfc3339(t))
            }
        }
        E::CertNotValidYet { not_before, .. } => {
            let t = i64::try_from(not_before.as_secs()).unwrap_or(i64::MAX);
            format!("not yet valid: not valid before {}", rfc3339(t))
        }
        E::CertRevoked => "revoked".to_string(),
        E::UnknownIssuer => "no path to a trusted anchor".to_string(),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => {
            "not valid for email protection".to_string()
        }
        E::CaUsedAsEndEntity => "the signer certificate is a CA certificate".to_string(),
        E::InvalidSignatureForPublicKey => {
            "a certificate in the chain has an invalid signature".to_string()
        }
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate in the chain uses an unsupported or too weak signature algorithm (RSA under 2048 bits, SHA-1, ...)".to_string()
        }
        E::UnknownRevocationStatus => "revocation status unknown".to_string(),
        E::IssuerNotCrlSigner => "a CRL was issued by a CA without cRLSign usage".to_string(),
        E::InvalidCrlSignatureForPublicKey => "a CRL has an invalid signature".to_string(),
        E::PathLenConstraintViolated => "path length constraint violated".to_string(),
        E::NameConstraintViolation => "name constraints violated".to_string(),
        other => format!("certificate path rejected: {other:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_text() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
