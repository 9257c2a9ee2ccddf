//! `cargo xtask bench`: not written yet (the lead owns it).

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// What to benchmark (e.g. `smime`).
    pub what: Vec<String>,
}

/// Runs the benchmarks.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench: not yet")
}
