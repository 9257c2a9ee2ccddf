//! OCSP (RFC 6960) for directory answers: a candidate whose Authority Information Access
//! names an `http://` OCSP responder is asked about (a POST of one request, SHA-1 CertID as
//! RFC 5019 profiles it), under the lookup deadline; answers are cached until their
//! nextUpdate (at most an hour).
//!
//! **The attacker** answers for the responder or sits on the plain-HTTP path (OCSP answers
//! are signed; TLS adds nothing): a forged "good" must not pass, so the answer's signature
//! must verify with the issuer's key, or with a responder certificate the issuer signed for
//! `OCSPSigning`; a replayed old "good" must not pass, so thisUpdate must not be in the
//! future and the answer must be fresh (before its nextUpdate, or at most [`MAX_AGE`] old
//! without one); an answer about another certificate is no answer. Anything unreadable is
//! "no answer" (then `[directory] revocation` decides, as for an unreachable CRL). Bounded:
//! [`crate::revocation::MAX_CRL`] bytes per answer, fuzzed (`fuzz/fuzz_targets/directory.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use aws_lc_rs::{digest, signature};
use sealgate_smime::asn1::{Reader, Tlv, der, parse_time, tag};
use sealgate_smime::cert::{Certificate, KeyKind, names_equal};

use crate::revocation::{extension_values, plain_http_url};

/// The oldest answer without nextUpdate taken (seconds).
pub const MAX_AGE: i64 = 3600;
/// Clock skew allowed (seconds).
const SKEW: i64 = 300;
/// Answers kept at most.
const MAX_CACHED: usize = 1024;

const AIA: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 1, 1];
const AD_OCSP: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 0x30, 1];
const OCSP_BASIC: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 0x30, 1, 1];
const KP_OCSP_SIGNING: &[u8] = &[0x2b, 6, 1, 5, 5, 7, 3, 9];
const SHA1: &[u8] = &[0x2b, 0x0e, 3, 2, 0x1a];
const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2];
const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 3];
const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0b];
const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0c];
const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0d];

/// What a responder said about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// The responder does not know it.
    Unknown,
}

/// The `http://` OCSP responders of a certificate's AIA extension (at most 2).
pub fn ocsp_urls(cert_der: &[u8]) -> Vec<String> {
    urls(cert_der).unwrap_or_default()
}

fn urls(der: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for value in extension_values(der, AIA)? {
        let list = Reader::new(value).read(tag::SEQUENCE, "aia").ok()?;
        let mut lr = list.reader();
        while !lr.is_empty() {
            let ad = lr.read(tag::SEQUENCE, "access").ok()?;
            let mut a = ad.reader();
            let method = a.read(tag::OID, "method").ok()?;
            let loc = a.read_any().ok()?;
            if method.value == AD_OCSP
                && loc.tag == tag::context(6)
                && let Some(u) = plain_http_url(loc.value)
                && out.len() < 2
            {
                out.push(u);
            }
        }
    }
    Some(out)
}

fn sha1(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// The CertID of `cert` issued by `issuer` (SHA-1, as RFC 5019 asks).
fn cert_id(cert: &Certificate, issuer: &Certificate) -> Vec<u8> {
    der::seq(&[
        &der::algorithm(SHA1, Some(&der::null())),
        &der::octet_string(&sha1(&issuer.subject)),
        &der::octet_string(&sha1(&issuer.public_key)),
        &der::tlv(tag::INTEGER, &cert.serial),
    ])
}

/// An OCSP request for `cert` issued by `issuer`.
pub fn request(cert: &Certificate, issuer: &Certificate) -> Vec<u8> {
    let one = der::seq(&[&cert_id(cert, issuer)]);
    let list = der::seq(&[&one]);
    let tbs = der::seq(&[&list]);
    der::seq(&[&tbs])
}

/// Verifies `sig` over `message` with `key`'s public key under the signature algorithm
/// `alg` (OID content).
fn verify(key: &Certificate, alg: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let ecdsa: Option<&'static signature::EcdsaVerificationAlgorithm> = match (alg, &key.key_kind) {
        (a, KeyKind::P256) if a == ECDSA_SHA256 => Some(&signature::ECDSA_P256_SHA256_ASN1),
        (a, KeyKind::P256) if a == ECDSA_SHA384 => Some(&signature::ECDSA_P256_SHA384_ASN1),
        (a, KeyKind::P384) if a == ECDSA_SHA256 => Some(&signature::ECDSA_P384_SHA256_ASN1),
        (a, KeyKind::P384) if a == ECDSA_SHA384 => Some(&signature::ECDSA_P384_SHA384_ASN1),
        _ => None,
    };
    if let Some(v) = ecdsa {
        return signature::UnparsedPublicKey::new(v, &key.public_key)
            .verify(message, sig)
            .is_ok();
    }
    let rsa: Option<&'static signature::RsaParameters> = match alg {
        a if a == RSA_SHA256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        a if a == RSA_SHA384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        a if a == RSA_SHA512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        _ => None,
    };
    match rsa {
        Some(v) if matches!(key.key_kind, KeyKind::Rsa { .. }) => {
            signature::UnparsedPublicKey::new(v, &key.public_key)
                .verify(message, sig)
                .is_ok()
        }
        _ => false,
    }
}

/// (signed bytes, algorithm OID content, signature) of a signed structure
/// `SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING }`.
fn signed_parts<'a>(outer: &Tlv<'a>) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
    let mut r = outer.reader();
    let tbs = r.read(tag::SEQUENCE, "tbs").ok()?;
    let alg = r.read(tag::SEQUENCE, "algorithm").ok()?;
    let oid = alg.reader().read(tag::OID, "oid").ok()?.value;
    let sig = r
        .read(tag::BIT_STRING, "signature")
        .ok()?
        .bit_string()
        .ok()?;
    Some((tbs.raw, oid, sig))
}

/// Reads a responder's answer about `cert` (issued by `issuer`) at `now`: its status and until
/// when it may be cached (Unix seconds). `Err` when it proves nothing.
pub fn parse_response(
    data: &[u8],
    cert: &Certificate,
    issuer: &Certificate,
    now: i64,
) -> Result<(Status, i64), String> {
    let bad = |w: &str| format!("the OCSP answer is unreadable ({w})");
    let outer = Reader::new(data)
        .read(tag::SEQUENCE, "OCSPResponse")
        .map_err(|_| bad("not an OCSPResponse"))?;
    let mut o = outer.reader();
    let status = o.read(0x0a, "status").map_err(|_| bad("no status"))?;
    if status.value != [0] {
        return Err(format!(
            "the OCSP responder refused (status {})",
            status.value.first().copied().unwrap_or(255)
        ));
    }
    let rb = o
        .read(tag::context_constructed(0), "responseBytes")
        .map_err(|_| bad("no responseBytes"))?;
    let rb = rb
        .reader()
        .read(tag::SEQUENCE, "ResponseBytes")
        .map_err(|_| bad("responseBytes"))?;
    let mut rbr = rb.reader();
    if rbr.read(tag::OID, "type").map_err(|_| bad("type"))?.value != OCSP_BASIC {
        return Err(bad("not a basic response"));
    }
    let basic_bytes = rbr
        .read(tag::OCTET_STRING, "response")
        .map_err(|_| bad("response"))?;
    let basic = Reader::new(basic_bytes.value)
        .read(tag::SEQUENCE, "BasicOCSPResponse")
        .map_err(|_| bad("BasicOCSPResponse"))?;
    let (tbs_raw, alg, sig) = signed_parts(&basic).ok_or_else(|| bad("signature"))?;
    // Who signed: the issuer, or a responder certificate the issuer signed for OCSPSigning.
    let mut signed_by_issuer = verify(issuer, alg, tbs_raw, sig);
    if !signed_by_issuer {
        let mut br = basic.reader();
        let _ = br.read_any();
        let _ = br.read_any();
        let _ = br.read_any();
        if let Ok(Some(certs)) = br.read_optional(tag::context_constructed(0))
            && let Ok(seq) = certs.reader().read(tag::SEQUENCE, "certs")
        {
            let mut cr = seq.reader();
            for _ in 0..4 {
                let Ok(c) = cr.read(tag::SEQUENCE, "certificate") else {
                    break;
                };
                let Ok(responder) = Certificate::from_der(c.raw) else {
                    continue;
                };
                let delegated = names_equal(&responder.issuer, &issuer.subject)
                    && signed_parts(&c).is_some_and(|(t, a, s)| verify(issuer, a, t, s))
                    && responder
                        .ext_key_usage
                        .as_ref()
                        .is_some_and(|e| e.iter().any(|o| o == KP_OCSP_SIGNING))
                    && responder.not_before <= now + SKEW
                    && responder.not_after >= now - SKEW;
                if delegated && verify(&responder, alg, tbs_raw, sig) {
                    signed_by_issuer = true;
                    break;
                }
            }
        }
    }
    if !signed_by_issuer {
        return Err(
            "the OCSP answer is not signed by the issuer or its responder (forged?)".into(),
        );
    }
    let tbs = Reader::new(tbs_raw)
        .read(tag::SEQUENCE, "ResponseData")
        .map_err(|_| bad("ResponseData"))?;
    let mut t = tbs.reader();
    let _ = t.read_optional(tag::context_constructed(0)); // version
    let _responder = t.read_any().map_err(|_| bad("responderID"))?;
    let _produced = t
        .read(tag::GENERALIZED_TIME, "producedAt")
        .map_err(|_| bad("producedAt"))?;
    let responses = t
        .read(tag::SEQUENCE, "responses")
        .map_err(|_| bad("responses"))?;
    let want = cert_id(cert, issuer);
    let mut rr = responses.reader();
    for _ in 0..16 {
        let Ok(single) = rr.read(tag::SEQUENCE, "SingleResponse") else {
            break;
        };
        let mut s = single.reader();
        let id = s.read(tag::SEQUENCE, "certID").map_err(|_| bad("certID"))?;
        if !same_cert_id(id.raw, &want) {
            continue;
        }
        let st = s.read_any().map_err(|_| bad("certStatus"))?;
        let status = match st.tag {
            t if t == tag::context(0) => Status::Good,
            t if t == tag::context_constructed(1) => Status::Revoked,
            t if t == tag::context(2) => Status::Unknown,
            _ => return Err(bad("certStatus")),
        };
        let this = s
            .read(tag::GENERALIZED_TIME, "thisUpdate")
            .ok()
            .and_then(|t| parse_time(&t).ok())
            .ok_or_else(|| bad("thisUpdate"))?;
        let next = match s.read_optional(tag::context_constructed(0)) {
            Ok(Some(n)) => Some(
                n.reader()
                    .read(tag::GENERALIZED_TIME, "nextUpdate")
                    .ok()
                    .and_then(|t| parse_time(&t).ok())
                    .ok_or_else(|| bad("nextUpdate"))?,
            ),
            _ => None,
        };
        if this > now + SKEW {
            return Err("the OCSP answer is from the future".into());
        }
        let until = match next {
            Some(n) if n + SKEW < now => {
                return Err("the OCSP answer is stale (past its nextUpdate)".into());
            }
            Some(n) => n.min(now + MAX_AGE),
            None if this + MAX_AGE < now => {
                return Err("the OCSP answer is stale (an old answer replayed?)".into());
            }
            None => this + MAX_AGE,
        };
        return Ok((status, until));
    }
    Err("the OCSP answer is about another certificate".into())
}

/// CertIDs are equal when hash algorithm, hashes and serial are (NULL parameters or none).
fn same_cert_id(a: &[u8], b: &[u8]) -> bool {
    let parts = |d: &[u8]| -> Option<[Vec<u8>; 4]> {
        let s = Reader::new(d).read(tag::SEQUENCE, "certID").ok()?;
        let mut r = s.reader();
        let alg = r.read(tag::SEQUENCE, "alg").ok()?;
        let oid = alg.reader().read(tag::OID, "oid").ok()?.value.to_vec();
        let name = r.read(tag::OCTET_STRING, "name").ok()?.value.to_vec();
        let key = r.read(tag::OCTET_STRING, "key").ok()?.value.to_vec();
        let serial = r.read(tag::INTEGER, "serial").ok()?.value.to_vec();
        Some([oid, name, key, serial])
    };
    matches!((parts(a), parts(b)), (Some(x), Some(y)) if x == y)
}

/// An answer remembered: (responder URL, CertID) → (status, until).
type Remembered = HashMap<(String, Vec<u8>), (Status, i64)>;

/// Answers remembered.
#[derive(Default)]
pub struct OcspCache {
    answers: Mutex<Remembered>,
}

impl OcspCache {
    /// What the responders of `cert` say (cached, or asked before `deadline`): `Ok(None)`
    /// when it names none, `Err` (the reasons) when none gave a usable answer.
    pub fn status(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        deadline: Instant,
    ) -> Result<Option<Status>, String> {
        let urls = ocsp_urls(cert.der());
        if urls.is_empty() {
            return Ok(None);
        }
        let now = crate::unix_now();
        let mut why = Vec::new();
        for u in urls {
            let key = (u.clone(), cert_id(cert, issuer));
            if let Ok(c) = self.answers.lock()
                && let Some((s, until)) = c.get(&key)
                && *until > now
            {
                return Ok(Some(s.clone()));
            }
            let body = request(cert, issuer);
            let asked = crate::within(deadline, {
                let u = u.clone();
                move |d| {
                    crate::revocation::exchange(&u, Some(("application/ocsp-request", &body)), d)
                }
            });
            match asked.and_then(|a| parse_response(&a, cert, issuer, crate::unix_now())) {
                Ok((s, until)) => {
                    if let Ok(mut c) = self.answers.lock() {
                        if c.len() >= MAX_CACHED {
                            c.clear();
                        }
                        c.insert(key, (s.clone(), until));
                    }
                    return Ok(Some(s));
                }
                Err(e) => why.push(format!("{u}: {e}")),
            }
        }
        Err(why.join("; "))
    }
}

/// The issuer of `cert` among `candidates` (name and signature).
pub fn issuer_of<'a>(cert: &Certificate, candidates: &'a [Certificate]) -> Option<&'a Certificate> {
    let outer = Reader::new(cert.der())
        .read(tag::SEQUENCE, "certificate")
        .ok()?;
    let (tbs, alg, sig) = signed_parts(&outer)?;
    candidates
        .iter()
        .find(|c| names_equal(&c.subject, &cert.issuer) && verify(c, alg, tbs, sig))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Answers of `openssl ocsp` (committed in the fuzz corpus) about serial 07D1 of the
    /// issuer `ocsp-issuer.pem`, made at 2026-12-05T04:04:11Z (good, no nextUpdate) and
    /// 04:04:13Z (revoked, nextUpdate 04:09:13Z).
    const AT: i64 = 1_796_443_451;

    fn issuer() -> Certificate {
        let pem: &[u8] = include_bytes!("../../../fuzz/corpus/directory/ocsp-issuer.pem");
        Certificate::parse_many(pem).unwrap().remove(0)
    }

    fn subject(serial: &[u8]) -> Certificate {
        let mut c = issuer();
        c.serial = serial.to_vec();
        c
    }

    #[test]
    fn answers_are_checked_for_signer_certificate_and_freshness() {
        let good: &[u8] = include_bytes!("../../../fuzz/corpus/directory/ocsp-good");
        let revoked: &[u8] =
            include_bytes!("../../../fuzz/corpus/directory/ocsp-revoked-nextupdate");
        let (i, c) = (issuer(), subject(&[0x07, 0xd1]));
        assert_eq!(
            parse_response(good, &c, &i, AT).unwrap(),
            (Status::Good, AT + MAX_AGE)
        );
        let (s, until) = parse_response(revoked, &c, &i, AT + 2).unwrap();
        assert_eq!((s, until), (Status::Revoked, AT + 2 + 300));
        // Replayed later: stale.
        assert!(
            parse_response(good, &c, &i, AT + MAX_AGE + 10)
                .unwrap_err()
                .contains("stale")
        );
        assert!(
            parse_response(revoked, &c, &i, AT + 3600)
                .unwrap_err()
                .contains("stale")
        );
        // Before it was made (a clock or a forger): refused.
        assert!(
            parse_response(good, &c, &i, AT - 3600)
                .unwrap_err()
                .contains("future")
        );
        // About another certificate.
        let other = subject(&[0x07, 0xd2]);
        assert!(
            parse_response(good, &other, &i, AT)
                .unwrap_err()
                .contains("another")
        );
        // Not the issuer's signature (another key named alike, or a changed byte).
        let mut tampered = good.to_vec();
        let at = tampered.windows(4).position(|w| w == b"2026").unwrap(); // producedAt
        tampered[at + 3] = b'5';
        assert!(
            parse_response(&tampered, &c, &i, AT)
                .unwrap_err()
                .contains("not signed")
        );
        let mut other_key = issuer();
        other_key.public_key[10] ^= 1;
        assert!(
            parse_response(good, &c, &other_key, AT)
                .unwrap_err()
                .contains("not signed")
        );
        // Cut anywhere: an error, never a panic.
        for n in 0..good.len() {
            let _ = parse_response(&good[..n], &c, &i, AT);
        }
        // The request is one CertID with SHA-1, the serial as given.
        let r = request(&c, &i);
        assert!(r.windows(2).any(|w| w == [0x07, 0xd1]));
    }
}
