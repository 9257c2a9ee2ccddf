//! `sealctl quarantine list|show|release|delete`: the messages content scanning kept from
//! delivery (`DATA/quarantine/`, encrypted under a key the vault derives).
//!
//! Through the running daemon's admin socket (see `admin_socket.rs`; audited there as
//! `uid:N`, with the reason given). Without a running daemon `list` and `show` open the vault
//! themselves (its sealer named as for every vault command) and read the store; `show` then
//! prints the message as stored (an encrypted one stays encrypted: the daemon decrypts for
//! the auditor). Release and delete need the daemon (it owns the queue a release goes
//! through, and the audit of the decision).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_local::quarantine::{KEY_PURPOSE, Meta, Store};
use serde_json::{Value, json};

use crate::admin_socket::{running, segment};
use crate::{Failure, Outcome, vault_cmd};

#[derive(Subcommand)]
pub(crate) enum QuarantineCmd {
    /// List the quarantined messages (id, time, sender, recipients, action, score, labels).
    List {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sealer: vault_cmd::SealerArgs,
    },
    /// Show one message as JSON: its verdict and the message (decrypted by a running daemon
    /// when it is encrypted).
    Show {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print only the message, as bytes.
        #[arg(long)]
        raw: bool,
        /// The quarantine id.
        id: String,
        #[command(flatten)]
        sealer: vault_cmd::SealerArgs,
    },
    /// Deliver a message, as it came or as the policy would send it, through the queue
    /// (needs the running daemon).
    Release {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Why (recorded in the audit chain).
        #[arg(long, default_value = "")]
        reason: String,
        /// `received` (as it came; inbound's default) or `policy` (as the policy would have
        /// sent it; submitted mail's default).
        #[arg(long = "as", value_name = "received|policy")]
        mode: Option<String>,
        /// The quarantine id.
        id: String,
    },
    /// Delete a message without delivering it (needs the running daemon).
    Delete {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Why (required; recorded in the audit chain).
        #[arg(long)]
        reason: String,
        /// The quarantine id.
        id: String,
    },
}

fn no_daemon(data_dir: &Path) -> Failure {
    Failure(
        format!(
            "sealgated is not running on {}: releasing and deleting need the running daemon",
            data_dir.display()
        ),
        1,
    )
}

/// The store, opened with the vault's quarantine key (no daemon running).
fn open_store(data_dir: &Path, sealer: &vault_cmd::SealerArgs) -> Result<Store, Failure> {
    let vault = vault_cmd::open_vault(data_dir, sealer)?;
    let key = vault.derived_key(KEY_PURPOSE);
    Store::open(&data_dir.join("quarantine"), &key)
        .map_err(|e| Failure(format!("the quarantine: {e}"), 1))
}

fn table(list: &[Value]) {
    println!(
        "{:<24} {:<20} {:<10} {:>7} {:<30} RECIPIENTS / LABELS",
        "ID", "TIME", "ACTION", "SCORE", "FROM"
    );
    for m in list {
        let time = m["time"]
            .as_i64()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let strs = |k: &str| -> Vec<String> {
            m[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let from = m["from"].as_str().unwrap_or("");
        println!(
            "{:<24} {:<20} {:<10} {:>7} {:<30} {}",
            m["id"].as_str().unwrap_or("?"),
            time,
            m["action"].as_str().unwrap_or("?"),
            m["score"].as_f64().unwrap_or(0.0),
            if from.is_empty() { "<>" } else { from },
            strs("to").join(", ")
        );
        println!("{:<24} {}", "", strs("labels").join(","));
    }
    println!("{} message(s)", list.len());
}

pub(crate) fn run(cmd: QuarantineCmd) -> Outcome {
    match cmd {
        QuarantineCmd::List {
            data_dir,
            json,
            sealer,
        } => {
            let (list, unreadable): (Vec<Value>, Vec<Value>) = match running(&data_dir) {
                Some(d) => {
                    let v: Value = d.json("GET", "/quarantine", None)?;
                    (
                        v["messages"].as_array().cloned().unwrap_or_default(),
                        v["unreadable"].as_array().cloned().unwrap_or_default(),
                    )
                }
                None => {
                    let (list, bad) = open_store(&data_dir, &sealer)?.list();
                    (
                        list.iter().map(|m| json!(m)).collect(),
                        bad.into_iter().map(Value::String).collect(),
                    )
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "messages": list,
                        "unreadable": unreadable,
                    }))?
                );
            } else {
                table(&list);
                for id in unreadable {
                    eprintln!(
                        "sealctl: {} does not decrypt (another vault, or altered)",
                        id.as_str().unwrap_or("?")
                    );
                }
            }
        }
        QuarantineCmd::Show {
            data_dir,
            raw,
            id,
            sealer,
        } => {
            let v: Value = match running(&data_dir) {
                Some(d) => {
                    let mut v: Value =
                        d.json("GET", &format!("/quarantine/{}", segment(&id)), None)?;
                    // The same shape with or without the daemon (its `view` is the web UI's).
                    if let Some(o) = v.as_object_mut() {
                        o.remove("view");
                        o.remove("encrypted");
                    }
                    v
                }
                None => {
                    let store = open_store(&data_dir, &sealer)?;
                    let (meta, msg): (Meta, Vec<u8>) = store
                        .get(&id)
                        .map_err(|e| Failure(format!("{id}: {e}"), 1))?
                        .ok_or_else(|| {
                            Failure(format!("no message {id:?} in the quarantine"), 1)
                        })?;
                    let mut v = json!(meta);
                    v["decrypted"] = json!(false);
                    v["message"] = json!(String::from_utf8_lossy(&msg));
                    v["message_base64"] = json!(crate::admin_socket::base64(&msg));
                    v
                }
            };
            if raw {
                use ::base64::Engine as _;
                use std::io::Write as _;
                let bytes = ::base64::engine::general_purpose::STANDARD
                    .decode(v["message_base64"].as_str().unwrap_or(""))
                    .map_err(|e| Failure(format!("the message: {e}"), 1))?;
                std::io::stdout().write_all(&bytes)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
        QuarantineCmd::Release {
            data_dir,
            reason,
            mode,
            id,
        } => {
            let d = running(&data_dir).ok_or_else(|| no_daemon(&data_dir))?;
            let mut body = json!({ "reason": reason });
            if let Some(m) = mode {
                body["as"] = json!(m);
            }
            let v: Value = d.json(
                "POST",
                &format!("/quarantine/{}/release", segment(&id)),
                Some(&body),
            )?;
            let queued: Vec<&str> = v["queued_as"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("{id} released (queued as {})", queued.join(" "));
        }
        QuarantineCmd::Delete {
            data_dir,
            reason,
            id,
        } => {
            let d = running(&data_dir).ok_or_else(|| no_daemon(&data_dir))?;
            d.done(
                "POST",
                &format!("/quarantine/{}/delete", segment(&id)),
                Some(&json!({ "reason": reason })),
            )?;
            println!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
