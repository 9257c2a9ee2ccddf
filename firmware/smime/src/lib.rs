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
