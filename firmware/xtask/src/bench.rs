//! `cargo xtask bench`: benchmarks that print ratios against references measured in the same run.

use std::process::Command;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// What to benchmark: `smime` (the S/MIME engine against `openssl speed`), `docking`
    /// (the docking API under `wrk` against the in-process engine), `smtp` (the box signing
    /// and encrypting under `smtp-source` against a Postfix plain relay), `directory` (lookups
    /// per second, cold and warm, against local slapd and HTTPS peers), `dns` (the split-horizon
    /// DNS server's answers per second under `dnsperf` against Knot DNS serving the same zone),
    /// `imap` (a 1,000-message mailbox synced by `mbsync` and fetched one by one by Python's
    /// imaplib through the IMAP proxy, cold and warm, against Dovecot directly).
    #[arg(default_value = "smime")]
    pub what: Vec<String>,
}

/// What `cargo xtask bench smime` installs: the build's packages and `openssl` (the reference).
pub(crate) fn smime_packages() -> Vec<&'static str> {
    [crate::test::BUILD_PACKAGES, &["openssl"]].concat()
}

/// What `cargo xtask bench smtp` installs: the build's packages, Postfix (`smtp-source` and
/// the reference relay), the PKI tool and `taskset`.
pub(crate) fn smtp_packages() -> Vec<&'static str> {
    [
        crate::test::BUILD_PACKAGES,
        &["postfix", "openssl", "util-linux"],
    ]
    .concat()
}

/// What `cargo xtask bench imap` installs: the build's packages, Dovecot (the upstream and
/// the reference), `mbsync`, Python (imaplib is in its standard library) and the PKI tool.
pub(crate) fn imap_packages() -> Vec<&'static str> {
    [
        crate::test::BUILD_PACKAGES,
        &[
            "dovecot-core",
            "dovecot-imapd",
            "isync",
            "python3",
            "openssl",
        ],
    ]
    .concat()
}

/// Installs `packages`, then runs the `bench` target of `package` (release-built).
fn cargo_bench(package: &str, bench: &str, packages: &[&str]) -> anyhow::Result<()> {
    crate::test::ensure_debian_packages(packages)?;
    let status = Command::new(env!("CARGO"))
        .args(["bench", "--package", package, "--bench", bench])
        .status()?;
    anyhow::ensure!(status.success(), "the {bench} benchmark failed");
    Ok(())
}

/// Runs the benchmarks. Each is a release-built `cargo bench` target with its own harness,
/// so the numbers come from optimised code; the targets measure their references themselves.
pub fn run(args: Args) -> anyhow::Result<()> {
    for what in &args.what {
        match what.as_str() {
            "smime" => cargo_bench("sealgate-smime", "smime", &smime_packages())?,
            "docking" => crate::bench_docking::run()?,
            "smtp" => cargo_bench("sealgated", "smtp", &smtp_packages())?,
            "dns" => cargo_bench(
                "sealgated",
                "dns",
                &[
                    crate::test::BUILD_PACKAGES,
                    &["dnsperf", "knot", "dnsutils", "util-linux"],
                ]
                .concat(),
            )?,
            "directory" => {
                crate::test::ensure_debian_packages(
                    &[
                        crate::test::BUILD_PACKAGES,
                        &["slapd", "ldap-utils", "python3", "knot", "unbound"],
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
            "imap" => cargo_bench("sealgated", "imap", &imap_packages())?,
            other => {
                anyhow::bail!(
                    "unknown benchmark {other:?} (known: smime, docking, smtp, directory, dns, imap)"
                )
            }
        }
    }
    Ok(())
}
