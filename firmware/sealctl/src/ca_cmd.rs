//! `sealctl ca ...`: the box's own certificate authority.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_vault::{CaSettings, KeyAlgorithm};

use crate::vault_cmd::{SealerArgs, open_vault};
use crate::{Failure, Outcome, read_file};

#[derive(Subcommand)]
pub(crate) enum CaCmd {
    /// Create the organisation's root CA in the vault, or (--intermediate) the key and CSR of
    /// an intermediate CA for an existing corporate CA to sign (then `ca import-cert`).
    Init {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The CA's name (its certificate's common name).
        #[arg(long)]
        name: String,
        /// An organisation mail domain (auto-enrolment issues keys for these). Repeatable.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// Key type of the CA and of issued keys: rsa3072 (default) or p256.
        #[arg(long, default_value = "rsa3072")]
        key_algorithm: String,
        /// Validity of issued certificates in days.
        #[arg(long, default_value_t = 730)]
        validity_days: u32,
        /// Issue separate signing and encryption keys instead of one dual-use key.
        #[arg(long)]
        separate_keys: bool,
        /// Do not issue keys automatically for users of the organisation's domains.
        #[arg(long)]
        no_auto_enrol: bool,
        /// Make an intermediate under a corporate CA: write a CSR and leave the CA pending
        /// until `ca import-cert`.
        #[arg(long)]
        intermediate: bool,
        /// Where to write the intermediate's CSR (PEM; default: stdout).
        #[arg(long, value_name = "FILE", requires = "intermediate")]
        csr_out: Option<PathBuf>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Import the certificate the corporate CA signed for the pending intermediate CA.
    ImportCert {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The signed CA certificate (PEM or DER).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The corporate chain above it (PEM: its issuer first, up to the root).
        #[arg(long, value_name = "FILE")]
        chain: Option<PathBuf>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// The CA's certificate (PEM) on stdout.
    Cert {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Issue a key and S/MIME certificate for a user; the certificate (PEM) on stdout
    /// (under an intermediate CA followed by the CA chain, without the root).
    Issue {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The user's email address.
        email: String,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Revoke a user's certificates, or one by serial number.
    Revoke {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The user whose certificates to revoke.
        #[arg(required_unless_present = "serial", conflicts_with = "serial")]
        email: Option<String>,
        /// The serial number (hex) of the certificate to revoke.
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// A fresh CRL (PEM) on stdout.
    Crl {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
}

pub(crate) fn run(cmd: CaCmd) -> Outcome {
    match cmd {
        CaCmd::Init {
            data_dir,
            name,
            domains,
            key_algorithm,
            validity_days,
            separate_keys,
            no_auto_enrol,
            intermediate,
            csr_out,
            sealer,
        } => {
            let key_algorithm: KeyAlgorithm = key_algorithm
                .parse()
                .map_err(|e: sealgate_vault::VaultError| Failure(e.to_string(), 2))?;
            if validity_days == 0 {
                return Err(Failure("--validity-days must be at least 1".into(), 2));
            }
            let settings = CaSettings {
                key_algorithm,
                separate_keys,
                validity_days,
                org_domains: domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
                auto_enrol: !no_auto_enrol,
                ..CaSettings::default()
            };
            let vault = open_vault(&data_dir, &sealer)?;
            if intermediate {
                let csr = vault.ca_init_intermediate(&name, &settings)?;
                match &csr_out {
                    Some(out) => {
                        std::fs::write(out, &csr).map_err(|e| {
                            Failure(format!("cannot write {}: {e}", out.display()), 1)
                        })?;
                        println!(
                            "intermediate CA {name:?} pending: CSR written to {}; have the corporate CA sign it as a CA certificate, then `sealctl ca import-cert`",
                            out.display()
                        );
                    }
                    None => print!("{csr}"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let info = vault.ca_init(&name, &settings)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::ImportCert {
            data_dir,
            cert,
            chain,
            sealer,
        } => {
            let cert = read_file(&cert)?;
            let chain = match &chain {
                Some(c) => read_file(c)?,
                None => Vec::new(),
            };
            let vault = open_vault(&data_dir, &sealer)?;
            let info = vault.ca_import_cert(&cert, &chain)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Cert { data_dir, sealer } => {
            // The CA's certificate, then (intermediate) the corporate chain above it.
            let vault = open_vault(&data_dir, &sealer)?;
            print!("{}", vault.ca_certificate()?.to_pem());
            for c in vault.ca_chain()? {
                print!("{}", c.to_pem());
            }
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Issue {
            data_dir,
            email,
            sealer,
        } => {
            let vault = open_vault(&data_dir, &sealer)?;
            for c in vault.ca_issue(&email)? {
                print!("{}", c.to_pem());
            }
            // Under a corporate CA, the chain up to (not including) its root follows.
            let chain = vault.ca_chain()?;
            if !chain.is_empty() {
                print!("{}", vault.ca_certificate()?.to_pem());
                for c in chain.iter().filter(|c| !c.is_self_issued()) {
                    print!("{}", c.to_pem());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Revoke {
            data_dir,
            email,
            serial,
            sealer,
        } => {
            let vault = open_vault(&data_dir, &sealer)?;
            let serials = match (&email, &serial) {
                (_, Some(s)) => vault.ca_revoke_serial(s)?,
                (Some(e), None) => vault.ca_revoke_user(e)?,
                (None, None) => return Err(Failure("give EMAIL or --serial HEX".into(), 2)),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "revoked": serials }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Crl { data_dir, sealer } => {
            let vault = open_vault(&data_dir, &sealer)?;
            print!("{}", vault.ca_crl()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
