//! Over-the-air updates on the admin API: a signed RAUC bundle uploaded, checked, installed
//! into the other root slot; the slot is committed only after the updated box passed its
//! health gate.
//!
//! - `POST /update` (admin), body: the bundle (`application/octet-stream`, at most
//!   [`MAX_BUNDLE_BYTES`]): streamed to `DATA/update/upload.part`, then renamed to
//!   `staged.raucb`. Before anything is installed, `rauc info` checks the bundle's signature
//!   against the box's keyring (`/etc/rauc/system.conf`), its board (the `compatible` of
//!   system.conf) and its version against the floor (`DATA/update/floor`, else the running
//!   version): a refusal is a 422 and the staged file is removed. Accepted: 202, and
//!   RAUC's D-Bus service installs it in the background (`crate::rauc`, zbus;
//!   one install at a time, 409 while one runs). RAUC writes the other slot, the box's
//!   post-install handler puts that slot's signed UKI on the ESP, and RAUC makes the slot
//!   primary (GRUB tries it three times at the next reboots). The daemon then records the
//!   pending update (`DATA/update/pending.json`).
//! - `POST /update?stage=true` (admin): the same upload and checks, but the bundle stays
//!   staged (`staged.raucb`, its version in `staged.json`; 201) until `POST /update/staged`
//!   (admin; the console's Updates page, as root over the admin socket) checks it again
//!   (the floor may have moved) and installs it (202). One staged bundle at a time: any later
//!   upload replaces it.
//! - `GET /update` (admin, auditor): the state (`idle`, `installing`, `installed`,
//!   `failed`), progress in percent, the last error, the running slot and version, the
//!   floor, the pending update, the staged bundle's version and RAUC's slot table (`rauc
//!   status`).
//! - `POST /update/commit` (admin; the console's health gate, as root over the admin socket,
//!   after it marked the boot slot good): when the pending update's slot is the booted one,
//!   the update is committed: the vault drops its older sealed copies
//!   ([`sealgate_vault::Vault::commit_update`]), the floor becomes the new version, the
//!   pending record goes. `{"failed_slot":"B"}` (GRUB fell back) records the failed update
//!   in the status and the audit chain.
//!
//! Who can upload: an administrator of the admin API (session with CSRF, or an admin API
//! token). What a forged bundle gets: nothing is installed. RAUC checks the CMS signature
//! against the CA built into the read-only root (dm-verity, PCR 4) before it reads the
//! manifest; a bundle of another CA, a changed manifest or a changed signature fails
//! `rauc info` here (422); a flipped payload byte passes the signature (the payload is
//! covered by the signed dm-verity root hash) and is caught while RAUC reads it through
//! dm-verity: the install fails and the target slot is left bad, the running slot untouched.
//! An administrator's valid bundle of an older version is refused by the floor.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{App, Data, Need, answer, audit, authorize, json_body, ok_json, source};
use crate::problem::Problem;

/// The largest bundle `POST /update` takes (the slot is 160 MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;
/// RAUC's configuration on the box.
pub const RAUC_CONF: &str = "/etc/rauc/system.conf";
/// The update folder in the data directory.
const DIR: &str = "update";
/// Names another RAUC configuration than [`RAUC_CONF`] (the host's tests: a system.conf
/// with a test keyring; the box's init never sets it).
pub const RAUC_CONF_ENV: &str = "SEALGATE_RAUC_CONF";

/// RAUC's configuration: [`RAUC_CONF_ENV`], else [`RAUC_CONF`].
fn rauc_conf() -> PathBuf {
    std::env::var_os(RAUC_CONF_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RAUC_CONF))
}

/// What an install is doing, shared by the handlers and the install thread.
#[derive(Default)]
pub struct UpdateState {
    inner: Mutex<Progress>,
    /// An upload is being received or checked (one at a time: they share the staging files).
    receiving: AtomicBool,
}

/// One upload's claim on the staging files: releases the claim and removes what the upload
/// left (`upload.part`, `staged.raucb`) when it ends without handing the bundle to the
/// install, also when the client goes away mid-body (the handler's future is dropped).
struct Upload<'a> {
    state: &'a UpdateState,
    files: Vec<PathBuf>,
}

impl<'a> Upload<'a> {
    fn claim(state: &'a UpdateState) -> Option<Upload<'a>> {
        state
            .receiving
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Upload {
                state,
                files: Vec::new(),
            })
    }

    /// The bundle went to the install thread: the staged file is its now.
    fn handed_over(mut self) {
        self.files.clear();
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        self.state.receiving.store(false, Ordering::Release);
    }
}

#[derive(Default, Clone, Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Progress {
    /// `idle`, `installing`, `installed` (reboot to run it), `failed`.
    state: String,
    percent: u8,
    message: String,
    version: Option<String>,
    last_error: Option<String>,
}

impl UpdateState {
    fn get(&self) -> Progress {
        let p = self.inner.lock().map(|p| p.clone()).unwrap_or_default();
        if p.state.is_empty() {
            Progress {
                state: "idle".into(),
                ..p
            }
        } else {
            p
        }
    }

    fn set(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.inner.lock() {
            f(&mut p);
        }
    }
}

/// The update pending its commit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub version: String,
    /// The slot it was installed into (A or B).
    pub slot: String,
    /// The slot that ran when it was installed.
    pub from_slot: String,
}

/// The update folder, created (mode 0700).
fn dir(data: &Path) -> Result<PathBuf, Problem> {
    let d = data.join(DIR);
    fs::create_dir_all(&d).map_err(internal)?;
    Ok(d)
}

fn internal(e: impl std::fmt::Display) -> Problem {
    Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
}

fn refused(title: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(422, "update-refused", title, detail)
}

/// The booted slot (`sealgate.slot=` on the signed kernel command line).
fn booted_slot() -> Option<String> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("sealgate.slot="))
        .filter(|s| *s == "A" || *s == "B")
        .map(str::to_string)
}

/// The running version.
fn running_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Compares versions component by component (`.`, `-`, `+`, `~` separate; numbers
/// numerically, anything else as text, a number before text).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<String> {
        s.split(['.', '-', '+', '~'])
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (parts(a), parts(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("0");
        let y = pb.get(i).map(String::as_str).unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// The version floor: `DATA/update/floor`, else the running version.
fn floor(data: &Path) -> String {
    fs::read_to_string(data.join(DIR).join("floor"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(running_version)
}

/// The `compatible=` of RAUC's system.conf.
pub fn conf_compatible(conf: &str) -> Option<String> {
    let mut in_system = false;
    for line in conf.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_system = line == "[system]";
        } else if in_system && let Some(v) = line.strip_prefix("compatible=") {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// What `rauc info --output-format=json` says of a bundle.
#[derive(Deserialize, Debug)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: Option<String>,
}

/// Checks a bundle's board and version (its signature was checked by `rauc info`).
pub fn check_bundle(
    info: &BundleInfo,
    compatible: &str,
    floor: &str,
) -> Result<String, (&'static str, String)> {
    if info.compatible != compatible {
        return Err((
            "The bundle is for another board",
            format!(
                "the bundle is for {:?}; this box is {compatible:?}",
                info.compatible
            ),
        ));
    }
    let version = info
        .version
        .clone()
        .filter(|v| !v.is_empty())
        .ok_or(("The bundle has no version", String::new()))?;
    if compare_versions(&version, floor).is_lt() {
        return Err((
            "The bundle is older than the version floor",
            format!(
                "version {version} is below the floor {floor}: downgrades are refused unless an \
                 administrator lowers the floor"
            ),
        ));
    }
    Ok(version)
}

/// `rauc info` of `bundle`: verifies the signature against the box's keyring.
fn rauc_info(bundle: &Path) -> Result<BundleInfo, Problem> {
    let out = Command::new("rauc")
        .arg(format!("--conf={}", rauc_conf().display()))
        .args(["info", "--output-format=json"])
        .arg(bundle)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| internal(format!("running rauc info: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("rauc refused it")
            .chars()
            .take(300)
            .collect::<String>();
        return Err(refused(
            "The bundle does not verify",
            format!("not signed by this box's update CA, or damaged: {why}"),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        refused(
            "The bundle does not verify",
            format!("rauc info answered no manifest: {e}"),
        )
    })
}

/// The one upload slot, claimed for a new bundle on a box that takes updates and is not
/// installing one: else the refusal.
fn begin(state: &UpdateState) -> Result<Upload<'_>, Problem> {
    let Some(claim) = Upload::claim(state) else {
        return Err(Problem::new(
            409,
            "update-running",
            "Another bundle is being uploaded",
            "one upload at a time: wait until it is done",
        ));
    };
    if state.get().state == "installing" {
        return Err(Problem::new(
            409,
            "update-running",
            "An update is being installed",
            "wait until GET /api/v1/admin/update says it is done",
        ));
    }
    let conf_path = rauc_conf();
    if !conf_path.is_file() {
        return Err(Problem::new(
            409,
            "updates-unavailable",
            "This system does not take updates",
            format!(
                "no {}: updates are installed on a box only",
                conf_path.display()
            ),
        ));
    }
    Ok(claim)
}

/// Where a bundle is received (`upload.part`) and staged (`staged.raucb`); the claim removes
/// both unless the install thread takes the staged one.
fn staging(claim: &mut Upload<'_>, data: &Path) -> Result<(PathBuf, PathBuf), Problem> {
    let d = dir(data)?;
    let part = d.join("upload.part");
    let staged = d.join("staged.raucb");
    claim.files = vec![part.clone(), staged.clone()];
    Ok((part, staged))
}

fn too_large() -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "The bundle is too large",
        format!("the limit is {MAX_BUNDLE_BYTES} bytes"),
    )
}

/// `POST /update` (admin): see the module documentation.
pub(super) async fn upload(
    req: HttpRequest,
    mut payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let state = ad.clone();
    let state = &state.update;
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let mut claim = begin(state)?;
        // A declared length over the limit is refused before a byte is written.
        if let Some(len) = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            && len > MAX_BUNDLE_BYTES
        {
            return Err(too_large());
        }
        let (part, staged) = staging(&mut claim, &ad.data_dir)?;
        let mut file = fs::File::create(&part).map_err(internal)?;
        let mut total: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    return Err(Problem::bad_request(format!("reading the body: {e}")));
                }
            };
            total += chunk.len() as u64;
            if total > MAX_BUNDLE_BYTES {
                return Err(too_large());
            }
            if let Err(e) = file.write_all(&chunk) {
                return Err(internal(format!("writing the upload: {e}")));
            }
        }
        if total == 0 {
            return Err(Problem::bad_request(
                "send the bundle (a .raucb file) as the request body",
            ));
        }
        file.sync_all().map_err(internal)?;
        drop(file);
        fs::rename(&part, &staged).map_err(internal)?;
        let stage = req
            .query_string()
            .split('&')
            .any(|kv| kv == "stage=true" || kv == "stage=1");
        accept(&app, &ad, &c.username, &src, staged, claim, started, stage).await
    }
    .await;
    answer(r)
}

/// The checks every staged bundle passes before it is installed (signature, board,
/// floor), then the install in the background: 202, or the refusal (the claim removes the
/// staged file). With `stage`, the checked bundle stays staged instead (201).
#[allow(clippy::too_many_arguments)]
async fn accept(
    app: &App,
    ad: &Data,
    user: &str,
    src: &str,
    staged: PathBuf,
    claim: Upload<'_>,
    started: Instant,
    stage: bool,
) -> Result<HttpResponse, Problem> {
    let state = &ad.update;
    // Whatever comes of this bundle, it replaced the one staged before.
    let staged_json = staged.with_file_name(STAGED_JSON);
    let _ = fs::remove_file(&staged_json);
    let conf_path = rauc_conf();
    let check = {
        let staged = staged.clone();
        let data = ad.data_dir.clone();
        web::block(move || -> Result<String, Problem> {
            let info = rauc_info(&staged)?;
            let conf = fs::read_to_string(&conf_path)
                .map_err(|e| internal(format!("reading {}: {e}", conf_path.display())))?;
            let compatible = conf_compatible(&conf)
                .ok_or_else(|| internal(format!("{} has no compatible=", conf_path.display())))?;
            check_bundle(&info, &compatible, &floor(&data))
                .map_err(|(title, detail)| refused(title, detail))
        })
        .await
        .map_err(internal)?
    };
    let version = match check {
        Ok(v) => v,
        Err(p) => {
            audit(app, ad, user, src, "update.refused", "update", 422, started);
            return Err(p);
        }
    };
    if stage {
        sealgate_tokenfile::write_atomic(
            &staged_json,
            &serde_json::to_vec(&serde_json::json!({ "version": version })).map_err(internal)?,
        )
        .map_err(internal)?;
        audit(app, ad, user, src, "update.stage", &version, 201, started);
        crate::console(&format!(
            "update {version} staged by {user}: install it from the console's Updates page"
        ));
        claim.handed_over();
        return Ok(ok_json(
            201,
            &serde_json::json!({
                "state": "staged",
                "version": version,
                "detail": "staged; POST /api/v1/admin/update/staged (or the console's Updates page) installs it",
            }),
        ));
    }
    state.set(|p| {
        *p = Progress {
            state: "installing".into(),
            percent: 0,
            message: "starting".into(),
            version: Some(version.clone()),
            last_error: p.last_error.clone(),
        }
    });
    audit(app, ad, user, src, "update.install", &version, 202, started);
    crate::console(&format!(
        "update {version} received from {user}: installing into the other slot"
    ));
    // From here the staged bundle is the install thread's (the state says installing,
    // which keeps further uploads out).
    claim.handed_over();
    let data = ad.data_dir.clone();
    let ad2 = ad.clone();
    let v = version.clone();
    let tcti = ad.tpm.get().cloned().flatten();
    std::thread::spawn(move || install(&data, &staged, &v, &ad2.update, &ad2.vault, tcti));
    Ok(ok_json(
        202,
        &serde_json::json!({
            "state": "installing",
            "version": version,
            "detail": "installing into the other slot; GET /api/v1/admin/update shows the progress",
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromUrl {
    url: String,
    /// PEM trust anchors for this fetch, besides the system's.
    #[serde(default)]
    ca: Option<String>,
}

/// `POST /update/url` (admin), `{"url":"https://...","ca":"PEM"?}`: the bundle fetched by
/// the box (`update_fetch.rs`), then the upload's checks and install.
pub(super) async fn from_url(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let state = ad.clone();
    let state = &state.update;
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: FromUrl = super::json_body_max(payload, 256 * 1024).await?;
        let target = crate::update_fetch::parse_url(&b.url)
            .map_err(|e| Problem::new(422, "invalid-url", "The URL cannot be fetched", e))?;
        let tls = crate::update_fetch::client_config(b.ca.as_deref().map(str::as_bytes))
            .map_err(|e| Problem::new(422, "invalid-ca", "The trust anchors are not usable", e))?;
        // Checked with the settings; a proxy that does not parse here is a settings error.
        let proxy = match &app.settings.proxy.url {
            Some(u) => Some(crate::update_url::parse_proxy(u).map_err(|e| {
                Problem::new(
                    422,
                    "invalid-proxy",
                    "The configured proxy is not usable",
                    e,
                )
            })?),
            None => None,
        };
        let mut claim = begin(state)?;
        let (part, staged) = staging(&mut claim, &ad.data_dir)?;
        let fetched = {
            let part = part.clone();
            web::block(move || {
                crate::update_fetch::fetch(
                    &target,
                    proxy.as_ref(),
                    tls,
                    &part,
                    MAX_BUNDLE_BYTES,
                    Instant::now() + crate::update_fetch::DEADLINE,
                )
            })
            .await
            .map_err(internal)?
        };
        match fetched {
            Ok(_) => {}
            Err(crate::update_fetch::FetchError::TooLarge) => {
                audit(
                    &app,
                    &ad,
                    &c.username,
                    &src,
                    "update.refused",
                    "url",
                    413,
                    started,
                );
                return Err(too_large());
            }
            Err(crate::update_fetch::FetchError::Failed(why)) => {
                audit(
                    &app,
                    &ad,
                    &c.username,
                    &src,
                    "update.refused",
                    "url",
                    422,
                    started,
                );
                return Err(Problem::new(
                    422,
                    "update-fetch-failed",
                    "The bundle could not be fetched",
                    why,
                ));
            }
        }
        fs::rename(&part, &staged).map_err(internal)?;
        accept(&app, &ad, &c.username, &src, staged, claim, started, false).await
    }
    .await;
    answer(r)
}

/// Installs through RAUC's D-Bus service (the install thread), then records the pending update.
fn install(
    data: &Path,
    staged: &Path,
    version: &str,
    state: &UpdateState,
    vault: &sealgate_vault::Vault,
    tcti: Option<String>,
) {
    let result = (|| -> anyhow::Result<Pending> {
        // RAUC's service over D-Bus, on a runtime of this thread's own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mark_other_bad = || {
            let _ = rt.block_on(crate::rauc::mark("bad", "other"));
        };
        let installed = rt.block_on(crate::rauc::install(staged, |pct, msg| {
            state.set(|p| {
                p.percent = pct;
                p.message = msg.to_string();
            });
        }));
        if let Err(e) = installed {
            // Whatever RAUC did to the other slot, it must not be booted.
            mark_other_bad();
            anyhow::bail!("rauc install failed: {e}");
        }
        let from = booted_slot().unwrap_or_else(|| "A".into());
        let slot = if from == "A" { "B" } else { "A" };
        let pending = Pending {
            version: version.to_string(),
            slot: slot.to_string(),
            from_slot: from,
        };
        // The vault key sealed for the new slot's boot chain, next to the current copy.
        // Without it the new slot would boot with a locked vault: it is marked bad again.
        if let Err(e) = crate::update_reseal::reseal(data, vault, tcti.as_deref(), slot) {
            mark_other_bad();
            return Err(e.context(format!(
                "the vault could not be re-sealed for slot {slot}; the slot was marked bad again"
            )));
        }
        sealgate_tokenfile::write_atomic(
            &data.join(DIR).join("pending.json"),
            &serde_json::to_vec_pretty(&pending)?,
        )?;
        Ok(pending)
    })();
    let _ = fs::remove_file(staged);
    match result {
        Ok(p) => {
            crate::console(&format!(
                "update {} installed into slot {}: reboot to run it",
                p.version, p.slot
            ));
            state.set(|s| {
                s.state = "installed".into();
                s.percent = 100;
                s.message = format!("installed into slot {}: reboot to run it", p.slot);
                s.last_error = None;
            });
        }
        Err(e) => {
            let text = format!("{e:#}");
            tracing::warn!(error = %text, "update install failed");
            crate::console(&format!("UPDATE FAILED: {text}"));
            let _ = vault.record_admin_event("sealgated", "admin.update.failed", "update", &text);
            state.set(|s| {
                s.state = "failed".into();
                s.message = "the install failed; the running slot is unchanged".into();
                s.last_error = Some(text);
            });
        }
    }
}

/// The staged bundle's record beside `staged.raucb`.
const STAGED_JSON: &str = "staged.json";

/// The version of the bundle staged by `POST /update?stage=true`, if one waits.
fn staged_version(data: &Path) -> Option<String> {
    let d = data.join(DIR);
    if !d.join("staged.raucb").is_file() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&fs::read(d.join(STAGED_JSON)).ok()?).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// `POST /update/staged` (admin): installs the staged bundle, checked again.
pub(super) async fn install_staged(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let state = ad.clone();
    let state = &state.update;
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let mut claim = begin(state)?;
        if staged_version(&ad.data_dir).is_none() {
            return Err(Problem::new(
                409,
                "nothing-staged",
                "No bundle is staged",
                "upload one with POST /api/v1/admin/update?stage=true first",
            ));
        }
        let (_, staged) = staging(&mut claim, &ad.data_dir)?;
        // The upload slot is this install's; only the staged file may go on a refusal.
        claim.files = vec![staged.clone()];
        accept(&app, &ad, &c.username, &src, staged, claim, started, false).await
    }
    .await;
    answer(r)
}

/// `GET /update` (admin, auditor).
pub(super) async fn status(req: HttpRequest, ad: Data) -> HttpResponse {
    let r = async {
        authorize(&req, &ad, Need::Audit)?;
        let data = ad.data_dir.clone();
        let progress = ad.update.get();
        // RAUC's slot table over D-Bus; none where its service does not run.
        let slots = if rauc_conf().is_file() {
            crate::rauc::slot_table().await.ok()
        } else {
            None
        };
        let body = web::block(move || {
            let pending: Option<Pending> = fs::read(data.join(DIR).join("pending.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let failed: Option<String> = fs::read_to_string(data.join(DIR).join("failed"))
                .ok()
                .map(|s| s.trim().to_string());
            serde_json::json!({
                "state": progress.state,
                "progress": progress.percent,
                "message": progress.message,
                "version": progress.version,
                "last_error": progress.last_error.or(failed),
                "running": { "version": running_version(), "slot": booted_slot() },
                "floor": floor(&data),
                "pending": pending,
                "staged": staged_version(&data).map(|v| serde_json::json!({ "version": v })),
                "slots": slots,
                "max_bundle_bytes": MAX_BUNDLE_BYTES,
            })
        })
        .await
        .map_err(internal)?;
        Ok(ok_json(200, &body))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    #[serde(default)]
    failed_slot: Option<String>,
}

/// `POST /update/commit` (admin; the console's health gate).
pub(super) async fn commit(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
    store: web::Data<super::settings_change::SettingsStore>,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Commit = json_body(payload).await?;
        if let Some(s) = &b.failed_slot
            && s != "A"
            && s != "B"
        {
            return Err(Problem::new(
                422,
                "invalid-slot",
                "No such slot",
                format!("failed_slot is A or B, not {s:?}"),
            ));
        }
        let d = dir(&ad.data_dir)?;
        let pending: Option<Pending> = fs::read(d.join("pending.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let booted = booted_slot();
        if let Some(failed) = b.failed_slot.filter(|s| s == "A" || s == "B") {
            let what = match &pending {
                Some(p) if p.slot == failed => format!("update {} in slot {failed}", p.version),
                _ => format!("slot {failed}"),
            };
            let text = format!(
                "{what} did not pass its health gate in three boots; GRUB fell back to slot {}, \
                 which marked it bad",
                booted.as_deref().unwrap_or("?")
            );
            crate::console(&format!("UPDATE FAILED: {text}"));
            sealgate_tokenfile::write_atomic(&d.join("failed"), text.as_bytes())
                .map_err(internal)?;
            let _ = fs::remove_file(d.join("pending.json"));
            audit(&app, &ad, &c.username, &src, "update.fell-back", &failed, 200, started);
            return Ok(ok_json(200, &serde_json::json!({ "committed": false, "failed": text })));
        }
        // The running slot is judged good: an older settings file is written in this
        // release's format now (never during a trial the old slot might fall back from).
        if let Some(file) = store.box_file().map(Path::to_path_buf) {
            match web::block(move || crate::settings_migrate::persist(&file))
                .await
                .map_err(internal)?
            {
                Ok(Some(v)) => {
                    crate::console(&format!(
                        "settings migrated from version {v} to {} (the old file kept beside it)",
                        crate::settings_migrate::VERSION
                    ));
                    audit(&app, &ad, &c.username, &src, "settings.migrate", &v.to_string(), 200, started);
                }
                Ok(None) => {}
                Err(e) => crate::console(&format!("the settings could not be migrated: {e}")),
            }
        }
        match pending {
            Some(p) if booted.as_deref() == Some(p.slot.as_str()) => {
                let dropped = ad.vault.commit_update().map_err(Problem::from)?;
                sealgate_tokenfile::write_atomic(&d.join("floor"), p.version.as_bytes())
                    .map_err(internal)?;
                let _ = fs::remove_file(d.join("pending.json"));
                let _ = fs::remove_file(d.join("failed"));
                crate::console(&format!(
                    "update {} committed in slot {} (the vault dropped {dropped} older sealed copies)",
                    p.version, p.slot
                ));
                audit(&app, &ad, &c.username, &src, "update.commit", &p.version, 200, started);
                Ok(ok_json(
                    200,
                    &serde_json::json!({ "committed": true, "version": p.version, "slot": p.slot }),
                ))
            }
            _ => Ok(ok_json(200, &serde_json::json!({ "committed": false }))),
        }
    }
    .await;
    answer(r)
}

/// `GET /update/gate` (admin; the console's health gate over the admin socket): the
/// daemon's checks of the health gate (`update_gate.rs`): every listener bound, the
/// self-test decrypt with the box's own key. 200 with `"healthy"` either way.
pub(super) async fn gate(req: HttpRequest, ad: Data) -> HttpResponse {
    let r = async {
        authorize(&req, &ad, Need::Admin)?;
        let ready = ad.ready.load(Ordering::Acquire);
        let recorded = ad.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        let failed = ad
            .listener_failures
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let vault = ad.vault.clone();
        let data = ad.data_dir.clone();
        let checks = web::block(move || {
            vec![
                crate::update_gate::listeners(ready, &recorded, &failed),
                crate::update_gate::self_test(&vault, &data),
            ]
        })
        .await
        .map_err(internal)?;
        let healthy = checks.iter().all(|c| c.ok);
        Ok(ok_json(
            200,
            &serde_json::json!({ "healthy": healthy, "checks": checks }),
        ))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mark {
    /// `booted`, `other`, `A` or `B` (default `booted` for mark-good, `other` for mark-bad).
    #[serde(default)]
    slot: Option<String>,
}

/// RAUC's name of a slot given as `booted`, `other`, `A` or `B`; and the letter.
fn rauc_slot(given: &str, booted: Option<&str>) -> Result<(String, Option<String>), Problem> {
    let letter = |l: &str| match l {
        "A" => Some("rootfs.0"),
        "B" => Some("rootfs.1"),
        _ => None,
    };
    let other = |b: &str| if b == "A" { "B" } else { "A" };
    match given {
        "booted" => Ok(("booted".into(), booted.map(str::to_string))),
        "other" => Ok(("other".into(), booted.map(|b| other(b).to_string()))),
        l => match letter(l) {
            Some(n) => Ok((n.into(), Some(l.to_string()))),
            None => Err(Problem::new(
                422,
                "invalid-slot",
                "No such slot",
                format!("slot is booted, other, A or B, not {l:?}"),
            )),
        },
    }
}

/// `POST /update/mark-good` and `mark-bad` (admin): RAUC's `Mark` over D-Bus.
async fn mark(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
    good: bool,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let action = if good { "mark-good" } else { "mark-bad" };
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Mark = json_body(payload).await?;
        let booted = booted_slot();
        let given = b
            .slot
            .unwrap_or_else(|| if good { "booted" } else { "other" }.into());
        let (name, letter) = rauc_slot(&given, booted.as_deref())?;
        if !rauc_conf().is_file() {
            return Err(Problem::new(
                409,
                "updates-unavailable",
                "This system does not take updates",
                format!("no {}: slots exist on a box only", rauc_conf().display()),
            ));
        }
        if ad.update.get().state == "installing" {
            return Err(Problem::new(
                409,
                "update-running",
                "An update is being installed",
                "wait until GET /api/v1/admin/update says it is done",
            ));
        }
        let subject = letter.clone().unwrap_or(given.clone());
        if let Err(e) = crate::rauc::mark(if good { "good" } else { "bad" }, &name).await {
            audit(
                &app,
                &ad,
                &c.username,
                &src,
                &format!("update.{action}"),
                &subject,
                409,
                started,
            );
            return Err(Problem::new(
                409,
                "rauc-refused",
                "RAUC did not change the slot",
                format!("{action} {given}: {e}"),
            ));
        }
        // A pending update whose slot an administrator marked bad will not be booted.
        let d = dir(&ad.data_dir)?;
        if !good
            && let Some(p) = fs::read(d.join("pending.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
            && letter.as_deref() == Some(p.slot.as_str())
        {
            let text = format!(
                "update {} in slot {} was marked bad by {} before it ran",
                p.version, p.slot, c.username
            );
            sealgate_tokenfile::write_atomic(&d.join("failed"), text.as_bytes())
                .map_err(internal)?;
            let _ = fs::remove_file(d.join("pending.json"));
        }
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            &format!("update.{action}"),
            &subject,
            200,
            started,
        );
        crate::console(&format!(
            "slot {subject} marked {} by {}",
            if good { "good" } else { "bad" },
            c.username
        ));
        Ok(ok_json(
            200,
            &serde_json::json!({ "slot": subject, "marked": if good { "good" } else { "bad" } }),
        ))
    }
    .await;
    answer(r)
}

/// `POST /update/mark-good` (admin).
pub(super) async fn mark_good(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    mark(req, payload, app, ad, true).await
}

/// `POST /update/mark-bad` (admin).
pub(super) async fn mark_bad(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    mark(req, payload, app, ad, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Floor {
    floor: String,
}

/// A version as a floor: 1 to 64 characters of letters, digits and `.-+~`, starting with a
/// digit.
pub fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~'))
}

/// `PUT /update/floor` (admin), `{"floor":"V"}`: the lowest version an upload may have.
/// Lowering it allows a deliberate rollback to an older bundle; audited with the old and
/// new value.
pub(super) async fn set_floor(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Floor = json_body(payload).await?;
        let new = b.floor;
        if !valid_version(&new) {
            return Err(Problem::new(
                422,
                "invalid-version",
                "Not a version",
                "floor is a version such as 1.2.0 (digits first; letters, digits and .-+~, at most 64)",
            ));
        }
        let d = dir(&ad.data_dir)?;
        let old = floor(&ad.data_dir);
        sealgate_tokenfile::write_atomic(&d.join("floor"), new.as_bytes()).map_err(internal)?;
        audit(&app, &ad, &c.username, &src, "update.floor", &format!("{old} -> {new}"), 200, started);
        crate::console(&format!("update floor set to {new} (was {old}) by {}", c.username));
        Ok(ok_json(200, &serde_json::json!({ "floor": new, "previous": old })))
    }
    .await;
    answer(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn floors_are_versions_and_slots_are_named() {
        for v in ["0.1.0", "99.0.0", "1.2.0-rc1", "2"] {
            assert!(valid_version(v), "{v}");
        }
        for v in ["", "x1", "1 2", "1/../2", "1\n2", &"9".repeat(65)] {
            assert!(!valid_version(v), "{v:?}");
        }
        assert_eq!(rauc_slot("A", None).expect("A").0, "rootfs.0");
        assert_eq!(rauc_slot("B", Some("A")).expect("B").0, "rootfs.1");
        assert_eq!(
            rauc_slot("other", Some("A")).expect("other").1.as_deref(),
            Some("B")
        );
        assert!(rauc_slot("rootfs.0", None).is_err());
        assert!(rauc_slot("C", None).is_err());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("0.10.0", "0.9.9"), Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Equal);
        assert_eq!(compare_versions("1.2.0-rc1", "1.2.0"), Greater);
        assert_eq!(compare_versions("2", "10"), Less);
    }

    #[test]
    fn another_boards_bundle_and_a_downgrade_are_refused() {
        let info = |c: &str, v: Option<&str>| BundleInfo {
            compatible: c.into(),
            version: v.map(str::to_string),
        };
        let ok = check_bundle(
            &info("sealgate-qemu-x86_64", Some("0.3.0")),
            "sealgate-qemu-x86_64",
            "0.2.0",
        );
        assert_eq!(ok.expect("accepted"), "0.3.0");
        let other = check_bundle(
            &info("sealgate-qemu-aarch64", Some("9.0")),
            "sealgate-qemu-x86_64",
            "0.2.0",
        );
        assert!(other.expect_err("board").0.contains("another board"));
        let old = check_bundle(
            &info("sealgate-qemu-x86_64", Some("0.1.9")),
            "sealgate-qemu-x86_64",
            "0.2.0",
        );
        assert!(old.expect_err("downgrade").1.contains("below the floor"));
        let none = check_bundle(
            &info("sealgate-qemu-x86_64", None),
            "sealgate-qemu-x86_64",
            "0.2.0",
        );
        assert!(none.is_err());
        // The same version again is a reinstall, allowed.
        assert!(
            check_bundle(
                &info("sealgate-qemu-x86_64", Some("0.2.0")),
                "sealgate-qemu-x86_64",
                "0.2.0"
            )
            .is_ok()
        );
    }

    #[test]
    fn the_boards_compatible_comes_from_system_conf() {
        let conf = "[system]\ncompatible=sealgate-qemu-x86_64\nbootloader=custom\n[slot.rootfs.0]\ncompatible=x\n";
        assert_eq!(
            conf_compatible(conf).as_deref(),
            Some("sealgate-qemu-x86_64")
        );
        assert_eq!(conf_compatible("[keyring]\ncompatible=x\n"), None);
        let board = include_str!("../../../../board/qemu-x86_64/rauc/system.conf");
        assert_eq!(
            conf_compatible(board).as_deref(),
            Some("sealgate-qemu-x86_64")
        );
    }
}
