//! `sealctl queue list|show|retry|hold|release|delete`: the SMTP queue of `sealgated`.
//!
//! Through the running daemon's admin socket (see `admin_socket.rs`; changes are audited there
//! as `uid:N`). Without a running daemon `list` and `show` read the queue directory
//! (`DATA/spool`) themselves; changes need the daemon (it owns the queue while it delivers).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::admin_socket::{running, segment};
use crate::{Failure, Outcome};

#[derive(Subcommand)]
pub(crate) enum QueueCmd {
    /// List the messages (id, state, sender, recipients, attempts, last error).
    List {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Only messages in this state: queued, deferred, held, bounced.
        #[arg(long)]
        state: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message as JSON: envelope, state, each recipient's status, attempts, last
    /// error (never the body).
    Show {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The queue id.
        id: String,
    },
    /// Try a queued or deferred message now.
    Retry {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The queue id.
        id: String,
    },
    /// Hold a queued or deferred message until it is released.
    Hold {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The queue id.
        id: String,
    },
    /// Put a held message back in the queue, due now.
    Release {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The queue id.
        id: String,
    },
    /// Delete a message in any state (no notification to its sender).
    Delete {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The queue id.
        id: String,
    },
}

const STATES: [&str; 4] = ["queued", "deferred", "held", "bounced"];

fn no_daemon(data_dir: &Path) -> Failure {
    Failure(
        format!(
            "sealgated is not running on {}: queue changes need the running daemon",
            data_dir.display()
        ),
        1,
    )
}

/// One message read from the queue directory (without a daemon).
fn read_entry(dir: &Path, id: &str, sub: &str) -> Option<Value> {
    let env: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).ok()?).ok()?;
    let st: Value = std::fs::read(dir.join(format!("{id}.state")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let state = match sub {
        "held" => "held",
        "bounced" => "bounced",
        _ if st["state"] == "deferred" => "deferred",
        _ => "queued",
    };
    let recipients = if st["recipients"].is_array() {
        st["recipients"].clone()
    } else {
        Value::Array(
            env["to"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|a| serde_json::json!({"address": a, "status": "pending", "notified": false}))
                .collect(),
        )
    };
    let size = std::fs::metadata(dir.join(format!("{id}.eml")))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut e = serde_json::json!({
        "id": id,
        "state": state,
        "direction": env["direction"],
        "from": env["from"],
        "recipients": recipients,
        "client": env["client"],
        "received": env["received"],
        "size": size,
        "attempts": st["attempts"].as_u64().unwrap_or(0),
        "dsn": st["dsn"].as_bool().unwrap_or(false),
    });
    for (k, v) in [
        ("next_attempt", st["next_attempt"].clone()),
        ("last_attempt", st["last_attempt"].clone()),
        ("last_error", st["last_error"].clone()),
        ("held_reason", env["held_reason"].clone()),
    ] {
        if !v.is_null() && (k != "next_attempt" || state == "deferred") {
            e[k] = v;
        }
    }
    Some(e)
}

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

fn read_dir_entries(data_dir: &Path) -> Vec<Value> {
    let spool = data_dir.join("spool");
    let mut out = Vec::new();
    for sub in ["", "held", "bounced"] {
        let dir = if sub.is_empty() {
            spool.clone()
        } else {
            spool.join(sub)
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_suffix(".json")
                && is_id(id)
                && let Some(v) = read_entry(&dir, id, sub)
            {
                out.push(v);
            }
        }
    }
    out.sort_by(|a, b| {
        (a["received"].as_i64(), a["id"].as_str()).cmp(&(b["received"].as_i64(), b["id"].as_str()))
    });
    out
}

fn table(list: &[Value]) {
    println!(
        "{:<32} {:<9} {:>3} {:<30} RECIPIENTS / LAST ERROR",
        "ID", "STATE", "TRY", "FROM"
    );
    for m in list {
        let to: Vec<String> = m["recipients"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|r| {
                        format!(
                            "{} ({})",
                            r["address"].as_str().unwrap_or("?"),
                            r["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let from = m["from"].as_str().unwrap_or("");
        println!(
            "{:<32} {:<9} {:>3} {:<30} {}",
            m["id"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["attempts"].as_u64().unwrap_or(0),
            if from.is_empty() { "<>" } else { from },
            to.join(", ")
        );
        if let Some(e) = m["last_error"].as_str().or(m["held_reason"].as_str()) {
            println!("{:<32} {e}", "");
        }
    }
    println!("{} message(s)", list.len());
}

pub(crate) fn run(cmd: QueueCmd) -> Outcome {
    match cmd {
        QueueCmd::List {
            data_dir,
            state,
            json,
        } => {
            if let Some(s) = &state
                && !STATES.contains(&s.as_str())
            {
                return Err(Failure(
                    format!("--state {s:?}: use queued, deferred, held or bounced"),
                    2,
                ));
            }
            let list: Vec<Value> = match running(&data_dir) {
                Some(d) => {
                    let path = match &state {
                        Some(s) => format!("/queue?state={s}"),
                        None => "/queue".into(),
                    };
                    let v: Value = d.json("GET", &path, None)?;
                    v["messages"].as_array().cloned().unwrap_or_default()
                }
                None => read_dir_entries(&data_dir)
                    .into_iter()
                    .filter(|m| state.as_deref().is_none_or(|s| m["state"] == s))
                    .collect(),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                table(&list);
            }
        }
        QueueCmd::Show { data_dir, id } => {
            let v: Value = match running(&data_dir) {
                Some(d) => d.json("GET", &format!("/queue/{}", segment(&id)), None)?,
                None => read_dir_entries(&data_dir)
                    .into_iter()
                    .find(|m| m["id"] == id.as_str())
                    .ok_or_else(|| Failure(format!("no message {id:?} in the queue"), 1))?,
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        QueueCmd::Retry { data_dir, id } => act(&data_dir, &id, "retry", "due now")?,
        QueueCmd::Hold { data_dir, id } => act(&data_dir, &id, "hold", "held")?,
        QueueCmd::Release { data_dir, id } => act(&data_dir, &id, "release", "released")?,
        QueueCmd::Delete { data_dir, id } => {
            let d = running(&data_dir).ok_or_else(|| no_daemon(&data_dir))?;
            d.done("DELETE", &format!("/queue/{}", segment(&id)), None)?;
            println!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn act(data_dir: &Path, id: &str, action: &str, done: &str) -> Result<(), Failure> {
    let d = running(data_dir).ok_or_else(|| no_daemon(data_dir))?;
    let v: Value = d.json("POST", &format!("/queue/{}/{action}", segment(id)), None)?;
    println!("{} {done} ({})", id, v["state"].as_str().unwrap_or("?"));
    Ok(())
}
