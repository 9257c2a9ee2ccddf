//! `sealctl scan`: the daemon's scanning pipeline, offline, on one message.
//!
//! Contract (issue 15): `sealctl scan --in MESSAGE [--data-dir DIR] [--direction
//! inbound|outbound] [--hashdb FILE]...` prints one JSON object `{"action", "score",
//! "labels", "checks", ...}` and exits 0 whatever the verdict; 1 only when the message could
//! not be scanned at all (unreadable file, a database, spam model or settings file that does
//! not load, a vault that does not open). A missing spam model is the label
//! `classifier-unavailable`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sealgate_scan::{Direction, Input, Settings};
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::mime::{Entity, SmimeKind};
use sealgate_smime::signed::VerifyOptions;

use crate::{Failure, Outcome, read_file, vault_cmd};

/// `sealctl scan`'s arguments.
#[derive(Args)]
pub(crate) struct ScanCmd {
    /// The message (RFC 5322, as received).
    #[arg(long = "in", value_name = "MESSAGE")]
    input: PathBuf,
    /// A data directory whose vault's keys decrypt an encrypted message for scanning (without
    /// one, or without a key for it, it is labelled encrypted-undecryptable).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Which way the message goes: inbound (the default) or outbound.
    #[arg(long, value_name = "DIRECTION", default_value = "inbound")]
    direction: Direction,
    /// A ClamAV hash database (.hdb: MD5:size:name, .hsb: SHA256:size:name) added to the
    /// shipped signatures. Repeatable.
    #[arg(long = "hashdb", value_name = "FILE")]
    hashdb: Vec<PathBuf>,
    /// The daemon's settings file: its [scan] section (thresholds, DLP rules, hashdb files,
    /// the reputation service and clamd, asked only with --online).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Also ask the network services the settings configure (the URL reputation service,
    /// clamd); a service that does not answer is a label, not a failure.
    #[arg(long)]
    online: bool,
    /// The spam classifier's model (default: [scan] model, the shipped
    /// /usr/share/sealgate/spam-model.bin). With --data-dir, the box's local layer
    /// (DIR/scan/spam-local.bin: admin training) is added to it.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    #[command(flatten)]
    sealer: vault_cmd::SealerArgs,
}

/// `[scan]` of a settings file (every other section ignored).
fn scan_settings(path: &Path) -> Result<Settings, Failure> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        scan: Settings,
    }
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| Failure(format!("{}: not UTF-8", path.display()), 1))?;
    let f: File =
        toml::from_str(&text).map_err(|e| Failure(format!("{}: {e}", path.display()), 1))?;
    Ok(f.scan)
}

pub(crate) fn run(c: ScanCmd) -> Outcome {
    let settings = match &c.settings {
        Some(p) => scan_settings(p)?,
        None => Settings::default(),
    };
    let mut dbs = Vec::new();
    for p in settings.hashdb.iter().chain(&c.hashdb) {
        let text = String::from_utf8(read_file(p)?)
            .map_err(|_| Failure(format!("{}: not UTF-8", p.display()), 1))?;
        dbs.push((p.display().to_string(), text));
    }
    // Offline unless asked: the services' stages are not even in the pipeline.
    let mut settings = settings;
    if !c.online {
        settings.reputation_url = None;
        settings.clamd = None;
    }
    let mut pipeline = settings.pipeline(&dbs).map_err(|e| Failure(e, 1))?;
    let services = sealgate_scan_net::Services::new(&settings).map_err(|e| Failure(e, 1))?;
    let model = c.model.as_deref().unwrap_or(&settings.model);
    pipeline.lookups.classifier =
        classifier(model, c.data_dir.as_deref()).map_err(|e| Failure(e, 1))?;
    let raw = read_file(&c.input)?;
    let clear = cleartext(&raw, c.data_dir.as_deref(), &c.sealer)?;
    let input = Input {
        message: &raw,
        decrypted: clear.as_deref(),
        direction: c.direction,
    };
    let report = services.scan(&pipeline, &input, None);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The classifier of `model` plus the local layer under `data_dir`: a missing model file is
/// the label `classifier-unavailable`, one that does not load an error (exit 1).
fn classifier(
    model: &Path,
    data_dir: Option<&Path>,
) -> Result<sealgate_scan::classifier::Loaded, String> {
    let read = |p: &Path| match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    };
    if model.as_os_str().is_empty() {
        return Ok(sealgate_scan::classifier::Loaded::Off);
    }
    let base = read(model)?;
    let local = match data_dir {
        Some(d) => read(&d.join(sealgate_scan::classifier::LOCAL_LAYER))?,
        None => None,
    };
    sealgate_scan::classifier::Loaded::from_files(model, base.as_deref(), local.as_deref())
}

/// The message without its S/MIME layers: decrypted with the vault's keys when it is
/// encrypted (None when it cannot be), unwrapped when it is opaque-signed.
fn cleartext(
    raw: &[u8],
    data_dir: Option<&Path>,
    sealer: &vault_cmd::SealerArgs,
) -> Result<Option<Vec<u8>>, Failure> {
    let encrypted = sealgate_scan::is_encrypted(raw);
    let opaque_signed = Entity::parse(raw).smime_kind() == SmimeKind::SignedOpaque;
    if !encrypted && !opaque_signed {
        return Ok(None);
    }
    let keys: Vec<Box<dyn PrivateKey>> = match (encrypted, data_dir) {
        (true, Some(dir)) => vault_cmd::all_keys(dir, sealer)?,
        _ => Vec::new(),
    };
    let refs: Vec<&dyn PrivateKey> = keys.iter().map(|k| k.as_ref()).collect();
    // A message that does not open is scanned as what it is: an undecryptable message, or
    // (opaque-signed) the headers and its body as they are.
    Ok(
        message::open(raw, &refs, &VerifyOptions::default(), OpenMode::Everything)
            .ok()
            .filter(|o| !encrypted || o.decrypted())
            .map(|o| o.output),
    )
}
