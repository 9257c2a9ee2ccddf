//! AES key wrap (RFC 3394) for every AES key size, through AWS-LC's `AES_wrap_key`.
//!
//! aws-lc-rs's safe key-wrap API has AES-128 and AES-256 only; CMS messages made with
//! AES-192 content use id-aes192-wrap, so we call AWS-LC directly here.
#![allow(unsafe_code)]

use aws_lc_sys as sys;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An expanded AES key, zeroed on drop.
struct Schedule(Box<sys::AES_KEY>);

impl Drop for Schedule {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.rd_key.zeroize();
    }
}

fn schedule(kek: &[u8], decrypt: bool) -> Result<Schedule> {
    if !matches!(kek.len(), 16 | 24 | 32) {
        return Err(Error::Decrypt);
    }
    let mut key: Box<sys::AES_KEY> = Box::new(sys::AES_KEY {
        rd_key: [0; 60],
        rounds: 0,
    });
    let bits = (kek.len() * 8) as u32;
    // SAFETY: kek is a live slice of bits/8 bytes; key points to an AES_KEY we own.
    let rc = unsafe {
        if decrypt {
            sys::AES_set_decrypt_key(kek.as_ptr(), bits, &mut *key)
        } else {
            sys::AES_set_encrypt_key(kek.as_ptr(), bits, &mut *key)
        }
    };
    if rc != 0 {
        return Err(Error::Decrypt);
    }
    Ok(Schedule(key))
}

/// Wraps `cek` (a multiple of 8 bytes, at least 16) under `kek`.
pub(crate) fn wrap(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>> {
    if cek.len() < 16 || !cek.len().is_multiple_of(8) {
        return Err(Error::Usage(
            "key wrap input must be a multiple of 8 bytes".into(),
        ));
    }
    let key = schedule(kek, false).map_err(|_| Error::Usage("bad key-wrap key".into()))?;
    let mut out = vec![0u8; cek.len() + 8];
    // SAFETY: out has in_len + 8 bytes as AES_wrap_key requires; null IV = the default IV.
    let n = unsafe {
        sys::AES_wrap_key(
            &*key.0,
            std::ptr::null(),
            out.as_mut_ptr(),
            cek.as_ptr(),
            cek.len(),
        )
    };
    if n < 0 || n as usize != out.len() {
        return Err(Error::Usage("key wrap failed".into()));
    }
    Ok(out)
}

/// Unwraps; an integrity failure is [`Error::Decrypt`].
pub(crate) fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(Error::Decrypt);
    }
    let key = schedule(kek, true)?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    // SAFETY: out has in_len - 8 bytes as AES_unwrap_key requires; null IV = the default IV.
    let n = unsafe {
        sys::AES_unwrap_key(
            &*key.0,
            std::ptr::null(),
            out.as_mut_ptr(),
            wrapped.as_ptr(),
            wrapped.len(),
        )
    };
    if n < 0 || n as usize != out.len() {
        return Err(Error::Decrypt);
    }
    Ok(out)
}
