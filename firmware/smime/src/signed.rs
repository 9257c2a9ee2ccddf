//! SignedData (RFC 5652 §5): sign and verify, detached and opaque.
//!
//! Signing writes DER: one SignerInfo identified by issuer and serial, signed attributes
//! (contentType, signingTime, messageDigest, smimeCapabilities), the signer's certificate and
//! chain. Verification reads BER (indefinite lengths, chunked eContent), several signers,
//! signers named by issuer+serial or subject key identifier; it hashes the signed attributes
//! exactly as received (only the `[0]` tag replaced by SET), and checks RSA PKCS#1 v1.5,
//! RSA-PSS with any salt length, ECDSA and Ed25519 (RFC 8419). The result is a verdict per
//! signer with reasons, never a bare boolean; nothing in a message can make it panic.

use aws_lc_rs::signature;
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::asn1::{Reader, Tlv, der, parse_time, tag};
use crate::cert::{Certificate, KeyKind, certificates_in, hex};
pub use crate::chain::ChainVerdict;
use crate::chain::{ChainParams, rfc3339, validate_signer};
use crate::crypto::HashAlg;
use crate::envelope::content_info;
use crate::error::{Error, Result, malformed};
use crate::keys::{PrivateKey, SignScheme, default_scheme};
use crate::oid;

/// How to sign.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// The signature scheme; `None` = [`default_scheme`] for the key.
    pub scheme: Option<SignScheme>,
    /// Detached signature (for `multipart/signed`): the content is not inside the CMS.
    pub detached: bool,
    /// The signingTime attribute, Unix seconds.
    pub signing_time: i64,
    /// Include the key's chain (intermediates) besides the signer's certificate.
    pub include_chain: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            scheme: None,
            detached: true,
            signing_time: time::OffsetDateTime::now_utc().unix_timestamp(),
            include_chain: true,
        }
    }
}

/// The S/MIME capabilities we advertise, in order of preference. CBC first so old clients
/// (Outlook, gpgsm 2.2) that pick the first one they know pick one they can produce and we
/// read; then GCM (AuthEnvelopedData), then the key-transport algorithms we accept.
fn smime_capabilities() -> Vec<u8> {
    let caps: Vec<Vec<u8>> = vec![
        der::algorithm(oid::AES256_CBC, None),
        der::algorithm(oid::AES192_CBC, None),
        der::algorithm(oid::AES128_CBC, None),
        der::algorithm(oid::AES256_GCM, None),
        der::algorithm(oid::AES128_GCM, None),
        der::algorithm(oid::RSAES_OAEP, None),
        der::algorithm(oid::RSA_ENCRYPTION, None),
    ];
    let refs: Vec<&[u8]> = caps.iter().map(Vec::as_slice).collect();
    der::seq(&refs)
}

fn attribute(id: &[u8], value: &[u8]) -> Vec<u8> {
    der::seq(&[&der::oid(id), &der::set_of(&[value])])
}

/// The digest a scheme signs with (Ed25519: SHA-512 for the message digest, RFC 8419).
fn scheme_hash(scheme: SignScheme) -> HashAlg {
    match scheme {
        SignScheme::RsaPkcs1(h) | SignScheme::RsaPss(h) | SignScheme::Ecdsa(h) => h,
        SignScheme::Ed25519 => HashAlg::Sha512,
    }
}

fn null_hash_id(h: HashAlg) -> Vec<u8> {
    der::algorithm(h.oid(), Some(&der::null()))
}

/// The signatureAlgorithm AlgorithmIdentifier for a scheme.
fn signature_algorithm(scheme: SignScheme) -> Result<Vec<u8>> {
    Ok(match scheme {
        SignScheme::RsaPkcs1(h) => {
            let o = match h {
                HashAlg::Sha1 => oid::SHA1_WITH_RSA,
                HashAlg::Sha224 => oid::SHA224_WITH_RSA,
                HashAlg::Sha256 => oid::SHA256_WITH_RSA,
                HashAlg::Sha384 => oid::SHA384_WITH_RSA,
                HashAlg::Sha512 => oid::SHA512_WITH_RSA,
            };
            der::algorithm(o, Some(&der::null()))
        }
        SignScheme::RsaPss(h) => {
            let hash = null_hash_id(h);
            let mgf = der::algorithm(oid::MGF1, Some(&hash));
            let salt = der::uint(h.output_len() as u64);
            let params = der::seq(&[
                &der::tlv(tag::context_constructed(0), &hash),
                &der::tlv(tag::context_constructed(1), &mgf),
                &der::tlv(tag::context_constructed(2), &salt),
            ]);
            der::algorithm(oid::RSASSA_PSS, Some(&params))
        }
        SignScheme::Ecdsa(h) => {
            let o = match h {
                HashAlg::Sha1 => oid::ECDSA_SHA1,
                HashAlg::Sha224 => oid::ECDSA_SHA224,
                HashAlg::Sha256 => oid::ECDSA_SHA256,
                HashAlg::Sha384 => oid::ECDSA_SHA384,
                HashAlg::Sha512 => oid::ECDSA_SHA512,
            };
            der::algorithm(o, None)
        }
        SignScheme::Ed25519 => der::algorithm(oid::ED25519, None),
    })
}

/// Signs `content` (exact bytes: for multipart/signed the caller passes the CRLF-canonical
/// MIME part). Returns ContentInfo(SignedData) DER and the digest used (for `micalg`).
pub fn sign(
    content: &[u8],
    key: &dyn PrivateKey,
    opts: &SignOptions,
) -> Result<(Vec<u8>, HashAlg)> {
    let cert = key.certificate();
    let scheme = opts
        .scheme
        .unwrap_or_else(|| default_scheme(&cert.key_kind));
    let hash = scheme_hash(scheme);
    if hash == HashAlg::Sha1 {
        return Err(Error::Usage("refusing to sign with SHA-1".into()));
    }
    let digest_alg = hash.algorithm_identifier();
    let sig_alg = signature_algorithm(scheme)?;

    let attrs = [
        attribute(oid::ATTR_CONTENT_TYPE, &der::oid(oid::DATA)),
        attribute(oid::ATTR_SIGNING_TIME, &der::time(opts.signing_time)),
        attribute(
            oid::ATTR_MESSAGE_DIGEST,
            &der::octet_string(&hash.digest(content)),
        ),
        attribute(oid::ATTR_SMIME_CAPABILITIES, &smime_capabilities()),
    ];
    let attr_refs: Vec<&[u8]> = attrs.iter().map(Vec::as_slice).collect();
    let signed_attrs = der::set_of(&attr_refs);
    let sig = key.sign(scheme, &signed_attrs)?;
    let mut signed_attrs_field = signed_attrs;
    if let Some(first) = signed_attrs_field.first_mut() {
        *first = tag::context_constructed(0);
    }

    let signer_info = der::seq(&[
        &der::uint(1),
        &cert.issuer_and_serial(),
        &digest_alg,
        &signed_attrs_field,
        &sig_alg,
        &der::octet_string(&sig),
    ]);

    let mut cert_ders: Vec<&[u8]> = vec![cert.der()];
    if opts.include_chain {
        for c in key.chain() {
            if c.der() != cert.der() && !cert_ders.contains(&c.der()) {
                cert_ders.push(c.der());
            }
        }
    }
    let mut certs = der::set_of(&cert_ders);
    if let Some(first) = certs.first_mut() {
        *first = tag::context_constructed(0);
    }

    let encap = if opts.detached {
        der::seq(&[&der::oid(oid::DATA)])
    } else {
        let wrapped = der::tlv(tag::context_constructed(0), &der::octet_string(content));
        der::seq(&[&der::oid(oid::DATA), &wrapped])
    };
    let signed_data = der::seq(&[
        &der::uint(1),
        &der::set_of(&[&digest_alg]),
        &encap,
        &certs,
        &der::set_of(&[&signer_info]),
    ]);
    let ci = der::seq(&[
        &der::oid(oid::SIGNED_DATA),
        &der::tlv(tag::context_constructed(0), &signed_data),
    ]);
    Ok((ci, hash))
}

/// How to verify (and, for [`crate::message::open`], how much work a message may cost).
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Trust anchors. Empty: signatures are checked, chains are not, and no verdict is valid.
    pub anchors: Vec<Certificate>,
    /// DER CRLs.
    pub crls: Vec<Vec<u8>>,
    /// A trusted time to validate chains at (Unix seconds), e.g. from a trusted timestamp or
    /// an operator; default: now. The signer-claimed signingTime is never used for this: a
    /// signer with an expired or not-yet-valid certificate could claim any time.
    pub at: Option<i64>,
    /// The message's From address, to bind to the signer's certificate.
    pub from: Option<String>,
    /// Set when the message's From cannot be bound (e.g. it names several addresses): every
    /// signer then fails the From binding with this reason.
    pub from_refused: Option<String>,
    /// Accept SHA-1 and RSA keys under 2048 bits (reported as weak). Default: such
    /// signatures get the status `weak` and the verdict is invalid.
    pub allow_weak: bool,
    /// Work limits (signers verified; recipient entries read by `message::open`).
    pub limits: crate::Limits,
    /// Certificates revoked by an issuer the caller keeps itself (the box's own CA), checked
    /// besides `crls`.
    pub revoked: Vec<Revoked>,
}

/// A revoked certificate, by issuer and serial number (revocation known without a CRL
/// document, e.g. the box's own CA's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The issuer's Name (DER).
    pub issuer: Vec<u8>,
    /// The serial number (INTEGER content bytes; leading zeros do not matter).
    pub serial: Vec<u8>,
}

impl Revoked {
    /// True if `cert` is this revoked certificate.
    pub fn matches(&self, cert: &Certificate) -> bool {
        fn strip(s: &[u8]) -> &[u8] {
            let n = s.iter().take_while(|b| **b == 0).count();
            &s[n.min(s.len().saturating_sub(1))..]
        }
        strip(&self.serial) == strip(&cert.serial)
            && crate::cert::names_equal(&self.issuer, &cert.issuer)
    }
}

/// Whether signer chains were validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChainCheck {
    /// Every signer's chain was validated against the trust anchors.
    Checked,
    /// No trust anchors: signatures were checked, chains were not, and `valid` is false.
    Unchecked,
}

/// The state of one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// The signature verifies.
    Valid,
    /// The signature or the message digest does not match.
    Invalid,
    /// An algorithm we do not implement.
    Unsupported,
    /// The signer's certificate is not in the message (nor among the anchors).
    NoCertificate,
    /// The signature verifies but uses what policy refuses (SHA-1, RSA under 2048 bits);
    /// `VerifyOptions::allow_weak` accepts it.
    Weak,
    /// Not verified: the message has more signers than `Limits::max_signers`.
    NotVerified,
}

/// The verdict on one SignerInfo.
#[derive(Debug, Clone, Serialize)]
pub struct SignerVerdict {
    /// The signer's subject.
    pub signer: Option<String>,
    /// The signer certificate's serial number (hex).
    pub serial: Option<String>,
    /// The addresses in the signer's certificate.
    pub emails: Vec<String>,
    /// The signature's state.
    pub signature: SignatureStatus,
    /// The signature algorithm, e.g. `rsa-pkcs1v15-sha256`, `rsa-pss-sha256`, `ecdsa-p256-sha256`.
    pub algorithm: String,
    /// The digest algorithm (micalg name).
    pub digest: String,
    /// Weaknesses, e.g. `sha-1 digest`, `rsa-1024`.
    pub weak: Vec<String>,
    /// The signingTime attribute, RFC 3339.
    pub signing_time: Option<String>,
    /// The chain verdict (when anchors were given).
    pub chain: Option<ChainVerdict>,
    /// Whether the signer's certificate names the From address (when one was given).
    pub from_matches: Option<bool>,
    /// The S/MIME capabilities the signer advertised.
    pub capabilities: Vec<String>,
    /// Why the signature is not valid, or notes.
    pub reasons: Vec<String>,
}

/// The result of verifying a SignedData.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The signed content.
    #[serde(skip)]
    pub content: Vec<u8>,
    /// The encapsulated content type.
    pub content_type: String,
    /// True if the content came from outside (detached signature).
    pub detached: bool,
    /// One verdict per SignerInfo.
    pub signers: Vec<SignerVerdict>,
    /// Subjects of the certificates in the message.
    pub certificates: Vec<String>,
    /// True if anchors were given and chains were checked.
    pub chain_checked: bool,
    /// `checked`, or `unchecked` when no anchors were given.
    pub chain: ChainCheck,
    /// Every signature verifies (status `valid`), whatever the chains.
    pub signatures_valid: bool,
    /// Every signature valid, every chain checked and valid, and the From address bound when
    /// one was given. Never true when no chain was checked.
    pub valid: bool,
}

/// A parsed SignedData, borrowing the input.
struct Parsed<'a> {
    content_type: &'a [u8],
    econtent: Option<Vec<u8>>,
    certificates: Vec<Certificate>,
    signer_infos: Vec<Tlv<'a>>,
}

fn parse(cms: &[u8]) -> Result<Parsed<'_>> {
    let (ct, body) = content_info(cms)?;
    if ct != oid::SIGNED_DATA {
        return Err(malformed(format!(
            "not a signed message (content type {})",
            oid::name(ct)
        )));
    }
    let body = body.expect(tag::SEQUENCE, "SignedData")?;
    let mut r = body.reader();
    r.read(tag::INTEGER, "SignedData version")?;
    r.read(tag::SET, "digestAlgorithms")?;
    let encap = r.read(tag::SEQUENCE, "encapContentInfo")?;
    let mut e = encap.reader();
    let content_type = e.read(tag::OID, "eContentType")?.value;
    let econtent = match e.read_optional(tag::context_constructed(0))? {
        Some(wrapper) => {
            let mut w = wrapper.reader();
            if w.is_empty() {
                Some(Vec::new())
            } else {
                let inner = w.read_any()?;
                if inner.tag_primitive() == tag::OCTET_STRING {
                    Some(inner.octets()?.into_owned())
                } else {
                    // PKCS#7 style: non-data content carried as its own encoding.
                    Some(inner.raw.to_vec())
                }
            }
        }
        None => None,
    };
    let mut certificates = Vec::new();
    let mut signer_set = None;
    while !r.is_empty() {
        let f = r.read_any()?;
        match f.tag {
            t if t == tag::context_constructed(0) => certificates = certificates_in(&f),
            t if t == tag::context_constructed(1) => {}
            tag::SET => {
                signer_set = Some(f);
                break;
            }
            other => {
                return Err(malformed(format!(
                    "unexpected element {other:#04x} in SignedData"
                )));
            }
        }
    }
    let signer_set = signer_set.ok_or_else(|| malformed("SignedData without signerInfos"))?;
    let signer_infos = signer_set.reader().read_all()?;
    Ok(Parsed {
        content_type,
        econtent,
        certificates,
        signer_infos,
    })
}

/// One SignerInfo's fields.
struct SignerInfo<'a> {
    sid: Tlv<'a>,
    digest_alg: Tlv<'a>,
    signed_attrs: Option<Tlv<'a>>,
    sig_alg: Tlv<'a>,
    signature: Vec<u8>,
}

fn parse_signer_info<'a>(si: &Tlv<'a>) -> Result<SignerInfo<'a>> {
    let si = si.expect(tag::SEQUENCE, "SignerInfo")?;
    let mut r = si.reader();
    r.read(tag::INTEGER, "SignerInfo version")?;
    let sid = r.read_any()?;
    let digest_alg = r.read(tag::SEQUENCE, "digestAlgorithm")?;
    let signed_attrs = match r.peek_tag() {
        Some(t) if t == tag::context_constructed(0) => Some(r.read_any()?),
        _ => None,
    };
    let sig_alg = r.read(tag::SEQUENCE, "signatureAlgorithm")?;
    let sig = r.read_any()?;
    if sig.tag_primitive() != tag::OCTET_STRING {
        return Err(malformed("SignerInfo signature is not an OCTET STRING"));
    }
    let signature = sig.octets()?.into_owned();
    Ok(SignerInfo {
        sid,
        digest_alg,
        signed_attrs,
        sig_alg,
        signature,
    })
}

fn find_cert<'c>(sid: &Tlv<'_>, pools: &[&'c [Certificate]]) -> Option<&'c Certificate> {
    for pool in pools {
        for c in pool.iter() {
            let hit = if sid.tag == tag::SEQUENCE {
                c.matches_issuer_serial(sid)
            } else if sid.tag_primitive() == tag::context(0) {
                sid.octets().is_ok_and(|id| c.matches_key_id(&id))
            } else {
                false
            };
            if hit {
                return Some(c);
            }
        }
    }
    None
}

fn sid_text(sid: &Tlv<'_>) -> String {
    if sid.tag == tag::SEQUENCE {
        let mut r = sid.reader();
        let issuer = r
            .read_any()
            .map(|t| crate::cert::name_text(t.raw))
            .unwrap_or_default();
        let serial = r.read_any().map(|t| hex(t.value)).unwrap_or_default();
        format!("issuer={issuer}; serial={serial}")
    } else {
        format!("ski={}", sid.octets().map(|v| hex(&v)).unwrap_or_default())
    }
}

/// The certificates of the signers of a SignedData (for harvesting), without verifying.
pub fn certificates(cms: &[u8]) -> Result<Vec<Certificate>> {
    let p = parse(cms)?;
    let mut out: Vec<Certificate> = Vec::new();
    for si in &p.signer_infos {
        let Ok(info) = parse_signer_info(si) else {
            continue;
        };
        if let Some(c) = find_cert(&info.sid, &[&p.certificates])
            && !out.contains(c)
        {
            out.push(c.clone());
        }
    }
    Ok(out)
}

/// Every certificate carried in a SignedData (signers, intermediates, others).
pub fn all_certificates(cms: &[u8]) -> Result<Vec<Certificate>> {
    Ok(parse(cms)?.certificates)
}

/// A SignedData described without verifying it (for `inspect`).
#[derive(Debug, Clone, Serialize)]
pub struct SignedInfo {
    /// The encapsulated content type.
    pub content_type: String,
    /// True if the content is not inside (detached signature).
    pub detached: bool,
    /// One entry per SignerInfo.
    pub signers: Vec<SignerSummary>,
    /// Subjects of the certificates carried.
    pub certificates: Vec<String>,
}

/// One SignerInfo, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct SignerSummary {
    /// The signer: its certificate's subject if carried, else the identifier as written.
    pub signer: String,
    /// The digest algorithm.
    pub digest: String,
    /// The signature algorithm (OID name).
    pub algorithm: String,
    /// The signingTime attribute, RFC 3339.
    pub signing_time: Option<String>,
}

/// Describes a SignedData without verifying anything.
pub fn info(cms: &[u8]) -> Result<SignedInfo> {
    let p = parse(cms)?;
    let mut signers = Vec::new();
    for si in &p.signer_infos {
        let info = parse_signer_info(si)?;
        let oid_of = |t: &Tlv<'_>| {
            t.reader()
                .read(tag::OID, "algorithm")
                .map(|o| oid::name(o.value))
                .unwrap_or_default()
        };
        let signing_time = info
            .signed_attrs
            .as_ref()
            .and_then(|a| read_attrs(a).ok())
            .and_then(|a| a.signing_time)
            .map(rfc3339);
        signers.push(SignerSummary {
            signer: find_cert(&info.sid, &[&p.certificates])
                .map_or_else(|| sid_text(&info.sid), Certificate::subject_text),
            digest: oid_of(&info.digest_alg),
            algorithm: oid_of(&info.sig_alg),
            signing_time,
        });
    }
    Ok(SignedInfo {
        content_type: oid::name(p.content_type),
        detached: p.econtent.is_none(),
        signers,
        certificates: p
            .certificates
            .iter()
            .map(Certificate::subject_text)
            .collect(),
    })
}

/// What the signed attributes say.
#[derive(Default)]
struct Attrs {
    content_type: Option<Vec<u8>>,
    message_digest: Option<Vec<u8>>,
    signing_time: Option<i64>,
    capabilities: Vec<String>,
}

fn read_attrs(set: &Tlv<'_>) -> Result<Attrs> {
    let mut out = Attrs::default();
    let mut r = set.reader();
    while !r.is_empty() {
        let a = r.read(tag::SEQUENCE, "attribute")?;
        let mut ar = a.reader();
        let id = ar.read(tag::OID, "attribute type")?.value;
        let values = ar.read(tag::SET, "attribute values")?;
        let mut vr = values.reader();
        let Ok(first) = vr.read_any() else { continue };
        if id == oid::ATTR_CONTENT_TYPE {
            if out.content_type.is_some() {
                return Err(malformed("two contentType attributes"));
            }
            out.content_type = Some(first.oid()?.to_vec());
        } else if id == oid::ATTR_MESSAGE_DIGEST {
            if out.message_digest.is_some() {
                return Err(malformed("two messageDigest attributes"));
            }
            out.message_digest = Some(first.octets()?.into_owned());
        } else if id == oid::ATTR_SIGNING_TIME {
            out.signing_time = parse_time(&first).ok();
        } else if id == oid::ATTR_SMIME_CAPABILITIES {
            let mut cr: Reader<'_> = first.reader();
            while let Ok(cap) = cr.read_any() {
                if let Ok(o) = cap.reader().read(tag::OID, "capability") {
                    out.capabilities.push(oid::name(o.value));
                }
            }
        }
    }
    Ok(out)
}

/// The outcome of one signature check.
enum Check {
    Valid,
    Invalid(String),
    Unsupported(String),
}

/// Verifies a ContentInfo(SignedData) (BER or DER). `detached` = the signed content for
/// detached signatures.
pub fn verify(cms: &[u8], detached: Option<&[u8]>, opts: &VerifyOptions) -> Result<Verification> {
    let p = parse(cms)?;
    let (content, is_detached) = match (&p.econtent, detached) {
        (Some(c), _) => (c.clone(), false),
        (None, Some(d)) => (d.to_vec(), true),
        (None, None) => {
            return Err(Error::Usage(
                "detached signature: the signed content is needed to verify it".into(),
            ));
        }
    };
    if p.signer_infos.is_empty() {
        return Err(malformed("SignedData has no signers"));
    }
    let chain_checked = !opts.anchors.is_empty();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut signers = Vec::new();
    for si in p.signer_infos.iter().take(opts.limits.max_signers) {
        signers.push(verify_signer(si, &p, &content, opts, now));
    }
    let skipped = p.signer_infos.len().saturating_sub(opts.limits.max_signers);
    if skipped > 0 {
        signers.push(SignerVerdict {
            signer: None,
            serial: None,
            emails: Vec::new(),
            signature: SignatureStatus::NotVerified,
            algorithm: String::new(),
            digest: String::new(),
            weak: Vec::new(),
            signing_time: None,
            chain: None,
            from_matches: None,
            capabilities: Vec::new(),
            reasons: vec![format!(
                "{skipped} more signers not verified (at most {} are)",
                opts.limits.max_signers
            )],
        });
    }
    let signatures_valid = signers
        .iter()
        .all(|s| s.signature == SignatureStatus::Valid);
    let valid = chain_checked
        && signatures_valid
        && signers
            .iter()
            .all(|s| s.chain.as_ref().is_some_and(|c| c.valid) && s.from_matches != Some(false));
    Ok(Verification {
        content,
        content_type: oid::name(p.content_type),
        detached: is_detached,
        signers,
        certificates: p
            .certificates
            .iter()
            .map(Certificate::subject_text)
            .collect(),
        chain_checked,
        chain: if chain_checked {
            ChainCheck::Checked
        } else {
            ChainCheck::Unchecked
        },
        signatures_valid,
        valid,
    })
}

fn verify_signer(
    si: &Tlv<'_>,
    p: &Parsed<'_>,
    content: &[u8],
    opts: &VerifyOptions,
    now: i64,
) -> SignerVerdict {
    let mut v = SignerVerdict {
        signer: None,
        serial: None,
        emails: Vec::new(),
        signature: SignatureStatus::Invalid,
        algorithm: String::new(),
        digest: String::new(),
        weak: Vec::new(),
        signing_time: None,
        chain: None,
        from_matches: None,
        capabilities: Vec::new(),
        reasons: Vec::new(),
    };
    let info = match parse_signer_info(si) {
        Ok(i) => i,
        Err(e) => {
            v.reasons.push(format!("cannot read the SignerInfo: {e}"));
            return v;
        }
    };
    let Some(cert) = find_cert(&info.sid, &[&p.certificates, &opts.anchors]) else {
        v.signature = SignatureStatus::NoCertificate;
        v.signer = Some(sid_text(&info.sid));
        v.reasons
            .push("the signer's certificate is not in the message".into());
        return v;
    };
    v.signer = Some(cert.subject_text());
    v.serial = Some(hex(&cert.serial));
    v.emails = cert.emails.clone();
    if let KeyKind::Rsa { bits } = cert.key_kind
        && bits < 2048
    {
        v.weak.push(format!("rsa-{bits}"));
    }
    if let Some(why) = &opts.from_refused {
        v.from_matches = Some(false);
        v.reasons.push(why.clone());
    } else if let Some(from) = &opts.from {
        v.from_matches = Some(cert.has_email(from));
    }

    let (status, signing_time) = check_signature(&info, p, content, cert, &mut v);
    v.signature = status;
    if status == SignatureStatus::Valid && !v.weak.is_empty() && !opts.allow_weak {
        v.signature = SignatureStatus::Weak;
        v.reasons
            .push(format!("refused as weak: {}", v.weak.join(", ")));
    }
    v.signing_time = signing_time.map(rfc3339);
    if !opts.anchors.is_empty() {
        // At a trusted time only: the signer's own signingTime is a claim, not a clock.
        let at = opts.at.unwrap_or(now);
        v.chain = Some(validate_signer(
            cert,
            &ChainParams {
                anchors: &opts.anchors,
                intermediates: &p.certificates,
                crls: &opts.crls,
                time: at,
                from: opts.from.as_deref(),
            },
        ));
    } else if v.from_matches == Some(false)
        && let Some(from) = &opts.from
    {
        v.reasons
            .push(format!("signer certificate is not for {}", from.trim()));
    }
    if opts.revoked.iter().any(|r| r.matches(cert)) {
        let why = "the signer's certificate is revoked".to_string();
        match &mut v.chain {
            Some(c) => {
                c.valid = false;
                c.reasons.push(why);
            }
            None => v.reasons.push(why),
        }
    }
    v
}

fn check_signature(
    info: &SignerInfo<'_>,
    p: &Parsed<'_>,
    content: &[u8],
    cert: &Certificate,
    v: &mut SignerVerdict,
) -> (SignatureStatus, Option<i64>) {
    let unsupported = |v: &mut SignerVerdict, why: String| {
        v.reasons.push(why);
        SignatureStatus::Unsupported
    };
    let digest_oid = info
        .digest_alg
        .reader()
        .read(tag::OID, "digestAlgorithm")
        .map(|t| t.value)
        .unwrap_or_default();
    let hash = match HashAlg::from_oid(digest_oid) {
        Ok(h) => h,
        Err(e) => return (unsupported(v, e.to_string()), None),
    };
    v.digest = hash.micalg().to_string();
    if hash == HashAlg::Sha1 {
        v.weak.push("sha-1 digest".into());
    }
    let mut signing_time = None;
    let signed_bytes: std::borrow::Cow<'_, [u8]> = match &info.signed_attrs {
        Some(attrs) => {
            let parsed = match read_attrs(attrs) {
                Ok(a) => a,
                Err(e) => {
                    v.reasons.push(format!("bad signed attributes: {e}"));
                    return (SignatureStatus::Invalid, None);
                }
            };
            signing_time = parsed.signing_time;
            v.capabilities = parsed.capabilities;
            match parsed.message_digest {
                None => {
                    v.reasons
                        .push("signed attributes lack the messageDigest attribute".into());
                    return (SignatureStatus::Invalid, signing_time);
                }
                Some(md) => {
                    if !bool::from(md.as_slice().ct_eq(&hash.digest(content))) {
                        v.reasons.push("message digest mismatch".into());
                        return (SignatureStatus::Invalid, signing_time);
                    }
                }
            }
            match parsed.content_type {
                None => v
                    .reasons
                    .push("signed attributes lack the contentType attribute".into()),
                Some(ct) if ct != p.content_type => {
                    v.reasons
                        .push("contentType attribute does not match the content".into());
                    return (SignatureStatus::Invalid, signing_time);
                }
                Some(_) => {}
            }
            let mut b = attrs.raw.to_vec();
            if let Some(first) = b.first_mut() {
                *first = tag::SET;
            }
            std::borrow::Cow::Owned(b)
        }
        None => std::borrow::Cow::Borrowed(content),
    };
    let check = verify_raw(&info.sig_alg, hash, cert, &signed_bytes, &info.signature, v);
    let status = match check {
        Check::Valid => SignatureStatus::Valid,
        Check::Invalid(r) => {
            v.reasons.push(r);
            SignatureStatus::Invalid
        }
        Check::Unsupported(r) => unsupported(v, r),
    };
    (status, signing_time)
}

/// Verifies `signature` over `message` with the certificate's key.
fn verify_raw(
    sig_alg: &Tlv<'_>,
    digest: HashAlg,
    cert: &Certificate,
    message: &[u8],
    sig: &[u8],
    v: &mut SignerVerdict,
) -> Check {
    let mut r = sig_alg.reader();
    let Ok(alg) = r.read(tag::OID, "signatureAlgorithm").map(|t| t.value) else {
        return Check::Invalid("malformed signatureAlgorithm".into());
    };
    let params = r.read_any().ok();
    let is_rsa_key = matches!(cert.key_kind, KeyKind::Rsa { .. });
    let is_ec_key = matches!(cert.key_kind, KeyKind::P256 | KeyKind::P384 | KeyKind::P521);
    let weak_hash = |v: &mut SignerVerdict, h: HashAlg| {
        if h == HashAlg::Sha1 && !v.weak.iter().any(|w| w.starts_with("sha-1")) {
            v.weak.push("sha-1 signature hash".into());
        }
    };
    let rsa_pkcs1_hash = match alg {
        a if a == oid::RSA_ENCRYPTION => Some(digest),
        a if a == oid::SHA1_WITH_RSA => Some(HashAlg::Sha1),
        a if a == oid::SHA224_WITH_RSA => Some(HashAlg::Sha224),
        a if a == oid::SHA256_WITH_RSA => Some(HashAlg::Sha256),
        a if a == oid::SHA384_WITH_RSA => Some(HashAlg::Sha384),
        a if a == oid::SHA512_WITH_RSA => Some(HashAlg::Sha512),
        _ => None,
    };
    if let Some(h) = rsa_pkcs1_hash {
        if !is_rsa_key {
            return Check::Invalid(format!(
                "RSA signature but the certificate has a {} key",
                cert.key_kind.label()
            ));
        }
        weak_hash(v, h);
        v.algorithm = format!("rsa-pkcs1v15-{}", h.micalg().replace('-', ""));
        return rsa_pkcs1_verify(cert, h, message, sig);
    }
    if alg == oid::RSASSA_PSS {
        if !is_rsa_key {
            return Check::Invalid(format!(
                "RSA-PSS signature but the certificate has a {} key",
                cert.key_kind.label()
            ));
        }
        let pss = match PssParams::parse(params.as_ref()) {
            Ok(p) => p,
            Err(e) => return Check::Unsupported(format!("RSA-PSS parameters: {e}")),
        };
        weak_hash(v, pss.hash);
        v.algorithm = format!("rsa-pss-{}", pss.hash.micalg().replace('-', ""));
        return rsa_pss_verify(cert, &pss, message, sig);
    }
    let ecdsa_hash = match alg {
        a if a == oid::EC_PUBLIC_KEY => Some(digest),
        a if a == oid::ECDSA_SHA1 => Some(HashAlg::Sha1),
        a if a == oid::ECDSA_SHA224 => Some(HashAlg::Sha224),
        a if a == oid::ECDSA_SHA256 => Some(HashAlg::Sha256),
        a if a == oid::ECDSA_SHA384 => Some(HashAlg::Sha384),
        a if a == oid::ECDSA_SHA512 => Some(HashAlg::Sha512),
        _ => None,
    };
    if let Some(h) = ecdsa_hash {
        if !is_ec_key {
            return Check::Invalid(format!(
                "ECDSA signature but the certificate has a {} key",
                cert.key_kind.label()
            ));
        }
        weak_hash(v, h);
        let curve = match cert.key_kind {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            _ => "p521",
        };
        v.algorithm = format!("ecdsa-{curve}-{}", h.micalg().replace('-', ""));
        let verifier: &'static signature::EcdsaVerificationAlgorithm = match (&cert.key_kind, h) {
            (KeyKind::P256, HashAlg::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
            (KeyKind::P256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyKind::P256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (KeyKind::P256, HashAlg::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
            (KeyKind::P384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (KeyKind::P384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            (KeyKind::P384, HashAlg::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
            (KeyKind::P521, HashAlg::Sha1) => &signature::ECDSA_P521_SHA1_ASN1,
            (KeyKind::P521, HashAlg::Sha224) => &signature::ECDSA_P521_SHA224_ASN1,
            (KeyKind::P521, HashAlg::Sha256) => &signature::ECDSA_P521_SHA256_ASN1,
            (KeyKind::P521, HashAlg::Sha384) => &signature::ECDSA_P521_SHA384_ASN1,
            (KeyKind::P521, HashAlg::Sha512) => &signature::ECDSA_P521_SHA512_ASN1,
            (k, h) => {
                return Check::Unsupported(format!("ECDSA on {} with {}", k.label(), h.micalg()));
            }
        };
        let key = signature::UnparsedPublicKey::new(verifier, &cert.public_key);
        return match key.verify(message, sig) {
            Ok(()) => Check::Valid,
            Err(_) => Check::Invalid("signature does not verify".into()),
        };
    }
    if alg == oid::ED25519 {
        if cert.key_kind != KeyKind::Ed25519 {
            return Check::Invalid(format!(
                "Ed25519 signature but the certificate has a {} key",
                cert.key_kind.label()
            ));
        }
        v.algorithm = "ed25519".into();
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, &cert.public_key);
        return match key.verify(message, sig) {
            Ok(()) => Check::Valid,
            Err(_) => Check::Invalid("signature does not verify".into()),
        };
    }
    v.algorithm = oid::name(alg);
    Check::Unsupported(format!("signature algorithm {}", oid::name(alg)))
}

/// The DER DigestInfo prefix (everything before the digest) for a hash, with NULL parameters
/// or without.
fn digest_info(h: HashAlg, digest: &[u8], with_null: bool) -> Vec<u8> {
    let alg = if with_null {
        der::algorithm(h.oid(), Some(&der::null()))
    } else {
        der::algorithm(h.oid(), None)
    };
    der::seq(&[&alg, &der::octet_string(digest)])
}

/// The signature value left-padded to the modulus length (some signers drop leading zeros).
fn pad_sig(sig: &[u8], k: usize) -> Option<Vec<u8>> {
    if sig.len() > k {
        return None;
    }
    let mut v = vec![0u8; k - sig.len()];
    v.extend_from_slice(sig);
    Some(v)
}

fn rsa_open(cert: &Certificate, sig: &[u8]) -> std::result::Result<Vec<u8>, Check> {
    let key = crate::rsa_raw::RsaPublic::from_pkcs1(&cert.public_key)
        .map_err(|e| Check::Invalid(format!("the certificate's RSA key is unusable: {e}")))?;
    let sig = pad_sig(sig, key.size())
        .ok_or_else(|| Check::Invalid("signature longer than the RSA modulus".into()))?;
    key.raw_public(&sig)
        .map_err(|_| Check::Invalid("signature does not verify".into()))
}

fn rsa_pkcs1_verify(cert: &Certificate, h: HashAlg, message: &[u8], sig: &[u8]) -> Check {
    let em = match rsa_open(cert, sig) {
        Ok(em) => em,
        Err(c) => return c,
    };
    let digest = h.digest(message);
    let mut ok = subtle::Choice::from(0);
    for with_null in [true, false] {
        let t = digest_info(h, &digest, with_null);
        let k = em.len();
        if k < t.len() + 11 {
            return Check::Invalid("RSA modulus too small for the digest".into());
        }
        let mut expected = Vec::with_capacity(k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.resize(k - t.len() - 1, 0xff);
        expected.push(0x00);
        expected.extend_from_slice(&t);
        ok |= expected.as_slice().ct_eq(&em);
    }
    if bool::from(ok) {
        Check::Valid
    } else {
        Check::Invalid("signature does not verify".into())
    }
}

/// RSASSA-PSS-params (RFC 4055), defaults SHA-1 / MGF1-SHA-1 / salt 20.
struct PssParams {
    hash: HashAlg,
    mgf_hash: HashAlg,
}

impl PssParams {
    fn parse(params: Option<&Tlv<'_>>) -> Result<PssParams> {
        let mut out = PssParams {
            hash: HashAlg::Sha1,
            mgf_hash: HashAlg::Sha1,
        };
        let Some(p) = params else { return Ok(out) };
        if p.tag == tag::NULL {
            return Ok(out);
        }
        let mut r = p.expect(tag::SEQUENCE, "RSASSA-PSS-params")?.reader();
        while !r.is_empty() {
            let f = r.read_any()?;
            let inner = || f.reader().read_any();
            match f.tag {
                t if t == tag::context_constructed(0) => {
                    let alg = inner()?;
                    out.hash = HashAlg::from_oid(alg.reader().read(tag::OID, "hash")?.value)?;
                }
                t if t == tag::context_constructed(1) => {
                    let alg = inner()?;
                    let mut ar = alg.reader();
                    let mgf = ar.read(tag::OID, "mask generation function")?.value;
                    if mgf != oid::MGF1 {
                        return Err(crate::error::unsupported(format!(
                            "mask generation function {}",
                            oid::name(mgf)
                        )));
                    }
                    out.mgf_hash = match ar.read_any() {
                        Ok(h) => HashAlg::from_oid(h.reader().read(tag::OID, "MGF1 hash")?.value)?,
                        Err(_) => HashAlg::Sha1,
                    };
                }
                t if t == tag::context_constructed(3) && inner()?.small_uint()? != 1 => {
                    return Err(crate::error::unsupported("PSS trailer field other than 1"));
                }
                _ => {} // saltLength: any accepted, the salt is found from the encoding.
            }
        }
        Ok(out)
    }
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with the salt length found from the encoding.
fn rsa_pss_verify(cert: &Certificate, p: &PssParams, message: &[u8], sig: &[u8]) -> Check {
    let bad = || Check::Invalid("signature does not verify".into());
    let KeyKind::Rsa { bits } = cert.key_kind else {
        return bad();
    };
    let em_full = match rsa_open(cert, sig) {
        Ok(em) => em,
        Err(c) => return c,
    };
    let em_bits = bits.saturating_sub(1);
    let em_len = em_bits.div_ceil(8);
    if em_len == 0 || em_full.len() < em_len {
        return bad();
    }
    let (lead, em) = em_full.split_at(em_full.len() - em_len);
    if lead.iter().any(|b| *b != 0) {
        return bad();
    }
    let h_len = p.hash.output_len();
    if em_len < h_len + 2 || em.last() != Some(&0xbc) {
        return bad();
    }
    let db_len = em_len - h_len - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let Some(h) = rest.get(..h_len) else {
        return bad();
    };
    let unused_bits = 8 * em_len - em_bits;
    let top_mask: u8 = if unused_bits == 0 {
        0
    } else {
        0xffu8 << (8 - unused_bits)
    };
    if masked_db.first().is_some_and(|b| b & top_mask != 0) {
        return bad();
    }
    let mask = crate::keys::mgf1(p.mgf_hash, h, db_len);
    let mut db: Vec<u8> = masked_db.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
    if let Some(first) = db.first_mut() {
        *first &= !top_mask;
    }
    let Some(sep) = db.iter().position(|b| *b != 0) else {
        return bad();
    };
    if db.get(sep) != Some(&0x01) {
        return bad();
    }
    let salt = db.get(sep + 1..).unwrap_or_default();
    let m_hash = p.hash.digest(message);
    let mut hasher = p.hash.hasher();
    hasher.update(&[0u8; 8]);
    hasher.update(&m_hash);
    hasher.update(salt);
    let h2 = hasher.finish();
    if bool::from(h2.as_ref().ct_eq(h)) {
        Check::Valid
    } else {
        bad()
    }
}

#[cfg(test)]
mod tests;
