//! `POST /api/v1/admin/scan/train` (admin): one message counted as spam or ham in the spam
//! classifier's local layer (`DATA/scan/spam-local.bin`, `sealgate_scan::classifier`), which
//! the pipeline adds to the shipped model from the next message on. Audited
//! (`admin.scan-train`, the class and the message's SHA-256, never its content).
//!
//! Attackers: a `read-only` or `auditor` account poisoning the model (403); a body that is
//! not a message, or huge (400, 413: nothing changed); a damaged local layer (409: refused
//! rather than silently restarted from nothing); two trainings at once (one at a time, each
//! counted: `crate::spam_training`).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{App, Data, Need, audit, authorize, json_body_max, ok_json, source};
use crate::problem::Problem;
use sealgate_scan::classifier::LOCAL_LAYER;

/// The largest body (a message as JSON text or base64).
const MAX_TRAIN_BODY: usize = 4 << 20;

/// The routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/scan/train")
            .route(web::post().to(train))
            .default_service(web::to(super::method_not_allowed)),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// `spam` or `ham`.
    class: String,
    /// The message (RFC 5322) as text...
    #[serde(default)]
    message: Option<String>,
    /// ... or as base64.
    #[serde(default)]
    message_base64: Option<String>,
}

#[derive(Serialize)]
struct Trained {
    class: String,
    /// The message's SHA-256 (hex), as audited.
    sha256: String,
    /// Messages in the local layer now.
    local_spam: u32,
    local_ham: u32,
}

/// `POST /scan/train`: see the module documentation.
async fn train(req: HttpRequest, payload: web::Payload, app: App, ad: Data) -> HttpResponse {
    let started = Instant::now();
    let (_, src) = source(&req);
    let r = async {
        let c = authorize(&req, &ad, Need::Admin)?;
        let body: Body = json_body_max(payload, MAX_TRAIN_BODY).await?;
        let spam = match body.class.as_str() {
            "spam" => true,
            "ham" => false,
            _ => return Err(Problem::bad_request("class: spam or ham")),
        };
        let message = match (body.message, body.message_base64) {
            (Some(m), None) => m.into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| Problem::bad_request("message_base64 is not base64"))?,
            _ => {
                return Err(Problem::bad_request(
                    "give the message as message (text) or message_base64, one of them",
                ));
            }
        };
        if message.is_empty() || !message.windows(2).any(|w| w == b"\n\n" || w == b"\r\n") {
            return Err(Problem::bad_request(
                "message: an RFC 5322 message (header fields, an empty line, the body)",
            ));
        }
        let sha256 = crate::spam_training::sha256_hex(&message);
        let data_dir = ad.data_dir.clone();
        let model = app.settings.scan.model.clone();
        let trained = web::block(move || {
            crate::spam_training::train(&data_dir, &model, &[(&message, spam)], false)
        })
        .await
        .map_err(|_| Problem::internal(crate::problem::INTERNAL_DETAIL))?
        .map_err(|e| match e {
            crate::spam_training::TrainError::Damaged(_)
            | crate::spam_training::TrainError::Mismatch { .. } => Problem::new(
                409,
                if matches!(e, crate::spam_training::TrainError::Damaged(_)) {
                    "local-model-damaged"
                } else {
                    "local-model-mismatch"
                },
                "The local spam model cannot be trained",
                format!(
                    "{e}; remove {} to start it again",
                    ad.data_dir.join(LOCAL_LAYER).display()
                ),
            ),
            crate::spam_training::TrainError::Io(e) => {
                Problem::internal(crate::problem::INTERNAL_DETAIL).with_log(e.to_string())
            }
        })?;
        let (local_spam, local_ham) = (trained.spam, trained.ham);
        audit(
            &app,
            &ad,
            &c.username,
            &src,
            "scan-train",
            &format!("{} sha256:{sha256}", body.class),
            200,
            started,
        );
        Ok(ok_json(
            200,
            &Trained {
                class: body.class,
                sha256,
                local_spam,
                local_ham,
            },
        ))
    }
    .await;
    super::answer(r)
}
