//! `cargo xtask bench`: benchmarks that print ratios against references measured in the same run.

use std::process::Command;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// What to benchmark: `smime` (the S/MIME engine against `openssl speed`), `docking`
    /// (the docking API under `wrk` against the in-process engine), `directory` (lookups per
    /// second, cold and warm, against local slapd and HTTPS peers).
    #[arg(default_value = "smime")]
    pub what: Vec<String>,
}

/// What `cargo xtask bench smime` installs: the build's packages and `openssl` (the reference).
pub(crate) fn smime_packages() -> Vec<&'static str> {
    [crate::test::BUILD_PACKAGES, &["openssl"]].concat()
}

/// Runs the benchmarks. Each is a release-built `cargo bench` target with its own harness,
/// so the numbers come from optimised code; the targets measure their references themselves.
pub fn run(args: Args) -> anyhow::Result<()> {
    for what in &args.what {
        match what.as_str() {
            "smime" => {
                crate::test::ensure_debian_packages(&smime_packages())?;
                let status = Command::new(env!("CARGO"))
                    .args(["bench", "--package", "sealgate-smime", "--bench", "smime"])
                    .status()?;
                anyhow::ensure!(status.success(), "the smime benchmark failed");
            }
            "docking" => crate::bench_docking::run()?,
            "directory" => {
                crate::test::ensure_debian_packages(
                    &[
                        crate::test::BUILD_PACKAGES,
                        &["slapd", "ldap-utils", "python3"],
                    ]
                    .concat(),
                )?;
                let status = Command::new(env!("CARGO"))
                    .args([
                        "bench",
                        "--package",
                        "sealgate-directory",
                        "--bench",
                        "directory",
                    ])
                    .status()?;
                anyhow::ensure!(status.success(), "the directory benchmark failed");
            }
            other => {
                anyhow::bail!("unknown benchmark {other:?} (known: smime, docking, directory)")
            }
        }
    }
    Ok(())
}
