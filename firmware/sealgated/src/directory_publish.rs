//! The box's own certificate directory for partners (`[directory] publish_listen`): HTTPS
//! with the box's certificate, `GET /lookup?address=ADDRESS` answers the local user's current
//! encryption certificate as PEM (200) or nothing (404), the protocol `[[directory.http]]`
//! asks, so one Sealgate finds another's users. Off unless configured.
//!
//! **The attacker** is anyone who reaches the port (partners, and the Internet when it is
//! exposed): they may harvest addresses (enumeration), flood it, or try to read more than
//! public certificates. So: only the vault's own users' certificates usable for encryption
//! now (never an external, pinned or harvested one: the box does not republish others'
//! keys), one exact address per request (no wildcards, no listing; an unknown address, a
//! user without a usable certificate and an external address answer the same 404), requests
//! per client address per minute bounded (`publish_per_minute`, then 429) in bounded memory,
//! small requests only, no request body, every answer `no-store`. Every request is logged
//! (address, client, result; never more).

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use sealgate_directory::Local;
use sealgate_vault::Vault;

/// Client addresses tracked at most (beyond that the window starts over for all).
const MAX_TRACKED: usize = 16_384;

struct Publish {
    vault: Arc<Vault>,
    limiter: Limiter,
}

/// Requests per client address per minute, in bounded memory.
struct Limiter {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// Whether `ip` may ask once more in its current minute.
    fn admit(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            seen.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
            if seen.len() >= MAX_TRACKED {
                seen.clear();
            }
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

fn plain(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(text.to_string())
}

async fn lookup(req: HttpRequest, p: web::Data<Publish>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let client = req.peer_addr().map(|a| a.ip());
    let who = client.map_or("-".to_string(), |c| c.to_string());
    if !p.limiter.admit(client) {
        tracing::info!(target: "directory", client = %who, result = "rate-limited", "published certificate lookup");
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many lookups; try again in a minute\n",
        );
    }
    let Some(address) = sealgate_directory::publish::query_address(req.query_string()) else {
        tracing::info!(target: "directory", client = %who, result = "bad-request", "published certificate lookup");
        return plain(
            StatusCode::BAD_REQUEST,
            "ask GET /lookup?address=ONE-ADDRESS\n",
        );
    };
    let vault = p.vault.clone();
    let a = address.clone();
    let found = web::block(move || {
        let now = sealgate_directory::unix_now();
        vault
            .own(&a)
            .ok()
            .flatten()
            .filter(|c| sealgate_directory::validate::unusable_reason(c, now).is_none())
    })
    .await
    .ok()
    .flatten();
    let result = if found.is_some() { "found" } else { "none" };
    tracing::info!(target: "directory", address = %address, client = %who, result, "published certificate lookup");
    match found {
        Some(c) => HttpResponse::Ok()
            .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
            .content_type("application/pem-certificate-chain")
            .body(c.to_pem()),
        None => plain(StatusCode::NOT_FOUND, "no certificate\n"),
    }
}

async fn not_found() -> HttpResponse {
    plain(actix_web::http::StatusCode::NOT_FOUND, "not found\n")
}

/// The publishing server on `listener` (TLS `tls`), answering from `vault`.
pub fn server(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    vault: Arc<Vault>,
    per_minute: u32,
) -> std::io::Result<actix_web::dev::Server> {
    let p = web::Data::new(Publish {
        vault,
        limiter: Limiter {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        },
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(p.clone())
            .app_data(web::PayloadConfig::new(0))
            .route("/lookup", web::get().to(lookup))
            .default_service(web::to(not_found))
    })
    .client_request_timeout(Duration::from_secs(10))
    .client_disconnect_timeout(Duration::from_secs(2))
    .keep_alive(Duration::from_secs(15))
    .max_connections(256)
    .workers(1)
    .shutdown_timeout(5)
    .disable_signals()
    .listen_rustls_0_23(listener, tls)?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_lookups_per_minute() {
        let l = Limiter {
            per_minute: 3,
            seen: Mutex::new(HashMap::new()),
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!((0..3).all(|_| l.admit(Some(a))));
        assert!(!l.admit(Some(a)));
        assert!(l.admit(Some(b)));
        assert!(!l.admit(None));
    }
}
