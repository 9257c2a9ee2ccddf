//! System tests: the x86_64 image booted under QEMU (TCG) with swtpm, driven through its
//! serial console and its forwarded ports, as a technician and an admin would.
//!
//! Every boot is a fresh QEMU (`-no-reboot`) on the same VM folder (disk overlay, UEFI
//! variables, swtpm state). Every wait is bounded; QEMU and swtpm die with the [`Vm`]. The
//! boots run one at a time (QEMU under TCG wants the whole machine). A missing peer fails
//! with the Debian package to install; nothing here is skipped.
//!
//! They boot the image in `target/image/qemu-x86_64/` (built if missing): `cargo xtask test`
//! rebuilds it first; after changing the box's code outside it, run `cargo xtask image`.
//! One more boots the qemu-aarch64 board's own kernel and TPM probe from
//! `target/image/qemu-aarch64/` (`cargo xtask image --board qemu-aarch64` builds them).
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sealgate_qemu::{
    Board, BootOptions, PortForwards, READY_LINE, Swtpm, Vm, VmDir, ensure_image, require_peers,
};

mod network;
mod webui_claim;

/// First boot: vault creation and TLS key generation under TCG.
const FIRST_READY: Duration = Duration::from_secs(240);
/// Later boots.
const READY: Duration = Duration::from_secs(180);
/// The aarch64 box's boots, emulated on an x86_64 host.
const AARCH64_READY: Duration = Duration::from_secs(600);
/// The console menu's answer to one line.
const MENU: Duration = Duration::from_secs(30);

mod ota;
mod verified_boot;

/// One VM at a time.
static MACHINE: Mutex<()> = Mutex::new(());

fn machine() -> MutexGuard<'static, ()> {
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A VM folder in the build's temporary folder, removed when the test passes.
struct Appliance {
    dir: VmDir,
    ports: PortForwards,
    keep: PathBuf,
}

impl Appliance {
    fn new(name: &str) -> Appliance {
        Appliance::on(Board::X86_64, name)
    }

    fn on(board: Board, name: &str) -> Appliance {
        require_peers(board).expect("peers");
        require_program("curl", "curl");
        let image = ensure_image(board).expect("the board's image");
        let path =
            std::env::temp_dir().join(format!("sealgate-system-{name}-{}", std::process::id()));
        let dir = VmDir::prepare(&path, board, &image, true).expect("VM folder");
        Appliance {
            dir,
            ports: PortForwards::free().expect("free ports"),
            keep: path,
        }
    }

    fn boot(&self) -> Vm {
        self.boot_with(true)
    }

    fn boot_with(&self, tpm: bool) -> Vm {
        let opts = BootOptions {
            ports: Some(self.ports),
            tpm,
            ..Default::default()
        };
        Vm::boot(&self.dir, &opts).expect("boot")
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.ports.host_port("admin-https").unwrap_or_default()
        )
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.keep);
        } else {
            eprintln!("VM folder kept for inspection: {}", self.keep.display());
        }
    }
}

fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is missing: apt-get install {package}");
}

/// `curl -k` (the box's certificate is self-signed); returns (HTTP status, body).
fn https(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-k",
        "-s",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Polls `url` until it answers (bounded); returns the status.
fn wait_https(url: &str, timeout: Duration) -> u16 {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, _) = https("GET", url, None);
        if code != 0 || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for the daemon's readiness line; returns the console text up to it.
fn wait_ready(vm: &mut Vm, timeout: Duration) -> String {
    let text = vm
        .console()
        .unwrap()
        .expect(READY_LINE, timeout)
        .expect("sealgated ready");
    eprintln!(
        "ready {:.1} s after QEMU started\n{}",
        vm.uptime().as_secs_f64(),
        vm.console().unwrap().timeline()
    );
    text
}

/// The value after `prefix` on a console line.
fn line_value(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_string()))
}

/// Every prompt the console menu ends an answer with.
const PROMPTS: [&str; 9] = [
    "Choose 1-10: ",
    "Choose 1-11: ",
    "Choose 1-3: ",
    "empty to cancel): ",
    "Choose 1-4: ",
    "or a.b.c.d): ",
    "(empty for none): ",
    "Type yes to confirm: ",
    "anything else to cancel: ",
];

/// Brings the console to a known state: the main menu, its prompt just read. Returns which
/// prompt (0: `Choose 1-10`; 1: `Choose 1-11`, the recovery entry offered) and the menu.
fn sync_menu(vm: &mut Vm) -> (usize, String) {
    let c = vm.console().unwrap();
    c.send_line("x").expect("console write");
    c.expect("Not a menu entry", MENU)
        .expect("the main menu answers");
    c.expect_any(&["Choose 1-10: ", "Choose 1-11: "], MENU)
        .expect("main menu prompt")
}

/// The recovery secret on a first boot's console (the line after `RECOVERY SECRET`).
fn recovery_secret(first_boot: &str) -> String {
    let after = first_boot
        .split("RECOVERY SECRET")
        .nth(1)
        .unwrap_or_else(|| panic!("no recovery secret on the console:\n{first_boot}"));
    after
        .split_whitespace()
        .find(|w| w.len() >= 50 && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or_else(|| panic!("no recovery secret after its heading:\n{after}"))
        .to_string()
}

/// The console's recovery entry (offered while the vault is locked) given `secret`: the
/// console's answer, through the next main-menu prompt or the box's restart.
fn recover_at_console(vm: &mut Vm, secret: &str) -> String {
    sync_menu(vm);
    let page = choose(vm, "11");
    assert!(
        page.contains("The vault is locked: the TPM refused"),
        "the recovery entry: {page}"
    );
    let c = vm.console().unwrap();
    c.send_line(secret).unwrap();
    let (which, mut text) = c
        .expect_any(&["Failed: ", "VAULT RECOVERED"], MENU)
        .expect("the recovery's answer");
    // A refusal ends at the menu again; a recovery at the reboot it starts.
    let end = ["Choose 1-11: ", "Restarting system"][which];
    text.push_str(&c.expect(end, MENU).expect("the recovery's end"));
    text
}

/// Types `line` and returns the answer through the next prompt.
fn choose(vm: &mut Vm, line: &str) -> String {
    let c = vm.console().unwrap();
    c.send_line(line).expect("console write");
    c.expect_any(&PROMPTS, MENU).expect("menu answer").1
}

/// Reboots through the menu and waits for QEMU to exit (`-no-reboot`).
fn reboot(mut vm: Vm) {
    sync_menu(&mut vm);
    choose(&mut vm, "6");
    let c = vm.console().unwrap();
    c.send_line("yes").unwrap();
    c.expect("Restarting system", Duration::from_secs(60))
        .expect("the box reboots");
    vm.wait_exit(Duration::from_secs(30))
        .expect("QEMU exits on reboot");
}

fn status(vm: &mut Vm) -> String {
    sync_menu(vm);
    choose(vm, "1")
}

/// Claims the box: `POST /api/v1/admin/setup` with `token` (the first administrator).
fn setup(bx: &Appliance, token: &str) -> (u16, String) {
    https(
        "POST",
        &bx.url("/api/v1/admin/setup"),
        Some(&format!(
            r#"{{"setup_token":"{token}","username":"root","password":"correct horse battery staple"}}"#
        )),
    )
}

/// Chooses menu entry `entry` (confirming with `confirm`); returns the new setup token: the
/// menu shows the one the daemon's admin API answered with, or (a daemon without that
/// resource) the restarted daemon prints one.
fn new_setup_token(vm: &mut Vm, entry: &str, confirm: Option<&str>) -> String {
    sync_menu(vm);
    let mut text = choose(vm, entry);
    if let Some(c) = confirm {
        text.push_str(&choose(vm, c));
    }
    assert!(text.contains("setup token"), "{text}");
    if let Some(t) = line_value(&text, "POST /api/v1/admin/setup on the admin port):") {
        return t;
    }
    text.push_str(
        &vm.console()
            .unwrap()
            .expect(READY_LINE, READY)
            .expect("sealgated restarted"),
    );
    line_value(&text, "POST /api/v1/admin/setup on the admin port):")
        .expect("a new setup token on the console")
}

/// `curl -k` with a cookie jar and the session's CSRF token (the admin API); returns (HTTP
/// status, body).
fn admin_call(
    bx: &Appliance,
    jar: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    csrf: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-k",
        "-s",
        "--max-time",
        "60",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("-b")
    .arg(jar)
    .arg("-c")
    .arg(jar);
    if let Some(c) = csrf {
        cmd.args(["-H", &format!("X-CSRF-Token: {c}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(bx.url(&format!("/api/v1/admin{path}")))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Logs in as the box's administrator; returns the CSRF token (the cookie is in `jar`).
fn admin_login(bx: &Appliance, jar: &std::path::Path) -> String {
    let (code, body) = admin_call(
        bx,
        jar,
        "POST",
        "/session",
        Some(&format!(
            r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#
        )),
        None,
    );
    assert_eq!(code, 200, "login: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("session JSON");
    v["csrf_token"].as_str().expect("csrf_token").to_string()
}

const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Claiming the box as an administrator would: the setup token from the console, the first
/// admin account over the forwarded admin port, a login, a PKCS#12 import and a settings
/// change; after a reboot the login works again, the key is there and the change is kept
/// (written to the data partition's settings file in `--box` mode).
#[test]
fn box_is_claimed_over_the_admin_port_and_keeps_its_admin_key_and_settings_across_a_reboot() {
    use base64::Engine as _;
    let _m = machine();
    let bx = Appliance::new("claim");
    let jar = bx.keep.with_extension("cookies");
    let _ = std::fs::remove_file(&jar);

    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    let token = line_value(&first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    // The console reaches the daemon through /run/sealgate/admin.sock (as root).
    let c = vm.console().unwrap();
    c.send_line("x").expect("console write");
    let menu = c.expect("Choose 1-10: ", MENU).expect("the main menu");
    assert!(!menu.contains("needs sealgated"), "{menu}");

    // Claim: the first admin account, with the one-time token; a replay is refused.
    let claim =
        format!(r#"{{"setup_token":"{token}","username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, body) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 201, "claim: {body}");
    let (code, _) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 410, "the setup token works once");

    let csrf = admin_login(&bx, &jar);
    let p12 = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/corpus/keys/corpus-rsa-legacy.p12"
    ))
    .expect("the corpus PKCS#12");
    let import = serde_json::json!({
        "pkcs12": base64::engine::general_purpose::STANDARD.encode(&p12),
        "password": "corpus",
    })
    .to_string();
    let (code, body) = admin_call(
        &bx,
        &jar,
        "POST",
        "/keys/import",
        Some(&import),
        Some(&csrf),
    );
    assert_eq!(code, 201, "import: {body}");
    let imported: serde_json::Value = serde_json::from_str(&body).expect("import JSON");
    let user = imported[0]["user"].as_str().expect("user").to_string();

    // A settings change: written to /data/sealgate/settings.toml over the shipped settings.
    let (code, body) = admin_call(
        &bx,
        &jar,
        "PATCH",
        "/settings",
        Some(r#"{"limits":{"max_signers":7},"docking":{"missing":"encrypt-known"}}"#),
        Some(&csrf),
    );
    assert_eq!(code, 200, "settings change: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("settings JSON");
    assert_eq!(
        v["outcome"]["pending_restart"],
        serde_json::json!(["docking.missing"]),
        "{v}"
    );
    let (code, body) = admin_call(
        &bx,
        &jar,
        "PATCH",
        "/settings",
        Some(r#"{"docking":{"listen":"192.0.2.1:8444"}}"#),
        Some(&csrf),
    );
    assert_eq!(
        code, 409,
        "an address the box does not have is rolled back: {body}"
    );
    // The gateway's listeners on their standard ports, served by the unprivileged daemon
    // after the next start (SMTP 25/465/587, IMAP 143/993).
    let gateway = r#"{"submission":{"listen":"0.0.0.0:587","listen_tls":"0.0.0.0:465","auth":"smtp://127.0.0.1:3587","relay":"127.0.0.1:3525"},"inbound":{"listen":"0.0.0.0:25","domains":["example.org"],"next_hop":"127.0.0.1:3526"},"imap":{"listen":"0.0.0.0:993","listen_starttls":"0.0.0.0:143","upstream":"imaps://127.0.0.1:3993"}}"#;
    let (code, body) = admin_call(&bx, &jar, "PATCH", "/settings", Some(gateway), Some(&csrf));
    assert_eq!(code, 200, "the gateway's listeners: {body}");

    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "{s}"
    );
    assert!(s.contains("Setup:     done"), "{s}");
    reboot(vm);

    // Boot 2: the account, the key and the settings are still there.
    let mut vm = bx.boot();
    let second = wait_ready(&mut vm, READY);
    assert!(!second.contains("NOT USABLE"), "{second}");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let _ = std::fs::remove_file(&jar);
    let csrf = admin_login(&bx, &jar);
    let (code, body) = admin_call(&bx, &jar, "GET", "/keys", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&user),
        "the imported key after the reboot: {body}"
    );
    let (code, body) = admin_call(&bx, &jar, "GET", "/settings", None, Some(&csrf));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("settings JSON");
    assert_eq!(v["settings"]["limits"]["max_signers"], 7, "{v}");
    assert_eq!(v["settings"]["docking"]["missing"], "encrypt-known", "{v}");
    assert_eq!(v["settings"]["docking"]["listen"], "0.0.0.0:8444", "{v}");
    assert_eq!(v["restart_required"], serde_json::json!([]), "{v}");
    let (code, body) = admin_call(&bx, &jar, "GET", "/status", None, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let listening: Vec<&str> = v["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["address"].as_str())
        .collect();
    for port in [25, 143, 465, 587, 993] {
        let addr = format!("0.0.0.0:{port}");
        assert!(listening.contains(&addr.as_str()), "{addr} is served: {v}");
    }
    let s = wait_boot_judged(&mut vm);
    assert!(s.contains("Settings:  /data/sealgate/settings.toml"), "{s}");

    // The console's "Reset admin access" asks the daemon over /run/sealgate/admin.sock:
    // every earlier admin credential is dead and the new setup token claims the box.
    let token2 = new_setup_token(&mut vm, "5", Some("yes"));
    assert_ne!(token2, token);
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let (code, body) = admin_call(&bx, &jar, "GET", "/keys", None, None);
    assert_eq!(code, 401, "the earlier session is dead: {body}");
    let _ = std::fs::remove_file(&jar);
    let (code, body) = admin_call(
        &bx,
        &jar,
        "POST",
        "/session",
        Some(&format!(
            r#"{{"username":"admin","password":"{ADMIN_PASSWORD}"}}"#
        )),
        None,
    );
    assert_eq!(code, 401, "the earlier account is dead: {body}");
    let claim =
        format!(r#"{{"setup_token":"{token2}","username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, body) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 201, "claimed again: {body}");
    let _ = std::fs::remove_file(&jar);
}

/// First boot, setup token, health, unseal after reboot, and the PCR policy broken.
#[test]
fn tpm_sealed_box_first_boot_reboot_and_broken_pcr_policy() {
    let _m = machine();
    let bx = Appliance::new("lifecycle");

    // Boot 1: first boot.
    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    assert!(
        first.contains("first boot: creating the key vault"),
        "{first}"
    );
    assert!(
        first.contains("RECOVERY SECRET"),
        "the recovery secret is shown once at first boot"
    );
    let secret = recovery_secret(&first);
    let fingerprint = line_value(&first, "TLS certificate SHA-256 fingerprint:")
        .expect("fingerprint on the console");
    assert_eq!(fingerprint.split(':').count(), 32, "{fingerprint}");
    let token = line_value(&first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");

    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );

    // The technician asks for the setup token again: the daemon keeps only its hash, so it
    // issues a new one on the console and the first one stops working.
    let token2 = new_setup_token(&mut vm, "4", None);
    assert_ne!(token2, token);
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    assert_eq!(
        setup(&bx, &token).0,
        401,
        "the replaced setup token is refused"
    );
    let (code, body) = setup(&bx, &token2);
    assert_eq!(code, 201, "{body}");
    assert!(body.contains("\"role\":\"admin\""), "{body}");
    assert_eq!(setup(&bx, &token2).0, 410, "the setup token works once");

    let s = status(&mut vm);
    assert!(s.contains("TPM:       present"), "{s}");
    assert!(s.contains("Vault:     created"), "{s}");
    assert!(s.contains("Setup:     done"), "{s}");
    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "{s}"
    );
    reboot(vm);

    // Boot 2: same disk and TPM: the vault unseals, setup stays done.
    let mut vm = bx.boot();
    let second = wait_ready(&mut vm, READY);
    assert!(!second.contains("first boot"), "{second}");
    assert!(
        !second.contains("setup token ("),
        "no new setup token once setup is done"
    );
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let s = status(&mut vm);
    assert!(s.contains("Vault:     unsealed"), "{s}");
    assert!(s.contains("Boot slot: A"), "{s}");
    assert!(s.contains("Setup:     done"), "{s}");
    // The daemon runs unprivileged (its uid, read from /proc by the console).
    assert!(s.contains("sealgated: running (pid"), "{s}");
    assert!(s.contains("user sealgate"), "{s}");
    assert!(!s.contains("user root"), "{s}");
    // The daemon's memory once ready, within the box's budget (40 MiB; 21 MiB measured).
    let resident: u64 = s
        .split(" MiB resident")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resident memory on the status page: {s}"));
    eprintln!("the daemon, idle after a later boot: {resident} MiB resident (budget 40 MiB)");
    assert!(
        resident <= 40,
        "the idle daemon holds {resident} MiB, over 40 MiB"
    );

    // Reset admin access: setup opens again with a new token, once.
    let token3 = new_setup_token(&mut vm, "5", Some("yes"));
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    assert_eq!(setup(&bx, &token3).0, 201);
    assert_eq!(setup(&bx, &token3).0, 410);
    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "{s}"
    );
    reboot(vm);

    // Boot 3: a firmware update added a revocation to dbx, which OVMF measures into PCR 7:
    // the TPM refuses to unseal, the box says so on the console and serves nothing.
    bx.dir.add_dbx_entry().expect("dbx entry added");
    let mut vm = bx.boot();
    let c = vm.console().unwrap();
    let (which, text) = c
        .expect_any(&["VAULT LOCKED", READY_LINE], READY)
        .expect("a verdict on the vault");
    assert_eq!(which, 0, "the box served with a broken PCR policy:\n{text}");
    let s = status(&mut vm);
    assert!(s.contains("Vault:     locked"), "{s}");
    assert!(s.contains("sealgated: not started: vault locked"), "{s}");
    let (code, _) = https("GET", &bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "nothing listens with a locked vault");
    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Boot:      boot slot A NOT marked good: the vault is locked"),
        "a locked vault is not a healthy boot: {s}"
    );
    reboot(vm);

    // Two more locked boots use up slot A's three tries (slot B holds nothing yet), then
    // GRUB boots A as a last resort: the box still reaches the menu and says why, and
    // nothing reboots by itself.
    for n in 2..=3 {
        let mut vm = bx.boot();
        vm.console()
            .unwrap()
            .expect("VAULT LOCKED", READY)
            .unwrap_or_else(|e| panic!("locked boot {n}: {e}"));
        let s = wait_boot_judged(&mut vm);
        assert!(!s.contains("LAST RESORT"), "try {n} of 3: {s}");
        reboot(vm);
    }
    let mut vm = bx.boot();
    vm.console()
        .unwrap()
        .expect("VAULT LOCKED", READY)
        .expect("the last-resort boot reaches the vault verdict");
    let s = wait_boot_judged(&mut vm);
    assert!(s.contains("LAST RESORT"), "{s}");
    assert!(s.contains("NOT marked good: the vault is locked"), "{s}");

    // The dbx update was the owner's own: the technician recovers the vault at the console
    // with the secret shown at first boot. A mistyped secret is refused (nothing changes);
    // the right one seals the key again to this boot's PCRs and the box reboots, unseals by
    // itself, serves, and the health gate marks its slot good again (so GRUB's next choice
    // is no longer a last resort).
    let mut typo = secret.clone().into_bytes();
    typo[0] = if typo[0] == b'7' { b'8' } else { b'7' };
    let answer = recover_at_console(&mut vm, &String::from_utf8(typo).unwrap());
    assert!(
        answer.contains("Failed: the recovery secret is not valid"),
        "a mistyped secret: {answer}"
    );
    assert!(
        !answer.contains(&secret),
        "the secret is not echoed: {answer}"
    );
    let answer = recover_at_console(&mut vm, &secret);
    assert!(answer.contains("VAULT RECOVERED"), "recovery: {answer}");
    assert!(answer.contains("Restarting system"), "{answer}");
    vm.wait_exit(Duration::from_secs(30))
        .expect("QEMU exits on the reboot after recovery");
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(!text.contains("VAULT LOCKED"), "{text}");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let s = wait_boot_judged(&mut vm);
    assert!(s.contains("Vault:     unsealed"), "{s}");
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "{s}"
    );
}

/// Polls the status page until the health gate has judged the boot (bounded); returns it.
fn wait_boot_judged(vm: &mut Vm) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = status(vm);
        // The status page's own line: the gate's console line ("sealgate: healthy: ...
        // marked good") can arrive with a page that was made just before.
        let judged = s
            .lines()
            .any(|l| l.starts_with("Boot:") && l.contains("marked good"));
        if judged || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Where a power cut hits during the first boot: QEMU is killed (SIGKILL, no shutdown) as
/// soon as the console shows the line. Each cut gets a new box (disk and TPM).
const FIRST_BOOT_CUTS: [(&str, &str); 5] = [
    ("before the vault exists", "sealgate: network "),
    (
        "during vault creation",
        "first boot: creating the key vault",
    ),
    ("right after the vault was created", "RECOVERY SECRET"),
    // The settings file is copied before the TPM step; its verdict is said after `ready`.
    ("right after the settings copy", "sealgate: boot: vault"),
    ("right after ready", READY_LINE),
];

/// The boot after a cut: ready, health answered over both forwarded ports (so the
/// listeners face the network: the box's settings), the vault open, no file the boot trusts
/// found empty or damaged, and the boot judged healthy. Returns the running box.
fn recovers(bx: &Appliance, what: &str) -> Vm {
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, FIRST_READY);
    for damage in [
        "NOT USABLE",
        "unreadable",
        "was unusable",
        "could not write",
    ] {
        assert!(
            !text.contains(damage),
            "after a cut {what}: {damage}:\n{text}"
        );
    }
    // What the box itself prints (after firmware and GRUB, which draw with ANSI codes): no
    // INFO flood, no colour codes.
    let own = text.split_once("sealgate: network ").map_or("", |(_, t)| t);
    assert!(!own.is_empty(), "{text}");
    assert!(!own.contains("INFO") && !own.contains('\u{1b}'), "{own}");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(60)),
        200,
        "admin health after a cut {what}"
    );
    let docking = format!(
        "https://127.0.0.1:{}/api/v1/health",
        bx.ports.host_port("docking").unwrap_or_default()
    );
    assert_eq!(
        wait_https(&docking, Duration::from_secs(30)),
        200,
        "docking health after a cut {what}"
    );
    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Vault:     created") || s.contains("Vault:     unsealed"),
        "after a cut {what}: {s}"
    );
    assert!(
        s.contains("Settings:  /data/sealgate/settings.toml"),
        "after a cut {what}: {s}"
    );
    assert!(
        !s.contains("Network:   unreadable"),
        "after a cut {what}: {s}"
    );
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "after a cut {what}: {s}"
    );
    vm
}

/// Power cuts at five points of the first boot and one of a settings change from the
/// console: each time the next boot answers health over the forwarded ports with the box's
/// settings, opens the vault, and finds no file empty or half-written.
#[test]
fn power_cuts_during_first_boot_and_a_settings_change_leave_a_reachable_box() {
    let _m = machine();
    let mut cuts = 0;
    let mut last = None;
    for (what, line) in FIRST_BOOT_CUTS {
        let bx = Appliance::new(&format!("cut{cuts}"));
        let mut vm = bx.boot();
        let text = vm
            .console()
            .unwrap()
            .expect(line, FIRST_READY)
            .unwrap_or_else(|e| panic!("before the cut {what}: {e}"));
        assert!(
            text.contains("first boot: creating the key vault") || line == "sealgate: network ",
            "{text}"
        );
        drop(vm); // the power cut
        cuts += 1;
        eprintln!("power cut {cuts}: {what}");
        let vm = recovers(&bx, what);
        last = Some((bx, vm));
    }

    // A settings change from the console, cut right after it was saved: the box keeps the
    // address QEMU forwards to (10.0.2.15), now as a static address.
    let (bx, mut vm) = last.expect("a box");
    sync_menu(&mut vm);
    let mut out = String::new();
    for line in ["2", "2", "10.0.2.15/24", "10.0.2.2"] {
        out.push_str(&choose(&mut vm, line));
    }
    let c = vm.console().unwrap();
    c.send_line("10.0.2.3").unwrap();
    c.expect("Saved and applied: static 10.0.2.15/24", MENU)
        .expect("the change is saved");
    drop(vm);
    cuts += 1;
    eprintln!("power cut {cuts}: right after a network settings change");
    let mut vm = recovers(&bx, "after a network settings change");
    let s = status(&mut vm);
    assert!(s.contains("Network:   static 10.0.2.15/24"), "{s}");
    eprintln!("power cuts tried: {cuts}");
    assert_eq!(cuts, 6);
}

/// The technician's menu: status, a static address kept across a reboot, factory reset
/// tier 1 (settings go, keys stay) and tier 2 (everything goes).
#[test]
fn console_menu_static_address_survives_reboot_and_factory_resets() {
    let _m = machine();
    let bx = Appliance::new("menu");

    let mut vm = bx.boot();
    wait_ready(&mut vm, FIRST_READY);
    let s = status(&mut vm);
    assert!(s.contains("Network:   DHCP"), "{s}");
    assert!(s.contains("Address:   eth0 10.0.2.15/24"), "{s}");

    sync_menu(&mut vm);
    let mut out = String::new();
    for line in ["2", "2", "10.0.2.77/24", "10.0.2.2", "10.0.2.3"] {
        out.push_str(&choose(&mut vm, line));
    }
    assert!(
        out.contains("Saved and applied: static 10.0.2.77/24, gateway 10.0.2.2, DNS 10.0.2.3"),
        "{out}"
    );
    assert!(
        choose(&mut vm, "3").ends_with("Choose 1-10: "),
        "back to the main menu"
    );
    let s = status(&mut vm);
    assert!(
        s.contains("Address:   eth0 10.0.2.77/24"),
        "applied at once: {s}"
    );
    // Unknown input is refused, never run.
    assert!(choose(&mut vm, "/bin/sh").contains("Not a menu entry"));
    reboot(vm);

    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("network eth0: static 10.0.2.77/24"), "{text}");
    let s = status(&mut vm);
    assert!(s.contains("Network:   static 10.0.2.77/24"), "{s}");
    assert!(s.contains("Address:   eth0 10.0.2.77/24"), "{s}");

    // Tier 1: settings go, keys stay; the box reboots.
    sync_menu(&mut vm);
    assert!(choose(&mut vm, "8").ends_with("Type yes to confirm: "));
    let c = vm.console().unwrap();
    c.send_line("yes").unwrap();
    c.expect("Restarting system", Duration::from_secs(60))
        .expect("reboot after the reset");
    vm.wait_exit(Duration::from_secs(30)).unwrap();

    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(
        !text.contains("first boot"),
        "tier 1 keeps the vault: {text}"
    );
    let s = status(&mut vm);
    assert!(s.contains("Network:   DHCP"), "{s}");
    assert!(s.contains("Vault:     unsealed"), "{s}");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );

    // Tier 2: a wrong confirmation cancels; the typed one wipes keys and all, and the box
    // comes back as from the factory: a new vault, a new identity, a new setup token.
    sync_menu(&mut vm);
    assert!(choose(&mut vm, "9").ends_with("anything else to cancel: "));
    assert!(choose(&mut vm, "yes").contains("Cancelled."));
    assert!(choose(&mut vm, "9").ends_with("anything else to cancel: "));
    let c = vm.console().unwrap();
    c.send_line("ERASE ALL KEYS").unwrap();
    let wiped = c
        .expect("Restarting system", Duration::from_secs(60))
        .expect("reboot after the wipe");
    // A crypto-erase: the TPM's erase secret that every sealed copy of the vault key needs.
    assert!(
        wiped.contains("The TPM's erase secret is destroyed"),
        "{wiped}"
    );
    vm.wait_exit(Duration::from_secs(30)).unwrap();

    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, FIRST_READY);
    assert!(
        text.contains("first boot: creating the key vault"),
        "{text}"
    );
    assert!(
        text.contains("POST /api/v1/admin/setup on the admin port):"),
        "{text}"
    );
}

/// A box without a TPM stops with a clear console message and starts no daemon.
#[test]
fn box_without_tpm_says_so_and_serves_nothing() {
    let _m = machine();
    let bx = Appliance::new("notpm");
    let mut vm = bx.boot_with(false);
    let c = vm.console().unwrap();
    let (which, text) = c
        .expect_any(&["NO TPM FOUND", READY_LINE], READY)
        .expect("a verdict");
    assert_eq!(which, 0, "{text}");
    let s = status(&mut vm);
    assert!(s.contains("TPM:       NOT FOUND"), "{s}");
    assert!(s.contains("sealgated: not started: no TPM"), "{s}");
    let (code, _) = https("GET", &bx.url("/api/v1/health"), None);
    assert_eq!(code, 0);
}

/// Kills a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The aarch64 board's own kernel (built by `cargo xtask image --board qemu-aarch64` from
/// `linux-source` with the board's fragments) drives QEMU virt's `tpm-tis-device`: its
/// bring-up initramfs finds `/dev/tpm0`, a TPM 2.0, and gets an answer to TPM2_GetRandom
/// from swtpm (the bring-up check under the full box's tests below).
#[test]
fn aarch64_board_kernel_drives_the_tpm() {
    let _m = machine();
    require_program("qemu-system-aarch64", "qemu-system-arm");
    require_program("swtpm", "swtpm");
    let out = sealgate_qemu::workspace_root().join("target/image/qemu-aarch64");
    let (kernel, probe) = (out.join("Image"), out.join("tpm-probe.cpio.gz"));
    assert!(
        kernel.is_file() && probe.is_file(),
        "{} and {} are missing: run `cargo xtask image --board qemu-aarch64` (it builds them \
         first)",
        kernel.display(),
        probe.display()
    );
    let dir = tempfile_dir("aarch64-tpm");
    let swtpm = Swtpm::start_in(&dir, &dir).expect("swtpm");
    let sock = swtpm.socket();
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args([
        "-M",
        "virt",
        "-cpu",
        "cortex-a57",
        "-m",
        "256",
        "-nographic",
    ])
    .args(["-no-reboot", "-monitor", "none", "-kernel"])
    .arg(&kernel)
    .arg("-initrd")
    .arg(&probe)
    .args(["-append", "console=ttyAMA0 panic=-1", "-chardev"])
    .arg(format!("socket,id=chrtpm,path={}", sock.display()))
    .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
    .args(["-device", "tpm-tis-device,tpmdev=tpm0"])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut vm = KillOnDrop(qemu.spawn().expect("qemu-system-aarch64"));
    let stdout = vm.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = String::new();
    let verdict = loop {
        let left = Duration::from_secs(120).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                transcript.push_str(&line);
                transcript.push('\n');
                if line.contains("tpm-probe:") {
                    break line;
                }
            }
            Err(_) => panic!("no probe line within 120 s; console:\n{transcript}"),
        }
    };
    eprintln!(
        "aarch64 kernel to probe answer: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        verdict.contains("tpm0 version 2;")
            && verdict.contains("answered 20 bytes, response code 0x00000000"),
        "{verdict}\nconsole:\n{transcript}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The aarch64 box (`cargo xtask image --board qemu-aarch64`: the board's kernel, the
/// binaries from trixie's Rust, trixie's arm64 runtime) under `qemu-system-aarch64 -M virt`
/// with AAVMF (the image's keys enrolled, Secure Boot on) and swtpm behind `tpm-tis-device`:
/// the signed chain boots, the vault is created and sealed at first boot, the daemon answers
/// health over the forwarded admin port, the console menu answers and reports the TPM; the
/// second boot unseals the vault. Then a dbx entry added to the firmware's variables (AAVMF
/// measures Secure Boot's state into PCR 7 as OVMF does) locks the vault: nothing is served;
/// the recovery secret typed at the console (which requires the kernel's lockdown, i.e.
/// Secure Boot seen as on) seals it again and the next boot serves. The bounds are wider
/// than x86_64's: an arm64 guest is emulated instruction by instruction here.
#[test]
fn aarch64_box_boots_to_the_menu_and_answers_health() {
    let _m = machine();
    let bx = Appliance::on(Board::Aarch64, "aarch64");
    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, AARCH64_READY);
    assert!(
        first.contains("first boot: creating the key vault"),
        "{first}"
    );
    assert!(
        line_value(&first, "POST /api/v1/admin/setup on the admin port):").is_some(),
        "setup token on the console:\n{first}"
    );
    let secret = recovery_secret(&first);
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(60)),
        200
    );
    // The clock came from the board's RTC: the TLS certificate made at this first boot
    // starts now, not in 1970 (where every certificate would be "not yet valid").
    require_program("openssl", "openssl");
    let port = bx.ports.host_port("admin-https").unwrap_or_default();
    let start = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -startdate"
        ))
        .output()
        .expect("openssl");
    let start = String::from_utf8_lossy(&start.stdout).to_string();
    let year: u32 = start
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|y| y.parse().ok())
        .unwrap_or_else(|| panic!("no certificate start date: {start:?}"));
    assert!(
        year >= 2026,
        "the box's clock: its certificate starts {start}"
    );
    let s = status(&mut vm);
    assert!(s.contains("TPM:       present"), "{s}");
    assert!(s.contains("Vault:     created"), "{s}");
    let s = wait_boot_judged(&mut vm);
    assert!(
        s.contains("Boot:      healthy: boot slot A marked good"),
        "{s}"
    );
    reboot(vm);

    let mut vm = bx.boot();
    let second = wait_ready(&mut vm, AARCH64_READY);
    assert!(
        !second.contains("first boot: creating the key vault"),
        "{second}"
    );
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(60)),
        200
    );
    let s = status(&mut vm);
    assert!(s.contains("Vault:     unsealed"), "{s}");
    reboot(vm);

    bx.dir.add_dbx_entry().expect("dbx entry added");
    let mut vm = bx.boot();
    let (which, text) = vm
        .console()
        .unwrap()
        .expect_any(&["VAULT LOCKED", READY_LINE], AARCH64_READY)
        .expect("a verdict on the vault");
    assert_eq!(which, 0, "the box served with a broken PCR policy:\n{text}");
    let (code, _) = https("GET", &bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "nothing listens with a locked vault");
    let answer = recover_at_console(&mut vm, &secret);
    assert!(answer.contains("VAULT RECOVERED"), "recovery: {answer}");
    vm.wait_exit(Duration::from_secs(60))
        .expect("QEMU exits on the reboot after recovery");
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, AARCH64_READY);
    assert!(!text.contains("VAULT LOCKED"), "{text}");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(60)),
        200
    );
}

/// The box's Rust binaries built for aarch64 with Debian trixie's Rust (`cargo xtask image
/// --board qemu-aarch64`, see firmware/xtask/src/cross.rs) run, and seal with a TPM: the
/// arm64 `sealctl` under `qemu-aarch64-static` with the cross root's arm64 libraries (trixie's
/// glibc and libtss2) seals a vault to a swtpm, unseals it again, and makes a CA in it; the
/// daemon and the console start and answer `--version`.
#[test]
fn aarch64_binaries_seal_and_unseal_with_a_tpm() {
    require_program("qemu-aarch64-static", "qemu-user-static");
    require_program("swtpm", "swtpm");
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || sealgate_qemu::workspace_root().join("target"),
            PathBuf::from,
        )
        .join("aarch64-trixie");
    let bins = out.join("aarch64-unknown-linux-gnu/release");
    let root = std::fs::read_to_string(out.join("root.txt")).unwrap_or_default();
    let root = PathBuf::from(root.trim());
    assert!(
        bins.join("sealctl").is_file() && root.join("usr/lib/aarch64-linux-gnu").is_dir(),
        "the aarch64 binaries or their cross root are missing in {}: run `cargo xtask image \
         --board qemu-aarch64` (it builds them)",
        out.display()
    );
    let run = |bin: &str, args: &[&str]| -> std::process::Output {
        Command::new("qemu-aarch64-static")
            .arg("-L")
            .arg(&root)
            .arg(bins.join(bin))
            .args(args)
            .output()
            .expect("qemu-aarch64-static")
    };
    let ok = |bin: &str, args: &[&str]| -> String {
        let o = run(bin, args);
        assert!(
            o.status.success(),
            "{bin} {args:?}: {}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let file = Command::new("file")
        .arg(bins.join("sealgated"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(file.is_empty() || file.contains("ARM aarch64"), "{file}");
    for bin in ["sealgated", "sealctl", "sealgate-console"] {
        let v = ok(bin, &["--version"]);
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{bin}: {v}");
    }

    let dir = tempfile_dir("aarch64-bin");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("sock");
    let mut ctrl = sock.clone().into_os_string();
    ctrl.push(".ctrl");
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--server"])
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--ctrl")
        .arg(format!(
            "type=unixio,path={}",
            PathBuf::from(&ctrl).display()
        ))
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .args(["--flags", "not-need-init,startup-clear"])
        .spawn()
        .expect("swtpm");
    let _swtpm = KillOnDrop(swtpm);
    let started = Instant::now();
    while !(sock.exists() && PathBuf::from(&ctrl).exists()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "swtpm did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tcti = format!("swtpm:path={}", sock.display());
    let data = dir.join("data");
    let (data, rec) = (
        data.to_str().expect("utf8"),
        dir.join("recovery.txt").display().to_string(),
    );
    ok(
        "sealctl",
        &[
            "vault",
            "init",
            "--data-dir",
            data,
            "--tpm",
            &tcti,
            "--recovery-out",
            &rec,
        ],
    );
    let st: serde_json::Value = serde_json::from_str(&ok(
        "sealctl",
        &["vault", "status", "--data-dir", data, "--tpm", &tcti],
    ))
    .expect("vault status JSON");
    assert_eq!(st["sealed_by"], "tpm", "{st}");
    assert_eq!(st["unsealed"], true, "{st}");
    ok(
        "sealctl",
        &[
            "ca",
            "init",
            "--data-dir",
            data,
            "--name",
            "aarch64 CA",
            "--tpm",
            &tcti,
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder in the temporary folder.
fn tempfile_dir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sealgate-system-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("temp folder");
    p
}
