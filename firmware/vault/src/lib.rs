//! `sealgate-vault`: the box's key vault.
//!
//! One redb database (`vault.redb` in the data directory) holds users' key pairs, their
//! certificates, the built-in CA and an append-only, hash-chained audit log. Private keys are
//! encrypted with AES-256-GCM under a random 256-bit *vault key*, with the record's id as
//! associated data. The vault key itself is never stored in clear:
//!
//! - a [`Sealer`] seals it: the TPM ([`TpmSealer`], through `sealgate-tpm`) or, only when the
//!   operator chose it explicitly, a file ([`SoftwareSealer`], `--danger-software-sealer`);
//! - a [`RecoverySecret`], shown once at [`Vault::init`], wraps it independently so that the
//!   vault survives a dead TPM or a move to a new box ([`Vault::recover`]).
//!
//! The S/MIME engine never sees key bytes: [`Vault::keys_for`] hands out [`VaultKey`]s, which
//! implement [`sealgate_smime::keys::PrivateKey`] and decrypt their PKCS#8 only inside each
//! call, zeroizing it afterwards.
//!
//! Every change (import, issue, renewal, revocation, export, recovery, re-sealing) is one
//! redb write transaction that also appends its audit entry, so a crash leaves the old or the
//! new state. Every use of a private key (decrypt, sign) is audited too, in batches (see
//! [`Vault::set_use_audit_batch`]).
//!
//! Updates: [`Vault::reseal_for_update`] stores the vault key sealed for the PCR values of
//! the updated system next to the current copy; [`Vault::open`] tries the copies newest
//! first; [`Vault::commit_update`] drops the older ones once the update is known good.

#![forbid(unsafe_code)]

mod accounts;
mod admin_tokens;
mod audit;
mod ca;
mod capabilities;
mod cipher;
mod error;
mod key;
mod lifecycle;
mod pending;
mod recipients;
mod record;
mod recovery;
mod sealer;
mod store;
mod tls_request;
mod totp;

pub use accounts::{
    AccountInfo, MAX_ACCOUNTS, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, Role, check_password_policy,
    normalise_username,
};
pub use admin_tokens::{ADMIN_TOKEN_PREFIX, AdminTokenInfo, MAX_ADMIN_TOKENS};
pub use audit::{AuditCheck, AuditEntry, USE_BATCH_DELAY, USE_BATCH_ENTRIES};
pub use ca::{CaInfo, CaOverview, CaSettings, KeyAlgorithm};
pub use error::{Result, VaultError};
pub use key::{ActingKey, VaultKey};
pub use pending::{MAX_PENDING, PendingCertificate, PendingOutcome};
pub use recipients::{RecipientCertificate, fingerprint};
pub use record::{KeyInfo, Purpose};
pub use recovery::RecoverySecret;
pub use sealer::{DEFAULT_TCTI, SOFTWARE_KEY_FILE, Sealer, SealerKind, SoftwareSealer, TpmSealer};
pub use store::{CertFormat, DB_FILE, Vault, VaultStatus};
pub use tls_request::TlsRequest;
pub use totp::{TOTP_DIGITS, TOTP_STEP_SECS, TotpSecret};
