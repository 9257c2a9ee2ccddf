//! X.509 certificates as the engine needs them: identifiers, public key, usages, addresses.
//!
//! Parsing keeps the certificate's exact DER; fields are read with the lenient reader and
//! copied out, so a [`Certificate`] is a plain owned value.

use crate::asn1::{Reader, Tlv, der, parse_time, tag};
use crate::error::{Error, Result};
use crate::oid;

/// The kind of public key in a certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// RSA with the modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// EC on NIST P-256.
    P256,
    /// EC on NIST P-384.
    P384,
    /// EC on NIST P-521.
    P521,
    /// X25519 (key agreement only).
    X25519,
    /// Ed25519 (signatures only).
    Ed25519,
    /// Anything else, by OID.
    Other(String),
}

impl KeyKind {
    /// A short name for reports.
    pub fn label(&self) -> String {
        match self {
            KeyKind::Rsa { bits } => format!("rsa-{bits}"),
            KeyKind::P256 => "ec-p256".into(),
            KeyKind::P384 => "ec-p384".into(),
            KeyKind::P521 => "ec-p521".into(),
            KeyKind::X25519 => "x25519".into(),
            KeyKind::Ed25519 => "ed25519".into(),
            KeyKind::Other(o) => o.clone(),
        }
    }
}

/// Key usage bits (RFC 5280 §4.2.1.3), numbered from the most significant bit.
pub mod key_usage {
    /// digitalSignature.
    pub const DIGITAL_SIGNATURE: u16 = 1 << 0;
    /// nonRepudiation / contentCommitment.
    pub const NON_REPUDIATION: u16 = 1 << 1;
    /// keyEncipherment.
    pub const KEY_ENCIPHERMENT: u16 = 1 << 2;
    /// dataEncipherment.
    pub const DATA_ENCIPHERMENT: u16 = 1 << 3;
    /// keyAgreement.
    pub const KEY_AGREEMENT: u16 = 1 << 4;
    /// keyCertSign.
    pub const KEY_CERT_SIGN: u16 = 1 << 5;
    /// cRLSign.
    pub const CRL_SIGN: u16 = 1 << 6;
}

/// A parsed X.509 certificate.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    /// Serial number INTEGER content bytes, as encoded.
    pub serial: Vec<u8>,
    /// The issuer Name, DER as encoded.
    pub issuer: Vec<u8>,
    /// The subject Name, DER as encoded.
    pub subject: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// The public key algorithm OID content bytes.
    pub key_algorithm: Vec<u8>,
    /// The key algorithm parameters (e.g. the curve OID), DER, if present.
    pub key_parameters: Option<Vec<u8>>,
    /// The subjectPublicKey BIT STRING content (RSAPublicKey DER, or an EC point).
    pub public_key: Vec<u8>,
    /// Kind of key.
    pub key_kind: KeyKind,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// subjectKeyIdentifier extension.
    pub subject_key_id: Option<Vec<u8>>,
    /// keyUsage bits, if the extension is present.
    pub key_usage: Option<u16>,
    /// extKeyUsage OIDs (content bytes), if the extension is present.
    pub ext_key_usage: Option<Vec<Vec<u8>>>,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// rfc822Name SANs and emailAddress attributes of the subject, lowercased.
    pub emails: Vec<String>,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject_text())
            .field("serial", &hex(&self.serial))
            .field("key", &self.key_kind)
            .finish()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Certificate {}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    // One allocation, no formatter: this runs for every fingerprint a request computes.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}

impl Certificate {
    /// Parses one DER certificate.
    pub fn from_der(input: &[u8]) -> Result<Certificate> {
        let cert = Tlv::parse(input)?.expect(tag::SEQUENCE, "certificate")?;
        let mut c = cert.reader();
        let tbs = c.read(tag::SEQUENCE, "tbsCertificate")?;
        let mut t = tbs.reader();
        t.read_optional(tag::context_constructed(0))?;
        let serial = t.read(tag::INTEGER, "serialNumber")?.value.to_vec();
        t.read(tag::SEQUENCE, "signature algorithm")?;
        let issuer = t.read(tag::SEQUENCE, "issuer")?.raw.to_vec();
        let validity = t.read(tag::SEQUENCE, "validity")?;
        let mut v = validity.reader();
        let not_before = parse_time(&v.read_any()?)?;
        let not_after = parse_time(&v.read_any()?)?;
        let subject_tlv = t.read(tag::SEQUENCE, "subject")?;
        let subject = subject_tlv.raw.to_vec();
        let spki_tlv = t.read(tag::SEQUENCE, "subjectPublicKeyInfo")?;
        let (key_algorithm, key_parameters, public_key) = parse_spki(&spki_tlv)?;
        let key_kind = key_kind(&key_algorithm, key_parameters.as_deref(), &public_key);
        let mut out = Certificate {
            der: input.to_vec(),
            serial,
            issuer,
            subject,
            spki: spki_tlv.raw.to_vec(),
            key_algorithm,
            key_parameters,
            public_key,
            key_kind,
            not_before,
            not_after,
            subject_key_id: None,
            key_usage: None,
            ext_key_usage: None,
            is_ca: false,
            emails: Vec::new(),
            common_name: None,
        };
        name_attributes(&subject_tlv, &mut out)?;
        while !t.is_empty() {
            let field = t.read_any()?;
            if field.tag != tag::context_constructed(3) {
                continue;
            }
            let exts = field.reader().read(tag::SEQUENCE, "extensions")?;
            let mut er = exts.reader();
            while !er.is_empty() {
                let ext = er.read(tag::SEQUENCE, "extension")?;
                let mut x = ext.reader();
                let id = x.read(tag::OID, "extension id")?.value;
                let mut value = x.read_any()?;
                if value.tag == tag::BOOLEAN {
                    value = x.read_any()?;
                }
                let value = value.octets()?;
                extension(id, &value, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Parses PEM (one or more `CERTIFICATE` blocks) or a single DER certificate.
    pub fn parse_many(input: &[u8]) -> Result<Vec<Certificate>> {
        if looks_like_pem(input) {
            let blocks = pem::parse_many(input)
                .map_err(|e| Error::Key(format!("cannot read PEM certificates: {e}")))?;
            let certs: Vec<Certificate> = blocks
                .iter()
                .filter(|b| b.tag() == "CERTIFICATE" || b.tag() == "X509 CERTIFICATE")
                .map(|b| Certificate::from_der(b.contents()))
                .collect::<Result<_>>()?;
            if certs.is_empty() {
                return Err(Error::Key("no CERTIFICATE block in PEM input".into()));
            }
            Ok(certs)
        } else {
            Ok(vec![Certificate::from_der(input)?])
        }
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text of the certificate.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone())).replace("\r\n", "\n")
    }

    /// `IssuerAndSerialNumber` DER (RFC 5652 §10.2.4).
    pub fn issuer_and_serial(&self) -> Vec<u8> {
        der::seq(&[&self.issuer, &der::tlv(tag::INTEGER, &self.serial)])
    }

    /// True if this certificate is the one an IssuerAndSerialNumber element names.
    pub fn matches_issuer_serial(&self, ias: &Tlv<'_>) -> bool {
        let mut r = ias.reader();
        let Ok(issuer) = r.read(tag::SEQUENCE, "issuer") else {
            return false;
        };
        let Ok(serial) = r.read(tag::INTEGER, "serial") else {
            return false;
        };
        issuer.raw == self.issuer.as_slice() && serial.value == self.serial.as_slice()
            || (names_equal(issuer.raw, &self.issuer) && serial.value == self.serial.as_slice())
    }

    /// True if the certificate carries this subject key identifier, or if the identifier is
    /// the SHA-1 of its public key (the RFC 5280 method 1, used when the extension is absent).
    pub fn matches_key_id(&self, id: &[u8]) -> bool {
        if let Some(ski) = &self.subject_key_id
            && ski.as_slice() == id
        {
            return true;
        }
        let sha1 = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            &self.public_key,
        );
        sha1.as_ref() == id
    }

    /// The subject key identifier to use in our own output: the extension, or SHA-1 of the key.
    pub fn key_id(&self) -> Vec<u8> {
        self.subject_key_id.clone().unwrap_or_else(|| {
            aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                &self.public_key,
            )
            .as_ref()
            .to_vec()
        })
    }

    /// True if the certificate names the address (case-insensitive).
    pub fn has_email(&self, address: &str) -> bool {
        let a = address.trim().to_ascii_lowercase();
        self.emails.contains(&a)
    }

    /// The subject as readable text (`CN=..., O=...`).
    pub fn subject_text(&self) -> String {
        name_text(&self.subject)
    }

    /// The issuer as readable text.
    pub fn issuer_text(&self) -> String {
        name_text(&self.issuer)
    }

    /// True if the certificate is self-issued.
    pub fn is_self_issued(&self) -> bool {
        names_equal(&self.issuer, &self.subject)
    }
}

/// Splits a SubjectPublicKeyInfo into algorithm OID, parameters and key bits.
/// A public key's algorithm OID, its parameters (DER) and its key bits.
pub(crate) type SpkiParts = (Vec<u8>, Option<Vec<u8>>, Vec<u8>);

pub(crate) fn parse_spki(spki: &Tlv<'_>) -> Result<SpkiParts> {
    let mut s = spki.reader();
    let alg = s.read(tag::SEQUENCE, "key algorithm")?;
    let mut a = alg.reader();
    let alg_oid = a.read(tag::OID, "key algorithm id")?.value.to_vec();
    let params = if a.is_empty() {
        None
    } else {
        Some(a.read_any()?.raw.to_vec())
    };
    let bits = s
        .read(tag::BIT_STRING, "subjectPublicKey")?
        .bit_string()?
        .to_vec();
    Ok((alg_oid, params, bits))
}

/// The kind of a key from its algorithm, parameters and key bits.
pub(crate) fn key_kind(alg: &[u8], params: Option<&[u8]>, key: &[u8]) -> KeyKind {
    if alg == oid::RSA_ENCRYPTION || alg == oid::RSASSA_PSS || alg == oid::RSAES_OAEP {
        let bits = Tlv::parse(key)
            .ok()
            .and_then(|k| k.reader().read(tag::INTEGER, "n").ok())
            .and_then(|n| {
                n.uint_bytes()
                    .ok()
                    // A zero modulus has no bytes: 0 bits, not an underflow.
                    .map(|m| {
                        (m.len() * 8)
                            .saturating_sub(m.first().map_or(0, |b| b.leading_zeros() as usize))
                    })
            })
            .unwrap_or(0);
        return KeyKind::Rsa { bits };
    }
    if alg == oid::EC_PUBLIC_KEY {
        let curve = params
            .and_then(|p| Tlv::parse(p).ok())
            .map(|t| t.value.to_vec());
        return match curve.as_deref() {
            Some(c) if c == oid::P256 => KeyKind::P256,
            Some(c) if c == oid::P384 => KeyKind::P384,
            Some(c) if c == oid::P521 => KeyKind::P521,
            _ => KeyKind::Other("ec-unknown-curve".into()),
        };
    }
    if alg == oid::X25519 {
        return KeyKind::X25519;
    }
    if alg == oid::ED25519 {
        return KeyKind::Ed25519;
    }
    KeyKind::Other(oid::name(alg))
}

fn extension(id: &[u8], value: &[u8], out: &mut Certificate) -> Result<()> {
    let v = Tlv::parse(value)?;
    if id == oid::EXT_SUBJECT_KEY_ID {
        out.subject_key_id = Some(v.octets()?.into_owned());
    } else if id == oid::EXT_KEY_USAGE {
        let bits = v.bit_string()?;
        let b0 = u16::from(bits.first().copied().unwrap_or(0));
        let b1 = u16::from(bits.get(1).copied().unwrap_or(0));
        // Bit 0 is the MSB of the first octet; reverse into our LSB-first numbering.
        let raw = (b0 << 8) | b1;
        let mut ku = 0u16;
        for i in 0..9 {
            if raw & (0x8000 >> i) != 0 {
                ku |= 1 << i;
            }
        }
        out.key_usage = Some(ku);
    } else if id == oid::EXT_EXT_KEY_USAGE {
        let mut r = v.reader();
        let mut list = Vec::new();
        while !r.is_empty() {
            list.push(r.read(tag::OID, "extKeyUsage")?.value.to_vec());
        }
        out.ext_key_usage = Some(list);
    } else if id == oid::EXT_BASIC_CONSTRAINTS {
        let mut r = v.reader();
        if let Some(b) = r.read_optional(tag::BOOLEAN)? {
            out.is_ca = b.value.first().is_some_and(|x| *x != 0);
        }
    } else if id == oid::EXT_SUBJECT_ALT_NAME {
        let mut r = v.reader();
        while !r.is_empty() {
            let gn = r.read_any()?;
            if gn.tag == tag::context(1)
                && let Ok(s) = std::str::from_utf8(gn.value)
            {
                let s = s.trim().to_ascii_lowercase();
                if !out.emails.contains(&s) {
                    out.emails.push(s);
                }
            }
        }
    }
    Ok(())
}

fn name_attributes(name: &Tlv<'_>, out: &mut Certificate) -> Result<()> {
    let mut r = name.reader();
    while !r.is_empty() {
        let rdn = r.read(tag::SET, "RDN")?;
        let mut rr = rdn.reader();
        while !rr.is_empty() {
            let atv = rr.read(tag::SEQUENCE, "attribute")?;
            let mut a = atv.reader();
            let id = a.read(tag::OID, "attribute type")?.value;
            let val = a.read_any()?;
            let text = String::from_utf8_lossy(val.value).into_owned();
            if id == oid::EMAIL_ADDRESS {
                let e = text.trim().to_ascii_lowercase();
                if !out.emails.contains(&e) {
                    out.emails.push(e);
                }
            } else if id == oid::COMMON_NAME && out.common_name.is_none() {
                out.common_name = Some(text);
            }
        }
    }
    Ok(())
}

fn short_attr(id: &[u8]) -> String {
    const KNOWN: &[(&str, &str)] = &[
        ("2.5.4.3", "CN"),
        ("2.5.4.6", "C"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("1.2.840.113549.1.9.1", "emailAddress"),
        ("2.5.4.5", "serialNumber"),
    ];
    let d = oid::dotted(id);
    KNOWN
        .iter()
        .find(|(o, _)| *o == d)
        .map_or(d, |(_, n)| (*n).to_string())
}

/// A Name as `CN=x, O=y` text (RFC 4514 order is reversed; we keep encoded order).
pub fn name_text(name_der: &[u8]) -> String {
    let Ok(name) = Tlv::parse(name_der) else {
        return "<bad name>".into();
    };
    let mut parts = Vec::new();
    let mut r = name.reader();
    while let Ok(rdn) = r.read_any() {
        let mut rr = rdn.reader();
        while let Ok(atv) = rr.read_any() {
            let mut a = atv.reader();
            let (Ok(id), Ok(val)) = (a.read_any(), a.read_any()) else {
                continue;
            };
            parts.push(format!(
                "{}={}",
                short_attr(id.value),
                String::from_utf8_lossy(val.value)
            ));
        }
    }
    parts.join(", ")
}

/// Compares two Names: byte-equal, or equal after case-folding string values (RFC 5280 §7.1,
/// simplified: case-insensitive and whitespace-trimmed comparison of each attribute value).
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    fn norm(n: &[u8]) -> Option<Vec<(Vec<u8>, String)>> {
        let t = Tlv::parse(n).ok()?;
        let mut out = Vec::new();
        let mut r = t.reader();
        while !r.is_empty() {
            let rdn = r.read_any().ok()?;
            let mut rr = rdn.reader();
            while !rr.is_empty() {
                let atv = rr.read_any().ok()?;
                let mut a = atv.reader();
                let id = a.read_any().ok()?.value.to_vec();
                let v = a.read_any().ok()?;
                let s = String::from_utf8_lossy(v.value);
                let s = s
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                out.push((id, s));
            }
        }
        Some(out)
    }
    matches!((norm(a), norm(b)), (Some(x), Some(y)) if x == y)
}

/// True if the input holds a PEM block (looked for near the start).
pub(crate) fn looks_like_pem(input: &[u8]) -> bool {
    input.windows(11).take(4096).any(|w| w == b"-----BEGIN ")
}

/// Reads a Reader's next element as a certificate if it is one (for CertificateSet entries).
pub(crate) fn certificates_in(set: &Tlv<'_>) -> Vec<Certificate> {
    let mut out = Vec::new();
    let mut r: Reader<'_> = set.reader();
    while let Ok(c) = r.read_any() {
        if c.tag == tag::SEQUENCE
            && let Ok(cert) = Certificate::from_der(c.raw)
        {
            out.push(cert);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `cms` fuzz target: an RSA key whose modulus is 0 has no modulus bytes.
    #[test]
    fn rsa_key_size_of_degenerate_moduli() {
        let zero = [0x30, 6, 2, 1, 0, 2, 1, 3];
        assert!(matches!(
            key_kind(oid::RSA_ENCRYPTION, None, &zero),
            KeyKind::Rsa { bits: 0 }
        ));
        let one_byte = [0x30, 7, 2, 2, 0, 0x80, 2, 1, 3];
        assert!(matches!(
            key_kind(oid::RSA_ENCRYPTION, None, &one_byte),
            KeyKind::Rsa { bits: 8 }
        ));
        let small = [0x30, 6, 2, 1, 0x05, 2, 1, 3];
        assert!(matches!(
            key_kind(oid::RSA_ENCRYPTION, None, &small),
            KeyKind::Rsa { bits: 3 }
        ));
    }
}
