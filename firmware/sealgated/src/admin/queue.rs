//! `/api/v1/admin/queue`: the SMTP queue. Any role reads (envelope, state, attempts, last
//! error; never the body); `admin` retries, holds, releases and deletes, each audited.
//!
//! Attackers: a logged-in reader trying to change the queue (403), anyone sending ids that
//! are paths (`../`): an id is checked to be a queue id before it names a file (404).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::{App, Data, Need, answer, audit, authorize, ok_json, source};
use crate::problem::Problem;
use crate::smtp::Spool;
use crate::smtp::queue::{Entry, QueueError, State};

fn queue(ad: &super::AdminState) -> Result<&Spool, Problem> {
    ad.queue.get().map(|q| q.as_ref()).ok_or_else(|| {
        Problem::new(
            503,
            "no-queue",
            "The SMTP queue is not available",
            "the daemon runs without its spool directory",
        )
    })
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        404,
        "not-found",
        "No such message",
        format!(
            "no message {:?} in the queue",
            id.chars().take(80).collect::<String>()
        ),
    )
}

fn failed(id: &str, e: QueueError) -> Problem {
    match e {
        QueueError::NotFound => not_found(id),
        QueueError::Conflict(why) => Problem::new(
            409,
            "queue-state",
            "The message is not in a state for this",
            why,
        ),
        QueueError::Busy => Problem::new(
            409,
            "queue-busy",
            "The message is being delivered right now",
            "try again in a moment",
        ),
        QueueError::Io(e) => {
            tracing::error!(error = %e, "queue operation failed");
            Problem::internal(crate::problem::INTERNAL_DETAIL)
        }
    }
}

#[derive(Serialize)]
struct List {
    messages: Vec<Entry>,
}

/// `GET /queue?state=queued|deferred|held|bounced` (any role).
async fn list(req: HttpRequest, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let mut state = None;
        for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "state" {
                state = Some(State::parse(v).ok_or_else(|| {
                    Problem::bad_request(
                        "state must be one of queued, deferred, held, bounced".to_string(),
                    )
                })?);
            }
        }
        Ok(ok_json(
            200,
            &List {
                messages: queue(&ad)?.list(state),
            },
        ))
    })())
}

/// `GET /queue/{id}` (any role).
async fn show(req: HttpRequest, path: web::Path<String>, ad: Data) -> HttpResponse {
    answer((|| {
        authorize(&req, &ad, Need::Read)?;
        let id = path.into_inner();
        let e = queue(&ad)?.show(&id).ok_or_else(|| not_found(&id))?;
        Ok(ok_json(200, &e))
    })())
}

/// `POST /queue/{id}/{action}` (admin): `retry`, `hold`, `release`.
async fn act(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    app: App,
    ad: Data,
) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let (id, action) = path.into_inner();
        let q = queue(&ad)?;
        let r = match action.as_str() {
            "retry" => q.retry_now(&id),
            "hold" => q.hold_by_admin(&id, &format!("held by {}", c.username)),
            "release" => q.release(&id),
            _ => {
                return Err(Problem::new(
                    404,
                    "not-found",
                    "No such endpoint",
                    "see /api/v1/admin/openapi.json",
                ));
            }
        };
        let status = match &r {
            Ok(_) => 200,
            Err(QueueError::NotFound) => 404,
            Err(QueueError::Io(_)) => 500,
            Err(_) => 409,
        };
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            &format!("queue-{action}"),
            &id,
            status,
            started,
        );
        Ok(ok_json(200, &r.map_err(|e| failed(&id, e))?))
    })())
}

/// `DELETE /queue/{id}` (admin): removed without a DSN.
async fn delete(req: HttpRequest, path: web::Path<String>, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    answer((|| {
        let c = authorize(&req, &ad, Need::Admin)?;
        let id = path.into_inner();
        let r = queue(&ad)?.delete(&id);
        let status = match &r {
            Ok(_) => 204,
            Err(QueueError::NotFound) => 404,
            Err(QueueError::Io(_)) => 500,
            Err(_) => 409,
        };
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "queue-delete",
            &id,
            status,
            started,
        );
        r.map_err(|e| failed(&id, e))?;
        Ok(HttpResponse::NoContent().finish())
    })())
}

/// The queue's routes, inside the admin scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let res = |path: &str| {
        web::resource(path.to_string()).default_service(web::to(super::method_not_allowed))
    };
    cfg.service(res("/queue").route(web::get().to(list)))
        .service(
            res("/queue/{id}")
                .route(web::get().to(show))
                .route(web::delete().to(delete)),
        )
        .service(res("/queue/{id}/{action}").route(web::post().to(act)));
}
