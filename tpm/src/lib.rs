//! `sealgate-tpm`: the one crate of Sealgate that talks to the TPM (through tss-esapi).
//!
//! It seals the vault's 256-bit key to the TPM under a PolicyPCR policy and unseals it at
//! start:
//!
//! - [`Tpm::connect`] opens `device:/dev/tpmrm0` on the box, or `swtpm:path=SOCKET` /
//!   `swtpm:host=H,port=P` in tests;
//! - [`Tpm::seal`] binds a secret to the current values of a [`PcrSelection`] (default PCR 7);
//! - [`Tpm::seal_for_predicted`] binds it to values the PCRs will have after an update, so an
//!   update can re-seal before it reboots (see [`policy_pcr_digest`], [`pcr_extend_sha256`]);
//! - [`Tpm::unseal`] opens a [`SealedBlob`], or fails with [`TpmError::PolicyMismatch`].
//!
//! The storage key and the sealed objects have `noDA`: wrong guesses and power cuts never
//! lock the TPM out. Secrets are returned in [`zeroize::Zeroizing`] buffers and are never
//! logged or printed by `Debug`.
//!
//! With the `test-support` feature, [`swtpm`] starts a private swtpm per test.

mod blob;
mod error;
mod pcr;
mod relay;
mod tcti;
mod tpm;

#[cfg(feature = "test-support")]
pub mod swtpm;

pub use blob::SealedBlob;
pub use error::TpmError;
pub use pcr::{MAX_PCR, PcrSelection, pcr_extend_sha256, policy_pcr_digest};
pub use tpm::Tpm;
#[cfg(feature = "test-support")]
pub use tpm::WrongAuth;
pub use zeroize::Zeroizing;
