//! `cargo xtask test`: README's "run all tests" command, and what `.ci/run` calls.
//!
//! It must work as root on a fresh Debian 12 machine: it installs what the tests need,
//! runs every test, fuzzes every target for a short while, and fails unless the interop
//! tests really ran (a missing peer must never turn into a quietly green run).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Debian packages that building the workspace's binaries needs (a C compiler for aws-lc-sys,
/// pkg-config and libtss2 for tss-esapi-sys). Every xtask command that builds `sealgated`,
/// `sealctl` or the console ensures these first (see `tests::every_builder_installs_the_build_packages`).
pub(crate) const BUILD_PACKAGES: &[&str] = &["build-essential", "pkg-config", "libtss2-dev"];

/// Debian packages the tests need, all in this one list: the S/MIME peers (openssl,
/// gpgsm with gnupg's agent), the TPM crate's library and simulator (libtss2-dev, swtpm,
/// tpm2-tools, pkg-config), and a C toolchain for aws-lc-sys.
const DEBIAN_PACKAGES: &[&str] = &[
    "openssl",
    "gnupg",
    "gpgsm",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    // The docking API's tests (tests/docking): curl as a vendor's client, swaks (with
    // Net::SSLeay/IO::Socket::SSL for STARTTLS) into the SMTP hand-off.
    "curl",
    "swaks",
    "libnet-ssleay-perl",
    "libio-socket-ssl-perl",
    // The certificate directory's tests (tests/directory, tests/docking/directory.rs): an
    // OpenLDAP server and its client tools; python3 serves the HTTPS directory.
    "slapd",
    "ldap-utils",
    "python3",
    // SMIMEA (tests/directory): Knot DNS signs the partner's zone, unbound validates it.
    "knot",
    "unbound",
    // Postfix: the SMTP queue's next hop (tests/docking/queue.rs) and, with Dovecot, the
    // organisation's servers of the gateway's tests (tests/gateway).
    "postfix",
    "dovecot-core",
    // The IMAP proxy's tests (tests/docking/imap.rs): Dovecot as the upstream and the
    // reference, curl's IMAP URLs as a second client (Python's imaplib is in the stdlib).
    "dovecot-imapd",
    // Real mail clients against the IMAP proxy: mbsync syncing 1,000 messages, mutt in tmux.
    "isync",
    "mutt",
    "tmux",
    // The web UI's browser test (tests/docking/webui.rs): headless Chromium, driven by
    // Playwright (never its own browser download); npm for axe-core.
    "chromium",
    "nodejs",
    // The network and DNS tests (tests/network): iproute2 for namespaces and `ip -j`, dig,
    // Knot DNS (listed above) as the forwarders' upstream.
    "iproute2",
    "dnsutils",
    // Content scanning (tests/scan): ClamAV's test files as real malware samples, Info-ZIP's
    // zip for a password-protected archive (python3, listed above, makes the other archives).
    "clamav-testfiles",
    "zip",
    // The daemon's DHCP client against dnsmasq's DHCP server, its SNTP client against
    // chrony serving time (faketime: a server whose clock is off), util-linux's unshare and
    // nsenter for the hostname in a UTS namespace.
    "dnsmasq-base",
    "chrony",
    "faketime",
    "util-linux",
];

/// PyPI packages the docking tests need (a vendor's Python client, the OpenAPI checker, the
/// SMTP next hop), pinned.
const PYTHON_PACKAGES: &[&str] = &[
    "requests==2.34.2",
    "schemathesis==4.32.5",
    "aiosmtpd==1.4.6",
    "playwright==1.65.3",
];

/// npm packages the web UI's browser test needs (axe-core's accessibility rules), pinned,
/// installed under `target/webui-node/` (never into `webui/`, whose files are embedded).
const NPM_PACKAGES: &[&str] = &["axe-core@4.14.1"];

/// Test binaries against real peers: each must run with tests passed and none failed.
const INTEROP_BINARIES: &[&str] = &[
    "interop_openssl",
    "interop_gpgsm",
    "interop_corpus",
    "interop_negative",
    "vault_cli",
    "vault_tpm",
    "vault_crash",
    "vault_audit",
    "docking",
    "directory",
    "gateway",
    "network",
    "system",
];

/// Arguments of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds each fuzz target runs.
    #[arg(long, default_value_t = 60)]
    fuzz_seconds: u64,
}

/// Runs all tests; see the module documentation.
pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let ci = std::env::var_os("CI").is_some();
    print_disk_space(&root);

    step("Debian packages");
    ensure_debian_packages(
        &[
            BUILD_PACKAGES,
            DEBIAN_PACKAGES,
            crate::image::IMAGE_PACKAGES,
            crate::qemu::QEMU_PACKAGES,
            crate::aarch64::AARCH64_PACKAGES,
        ]
        .concat(),
    )?;

    step("Python packages");
    ensure_python_packages()?;

    step("npm packages");
    ensure_npm_packages(&root)?;

    step("cargo-fuzz");
    ensure_cargo_fuzz(&cargo)?;

    let mut problems: Vec<String> = Vec::new();

    // The system tests (tests/system/) boot this image; building it here keeps it current.
    step("cargo xtask image --board qemu-x86_64");
    if let Err(e) = crate::image::build_default() {
        problems.push(format!("the x86_64 image did not build: {e:#}"));
    }

    // The aarch64 board's kernel and TPM probe (booted by tests/system/).
    step("aarch64 board kernel and TPM probe");
    if let Err(e) = crate::aarch64::build_bringup() {
        problems.push(format!("the aarch64 kernel or probe did not build: {e:#}"));
    }

    step("cargo test --workspace --all-targets");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    if ci {
        // A one-off build gains nothing from incremental state (gigabytes on disk).
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    let (ok, output) = run_teed(&mut cmd)?;
    if !ok {
        problems.push("cargo test --workspace --all-targets failed".into());
    }
    let mut results = parse_libtest(&output);

    step("cargo test --workspace --doc");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["test", "--workspace", "--doc", "--no-fail-fast"]);
    if ci {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    let (ok, output) = run_teed(&mut cmd)?;
    if !ok {
        problems.push("cargo test --workspace --doc failed".into());
    }
    for (name, r) in parse_libtest(&output) {
        results.entry(name).or_default().add(&r);
    }

    step("fuzz");
    print_disk_space(&root);
    let fuzz_results = run_fuzzers(&cargo, &root, args.fuzz_seconds);
    for (target, outcome) in &fuzz_results {
        if let Err(e) = outcome {
            problems.push(format!("fuzz target {target}: {e}"));
        }
    }

    // Summary.
    step("summary");
    let mut total = Totals::default();
    println!(
        "{:<40} {:>7} {:>7} {:>8}",
        "test binary", "passed", "failed", "ignored"
    );
    for (name, r) in &results {
        println!(
            "{name:<40} {:>7} {:>7} {:>8}",
            r.passed, r.failed, r.ignored
        );
        total.add(r);
    }
    for name in INTEROP_BINARIES {
        match results.get(*name) {
            None => problems.push(format!("interop test binary {name} did not run")),
            Some(r) if r.passed == 0 => {
                problems.push(format!("interop test binary {name} passed no test"))
            }
            Some(r) if r.failed > 0 => {
                problems.push(format!("interop test binary {name}: {} failed", r.failed))
            }
            Some(_) => {}
        }
    }
    if total.ignored > 0 {
        problems.push(format!(
            "{} tests were ignored: every test must run",
            total.ignored
        ));
    }
    for (target, outcome) in &fuzz_results {
        match outcome {
            Ok(()) => println!("fuzz {target}: ok ({} s)", args.fuzz_seconds),
            Err(e) => println!("fuzz {target}: FAILED: {e}"),
        }
    }
    println!("time: {:.0} s", started.elapsed().as_secs_f64());
    for p in &problems {
        println!("problem: {p}");
    }
    // The plain closing line CI reads.
    println!("{} passed, {} failed", total.passed, total.failed);
    if !problems.is_empty() {
        bail!("{} problem(s); see above", problems.len());
    }
    Ok(())
}

/// Installs the pinned PyPI packages with the machine's `python3 -m pip` when one is missing.
fn ensure_python_packages() -> Result<()> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .copied()
        .filter(|spec| {
            let (name, version) = spec.split_once("==").unwrap_or((spec, ""));
            let out = Command::new("python3").args(["-m", "pip", "show", name]).output();
            !matches!(out, Ok(o) if o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == format!("Version: {version}")))
        })
        .collect();
    if missing.is_empty() {
        println!("all installed: {}", PYTHON_PACKAGES.join(" "));
        return Ok(());
    }
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .args(&missing)
        .status()?;
    if !status.success() {
        bail!("python3 -m pip install {} failed", missing.join(" "));
    }
    Ok(())
}

/// Installs the pinned npm packages under `target/webui-node/` when one is missing.
fn ensure_npm_packages(root: &Path) -> Result<()> {
    let prefix = root.join("target/webui-node");
    let missing: Vec<&str> = NPM_PACKAGES
        .iter()
        .copied()
        .filter(|spec| {
            let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
            let manifest = prefix.join("node_modules").join(name).join("package.json");
            let text = std::fs::read_to_string(manifest).unwrap_or_default();
            !text.contains(&format!("\"version\": \"{version}\""))
        })
        .collect();
    if missing.is_empty() {
        println!("all installed: {}", NPM_PACKAGES.join(" "));
        return Ok(());
    }
    std::fs::create_dir_all(&prefix)?;
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(&prefix)
        .args(&missing)
        .status()?;
    if !status.success() {
        bail!(
            "npm install {} failed (npm: Debian package nodejs)",
            missing.join(" ")
        );
    }
    Ok(())
}

fn step(name: &str) {
    println!("\n==> {name}");
}

/// The workspace root: two levels above this crate.
pub(crate) fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .context("finding the workspace root")
}

/// Installs the missing ones of `packages` (only then touching apt), or,
/// when not root, fails with the command to run.
pub(crate) fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for pkg in packages {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .stderr(Stdio::null())
            .output()
            .context("dpkg-query not found: `cargo xtask test` expects Debian 12")?;
        if String::from_utf8_lossy(&out.stdout).trim() != "install ok installed" {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        println!("all installed: {}", packages.join(" "));
        return Ok(());
    }
    let install = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root()? {
        bail!("missing Debian packages; as root run:\n  {install}");
    }
    println!("installing: {}", missing.join(" "));
    let status = Command::new("apt-get")
        .arg("update")
        .status()
        .context("apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    if missing.contains(&"postfix") {
        // The tests start their own Postfix instances: the host's stays unconfigured.
        let mut c = Command::new("debconf-set-selections")
            .stdin(Stdio::piped())
            .spawn()
            .context("debconf-set-selections")?;
        if let Some(mut stdin) = c.stdin.take() {
            stdin.write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
        }
        c.wait()?;
    }
    let status = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .stdin(Stdio::null())
        .status()
        .context("apt-get install")?;
    if !status.success() {
        bail!("`{install}` failed");
    }
    Ok(())
}

fn is_root() -> Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn ensure_cargo_fuzz(cargo: &std::ffi::OsStr) -> Result<()> {
    let have = Command::new(cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if have {
        println!("cargo fuzz is installed");
        return Ok(());
    }
    let status = Command::new(cargo)
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz --locked failed");
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr merged into one pipe (so cargo's "Running" lines on
/// stderr stay in order with libtest's results on stdout), echoing every line as it comes
/// and returning the whole output.
fn run_teed(cmd: &mut Command) -> Result<(bool, String)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone()?)
        .stderr(writer)
        .stdin(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // Our copies of the write end must be gone before reading to EOF.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut all = String::new();
    let stdout = std::io::stdout();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        all.push_str(&line);
        all.push('\n');
    }
    let status = child.wait()?;
    Ok((status.success(), all))
}

/// Test counts of one test binary.
#[derive(Default, Debug, Clone)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Reads cargo test output: "Running … (target/debug/deps/NAME-HASH)" or
/// "Doc-tests NAME" lines name the binary, "test result: …" lines give its counts.
fn parse_libtest(output: &str) -> BTreeMap<String, Totals> {
    let mut results: BTreeMap<String, Totals> = BTreeMap::new();
    let mut current = String::from("?");
    for line in output.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Running ") {
            let inner = rest
                .rsplit_once('(')
                .map(|(_, r)| r.trim_end_matches(')'))
                .unwrap_or(rest);
            let file = Path::new(inner)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            current = match file.rsplit_once('-') {
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_string()
                }
                _ => file,
            };
        } else if let Some(rest) = t.strip_prefix("Doc-tests ") {
            current = format!("doc:{}", rest.trim());
        } else if let Some(rest) = t.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        let part = part
                            .trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ");
                        part.strip_suffix(word).and_then(|n| n.trim().parse().ok())
                    })
                    .unwrap_or(0)
            };
            let r = Totals {
                passed: count("passed"),
                failed: count("failed"),
                ignored: count("ignored"),
            };
            results.entry(current.clone()).or_default().add(&r);
        }
    }
    results
}

/// Runs every target of fuzz/ for `seconds`, each on a temporary corpus directory first
/// (where libFuzzer writes what it finds) and the committed seed corpus second (read
/// only), so CI never writes into the repository.
fn run_fuzzers(cargo: &std::ffi::OsStr, root: &Path, seconds: u64) -> Vec<(String, Result<()>)> {
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        return vec![(
            "(none)".into(),
            Err(anyhow::anyhow!(
                "no fuzz/Cargo.toml: the fuzz targets are missing"
            )),
        )];
    }
    let list = Command::new(cargo)
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "list"])
        .output();
    let targets: Vec<String> = match list {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        Ok(o) => {
            return vec![(
                "(list)".into(),
                Err(anyhow::anyhow!(
                    "cargo fuzz list failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                )),
            )];
        }
        Err(e) => {
            return vec![(
                "(list)".into(),
                Err(anyhow::anyhow!("cargo fuzz list: {e}")),
            )];
        }
    };
    if targets.is_empty() {
        return vec![(
            "(none)".into(),
            Err(anyhow::anyhow!("cargo fuzz list found no targets")),
        )];
    }
    let mut results = Vec::new();
    for target in targets {
        let outcome = fuzz_one(cargo, root, &fuzz_dir, &target, seconds);
        results.push((target, outcome));
    }
    results
}

/// Builds one fuzz target (retrying once: the first build downloads the fuzz crate's own
/// dependencies), then runs it. A crash is reported with libFuzzer's own verdict lines and the
/// crashing input (base64, if small), so a CI log alone is enough to reproduce it.
fn fuzz_one(
    cargo: &std::ffi::OsStr,
    root: &Path,
    fuzz_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<()> {
    let build = || {
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "build", target]);
        println!("running {cmd:?}");
        run_teed(&mut cmd).map(|(ok, _)| ok)
    };
    if !build()? && !build()? {
        bail!("cargo fuzz build {target} failed twice (see the build output above)");
    }
    let scratch =
        std::env::temp_dir().join(format!("sealgate-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let before: BTreeSet<PathBuf> = list_files(&artifacts);
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", target])
        .arg(&scratch);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    } else {
        println!("warning: no committed seed corpus at {}", seeds.display());
    }
    cmd.arg("--").arg(format!("-max_total_time={seconds}"));
    println!("running {cmd:?}");
    let (ok, output) = run_teed(&mut cmd)?;
    let _ = std::fs::remove_dir_all(&scratch);
    if ok {
        return Ok(());
    }
    let mut report = String::from("crashed:");
    for line in output
        .lines()
        .filter(|l| {
            l.contains("ERROR:")
                || l.contains("panicked at")
                || l.contains("SUMMARY:")
                || l.contains("Test unit written to")
                || l.contains("out-of-memory")
                || l.contains("No space left")
                || l.contains("error:")
        })
        .take(20)
    {
        report.push_str("\n    ");
        report.push_str(line.trim());
    }
    for new in list_files(&artifacts).difference(&before) {
        // Run the input alone: tells a crash of that input from one of the run as a whole
        // (memory growth over many inputs, the leak checker's own failures).
        let alone = Command::new(cargo)
            .current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            .arg(new)
            .output()
            .map(|o| o.status.success());
        report.push_str(match alone {
            Ok(false) => "\n    the input crashes when run alone",
            Ok(true) => "\n    the input does NOT crash when run alone",
            Err(_) => "\n    the input could not be run alone",
        });
        let data = std::fs::read(new).unwrap_or_default();
        report.push_str(&format!(
            "\n    input {} ({} bytes)",
            new.display(),
            data.len()
        ));
        if data.len() <= 8192 {
            report.push_str(&format!(": base64 {}", base64_encode(&data)));
        }
    }
    bail!("{report}")
}

/// Prints the free space where the builds go (a full disk fails builds in confusing ways).
fn print_disk_space(root: &Path) {
    if let Ok(o) = Command::new("df").arg("-h").arg(root).output() {
        print!("{}", String::from_utf8_lossy(&o.stdout));
    }
}

fn list_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Standard base64 with padding (for crash reports only).
fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_for_crash_reports() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob\xff"), "Zm9vYv8=");
    }

    #[test]
    fn parses_cargo_test_output() {
        let out = "     Running unittests src/lib.rs (target/debug/deps/sealgate_smime-0123abcd)\n\
                   test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   \x20    Running ../../tests/interop/openssl.rs (/t/debug/deps/interop_openssl-deadbeef00)\n\
                   test result: FAILED. 70 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9s\n\
                   \x20  Doc-tests sealgate_smime\n\
                   test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.5s\n";
        let r = parse_libtest(out);
        assert_eq!(r["sealgate_smime"].passed, 5);
        assert_eq!(r["sealgate_smime"].ignored, 1);
        assert_eq!(r["interop_openssl"].passed, 70);
        assert_eq!(r["interop_openssl"].failed, 3);
        assert_eq!(r["doc:sealgate_smime"].passed, 2);
    }

    /// The pkg-config modules the workspace's `-sys` crates probe at build time
    /// (tss-esapi-sys's build script).
    const PKG_CONFIG_MODULES: &[&str] = &["tss2-sys", "tss2-esys", "tss2-tctildr", "tss2-mu"];

    /// Every command that builds the binaries installs the build's packages first, so a fresh
    /// machine never reaches a `-sys` crate's build script without its library.
    #[test]
    fn every_builder_installs_the_build_packages() {
        let commands: [(&str, Vec<&str>); 6] = [
            ("image", crate::image::build_packages()),
            ("qemu (image missing)", crate::qemu::run_packages(true)),
            ("bench smime", crate::bench::smime_packages()),
            ("bench docking", crate::bench_docking::packages()),
            ("bench smtp", crate::bench::smtp_packages()),
            (
                "test",
                [
                    BUILD_PACKAGES,
                    DEBIAN_PACKAGES,
                    crate::image::IMAGE_PACKAGES,
                ]
                .concat(),
            ),
        ];
        for (name, list) in commands {
            for pkg in BUILD_PACKAGES {
                assert!(
                    list.contains(pkg),
                    "`cargo xtask {name}` does not install {pkg}"
                );
            }
        }
    }

    /// The build packages really provide what the build probes: each pkg-config module's
    /// `.pc` file belongs to a package in `BUILD_PACKAGES` (asked of dpkg, which knows the
    /// owner of every installed file).
    #[test]
    fn build_packages_provide_the_native_build_inputs() {
        for module in PKG_CONFIG_MODULES {
            let out = Command::new("pkg-config")
                .args(["--variable=pcfiledir", module])
                .output()
                .expect("pkg-config runs (Debian package pkg-config)");
            assert!(
                out.status.success(),
                "pkg-config does not know {module}: install libtss2-dev"
            );
            let pc = format!(
                "{}/{module}.pc",
                String::from_utf8_lossy(&out.stdout).trim()
            );
            let owner = Command::new("dpkg")
                .args(["-S", &pc])
                .output()
                .expect("dpkg runs");
            let owner = String::from_utf8_lossy(&owner.stdout);
            let pkg = owner
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            assert!(
                BUILD_PACKAGES.contains(&pkg.as_str()),
                "{pc} comes from {pkg:?}, which BUILD_PACKAGES does not list"
            );
        }
    }
}
