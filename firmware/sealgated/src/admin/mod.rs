//! The admin API: JSON over HTTPS on the admin listener under `/api/v1/admin/`, described by
//! `admin-openapi.json` beside this crate (served at `/api/v1/admin/openapi.json`).
//!
//! Who reaches it: anyone who can open a TCP connection to the admin port (box: 8440), i.e.
//! anyone on the LAN, and any web page an administrator's browser visits (cross-site
//! requests). What it must not let them do: claim the box without the one-time setup token
//! (it works once; a replayed or guessed one gets 401/410, guesses are counted per address);
//! call anything without a session or an admin-plane API token (401; a bearer call needs no
//! CSRF token, see `machine_tokens.rs`); change anything without the session's CSRF token
//! (403; the cookie is `SameSite=Strict` as well); act beyond their role (403); guess
//! passwords, TOTP codes or tokens quickly (per account and address lockout, Argon2id, at
//! most two hashes at a time; each TOTP code works once); lock the administrator out from another address (the lock is per (account,
//! address)); make the daemon answer 5xx or panic on any input (bodies are bounded and
//! parsed into closed types; every error is `application/problem+json`).
//!
//! Every login, failed login, logout, setup claim and change is recorded in the vault's
//! audit chain (`admin.*` actions, the account or `token:NAME` as actor) and in the daemon's
//! audit log. Destructive calls (reset of admin access, factory reset) need a typed
//! confirmation phrase in the body (`system.rs`).

mod ca;
mod directory;
mod external;
mod keys;
mod machine_tokens;
mod network;
mod quarantine;
pub mod quarantine_link;
mod queue;
mod scan_train;
pub mod session;
mod sessions;
pub mod settings_change;
mod settings_view;
pub mod socket;
pub mod system;
mod tls;
mod totp;
pub mod update;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use sealgate_smime::cert::Certificate;
use sealgate_vault::{AccountInfo, PendingOutcome, Role, Vault, VaultError, VaultKey};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::http::AppState;
use crate::keys::KeyStore;
use crate::problem::Problem;
use crate::settings::Scope;
use session::{Lockout, Sessions};

/// The admin API's OpenAPI document.
pub const OPENAPI: &str = include_str!("../../admin-openapi.json");

/// Largest request body taken (JSON).
const MAX_BODY: usize = 16 * 1024;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the admin API needs beyond [`AppState`].
pub struct AdminState {
    /// The vault (shared with the key directory).
    pub vault: Arc<Vault>,
    /// Browser sessions.
    pub sessions: Sessions,
    /// Failed logins.
    pub lockout: Lockout,
    /// Password hashes running at once (Argon2id takes 19 MiB each).
    pub hashing: Semaphore,
    /// When the daemon started.
    pub started: Instant,
    /// The listeners, as the console names them (name, address).
    pub listeners: Mutex<Vec<(String, String)>>,
    /// The daemon's uid, which (with root) the admin socket admits.
    pub own_uid: std::sync::OnceLock<u32>,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
    /// A restart or factory reset asked for through the API (`main` waits for it).
    pub stop: system::StopRequest,
    /// The SMTP queue (`queue.rs`).
    pub queue: std::sync::OnceLock<Arc<crate::smtp::Spool>>,
    /// The certificate every TLS listener serves (`tls.rs` replaces it).
    pub tls: std::sync::OnceLock<Arc<crate::identity::LiveCertificate>>,
    /// The TPM's TCTI when the vault is TPM-sealed (an update re-seals for the new slot).
    pub tpm: std::sync::OnceLock<Option<String>>,
    /// The OTA update in progress (`update.rs`).
    pub update: update::UpdateState,
    /// Every listener the settings enable was started (`main` sets it at `ready`).
    pub ready: std::sync::atomic::AtomicBool,
    /// Listeners the settings enable that did not start (the health gate's `listeners`).
    pub listener_failures: Mutex<Vec<String>>,
}

impl AdminState {
    /// The state for `vault`.
    pub fn new(vault: Arc<Vault>, data_dir: &std::path::Path) -> AdminState {
        AdminState {
            vault,
            sessions: Sessions::default(),
            lockout: Lockout::default(),
            hashing: Semaphore::new(2),
            started: Instant::now(),
            listeners: Mutex::new(Vec::new()),
            own_uid: std::sync::OnceLock::new(),
            data_dir: data_dir.to_path_buf(),
            stop: system::StopRequest::default(),
            queue: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            tpm: std::sync::OnceLock::new(),
            update: update::UpdateState::default(),
            ready: std::sync::atomic::AtomicBool::new(false),
            listener_failures: Mutex::new(Vec::new()),
        }
    }

    /// Every listener was started (the health gate's `listeners` check).
    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    /// A listener the settings enable did not start (not fatal, e.g. the DNS server).
    pub fn listener_failed(&self, what: &str) {
        if let Ok(mut f) = self.listener_failures.lock() {
            f.push(what.to_string());
        }
    }

    /// Records a listener for `GET /status`.
    pub fn add_listener(&self, name: &str, addr: impl std::fmt::Display) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push((name.to_string(), addr.to_string()));
        }
    }
}

/// The daemon shares its vault between the key store and the admin API.
impl KeyStore for Arc<Vault> {
    fn decryption_keys(&self, address: &str) -> Result<Vec<Arc<VaultKey>>, VaultError> {
        KeyStore::decryption_keys(self.as_ref(), address)
    }
    fn signing_key(&self, address: &str) -> Result<Option<Arc<VaultKey>>, VaultError> {
        KeyStore::signing_key(self.as_ref(), address)
    }
    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError> {
        KeyStore::encryption_certificate(self.as_ref(), address, now)
    }
    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
        KeyStore::certificates(self.as_ref(), address)
    }
    fn anchors(&self) -> Vec<Certificate> {
        KeyStore::anchors(self.as_ref())
    }
    fn revoked(&self) -> Vec<sealgate_smime::signed::Revoked> {
        KeyStore::revoked(self.as_ref())
    }
    fn add_recipient_certificate(&self, cert: &Certificate, actor: &str) -> Result<(), VaultError> {
        KeyStore::add_recipient_certificate(self.as_ref(), cert, actor)
    }
    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError> {
        KeyStore::add_pending_certificate(self.as_ref(), cert, reason, requested_by)
    }
    fn capabilities(&self, address: &str) -> Option<Vec<String>> {
        KeyStore::capabilities(self.as_ref(), address)
    }
    fn set_capabilities(
        &self,
        address: &str,
        caps: &[String],
        actor: &str,
    ) -> Result<(), VaultError> {
        KeyStore::set_capabilities(self.as_ref(), address, caps, actor)
    }
}

type Data = web::Data<AdminState>;
type App = web::Data<AppState>;

/// What a call needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Any role.
    Read,
    /// `admin` or `auditor`.
    Audit,
    /// `admin`.
    Admin,
}

/// The caller, after [`authorize`].
struct Caller {
    username: String,
    role: Role,
    csrf: String,
}

fn source(req: &HttpRequest) -> (Option<IpAddr>, String) {
    match req.peer_addr() {
        Some(a) => (Some(a.ip()), a.ip().to_string()),
        None => (None, "-".into()),
    }
}

fn cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(session::COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .find(|v| !v.is_empty())
}

fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Checks the session, the role and (for anything but GET) the CSRF token.
fn authorize(req: &HttpRequest, ad: &AdminState, need: Need) -> Result<Caller, Problem> {
    // The local socket: the peer's uid is the credential (see `socket.rs`).
    if let Some(socket::PeerUid(uid)) = req.conn_data::<socket::PeerUid>().copied() {
        if uid == 0 || ad.own_uid.get() == Some(&uid) {
            return Ok(Caller {
                username: format!("uid:{uid}"),
                role: Role::Admin,
                csrf: String::new(),
            });
        }
        return Err(Problem::forbidden(format!(
            "uid {uid} may not use the admin socket"
        )));
    }
    // A machine client's admin-plane token (no cookie, so no CSRF token either).
    if let Some(token) = machine_tokens::bearer(req) {
        return machine_tokens::authorize_bearer(req, ad, token, need);
    }
    let Some(id) = cookie(req) else {
        return Err(Problem::unauthorized(
            "log in first: POST /api/v1/admin/session",
        ));
    };
    let Some(s) = ad.sessions.touch(&id) else {
        return Err(Problem::unauthorized("the session has ended; log in again"));
    };
    // The account may have been deleted or changed since login.
    let account = ad.vault.admin_account(&s.username).map_err(Problem::from)?;
    let Some(account) = account else {
        ad.sessions.end(&id);
        return Err(Problem::unauthorized("the account no longer exists"));
    };
    if req.method() != actix_web::http::Method::GET {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &s.csrf) {
            return Err(Problem::new(
                403,
                "csrf",
                "The CSRF token is missing or wrong",
                "send the session's csrf_token in the X-CSRF-Token header",
            ));
        }
    }
    allowed(account.role, need)?;
    Ok(Caller {
        username: account.username,
        role: account.role,
        csrf: s.csrf,
    })
}

/// Whether `role` may do what needs `need`.
fn allowed(role: Role, need: Need) -> Result<(), Problem> {
    let ok = match need {
        Need::Read => true,
        Need::Audit => matches!(role, Role::Admin | Role::Auditor),
        Need::Admin => role == Role::Admin,
    };
    if !ok {
        return Err(Problem::forbidden(format!(
            "the role {} may not do this",
            role.name()
        )));
    }
    Ok(())
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes into `T`.
async fn json_body<T: serde::de::DeserializeOwned>(payload: web::Payload) -> Result<T, Problem> {
    json_body_max(payload, MAX_BODY).await
}

/// Reads a JSON body of at most `max` bytes into `T`.
async fn json_body_max<T: serde::de::DeserializeOwned>(
    mut payload: web::Payload,
    max: usize,
) -> Result<T, Problem> {
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(Problem::new(
                413,
                "body-too-large",
                "The request body is too large",
                format!("the limit is {max} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf)
        .map_err(|e| Problem::bad_request(format!("the body is not the expected JSON: {e}")))
}

/// A vault refusal of the caller's input (name taken, policy) as 422; others as usual.
fn refused(e: VaultError) -> Problem {
    match e {
        VaultError::Usage(text) => Problem::new(422, "refused", "The request cannot be done", text),
        VaultError::NoKey(_) => Problem::new(
            404,
            "not-found",
            "No such resource",
            "no such account, user or key",
        ),
        VaultError::Import(text) => {
            Problem::new(422, "import-refused", "The key could not be imported", text)
        }
        VaultError::NoCa => Problem::new(409, "no-ca", "The box has no CA", "create the CA first"),
        e => Problem::from(e),
    }
}

/// Runs a password hash (or anything slow) on the blocking pool, two at a time.
async fn hashed<T: Send + 'static>(
    ad: &AdminState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    let _permit = ad
        .hashing
        .acquire()
        .await
        .map_err(|_| Problem::internal("shutting down"))?;
    web::block(f)
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))
}

#[allow(clippy::too_many_arguments)]
fn audit(
    app: &AppState,
    ad: &AdminState,
    actor: &str,
    src: &str,
    action: &str,
    subject: &str,
    status: u16,
    started: Instant,
) {
    app.audit.record(
        actor,
        src,
        &format!("admin.{action}"),
        None,
        if status < 400 { "ok" } else { "refused" },
        status,
        started.elapsed(),
    );
    if let Err(e) = ad.vault.record_admin_event(
        actor,
        &format!("admin.{action}"),
        subject,
        &format!("source={src} status={status}"),
    ) {
        tracing::error!(error = %e, "cannot write the vault's audit chain");
    }
}

fn ok_json(status: u16, v: &impl Serialize) -> HttpResponse {
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(code)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(v)
}

fn answer(r: Result<HttpResponse, Problem>) -> HttpResponse {
    r.unwrap_or_else(|p| p.error_response_logged("admin", "-"))
}

fn session_cookie(id: &str, max_age: Option<u64>) -> String {
    let mut c = format!(
        "{}={id}; Path=/api/v1/admin; Secure; HttpOnly; SameSite=Strict",
        session::COOKIE
    );
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    setup_token: String,
    username: String,
    password: String,
}

/// `POST /setup`: the first administrator, with the one-time setup token.
async fn claim(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    answer(claim_inner(req, payload, app, ad).await)
}

async fn claim_inner(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> Result<HttpResponse, Problem> {
    let started = Instant::now();
    let (ip, src) = source(&req);
    let r: ClaimRequest = json_body(payload).await?;
    if let Some(retry) = ip.and_then(|ip| ad.lockout.locked(ip, None)) {
        return Err(Problem::rate_limited(retry));
    }
    if !app.tokens.setup_pending() {
        return Err(setup_done());
    }
    sealgate_vault::normalise_username(&r.username).map_err(refused)?;
    sealgate_vault::check_password_policy(&r.password).map_err(refused)?;
    let ad2 = ad.clone();
    let app2 = app.clone();
    let outcome = hashed(&ad, move || {
        app2.tokens.claim_setup(&r.setup_token, || {
            ad2.vault
                .create_first_admin("setup-token", &r.username, &r.password)
        })
    })
    .await?;
    match outcome {
        Ok(Some(Ok(account))) => {
            audit(
                &app,
                &ad,
                "setup-token",
                &src,
                "claim",
                &account.username,
                201,
                started,
            );
            tracing::warn!(username = %account.username, "the box was claimed: first administrator created");
            Ok(ok_json(201, &account))
        }
        Ok(Some(Err(e))) => Err(refused(e)),
        Ok(None) => {
            if let Some(ip) = ip {
                ad.lockout.fail(ip, None);
            }
            audit(&app, &ad, "-", &src, "claim", "-", 401, started);
            Err(Problem::unauthorized("wrong setup token"))
        }
        Err(crate::tokens::SetupError::Done) => Err(setup_done()),
        Err(crate::tokens::SetupError::Internal(e)) => {
            Err(Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e))
        }
    }
}

fn setup_done() -> Problem {
    Problem::new(
        410,
        "setup-done",
        "Setup was completed already",
        "the setup token works once",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    /// The TOTP code, for an account that has TOTP on.
    totp_code: Option<String>,
}

#[derive(Serialize)]
struct SessionInfo {
    username: String,
    role: Role,
    csrf_token: String,
    idle_timeout_secs: u64,
    absolute_timeout_secs: u64,
}

/// `POST /session`: log in.
async fn login(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    answer(login_inner(req, payload, app, ad).await)
}

async fn login_inner(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> Result<HttpResponse, Problem> {
    let started = Instant::now();
    let (ip, src) = source(&req);
    let r: LoginRequest = json_body(payload).await?;
    let name = sealgate_vault::normalise_username(&r.username).unwrap_or_else(|_| "-".into());
    if let Some(retry) = ip.and_then(|ip| ad.lockout.locked(ip, Some(&name))) {
        app.audit.record(
            &name,
            &src,
            "admin.login",
            None,
            "too-many-failed-attempts",
            429,
            started.elapsed(),
        );
        return Err(Problem::rate_limited(retry));
    }
    let ad2 = ad.clone();
    let (found, second) = hashed(&ad, move || {
        let Some(a) = ad2.vault.authenticate_admin(&r.username, &r.password)? else {
            return Ok((None, totp::SecondFactor::Passed));
        };
        let second = totp::second_factor(&ad2.vault, &a.username, r.totp_code.as_deref())?;
        Ok::<_, VaultError>((Some(a), second))
    })
    .await?
    .map_err(Problem::from)?;
    let Some(account) = found else {
        if let Some(ip) = ip {
            ad.lockout.fail(ip, Some(&name));
        }
        audit(&app, &ad, "-", &src, "login-failed", &name, 401, started);
        return Err(Problem::unauthorized("wrong username or password"));
    };
    match second {
        totp::SecondFactor::Passed => {}
        totp::SecondFactor::Missing => {
            return Err(Problem::new(
                401,
                "totp-required",
                "A TOTP code is required",
                "this account has TOTP on: send totp_code with the password",
            ));
        }
        totp::SecondFactor::Wrong => {
            if let Some(ip) = ip {
                ad.lockout.fail(ip, Some(&name));
            }
            audit(
                &app,
                &ad,
                "-",
                &src,
                "login-failed",
                &format!("{name} (TOTP code)"),
                401,
                started,
            );
            return Err(Problem::unauthorized("wrong or already used TOTP code"));
        }
    }
    if let Some(ip) = ip {
        ad.lockout.succeed(ip, &account.username);
    }
    let (id, csrf) = ad
        .sessions
        .create(&account.username, account.role)
        .map_err(|e| Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string()))?;
    audit(
        &app,
        &ad,
        &account.username,
        &src,
        "login",
        &account.username,
        200,
        started,
    );
    let mut resp = ok_json(200, &session_info(&account, csrf));
    resp.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_str(&session_cookie(&id, None))
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?,
    );
    Ok(resp)
}

fn session_info(account: &AccountInfo, csrf: String) -> SessionInfo {
    SessionInfo {
        username: account.username.clone(),
        role: account.role,
        csrf_token: csrf,
        idle_timeout_secs: session::IDLE_TIMEOUT.as_secs(),
        absolute_timeout_secs: session::ABSOLUTE_TIMEOUT.as_secs(),
    }
}

/// `GET /session`: who am I (and the CSRF token, for a reloaded page).
async fn whoami(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        let c = authorize(&req, &ad, Need::Read)?;
        let account = AccountInfo {
            username: c.username,
            role: c.role,
            created: 0,
            totp: false,
        };
        Ok(ok_json(200, &session_info(&account, c.csrf)))
    })())
}

/// `DELETE /session`: log out.
async fn logout(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Read)?;
        if let Some(id) = cookie(&req) {
            ad.sessions.end(&id);
        }
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "logout",
            &c.username,
            204,
            started,
        );
        Ok(HttpResponse::NoContent()
            .insert_header((header::SET_COOKIE, session_cookie("", Some(0))))
            .finish())
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `PUT /session/password`: the logged-in account changes its own password (its other
/// sessions end).
async fn change_password(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (ip, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Read)?;
        let Some(id) = cookie(&req) else {
            return Err(Problem::new(
                422,
                "refused",
                "The request cannot be done",
                "only a logged-in account changes its password",
            ));
        };
        let p: PasswordChange = json_body(payload).await?;
        sealgate_vault::check_password_policy(&p.new_password).map_err(refused)?;
        if let Some(retry) = ip.and_then(|ip| ad.lockout.locked(ip, Some(&c.username))) {
            return Err(Problem::rate_limited(retry));
        }
        let ad2 = ad.clone();
        let name = c.username.clone();
        let changed = hashed(&ad, move || {
            ad2.vault
                .change_admin_password(&name, &p.current_password, &p.new_password)
        })
        .await?
        .map_err(refused)?;
        if !changed {
            if let Some(ip) = ip {
                ad.lockout.fail(ip, Some(&c.username));
            }
            audit(
                &app,
                &ad,
                &c.username,
                &src,
                "password-change-failed",
                &c.username,
                403,
                started,
            );
            return Err(Problem::forbidden("the current password is wrong"));
        }
        ad.sessions.end_others(&c.username, &id);
        app.audit.record(
            &c.username,
            &src,
            "admin.password-change",
            None,
            "ok",
            204,
            started.elapsed(),
        );
        Ok(HttpResponse::NoContent().finish())
    }
    .await;
    answer(r)
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    /// The booted slot (`A`/`B` from the kernel command line), `null` off the box.
    slot: Option<String>,
    uptime_secs: u64,
    vault: VaultStatus,
    /// The TPM device the box seals with, if the kernel offers one.
    tpm: TpmStatus,
    /// Messages in the SMTP queue by state (`queued`, `deferred`, `held`, `bounced`).
    queue: std::collections::BTreeMap<&'static str, usize>,
    listeners: Vec<Listener>,
    setup_pending: bool,
    accounts: usize,
    sessions: usize,
    /// Messages per hour (signed, encrypted, decrypted, verified, refused), the last 24 hours.
    messages: Vec<crate::metrics::Hour>,
    /// The kernel's links and addresses, which the settings manage, a change waiting for
    /// confirmation (`network::status`).
    network: serde_json::Value,
    /// The clock: now (RFC 3339, UTC), whether an NTP answer keeps it right
    /// (`synchronized`), the source and offset (`network::clock::status`).
    clock: serde_json::Value,
}

#[derive(Serialize)]
struct TpmStatus {
    /// `/dev/tpmrm0` exists.
    present: bool,
}

/// The booted slot, from the kernel command line (`sealgate.slot=A|B`).
fn booted_slot() -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("sealgate.slot="))
        .filter(|s| matches!(*s, "A" | "B"))
        .map(str::to_string)
}

#[derive(Serialize)]
struct VaultStatus {
    sealer: &'static str,
    keys: usize,
}

#[derive(Serialize)]
struct Listener {
    name: String,
    address: String,
}

/// `GET /status`.
async fn status(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(200, &status_body(&app, &ad)?))
    })())
}

/// The status document (also in the support bundle).
fn status_body(app: &AppState, ad: &AdminState) -> Result<Status, Problem> {
    {
        let listeners = ad
            .listeners
            .lock()
            .map(|l| {
                l.iter()
                    .map(|(n, a)| Listener {
                        name: n.clone(),
                        address: a.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut queue = std::collections::BTreeMap::new();
        for st in ["queued", "deferred", "held", "bounced"] {
            queue.insert(st, 0);
        }
        if let Some(q) = ad.queue.get() {
            for e in q.list(None) {
                *queue.entry(e.state.name()).or_insert(0) += 1;
            }
        }
        Ok(Status {
            version: env!("CARGO_PKG_VERSION"),
            slot: booted_slot(),
            tpm: TpmStatus {
                present: std::path::Path::new("/dev/tpmrm0").exists(),
            },
            queue,
            uptime_secs: ad.started.elapsed().as_secs(),
            vault: VaultStatus {
                sealer: ad.vault.sealer_kind().name(),
                keys: ad.vault.list(None).map_err(Problem::from)?.len(),
            },
            listeners,
            setup_pending: app.tokens.setup_pending(),
            accounts: ad.vault.admin_accounts().map_err(Problem::from)?.len(),
            sessions: ad.sessions.count(),
            messages: app.audit.messages.hours(crate::metrics::unix_now()),
            network: crate::network::status(&crate::network::applied()),
            clock: crate::network::clock::status(),
        })
    }
}

/// `GET /accounts`.
async fn accounts(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(
            200,
            &ad.vault.admin_accounts().map_err(Problem::from)?,
        ))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
    role: Role,
    password: String,
}

/// `POST /accounts` (admin).
async fn create_account(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let n: NewAccount = json_body(payload).await?;
        sealgate_vault::normalise_username(&n.username).map_err(refused)?;
        sealgate_vault::check_password_policy(&n.password).map_err(refused)?;
        let ad2 = ad.clone();
        let actor = c.username.clone();
        let a = hashed(&ad, move || {
            ad2.vault
                .create_admin_account(&actor, &n.username, n.role, &n.password)
        })
        .await?
        .map_err(refused)?;
        app.audit.record(
            &c.username,
            &src,
            "admin.account-create",
            None,
            "ok",
            201,
            started.elapsed(),
        );
        Ok(ok_json(201, &a))
    }
    .await;
    answer(r)
}

/// `DELETE /accounts/{username}` (admin).
async fn delete_account(
    req: HttpRequest,
    path: web::Path<String>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let name = sealgate_vault::normalise_username(&path)
            .map_err(|_| Problem::new(404, "not-found", "No such resource", "no such account"))?;
        ad.vault
            .delete_admin_account(&c.username, &name)
            .map_err(refused)?;
        ad.sessions.end_all(&name);
        app.audit.record(
            &c.username,
            &src,
            "admin.account-delete",
            None,
            "ok",
            204,
            started.elapsed(),
        );
        Ok(HttpResponse::NoContent().finish())
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    offset: Option<u64>,
    limit: Option<u64>,
    /// Only entries whose action starts with this (e.g. `admin.login`, `key.`).
    action: Option<String>,
    /// Only entries of this actor.
    actor: Option<String>,
    /// Only entries at or after this time (RFC 3339 or Unix seconds).
    since: Option<String>,
    /// Only entries before this time (RFC 3339 or Unix seconds).
    until: Option<String>,
    /// `full`: verify the whole chain now, not only the entries after the checkpoint.
    verify: Option<String>,
}

/// Most audit entries per page.
const MAX_PAGE: u64 = 500;

#[derive(Serialize)]
struct AuditPage {
    total: usize,
    offset: u64,
    entries: Vec<sealgate_vault::AuditEntry>,
    chain: ChainCheck,
}

/// What the chain's verification found, with the page.
#[derive(Serialize)]
struct ChainCheck {
    /// The chain verified.
    verified: bool,
    /// `tail`: the entries after the last checkpoint (and the checkpoint's own, and the
    /// head) were verified now, the older ones by an earlier check; `full`: every entry now.
    scope: &'static str,
    /// Entries in the chain.
    entries: u64,
    /// Why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A time filter: RFC 3339 or Unix seconds.
fn parse_time(name: &str, v: &str) -> Result<i64, Problem> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Problem::bad_request(format!("{name} is RFC 3339 or Unix seconds")))
}

/// `GET /audit?offset=&limit=&action=&actor=&since=&until=&verify=` (admin, auditor): the
/// vault's audit chain, oldest first, filtered, with the chain's verification result. The
/// page's cost does not include re-verifying old entries: the vault's checkpointed check
/// verifies what was appended since the last check (`verify=full` re-reads everything).
async fn audit_log(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Audit)?;
        let q = web::Query::<Page>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let offset = q.offset.unwrap_or(0);
        let limit = q.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Problem::bad_request(format!("limit is 1 to {MAX_PAGE}")));
        }
        let since = q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?;
        let until = q
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?;
        let full = match q.verify.as_deref() {
            None | Some("tail") => false,
            Some("full") => true,
            Some(_) => return Err(Problem::bad_request("verify is tail or full")),
        };
        let chain = if full {
            match ad.vault.audit() {
                Ok(all) => ChainCheck {
                    verified: true,
                    scope: "full",
                    entries: all.len() as u64,
                    error: None,
                },
                Err(e) => ChainCheck {
                    verified: false,
                    scope: "full",
                    entries: 0,
                    error: Some(e.to_string()),
                },
            }
        } else {
            match ad.vault.check_audit() {
                Ok(c) => ChainCheck {
                    verified: true,
                    scope: "tail",
                    entries: c.entries,
                    error: None,
                },
                Err(e) => ChainCheck {
                    verified: false,
                    scope: "tail",
                    entries: 0,
                    error: Some(e.to_string()),
                },
            }
        };
        let (total, entries) = ad
            .vault
            .audit_page(
                |e| {
                    q.action
                        .as_ref()
                        .is_none_or(|a| e.action.starts_with(a.as_str()))
                        && q.actor.as_ref().is_none_or(|a| *a == e.actor)
                        && since.is_none_or(|t| e.time >= t)
                        && until.is_none_or(|t| e.time < t)
                },
                usize::try_from(offset).unwrap_or(usize::MAX),
                limit as usize,
            )
            .map_err(Problem::from)?;
        Ok(ok_json(
            200,
            &AuditPage {
                total,
                offset,
                entries,
                chain,
            },
        ))
    })())
}

/// `GET /settings` (any role): the running settings, every field, which have their default,
/// which differ, and which wait for a restart (`settings_change.rs`).
async fn settings(
    req: HttpRequest,
    store: web::Data<settings_change::SettingsStore>,
    ad: Data,
) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(200, &store.describe()))
    })())
}

/// `PATCH /settings` (admin): a JSON merge patch, validated as a whole, written, applied or
/// rolled back (`settings_change.rs`); audited with the changed fields' names.
async fn patch_settings(
    req: HttpRequest,
    payload: web::Payload,
    store: web::Data<settings_change::SettingsStore>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let patch: serde_json::Value = json_body(payload).await?;
        let st = store.clone();
        let outcome = web::block(move || st.patch(&patch))
            .await
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
        let what = match &outcome {
            Ok(o) if o.changed.is_empty() => "settings: nothing changed".to_string(),
            Ok(o) => format!(
                "settings: changed {}; applied {}; restart needed for {}",
                o.changed.join(","),
                if o.applied.is_empty() {
                    "-".into()
                } else {
                    o.applied.join(",")
                },
                if o.pending_restart.is_empty() {
                    "-".into()
                } else {
                    o.pending_restart.join(",")
                },
            ),
            Err(p) => format!(
                "settings: refused ({}) {}",
                p.kind,
                p.field.as_deref().unwrap_or("-")
            ),
        };
        let status = outcome.as_ref().map_or_else(|p| p.status, |_| 200);
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "settings-change",
            &what,
            status,
            started,
        );
        if let Ok(o) = &outcome
            && !o.changed.is_empty()
        {
            tracing::warn!(actor = %c.username, changed = %o.changed.join(","), "settings changed");
        }
        let o = outcome?;
        network::arm_revert(&store, &o, &app, &ad);
        let mut body = store.describe();
        if let serde_json::Value::Object(m) = &mut body {
            m.insert(
                "outcome".into(),
                serde_json::to_value(&o).unwrap_or_default(),
            );
        }
        Ok(ok_json(200, &body))
    }
    .await;
    answer(r)
}

#[derive(Serialize)]
struct TokenInfo {
    name: String,
    scopes: Vec<Scope>,
    created: String,
}

/// `GET /tokens`: the API tokens (names and scopes; never the tokens or their hashes).
async fn tokens(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let list = app.tokens.list().map_err(|e| {
            Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
        })?;
        let out: Vec<TokenInfo> = list
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                scopes: t.scopes,
                created: t.created,
            })
            .collect();
        Ok(ok_json(200, &out))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scopes: Vec<Scope>,
}

#[derive(Serialize)]
struct CreatedToken {
    name: String,
    scopes: Vec<Scope>,
    token: String,
}

/// `POST /tokens` (admin): a docking API token, shown once.
async fn create_token(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let n: NewToken = json_body(payload).await?;
        let name_ok = !n.name.is_empty()
            && n.name.len() <= 64
            && n.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(Problem::new(
                422,
                "refused",
                "The request cannot be done",
                "a token name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            ));
        }
        if n.scopes.is_empty() || n.scopes.contains(&Scope::Admin) {
            return Err(Problem::new(
                422,
                "refused",
                "The request cannot be done",
                "a token needs one or more docking scopes (decrypt, encrypt, sign, verify)",
            ));
        }
        let mut scopes = n.scopes.clone();
        scopes.sort_by_key(|s| s.name());
        scopes.dedup();
        if app
            .tokens
            .list()
            .map_err(|e| {
                Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
            })?
            .iter()
            .any(|t| t.name == n.name)
        {
            return Err(Problem::new(
                422,
                "refused",
                "The request cannot be done",
                format!("a token named {:?} exists", n.name),
            ));
        }
        let token = app.tokens.create(&n.name, &scopes).map_err(|e| {
            Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
        })?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "token-create",
            &n.name,
            201,
            started,
        );
        Ok(ok_json(
            201,
            &CreatedToken {
                name: n.name,
                scopes,
                token,
            },
        ))
    }
    .await;
    answer(r)
}

/// `DELETE /tokens/{name}` (admin): revokes a docking API token; the next request with it
/// is refused (401).
async fn revoke_token(
    req: HttpRequest,
    path: web::Path<String>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let gone = app.tokens.revoke(&path).map_err(|e| {
            Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
        })?;
        if !gone {
            return Err(Problem::new(
                404,
                "not-found",
                "No such resource",
                "no token of this name",
            ));
        }
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "token-revoke",
            &path,
            204,
            started,
        );
        Ok(HttpResponse::NoContent().finish())
    })())
}

/// `GET /certificates/pending` (any role): external recipients' certificates that wait for
/// an administrator (certificates are public; the list holds no key material).
async fn pending_certificates(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(
            200,
            &ad.vault.pending_certificates().map_err(Problem::from)?,
        ))
    })())
}

/// A pending-certificate decision's vault error: no match is 404, an ambiguous or malformed
/// fingerprint 422.
fn undecided(e: VaultError) -> Problem {
    match e {
        VaultError::Usage(text) if text.starts_with("no pending certificate") => {
            Problem::new(404, "not-found", "No such resource", text)
        }
        e => refused(e),
    }
}

/// `POST /certificates/pending/{sha256}/approve|reject` (admin). Approving takes effect for
/// the docking API's `encrypt` at once (the key cache is emptied).
async fn decide_pending(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let (sha256, decision) = path.into_inner();
        let (p, action) = match decision.as_str() {
            "approve" => (
                ad.vault
                    .approve_pending_certificate(&sha256)
                    .map_err(undecided)?,
                "cert-approve",
            ),
            "reject" => (
                ad.vault
                    .reject_pending_certificate(&sha256)
                    .map_err(undecided)?,
                "cert-reject",
            ),
            _ => {
                return Err(Problem::new(
                    404,
                    "not-found",
                    "No such endpoint",
                    "see /api/v1/admin/openapi.json",
                ));
            }
        };
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            action,
            &format!("{} {}", p.sha256, p.emails.join(",")),
            200,
            started,
        );
        Ok(ok_json(200, &p))
    })())
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn not_found() -> HttpResponse {
    Problem::new(
        404,
        "not-found",
        "No such endpoint",
        "see /api/v1/admin/openapi.json",
    )
    .error_response()
}

async fn method_not_allowed() -> HttpResponse {
    Problem::new(
        405,
        "method-not-allowed",
        "The method is not allowed here",
        "see /api/v1/admin/openapi.json",
    )
    .error_response()
}

/// A resource whose other methods are answered 405 (problem+json).
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path.to_string()).default_service(web::to(method_not_allowed))
}

/// The admin API's routes; configure them before [`crate::http::admin_routes`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    let res =
        |path: &str| web::resource(path.to_string()).default_service(web::to(method_not_allowed));
    cfg.service(
        web::scope("/api/v1/admin")
            .service(res("/openapi.json").route(web::get().to(openapi)))
            .service(res("/setup").route(web::post().to(claim)))
            .service(
                res("/session")
                    .route(web::post().to(login))
                    .route(web::get().to(whoami))
                    .route(web::delete().to(logout)),
            )
            .service(res("/session/password").route(web::put().to(change_password)))
            .service(res("/session/totp").route(web::post().to(totp::enrol)))
            .service(res("/session/totp/confirm").route(web::post().to(totp::confirm)))
            .service(res("/session/totp/disable").route(web::post().to(totp::disable_own)))
            .service(res("/status").route(web::get().to(status)))
            .service(
                res("/settings")
                    .route(web::get().to(settings))
                    .route(web::patch().to(patch_settings)),
            )
            .service(
                res("/accounts")
                    .route(web::get().to(accounts))
                    .route(web::post().to(create_account)),
            )
            .service(res("/accounts/{username}").route(web::delete().to(delete_account)))
            .service(res("/accounts/{username}/totp").route(web::delete().to(totp::disable_for)))
            .service(res("/audit").route(web::get().to(audit_log)))
            .configure(keys::routes)
            .service(
                res("/tokens")
                    .route(web::get().to(tokens))
                    .route(web::post().to(create_token)),
            )
            .service(res("/tokens/{name}").route(web::delete().to(revoke_token)))
            .service(res("/certificates/pending").route(web::get().to(pending_certificates)))
            .service(
                res("/certificates/pending/{sha256}/{decision}")
                    .route(web::post().to(decide_pending)),
            )
            .configure(external::routes)
            .configure(ca::routes)
            .configure(directory::routes)
            .service(
                res("/admin-tokens")
                    .route(web::get().to(machine_tokens::list))
                    .route(web::post().to(machine_tokens::create)),
            )
            .service(res("/admin-tokens/{name}").route(web::delete().to(machine_tokens::revoke)))
            .service(res("/setup-token/reset").route(web::post().to(system::reset_admin_access)))
            .service(res("/factory-reset").route(web::post().to(system::factory_reset)))
            .service(res("/restart").route(web::post().to(system::restart)))
            .service(res("/support-bundle").route(web::get().to(system::support_bundle)))
            .configure(queue::routes)
            .configure(quarantine::routes)
            .configure(scan_train::routes)
            .configure(sessions::routes)
            .configure(network::routes)
            .configure(tls::routes)
            .service(
                res("/update")
                    .route(web::get().to(update::status))
                    .route(web::post().to(update::upload)),
            )
            .service(res("/update/commit").route(web::post().to(update::commit)))
            .service(res("/update/staged").route(web::post().to(update::install_staged)))
            .service(res("/update/gate").route(web::get().to(update::gate)))
            .service(res("/update/mark-good").route(web::post().to(update::mark_good)))
            .service(res("/update/mark-bad").route(web::post().to(update::mark_bad)))
            .service(res("/update/floor").route(web::put().to(update::set_floor)))
            .service(res("/update/url").route(web::post().to(update::from_url)))
            .default_service(web::to(not_found)),
    );
}
