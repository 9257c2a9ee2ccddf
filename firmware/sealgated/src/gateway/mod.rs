//! The all-in-one gateway's SMTP roles (issue 10): submission by employees' mail clients
//! (`submission.rs`), logins verified against the organisation's server (`auth.rs`), and the
//! policy that decides what each submitted message gets (`policy.rs`). Accepted mail
//! goes into the queue every SMTP role shares (`smtp::Spool`), which relays it to the
//! organisation's server.

pub mod address;
pub mod auth;
pub mod policy;
pub mod submission;

use crate::settings::{AuthScheme, Submission};

/// The login verifier `[submission]` describes, or `None` when no `auth` is set.
pub fn verifier(s: &Submission, hostname: &str) -> anyhow::Result<Option<auth::Verifier>> {
    let Some(server) = &s.auth else {
        return Ok(None);
    };
    let ca = match &s.auth_ca {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| anyhow::anyhow!("[submission] auth_ca {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let tls = auth::client_config(ca.as_deref())?;
    let server = auth::Server {
        scheme: match server.scheme {
            AuthScheme::Smtp => auth::Scheme::Smtp,
            AuthScheme::Smtps => auth::Scheme::Smtps,
            AuthScheme::Imaps => auth::Scheme::Imaps,
        },
        host: server.host.clone(),
        port: server.port,
    };
    let limits = auth::Limits {
        cache_ttl: s.auth_cache_secs.duration(),
        max_failures: s.max_auth_failures,
        window: s.auth_failure_window_secs.duration(),
        timeout: std::time::Duration::from_secs(20),
    };
    Ok(Some(auth::Verifier::new(server, tls, limits, hostname)?))
}
