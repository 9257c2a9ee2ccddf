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
pub mod cert;
pub mod crypto;
pub mod keys;
mod aes_kw;
mod rsa_raw;
pub mod envelope;
pub mod signed;
pub mod chain;
pub mod message;
