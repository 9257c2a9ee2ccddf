//! The running daemon's admin socket, `DATA/admin.sock` (on the box a link to
//! `/run/sealgate/admin.sock`): while `sealgated` runs on a data directory it holds the vault
//! (redb admits one process) and writes the token file, so `sealctl certs
//! pending|approve|reject`, `api-token list|create|revoke`, `queue ...` and every `keys` and
//! `ca` command ask it through the admin API instead (one line on stderr says so). Its
//! changes take effect at once (no restart, no stale cache). When no daemon answers on the
//! socket (no file, or a stale one from a stopped daemon), the commands open the files
//! themselves. The client is `sealgate-local`'s, shared with the console.

use std::path::Path;

pub(crate) use sealgate_local::admin_socket::{AdminSocket, segment};

/// The running daemon's admin socket, if one answers on `data_dir` (then says so on stderr).
pub(crate) fn running(data_dir: &Path) -> Option<AdminSocket> {
    let s = AdminSocket::for_data_dir(data_dir)?;
    eprintln!(
        "sealctl: sealgated runs on {}: asking it through {}",
        data_dir.display(),
        s.path().display()
    );
    Some(s)
}

/// A file's content for a JSON field that takes PEM text or base64 of DER: PEM as it is,
/// anything else base64.
pub(crate) fn pem_or_base64(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(t) if t.contains("-----BEGIN") => t.to_string(),
        _ => base64(data),
    }
}

/// `data` in base64 (standard alphabet, padded).
pub(crate) fn base64(data: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(data)
}
