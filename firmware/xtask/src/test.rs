//! `cargo xtask test`: README's "run all tests" command, and what `.ci/run` calls.
//!
//! It must work as root on a fresh Debian 12 machine: it installs what the tests need,
//! builds both boards' images, runs every test (the fuzz targets' corpus replay among them),
//! and fails unless the interop tests really ran (a missing peer must never turn into a
//! quietly green run).

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
    // pip for the PyPI packages below (a machine whose python3 is Debian's has none).
    "python3-pip",
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
    // ClamAV's sigtool (PE section hashes for a .mdb) and clamd over its socket (tests/scan).
    "clamav",
    "clamav-daemon",
    // The daemon's DHCP client against dnsmasq's DHCP server, its SNTP client against
    // chrony serving time (faketime: a server whose clock is off), util-linux's unshare and
    // nsenter for the hostname in a UTS namespace.
    "dnsmasq-base",
    "chrony",
    "faketime",
    "util-linux",
    // The update's PCR 4 prediction (sealgated's update_reseal.rs): osslsigncode computes
    // the Authenticode digest the test compares with.
    "osslsigncode",
    // The admin API's update refusals (tests/docking/admin_update.rs): `rauc info` checks the
    // bundles that `rauc bundle` (squashfs-tools' mksquashfs) makes at test time.
    "rauc",
    "squashfs-tools",
    // RAUC's service on a private session bus (dbus-daemon), driven by the daemon over
    // D-Bus (admin_update.rs).
    "dbus",
    // The update download through an HTTP proxy (`[proxy] url`, CONNECT).
    "tinyproxy",
    // Mail authentication at the MX (tests/gateway/mailauth.rs): DKIM keys made by
    // opendkim-genkey (Knot, listed above, serves them).
    "opendkim-tools",
];

/// PyPI packages the docking tests need (a vendor's Python client, the OpenAPI checker, the
/// SMTP next hop), pinned.
const PYTHON_PACKAGES: &[&str] = &[
    "requests==2.34.2",
    "schemathesis==4.32.5",
    "aiosmtpd==1.4.6",
    "playwright==1.65.3",
    "dkimpy==1.1.8",
    "authres==1.2.0",
    // Office documents and PDFs for the DLP tests (tests/scan/content.rs).
    "python-docx==1.2.0",
    "openpyxl==3.1.5",
    "python-pptx==1.0.2",
    "odfpy==1.4.1",
    "fpdf2==2.8.9",
];

/// npm packages the web UI's browser test needs (axe-core's accessibility rules), pinned,
/// installed under `target/webui-node/` (never into `webui/`, whose files are embedded).
const NPM_PACKAGES: &[&str] = &["axe-core@4.14.1"];

/// One cargo test run: what was run, whether it succeeded, its output.
type Ran = (String, bool, String);

/// The system tests of the aarch64 board's kernel, binaries and image: the system suite's lane
/// runs them after the x86_64 ones, once the image's build (beside everything else since the
/// start of the run) is done.
const AARCH64_TESTS: [&str; 4] = [
    "aarch64_board_kernel_drives_the_tpm",
    "aarch64_binaries_seal_and_unseal_with_a_tpm",
    "aarch64_box_boots_to_the_menu_and_answers_health",
    "ota::aarch64_update_a_to_b_commits_and_keeps_the_vault",
];

/// The package whose tests boot the image under QEMU (tests/system): its own lane.
const QEMU_PACKAGE: &str = "sealgate-qemu";

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
    /// Seconds each fuzz target runs under libFuzzer with `--fuzz-only`.
    #[arg(long, default_value_t = 12)]
    fuzz_seconds: u64,
    /// Only the libFuzzer run (after cargo-fuzz is installed: its release build with
    /// AddressSanitizer, then each target for `--fuzz-seconds`): for whoever changes a parser
    /// or a fuzz target. The ordinary run replays every target's corpus and mutations of it
    /// in the test build instead (`sealgate-fuzz-targets`).
    #[arg(long)]
    fuzz_only: bool,
    /// Leave out the aarch64 image (its binaries from Debian trixie's Rust in a cached root:
    /// 10-15 minutes of 2 CPUs on a fresh machine) and its system tests: a quicker run on a
    /// machine of one's own; CI runs everything.
    #[arg(long)]
    no_aarch64: bool,
    /// Accepted for older command lines: the aarch64 image and its tests are part of every
    /// run now.
    #[arg(long, hide = true)]
    aarch64: bool,
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
            crate::kernel::PACKAGES,
            crate::aarch64::AARCH64_PACKAGES,
            crate::image::AARCH64_IMAGE_PACKAGES,
            crate::cross::HOST_PACKAGES,
        ]
        .concat(),
    )?;

    step("Python packages");
    ensure_python_packages()?;

    step("npm packages");
    ensure_npm_packages(&root)?;

    if args.fuzz_only {
        step("cargo-fuzz");
        ensure_cargo_fuzz(&cargo)?;
        step("fuzz");
        let mut failed = 0;
        for (target, outcome) in run_fuzzers(&cargo, &root, args.fuzz_seconds) {
            match outcome {
                Ok(()) => println!("fuzz {target}: ok ({} s)", args.fuzz_seconds),
                Err(e) => {
                    failed += 1;
                    println!("fuzz {target}: FAILED: {e}");
                }
            }
        }
        println!("time: {:.0} s", started.elapsed().as_secs_f64());
        if failed > 0 {
            bail!("{failed} fuzz target(s) failed; see above");
        }
        return Ok(());
    }

    let mut problems: Vec<String> = Vec::new();

    // The spam classifier's model (npm's SpamAssassin corpus): tests/scan and the image.
    step("cargo xtask model");
    if let Err(e) = crate::model::ensure() {
        problems.push(format!("the spam model was not made: {e:#}"));
    }

    // The aarch64 image (the board's kernel, the binaries' cross build with Debian trixie's
    // Rust in its cached root: the longest build of the run) builds from here on beside
    // everything else, as its own process at a lower CPU priority with its output in a log:
    // it takes the CPU time the builds below leave idle (their single-threaded compiles and
    // links) and later the system suite's waits. Its tests run at the end of the suite's lane.
    let aarch64 = !args.no_aarch64;
    let aarch64_log = root.join("target/aarch64-image.log");
    let mut aarch64_build = None;
    if aarch64 {
        step("start the aarch64 image's build");
        // Both image builds enrol their keys with virt-fw-vars: its venv is made once, here.
        if let Err(e) = sealgate_qemu::virt_fw_vars() {
            problems.push(format!("virt-fw-vars is missing: {e:#}"));
        }
        match spawn_aarch64_image(&root, &aarch64_log) {
            Ok(child) => {
                println!(
                    "the aarch64 image builds beside the steps below; its output goes to {}",
                    aarch64_log.display()
                );
                aarch64_build = Some((Instant::now(), child));
            }
            Err(e) => problems.push(format!("the aarch64 image's build did not start: {e:#}")),
        }
    }

    // The system tests (tests/system/) boot this image; building it here keeps it current.
    step("cargo xtask image --board qemu-x86_64");
    if let Err(e) = crate::image::build_default() {
        problems.push(format!("the x86_64 image did not build: {e:#}"));
    }

    // Two lanes. The QEMU system suite (the `sealgate-qemu` package: its unit tests and
    // tests/system) boots one emulated box at a time and leaves about half of the machine's
    // CPU time idle while a box waits; the other test binaries and the doc tests run beside
    // it (and the aarch64 image's build, in its own process since above). Both lanes' test
    // binaries are built first, so the lanes never wait for each other's cargo lock.
    step("build the test binaries");
    let cargo_test = |selection: &[&str], what: &[&str]| -> Command {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .arg("test")
            .args(selection)
            .args(what);
        if ci {
            // A one-off build gains nothing from incremental state (gigabytes on disk).
            cmd.env("CARGO_INCREMENTAL", "0");
        }
        cmd
    };
    let rest: &[&str] = &["--workspace", "--exclude", QEMU_PACKAGE];
    let qemu: &[&str] = &["-p", QEMU_PACKAGE];
    let mut built = true;
    for selection in [rest, qemu] {
        let (ok, _) = run_logged(
            &mut cargo_test(selection, &["--all-targets", "--no-run"]),
            true,
            None,
        )?;
        built &= ok;
    }
    if !built {
        problems.push("cargo test --workspace --all-targets --no-run failed".into());
    }

    let system_log = root.join("target/system-tests.log");
    let _ = std::fs::remove_file(&system_log);
    println!(
        "the QEMU system suite runs beside the steps below; its output goes to {} and is \
         printed when it ends",
        system_log.display()
    );
    let mut outputs: Vec<Ran> = Vec::new();
    // The suite without the aarch64 tests (they come after it, once their image is built).
    let mut x86_suite = vec!["--all-targets", "--no-fail-fast", "--"];
    for t in AARCH64_TESTS {
        x86_suite.extend(["--skip", t]);
    }
    let system = std::thread::scope(|scope| -> Result<_> {
        let (cargo_test, system_log, aarch64_log) = (&cargo_test, &system_log, &aarch64_log);
        let system = scope.spawn(move || -> Result<(f64, Vec<Ran>, Option<String>)> {
            let started = Instant::now();
            let mut out = Vec::new();
            for (what, label) in [
                (&x86_suite[..], "--all-targets"),
                (&["--doc", "--no-fail-fast"][..], "--doc"),
            ] {
                let (ok, text) = run_logged(&mut cargo_test(qemu, what), false, Some(system_log))?;
                out.push((format!("cargo test -p {QEMU_PACKAGE} {label}"), ok, text));
            }
            let mut cross_problem = None;
            if let Some((began, mut child)) = aarch64_build {
                match child.wait() {
                    Ok(status) if status.success() => {
                        println!(
                            "the aarch64 image was built in {:.0} s (its output: {})",
                            began.elapsed().as_secs_f64(),
                            aarch64_log.display()
                        );
                        let mut test_args = vec!["--test", "system", "--", "--exact"];
                        test_args.extend(AARCH64_TESTS);
                        let (ok, text) =
                            run_logged(&mut cargo_test(qemu, &test_args), false, Some(system_log))?;
                        out.push((
                            format!("cargo test -p {QEMU_PACKAGE} {}", AARCH64_TESTS.join(" ")),
                            ok,
                            text,
                        ));
                    }
                    Ok(status) => {
                        let log = std::fs::read_to_string(aarch64_log).unwrap_or_default();
                        let lines: Vec<&str> = log.lines().collect();
                        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                        println!("\n==> the end of {}\n{tail}", aarch64_log.display());
                        cross_problem = Some(format!(
                            "`cargo xtask image --board qemu-aarch64` ended with {status} (its \
                             output: {})",
                            aarch64_log.display()
                        ));
                    }
                    Err(e) => cross_problem = Some(format!("waiting for its build: {e}")),
                }
            }
            Ok((started.elapsed().as_secs_f64(), out, cross_problem))
        });

        // This lane yields to the system suite: the boxes' boots are what the run waits
        // for. Linux keeps the nice value per thread and a child takes its parent thread's,
        // so renicing this (the main) thread, after the suite's thread was started, lowers
        // only what this lane runs.
        let _ = Command::new("renice")
            .args(["-n", "10", "-p", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();

        step("cargo test --workspace --all-targets (the rest)");
        let (ok, text) = run_logged(
            &mut cargo_test(rest, &["--all-targets", "--no-fail-fast"]),
            true,
            None,
        )?;
        outputs.push(("cargo test --workspace --all-targets".into(), ok, text));

        step("cargo test --workspace --doc (the rest)");
        let (ok, text) = run_logged(
            &mut cargo_test(rest, &["--doc", "--no-fail-fast"]),
            true,
            None,
        )?;
        outputs.push(("cargo test --workspace --doc".into(), ok, text));

        step("the rest of the QEMU system suite");
        let system = system
            .join()
            .map_err(|_| anyhow::anyhow!("the QEMU system suite's thread panicked"))?;
        Ok(system)
    })?;
    let (system_secs, system_outputs, cross_problem) = system?;
    // The system suite's output, whole, after the rest (CI shows the end of the log).
    println!("\n==> output of the QEMU system suite ({system_secs:.0} s, beside the steps above)");
    for (_, _, text) in &system_outputs {
        print!("{text}");
    }
    outputs.extend(system_outputs);
    if let Some(e) = cross_problem {
        problems.push(format!("the aarch64 image did not build: {e}"));
    }

    let mut results: BTreeMap<String, Totals> = BTreeMap::new();
    let mut failures = Vec::new();
    for (what, ok, text) in &outputs {
        if !ok {
            problems.push(format!("{what} failed"));
        }
        // A target that failed without a failed test (a bench or a harness-less binary that
        // exited non-zero) is named by cargo only.
        problems.extend(
            text.lines()
                .filter(|l| l.starts_with("error: test failed, to rerun pass"))
                .map(|l| format!("cargo test: {}", l.trim_start_matches("error: "))),
        );
        for (name, r) in parse_libtest(text) {
            results.entry(name).or_default().add(&r);
        }
        failures.extend(failure_excerpts(text));
    }

    // Summary.
    step("summary");
    let mut total = Totals::default();
    println!(
        "{:<40} {:>7} {:>7} {:>8} {:>8}",
        "test binary", "passed", "failed", "ignored", "seconds"
    );
    for (name, r) in &results {
        println!(
            "{name:<40} {:>7} {:>7} {:>8} {:>8.0}",
            r.passed, r.failed, r.ignored, r.seconds
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
    // CI shows the end of the output: each failed test's name and panic, bounded.
    let mut budget = FAILURE_LINES_TOTAL;
    for f in &failures {
        println!("failed: {} {}", f.binary, f.test);
        for line in f.lines.iter().take(budget) {
            println!("    {line}");
        }
        budget = budget.saturating_sub(f.lines.len());
    }
    for (name, secs) in step_times() {
        println!("step {secs:>6.0} s  {name}");
    }
    println!("time: {:.0} s", started.elapsed().as_secs_f64());
    if !aarch64 {
        for t in AARCH64_TESTS {
            println!("not run: {t} (`--no-aarch64` left it out)");
        }
    }
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

/// Starts `cargo xtask image --board qemu-aarch64` (this program, at nice 10) with its output
/// in `log`.
fn spawn_aarch64_image(root: &Path, log: &Path) -> Result<std::process::Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new("nice")
        .args(["-n", "10"])
        .arg(std::env::current_exe().context("this program's path")?)
        .args(["image", "--board", "qemu-aarch64"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting `nice -n 10 xtask image --board qemu-aarch64`")
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
    // Debian's python3 marks itself externally managed (PEP 668): as root, pip installs into
    // /usr/local, which is what the tests want (a pip that predates PEP 668 ignores this).
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .args(&missing)
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
        .status()?;
    if !status.success() {
        bail!("python3 -m pip install {} failed", missing.join(" "));
    }
    Ok(())
}

/// Makes sure `npm` runs: a machine with Node.js that brings its own npm is left alone;
/// otherwise Debian's `nodejs` and `npm` (on Debian, npm is a package of its own).
pub(crate) fn ensure_npm() -> Result<()> {
    let runs = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Ok(());
    }
    ensure_debian_packages(&["nodejs", "npm"])
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
    ensure_npm()?;
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
    STEPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), std::time::Instant::now()));
}

/// The steps begun so far and when, for the summary's time per step.
static STEPS: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// Each step's duration (up to the next step's start, the last one's up to now).
fn step_times() -> Vec<(String, f64)> {
    let steps = STEPS.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    steps
        .iter()
        .enumerate()
        .map(|(i, (name, at))| {
            let end = steps.get(i + 1).map(|(_, t)| *t).unwrap_or(now);
            (name.clone(), end.duration_since(*at).as_secs_f64())
        })
        .collect()
}

/// Where downloaded tool roots and corpora are cached, outside the clone:
/// `$SEALGATE_CACHE`, else `/var/cache/sealgate`.
pub(crate) fn cache_dir() -> PathBuf {
    std::env::var_os("SEALGATE_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/sealgate"), PathBuf::from)
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
    let missing = not_installed(packages)?;
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
    apt_install(&missing, &install)?;
    // apt may remove an installed package to satisfy another's dependencies (seen: a
    // machine's backported `qemu-utils` removed for Debian's `qemu-system-x86`); the second
    // pass installs the version that fits, and anything still missing stops the run here.
    let removed = not_installed(packages)?;
    if !removed.is_empty() {
        println!("installing again (removed by apt): {}", removed.join(" "));
        apt_install(&removed, &install)?;
        let still = not_installed(packages)?;
        if !still.is_empty() {
            bail!("Debian packages not installed: {}", still.join(" "));
        }
    }
    Ok(())
}

/// The packages of `packages` that dpkg does not list as installed.
fn not_installed<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
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
    Ok(missing)
}

fn apt_install(packages: &[&str], shown: &str) -> Result<()> {
    let status = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .stdin(Stdio::null())
        .status()
        .context("apt-get install")?;
    if !status.success() {
        bail!("`{shown}` failed");
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
    run_logged(cmd, true, None)
}

/// Runs `cmd` with stdout and stderr merged, line by line onto our stdout (`echo`) and/or
/// appended to `log`, and returns whether it succeeded and the whole output.
fn run_logged(cmd: &mut Command, echo: bool, log: Option<&Path>) -> Result<(bool, String)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdout(writer.try_clone()?)
        .stderr(writer)
        .stdin(Stdio::null());
    let mut file = match log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => None,
    };
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // Our copies of the write end must be gone before reading to EOF.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut all = String::new();
    let stdout = std::io::stdout();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        if echo {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{line}");
        }
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
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
    /// libtest's "finished in" time.
    seconds: f64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.seconds += other.seconds;
    }
}

/// Reads cargo test output: "Running … (target/debug/deps/NAME-HASH)" or
/// "Doc-tests NAME" lines name the binary, "test result: …" lines give its counts.
fn parse_libtest(output: &str) -> BTreeMap<String, Totals> {
    let mut results: BTreeMap<String, Totals> = BTreeMap::new();
    let mut current = String::from("?");
    for line in output.lines() {
        let t = line.trim();
        if t.starts_with("Running ") {
            current = binary_name(t);
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
                seconds: rest
                    .split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_prefix("finished in ")
                            .and_then(|t| t.trim_end_matches('s').parse().ok())
                    })
                    .unwrap_or(0.0),
            };
            results.entry(current.clone()).or_default().add(&r);
        }
    }
    results
}

/// Lines of panic output the summary repeats per failed test, and in all.
const FAILURE_LINES_PER_TEST: usize = 40;
const FAILURE_LINES_TOTAL: usize = 160;
/// Characters kept of each repeated line.
const FAILURE_LINE_CHARS: usize = 400;

/// One failed test as libtest reported it.
#[derive(Debug)]
struct Failure {
    binary: String,
    test: String,
    /// From its panic line on (the assertion and its message), bounded.
    lines: Vec<String>,
}

/// Reads libtest's "---- NAME stdout ----" blocks: the binary they belong to, the test's
/// name, and its panic message with what follows it (an assertion's message often carries
/// a peer's output), so a failure is diagnosable from the end of a CI log.
fn failure_excerpts(output: &str) -> Vec<Failure> {
    let mut out: Vec<Failure> = Vec::new();
    let mut binary = String::from("?");
    let mut open: Option<(Failure, bool)> = None;
    let close = |open: &mut Option<(Failure, bool)>, out: &mut Vec<Failure>| {
        if let Some((f, _)) = open.take() {
            out.push(f);
        }
    };
    for line in output.lines() {
        let t = line.trim();
        if t.starts_with("Running ") || t.starts_with("Doc-tests ") {
            close(&mut open, &mut out);
            binary = match t.strip_prefix("Doc-tests ") {
                Some(rest) => format!("doc:{}", rest.trim()),
                None => binary_name(t),
            };
            continue;
        }
        if let Some(name) = t
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            close(&mut open, &mut out);
            open = Some((
                Failure {
                    binary: binary.clone(),
                    test: name.to_string(),
                    lines: Vec::new(),
                },
                false,
            ));
            continue;
        }
        if t == "failures:" || t.starts_with("test result: ") {
            close(&mut open, &mut out);
            continue;
        }
        if let Some((f, seen_panic)) = open.as_mut() {
            if !*seen_panic && line.contains("panicked at") {
                *seen_panic = true;
            }
            if *seen_panic && f.lines.len() < FAILURE_LINES_PER_TEST {
                f.lines
                    .push(line.chars().take(FAILURE_LINE_CHARS).collect());
            }
        }
    }
    close(&mut open, &mut out);
    out
}

/// The binary a cargo "Running … (target/debug/deps/NAME-HASH)" line names.
fn binary_name(running_line: &str) -> String {
    let rest = running_line
        .trim()
        .strip_prefix("Running ")
        .unwrap_or(running_line);
    let inner = rest
        .rsplit_once('(')
        .map(|(_, r)| r.trim_end_matches(')'))
        .unwrap_or(rest);
    let file = Path::new(inner)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => file,
    }
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
    // Built together by one cargo (its jobs share the CPUs; one after another took minutes
    // longer), or, if that fails, one by one to name the target that does not build; then run
    // as many at a time as there are CPUs: each libFuzzer run is one process on one core.
    let mut outcomes: Vec<Option<Result<()>>> = if fuzz_build(cargo, root, None).is_ok() {
        targets.iter().map(|_| None).collect()
    } else {
        targets
            .iter()
            .map(|t| fuzz_build(cargo, root, Some(t)).err().map(Err))
            .collect()
    };
    let queue: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(
        (0..targets.len())
            .filter(|&i| outcomes[i].is_none())
            .rev()
            .collect(),
    );
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let ran: std::sync::Mutex<Vec<(usize, Result<()>)>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(i) = next else { break };
                    let outcome = fuzz_run(cargo, root, &fuzz_dir, &targets[i], seconds);
                    ran.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, outcome));
                }
            });
        }
    });
    for (i, outcome) in ran.into_inner().unwrap_or_else(|e| e.into_inner()) {
        outcomes[i] = Some(outcome);
    }
    targets
        .into_iter()
        .zip(outcomes)
        .map(|(t, o)| (t, o.unwrap_or_else(|| Err(anyhow::anyhow!("did not run")))))
        .collect()
}

/// Builds one fuzz target (all of them: `None`), retrying once (the first build downloads
/// the fuzz crate's own dependencies).
fn fuzz_build(cargo: &std::ffi::OsStr, root: &Path, target: Option<&str>) -> Result<()> {
    let build = || {
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "build"])
            .args(target);
        println!("running {cmd:?}");
        run_teed(&mut cmd).map(|(ok, _)| ok)
    };
    if !build()? && !build()? {
        bail!(
            "cargo fuzz build {} failed twice (see the build output above)",
            target.unwrap_or("(all targets)")
        );
    }
    Ok(())
}

/// Runs one built fuzz target. A crash is reported with libFuzzer's own verdict lines and the
/// crashing input (base64, if small), so a CI log alone is enough to reproduce it.
fn fuzz_run(
    cargo: &std::ffi::OsStr,
    root: &Path,
    fuzz_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<()> {
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
        assert_eq!(r["interop_openssl"].seconds, 9.0);
    }

    #[test]
    fn failed_tests_are_named_with_their_panic() {
        let out = "     Running tests/docking/main.rs (target/debug/deps/docking-0123abcd)\n\
                   test a ... ok\n\
                   test b ... FAILED\n\
                   \n\
                   failures:\n\
                   \n\
                   ---- b stdout ----\n\
                   some captured output\n\
                   thread 'b' panicked at tests/docking/b.rs:3:5:\n\
                   assertion failed: ok\n\
                   note: run with `RUST_BACKTRACE=1`\n\
                   \n\
                   \n\
                   failures:\n\
                   \x20   b\n\
                   \n\
                   test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s\n";
        let f = failure_excerpts(out);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].binary.as_str(), f[0].test.as_str()), ("docking", "b"));
        assert_eq!(
            f[0].lines[0],
            "thread 'b' panicked at tests/docking/b.rs:3:5:"
        );
        assert_eq!(f[0].lines[1], "assertion failed: ok");
        assert!(!f[0].lines.iter().any(|l| l.contains("captured")));
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
            (
                "qemu (image missing)",
                crate::qemu::run_packages(crate::image::BOARDS[0], true),
            ),
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
