//! `sealctl ca ...`: the box's own certificate authority.
//!
//! While `sealgated` runs on the data directory (it holds the vault), every command asks it
//! through its admin socket (see `admin_socket.rs`) and prints what it prints without one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_vault::{CaInfo, CaSettings, KeyAlgorithm};

use crate::admin_socket::{pem_or_base64, running, segment};
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
            let daemon = running(&data_dir);
            let body = serde_json::json!({
                "name": name,
                "domains": settings.org_domains,
                "key_algorithm": settings.key_algorithm,
                "validity_days": settings.validity_days,
                "separate_keys": settings.separate_keys,
                "auto_enrol": settings.auto_enrol,
            });
            if intermediate {
                let csr = match &daemon {
                    Some(d) => d.text("POST", "/ca/intermediate", Some(&body), None)?,
                    None => {
                        open_vault(&data_dir, &sealer)?.ca_init_intermediate(&name, &settings)?
                    }
                };
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
            let info: CaInfo = match &daemon {
                Some(d) => d.json("POST", "/ca", Some(&body))?,
                None => open_vault(&data_dir, &sealer)?.ca_init(&name, &settings)?,
            };
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
            let info: CaInfo = match running(&data_dir) {
                Some(d) => {
                    let mut body = serde_json::json!({ "certificate": pem_or_base64(&cert) });
                    if !chain.is_empty() {
                        body["chain"] = pem_or_base64(&chain).into();
                    }
                    d.json("PUT", "/ca/certificate", Some(&body))?
                }
                None => open_vault(&data_dir, &sealer)?.ca_import_cert(&cert, &chain)?,
            };
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Cert { data_dir, sealer } => {
            // The CA's certificate, then (intermediate) the corporate chain above it.
            let pem = match running(&data_dir) {
                Some(d) => d.text("GET", "/ca/certificate", None, None)?,
                None => open_vault(&data_dir, &sealer)?.ca_pem()?,
            };
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Issue {
            data_dir,
            email,
            sealer,
        } => {
            // Under a corporate CA, the chain up to (not including) its root follows.
            let pem = match running(&data_dir) {
                Some(d) => d.text(
                    "POST",
                    "/keys/issue",
                    Some(&serde_json::json!({ "user": email })),
                    Some("application/pem-certificate-chain"),
                )?,
                None => {
                    let vault = open_vault(&data_dir, &sealer)?;
                    let certs = vault.ca_issue(&email)?;
                    vault.ca_issued_pem(&certs)?
                }
            };
            print!("{pem}");
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Revoke {
            data_dir,
            email,
            serial,
            sealer,
        } => {
            #[derive(serde::Deserialize)]
            struct Revoked {
                revoked: Vec<String>,
            }
            let serials = match (running(&data_dir), &email, &serial) {
                (_, None, None) => return Err(Failure("give EMAIL or --serial HEX".into(), 2)),
                (Some(d), _, Some(s)) => {
                    let body = serde_json::json!({ "serial": s });
                    d.json::<Revoked>("POST", "/ca/revoke", Some(&body))?
                        .revoked
                }
                (Some(d), Some(e), None) => {
                    let path = format!("/keys/{}/revoke", segment(e));
                    d.json::<Revoked>("POST", &path, None)?.revoked
                }
                (None, _, Some(s)) => open_vault(&data_dir, &sealer)?.ca_revoke_serial(s)?,
                (None, Some(e), None) => open_vault(&data_dir, &sealer)?.ca_revoke_user(e)?,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "revoked": serials }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCmd::Crl { data_dir, sealer } => {
            let crl = match running(&data_dir) {
                Some(d) => d.text("POST", "/ca/crl", None, None)?,
                None => open_vault(&data_dir, &sealer)?.ca_crl()?,
            };
            print!("{crl}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
