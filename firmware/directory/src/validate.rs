//! The rules every candidate certificate passes before the box encrypts to it.
//!
//! A directory answer (LDAP, HTTP, DNS) is written by whoever controls that server or the path
//! to it; a certificate in it is only a claim. The box encrypts to a certificate found there
//! only when it is usable for encryption now ([`unusable_reason`]), names the address looked
//! up, and chains to a trust anchor of the box ([`chains_to_anchor`]) or is pinned by an
//! administrator, and is not revoked.

use rustls_pki_types::{CertificateDer, UnixTime};
use sealgate_smime::cert::Certificate;
use sealgate_smime::envelope::Recipient;

/// Largest certificate taken (real S/MIME certificates are a few KiB).
pub const MAX_CERTIFICATE_BYTES: usize = 32 * 1024;

/// Whether `leaf` chains to one of `anchors` at `now` (through `intermediates`), for email
/// protection; the reason if not. A leaf that is itself an anchor (a pinned partner
/// certificate) chains. `crls` (DER) are checked when given: a revoked leaf or
/// intermediate fails.
pub fn chains_to_anchor(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    now: i64,
) -> Result<(), String> {
    chains_to_anchor_with_crls(leaf, intermediates, anchors, &[], now)
}

/// [`chains_to_anchor`], also checking `crls` (DER CRLs; an unknown status is not a failure).
pub fn chains_to_anchor_with_crls(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    crls: &[Vec<u8>],
    now: i64,
) -> Result<(), String> {
    if anchors.is_empty() {
        return Err("the box has no trust anchors".into());
    }
    if anchors.iter().any(|a| a.der() == leaf.der()) {
        return Ok(());
    }
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let trust: Vec<_> = anchor_ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let leaf_der = CertificateDer::from(leaf.der());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("it cannot be parsed for path validation ({e:?})"))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    let parsed: Vec<webpki::CertRevocationList<'_>> = crls
        .iter()
        .filter_map(|c| webpki::BorrowedCertRevocationList::from_der(c).ok())
        .map(Into::into)
        .collect();
    let refs: Vec<&webpki::CertRevocationList<'_>> = parsed.iter().collect();
    let revocation = if refs.is_empty() {
        None
    } else {
        webpki::RevocationOptionsBuilder::new(&refs).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .with_expiration_policy(webpki::ExpirationPolicy::Ignore)
                .build()
        })
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust,
        &inter,
        time,
        webpki::KeyUsage::required_if_present(sealgate_smime::oid::KP_EMAIL_PROTECTION),
        revocation,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::UnknownIssuer => "no path to a trust anchor of the box".to_string(),
        webpki::Error::CertRevoked => "it is revoked (CRL)".to_string(),
        e => format!("its path to a trust anchor does not validate ({e:?})"),
    })
}

/// Why `cert` cannot be used as a recipient certificate (encrypting to it must work and be
/// allowed), or `None`.
pub fn unusable_reason(cert: &Certificate, now: i64) -> Option<String> {
    use sealgate_smime::cert::KeyKind;
    if cert.is_ca {
        return Some("it is a CA certificate".into());
    }
    if cert.der().len() > MAX_CERTIFICATE_BYTES {
        return Some(format!(
            "it is larger than {} KiB",
            MAX_CERTIFICATE_BYTES / 1024
        ));
    }
    // An address the vault can file it under: local@domain.tld, nothing odd.
    let filable = |e: &String| {
        e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        }) && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    };
    if !cert.emails.iter().any(filable) {
        return Some("it names no email address".into());
    }
    if now < cert.not_before || now > cert.not_after {
        return Some("it is not valid now".into());
    }
    if !sealgate_smime::chain::eku_allows_email(cert) {
        return Some("its extended key usage does not allow email protection".into());
    }
    if let Some(ku) = cert.key_usage {
        use sealgate_smime::cert::key_usage::{KEY_AGREEMENT, KEY_ENCIPHERMENT};
        let needed = match cert.key_kind {
            KeyKind::Rsa { .. } => KEY_ENCIPHERMENT,
            _ => KEY_AGREEMENT,
        };
        if ku & needed == 0 {
            return Some("its key usage does not allow encryption".into());
        }
    }
    if let Err(e) = Recipient::new(cert.clone()) {
        return Some(e.to_string());
    }
    None
}

/// Lowercase hex SHA-256 of `der`.
pub fn sha256_hex(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    sealgate_smime::cert::hex(d.as_ref())
}
