//! What Sealgate's programs on one machine share, kept in one place so each rule has one
//! owner:
//!
//! - [`fsio`]: the one way to write a file that must survive a power cut (temporary file in
//!   the same folder, fsync, rename, fsync of the folder), used by the daemon, the vault,
//!   `sealctl` and the console.
//! - [`admin_socket`]: the client of the running daemon's admin socket (a minimal HTTP/1.0
//!   over a Unix socket), used by `sealctl` and the console menu.
//! - [`quarantine`]: the encrypted quarantine store on the data directory, written by the
//!   daemon and read by `sealctl quarantine`.
//! - [`measured`]: the firmware's TPM event log and a PE image's Authenticode ranges, for
//!   the daemon's prediction of an updated slot's PCR 4.
//! - [`test_faults`]: the faults a development test bundle plans for its slot's trial boots,
//!   read by the console's health gate and the daemon's re-sealing (rollback tests).

#![forbid(unsafe_code)]

pub mod admin_socket;
pub mod fsio;
pub mod measured;
pub mod quarantine;
pub mod test_faults;
