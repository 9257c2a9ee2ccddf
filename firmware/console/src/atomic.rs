//! The box's one way to write a file that must survive a power cut: a temporary file in the
//! same folder, fsync, rename over the target, fsync of the folder. A reader (or the next
//! boot) sees the old content or the new one, never an empty or half-written file. The
//! shell scripts use it through `sealgate-console write-file PATH` (busybox cannot fsync a
//! folder), the console's own writes call [`write_atomic`]. The routine itself is
//! `sealgate_local::fsio`'s, which the daemon, the vault and `sealctl` use too.
//!
//! A replaced file keeps its mode and owner (so a file the daemon reads stays readable to
//! it whoever rewrites it); a new file gets `mode` and the writer's owner.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sealgate_local::fsio;

/// The largest file `write-file` takes from stdin (settings, network settings, markers).
pub const MAX_STDIN: u64 = 1024 * 1024;

/// Writes `data` to `path` atomically; see the module documentation.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fsio::write_atomic(path, data, fsio::Mode::KeepOr(mode))
        .with_context(|| format!("writing {}", path.display()))
}

/// `write-file PATH [--mode OCTAL]`: stdin, which must not be empty, to `PATH` atomically.
pub fn write_file_command(args: &[&str], stdin: &mut dyn Read) -> Result<()> {
    let (path, mode) = match args {
        [path] => (*path, 0o644),
        [path, "--mode", m] => (
            *path,
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .with_context(|| format!("--mode {m}: not an octal mode"))?,
        ),
        _ => bail!("usage: sealgate-console write-file PATH [--mode OCTAL] <CONTENT"),
    };
    let mut data = Vec::new();
    stdin
        .take(MAX_STDIN + 1)
        .read_to_end(&mut data)
        .context("reading stdin")?;
    if data.len() as u64 > MAX_STDIN {
        bail!("more than {MAX_STDIN} bytes on stdin");
    }
    if data.is_empty() {
        bail!("nothing on stdin: refusing to write an empty {path}");
    }
    write_atomic(Path::new(path), &data, mode)
}

/// The largest file `copy-file` copies (a signed kernel image is about 11 MiB).
pub const MAX_COPY: u64 = 64 * 1024 * 1024;

/// `sealgate-console copy-file SRC DEST`: SRC to DEST atomically (RAUC's post-install
/// handler puts the new slot's kernel image on the ESP with it).
pub fn copy_file_command(args: &[&str]) -> Result<()> {
    let [src, dest] = args else {
        bail!("usage: sealgate-console copy-file SRC DEST");
    };
    let f = std::fs::File::open(src).with_context(|| format!("opening {src}"))?;
    let mut data = Vec::new();
    f.take(MAX_COPY + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {src}"))?;
    if data.len() as u64 > MAX_COPY {
        bail!("{src} is larger than {MAX_COPY} bytes");
    }
    if data.is_empty() {
        bail!("{src} is empty: refusing to write an empty {dest}");
    }
    write_atomic(Path::new(dest), &data, 0o644)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn replaces_a_file_keeping_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.toml");
        write_atomic(&p, b"one\n", 0o600).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two\n", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn copy_file_copies_large_files_and_refuses_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("uki.efi");
        let big = vec![7u8; 3 * MAX_STDIN as usize];
        fs::write(&src, &big).unwrap();
        let dest = dir.path().join("out.efi");
        let (s, d) = (src.to_str().unwrap(), dest.to_str().unwrap());
        copy_file_command(&[s, d]).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), big);
        fs::write(&src, b"").unwrap();
        assert!(copy_file_command(&[s, d]).is_err());
        assert_eq!(fs::read(&dest).unwrap(), big, "unchanged");
        assert!(copy_file_command(&[s]).is_err());
    }

    #[test]
    fn the_command_refuses_empty_input_and_bad_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("network.conf");
        let ps = p.to_str().unwrap();
        assert!(write_file_command(&[ps], &mut &b""[..]).is_err());
        assert!(!p.exists(), "no empty file");
        assert!(write_file_command(&[ps, "--mode", "999"], &mut &b"x\n"[..]).is_err());
        assert!(write_file_command(&[ps, "--mode"], &mut &b"x\n"[..]).is_err());
        write_file_command(&[ps, "--mode", "600"], &mut &b"mode=dhcp\n"[..]).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"mode=dhcp\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let big = vec![b'x'; MAX_STDIN as usize + 1];
        assert!(write_file_command(&[ps], &mut &big[..]).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"mode=dhcp\n", "unchanged");
        // A missing folder is an error, not a half-made file.
        let q = dir.path().join("nope/x");
        assert!(write_file_command(&[q.to_str().unwrap()], &mut &b"x"[..]).is_err());
    }
}
