//! Sealgate's S/MIME engine: CMS (RFC 5652) and S/MIME 4.0 (RFC 8551) messages in and out.
//!
//! The engine does no I/O. It reads BER and DER leniently, writes DER, and never panics on
//! input. Private keys are used only through the [`keys::PrivateKey`] capability, so a key held
//! by the vault, a TPM or an HSM stands behind the same interface as one loaded from a file.

pub mod asn1;
pub mod error;
pub mod mime;
pub mod oid;

pub use error::{Error, Result};
mod aes_kw;
pub mod cert;
pub mod chain;
pub mod crypto;
pub mod envelope;
pub mod keys;
pub mod message;
mod rsa_raw;
pub mod signed;

/// Bounds on the work one message can make the engine do (the amplification limits).
///
/// A message is attacker-controlled: every recipient entry naming one of our keys would cost
/// a private-key operation (and, through the vault, an audit entry) and a content decryption,
/// and every SignerInfo a signature verification and a chain validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RecipientInfos read in one encrypted layer; a message with more is refused
    /// (`Unsupported`), before any private-key operation.
    pub max_recipient_entries: usize,
    /// SignerInfos verified in one signed layer; further signers are not verified and make
    /// the verdict invalid.
    pub max_signers: usize,
}

impl Limits {
    /// Private-key operations allowed in the fallback pass that tries every key on every entry
    /// (when no entry names one of our keys: clients that write wrong identifiers).
    pub const FALLBACK_KEY_OPERATIONS: usize = 16;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipient_entries: 256,
            max_signers: 16,
        }
    }
}
