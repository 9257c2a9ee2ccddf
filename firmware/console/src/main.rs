//! `sealgate-console`: the field technician's serial console menu on the box, and two steps
//! of the box's boot that share its code.
//!
//! - `sealgate-console menu`: the numbered menu (busybox init runs it on the serial port).
//! - `sealgate-console apply-network`: applies the saved network settings (DHCP if none).
//! - `sealgate-console mark-boot-good`: resets GRUB's try counter of the booted slot
//!   (rewriting a missing or damaged GRUB environment block).
//! - `sealgate-console health-gate`: waits for a healthy boot, then marks the slot good;
//!   says why when the boot is not healthy (`health.rs`).
//! - `sealgate-console write-file PATH [--mode OCTAL]`: stdin to PATH atomically, for the
//!   shell scripts (`atomic.rs`).
//! - `sealgate-console factory-reset`: the menu's wipe, for the daemon's service script when
//!   the admin API asked for a factory reset (`DATA/factory-reset.request`, which only the
//!   daemon writes, after an administrator sent the typed confirmation).
//!
//! What the box decided at boot is in `/run/sealgate/` (see `/etc/sealgate/boot`); the
//! daemon's files are in `/data/sealgate/` (see `firmware/sealgated/src/tokens.rs`).
#![forbid(unsafe_code)]

mod atomic;
mod daemon;
mod grubenv;
mod health;
mod menu;
mod network;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::menu::{BoxActions, Menu, PingTarget};
use crate::network::NetworkSettings;

/// The data partition's mount point.
const DATA: &str = "/data";
/// The daemon's data directory (`sealgated --data-dir`).
const DAEMON_DIR: &str = "/data/sealgate";
/// The console's network settings.
const NETWORK_FILE: &str = "/data/box/network.conf";
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
        ["mark-boot-good"] => mark_boot_good(),
        ["health-gate"] => health_gate(),
        ["write-file", rest @ ..] => atomic::write_file_command(rest, &mut std::io::stdin()),
        ["factory-reset"] => factory_reset(),
        _ => {
            eprintln!(
                "usage: sealgate-console [menu | apply-network | mark-boot-good | health-gate \
                 | write-file PATH [--mode OCTAL] | factory-reset]"
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

fn read_network() -> Result<NetworkSettings> {
    match fs::read_to_string(NETWORK_FILE) {
        Ok(text) => NetworkSettings::parse_file(&text).context(NETWORK_FILE),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NetworkSettings::Dhcp),
        Err(e) => Err(e).context(NETWORK_FILE),
    }
}

fn apply_network() -> Result<()> {
    let settings = match read_network() {
        Ok(s) => s,
        Err(e) => {
            println!("sealgate: network settings unreadable ({e:#}); using DHCP");
            NetworkSettings::Dhcp
        }
    };
    let ifname = network::interface(Path::new("/sys/class/net"))?;
    network::apply(&settings, &ifname)?;
    println!("sealgate: network {ifname}: {settings}");
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

fn say_boot_health(text: &str) {
    println!("sealgate: {text}");
    let _ = fs::write(Path::new(STATE).join(BOOT_HEALTH), format!("{text}\n"));
}

/// How long the health gate waits for sealgated's first health answer (first boot under
/// emulation included: vault creation, TLS key).
const HEALTH_WAIT: Duration = Duration::from_secs(600);

fn health_gate() -> Result<()> {
    let slot = booted_slot()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "?".into());
    if let Some(why) = health::flags_verdict(Path::new(STATE)) {
        say_boot_health(&format!(
            "boot slot {slot} NOT marked good: {why}. GRUB tries a slot three times, then \
             the other one; nothing reboots by itself."
        ));
        return Ok(());
    }
    let _ = fs::write(
        Path::new(STATE).join(BOOT_HEALTH),
        "waiting for sealgated's health answer\n",
    );
    let deadline = Instant::now() + HEALTH_WAIT;
    loop {
        // The daemon binary asks its own admin listener over TLS (see its selfcheck.rs).
        let out = Command::new("sealgated")
            .args(["--box", "--data-dir", DAEMON_DIR, "--check-health"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let last = match out {
            Ok(o) if o.status.success() => break,
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(e) => format!("cannot run sealgated --check-health: {e}"),
        };
        if Instant::now() > deadline {
            say_boot_health(&format!(
                "boot slot {slot} NOT marked good: sealgated did not answer health within {} s \
                 ({last})",
                HEALTH_WAIT.as_secs()
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    match mark_boot_good() {
        Ok(()) => say_boot_health(&format!("healthy: boot slot {slot} marked good")),
        Err(e) => say_boot_health(&format!(
            "healthy, but boot slot {slot} could not be marked good: {e:#}"
        )),
    }
    Ok(())
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
    let slot = booted_slot().context("no sealgate.slot= on the kernel command line")?;
    let esp = partition("boot").context("no partition named boot")?;
    let mnt = Path::new(STATE).join("esp");
    fs::create_dir_all(&mnt)?;
    run(
        "mount",
        &[
            "-t",
            "vfat",
            "-o",
            "rw,noexec,nosuid,nodev",
            &esp.to_string_lossy(),
            &mnt.to_string_lossy(),
        ],
    )?;
    let result = (|| -> Result<()> {
        let path = mnt.join("EFI/BOOT/grubenv");
        let parsed = fs::read(&path)
            .context("reading grubenv")
            .and_then(|b| grubenv::GrubEnv::parse(&b));
        let env = match parsed {
            Ok(mut env) => {
                if env.get(&format!("{slot}_TRY")) == Some("0")
                    && env.get(&format!("{slot}_OK")) == Some("1")
                {
                    return Ok(());
                }
                env.mark_good(slot)?;
                env
            }
            Err(e) => {
                println!(
                    "sealgate: GRUB's environment was unusable ({e:#}): rewritten with slot \
                     {slot} good and the other slot off"
                );
                grubenv::GrubEnv::fresh(slot)?
            }
        };
        // A new 1024-byte file renamed over the old one (GRUB's save_env finds its blocks
        // through the FAT at every boot and writes into them in place).
        atomic::write_atomic(&path, &env.to_block()?, 0o644)
    })();
    let _ = run("umount", &[&mnt.to_string_lossy()]);
    result
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
        let net = read_network()
            .map(|n| n.to_string())
            .unwrap_or_else(|e| format!("unreadable: {e:#}"));
        s.push_str(&format!("Network:   {net}\n"));
        for (ifname, addr) in network::addresses() {
            if ifname != "lo" {
                s.push_str(&format!("Address:   {ifname} {addr}\n"));
            }
        }
        let state = |f: &str| Path::new(STATE).join(f).exists();
        let tpm = if Path::new("/dev/tpmrm0").exists() {
            "present (/dev/tpmrm0)"
        } else {
            "NOT FOUND"
        };
        s.push_str(&format!("TPM:       {tpm}\n"));
        let vault = fs::read_to_string(Path::new(STATE).join("vault"))
            .unwrap_or_else(|_| "not opened".into());
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

    fn network(&mut self) -> Result<NetworkSettings> {
        read_network()
    }

    fn set_network(&mut self, settings: &NetworkSettings) -> Result<()> {
        write_atomic(Path::new(NETWORK_FILE), settings.to_file().as_bytes())?;
        let ifname = network::interface(Path::new("/sys/class/net"))?;
        network::apply(settings, &ifname)
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
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/false\nsealgate:x:100:100:sealgate:/nonexistent:/bin/false\n";
        assert_eq!(user_name(passwd, "100").as_deref(), Some("sealgate"));
        assert_eq!(user_name(passwd, "0").as_deref(), Some("root"));
        assert_eq!(user_name(passwd, "7"), None);
    }
}
