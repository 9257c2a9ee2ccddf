//! `GET /sessions`: the live browser sessions of the admin API (an administrator sees every
//! one, other roles their own), each with a handle, never its cookie or CSRF token;
//! `DELETE /sessions/{id}` ends one (an administrator any, other roles only their own, the
//! way logout ends the current one). Ending a session is audited (`admin.session-revoke`).
//!
//! The attacker: a logged-in auditor or read-only account ending an administrator's session
//! (403), anyone guessing handles (128 bits; a miss is a 404 and audited), a stolen handle
//! (it ends the session at most: it is not the cookie, whose SHA-256 it halves).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_vault::Role;

use super::session::{HANDLE_HEX, handle};
use super::{App, Data, Need, answer, audit, authorize, cookie, ok_json, source};
use crate::problem::Problem;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(res("/sessions").route(web::get().to(list)))
        .service(res("/sessions/{id}").route(web::delete().to(revoke)));
}

/// `GET /sessions`.
async fn list(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        let c = authorize(&req, &ad, Need::Read)?;
        let current = cookie(&req).map(|id| handle(&id));
        let rows: Vec<serde_json::Value> = ad
            .sessions
            .list()
            .into_iter()
            .filter(|s| c.role == Role::Admin || s.username == c.username)
            .map(|s| {
                let mine = current.as_deref() == Some(s.id.as_str());
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("current".into(), mine.into());
                }
                v
            })
            .collect();
        Ok(ok_json(200, &rows))
    })())
}

/// `DELETE /sessions/{id}`.
async fn revoke(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let id = path.into_inner();
    let c = match authorize(&req, &ad, Need::Read) {
        Ok(c) => c,
        Err(p) => return answer(Err(p)),
    };
    let shown: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(HANDLE_HEX)
        .collect();
    let r = (|| {
        let well_formed = id.len() == HANDLE_HEX && id.bytes().all(|b| b.is_ascii_hexdigit());
        let owner = if well_formed {
            ad.sessions.owner(&id.to_ascii_lowercase())
        } else {
            None
        };
        let Some(owner) = owner else {
            return Err(Problem::new(
                404,
                "not-found",
                "No such session",
                "no live session has this id (it may have ended)",
            ));
        };
        if c.role != Role::Admin && owner != c.username {
            return Err(Problem::forbidden(format!(
                "the role {} may end only its own sessions",
                c.role.name()
            )));
        }
        ad.sessions.end_handle(&id.to_ascii_lowercase());
        Ok(owner)
    })();
    let status = r.as_ref().map_or_else(|p| p.status, |_| 204);
    let subject = match &r {
        Ok(owner) => format!("{owner} {shown}"),
        Err(_) => format!("- {shown}"),
    };
    audit(
        &app,
        &ad,
        &c.username,
        &src,
        "session-revoke",
        &subject,
        status,
        started,
    );
    answer(r.map(|_| HttpResponse::NoContent().finish()))
}
