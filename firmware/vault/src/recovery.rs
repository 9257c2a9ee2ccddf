//! The recovery secret: 256 random bits in a human-typeable form, independent of the TPM.
//!
//! Text form: Crockford base32 of the 32 secret bytes plus a 2-byte checksum (the first bytes
//! of their SHA-256), in groups of five separated by `-`, 55 characters in all. Typing is
//! forgiving: case, spaces and dashes are ignored; `O` reads as `0`, `I`/`L` as `1`.
//!
//! The key-encryption key is HKDF-SHA256(salt, secret): the secret is uniformly random and
//! 256 bits long, so a slow password hash would add nothing. Only the vault key wrapped under
//! it (AES-256-GCM) is stored.

use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const INFO: &[u8] = b"sealgate vault recovery v1";
const AAD: &[u8] = b"sealgate vault key (recovery wrap)";

/// The vault's recovery secret. Its `Debug` and `Display` never show it: read it once with
/// [`RecoverySecret::expose_text`] to show or write it.
pub struct RecoverySecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RecoverySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoverySecret(..)")
    }
}

impl RecoverySecret {
    pub(crate) fn generate() -> Result<RecoverySecret> {
        let mut s = Zeroizing::new([0u8; 32]);
        cipher::random(&mut *s)?;
        Ok(RecoverySecret(s))
    }

    /// The text to show the operator once (or write to a mode-0600 file).
    pub fn expose_text(&self) -> Zeroizing<String> {
        let check = cipher::sha256(&[&*self.0]);
        let mut bytes = Zeroizing::new(Vec::with_capacity(34));
        bytes.extend_from_slice(&*self.0);
        bytes.extend_from_slice(&check[..2]);
        let mut chars = Zeroizing::new(String::with_capacity(70));
        let (mut acc, mut nbits, mut n) = (0u32, 0u32, 0usize);
        let mut push = |c: u8, chars: &mut String| {
            if n > 0 && n % 5 == 0 {
                chars.push('-');
            }
            chars.push(c as char);
            n += 1;
        };
        for &b in bytes.iter() {
            acc = (acc << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 5 {
                nbits -= 5;
                push(ALPHABET[((acc >> nbits) & 31) as usize], &mut chars);
            }
            acc &= (1 << nbits) - 1;
        }
        if nbits > 0 {
            push(ALPHABET[((acc << (5 - nbits)) & 31) as usize], &mut chars);
        }
        chars
    }

    /// Parses the text form (or a recovery file: `#` comment lines are skipped).
    pub fn parse(text: &str) -> Result<RecoverySecret> {
        let bad =
            |why: &str| VaultError::Recovery(format!("the recovery secret is not valid: {why}"));
        let mut acc = 0u32;
        let mut nbits = 0u32;
        let mut out = Zeroizing::new(Vec::with_capacity(34));
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for c in line.chars() {
                let c = c.to_ascii_uppercase();
                let c = match c {
                    '-' | ' ' | '\t' | '\r' => continue,
                    'O' => '0',
                    'I' | 'L' => '1',
                    c => c,
                };
                let v = ALPHABET
                    .iter()
                    .position(|&a| a as char == c)
                    .ok_or_else(|| bad("unexpected character"))?;
                acc = (acc << 5) | v as u32;
                nbits += 5;
                if nbits >= 8 {
                    nbits -= 8;
                    out.push((acc >> nbits) as u8);
                }
                acc &= (1 << nbits) - 1;
            }
        }
        if out.len() != 34 {
            return Err(bad("wrong length (expected 55 characters)"));
        }
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(&out[..32]);
        if cipher::sha256(&[&*s])[..2] != out[32..34] {
            return Err(bad("checksum mismatch (a typo?)"));
        }
        Ok(RecoverySecret(s))
    }

    fn kek(&self, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&*self.0);
        let okm = prk
            .expand(&[INFO], hkdf::HKDF_SHA256)
            .map_err(|_| VaultError::Recovery("HKDF failed".into()))?;
        let mut k = Zeroizing::new([0u8; 32]);
        okm.fill(&mut *k)
            .map_err(|_| VaultError::Recovery("HKDF failed".into()))?;
        Ok(k)
    }

    /// `salt(16) || AES-GCM(KEK, vault key)`.
    pub(crate) fn wrap(&self, key: &VaultSecret) -> Result<Vec<u8>> {
        let mut salt = [0u8; 16];
        cipher::random(&mut salt)?;
        let kek = self.kek(&salt)?;
        let mut out = salt.to_vec();
        out.extend(cipher::seal(&kek, AAD, key.bytes())?);
        Ok(out)
    }

    pub(crate) fn unwrap(&self, wrapped: &[u8]) -> Result<VaultSecret> {
        if wrapped.len() < 16 {
            return Err(VaultError::Corrupt(
                "the recovery wrap record is truncated".into(),
            ));
        }
        let kek = self.kek(&wrapped[..16])?;
        let plain = cipher::open(&kek, AAD, &wrapped[16..]).ok_or_else(|| {
            VaultError::Recovery("this recovery secret does not open this vault".into())
        })?;
        let mut k = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(VaultError::Corrupt(
                "the recovered vault key has the wrong length".into(),
            ));
        }
        k.copy_from_slice(&plain);
        Ok(VaultSecret::from_bytes(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_typos() {
        let s = RecoverySecret::generate().expect("rng");
        let text = s.expose_text();
        assert_eq!(text.len(), 55 + 10);
        let back = RecoverySecret::parse(&text.to_lowercase()).expect("parse");
        assert_eq!(*back.0, *s.0);
        let file = format!("# comment\n{}\n", &*text);
        assert!(RecoverySecret::parse(&file).is_ok());
        let mut typo: Vec<char> = text.chars().collect();
        typo[3] = if typo[3] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert!(RecoverySecret::parse(&typo).is_err());
        assert_eq!(format!("{s:?}"), "RecoverySecret(..)");
    }

    #[test]
    fn wrap_unwrap() {
        let s = RecoverySecret::generate().expect("rng");
        let key = VaultSecret::generate().expect("rng");
        let w = s.wrap(&key).expect("wrap");
        assert_eq!(s.unwrap(&w).expect("unwrap").bytes(), key.bytes());
        let other = RecoverySecret::generate().expect("rng");
        assert!(other.unwrap(&w).is_err());
    }
}
