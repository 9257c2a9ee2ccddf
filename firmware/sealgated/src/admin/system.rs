//! The box as a whole, on the admin API: reset of admin access (a new setup token), factory
//! reset, restart of the daemon's services, and the support bundle.
//!
//! - `POST /setup-token/reset` `{"confirm":"reset admin access"}` (admin): the console's
//!   "reset admin access", at once: every admin account, every admin-plane API token, every
//!   admin-scoped docking token and every session dies, setup opens again and a new setup
//!   token is printed on the console only (whoever claims the box again must see it).
//! - `POST /factory-reset` `{"confirm":"factory reset"}` (admin): the daemon does not delete
//!   the data directory it runs from. It records the request in the vault's audit chain,
//!   writes `DATA/factory-reset.request` (atomically) and stops cleanly; the box's service
//!   script (root), which busybox init runs again, finds the request before it would start
//!   the daemon and runs `sealgate-console factory-reset`: the same wipe as the console
//!   menu's (the TPM's erase secret destroyed with `sealctl vault erase
//!   --destroy-every-key`, the vault overwritten, `/data` emptied, reboot). A daemon started
//!   on a data directory with a pending request refuses to serve (a developer's host has no
//!   service script: remove the file to cancel).
//! - `POST /restart` (admin): answers 202, stops every listener cleanly (the buffered key
//!   uses are written to the audit chain), then re-executes itself with the same arguments
//!   (same pid, so the box's service script and pid file stay right). Sessions end.
//! - `GET /support-bundle` (admin, auditor): a `.tar.gz` of the daemon's recent logs
//!   (`DATA/log`), the settings as `GET settings` shows them (no secrets), versions and the
//!   status document; never key material, tokens or the vault.
//!
//! The typed confirmation guards against a mistaken call (a script, a replayed request, a
//! click): the body must hold the exact phrase, or nothing happens (422).

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{App, Data, Need, answer, audit, authorize, json_body, ok_json, source};
use crate::problem::Problem;

/// The request file the box's service script acts on (see the module documentation).
pub const FACTORY_RESET_REQUEST: &str = "factory-reset.request";
/// The phrase `POST /factory-reset` needs.
pub const FACTORY_RESET_PHRASE: &str = "factory reset";
/// The phrase `POST /setup-token/reset` needs.
pub const ADMIN_RESET_PHRASE: &str = "reset admin access";
/// The most of each log file a support bundle takes (its end).
const BUNDLE_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// Why the daemon stops on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Re-execute with the same arguments.
    Restart,
    /// Stop; the service script wipes the box.
    FactoryReset,
}

/// A stop asked for through the admin API, waited for by `main`.
#[derive(Default)]
pub struct StopRequest {
    kind: Mutex<Option<Stop>>,
    notify: tokio::sync::Notify,
}

impl StopRequest {
    fn request(&self, stop: Stop) {
        if let Ok(mut k) = self.kind.lock() {
            // A factory reset is never downgraded to a restart.
            if *k != Some(Stop::FactoryReset) {
                *k = Some(stop);
            }
        }
        self.notify.notify_one();
    }

    /// Waits for a request.
    pub async fn wait(&self) -> Stop {
        loop {
            self.notify.notified().await;
            if let Some(k) = self.kind.lock().ok().and_then(|k| *k) {
                return k;
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    confirm: String,
}

fn check_phrase(c: &Confirm, phrase: &str) -> Result<(), Problem> {
    if c.confirm != phrase {
        return Err(Problem::new(
            422,
            "confirmation-required",
            "The confirmation phrase is missing or wrong",
            format!("send {{\"confirm\":\"{phrase}\"}} to do this"),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct AdminReset {
    accounts_removed: Vec<String>,
    admin_tokens_revoked: Vec<String>,
    docking_admin_tokens_revoked: Vec<String>,
    /// The new token itself only for the local socket (root or the daemon's user: the
    /// console shows it); over the network only where it was printed.
    setup_token: String,
}

/// `POST /setup-token/reset` (admin).
pub(super) async fn reset_admin_access(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Confirm = json_body(payload).await?;
        check_phrase(&b, ADMIN_RESET_PHRASE)?;
        let internal = |e: String| Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e);
        // Accounts first (idempotent), as the console's reset at start does.
        let accounts = ad
            .vault
            .remove_all_admin_accounts(&c.username)
            .map_err(Problem::from)?;
        let machine = ad
            .vault
            .remove_all_admin_api_tokens(&c.username)
            .map_err(Problem::from)?;
        ad.sessions.end_everyone();
        let docking = app
            .tokens
            .reset_admin_access()
            .map_err(|e| internal(e.to_string()))?;
        let token = app
            .tokens
            .issue_setup_token()
            .map_err(|e| internal(e.to_string()))?;
        crate::console(&format!(
            "admin access reset through the admin API by {}: {} admin account(s) removed, {} admin token(s) revoked",
            c.username,
            accounts.len(),
            machine.len() + docking.len()
        ));
        crate::console(&crate::setup_token_line(&token));
        tracing::warn!(actor = %c.username, "admin access reset through the admin API");
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "reset-access",
            "api-tokens",
            200,
            started,
        );
        Ok(ok_json(
            200,
            &AdminReset {
                accounts_removed: accounts,
                admin_tokens_revoked: machine,
                docking_admin_tokens_revoked: docking,
                setup_token: if c.username.starts_with("uid:") {
                    token.to_string()
                } else {
                    "printed on the box's console".to_string()
                },
            },
        ))
    }
    .await;
    answer(r)
}

#[derive(Serialize)]
struct Accepted {
    detail: &'static str,
}

/// `POST /factory-reset` (admin).
pub(super) async fn factory_reset(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Confirm = json_body(payload).await?;
        check_phrase(&b, FACTORY_RESET_PHRASE)?;
        // In the chain before anything happens: the wipe takes the vault with it, but a
        // copy of it (or an interrupted reset) shows who asked.
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "factory-reset",
            "box",
            202,
            started,
        );
        sealgate_tokenfile::write_atomic(
            &ad.data_dir.join(FACTORY_RESET_REQUEST),
            format!("factory reset requested through the admin API by {}\n", c.username)
                .as_bytes(),
        )
        .map_err(|e| Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string()))?;
        crate::console(&format!(
            "FACTORY RESET requested through the admin API by {}: stopping; the box wipes its data and reboots",
            c.username
        ));
        ad.stop.request(Stop::FactoryReset);
        Ok(ok_json(
            202,
            &Accepted {
                detail: "the daemon stops now; the box destroys its keys, wipes its data and reboots",
            },
        ))
    }
    .await;
    answer(r)
}

/// `POST /restart` (admin).
pub(super) async fn restart(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "restart",
            "sealgated",
            202,
            started,
        );
        ad.stop.request(Stop::Restart);
        Ok(ok_json(
            202,
            &Accepted {
                detail: "the daemon's services restart now; sessions end",
            },
        ))
    })())
}

/// `GET /support-bundle` (admin, auditor): `application/gzip`.
pub(super) async fn support_bundle(
    req: HttpRequest,
    app: App,
    ad: Data,
    store: web::Data<super::settings_change::SettingsStore>,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Audit)?;
        let status = serde_json::to_vec_pretty(&super::status_body(&app, &ad)?).map_err(|e| {
            Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
        })?;
        // The GET settings view: secrets are write-only there, so none reach the bundle.
        let settings = serde_json::to_vec_pretty(&store.describe()).map_err(|e| {
            Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
        })?;
        let data_dir = ad.data_dir.clone();
        let bundle = web::block(move || bundle(&data_dir, &status, &settings))
            .await
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
            .map_err(|e| {
                Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
            })?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "support-bundle",
            "box",
            200,
            started,
        );
        let name = format!(
            "sealgate-support-{}.tar.gz",
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        Ok(HttpResponse::Ok()
            .content_type("application/gzip")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ))
            .body(bundle))
    }
    .await;
    answer(r)
}

/// The versions file of a bundle.
fn versions() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    serde_json::json!({
        "sealgated": env!("CARGO_PKG_VERSION"),
        "kernel": read("/proc/version").trim(),
        "os_release": read("/etc/os-release"),
    })
}

/// Builds the `.tar.gz`: `versions.json`, `status.json`, `settings.json`, `log/*` (the last
/// [`BUNDLE_LOG_BYTES`] of each of the daemon's log files, whole lines).
fn bundle(data_dir: &Path, status: &[u8], settings: &[u8]) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let mut add = |name: &str, data: &[u8]| -> anyhow::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, format!("sealgate-support/{name}"), data)?;
        Ok(())
    };
    add("versions.json", &serde_json::to_vec_pretty(&versions())?)?;
    add("status.json", status)?;
    add("settings.json", settings)?;
    let log_dir = data_dir.join("log");
    let mut logs: Vec<_> = match std::fs::read_dir(&log_dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("sealgated.log"))
            .collect(),
        Err(_) => Vec::new(),
    };
    logs.sort();
    for name in logs {
        let text = tail(&log_dir.join(&name), BUNDLE_LOG_BYTES)?;
        add(&format!("log/{name}"), &text)?;
    }
    let gz = tar.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(out)
}

/// The last `max` bytes of a file, from the first whole line.
fn tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    if start > 0
        && let Some(nl) = buf.iter().position(|&b| b == b'\n')
    {
        buf.drain(..=nl);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_holds_the_named_files_and_whole_log_lines() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("log")).expect("log dir");
        let line = "{\"msg\":\"x\"}\n".repeat(10);
        std::fs::write(d.path().join("log/sealgated.log"), &line).expect("log");
        std::fs::write(d.path().join("log/other.txt"), "not taken").expect("other");
        let gz = bundle(d.path(), b"{}", b"{}").expect("bundle");
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        let names: Vec<String> = a
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "sealgate-support/versions.json",
                "sealgate-support/status.json",
                "sealgate-support/settings.json",
                "sealgate-support/log/sealgated.log"
            ]
        );
        let t = tail(&d.path().join("log/sealgated.log"), 20).expect("tail");
        assert_eq!(t, b"{\"msg\":\"x\"}\n");
    }

    #[test]
    fn a_stop_request_is_seen_even_before_the_wait() {
        let s = StopRequest::default();
        s.request(Stop::FactoryReset);
        s.request(Stop::Restart);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        assert_eq!(rt.block_on(s.wait()), Stop::FactoryReset);
    }
}
