//! EnvelopedData (RFC 5652 §6) and AuthEnvelopedData (RFC 5083): encrypt and decrypt.
//!
//! Key management: RSA key transport (PKCS#1 v1.5 with implicit rejection, OAEP), ECDH-ES
//! key agreement on P-256/P-384/P-521 with the X9.63 KDF (RFC 5753), and X25519 with HKDF
//! (RFC 8418), each with AES key wrap. Content: AES-CBC, 3DES-CBC (decrypt only), AES-GCM and
//! ChaCha20-Poly1305.

use aws_lc_rs::{agreement, rand::SystemRandom, rsa as awsrsa};
use zeroize::Zeroizing;

use crate::Limits;
use crate::asn1::{Reader, Tlv, der, tag};
use crate::cert::{Certificate, KeyKind};
use crate::crypto::{CipherChoice, ContentCipher, HashAlg, WrapAlg, hkdf, random, x963_kdf};
use crate::error::{Error, Result, malformed, unsupported};
use crate::keys::{OaepParams, PrivateKey};
use crate::oid;

/// How a recipient's content-encryption key is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyManagement {
    /// RSA PKCS#1 v1.5 key transport (the default every client reads).
    RsaPkcs1,
    /// RSA-OAEP key transport with this hash (MGF1 with the same hash).
    RsaOaep(HashAlg),
    /// ECDH-ES with the X9.63 KDF using this hash, then AES key wrap.
    Ecdh(HashAlg),
    /// X25519 with HKDF using this hash, then AES key wrap (RFC 8418).
    X25519Hkdf(HashAlg),
}

impl KeyManagement {
    /// A readable name for reports.
    pub fn label(&self) -> String {
        match self {
            KeyManagement::RsaPkcs1 => "rsa-pkcs1v15".into(),
            KeyManagement::RsaOaep(h) => format!("rsa-oaep-{}", h.micalg()),
            KeyManagement::Ecdh(h) => format!("ecdh-es-x963-{}", h.micalg()),
            KeyManagement::X25519Hkdf(h) => format!("x25519-hkdf-{}", h.micalg()),
        }
    }
}

/// RSA recipients under this size are refused: legacy keys are kept to read old mail only.
pub const MIN_RSA_RECIPIENT_BITS: usize = 2048;

/// One recipient of a message we encrypt.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The recipient's certificate.
    pub cert: Certificate,
    /// How to protect the content key for this recipient.
    pub key_management: KeyManagement,
    /// Identify the recipient by subject key identifier instead of issuer and serial.
    pub by_key_id: bool,
}

impl Recipient {
    /// A recipient with the defaults every tested client decrypts: PKCS#1 v1.5 for RSA,
    /// ECDH with the SHA-256 X9.63 KDF for EC keys.
    pub fn new(cert: Certificate) -> Result<Recipient> {
        let key_management = match cert.key_kind {
            KeyKind::Rsa { bits } if bits < MIN_RSA_RECIPIENT_BITS => {
                return Err(Error::Usage(format!(
                    "refusing to encrypt to a {bits}-bit RSA key ({}): RSA keys under {MIN_RSA_RECIPIENT_BITS} bits only decrypt old mail",
                    cert.subject_text()
                )));
            }
            KeyKind::Rsa { .. } => KeyManagement::RsaPkcs1,
            KeyKind::P256 | KeyKind::P384 | KeyKind::P521 => KeyManagement::Ecdh(HashAlg::Sha256),
            KeyKind::X25519 => KeyManagement::X25519Hkdf(HashAlg::Sha256),
            ref other => {
                return Err(Error::Usage(format!(
                    "cannot encrypt to a {} key ({})",
                    other.label(),
                    cert.subject_text()
                )));
            }
        };
        Ok(Recipient {
            cert,
            key_management,
            by_key_id: false,
        })
    }
}

impl Recipient {
    /// A recipient whose S/MIME capabilities are known (from a signature we have seen, or
    /// policy): RSA-OAEP with SHA-256 when the owner advertised `rsaes-oaep`, else the
    /// defaults of [`Recipient::new`].
    pub fn with_capabilities(cert: Certificate, capabilities: &[String]) -> Result<Recipient> {
        let mut r = Recipient::new(cert)?;
        if r.key_management == KeyManagement::RsaPkcs1
            && capabilities.iter().any(|c| c == "rsaes-oaep")
        {
            r.key_management = KeyManagement::RsaOaep(HashAlg::Sha256);
        }
        Ok(r)
    }
}

/// The content cipher for one message to several recipients: AES-GCM (AuthEnvelopedData)
/// only when every recipient advertised it, since Outlook and gpgsm 2.2 cannot read it; else
/// AES-256-CBC, which every tested client reads (AES-128-CBC if a recipient lists only that).
/// `None` means the recipient's capabilities are unknown.
pub fn choose_cipher(capabilities: &[Option<&[String]>]) -> CipherChoice {
    let all = |name: &str| {
        capabilities
            .iter()
            .all(|c| c.is_some_and(|c| c.iter().any(|x| x == name)))
    };
    if !capabilities.is_empty() && all("aes256-gcm") {
        return CipherChoice::Aes256Gcm;
    }
    if !capabilities.is_empty() && all("aes128-gcm") {
        return CipherChoice::Aes128Gcm;
    }
    let only_128 = capabilities.iter().any(|c| {
        c.is_some_and(|c| {
            c.iter().any(|x| x == "aes128-cbc")
                && !c.iter().any(|x| x == "aes256-cbc" || x == "aes192-cbc")
        })
    });
    if only_128 {
        CipherChoice::Aes128Cbc
    } else {
        CipherChoice::Aes256Cbc
    }
}

/// What was decrypted, and how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decrypted {
    /// The content bytes.
    #[serde(skip)]
    pub content: Vec<u8>,
    /// Report of the decryption.
    pub report: DecryptReport,
}

/// How a message was decrypted (no secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecryptReport {
    /// `enveloped-data` or `auth-enveloped-data`.
    pub structure: &'static str,
    /// The content cipher.
    pub cipher: &'static str,
    /// The key-management algorithm of the recipient entry that opened it.
    pub key_management: String,
    /// The subject of the certificate whose key opened it.
    pub recipient: String,
    /// That certificate's serial number (hex).
    pub recipient_serial: String,
    /// The inner content type.
    pub content_type: String,
}

/// Recipients and algorithms of an encrypted message, for `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EnvelopeInfo {
    /// `enveloped-data` or `auth-enveloped-data`.
    pub structure: &'static str,
    /// The content cipher, or the reason it is unsupported.
    pub cipher: String,
    /// One entry per RecipientInfo.
    pub recipients: Vec<RecipientInfoSummary>,
}

/// One RecipientInfo, summarised.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecipientInfoSummary {
    /// `ktri`, `kari`, `kekri`, `pwri`, `ori`.
    pub kind: &'static str,
    /// The key-management algorithm.
    pub algorithm: String,
    /// The recipient identifier: `issuer=...; serial=...` or `ski=...`.
    pub id: Vec<String>,
}

/// Encrypts `content` (a MIME entity) into a CMS ContentInfo (DER).
pub fn encrypt(content: &[u8], recipients: &[Recipient], cipher: CipherChoice) -> Result<Vec<u8>> {
    encrypt_parts(&[content], recipients, cipher)
}

/// [`encrypt`] of the concatenation of `parts`, copied once, straight to where their
/// ciphertext goes.
pub fn encrypt_parts(
    parts: &[&[u8]],
    recipients: &[Recipient],
    cipher: CipherChoice,
) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::Usage("no recipients to encrypt to".into()));
    }
    let cc = cipher.instantiate()?;
    let cek = Zeroizing::new(random(cc.key_len())?);
    let mut infos = Vec::with_capacity(recipients.len());
    let mut any_v2 = false;
    for r in recipients {
        let (info, v2) = recipient_info(r, &cek)?;
        any_v2 |= v2;
        infos.push(info);
    }
    let info_refs: Vec<&[u8]> = infos.iter().map(Vec::as_slice).collect();
    let recipient_infos = der::set_of(&info_refs);
    // The whole ContentInfo in one buffer: every header is written first (the lengths are
    // known before encrypting), then the content is copied once to where its ciphertext goes
    // and encrypted there.
    let ct_len = cc.ciphertext_len(parts.iter().map(|p| p.len()).sum());
    let data_oid = der::oid(oid::DATA);
    let alg = cc.algorithm_identifier();
    let eci_len = data_oid.len() + alg.len() + der::tlv_len(ct_len);
    let (content_type, version, trailer_len) = if cc.is_aead() {
        (
            oid::AUTH_ENVELOPED_DATA,
            der::uint(0),
            der::tlv_len(cc.tag_len()),
        )
    } else {
        let version = if any_v2 { 2 } else { 0 };
        (oid::ENVELOPED_DATA, der::uint(version), 0)
    };
    let body_len = version.len() + recipient_infos.len() + der::tlv_len(eci_len) + trailer_len;
    let type_oid = der::oid(content_type);
    let explicit_len = der::tlv_len(body_len);
    let total_len = type_oid.len() + der::tlv_len(explicit_len);
    let mut out = Vec::with_capacity(der::tlv_len(total_len));
    der::push_head(&mut out, tag::SEQUENCE, total_len);
    out.extend_from_slice(&type_oid);
    der::push_head(&mut out, tag::context_constructed(0), explicit_len);
    der::push_head(&mut out, tag::SEQUENCE, body_len);
    out.extend_from_slice(&version);
    out.extend_from_slice(&recipient_infos);
    der::push_head(&mut out, tag::SEQUENCE, eci_len);
    out.extend_from_slice(&data_oid);
    out.extend_from_slice(&alg);
    der::push_head(&mut out, tag::context(0), ct_len);
    let from = out.len();
    for p in parts {
        out.extend_from_slice(p);
    }
    let tag_bytes = cc.encrypt_tail(&cek, &mut out, from, &[])?;
    if out.len() - from != ct_len || tag_bytes.len() != cc.tag_len() {
        return Err(Error::Usage("encryption failed".into()));
    }
    if cc.is_aead() {
        der::push_head(&mut out, tag::OCTET_STRING, tag_bytes.len());
        out.extend_from_slice(&tag_bytes);
    }
    Ok(out)
}

fn rid(r: &Recipient) -> Vec<u8> {
    if r.by_key_id {
        der::tlv(tag::context(0), &r.cert.key_id())
    } else {
        r.cert.issuer_and_serial()
    }
}

/// Builds one RecipientInfo; the flag says whether its version forces EnvelopedData v2.
fn recipient_info(r: &Recipient, cek: &[u8]) -> Result<(Vec<u8>, bool)> {
    match (r.key_management, &r.cert.key_kind) {
        (KeyManagement::RsaPkcs1 | KeyManagement::RsaOaep(_), KeyKind::Rsa { .. }) => {
            let public = awsrsa::PublicEncryptingKey::from_der(&r.cert.spki).map_err(|_| {
                Error::Usage(format!("unusable RSA key in {}", r.cert.subject_text()))
            })?;
            let mut out = vec![0u8; public.key_size_bytes()];
            let fail = |_| Error::Usage("RSA encryption failed".into());
            let (alg, n) = match r.key_management {
                KeyManagement::RsaOaep(h) => {
                    let oaep = awsrsa::OaepPublicEncryptingKey::new(public).map_err(fail)?;
                    let (a, params) = match h {
                        HashAlg::Sha1 => (&awsrsa::OAEP_SHA1_MGF1SHA1, der::seq(&[])),
                        HashAlg::Sha256 => (&awsrsa::OAEP_SHA256_MGF1SHA256, oaep_params(h)),
                        HashAlg::Sha384 => (&awsrsa::OAEP_SHA384_MGF1SHA384, oaep_params(h)),
                        HashAlg::Sha512 => (&awsrsa::OAEP_SHA512_MGF1SHA512, oaep_params(h)),
                        HashAlg::Sha224 => {
                            return Err(Error::Usage("OAEP with SHA-224 is not offered".into()));
                        }
                    };
                    let n = oaep.encrypt(a, cek, &mut out, None).map_err(fail)?.len();
                    (der::algorithm(oid::RSAES_OAEP, Some(&params)), n)
                }
                _ => {
                    let p1 = awsrsa::Pkcs1PublicEncryptingKey::new(public).map_err(fail)?;
                    let n = p1.encrypt(cek, &mut out).map_err(fail)?.len();
                    (der::algorithm(oid::RSA_ENCRYPTION, Some(&der::null())), n)
                }
            };
            out.truncate(n);
            let version = if r.by_key_id { 2 } else { 0 };
            Ok((
                der::seq(&[&der::uint(version), &rid(r), &alg, &der::octet_string(&out)]),
                r.by_key_id,
            ))
        }
        (KeyManagement::Ecdh(_), KeyKind::P256 | KeyKind::P384 | KeyKind::P521)
        | (KeyManagement::X25519Hkdf(_), KeyKind::X25519) => {
            let (alg, originator_alg) = match r.cert.key_kind {
                KeyKind::P256 => (&agreement::ECDH_P256, oid::EC_PUBLIC_KEY),
                KeyKind::P384 => (&agreement::ECDH_P384, oid::EC_PUBLIC_KEY),
                KeyKind::P521 => (&agreement::ECDH_P521, oid::EC_PUBLIC_KEY),
                _ => (&agreement::X25519, oid::X25519),
            };
            let (kdf, kdf_oid) = match r.key_management {
                KeyManagement::X25519Hkdf(h) => (Kdf::Hkdf(h), hkdf_oid(h)?),
                KeyManagement::Ecdh(h) => (Kdf::X963(h), ecdh_kdf_oid(h)?),
                _ => return Err(Error::Usage("key management".into())),
            };
            let rng = SystemRandom::new();
            let eph = agreement::EphemeralPrivateKey::generate(alg, &rng)
                .map_err(|_| Error::Usage("ECDH key generation failed".into()))?;
            let eph_pub = eph
                .compute_public_key()
                .map_err(|_| Error::Usage("ECDH failed".into()))?
                .as_ref()
                .to_vec();
            let wrap = match cek.len() {
                16 => WrapAlg::Aes128,
                24 => WrapAlg::Aes192,
                _ => WrapAlg::Aes256,
            };
            let wrap_alg = der::algorithm(wrap.oid(), None);
            let sinfo = shared_info(&wrap_alg, None, wrap.key_len());
            let peer = agreement::UnparsedPublicKey::new(alg, r.cert.public_key.as_slice());
            let kek = agreement::agree_ephemeral(
                eph,
                peer,
                Error::Usage("ECDH with the recipient's key failed".into()),
                |z| kdf.derive(z, &sinfo, wrap.key_len()),
            )?;
            let wrapped = wrap.wrap(&kek, cek)?;
            let originator = der::tlv(
                tag::context_constructed(0),
                &der::cons(
                    tag::context_constructed(1),
                    &[
                        &der::algorithm(originator_alg, None),
                        &der::bit_string(&eph_pub),
                    ],
                ),
            );
            let rek_rid = if r.by_key_id {
                der::tlv(
                    tag::context_constructed(0),
                    &der::octet_string(&r.cert.key_id()),
                )
            } else {
                r.cert.issuer_and_serial()
            };
            let reks = der::seq(&[&der::seq(&[&rek_rid, &der::octet_string(&wrapped)])]);
            let kari = der::cons(
                tag::context_constructed(1),
                &[
                    &der::uint(3),
                    &originator,
                    &der::algorithm(kdf_oid, Some(&wrap_alg)),
                    &reks,
                ],
            );
            Ok((kari, true))
        }
        (km, kind) => Err(Error::Usage(format!(
            "{} cannot be used with a {} key",
            km.label(),
            kind.label()
        ))),
    }
}

fn oaep_params(h: HashAlg) -> Vec<u8> {
    let hash = h.algorithm_identifier();
    let mgf = der::algorithm(oid::MGF1, Some(&hash));
    der::seq(&[
        &der::tlv(tag::context_constructed(0), &hash),
        &der::tlv(tag::context_constructed(1), &mgf),
    ])
}

fn hkdf_oid(h: HashAlg) -> Result<&'static [u8]> {
    Ok(match h {
        HashAlg::Sha256 => oid::X25519_HKDF_SHA256,
        HashAlg::Sha384 => oid::X25519_HKDF_SHA384,
        HashAlg::Sha512 => oid::X25519_HKDF_SHA512,
        _ => {
            return Err(Error::Usage(
                "HKDF with SHA-1 or SHA-224 is not offered".into(),
            ));
        }
    })
}

fn ecdh_kdf_oid(h: HashAlg) -> Result<&'static [u8]> {
    Ok(match h {
        HashAlg::Sha1 => oid::ECDH_SHA1KDF,
        HashAlg::Sha224 => oid::ECDH_SHA224KDF,
        HashAlg::Sha256 => oid::ECDH_SHA256KDF,
        HashAlg::Sha384 => oid::ECDH_SHA384KDF,
        HashAlg::Sha512 => oid::ECDH_SHA512KDF,
    })
}

/// ECC-CMS-SharedInfo (RFC 5753 §7.2).
fn shared_info(wrap_alg: &[u8], ukm: Option<&[u8]>, kek_len: usize) -> Vec<u8> {
    let bits = ((kek_len * 8) as u32).to_be_bytes();
    let supp = der::tlv(tag::context_constructed(2), &der::octet_string(&bits));
    match ukm {
        Some(u) => der::seq(&[
            wrap_alg,
            &der::tlv(tag::context_constructed(0), &der::octet_string(u)),
            &supp,
        ]),
        None => der::seq(&[wrap_alg, &supp]),
    }
}

/// The parts of an EnvelopedData or AuthEnvelopedData we need.
struct Envelope<'a> {
    auth: bool,
    recipient_infos: Tlv<'a>,
    cipher: Result<ContentCipher>,
    inner_type: &'a [u8],
    encrypted: Option<Tlv<'a>>,
    auth_attrs: Option<Tlv<'a>>,
    mac: Option<Tlv<'a>>,
}

/// Splits a ContentInfo into its content type and content.
pub fn content_info(input: &[u8]) -> Result<(&[u8], Tlv<'_>)> {
    let ci = Tlv::parse(input)?.expect(tag::SEQUENCE, "ContentInfo")?;
    let mut r = ci.reader();
    let ct = r.read(tag::OID, "ContentInfo contentType")?.value;
    let wrapper = r.read(tag::context_constructed(0), "ContentInfo content")?;
    let content = wrapper.reader().read_any()?;
    Ok((ct, content))
}

fn parse_envelope<'a>(ct: &[u8], body: Tlv<'a>) -> Result<Envelope<'a>> {
    let auth = if ct == oid::ENVELOPED_DATA {
        false
    } else if ct == oid::AUTH_ENVELOPED_DATA {
        true
    } else {
        return Err(malformed(format!(
            "not an encrypted message (content type {})",
            oid::name(ct)
        )));
    };
    let body = body.expect(tag::SEQUENCE, "EnvelopedData")?;
    let mut r = body.reader();
    r.read(tag::INTEGER, "version")?;
    r.read_optional(tag::context_constructed(0))?;
    let recipient_infos = r.read(tag::SET, "recipientInfos")?;
    let eci = r.read(tag::SEQUENCE, "encryptedContentInfo")?;
    let mut e = eci.reader();
    let inner_type = e.read(tag::OID, "content type")?.value;
    let alg = e.read(tag::SEQUENCE, "content encryption algorithm")?;
    let cipher = ContentCipher::from_algorithm_identifier(&alg);
    let encrypted = e.read_optional(tag::context(0))?;
    let (mut auth_attrs, mut mac) = (None, None);
    if auth {
        auth_attrs = r.read_optional(tag::context_constructed(1))?;
        mac = Some(r.read_any()?);
    }
    Ok(Envelope {
        auth,
        recipient_infos,
        cipher,
        inner_type,
        encrypted,
        auth_attrs,
        mac,
    })
}

/// A candidate content key from one recipient entry that names one of our keys.
struct Candidate {
    key: Zeroizing<Vec<u8>>,
    key_management: String,
    cert_index: usize,
}

/// Decrypts a CMS ContentInfo (EnvelopedData or AuthEnvelopedData) with any of `keys`,
/// within the default [`Limits`].
pub fn decrypt(input: &[u8], keys: &[&dyn PrivateKey]) -> Result<Decrypted> {
    decrypt_with(input, keys, &Limits::default())
}

/// [`decrypt`] within `limits`.
///
/// Work per message is bounded: more than `limits.max_recipient_entries` RecipientInfos are
/// refused before any key is used; each of our keys opens at most one entry that names it;
/// the fallback pass (no entry names our keys) makes at most
/// [`Limits::FALLBACK_KEY_OPERATIONS`] key operations; the content is decrypted once per
/// distinct content key.
pub fn decrypt_with(input: &[u8], keys: &[&dyn PrivateKey], limits: &Limits) -> Result<Decrypted> {
    let (ct, body) = content_info(input)?;
    let env = parse_envelope(ct, body)?;
    let cipher = env.cipher.clone()?;
    if env.auth != cipher.is_aead() {
        return Err(malformed(
            "content cipher does not fit the structure (AEAD in EnvelopedData or CBC in AuthEnvelopedData)",
        ));
    }
    {
        let mut ri = env.recipient_infos.reader();
        let mut n = 0usize;
        while !ri.is_empty() {
            ri.read_any()?;
            n += 1;
            if n > limits.max_recipient_entries {
                return Err(unsupported(format!(
                    "more than {} recipient entries in one message",
                    limits.max_recipient_entries
                )));
            }
        }
    }
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut named_us = false;
    let mut last_unsupported = None;
    // Whether the candidates came from the fallback pass (no entry named our keys).
    let mut guessed = false;
    // First the entries that name one of our keys (each key used once); if none does, every
    // entry with every key of a fitting type, within a budget (some clients write wrong
    // identifiers, and a wrong key must fail the same way as a corrupt message: implicit
    // rejection).
    for ignore_ids in [false, true] {
        let mut budget = Budget {
            used: vec![false; keys.len()],
            fallback_left: Limits::FALLBACK_KEY_OPERATIONS,
            fallback: ignore_ids,
        };
        let mut ri = env.recipient_infos.reader();
        while !ri.is_empty() {
            let info = ri.read_any()?;
            match recipient_candidates(&info, keys, cipher.key_len(), &mut named_us, &mut budget) {
                Ok(c) => {
                    for c in c {
                        // Once per distinct content key: an entry repeated (or an attacker's
                        // copies) does not cost another content decryption.
                        if !candidates
                            .iter()
                            .any(|o| o.key.as_slice() == c.key.as_slice())
                        {
                            candidates.push(c);
                        }
                    }
                }
                Err(e @ Error::Unsupported(_)) => last_unsupported = Some(e),
                Err(Error::Decrypt) => {}
                Err(e) => return Err(e),
            }
        }
        if !candidates.is_empty() || named_us {
            guessed = ignore_ids;
            break;
        }
        // (A second pass that tries a key sets `named_us` as well.)
    }
    if candidates.is_empty() {
        if let Some(e) = last_unsupported {
            return Err(e);
        }
        return Err(if named_us {
            Error::Decrypt
        } else {
            Error::NoMatchingRecipient
        });
    }
    let mut ciphertext = match &env.encrypted {
        Some(t) => t.octets()?.into_owned(),
        None => return Err(unsupported("detached encrypted content")),
    };
    let aad = match &env.auth_attrs {
        // The MAC covers the DER of the attributes with the SET OF tag (RFC 5083 §2.2).
        Some(a) => {
            let mut v = a.raw.to_vec();
            if let Some(first) = v.first_mut() {
                *first = tag::SET;
            }
            v
        }
        None => Vec::new(),
    };
    let mac = match &env.mac {
        Some(m) => m.octets()?.into_owned(),
        None => Vec::new(),
    };
    let last = candidates.len().saturating_sub(1);
    for (n, c) in candidates.iter().enumerate() {
        let data = if n == last {
            std::mem::take(&mut ciphertext)
        } else {
            ciphertext.clone()
        };
        if let Ok(content) = cipher.decrypt(&c.key, data, &aad, &mac) {
            // A key tried on an entry that does not name it yields, by implicit rejection, a
            // pseudo-random content key; CBC has no integrity, and about 1 in 256 such keys
            // still ends in valid padding. Content found that way counts only if it is a MIME
            // entity, as every S/MIME content is (AEAD content has its tag).
            if guessed && !cipher.is_aead() && !starts_like_mime(&content) {
                continue;
            }
            let cert = keys.get(c.cert_index).map(|k| k.certificate());
            return Ok(Decrypted {
                content,
                report: DecryptReport {
                    structure: if env.auth {
                        "auth-enveloped-data"
                    } else {
                        "enveloped-data"
                    },
                    cipher: cipher.name(),
                    key_management: c.key_management.clone(),
                    recipient: cert.map(|c| c.subject_text()).unwrap_or_default(),
                    recipient_serial: cert
                        .map(|c| crate::cert::hex(&c.serial))
                        .unwrap_or_default(),
                    content_type: oid::name(env.inner_type),
                },
            });
        }
    }
    Err(Error::Decrypt)
}

/// Whether `content` begins as a MIME entity does: a header field name (printable ASCII but
/// the colon, 1 to 76 characters) and its colon, or the empty line of an entity with no
/// header fields.
fn starts_like_mime(content: &[u8]) -> bool {
    if content.starts_with(b"\r\n") || content.starts_with(b"\n") {
        return true;
    }
    let name_len = content
        .iter()
        .take(77)
        .take_while(|&&b| (33..=126).contains(&b) && b != b':')
        .count();
    (1..=76).contains(&name_len) && content.get(name_len) == Some(&b':')
}

fn matches_rid(cert: &Certificate, rid: &Tlv<'_>) -> bool {
    match rid.tag {
        tag::SEQUENCE => cert.matches_issuer_serial(rid),
        // [0] SubjectKeyIdentifier (ktri) — primitive.
        t if t == tag::context(0) => cert.matches_key_id(rid.value),
        // [0] RecipientKeyIdentifier (kari) — constructed, SKI first.
        t if t == tag::context_constructed(0) => rid
            .reader()
            .read_any()
            .ok()
            .and_then(|s| s.octets().ok().map(|o| cert.matches_key_id(&o)))
            .unwrap_or(false),
        _ => false,
    }
}

/// Which keys may still be used in this pass.
struct Budget {
    /// Keys already used on an entry naming them (first pass: once each).
    used: Vec<bool>,
    /// Key operations left in the fallback pass.
    fallback_left: usize,
    /// True in the fallback pass (identifiers ignored).
    fallback: bool,
}

impl Budget {
    /// Whether key `i` may be used now; counts the use.
    fn take(&mut self, i: usize) -> bool {
        if self.fallback {
            if self.fallback_left == 0 {
                return false;
            }
            self.fallback_left -= 1;
            true
        } else {
            match self.used.get_mut(i) {
                Some(u) if !*u => {
                    *u = true;
                    true
                }
                _ => false,
            }
        }
    }
}

fn recipient_candidates(
    info: &Tlv<'_>,
    keys: &[&dyn PrivateKey],
    key_len: usize,
    named_us: &mut bool,
    budget: &mut Budget,
) -> Result<Vec<Candidate>> {
    let ignore_ids = budget.fallback;
    let mut out = Vec::new();
    match info.tag {
        tag::SEQUENCE => {
            // KeyTransRecipientInfo.
            let mut r = info.reader();
            r.read(tag::INTEGER, "ktri version")?;
            let rid = r.read_any()?;
            let alg = r.read(tag::SEQUENCE, "keyEncryptionAlgorithm")?;
            let ek = r.read_any()?.octets()?.into_owned();
            let matching: Vec<usize> = (0..keys.len())
                .filter(|i| {
                    keys.get(*i).is_some_and(|k| {
                        (ignore_ids || matches_rid(k.certificate(), &rid))
                            && matches!(k.certificate().key_kind, KeyKind::Rsa { .. })
                    })
                })
                .collect();
            if matching.is_empty() {
                return Ok(out);
            }
            // In the second pass, having tried a key counts too: the caller then sees
            // the same error as for a corrupt message.
            *named_us = true;
            let mut a = alg.reader();
            let alg_oid = a.read(tag::OID, "key transport algorithm")?.value;
            for i in matching {
                let Some(key) = keys.get(i) else { continue };
                if !budget.take(i) {
                    continue;
                }
                let (k, label) = if alg_oid == oid::RSA_ENCRYPTION {
                    (
                        key.rsa_pkcs1_decrypt(&ek, key_len)?,
                        "rsa-pkcs1v15".to_string(),
                    )
                } else if alg_oid == oid::RSAES_OAEP {
                    let params = if a.is_empty() {
                        None
                    } else {
                        Some(a.read_any()?)
                    };
                    let (p, label) = parse_oaep_params(params)?;
                    let lbl = format!(
                        "rsa-oaep-{}{}",
                        p.hash.micalg(),
                        if p.mgf1 != p.hash {
                            format!("-mgf1-{}", p.mgf1.micalg())
                        } else {
                            String::new()
                        }
                    );
                    (key.rsa_oaep_decrypt(&ek, p, &label, key_len)?, lbl)
                } else {
                    return Err(unsupported(format!(
                        "key transport algorithm {}",
                        oid::name(alg_oid)
                    )));
                };
                out.push(Candidate {
                    key: k,
                    key_management: label,
                    cert_index: i,
                });
            }
        }
        t if t == tag::context_constructed(1) => {
            // KeyAgreeRecipientInfo.
            let mut r = info.reader();
            r.read(tag::INTEGER, "kari version")?;
            let originator = r.read(tag::context_constructed(0), "originator")?;
            let ukm = match r.read_optional(tag::context_constructed(1))? {
                Some(u) => Some(u.reader().read_any()?.octets()?.into_owned()),
                None => None,
            };
            let alg = r.read(tag::SEQUENCE, "keyEncryptionAlgorithm")?;
            let reks = r.read(tag::SEQUENCE, "recipientEncryptedKeys")?;
            let mut a = alg.reader();
            let kdf_oid = a.read(tag::OID, "key agreement algorithm")?.value;
            let wrap_alg_tlv = a.read(tag::SEQUENCE, "key wrap algorithm")?;
            let wrap = WrapAlg::from_oid(wrap_alg_tlv.reader().read(tag::OID, "key wrap")?.value)?;
            let kdf = kdf_from_oid(kdf_oid)?;
            let orig = originator.reader().read_any()?;
            if orig.tag != tag::context_constructed(1) {
                return Err(unsupported("key agreement with a static originator key"));
            }
            let mut o = orig.reader();
            o.read(tag::SEQUENCE, "originator key algorithm")?;
            let eph_public = o
                .read(tag::BIT_STRING, "originator public key")?
                .bit_string()?
                .to_vec();
            // The shared info names the wrap algorithm; AES wraps with absent parameters.
            let wrap_alg = der::algorithm(wrap.oid(), None);
            let sinfo = shared_info(&wrap_alg, ukm.as_deref(), wrap.key_len());
            let mut rr: Reader<'_> = reks.reader();
            while !rr.is_empty() {
                let rek = rr.read(tag::SEQUENCE, "RecipientEncryptedKey")?;
                let mut re = rek.reader();
                let rid = re.read_any()?;
                let wrapped = re.read_any()?.octets()?.into_owned();
                for (i, key) in keys.iter().enumerate() {
                    let cert = key.certificate();
                    // X25519 takes either KDF (RFC 8418 §2.2: the X9.63 KDFs of RFC 5753 or
                    // HKDF); the NIST curves only the X9.63 KDF.
                    let fits = match kdf {
                        Kdf::X963(_) => matches!(
                            cert.key_kind,
                            KeyKind::P256 | KeyKind::P384 | KeyKind::P521 | KeyKind::X25519
                        ),
                        Kdf::Hkdf(_) => cert.key_kind == KeyKind::X25519,
                    };
                    if !fits || !(ignore_ids || matches_rid(cert, &rid)) {
                        continue;
                    }
                    *named_us = true;
                    if !budget.take(i) {
                        continue;
                    }
                    let Ok(z) = key.ecdh(&eph_public) else {
                        continue;
                    };
                    let kek = kdf.derive(&z, &sinfo, wrap.key_len())?;
                    if let Ok(cek) = wrap.unwrap(&kek, &wrapped)
                        && cek.len() == key_len
                    {
                        let key_management = match (kdf, &cert.key_kind) {
                            (Kdf::X963(h), KeyKind::X25519) => {
                                format!("x25519-x963-{}", h.micalg())
                            }
                            _ => kdf.label(),
                        };
                        out.push(Candidate {
                            key: cek,
                            key_management,
                            cert_index: i,
                        });
                    }
                }
            }
        }
        t if t == tag::context_constructed(2) => {
            return Err(unsupported("KEK recipient entries (kekri)"));
        }
        t if t == tag::context_constructed(3) => {
            return Err(unsupported("password recipient entries (pwri)"));
        }
        t if t == tag::context_constructed(4) => {
            return Err(unsupported("other recipient entries (ori, e.g. KEM)"));
        }
        _ => return Err(malformed("unknown RecipientInfo")),
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Kdf {
    X963(HashAlg),
    Hkdf(HashAlg),
}

impl Kdf {
    fn derive(self, z: &[u8], shared_info: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            Kdf::X963(h) => Ok(x963_kdf(h, z, shared_info, len)),
            Kdf::Hkdf(h) => hkdf(h, z, shared_info, len),
        }
    }

    fn label(self) -> String {
        match self {
            Kdf::X963(h) => format!("ecdh-es-x963-{}", h.micalg()),
            Kdf::Hkdf(h) => format!("x25519-hkdf-{}", h.micalg()),
        }
    }
}

fn kdf_from_oid(o: &[u8]) -> Result<Kdf> {
    Ok(match o {
        x if x == oid::ECDH_SHA1KDF || x == oid::ECDH_COFACTOR_SHA1KDF => Kdf::X963(HashAlg::Sha1),
        x if x == oid::ECDH_SHA224KDF => Kdf::X963(HashAlg::Sha224),
        x if x == oid::ECDH_SHA256KDF || x == oid::ECDH_COFACTOR_SHA256KDF => {
            Kdf::X963(HashAlg::Sha256)
        }
        x if x == oid::ECDH_SHA384KDF || x == oid::ECDH_COFACTOR_SHA384KDF => {
            Kdf::X963(HashAlg::Sha384)
        }
        x if x == oid::ECDH_SHA512KDF => Kdf::X963(HashAlg::Sha512),
        x if x == oid::X25519_HKDF_SHA256 => Kdf::Hkdf(HashAlg::Sha256),
        x if x == oid::X25519_HKDF_SHA384 => Kdf::Hkdf(HashAlg::Sha384),
        x if x == oid::X25519_HKDF_SHA512 => Kdf::Hkdf(HashAlg::Sha512),
        x => {
            return Err(unsupported(format!(
                "key agreement algorithm {}",
                oid::name(x)
            )));
        }
    })
}

/// RSAES-OAEP-params (RFC 4055 §4.1); absent fields mean SHA-1 and MGF1-SHA-1.
fn parse_oaep_params(params: Option<Tlv<'_>>) -> Result<(OaepParams, Vec<u8>)> {
    let mut p = OaepParams {
        hash: HashAlg::Sha1,
        mgf1: HashAlg::Sha1,
    };
    let mut label = Vec::new();
    let Some(params) = params else {
        return Ok((p, label));
    };
    if params.tag == tag::NULL {
        return Ok((p, label));
    }
    let mut r = params.reader();
    while !r.is_empty() {
        let f = r.read_any()?;
        let inner = f.reader().read(tag::SEQUENCE, "OAEP parameter")?;
        let mut a = inner.reader();
        let id = a.read(tag::OID, "OAEP algorithm")?.value;
        match f.tag {
            t if t == tag::context_constructed(0) => p.hash = HashAlg::from_oid(id)?,
            t if t == tag::context_constructed(1) => {
                if id != oid::MGF1 {
                    return Err(unsupported("OAEP mask generation other than MGF1"));
                }
                let h = a.read(tag::SEQUENCE, "MGF1 hash")?;
                p.mgf1 = HashAlg::from_oid(h.reader().read(tag::OID, "MGF1 hash")?.value)?;
            }
            t if t == tag::context_constructed(2) => {
                if id != oid::P_SPECIFIED {
                    return Err(unsupported("OAEP label source"));
                }
                label = a.read_any()?.octets()?.into_owned();
            }
            _ => return Err(malformed("unknown OAEP parameter")),
        }
    }
    Ok((p, label))
}

/// Summarises an encrypted message's recipients without decrypting it.
pub fn inspect(input: &[u8]) -> Result<EnvelopeInfo> {
    let (ct, body) = content_info(input)?;
    let env = parse_envelope(ct, body)?;
    let cipher = match &env.cipher {
        Ok(c) => c.name().to_string(),
        Err(e) => e.to_string(),
    };
    let mut recipients = Vec::new();
    let mut ri = env.recipient_infos.reader();
    while !ri.is_empty() {
        let info = ri.read_any()?;
        recipients.push(summarise(&info).unwrap_or(RecipientInfoSummary {
            kind: "unreadable",
            algorithm: String::new(),
            id: vec![],
        }));
    }
    Ok(EnvelopeInfo {
        structure: if env.auth {
            "auth-enveloped-data"
        } else {
            "enveloped-data"
        },
        cipher,
        recipients,
    })
}

fn describe_rid(rid: &Tlv<'_>) -> String {
    match rid.tag {
        tag::SEQUENCE => {
            let mut r = rid.reader();
            let issuer = r
                .read_any()
                .map(|i| crate::cert::name_text(i.raw))
                .unwrap_or_default();
            let serial = r
                .read_any()
                .map(|s| crate::cert::hex(s.value))
                .unwrap_or_default();
            format!("issuer={issuer}; serial={serial}")
        }
        t if t == tag::context(0) => format!("ski={}", crate::cert::hex(rid.value)),
        _ => match rid
            .reader()
            .read_any()
            .and_then(|s| s.octets().map(|o| o.into_owned()))
        {
            Ok(ski) => format!("ski={}", crate::cert::hex(&ski)),
            Err(_) => "unknown".into(),
        },
    }
}

fn summarise(info: &Tlv<'_>) -> Result<RecipientInfoSummary> {
    Ok(match info.tag {
        tag::SEQUENCE => {
            let mut r = info.reader();
            r.read_any()?;
            let rid = r.read_any()?;
            let alg = r.read(tag::SEQUENCE, "alg")?;
            let mut a = alg.reader();
            let id = a.read(tag::OID, "alg")?.value;
            let algorithm = if id == oid::RSAES_OAEP {
                let params = if a.is_empty() {
                    None
                } else {
                    Some(a.read_any()?)
                };
                match parse_oaep_params(params) {
                    Ok((p, _)) => format!("rsa-oaep-{}-mgf1-{}", p.hash.micalg(), p.mgf1.micalg()),
                    Err(e) => e.to_string(),
                }
            } else if id == oid::RSA_ENCRYPTION {
                "rsa-pkcs1v15".into()
            } else {
                oid::name(id)
            };
            RecipientInfoSummary {
                kind: "ktri",
                algorithm,
                id: vec![describe_rid(&rid)],
            }
        }
        t if t == tag::context_constructed(1) => {
            let mut r = info.reader();
            r.read_any()?;
            r.read_any()?;
            r.read_optional(tag::context_constructed(1))?;
            let alg = r.read(tag::SEQUENCE, "alg")?;
            let mut a = alg.reader();
            let kdf = a.read(tag::OID, "alg")?.value;
            let wrap = a
                .read_any()
                .ok()
                .and_then(|w| w.reader().read_any().ok())
                .map(|o| oid::name(o.value))
                .unwrap_or_default();
            let algorithm = match kdf_from_oid(kdf) {
                Ok(k) => format!("{} + {wrap}", k.label()),
                Err(_) => oid::name(kdf),
            };
            let reks = r.read(tag::SEQUENCE, "reks")?;
            let mut ids = Vec::new();
            let mut rr = reks.reader();
            while let Ok(rek) = rr.read_any() {
                if let Ok(rid) = rek.reader().read_any() {
                    ids.push(describe_rid(&rid));
                }
            }
            RecipientInfoSummary {
                kind: "kari",
                algorithm,
                id: ids,
            }
        }
        t if t == tag::context_constructed(2) => RecipientInfoSummary {
            kind: "kekri",
            algorithm: String::new(),
            id: vec![],
        },
        t if t == tag::context_constructed(3) => RecipientInfoSummary {
            kind: "pwri",
            algorithm: String::new(),
            id: vec![],
        },
        _ => RecipientInfoSummary {
            kind: "ori",
            algorithm: String::new(),
            id: vec![],
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {

    #[test]
    fn guessed_content_must_start_like_a_mime_entity() {
        assert!(starts_like_mime(b"Content-Type: text/plain\r\n\r\nhi"));
        assert!(starts_like_mime(b"\r\nno header fields"));
        assert!(starts_like_mime(b"X:"));
        assert!(!starts_like_mime(b""));
        assert!(!starts_like_mime(b": no name"));
        assert!(!starts_like_mime(b"Content Type: a space"));
        assert!(!starts_like_mime(&[0x8f, 0x12, b':', 0x00]));
        assert!(!starts_like_mime(&[b'a'; 77]));
        let mut long = vec![b'a'; 77];
        long.push(b':');
        assert!(!starts_like_mime(&long));
    }
    use super::*;
    use crate::keys::SoftwareKey;
    use std::process::Command;

    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) must be installed");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn key_and_cert(
        dir: &std::path::Path,
        name: &str,
        keyopt: &[&str],
    ) -> (SoftwareKey, Certificate) {
        let mut args = vec!["req", "-x509", "-new", "-nodes", "-days", "30", "-subj"];
        let subj = format!("/CN={name}/emailAddress={name}@example.test");
        args.push(&subj);
        let k = format!("{name}.key");
        let c = format!("{name}.pem");
        args.extend(["-keyout", &k, "-out", &c]);
        args.extend(keyopt);
        openssl(dir, &args);
        let key = SoftwareKey::from_key_and_cert(
            &std::fs::read(dir.join(&k)).unwrap(),
            &std::fs::read(dir.join(&c)).unwrap(),
        )
        .unwrap();
        let cert = Certificate::parse_many(&std::fs::read(dir.join(&c)).unwrap())
            .unwrap()
            .remove(0);
        (key, cert)
    }

    #[test]
    fn every_length_form_round_trips() {
        // The structure is written headers first with precomputed lengths: check it at every
        // DER length form (short, one, two and three length bytes) for CBC and GCM.
        let dir = tempfile::tempdir().unwrap();
        let (rsa, rsa_cert) = key_and_cert(dir.path(), "rsa", &["-newkey", "rsa:2048"]);
        let keys: Vec<&dyn PrivateKey> = vec![&rsa];
        let r = Recipient::new(rsa_cert).unwrap();
        for cipher in [CipherChoice::Aes256Cbc, CipherChoice::Aes128Gcm] {
            for n in [
                0usize, 1, 15, 16, 17, 60, 100, 127, 128, 200, 255, 256, 65_535, 70_000,
            ] {
                let content: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                let der = encrypt(&content, std::slice::from_ref(&r), cipher).unwrap();
                let t = Tlv::parse(&der).unwrap();
                assert_eq!(t.raw.len(), der.len(), "{cipher:?} {n}");
                assert_eq!(
                    decrypt(&der, &keys).unwrap().content,
                    content,
                    "{cipher:?} {n}"
                );
            }
        }
    }

    #[test]
    fn roundtrip_and_openssl_interop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (rsa, rsa_cert) = key_and_cert(d, "rsa", &["-newkey", "rsa:2048"]);
        let (ec, ec_cert) = key_and_cert(
            d,
            "ec",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let (ec384, ec384_cert) = key_and_cert(
            d,
            "ec384",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        );
        let keys: Vec<&dyn PrivateKey> = vec![&rsa, &ec, &ec384];
        // Our own round trip, every key management and cipher.
        for cipher in [
            CipherChoice::Aes256Cbc,
            CipherChoice::Aes128Cbc,
            CipherChoice::Aes256Gcm,
            CipherChoice::Aes128Gcm,
        ] {
            let mut r1 = Recipient::new(rsa_cert.clone()).unwrap();
            let r2 = Recipient::new(ec_cert.clone()).unwrap();
            let mut r3 = Recipient::new(ec384_cert.clone()).unwrap();
            r3.by_key_id = true;
            for km in [
                KeyManagement::RsaPkcs1,
                KeyManagement::RsaOaep(HashAlg::Sha1),
                KeyManagement::RsaOaep(HashAlg::Sha256),
            ] {
                r1.key_management = km;
                let der = encrypt(b"hello", &[r1.clone(), r2.clone(), r3.clone()], cipher).unwrap();
                for k in &keys {
                    assert_eq!(decrypt(&der, &[*k]).unwrap().content, b"hello");
                }
                std::fs::write(d.join("ours.der"), &der).unwrap();
                for (k, c) in [
                    ("rsa.key", "rsa.pem"),
                    ("ec.key", "ec.pem"),
                    ("ec384.key", "ec384.pem"),
                ] {
                    openssl(
                        d,
                        &[
                            "cms",
                            "-decrypt",
                            "-inform",
                            "DER",
                            "-in",
                            "ours.der",
                            "-inkey",
                            k,
                            "-recip",
                            c,
                            "-out",
                            "plain.txt",
                        ],
                    );
                    assert_eq!(std::fs::read(d.join("plain.txt")).unwrap(), b"hello");
                }
            }
        }
        // OpenSSL's output, DER and streamed BER, several ciphers and key managements.
        std::fs::write(d.join("msg.txt"), b"from openssl\r\n").unwrap();
        let cases: &[&[&str]] = &[
            &["-aes256", "rsa.pem"],
            &["-aes128", "rsa.pem"],
            &["-aes192", "rsa.pem"],
            &["-des3", "rsa.pem"],
            &["-aes-256-gcm", "rsa.pem"],
            &["-aes256", "-keyid", "rsa.pem"],
            &[
                "-aes256",
                "-recip",
                "rsa.pem",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
            &[
                "-aes256",
                "-recip",
                "ec.pem",
                "-keyopt",
                "ecdh_kdf_md:sha256",
            ],
            &["-aes256", "ec.pem"],
            &["-aes128", "ec384.pem"],
            &["-aes192", "ec.pem"],
            &["-aes256", "-stream", "rsa.pem", "ec.pem"],
        ];
        for case in cases {
            let mut args = vec![
                "cms",
                "-encrypt",
                "-binary",
                "-in",
                "msg.txt",
                "-outform",
                "DER",
                "-out",
                "theirs.der",
            ];
            args.extend_from_slice(case);
            openssl(d, &args);
            let der = std::fs::read(d.join("theirs.der")).unwrap();
            let want_ec = case.iter().any(|a| a.starts_with("ec"));
            let k: &dyn PrivateKey = if want_ec && !case.contains(&"rsa.pem") {
                if case.contains(&"ec384.pem") {
                    &ec384
                } else {
                    &ec
                }
            } else {
                &rsa
            };
            let got = decrypt(&der, &[k]).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert_eq!(got.content, b"from openssl\r\n", "{case:?}");
        }
    }

    #[test]
    fn cipher_and_key_management_follow_capabilities() {
        let gcm: Vec<String> = ["aes256-gcm", "aes256-cbc", "rsaes-oaep"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cbc: Vec<String> = ["aes256-cbc", "aes128-cbc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let old: Vec<String> = ["aes128-cbc", "des-ede3-cbc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(choose_cipher(&[Some(&gcm)]), CipherChoice::Aes256Gcm);
        assert_eq!(
            choose_cipher(&[Some(&gcm), Some(&cbc)]),
            CipherChoice::Aes256Cbc
        );
        assert_eq!(choose_cipher(&[Some(&gcm), None]), CipherChoice::Aes256Cbc);
        assert_eq!(
            choose_cipher(&[Some(&gcm), Some(&old)]),
            CipherChoice::Aes128Cbc
        );
        assert_eq!(choose_cipher(&[]), CipherChoice::Aes256Cbc);
        let dir = tempfile::tempdir().unwrap();
        let (_, cert) = key_and_cert(dir.path(), "c", &["-newkey", "rsa:2048"]);
        assert_eq!(
            Recipient::with_capabilities(cert.clone(), &gcm)
                .unwrap()
                .key_management,
            KeyManagement::RsaOaep(HashAlg::Sha256)
        );
        assert_eq!(
            Recipient::with_capabilities(cert, &cbc)
                .unwrap()
                .key_management,
            KeyManagement::RsaPkcs1
        );
    }

    #[test]
    fn x25519_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req", "-x509", "-new", "-nodes", "-newkey", "ed25519", "-keyout", "ca.key",
                "-out", "ca.pem", "-subj", "/CN=ca", "-days", "3",
            ],
        );
        openssl(d, &["genpkey", "-algorithm", "X25519", "-out", "x.key"]);
        openssl(d, &["pkey", "-in", "x.key", "-pubout", "-out", "x.pub"]);
        openssl(
            d,
            &[
                "req", "-new", "-key", "ca.key", "-subj", "/CN=x", "-out", "x.csr",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "x.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-force_pubkey",
                "x.pub",
                "-out",
                "x.pem",
                "-days",
                "3",
            ],
        );
        let key = SoftwareKey::from_key_and_cert(
            &std::fs::read(d.join("x.key")).unwrap(),
            &std::fs::read(d.join("x.pem")).unwrap(),
        )
        .unwrap();
        let cert = key.certificate().clone();
        for cipher in [CipherChoice::Aes128Cbc, CipherChoice::Aes256Gcm] {
            let der = encrypt(b"x25519", &[Recipient::new(cert.clone()).unwrap()], cipher).unwrap();
            let got = decrypt(&der, &[&key]).unwrap();
            assert_eq!(got.content, b"x25519");
            assert_eq!(got.report.key_management, "x25519-hkdf-sha-256");
        }
    }

    #[test]
    fn implicit_rejection_wrong_key_and_bad_padding_look_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (rsa, rsa_cert) = key_and_cert(d, "a", &["-newkey", "rsa:2048"]);
        let der = encrypt(
            b"secret",
            &[Recipient::new(rsa_cert.clone()).unwrap()],
            CipherChoice::Aes256Cbc,
        )
        .unwrap();
        // Replace the encrypted key with other bytes below the modulus (bad padding). Implicit
        // rejection turns it into a pseudo-random content key; CBC has no integrity, so about
        // 1 in 256 such keys ends in valid padding and "decrypts" to garbage (as with OpenSSL):
        // never the content, and another tampering then fails.
        let pos = der
            .windows(4)
            .position(|w| w == [0x04, 0x82, 0x01, 0x00])
            .unwrap()
            + 4;
        let mut e1 = None;
        for mask in [0x5a_u8, 0xa5, 0x3c, 0xc3, 0x69, 0x96, 0x0f, 0xf0] {
            let mut tampered = der.clone();
            for b in &mut tampered[pos + 1..pos + 256] {
                *b ^= mask;
            }
            match decrypt(&tampered, &[&rsa]) {
                Err(e) => {
                    e1 = Some(e);
                    break;
                }
                Ok(garbage) => assert_ne!(garbage.content, b"secret"),
            }
        }
        let e1 = e1.expect("eight tamperings all ended in valid CBC padding");
        assert_eq!(e1, Error::Decrypt);
        // Another key entirely: the same error, word for word.
        let (other, _) = key_and_cert(d, "b", &["-newkey", "rsa:2048"]);
        let e2 = decrypt(&der, &[&other]).unwrap_err();
        assert_eq!(e1.to_string(), e2.to_string());
        // A mismatched key and certificate is refused at load time.
        let imposter = SoftwareKey::new(
            &crate::keys::load_private_key(&std::fs::read(d.join("b.key")).unwrap()).unwrap(),
            rsa_cert.clone(),
            vec![],
        );
        assert!(
            imposter.is_err(),
            "mismatched key and certificate must be refused"
        );
        drop(other);
    }

    #[test]
    fn legacy_rsa_1024_decrypts_but_is_never_encrypted_to_or_signs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (old, old_cert) = key_and_cert(d, "old", &["-newkey", "rsa:1024"]);
        assert_eq!(old_cert.key_kind, KeyKind::Rsa { bits: 1024 });
        std::fs::write(d.join("msg.txt"), b"from 2009\r\n").unwrap();
        for extra in [&[][..], &["-keyopt", "rsa_padding_mode:oaep"][..]] {
            let mut args = vec![
                "cms", "-encrypt", "-binary", "-aes128", "-in", "msg.txt", "-outform", "DER",
                "-out", "old.der", "-recip", "old.pem",
            ];
            args.extend_from_slice(extra);
            openssl(d, &args);
            let der = std::fs::read(d.join("old.der")).unwrap();
            assert_eq!(decrypt(&der, &[&old]).unwrap().content, b"from 2009\r\n");
        }
        let e = Recipient::new(old_cert).unwrap_err();
        assert!(e.to_string().contains("1024-bit RSA"), "{e}");
        assert!(
            old.sign(crate::keys::SignScheme::RsaPkcs1(HashAlg::Sha256), b"x")
                .is_err()
        );
        // A legacy key that does not belong to the certificate is still refused.
        let (_, other_cert) = key_and_cert(d, "other", &["-newkey", "rsa:1024"]);
        let pkcs8 =
            crate::keys::load_private_key(&std::fs::read(d.join("old.key")).unwrap()).unwrap();
        assert!(SoftwareKey::new(&pkcs8, other_cert, vec![]).is_err());
    }

    fn corpus(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/corpus/x25519")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn x25519_x963_recipient_by_issuer_and_serial_next_to_rsa() {
        // Made by tests/corpus/x25519/generate.py (Python `cryptography`, not this engine).
        let der = corpus("enc-rsa-and-x25519-x963-sha256-aes128wrap.p7m");
        let want = corpus("enc-rsa-and-x25519-x963-sha256-aes128wrap.expected");
        let dana =
            SoftwareKey::from_key_and_cert(&corpus("dana-x25519.key"), &corpus("dana-x25519.pem"))
                .unwrap();
        let got = decrypt(&der, &[&dana]).unwrap();
        assert_eq!(got.content, want);
        assert_eq!(got.report.key_management, "x25519-x963-sha-256");
        let rosa = SoftwareKey::from_key_and_cert(&corpus("rosa-rsa.key"), &corpus("rosa-rsa.pem"))
            .unwrap();
        assert_eq!(decrypt(&der, &[&rosa]).unwrap().content, want);
        assert_eq!(decrypt(&der, &[&rosa, &dana]).unwrap().content, want);
    }

    /// Counts private-key operations of a wrapped key.
    struct Counting<'a> {
        inner: &'a SoftwareKey,
        ops: std::sync::atomic::AtomicUsize,
    }

    impl PrivateKey for Counting<'_> {
        fn certificate(&self) -> &Certificate {
            self.inner.certificate()
        }
        fn rsa_pkcs1_decrypt(&self, ek: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
            self.ops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.rsa_pkcs1_decrypt(ek, len)
        }
        fn rsa_oaep_decrypt(
            &self,
            ek: &[u8],
            p: OaepParams,
            label: &[u8],
            len: usize,
        ) -> Result<Zeroizing<Vec<u8>>> {
            self.ops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.rsa_oaep_decrypt(ek, p, label, len)
        }
        fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
            self.ops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.ecdh(peer)
        }
        fn sign(&self, s: crate::keys::SignScheme, m: &[u8]) -> Result<Vec<u8>> {
            self.inner.sign(s, m)
        }
    }

    #[test]
    fn recipient_entries_cost_bounded_key_operations() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (rsa, rsa_cert) = key_and_cert(d, "a", &["-newkey", "rsa:2048"]);
        let (_, other_cert) = key_and_cert(d, "b", &["-newkey", "rsa:2048"]);
        let ops = |k: &Counting<'_>| k.ops.load(std::sync::atomic::Ordering::SeqCst);
        // 100 entries naming our key: one key operation, not 100.
        let r = Recipient::new(rsa_cert.clone()).unwrap();
        let many = vec![r.clone(); 100];
        let der = encrypt(b"x", &many, CipherChoice::Aes256Cbc).unwrap();
        let k = Counting {
            inner: &rsa,
            ops: Default::default(),
        };
        assert_eq!(decrypt(&der, &[&k]).unwrap().content, b"x");
        assert_eq!(ops(&k), 1);
        // More entries than the limit: refused before any key is used.
        let limits = Limits {
            max_recipient_entries: 50,
            ..Limits::default()
        };
        let k = Counting {
            inner: &rsa,
            ops: Default::default(),
        };
        let e = decrypt_with(&der, &[&k], &limits).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(
            e.to_string().contains("more than 50 recipient entries"),
            "{e}"
        );
        assert_eq!(ops(&k), 0);
        // No entry names our key (the fallback pass): a bounded number of tries.
        let r = Recipient::new(other_cert).unwrap();
        let der = encrypt(b"x", &vec![r; 100], CipherChoice::Aes256Cbc).unwrap();
        let k = Counting {
            inner: &rsa,
            ops: Default::default(),
        };
        assert_eq!(decrypt(&der, &[&k]).unwrap_err(), Error::Decrypt);
        assert_eq!(ops(&k), Limits::FALLBACK_KEY_OPERATIONS);
    }
}
