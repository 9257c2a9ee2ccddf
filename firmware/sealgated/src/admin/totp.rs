//! TOTP as an account's second factor, on the admin API (the algorithm and the sealed
//! secret are the vault's: `firmware/vault/src/totp.rs`).
//!
//! - `POST /session/totp`: the logged-in account starts enrolment; the box makes the secret
//!   and answers it once (`otpauth://` URI and base32). Nothing changes at login yet.
//! - `POST /session/totp/confirm` `{code}`: a first valid code turns it on.
//! - `POST /session/totp/disable` `{password, code}`: the account turns it off itself.
//! - `DELETE /accounts/{username}/totp` (admin): turns it off for any account (a lost phone).
//!
//! Who attacks these: someone with a stolen session (enrolment and disabling need what the
//! session alone does not give: the confirming code, or the password and a code), and a
//! guesser of codes (every wrong code counts toward the login lockout of the account from
//! that address, and each code works once).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::{
    App, Data, Need, answer, audit, authorize, cookie, hashed, json_body, ok_json, refused, source,
};
use crate::problem::Problem;

/// The issuer authenticator apps show beside the account.
const ISSUER: &str = "Sealgate";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn session_only() -> Problem {
    Problem::new(
        422,
        "refused",
        "The request cannot be done",
        "only a logged-in account manages its own TOTP",
    )
}

fn wrong_code() -> Problem {
    Problem::new(
        403,
        "wrong-code",
        "The code or password is wrong",
        "check the authenticator's time and try the current code",
    )
}

#[derive(Serialize)]
struct Enrolment {
    otpauth_uri: String,
    secret: String,
    digits: u32,
    period_secs: i64,
}

/// `POST /session/totp`: a new secret for the logged-in account, shown once.
pub(super) async fn enrol(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Read)?;
        if cookie(&req).is_none() || c.csrf.is_empty() {
            return Err(session_only());
        }
        let secret = ad
            .vault
            .start_totp_enrolment(&c.username)
            .map_err(refused)?;
        app.audit.record(
            &c.username,
            &src,
            "admin.totp-enrol",
            None,
            "ok",
            201,
            started.elapsed(),
        );
        Ok(ok_json(
            201,
            &Enrolment {
                otpauth_uri: secret.otpauth_uri(ISSUER, &c.username).to_string(),
                secret: secret.base32().to_string(),
                digits: sealgate_vault::TOTP_DIGITS,
                period_secs: sealgate_vault::TOTP_STEP_SECS,
            },
        ))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    code: String,
}

/// `POST /session/totp/confirm`: the first valid code turns TOTP on.
pub(super) async fn confirm(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (ip, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Read)?;
        if cookie(&req).is_none() || c.csrf.is_empty() {
            return Err(session_only());
        }
        let b: Confirm = json_body(payload).await?;
        if let Some(retry) = ip.and_then(|ip| ad.lockout.locked(ip, Some(&c.username))) {
            return Err(Problem::rate_limited(retry));
        }
        let ok = ad
            .vault
            .confirm_totp(&c.username, &b.code, now())
            .map_err(refused)?;
        if !ok {
            if let Some(ip) = ip {
                ad.lockout.fail(ip, Some(&c.username));
            }
            audit(
                &app,
                &ad,
                &c.username,
                &src,
                "totp-confirm-failed",
                &c.username,
                403,
                started,
            );
            return Err(wrong_code());
        }
        app.audit.record(
            &c.username,
            &src,
            "admin.totp-enable",
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    password: String,
    code: String,
}

/// `POST /session/totp/disable`: the account turns TOTP off with its password and a code.
pub(super) async fn disable_own(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (ip, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Read)?;
        if cookie(&req).is_none() || c.csrf.is_empty() {
            return Err(session_only());
        }
        let b: Disable = json_body(payload).await?;
        if !ad.vault.totp_active(&c.username).map_err(refused)? {
            return Err(Problem::new(
                422,
                "refused",
                "The request cannot be done",
                "TOTP is not on for this account",
            ));
        }
        if let Some(retry) = ip.and_then(|ip| ad.lockout.locked(ip, Some(&c.username))) {
            return Err(Problem::rate_limited(retry));
        }
        let ad2 = ad.clone();
        let name = c.username.clone();
        let ok = hashed(&ad, move || -> Result<bool, sealgate_vault::VaultError> {
            if ad2.vault.authenticate_admin(&name, &b.password)?.is_none() {
                return Ok(false);
            }
            ad2.vault.check_totp(&name, &b.code, now())
        })
        .await?
        .map_err(refused)?;
        if !ok {
            if let Some(ip) = ip {
                ad.lockout.fail(ip, Some(&c.username));
            }
            audit(
                &app,
                &ad,
                &c.username,
                &src,
                "totp-disable-failed",
                &c.username,
                403,
                started,
            );
            return Err(wrong_code());
        }
        ad.vault
            .disable_totp(&c.username, &c.username)
            .map_err(refused)?;
        app.audit.record(
            &c.username,
            &src,
            "admin.totp-disable",
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

/// `DELETE /accounts/{username}/totp` (admin): turns off any account's TOTP.
pub(super) async fn disable_for(
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
        if !ad.vault.disable_totp(&c.username, &name).map_err(refused)? {
            return Err(Problem::new(
                404,
                "not-found",
                "No such resource",
                "the account has no TOTP",
            ));
        }
        app.audit.record(
            &c.username,
            &src,
            "admin.totp-disable",
            None,
            "ok",
            204,
            started.elapsed(),
        );
        Ok(HttpResponse::NoContent().finish())
    })())
}

/// What a login's second step found.
pub(super) enum SecondFactor {
    /// The account has no TOTP, or the code was right.
    Passed,
    /// The account has TOTP and no code was sent.
    Missing,
    /// The code was wrong, malformed or used before.
    Wrong,
}

/// Checks the login's code for `username` (on the blocking pool: it writes the used step).
pub(super) fn second_factor(
    vault: &sealgate_vault::Vault,
    username: &str,
    code: Option<&str>,
) -> Result<SecondFactor, sealgate_vault::VaultError> {
    if !vault.totp_active(username)? {
        return Ok(SecondFactor::Passed);
    }
    let Some(code) = code else {
        return Ok(SecondFactor::Missing);
    };
    Ok(if vault.check_totp(username, code, now())? {
        SecondFactor::Passed
    } else {
        SecondFactor::Wrong
    })
}
