//! `cargo xtask bench docking`: the docking API under load (`wrk`) against the in-process
//! engine measured in the same run, and peak memory with 64 concurrent 10 MiB uploads.
//!
//! The measuring code is the `docking` bench target of the `sealgated` package, built in the
//! release (bench) profile so that the daemon and the engine are both optimised.

use std::process::Command;

/// What `cargo xtask bench docking` installs: the build's packages, the load generator, the
/// client that makes its test keys' requests and the PKI tool.
pub(crate) fn packages() -> Vec<&'static str> {
    [
        crate::test::BUILD_PACKAGES,
        &["wrk", "curl", "openssl", "util-linux"],
    ]
    .concat()
}

/// Runs the docking benchmark (installs `wrk`, `curl`, `openssl` first).
pub fn run() -> anyhow::Result<()> {
    crate::test::ensure_debian_packages(&packages())?;
    let status = Command::new(env!("CARGO"))
        .args(["bench", "--package", "sealgated", "--bench", "docking"])
        .status()?;
    anyhow::ensure!(status.success(), "the docking benchmark failed");
    Ok(())
}
