//! The on-disk form of a sealed vault key.
//!
//! Layout (all integers big-endian), version 1 and 2:
//!
//! ```text
//! magic      8 bytes  "SGTPMSB\0"
//! version    u8       1 or 2
//! parent     u8       1 = ECC P-256 storage primary key (noDA) in the owner hierarchy
//! bank       u16      0x000B (TPM_ALG_SHA256)
//! npcrs      u8       1..=24, then npcrs bytes: the PCR indices, strictly ascending
//! policy     u16 len + bytes   the PolicyPCR digest (32 bytes) the object's authPolicy holds
//! public     u32 len + bytes   the marshalled TPMT_PUBLIC of the sealed object
//! private    u32 len + bytes   the TPM2B_PRIVATE buffer (encrypted by the storage key)
//! erase NV   u32      version 2 only: the NV index of the box's erase secret
//! ```
//!
//! A version 2 blob seals the secret XORed with a random 256-bit *erase secret* kept in a TPM
//! NV index: unsealing reads the index too, and undefining it (the factory wipe) makes every
//! such blob, including copies of the database, useless. Version 1 blobs (no erase secret)
//! still open.
//!
//! Nothing in it is secret in the clear: the private area is encrypted and integrity-protected
//! by the TPM under a key that never leaves it.

use std::fmt;

use crate::TpmError;
use crate::pcr::{PcrSelection, TPM_ALG_SHA256};

const MAGIC: &[u8; 8] = b"SGTPMSB\0";
const VERSION_PLAIN: u8 = 1;
const VERSION_ERASABLE: u8 = 2;
/// The parent key kind this crate seals under.
pub(crate) const PARENT_ECC_P256_SRK: u8 = 1;
/// Upper bound for the public and private areas (TPM2B sizes are far below this).
const MAX_AREA: usize = 4096;

/// A 256-bit secret sealed by the TPM under a PCR policy, ready to be stored on disk.
///
/// Produced by [`crate::Tpm::seal`] / [`crate::Tpm::seal_for_predicted`], read back with
/// [`SealedBlob::from_bytes`], opened with [`crate::Tpm::unseal`].
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    pub(crate) pcrs: PcrSelection,
    pub(crate) policy_digest: [u8; 32],
    pub(crate) public: Vec<u8>,
    pub(crate) private: Vec<u8>,
    /// The NV index of the erase secret the sealed value is XORed with (version 2).
    pub(crate) erase_index: Option<u32>,
}

impl SealedBlob {
    /// The NV index of the erase secret this blob needs (`None`: a version 1 blob, which a
    /// wipe cannot make useless; re-seal it).
    pub fn erase_index(&self) -> Option<u32> {
        self.erase_index
    }

    /// The PCRs (SHA-256 bank) whose values the secret is bound to.
    pub fn pcrs(&self) -> &PcrSelection {
        &self.pcrs
    }

    /// The PolicyPCR digest the sealed object's authPolicy holds.
    pub fn policy_digest(&self) -> &[u8; 32] {
        &self.policy_digest
    }

    /// Serializes the blob (see the module documentation for the layout).
    pub fn to_bytes(&self) -> Vec<u8> {
        let indices = self.pcrs.indices();
        let mut out = Vec::with_capacity(64 + self.public.len() + self.private.len());
        out.extend_from_slice(MAGIC);
        out.push(if self.erase_index.is_some() {
            VERSION_ERASABLE
        } else {
            VERSION_PLAIN
        });
        out.push(PARENT_ECC_P256_SRK);
        out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        // At most 24 PCRs: always fits in a u8.
        out.push(u8::try_from(indices.len()).unwrap_or(u8::MAX));
        out.extend(indices.iter().map(|&i| u8::try_from(i).unwrap_or(u8::MAX)));
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&self.policy_digest);
        for area in [&self.public, &self.private] {
            out.extend_from_slice(&u32::try_from(area.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(area);
        }
        if let Some(i) = self.erase_index {
            out.extend_from_slice(&i.to_be_bytes());
        }
        out
    }

    /// Parses bytes written by [`SealedBlob::to_bytes`]. Refuses unknown versions, unknown
    /// parent kinds, out-of-range lengths and trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader { rest: bytes };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(bad("not a Sealgate sealed blob (wrong magic)"));
        }
        let version = r.u8()?;
        if version != VERSION_PLAIN && version != VERSION_ERASABLE {
            return Err(bad(&format!("unsupported version {version}")));
        }
        let parent = r.u8()?;
        if parent != PARENT_ECC_P256_SRK {
            return Err(bad(&format!("unknown parent key kind {parent}")));
        }
        let bank = u16::from_be_bytes(r.array::<2>()?);
        if bank != TPM_ALG_SHA256 {
            return Err(bad(&format!("unsupported PCR bank {bank:#06x}")));
        }
        let n = usize::from(r.u8()?);
        let raw = r.take(n)?;
        if raw.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("PCR indices are not strictly ascending"));
        }
        let indices: Vec<u32> = raw.iter().map(|&b| u32::from(b)).collect();
        let pcrs = PcrSelection::sha256(&indices).map_err(|e| bad(&e.to_string()))?;
        let plen = usize::from(u16::from_be_bytes(r.array::<2>()?));
        if plen != 32 {
            return Err(bad(&format!("policy digest of {plen} bytes (want 32)")));
        }
        let policy_digest = r.array::<32>()?;
        let public = r.area()?.to_vec();
        let private = r.area()?.to_vec();
        let erase_index = if version == VERSION_ERASABLE {
            Some(u32::from_be_bytes(r.array::<4>()?))
        } else {
            None
        };
        if !r.rest.is_empty() {
            return Err(bad(&format!("{} trailing bytes", r.rest.len())));
        }
        Ok(SealedBlob {
            pcrs,
            policy_digest,
            public,
            private,
            erase_index,
        })
    }
}

impl fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedBlob")
            .field("pcrs", &self.pcrs)
            .field("policy_digest", &hex(&self.policy_digest))
            .field("public_len", &self.public.len())
            .field("private_len", &self.private.len())
            .field("erase_index", &self.erase_index)
            .finish()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(why: &str) -> TpmError {
    TpmError::BadBlob(why.to_string())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        if self.rest.len() < n {
            return Err(bad("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TpmError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn area(&mut self) -> Result<&'a [u8], TpmError> {
        let len = u32::from_be_bytes(self.array::<4>()?);
        let len = usize::try_from(len).map_err(|_| bad("area length overflows"))?;
        if len == 0 || len > MAX_AREA {
            return Err(bad(&format!(
                "area length {len} out of range 1..={MAX_AREA}"
            )));
        }
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SealedBlob {
        SealedBlob {
            pcrs: PcrSelection::sha256(&[0, 7]).expect("sel"),
            policy_digest: [0xAB; 32],
            public: vec![1, 2, 3],
            private: vec![4, 5, 6, 7],
            erase_index: None,
        }
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let bytes = b.to_bytes();
        assert_eq!(bytes[8], 1, "no erase secret: version 1, as before");
        assert_eq!(SealedBlob::from_bytes(&bytes).expect("parse"), b);
        let v2 = SealedBlob {
            erase_index: Some(0x0153_4701),
            ..sample()
        };
        let bytes = v2.to_bytes();
        assert_eq!(bytes[8], 2);
        assert_eq!(SealedBlob::from_bytes(&bytes).expect("parse"), v2);
        for cut in 0..bytes.len() {
            assert!(
                SealedBlob::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn refuses_damage() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                SealedBlob::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(SealedBlob::from_bytes(&long).is_err());
        let mut v2 = bytes.clone();
        v2[8] = 3;
        assert!(matches!(
            SealedBlob::from_bytes(&v2),
            Err(TpmError::BadBlob(_))
        ));
        let mut unsorted = bytes;
        unsorted.swap(13, 14);
        assert!(SealedBlob::from_bytes(&unsorted).is_err());
    }

    #[test]
    fn debug_shows_no_private_area() {
        let text = format!("{:?}", sample());
        assert!(text.contains("private_len: 4"));
        assert!(!text.contains("[4, 5, 6, 7]"));
    }
}
