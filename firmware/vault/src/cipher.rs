//! AES-256-GCM under the vault key, and the vault key itself.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::{Result, VaultError};

/// The 256-bit vault key. Never printed: its `Debug` shows nothing.
pub(crate) struct VaultSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultSecret(..)")
    }
}

impl VaultSecret {
    pub(crate) fn generate() -> Result<VaultSecret> {
        let mut k = Zeroizing::new([0u8; 32]);
        random(&mut *k)?;
        Ok(VaultSecret(k))
    }

    pub(crate) fn from_bytes(b: Zeroizing<[u8; 32]>) -> VaultSecret {
        VaultSecret(b)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Fills `out` from the system's CSPRNG.
pub(crate) fn random(out: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| VaultError::Storage("the random number generator failed".into()))
}

/// `nonce || ciphertext || tag` of `plain` under `key`, bound to `aad`.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let k = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Storage("AES key".into()))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    let mut buf = plain.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| VaultError::Storage("AES-GCM encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    // `buf` held only ciphertext after sealing in place; nothing secret is left behind.
    Ok(out)
}

/// Opens what [`seal`] made; `None` if the key, the AAD or the bytes are wrong.
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let len = k.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

/// SHA-256.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut c = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    // One allocation, no formatter: this runs for every fingerprint a request computes.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 15)]));
    }
    s
}
