//! A small RAUC verity bundle for the update tests (included by `#[path]` in the docking and
//! the system tests): enough for every check made before anything is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A verity bundle of `compatible` and `version`, signed with `cert`/`key`, made in `dir`
/// by `rauc bundle` (Debian `rauc`, `squashfs-tools`).
pub fn small_bundle(
    dir: &Path,
    name: &str,
    compatible: &str,
    version: &str,
    cert: &Path,
    key: &Path,
) -> PathBuf {
    let content = dir.join(format!("{name}.d"));
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(&content).expect("bundle dir");
    // Incompressible (RAUC wants a squashfs larger than one block).
    let mut x: u32 = 0x5ea1_9a7e;
    let img: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(content.join("root.img"), img).expect("root.img");
    std::fs::write(
        content.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat=verity\n\n\
             [image.rootfs]\nfilename=root.img\n"
        ),
    )
    .expect("manifest");
    let out = dir.join(format!("{name}.raucb"));
    let _ = std::fs::remove_file(&out);
    let o = Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .arg(&content)
        .arg(&out)
        .output()
        .expect("rauc bundle");
    assert!(
        o.status.success(),
        "rauc bundle {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}
