//! Private keys as capabilities, and loading them from PEM, DER and PKCS#12.
//!
//! The engine never sees key bytes: it asks a [`PrivateKey`] to open a key-transport value,
//! to compute an ECDH shared secret, or to sign. [`SoftwareKey`] implements that over a
//! PKCS#8 key in memory (zeroed on drop); the vault and hardware keys implement the same trait.

use aws_lc_rs::{agreement, rand::SystemRandom, signature};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::asn1::{Tlv, der, tag};
use crate::cert::{Certificate, KeyKind, key_kind};
use crate::crypto::{HashAlg, hmac_sha256};
use crate::error::{Error, Result};
use crate::oid;
use crate::rsa_raw::RsaPrivate;

/// RSA-OAEP parameters (RFC 4055).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OaepParams {
    /// The label hash.
    pub hash: HashAlg,
    /// The MGF1 hash (may differ from `hash`, e.g. Java's SHA-256 + MGF1-SHA-1).
    pub mgf1: HashAlg,
}

/// How to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignScheme {
    /// RSASSA-PKCS1-v1_5 with the hash.
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with the hash, MGF1 with the same hash, salt length = hash length.
    RsaPss(HashAlg),
    /// ECDSA with the hash, DER signature.
    Ecdsa(HashAlg),
    /// Ed25519 (pure).
    Ed25519,
}

/// A private key the engine may use, without seeing its bytes.
pub trait PrivateKey: Send + Sync {
    /// The certificate of this key.
    fn certificate(&self) -> &Certificate;

    /// Intermediate CA certificates to include when signing (leaf excluded).
    fn chain(&self) -> &[Certificate] {
        &[]
    }

    /// Opens an RSA PKCS#1 v1.5 key-transport value, returning a key of exactly `key_len`
    /// bytes. With implicit rejection: on bad padding (or a wrong key) the result is a
    /// deterministic pseudo-random key, indistinguishable to the caller from success.
    fn rsa_pkcs1_decrypt(&self, encrypted_key: &[u8], key_len: usize)
    -> Result<Zeroizing<Vec<u8>>>;

    /// Opens an RSA-OAEP key-transport value; failures also give a pseudo-random key.
    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>>;

    /// Computes the raw ECDH (or X25519) shared secret with a peer's public key.
    fn ecdh(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// Signs `message` (the scheme hashes it).
    fn sign(&self, scheme: SignScheme, message: &[u8]) -> Result<Vec<u8>>;
}

enum Inner {
    Rsa {
        raw: RsaPrivate,
        /// `None` for a legacy key under 2048 bits: it decrypts old mail, it never signs.
        signer: Option<Box<signature::RsaKeyPair>>,
    },
    Ec {
        agree: agreement::PrivateKey,
        signer: Box<signature::EcdsaKeyPair>,
        hash: HashAlg,
    },
    X25519(agreement::PrivateKey),
    Ed25519(Box<signature::Ed25519KeyPair>),
}

/// A private key held in this process's memory (PKCS#8, zeroed on drop).
pub struct SoftwareKey {
    cert: Certificate,
    chain: Vec<Certificate>,
    inner: Inner,
    /// Secret for implicit rejection, derived from the key.
    rejection_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// A key from PKCS#8 DER and its certificate; checks that they belong together.
    pub fn new(pkcs8: &[u8], cert: Certificate, chain: Vec<Certificate>) -> Result<SoftwareKey> {
        let info =
            Tlv::parse(pkcs8).map_err(|_| Error::Key("private key is not valid DER".into()))?;
        let mut r = info.reader();
        r.read(tag::INTEGER, "version")?;
        let alg = r.read(tag::SEQUENCE, "algorithm")?;
        let mut a = alg.reader();
        let alg_oid = a.read(tag::OID, "algorithm")?.value.to_vec();
        let params = if a.is_empty() {
            None
        } else {
            Some(a.read_any()?.raw.to_vec())
        };
        let priv_octets = Zeroizing::new(r.read_any()?.octets()?.into_owned());
        let kind = key_kind(&alg_oid, params.as_deref(), &[]);
        let rejection_key = Zeroizing::new(hmac_sha256(b"sealgate implicit rejection", &[pkcs8]));
        let bad = |what: &str| {
            Error::Key(format!(
                "{what}: the private key is invalid or not supported"
            ))
        };
        let inner = match kind {
            KeyKind::Rsa { .. } => {
                let raw = RsaPrivate::from_pkcs1(&priv_octets)?;
                // aws-lc-rs refuses RSA keys under 2048 bits for signing; such a legacy key
                // is still loaded so that mail encrypted to it years ago can be read.
                let signer = match signature::RsaKeyPair::from_pkcs8(pkcs8) {
                    Ok(s) => Some(Box::new(s)),
                    Err(_) if raw.size() < LEGACY_RSA_BYTES => None,
                    Err(_) => return Err(bad("RSA")),
                };
                Inner::Rsa { raw, signer }
            }
            KeyKind::P256 | KeyKind::P384 | KeyKind::P521 => {
                let (ag, sg, hash) = match kind {
                    KeyKind::P256 => (
                        &agreement::ECDH_P256,
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        HashAlg::Sha256,
                    ),
                    KeyKind::P384 => (
                        &agreement::ECDH_P384,
                        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                        HashAlg::Sha384,
                    ),
                    _ => (
                        &agreement::ECDH_P521,
                        &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                        HashAlg::Sha512,
                    ),
                };
                let agree = agreement::PrivateKey::from_private_key_der(ag, pkcs8)
                    .map_err(|_| bad("EC"))?;
                let signer = signature::EcdsaKeyPair::from_private_key_der(sg, pkcs8)
                    .map_err(|_| bad("EC"))?;
                Inner::Ec {
                    agree,
                    signer: Box::new(signer),
                    hash,
                }
            }
            KeyKind::X25519 => {
                let raw = Tlv::parse(&priv_octets)
                    .map_err(|_| bad("X25519"))?
                    .octets()?
                    .into_owned();
                let raw = Zeroizing::new(raw);
                Inner::X25519(
                    agreement::PrivateKey::from_private_key(&agreement::X25519, &raw)
                        .map_err(|_| bad("X25519"))?,
                )
            }
            KeyKind::Ed25519 => Inner::Ed25519(Box::new(
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                    .map_err(|_| bad("Ed25519"))?,
            )),
            KeyKind::Other(o) => {
                return Err(Error::Key(format!("unsupported private key type {o}")));
            }
        };
        let key = SoftwareKey {
            cert,
            chain,
            inner,
            rejection_key,
        };
        key.check_matches_certificate()?;
        Ok(key)
    }

    /// Loads a private key (PEM or DER; PKCS#8, PKCS#1 or SEC1) and a certificate (PEM or DER;
    /// further certificates in the file become the chain).
    pub fn from_key_and_cert(key: &[u8], cert: &[u8]) -> Result<SoftwareKey> {
        let pkcs8 = load_private_key(key)?;
        let mut certs = Certificate::parse_many(cert)?;
        let leaf = certs.remove(0);
        SoftwareKey::new(&pkcs8, leaf, certs)
    }

    /// Loads every key of a PKCS#12 file (OpenSSL 3 default or `-legacy`).
    pub fn from_pkcs12(data: &[u8], password: &str) -> Result<Vec<SoftwareKey>> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            data,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => {
                Error::Key("PKCS#12: wrong password (or corrupt file)".into())
            }
            other => Error::Key(format!("PKCS#12: cannot read the file: {other}")),
        })?;
        let mut out = Vec::new();
        for (_, entry) in store.entries() {
            if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
                let mut certs: Vec<Certificate> = chain
                    .certs()
                    .iter()
                    .map(|c| Certificate::from_der(c.as_der()))
                    .collect::<Result<_>>()?;
                if certs.is_empty() {
                    return Err(Error::Key(
                        "PKCS#12: a private key has no certificate".into(),
                    ));
                }
                let leaf = certs.remove(0);
                let pkcs8 = Zeroizing::new(chain.key().as_der().to_vec());
                out.push(SoftwareKey::new(&pkcs8, leaf, certs)?);
            }
        }
        if out.is_empty() {
            return Err(Error::Key(
                "PKCS#12: no private key with a certificate in the file".into(),
            ));
        }
        Ok(out)
    }

    fn check_matches_certificate(&self) -> Result<()> {
        let public: Vec<u8> = match &self.inner {
            Inner::Rsa {
                signer: Some(signer),
                ..
            } => {
                use aws_lc_rs::signature::KeyPair;
                signer.public_key().as_ref().to_vec()
            }
            Inner::Rsa { raw, signer: None } => return legacy_rsa_pairwise(raw, &self.cert),
            Inner::Ec { signer, .. } => {
                use aws_lc_rs::signature::KeyPair;
                signer.public_key().as_ref().to_vec()
            }
            Inner::X25519(k) => k
                .compute_public_key()
                .map_err(|_| Error::Key("X25519".into()))?
                .as_ref()
                .to_vec(),
            Inner::Ed25519(k) => {
                use aws_lc_rs::signature::KeyPair;
                k.public_key().as_ref().to_vec()
            }
        };
        let cert_key = &self.cert.public_key;
        let same = match &self.inner {
            // aws-lc-rs gives the RSAPublicKey DER, the same bytes as the SPKI BIT STRING.
            Inner::Rsa { .. } => rsa_modulus(&public) == rsa_modulus(cert_key),
            _ => public == *cert_key,
        };
        if !same {
            return Err(Error::Key(
                "the private key does not match the certificate".into(),
            ));
        }
        Ok(())
    }
}

/// RSA keys under this many bytes (2048 bits) are legacy: loaded to decrypt, never to sign,
/// and never encrypted to.
pub(crate) const LEGACY_RSA_BYTES: usize = 256;

/// A legacy RSA key is not validated by aws-lc-rs's key pair: check it against the
/// certificate with a pairwise round trip through the certificate's public key.
fn legacy_rsa_pairwise(raw: &RsaPrivate, cert: &Certificate) -> Result<()> {
    let mismatch = || Error::Key("the private key does not match the certificate".into());
    let public = crate::rsa_raw::RsaPublic::from_pkcs1(&cert.public_key).map_err(|_| mismatch())?;
    if public.size() != raw.size() {
        return Err(mismatch());
    }
    // A value below any modulus of this length: a leading zero byte.
    let mut x: Vec<u8> = (0..raw.size()).map(|i| (i as u8) ^ 0x5a).collect();
    if let Some(first) = x.first_mut() {
        *first = 0;
    }
    let c = public.raw_public(&x).map_err(|_| mismatch())?;
    let back = raw.raw_private(&c).map_err(|_| mismatch())?;
    if back.as_slice() != x.as_slice() {
        return Err(mismatch());
    }
    Ok(())
}

fn rsa_modulus(rsa_public_key: &[u8]) -> Option<Vec<u8>> {
    let t = Tlv::parse(rsa_public_key).ok()?;
    Some(
        t.reader()
            .read(tag::INTEGER, "n")
            .ok()?
            .uint_bytes()
            .ok()?
            .to_vec(),
    )
}

impl PrivateKey for SoftwareKey {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    fn rsa_pkcs1_decrypt(
        &self,
        encrypted_key: &[u8],
        key_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Inner::Rsa { raw, .. } = &self.inner else {
            return Err(Error::Decrypt);
        };
        let em = raw.raw_private(encrypted_key)?;
        let synthetic = self.synthetic_key(encrypted_key, key_len);
        Ok(pkcs1_unpad_implicit(&em, key_len, &synthetic))
    }

    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let Inner::Rsa { raw, .. } = &self.inner else {
            return Err(Error::Decrypt);
        };
        let em = raw.raw_private(encrypted_key)?;
        let synthetic = self.synthetic_key(encrypted_key, key_len);
        Ok(match oaep_unpad(&em, params, label) {
            Some(k) if k.len() == key_len => k,
            _ => synthetic,
        })
    }

    fn ecdh(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (key, alg) = match &self.inner {
            Inner::Ec { agree, .. } => (agree, agree.algorithm()),
            Inner::X25519(k) => (k, &agreement::X25519),
            _ => return Err(Error::Decrypt),
        };
        let peer = agreement::UnparsedPublicKey::new(alg, peer_public);
        agreement::agree(key, peer, Error::Decrypt, |z| {
            Ok(Zeroizing::new(z.to_vec()))
        })
    }

    fn sign(&self, scheme: SignScheme, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        let fail = |_| Error::Key("signing failed".into());
        match (&self.inner, scheme) {
            (Inner::Rsa { signer: None, .. }, _) => Err(Error::Key(
                "RSA keys under 2048 bits only decrypt old mail; they do not sign".into(),
            )),
            (
                Inner::Rsa {
                    signer: Some(signer),
                    ..
                },
                SignScheme::RsaPkcs1(h),
            ) => {
                let alg: &'static dyn signature::RsaEncoding = match h {
                    HashAlg::Sha256 => &signature::RSA_PKCS1_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PKCS1_SHA384,
                    HashAlg::Sha512 => &signature::RSA_PKCS1_SHA512,
                    _ => {
                        return Err(Error::Usage(format!(
                            "RSA signing with {h:?} is not offered"
                        )));
                    }
                };
                let mut sig = vec![0u8; signer.public_modulus_len()];
                signer.sign(alg, &rng, message, &mut sig).map_err(fail)?;
                Ok(sig)
            }
            (
                Inner::Rsa {
                    signer: Some(signer),
                    ..
                },
                SignScheme::RsaPss(h),
            ) => {
                let alg: &'static dyn signature::RsaEncoding = match h {
                    HashAlg::Sha256 => &signature::RSA_PSS_SHA256,
                    HashAlg::Sha384 => &signature::RSA_PSS_SHA384,
                    HashAlg::Sha512 => &signature::RSA_PSS_SHA512,
                    _ => return Err(Error::Usage(format!("RSA-PSS with {h:?} is not offered"))),
                };
                let mut sig = vec![0u8; signer.public_modulus_len()];
                signer.sign(alg, &rng, message, &mut sig).map_err(fail)?;
                Ok(sig)
            }
            (Inner::Ec { signer, hash, .. }, SignScheme::Ecdsa(h)) if *hash == h => {
                Ok(signer.sign(&rng, message).map_err(fail)?.as_ref().to_vec())
            }
            (Inner::Ed25519(k), SignScheme::Ed25519) => Ok(k.sign(message).as_ref().to_vec()),
            _ => Err(Error::Usage(format!(
                "this key cannot sign with {scheme:?}"
            ))),
        }
    }
}

impl SoftwareKey {
    /// The default signing scheme for this key.
    pub fn default_scheme(&self) -> SignScheme {
        default_scheme(&self.cert.key_kind)
    }

    fn synthetic_key(&self, ciphertext: &[u8], key_len: usize) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(key_len + 32));
        let mut i: u32 = 0;
        while out.len() < key_len {
            out.extend_from_slice(&hmac_sha256(
                &self.rejection_key,
                &[&i.to_be_bytes(), ciphertext],
            ));
            i += 1;
        }
        out.truncate(key_len);
        out
    }
}

/// The signing scheme we use by default for a key kind.
pub fn default_scheme(kind: &KeyKind) -> SignScheme {
    match kind {
        KeyKind::P384 => SignScheme::Ecdsa(HashAlg::Sha384),
        KeyKind::P521 => SignScheme::Ecdsa(HashAlg::Sha512),
        KeyKind::P256 => SignScheme::Ecdsa(HashAlg::Sha256),
        KeyKind::Ed25519 => SignScheme::Ed25519,
        _ => SignScheme::RsaPkcs1(HashAlg::Sha256),
    }
}

/// Constant-time PKCS#1 v1.5 type 2 unpadding for a message of known length `key_len`, with
/// implicit rejection: returns `synthetic` unless `em` is `00 02 PS(≥8 non-zero) 00 M` with
/// `|M| = key_len`. No branch or memory access depends on the padding's validity.
pub(crate) fn pkcs1_unpad_implicit(
    em: &[u8],
    key_len: usize,
    synthetic: &[u8],
) -> Zeroizing<Vec<u8>> {
    let k = em.len();
    let mut out = Zeroizing::new(vec![0u8; key_len]);
    if k < key_len + 11 || synthetic.len() != key_len {
        out.copy_from_slice(&synthetic[..key_len.min(synthetic.len())]);
        return out;
    }
    let sep = k - key_len - 1;
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2) & em[sep].ct_eq(&0);
    for b in &em[2..sep] {
        good &= !b.ct_eq(&0);
    }
    for i in 0..key_len {
        out[i] = u8::conditional_select(&synthetic[i], &em[sep + 1 + i], good);
    }
    out
}

/// MGF1 (RFC 8017 §B.2.1), shared by OAEP decoding and PSS verification.
pub(crate) fn mgf1(hash: HashAlg, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + hash.output_len());
    let mut c: u32 = 0;
    while out.len() < len {
        let mut h = hash.hasher();
        h.update(seed);
        h.update(&c.to_be_bytes());
        out.extend_from_slice(h.finish().as_ref());
        c += 1;
    }
    out.truncate(len);
    out
}

/// EME-OAEP decoding (RFC 8017 §7.1.2). Returns None on any failure; the caller substitutes a
/// synthetic key, so the reason is never visible.
pub(crate) fn oaep_unpad(em: &[u8], p: OaepParams, label: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let hlen = p.hash.output_len();
    let k = em.len();
    if k < 2 * hlen + 2 {
        return None;
    }
    let (masked_seed, masked_db) = em[1..].split_at(hlen);
    let seed_mask = mgf1(p.mgf1, masked_db, hlen);
    let seed: Vec<u8> = masked_seed
        .iter()
        .zip(&seed_mask)
        .map(|(a, b)| a ^ b)
        .collect();
    let db_mask = mgf1(p.mgf1, &seed, k - hlen - 1);
    let db: Zeroizing<Vec<u8>> =
        Zeroizing::new(masked_db.iter().zip(&db_mask).map(|(a, b)| a ^ b).collect());
    let lhash = p.hash.digest(label);
    let mut good = em[0].ct_eq(&0) & db[..hlen].ct_eq(&lhash);
    // Find the 0x01 separator in constant time.
    let mut found = subtle::Choice::from(0);
    let mut index: u32 = 0;
    for (i, b) in db[hlen..].iter().enumerate() {
        let is_one = b.ct_eq(&1);
        let is_zero = b.ct_eq(&0);
        let first = is_one & !found;
        index.conditional_assign(&(i as u32), first);
        found |= is_one;
        // Before the separator only zeros are allowed.
        good &= found | is_zero;
    }
    good &= found;
    if !bool::from(good) {
        return None;
    }
    let start = hlen + index as usize + 1;
    Some(Zeroizing::new(db[start..].to_vec()))
}

/// Loads a private key from PEM or DER (PKCS#8, PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE
/// KEY`) and returns it as PKCS#8 DER.
pub fn load_private_key(input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let der_bytes: Zeroizing<Vec<u8>> = if crate::cert::looks_like_pem(input) {
        let blocks =
            pem::parse_many(input).map_err(|e| Error::Key(format!("cannot read PEM key: {e}")))?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| Error::Key("no PRIVATE KEY block in the PEM file".into()))?;
        if block.tag() == "ENCRYPTED PRIVATE KEY" {
            return Err(Error::Key(
                "encrypted PEM keys are not supported: use a PKCS#12 file".into(),
            ));
        }
        Zeroizing::new(block.contents().to_vec())
    } else {
        Zeroizing::new(input.to_vec())
    };
    to_pkcs8(&der_bytes)
}

/// Turns PKCS#8, PKCS#1 or SEC1 DER into PKCS#8 DER.
fn to_pkcs8(d: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let bad = || Error::Key("the private key is not PKCS#8, PKCS#1 or SEC1 DER".into());
    let t = Tlv::parse(d).map_err(|_| bad())?;
    if t.tag != tag::SEQUENCE {
        return Err(bad());
    }
    let mut r = t.reader();
    let version = r
        .read(tag::INTEGER, "version")
        .map_err(|_| bad())?
        .small_uint()
        .map_err(|_| bad())?;
    let second = r.read_any().map_err(|_| bad())?;
    match (version, second.tag) {
        // PKCS#8: version, AlgorithmIdentifier, OCTET STRING.
        (0 | 1, tag::SEQUENCE) => Ok(Zeroizing::new(d.to_vec())),
        // PKCS#1: version 0 then INTEGER n.
        (0, tag::INTEGER) => {
            let alg = der::algorithm(oid::RSA_ENCRYPTION, Some(&der::null()));
            Ok(Zeroizing::new(der::seq(&[
                &der::uint(0),
                &alg,
                &der::octet_string(d),
            ])))
        }
        // SEC1: version 1, OCTET STRING key, [0] curve.
        (1, tag::OCTET_STRING) => {
            let mut curve = None;
            while !r.is_empty() {
                let f = r.read_any().map_err(|_| bad())?;
                if f.tag == tag::context_constructed(0) {
                    curve = Some(f.value.to_vec());
                }
            }
            let curve = curve.ok_or_else(|| Error::Key("SEC1 key without its curve".into()))?;
            let alg = der::seq(&[&der::oid(oid::EC_PUBLIC_KEY), &curve]);
            Ok(Zeroizing::new(der::seq(&[
                &der::uint(0),
                &alg,
                &der::octet_string(d),
            ])))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn implicit_rejection_unpad() {
        let synthetic = vec![9u8; 16];
        let mut em = vec![0u8, 2];
        em.extend(std::iter::repeat_n(0x55, 256 - 2 - 17));
        em.push(0);
        em.extend(std::iter::repeat_n(7, 16));
        assert_eq!(&*pkcs1_unpad_implicit(&em, 16, &synthetic), &[7u8; 16]);
        let mut bad = em.clone();
        bad[1] = 1;
        assert_eq!(
            &*pkcs1_unpad_implicit(&bad, 16, &synthetic),
            synthetic.as_slice()
        );
        let mut bad = em.clone();
        bad[5] = 0;
        assert_eq!(
            &*pkcs1_unpad_implicit(&bad, 16, &synthetic),
            synthetic.as_slice()
        );
        // A different key length than expected is also rejected.
        assert_eq!(&*pkcs1_unpad_implicit(&em, 24, &[1u8; 24]), &[1u8; 24]);
    }
}
