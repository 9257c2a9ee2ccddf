//! Symmetric primitives and digests, all from aws-lc-rs, named as CMS names them.

use aws_lc_rs::{aead, cipher, digest, hmac, rand};
use zeroize::Zeroizing;

use crate::asn1::{Tlv, der, tag};
use crate::error::{Error, Result, malformed, unsupported};
use crate::oid;

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlg {
    /// SHA-1 (read only; reported as weak).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// From a digest algorithm OID.
    pub fn from_oid(o: &[u8]) -> Result<HashAlg> {
        Ok(match o {
            x if x == oid::SHA1 => HashAlg::Sha1,
            x if x == oid::SHA224 => HashAlg::Sha224,
            x if x == oid::SHA256 => HashAlg::Sha256,
            x if x == oid::SHA384 => HashAlg::Sha384,
            x if x == oid::SHA512 => HashAlg::Sha512,
            x if x == oid::MD5 => return Err(unsupported("MD5 digests")),
            x => return Err(unsupported(format!("digest algorithm {}", oid::name(x)))),
        })
    }

    /// The digest algorithm OID.
    pub fn oid(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => oid::SHA1,
            HashAlg::Sha224 => oid::SHA224,
            HashAlg::Sha256 => oid::SHA256,
            HashAlg::Sha384 => oid::SHA384,
            HashAlg::Sha512 => oid::SHA512,
        }
    }

    /// The `micalg` parameter of multipart/signed.
    pub fn micalg(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha-1",
            HashAlg::Sha224 => "sha-224",
            HashAlg::Sha256 => "sha-256",
            HashAlg::Sha384 => "sha-384",
            HashAlg::Sha512 => "sha-512",
        }
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        self.algorithm().output_len()
    }

    pub(crate) fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha224 => &digest::SHA224,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    /// Digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.algorithm(), data).as_ref().to_vec()
    }

    /// A streaming hasher.
    pub fn hasher(self) -> digest::Context {
        digest::Context::new(self.algorithm())
    }

    /// The DER AlgorithmIdentifier (parameters absent, as RFC 5754 prefers).
    pub fn algorithm_identifier(self) -> Vec<u8> {
        der::algorithm(self.oid(), None)
    }
}

/// Random bytes from the system generator.
pub fn random(n: usize) -> Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v).map_err(|_| Error::Usage("system random generator failed".into()))?;
    Ok(v)
}

/// `buf[from..]` as the in-place buffer of a padding block cipher: the cipher sees only the
/// content, and the padding it appends lands at the end of `buf`.
struct Tail<'a> {
    buf: &'a mut Vec<u8>,
    from: usize,
}

impl AsMut<[u8]> for Tail<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.from..).unwrap_or_default()
    }
}

impl<'b> Extend<&'b u8> for Tail<'_> {
    fn extend<I: IntoIterator<Item = &'b u8>>(&mut self, iter: I) {
        self.buf.extend(iter);
    }
}

/// A content-encryption algorithm with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentCipher {
    /// AES-CBC (key length 16, 24 or 32) with its IV.
    AesCbc {
        /// Key length in bytes.
        key_len: usize,
        /// The IV.
        iv: Vec<u8>,
    },
    /// Triple-DES CBC with its IV (decryption only).
    DesEde3Cbc {
        /// The IV.
        iv: Vec<u8>,
    },
    /// AES-GCM (AuthEnvelopedData).
    AesGcm {
        /// Key length in bytes.
        key_len: usize,
        /// The nonce.
        nonce: Vec<u8>,
        /// Tag length in bytes.
        tag_len: usize,
    },
    /// ChaCha20-Poly1305 (AuthEnvelopedData, RFC 8103).
    ChaCha20Poly1305 {
        /// The nonce.
        nonce: Vec<u8>,
    },
}

/// The names `sealctl --cipher` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherChoice {
    /// AES-256-CBC in EnvelopedData (the default every client reads).
    Aes256Cbc,
    /// AES-128-CBC in EnvelopedData.
    Aes128Cbc,
    /// AES-256-GCM in AuthEnvelopedData.
    Aes256Gcm,
    /// AES-128-GCM in AuthEnvelopedData.
    Aes128Gcm,
}

impl std::str::FromStr for CipherChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "aes256-cbc" | "aes-256-cbc" => CipherChoice::Aes256Cbc,
            "aes128-cbc" | "aes-128-cbc" => CipherChoice::Aes128Cbc,
            "aes256-gcm" | "aes-256-gcm" => CipherChoice::Aes256Gcm,
            "aes128-gcm" | "aes-128-gcm" => CipherChoice::Aes128Gcm,
            other => {
                return Err(Error::Usage(format!(
                    "unknown cipher {other:?} (use aes256-cbc, aes128-cbc, aes256-gcm or aes128-gcm)"
                )));
            }
        })
    }
}

impl CipherChoice {
    /// True for the AEAD choices (AuthEnvelopedData).
    pub fn is_aead(self) -> bool {
        matches!(self, CipherChoice::Aes256Gcm | CipherChoice::Aes128Gcm)
    }

    /// A fresh cipher instance with random IV/nonce.
    pub fn instantiate(self) -> Result<ContentCipher> {
        Ok(match self {
            CipherChoice::Aes256Cbc => ContentCipher::AesCbc {
                key_len: 32,
                iv: random(16)?,
            },
            CipherChoice::Aes128Cbc => ContentCipher::AesCbc {
                key_len: 16,
                iv: random(16)?,
            },
            CipherChoice::Aes256Gcm => ContentCipher::AesGcm {
                key_len: 32,
                nonce: random(12)?,
                tag_len: 16,
            },
            CipherChoice::Aes128Gcm => ContentCipher::AesGcm {
                key_len: 16,
                nonce: random(12)?,
                tag_len: 16,
            },
        })
    }
}

impl ContentCipher {
    /// Reads a ContentEncryptionAlgorithmIdentifier.
    pub fn from_algorithm_identifier(alg: &Tlv<'_>) -> Result<ContentCipher> {
        let mut r = alg.reader();
        let id = r.read(tag::OID, "content encryption algorithm")?.value;
        let params = if r.is_empty() {
            None
        } else {
            Some(r.read_any()?)
        };
        let iv = |p: Option<Tlv<'_>>, n: usize| -> Result<Vec<u8>> {
            let p = p.ok_or_else(|| malformed("missing IV"))?;
            let v = p.octets()?.into_owned();
            if v.len() != n {
                return Err(malformed(format!("IV of {} bytes, expected {n}", v.len())));
            }
            Ok(v)
        };
        let gcm = |p: Option<Tlv<'_>>, key_len: usize| -> Result<ContentCipher> {
            let p = p.ok_or_else(|| malformed("missing GCM parameters"))?;
            let mut g = p.reader();
            let nonce = g.read_any()?.octets()?.into_owned();
            let tag_len = match g.read_optional(tag::INTEGER)? {
                Some(t) => usize::try_from(t.small_uint()?).unwrap_or(0),
                None => 12,
            };
            if nonce.len() != 12 {
                return Err(unsupported(format!("GCM nonce of {} bytes", nonce.len())));
            }
            if tag_len != 16 {
                return Err(unsupported(format!("GCM tag of {tag_len} bytes")));
            }
            Ok(ContentCipher::AesGcm {
                key_len,
                nonce,
                tag_len,
            })
        };
        Ok(match id {
            x if x == oid::AES128_CBC => ContentCipher::AesCbc {
                key_len: 16,
                iv: iv(params, 16)?,
            },
            x if x == oid::AES192_CBC => ContentCipher::AesCbc {
                key_len: 24,
                iv: iv(params, 16)?,
            },
            x if x == oid::AES256_CBC => ContentCipher::AesCbc {
                key_len: 32,
                iv: iv(params, 16)?,
            },
            x if x == oid::DES_EDE3_CBC => ContentCipher::DesEde3Cbc { iv: iv(params, 8)? },
            x if x == oid::AES128_GCM => gcm(params, 16)?,
            x if x == oid::AES192_GCM => gcm(params, 24)?,
            x if x == oid::AES256_GCM => gcm(params, 32)?,
            x if x == oid::CHACHA20_POLY1305 => ContentCipher::ChaCha20Poly1305 {
                nonce: iv(params, 12)?,
            },
            x if x == oid::RC2_CBC => {
                return Err(unsupported(
                    "RC2-CBC content encryption (an obsolete export cipher)",
                ));
            }
            x if x == oid::DES_CBC => return Err(unsupported("single-DES content encryption")),
            x => {
                return Err(unsupported(format!(
                    "content encryption algorithm {}",
                    oid::name(x)
                )));
            }
        })
    }

    /// The DER AlgorithmIdentifier.
    pub fn algorithm_identifier(&self) -> Vec<u8> {
        match self {
            ContentCipher::AesCbc { key_len, iv } => {
                let o = match key_len {
                    16 => oid::AES128_CBC,
                    24 => oid::AES192_CBC,
                    _ => oid::AES256_CBC,
                };
                der::algorithm(o, Some(&der::octet_string(iv)))
            }
            ContentCipher::DesEde3Cbc { iv } => {
                der::algorithm(oid::DES_EDE3_CBC, Some(&der::octet_string(iv)))
            }
            ContentCipher::AesGcm {
                key_len,
                nonce,
                tag_len,
            } => {
                let o = match key_len {
                    16 => oid::AES128_GCM,
                    24 => oid::AES192_GCM,
                    _ => oid::AES256_GCM,
                };
                let params = der::seq(&[&der::octet_string(nonce), &der::uint(*tag_len as u64)]);
                der::algorithm(o, Some(&params))
            }
            ContentCipher::ChaCha20Poly1305 { nonce } => {
                der::algorithm(oid::CHACHA20_POLY1305, Some(&der::octet_string(nonce)))
            }
        }
    }

    /// A readable name.
    pub fn name(&self) -> &'static str {
        match self {
            ContentCipher::AesCbc { key_len: 16, .. } => "aes128-cbc",
            ContentCipher::AesCbc { key_len: 24, .. } => "aes192-cbc",
            ContentCipher::AesCbc { .. } => "aes256-cbc",
            ContentCipher::DesEde3Cbc { .. } => "des-ede3-cbc",
            ContentCipher::AesGcm { key_len: 16, .. } => "aes128-gcm",
            ContentCipher::AesGcm { key_len: 24, .. } => "aes192-gcm",
            ContentCipher::AesGcm { .. } => "aes256-gcm",
            ContentCipher::ChaCha20Poly1305 { .. } => "chacha20-poly1305",
        }
    }

    /// The content-encryption key length in bytes.
    pub fn key_len(&self) -> usize {
        match self {
            ContentCipher::AesCbc { key_len, .. } | ContentCipher::AesGcm { key_len, .. } => {
                *key_len
            }
            ContentCipher::DesEde3Cbc { .. } => 24,
            ContentCipher::ChaCha20Poly1305 { .. } => 32,
        }
    }

    /// True for AEAD ciphers (AuthEnvelopedData).
    pub fn is_aead(&self) -> bool {
        matches!(
            self,
            ContentCipher::AesGcm { .. } | ContentCipher::ChaCha20Poly1305 { .. }
        )
    }

    fn block_algorithm(&self) -> Result<&'static cipher::Algorithm> {
        Ok(match self {
            ContentCipher::AesCbc { key_len: 16, .. } => &cipher::AES_128,
            ContentCipher::AesCbc { key_len: 24, .. } => &cipher::AES_192,
            ContentCipher::AesCbc { key_len: 32, .. } => &cipher::AES_256,
            #[allow(deprecated)] // 3DES is read for old mail, never written.
            ContentCipher::DesEde3Cbc { .. } => &cipher::DES_EDE3_FOR_LEGACY_USE_ONLY,
            _ => return Err(unsupported("cipher")),
        })
    }

    fn aead_algorithm(&self) -> Result<&'static aead::Algorithm> {
        Ok(match self {
            ContentCipher::AesGcm { key_len: 16, .. } => &aead::AES_128_GCM,
            ContentCipher::AesGcm { key_len: 24, .. } => &aead::AES_192_GCM,
            ContentCipher::AesGcm { key_len: 32, .. } => &aead::AES_256_GCM,
            ContentCipher::ChaCha20Poly1305 { .. } => &aead::CHACHA20_POLY1305,
            _ => return Err(unsupported("cipher")),
        })
    }

    /// Encrypts in place (CBC; PKCS#7 padding added). For AEAD, `aad` is authenticated and the
    /// tag is returned separately.
    pub fn encrypt(&self, key: &[u8], data: Vec<u8>, aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut data = data;
        let tag = self.encrypt_tail(key, &mut data, 0, aad)?;
        Ok((data, tag))
    }

    /// Length of the ciphertext of `n` bytes of content (CBC pads to the next whole block,
    /// always adding at least one byte; AEAD ciphertext is as long as the content).
    pub fn ciphertext_len(&self, n: usize) -> usize {
        match self {
            ContentCipher::AesCbc { .. } => (n / 16 + 1) * 16,
            ContentCipher::DesEde3Cbc { .. } => (n / 8 + 1) * 8,
            _ => n,
        }
    }

    /// Length of the AEAD tag (0 for CBC).
    pub fn tag_len(&self) -> usize {
        match self {
            ContentCipher::AesGcm { tag_len, .. } => *tag_len,
            ContentCipher::ChaCha20Poly1305 { .. } => 16,
            _ => 0,
        }
    }

    /// Encrypts `buf[from..]` in place, where the writer of the CMS structure put the content
    /// (so the content is copied once, into its final place). CBC appends its padding to
    /// `buf`; for AEAD, `aad` is authenticated and the tag is returned.
    pub fn encrypt_tail(
        &self,
        key: &[u8],
        buf: &mut Vec<u8>,
        from: usize,
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let err = |_| Error::Usage("encryption failed".into());
        match self {
            ContentCipher::AesCbc { iv, .. } => {
                let ukey =
                    cipher::UnboundCipherKey::new(self.block_algorithm()?, key).map_err(err)?;
                let k = cipher::PaddedBlockEncryptingKey::cbc_pkcs7(ukey).map_err(err)?;
                let ivc = aws_lc_rs::iv::FixedLength::<16>::try_from(iv.as_slice()).map_err(err)?;
                let mut tail = Tail { buf, from };
                k.less_safe_encrypt(&mut tail, cipher::EncryptionContext::Iv128(ivc))
                    .map_err(err)?;
                Ok(Vec::new())
            }
            ContentCipher::AesGcm { nonce, .. } | ContentCipher::ChaCha20Poly1305 { nonce } => {
                let k = aead::LessSafeKey::new(
                    aead::UnboundKey::new(self.aead_algorithm()?, key).map_err(err)?,
                );
                let n = aead::Nonce::try_assume_unique_for_key(nonce).map_err(err)?;
                let data = buf
                    .get_mut(from..)
                    .ok_or_else(|| Error::Usage("encryption failed".into()))?;
                let tag = k
                    .seal_in_place_separate_tag(n, aead::Aad::from(aad), data)
                    .map_err(err)?;
                Ok(tag.as_ref().to_vec())
            }
            ContentCipher::DesEde3Cbc { .. } => {
                Err(Error::Usage("3DES is never used to encrypt".into()))
            }
        }
    }

    /// Decrypts. Any failure (padding, tag) is [`Error::Decrypt`].
    pub fn decrypt(
        &self,
        key: &[u8],
        mut data: Vec<u8>,
        aad: &[u8],
        tag: &[u8],
    ) -> Result<Vec<u8>> {
        if key.len() != self.key_len() {
            return Err(Error::Decrypt);
        }
        match self {
            ContentCipher::AesCbc { iv, .. } | ContentCipher::DesEde3Cbc { iv } => {
                let bs = if matches!(self, ContentCipher::DesEde3Cbc { .. }) {
                    8
                } else {
                    16
                };
                if data.is_empty() || !data.len().is_multiple_of(bs) {
                    return Err(Error::Decrypt);
                }
                let ukey = cipher::UnboundCipherKey::new(self.block_algorithm()?, key)
                    .map_err(|_| Error::Decrypt)?;
                let k = cipher::PaddedBlockDecryptingKey::cbc_pkcs7(ukey)
                    .map_err(|_| Error::Decrypt)?;
                let ctx = if bs == 8 {
                    cipher::DecryptionContext::Iv64(
                        aws_lc_rs::iv::FixedLength::<8>::try_from(iv.as_slice())
                            .map_err(|_| Error::Decrypt)?,
                    )
                } else {
                    cipher::DecryptionContext::Iv128(
                        aws_lc_rs::iv::FixedLength::<16>::try_from(iv.as_slice())
                            .map_err(|_| Error::Decrypt)?,
                    )
                };
                let n = k.decrypt(&mut data, ctx).map_err(|_| Error::Decrypt)?.len();
                data.truncate(n);
                Ok(data)
            }
            ContentCipher::AesGcm { nonce, .. } | ContentCipher::ChaCha20Poly1305 { nonce } => {
                let k = aead::LessSafeKey::new(
                    aead::UnboundKey::new(self.aead_algorithm()?, key)
                        .map_err(|_| Error::Decrypt)?,
                );
                let n =
                    aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Decrypt)?;
                let n_plain = data.len();
                data.extend_from_slice(tag);
                k.open_in_place(n, aead::Aad::from(aad), &mut data)
                    .map_err(|_| Error::Decrypt)?;
                data.truncate(n_plain);
                Ok(data)
            }
        }
    }
}

/// A key-wrap algorithm (RFC 3394).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlg {
    /// id-aes128-wrap.
    Aes128,
    /// id-aes192-wrap.
    Aes192,
    /// id-aes256-wrap.
    Aes256,
}

impl WrapAlg {
    /// From the key-wrap OID.
    pub fn from_oid(o: &[u8]) -> Result<WrapAlg> {
        Ok(match o {
            x if x == oid::AES128_WRAP => WrapAlg::Aes128,
            x if x == oid::AES192_WRAP => WrapAlg::Aes192,
            x if x == oid::AES256_WRAP => WrapAlg::Aes256,
            x => return Err(unsupported(format!("key wrap algorithm {}", oid::name(x)))),
        })
    }

    /// The OID.
    pub fn oid(self) -> &'static [u8] {
        match self {
            WrapAlg::Aes128 => oid::AES128_WRAP,
            WrapAlg::Aes192 => oid::AES192_WRAP,
            WrapAlg::Aes256 => oid::AES256_WRAP,
        }
    }

    /// KEK length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            WrapAlg::Aes128 => 16,
            WrapAlg::Aes192 => 24,
            WrapAlg::Aes256 => 32,
        }
    }

    /// Wraps `cek` under `kek`.
    pub fn wrap(self, kek: &[u8], cek: &[u8]) -> Result<Vec<u8>> {
        if kek.len() != self.key_len() {
            return Err(Error::Usage("key-wrap key of the wrong length".into()));
        }
        crate::aes_kw::wrap(kek, cek)
    }

    /// Unwraps; an integrity failure is [`Error::Decrypt`].
    pub fn unwrap(self, kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if kek.len() != self.key_len() {
            return Err(Error::Decrypt);
        }
        crate::aes_kw::unwrap(kek, wrapped)
    }
}

/// ANSI X9.63 KDF (SEC 1 §3.6.1), as CMS ECDH uses it (RFC 5753 §7.2).
pub fn x963_kdf(hash: HashAlg, z: &[u8], shared_info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + hash.output_len()));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut h = hash.hasher();
        h.update(z);
        h.update(&counter.to_be_bytes());
        h.update(shared_info);
        out.extend_from_slice(h.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// HKDF (RFC 5869) as RFC 8418 uses it: no salt, `info` = the ECC-CMS-SharedInfo.
pub fn hkdf(hash: HashAlg, ikm: &[u8], info: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
    let alg = match hash {
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
        _ => return Err(unsupported("HKDF hash")),
    };
    let salt = vec![0u8; hash.output_len()];
    let prk = hmac::sign(&hmac::Key::new(alg, &salt), ikm);
    let prk_key = hmac::Key::new(alg, prk.as_ref());
    let mut out = Zeroizing::new(Vec::with_capacity(len + hash.output_len()));
    let mut t: Vec<u8> = Vec::new();
    let mut i: u8 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&prk_key);
        ctx.update(&t);
        ctx.update(info);
        ctx.update(&[i]);
        t = ctx.sign().as_ref().to_vec();
        out.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    Ok(out)
}

/// HMAC-SHA256, for deriving implicit-rejection keys.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn cbc_and_gcm_roundtrip() {
        for c in [
            CipherChoice::Aes128Cbc,
            CipherChoice::Aes256Cbc,
            CipherChoice::Aes128Gcm,
            CipherChoice::Aes256Gcm,
        ] {
            let cc = c.instantiate().unwrap();
            let key = random(cc.key_len()).unwrap();
            let (ct, tag) = cc.encrypt(&key, b"hello world".to_vec(), b"").unwrap();
            assert_eq!(
                cc.decrypt(&key, ct.clone(), b"", &tag).unwrap(),
                b"hello world"
            );
            let mut bad = key.clone();
            bad[0] ^= 1;
            let r = cc.decrypt(&bad, ct, b"", &tag);
            assert!(r.is_err() || r.unwrap() != b"hello world");
        }
    }

    #[test]
    fn key_wrap_roundtrip() {
        for alg in [WrapAlg::Aes128, WrapAlg::Aes192, WrapAlg::Aes256] {
            let kek = random(alg.key_len()).unwrap();
            let cek = random(32).unwrap();
            let w = alg.wrap(&kek, &cek).unwrap();
            assert_eq!(&*alg.unwrap(&kek, &w).unwrap(), cek.as_slice());
            let mut bad = w.clone();
            bad[3] ^= 1;
            assert!(alg.unwrap(&kek, &bad).is_err());
        }
        // RFC 3394 §4.1 test vector.
        let kek: Vec<u8> = (0u8..16).collect();
        let data = [
            0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let w = WrapAlg::Aes128.wrap(&kek, &data).unwrap();
        assert_eq!(
            crate::cert::hex(&w),
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"
        );
    }
}
