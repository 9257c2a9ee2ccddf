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
use sealgate_smime::envelope::Recipient;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::AuditLog;
use crate::docking;
use crate::identity::sha256;
use crate::keys::{Acting, KeyDirectory, KeyStore};
use crate::problem::Problem;
use crate::settings::{MissingPolicy, PinnedClient, Scope, Settings};
use crate::tokens::{SetupError, TokenStore};

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

/// Counts failed authentications per source address in fixed windows.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `ip` may try again, if it is blocked.
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let seen = self.seen.lock().ok()?;
        let (n, start) = seen.get(&ip)?;
        let left = self.window.checked_sub(start.elapsed())?;
        (*n >= self.max).then(|| left.as_secs().max(1))
    }

    fn fail(&self, ip: IpAddr) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() > 100_000 {
                let window = self.window;
                seen.retain(|_, (_, s)| s.elapsed() < window);
            }
            let e = seen.entry(ip).or_insert((0, Instant::now()));
            if e.1.elapsed() >= self.window {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }
}

fn source(req: &HttpRequest) -> (Option<IpAddr>, String) {
    match req.peer_addr() {
        Some(a) => (Some(a.ip()), a.ip().to_string()),
        None => (None, "-".into()),
    }
}

/// Authenticates the request; `scopes` is any-of (empty: any valid credential).
fn authorize(
    req: &HttpRequest,
    st: &AppState,
    scopes: &[Scope],
    operation: &str,
) -> Result<String, Problem> {
    let started = Instant::now();
    let (ip, src) = source(req);
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
        return Err(Problem::rate_limited(retry));
    }
    let allowed =
        |granted: &[Scope]| scopes.is_empty() || scopes.iter().any(|s| granted.contains(s));
    let fail = |detail: &str| {
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

/// The life of one docking call; see the module documentation.
async fn run_operation(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
    scope: Scope,
    op: Operation,
) -> HttpResponse {
    run_named_operation(req, payload, st, scope, scope.name(), op).await
}

/// [`run_operation`] audited under `operation` rather than the scope's name.
async fn run_named_operation(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
    scope: Scope,
    operation: &'static str,
    op: Operation,
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
            p.error_response()
        }
    }
}

fn bad(p: Problem) -> HttpResponse {
    p.error_response()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn decrypt(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let parsed = query_pairs(&req, &["to", "keep-signatures"])
        .and_then(|q| Ok((addresses(&q, "to")?, flag(&q, "keep-signatures")?)));
    let (to, keep) = match parsed {
        Ok(v) => v,
        Err(p) => return bad(p),
    };
    let op: Operation = Box::new(move |st, keys, body| {
        let (out, report) = docking::decrypt(keys, &st.anchors, &body, &to, keep)?;
        Ok(Reply::Message {
            body: out,
            report: ascii_json(&report),
        })
    });
    run_operation(req, payload, st, Scope::Decrypt, op).await
}

async fn encrypt(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let parsed = query_pairs(&req, &["from", "to", "missing"]).and_then(|q| {
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        let missing = match one(&q, "missing")? {
            Some(m) => m.parse::<MissingPolicy>().map_err(Problem::bad_request)?,
            None => st.settings.docking.missing,
        };
        Ok((from.into_iter().next(), addresses(&q, "to")?, missing))
    });
    let (from, to, missing) = match parsed {
        Ok(v) => v,
        Err(p) => return bad(p),
    };
    if to.is_empty() {
        return bad(Problem::bad_request(
            "at least one to= recipient is required",
        ));
    }
    let op: Operation = Box::new(move |st, keys, body| {
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
    });
    run_operation(req, payload, st, Scope::Encrypt, op).await
}

async fn sign(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let parsed = query_pairs(&req, &["from", "opaque"]).and_then(|q| {
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        Ok((from.into_iter().next(), flag(&q, "opaque")?))
    });
    let (from, opaque) = match parsed {
        Ok(v) => v,
        Err(p) => return bad(p),
    };
    let op: Operation = Box::new(move |_, keys, body| {
        let (out, report) = docking::sign(keys, &body, from.as_deref(), opaque, now())?;
        Ok(Reply::Message {
            body: out,
            report: ascii_json(&report),
        })
    });
    run_operation(req, payload, st, Scope::Sign, op).await
}

async fn verify(req: HttpRequest, payload: web::Payload, st: web::Data<AppState>) -> HttpResponse {
    let parsed = query_pairs(&req, &["from"]).and_then(|q| {
        let from = addresses(&q, "from")?;
        if from.len() > 1 {
            return Err(Problem::bad_request("from= given more than once"));
        }
        Ok(from.into_iter().next())
    });
    let from = match parsed {
        Ok(v) => v,
        Err(p) => return bad(p),
    };
    let op: Operation = Box::new(move |st, keys, body| {
        let report = docking::verify(keys, &st.anchors, &body, from.as_deref())?;
        Ok(Reply::Json(
            serde_json::to_vec(&report).map_err(|e| Problem::internal(e.to_string()))?,
        ))
    });
    run_operation(req, payload, st, Scope::Verify, op).await
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
        Err(p) => return bad(p),
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
        Err(_) => Err(Problem::internal("the lookup failed unexpectedly")),
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
            p.error_response()
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
struct StoredAnswer {
    stored: Vec<StoredCertificate>,
}

/// Why `cert` cannot be stored as a recipient certificate (encrypting to it must work and
/// be allowed), or `None`.
fn unusable_reason(cert: &Certificate, now: i64) -> Option<String> {
    use sealgate_smime::cert::KeyKind;
    if cert.is_ca {
        return Some("it is a CA certificate".into());
    }
    if cert.emails.is_empty() {
        return Some("it names no email address".into());
    }
    if now < cert.not_before || now > cert.not_after {
        return Some("it is not valid now".into());
    }
    if !sealgate_smime::chain::eku_allows_email(cert) {
        return Some("its extended key usage does not allow email protection".into());
    }
    if let Some(ku) = cert.key_usage {
        use sealgate_smime::cert::key_usage::{KEY_AGREEMENT, KEY_ENCIPHERMENT};
        let needed = match cert.key_kind {
            KeyKind::Rsa { .. } => KEY_ENCIPHERMENT,
            _ => KEY_AGREEMENT,
        };
        if ku & needed == 0 {
            return Some("its key usage does not allow encryption".into());
        }
    }
    if let Err(e) = Recipient::new(cert.clone()) {
        return Some(e.to_string());
    }
    None
}

/// `POST /api/v1/certificates`: stores external recipients' certificates (PEM or DER).
async fn add_certificates(
    req: HttpRequest,
    payload: web::Payload,
    st: web::Data<AppState>,
) -> HttpResponse {
    run_named_operation(
        req,
        payload,
        st,
        Scope::Encrypt,
        "add-certificates",
        Box::new(|_, keys, body| {
            let certs = Certificate::parse_many(&body).map_err(|e| {
                Problem::bad_request(format!("the body is not PEM or DER certificates: {e}"))
            })?;
            if certs.is_empty() {
                return Err(Problem::bad_request("the body holds no certificate"));
            }
            let now = now();
            for c in &certs {
                if let Some(why) = unusable_reason(c, now) {
                    return Err(Problem::new(
                        422,
                        "unusable-certificate",
                        "The certificate cannot be used to encrypt to its owner",
                        format!("{}: {why}; nothing was stored", c.subject_text()),
                    ));
                }
            }
            let mut stored = Vec::new();
            for c in &certs {
                keys.add_recipient_certificate(c)?;
                stored.push(StoredCertificate {
                    sha256: crate::identity::hex(&sha256(c.der())),
                    emails: c.emails.clone(),
                    subject: c.subject_text(),
                    not_after: sealgate_smime::message::rfc3339(c.not_after),
                });
            }
            let json = serde_json::to_vec(&StoredAnswer { stored })
                .map_err(|_| Problem::internal("the answer could not be written"))?;
            Ok(Reply::Json(json))
        }),
    )
    .await
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    setup_token: String,
}

async fn setup(req: HttpRequest, body: web::Bytes, st: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let (ip, src) = source(&req);
    if let Some(retry) = ip.and_then(|ip| st.failures.blocked(ip)) {
        return Problem::rate_limited(retry).error_response();
    }
    let Ok(r) = serde_json::from_slice::<SetupRequest>(&body) else {
        return Problem::bad_request("the body must be {\"setup_token\": \"...\"}")
            .error_response();
    };
    let result = match st.tokens.complete_setup(&r.setup_token) {
        Ok(Some(token)) => {
            let name = st
                .tokens
                .lookup(&token)
                .ok()
                .flatten()
                .map(|t| t.name)
                .unwrap_or_default();
            Ok(HttpResponse::Ok()
                .json(serde_json::json!({"name": name, "token": token, "scopes": ["admin"]})))
        }
        Ok(None) => {
            if let Some(ip) = ip {
                st.failures.fail(ip);
            }
            Err(Problem::unauthorized("wrong setup token"))
        }
        Err(SetupError::Done) => Err(Problem::new(
            410,
            "setup-done",
            "Setup was completed already",
            "the setup token works once",
        )),
        Err(SetupError::Internal(e)) => {
            tracing::error!(error = %e, "setup failed");
            Err(Problem::internal("setup failed"))
        }
    };
    match result {
        Ok(resp) => {
            st.audit.record(
                "setup-token",
                &src,
                "setup",
                None,
                "ok",
                200,
                started.elapsed(),
            );
            tracing::warn!("first-boot setup completed: an admin token was issued");
            resp
        }
        Err(p) => {
            st.audit.record(
                "-",
                &src,
                "setup",
                None,
                p.kind,
                p.status,
                started.elapsed(),
            );
            p.error_response()
        }
    }
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

/// The admin listener's routes (the admin API proper is later work).
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(4096))
        .service(
            web::scope("/api/v1")
                .route("/health", web::get().to(health))
                .route("/setup", web::post().to(setup)),
        )
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_is_ascii() {
        let s = ascii_json(&serde_json::json!({"who": "Jörg 😀"}));
        assert!(s.is_ascii());
        let back: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(back["who"], "Jörg 😀");
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
    }
}
