//! Users' keys through the admin API: list (all, or one user's with their states), import
//! (PKCS#12, or a PEM/DER key and certificate), export the certificate (PEM, DER, `.p7c`) and
//! (admin, audited, password-protected) the private keys as PKCS#12, issue from the box's CA,
//! renew, retire, revoke.
//!
//! Each change calls the vault directly (its own entry names the daemon's actor) and then
//! empties the key directory's cache, so the docking API and the SMTP hand-off use the new
//! state at once; the admin event next to it names the account (or `uid:N` on the socket).
//! Bad input (garbage PKCS#12, a wrong password, an unknown address) is a 4xx problem and
//! changes nothing: every vault change is one transaction.

use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_vault::{CertFormat, KeyInfo, VaultError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{App, Data, Need, answer, audit, authorize, json_body, json_body_max, ok_json};
use super::{refused, source};
use crate::problem::Problem;

/// Largest import body (JSON with base64).
const MAX_IMPORT_BODY: usize = 256 * 1024;

/// The answer type of a PEM certificate chain.
pub(super) const PEM_CHAIN: &str = "application/pem-certificate-chain";

/// Runs a vault call on the blocking pool (key generation takes seconds); vault refusals of
/// the caller's input become 4xx problems through `map`.
pub(super) async fn blocking<T: Send + 'static>(
    map: fn(VaultError) -> Problem,
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, Problem> {
    web::block(f)
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
        .map_err(map)
}

fn no_key() -> Problem {
    Problem::new(
        404,
        "not-found",
        "No such resource",
        "the box holds no key for this address",
    )
}

/// A vault error about one user's keys: an unknown address (or not an address) is 404.
fn about_user(e: VaultError) -> Problem {
    match e {
        VaultError::NoKey(_) => no_key(),
        VaultError::Usage(t) if t.ends_with("is not an email address") => no_key(),
        e => refused(e),
    }
}

fn base64(field: &str, text: &str) -> Result<Vec<u8>, Problem> {
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|_| Problem::bad_request(format!("{field} is not base64")))
}

/// Whether the caller asked for a PEM chain (`Accept: application/pem-certificate-chain`).
fn wants_pem(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(PEM_CHAIN))
}

fn pem_answer(status: u16, pem: String) -> HttpResponse {
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(code)
        .content_type(PEM_CHAIN)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(pem)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this user's keys.
    user: Option<String>,
}

/// `GET /keys[?user=]`: every key the vault holds (certificates' facts, never key material).
async fn keys(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let q = web::Query::<ListQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        Ok(ok_json(
            200,
            &ad.vault.list(q.user.as_deref()).map_err(refused)?,
        ))
    })())
}

/// One user's keys, every state, and which of them are in use.
#[derive(Serialize)]
struct UserKeys {
    user: String,
    /// The key the user signs with (the newest active key that signs).
    signing_key: Option<u64>,
    /// The key senders encrypt to (the newest active key that decrypts).
    encryption_key: Option<u64>,
    /// Every key, oldest first: `active`, `retired` or `revoked` (the last two still decrypt).
    keys: Vec<KeyInfo>,
}

/// `GET /keys/{address}` (any role): the user's keys and their states.
async fn user_keys(req: HttpRequest, path: web::Path<String>, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let keys = ad.vault.list(Some(&path)).map_err(about_user)?;
        let Some(first) = keys.first() else {
            return Err(no_key());
        };
        let newest = |f: fn(sealgate_vault::Purpose) -> bool| {
            keys.iter()
                .filter(|k| k.status == "active" && f(k.purpose))
                .map(|k| k.id)
                .max()
        };
        Ok(ok_json(
            200,
            &UserKeys {
                user: first.user.clone(),
                signing_key: newest(sealgate_vault::Purpose::signs),
                encryption_key: newest(sealgate_vault::Purpose::decrypts),
                keys,
            },
        ))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `pem` (default), `der` or `p7c`.
    format: Option<String>,
}

/// `GET /keys/{address}/certificate[?format=pem|der|p7c]`: the user's current certificates and
/// chain (any role).
async fn export_certificate(req: HttpRequest, path: web::Path<String>, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let q = web::Query::<ExportQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let (format, ctype) = match q.format.as_deref().unwrap_or("pem") {
            "pem" => (CertFormat::Pem, PEM_CHAIN),
            "der" => (CertFormat::Der, "application/pkix-cert"),
            "p7c" => (CertFormat::P7c, "application/pkcs7-mime"),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown format {other:?} (pem, der or p7c)"
                )));
            }
        };
        let body = ad.vault.export_cert(&path, format).map_err(|e| match e {
            VaultError::NoKey(_) | VaultError::Usage(_) => no_key(),
            e => Problem::from(e),
        })?;
        Ok(HttpResponse::Ok().content_type(ctype).body(body))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    /// The PKCS#12 file, base64.
    pkcs12: String,
    password: String,
    user: Option<String>,
}

/// `POST /keys/import` (admin): every key of a PKCS#12 file.
async fn import_pkcs12(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let i: Import = json_body_max(payload, MAX_IMPORT_BODY).await?;
        let der = base64("pkcs12", i.pkcs12.trim())?;
        let password = Zeroizing::new(i.password);
        let ad2 = ad.clone();
        let imported = blocking(refused, move || {
            ad2.vault.import_pkcs12(&der, &password, i.user.as_deref())
        })
        .await?;
        app.keys.forget_cached();
        let users: Vec<&str> = imported.iter().map(|k| k.user.as_str()).collect();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-import",
            &users.join(","),
            201,
            started,
        );
        Ok(ok_json(201, &imported))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportPem {
    /// The private key file (PEM or DER: PKCS#8, PKCS#1, SEC1), base64.
    key: String,
    /// The certificate file (PEM or DER; further PEM certificates are the chain), base64.
    certificate: String,
    user: Option<String>,
}

/// `POST /keys/import-pem` (admin): a private key and its certificate.
async fn import_pem(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let i: ImportPem = json_body_max(payload, MAX_IMPORT_BODY).await?;
        let key = Zeroizing::new(base64("key", &i.key)?);
        let cert = base64("certificate", &i.certificate)?;
        let ad2 = ad.clone();
        let imported = blocking(refused, move || {
            ad2.vault.import_pem(&key, &cert, i.user.as_deref())
        })
        .await?;
        app.keys.forget_cached();
        let users: Vec<&str> = imported.iter().map(|k| k.user.as_str()).collect();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-import",
            &users.join(","),
            201,
            started,
        );
        Ok(ok_json(201, &imported))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Password {
    password: String,
}

/// `POST /keys/{address}/pkcs12` (admin): every key of the user (all states) as a PKCS#12
/// file protected by the given password (not empty). Audited.
async fn export_pkcs12(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let p: Password = json_body(payload).await?;
        let password = Zeroizing::new(p.password);
        let user = path.into_inner();
        let (ad2, u2) = (ad.clone(), user.clone());
        let p12 = blocking(about_user, move || ad2.vault.export_pkcs12(&u2, &password)).await?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-export-pkcs12",
            &user,
            200,
            started,
        );
        Ok(HttpResponse::Ok()
            .content_type("application/pkcs12")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(p12))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Issue {
    user: String,
}

/// The answer to an issue or a renewal: the user's keys (JSON), or with `Accept:
/// application/pem-certificate-chain` the new certificates as `sealctl ca issue` prints them.
fn issued(
    req: &HttpRequest,
    ad: &Data,
    user: &str,
    certs: &[sealgate_smime::cert::Certificate],
) -> Result<HttpResponse, Problem> {
    if wants_pem(req) {
        return Ok(pem_answer(
            201,
            ad.vault.ca_issued_pem(certs).map_err(refused)?,
        ));
    }
    Ok(ok_json(201, &ad.vault.list(Some(user)).map_err(refused)?))
}

/// `POST /keys/issue` (admin): a new key and certificate from the box's CA.
async fn issue(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let i: Issue = json_body(payload).await?;
        let ad2 = ad.clone();
        let user = i.user.clone();
        let certs = blocking(refused, move || ad2.vault.ca_issue(&user)).await?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-issue",
            &i.user,
            201,
            started,
        );
        issued(&req, &ad, &i.user, &certs)
    }
    .await;
    answer(r)
}

/// `POST /keys/{address}/renew` (admin): a new key and certificate from the box's CA for a
/// user who has a key; the earlier active keys are retired (they stay to decrypt).
async fn renew(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let user = path.into_inner();
        let (ad2, u2) = (ad.clone(), user.clone());
        let certs = blocking(about_user, move || ad2.vault.ca_renew(&u2)).await?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-renew",
            &user,
            201,
            started,
        );
        issued(&req, &ad, &user, &certs)
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireQuery {
    /// Only this key (its id in the list).
    id: Option<u64>,
}

#[derive(Serialize)]
struct Retired {
    retired: Vec<KeyInfo>,
}

/// `POST /keys/{address}/retire[?id=N]` (admin): the user's active keys (or key N) stop
/// signing and receiving; they stay to decrypt old mail.
async fn retire(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let q = web::Query::<RetireQuery>::from_query(req.query_string())
            .map_err(|e| Problem::bad_request(format!("query string: {e}")))?;
        let retired = ad.vault.retire_keys(&path, q.id).map_err(about_user)?;
        app.keys.forget_cached();
        let ids: Vec<String> = retired.iter().map(|k| k.id.to_string()).collect();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-retire",
            &format!("{} records={}", path.as_str(), ids.join(",")),
            200,
            started,
        );
        Ok(ok_json(200, &Retired { retired }))
    })())
}

#[derive(Serialize)]
pub(super) struct Revoked {
    pub(super) revoked: Vec<String>,
}

/// `POST /keys/{address}/revoke` (admin): revokes the CA-issued certificates of a user (the
/// keys stay to decrypt old mail).
async fn revoke(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let serials = ad.vault.ca_revoke_user(&path).map_err(refused)?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "key-revoke",
            &path,
            200,
            started,
        );
        Ok(ok_json(200, &Revoked { revoked: serials }))
    })())
}

/// The routes of users' keys (inside the admin scope).
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(res("/keys").route(web::get().to(keys)))
        .service(res("/keys/import").route(web::post().to(import_pkcs12)))
        .service(res("/keys/import-pem").route(web::post().to(import_pem)))
        .service(res("/keys/issue").route(web::post().to(issue)))
        .service(res("/keys/{address}").route(web::get().to(user_keys)))
        .service(res("/keys/{address}/certificate").route(web::get().to(export_certificate)))
        .service(res("/keys/{address}/pkcs12").route(web::post().to(export_pkcs12)))
        .service(res("/keys/{address}/renew").route(web::post().to(renew)))
        .service(res("/keys/{address}/retire").route(web::post().to(retire)))
        .service(res("/keys/{address}/revoke").route(web::post().to(revoke)));
}
