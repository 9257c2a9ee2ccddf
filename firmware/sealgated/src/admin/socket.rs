//! The admin API on a local Unix socket, `DATA/admin.sock` or `[admin] socket` (the box:
//! `/run/sealgate/daemon/admin.sock`, reached as `/run/sealgate/admin.sock`), mode 0600: no
//! TLS, no session;
//! the peer's uid (SO_PEERCRED, read when the connection is accepted) is the credential.
//! uid 0 and the daemon's own uid act as `admin` (named `uid:N` in the audit log); any other
//! uid is refused (403) even if the socket's mode was widened.
//!
//! Who reaches it: local processes only, and with mode 0600 only the daemon's own user (and
//! root). It is for `sealctl` and the console menu on the box.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// The uid of the process at the other end of a socket connection.
#[derive(Clone, Copy, Debug)]
pub struct PeerUid(pub u32);

/// Records the peer's uid for the requests of a Unix socket connection.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    if let Some(s) = conn.downcast_ref::<actix_web::rt::net::UnixStream>()
        && let Ok(cred) = s.peer_cred()
    {
        ext.insert(PeerUid(cred.uid()));
    }
}

/// Binds the admin socket, mode 0600: `DATA/admin.sock`, or `at` (`[admin] socket`; then
/// `DATA/admin.sock` is made a link to it, so `sealctl --data-dir DATA` finds it). A stale
/// socket or link is replaced, never another kind of file. Returns the listener, its path
/// and the daemon's uid (the socket's owner).
pub fn bind(data_dir: &Path, at: Option<&Path>) -> anyhow::Result<(UnixListener, PathBuf, u32)> {
    let in_data = data_dir.join(SOCKET);
    let path = at.map_or_else(|| in_data.clone(), Path::to_path_buf);
    remove_stale(&path)?;
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let uid = std::fs::metadata(&path)?.uid();
    if path != in_data {
        remove_stale(&in_data)?;
        std::os::unix::fs::symlink(&path, &in_data)?;
    }
    Ok((l, path, uid))
}

/// Removes a socket nobody answers on (a stopped daemon's) or a link; refuses a socket another
/// daemon serves and any other kind of file.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            anyhow::ensure!(
                std::os::unix::net::UnixStream::connect(path).is_err(),
                "another daemon answers on {}",
                path.display()
            );
            std::fs::remove_file(path)?
        }
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(path)?,
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_elsewhere_is_linked_from_the_data_directory_and_never_stolen() {
        let data = tempfile::tempdir().expect("dir");
        let run = tempfile::tempdir().expect("dir");
        let at = run.path().join("admin.sock");
        let (l, path, _) = bind(data.path(), Some(&at)).expect("bound");
        assert_eq!(path, at);
        let link = data.path().join(SOCKET);
        assert!(std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
        assert_eq!(
            std::fs::metadata(&at).expect("socket").permissions().mode() & 0o777,
            0o600
        );
        std::os::unix::net::UnixStream::connect(&link).expect("reached through the link");
        // A second daemon does not take over a socket that answers.
        let e = bind(data.path(), Some(&at)).expect_err("in use");
        assert!(e.to_string().contains("another daemon answers"), "{e}");
        // Once the first is gone, its socket is stale and replaced.
        drop(l);
        bind(data.path(), Some(&at)).expect("stale socket replaced");
        // Anything else is never removed.
        std::fs::remove_file(&at).expect("rm");
        std::fs::write(&at, b"not a socket").expect("file");
        assert!(bind(data.path(), Some(&at)).is_err());
        assert_eq!(std::fs::read(&at).expect("kept"), b"not a socket");
    }
}
