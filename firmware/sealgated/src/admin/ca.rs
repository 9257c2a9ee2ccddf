//! The box's CA through the admin API: show it, create the root, or the key and CSR of an
//! intermediate under a corporate CA and then install the certificate that CA signed; the CA
//! certificate, the current CRL (any role: public material), a fresh CRL and revocation by
//! serial (admin). Each change is the vault's (one transaction with its audit entry) and an
//! admin event naming the account; the key cache is emptied, so the new anchor or revocation
//! applies at once. A certificate that is not a CA certificate, not for the pending key, or
//! not PEM/DER is refused (422) and the CA stays pending.

use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use sealgate_vault::{CaSettings, KeyAlgorithm, VaultError};
use serde::Deserialize;

use super::keys::{PEM_CHAIN, Revoked, blocking};
use super::{App, Data, Need, answer, audit, authorize, json_body, json_body_max, ok_json};
use super::{refused, source};
use crate::problem::Problem;

/// Longest CA name (its certificate's common name), in characters.
const MAX_NAME: usize = 64;
/// Longest validity of issued certificates, in days.
const MAX_VALIDITY_DAYS: u32 = 3653;
/// Largest body installing a CA certificate (PEM with a chain).
const MAX_INSTALL_BODY: usize = 256 * 1024;

/// A CA error: none yet, one already, pending, refused certificates.
fn ca_problem(e: VaultError) -> Problem {
    match e {
        VaultError::NoCa => Problem::new(
            409,
            "no-ca",
            "The box has no CA",
            "create the CA first (POST /api/v1/admin/ca)",
        ),
        VaultError::CaExists => Problem::new(
            409,
            "ca-exists",
            "The box has a CA already",
            "the CA is created once",
        ),
        VaultError::Import(t) => Problem::new(
            422,
            "ca-certificate-refused",
            "The CA certificate was refused",
            format!("{t}; nothing changed, the CA still waits for its certificate"),
        ),
        VaultError::Usage(t) if t.contains("waits for its certificate") => {
            Problem::new(409, "ca-pending", "The CA waits for its certificate", t)
        }
        VaultError::Usage(t) if t.starts_with("no intermediate CA waits") => Problem::new(
            409,
            "no-pending-ca",
            "No intermediate CA waits for a certificate",
            "create one first (POST /api/v1/admin/ca/intermediate)",
        ),
        e => refused(e),
    }
}

/// For GETs of CA material: no CA (or no CSR) is 404.
fn missing(e: VaultError) -> Problem {
    match e {
        VaultError::NoCa => Problem::new(404, "not-found", "No such resource", "the box has no CA"),
        VaultError::Usage(t) => Problem::new(404, "not-found", "No such resource", t),
        e => ca_problem(e),
    }
}

fn text(status: u16, ctype: &str, body: String) -> HttpResponse {
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(code)
        .content_type(ctype)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// `GET /ca` (any role): the CA's state and public facts.
async fn show(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(200, &ad.vault.ca_overview().map_err(refused)?))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaInit {
    /// The CA's name (its certificate's common name).
    name: String,
    /// The organisation's mail domains (auto-enrolment issues keys for these).
    #[serde(default)]
    domains: Vec<String>,
    /// `rsa3072` (default) or `p256`.
    key_algorithm: Option<KeyAlgorithm>,
    /// Validity of issued certificates in days (default 730).
    validity_days: Option<u32>,
    /// Separate signing and encryption keys instead of one dual-use key.
    #[serde(default)]
    separate_keys: bool,
    /// Issue keys automatically for users of the organisation's domains (default true).
    auto_enrol: Option<bool>,
}

fn refused_input(detail: impl Into<String>) -> Problem {
    Problem::new(422, "refused", "The request cannot be done", detail)
}

impl CaInit {
    /// The checked name and settings (the same defaults as `sealctl ca init`).
    fn settings(self) -> Result<(String, CaSettings), Problem> {
        let name = self.name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return Err(refused_input(format!(
                "the CA's name is 1 to {MAX_NAME} characters, no control characters"
            )));
        }
        let validity_days = self.validity_days.unwrap_or(730);
        if !(1..=MAX_VALIDITY_DAYS).contains(&validity_days) {
            return Err(refused_input(format!(
                "validity_days is 1 to {MAX_VALIDITY_DAYS}"
            )));
        }
        let mut domains = Vec::new();
        for d in &self.domains {
            let d = d.trim().to_ascii_lowercase();
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && !d.starts_with(['.', '-'])
                && !d.ends_with(['.', '-'])
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !ok {
                return Err(refused_input(format!("{d:?} is not a mail domain")));
            }
            domains.push(d);
        }
        Ok((
            name,
            CaSettings {
                key_algorithm: self.key_algorithm.unwrap_or(KeyAlgorithm::Rsa3072),
                separate_keys: self.separate_keys,
                validity_days,
                org_domains: domains,
                auto_enrol: self.auto_enrol.unwrap_or(true),
                ..CaSettings::default()
            },
        ))
    }
}

/// `POST /ca` (admin): creates the organisation's root CA.
async fn init(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let (name, settings) = json_body::<CaInit>(payload).await?.settings()?;
        let (ad2, n2) = (ad.clone(), name.clone());
        let info = blocking(ca_problem, move || ad2.vault.ca_init(&n2, &settings)).await?;
        app.keys.forget_cached();
        audit(&app, &ad, &c.username, &src, "ca-init", &name, 201, started);
        Ok(ok_json(201, &info))
    }
    .await;
    answer(r)
}

/// `POST /ca/intermediate` (admin): creates the key of an intermediate CA and answers its
/// CSR (PEM) for the corporate CA to sign; the CA is pending until `PUT /ca/certificate`.
async fn intermediate(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let (name, settings) = json_body::<CaInit>(payload).await?.settings()?;
        let (ad2, n2) = (ad.clone(), name.clone());
        let csr = blocking(ca_problem, move || {
            ad2.vault.ca_init_intermediate(&n2, &settings)
        })
        .await?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "ca-intermediate",
            &name,
            201,
            started,
        );
        Ok(text(201, "application/pkcs10", csr))
    }
    .await;
    answer(r)
}

/// `GET /ca/csr` (any role): the pending intermediate's CSR (PEM).
async fn csr(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let csr = ad.vault.ca_pending_csr().map_err(missing)?;
        Ok(text(200, "application/pkcs10", csr))
    })())
}

/// `GET /ca/certificate` (any role): the CA certificate and the corporate chain above it.
async fn certificate(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(text(200, PEM_CHAIN, ad.vault.ca_pem().map_err(missing)?))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Install {
    /// The certificate the corporate CA signed: PEM (further certificates in it join the
    /// chain) or base64 of DER.
    certificate: String,
    /// The corporate chain above it, PEM, its issuer first.
    chain: Option<String>,
}

/// PEM text as is; anything else as base64 of DER.
fn pem_or_base64(field: &str, text: &str) -> Result<Vec<u8>, Problem> {
    if text.contains("-----BEGIN") {
        return Ok(text.as_bytes().to_vec());
    }
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|_| Problem::bad_request(format!("{field} is neither PEM nor base64 DER")))
}

/// `PUT /ca/certificate` (admin): installs the certificate the corporate CA signed for the
/// pending intermediate (checked: the pending key, a CA certificate valid now, a trial
/// certificate validates through it to the chain).
async fn install(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let i: Install = json_body_max(payload, MAX_INSTALL_BODY).await?;
        let cert = pem_or_base64("certificate", &i.certificate)?;
        let chain = match &i.chain {
            Some(t) => pem_or_base64("chain", t)?,
            None => Vec::new(),
        };
        let ad2 = ad.clone();
        let info = blocking(ca_problem, move || ad2.vault.ca_import_cert(&cert, &chain)).await?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "ca-install",
            &info.subject,
            200,
            started,
        );
        Ok(ok_json(200, &info))
    }
    .await;
    answer(r)
}

const PEM_FILE: &str = "application/x-pem-file";

/// `GET /ca/crl` (any role): the current CRL (PEM): the last one issued, or a fresh one
/// when a revocation came after it or it nears its nextUpdate.
async fn current_crl(req: HttpRequest, ad: Data) -> HttpResponse {
    answer(
        async {
            authorize(&req, &ad, Need::Read)?;
            let ad2 = ad.clone();
            let crl = blocking(missing, move || ad2.vault.ca_current_crl()).await?;
            Ok(text(200, PEM_FILE, crl))
        }
        .await,
    )
}

/// `POST /ca/crl` (admin): a fresh CRL (PEM), its number one higher.
async fn issue_crl(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let ad2 = ad.clone();
        let crl = blocking(ca_problem, move || ad2.vault.ca_crl()).await?;
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "crl-issue",
            "ca",
            200,
            started,
        );
        Ok(text(200, PEM_FILE, crl))
    }
    .await;
    answer(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeSerial {
    /// The serial number (hex, colons allowed).
    serial: String,
}

/// `POST /ca/revoke` (admin): revokes the CA-issued certificate with this serial.
async fn revoke_serial(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let s: RevokeSerial = json_body(payload).await?;
        let serials = ad.vault.ca_revoke_serial(&s.serial).map_err(ca_problem)?;
        app.keys.forget_cached();
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "ca-revoke",
            &serials.join(","),
            200,
            started,
        );
        Ok(ok_json(200, &Revoked { revoked: serials }))
    }
    .await;
    answer(r)
}

/// The CA's routes (inside the admin scope).
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(
        res("/ca")
            .route(web::get().to(show))
            .route(web::post().to(init)),
    )
    .service(res("/ca/intermediate").route(web::post().to(intermediate)))
    .service(res("/ca/csr").route(web::get().to(csr)))
    .service(
        res("/ca/certificate")
            .route(web::get().to(certificate))
            .route(web::put().to(install)),
    )
    .service(
        res("/ca/crl")
            .route(web::get().to(current_crl))
            .route(web::post().to(issue_crl)),
    )
    .service(res("/ca/revoke").route(web::post().to(revoke_serial)));
}
