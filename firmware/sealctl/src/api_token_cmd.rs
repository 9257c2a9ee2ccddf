//! `sealctl api-token ...`: the docking API's bearer tokens.
//!
//! Tokens are stored hashed (SHA-256 of 256 random bits) in `DATA/api-tokens.json`, the file
//! `sealgated` reads (see `firmware/sealgated/src/tokens.rs` for the format, version 1). The
//! file is separate from the vault's database so that tokens can be made while the daemon runs
//! (redb admits one process at a time); the daemon notices a changed file on the next request.
//!
//! While `sealgated` runs on the data directory, `list`, `create` and `revoke` ask it through
//! its admin socket instead (see `admin_socket.rs`; audited in the vault, and a revoked token
//! is refused at once), so that only the daemon writes the file it serves from. A token with
//! the `admin` scope is not made through the admin API (it refuses those), so `create
//! --scope admin` writes the file as before.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sealgate_smime::crypto::{HashAlg, random};
use serde::{Deserialize, Serialize};

use crate::Failure;
use crate::admin_socket::{running, segment};

const TOKENS_FILE: &str = "api-tokens.json";
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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    name: String,
    sha256: String,
    scopes: Vec<String>,
    created: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn load(path: &Path) -> Result<TokenFile, Failure> {
    if !path.exists() {
        return Ok(TokenFile {
            version: 1,
            tokens: Vec::new(),
        });
    }
    let f: TokenFile = serde_json::from_slice(&crate::read_file(path)?)
        .map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?;
    if f.version != 1 {
        return Err(Failure(
            format!("{}: unknown version {}", path.display(), f.version),
            1,
        ));
    }
    Ok(f)
}

/// Temporary file (0600), fsync, rename, fsync the directory: readers see old or new.
fn store(path: &Path, f: &TokenFile) -> Result<(), Failure> {
    use sealgate_local::fsio::{Mode, write_atomic};
    write_atomic(path, &serde_json::to_vec_pretty(f)?, Mode::Exactly(0o600))
        .map_err(|e| Failure(format!("cannot write {}: {e}", path.display()), 1))
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
            let path = data_dir.join(TOKENS_FILE);
            let mut f = load(&path)?;
            if f.tokens.iter().any(|t| t.name == name) {
                return Err(Failure(
                    format!("a token named {name:?} exists (revoke it first)"),
                    1,
                ));
            }
            let token = format!("sgt_{}", hex(&random(32)?));
            let created = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            f.tokens.push(TokenRecord {
                name,
                sha256: hex(&HashAlg::Sha256.digest(token.as_bytes())),
                scopes,
                created,
            });
            store(&path, &f)?;
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
                None => load(&data_dir.join(TOKENS_FILE))?
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
            let path = data_dir.join(TOKENS_FILE);
            let mut f = load(&path)?;
            let before = f.tokens.len();
            f.tokens.retain(|t| t.name != name);
            if f.tokens.len() == before {
                return Err(Failure(format!("no token named {name:?}"), 1));
            }
            store(&path, &f)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
