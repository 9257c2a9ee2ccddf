//! The running daemon, asked through its admin socket (`/run/sealgate/admin.sock`, root
//! only): the console never edits the daemon's files or restarts it to change something the
//! daemon owns. When the daemon does not answer, the menu says so and offers what works
//! without it (status, network, ping, reboot, factory reset).

use std::path::Path;

use anyhow::{Result, bail};
use sealgate_local::admin_socket::{AdminSocket, BOX_SOCKET};

/// The admin API resource that revokes every admin credential (accounts, sessions,
/// admin-scoped tokens) and opens setup with a new one-time token.
pub const SETUP_TOKEN_RESET: &str = "/setup-token/reset";
/// Its typed confirmation.
pub const SETUP_TOKEN_RESET_CONFIRM: &str = "reset admin access";

/// The daemon's admin socket, if it answers.
pub fn answering() -> Option<AdminSocket> {
    AdminSocket::answering(Path::new(BOX_SOCKET))
}

/// What the daemon did on a setup-token reset.
#[derive(Debug, PartialEq, Eq)]
pub enum Reset {
    /// Done; the new setup token, if the answer carried it (the daemon also prints it on
    /// the console).
    Done(Option<String>),
    /// This daemon has no such resource (an older one).
    NotOffered,
}

/// `POST /api/v1/admin/setup-token/reset` with its confirmation (over the socket the answer
/// carries the new token).
pub fn reset_setup_token(s: &AdminSocket) -> Result<Reset> {
    let body = serde_json::json!({ "confirm": SETUP_TOKEN_RESET_CONFIRM });
    let (status, answer) = s.call("POST", SETUP_TOKEN_RESET, Some(&body))?;
    match status {
        200..=299 => Ok(Reset::Done(token_of(&answer))),
        404 | 405 => Ok(Reset::NotOffered),
        _ => {
            let detail = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|p| p["detail"].as_str().map(str::to_string))
                .unwrap_or_default();
            bail!("sealgated refused ({status}): {detail}")
        }
    }
}

/// The setup token in an answer (`setup_token`, or `token`).
fn token_of(answer: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    ["setup_token", "token"]
        .iter()
        .find_map(|k| v[*k].as_str())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_either_name_and_never_garbage() {
        assert_eq!(
            token_of(br#"{"setup_token":"sgt_abc"}"#).as_deref(),
            Some("sgt_abc")
        );
        assert_eq!(token_of(br#"{"token":"sgt_x"}"#).as_deref(), Some("sgt_x"));
        assert_eq!(token_of(br#"{"token":"a\u001b[2Jb"}"#), None);
        assert_eq!(token_of(b"{}"), None);
        assert_eq!(token_of(b"not json"), None);
    }
}
