//! `cargo xtask bench docking`: the docking API under load (`wrk`) against the in-process
//! engine measured in the same run, and peak memory with 64 concurrent 10 MiB uploads.
//!
//! The measuring code is the `docking` bench target of the `sealgated` package, built in the
//! release (bench) profile so that the daemon and the engine are both optimised.

use std::process::Command;

/// Runs the docking benchmark; needs `wrk`, `curl` and `openssl` (Debian packages).
pub fn run() -> anyhow::Result<()> {
    for tool in ["wrk", "curl", "openssl"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()?
            .status
            .success();
        anyhow::ensure!(found, "`{tool}` is missing: apt-get install {tool}");
    }
    let status = Command::new(env!("CARGO"))
        .args(["bench", "--package", "sealgated", "--bench", "docking"])
        .status()?;
    anyhow::ensure!(status.success(), "the docking benchmark failed");
    Ok(())
}
