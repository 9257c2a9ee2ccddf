//! The qemu-aarch64 board's own parts that can be built here: its kernel, from Debian's
//! `linux-source` with `board/qemu-aarch64/linux-base.fragment` and `linux.fragment` (Debian's
//! arm64 kernel has no driver for QEMU virt's `tpm-tis-device`), and a bring-up initramfs
//! whose `/init` (`tpm-probe.c`, cross-compiled with Debian's aarch64 gcc) talks to the TPM.
//! The system test `aarch64_board_kernel_drives_the_tpm` boots the two under
//! `qemu-system-aarch64 -M virt` with swtpm.
//!
//! What is still missing for the full aarch64 image is the Rust standard library for
//! `aarch64-unknown-linux-gnu`, which this machine's toolchain lacks (see board/README.md).
//!
//! The kernel build is cached: `target/image/qemu-aarch64/Image` is rebuilt only when the
//! source tarball or a fragment changes (recorded in `Image.inputs`). The source tree is
//! deleted after the build (about 1.5 GiB).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::sh;
use crate::test::{ensure_debian_packages, workspace_root};

/// Debian packages the aarch64 kernel and probe need (`cargo xtask test` installs them).
/// No libssl-dev or libelf-dev: the configuration has no modules to sign and arm64 needs no
/// objtool (installing libssl-dev would also upgrade the libssl3 the interop tests use).
pub(crate) const AARCH64_PACKAGES: &[&str] = &[
    "linux-source-6.1",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
    "make",
    "flex",
    "bison",
    "bc",
    "xz-utils",
    "cpio",
    // The aarch64 Rust binaries' system test runs them under user-mode emulation.
    "qemu-user-static",
];

/// The built kernel and probe initramfs.
pub(crate) struct Bringup {
    pub kernel: PathBuf,
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
    let kernel = build_kernel(&board, &out, epoch)?;
    let probe = build_probe(&board, &out, epoch)?;
    Ok(Bringup { kernel, probe })
}

fn source_tarball() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .context("reading /usr/src")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .context("no /usr/src/linux-source-*.tar.xz: apt-get install linux-source-6.1")
}

/// The lines `CONFIG_X=...` of a fragment.
fn config_lines(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .collect()
}

fn build_kernel(board: &Path, out: &Path, epoch: u64) -> Result<PathBuf> {
    let tarball = source_tarball()?;
    let base = fs::read_to_string(board.join("linux-base.fragment"))?;
    let fragment = fs::read_to_string(board.join("linux.fragment"))?;
    let meta = fs::metadata(&tarball)?;
    let inputs = format!(
        "source {} {} bytes\n--- linux-base.fragment\n{base}--- linux.fragment\n{fragment}",
        tarball.display(),
        meta.len(),
    );
    let image = out.join("Image");
    let stamp = out.join("Image.inputs");
    if image.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(inputs.as_str()) {
        println!("aarch64 kernel up to date: {}", image.display());
        return Ok(image);
    }
    let src = out.join("linux");
    if src.exists() {
        fs::remove_dir_all(&src)?;
    }
    fs::create_dir_all(&src)?;
    println!("unpacking {}", tarball.display());
    sh(Command::new("tar")
        .arg("xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("--strip-components=1"))?;
    let make = |args: &[&str]| -> Command {
        let mut c = Command::new("make");
        c.current_dir(&src)
            .env("ARCH", "arm64")
            .env("CROSS_COMPILE", "aarch64-linux-gnu-")
            .env("KBUILD_BUILD_TIMESTAMP", format!("@{epoch}"))
            .env("KBUILD_BUILD_USER", "sealgate")
            .env("KBUILD_BUILD_HOST", "build")
            .args(args);
        c
    };
    sh(&mut make(&["-s", "allnoconfig"]))?;
    sh(Command::new("scripts/kconfig/merge_config.sh")
        .current_dir(&src)
        .env("ARCH", "arm64")
        .env("CROSS_COMPILE", "aarch64-linux-gnu-")
        .args(["-m", ".config"])
        .arg(board.join("linux-base.fragment"))
        .arg(board.join("linux.fragment")))?;
    sh(&mut make(&["-s", "olddefconfig"]))?;
    let config = fs::read_to_string(src.join(".config"))?;
    let dropped: Vec<&str> = config_lines(&base)
        .into_iter()
        .chain(config_lines(&fragment))
        .filter(|l| !config.lines().any(|c| c == *l))
        .collect();
    if !dropped.is_empty() {
        bail!(
            "the kernel configuration dropped fragment lines (a dependency is missing): {}",
            dropped.join(", ")
        );
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("building the aarch64 kernel (allnoconfig + fragments, {jobs} jobs)");
    let started = std::time::Instant::now();
    sh(&mut make(&["-s", &format!("-j{jobs}"), "Image"]))?;
    fs::copy(src.join("arch/arm64/boot/Image"), &image)?;
    fs::copy(src.join(".config"), out.join("Image.config"))?;
    fs::write(&stamp, inputs)?;
    fs::remove_dir_all(&src)?;
    println!(
        "aarch64 kernel built in {:.0} s: {} ({} bytes)",
        started.elapsed().as_secs_f64(),
        image.display(),
        fs::metadata(&image)?.len()
    );
    Ok(image)
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
