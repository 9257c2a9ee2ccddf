//! External recipients' certificates stored in the vault, through the admin API: list, show,
//! add, delete (pending ones are `certificates/pending` in `mod.rs`).
//!
//! Adding is an administrator's decision, so a certificate that the docking API would keep
//! pending (no path to a trust anchor, another issuer in use for its address) is stored; the
//! rest of the docking API's checks apply unchanged (`certs.rs`: usable for encryption now,
//! never a local user's address). Every change empties the key cache, so `encrypt` uses (or
//! stops using) the certificate at once.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_smime::cert::Certificate;
use sealgate_vault::VaultError;
use serde::Deserialize;

use super::{App, Data, Need, answer, audit, authorize, json_body_max, ok_json, refused, source};
use crate::certs::{Decision, decide, unusable_reason};
use crate::keys::{Acting, KeyDirectory};
use crate::problem::Problem;

/// Largest body (JSON holding a few certificates).
const MAX_ADD_BODY: usize = 256 * 1024;
/// End-entity certificates taken in one call.
const MAX_CERTIFICATES: usize = 100;

/// A fingerprint lookup's error: no match 404, malformed or ambiguous 422.
fn lookup(e: VaultError) -> Problem {
    match e {
        VaultError::NoKey(t) => Problem::new(404, "not-found", "No such resource", t),
        e => refused(e),
    }
}

/// `GET /certificates` (any role): the stored external recipients' certificates.
async fn list(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(
            200,
            &ad.vault.recipient_certificate_list().map_err(refused)?,
        ))
    })())
}

/// `GET /certificates/{sha256}` (any role): one of them, with its PEM.
async fn show(req: HttpRequest, path: web::Path<String>, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(
            200,
            &ad.vault.recipient_certificate(&path).map_err(lookup)?,
        ))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    /// PEM certificates, or one DER certificate in base64. CA certificates next to the
    /// end-entity ones are taken as their chain and not stored.
    certificate: String,
}

/// The certificates in `text`: PEM, or base64 of DER.
fn parse(text: &str) -> Result<Vec<Certificate>, Problem> {
    let bytes = if text.contains("-----BEGIN") {
        text.as_bytes().to_vec()
    } else {
        use base64::Engine as _;
        let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|_| Problem::bad_request("certificate is neither PEM nor base64 DER"))?
    };
    Certificate::parse_many(&bytes)
        .map_err(|e| Problem::bad_request(format!("certificate is not PEM or DER: {e}")))
}

/// `POST /certificates` (admin): stores external recipients' certificates.
async fn add(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let a: Add = json_body_max(payload, MAX_ADD_BODY).await?;
        let certs = parse(&a.certificate)?;
        let (cas, leaves): (Vec<Certificate>, Vec<Certificate>) =
            certs.into_iter().partition(|c| c.is_ca);
        let leaves = if leaves.is_empty() { cas.clone() } else { leaves };
        if leaves.is_empty() {
            return Err(Problem::bad_request("the body holds no certificate"));
        }
        if leaves.len() > MAX_CERTIFICATES {
            return Err(Problem::bad_request(format!(
                "at most {MAX_CERTIFICATES} certificates per request"
            )));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for l in &leaves {
            if let Some(why) = unusable_reason(l, now) {
                return Err(Problem::new(
                    422,
                    "unusable-certificate",
                    "The certificate cannot be used to encrypt to its owner",
                    format!("{}: {why}; nothing was stored", l.subject_text()),
                ));
            }
        }
        let app2 = app.clone();
        let actor = c.username.clone();
        let stored = web::block(move || -> Result<Vec<Certificate>, Problem> {
            let dir = Acting::new(app2.keys.as_ref(), actor);
            let mut anchors = dir.anchors();
            anchors.extend(app2.anchors.iter().cloned());
            let mut to_store = Vec::new();
            for l in &leaves {
                match decide(&dir, &anchors, l, &cas, now)? {
                    Decision::LocalUser(address) => {
                        return Err(Problem::new(
                            409,
                            "local-user-address",
                            "The certificate names a local user's address",
                            format!(
                                "{}: {address} is a local user of the box, whose own certificate is used; nothing was stored",
                                l.subject_text()
                            ),
                        ));
                    }
                    Decision::AlreadyStored => {}
                    // The administrator vouches for it.
                    Decision::Store | Decision::Pending(_) => to_store.push(l.clone()),
                }
            }
            for l in &to_store {
                dir.add_recipient_certificate(l)?;
            }
            Ok(leaves)
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))??;
        app.keys.forget_cached();
        let mut out = Vec::new();
        for l in &stored {
            out.push(
                ad.vault
                    .recipient_certificate(&sealgate_vault::fingerprint(l))
                    .map_err(refused)?,
            );
        }
        let emails: Vec<String> = out.iter().flat_map(|c| c.emails.clone()).collect();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "cert-add",
            &emails.join(","),
            201,
            started,
        );
        Ok(ok_json(201, &out))
    }
    .await;
    answer(r)
}

/// `DELETE /certificates/{sha256}` (admin): `encrypt` stops using it at once.
async fn delete(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let gone = ad
            .vault
            .remove_recipient_certificate_by(&path, &c.username)
            .map_err(lookup)?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "cert-delete",
            &format!("{} {}", gone.sha256, gone.emails.join(",")),
            200,
            started,
        );
        Ok(ok_json(200, &gone))
    })())
}

/// The routes of external certificates (inside the admin scope, after the pending ones).
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(
        res("/certificates")
            .route(web::get().to(list))
            .route(web::post().to(add)),
    )
    .service(
        res("/certificates/{sha256}")
            .route(web::get().to(show))
            .route(web::delete().to(delete)),
    );
}
