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

/// What each Debian package of the offline image build (`image::IMAGE_PACKAGES`) is in
/// Buildroot: the defconfig symbols that put the same thing on the box. Every package is
/// here or in [`NOT_ON_THE_BOX`], so a new one is a decision, not an oversight.
const ON_THE_BOX: &[(&str, &[&str])] = &[
    ("linux-image-amd64", &["BR2_LINUX_KERNEL=y"]),
    ("busybox-static", &["BR2_INIT_BUSYBOX=y"]),
    ("grub-efi-amd64-bin", &["BR2_TARGET_GRUB2=y"]),
    ("squashfs-tools", &["BR2_TARGET_ROOTFS_SQUASHFS=y"]),
    ("genimage", &["BR2_PACKAGE_HOST_GENIMAGE=y"]),
    (
        "e2fsprogs",
        &["BR2_PACKAGE_E2FSPROGS=y", "BR2_PACKAGE_HOST_E2FSPROGS=y"],
    ),
    ("dosfstools", &["BR2_PACKAGE_HOST_DOSFSTOOLS=y"]),
    ("mtools", &["BR2_PACKAGE_HOST_MTOOLS=y"]),
    ("libtss2-tcti-device0", &["BR2_PACKAGE_TPM2_TSS=y"]),
    // stage-1's dm-verity mapping: dmsetup and libdevicemapper only.
    (
        "dmsetup",
        &[
            "BR2_PACKAGE_LVM2=y",
            "# BR2_PACKAGE_LVM2_STANDARD_INSTALL is not set",
        ],
    ),
    // The update download's and the directory's trust anchors.
    ("ca-certificates", &["BR2_PACKAGE_CA_CERTIFICATES=y"]),
    // The daemon drives RAUC's D-Bus service on the system bus (install, mark, the slot
    // table) and checks bundles with `rauc info --output-format=json`.
    ("rauc", &["BR2_PACKAGE_RAUC=y", "BR2_PACKAGE_RAUC_JSON=y"]),
    ("rauc-service", &["BR2_PACKAGE_RAUC_DBUS=y"]),
    ("dbus", &["BR2_PACKAGE_DBUS=y"]),
];

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
];

/// Problems of the package mapping: every image package decided, every defconfig holding
/// the symbols of the packages on the box.
fn package_problems(defconfigs: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for pkg in image::IMAGE_PACKAGES {
        let on = ON_THE_BOX.iter().any(|(p, _)| p == pkg);
        let off = NOT_ON_THE_BOX.iter().any(|(p, _)| p == pkg);
        if on == off {
            problems.push(format!(
                "Debian package {pkg} of the image build is {} in dist_src.rs's ON_THE_BOX / NOT_ON_THE_BOX",
                if on { "in both" } else { "in neither" }
            ));
        }
    }
    for (name, text) in defconfigs {
        for (pkg, symbols) in ON_THE_BOX {
            for sym in *symbols {
                if !text.lines().any(|l| l.trim() == *sym) {
                    problems.push(format!(
                        "{name} lacks {sym} (for what Debian's {pkg} gives the image)"
                    ));
                }
            }
        }
    }
    problems
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
                    "BR2_TARGET_ROOTFS_SQUASHFS4_GZIP=y".to_string(),
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
}
