//! Errors on the wire: RFC 9457 `application/problem+json` with stable type URIs.
//!
//! The mapping from engine and vault errors to HTTP status is written here, once; the SMTP
//! hand-off uses the same [`Problem`] to write its result header.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use sealgate_smime::Error as EngineError;
use sealgate_vault::VaultError;
use serde::Serialize;

/// Base of every problem type URI. The URIs are identifiers; they are documented in the
/// OpenAPI document and never change meaning.
pub const TYPE_BASE: &str = "https://sealgate.example/problems/";

/// One problem: the RFC 9457 members plus our extensions.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The problem type's last path segment; on the wire `type` is [`TYPE_BASE`] + this.
    #[serde(rename = "type", serialize_with = "type_uri")]
    pub kind: &'static str,
    /// Short summary of the type.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What exactly went wrong (no message content, no key material).
    pub detail: String,
    /// Recipients without a certificate (`missing-certificates` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip, default)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with `status` and `detail`.
    pub fn new(
        status: u16,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind,
            title,
            status,
            detail: detail.into(),
            missing: None,
            retry_after: None,
        }
    }

    /// 400: the request itself is wrong (query parameters).
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(400, "bad-request", "The request is not valid", detail)
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            401,
            "unauthorized",
            "Missing or invalid credentials",
            detail,
        )
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(
            403,
            "forbidden",
            "The credentials do not allow this operation",
            detail,
        )
    }

    /// 413.
    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            413,
            "message-too-large",
            "The message is larger than the limit",
            format!("the limit is {limit} bytes"),
        )
    }

    /// 429 for a source address with too many failed authentications.
    pub fn rate_limited(retry_after: u64) -> Problem {
        let mut p = Problem::new(
            429,
            "too-many-failed-attempts",
            "Too many failed authentication attempts from this address",
            format!("try again in {retry_after} s"),
        );
        p.retry_after = Some(retry_after);
        p
    }

    /// 503 + `Retry-After`: the crypto workers and their queue are full.
    pub fn busy() -> Problem {
        let mut p = Problem::new(
            503,
            "busy",
            "Too many requests in progress",
            "all crypto workers are busy and the queue is full",
        );
        p.retry_after = Some(1);
        p
    }

    /// 408: the request body did not arrive in time.
    pub fn timeout(detail: impl Into<String>) -> Problem {
        Problem::new(408, "request-timeout", "The request took too long", detail)
    }

    /// 500: our own fault (logged; the detail says no more than needed).
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(500, "internal", "Internal error", detail)
    }

    /// The full type URI.
    pub fn uri(&self) -> String {
        format!("{TYPE_BASE}{}", self.kind)
    }
}

fn type_uri<S: serde::Serializer>(kind: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{TYPE_BASE}{kind}"))
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.content_type("application/problem+json");
        if let Some(s) = self.retry_after {
            r.insert_header(("Retry-After", s.to_string()));
        }
        if self.status == 401 {
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"sealgate\""));
        }
        r.body(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The engine's errors: peer faults are 400/422, our keys' faults 500.
impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Problem {
        let detail = e.to_string();
        match e {
            EngineError::Malformed(_) => Problem::new(
                400,
                "malformed-message",
                "The message or its CMS is malformed",
                detail,
            ),
            EngineError::Unsupported(_) => Problem::new(
                422,
                "unsupported",
                "The message uses something not supported",
                detail,
            ),
            EngineError::NoMatchingRecipient => Problem::new(
                422,
                "no-matching-key",
                "The box holds no key the message is encrypted to",
                detail,
            ),
            EngineError::Decrypt => Problem::new(
                422,
                "decryption-failed",
                "The message cannot be decrypted",
                detail,
            ),
            EngineError::Usage(_) => Problem::new(
                422,
                "not-applicable",
                "The operation does not apply to this message",
                detail,
            ),
            EngineError::TooLarge(_) => Problem::new(
                413,
                "message-too-large",
                "The message is larger than the limit",
                detail,
            ),
            EngineError::Key(_) => Problem::new(
                500,
                "key-unusable",
                "A key in the vault cannot be used",
                detail,
            ),
            _ => Problem::internal(detail),
        }
    }
}

/// The vault's errors: a missing key is the caller's problem (422), the rest ours (500/503).
impl From<VaultError> for Problem {
    fn from(e: VaultError) -> Problem {
        let detail = e.to_string();
        match e {
            VaultError::NoKey(_) => Problem::new(
                422,
                "no-key",
                "The box holds no key for this address",
                detail,
            ),
            VaultError::Usage(_) => Problem::bad_request(detail),
            VaultError::Unseal(_) | VaultError::Busy(_) => {
                let mut p = Problem::new(
                    503,
                    "vault-unavailable",
                    "The key vault is not available",
                    detail,
                );
                p.retry_after = Some(30);
                p
            }
            _ => Problem::internal(detail),
        }
    }
}
