//! The qemu-aarch64 board's own parts that can be built here: its kernel (see [`crate::kernel`];
//! Debian's arm64 kernel has no driver for QEMU virt's `tpm-tis-device`), and a bring-up
//! initramfs whose `/init` (`tpm-probe.c`, cross-compiled with Debian's aarch64 gcc) talks to
//! the TPM.
//! The system test `aarch64_board_kernel_drives_the_tpm` boots the two under
//! `qemu-system-aarch64 -M virt` with swtpm.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::image::sh;
use crate::test::{ensure_debian_packages, workspace_root};

/// Debian packages the aarch64 kernel and probe need besides every kernel build's
/// ([`crate::kernel::PACKAGES`]; `cargo xtask test` installs both).
pub(crate) const AARCH64_PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
    "cpio",
    // The aarch64 Rust binaries' system test runs them under user-mode emulation.
    "qemu-user-static",
];

/// The built kernel and probe initramfs.
pub(crate) struct Bringup {
    pub kernel: crate::kernel::Built,
    pub probe: PathBuf,
}

/// Builds (or reuses) the board's kernel and the TPM probe initramfs.
pub(crate) fn build_bringup() -> Result<Bringup> {
    ensure_debian_packages(AARCH64_PACKAGES)?;
    let root = workspace_root()?;
    let board = root.join("board/qemu-aarch64");
    let out = root.join("target/image/qemu-aarch64");
    fs::create_dir_all(&out)?;
    let epoch = crate::image::source_date_epoch(&root)?;
    let kernel = crate::kernel::build(crate::kernel::AARCH64)?;
    let probe = build_probe(&board, &out, epoch)?;
    Ok(Bringup { kernel, probe })
}

fn build_probe(board: &Path, out: &Path, epoch: u64) -> Result<PathBuf> {
    let tree = out.join("probe-root");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    for d in ["dev", "sys"] {
        fs::create_dir_all(tree.join(d))?;
    }
    sh(Command::new("aarch64-linux-gnu-gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(tree.join("init"))
        .arg(board.join("tpm-probe.c")))?;
    let probe = out.join("tpm-probe.cpio.gz");
    crate::image::cpio_gzip(&tree, &probe, epoch)?;
    fs::remove_dir_all(&tree)?;
    Ok(probe)
}
