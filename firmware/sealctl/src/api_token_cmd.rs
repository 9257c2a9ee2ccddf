//! `sealctl api-token ...`: the docking API's bearer tokens.
//!
//! Tokens are stored hashed (SHA-256 of 256 random bits) in `DATA/api-tokens.json`, the file
//! `sealgated` reads; its format, lock and atomic writes are `sealgate-tokenfile`'s
//! (`firmware/tokenfile`), shared with the daemon, so a write here and one by the daemon never
//! lose each other's change. The daemon notices a changed file on the next request.
//!
//! While `sealgated` runs on the data directory, `list`, `create` and `revoke` ask it through
//! its admin socket instead (see `admin_socket.rs`; audited in the vault, and a revoked token
//! is refused at once), so that only the daemon writes the file it serves from. A token with
//! the `admin` scope is not made through the admin API (it refuses those), so `create
//! --scope admin` writes the file as before.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_tokenfile as tokenfile;

use crate::Failure;
use crate::admin_socket::{running, segment};

const SCOPES: [&str; 5] = ["decrypt", "encrypt", "sign", "verify", "admin"];

#[derive(Subcommand)]
pub(crate) enum ApiTokenCmd {
    /// Make a token; it is printed once (on stdout) and stored only hashed.
    Create {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// A unique name (the client in the audit log).
        #[arg(long)]
        name: String,
        /// What it may call: any of decrypt, encrypt, sign, verify (default: all four).
        #[arg(long, value_delimiter = ',', default_values_t = ["decrypt".to_string(), "encrypt".to_string(), "sign".to_string(), "verify".to_string()])]
        scope: Vec<String>,
    },
    /// List tokens as JSON (names, scopes, creation time; never the tokens).
    List {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Revoke a token by name; the daemon refuses it from the next request on.
    Revoke {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The token's name.
        name: String,
    },
}

fn failed(e: anyhow::Error) -> Failure {
    Failure(format!("{e:#}"), 1)
}

pub(crate) fn run(cmd: ApiTokenCmd) -> crate::Outcome {
    match cmd {
        ApiTokenCmd::Create {
            data_dir,
            name,
            scope,
        } => {
            let name = name.trim().to_string();
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(Failure("--name must be one word".into(), 2));
            }
            let mut scopes: Vec<String> = Vec::new();
            for s in scope.iter().map(|s| s.trim()) {
                if !SCOPES.contains(&s) {
                    return Err(Failure(
                        format!("unknown scope {s:?} (decrypt, encrypt, sign, verify)"),
                        2,
                    ));
                }
                if !scopes.iter().any(|x| x == s) {
                    scopes.push(s.to_string());
                }
            }
            if !scopes.iter().any(|s| s == "admin")
                && let Some(d) = running(&data_dir)
            {
                let created: serde_json::Value = d.json(
                    "POST",
                    "/tokens",
                    Some(&serde_json::json!({"name": name, "scopes": scopes})),
                )?;
                let token = created["token"]
                    .as_str()
                    .ok_or_else(|| Failure("sealgated answered without a token".into(), 1))?;
                println!("{token}");
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&data_dir)?;
            if tokenfile::load::<String>(&data_dir)
                .map_err(failed)?
                .tokens
                .iter()
                .any(|t| t.name == name)
            {
                return Err(Failure(
                    format!("a token named {name:?} exists (revoke it first)"),
                    1,
                ));
            }
            let token = tokenfile::create(&data_dir, &name, &scopes).map_err(failed)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        ApiTokenCmd::List { data_dir } => {
            let list: Vec<serde_json::Value> = match running(&data_dir) {
                Some(d) => d
                    .json::<Vec<serde_json::Value>>("GET", "/tokens", None)?
                    .iter()
                    .map(|t| serde_json::json!({"name": t["name"], "scopes": t["scopes"], "created": t["created"]}))
                    .collect(),
                None => tokenfile::load::<String>(&data_dir)
                    .map_err(failed)?
                    .tokens
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "scopes": t.scopes, "created": t.created}))
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&list)?);
            Ok(ExitCode::SUCCESS)
        }
        ApiTokenCmd::Revoke { data_dir, name } => {
            if let Some(d) = running(&data_dir) {
                d.done("DELETE", &format!("/tokens/{}", segment(&name)), None)?;
                return Ok(ExitCode::SUCCESS);
            }
            if !tokenfile::revoke::<String>(&data_dir, &name).map_err(failed)? {
                return Err(Failure(format!("no token named {name:?}"), 1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
