//! The local web UI: static files from `webui/` embedded at build time (`build.rs`), served
//! on the admin listener at `/` (the page) and `/ui/PATH` (its modules and style sheet).
//!
//! The UI is only a client of the admin API (`admin/`): it can do nothing the API does not
//! let the logged-in account do. Who reaches these routes: anyone on the LAN (no credentials
//! are needed for static files, which hold no secret) and any page the administrator's
//! browser visits. What they must not get: the UI framed (clickjacking: `X-Frame-Options:
//! DENY`, `frame-ancestors 'none'`), script of theirs run in its origin (a strict
//! Content-Security-Policy: scripts and styles only from the box itself, no inline ones, no
//! `eval`, Trusted Types required so that no string reaches an HTML sink), a file served
//! from outside the table (paths are looked up in the table, never joined to a directory),
//! or a downgrade to plain HTTP (HSTS).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::problem::Problem;

include!(concat!(env!("OUT_DIR"), "/webui_assets.rs"));

/// The policy every UI response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
require-trusted-types-for 'script'; trusted-types 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The embedded file at `path` (relative to `webui/`).
pub fn asset(path: &str) -> Option<&'static [u8]> {
    ASSETS
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
        .map(|(_, b)| *b)
}

fn serve(req: &HttpRequest, path: &str) -> Result<HttpResponse, Problem> {
    let Some(body) = asset(path) else {
        return Err(Problem::new(
            404,
            "not-found",
            "Not found",
            "no such file in the web UI",
        ));
    };
    let etag = format!(
        "\"{}\"",
        crate::identity::hex(&crate::identity::sha256(body)[..12])
    );
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    resp.insert_header((header::CONTENT_TYPE, content_type(path)))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"));
    if fresh {
        return Ok(resp.finish());
    }
    Ok(resp.body(body))
}

async fn index(req: HttpRequest) -> Result<HttpResponse, Problem> {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, Problem> {
    serve(&req, &path)
}

async fn method_not_allowed() -> HttpResponse {
    Problem::new(
        405,
        "method-not-allowed",
        "The method is not allowed here",
        "the web UI's files are read with GET",
    )
    .error_response()
}

/// The UI's routes on the admin listener; configure them before
/// [`crate::http::admin_routes`] (whose default service answers every other path).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .route(web::head().to(index))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/ui/{path:.*}")
            .route(web::get().to(file))
            .route(web::head().to(file))
            .default_service(web::to(method_not_allowed)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_has_the_page() {
        assert!(ASSETS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(asset("index.html").is_some());
        assert!(asset("app.js").is_some());
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        for (path, body) in ASSETS {
            if path.ends_with(".html") {
                let text = String::from_utf8_lossy(body);
                assert!(!text.contains("<script>"), "{path}: inline script");
                assert!(!text.contains("<style"), "{path}: inline style");
                assert!(!text.contains("style="), "{path}: style attribute");
                assert!(
                    !text.contains("http://") && !text.contains("https://"),
                    "{path}: outside URL"
                );
            }
        }
    }
}
