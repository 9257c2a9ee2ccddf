//! `cargo xtask`: Sealgate's multi-step project tasks. Each subcommand's doc comment is
//! its `--help` text.

mod aarch64;
mod bench;
mod bench_docking;
mod dist_src;
mod image;
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
    /// Run all tests: installs missing Debian packages and cargo-fuzz, runs
    /// `cargo test --workspace --all-targets`, a short fuzz run of every target, and
    /// fails unless every interop test binary ran with tests passed and none ignored.
    Test(test::Args),
    /// Benchmarks (`cargo xtask bench smime`).
    Bench(bench::Args),
    /// Build the box's disk image offline from Debian packages (`--board qemu-x86_64`;
    /// `--board qemu-aarch64` builds the board's kernel and TPM probe, then stops: no aarch64
    /// Rust standard library here).
    Image(image::Args),
    /// Boot the box under QEMU with a software TPM, console on this terminal, host ports
    /// forwarded (README's "run the product" command).
    Qemu(qemu::Args),
    /// Make the source tarball with vendored crates that Buildroot's sealgate package builds
    /// offline.
    DistSrc(dist_src::Args),
    /// Check that board/buildroot/ agrees with the offline image build.
    CheckBuildroot,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(args) => test::run(args),
        Command::Bench(args) => {
            // One line, never a backtrace: a missing tool names its Debian package.
            if let Err(e) = bench::run(args) {
                eprintln!("cargo xtask bench: {}", bench::one_line(&e));
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Image(args) => image::run(args),
        Command::Qemu(args) => qemu::run(args),
        Command::DistSrc(args) => dist_src::run(args),
        Command::CheckBuildroot => dist_src::check_buildroot(),
    }
}
