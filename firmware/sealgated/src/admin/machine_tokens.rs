//! Admin-plane API tokens for machine clients (`Authorization: Bearer sga_...`), kept in the
//! vault (`firmware/vault/src/admin_tokens.rs`), separate from the docking API's tokens.
//!
//! - `GET /admin-tokens` (any role): names, roles, who made them; never a token or a hash.
//! - `POST /admin-tokens` `{name, role}` (admin): a token, shown once.
//! - `DELETE /admin-tokens/{name}` (admin): revoked; the next call with it is 401.
//!
//! A bearer call needs no CSRF token: it carries no cookie, and a cross-site page cannot set
//! an `Authorization` header without a CORS preflight, which this API never grants. It is
//! audited with `token:NAME` as the actor (account names cannot hold a colon). Who attacks:
//! a guesser of tokens (256 random bits, so guessing is hopeless; failed bearer attempts
//! still count toward the address's lockout, like failed logins, so a flood is cut off with
//! 429) and a holder of a revoked or lower-role token (401, 403).

use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_vault::{Role, VaultError};
use serde::{Deserialize, Serialize};

use super::{
    AdminState, App, Caller, Data, Need, allowed, answer, authorize, json_body, ok_json, refused,
    source,
};
use crate::problem::Problem;

/// The bearer token of the request, if it sends one.
pub(super) fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Authorizes a bearer call: the token's role must allow `need`.
pub(super) fn authorize_bearer(
    req: &HttpRequest,
    ad: &AdminState,
    token: &str,
    need: Need,
) -> Result<Caller, Problem> {
    let (ip, src) = source(req);
    let found = ad.vault.admin_api_token(token).map_err(Problem::from)?;
    let Some(t) = found else {
        tracing::warn!(source = %src, "admin API call with an unknown or revoked token");
        if let Some(ip) = ip {
            ad.lockout.fail(ip, None);
            if let Some(retry) = ad.lockout.locked(ip, None) {
                return Err(Problem::rate_limited(retry));
            }
        }
        return Err(Problem::unauthorized(
            "the admin API token is unknown or revoked (docking tokens do not work here)",
        ));
    };
    allowed(t.role, need)?;
    Ok(Caller {
        username: format!("token:{}", t.name),
        role: t.role,
        csrf: String::new(),
    })
}

/// `GET /admin-tokens`.
pub(super) async fn list(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(
            200,
            &ad.vault.admin_api_tokens().map_err(Problem::from)?,
        ))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

#[derive(Serialize)]
struct Created {
    name: String,
    role: Role,
    token: String,
}

/// `POST /admin-tokens` (admin).
pub(super) async fn create(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let n: NewToken = json_body(payload).await?;
        let token = ad
            .vault
            .create_admin_api_token(&c.username, &n.name, n.role)
            .map_err(refused)?;
        app.audit.record(
            &c.username,
            &src,
            "admin.api-token-create",
            None,
            "ok",
            201,
            started.elapsed(),
        );
        Ok(ok_json(
            201,
            &Created {
                name: n.name,
                role: n.role,
                token,
            },
        ))
    }
    .await;
    answer(r)
}

/// `DELETE /admin-tokens/{name}` (admin).
pub(super) async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        ad.vault
            .revoke_admin_api_token(&c.username, &path)
            .map_err(|e| match e {
                VaultError::NoKey(_) => Problem::new(
                    404,
                    "not-found",
                    "No such resource",
                    "no admin API token of this name",
                ),
                e => refused(e),
            })?;
        app.audit.record(
            &c.username,
            &src,
            "admin.api-token-revoke",
            None,
            "ok",
            204,
            started.elapsed(),
        );
        Ok(HttpResponse::NoContent().finish())
    })())
}
