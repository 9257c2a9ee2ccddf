//! The boards' own kernels, built from Debian's `linux-source` package: the architecture's
//! `allnoconfig`, then `board/<board>/linux-base.fragment` (what any kernel on that QEMU
//! machine needs) and `linux.fragment` (the box's needs, shared with Buildroot, whose build
//! starts from the architecture's defconfig instead). Every driver the box uses is built in,
//! so the images carry no kernel modules. x86_64 builds natively, aarch64 with Debian's cross
//! compiler.
//!
//! The build is cached: `target/image/<board>/<file>` is rebuilt only when the source tarball
//! or a fragment changes (recorded in `<file>.inputs`); `<file>.config` is the configuration it
//! was built with. A fragment line that `olddefconfig` drops (a dependency is missing) fails
//! the build. The source tree is deleted afterwards (about 1.5 GiB).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::sh;
use crate::test::{ensure_debian_packages, workspace_root};

/// The kernel series both boards build (Debian bookworm's source package).
pub(crate) const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// Debian packages every board kernel build needs. `libelf-dev`: x86_64's `objtool`. No
/// libssl-dev: the configurations have no modules to sign (installing it would also upgrade
/// the libssl3 the interop tests use).
pub(crate) const PACKAGES: &[&str] = &[
    SOURCE_PACKAGE,
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "xz-utils",
    "libelf-dev",
];

/// How one board's kernel is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recipe {
    /// `board/<board>/`.
    pub board: &'static str,
    /// The kernel's `ARCH`.
    pub arch: &'static str,
    /// `CROSS_COMPILE`, empty for a native build.
    pub cross_compile: &'static str,
    /// The make target and where it leaves the image, relative to the source tree.
    pub target: &'static str,
    pub built: &'static str,
    /// The file name under `target/image/<board>/`.
    pub file: &'static str,
}

pub(crate) const X86_64: Recipe = Recipe {
    board: "qemu-x86_64",
    arch: "x86_64",
    cross_compile: "",
    target: "bzImage",
    built: "arch/x86/boot/bzImage",
    file: "bzImage",
};

pub(crate) const AARCH64: Recipe = Recipe {
    board: "qemu-aarch64",
    arch: "arm64",
    cross_compile: "aarch64-linux-gnu-",
    target: "Image",
    built: "arch/arm64/boot/Image",
    file: "Image",
};

/// A built kernel.
pub(crate) struct Built {
    pub image: PathBuf,
    /// The kernel's version (`6.1.172`), from its configuration.
    pub version: String,
}

/// Builds (or reuses) the board's kernel.
pub(crate) fn build(recipe: Recipe) -> Result<Built> {
    ensure_debian_packages(PACKAGES)?;
    let root = workspace_root()?;
    let board = root.join("board").join(recipe.board);
    let out = root.join("target/image").join(recipe.board);
    fs::create_dir_all(&out)?;
    let epoch = crate::image::source_date_epoch(&root)?;
    let image = build_image(recipe, &board, &out, epoch)?;
    let config = fs::read_to_string(out.join(format!("{}.config", recipe.file)))?;
    // `# Linux/x86_64 6.1.172 Kernel Configuration`
    let version = config
        .lines()
        .find_map(|l| l.strip_prefix("# Linux/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .with_context(|| format!("no version in the kernel's {}.config", recipe.file))?
        .to_string();
    Ok(Built { image, version })
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
    found.pop().with_context(|| {
        format!("no /usr/src/linux-source-*.tar.xz: apt-get install {SOURCE_PACKAGE}")
    })
}

/// The lines `CONFIG_X=...` of a fragment.
fn config_lines(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .collect()
}

fn build_image(recipe: Recipe, board: &Path, out: &Path, epoch: u64) -> Result<PathBuf> {
    let tarball = source_tarball()?;
    let base = fs::read_to_string(board.join("linux-base.fragment"))?;
    let fragment = fs::read_to_string(board.join("linux.fragment"))?;
    let meta = fs::metadata(&tarball)?;
    let inputs = format!(
        "source {} {} bytes\n--- linux-base.fragment\n{base}--- linux.fragment\n{fragment}",
        tarball.display(),
        meta.len(),
    );
    let image = out.join(recipe.file);
    let stamp = out.join(format!("{}.inputs", recipe.file));
    if image.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(inputs.as_str()) {
        println!("{} kernel up to date: {}", recipe.board, image.display());
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
    let env = |c: &mut Command| {
        c.current_dir(&src)
            .env("ARCH", recipe.arch)
            .env("CROSS_COMPILE", recipe.cross_compile)
            .env("KBUILD_BUILD_TIMESTAMP", format!("@{epoch}"))
            .env("KBUILD_BUILD_USER", "sealgate")
            .env("KBUILD_BUILD_HOST", "build");
    };
    let make = |args: &[&str]| -> Command {
        let mut c = Command::new("make");
        env(&mut c);
        c.args(args);
        c
    };
    sh(&mut make(&["-s", "allnoconfig"]))?;
    let mut merge = Command::new("scripts/kconfig/merge_config.sh");
    env(&mut merge);
    sh(merge
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
    println!(
        "building the {} kernel (allnoconfig + fragments, {jobs} jobs)",
        recipe.board
    );
    let started = std::time::Instant::now();
    sh(&mut make(&["-s", &format!("-j{jobs}"), recipe.target]))?;
    fs::copy(src.join(recipe.built), &image)?;
    fs::copy(
        src.join(".config"),
        out.join(format!("{}.config", recipe.file)),
    )?;
    fs::write(&stamp, inputs)?;
    fs::remove_dir_all(&src)?;
    println!(
        "{} kernel built in {:.0} s: {} ({} bytes)",
        recipe.board,
        started.elapsed().as_secs_f64(),
        image.display(),
        fs::metadata(&image)?.len()
    );
    Ok(image)
}
