//! `/quarantine/release` on the admin listener: the signed release links of the digest mails
//! (`crate::quarantine_digest`). No session: the link is the credential, and it can only
//! deliver its recipient's copy to that recipient. `GET` shows a page with a button (mail
//! scanners that open every link release nothing); its `POST` (same URL) releases. Plain
//! server-made HTML (every value escaped, no script, the web UI's style sheet), the web UI's
//! headers.
//!
//! Attackers (see `quarantine_digest.rs`): an edited or guessed link (HMAC over id,
//! recipient and expiry: 403, recorded in the daemon's audit log only, so guesses do not
//! grow the vault's chain), a replayed one (410: the copy was released), an expired one
//! (410), one for a verdict no user may overrule (403, "ask your administrator"). Every use
//! of a link the box signed, released or refused, is in the vault's audit chain
//! (`quarantine.link-release`, `quarantine.link-refused`, actor `link:RECIPIENT`).

use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::quarantine::{Releaser, release};
use super::{App, Data, source};
use crate::quarantine_digest::{Refused, links, user_releasable};

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

#[derive(Deserialize)]
struct Link {
    id: String,
    to: String,
    exp: i64,
    sig: String,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn page(status: u16, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · Sealgate</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body><header class=\"top\"><span class=\"brand\">Sealgate</span></header>\
<main id=\"main\"><div class=\"card\"><h1>{t}</h1>{body}</div></main></body></html>\n",
        t = esc(title)
    );
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
    .insert_header((header::CACHE_CONTROL, "no-store"))
    .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ))
    .body(html)
}

const ASK: &str = "<p>This message cannot be released from a link: ask your administrator.</p>";

enum Checked {
    /// A link the box signed, still valid: the entry's record.
    Good(crate::quarantine::Meta),
    /// Refused: status, title, body, and whether the box signed it (then the vault's
    /// chain records the use).
    Refused(u16, &'static str, &'static str, bool),
}

fn check(q: &Link, scan: &sealgate_scan::Settings) -> Checked {
    let (Some(l), Some(s)) = (links(), crate::quarantine::store()) else {
        return Checked::Refused(
            503,
            "Not available",
            "<p>Release links are not available on this box now.</p>",
            false,
        );
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match l.verify(&q.id, &q.to, q.exp, &q.sig, now) {
        Err(Refused::Forged) => {
            return Checked::Refused(
                403,
                "Not a valid link",
                "<p>This link is not one the mail gateway made (it was changed or is \
incomplete). Use the link from your digest as it is.</p>",
                false,
            );
        }
        Err(Refused::Expired) => {
            return Checked::Refused(
                410,
                "This link has expired",
                "<p>Ask your administrator, or use the link of a newer digest.</p>",
                true,
            );
        }
        Ok(()) => {}
    }
    let meta = match s.meta(&q.id) {
        Ok(Some(m)) if m.to.iter().any(|a| a.eq_ignore_ascii_case(&q.to)) => m,
        Ok(_) => {
            return Checked::Refused(
                410,
                "Nothing to release",
                "<p>This message was released already, or it is no longer in the quarantine.</p>",
                true,
            );
        }
        Err(_) => return Checked::Refused(409, "Cannot be released", ASK, true),
    };
    if !user_releasable(&meta, scan) {
        return Checked::Refused(403, "Ask your administrator", ASK, true);
    }
    Checked::Good(meta)
}

fn parse(req: &HttpRequest) -> Option<Link> {
    let q = req.query_string();
    if q.len() > 2048 {
        return None;
    }
    web::Query::<Link>::from_query(q)
        .ok()
        .map(|q| q.into_inner())
}

fn bad_link() -> HttpResponse {
    page(
        400,
        "Not a valid link",
        "<p>This link is incomplete. Use the link from your digest as it is.</p>",
    )
}

#[allow(clippy::too_many_arguments)]
fn record(
    app: &App,
    ad: &Data,
    q: &Link,
    src: &str,
    action: &str,
    status: u16,
    detail: &str,
    chain: bool,
    started: Instant,
) {
    let to: String = q.to.chars().filter(|c| !c.is_control()).take(254).collect();
    let actor = format!("link:{to}");
    app.audit.record(
        &actor,
        src,
        action,
        None,
        if status < 400 { "ok" } else { "refused" },
        status,
        started.elapsed(),
    );
    if chain
        && let Err(e) = ad.vault.record_admin_event(
            &actor,
            action,
            &q.id,
            &format!("source={src} status={status} {detail}"),
        )
    {
        tracing::error!(error = %e, "cannot write the vault's audit chain");
    }
}

/// `GET /quarantine/release?id=&to=&exp=&sig=`: what the link would release, and a button.
async fn show(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let Some(q) = parse(&req) else {
        return bad_link();
    };
    let (_, src) = source(&req);
    match check(&q, &app.settings.scan) {
        Checked::Refused(status, title, body, chain) => {
            record(
                &app,
                &ad,
                &q,
                &src,
                "quarantine.link-refused",
                status,
                title,
                chain,
                started,
            );
            page(status, title, body)
        }
        Checked::Good(meta) => {
            let when = crate::quarantine_digest::utc(meta.time);
            page(
                200,
                "Release a held message",
                &format!(
                    "<dl class=\"facts\"><dt>For</dt><dd>{}</dd><dt>From</dt><dd>{}</dd>\
<dt>Held since</dt><dd>{}</dd></dl><p>It was held because the mail gateway found it \
suspicious. Release it only if you expected it.</p>\
<form method=\"post\"><button type=\"submit\" class=\"primary\">Deliver it to my mailbox</button></form>",
                    esc(&q.to),
                    esc(if meta.from.is_empty() {
                        "<>"
                    } else {
                        &meta.from
                    }),
                    esc(&when),
                ),
            )
        }
    }
}

/// `POST /quarantine/release?id=&to=&exp=&sig=`: releases that recipient's copy.
async fn act(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let Some(q) = parse(&req) else {
        return bad_link();
    };
    let (_, src) = source(&req);
    let releaser = match crate::quarantine::store() {
        Some(store) => Releaser {
            store,
            queue: ad.queue.get().cloned(),
            keys: app.keys.clone(),
            settings: app.settings.clone(),
        },
        None => return page(503, "Not available", "<p>Try again later.</p>"),
    };
    let scan = app.settings.scan.clone();
    let id = q.id.clone();
    let to = q.to.clone();
    let (exp, sig) = (q.exp, q.sig.clone());
    let r = web::block(move || {
        let q = Link { id, to, exp, sig };
        match check(&q, &scan) {
            Checked::Refused(a, b, c, d) => Err((a, b, c, d)),
            Checked::Good(_) => {
                let by = format!("link:{}", q.to);
                release(&releaser, &q.id, &by, Some(&q.to), None).map_err(|p| {
                    if p.status == 404 {
                        // Released (or deleted) since the check: a replay that raced.
                        return (
                            410,
                            "Nothing to release",
                            "<p>This message was released already, or it is no longer in the \
quarantine.</p>",
                            true,
                        );
                    }
                    tracing::warn!(status = p.status, detail = %p.detail, "release link failed");
                    (p.status, "Not released", "<p>Try again later.</p>", true)
                })
            }
        }
    })
    .await;
    match r {
        Ok(Ok(done)) => {
            record(
                &app,
                &ad,
                &q,
                &src,
                "quarantine.link-release",
                200,
                &format!("queued_as={}", done.queued_as.join(",")),
                true,
                started,
            );
            page(
                200,
                "Released",
                "<p class=\"ok\">The message is on its way to your mailbox.</p>",
            )
        }
        Ok(Err((status, title, body, chain))) => {
            record(
                &app,
                &ad,
                &q,
                &src,
                "quarantine.link-refused",
                status,
                title,
                chain,
                started,
            );
            page(status, title, body)
        }
        Err(_) => page(503, "Not released", "<p>Try again later.</p>"),
    }
}

/// The link's route on the admin listener; configure it before
/// [`crate::http::admin_routes`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/quarantine/release")
            .route(web::get().to(show))
            .route(web::post().to(act))
            .default_service(web::to(|| async {
                page(405, "Not allowed", "<p>Open the link from your digest.</p>")
            })),
    );
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            esc("<script>\"a'&\r\n"),
            "&lt;script&gt;&quot;a&#39;&amp;  "
        );
    }
}
