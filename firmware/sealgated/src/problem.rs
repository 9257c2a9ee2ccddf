//! Errors on the wire: RFC 9457 `application/problem+json` with stable type URIs.
//!
//! The mapping from engine and vault errors to HTTP status is written here, once; the SMTP
//! hand-off uses the same [`Problem`] to write its result header.
//!
//! What a caller sees is the stable `type` and `title` and a `detail` that says nothing of the
//! box's state: vault, TPM and key error text, and which addresses the box holds keys for, go
//! only to the daemon's log ([`Problem::internal_detail`], logged by
//! [`Problem::error_response_logged`]). The engine's description of a malformed or
//! unsupported message is passed on: it describes the caller's own input.

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
    /// Recipients without a certificate (`missing-certificates` only; boxed, like the
    /// members below, to keep `Problem` small: it travels in every `Result`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Box<[String]>>,
    /// The setting a refused settings change is about (dotted path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Box<str>>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip, default)]
    pub retry_after: Option<u32>,
    /// What exactly went wrong inside the box: logged, never sent. (A boxed `str` keeps
    /// `Problem` small: it travels in every `Result`.)
    #[serde(skip, default)]
    pub internal_detail: Option<Box<str>>,
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
            field: None,
            retry_after: None,
            internal_detail: None,
        }
    }

    /// The same problem with `text` for the daemon's log only.
    pub fn with_log(mut self, text: impl Into<String>) -> Problem {
        self.internal_detail = Some(text.into().into_boxed_str());
        self
    }

    /// The answer, after logging what the caller is not told (with the operation and the
    /// authenticated client, so an administrator can find it).
    pub fn error_response_logged(&self, operation: &str, client: &str) -> HttpResponse {
        if let Some(text) = &self.internal_detail {
            if self.status >= 500 {
                tracing::error!(operation, client, problem = self.kind, detail = %text, "call failed");
            } else {
                tracing::info!(operation, client, problem = self.kind, detail = %text, "call refused");
            }
        }
        self.error_response()
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
        p.retry_after = Some(u32::try_from(retry_after).unwrap_or(u32::MAX));
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
        let text = e.to_string();
        let p = match e {
            // These describe the caller's own message: told as they are.
            EngineError::Malformed(_) => {
                return Problem::new(
                    400,
                    "malformed-message",
                    "The message or its CMS is malformed",
                    text,
                );
            }
            EngineError::Unsupported(_) => {
                return Problem::new(
                    422,
                    "unsupported",
                    "The message uses something not supported",
                    text,
                );
            }
            EngineError::NoMatchingRecipient => Problem::new(
                422,
                "no-matching-key",
                "The box holds no key the message is encrypted to",
                "the message cannot be decrypted with the keys of the given recipients",
            ),
            EngineError::Decrypt => Problem::new(
                422,
                "decryption-failed",
                "The message cannot be decrypted",
                "the message cannot be decrypted",
            ),
            EngineError::Usage(_) => Problem::new(
                422,
                "not-applicable",
                "The operation does not apply to this message",
                "the operation does not apply to this message",
            ),
            EngineError::TooLarge(_) => Problem::new(
                413,
                "message-too-large",
                "The message is larger than the limit",
                "the message exceeds a limit of the box",
            ),
            EngineError::Key(_) => Problem::new(
                500,
                "key-unusable",
                "A key in the vault cannot be used",
                "a key in the box cannot be used; the administrator finds the reason in the log",
            ),
            _ => Problem::internal(INTERNAL_DETAIL),
        };
        p.with_log(text)
    }
}

/// The detail of every 500 the box causes itself.
pub const INTERNAL_DETAIL: &str = "the box failed; the administrator finds the reason in the log";

/// The vault's errors: a missing key is the caller's problem (422), the rest ours (500/503).
/// No vault text reaches the caller.
impl From<VaultError> for Problem {
    fn from(e: VaultError) -> Problem {
        let text = e.to_string();
        let p = match e {
            VaultError::NoKey(_) => Problem::new(
                422,
                "no-key",
                "The box holds no key for this address",
                "the box cannot do this for the given address",
            ),
            VaultError::Usage(_) => Problem::bad_request("the request cannot be done"),
            VaultError::Unseal(_) | VaultError::Busy(_) => {
                let mut p = Problem::new(
                    503,
                    "vault-unavailable",
                    "The key vault is not available",
                    "the key vault is not available; retry later",
                );
                p.retry_after = Some(30);
                p
            }
            _ => Problem::internal(INTERNAL_DETAIL),
        };
        p.with_log(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_and_key_text_is_logged_not_sent() {
        let secret_text = "PCR 7 mismatch on /dev/tpmrm0 for alice@example.org";
        for p in [
            Problem::from(VaultError::Unseal(secret_text.into())),
            Problem::from(VaultError::Corrupt(secret_text.into())),
            Problem::from(VaultError::NoKey(secret_text.into())),
            Problem::from(VaultError::Usage(secret_text.into())),
            Problem::from(VaultError::Storage(secret_text.into())),
            Problem::from(EngineError::Key(secret_text.into())),
            Problem::from(EngineError::Usage(secret_text.into())),
            Problem::from(EngineError::TooLarge(secret_text.into())),
            Problem::from(EngineError::NoMatchingRecipient),
        ] {
            let wire = serde_json::to_string(&p).expect("json");
            assert!(!wire.contains("PCR") && !wire.contains("alice"), "{wire}");
            assert!(!wire.contains("internal_detail"), "{wire}");
            assert!(!p.detail.is_empty());
            assert!(
                p.internal_detail.is_some(),
                "the text is kept for the log: {}",
                p.kind
            );
        }
        // The same problem type has the same wording whatever the cause.
        let a = Problem::from(VaultError::Unseal("one".into()));
        let b = Problem::from(VaultError::Busy("/data/vault.redb".into()));
        assert_eq!((a.kind, a.title, &a.detail), (b.kind, b.title, &b.detail));
        // The caller's own malformed input is described to the caller.
        let m = Problem::from(EngineError::Malformed("base64 at line 3".into()));
        assert!(m.detail.contains("line 3"));
    }
}
