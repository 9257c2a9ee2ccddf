//! The box's Rust binaries for aarch64, built with Debian's own Rust.
//!
//! rustup cannot fetch another target's standard library here, but Debian trixie ships one
//! (`libstd-rust-web-dev:arm64` beside `rustc-web`). Trixie's compiler needs trixie's glibc,
//! so it runs in a trixie root made with `mmdebstrap` (amd64 + arm64 multiarch), cached
//! outside the clone under `$SEALGATE_CACHE` (default `/var/cache/sealgate/`), keyed by the
//! suite and the package list: a tool root, never anything built from this workspace.
//!
//! The build: the host's cargo fetches the locked crates into the root's cargo home (the root
//! has no CA configuration for the registry), then, in a private mount namespace, the
//! workspace and the target folder are bind-mounted into the root and trixie's cargo builds
//! `sealgated`, `sealctl` and the console `--release --frozen` for
//! `aarch64-unknown-linux-gnu` into `target/aarch64-trixie/` (a folder of its own: another
//! compiler's artefacts). The x86_64 build stays on the host toolchain.
//!
//! The binaries need glibc 2.38 or later: the aarch64 image's runtime comes from trixie too.
//! `versions.txt` beside them records the Debian packages they were built with.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::{BINARIES, sh};
use crate::test::{cache_dir, ensure_debian_packages, workspace_root};

/// The Debian suite the cross root comes from.
pub(crate) const SUITE: &str = "trixie";
/// Where the root's packages come from (the machine's own Debian mirror's host).
const MIRROR: &str = "http://deb.debian.org/debian";
/// The root's packages (STACK.md, "aarch64 Rust binaries from Debian packages"): trixie's
/// plain `rustc` is 1.85, older than the workspace's rust-version; `rustc-web` is 1.96.
pub(crate) const ROOT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev:arm64",
    "gcc-aarch64-linux-gnu",
    "libc6-dev:arm64",
    "pkg-config",
    "libtss2-dev:arm64",
];
/// The host's packages this needs: mmdebstrap makes the root, unshare and chroot
/// (util-linux, coreutils) run the build in it.
pub(crate) const HOST_PACKAGES: &[&str] = &["mmdebstrap", "util-linux"];
/// Rust's name of the target.
pub(crate) const TARGET: &str = "aarch64-unknown-linux-gnu";

/// What [`build`] produced.
pub(crate) struct Cross {
    /// Binary name → the built file.
    pub binaries: BTreeMap<&'static str, PathBuf>,
    /// The trixie root: its arm64 libraries run the binaries under `qemu-aarch64-static -L`.
    pub root: PathBuf,
    /// `package version` lines of the root's build packages.
    pub versions: String,
}

/// A cached Debian root's folder name: its kind, the suite and a digest of what it is made of.
fn root_key(kind: &str, packages: &[&str]) -> String {
    // FNV-1a: stable across compilers (a folder name, not a security boundary).
    let inputs = format!("{SUITE}\n{MIRROR}\n{}\n", packages.join(" "));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in inputs.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{kind}-{SUITE}-{h:016x}")
}

/// Makes (or reuses) the trixie cross root.
pub(crate) fn ensure_root() -> Result<PathBuf> {
    ensure_debian_root(
        "aarch64-cross",
        &["--variant=apt", "--architectures=amd64,arm64"],
        ROOT_PACKAGES,
        "about 350 MiB to download",
    )
}

/// The aarch64 image's runtime: trixie's arm64 packages, unpacked (`--variant=extract`:
/// nothing runs, nothing is configured), their `.deb` files kept for the manifest's versions.
/// The image build copies from it what the x86_64 build copies from the build machine.
pub(crate) const RUNTIME_PACKAGES: &[&str] = &[
    "busybox-static",
    "e2fsprogs",
    // What the box's binaries load (their `NEEDED`), and the TPM's TCTI they open.
    "libgcc-s1",
    "libtss2-esys-3.0.2-0t64",
    "libtss2-mu-4.0.1-0t64",
    "libtss2-tctildr0t64",
    "libtss2-tcti-device0t64",
    "rauc",
    "dbus-daemon",
    "dbus-system-bus-common",
    // The UKI's stub (`linuxaa64.efi.stub`) and GRUB for arm64-efi with its own grub-mkimage
    // (run under qemu-aarch64-static, so tool and modules are one version).
    "systemd-boot-efi",
    "grub-efi-arm64-bin",
];

/// Makes (or reuses) the arm64 runtime root.
pub(crate) fn ensure_runtime_root() -> Result<PathBuf> {
    ensure_debian_root(
        "aarch64-runtime",
        &[
            "--variant=extract",
            "--architectures=arm64",
            "--skip=cleanup/apt/cache",
        ],
        RUNTIME_PACKAGES,
        "about 60 MiB to download",
    )
}

/// Makes (or reuses) a root of `packages` from trixie under the cache folder.
fn ensure_debian_root(
    kind: &str,
    options: &[&str],
    packages: &[&str],
    size: &str,
) -> Result<PathBuf> {
    let cache = cache_dir();
    let key = root_key(kind, packages);
    let root = cache.join(&key);
    if root.join(".complete").is_file() {
        println!("{kind} root: {} (cached)", root.display());
        return Ok(root);
    }
    ensure_debian_packages(HOST_PACKAGES)?;
    let partial = cache.join(format!("{key}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&cache).with_context(|| {
        format!(
            "creating {} (run as root, or set SEALGATE_CACHE)",
            cache.display()
        )
    })?;
    println!(
        "making the {SUITE} {kind} root {} (mmdebstrap, {size})",
        root.display()
    );
    let started = std::time::Instant::now();
    sh(Command::new("mmdebstrap")
        .args(options)
        .arg("--quiet")
        .arg(format!("--include={}", packages.join(",")))
        .arg(SUITE)
        .arg(&partial)
        .arg(MIRROR))
    .with_context(|| {
        format!("mmdebstrap (Debian package mmdebstrap) could not make the {kind} root")
    })?;
    fs::write(partial.join(".complete"), packages.join("\n"))?;
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::rename(&partial, &root)?;
    println!(
        "{kind} root made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// `package version` of every `.deb` a root of [`ensure_runtime_root`] was unpacked from.
pub(crate) fn runtime_versions(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("var/cache/apt/archives");
    let mut debs: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    let mut out = Vec::new();
    for deb in debs {
        let o = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .args(["Package", "Version"])
            .output()
            .context("dpkg-deb")?;
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push(format!("{}:arm64 {}", field("Package:"), field("Version:")));
    }
    if out.is_empty() {
        bail!("no .deb files in {}", dir.display());
    }
    Ok(out)
}

/// The versions of the root's build packages, one `package version` per line.
fn root_versions(root: &Path) -> Result<String> {
    let out = Command::new("chroot")
        .arg(root)
        .args(["dpkg-query", "-W", "-f=${binary:Package} ${Version}\\n"])
        .args(ROOT_PACKAGES)
        .output()
        .context("chroot dpkg-query")?;
    if !out.status.success() {
        bail!(
            "dpkg-query in the cross root failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The folder cargo builds into for the host (`CARGO_TARGET_DIR`, else `target/`), resolved.
fn host_target_dir(workspace: &Path) -> Result<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    fs::create_dir_all(&dir)?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Builds the box's binaries for aarch64 in the cross root; see the module documentation.
pub(crate) fn build() -> Result<Cross> {
    let workspace = workspace_root()?;
    let root = ensure_root()?;
    let target_dir = host_target_dir(&workspace)?;
    let out = target_dir.join("aarch64-trixie");
    fs::create_dir_all(&out)?;

    // The locked crates, fetched by the host's cargo into the root's cargo home.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_home = root.join("cargo-home");
    fs::create_dir_all(&cargo_home)?;
    sh(Command::new(&cargo)
        .current_dir(&workspace)
        .env("CARGO_HOME", &cargo_home)
        // Every platform's crates: the build scripts and proc macros run on the host.
        .args(["fetch", "--locked"]))
    .context("cargo fetch into the cross root's cargo home")?;

    for d in ["src", "cross-target"] {
        fs::create_dir_all(root.join(d))?;
    }
    let packages: Vec<String> = BINARIES
        .iter()
        .flat_map(|(p, _)| ["-p".to_string(), (*p).to_string()])
        .collect();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let inner = format!(
        "cd /src && exec cargo build --release --frozen --target {TARGET} \
         --target-dir /cross-target -j {jobs} {}",
        packages.join(" ")
    );
    let q = |p: &Path| format!("'{}'", p.display());
    let script = format!(
        "set -e; mount --bind {ws} {r}/src; mount --bind {out} {r}/cross-target; \
         mount --bind /dev {r}/dev; \
         exec chroot {r} env -i PATH=/usr/bin:/bin HOME=/root CARGO_HOME=/cargo-home \
         CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
         CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
         AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
         PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR=/ \
         PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
         sh -c '{inner}'",
        ws = q(&workspace),
        out = q(&out),
        r = q(&root),
    );
    println!(
        "building {} for {TARGET} in the {SUITE} root",
        packages.join(" ")
    );
    let started = std::time::Instant::now();
    let status = Command::new("unshare")
        .args(["--mount", "--pid", "--fork"])
        .arg(format!("--mount-proc={}", root.join("proc").display()))
        .args(["sh", "-c", &script])
        .status()
        .context("unshare (util-linux)")?;
    if !status.success() {
        bail!("the aarch64 build in the cross root failed (see above)");
    }
    println!(
        "aarch64 binaries built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut binaries = BTreeMap::new();
    for (_, bin) in BINARIES {
        let path = out.join(TARGET).join("release").join(bin);
        if !path.is_file() {
            bail!("{} was not built", path.display());
        }
        binaries.insert(*bin, path);
    }
    let versions = root_versions(&root)?;
    fs::write(out.join("versions.txt"), &versions)?;
    // Where the system test finds the arm64 libraries to run them with.
    fs::write(out.join("root.txt"), format!("{}\n", root.display()))?;
    Ok(Cross {
        binaries,
        root,
        versions,
    })
}
