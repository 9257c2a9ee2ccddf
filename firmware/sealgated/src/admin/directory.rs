//! `GET /directory/lookup?address=` (any role): which source of the certificate directory
//! answers for an address, the certificate, and why other candidates were refused; the same
//! JSON object `sealctl directory lookup` prints, plus `details` of the certificate found
//! (subject, issuer, addresses, validity, SHA-256) for the web UI. Audited like every lookup (the directory's
//! audit file, `DATA/audit/directory.jsonl`).
//!
//! `GET|POST directory/blocked`, `DELETE directory/blocked/{sha256}`: certificates an
//! administrator blocked (`DATA/directory-blocked.json`): never used to encrypt, whatever the
//! source; effective at once (the caches are emptied), audited.
//!
//! `GET directory/harvested` (any role), `DELETE directory/harvested/{sha256}` (admin,
//! audited): the certificates harvested from validated signatures of inbound mail
//! (`DATA/directory-harvested.json`), with the senders' S/MIME capabilities. Importing a
//! certificate is pinning it: `POST certificates` (`external.rs`).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_directory::blocklist::{self, Blocked};
use serde::Deserialize;

use super::{
    AdminState, App, Data, Need, answer, audit, authorize, json_body_max, ok_json, source,
};
use crate::problem::Problem;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    address: String,
}

/// An address worth asking a directory for: `local@domain`, at most 254 characters, no
/// spaces or control characters.
fn plausible(a: &str) -> bool {
    a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '(' | ')' | '*' | '\\')
        })
}

/// `GET /directory/lookup?address=ADDRESS`.
async fn lookup(req: HttpRequest, ad: Data) -> HttpResponse {
    let asked = (|| {
        authorize(&req, &ad, Need::Read)?;
        let q = web::Query::<LookupQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let address = q.address.trim().to_ascii_lowercase();
        if !plausible(&address) {
            return Err(Problem::bad_request("address is not an email address"));
        }
        let dir = crate::directory::get()
            .ok_or_else(|| Problem::internal("the certificate directory is not set up"))?;
        Ok((address, dir))
    })();
    let (address, dir) = match asked {
        Ok(v) => v,
        Err(p) => return answer(Err(p)),
    };
    let vault = ad.vault.clone();
    let found = web::block(move || {
        let l = dir.lookup_with(vault.as_ref(), &address, dir.deadline());
        let mut v = l.to_json();
        // For the web UI: what the certificate says, so nobody has to decode the PEM.
        if let (Some(c), serde_json::Value::Object(m)) = (&l.certificate, &mut v) {
            m.insert(
                "details".into(),
                serde_json::json!({
                    "subject": c.subject_text(),
                    "issuer": c.issuer_text(),
                    "emails": c.emails,
                    "not_before": c.not_before,
                    "not_after": c.not_after,
                    "sha256": crate::identity::hex(&crate::identity::sha256(c.der())),
                }),
            );
        }
        v
    })
    .await;
    answer(
        found
            .map(|v| ok_json(200, &v))
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL)),
    )
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(res("/directory/lookup").route(web::get().to(lookup)))
        .service(
            res("/directory/blocked")
                .route(web::get().to(blocked))
                .route(web::post().to(block)),
        )
        .service(res("/directory/blocked/{sha256}").route(web::delete().to(unblock)))
        .service(res("/directory/export").route(web::get().to(export)))
        .service(res("/directory/harvested").route(web::get().to(harvested)))
        .service(res("/directory/harvested/{sha256}").route(web::delete().to(forget)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: String,
    base: Option<String>,
    ttl: Option<u32>,
}

/// `GET /directory/export?format=ldif|smimea[&base=DN][&ttl=SECONDS]` (any role): our users'
/// encryption certificates as LDIF for an LDAP server, or an SMIMEA zone fragment.
async fn export(req: HttpRequest, ad: Data) -> HttpResponse {
    let asked = (|| {
        authorize(&req, &ad, Need::Read)?;
        let q = web::Query::<ExportQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let q = q.into_inner();
        if q.format != "ldif" && q.format != "smimea" {
            return Err(Problem::bad_request("format must be ldif or smimea"));
        }
        if q.base
            .as_deref()
            .is_some_and(|b| b.is_empty() || b.len() > 512 || b.chars().any(char::is_control))
        {
            return Err(Problem::bad_request(
                "base must be a DN of 1 to 512 characters without control characters",
            ));
        }
        Ok(q)
    })();
    let q = match asked {
        Ok(q) => q,
        Err(p) => return answer(Err(p)),
    };
    let vault = ad.vault.clone();
    let text = web::block(move || -> Result<String, Problem> {
        let users =
            sealgate_directory::publish::local_users(&vault, sealgate_directory::unix_now())
                .map_err(|e| {
                    tracing::error!(error = %e, "directory export");
                    Problem::internal(crate::problem::INTERNAL_DETAIL)
                })?;
        Ok(if q.format == "ldif" {
            sealgate_directory::publish::ldif(&users, q.base.as_deref().unwrap_or(DEFAULT_BASE))
        } else {
            sealgate_directory::publish::smimea(&users, q.ttl.unwrap_or(3600))
        })
    })
    .await
    .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))
    .and_then(|r| r);
    answer(text.map(|t| {
        HttpResponse::Ok()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .content_type("text/plain; charset=utf-8")
            .body(t)
    }))
}

/// The LDIF base DN when none is given.
pub const DEFAULT_BASE: &str = "ou=sealgate";

/// One read-modify-write of the block list at a time.
static BLOCKLIST: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    /// SHA-256 of the certificate (hex, colons allowed).
    sha256: String,
    /// Why.
    #[serde(default)]
    reason: String,
}

/// `GET /directory/blocked` (any role): the certificates an administrator blocked.
async fn blocked(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let list = blocklist::load(&ad.data_dir).map_err(|e| {
            tracing::error!(error = %e, "cannot read the directory's block list");
            Problem::internal(crate::problem::INTERNAL_DETAIL)
        })?;
        Ok(ok_json(200, &list))
    })())
}

/// Applies `change` to the block list under its lock, saves it and hands it to the directory.
fn change_blocklist(
    ad: &AdminState,
    change: impl FnOnce(&mut Vec<Blocked>) -> Result<Blocked, Problem>,
) -> Result<Blocked, Problem> {
    let _guard = BLOCKLIST
        .lock()
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
    let internal = |e: String| {
        tracing::error!(error = %e, "cannot write the directory's block list");
        Problem::internal(crate::problem::INTERNAL_DETAIL)
    };
    let mut list = blocklist::load(&ad.data_dir).map_err(internal)?;
    let entry = change(&mut list)?;
    blocklist::save(&ad.data_dir, &list).map_err(internal)?;
    if let Some(d) = crate::directory::get() {
        d.set_blocked(list.iter().map(|b| b.sha256.clone()).collect());
    }
    Ok(entry)
}

/// `POST /directory/blocked` (admin): the certificate is never used to encrypt, whatever the
/// source, from now on.
async fn block(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: Block = json_body_max(payload, 4096).await?;
        let sha256 = blocklist::fingerprint(&b.sha256).ok_or_else(|| {
            Problem::bad_request("sha256 is not a SHA-256 fingerprint (64 hex digits)")
        })?;
        if let Some(why) = blocklist::reason_problem(&b.reason) {
            return Err(Problem::bad_request(format!("reason {why}")));
        }
        let by = c.username.clone();
        let entry = change_blocklist(&ad, |list| {
            blocklist::block(list, &sha256, &b.reason, &by).map_err(|blocklist::Full| {
                Problem::new(
                    422,
                    "too-many-blocked",
                    "The block list is full",
                    format!(
                        "at most {} certificates can be blocked",
                        blocklist::MAX_BLOCKED
                    ),
                )
            })
        })?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "directory-block",
            &sha256,
            200,
            started,
        );
        Ok(ok_json(200, &entry))
    }
    .await;
    answer(r)
}

/// `DELETE /directory/blocked/{sha256}` (admin).
async fn unblock(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let sha256 = blocklist::fingerprint(&path).ok_or_else(|| {
            Problem::new(
                404,
                "not-found",
                "No such resource",
                "no such blocked certificate",
            )
        })?;
        let gone = change_blocklist(&ad, |list| {
            blocklist::unblock(list, &sha256).ok_or_else(|| {
                Problem::new(
                    404,
                    "not-found",
                    "No such resource",
                    "no such blocked certificate",
                )
            })
        })?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "directory-unblock",
            &sha256,
            200,
            started,
        );
        Ok(ok_json(200, &gone))
    })())
}

/// `GET /directory/harvested` (any role): the harvested certificates.
async fn harvested(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let list = sealgate_directory::harvested::load(&ad.data_dir).map_err(|e| {
            tracing::error!(error = %e, "cannot read the harvested certificates");
            Problem::internal(crate::problem::INTERNAL_DETAIL)
        })?;
        Ok(ok_json(200, &list))
    })())
}

/// `DELETE /directory/harvested/{sha256}` (admin): forgets a harvested certificate (every
/// address it was harvested for); the next signed message may bring it back, a block keeps it
/// out.
async fn forget(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let missing = || {
            Problem::new(
                404,
                "not-found",
                "No such resource",
                "no such harvested certificate",
            )
        };
        let sha256 = blocklist::fingerprint(&path).ok_or_else(missing)?;
        let gone = crate::directory::change_harvested(&ad.data_dir, |list| {
            sealgate_directory::harvested::forget(list, &sha256)
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot write the harvested certificates");
            Problem::internal(crate::problem::INTERNAL_DETAIL)
        })?;
        if gone.is_empty() {
            return Err(missing());
        }
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "directory-forget-harvested",
            &sha256,
            200,
            started,
        );
        Ok(ok_json(200, &gone))
    })())
}
