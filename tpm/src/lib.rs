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
//! - [`Tpm::seal_erasable`] does the same but also binds the secret to an *erase secret* in a
//!   TPM NV index ([`ERASE_NV_INDEX`]); [`Tpm::erase`] destroys it, which makes every such blob
//!   useless (the factory wipe's crypto-erase);
//! - [`Tpm::unseal`] opens a [`SealedBlob`], or fails with [`TpmError::PolicyMismatch`] (or
//!   [`TpmError::Erased`]).
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
#[cfg(feature = "test-support")]
pub use tpm::WrongAuth;
pub use tpm::{ERASE_NV_INDEX, Tpm};
pub use zeroize::Zeroizing;

/// Silences libtss2's own logging (its `WARNING:`/`ERROR:` lines on stderr, e.g. when the TPM
/// refuses a blob sealed to other PCR values), so that a program's stderr carries only its own
/// messages: this crate reports every failure as a [`TpmError`]. Sets `TSS2_LOG=all+none`
/// unless the variable is already set (an operator debugging the TPM stack keeps control).
///
/// Call it first thing in `main()`, before any other thread exists and before the first
/// TPM connection (libtss2 reads the variable once, when it first logs).
#[allow(unsafe_code)]
pub fn quiet_library_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        // SAFETY: `set_var` is unsound only while another thread may read or write the
        // environment. This function's contract is to be called at program start, before any
        // other thread is spawned; it is the only `unsafe` in this crate.
        unsafe { std::env::set_var("TSS2_LOG", "all+none") };
    }
}
