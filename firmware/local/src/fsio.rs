//! Durable file writes: a reader (or the next boot after a power cut) sees the old content
//! or the new one, never an empty or half-written file.
//!
//! [`write_atomic`]: a temporary file in the same folder (unique per process and call, so
//! concurrent writers never share one), created with the requested mode, written, fsynced,
//! renamed over the target, then the folder fsynced so the rename itself is durable. On any
//! error the temporary file is removed and the target is untouched.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode (and owner) the written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Always this mode, whoever wrote the file before (secrets: `0o600`).
    Exactly(u32),
    /// A replaced file keeps its mode and owner (so a file another user reads stays readable
    /// to it whoever rewrites it; only root can keep another user's owner); a new file gets
    /// this mode and the writer's owner.
    KeepOr(u32),
}

/// Writes `data` to `path` atomically and durably; see the module documentation.
pub fn write_atomic(path: &Path, data: &[u8], mode: Mode) -> std::io::Result<()> {
    let tmp = temporary(path)?;
    let old = match mode {
        Mode::KeepOr(_) => fs::metadata(path).ok(),
        Mode::Exactly(_) => None,
    };
    let new_mode = match mode {
        Mode::Exactly(m) | Mode::KeepOr(m) => m,
    };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(new_mode)
            .open(&tmp)?;
        match &old {
            Some(m) => {
                f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
                // Only root may give a file away; anyone else keeps their own.
                let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
            }
            // The umask may have narrowed the mode given at creation.
            None => f.set_permissions(fs::Permissions::from_mode(new_mode))?,
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        rename_durably(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` over `to` (same folder) and fsyncs the folder, so the rename survives a
/// power cut. For files built under a temporary name by their own writer (a database).
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::rename(from, to)?;
    sync_folder(folder(to))
}

/// Fsyncs a folder (after creating, renaming or removing entries in it).
pub fn sync_folder(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.tmp.PID.N` beside `path`.
fn temporary(path: &Path) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: no file name", path.display()),
        )
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(folder(path).join(format!(".{name}.tmp.{}.{n}", std::process::id())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn keep_or_keeps_a_replaced_files_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        write_atomic(&p, b"one\n", Mode::KeepOr(0o600)).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two\n", Mode::KeepOr(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(names(dir.path()).len(), 1);
    }

    #[test]
    fn exactly_sets_the_mode_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api-tokens.json");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"new", Mode::Exactly(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()).len(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty folder: the rename fails after the data was written.
        let p = dir.path().join("busy");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"x").unwrap();
        assert!(write_atomic(&p, b"data", Mode::Exactly(0o600)).is_err());
        assert!(p.is_dir());
        assert_eq!(names(dir.path()).len(), 1);
        // A missing folder is an error, not a half-made file.
        assert!(write_atomic(&dir.path().join("no/x"), b"x", Mode::Exactly(0o600)).is_err());
    }
}
