//! The HTTPS side: the docking API routes, the admin routes (health, first-boot setup),
//! authentication, admission control and request bodies.
//!
//! Every docking call goes through [`run_operation`]: authenticate (bearer token or pinned
//! client certificate; failures counted per source address), take an admission permit (or
//! 503 + `Retry-After`), read the body up to the size limit (413 beyond, 408 on timeout), wait
//! for a crypto worker, run the operation (on the HTTP worker for small bodies, on a blocking
//! thread otherwise), audit, answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use sealgate_smime::cert::Certificate;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::AuditLog;
use crate::certs::unusable_reason;
use crate::docking;
use crate::identity::sha256;
use crate::keys::{Acting, KeyDirectory, KeyStore};
use crate::problem::Problem;
use crate::settings::{MissingPolicy, PinnedClient, Scope, Settings};
use crate::tokens::TokenStore;

/// The OpenAPI document, kept in the repository beside this crate.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Where the docking API's report travels next to a message body.
pub const REPORT_HEADER: &str = "Sealgate-Report";

/// Everything a request handler needs.
pub struct AppState {
    /// The settings.
    pub settings: Settings,
    /// Keys and certificates.
    pub keys: Arc<dyn KeyStore>,
    /// Configured trust anchors (besides the vault's CA).
    pub anchors: Arc<Vec<Certificate>>,
    /// API tokens.
    pub tokens: TokenStore,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// Failed authentications per source address.
    pub failures: FailureLimiter,
    /// Requests admitted (running or waiting for a worker).
    pub admission: Arc<Semaphore>,
    /// Crypto operations running.
    pub workers: Arc<Semaphore>,
    /// Request body memory, in KiB permits (see `max_buffered_bytes`).
    pub memory: Arc<Semaphore>,
}

/// The TLS client certificate's SHA-256, stored per connection by [`on_connect`].
#[derive(Clone, Copy)]
pub struct PeerCertificate(pub [u8; 32]);

/// Records the client certificate of a TLS connection for the requests on it.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
            ext.insert(PeerCertificate(sha256(leaf.as_ref())));
        }
    }
}

/// Source addresses the failure limiter tracks at most; beyond that the oldest window is
/// forgotten. About 100 bytes each, so the limiter's memory stays under a few MiB whoever
/// connects.
pub const MAX_TRACKED_ADDRESSES: usize = 16_384;

/// Counts failed authentications per source address in fixed windows, in bounded memory.
///
/// Who reaches it: anyone who can open a TCP connection to the docking or admin port. What it
/// must not let them do: grow the daemon's memory (the table is bounded, the oldest window is
/// evicted first), make each failure cost more than a few hash-map operations (no scans: the
/// windows are kept in start order, so expired ones are dropped from the front), or lock out
/// a gateway with valid credentials that shares its address (behind a NAT): the limiter is
/// asked only after the credentials failed, so a valid credential always passes and only the
/// failed attempts of a blocked address get 429.
///
/// IPv6 sources are counted per /64 (one host usually holds a whole /64, so per-address counting
/// would let it rotate addresses); IPv4-mapped IPv6 counts as the IPv4 address.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    capacity: usize,
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    /// Failures in the current window, and when the window started.
    counts: HashMap<IpAddr, (u32, Instant)>,
    /// Window starts in the order they began (`(address, start)`); an element whose start
    /// no longer matches `counts` is stale and skipped.
    order: std::collections::VecDeque<(IpAddr, Instant)>,
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn limiter_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

impl FailureLimiter {
    /// `max` failures per `window`, at most [`MAX_TRACKED_ADDRESSES`] addresses.
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter::with_capacity(max, window, MAX_TRACKED_ADDRESSES)
    }

    /// As [`FailureLimiter::new`], tracking at most `capacity` addresses.
    pub fn with_capacity(max: u32, window: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            capacity: capacity.max(1),
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// Seconds until `ip` may fail again without 429, if it is blocked.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let state = self.state.lock().ok()?;
        let (n, start) = state.counts.get(&limiter_key(ip))?;
        let left = self.window.checked_sub(start.elapsed())?;
        (*n >= self.max).then(|| left.as_secs().max(1))
    }

    /// Counts one failed authentication from `ip`.
    fn fail(&self, ip: IpAddr) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let key = limiter_key(ip);
        let window = self.window;
        let state = &mut *state;
        // Drop expired windows from the front (oldest first): amortised O(1).
        while let Some(&(k, start)) = state.order.front() {
            if start.elapsed() < window {
                break;
            }
            state.order.pop_front();
            if state.counts.get(&k).is_some_and(|e| e.1 == start) {
                state.counts.remove(&k);
            }
        }
        let now = Instant::now();
        match state.counts.get_mut(&key) {
            Some(e) if e.1.elapsed() < window => {
                e.0 = e.0.saturating_add(1);
                return;
            }
            Some(e) => {
                *e = (1, now);
            }
            None => {
                // Full: forget the oldest window.
                while state.counts.len() >= self.capacity {
                    let Some((k, start)) = state.order.pop_front() else {
                        break;
                    };
                    if state.counts.get(&k).is_some_and(|e| e.1 == start) {
                        state.counts.remove(&k);
                    }
                }
                state.counts.insert(key, (1, now));
            }
        }
        state.order.push_back((key, now));
        // Restarted windows leave stale elements behind; compact when they outnumber the
        // live ones (amortised over at least `capacity` pushes).
        if state.order.len() > 2 * self.capacity {
            let counts = &state.counts;
            state
                .order
                .retain(|(k, s)| counts.get(k).is_some_and(|e| e.1 == *s));
        }
    }

    /// Addresses tracked now (tests).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        self.state
            .lock()
            .map(|s| (s.counts.len(), s.order.len()))
            .unwrap_or_default()
    }
}

fn source(req: &HttpRequest) -> (Option<IpAddr>, String) {
    match req.peer_addr() {
        Some(a) => (Some(a.ip()), a.ip().to_string()),
        None => (None, "-".into()),
    }
}

/// Authenticates the request; `scopes` is any-of (empty: any valid credential).
///
/// Credentials are checked first: a valid one passes whatever the failure limiter says of
/// its source address (a gateway behind the same NAT as a guesser keeps working); a failed
/// attempt from a blocked address is `429`, any other failed attempt is counted and `401`.
fn authorize(
    req: &HttpRequest,
    st: &AppState,
    scopes: &[Scope],
    operation: &str,
) -> Result<String, Problem> {
    let started = Instant::now();
    let (ip, src) = source(req);
    let allowed =
        |granted: &[Scope]| scopes.is_empty() || scopes.iter().any(|s| granted.contains(s));
    let fail = |detail: &str| {
        if let Some(retry) = ip.and_then(|ip| st.failures.blocked(ip)) {
            st.audit.record(
                "-",
                &src,
                operation,
                None,
                "too-many-failed-attempts",
                429,
                started.elapsed(),
            );
            return Problem::rate_limited(retry);
        }
        if let Some(ip) = ip {
            st.failures.fail(ip);
        }
        st.audit.record(
            "-",
            &src,
            operation,
            None,
            "unauthorized",
            401,
            started.elapsed(),
        );
        Problem::unauthorized(detail)
    };
    let forbid = |client: &str| {
        st.audit.record(
            client,
            &src,
            operation,
            None,
            "forbidden",
            403,
            started.elapsed(),
        );
        let names: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
        Problem::forbidden(format!(
            "this credential lacks the scope {}",
            names.join(" or ")
        ))
    };
    if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        let token = h
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(fail("the Authorization header is not `Bearer TOKEN`"));
        };
        let rec = st.tokens.lookup(token).map_err(|e| {
            tracing::error!(error = %e, "cannot read the token file");
            Problem::internal("cannot read the token store")
        })?;
        return match rec {
            None => Err(fail("unknown or revoked token")),
            Some(r) if allowed(&r.scopes) => Ok(r.name),
            Some(r) => Err(forbid(&r.name)),
        };
    }
    if let Some(PeerCertificate(fp)) = req.conn_data::<PeerCertificate>().copied()
        && let Some(c) = st
            .settings
            .auth
            .clients
            .iter()
            .find(|c: &&PinnedClient| c.sha256.0 == fp)
    {
        return if allowed(&c.scopes) {
            Ok(format!("cert:{}", c.name))
        } else {
            Err(forbid(&c.name))
        };
    }
    Err(fail(
        "credentials required: `Authorization: Bearer TOKEN` or a pinned client certificate",
    ))
}

/// The query string as pairs; unknown names are refused so typos do not pass silently.
fn query_pairs(req: &HttpRequest, known: &[&str]) -> Result<Vec<(String, String)>, Problem> {
    let pairs: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?
            .into_inner();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(Problem::bad_request(format!(
            "unknown query parameter {k:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(pairs)
}

fn one<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, Problem> {
    let mut it = pairs.iter().filter(|(k, _)| k == name);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(Problem::bad_request(format!(
            "{name}= given more than once"
        )));
    }
    Ok(first)
}

fn addresses(pairs: &[(String, String)], name: &str) -> Result<Vec<String>, Problem> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| {
            let a = v
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase();
            let ok = a
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !a.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                Ok(a)
            } else {
                Err(Problem::bad_request(format!(
                    "{name}={v:?} is not an email address"
                )))
            }
        })
        .collect()
}

fn flag(pairs: &[(String, String)], name: &str) -> Result<bool, Problem> {
    match one(pairs, name)? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(Problem::bad_request(format!(
            "{name}={v:?}: use true or false"
        ))),
    }
}

/// Bodies up to this size are processed on the HTTP worker itself, larger ones on the
/// blocking pool.
const INLINE_MAX_BYTES: usize = 64 * 1024;

/// KiB of body memory reserved at a time for a body of unknown length.
const MEMORY_STEP_KIB: u32 = 1024;

/// Reads the request body, refusing more than `max` bytes (by Content-Length before reading,
/// and while streaming for chunked bodies). The body is read into one buffer sized once, and
/// only after `memory` (KiB permits) has room for it; the permit is held until the answer.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
    memory: &Arc<Semaphore>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit), Problem> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Problem::too_large(max));
    }
    let closed = |_| Problem::internal("the memory budget is closed");
    let first_kib = declared.map_or(MEMORY_STEP_KIB, |n| (n.div_ceil(1024)).max(1) as u32);
    let mut reserved = memory
        .clone()
        .acquire_many_owned(first_kib)
        .await
        .map_err(closed)?;
    let mut reserved_bytes = first_kib as usize * 1024;
    let mut buf = Vec::with_capacity(declared.map_or(64 * 1024, |n| n as usize).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(Problem::too_large(max));
        }
        while buf.len() + chunk.len() > reserved_bytes {
            reserved.merge(
                memory
                    .clone()
                    .acquire_many_owned(MEMORY_STEP_KIB)
                    .await
                    .map_err(closed)?,
            );
            reserved_bytes += MEMORY_STEP_KIB as usize * 1024;
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.is_empty() {
        return Err(Problem::new(
            400,
            "empty-body",
            "The request has no message",
            "the body must be an RFC 5322 message",
        ));
    }
    Ok((buf, reserved))
}

/// What a blocking operation hands back to the async side.
pub enum Reply {
    /// A message body with a report header.
    Message { body: Vec<u8>, report: String },
    /// A JSON document.
    Json(Vec<u8>),
}

impl Reply {
    fn into_response(self) -> HttpResponse {
        match self {
            Reply::Message { body, report } => HttpResponse::Ok()
                .content_type("message/rfc822")
                .insert_header((REPORT_HEADER, report))
                .body(body),
            Reply::Json(b) => HttpResponse::Ok().content_type("application/json").body(b),
        }
    }
}

/// JSON with every non-ASCII character escaped, so it fits in an HTTP header field.
pub fn ascii_json<T: Serialize>(v: &T) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// One docking operation: the state, the keys as this caller sees them (key uses are
/// audited under the caller's name and address), the body.
type Operation =
    Box<dyn FnOnce(&AppState, &dyn KeyDirectory, Vec<u8>) -> Result<Reply, Problem> + Send>;

/// Reads the request's parameters (query string) into the operation to run. Called only
/// after the caller is authenticated and authorised, so that nothing of the request is
/// interpreted for an unauthenticated caller (a bad query string without credentials is
/// `401`, not `400`).
/// The third argument is the authenticated client's name.
type Prepare = Box<dyn FnOnce(&HttpRequest, &AppState, &str) -> Result<Operation, Problem>>;

/// The life of one docking call; see the module documentation.
async fn run_operation(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
    scope: Scope,
    prepare: Prepare,
) -> HttpResponse {
    run_named_operation(req, payload, st, scope, scope.name(), prepare).await
}

/// [`run_operation`] audited under `operation` rather than the scope's name.
async fn run_named_operation(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
    scope: Scope,
    operation: &'static str,
    prepare: Prepare,
) -> HttpResponse {
    let started = Instant::now();
    let client = match authorize(&req, &st, &[scope], operation) {
        Ok(c) => c,
        Err(p) => return p.error_response(),
    };
    let (_, src) = source(&req);
    let audit = |mid: Option<String>, outcome: &str, status: u16| {
        st.audit.record(
            &client,
            &src,
            operation,
            mid,
            outcome,
            status,
            started.elapsed(),
        )
    };
    let op = match prepare(&req, &st, &client) {
        Ok(op) => op,
        Err(p) => {
            audit(None, p.kind, p.status);
            return p.error_response_logged(operation, &client);
        }
    };
    let Ok(_admitted) = st.admission.clone().try_acquire_owned() else {
        audit(None, "busy", 503);
        return Problem::busy().error_response();
    };
    let limit = st.settings.docking.max_message_bytes.0;
    let timeout = st.settings.docking.request_timeout_secs.duration();
    let (body, reserved) =
        match tokio::time::timeout(timeout, read_body(&req, payload, limit, &st.memory)).await {
            Ok(Ok(b)) => b,
            Ok(Err(p)) => {
                audit(None, p.kind, p.status);
                return p.error_response();
            }
            Err(_) => {
                let p = Problem::timeout("the body did not arrive within the request timeout");
                audit(None, p.kind, p.status);
                return p.error_response();
            }
        };
    let mid = docking::message_id(&body);
    let worker = match tokio::time::timeout(timeout, st.workers.clone().acquire_owned()).await {
        Ok(Ok(w)) => w,
        _ => {
            audit(mid, "busy", 503);
            return Problem::busy().error_response();
        }
    };
    // Small messages cost well under a millisecond (one RSA operation and some parsing):
    // running them on this worker saves two thread hand-offs, which for a 4 KiB message is a
    // fifth of its cost. Larger ones go to the blocking pool so they never stall this
    // worker's other connections.
    let actor = crate::keys::actor("docking", &client, &src);
    let result = if body.len() <= INLINE_MAX_BYTES {
        let _worker = worker;
        let _reserved = reserved;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            op(&st, &Acting::new(st.keys.as_ref(), actor), body)
        }))
        .map_err(|_| "panic".to_string())
    } else {
        let st2 = st.clone();
        tokio::task::spawn_blocking(move || {
            let _worker = worker;
            let _reserved = reserved;
            op(&st2, &Acting::new(st2.keys.as_ref(), actor), body)
        })
        .await
        .map_err(|e| e.to_string())
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            // A panic in the engine is a bug; the worker survives and the caller gets a 500.
            tracing::error!(error = %e, operation, "the operation panicked");
            Err(Problem::internal("the operation failed unexpectedly"))
        }
    };
    match result {
        Ok(reply) => {
            audit(mid, "ok", 200);
            reply.into_response()
        }
        Err(p) => {
            audit(mid, p.kind, p.status);
            p.error_response_logged(operation, &client)
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn decrypt(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let prepare: Prepare = Box::new(|req, _, _| {
        let q = query_pairs(req, &["to", "keep-signatures"])?;
        let (to, keep) = (addresses(&q, "to")?, flag(&q, "keep-signatures")?);
        Ok(Box::new(
            move |st: &AppState, keys: &dyn KeyDirectory, body: Vec<u8>| {
                let (out, report) = docking::decrypt(keys, &st.anchors, &body, &to, keep)?;
                Ok(Reply::Message {
                    body: out,
                    report: ascii_json(&report),
                })
            },
        ))
    });
    run_operation(req, payload, st, Scope::Decrypt, prepare).await
}

async fn encrypt(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let prepare: Prepare = Box::new(|req, st, _| {
        let q = query_pairs(req, &["from", "to", "missing"])?;
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        let missing = match one(&q, "missing")? {
            Some(m) => m.parse::<MissingPolicy>().map_err(Problem::bad_request)?,
            None => st.settings.docking.missing,
        };
        let (from, to) = (from.into_iter().next(), addresses(&q, "to")?);
        if to.is_empty() {
            return Err(Problem::bad_request(
                "at least one to= recipient is required",
            ));
        }
        Ok(Box::new(
            move |st: &AppState, keys: &dyn KeyDirectory, body: Vec<u8>| {
                let (out, report) = docking::encrypt(
                    keys,
                    &st.settings.docking,
                    &body,
                    from.as_deref(),
                    &to,
                    missing,
                    now(),
                )?;
                Ok(Reply::Message {
                    body: out,
                    report: ascii_json(&report),
                })
            },
        ))
    });
    run_operation(req, payload, st, Scope::Encrypt, prepare).await
}

async fn sign(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let prepare: Prepare = Box::new(|req, _, _| {
        let q = query_pairs(req, &["from", "opaque"])?;
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        let (from, opaque) = (from.into_iter().next(), flag(&q, "opaque")?);
        Ok(Box::new(
            move |_: &AppState, keys: &dyn KeyDirectory, body: Vec<u8>| {
                let (out, report) = docking::sign(keys, &body, from.as_deref(), opaque, now())?;
                Ok(Reply::Message {
                    body: out,
                    report: ascii_json(&report),
                })
            },
        ))
    });
    run_operation(req, payload, st, Scope::Sign, prepare).await
}

async fn verify(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let prepare: Prepare = Box::new(|req, _, _| {
        let q = query_pairs(req, &["from"])?;
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        let from = from.into_iter().next();
        Ok(Box::new(
            move |st: &AppState, keys: &dyn KeyDirectory, body: Vec<u8>| {
                let report = docking::verify(keys, &st.anchors, &body, from.as_deref())?;
                Ok(Reply::Json(serde_json::to_vec(&report).map_err(|e| {
                    Problem::internal("the answer could not be written").with_log(e.to_string())
                })?))
            },
        ))
    });
    run_operation(req, payload, st, Scope::Verify, prepare).await
}

#[derive(Serialize)]
struct CertificateEntry {
    source: &'static str,
    sha256: String,
    #[serde(flatten)]
    summary: sealgate_smime::message::CertificateSummary,
    pem: String,
}

#[derive(Serialize)]
struct CertificatesAnswer {
    email: String,
    box_holds_key: bool,
    certificates: Vec<CertificateEntry>,
}

async fn certificates(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let client = match authorize(&req, &st, &[Scope::Verify, Scope::Encrypt], "certificates") {
        Ok(c) => c,
        Err(p) => return p.error_response(),
    };
    let (_, src) = source(&req);
    let email = match query_pairs(&req, &["email"]).and_then(|q| {
        let a = addresses(&q, "email")?;
        match a.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Problem::bad_request("exactly one email= is required")),
        }
    }) {
        Ok(e) => e,
        Err(p) => {
            st.audit.record(
                &client,
                &src,
                "certificates",
                None,
                p.kind,
                p.status,
                started.elapsed(),
            );
            return p.error_response();
        }
    };
    let keys = st.keys.clone();
    let e2 = email.clone();
    let r = tokio::task::spawn_blocking(move || keys.certificates(&e2)).await;
    let answer = match r {
        Ok(Ok((own, recipients))) => {
            let entry = |source: &'static str, c: &Certificate| CertificateEntry {
                source,
                sha256: crate::identity::hex(&sha256(c.der())),
                summary: c.into(),
                pem: c.to_pem(),
            };
            let mut certificates: Vec<CertificateEntry> =
                own.iter().map(|c| entry("local-user", c)).collect();
            certificates.extend(recipients.iter().map(|c| entry("recipient", c)));
            Ok(CertificatesAnswer {
                email,
                box_holds_key: own.is_some(),
                certificates,
            })
        }
        Ok(Err(e)) => Err(Problem::from(e)),
        Err(e) => Err(Problem::internal("the lookup failed unexpectedly").with_log(e.to_string())),
    };
    match answer {
        Ok(a) => {
            st.audit.record(
                &client,
                &src,
                "certificates",
                None,
                "ok",
                200,
                started.elapsed(),
            );
            HttpResponse::Ok().json(a)
        }
        Err(p) => {
            st.audit.record(
                &client,
                &src,
                "certificates",
                None,
                p.kind,
                p.status,
                started.elapsed(),
            );
            p.error_response_logged("certificates", &client)
        }
    }
}

#[derive(Serialize)]
struct StoredCertificate {
    sha256: String,
    emails: Vec<String>,
    subject: String,
    not_after: String,
}

#[derive(Serialize)]
struct PendingEntry {
    #[serde(flatten)]
    certificate: StoredCertificate,
    reason: String,
}

#[derive(Serialize)]
struct StoredAnswer {
    stored: Vec<StoredCertificate>,
    pending: Vec<PendingEntry>,
}

/// End-entity certificates taken in one `POST /api/v1/certificates`.
const MAX_CERTIFICATES_PER_REQUEST: usize = 100;

/// `POST /api/v1/certificates`: stores external recipients' certificates (PEM or DER), or
/// keeps them pending for an administrator (see `certs.rs` for which).
async fn add_certificates(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
) -> HttpResponse {
    let prepare: Prepare = Box::new(|req, _, client| {
        let client = client.to_string();
        let (_, src) = source(req);
        Ok(Box::new(
            move |st: &AppState, keys: &dyn KeyDirectory, body: Vec<u8>| {
                add_certificates_op(st, keys, &body, &client, &src)
            },
        ))
    });
    run_named_operation(
        req,
        payload,
        st,
        Scope::Encrypt,
        "add-certificates",
        prepare,
    )
    .await
}

fn add_certificates_op(
    st: &AppState,
    keys: &dyn KeyDirectory,
    body: &[u8],
    client: &str,
    src: &str,
) -> Result<Reply, Problem> {
    use crate::certs::{Decision, decide};
    let certs = Certificate::parse_many(body).map_err(|e| {
        Problem::bad_request(format!("the body is not PEM or DER certificates: {e}"))
    })?;
    // CA certificates next to end-entity ones are the chain (used to find the path to an
    // anchor, never stored); alone they are refused below as unusable.
    let (cas, leaves): (Vec<Certificate>, Vec<Certificate>) =
        certs.into_iter().partition(|c| c.is_ca);
    let leaves = if leaves.is_empty() {
        cas.clone()
    } else {
        leaves
    };
    if leaves.is_empty() {
        return Err(Problem::bad_request("the body holds no certificate"));
    }
    if leaves.len() > MAX_CERTIFICATES_PER_REQUEST {
        return Err(Problem::bad_request(format!(
            "at most {MAX_CERTIFICATES_PER_REQUEST} certificates per request"
        )));
    }
    let now = now();
    let fp = |c: &Certificate| crate::identity::hex(&sha256(c.der()));
    let record = |c: &Certificate, outcome: &str, reason: Option<&str>| {
        st.audit.record_certificate(
            client,
            src,
            &fp(c),
            &crate::certs::addresses(c),
            outcome,
            reason,
        );
    };
    for c in &leaves {
        if let Some(why) = unusable_reason(c, now) {
            record(c, "refused", Some(&why));
            return Err(Problem::new(
                422,
                "unusable-certificate",
                "The certificate cannot be used to encrypt to its owner",
                format!("{}: {why}; nothing was stored", c.subject_text()),
            ));
        }
    }
    let mut anchors = keys.anchors();
    anchors.extend(st.anchors.iter().cloned());
    let mut decisions = Vec::with_capacity(leaves.len());
    for c in &leaves {
        let d = decide(keys, &anchors, c, &cas, now)?;
        if let Decision::LocalUser(address) = &d {
            let why = format!("{address} is a local user of the box");
            record(c, "refused", Some(&why));
            return Err(Problem::new(
                409,
                "local-user-address",
                "The certificate names a local user's address",
                format!(
                    "{}: {why}, whose own certificate is used; nothing was stored",
                    c.subject_text()
                ),
            ));
        }
        decisions.push(d);
    }
    let summary = |c: &Certificate| StoredCertificate {
        sha256: fp(c),
        emails: c.emails.clone(),
        subject: c.subject_text(),
        not_after: sealgate_smime::message::rfc3339(c.not_after),
    };
    let mut stored = Vec::new();
    let mut pending = Vec::new();
    for (c, d) in leaves.iter().zip(decisions) {
        match d {
            Decision::Store => {
                keys.add_recipient_certificate(c)?;
                record(c, "stored", None);
                stored.push(summary(c));
            }
            Decision::AlreadyStored => {
                record(c, "already-stored", None);
                stored.push(summary(c));
            }
            Decision::Pending(reason) => match keys.add_pending_certificate(c, &reason, client)? {
                sealgate_vault::PendingOutcome::Full => {
                    record(c, "refused", Some("too many certificates are pending"));
                    return Err(Problem::new(
                        409,
                        "too-many-pending-certificates",
                        "Too many certificates wait for an administrator",
                        format!(
                            "{}: {reason}, and {} certificates already wait for an administrator; the certificates before it in the request were handled",
                            c.subject_text(),
                            sealgate_vault::MAX_PENDING
                        ),
                    ));
                }
                _ => {
                    record(c, "pending", Some(&reason));
                    tracing::warn!(
                        client,
                        sha256 = %fp(c),
                        subject = %c.subject_text(),
                        reason = %reason,
                        "a recipient certificate waits for an administrator (sealctl certs pending)"
                    );
                    pending.push(PendingEntry {
                        certificate: summary(c),
                        reason,
                    });
                }
            },
            Decision::LocalUser(_) => {}
        }
    }
    let json = serde_json::to_vec(&StoredAnswer { stored, pending })
        .map_err(|_| Problem::internal("the answer could not be written"))?;
    Ok(Reply::Json(json))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "up"}))
}

async fn openapi(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    match authorize(&req, &st, &[], "openapi") {
        Ok(_) => HttpResponse::Ok()
            .content_type("application/json")
            .body(OPENAPI),
        Err(p) => p.error_response(),
    }
}

async fn not_found() -> HttpResponse {
    Problem::new(
        404,
        "not-found",
        "No such endpoint",
        "see /api/v1/openapi.json",
    )
    .error_response()
}

/// `POST /api/v1/setup`, retired: the setup token claims the box only through the admin API
/// (`POST /api/v1/admin/setup`, which makes the first administrator account). The old path
/// spent it on an admin-scope token instead; it now answers 410 whatever is sent, reads no
/// body and spends nothing.
async fn setup_moved() -> HttpResponse {
    Problem::new(
        410,
        "setup-moved",
        "This setup endpoint is retired",
        "claim the box with POST /api/v1/admin/setup {\"setup_token\", \"username\", \"password\"}",
    )
    .error_response()
}

/// The docking listener's routes.
pub fn docking_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/health", web::get().to(health))
            .route("/openapi.json", web::get().to(openapi))
            .route("/decrypt", web::post().to(decrypt))
            .route("/encrypt", web::post().to(encrypt))
            .route("/sign", web::post().to(sign))
            .route("/verify", web::post().to(verify))
            .route("/certificates", web::get().to(certificates))
            .route("/certificates", web::post().to(add_certificates)),
    )
    .default_service(web::to(not_found));
}

/// The admin listener's health and first-boot setup routes (the admin API is `admin::routes`,
/// mounted before these).
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(4096))
        .service(
            web::scope("/api/v1")
                .route("/health", web::get().to(health))
                .route("/setup", web::post().to(setup_moved)),
        )
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealgate_directory::validate::MAX_CERTIFICATE_BYTES;

    #[test]
    fn report_json_is_ascii() {
        let s = ascii_json(&serde_json::json!({"who": "Jörg 😀"}));
        assert!(s.is_ascii());
        let back: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(back["who"], "Jörg 😀");
    }

    #[test]
    fn posted_certificates_are_bounded_and_must_name_a_filable_address() {
        let make = |emails: &[String], dns: usize| {
            let mut p = rcgen::CertificateParams::new(
                (0..dns)
                    .map(|i| format!("host{i}.example.org"))
                    .collect::<Vec<_>>(),
            )
            .expect("params");
            for e in emails {
                p.subject_alt_names.push(rcgen::SanType::Rfc822Name(
                    e.as_str().try_into().expect("ia5"),
                ));
            }
            let key = rcgen::KeyPair::generate().expect("key");
            Certificate::from_der(p.self_signed(&key).expect("cert").der()).expect("parse")
        };
        let now = now();
        assert_eq!(
            unusable_reason(&make(&["carol@example.org".into()], 0), now),
            None
        );
        let big = make(&["carol@example.org".into()], 2000);
        assert!(big.der().len() > MAX_CERTIFICATE_BYTES);
        assert!(unusable_reason(&big, now).is_some_and(|r| r.contains("larger")));
        assert!(unusable_reason(&make(&["carol@localhost".into()], 0), now).is_some());
    }

    #[test]
    fn limiter_blocks_after_max_failures() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let ip: IpAddr = [127, 0, 0, 9].into();
        assert!(l.blocked(ip).is_none());
        l.fail(ip);
        assert!(l.blocked(ip).is_none());
        l.fail(ip);
        assert!(l.blocked(ip).is_some());
        assert!(l.blocked([127, 0, 0, 10].into()).is_none(), "per address");
    }

    #[test]
    fn limiter_memory_is_bounded_and_the_oldest_window_goes_first() {
        let l = FailureLimiter::with_capacity(1, Duration::from_secs(600), 100);
        let first: IpAddr = [10, 0, 0, 1].into();
        l.fail(first);
        assert!(l.blocked(first).is_some());
        // A flood of distinct sources (an attacker with many addresses).
        for i in 0..100_000u32 {
            l.fail(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
            let (live, order) = l.tracked();
            assert!(live <= 100 && order <= 200, "{live} {order}");
        }
        assert!(l.blocked(first).is_none(), "evicted, oldest first");
        assert!(
            l.blocked(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + 99_999)))
                .is_some(),
            "the newest are still counted"
        );
    }

    #[test]
    fn limiter_forgets_expired_windows_and_restarts_them() {
        let l = FailureLimiter::with_capacity(1, Duration::from_millis(1), 10);
        let ip: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..50 {
            l.fail(ip);
            std::thread::sleep(Duration::from_millis(2));
        }
        // Restarted windows leave no garbage beyond the bound.
        let (live, order) = l.tracked();
        assert!(live <= 1 && order <= 20, "{live} {order}");
        assert!(l.blocked(ip).is_none(), "the window has passed");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        l.fail(a);
        l.fail(b);
        assert!(l.blocked(a).is_some() && l.blocked(b).is_some());
        assert!(l.blocked(other).is_none());
        let v4: IpAddr = [192, 0, 2, 1].into();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        l.fail(v4);
        l.fail(mapped);
        assert!(l.blocked(v4).is_some());
    }
}
