//! `cargo xtask image`: the box's disk image, assembled offline from Debian packages
//! (Buildroot cannot fetch its sources here; production images come from `board/buildroot/`,
//! which reuses `rootfs/` and the board's `genimage.cfg`). qemu-x86_64 takes them from the
//! build machine itself (bookworm); qemu-aarch64 from trixie's arm64 packages unpacked in a
//! cached root (its binaries, built with trixie's Rust, need trixie's glibc). Both boot the
//! board's own kernel, built from Debian's source with every driver built in (kernel.rs; see
//! [`parts`]).
//!
//! The image: a GPT disk (layout in `board/<board>/genimage.cfg`) with an EFI system
//! partition (GRUB, `grub.cfg`, `grubenv`, one signed UKI per slot: kernel, stage-1
//! initramfs and command line), two root slots A and B (read-only zstd squashfs holding the
//! root file system, then its dm-verity hash tree) and an ext4 data partition. GRUB picks
//! the slot; stage-1 init verifies and mounts it; busybox init runs
//! `/etc/sealgate/boot`, then `sealgated` and the console menu.
//!
//! Reproducible: every timestamp is `SOURCE_DATE_EPOCH` (from the environment, else the
//! commit time of `HEAD`), file lists are sorted, file system UUIDs and seeds are fixed.
//! What is pinned is written to `manifest.txt` beside the image: the Debian package versions
//! the image is made of and the Rust binaries' SHA-256.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::test::{ensure_debian_packages, workspace_root};

/// The Rust binaries every image installs into `/usr/bin` (Buildroot's sealgate package must
/// install the same: `cargo xtask check-buildroot` checks it).
pub(crate) const BINARIES: &[(&str, &str)] = &[
    ("sealgated", "sealgated"),
    ("sealctl", "sealctl"),
    ("sealgate-console", "sealgate-console"),
];

/// Debian packages the image build reads its parts from (and `cargo xtask test` installs).
pub(crate) const IMAGE_PACKAGES: &[&str] = &[
    "busybox-static",
    "grub-efi-amd64-bin",
    "squashfs-tools",
    "genimage",
    "e2fsprogs",
    "dosfstools",
    "mtools",
    "cpio",
    "libtss2-tcti-device0",
    "systemd-boot-efi",
    "sbsigntool",
    "binutils",
    "ovmf",
    "gpg",
    // gpg imports GRUB's secret signing key through its agent (not installed with gpg when
    // recommends are off: found by building in a clean Debian root).
    "gpg-agent",
    // virt-fw-vars (PyPI virt-firmware, in a venv under target/tools/) enrols the Secure Boot
    // keys in the UEFI variable store.
    "python3",
    "python3-venv",
    "cryptsetup-bin",
    "faketime",
    "zstd",
    "ca-certificates",
    "rauc",
    "rauc-service",
    "dbus",
];

/// Everything `cargo xtask image` installs: the image's parts and what building the
/// binaries needs (a fresh machine has neither).
pub(crate) fn build_packages() -> Vec<&'static str> {
    [crate::test::BUILD_PACKAGES, IMAGE_PACKAGES].concat()
}

/// The modules built into GRUB's EFI image (Buildroot's defconfigs name the same).
pub(crate) const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "squash4",
    "ext2",
    "normal",
    "linux",
    "configfile",
    "loadenv",
    "test",
    "echo",
    "regexp",
    "gzio",
    "xzio",
    "search",
    "halt",
    "reboot",
    "chain",
];

/// The modules GRUB checks signatures with under Secure Boot (the offline build's signed
/// chain; built in, as lockdown loads no module).
pub(crate) const GRUB_VERIFY_MODULES: &[&str] = &["pgp", "gcry_sha256", "gcry_sha512", "gcry_rsa"];

/// Size of the EFI system partition image, MiB (FAT16): GRUB and two 11 MiB UKIs, plus room
/// for an update to write the new UKI beside the old one before the rename.
const ESP_MIB: u64 = 64;
/// Size of the data partition image, MiB (a box grows it to the disk later).
const DATA_MIB: u64 = 256;
/// Fixed identifiers, so the same inputs make the same bytes.
const ESP_VOLUME_ID: &str = "5EA1E5B0";
const DATA_FS_UUID: &str = "5ea19a7e-0000-4000-8000-0000000000d1";
const DATA_HASH_SEED: &str = "5ea19a7e-0000-4000-8000-0000000000d2";
/// The kernel command line every slot's signed image carries, after the board's console
/// (plus `sealgate.slot=`, the root hash and the data partition). The boards' kernels have
/// the watchdog and bonding built in: stage 1's bound (its `WATCHDOG_SECS`) for the
/// watchdog, and no bond device but those the settings make.
const KERNEL_CMDLINE: &str = "loglevel=4 panic=10 i6300esb.heartbeat=300 bonding.max_bonds=0";

/// A board the offline image build knows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Board {
    /// `board/<name>/`.
    pub name: &'static str,
    /// Debian's multiarch triplet.
    pub triplet: &'static str,
    /// Rust's target triple.
    pub rust_target: &'static str,
    /// GRUB's platform and the EFI file name the firmware looks for.
    pub grub_platform: &'static str,
    pub efi_file: &'static str,
    /// How the board's kernel is built.
    pub kernel: crate::kernel::Recipe,
    /// The dynamic loader's path, as the binaries name it.
    pub loader: &'static str,
    /// The board's part of the kernel command line: the serial console.
    pub cmdline: &'static str,
    /// The prefix of the binutils that handle this board's binaries (`strip`, `objcopy`).
    pub binutils: &'static str,
    /// systemd's EFI stub for this architecture, under the board's runtime root.
    pub stub: &'static str,
    /// The firmware's variable store the box's keys are enrolled in (Debian `ovmf`,
    /// `qemu-efi-aarch64`). AAVMF's plain one is blank (the firmware formats it at its
    /// first start), so its formatted Microsoft store, whose keys enrolling removes.
    pub vars_template: &'static str,
}

/// Every board of `board/` that the offline build assembles.
pub(crate) const BOARDS: &[Board] = &[
    Board {
        name: "qemu-x86_64",
        triplet: "x86_64-linux-gnu",
        rust_target: "x86_64-unknown-linux-gnu",
        grub_platform: "x86_64-efi",
        efi_file: "BOOTX64.EFI",
        kernel: crate::kernel::X86_64,
        loader: "/lib64/ld-linux-x86-64.so.2",
        // `no_timer_check`: the kernel's IO-APIC timer check counts timer ticks over a short
        // delay; in a virtual machine whose host is busy (QEMU's TCG under load, a crowded
        // hypervisor) the ticks come late and the kernel panics at boot ("IO-APIC + timer
        // doesn't work!"), as it did once in the system tests. Virtual machines' kernels
        // skip the check by default (KVM's clock sets it); a box's own timer is sound.
        cmdline: "console=ttyS0,115200 no_timer_check",
        binutils: "",
        stub: "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        vars_template: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    },
    Board {
        name: "qemu-aarch64",
        triplet: "aarch64-linux-gnu",
        rust_target: "aarch64-unknown-linux-gnu",
        grub_platform: "arm64-efi",
        efi_file: "BOOTAA64.EFI",
        kernel: crate::kernel::AARCH64,
        loader: "/lib/ld-linux-aarch64.so.1",
        cmdline: "console=ttyAMA0,115200",
        binutils: "aarch64-linux-gnu-",
        stub: "/usr/lib/systemd/boot/efi/linuxaa64.efi.stub",
        vars_template: "/usr/share/AAVMF/AAVMF_VARS.ms.fd",
    },
];

impl Board {
    /// The board named `name`, or an error listing the known ones.
    pub(crate) fn named(name: &str) -> Result<Board> {
        BOARDS
            .iter()
            .copied()
            .find(|b| b.name == name)
            .with_context(|| {
                let names: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
                format!("unknown board {name:?}; known: {}", names.join(", "))
            })
    }
}

/// Arguments of `cargo xtask image`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The board (a folder of board/).
    #[arg(long, default_value = "qemu-x86_64")]
    pub board: String,
    /// Install FILE as /usr/bin/NAME instead of building it (NAME=FILE, repeatable; for
    /// experiments while the workspace does not build; the manifest records it).
    #[arg(long = "binary", value_name = "NAME=FILE", value_parser = parse_binary)]
    pub binaries: Vec<(String, PathBuf)>,
}

fn parse_binary(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or("expected NAME=FILE")?;
    if !BINARIES.iter().any(|(_, b)| *b == name) {
        return Err(format!("{name} is not one of the box's binaries"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

impl Args {
    fn given(&self, bin: &str) -> Option<&PathBuf> {
        self.binaries.iter().find(|(n, _)| n == bin).map(|(_, p)| p)
    }
}

/// What a build produced.
pub(crate) struct Built {
    /// The raw GPT disk image.
    pub disk: PathBuf,
}

/// `cargo xtask image`.
pub fn run(args: Args) -> Result<()> {
    let board = Board::named(&args.board)?;
    let built = build(board, &args)?;
    let meta = fs::metadata(&built.disk)?;
    println!(
        "image: {} ({} MiB raw)",
        built.disk.display(),
        meta.len() >> 20
    );
    Ok(())
}

/// Builds the qemu-x86_64 image from the workspace's binaries (`cargo xtask test`).
pub(crate) fn build_default() -> Result<()> {
    let args = Args {
        board: "qemu-x86_64".into(),
        binaries: Vec::new(),
    };
    build(Board::named(&args.board)?, &args).map(|_| ())
}

/// The folder a board's image is assembled in: `target/image/<board>/`.
pub(crate) fn out_dir(board: Board) -> Result<PathBuf> {
    Ok(workspace_root()?.join("target/image").join(board.name))
}

/// Builds the image of `board`; see the module documentation.
pub(crate) fn build(board: Board, args: &Args) -> Result<Built> {
    if !["qemu-x86_64", "qemu-aarch64"].contains(&board.name) {
        bail!("no offline image build for board {}", board.name);
    }
    let root = workspace_root()?;
    let board_dir = root.join("board").join(board.name);
    let out = out_dir(board)?;
    let work = out.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let epoch = source_date_epoch(&root)?;
    println!("SOURCE_DATE_EPOCH={epoch}");

    ensure_debian_packages(&build_packages())?;
    let parts = parts(board, &root, args)?;
    let (kernel, sysroot) = (&parts.kernel, &parts.sysroot);
    println!("kernel {}", kernel.version);

    // Stage-1 initramfs.
    let initramfs_dir = work.join("initramfs");
    let initramfs = work.join("initrd.img");
    stage_initramfs(sysroot, &root, &initramfs_dir)?;
    cpio_zstd(&initramfs_dir, &initramfs, epoch)?;

    // The root file system.
    let rootfs = work.join("rootfs");
    stage_rootfs(board, sysroot, &root, &parts.binaries, &rootfs)?;
    let inputs = work.join("inputs");
    fs::create_dir_all(&inputs)?;
    sh(Command::new("mksquashfs")
        .arg(&rootfs)
        .arg(work.join("root.squashfs"))
        .args([
            "-comp",
            "zstd",
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
        ])
        .args([
            "-mkfs-time",
            &epoch.to_string(),
            "-all-time",
            &epoch.to_string(),
        ]))?;
    // The slot's partition: the squashfs and its dm-verity hash tree.
    let verity =
        crate::verity::format(&work.join("root.squashfs"), &inputs.join("root.img"), &work)?;

    // The data partition's GPT unique GUID (genimage writes it into the table): stage-1
    // uses the partition with this GUID, named in the signed command line, and no other.
    let genimage_cfg = fs::read_to_string(board_dir.join("genimage.cfg"))?;
    let data_uuid = partition_uuid(&genimage_cfg, "data")?;

    // The signed boot chain: one UKI per slot (slot A's on the ESP; both in the slot content
    // an update bundle carries, see bundle.rs), the UEFI variables with the box's keys
    // enrolled and Secure Boot on.
    let keys = crate::secureboot::Keys::find(&root)?;
    let gpg = keys.grub_keyring(&work)?;
    let osrel = rootfs.join("etc/os-release");
    let linux = work.join("esp-linux");
    fs::create_dir_all(&linux)?;
    let mut signed = BTreeMap::new();
    for slot in ["A", "B"] {
        // The slot's partition by its GPT unique GUID, for the kernel's dm-verity mapping.
        let slot_uuid = partition_uuid(&genimage_cfg, &format!("root{slot}"))?;
        let uki = work.join(format!("sealgate-{slot}.unsigned.efi"));
        crate::secureboot::make_uki(
            epoch,
            &work,
            crate::secureboot::Stub {
                file: &sysroot.path(board.stub),
                binutils: board.binutils,
            },
            &kernel.image,
            &initramfs,
            &format!(
                "{} {KERNEL_CMDLINE} sealgate.slot={slot} {} sealgate.data={data_uuid}",
                board.cmdline,
                verity.cmdline(&slot_uuid)
            ),
            &osrel,
            &uki,
        )?;
        let out_uki = linux.join(format!("sealgate-{slot}.efi"));
        keys.sign(&uki, &out_uki, epoch)?;
        let sig = gpg.sign(&out_uki, epoch)?;
        signed.insert(slot, [out_uki, sig]);
    }
    keys.enrol(
        Path::new(board.vars_template),
        &out.join(sealgate_qemu::ENROLLED_VARS),
    )?;
    // What an update installs (`cargo xtask bundle`): the slot image and both UKIs.
    let slot_dir = out.join("slot");
    if slot_dir.exists() {
        fs::remove_dir_all(&slot_dir)?;
    }
    fs::create_dir_all(slot_dir.join("uki"))?;
    fs::copy(inputs.join("root.img"), slot_dir.join("root.img"))?;
    for files in signed.values() {
        for f in files {
            let name = f.file_name().context("file name")?;
            fs::copy(f, slot_dir.join("uki").join(name))?;
        }
    }

    // The EFI system partition.
    make_esp(
        board,
        sysroot,
        &board_dir,
        &inputs.join("esp.vfat"),
        &work,
        epoch,
        &keys,
        &gpg,
        signed.get("A").context("slot A's UKI")?,
    )?;

    // The data partition: empty ext4.
    let empty = work.join("empty");
    fs::create_dir_all(&empty)?;
    sh(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args(["-q", "-F", "-t", "ext4", "-L", "data", "-U", DATA_FS_UUID])
        .arg("-E")
        .arg(format!("hash_seed={DATA_HASH_SEED},root_owner=0:0"))
        .arg("-d")
        .arg(&empty)
        .arg(inputs.join("data.ext4"))
        .arg(format!("{DATA_MIB}M")))?;

    // The disk.
    let gen_out = work.join("genimage-out");
    let gen_tmp = work.join("genimage-tmp");
    sh(Command::new("genimage")
        .arg("--config")
        .arg(board_dir.join("genimage.cfg"))
        .arg("--rootpath")
        .arg(&empty)
        .arg("--tmppath")
        .arg(&gen_tmp)
        .arg("--inputpath")
        .arg(&inputs)
        .arg("--outputpath")
        .arg(&gen_out))?;
    let disk = out.join(format!("sealgate-{}.img", board.name));
    fs::rename(gen_out.join("sealgate.img"), &disk).context("moving the disk image")?;

    write_manifest(board, &out, &disk, &parts, epoch, args)?;
    fs::remove_dir_all(&work).ok();
    let compressed = compressed_size(&disk)?;
    println!(
        "image compressed (zstd -3): {:.1} MiB (budget {COMPRESSED_BUDGET_MIB} MiB)",
        compressed as f64 / f64::from(1u32 << 20)
    );
    if compressed > COMPRESSED_BUDGET_MIB << 20 {
        bail!(
            "the image compresses to {} MiB, over its budget of {COMPRESSED_BUDGET_MIB} MiB",
            compressed >> 20
        );
    }
    Ok(Built { disk })
}

/// What an image may weigh compressed, as it is downloaded or written to a stick.
const COMPRESSED_BUDGET_MIB: u64 = 64;

/// The image's size compressed with `zstd -3`, bytes (about 2 s).
fn compressed_size(disk: &Path) -> Result<u64> {
    let mut child = Command::new("zstd")
        .args(["-3", "-T0", "-q", "-c"])
        .arg(disk)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("zstd (Debian package zstd)")?;
    let mut out = child.stdout.take().context("zstd's output")?;
    let n = std::io::copy(&mut out, &mut std::io::sink())?;
    if !child.wait()?.success() {
        bail!("zstd failed on {}", disk.display());
    }
    Ok(n)
}

/// `SOURCE_DATE_EPOCH` from the environment, else the commit time of `HEAD`.
pub(crate) fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .context("SOURCE_DATE_EPOCH is not a number");
    }
    let out = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .context("git log (for SOURCE_DATE_EPOCH)")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no SOURCE_DATE_EPOCH and no commit time of HEAD")
}

/// The Rust binaries to install, by their name in `/usr/bin`.
/// What a board's image is assembled from.
struct Parts {
    /// The box's Rust binaries by name.
    binaries: BTreeMap<&'static str, PathBuf>,
    kernel: Kernel,
    /// Where the other runtime files (busybox, libraries, RAUC, the EFI stub) come from.
    sysroot: Sysroot,
    /// `name version` of what the image is made of, for the manifest.
    packages: Vec<String>,
}

/// The qemu-x86_64 image is made of the build machine's own Debian (bookworm) and the
/// workspace built with the host's toolchain. The qemu-aarch64 image: the board's own kernel
/// (aarch64.rs), the binaries built with trixie's Rust (cross.rs) and the rest from trixie's
/// arm64 packages unpacked in a cached root, since the binaries need trixie's glibc.
fn parts(board: Board, root: &Path, args: &Args) -> Result<Parts> {
    if board.name != "qemu-aarch64" {
        let built = crate::kernel::build(board.kernel)?;
        let mut names: Vec<String> = IMAGE_PACKAGES.iter().map(|p| p.to_string()).collect();
        names.extend(
            [
                "libc6",
                "libtss2-esys-3.0.2-0",
                "libtss2-tctildr0",
                "grub-common",
            ]
            .map(String::from),
        );
        let mut packages: Vec<String> = names
            .iter()
            .map(|p| format!("debian {p} {}", installed_version(p)))
            .collect();
        packages.push(kernel_source_line());
        return Ok(Parts {
            binaries: build_binaries(root, args)?,
            kernel: Kernel::board(board, built),
            sysroot: Sysroot::host(),
            packages,
        });
    }
    ensure_debian_packages(AARCH64_IMAGE_PACKAGES)?;
    let bringup = crate::aarch64::build_bringup()?;
    println!(
        "built the board's kernel {} and TPM probe {}",
        bringup.kernel.image.display(),
        bringup.probe.display()
    );
    let mut packages = Vec::new();
    let mut binaries = BTreeMap::new();
    if BINARIES.iter().any(|(_, b)| args.given(b).is_none()) {
        let cross = crate::cross::build()?;
        for (bin, path) in &cross.binaries {
            println!("built {bin} for {}: {}", board.rust_target, path.display());
        }
        println!(
            "they run here with: qemu-aarch64-static -L {} BINARY",
            cross.root.display()
        );
        binaries = cross.binaries;
        packages.extend(cross.versions.lines().map(|l| format!("built-with {l}")));
    }
    for (_, bin) in BINARIES {
        if let Some(p) = args.given(bin) {
            binaries.insert(*bin, p.clone());
        }
    }
    let runtime = crate::cross::ensure_runtime_root()?;
    packages.extend(
        crate::cross::runtime_versions(&runtime)?
            .iter()
            .map(|l| format!("debian {l}")),
    );
    packages.push(kernel_source_line());
    Ok(Parts {
        binaries,
        kernel: Kernel::board(board, bringup.kernel),
        sysroot: Sysroot {
            dir: runtime,
            emulator: Some("qemu-aarch64-static"),
        },
        packages,
    })
}

/// What the aarch64 image build needs on the build machine besides the kernel's and the
/// cross build's packages: the arm64 binutils (`strip`, `objcopy` for the UKI), user-mode
/// emulation (busybox's applet list, GRUB's `grub-mkimage`) and AAVMF's variable store.
pub(crate) const AARCH64_IMAGE_PACKAGES: &[&str] = &[
    "binutils-aarch64-linux-gnu",
    "qemu-user-static",
    "qemu-efi-aarch64",
];

/// The installed version of Debian package `p` on the build machine, or `?`.
fn installed_version(p: &str) -> String {
    let v = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", p])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if v.is_empty() { "?".into() } else { v }
}

/// A root file system the image's runtime files are taken from, by the box's paths: the
/// build machine itself (`/`), or a foreign architecture's root whose programs run under
/// user-mode emulation. Symbolic links inside it resolve inside it.
pub(crate) struct Sysroot {
    dir: PathBuf,
    emulator: Option<&'static str>,
}

impl Sysroot {
    fn host() -> Sysroot {
        Sysroot {
            dir: PathBuf::from("/"),
            emulator: None,
        }
    }

    /// The real file behind the box's path `p` (every symbolic link followed inside the root).
    fn path(&self, p: &str) -> PathBuf {
        let mut todo: Vec<String> = p
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut at: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    at.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = self.dir.join(at.join("/")).join(&c);
            match fs::read_link(&candidate) {
                Ok(target) if links < 40 => {
                    links += 1;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        at.clear();
                    }
                    todo.extend(
                        t.split('/')
                            .filter(|c| !c.is_empty())
                            .rev()
                            .map(String::from),
                    );
                }
                _ => at.push(c),
            }
        }
        self.dir.join(at.join("/"))
    }

    /// Runs the root's program `p` (the box's path).
    fn command(&self, p: &str) -> Command {
        match self.emulator {
            None => Command::new(self.path(p)),
            Some(emulator) => {
                let mut c = Command::new(emulator);
                c.arg("-L").arg(&self.dir).arg(self.path(p));
                c
            }
        }
    }

    /// The shared libraries the root's ELF file `elf` loads, directly or through another,
    /// its program interpreter included: each by the name it is loaded as, with its real file
    /// (`readelf`'s `NEEDED` entries looked up where Debian's loader looks).
    fn needed_libraries(&self, board: Board, elf: &Path) -> Result<BTreeMap<String, PathBuf>> {
        let dirs = [
            format!("/usr/lib/{}", board.triplet),
            format!("/lib/{}", board.triplet),
            "/usr/lib".to_string(),
            "/lib".to_string(),
        ];
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut todo = vec![elf.to_path_buf()];
        while let Some(file) = todo.pop() {
            let out = Command::new("readelf")
                .args(["-d", "-l", "-W"])
                .arg(&file)
                .output()
                .context("readelf (Debian package binutils)")?;
            if !out.status.success() {
                bail!(
                    "readelf {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                if let Some(interp) = line
                    .split_once("[Requesting program interpreter: ")
                    .map(|(_, r)| r.trim_end_matches(']'))
                {
                    let name = interp.rsplit('/').next().unwrap_or(interp);
                    found.insert(name.to_string(), self.path(interp));
                }
                let Some(name) = line
                    .contains("(NEEDED)")
                    .then(|| line.rsplit_once('[').map(|(_, r)| r.trim_end_matches(']')))
                    .flatten()
                else {
                    continue;
                };
                if found.contains_key(name) {
                    continue;
                }
                let lib = dirs
                    .iter()
                    .map(|d| self.path(&format!("{d}/{name}")))
                    .find(|p| p.is_file())
                    .with_context(|| {
                        format!(
                            "{}: {name} not found under {}",
                            elf.display(),
                            self.dir.display()
                        )
                    })?;
                found.insert(name.to_string(), lib.clone());
                todo.push(lib);
            }
        }
        Ok(found)
    }
}

fn build_binaries(root: &Path, args: &Args) -> Result<BTreeMap<&'static str, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--locked"]);
    let mut any = false;
    for (package, bin) in BINARIES {
        if args.given(bin).is_none() {
            cmd.args(["-p", package]);
            any = true;
        }
    }
    if any {
        sh(&mut cmd).context("building the box's binaries")?;
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut out = BTreeMap::new();
    for (_, bin) in BINARIES {
        let path = args
            .given(bin)
            .cloned()
            .unwrap_or_else(|| target_dir.join("release").join(bin));
        if !path.is_file() {
            bail!("{} was not built", path.display());
        }
        out.insert(*bin, path);
    }
    Ok(out)
}

/// The kernel an image boots.
struct Kernel {
    version: String,
    image: PathBuf,
}

impl Kernel {
    /// The board's own kernel (kernel.rs): every driver built in.
    fn board(board: Board, built: crate::kernel::Built) -> Kernel {
        Kernel {
            version: format!(
                "{} (the board's own, board/{}/linux*.fragment)",
                built.version, board.name
            ),
            image: built.image,
        }
    }
}

/// The manifest's line for the kernel's source package.
fn kernel_source_line() -> String {
    let p = crate::kernel::SOURCE_PACKAGE;
    format!("built-with {p} {}", installed_version(p))
}

fn stage_initramfs(sysroot: &Sysroot, root: &Path, dir: &Path) -> Result<()> {
    for d in ["bin", "dev", "proc", "sys", "newroot"] {
        fs::create_dir_all(dir.join(d))?;
    }
    copy_file(
        &sysroot.path("/bin/busybox"),
        &dir.join("bin/busybox"),
        0o755,
    )?;
    symlink("busybox", dir.join("bin/sh"))?;
    // No dmsetup: the kernel maps the slot through dm-verity from the signed command line
    // (`dm-mod.create=`, verity.rs), so stage 1 is busybox (static) and its script.
    copy_file(
        &root.join("rootfs/initramfs/init"),
        &dir.join("init"),
        0o755,
    )?;
    Ok(())
}

/// Writes a newc cpio archive of `dir` (sorted, every mtime `epoch`, owned by root),
/// gzip-compressed without a name or time in its header.
pub(crate) fn cpio_gzip(dir: &Path, out: &Path, epoch: u64) -> Result<()> {
    cpio_compressed(dir, out, epoch, "gzip -9 -n")
}

/// Like [`cpio_gzip`], zstd-compressed (level 19, one thread: the same bytes every time).
/// Stage-1 inside the signed UKI: the firmware hashes the whole UKI several times per boot
/// (Authenticode, PCR 4, the stub's PCR 11, the initrd again into PCR 9), so its size costs
/// seconds under emulation; zstd makes it smaller than gzip and unpacks faster.
pub(crate) fn cpio_zstd(dir: &Path, out: &Path, epoch: u64) -> Result<()> {
    cpio_compressed(dir, out, epoch, "zstd -19 -T1 -q -c")
}

fn cpio_compressed(dir: &Path, out: &Path, epoch: u64, compress: &str) -> Result<()> {
    let files = sorted_tree(dir)?;
    set_mtimes(dir, &files, epoch)?;
    let list: String = files.iter().map(|f| format!("{f}\n")).collect();
    let script = format!(
        "cpio --quiet -o -H newc --owner=0:0 --reproducible | {compress} > '{}'",
        out.display()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running cpio")?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("cpio stdin")?
        .write_all(list.as_bytes())?;
    if !child.wait()?.success() {
        bail!("cpio | {compress} failed");
    }
    Ok(())
}

/// Every path under `dir`, relative (`.` first), sorted bytewise.
fn sorted_tree(dir: &Path) -> Result<Vec<String>> {
    let mut out = vec![".".to_string()];
    fn walk(base: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(base.join(rel))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            out.push(format!("./{}", r.display()));
            if e.file_type()?.is_dir() {
                walk(base, &r, out)?;
            }
        }
        Ok(())
    }
    walk(dir, Path::new(""), &mut out)?;
    out.sort();
    Ok(out)
}

fn set_mtimes(dir: &Path, files: &[String], epoch: u64) -> Result<()> {
    let mut cmd = Command::new("touch");
    cmd.current_dir(dir)
        .arg("-h")
        .arg("-d")
        .arg(format!("@{epoch}"))
        .arg("--")
        .args(files);
    sh(&mut cmd)
}

fn stage_rootfs(
    board: Board,
    sysroot: &Sysroot,
    root: &Path,
    binaries: &BTreeMap<&'static str, PathBuf>,
    rootfs: &Path,
) -> Result<()> {
    let libdir = format!("usr/lib/{}", board.triplet);
    for d in [
        "usr/bin", "usr/sbin", &libdir, "boot", "dev", "proc", "sys", "run", "tmp", "var", "data",
        "root", "etc",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    // Merged /usr, as Debian: one place for binaries and libraries.
    for (link, to) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        symlink(to, rootfs.join(link))?;
    }
    if board.loader.starts_with("/lib64/") {
        fs::create_dir_all(rootfs.join("usr/lib64"))?;
        symlink("usr/lib64", rootfs.join("lib64"))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;

    // busybox and its applets (our own files win over an applet of the same name).
    copy_file(
        &sysroot.path("/bin/busybox"),
        &rootfs.join("usr/bin/busybox"),
        0o755,
    )?;
    let list = sysroot
        .command("/bin/busybox")
        .arg("--list-full")
        .output()
        .context("busybox --list-full")?;
    let mut elf: Vec<PathBuf> = Vec::new();
    elf.extend(binaries.values().cloned());
    for (bin, path) in binaries {
        let dest = rootfs.join("usr/bin").join(bin);
        copy_file(path, &dest, 0o755)?;
        // The release profile keeps line tables; the box keeps symbols (backtraces) only.
        if fs::read(&dest)?.starts_with(b"\x7fELF") {
            sh(Command::new(format!("{}strip", board.binutils))
                .arg("--strip-debug")
                .arg(&dest))?;
        }
    }
    // The system's trust anchors (Debian's Mozilla bundle), where rustls-native-certs looks:
    // a next hop, relay, login server or IMAP upstream with a public certificate is verified
    // without a CA file of its own.
    copy_file(
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        &rootfs.join("etc/ssl/certs/ca-certificates.crt"),
        0o644,
    )?;
    // The spam classifier's model (`cargo xtask model`), where `[scan] model` looks by default.
    let model = crate::model::ensure()?;
    fs::create_dir_all(rootfs.join("usr/share/sealgate"))?;
    copy_file(
        &model,
        &rootfs.join("usr/share/sealgate/spam-model.bin"),
        0o644,
    )?;
    // e2fsprogs for the data partition's check at boot and the full factory reset.
    for tool in ["e2fsck", "mke2fs"] {
        let src = sysroot.path(&format!("/sbin/{tool}"));
        copy_file(&src, &rootfs.join("usr/sbin").join(tool), 0o755)?;
        elf.push(src);
    }
    // Updates: RAUC (Debian's, with its D-Bus service) and the D-Bus system bus it serves on
    // (`dbus-daemon`; the box's own policy file in the overlay lets only root and sealgated's
    // user call RAUC), its configuration for the board and the update CA's keyring:
    // `SEALGATE_OTA_KEYRING` (the vendor's CA certificates, PEM), else the DEVELOPMENT CA.
    for tool in ["rauc", "dbus-daemon"] {
        let src = sysroot.path(&format!("/usr/bin/{tool}"));
        copy_file(&src, &rootfs.join("usr/bin").join(tool), 0o755)?;
        elf.push(src);
    }
    copy_file(
        &sysroot.path("/usr/share/dbus-1/system.conf"),
        &rootfs.join("usr/share/dbus-1/system.conf"),
        0o644,
    )?;
    copy_file(
        &root.join("board").join(board.name).join("rauc/system.conf"),
        &rootfs.join("etc/rauc/system.conf"),
        0o644,
    )?;
    let keyring = std::env::var_os("SEALGATE_OTA_KEYRING")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("board/dev-keys/ota-ca.pem"));
    copy_file(&keyring, &rootfs.join("etc/rauc/keyring.pem"), 0o644)?;
    // D-Bus clients read the machine id; the boot writes one to /run (the root is read-only).
    symlink("/run/machine-id", rootfs.join("etc/machine-id"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let name = applet.rsplit('/').next().unwrap_or(applet);
        let dir = if applet.contains("sbin/") {
            "usr/sbin"
        } else {
            "usr/bin"
        };
        let dest = rootfs.join(dir).join(name);
        if dest.symlink_metadata().is_ok()
            || rootfs.join("usr/bin").join(name).symlink_metadata().is_ok()
        {
            continue;
        }
        let target = if dir == "usr/bin" {
            "busybox".to_string()
        } else {
            "../bin/busybox".to_string()
        };
        symlink(target, dest)?;
    }

    // Shared libraries: what the binaries need, plus the TPM's TCTI (dlopen'ed by tss2-tctildr).
    let tcti_name = "libtss2-tcti-device.so.0";
    let tcti = sysroot.path(&format!("/usr/lib/{}/{tcti_name}", board.triplet));
    if !tcti.exists() {
        bail!(
            "{} is missing: apt-get install libtss2-tcti-device0",
            tcti.display()
        );
    }
    elf.push(tcti.clone());
    let mut libs = BTreeMap::new();
    for e in &elf {
        libs.extend(sysroot.needed_libraries(board, e)?);
    }
    libs.insert(tcti_name.to_string(), tcti);
    for (name, lib) in &libs {
        if name.starts_with("ld-linux") {
            let dest = rootfs.join(board.loader.trim_start_matches('/'));
            let dest = if board.loader.starts_with("/lib64/") {
                rootfs.join("usr/lib64").join(name)
            } else {
                dest
            };
            copy_file(lib, &dest, 0o755)?;
        } else {
            copy_file(lib, &rootfs.join(&libdir).join(name), 0o644)?;
        }
    }

    // The shared overlay.
    copy_tree(&root.join("rootfs/overlay"), rootfs)?;
    symlink("/run/resolv.conf", rootfs.join("etc/resolv.conf"))?;
    symlink("/proc/mounts", rootfs.join("etc/mtab"))?;
    if rootfs.join("usr/sbin/init").symlink_metadata().is_err() {
        bail!("busybox has no init applet");
    }
    let version = env!("CARGO_PKG_VERSION");
    fs::write(
        rootfs.join("etc/os-release"),
        format!(
            "NAME=Sealgate\nID=sealgate\nVERSION_ID={version}\nPRETTY_NAME=\"Sealgate {version}\"\nVARIANT_ID={}\n",
            board.name
        ),
    )?;

    // The kernel and stage-1 are not in the slot: they are in its signed UKI on the ESP
    // (GRUB under Secure Boot would refuse them here anyway), and every byte of the slot is
    // read through dm-verity at each boot.
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn make_esp(
    board: Board,
    sysroot: &Sysroot,
    board_dir: &Path,
    esp: &Path,
    work: &Path,
    epoch: u64,
    keys: &crate::secureboot::Keys,
    gpg: &crate::secureboot::GrubSigner,
    signed_ukis: &[PathBuf],
) -> Result<()> {
    // GRUB without shim, signed for the firmware (db), with the public key that GRUB checks
    // grub.cfg's and each UKI's detached signature with (in Secure Boot's lockdown GRUB
    // starts nothing that no verifier checked); the firmware checks each UKI against db too.
    let unsigned = work.join("grub.unsigned.efi");
    sh(sysroot
        .command("/usr/bin/grub-mkimage")
        .arg("-d")
        .arg(sysroot.path(&format!("/usr/lib/grub/{}", board.grub_platform)))
        .args([
            "-O",
            board.grub_platform,
            "-p",
            "/EFI/BOOT",
            "--disable-shim-lock",
            "-o",
        ])
        .arg(&unsigned)
        .arg("--pubkey")
        .arg(gpg.pubkey())
        .args(GRUB_MODULES)
        .args(GRUB_VERIFY_MODULES))?;
    let efi = work.join(board.efi_file);
    keys.sign(&unsigned, &efi, epoch)?;
    let files = work.join("esp-files");
    fs::create_dir_all(&files)?;
    copy_file(&board_dir.join("grub.cfg"), &files.join("grub.cfg"), 0o644)?;
    fs::write(
        files.join("grubenv"),
        grubenv(&[
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
        ]),
    )?;
    let cfg_sig = gpg.sign(&files.join("grub.cfg"), epoch)?;
    let sources = [
        efi.clone(),
        files.join("grub.cfg"),
        cfg_sig,
        files.join("grubenv"),
    ];
    let mut names: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    names.extend(signed_ukis.iter().map(|p| p.display().to_string()));
    set_mtimes(work, &names, epoch)?;

    sh(Command::new("mkfs.vfat")
        .args([
            "--invariant",
            "-F",
            "16",
            "-n",
            "ESP",
            "-i",
            ESP_VOLUME_ID,
            "-C",
        ])
        .arg(esp)
        .arg((ESP_MIB * 1024).to_string()))?;
    let mtools = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(args[0]);
        cmd.env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch.to_string());
        cmd.arg("-i").arg(esp).args(&args[1..]);
        sh(&mut cmd)
    };
    mtools(&["mmd", "::/EFI", "::/EFI/BOOT"])?;
    for src in &sources {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?;
        let dest = format!("::/EFI/BOOT/{name}");
        mtools(&["mcopy", "-m", &src.display().to_string(), &dest])?;
    }
    mtools(&["mmd", "::/EFI/Linux"])?;
    for src in signed_ukis {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?;
        let dest = format!("::/EFI/Linux/{name}");
        mtools(&["mcopy", "-m", &src.display().to_string(), &dest])?;
    }
    Ok(())
}

/// The `partition-uuid` of partition `name` in a genimage configuration.
pub(crate) fn partition_uuid(cfg: &str, name: &str) -> Result<String> {
    let mut in_part = false;
    for line in cfg.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix("partition ") {
            in_part = rest.trim_end_matches('{').trim() == name;
        } else if in_part && let Some(v) = line.strip_prefix("partition-uuid") {
            let uuid = v.trim_start_matches([' ', '=']).trim().trim_matches('"');
            let ok = uuid.len() == 36
                && uuid.bytes().enumerate().all(|(i, b)| {
                    if [8, 13, 18, 23].contains(&i) {
                        b == b'-'
                    } else {
                        b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
                    }
                });
            if !ok {
                bail!("partition {name}'s partition-uuid {uuid:?} is not a lower-case UUID");
            }
            return Ok(uuid.to_string());
        }
    }
    bail!("genimage.cfg gives partition {name} no partition-uuid")
}

/// A GRUB environment block: exactly 1024 bytes, `#`-padded.
pub(crate) fn grubenv(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("# GRUB Environment Block\n");
    for (k, v) in vars {
        s.push_str(&format!("{k}={v}\n"));
    }
    let mut b = s.into_bytes();
    b.resize(1024, b'#');
    b
}

fn write_manifest(
    board: Board,
    out: &Path,
    disk: &Path,
    parts: &Parts,
    epoch: u64,
    args: &Args,
) -> Result<()> {
    let (binaries, kernel) = (&parts.binaries, &parts.kernel);
    let mut m = format!(
        "# Sealgate image manifest: what this image is made of.\nboard {}\nSOURCE_DATE_EPOCH {epoch}\nkernel {}\n",
        board.name, kernel.version
    );
    for p in &parts.packages {
        m.push_str(&format!("{p}\n"));
    }
    for (bin, path) in binaries {
        let note = if args.given(bin).is_some() {
            " (given with --binary)"
        } else {
            ""
        };
        m.push_str(&format!("binary {bin} {}{note}\n", sha256(path)?));
    }
    m.push_str(&format!(
        "disk {} {}\n",
        disk.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        sha256(disk)?
    ));
    fs::write(out.join("manifest.txt"), m)?;
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("sha256sum")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string())
}

fn copy_file(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies `src`'s tree over `dest`, keeping modes and symlinks.
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            fs::create_dir_all(&to)?;
            copy_tree(&from, &to)?;
        } else if ty.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else {
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            copy_file(&from, &to, if mode & 0o111 != 0 { 0o755 } else { 0o644 })?;
        }
    }
    Ok(())
}

/// Runs `cmd`, failing with its stderr.
pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_roots_links_resolve_inside_it() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("usr/lib/aarch64-linux-gnu")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        fs::write(r.join("usr/lib/aarch64-linux-gnu/libx.so.0.1"), b"x").unwrap();
        symlink("libx.so.0.1", r.join("usr/lib/aarch64-linux-gnu/libx.so.0")).unwrap();
        // An absolute link means the root's own file, never the build machine's.
        symlink(
            "/usr/lib/aarch64-linux-gnu/libx.so.0",
            r.join("usr/lib/ld-linux-aarch64.so.1"),
        )
        .unwrap();
        symlink("../lib/../bin/./busybox", r.join("usr/bin/sh")).unwrap();
        let root = Sysroot {
            dir: r.to_path_buf(),
            emulator: None,
        };
        let want = r.join("usr/lib/aarch64-linux-gnu/libx.so.0.1");
        assert_eq!(root.path("/lib/ld-linux-aarch64.so.1"), want);
        assert_eq!(root.path("/lib/aarch64-linux-gnu/libx.so.0"), want);
        assert_eq!(root.path("/bin/sh"), r.join("usr/bin/busybox"));
        // A loop ends (at its last name) instead of spinning.
        symlink("loop", r.join("usr/bin/loop")).unwrap();
        assert!(root.path("/bin/loop").starts_with(r));
    }

    #[test]
    fn the_data_partitions_uuid_comes_from_genimage_cfg() {
        let root = workspace_root().unwrap();
        let cfg = fs::read_to_string(root.join("board/qemu-x86_64/genimage.cfg")).unwrap();
        assert_eq!(
            partition_uuid(&cfg, "data").unwrap(),
            "5ea19a7e-0000-4000-8000-0000000000da"
        );
        assert_eq!(
            partition_uuid(&cfg, "rootA").unwrap(),
            "5ea19a7e-0000-4000-8000-00000000000a"
        );
        assert!(partition_uuid(&cfg, "nope").is_err());
        let bad = "partition data {\n partition-uuid = \"5EA19A7E-0000-4000-8000-0000000000DA\"\n}";
        assert!(partition_uuid(bad, "data").is_err());
    }

    #[test]
    fn grubenv_is_one_kibibyte() {
        let env = grubenv(&[("ORDER", "A B")]);
        assert_eq!(env.len(), 1024);
        assert!(env.starts_with(b"# GRUB Environment Block\nORDER=A B\n#"));
    }

    #[test]
    fn every_board_has_its_folder() {
        let root = workspace_root().unwrap();
        for b in BOARDS {
            let dir = root.join("board").join(b.name);
            assert!(dir.join("genimage.cfg").is_file(), "{}", dir.display());
            assert!(dir.join("grub.cfg").is_file(), "{}", dir.display());
            for f in ["linux-base.fragment", "linux.fragment"] {
                assert!(dir.join(f).is_file(), "{}", dir.display());
            }
        }
    }
}
