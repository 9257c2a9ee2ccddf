//! `/api/v1/admin/network`: the kernel's network as the daemon sees it (any role), and the
//! confirmation of a network change that could have cut the admin off (admin, audited).
//! Network settings themselves change through `PATCH /settings` (`network.*` are live).
//!
//! Attackers: a reader trying to confirm (403); someone who cut themselves off cannot
//! confirm, which is the point: the timer puts the previous settings back.

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};

use super::settings_change::{Outcome, SettingsStore};
use super::{App, Data, Need, answer, audit, authorize, ok_json, source};
use crate::problem::Problem;

/// `GET /network`: links, their addresses, which are managed, a change waiting.
async fn show(req: HttpRequest, store: web::Data<SettingsStore>, ad: Data) -> HttpResponse {
    let r = async {
        authorize(&req, &ad, Need::Read)?;
        let s = store.network();
        let body = web::block(move || with_routes(crate::network::status(&s), &s))
            .await
            .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?;
        Ok(ok_json(200, &body))
    }
    .await;
    answer(r)
}

/// Adds the kernel's main-table routes (for the web UI's network page) and whether the
/// daemon manages the network at all (with no interface and no route in the settings it
/// changes nothing).
fn with_routes(mut status: serde_json::Value, s: &crate::network::Settings) -> serde_json::Value {
    if let Some(o) = status.as_object_mut() {
        o.insert(
            "managing".into(),
            serde_json::json!(!s.interfaces.is_empty() || !s.routes.is_empty()),
        );
        if let Ok(state) = crate::network::netlink::read() {
            let routes: Vec<serde_json::Value> = state
                .routes
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "to": r.to.to_string(),
                        "via": r.via.map(|v| v.to_string()),
                        "ours": r.ours,
                    })
                })
                .collect();
            o.insert("routes".into(), serde_json::json!(routes));
        }
    }
    status
}

/// `POST /network/confirm` (admin): keeps the waiting network change.
async fn confirm(req: HttpRequest, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let ok = crate::network::revert::confirm();
        let status = if ok { 200 } else { 409 };
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "network-confirm",
            if ok { "confirmed" } else { "nothing waiting" },
            status,
            started,
        );
        if !ok {
            return Err(Problem::new(
                409,
                "nothing-to-confirm",
                "No network change waits for confirmation",
                "either none was made, or its time ran out and the previous settings are back",
            ));
        }
        Ok(ok_json(200, &serde_json::json!({ "confirmed": true })))
    })())
}

/// After a `PATCH /settings` whose network change removed an address or route: arms the
/// timer that patches the previous `network` section back unless confirmed (audited as
/// `network-revert` by `system`).
pub fn arm_revert(store: &web::Data<SettingsStore>, outcome: &Outcome, app: &App, ad: &Data) {
    let (Some(secs), Some(before)) = (outcome.confirm_within_secs, outcome.network_before.clone())
    else {
        return;
    };
    let (store, app, ad) = (store.clone(), app.clone(), ad.clone());
    crate::network::revert::arm(Duration::from_secs(secs), move || {
        let started = Instant::now();
        let patch = serde_json::json!({ "network": before });
        let status = match store.patch(&patch) {
            Ok(_) => {
                tracing::warn!("network: the previous settings are back (not confirmed)");
                200
            }
            Err(p) => {
                tracing::error!(detail = %p.detail, "network: putting the previous settings back failed");
                p.status
            }
        };
        audit(
            &app,
            &ad,
            "system",
            "confirm timer",
            "network-revert",
            "not confirmed in time: previous network settings",
            status,
            started,
        );
    });
}

/// The routes of this file.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let res = |path: &str| {
        web::resource(path.to_string()).default_service(web::to(super::method_not_allowed))
    };
    cfg.service(res("/network").route(web::get().to(show)))
        .service(res("/network/confirm").route(web::post().to(confirm)));
}
