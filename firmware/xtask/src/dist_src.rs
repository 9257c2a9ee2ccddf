//! `cargo xtask dist-src`: the source tarball Buildroot's sealgate package builds from, with
//! every crate vendored (`VENDOR/`) so the Buildroot build runs offline; and
//! `cargo xtask check-buildroot`: keeps `board/buildroot/` honest where Buildroot itself
//! cannot run (no network here): what the offline image installs, Buildroot installs too; the
//! boards' partition layouts are the same file; every file a defconfig names exists.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::{self, BINARIES, BOARDS};
use crate::test::workspace_root;

/// Arguments of `cargo xtask dist-src`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write `sealgate-VERSION.tar.gz` (default target/dist/).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// The paths of the workspace that the tarball carries (sorted).
const SOURCES: &[&str] = &[
    ".cargo",
    "Cargo.lock",
    "Cargo.toml",
    "firmware",
    // The fuzz targets' seeds and keys: firmware/fuzz-targets (a workspace member) reads them.
    "fuzz/corpus",
    "fuzz/keys",
    "qemu",
    "rootfs",
    "tests",
    "tpm",
    "webui",
];

/// `cargo xtask dist-src`.
pub fn run(args: Args) -> Result<()> {
    let root = workspace_root()?;
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("sealgate-{version}");
    let out_dir = args.out_dir.unwrap_or_else(|| root.join("target/dist"));
    let stage = out_dir.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    for s in SOURCES {
        let src = root.join(s);
        if src.exists() {
            if let Some(parent) = stage.join(s).parent() {
                fs::create_dir_all(parent)?;
            }
            image::sh(Command::new("cp").arg("-a").arg(&src).arg(stage.join(s)))?;
        }
    }
    // fuzz/'s cargo-fuzz crate is not a workspace member; board/ is Buildroot's own tree.
    // Neither is built there.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let vendor = Command::new(&cargo)
        .current_dir(&stage)
        .args(["vendor", "--locked", "--versioned-dirs", "VENDOR"])
        .output()
        .context("cargo vendor")?;
    if !vendor.status.success() {
        bail!(
            "cargo vendor failed: {}",
            String::from_utf8_lossy(&vendor.stderr)
        );
    }
    // What `cargo vendor` prints is the configuration that builds from VENDOR/.
    let config = stage.join(".cargo/config.toml");
    let mut text = fs::read_to_string(&config).unwrap_or_default();
    text.push_str("\n# Added by cargo xtask dist-src: build from the vendored crates, offline.\n");
    text.push_str(&String::from_utf8_lossy(&vendor.stdout));
    fs::create_dir_all(stage.join(".cargo"))?;
    fs::write(&config, text)?;
    let epoch = image::source_date_epoch(&root)?;
    let tarball = out_dir.join(format!("{name}.tar.gz"));
    image::sh(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@{epoch} \
                 --exclude=target -cf - '{name}' | gzip -9 -n > '{}'",
                tarball.display()
            ))
            .current_dir(&out_dir),
    )?;
    fs::remove_dir_all(&stage).ok();
    println!("{}", tarball.display());
    Ok(())
}

/// What each Debian package of the offline image builds (`offline_build_packages`) is in
/// Buildroot: the defconfig symbols that put the same thing on the box, for the
/// architectures whose build takes it. Every package is
/// here or in [`NOT_ON_THE_BOX`], so a new one is a decision, not an oversight.
const ON_THE_BOX: &[(&str, Arch, &[&str])] = &[
    // The boards' own kernels: built from Debian's source package with the board's
    // fragments, as Buildroot builds them (the series must match: see
    // `kernel_series_problems`).
    (
        "linux-source-6.1",
        Arch::X86_64,
        &["BR2_LINUX_KERNEL=y", "BR2_LINUX_KERNEL_BZIMAGE=y"],
    ),
    (
        "linux-source-6.1",
        Arch::Aarch64,
        &["BR2_LINUX_KERNEL=y", "BR2_LINUX_KERNEL_IMAGE=y"],
    ),
    ("busybox-static", Arch::Both, &["BR2_INIT_BUSYBOX=y"]),
    (
        "grub-efi-amd64-bin",
        Arch::X86_64,
        &["BR2_TARGET_GRUB2=y", "BR2_TARGET_GRUB2_X86_64_EFI=y"],
    ),
    (
        "grub-efi-arm64-bin",
        Arch::Aarch64,
        &["BR2_TARGET_GRUB2=y", "BR2_TARGET_GRUB2_ARM64_EFI=y"],
    ),
    (
        "squashfs-tools",
        Arch::Both,
        &["BR2_TARGET_ROOTFS_SQUASHFS=y"],
    ),
    ("genimage", Arch::Both, &["BR2_PACKAGE_HOST_GENIMAGE=y"]),
    (
        "e2fsprogs",
        Arch::Both,
        &["BR2_PACKAGE_E2FSPROGS=y", "BR2_PACKAGE_HOST_E2FSPROGS=y"],
    ),
    ("dosfstools", Arch::Both, &["BR2_PACKAGE_HOST_DOSFSTOOLS=y"]),
    ("mtools", Arch::Both, &["BR2_PACKAGE_HOST_MTOOLS=y"]),
    // tpm2-tss: the ESAPI the binaries link and the device TCTI they open (bookworm's
    // package on x86_64, trixie's 64-bit-time ones on aarch64).
    (
        "libtss2-tcti-device0",
        Arch::X86_64,
        &["BR2_PACKAGE_TPM2_TSS=y"],
    ),
    (
        "libtss2-esys-3.0.2-0t64",
        Arch::Aarch64,
        &["BR2_PACKAGE_TPM2_TSS=y"],
    ),
    (
        "libtss2-mu-4.0.1-0t64",
        Arch::Aarch64,
        &["BR2_PACKAGE_TPM2_TSS=y"],
    ),
    (
        "libtss2-tctildr0t64",
        Arch::Aarch64,
        &["BR2_PACKAGE_TPM2_TSS=y"],
    ),
    (
        "libtss2-tcti-device0t64",
        Arch::Aarch64,
        &["BR2_PACKAGE_TPM2_TSS=y"],
    ),
    // The binaries' C runtime (libgcc_s, glibc): Buildroot's own glibc toolchain.
    (
        "libgcc-s1",
        Arch::Aarch64,
        &["BR2_TOOLCHAIN_BUILDROOT_GLIBC=y"],
    ),
    // The update download's and the directory's trust anchors.
    (
        "ca-certificates",
        Arch::Both,
        &["BR2_PACKAGE_CA_CERTIFICATES=y"],
    ),
    // The daemon drives RAUC's D-Bus service on the system bus (install, mark, the slot
    // table) and checks bundles with `rauc info --output-format=json`.
    (
        "rauc",
        Arch::Both,
        &["BR2_PACKAGE_RAUC=y", "BR2_PACKAGE_RAUC_JSON=y"],
    ),
    ("rauc-service", Arch::X86_64, &["BR2_PACKAGE_RAUC_DBUS=y"]),
    ("dbus", Arch::X86_64, &["BR2_PACKAGE_DBUS=y"]),
    ("dbus-daemon", Arch::Aarch64, &["BR2_PACKAGE_DBUS=y"]),
    (
        "dbus-system-bus-common",
        Arch::Aarch64,
        &["BR2_PACKAGE_DBUS=y", "BR2_PACKAGE_RAUC_DBUS=y"],
    ),
    // The aarch64 binaries: Debian trixie's Rust in the cross root, Buildroot's host Rust.
    ("rustc-web", Arch::Aarch64, &["BR2_PACKAGE_HOST_RUSTC=y"]),
    ("cargo-web", Arch::Aarch64, &["BR2_PACKAGE_HOST_RUSTC=y"]),
    (
        "libstd-rust-web-dev:arm64",
        Arch::Aarch64,
        &["BR2_PACKAGE_HOST_RUSTC=y"],
    ),
];

/// Which defconfigs an [`ON_THE_BOX`] entry binds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arch {
    Both,
    X86_64,
    Aarch64,
}

impl Arch {
    /// Whether the defconfig file `name` is for this architecture.
    fn covers(self, name: &str) -> bool {
        match self {
            Arch::Both => true,
            Arch::X86_64 => name.contains("x86_64"),
            Arch::Aarch64 => name.contains("aarch64"),
        }
    }
}

/// Every Debian package an offline image build takes something from, per board: the
/// x86_64 image's build and runtime packages; the aarch64 image's (its runtime root, the
/// Rust root's compiler and standard library, its kernel's source, and the host tools it
/// runs). Each must be decided in [`ON_THE_BOX`] or [`NOT_ON_THE_BOX`].
fn offline_build_packages() -> Vec<&'static str> {
    let mut all: Vec<&str> = [
        image::IMAGE_PACKAGES,
        image::AARCH64_IMAGE_PACKAGES,
        crate::cross::RUNTIME_PACKAGES,
        crate::cross::ROOT_PACKAGES,
        crate::aarch64::AARCH64_PACKAGES,
        crate::kernel::PACKAGES,
    ]
    .concat();
    all.sort_unstable();
    all.dedup();
    all
}

/// Debian packages of the offline build that have no Buildroot symbol, and why.
const NOT_ON_THE_BOX: &[(&str, &str)] = &[
    (
        "cpio",
        "the stage-1 initramfs is packed by post-image.sh with the host's cpio",
    ),
    (
        "binutils",
        "objcopy of Buildroot's host toolchain assembles the UKIs",
    ),
    (
        "systemd-boot-efi",
        "the UKI's EFI stub: not built by Buildroot yet (board/README.md, Secure Boot: not yet)",
    ),
    (
        "sbsigntool",
        "signing happens outside Buildroot, where the vendor's keys are (board/dev-keys/README.md)",
    ),
    (
        "gpg",
        "GRUB's detached signatures, made outside Buildroot with the signing keys",
    ),
    ("gpg-agent", "gpg's agent, as above"),
    (
        "ovmf",
        "the firmware of the QEMU test machine, not of the box",
    ),
    (
        "python3",
        "virt-fw-vars for the QEMU test machine's variable store",
    ),
    ("python3-venv", "as python3"),
    (
        "cryptsetup-bin",
        "veritysetup makes the hash tree at image build: not in Buildroot's flow yet (board/README.md)",
    ),
    ("faketime", "reproducible signatures of the offline build"),
    (
        "zstd",
        "the stage-1 initramfs compression of the offline build",
    ),
    (
        "binutils-aarch64-linux-gnu",
        "objcopy and strip for the arm64 UKI and binaries: Buildroot's cross toolchain has its own",
    ),
    (
        "qemu-user-static",
        "runs arm64 tools of the runtime root at build time (busybox's applet list, grub-mkimage) \
         and the arm64 binaries' system test; Buildroot builds its host tools natively",
    ),
    (
        "qemu-efi-aarch64",
        "AAVMF, the firmware of the QEMU test machine, not of the box",
    ),
    ("qemu-system-arm", "the QEMU test machine"),
    (
        "gcc-aarch64-linux-gnu",
        "the cross compiler of the kernel and the binaries: Buildroot builds its own toolchain",
    ),
    ("libc6-dev-arm64-cross", "as gcc-aarch64-linux-gnu"),
    (
        "libc6-dev:arm64",
        "as gcc-aarch64-linux-gnu, in the Rust root",
    ),
    (
        "libtss2-dev:arm64",
        "tpm2-tss's headers and pkg-config files in the Rust root: Buildroot's tpm2-tss installs them to staging",
    ),
    ("pkg-config", "host-pkgconf in sealgate.mk's dependencies"),
    (
        "make",
        "the kernel build's tools: Buildroot's own host tools",
    ),
    ("flex", "as make"),
    ("bison", "as make"),
    ("bc", "as make"),
    ("xz-utils", "unpacks Debian's kernel source tarball"),
    ("gcc", "as make (the x86_64 kernel is built natively)"),
    (
        "libelf-dev",
        "objtool of the x86_64 kernel build: Buildroot's host-elfutils",
    ),
];

/// Problems of the package mapping: every image package decided, every defconfig holding
/// the symbols of the packages on the box.
fn package_problems(defconfigs: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for pkg in offline_build_packages() {
        let on = ON_THE_BOX.iter().any(|(p, _, _)| *p == pkg);
        let off = NOT_ON_THE_BOX.iter().any(|(p, _)| *p == pkg);
        if on == off {
            problems.push(format!(
                "Debian package {pkg} of the offline image builds is {} in dist_src.rs's ON_THE_BOX / NOT_ON_THE_BOX",
                if on { "in both" } else { "in neither" }
            ));
        }
    }
    for (name, text) in defconfigs {
        for (pkg, arch, symbols) in ON_THE_BOX {
            if !arch.covers(name) {
                continue;
            }
            for sym in *symbols {
                if !text.lines().any(|l| l.trim() == *sym) {
                    problems.push(format!(
                        "{name} lacks {sym} (for what Debian's {pkg} gives the image)"
                    ));
                }
            }
        }
        problems.extend(kernel_series_problems(name, text));
    }
    problems
}

/// The kernel series a defconfig builds must be the offline build's: Debian's 6.1 (the
/// boards' kernels are built from bookworm's `linux-source-6.1`), so both builds boot the
/// same kernel with the same fragment.
fn kernel_series_problems(name: &str, text: &str) -> Vec<String> {
    let series = crate::kernel::SOURCE_PACKAGE
        .strip_prefix("linux-source-")
        .unwrap_or("?");
    let version = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE=")
        })
        .map(|v| v.trim_matches('"'));
    match version {
        Some(v) if v.strip_prefix(series).is_some_and(|r| r.starts_with('.')) => Vec::new(),
        Some(v) => vec![format!(
            "{name} builds kernel {v}, the offline build Debian's {series} series"
        )],
        None => vec![format!(
            "{name} has no BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE (the offline build's kernel is {series}.x)"
        )],
    }
}

/// `cargo xtask check-buildroot`.
pub fn check_buildroot() -> Result<()> {
    let problems = buildroot_problems(&workspace_root()?)?;
    for p in &problems {
        println!("problem: {p}");
    }
    if !problems.is_empty() {
        bail!(
            "board/buildroot/ disagrees with the offline image build ({} problems)",
            problems.len()
        );
    }
    println!("board/buildroot/ agrees with the offline image build");
    Ok(())
}

/// Everything in `board/buildroot/` that disagrees with the offline build.
pub(crate) fn buildroot_problems(root: &Path) -> Result<Vec<String>> {
    let br = root.join("board/buildroot");
    let mut problems = Vec::new();
    for f in [
        "external.desc",
        "Config.in",
        "external.mk",
        "package/sealgate/Config.in",
        "package/sealgate/sealgate.mk",
    ] {
        if !br.join(f).is_file() {
            problems.push(format!("board/buildroot/{f} is missing"));
        }
    }
    let mk = fs::read_to_string(br.join("package/sealgate/sealgate.mk")).unwrap_or_default();
    for (_, bin) in BINARIES {
        if !mk.contains(&format!("/usr/bin/{bin}")) {
            problems.push(format!("sealgate.mk does not install /usr/bin/{bin}"));
        }
    }
    for needle in ["cargo-package", "SEALGATE_CARGO_", "VENDOR"] {
        if !mk.contains(needle) {
            problems.push(format!("sealgate.mk does not mention {needle}"));
        }
    }
    // Every rootfs overlay file reaches Buildroot's target through the post-build script.
    let post_build = fs::read_to_string(br.join("board/common/post-build.sh")).unwrap_or_default();
    if !post_build.contains("rootfs/overlay") {
        problems.push("post-build.sh does not copy rootfs/overlay".into());
    }
    let post_image = fs::read_to_string(br.join("board/common/post-image.sh")).unwrap_or_default();
    if !post_image.contains("genimage.cfg") {
        problems.push("post-image.sh does not use the board's genimage.cfg".into());
    }
    // Defconfigs: every file they name exists, and each names its board's layout and modules.
    let configs = br.join("configs");
    let mut found = 0;
    let mut texts = Vec::new();
    for entry in fs::read_dir(&configs).with_context(|| format!("reading {}", configs.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with("_defconfig") {
            continue;
        }
        found += 1;
        let text = fs::read_to_string(&path)?;
        texts.push((name.clone(), text.clone()));
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            for word in value.split_whitespace() {
                if let Some(rel) = word.strip_prefix("$(BR2_EXTERNAL_SEALGATE_PATH)/")
                    && !br.join(rel).exists()
                {
                    problems.push(format!("{name}: {key} names {rel}, which does not exist"));
                }
            }
        }
        let board = BOARDS
            .iter()
            .find(|b| name.contains(b.triplet.split('-').next().unwrap_or("?")));
        match board {
            None => problems.push(format!("{name}: no board of the offline build matches")),
            Some(b) => {
                for want in [
                    format!("BR2_ROOTFS_POST_SCRIPT_ARGS=\"{}\"", b.name),
                    format!("/../{}/linux.fragment\"", b.name),
                    format!(
                        "BR2_TARGET_GRUB2_BUILTIN_MODULES_EFI=\"{}\"",
                        image::GRUB_MODULES.join(" ")
                    ),
                    "BR2_TARGET_ROOTFS_SQUASHFS4_ZSTD=y".to_string(),
                    "BR2_PACKAGE_SEALGATE=y".to_string(),
                    "BR2_PACKAGE_TPM2_TSS=y".to_string(),
                ] {
                    if !text.contains(&want) {
                        problems.push(format!("{name} lacks {want}"));
                    }
                }
            }
        }
    }
    problems.extend(package_problems(&texts));
    if found < 2 {
        problems.push(format!(
            "expected defconfigs for x86_64 and aarch64, found {found}"
        ));
    }
    // Every board: a kernel fragment, and the same partitions (names, order) with the
    // inputs post-image.sh makes.
    let mut layouts = Vec::new();
    for b in BOARDS {
        let dir = root.join("board").join(b.name);
        if !dir.join("linux.fragment").is_file() {
            problems.push(format!("board/{}/linux.fragment is missing", b.name));
        }
        let cfg = fs::read_to_string(dir.join("genimage.cfg")).unwrap_or_default();
        let parts: Vec<String> = cfg
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("partition ")
                    .map(|r| r.trim_end_matches('{').trim().to_string())
            })
            .collect();
        for input in ["esp.vfat", "root.img"] {
            if !cfg.contains(&format!("image = \"{input}\"")) {
                problems.push(format!(
                    "board/{}/genimage.cfg does not take {input}",
                    b.name
                ));
            }
            if !post_image.contains(input) {
                problems.push(format!("post-image.sh does not make {input}"));
            }
        }
        layouts.push((b.name, parts));
    }
    if let Some((first, parts)) = layouts.first() {
        if parts.as_slice() != ["boot", "rootA", "rootB", "data"] {
            problems.push(format!("board/{first}/genimage.cfg partitions are {parts:?}, the box looks up boot, rootA, rootB, data"));
        }
        for (name, other) in &layouts[1..] {
            if other != parts {
                problems.push(format!(
                    "board/{name}/genimage.cfg partitions {other:?} differ from {first}'s {parts:?}"
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buildroot_tree_agrees_with_the_offline_build() {
        let problems = buildroot_problems(&workspace_root().unwrap()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_defconfig_is_held_to_its_own_boards_packages() {
        let br = workspace_root().unwrap().join("board/buildroot/configs");
        let x86 = fs::read_to_string(br.join("sealgate_x86_64_efi_defconfig")).unwrap();
        // The x86_64 defconfig under the aarch64 name: GRUB and the kernel are the wrong ones.
        let problems = package_problems(&[("sealgate_aarch64_efi_defconfig".into(), x86.clone())]);
        for want in ["BR2_TARGET_GRUB2_ARM64_EFI=y", "BR2_LINUX_KERNEL_IMAGE=y"] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want} not asked for: {problems:#?}"
            );
        }
        assert!(!problems.iter().any(|p| p.contains("X86_64_EFI")));
        // Another kernel series than the offline build's.
        let other = x86.replace("\"6.1.119\"", "\"6.12.1\"");
        let problems = package_problems(&[("sealgate_x86_64_efi_defconfig".into(), other)]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].contains("6.12.1"));
    }
}
