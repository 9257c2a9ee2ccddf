//! `cargo xtask`: Sealgate's multi-step project tasks. Each subcommand's doc comment is
//! its `--help` text.

mod bench;
mod test;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
