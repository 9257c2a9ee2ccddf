//! `sealctl certs ...`: the external recipients' certificates that wait for an administrator
//! (posted through the docking API without a path to a trust anchor, or for an address that
//! has a certificate from another issuer in use): list, approve, reject. Each decision is
//! audited in the vault.
//!
//! While `sealgated` runs on the data directory (it holds the vault), the commands ask it
//! through its admin socket (see `admin_socket.rs`); an approval is then used by `encrypt` at
//! once. Otherwise they open the vault themselves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_vault::PendingCertificate;

use crate::Outcome;
use crate::admin_socket::{running, segment};
use crate::vault_cmd::{SealerArgs, open_vault};

#[derive(Subcommand)]
pub(crate) enum CertsCmd {
    /// List the pending certificates as JSON (fingerprint, addresses, subject, issuer, why,
    /// who asked, PEM).
    Pending {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Approve a pending certificate: `encrypt` uses it for its addresses from now on (the
    /// newest valid certificate of an address is used).
    Approve {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Its SHA-256 fingerprint (hex, colons allowed; a unique prefix of 8+ digits will do).
        sha256: String,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Reject a pending certificate: it is dropped and never used.
    Reject {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Its SHA-256 fingerprint (hex, colons allowed; a unique prefix of 8+ digits will do).
        sha256: String,
        #[command(flatten)]
        sealer: SealerArgs,
    },
}

pub(crate) fn run(cmd: CertsCmd) -> Outcome {
    match cmd {
        CertsCmd::Pending { data_dir, sealer } => {
            if let Some(d) = running(&data_dir) {
                let list: Vec<PendingCertificate> = d.json("GET", "/certificates/pending", None)?;
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&vault.pending_certificates()?)?
            );
        }
        CertsCmd::Approve {
            data_dir,
            sha256,
            sealer,
        } => {
            let p = match running(&data_dir) {
                Some(d) => d.json::<PendingCertificate>(
                    "POST",
                    &format!("/certificates/pending/{}/approve", segment(&sha256)),
                    None,
                )?,
                None => open_vault(&data_dir, &sealer)?.approve_pending_certificate(&sha256)?,
            };
            println!(
                "approved {} for {} (restart sealgated if it is not running yet)",
                p.sha256,
                p.emails.join(", ")
            );
        }
        CertsCmd::Reject {
            data_dir,
            sha256,
            sealer,
        } => {
            let p = match running(&data_dir) {
                Some(d) => d.json::<PendingCertificate>(
                    "POST",
                    &format!("/certificates/pending/{}/reject", segment(&sha256)),
                    None,
                )?,
                None => open_vault(&data_dir, &sealer)?.reject_pending_certificate(&sha256)?,
            };
            println!("rejected {} for {}", p.sha256, p.emails.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
