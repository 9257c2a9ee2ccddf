//! Raw RSA through AWS-LC: the one module of the engine that calls C.
//!
//! aws-lc-rs's safe API cannot do what S/MIME needs here: PKCS#1 v1.5 key transport with
//! implicit rejection (the padding check must be ours, in constant time), OAEP with a hash
//! different from its MGF1 hash, and PSS signatures with any salt length. So we do the modular
//! exponentiation in AWS-LC (blinded, constant time) and the padding in Rust.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use aws_lc_sys as sys;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An RSA private key held by AWS-LC. Freed on drop; AWS-LC zeroes it.
pub(crate) struct RsaPrivate {
    rsa: NonNull<sys::RSA>,
    size: usize,
}

// SAFETY: AWS-LC's RSA objects are safe to use from several threads for private-key
// operations (blinding state is locked internally); we never mutate the key after creation.
unsafe impl Send for RsaPrivate {}
// SAFETY: as above.
unsafe impl Sync for RsaPrivate {}

impl Drop for RsaPrivate {
    fn drop(&mut self) {
        // SAFETY: `rsa` came from RSA_private_key_from_bytes/EVP_PKEY_get1_RSA and is owned.
        unsafe { sys::RSA_free(self.rsa.as_ptr()) }
    }
}

impl RsaPrivate {
    /// Loads an RSAPrivateKey (PKCS#1 DER).
    pub(crate) fn from_pkcs1(der: &[u8]) -> Result<RsaPrivate> {
        // SAFETY: pointer and length describe a live slice; the result is null or owned.
        let rsa = unsafe { sys::RSA_private_key_from_bytes(der.as_ptr(), der.len()) };
        let rsa = NonNull::new(rsa).ok_or_else(|| Error::Key("invalid RSA private key".into()))?;
        // SAFETY: rsa is a valid RSA object.
        let size = unsafe { sys::RSA_size(rsa.as_ptr()) } as usize;
        if size < 128 {
            // SAFETY: owned, freed once.
            unsafe { sys::RSA_free(rsa.as_ptr()) };
            return Err(Error::Key("RSA keys under 1024 bits are refused".into()));
        }
        Ok(RsaPrivate { rsa, size })
    }

    /// Modulus length in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// `c^d mod n`, output left-padded to the modulus length. The input must have that length.
    pub(crate) fn raw_private(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if input.len() != self.size {
            return Err(Error::Decrypt);
        }
        let mut out = Zeroizing::new(vec![0u8; self.size]);
        let mut out_len: usize = 0;
        // SAFETY: out has `size` bytes of room; input is `size` bytes; rsa is valid.
        let ok = unsafe {
            sys::RSA_decrypt(
                self.rsa.as_ptr(),
                &mut out_len,
                out.as_mut_ptr(),
                out.len(),
                input.as_ptr(),
                input.len(),
                sys::RSA_NO_PADDING,
            )
        };
        if ok != 1 || out_len != self.size {
            // Input not below the modulus: public knowledge, not a padding oracle.
            clear_errors();
            return Err(Error::Decrypt);
        }
        Ok(out)
    }
}

/// An RSA public key held by AWS-LC.
pub(crate) struct RsaPublic {
    rsa: NonNull<sys::RSA>,
    size: usize,
}

impl Drop for RsaPublic {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { sys::RSA_free(self.rsa.as_ptr()) }
    }
}

impl RsaPublic {
    /// Loads an RSAPublicKey (PKCS#1 DER, the BIT STRING content of an RSA SPKI).
    pub(crate) fn from_pkcs1(der: &[u8]) -> Result<RsaPublic> {
        // SAFETY: pointer and length describe a live slice.
        let rsa = unsafe { sys::RSA_public_key_from_bytes(der.as_ptr(), der.len()) };
        let rsa = NonNull::new(rsa).ok_or_else(|| {
            clear_errors();
            Error::Key("invalid RSA public key".into())
        })?;
        // SAFETY: valid RSA object.
        let size = unsafe { sys::RSA_size(rsa.as_ptr()) } as usize;
        Ok(RsaPublic { rsa, size })
    }

    /// Modulus length in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// `s^e mod n` (signature verification and encryption primitive).
    pub(crate) fn raw_public(&self, input: &[u8]) -> Result<Vec<u8>> {
        if input.len() != self.size {
            return Err(Error::Malformed("RSA value has the wrong length".into()));
        }
        let mut out = vec![0u8; self.size];
        let mut out_len: usize = 0;
        // SAFETY: out has `size` bytes; input is `size` bytes; rsa is valid.
        let ok = unsafe {
            sys::RSA_verify_raw(
                self.rsa.as_ptr(),
                &mut out_len,
                out.as_mut_ptr(),
                out.len(),
                input.as_ptr(),
                input.len(),
                sys::RSA_NO_PADDING,
            )
        };
        if ok != 1 || out_len != self.size {
            clear_errors();
            return Err(Error::Malformed("RSA value out of range".into()));
        }
        Ok(out)
    }
}

fn clear_errors() {
    // SAFETY: clears this thread's AWS-LC error queue; no pointers involved.
    unsafe { sys::ERR_clear_error() }
}
