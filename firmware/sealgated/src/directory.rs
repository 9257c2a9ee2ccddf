//! The daemon's certificate directory (`sealgate-directory`): set up once at start from
//! `[directory]`, asked by every encrypting path through [`encryption_certificate`] (the
//! docking API's `encrypt` and its sender copy, the SMTP hand-off, the admin API's lookup).
//!
//! Every lookup is audited: one JSON line in `DATA/audit/directory.jsonl` (rotated like the
//! docking audit) with the address, the source that answered and the result, never more.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use sealgate_directory::{Directory, Local, Lookup};
use sealgate_smime::cert::Certificate;
use sealgate_smime::signed::Revoked;
use sealgate_vault::VaultError;
use serde::Serialize;

use crate::keys::KeyDirectory;
use crate::logfile::RotatingFile;

static DIRECTORY: OnceLock<Arc<Directory>> = OnceLock::new();

/// One audited lookup.
#[derive(Serialize)]
struct Record<'a> {
    time: String,
    address: &'a str,
    source: &'a str,
    result: &'a str,
    refused: usize,
}

/// Sets up the process's directory (the first call wins): `anchors` are `[docking]
/// trust_anchors` (the box CA comes from the vault at each lookup).
pub fn configure(
    settings: &sealgate_directory::Settings,
    anchors: Vec<Certificate>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let file = RotatingFile::open(
        &data_dir.join("audit").join("directory.jsonl"),
        crate::audit::MAX_BYTES,
        crate::audit::KEEP,
    )?;
    let file = Mutex::new(file);
    let dir = Directory::new(settings.clone(), anchors, None)
        .map_err(|e| anyhow::anyhow!("[directory] {e}"))?
        .with_audit(Box::new(move |l: &Lookup, cached: bool| {
            let source = l.source.map_or("none", |s| s.as_str());
            let result = match (&l.certificate, cached) {
                (Some(_), false) => "found",
                (Some(_), true) => "found-cached",
                (None, false) => "none",
                (None, true) => "none-cached",
            };
            tracing::info!(
                target: "directory",
                address = %l.address,
                source,
                result,
                refused = l.refused.len(),
                "certificate lookup"
            );
            let rec = Record {
                time: sealgate_smime::chain::rfc3339(sealgate_directory::unix_now()),
                address: &l.address,
                source,
                result,
                refused: l.refused.len(),
            };
            if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(&rec), file.lock()) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }));
    let blocked = sealgate_directory::blocklist::load(data_dir).map_err(|e| anyhow::anyhow!(e))?;
    dir.set_blocked(blocked.into_iter().map(|b| b.sha256).collect());
    let harvested =
        sealgate_directory::harvested::load(data_dir).map_err(|e| anyhow::anyhow!(e))?;
    dir.set_harvested(&harvested);
    let _ = DIRECTORY.set(Arc::new(dir));
    Ok(())
}

/// One read-modify-write of the harvested certificates at a time.
static HARVESTED: Mutex<()> = Mutex::new(());

/// Changes `DATA/directory-harvested.json` under its lock and hands the new list to the
/// directory; `change`'s answer.
pub fn change_harvested<T>(
    data_dir: &Path,
    change: impl FnOnce(&mut Vec<sealgate_directory::harvested::Harvested>) -> T,
) -> Result<T, String> {
    let _guard = HARVESTED
        .lock()
        .map_err(|_| "the harvest lock is poisoned")?;
    let mut list = sealgate_directory::harvested::load(data_dir)?;
    let out = change(&mut list);
    sealgate_directory::harvested::save(data_dir, &list)?;
    if let Some(d) = get() {
        d.set_harvested(&list);
    }
    Ok(out)
}

/// The process's directory, once configured.
pub fn get() -> Option<Arc<Directory>> {
    DIRECTORY.get().cloned()
}

/// The vault's side as the docking operations see it (cached), for the directory. A vault
/// error is kept and returned by [`encryption_certificate`] when nothing was found, so a
/// vault failure stays a 5xx rather than "no certificate".
struct Keys<'a> {
    keys: &'a dyn KeyDirectory,
    now: i64,
    error: Mutex<Option<VaultError>>,
}

impl Keys<'_> {
    fn keep<T: Default>(&self, r: Result<T, VaultError>) -> Result<T, String> {
        r.map_err(|e| {
            let text = format!("the vault: {e}");
            if let Ok(mut slot) = self.error.lock()
                && slot.is_none()
            {
                *slot = Some(e);
            }
            text
        })
    }

    /// (the local user's certificate, a stored certificate): the cached encryption
    /// certificate is the user's own when the box holds the user's keys.
    fn split(&self, address: &str) -> Result<(Option<Certificate>, Option<Certificate>), String> {
        let Some(c) = self.keep(self.keys.encryption_certificate(address, self.now))? else {
            return Ok((None, None));
        };
        if !self.keep(self.keys.holds_keys(address))? {
            Ok((None, Some(c)))
        } else {
            Ok((Some(c), None))
        }
    }
}

impl Local for Keys<'_> {
    fn own(&self, address: &str) -> Result<Option<Certificate>, String> {
        Ok(self.split(address)?.0)
    }
    fn stored(&self, address: &str) -> Result<Vec<Certificate>, String> {
        Ok(self.split(address)?.1.into_iter().collect())
    }
    fn anchors(&self) -> Vec<Certificate> {
        self.keys.anchors()
    }
    fn revoked(&self) -> Vec<Revoked> {
        self.keys.revoked()
    }
}

/// The certificate to encrypt to for `address`: the directory's answer (vault first, then
/// the configured sources), or the vault's alone when no directory is configured.
pub fn encryption_certificate(
    keys: &dyn KeyDirectory,
    address: &str,
    now: i64,
) -> Result<Option<Certificate>, VaultError> {
    let Some(dir) = get() else {
        return keys.encryption_certificate(address, now);
    };
    let local = Keys {
        keys,
        now,
        error: Mutex::new(None),
    };
    let found = dir.lookup_with(&local, address, dir.deadline());
    if found.certificate.is_none()
        && let Ok(mut e) = local.error.lock()
        && let Some(e) = e.take()
    {
        return Err(e);
    }
    Ok(found.certificate)
}

/// `cert` as a recipient of an encryption, with what its owner's software advertised in
/// signatures the box harvested (RSA-OAEP key transport when listed).
pub fn recipient(cert: Certificate) -> sealgate_smime::Result<sealgate_smime::envelope::Recipient> {
    let caps = get().map(|d| d.capabilities(&cert)).unwrap_or_default();
    sealgate_smime::envelope::Recipient::with_capabilities(cert, &caps)
}
