//! `sealctl directory lookup ADDRESS --data-dir DIR [--settings FILE]`: which source of the
//! certificate directory answers for an address. Prints one JSON object
//! (`{"address", "source", "certificate", "refused"}`); exits 0 when a certificate was found,
//! 1 when none.
//!
//! While `sealgated` runs on the data directory (it holds the vault), the daemon is asked
//! through its admin socket (`GET directory/lookup`, with the daemon's own settings).
//! Otherwise `sealctl` opens the vault and asks the sources itself, with the `[directory]` and
//! `[docking] trust_anchors` of the settings file; the lookup is audited in the vault's chain.
//!
//! An administrator's decisions: `blocked`, `block SHA256 [--reason]`, `unblock SHA256` (the
//! block list, `DATA/directory-blocked.json`); `harvested`, `forget SHA256` (certificates
//! harvested from signed inbound mail, `DATA/directory-harvested.json`); `pinned`, `import
//! FILE` (external certificates stored in the vault: the `pinned` source). Through the
//! daemon's admin API when it runs (audited there), else on the files and the vault directly
//! (audited in the vault's chain).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use sealgate_directory::{Directory, Local};
use sealgate_smime::cert::Certificate;

use crate::admin_socket::{running, segment};
use crate::vault_cmd::{SealerArgs, open_vault};
use crate::{Failure, Outcome};

#[derive(Subcommand)]
pub(crate) enum DirectoryCmd {
    /// Look a recipient's certificate up: which source answered, the certificate (PEM), and
    /// why other candidates were refused. Exit 0 when found, 1 when not.
    Lookup {
        /// The recipient's address.
        address: String,
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The daemon's settings file (its `[directory]` and `[docking] trust_anchors`);
        /// without it only the vault is asked.
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Publish our users' encryption certificates: LDIF for an LDAP server (`--format ldif`)
    /// or an SMIMEA zone fragment (`--format smimea`), on stdout.
    Export {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// `ldif` or `smimea`.
        #[arg(long, value_parser = ["ldif", "smimea"])]
        format: String,
        /// The LDIF entries' base DN.
        #[arg(long, value_name = "DN", default_value = "ou=sealgate")]
        base: String,
        /// The SMIMEA records' TTL (seconds).
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        ttl: u32,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// List the certificates an administrator blocked (JSON).
    Blocked {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Block a certificate: never used to encrypt, whatever the source.
    Block {
        /// Its SHA-256 fingerprint (64 hex digits, colons allowed).
        sha256: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Unblock a certificate.
    Unblock {
        /// Its SHA-256 fingerprint.
        sha256: String,
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// List the certificates harvested from signed inbound mail (JSON).
    Harvested {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Forget a harvested certificate.
    Forget {
        /// Its SHA-256 fingerprint.
        sha256: String,
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// List the pinned (stored external) certificates (JSON).
    Pinned {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Import (pin) recipients' certificates from a PEM or DER file: used for their addresses
    /// without a path to an anchor.
    Import {
        /// The certificate file.
        file: PathBuf,
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
}

pub(crate) fn run(cmd: DirectoryCmd) -> Outcome {
    let (address, data_dir, settings, sealer) = match cmd {
        DirectoryCmd::Lookup {
            address,
            data_dir,
            settings,
            sealer,
        } => (address, data_dir, settings, sealer),
        DirectoryCmd::Export {
            data_dir,
            format,
            base,
            ttl,
            sealer,
        } => return export(&data_dir, &format, &base, ttl, &sealer),
        other => return decisions(other),
    };
    let answer = match running(&data_dir) {
        Some(d) => {
            if settings.is_some() {
                eprintln!("sealctl: the running daemon uses its own settings");
            }
            let mut v = d.json::<serde_json::Value>(
                "GET",
                &format!("/directory/lookup?address={}", segment(&address)),
                None,
            )?;
            // The same object as without a daemon: the certificate's `details` are the web
            // UI's.
            if let Some(m) = v.as_object_mut() {
                m.remove("details");
            }
            v
        }
        None => {
            let (dir_settings, anchors) = match &settings {
                Some(p) => read_settings(p)?,
                None => (sealgate_directory::Settings::default(), Vec::new()),
            };
            let vault = Arc::new(open_vault(&data_dir, &sealer)?);
            let local: Arc<dyn Local> = vault.clone();
            let dir = Directory::new(dir_settings, anchors, Some(local))
                .map_err(|e| Failure(format!("[directory] {e}"), 1))?;
            let blocked =
                sealgate_directory::blocklist::load(&data_dir).map_err(|e| Failure(e, 1))?;
            dir.set_blocked(blocked.into_iter().map(|b| b.sha256).collect());
            dir.set_harvested(
                &sealgate_directory::harvested::load(&data_dir).map_err(|e| Failure(e, 1))?,
            );
            let found = dir.lookup(&address, dir.deadline());
            let detail = format!(
                "source={} result={} refused={}",
                found.source.map_or("none", |s| s.as_str()),
                if found.certificate.is_some() {
                    "found"
                } else {
                    "none"
                },
                found.refused.len()
            );
            vault.record_event(&actor(), "directory.lookup", &found.address, &detail)?;
            found.to_json()
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(if answer["certificate"].is_string() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn actor() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("local:{user}")
}

/// `[directory]` and the `[docking] trust_anchors` certificates of the daemon's settings
/// file (the rest of the file is the daemon's to check).
fn read_settings(path: &Path) -> Result<(sealgate_directory::Settings, Vec<Certificate>), Failure> {
    let fail = |e: String| Failure(format!("{}: {e}", path.display()), 1);
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let settings = match table.get("directory") {
        Some(d) => d
            .clone()
            .try_into::<sealgate_directory::Settings>()
            .map_err(|e| fail(format!("[directory] {e}")))?,
        None => sealgate_directory::Settings::default(),
    };
    let anchors = match table
        .get("docking")
        .and_then(|d| d.get("trust_anchors"))
        .and_then(|t| t.as_str())
    {
        Some(p) => {
            let data = std::fs::read(p).map_err(|e| fail(format!("{p}: {e}")))?;
            Certificate::parse_many(&data).map_err(|e| fail(format!("{p}: {e}")))?
        }
        None => Vec::new(),
    };
    Ok((settings, anchors))
}

/// `directory export`: through the daemon when one runs, else from the vault.
fn export(data_dir: &Path, format: &str, base: &str, ttl: u32, sealer: &SealerArgs) -> Outcome {
    let text = match running(data_dir) {
        Some(d) => d.text(
            "GET",
            &format!(
                "/directory/export?format={}&base={}&ttl={ttl}",
                segment(format),
                segment(base)
            ),
            None,
            None,
        )?,
        None => {
            let vault = open_vault(data_dir, sealer)?;
            let users =
                sealgate_directory::publish::local_users(&vault, sealgate_directory::unix_now())
                    .map_err(|e| Failure(e, 1))?;
            if format == "ldif" {
                sealgate_directory::publish::ldif(&users, base)
            } else {
                sealgate_directory::publish::smimea(&users, ttl)
            }
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn fingerprint(s: &str) -> Result<String, Failure> {
    sealgate_directory::blocklist::fingerprint(s).ok_or_else(|| {
        Failure(
            format!("{s:?} is not a SHA-256 fingerprint (64 hex digits)"),
            1,
        )
    })
}

fn print_json(v: &impl serde::Serialize) -> Outcome {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// The administrator's decisions: block list, harvested, pinned.
fn decisions(cmd: DirectoryCmd) -> Outcome {
    use sealgate_directory::{blocklist, harvested};
    match cmd {
        DirectoryCmd::Blocked { data_dir, .. } => match running(&data_dir) {
            Some(d) => {
                print_json(&d.json::<serde_json::Value>("GET", "/directory/blocked", None)?)
            }
            None => print_json(&blocklist::load(&data_dir).map_err(|e| Failure(e, 1))?),
        },
        DirectoryCmd::Block {
            sha256,
            reason,
            data_dir,
            sealer,
        } => {
            let sha256 = fingerprint(&sha256)?;
            if let Some(why) = blocklist::reason_problem(&reason) {
                return Err(Failure(format!("--reason {why}"), 1));
            }
            if let Some(d) = running(&data_dir) {
                let body = serde_json::json!({"sha256": sha256, "reason": reason});
                return print_json(&d.json::<serde_json::Value>(
                    "POST",
                    "/directory/blocked",
                    Some(&body),
                )?);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            let mut list = blocklist::load(&data_dir).map_err(|e| Failure(e, 1))?;
            let e = blocklist::block(&mut list, &sha256, &reason, &actor())
                .map_err(|blocklist::Full| Failure("the block list is full".into(), 1))?;
            vault.record_event(
                &actor(),
                "directory.block",
                &sha256,
                &format!("reason={reason:?}"),
            )?;
            blocklist::save(&data_dir, &list).map_err(|e| Failure(e, 1))?;
            print_json(&e)
        }
        DirectoryCmd::Unblock {
            sha256,
            data_dir,
            sealer,
        } => {
            let sha256 = fingerprint(&sha256)?;
            if let Some(d) = running(&data_dir) {
                return print_json(&d.json::<serde_json::Value>(
                    "DELETE",
                    &format!("/directory/blocked/{}", segment(&sha256)),
                    None,
                )?);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            let mut list = blocklist::load(&data_dir).map_err(|e| Failure(e, 1))?;
            let gone = blocklist::unblock(&mut list, &sha256)
                .ok_or_else(|| Failure(format!("{sha256} is not blocked"), 1))?;
            vault.record_event(&actor(), "directory.unblock", &sha256, "")?;
            blocklist::save(&data_dir, &list).map_err(|e| Failure(e, 1))?;
            print_json(&gone)
        }
        DirectoryCmd::Harvested { data_dir, .. } => match running(&data_dir) {
            Some(d) => {
                print_json(&d.json::<serde_json::Value>("GET", "/directory/harvested", None)?)
            }
            None => print_json(&harvested::load(&data_dir).map_err(|e| Failure(e, 1))?),
        },
        DirectoryCmd::Forget {
            sha256,
            data_dir,
            sealer,
        } => {
            let sha256 = fingerprint(&sha256)?;
            if let Some(d) = running(&data_dir) {
                return print_json(&d.json::<serde_json::Value>(
                    "DELETE",
                    &format!("/directory/harvested/{}", segment(&sha256)),
                    None,
                )?);
            }
            let vault = open_vault(&data_dir, &sealer)?;
            let mut list = harvested::load(&data_dir).map_err(|e| Failure(e, 1))?;
            let gone = harvested::forget(&mut list, &sha256);
            if gone.is_empty() {
                return Err(Failure(format!("{sha256} was not harvested"), 1));
            }
            vault.record_event(&actor(), "directory.forget-harvested", &sha256, "")?;
            harvested::save(&data_dir, &list).map_err(|e| Failure(e, 1))?;
            print_json(&gone)
        }
        DirectoryCmd::Pinned { data_dir, sealer } => match running(&data_dir) {
            Some(d) => print_json(&d.json::<serde_json::Value>("GET", "/certificates", None)?),
            None => print_json(&open_vault(&data_dir, &sealer)?.recipient_certificate_list()?),
        },
        DirectoryCmd::Import {
            file,
            data_dir,
            sealer,
        } => {
            let data =
                std::fs::read(&file).map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            if data.len() > 256 * 1024 {
                return Err(Failure(
                    format!("{}: larger than 256 KiB", file.display()),
                    1,
                ));
            }
            let certs = Certificate::parse_many(&data)
                .map_err(|e| Failure(format!("{}: {e}", file.display()), 1))?;
            if let Some(d) = running(&data_dir) {
                let body = serde_json::json!({
                    "certificate": certs.iter().map(Certificate::to_pem).collect::<String>()
                });
                return print_json(&d.json::<serde_json::Value>(
                    "POST",
                    "/certificates",
                    Some(&body),
                )?);
            }
            let leaves: Vec<&Certificate> = certs.iter().filter(|c| !c.is_ca).collect();
            if leaves.is_empty() {
                return Err(Failure(
                    format!("{}: no end-entity certificate", file.display()),
                    1,
                ));
            }
            let vault = open_vault(&data_dir, &sealer)?;
            let now = sealgate_directory::unix_now();
            // Every check first: nothing is stored unless all can be.
            for c in &leaves {
                if let Some(why) = sealgate_directory::validate::unusable_reason(c, now) {
                    return Err(Failure(
                        format!("{}: {why}; nothing was stored", c.subject_text()),
                        1,
                    ));
                }
                for e in &c.emails {
                    if vault.own(e).map_err(|e| Failure(e, 1))?.is_some() {
                        return Err(Failure(
                            format!("{e} is a local user of the box; nothing was stored"),
                            1,
                        ));
                    }
                }
            }
            for c in &leaves {
                vault.add_recipient_certificate_by(c, &actor())?;
            }
            print_json(
                &leaves
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "sha256": sealgate_directory::validate::sha256_hex(c.der()),
                            "emails": c.emails,
                            "subject": c.subject_text(),
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        }
        DirectoryCmd::Lookup { .. } | DirectoryCmd::Export { .. } => {
            Err(Failure("unreachable".into(), 1))
        }
    }
}
