//! `/api/v1/admin/tls`: the certificate the box's TLS listeners serve. Show it (any role);
//! make a key and CSR on the box (admin: the key stays in the vault, the CSR is downloaded
//! from `GET tls/csr`); install the certificate an organisation's CA signed for that CSR, or
//! a key and certificate made elsewhere (PKCS#12 or PEM). Checked by `tls_certificate.rs`
//! before anything changes (422 with the `field` at fault otherwise); the listeners serve
//! the new certificate from their next handshake (one shared resolver), no restart. Audited
//! (`admin.tls-request`, `admin.tls-install`, `admin.tls-import`, refused ones too) beside the
//! vault's own `vault.tls-*` entries. While `[tls] certificate` and `key` name the
//! operator's files, installing is refused (409): the next start would read those files.
//!
//! The attacker: a session's holder beyond their role (403), a cross-site page (CSRF, 403),
//! and uploaded files built to crash or mislead the parser (bounded bodies, closed JSON
//! types, every parse failure a 422).

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::settings_change::SettingsStore;
use super::{App, Data, Need, answer, audit, authorize, json_body, json_body_max, ok_json, source};
use crate::identity::LiveCertificate;
use crate::problem::Problem;
use crate::tls_certificate::{self as tc, Refused};

/// Largest upload (a PKCS#12 file in base64, or PEM with a chain).
const MAX_UPLOAD: usize = 256 * 1024;

fn live(ad: &Data) -> Result<Arc<LiveCertificate>, Problem> {
    ad.tls.get().cloned().ok_or_else(|| {
        Problem::new(
            409,
            "tls-not-ready",
            "The TLS listeners are not started",
            "try again when the daemon is ready",
        )
    })
}

fn refused(r: Refused) -> Problem {
    let mut p = Problem::new(
        422,
        "tls-certificate-refused",
        "The certificate was refused",
        format!("{}; nothing changed", r.detail),
    );
    p.field = Some(r.field.into());
    p
}

fn request_refused(r: Refused) -> Problem {
    let mut p = Problem::new(
        422,
        "tls-request-refused",
        "The request was refused",
        format!("{}; nothing changed", r.detail),
    );
    p.field = Some(r.field.into());
    p
}

/// The served certificate, if this API may replace it: not while `[tls] certificate` and `key`
/// name the operator's files (in the running or the stored settings).
fn replaceable(ad: &Data, store: &SettingsStore) -> Result<Arc<LiveCertificate>, Problem> {
    let live = live(ad)?;
    if live.from_settings || store.tls_from_files() {
        return Err(from_settings());
    }
    Ok(live)
}

fn from_settings() -> Problem {
    Problem::new(
        409,
        "tls-from-settings",
        "The certificate comes from the settings",
        "[tls] certificate and key name the operator's files, which the next start reads: remove them from the settings (PATCH settings, then a restart) before installing a certificate here",
    )
}

#[derive(Serialize)]
struct Overview {
    #[serde(flatten)]
    current: tc::CertificateView,
    /// The request that waits for its certificate, if any.
    request: Option<tc::RequestView>,
    /// A new certificate is served without a restart.
    reloadable: bool,
}

fn overview(ad: &Data) -> Result<Overview, Problem> {
    let live = live(ad)?;
    let current = tc::view(&live.current().cert, live.from_settings)
        .map_err(|e| Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string()))?;
    let request = match ad.vault.tls_request().map_err(super::refused)? {
        Some(r) => {
            let (subject, names) = tc::request_names(&r.csr_pem).map_err(|e| {
                Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
            })?;
            Some(tc::RequestView {
                subject,
                names: names.iter().map(ToString::to_string).collect(),
                created: sealgate_smime::chain::rfc3339(r.created),
                csr_sha256: crate::identity::hex(&crate::identity::sha256(r.csr_pem.as_bytes())),
            })
        }
        None => None,
    };
    Ok(Overview {
        current,
        request,
        reloadable: true,
    })
}

/// `GET /tls` (any role): the certificate served and the request that waits.
async fn show(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        Ok(ok_json(200, &overview(&ad)?))
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    common_name: String,
    organization: Option<String>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    ip_addresses: Vec<String>,
    key_algorithm: Option<String>,
}

/// `POST /tls/request` (admin): a new key (in the vault) and its CSR (the answer, PEM). An
/// earlier request that waits is replaced.
async fn request(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let b: RequestBody = json_body(payload).await?;
        let subject = b.common_name.clone();
        let input = tc::RequestInput {
            common_name: b.common_name,
            organization: b.organization,
            dns_names: b.dns_names,
            ip_addresses: b.ip_addresses,
            key_algorithm: b.key_algorithm,
        };
        let ad2 = ad.clone();
        let made = web::block(move || -> Result<String, Problem> {
            let (key, csr) = tc::make_request(&input).map_err(request_refused)?;
            ad2.vault
                .store_tls_request(&key, &csr)
                .map_err(super::refused)?;
            Ok(csr)
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
        let status = made.as_ref().map_or_else(|p| p.status, |_| 201);
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "tls-request",
            &subject,
            status,
            started,
        );
        Ok(pem_answer(201, made?))
    }
    .await;
    answer(r)
}

fn pem_answer(status: u16, body: String) -> HttpResponse {
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(code)
        .content_type("application/pkcs10")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"sealgate-tls.csr\"",
        ))
        .body(body)
}

/// `GET /tls/csr` (any role): the waiting request's CSR (PEM); 404 when none waits.
async fn csr(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        match ad.vault.tls_request().map_err(super::refused)? {
            Some(r) => Ok(pem_answer(200, r.csr_pem.clone())),
            None => Err(Problem::new(
                404,
                "not-found",
                "No such resource",
                "no TLS certificate request waits (POST /api/v1/admin/tls/request)",
            )),
        }
    })())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    /// PEM: the certificate, then the chain above it (or base64 of one DER certificate).
    certificate: String,
    /// More of the chain (PEM), when kept apart.
    chain: Option<String>,
}

fn pem_or_base64(field: &'static str, text: &str) -> Result<Vec<u8>, Problem> {
    if text.contains("-----BEGIN") {
        return Ok(text.as_bytes().to_vec());
    }
    use base64::Engine as _;
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|_| {
            refused(Refused {
                field,
                detail: format!("the {field} is neither PEM nor base64 of DER"),
            })
        })
}

fn chain_of(
    field: &'static str,
    text: &str,
    more: Option<&str>,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, Problem> {
    let mut chain = tc::parse_chain(field, &pem_or_base64(field, text)?).map_err(refused)?;
    if let Some(m) = more.filter(|m| !m.trim().is_empty()) {
        chain.extend(tc::parse_chain("chain", m.as_bytes()).map_err(refused)?);
    }
    Ok(chain)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The answer of an install: the new certificate, and that no restart is needed.
#[derive(Serialize)]
struct InstallAnswer {
    #[serde(flatten)]
    current: tc::CertificateView,
    restart_required: bool,
}

fn install_failed(e: anyhow::Error) -> Problem {
    let text = format!("{e:#}");
    if text.contains("not the certificate's key") || text.contains("cannot be used") {
        refused(Refused {
            field: "key",
            detail: text,
        })
    } else {
        Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(text)
    }
}

/// `PUT /tls/certificate` (admin): installs the certificate signed for the waiting request.
async fn install(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
    store: web::Data<SettingsStore>,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let mut actor = None;
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        actor = Some(c.username.clone());
        let live = replaceable(&ad, &store)?;
        let b: CertificateBody = json_body_max(payload, MAX_UPLOAD).await?;
        let chain = chain_of("certificate", &b.certificate, b.chain.as_deref())?;
        let ad2 = ad.clone();
        let data_dir = ad.data_dir.clone();
        web::block(move || -> Result<InstallAnswer, Problem> {
            let r = ad2.vault.tls_request().map_err(super::refused)?.ok_or_else(|| {
                Problem::new(
                    409,
                    "no-tls-request",
                    "No TLS certificate request waits",
                    "make the key and CSR first (POST /api/v1/admin/tls/request), or upload a key with its certificate (POST /api/v1/admin/tls/import)",
                )
            })?;
            let (_, wanted) = tc::request_names(&r.csr_pem).map_err(|e| {
                Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
            })?;
            // The key first: a certificate of another key says so before any other fault.
            crate::identity::certified_key(chain.clone(), &r.key_pem).map_err(|_| {
                refused(Refused {
                    field: "certificate",
                    detail: "the certificate is not for the key of the box's request (was it signed from this box's latest CSR?)".into(),
                })
            })?;
            tc::check_chain(&chain, &wanted, now()).map_err(refused)?;
            let fp = crate::identity::hex(&crate::identity::sha256(chain[0].as_ref()));
            let csr = r.csr_pem.clone();
            let vault = ad2.vault.clone();
            let done = tc::install(&data_dir, &live, chain, &r.key_pem, move || {
                vault
                    .install_tls_request(&csr, &format!("signed certificate sha256={fp}"))
                    .map_err(anyhow::Error::from)
            })
            .map_err(install_failed)?;
            Ok(InstallAnswer {
                current: done.view,
                restart_required: !done.live,
            })
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
    }
    .await;
    finish(&app, &ad, actor, &src, "tls-install", r, started)
}

fn finish(
    app: &App,
    ad: &Data,
    actor: Option<String>,
    src: &str,
    action: &str,
    r: Result<InstallAnswer, Problem>,
    started: Instant,
) -> HttpResponse {
    if let Some(actor) = actor {
        let (status, subject) = match &r {
            Ok(a) => (
                200,
                format!("sha256={} {}", a.current.sha256, a.current.subject),
            ),
            Err(p) => (p.status, p.detail.clone()),
        };
        audit(app, ad, &actor, src, action, &subject, status, started);
    }
    answer(r.map(|a| ok_json(200, &a)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    /// A PKCS#12 file, base64.
    pkcs12: Option<String>,
    /// Its password.
    password: Option<String>,
    /// Or: the certificate (PEM, the chain after it).
    certificate: Option<String>,
    /// With its private key (PEM).
    key: Option<String>,
}

/// `POST /tls/import` (admin): a key and certificate made elsewhere (PKCS#12, or PEM).
async fn import(
    req: HttpRequest,
    payload: web::Payload,
    app: App,
    ad: Data,
    store: web::Data<SettingsStore>,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let mut actor = None;
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        actor = Some(c.username.clone());
        let live = replaceable(&ad, &store)?;
        let b: ImportBody = json_body_max(payload, MAX_UPLOAD).await?;
        let (key_pem, chain) = match (&b.pkcs12, &b.certificate, &b.key) {
            (Some(p12), None, None) => {
                use base64::Engine as _;
                let clean: String = p12.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let der = base64::engine::general_purpose::STANDARD
                    .decode(clean)
                    .map_err(|_| {
                        refused(Refused {
                            field: "pkcs12",
                            detail: "the PKCS#12 file is not base64".into(),
                        })
                    })?;
                let password = b.password.clone().unwrap_or_default();
                web::block(move || tc::from_pkcs12(&der, &password))
                    .await
                    .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
                    .map_err(refused)?
            }
            (None, Some(cert), Some(key)) => {
                if !key.contains("PRIVATE KEY-----") {
                    return Err(refused(Refused {
                        field: "key",
                        detail: "the key is not a PEM private key".into(),
                    }));
                }
                (
                    zeroize::Zeroizing::new(key.as_bytes().to_vec()),
                    chain_of("certificate", cert, None)?,
                )
            }
            _ => {
                return Err(Problem::bad_request(
                    "give either pkcs12 (base64) with its password, or certificate and key (PEM)",
                ));
            }
        };
        crate::identity::certified_key(chain.clone(), &key_pem).map_err(|e| {
            refused(Refused {
                field: "key",
                detail: e.to_string(),
            })
        })?;
        tc::check_chain(&chain, &[], now()).map_err(refused)?;
        let ad2 = ad.clone();
        let data_dir = ad.data_dir.clone();
        web::block(move || -> Result<InstallAnswer, Problem> {
            let fp = crate::identity::hex(&crate::identity::sha256(chain[0].as_ref()));
            let vault = ad2.vault.clone();
            let key2 = key_pem.clone();
            let done = tc::install(&data_dir, &live, chain, &key_pem, move || {
                vault
                    .store_tls_key(&key2, &format!("imported with certificate sha256={fp}"))
                    .map_err(anyhow::Error::from)
            })
            .map_err(install_failed)?;
            Ok(InstallAnswer {
                current: done.view,
                restart_required: !done.live,
            })
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
    }
    .await;
    finish(&app, &ad, actor, &src, "tls-import", r, started)
}

/// The routes of this file.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let res = super::resource;
    cfg.service(res("/tls").route(web::get().to(show)))
        .service(res("/tls/request").route(web::post().to(request)))
        .service(res("/tls/csr").route(web::get().to(csr)))
        .service(res("/tls/certificate").route(web::put().to(install)))
        .service(res("/tls/import").route(web::post().to(import)));
}
