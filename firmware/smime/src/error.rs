//! The engine's one error type.
//!
//! Variants tell apart faults of the peer's input ([`Error::Malformed`]), things we do not
//! implement ([`Error::Unsupported`]), a message we cannot open ([`Error::Decrypt`]), and
//! misuse by the caller ([`Error::Key`], [`Error::Usage`]). The wording of each is meant
//! for one line on stderr or in a result header.

use std::fmt;

/// Everything that can go wrong in the S/MIME engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input is not well-formed (ASN.1, CMS, MIME, base64, PEM). The string says where.
    Malformed(String),
    /// The input is well-formed but uses an algorithm or structure we do not implement.
    Unsupported(String),
    /// None of the recipient entries of the message names a key we hold.
    NoMatchingRecipient,
    /// A recipient entry names one of our keys but the message cannot be opened with it.
    ///
    /// Wrong key, bad RSA padding and corrupt ciphertext all end here with the same words, so
    /// that a caller cannot be used as a padding oracle (implicit rejection).
    Decrypt,
    /// A key or certificate given by the caller is unusable (wrong format, wrong password,
    /// key and certificate do not match, unsupported key type).
    Key(String),
    /// The caller asked for something that cannot be done (e.g. encrypt to no recipient).
    Usage(String),
    /// The input is larger than a limit.
    TooLarge(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(s) => write!(f, "malformed input: {s}"),
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
            Error::NoMatchingRecipient => {
                f.write_str("not addressed to any key we hold (no matching recipient)")
            }
            Error::Decrypt => f.write_str(
                "decryption failed: the key does not open this message or the message is corrupt",
            ),
            Error::Key(s) => write!(f, "key error: {s}"),
            Error::Usage(s) => write!(f, "{s}"),
            Error::TooLarge(s) => write!(f, "too large: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for [`Error::Malformed`].
pub(crate) fn malformed(what: impl Into<String>) -> Error {
    Error::Malformed(what.into())
}

/// Shorthand for [`Error::Unsupported`].
pub(crate) fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}
