//! `sealctl keys ...`: import users' keys into the vault, list them, export certificates and
//! (explicitly, audited, with a password) PKCS#12.
//!
//! While `sealgated` runs on the data directory (it holds the vault), every command asks it
//! through its admin socket (see `admin_socket.rs`) and prints what it prints without one; a
//! change then applies to the running daemon at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_vault::{CertFormat, KeyInfo};
use zeroize::Zeroizing;

use crate::admin_socket::{base64, running, segment};
use crate::vault_cmd::{SealerArgs, open_vault};
use crate::{Failure, Outcome, read_file, write_output};

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// Import a PKCS#12 file (or --key/--cert PEM) into the vault. Nothing changes on error.
    Import {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// PKCS#12 file (OpenSSL 3 default or -legacy).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "key",
            conflicts_with = "key"
        )]
        p12: Option<PathBuf>,
        /// File holding the PKCS#12 password (default: empty password).
        #[arg(long, value_name = "F", requires = "p12")]
        password_file: Option<PathBuf>,
        /// PEM/DER private key (instead of --p12), with --cert.
        #[arg(long, value_name = "KEYFILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Certificate of --key (PEM or DER; further PEM certificates become the chain).
        #[arg(long, value_name = "CERTFILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The owner (default: the certificate's email address).
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// List keys as JSON (no key material).
    List {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Only this user's keys.
        #[arg(long, value_name = "EMAIL")]
        user: Option<String>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// A user's current certificate(s): PEM on stdout (or DER, or a .p7c bundle).
    ExportCert {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The user.
        email: String,
        /// pem (default), der or p7c.
        #[arg(long, default_value = "pem")]
        format: String,
        /// Output file (default: stdout).
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Export a user's private keys as PKCS#12 protected by a password. Audited.
    ExportPkcs12 {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The user.
        email: String,
        /// File holding the export password (must not be empty).
        #[arg(long, value_name = "F")]
        password_file: PathBuf,
        /// Output file (created with mode 0600).
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
}

/// A password file's content without its final newline.
pub(crate) fn read_password(path: &Path) -> Result<Zeroizing<String>, Failure> {
    let raw = Zeroizing::new(read_file(path)?);
    let s = std::str::from_utf8(&raw)
        .map_err(|_| Failure("the password file is not UTF-8".into(), 1))?;
    Ok(Zeroizing::new(
        s.strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(s)
            .to_string(),
    ))
}

pub(crate) fn run(cmd: KeysCmd) -> Outcome {
    match cmd {
        KeysCmd::Import {
            data_dir,
            p12,
            password_file,
            key,
            cert,
            user,
            sealer,
        } => {
            if let Some(d) = running(&data_dir) {
                let (path, body) = match (&p12, &key, &cert) {
                    (Some(p12), _, _) => {
                        let password = match &password_file {
                            Some(f) => read_password(f)?,
                            None => Zeroizing::new(String::new()),
                        };
                        let body = serde_json::json!({
                            "pkcs12": base64(&read_file(p12)?),
                            "password": password.as_str(),
                            "user": user,
                        });
                        ("/keys/import", body)
                    }
                    (None, Some(k), Some(c)) => {
                        let kb = Zeroizing::new(read_file(k)?);
                        let body = serde_json::json!({
                            "key": base64(&kb),
                            "certificate": base64(&read_file(c)?),
                            "user": user,
                        });
                        ("/keys/import-pem", body)
                    }
                    _ => return Err(Failure("give --p12 FILE, or --key and --cert".into(), 2)),
                };
                let imported: Vec<KeyInfo> = d.json("POST", path, Some(&body))?;
                println!("{}", serde_json::to_string_pretty(&imported)?);
                return Ok(ExitCode::SUCCESS);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            let imported = match (&p12, &key, &cert) {
                (Some(p12), _, _) => {
                    let password = match &password_file {
                        Some(f) => read_password(f)?,
                        None => Zeroizing::new(String::new()),
                    };
                    vault.import_pkcs12(&read_file(p12)?, &password, user.as_deref())?
                }
                (None, Some(k), Some(c)) => {
                    let kb = Zeroizing::new(read_file(k)?);
                    vault.import_pem(&kb, &read_file(c)?, user.as_deref())?
                }
                _ => return Err(Failure("give --p12 FILE, or --key and --cert".into(), 2)),
            };
            println!("{}", serde_json::to_string_pretty(&imported)?);
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::List {
            data_dir,
            user,
            sealer,
        } => {
            if let Some(d) = running(&data_dir) {
                let path = match &user {
                    Some(u) => format!("/keys?user={}", segment(u)),
                    None => "/keys".to_string(),
                };
                let keys: Vec<KeyInfo> = d.json("GET", &path, None)?;
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(ExitCode::SUCCESS);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&vault.list(user.as_deref())?)?
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::ExportCert {
            data_dir,
            email,
            format,
            output,
            sealer,
        } => {
            let format_name = format;
            let format = match format_name.as_str() {
                "pem" => CertFormat::Pem,
                "der" => CertFormat::Der,
                "p7c" => CertFormat::P7c,
                other => {
                    return Err(Failure(
                        format!("unknown --format {other:?} (pem, der or p7c)"),
                        2,
                    ));
                }
            };
            if let Some(d) = running(&data_dir) {
                let path = format!("/keys/{}/certificate?format={format_name}", segment(&email));
                write_output(output.as_deref(), &d.bytes("GET", &path, None, None)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            write_output(output.as_deref(), &vault.export_cert(&email, format)?)?;
            Ok(ExitCode::SUCCESS)
        }
        KeysCmd::ExportPkcs12 {
            data_dir,
            email,
            password_file,
            output,
            sealer,
        } => {
            let password = read_password(&password_file)?;
            let p12 = match running(&data_dir) {
                Some(d) => d.bytes(
                    "POST",
                    &format!("/keys/{}/pkcs12", segment(&email)),
                    Some(&serde_json::json!({ "password": password.as_str() })),
                    None,
                )?,
                None => open_vault(&data_dir, &sealer)?.export_pkcs12(&email, &password)?,
            };
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&output)
                .map_err(|e| Failure(format!("cannot create {}: {e}", output.display()), 1))?;
            f.write_all(&p12)
                .map_err(|e| Failure(format!("cannot write {}: {e}", output.display()), 1))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
