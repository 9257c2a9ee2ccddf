//! `/api/v1/admin/quarantine`: the messages content scanning kept from delivery
//! (`crate::quarantine`). Only `auditor` and `admin` may list, read, release or delete them
//! (a `read-only` account gets 403: the index names senders and recipients, and a message
//! is someone's mail). Every read of a message and every decision is audited in the vault's
//! chain (`admin.quarantine-show`, `-release`, `-delete`, with the reason given).
//!
//! Attackers: a reader trying to read or release mail (403); anyone sending ids that are
//! paths (`../`): an id is checked before it names a file (404); two auditors releasing the
//! same message at once (one release at a time: the second finds it gone, 404, so it is
//! delivered once); a release that fails halfway (the copy is queued durably before the
//! entry is removed: a crash in between delivers it and leaves the entry, never loses it).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{App, Data, Need, authorize, ok_json, source};
use crate::problem::Problem;
use crate::quarantine::{Meta, Store};
use futures_util::StreamExt;

/// One release or delete at a time (so a message is never released twice).
static DECIDING: Mutex<()> = Mutex::new(());

fn store() -> Result<Arc<Store>, Problem> {
    crate::quarantine::store().ok_or_else(|| {
        Problem::new(
            503,
            "no-quarantine",
            "The quarantine is not available",
            "the daemon runs without its quarantine directory",
        )
    })
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        404,
        "not-found",
        "No such quarantined message",
        format!(
            "no message {:?} in the quarantine",
            id.chars().take(80).collect::<String>()
        ),
    )
}

fn io_failed(e: std::io::Error) -> Problem {
    if e.kind() == std::io::ErrorKind::InvalidData {
        return Problem::new(
            409,
            "quarantine-unreadable",
            "The quarantined message cannot be decrypted",
            "it was written under another vault key (a factory reset) or altered; delete it",
        );
    }
    Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
}

/// Audits a quarantine decision: the daemon's audit log and the vault's chain, with the
/// reason given (control characters removed, bounded).
#[allow(clippy::too_many_arguments)]
fn audit(
    app: &App,
    ad: &Data,
    actor: &str,
    src: &str,
    action: &str,
    id: &str,
    status: u16,
    reason: &str,
    started: Instant,
) {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
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
        id,
        &format!("source={src} status={status} reason={reason:?}"),
    ) {
        tracing::error!(error = %e, "cannot write the vault's audit chain");
    }
}

#[derive(Serialize)]
struct List {
    messages: Vec<Meta>,
    /// Entries that do not decrypt (another vault key, or altered).
    unreadable: Vec<String>,
}

/// `GET /quarantine` (auditor, admin): the index, oldest first.
async fn list(req: HttpRequest, ad: Data) -> HttpResponse {
    super::answer(
        async {
            authorize(&req, &ad, Need::Audit)?;
            let s = store()?;
            let (messages, unreadable) = web::block(move || s.list())
                .await
                .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
            Ok(ok_json(
                200,
                &List {
                    messages,
                    unreadable,
                },
            ))
        }
        .await,
    )
}

#[derive(Serialize)]
struct Shown {
    #[serde(flatten)]
    meta: Meta,
    /// Whether the stored message is encrypted (S/MIME enveloped).
    encrypted: bool,
    /// Whether `message` is the decrypted content of an encrypted message.
    decrypted: bool,
    /// The message (decrypted where the box could), as text (invalid UTF-8 replaced).
    message: String,
    /// The same bytes, base64.
    message_base64: String,
    /// The message taken apart for a reader (the web UI): header fields, texts (HTML with
    /// its markup removed: nothing of it is ever rendered), attachments by name, type, size.
    view: Parts,
}

/// [`Shown::view`].
#[derive(Serialize)]
struct Parts {
    headers: Vec<(String, String)>,
    texts: Vec<PartText>,
    attachments: Vec<Attachment>,
}

#[derive(Serialize)]
struct PartText {
    path: String,
    html: bool,
    text: String,
    truncated: bool,
}

#[derive(Serialize)]
struct Attachment {
    path: String,
    name: Option<String>,
    content_type: String,
    size: usize,
}

/// Largest text of one part shown (characters).
const MAX_TEXT: usize = 200_000;

/// The message's header fields, texts and attachments, as the scanner's view sees them (the
/// engine's MIME parser, archives unpacked within the scanner's limits).
fn parts(msg: &[u8], readable: bool) -> Parts {
    let v = if readable {
        sealgate_scan::view::View::build(msg, sealgate_scan::unpack::Limits::default())
    } else {
        sealgate_scan::view::View::headers_only(msg)
    };
    Parts {
        headers: v
            .headers
            .iter()
            .filter(|h| h.path.is_empty())
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        texts: v
            .texts
            .iter()
            .map(|t| PartText {
                path: t.path.clone(),
                html: t.html.is_some(),
                truncated: t.text.chars().count() > MAX_TEXT,
                text: t.text.chars().take(MAX_TEXT).collect(),
            })
            .collect(),
        attachments: v
            .objects
            .iter()
            .map(|o| Attachment {
                path: o.path.clone(),
                name: o.name.clone(),
                content_type: o.content_type.clone(),
                size: o.data.len(),
            })
            .collect(),
    }
}

/// `GET /quarantine/{id}` (auditor, admin): the verdict and the message, decrypted with the
/// recipients' keys when it is encrypted (each key use audited under the caller). Audited.
async fn show(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let id = path.into_inner();
    let r = async {
        let c = authorize(&req, &ad, Need::Audit)?;
        let s = store()?;
        let keys = app.keys.clone();
        let anchors = app.anchors.clone();
        let actor = format!("admin:{} quarantine-show", c.username);
        let id2 = id.clone();
        let shown = web::block(move || -> Result<Shown, Problem> {
            let (meta, msg) = s
                .get(&id2)
                .map_err(io_failed)?
                .ok_or_else(|| not_found(&id2))?;
            let e = sealgate_smime::mime::Entity::parse(&msg);
            let encrypted = matches!(
                e.smime_kind(),
                sealgate_smime::mime::SmimeKind::Enveloped
                    | sealgate_smime::mime::SmimeKind::AuthEnveloped
                    | sealgate_smime::mime::SmimeKind::UnknownPkcs7
            );
            drop(e);
            let plain = if encrypted {
                let acting = crate::keys::Acting::new(keys.as_ref(), actor);
                crate::docking::decrypt(&acting, &anchors, &msg, &meta.to, false)
                    .ok()
                    .map(|(p, _)| p)
            } else {
                None
            };
            let decrypted = plain.is_some();
            let bytes = plain.unwrap_or(msg);
            let view = parts(&bytes, decrypted || !encrypted);
            Ok(Shown {
                view,
                encrypted,
                meta,
                decrypted,
                message: String::from_utf8_lossy(&bytes).into_owned(),
                message_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            })
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))??;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "quarantine-show",
            &id,
            200,
            "",
            started,
        );
        Ok(ok_json(200, &shown))
    }
    .await;
    super::answer(r)
}

/// A decision's body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
    /// How a release sends it (default: inbound `received`, outbound `policy`).
    #[serde(default, rename = "as")]
    mode: Option<Mode>,
}

/// How a released message is sent.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// As it came: inbound mail as received (encrypted mail still encrypted), submitted mail
    /// as submitted (cleartext, unsigned).
    Received,
    /// As the policy would have sent it had the scanner passed it: inbound with its
    /// `X-Sealgate-Scan` field and, under `[inbound] encrypt_at_rest`, encrypted to the
    /// recipients' keys; submitted mail signed and encrypted by the submission policy.
    Policy,
}

#[derive(Serialize)]
pub(crate) struct Released {
    id: String,
    /// The queue id the message was queued under.
    pub(crate) queued_as: Vec<String>,
    released_by: String,
    /// The recipients it was queued to.
    pub(crate) recipients: Vec<String>,
    /// Whether the entry stays (some recipients' copies not released yet).
    pub(crate) remaining: bool,
}

/// The body: `{"reason": "...", "as": "received|policy"}`, or nothing at all.
async fn reason_body(mut payload: web::Payload) -> Result<Reason, Problem> {
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > super::MAX_BODY {
            return Err(Problem::new(
                413,
                "body-too-large",
                "The request body is too large",
                format!("the limit is {} bytes", super::MAX_BODY),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(Reason::default());
    }
    serde_json::from_slice(&buf)
        .map_err(|e| Problem::bad_request(format!("the body is not the expected JSON: {e}")))
}

fn checked_reason(r: &Reason, required: bool) -> Result<(), Problem> {
    if r.reason.chars().count() > 500 || r.reason.chars().any(|c| c.is_control()) {
        return Err(Problem::bad_request(
            "reason: at most 500 characters, no control characters",
        ));
    }
    if required && r.reason.trim().is_empty() {
        return Err(Problem::bad_request("reason is required"));
    }
    Ok(())
}

/// What a release needs of the daemon.
pub(crate) struct Releaser {
    pub(crate) store: Arc<Store>,
    pub(crate) queue: Option<Arc<crate::smtp::Spool>>,
    pub(crate) keys: Arc<dyn crate::keys::KeyStore>,
    pub(crate) settings: crate::settings::Settings,
}

/// Releases entry `id` (blocking; one decision at a time): to every recipient, or to `only`
/// (a user's release link: that recipient's copy, which then leaves the entry; the entry
/// goes when no recipient is left). `by` names who released it in the result field.
pub(crate) fn release(
    r: &Releaser,
    id: &str,
    by: &str,
    only: Option<&str>,
    mode: Option<Mode>,
) -> Result<Released, Problem> {
    let _one = DECIDING.lock().unwrap_or_else(PoisonError::into_inner);
    let s = &r.store;
    let queue = r.queue.clone().ok_or_else(|| {
        Problem::new(
            503,
            "no-queue",
            "The SMTP queue is not available",
            "the daemon runs without its spool directory",
        )
    })?;
    let (mut meta, msg) = s.get(id).map_err(io_failed)?.ok_or_else(|| not_found(id))?;
    let to: Vec<String> = match only {
        None => meta.to.clone(),
        Some(o) => {
            let t: Vec<String> = meta
                .to
                .iter()
                .filter(|a| a.eq_ignore_ascii_case(o))
                .cloned()
                .collect();
            if t.is_empty() {
                return Err(not_found(id));
            }
            t
        }
    };
    let outbound = meta.direction == "outbound";
    let mode = mode.unwrap_or(if outbound {
        Mode::Policy
    } else {
        Mode::Received
    });
    let released = format!("released from quarantine {id} by {by}");
    let mk_env = |direction, to: Vec<String>| crate::smtp::Envelope {
        direction,
        from: meta.from.clone(),
        to,
        client: meta.client.clone(),
        client_name: Some(format!("quarantine:{by}")),
        received: time::OffsetDateTime::now_utc().unix_timestamp(),
        attempts: 0,
        held_reason: None,
        released: Some(released.clone()),
        auth: None,
    };
    let messages: Vec<(crate::smtp::Envelope, Vec<u8>)> = match (outbound, mode) {
        (true, Mode::Policy) => {
            // Submitted mail was quarantined as cleartext: the submission policy (sign,
            // encrypt) runs now, with the keys and policy of today, never enrolling.
            outbound_copies(&r.keys, &r.settings.policy, by, &to, &msg)?
                .into_iter()
                .map(|(to, m)| {
                    let m = crate::quarantine::released_message(id, by, "outbound", &m);
                    (mk_env(crate::smtp::Direction::Submission, to), m)
                })
                .collect()
        }
        (true, Mode::Received) => vec![(
            mk_env(crate::smtp::Direction::Submission, to.clone()),
            crate::quarantine::released_message(id, by, "outbound", &msg),
        )],
        (false, Mode::Received) => vec![(
            mk_env(crate::smtp::Direction::Inbound, to.clone()),
            crate::quarantine::released_message(id, by, &meta.direction, &msg),
        )],
        (false, Mode::Policy) => {
            let m = inbound_as_policy(r, by, &meta, &to, &msg)?;
            vec![(
                mk_env(crate::smtp::Direction::Inbound, to.clone()),
                crate::quarantine::released_message(id, by, &meta.direction, &m),
            )]
        }
    };
    let batch: Vec<(crate::smtp::Envelope, &[u8])> = messages
        .iter()
        .map(|(e, m)| (e.clone(), m.as_slice()))
        .collect();
    let ids = match queue.enqueue(&batch) {
        Ok(Some(ids)) => ids,
        Ok(None) => {
            return Err(Problem::new(
                503,
                "queue-full",
                "The queue is full",
                "try again when mail has left the queue",
            ));
        }
        Err(e) => {
            return Err(Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string()));
        }
    };
    // Queued durably first: a crash from here delivers it and leaves the entry (or the
    // recipient in it).
    meta.to
        .retain(|a| !to.iter().any(|t| t.eq_ignore_ascii_case(a)));
    let remaining = !meta.to.is_empty();
    let r = if remaining {
        s.update_meta(&meta).map(|_| ())
    } else {
        s.remove(id).map(|_| ())
    };
    if let Err(e) = r {
        tracing::error!(id = %id, error = %e, "released, but the quarantine entry stays");
    }
    Ok(Released {
        id: id.to_string(),
        queued_as: ids,
        released_by: by.to_string(),
        recipients: to,
        remaining,
    })
}

/// Inbound mail as the delivery would have relayed it had the scanner passed it: its
/// verdict in `X-Sealgate-Scan`, and cleartext encrypted to the recipients' keys under
/// `[inbound] encrypt_at_rest` (a recipient without a key: 409, the entry stays).
fn inbound_as_policy(
    r: &Releaser,
    by: &str,
    meta: &Meta,
    to: &[String],
    msg: &[u8],
) -> Result<Vec<u8>, Problem> {
    let e = sealgate_smime::mime::Entity::parse(msg);
    let encrypted = matches!(
        e.smime_kind(),
        sealgate_smime::mime::SmimeKind::Enveloped | sealgate_smime::mime::SmimeKind::AuthEnveloped
    );
    drop(e);
    let out = if r.settings.inbound.encrypt_at_rest && !encrypted {
        let acting =
            crate::keys::Acting::new(r.keys.as_ref(), format!("admin:{by} quarantine-release"));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        crate::docking::encrypt(
            &acting,
            &r.settings.docking,
            msg,
            None,
            to,
            crate::settings::MissingPolicy::Reject,
            now,
        )
        .map(|(m, _)| m)
        .map_err(|p| {
            Problem::new(
                409,
                "release-refused",
                "The inbound policy refuses the message now",
                format!("encrypt_at_rest: {}", p.detail),
            )
        })?
    } else {
        msg.to_vec()
    };
    let verdict = format!(
        "action={}; score={}; labels={}",
        meta.action,
        meta.score,
        meta.labels.join(",")
    );
    let verdict: String = verdict.chars().filter(|c| !c.is_control()).collect();
    let mut m = format!("{}: {verdict}\r\n", crate::smtp::inbound::SCAN_HEADER).into_bytes();
    m.extend_from_slice(&out);
    Ok(m)
}

/// `POST /quarantine/{id}/release` (auditor, admin), body `{"reason": "...", "as":
/// "received|policy"}` (both optional): the message is queued to its recipients through the
/// next hop, after one `X-Sealgate-Result` field naming who released it; then it leaves the
/// quarantine. `POST /quarantine/{id}/delete`, body `{"reason": "..."}` (required): removed,
/// not delivered (the sender is not told). Both audited with the reason.
async fn act(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let (id, action) = path.into_inner();
    let mut who = String::from("-");
    let r = async {
        let c = authorize(&req, &ad, Need::Audit)?;
        who = c.username.clone();
        if action != "release" && action != "delete" {
            return Err(Problem::new(
                404,
                "not-found",
                "No such endpoint",
                "see /api/v1/admin/openapi.json",
            ));
        }
        let reason = reason_body(body).await?;
        checked_reason(&reason, action == "delete")?;
        if action == "delete" && reason.mode.is_some() {
            return Err(Problem::bad_request("as: only a release takes it"));
        }
        let releaser = Releaser {
            store: store()?,
            queue: ad.queue.get().cloned(),
            keys: app.keys.clone(),
            settings: app.settings.clone(),
        };
        let by = c.username.clone();
        let id2 = id.clone();
        let action2 = action.clone();
        let mode = reason.mode;
        let done = web::block(move || -> Result<Option<Released>, Problem> {
            if action2 == "delete" {
                let _one = DECIDING.lock().unwrap_or_else(PoisonError::into_inner);
                if !releaser.store.remove(&id2).map_err(io_failed)? {
                    return Err(not_found(&id2));
                }
                return Ok(None);
            }
            release(&releaser, &id2, &by, None, mode).map(Some)
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))??;
        let resp = match done {
            Some(r) => ok_json(200, &r),
            None => HttpResponse::NoContent().finish(),
        };
        let mut detail = reason.reason;
        if let Some(m) = reason.mode {
            detail = format!("{detail} (as {m:?})");
        }
        Ok((resp, detail))
    }
    .await;
    let (status, reason) = match &r {
        Ok((resp, reason)) => (resp.status().as_u16(), reason.clone()),
        Err(p) => (p.status, String::new()),
    };
    // Only callers who passed the role check: a refused one would make every guess a
    // write to the vault's chain.
    if who != "-" {
        audit(
            &app,
            &ad,
            &who,
            &src,
            &format!(
                "quarantine-{}",
                if action == "delete" {
                    "delete"
                } else {
                    "release"
                }
            ),
            &id,
            status,
            &reason,
            started,
        );
    }
    super::answer(r.map(|(resp, _)| resp))
}

/// One copy to send: its recipients and the message.
type Recipients = (Vec<String>, Vec<u8>);

/// The copies submission's policy makes of a quarantined outbound message now: (recipients,
/// message) to `to`. A refusal (a recipient without a certificate under `mandatory`, no key to sign
/// with) is 409 and the entry stays.
fn outbound_copies(
    keys: &std::sync::Arc<dyn crate::keys::KeyStore>,
    policy: &crate::settings::Policy,
    by: &str,
    to: &[String],
    msg: &[u8],
) -> Result<Vec<Recipients>, Problem> {
    use crate::gateway::policy::{Refusal, apply};
    let refused = |why: String| {
        Problem::new(
            409,
            "release-refused",
            "The submission policy refuses the message now",
            why,
        )
    };
    let sender = crate::gateway::submission::header_from(msg)
        .ok_or_else(|| refused("the message has not exactly one From address".into()))?;
    let acting = crate::keys::Acting::new(keys.as_ref(), format!("admin:{by} quarantine-release"));
    let no_enrol = |a: &str| -> Result<(), String> {
        Err(format!("{a} has no key, and a release does not enrol"))
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match apply(&acting, policy, &no_enrol, &sender, to, msg, now) {
        Ok(o) => Ok(o
            .copies
            .into_iter()
            .map(|c| (c.recipients, c.message))
            .collect()),
        Err(Refusal::Policy(why) | Refusal::Content(why)) => Err(refused(why)),
        Err(Refusal::Temporary(why)) => Err(Problem::new(
            503,
            "release-failed",
            "The message could not be processed now",
            why,
        )),
    }
}

/// `POST /quarantine/digest` (auditor, admin): the digest mails now (as `[scan]
/// digest_hours` sends them), whether or not they are on; `{"queued": N}`. Audited.
async fn digest_now(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let mut who = String::from("-");
    let r: Result<HttpResponse, Problem> = async {
        let c = authorize(&req, &ad, Need::Audit)?;
        who = c.username.clone();
        let s = store()?;
        let links = crate::quarantine_digest::links().ok_or_else(|| {
            Problem::new(
                503,
                "no-links",
                "Release links are not available",
                "the daemon started without them",
            )
        })?;
        let queue = ad.queue.get().cloned().ok_or_else(|| {
            Problem::new(
                503,
                "no-queue",
                "The SMTP queue is not available",
                "the daemon runs without its spool directory",
            )
        })?;
        let scan = app.settings.scan.clone();
        let host = app.settings.smtp.hostname.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let n = web::block(move || {
            crate::quarantine_digest::send_digests(&s, &queue, &links, &scan, &host, now)
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
        Ok(ok_json(200, &serde_json::json!({ "queued": n })))
    }
    .await;
    if who != "-" {
        let status = match &r {
            Ok(resp) => resp.status().as_u16(),
            Err(p) => p.status,
        };
        audit(
            &app,
            &ad,
            &who,
            &src,
            "quarantine-digest",
            "-",
            status,
            "",
            started,
        );
    }
    super::answer(r)
}

/// The quarantine's routes, inside the admin scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let res = |path: &str| {
        web::resource(path.to_string()).default_service(web::to(super::method_not_allowed))
    };
    cfg.service(res("/quarantine").route(web::get().to(list)))
        .service(res("/quarantine/digest").route(web::post().to(digest_now)))
        .service(res("/quarantine/{id}").route(web::get().to(show)))
        .service(res("/quarantine/{id}/{action}").route(web::post().to(act)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_and_plain() {
        let r = |s: &str| Reason {
            reason: s.into(),
            mode: None,
        };
        assert!(checked_reason(&r(""), false).is_ok());
        assert!(checked_reason(&r(""), true).is_err());
        assert!(checked_reason(&r("  "), true).is_err());
        assert!(checked_reason(&r("false positive"), true).is_ok());
        assert!(checked_reason(&r("a\r\nb"), false).is_err());
        assert!(checked_reason(&r(&"x".repeat(501)), false).is_err());
    }
}
