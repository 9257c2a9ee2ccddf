//! `cargo xtask bench`: benchmarks that print ratios against references measured in the same run.
//!
//! Every benchmark first installs the Debian packages it needs, then checks that each tool it
//! runs is on the path; anything missing ends the command with one line naming the package
//! (`main` prints errors of this subcommand on one line, never with a backtrace).

use std::path::PathBuf;
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
    /// imaplib through the IMAP proxy, cold and warm, against Dovecot directly), `scan`
    /// (decryption and every local check of content scanning, messages/s at 10 KiB and 1 MiB on
    /// two threads, against SpamAssassin's spamd/spamc on the same messages).
    #[arg(default_value = "smime")]
    pub what: Vec<String>,
    /// Also write every row and ratio as JSON (`{"rows": [...], "ratios": {...}}`) to FILE
    /// (`smime` and `docking`; the names are listed in README's benchmark section).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One benchmark: the `cargo bench` target that measures, what it installs, what it runs.
struct Bench {
    name: &'static str,
    package: &'static str,
    target: &'static str,
    /// Debian packages installed before the run (the build's packages come on top).
    debian: &'static [&'static str],
    /// Programs the run starts, each with the Debian package that ships it.
    tools: &'static [(&'static str, &'static str)],
    /// Whether the target writes `--json FILE`.
    json: bool,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "smime",
        package: "sealgate-smime",
        target: "smime",
        debian: &["openssl"],
        tools: &[("openssl", "openssl")],
        json: true,
    },
    Bench {
        name: "docking",
        package: "sealgated",
        target: "docking",
        debian: &["wrk", "curl", "openssl", "util-linux"],
        tools: &[
            ("wrk", "wrk"),
            ("curl", "curl"),
            ("openssl", "openssl"),
            ("taskset", "util-linux"),
        ],
        json: true,
    },
    Bench {
        name: "smtp",
        package: "sealgated",
        target: "smtp",
        debian: &["postfix", "openssl", "util-linux"],
        tools: &[
            ("smtp-source", "postfix"),
            ("postfix", "postfix"),
            ("openssl", "openssl"),
            ("taskset", "util-linux"),
        ],
        json: false,
    },
    Bench {
        name: "dns",
        package: "sealgated",
        target: "dns",
        debian: &["dnsperf", "knot", "dnsutils", "util-linux"],
        tools: &[
            ("dnsperf", "dnsperf"),
            ("knotd", "knot"),
            ("dig", "dnsutils"),
            ("taskset", "util-linux"),
        ],
        json: false,
    },
    Bench {
        name: "directory",
        package: "sealgate-directory",
        target: "directory",
        debian: &["slapd", "ldap-utils", "python3", "knot", "unbound"],
        tools: &[
            ("slapd", "slapd"),
            ("ldapadd", "ldap-utils"),
            ("python3", "python3"),
            ("knotd", "knot"),
            ("unbound", "unbound"),
        ],
        json: false,
    },
    Bench {
        name: "imap",
        package: "sealgated",
        target: "imap",
        // Dovecot (the upstream and the reference), mbsync, Python's imaplib, the PKI tool.
        debian: &[
            "dovecot-core",
            "dovecot-imapd",
            "isync",
            "python3",
            "openssl",
        ],
        tools: &[
            ("dovecot", "dovecot-core"),
            ("mbsync", "isync"),
            ("python3", "python3"),
            ("openssl", "openssl"),
        ],
        json: false,
    },
    Bench {
        name: "scan",
        package: "sealgate-scan",
        target: "scan",
        // The reference (SpamAssassin's daemon and client) and the PKI tool.
        debian: &["spamassassin", "spamd", "spamc", "openssl"],
        tools: &[
            ("spamd", "spamd"),
            ("spamc", "spamc"),
            ("openssl", "openssl"),
        ],
        json: false,
    },
];

fn bench(name: &str) -> Option<&'static Bench> {
    BENCHES.iter().find(|b| b.name == name)
}

fn packages(name: &str) -> Vec<&'static str> {
    let extra = bench(name).map(|b| b.debian).unwrap_or_default();
    [crate::test::BUILD_PACKAGES, extra].concat()
}

/// What `cargo xtask bench smime` installs: the build's packages and `openssl` (the reference).
#[cfg(test)]
pub(crate) fn smime_packages() -> Vec<&'static str> {
    packages("smime")
}

/// What `cargo xtask bench docking` installs: the build's packages, the load generator, the
/// client that makes its test keys' requests, the PKI tool and `taskset`.
#[cfg(test)]
pub(crate) fn docking_packages() -> Vec<&'static str> {
    packages("docking")
}

/// What `cargo xtask bench smtp` installs: the build's packages, Postfix (`smtp-source` and
/// the reference relay), the PKI tool and `taskset`.
#[cfg(test)]
pub(crate) fn smtp_packages() -> Vec<&'static str> {
    packages("smtp")
}

/// Is `tool` a program on the path (or in `/usr/sbin`, `/sbin`, where Debian puts daemons)?
fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Installs what `b` needs and checks its tools; the first problem as one line.
fn prepare(b: &Bench) -> anyhow::Result<()> {
    crate::test::ensure_debian_packages(&packages(b.name)).map_err(|e| {
        anyhow::anyhow!(
            "bench {}: could not install its Debian packages: {}",
            b.name,
            one_line(&e)
        )
    })?;
    for (tool, package) in b.tools {
        anyhow::ensure!(
            on_path(tool),
            "bench {}: `{tool}` is missing: install the Debian package `{package}`",
            b.name
        );
    }
    Ok(())
}

/// An error and its causes on one line (newlines and indentation folded).
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the benchmarks. Each is a release-built `cargo bench` target with its own harness,
/// so the numbers come from optimised code; the targets measure their references themselves.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut chosen = Vec::new();
    for what in &args.what {
        let Some(b) = bench(what) else {
            let known: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
            anyhow::bail!("unknown benchmark {what:?} (known: {})", known.join(", "));
        };
        chosen.push(b);
    }
    let json = match &args.json {
        None => None,
        Some(file) => {
            anyhow::ensure!(
                chosen.len() == 1,
                "--json FILE takes one benchmark at a time"
            );
            let b = chosen.first().map(|b| b.name).unwrap_or_default();
            anyhow::ensure!(
                chosen.iter().all(|b| b.json),
                "--json: `bench {b}` writes no JSON (smime and docking do)"
            );
            // The bench target runs in its package's directory: give it an absolute path.
            let abs = std::path::absolute(file)?;
            if let Some(parent) = abs.parent() {
                anyhow::ensure!(
                    parent.is_dir(),
                    "--json {}: the directory {} does not exist",
                    file.display(),
                    parent.display()
                );
            }
            Some(abs)
        }
    };
    for b in &chosen {
        prepare(b)?;
    }
    for b in chosen {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["bench", "--package", b.package, "--bench", b.target]);
        if let Some(file) = &json {
            cmd.arg("--").arg("--json").arg(file);
        }
        let status = cmd.status()?;
        anyhow::ensure!(status.success(), "the {} benchmark failed", b.target);
    }
    Ok(())
}
