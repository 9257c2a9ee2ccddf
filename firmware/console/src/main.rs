//! `sealgate-console`: the field technician's serial console menu on the box, and two steps
//! of the box's boot that share its code.
//!
//! - `sealgate-console menu`: the numbered menu (busybox init runs it on the serial port).
//! - `sealgate-console network-boot`: the boot's network step: moves the console's earlier
//!   `/data/box/network.conf` into the daemon's settings once, and says what the daemon will
//!   apply (the daemon owns the network; see `daemon_network.rs`).
//! - `sealgate-console apply-network`: the first NIC's settings from the daemon's settings
//!   file, applied with busybox `ip`/`udhcpc`: only for a boot in which the daemon is not
//!   started (no TPM, vault locked), so the box still answers on the network.
//! - `sealgate-console mark-boot-good`: resets GRUB's try counter of the booted slot
//!   (rewriting a missing or damaged GRUB environment block).
//! - `sealgate-console health-gate`: waits for a healthy boot, then marks the slot good;
//!   says why when the boot is not healthy (`health.rs`).
//! - `sealgate-console write-file PATH [--mode OCTAL]`: stdin to PATH atomically, for the
//!   shell scripts (`atomic.rs`).
//! - `sealgate-console rauc-backend get-primary | set-primary S | get-state S | set-state S
//!   good|bad`: RAUC's custom boot loader backend on GRUB's environment (`esp.rs`).
//! - `sealgate-console copy-file SRC DEST`: SRC to DEST atomically (`atomic.rs`; RAUC's
//!   post-install handler puts the new slot's kernel image on the ESP with it).
//! - `sealgate-console factory-reset`: the menu's wipe, for the daemon's service script when
//!   the admin API asked for a factory reset (`DATA/factory-reset.request`, which only the
//!   daemon writes, after an administrator sent the typed confirmation).
//!
//! What the box decided at boot is in `/run/sealgate/` (see `/etc/sealgate/boot`); the
//! daemon's files are in `/data/sealgate/` (see `firmware/sealgated/src/tokens.rs`).
// Three pieces of unsafe code: one ioctl (the watchdog's timeout, `watchdog.rs`), the
// terminal's echo (`set_echo`, off while the recovery secret is typed) and waiting for the
// terminal to send a line (`drain_stdout`).
#![deny(unsafe_code)]

mod atomic;
mod daemon;
mod daemon_network;
mod esp;
mod grubenv;
mod health;
mod menu;
mod network;
mod update;
mod watchdog;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sealgate_local::test_faults::{self, Fault};

use crate::menu::{BoxActions, Menu, PingTarget};
use crate::network::NetworkSettings;

/// The data partition's mount point.
const DATA: &str = "/data";
/// The daemon's data directory (`sealgated --data-dir`).
const DAEMON_DIR: &str = "/data/sealgate";
/// The console's earlier network settings, moved into the daemon's settings at boot.
const NETWORK_FILE: &str = "/data/box/network.conf";
/// Where the moved file is kept (for a person to read; never read again).
const NETWORK_FILE_MOVED: &str = "/data/box/network.conf.moved";
/// The daemon's settings file on the data partition.
const DAEMON_SETTINGS: &str = "/data/sealgate/settings.toml";
/// The box's shipped daemon settings (read under the data partition's file).
const SHIPPED_SETTINGS: &str = "/etc/sealgate/settings.toml";
/// What the boot decided (vault state, flags) and the daemon's pid.
const STATE: &str = "/run/sealgate";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["menu"] => run_menu(),
        ["apply-network"] => apply_network(),
        ["network-boot"] => network_boot(),
        ["mark-boot-good"] => mark_boot_good(),
        ["health-gate"] => health_gate(),
        ["write-file", rest @ ..] => atomic::write_file_command(rest, &mut std::io::stdin()),
        ["factory-reset"] => factory_reset(),
        ["rauc-backend", rest @ ..] => esp::rauc_backend(rest),
        ["copy-file", rest @ ..] => atomic::copy_file_command(rest),
        ["--version"] => {
            println!("sealgate-console {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: sealgate-console [menu | --version | network-boot | apply-network | mark-boot-good | health-gate \
                 | write-file PATH [--mode OCTAL] | factory-reset | rauc-backend ... | copy-file SRC DEST]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sealgate-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The factory reset the admin API asked for: the menu's own wipe (the TPM's erase secret,
/// the vault overwritten, `/data` emptied, reboot). Refused without the daemon's request
/// file, so that a mistyped command line wipes nothing.
fn factory_reset() -> Result<()> {
    if !Path::new(DAEMON_DIR).join(FACTORY_RESET_REQUEST).exists() {
        bail!("no factory reset was requested ({DAEMON_DIR}/{FACTORY_RESET_REQUEST} is missing)");
    }
    println!(
        "sealgate: FACTORY RESET requested through the admin API: destroying the keys and wiping /data"
    );
    TheBox.wipe()
}

/// The request file the daemon writes (`sealgated`'s `admin::system::FACTORY_RESET_REQUEST`).
const FACTORY_RESET_REQUEST: &str = "factory-reset.request";

fn run_menu() -> Result<()> {
    let host =
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "sealgate".into());
    let title = format!("{} (Sealgate {})", host.trim(), os_version());
    let stdin = std::io::stdin();
    let mut the_box = TheBox;
    Menu::new(stdin.lock(), std::io::stdout(), &mut the_box, title).run()
}

/// The network the daemon's settings files give (data partition's over the shipped).
fn file_network() -> Result<daemon_network::NetSettings> {
    let shipped = fs::read_to_string(SHIPPED_SETTINGS).context(SHIPPED_SETTINGS)?;
    let data = match fs::read_to_string(DAEMON_SETTINGS) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(DAEMON_SETTINGS),
    };
    daemon_network::from_files(&shipped, data.as_deref())
}

fn first_nic() -> Result<String> {
    network::interface(Path::new("/sys/class/net"))
}

/// The boot's network step (before the daemon starts): the one-time move of
/// `/data/box/network.conf` into the daemon's settings, then one line saying what the
/// daemon applies. Never fails the boot: the daemon's shipped settings give DHCP.
fn network_boot() -> Result<()> {
    let ifname = first_nic().unwrap_or_else(|_| "eth0".into());
    if let Err(e) = move_network_file(&ifname) {
        println!(
            "sealgate: network: {NETWORK_FILE} could not be moved into the daemon's settings: {e:#}"
        );
    }
    let what = match file_network() {
        Ok(n) => n.describe(&ifname),
        Err(e) => format!("the settings file is not usable ({e:#}); the shipped settings: DHCP"),
    };
    println!("sealgate: network {ifname}: {what} (applied by sealgated)");
    Ok(())
}

fn move_network_file(ifname: &str) -> Result<()> {
    let conf = match fs::read(NETWORK_FILE) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(NETWORK_FILE),
    };
    let shipped = fs::read_to_string(SHIPPED_SETTINGS).context(SHIPPED_SETTINGS)?;
    let data = match fs::read_to_string(DAEMON_SETTINGS) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(DAEMON_SETTINGS),
    };
    let p = daemon_network::prepare(conf.as_deref(), data.as_deref(), &shipped, ifname)?;
    if let Some(text) = &p.write {
        // The settings first: a power cut before the rename only moves the file again.
        // New: the daemon's folder is 0700 and the service gives the file to its user.
        atomic::write_atomic(Path::new(DAEMON_SETTINGS), text.as_bytes(), 0o600)?;
    }
    for line in &p.said {
        println!("sealgate: network: {line}");
    }
    if conf.is_some() {
        sealgate_local::fsio::rename_durably(
            Path::new(NETWORK_FILE),
            Path::new(NETWORK_FILE_MOVED),
        )
        .context("putting the old file aside")?;
        println!(
            "sealgate: network: {NETWORK_FILE} is now {NETWORK_FILE_MOVED} (never read again)"
        );
    }
    Ok(())
}

/// For a boot in which the daemon does not start: the first NIC as its settings say (a
/// static address as set; anything else DHCP), kept by a background udhcpc.
fn apply_network() -> Result<()> {
    let ifname = first_nic()?;
    let settings = match file_network().map(|n| n.simple(&ifname)) {
        Ok(Some(s)) => s,
        Ok(None) => NetworkSettings::Dhcp,
        Err(e) => {
            println!("sealgate: network settings unreadable ({e:#}); using DHCP");
            NetworkSettings::Dhcp
        }
    };
    network::apply(&settings, &ifname, false)?;
    println!(
        "sealgate: network {ifname}: {settings} (sealgated is not started: applied by the console)"
    );
    Ok(())
}

/// Writes `text` to `path` atomically (see `atomic.rs`), creating its folder.
fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    atomic::write_atomic(path, text, 0o644)
}

/// The daemon's settings as `sealgated --box --check-settings` judges them (its output).
fn check_settings() -> Result<String> {
    let out = Command::new("sealgated")
        .args(["--box", "--data-dir", DAEMON_DIR, "--check-settings"])
        .stdin(Stdio::null())
        .output()
        .context("running sealgated --check-settings")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The boot's health verdict for the status page.
const BOOT_HEALTH: &str = "boot-health";

/// Says the gate's verdict on the console and the status page. The line has left the serial
/// port when this returns: a reboot, a kernel panic or the watchdog's close (the kernel's
/// `watchdog did not stop!`, written to the port directly) that follows does not break into
/// it.
fn say_boot_health(text: &str) {
    println!("sealgate: {text}");
    drain_stdout();
    let _ = fs::write(Path::new(STATE).join(BOOT_HEALTH), format!("{text}\n"));
}

/// Flushes the standard output and, on a terminal, waits until the driver has sent it.
#[allow(unsafe_code)]
fn drain_stdout() {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: tcdrain takes the standard output's descriptor, valid for the whole process; on
    // anything but a terminal it fails with ENOTTY, which is ignored.
    let _ = unsafe { libc::tcdrain(1) };
}

/// How long the health gate waits for sealgated's first health answer (first boot under
/// emulation included: vault creation, TLS key).
const HEALTH_WAIT: Duration = Duration::from_secs(600);
/// The same on an update's trial (the vault exists; a daemon that does not answer by then
/// fails the try).
const UPDATE_HEALTH_WAIT: Duration = Duration::from_secs(300);
/// The daemon's pending update (`sealgated`'s `admin/update.rs`).
const PENDING_UPDATE: &str = "/data/sealgate/update/pending.json";

/// Waits (bounded, petting the watchdog) for sealgated's health answer.
fn wait_for_health(wait: Duration, wd: &mut Option<watchdog::Watchdog>) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + wait;
    loop {
        if let Some(w) = wd.as_mut() {
            w.pet();
        }
        // The daemon's own unseal is the boot's only one: its service script flags a vault
        // the TPM refused while the gate waits.
        if let Some(why) = health::flags_verdict(Path::new(STATE)) {
            return Err(why);
        }
        // Until the daemon has bound its admin socket (just before it listens) nothing would
        // answer: look for it every 0.2 s rather than start a health check (a process as
        // large as the daemon) beside the daemon's own start. A daemon that runs without
        // its socket (it says why) is asked anyway after the first 20 s.
        if !Path::new(STATE).join("admin.sock").exists()
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        // The daemon binary asks its own admin listener over TLS (see its selfcheck.rs).
        let out = Command::new("sealgated")
            .args(["--box", "--data-dir", DAEMON_DIR, "--check-health"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let last = match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(e) => format!("cannot run sealgated --check-health: {e}"),
        };
        if Instant::now() > deadline {
            return Err(format!(
                "sealgated did not answer health within {} s ({last})",
                wait.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A development test bundle's plan of faults for its slot's trials (`cargo xtask bundle
/// --test-faults`, copied here by RAUC's post-install handler; `sealgate_local::test_faults`).
const TEST_FAULTS: &str = "/data/sealgate/update/test-faults";
/// Trials of that slot so far (removed with the plan by the next install).
const TEST_TRIAL: &str = "/data/sealgate/update/test-trial";
/// An update's trial: the watchdog bound from the health gate's start to its verdict (the
/// gate pets it every 2 s while it waits; first boots keep stage-1's longer bound).
const TRIAL_WATCHDOG_SECS: u32 = 120;
/// The countdown a development test bundle's `hang` fault leaves (the same device and
/// ioctl as the trial's bound, a shorter wait for the rollback test).
const HANG_FAULT_WATCHDOG_SECS: u32 = 15;
/// The image's update keyring.
const RAUC_KEYRING: &str = "/etc/rauc/keyring.pem";

/// The full checks: the daemon's own (`GET /update/gate`: listeners bound, the self-test
/// decrypt with the box's own key) and its settings taken from the data partition's file.
fn full_checks(fault: Option<Fault>) -> Result<(), String> {
    let mut why = Vec::new();
    if fault == Some(Fault::Gate) {
        why.push(
            "test bundle: this trial fails its health gate by design (development keyring only)"
                .to_string(),
        );
    }
    match check_settings() {
        Ok(out) if out.starts_with("settings ok ") => {}
        Ok(out) => why.push(format!(
            "settings: {}",
            out.lines().next().unwrap_or("no verdict")
        )),
        Err(e) => why.push(format!("settings: {e:#}")),
    }
    match daemon::answering() {
        None => why.push("sealgated does not answer on its admin socket".into()),
        Some(s) => match s.call("GET", "/update/gate", None) {
            Ok((status, body)) => {
                if let Err(e) = health::gate_answer(status, &body) {
                    why.push(e);
                }
            }
            Err(e) => why.push(format!("asking sealgated's checks: {e}")),
        },
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

fn health_gate() -> Result<()> {
    // Armed by stage-1; from here this process pets it until the verdict.
    let mut wd = watchdog::Watchdog::open(Path::new(watchdog::DEVICE));
    if let Some(w) = wd.as_mut() {
        w.pet();
    }
    let booted = booted_slot();
    let slot = booted.map(|c| c.to_string()).unwrap_or_else(|| "?".into());
    let trial = health::update_boot(fs::read(PENDING_UPDATE).ok().as_deref(), booted);
    let fault = if trial {
        if let Some(w) = wd.as_mut() {
            w.set_timeout(TRIAL_WATCHDOG_SECS);
            w.pet();
        }
        test_fault(booted)
    } else {
        None
    };
    match fault {
        Some((n, Fault::Hang)) => {
            // What is under test is that nothing else pets it: the hang shortens the
            // countdown so the test does not wait out the trial's whole bound.
            if let Some(w) = wd.as_mut() {
                w.set_timeout(HANG_FAULT_WATCHDOG_SECS);
                w.pet();
            }
            say_boot_health(&format!(
                "TEST FAULT (development test bundle): trial {n} of slot {slot} hangs here; \
                 the watchdog must reset the box within {HANG_FAULT_WATCHDOG_SECS} s"
            ));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Some((n, Fault::Panic)) => {
            say_boot_health(&format!(
                "TEST FAULT (development test bundle): trial {n} of slot {slot} panics the \
                 kernel; panic= must reboot the box"
            ));
            let _ = Command::new("sync").status();
            let _ = fs::write("/proc/sysrq-trigger", "c");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => {}
    }
    let fault = fault.map(|(_, f)| f);
    let (basic, full) = match health::flags_verdict(Path::new(STATE)) {
        Some(why) => (Err(why), Ok(())),
        None => {
            let _ = fs::write(
                Path::new(STATE).join(BOOT_HEALTH),
                "waiting for sealgated's health answer\n",
            );
            let wait = if trial {
                UPDATE_HEALTH_WAIT
            } else {
                HEALTH_WAIT
            };
            match wait_for_health(wait, &mut wd) {
                Err(why) => (Err(why), Ok(())),
                Ok(()) => {
                    if let Some(w) = wd.as_mut() {
                        w.pet();
                    }
                    (Ok(()), full_checks(fault))
                }
            }
        }
    };
    match health::verdict(trial, basic, full) {
        health::Verdict::Reboot(why) => {
            say_boot_health(&format!(
                "UPDATE TRIAL FAILED: boot slot {slot} NOT marked good: {why}. Rebooting: GRUB \
                 tries the slot three times, then boots the old one."
            ));
            // The watchdog stays armed: a shutdown that hangs is cut short too.
            drop(wd);
            let _ = Command::new("sync").status();
            return run("reboot", &[]);
        }
        health::Verdict::NotGood(why) => {
            say_boot_health(&format!(
                "boot slot {slot} NOT marked good: {why}. GRUB tries a slot three times, then \
                 the other one; nothing reboots by itself."
            ));
        }
        health::Verdict::Good(warning) => {
            if let Some(w) = &warning {
                println!("sealgate: WARNING: {w} (the slot was committed before: marked good)");
            }
            mark_healthy(&slot);
        }
    }
    if let Some(w) = wd {
        w.disarm();
    }
    Ok(())
}

/// Marks the healthy boot's slot good and settles a pending or failed update with the daemon.
fn mark_healthy(slot: &str) {
    match mark_boot_good_settled() {
        Ok(failed) => {
            if let Some(f) = failed {
                say_boot_health(&format!(
                    "UPDATE FAILED: slot {f} did not pass its health gate in three tries; \
                     marked bad, running slot {slot}"
                ));
            }
            say_boot_health(&format!("healthy: boot slot {slot} marked good"));
            // The daemon commits a pending update (vault, version floor) or records the
            // failed one (status, audit chain).
            if let Err(e) = update_settled(failed) {
                println!("sealgate: the update's commit could not be recorded: {e:#}");
            }
        }
        Err(e) => say_boot_health(&format!(
            "healthy, but boot slot {slot} could not be marked good: {e:#}"
        )),
    }
}

/// Tells the daemon that the boot slot was marked good (`POST /update/commit` on its admin
/// socket), with the slot GRUB fell back from, if any.
fn update_settled(failed: Option<char>) -> Result<()> {
    let s = daemon::answering().context("sealgated does not answer on its admin socket")?;
    let body = serde_json::json!({
        "failed_slot": failed.map(|c| c.to_string()),
    });
    let (status, answer) = s.call("POST", "/update/commit", Some(&body))?;
    if !(200..300).contains(&status) && status != 404 {
        bail!(
            "sealgated answered {status}: {}",
            String::from_utf8_lossy(&answer)
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    Ok(())
}

/// The fault a development test bundle plans for this trial of the booted slot, with the
/// trial's number (counted in `TEST_TRIAL`); `None` for every other image and bundle.
fn test_fault(booted: Option<char>) -> Option<(usize, Fault)> {
    let plan = test_faults::planned(
        fs::read(TEST_FAULTS).ok().as_deref(),
        fs::read(RAUC_KEYRING).ok().as_deref(),
        booted,
    )?;
    let n = fs::read_to_string(TEST_TRIAL)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    let _ = sealgate_local::fsio::write_atomic(
        Path::new(TEST_TRIAL),
        format!("{n}\n").as_bytes(),
        sealgate_local::fsio::Mode::KeepOr(0o644),
    );
    Some((n, test_faults::for_trial(&plan, n)?))
}

/// Whether the kernel was started under UEFI Secure Boot. The box's kernel locks itself
/// down when it was (`CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT`; its signed command line sets no
/// `lockdown=`), which securityfs shows (mounted by the boot script; mounted here if not).
fn secure_boot_on() -> Option<bool> {
    let path = Path::new("/sys/kernel/security/lockdown");
    if !path.exists() {
        let _ = Command::new("mount")
            .args(["-t", "securityfs", "-o", "nosuid,nodev,noexec"])
            .args(["securityfs", "/sys/kernel/security"])
            .status();
    }
    let state = fs::read_to_string(path).ok()?;
    Some(!state.contains("[none]"))
}

/// Turns the terminal's echo on or off (the console's standard input, if it is a terminal).
#[allow(unsafe_code)]
fn set_echo(on: bool) {
    // SAFETY: `termios` is plain data filled by tcgetattr before it is read; both calls take
    // the standard input's descriptor, valid for the whole process.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return;
        }
        if on {
            t.c_lflag |= libc::ECHO;
        } else {
            t.c_lflag &= !libc::ECHO;
        }
        let _ = libc::tcsetattr(0, libc::TCSANOW, &t);
    }
}

/// The booted slot, from the kernel command line (`sealgate.slot=A`).
fn booted_slot() -> Option<char> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    cmdline.split_whitespace().find_map(|a| match a {
        "sealgate.slot=A" => Some('A'),
        "sealgate.slot=B" => Some('B'),
        _ => None,
    })
}

/// The block device of the GPT partition named `name` (sysfs `PARTNAME`).
fn partition(name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let uevent = fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        if uevent.lines().any(|l| l == format!("PARTNAME={name}")) {
            let dev = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
            return Some(Path::new("/dev").join(dev));
        }
    }
    None
}

fn mark_boot_good() -> Result<()> {
    mark_boot_good_settled().map(|_| ())
}

/// Marks the booted slot good; when GRUB fell back to it from a slot whose tries ran out
/// (an update that never passed its health gate), marks that slot bad and returns it.
fn mark_boot_good_settled() -> Result<Option<char>> {
    let slot = booted_slot().context("no sealgate.slot= on the kernel command line")?;
    esp::update(
        |e| {
            println!(
                "sealgate: GRUB's environment was unusable ({e:#}): rewritten with slot \
                 {slot} good and the other slot off"
            );
            grubenv::GrubEnv::fresh(slot)
        },
        |env| {
            let failed = env.settle_fallback(slot)?;
            let good = env.get(&format!("{slot}_TRY")) == Some("0") && env.is_good(slot);
            if !good {
                env.mark_good(slot)?;
            }
            Ok((failed.is_some() || !good, failed))
        },
    )
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn os_version() -> String {
    let text = fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "?".into())
}

/// The daemon's pid, if it runs.
fn daemon_pid() -> Option<u32> {
    let pid: u32 = fs::read_to_string(Path::new(STATE).join("sealgated.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "sealgated").then_some(pid)
}

/// The vault as the boot left it (`STATE/vault`: created, unsealing, locked: WHY, ...); on a
/// later boot the daemon unseals it and says how it went in `STATE/daemon/vault` (its
/// `--vault-verdict`, see the service script).
fn vault_state(state: &Path) -> String {
    let boot = fs::read_to_string(state.join("vault")).unwrap_or_else(|_| "not opened".into());
    if boot.trim() != "unsealing" {
        return boot.trim().to_string();
    }
    match fs::read_to_string(state.join("daemon/vault")) {
        // Written by the daemon's user: one line, no control characters.
        Ok(v) if !v.trim().is_empty() => v
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
        _ => "unsealing (sealgated opens it)".into(),
    }
}

/// A process's resident memory (`VmRSS`), KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The user a process runs as (its real uid, named from /etc/passwd), for the status page.
fn process_user(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(user_name(&passwd, &uid).unwrap_or(uid))
}

/// The name of `uid` in a passwd file's text.
fn user_name(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
    })
}

/// Stops the daemon (SIGTERM, bounded wait); busybox init starts it again.
fn restart_daemon() -> Result<()> {
    let Some(pid) = daemon_pid() else {
        bail!("sealgated is not running")
    };
    run("kill", &["-TERM", &pid.to_string()])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Stops the daemon for good before its files are removed: busybox init respawns the
/// service, which then waits (the flag) until the reboot that follows.
fn stop_daemon_for_reset() {
    let _ = fs::write(Path::new(STATE).join("no-data"), b"factory reset\n");
    let _ = restart_daemon();
}

/// The request file the daemon applies at start (`sealgated`'s `tokens::ADMIN_RESET_REQUEST`).
const ADMIN_RESET_REQUEST: &str = "reset-admin.request";

/// Asks the daemon to reset admin access at its next start (durably: fsynced).
fn request_admin_reset(daemon_dir: &Path) -> Result<()> {
    write_atomic(
        &daemon_dir.join(ADMIN_RESET_REQUEST),
        b"reset admin access (requested on the serial console)\n",
    )
}

/// The real box.
struct TheBox;

/// What the menu shows after a setup-token reset through the admin API.
fn reset_answer(done: &str, token: Option<String>) -> String {
    match token {
        // The same line the daemon prints, so whoever reads the console finds it alike.
        Some(t) => format!(
            "{done}\nsealgated: setup token (one-time; POST /api/v1/admin/setup on the admin port): {t}"
        ),
        None => {
            format!("{done} A new setup token is printed on this console as \"setup token ...\".")
        }
    }
}

impl BoxActions for TheBox {
    fn daemon_running(&mut self) -> bool {
        daemon::answering().is_some()
    }

    fn status(&mut self) -> String {
        let mut s = String::new();
        s.push_str(&format!("Version:   Sealgate {}\n", os_version()));
        // GRUB notes a last-resort boot in grubenv; the box's boot leaves this flag for it.
        let last_resort = Path::new("/run/sealgate/lastresort").exists()
            || fs::read_to_string("/proc/cmdline")
                .map(|c| c.split_whitespace().any(|a| a == "sealgate.lastresort"))
                .unwrap_or(false);
        s.push_str(&format!(
            "Boot slot: {}{}\n",
            booted_slot()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            if last_resort {
                " (LAST RESORT: GRUB found no good slot with tries left)"
            } else {
                ""
            }
        ));
        let health = fs::read_to_string(Path::new(STATE).join(BOOT_HEALTH))
            .unwrap_or_else(|_| "not judged yet".into());
        s.push_str(&format!("Boot:      {}\n", health.trim()));
        let ifname = first_nic().unwrap_or_else(|_| "eth0".into());
        let daemon = daemon::answering();
        let net = match &daemon {
            Some(d) => daemon_network::read(d).map(|n| n.describe(&ifname)),
            None => file_network().map(|n| {
                format!(
                    "{} (sealgated is not running: not applied by it)",
                    n.describe(&ifname)
                )
            }),
        };
        let net = net.unwrap_or_else(|e| format!("unknown: {e:#}"));
        s.push_str(&format!("Network:   {net}\n"));
        for (ifname, addr) in network::addresses() {
            if ifname != "lo" {
                s.push_str(&format!("Address:   {ifname} {addr}\n"));
            }
        }
        if let Some(d) = &daemon
            && let Ok(live) = daemon_network::live(d)
        {
            for l in live
                .lines()
                .filter(|l| l.starts_with("Lease:") || l.starts_with("Clock:"))
            {
                s.push_str(l);
                s.push('\n');
            }
        }
        let state = |f: &str| Path::new(STATE).join(f).exists();
        let tpm = if Path::new("/dev/tpmrm0").exists() {
            "present (/dev/tpmrm0)"
        } else {
            "NOT FOUND"
        };
        s.push_str(&format!("TPM:       {tpm}\n"));
        let vault = vault_state(Path::new(STATE));
        s.push_str(&format!("Vault:     {}\n", vault.trim()));
        let daemon = match daemon_pid() {
            Some(pid) => {
                let user = process_user(pid).unwrap_or_else(|| "?".into());
                match resident_kib(pid) {
                    Some(kib) => format!(
                        "running (pid {pid}, user {user}, {} MiB resident)",
                        kib / 1024
                    ),
                    None => format!("running (pid {pid}, user {user})"),
                }
            }
            None if state("no-tpm") => "not started: no TPM".into(),
            None if state("vault-locked") => "not started: vault locked".into(),
            None => "NOT RUNNING".into(),
        };
        s.push_str(&format!("sealgated: {daemon}\n"));
        let settings = match check_settings() {
            Ok(out) => match out.lines().next() {
                Some(l) if l.starts_with("settings ok ") => {
                    l.trim_start_matches("settings ok ").to_string()
                }
                Some(l) if l.starts_with("settings fallback ") => format!(
                    "NOT USABLE, running on the box's shipped settings: {}",
                    l.trim_start_matches("settings fallback ")
                ),
                Some(l) => l.to_string(),
                None => "unknown".into(),
            },
            Err(e) => format!("unknown ({e:#})"),
        };
        s.push_str(&format!("Settings:  {settings}\n"));
        let setup = if Path::new(DAEMON_DIR).join("setup-token.used").exists() {
            "done"
        } else {
            "pending"
        };
        s.push_str(&format!("Setup:     {setup}\n"));
        if let Ok(out) = Command::new("df").args(["-k", DATA]).output()
            && let Some(line) = String::from_utf8_lossy(&out.stdout).lines().nth(1)
        {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() >= 5 {
                s.push_str(&format!(
                    "Disk:      /data {} of {} KiB used ({})\n",
                    w[2], w[1], w[4]
                ));
            }
        }
        s
    }

    fn network(&mut self) -> String {
        let ifname = first_nic().unwrap_or_else(|_| "eth0".into());
        let Some(d) = daemon::answering() else {
            let what = file_network()
                .map(|n| n.describe(&ifname))
                .unwrap_or_else(|e| format!("unknown ({e:#})"));
            let mut s = format!("Network: {ifname}: {what} (sealgated's settings; not applied)\n");
            for (i, a) in network::addresses() {
                if i != "lo" {
                    s.push_str(&format!("Address:   {i} {a}\n"));
                }
            }
            return s;
        };
        let what = daemon_network::read(&d)
            .map(|n| n.describe(&ifname))
            .unwrap_or_else(|e| format!("unknown ({e:#})"));
        let live =
            daemon_network::live(&d).unwrap_or_else(|e| format!("live state unknown: {e:#}\n"));
        format!("Network: {ifname}: {what}\n{live}")
    }

    fn set_network(&mut self, settings: &NetworkSettings) -> Result<String> {
        let Some(d) = daemon::answering() else {
            bail!("sealgated is not running")
        };
        daemon_network::change(&d, &first_nic()?, settings)
    }

    fn network_fallback(&mut self, settings: &NetworkSettings) -> Result<String> {
        let ifname = first_nic()?;
        network::apply(settings, &ifname, true)?;
        Ok(format!(
            "Applied once to {ifname}: {settings} (not saved; sealgated's settings apply when it runs)"
        ))
    }

    fn ping(&mut self, target: &PingTarget) -> String {
        match Command::new("ping")
            .args(["-c", "3", "-W", "2", "--", target.as_str()])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("cannot run ping: {e}"),
        }
    }

    fn setup_token(&mut self) -> Result<Option<String>> {
        if Path::new(DAEMON_DIR).join("setup-token.used").exists() {
            return Ok(None);
        }
        let Some(d) = daemon::answering() else {
            bail!("sealgated is not running")
        };
        // Setup is pending, so no admin account exists: a reset only replaces the token.
        if let daemon::Reset::Done(token) = daemon::reset_setup_token(&d)? {
            return Ok(Some(reset_answer(
                "sealgated keeps only a hash of the setup token, so it issued a new one; earlier ones no longer work.",
                token,
            )));
        }
        // A daemon without the resource: it issues a new token when it starts.
        restart_daemon()?;
        Ok(Some(
            "sealgated keeps only a hash of the setup token, so it issues a new one: it is printed \
             on this console as \"setup token ...\" within a few seconds. Earlier ones no longer work."
                .into(),
        ))
    }

    fn reset_admin_access(&mut self) -> Result<String> {
        // The running daemon does it through its admin API (accounts, sessions and
        // admin-scoped tokens, audited); the console edits none of its files.
        let Some(d) = daemon::answering() else {
            bail!("sealgated is not running")
        };
        if let daemon::Reset::Done(token) = daemon::reset_setup_token(&d)? {
            return Ok(reset_answer(
                "Admin access revoked: every admin account, session and admin token stops working.",
                token,
            ));
        }
        // A daemon without the resource applies a request file at its start
        // (firmware/sealgated/src/tokens.rs), written here and read by the daemon's user.
        request_admin_reset(Path::new(DAEMON_DIR))?;
        restart_daemon()?;
        Ok("Admin access revoked: every admin token stops working. A new setup token is printed on \
            this console as \"setup token ...\" within a few seconds."
            .into())
    }

    fn reboot(&mut self) -> Result<()> {
        run("reboot", &[])
    }

    fn vault_locked(&mut self) -> Option<String> {
        if !Path::new(STATE).join("vault-locked").exists() {
            return None;
        }
        let said = fs::read_to_string(Path::new(STATE).join("vault")).unwrap_or_default();
        let why = said.trim().trim_start_matches("locked:").trim();
        // A data partition that is not the box's own: its vault is not opened at all, and
        // recovering it would make the attacker's partition the box's.
        if why.starts_with("foreign data partition") {
            return None;
        }
        Some(format!(
            "the TPM refused to unseal the vault key ({})",
            if why.is_empty() {
                "no reason given"
            } else {
                why
            }
        ))
    }

    fn recover_vault(&mut self, secret: &str) -> Result<String> {
        match secure_boot_on() {
            Some(true) => {}
            Some(false) => bail!(
                "Secure Boot is off: the vault key is not sealed to a boot chain that nothing \
                 verifies. Turn Secure Boot on in the firmware's settings (with the box's own \
                 keys), then recover."
            ),
            None => {
                bail!("cannot tell whether Secure Boot is on (no lockdown state in securityfs)")
            }
        }
        let mut child = Command::new("sealctl")
            .args(["vault", "recover", "--data-dir", DAEMON_DIR])
            .args(["--recovery-file", "-", "--tpm", "device:/dev/tpmrm0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running sealctl")?;
        if let Some(mut stdin) = child.stdin.take() {
            let mut line = zeroize::Zeroizing::new(secret.trim().to_string());
            line.push('\n');
            stdin
                .write_all(line.as_bytes())
                .context("handing the secret to sealctl")?;
        }
        let out = child.wait_with_output().context("waiting for sealctl")?;
        if !out.status.success() {
            // A wrong secret costs a few seconds (it is 256 random bits: this only keeps the
            // console from being a fast oracle).
            std::thread::sleep(Duration::from_secs(3));
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "{}",
                err.lines()
                    .map(|l| {
                        l.trim_start_matches("sealctl: ")
                            .trim_start_matches("error: ")
                            .trim_start_matches("recovery: ")
                            .trim()
                    })
                    .find(|l| !l.is_empty())
                    .unwrap_or("sealctl vault recover failed")
            );
        }
        println!(
            "sealgate: VAULT RECOVERED with its recovery secret and sealed again to this boot chain"
        );
        Ok("Vault recovered: its key is sealed again to this boot (PCR 4 and 7).".into())
    }

    fn hide_input(&mut self, hidden: bool) {
        set_echo(!hidden);
    }

    fn power_off(&mut self) -> Result<()> {
        run("poweroff", &[])
    }

    fn reset_settings(&mut self) -> Result<()> {
        for f in [
            NETWORK_FILE,
            "/data/sealgate/settings.toml",
            "/data/sealgate/settings.toml.previous",
        ] {
            match fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {f}")),
            }
        }
        fs::File::open(DATA)?.sync_all()?;
        run("sync", &[])?;
        run("reboot", &[])
    }

    fn update_status(&mut self) -> String {
        if let Some(d) = daemon::answering() {
            match d.call("GET", "/update", None) {
                Ok((200, body)) => {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                        return update::describe(&v);
                    }
                }
                Ok((status, _)) => {
                    return format!("sealgated answered {status} for the update status\n");
                }
                Err(e) => return format!("sealgated's update status: {e}\n"),
            }
        }
        // Without the daemon: RAUC's own view of the slots.
        let rauc = Command::new("rauc")
            .arg("status")
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("cannot run rauc status: {e}\n"));
        format!("sealgated is not running: RAUC's slot table only.\n{rauc}")
    }

    fn usb_bundles(&mut self) -> Result<Vec<PathBuf>> {
        self.usb_release();
        let devices = update::removable_devices(Path::new("/sys/block"));
        if devices.is_empty() {
            bail!("no USB stick found (no removable disk)");
        }
        fs::create_dir_all(update::USB_MOUNT)?;
        let mut tried = Vec::new();
        for dev in devices {
            let ok = Command::new("mount")
                .args(["-o", "ro,nosuid,nodev,noexec"])
                .arg(format!("/dev/{dev}"))
                .arg(update::USB_MOUNT)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                tried.push(dev);
                continue;
            }
            let found = update::bundles_in(Path::new(update::USB_MOUNT));
            if !found.is_empty() {
                return Ok(found);
            }
            self.usb_release();
            tried.push(dev);
        }
        println!("Looked on: {}", tried.join(", "));
        Ok(Vec::new())
    }

    fn install_bundle(&mut self, bundle: &Path) -> Result<String> {
        let Some(d) = daemon::answering() else {
            bail!("sealgated is not running")
        };
        let mut f = fs::File::open(bundle).with_context(|| bundle.display().to_string())?;
        let len = f.metadata()?.len();
        let (status, answer) = d.post_stream("/update", "application/octet-stream", &mut f, len)?;
        update::install_answer(status, &answer).map_err(anyhow::Error::msg)
    }

    fn install_staged(&mut self) -> Result<String> {
        let Some(d) = daemon::answering() else {
            bail!("sealgated is not running")
        };
        let (status, answer) = d.call("POST", "/update/staged", None)?;
        update::install_answer(status, &answer).map_err(anyhow::Error::msg)
    }

    fn usb_release(&mut self) {
        let _ = Command::new("umount")
            .arg(update::USB_MOUNT)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn wipe(&mut self) -> Result<()> {
        stop_daemon_for_reset();
        // Crypto-erase first: destroy the TPM's erase secret that every sealed copy of the
        // vault key needs, so a copy of vault.redb taken earlier no longer opens on this box.
        // Without a TPM there is nothing sealed to erase; the wipe goes on either way.
        if Path::new("/dev/tpmrm0").exists() {
            match run(
                "sealctl",
                &[
                    "vault",
                    "erase",
                    "--data-dir",
                    DAEMON_DIR,
                    "--tpm",
                    "device:/dev/tpmrm0",
                    "--destroy-every-key",
                ],
            ) {
                Ok(()) => println!(
                    "The TPM's erase secret is destroyed: no copy of the vault opens on this box again."
                ),
                Err(e) => {
                    println!("WARNING: the TPM's erase secret could not be destroyed: {e:#}")
                }
            }
        }
        // The vault first: overwrite its database (which holds the TPM-sealed vault key and
        // every encrypted private key) before unlinking it.
        let db = Path::new(DAEMON_DIR).join("vault.redb");
        if let Ok(meta) = fs::metadata(&db) {
            let mut f = fs::OpenOptions::new().write(true).open(&db)?;
            let zeros = vec![0u8; 1 << 16];
            let mut left = meta.len();
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
        }
        for entry in fs::read_dir(DATA)? {
            let entry = entry?;
            if entry.file_name() == "lost+found" {
                continue;
            }
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&p)?
            } else {
                fs::remove_file(&p)?
            }
        }
        fs::File::open(DATA)?.sync_all()?;
        run("sync", &[])?;
        run("reboot", &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_reset_request_is_the_file_the_daemon_applies() {
        let d = std::env::temp_dir().join(format!("sealgate-console-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        request_admin_reset(&d).expect("request");
        // The daemon looks for exactly this name (tokens::ADMIN_RESET_REQUEST).
        assert!(d.join("reset-admin.request").exists());
        assert!(!d.join("reset-admin.tmp").exists());
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn the_vault_line_is_the_boots_word_or_the_daemons_verdict() {
        let d = std::env::temp_dir().join(format!("sealgate-console-vault-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("daemon")).expect("dir");
        assert_eq!(vault_state(&d), "not opened");
        fs::write(d.join("vault"), "created\n").expect("write");
        fs::write(d.join("daemon/vault"), "unsealed\n").expect("write");
        assert_eq!(vault_state(&d), "created", "a first boot's word stands");
        fs::write(d.join("vault"), "unsealing\n").expect("write");
        assert_eq!(vault_state(&d), "unsealed");
        // The daemon's user wrote it: no terminal escapes on the console.
        fs::write(d.join("daemon/vault"), "locked: \x1b[2Jno\nsecond line").expect("write");
        assert_eq!(vault_state(&d), "locked: [2Jno");
        fs::remove_file(d.join("daemon/vault")).expect("rm");
        assert_eq!(vault_state(&d), "unsealing (sealgated opens it)");
        fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/false\nsealgate:x:100:100:sealgate:/nonexistent:/bin/false\n";
        assert_eq!(user_name(passwd, "100").as_deref(), Some("sealgate"));
        assert_eq!(user_name(passwd, "0").as_deref(), Some("root"));
        assert_eq!(user_name(passwd, "7"), None);
    }
}
