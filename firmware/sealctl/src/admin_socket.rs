//! The running daemon's admin socket, `DATA/admin.sock` (on the box a link to
//! `/run/sealgate/admin.sock`): while `sealgated` runs on a data directory it holds the vault
//! (redb admits one process) and writes the token file, so `sealctl certs
//! pending|approve|reject` and `sealctl api-token list|create|revoke` ask it through the admin
//! API instead (one line on stderr says so). Its changes take effect at once (no restart, no
//! stale cache). When no daemon answers on the socket (no file, or a stale one from a stopped
//! daemon), the commands open the files themselves. The client is `sealgate-local`'s, shared
//! with the console.

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
