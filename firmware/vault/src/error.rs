//! The vault's one error type. No variant ever carries key material or the recovery secret.

use std::fmt;
use std::path::PathBuf;

use crate::sealer::SealerKind;

/// Everything that can go wrong in the vault.
///
/// Operator mistakes ([`VaultError::Usage`], [`VaultError::Import`], [`VaultError::SealerMismatch`]),
/// a missing or changed TPM ([`VaultError::Unseal`]), and damage to the stored data
/// ([`VaultError::Corrupt`]) are told apart; each message is one line for stderr.
#[derive(Debug)]
#[non_exhaustive]
pub enum VaultError {
    /// There is no vault in the data directory.
    NotInitialised(PathBuf),
    /// `init` was asked for a data directory that already holds a vault.
    AlreadyInitialised(PathBuf),
    /// The vault was created with another sealer than the one given.
    SealerMismatch {
        /// The sealer the vault was created with.
        vault: SealerKind,
        /// The sealer the caller passed.
        given: SealerKind,
    },
    /// The vault key could not be unsealed (TPM missing, PCRs changed, another TPM).
    Unseal(String),
    /// The recovery secret is malformed or does not open this vault.
    Recovery(String),
    /// A PKCS#12 or PEM import was refused (wrong password, key and certificate do not match).
    /// Nothing was changed.
    Import(String),
    /// The user has no key of the kind asked for.
    NoKey(String),
    /// There is no CA yet (`ca init`).
    NoCa,
    /// A CA exists already.
    CaExists,
    /// The caller asked for something that cannot be done.
    Usage(String),
    /// Stored data failed an integrity check (a record does not decrypt, the audit chain is
    /// broken). Names the record, never its content.
    Corrupt(String),
    /// The database is open in another process.
    Busy(PathBuf),
    /// The database or a file could not be read or written.
    Storage(String),
    /// Certificate issuing failed.
    Ca(String),
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultError::NotInitialised(p) => {
                write!(f, "no vault in {} (create one with `sealctl vault init`)", p.display())
            }
            VaultError::AlreadyInitialised(p) => write!(f, "{} already holds a vault", p.display()),
            VaultError::SealerMismatch { vault: SealerKind::Software, .. } => f.write_str(
                "this vault uses the software sealer (NOT protected by a TPM): pass --danger-software-sealer to open it",
            ),
            VaultError::SealerMismatch { vault: SealerKind::Tpm, .. } => f.write_str(
                "this vault is sealed by a TPM: pass --tpm TCTI (not --danger-software-sealer) to open it",
            ),
            VaultError::Unseal(s) => write!(f, "cannot unseal the vault key: {s}"),
            VaultError::Recovery(s) => write!(f, "recovery: {s}"),
            VaultError::Import(s) => write!(f, "import refused, nothing changed: {s}"),
            VaultError::NoKey(s) => write!(f, "no key: {s}"),
            VaultError::NoCa => f.write_str("the vault has no CA yet (create one with `sealctl ca init`)"),
            VaultError::CaExists => f.write_str("the vault already has a CA"),
            VaultError::Usage(s) => f.write_str(s),
            VaultError::Corrupt(s) => write!(f, "vault data failed an integrity check: {s}"),
            VaultError::Busy(p) => write!(f, "the vault {} is in use by another process", p.display()),
            VaultError::Storage(s) => write!(f, "vault storage: {s}"),
            VaultError::Ca(s) => write!(f, "CA: {s}"),
        }
    }
}

impl std::error::Error for VaultError {}

/// The vault's result type.
pub type Result<T> = std::result::Result<T, VaultError>;

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for VaultError {
            fn from(e: $t) -> Self {
                VaultError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error,
    serde_json::Error
);

impl From<redb::DatabaseError> for VaultError {
    fn from(e: redb::DatabaseError) -> Self {
        VaultError::Storage(e.to_string())
    }
}

impl From<rcgen::Error> for VaultError {
    fn from(e: rcgen::Error) -> Self {
        VaultError::Ca(e.to_string())
    }
}
