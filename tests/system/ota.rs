//! Over-the-air update, A -> B: a bundle made by `cargo xtask bundle` from the image build's
//! slot content (a newer version, signed with the DEVELOPMENT signer the image's keyring
//! trusts), uploaded through the admin API, installed by RAUC into slot B; a fresh QEMU boots
//! slot B, whose health gate marks it good and makes the daemon commit (the vault opened with
//! the copy sealed for B's predicted PCR 4, floor raised). The administrator's login (the
//! vault's accounts) and a settings change are kept. Then, in the same box, B -> A with a
//! development test bundle that plans a fault for each of its slot's three trials (`cargo
//! xtask bundle --test-faults hang,panic,prediction`): the first trial hangs before the health
//! gate's verdict (the watchdog resets the box), the second panics the kernel (`panic=`
//! reboots), the third boots with the vault sealed for a wrong PCR 4 prediction (locked:
//! the gate fails and reboots); GRUB then boots B again, whose gate marks A bad and reports
//! the failure in `GET /update` and the audit chain, with the vault opening as before.
//! Then, on B, the refusals: another CA's signer, another board and a downgrade are refused
//! before any install; a genuine bundle with one flipped payload byte fails in RAUC's
//! dm-verity read; each leaves RAUC's slot table (read by the daemon over D-Bus) as it was.
//! Last, B -> A with the next version, committed on A with the vault and the settings.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

#[path = "../common/rauc_bundle.rs"]
mod rauc_bundle;
use rauc_bundle::small_bundle;

/// `GET /update` (the session in `jar`), as JSON.
fn update_status(bx: &Appliance, jar: &std::path::Path) -> serde_json::Value {
    let (code, body) = admin_call(bx, jar, "GET", "/update", None, None);
    assert_eq!(code, 200, "update status: {body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// `cargo xtask bundle` of the image build's slot content as `version` (with a test fault
/// plan), written to `out`.
fn xtask_bundle(
    root: &std::path::Path,
    board: Board,
    version: &str,
    faults: Option<&str>,
    out: &std::path::Path,
) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root).args([
        "xtask",
        "bundle",
        "--board",
        board.name(),
        "--version",
        version,
    ]);
    if let Some(f) = faults {
        cmd.args(["--test-faults", f]);
    }
    let o = cmd
        .arg("--out")
        .arg(out)
        .output()
        .expect("cargo xtask bundle");
    assert!(
        o.status.success(),
        "cargo xtask bundle {version}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Claims a box at its first boot (`first`: its console up to `ready`) and changes one
/// setting (`max_signers` 7, which an update must keep); the session's CSRF token.
fn claim_and_change_a_setting(bx: &Appliance, jar: &std::path::Path, first: &str) -> String {
    let token = line_value(first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");
    let claim =
        format!(r#"{{"setup_token":"{token}","username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, body) = admin_call(bx, jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 201, "claim: {body}");
    let csrf = admin_login(bx, jar);
    let (code, body) = admin_call(
        bx,
        jar,
        "PATCH",
        "/settings",
        Some(r#"{"limits":{"max_signers":7}}"#),
        Some(&csrf),
    );
    assert_eq!(code, 200, "settings change: {body}");
    csrf
}

/// Polls `GET /update` until its state is not `installing`.
fn wait_installed(bx: &Appliance, jar: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v = update_status(bx, jar);
        if v["state"] != "installing" {
            return v;
        }
        assert!(Instant::now() < deadline, "install still running: {v}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Posts `bundle` to `POST /update` (the session in `jar`): the status and the body.
fn post_bundle(
    bx: &Appliance,
    jar: &std::path::Path,
    csrf: &str,
    bundle: &std::path::Path,
) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-k",
            "-s",
            "--max-time",
            "300",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
        ])
        .arg("-b")
        .arg(jar)
        .args(["-H", &format!("X-CSRF-Token: {csrf}")])
        .args(["-H", "content-type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", bundle.display()))
        .arg(bx.url("/api/v1/admin/update"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Uploads `bundle` to `POST /update` (the session in `jar`); the answer's body, after a 202.
fn upload(bx: &Appliance, jar: &std::path::Path, csrf: &str, bundle: &std::path::Path) -> String {
    let (code, body) = post_bundle(bx, jar, csrf, bundle);
    assert_eq!(code, 202, "upload of {}: {body}", bundle.display());
    body
}

/// What must not change on a refusal: the booted and primary slot, each slot's state, boot
/// status and installed version (RAUC's table through `GET /update`).
fn slot_facts(v: &serde_json::Value) -> Vec<String> {
    let t = &v["slots"];
    let mut f = vec![
        format!("booted {}", t["booted"]),
        format!("primary {}", t["boot_primary"]),
    ];
    for e in t["slots"].as_array().into_iter().flatten() {
        for (name, s) in e.as_object().into_iter().flatten() {
            f.push(format!(
                "{name} {} {} {}",
                s["state"], s["boot_status"], s["slot_status"]["bundle"]["version"]
            ));
        }
    }
    f
}

#[test]
fn update_a_to_b_through_the_admin_api_commits_after_the_health_gate_and_keeps_the_vault() {
    let _m = machine();
    require_program("rauc", "rauc");
    require_program("openssl", "openssl");
    let t0 = Instant::now();
    let bx = Appliance::new("ota");
    let jar = bx.keep.with_extension("cookies");
    let _ = std::fs::remove_file(&jar);

    // The bundle: the image build's slot content as version 99.0.0.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = bx.keep.with_extension("raucb");
    xtask_bundle(&root, Board::X86_64, "99.0.0", None, &bundle);

    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    let csrf = claim_and_change_a_setting(&bx, &jar, &first);
    // Slot A good before anything is installed (the first boot's health gate).
    vm.console()
        .unwrap()
        .expect("boot slot A marked good", Duration::from_secs(120))
        .expect("slot A marked good");

    // A power cut during an install: the upload is taken, RAUC is writing slot B, QEMU is
    // killed. Slot A boots as before (vault, settings) and the next install works. RAUC's
    // service says on the console when it starts writing the slot (about 1.3 s of writing
    // under TCG, after the slot was marked non-bootable); the cut comes at that line.
    upload(&bx, &jar, &csrf, &bundle);
    vm.console()
        .unwrap()
        .expect(
            "writing data to device /dev/sealgate-rootB",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("RAUC starts writing slot B: {e:#}"));
    eprintln!("power cut as RAUC began writing slot B");
    drop(vm);
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("booting slot A"), "after the cut: {text}");
    let csrf = admin_login(&bx, &jar);
    let v = update_status(&bx, &jar);
    assert_eq!(v["running"]["slot"], "A", "{v}");
    assert!(v["pending"].is_null(), "nothing pending after the cut: {v}");
    assert_ne!(v["state"], "installing", "{v}");
    vm.console()
        .unwrap()
        .expect("boot slot A marked good", Duration::from_secs(120))
        .expect("slot A still marked good after the cut");

    // Upload: streamed, checked by rauc info, installed in the background.
    upload(&bx, &jar, &csrf, &bundle);
    let t_install = Instant::now();
    let v = wait_installed(&bx, &jar);
    assert_eq!(v["state"], "installed", "{v}");
    assert_eq!(v["pending"]["slot"], "B", "{v}");
    eprintln!("install: {:.1} s", t_install.elapsed().as_secs_f64());

    // Reboot: a fresh QEMU boots slot B (RAUC made it primary).
    reboot(vm);
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("booting slot B"), "{text}");
    vm.console()
        .unwrap()
        .expect(
            "update 99.0.0 committed in slot B (the vault dropped 1 older sealed copies)",
            Duration::from_secs(180),
        )
        .expect("the daemon commits after the health gate; the vault opened with the new copy");
    let csrf = admin_login(&bx, &jar);
    let v = update_status(&bx, &jar);
    assert_eq!(v["running"]["slot"], "B", "{v}");
    assert_eq!(v["floor"], "99.0.0", "{v}");
    assert!(v["pending"].is_null(), "{v}");
    let (code, body) = admin_call(&bx, &jar, "GET", "/settings", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"max_signers\":7"), "settings kept: {body}");
    // Audited in the vault's chain, which survived the update.
    let (code, body) = admin_call(&bx, &jar, "GET", "/audit?limit=200", None, None);
    assert_eq!(code, 200, "{body}");
    for action in ["admin.update.install", "admin.update.commit"] {
        assert!(body.contains(action), "{action} in the audit log: {body}");
    }
    eprintln!("OTA A -> B: {:.1} s", t0.elapsed().as_secs_f64());

    // Rollback, in the same box: a development test bundle with a fault planned for each of
    // its slot's three trials, installed into A.
    let t1 = Instant::now();
    let failing = bx.keep.with_extension("fail.raucb");
    xtask_bundle(
        &root,
        Board::X86_64,
        "99.0.1",
        Some("hang,panic,prediction"),
        &failing,
    );
    upload(&bx, &jar, &csrf, &failing);
    let v = wait_installed(&bx, &jar);
    assert_eq!(v["state"], "installed", "{v}");
    assert_eq!(v["pending"]["slot"], "A", "{v}");
    vm.console()
        .unwrap()
        .expect(
            "sealed for a wrong PCR 4 of slot A",
            Duration::from_secs(30),
        )
        .expect("the daemon sealed the vault for the planned wrong prediction");
    reboot(vm);
    // Trial 1 hangs: nothing pets the watchdog (the gate sets it to 120 s on a trial; the
    // hang fault shortens it to 15 s).
    let t = Instant::now();
    let mut vm = bx.boot();
    let text = vm
        .console()
        .unwrap()
        .expect("trial 1 of slot A hangs here", READY)
        .unwrap_or_else(|e| panic!("trial 1 of slot A: {e:#}"));
    assert!(text.contains("booting slot A"), "trial 1: {text}");
    vm.wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("trial 1: the watchdog resets the hung box: {e:#}"));
    eprintln!(
        "trial 1 (hang, watchdog): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Trial 2 panics the kernel: panic=10 reboots.
    let t = Instant::now();
    let mut vm = bx.boot();
    let text = vm
        .console()
        .unwrap()
        .expect("trial 2 of slot A panics the kernel", READY)
        .unwrap_or_else(|e| panic!("trial 2 of slot A: {e:#}"));
    assert!(text.contains("booting slot A"), "trial 2: {text}");
    vm.wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("trial 2: the kernel panic reboots: {e:#}"));
    eprintln!("trial 2 (kernel panic): {:.1} s", t.elapsed().as_secs_f64());
    // Trial 3: the vault sealed for a wrong prediction stays locked; the gate fails.
    let t = Instant::now();
    let mut vm = bx.boot();
    let text = vm
        .console()
        .unwrap()
        .expect("UPDATE TRIAL FAILED", READY)
        .unwrap_or_else(|e| panic!("trial 3 of slot A: {e:#}"));
    assert!(text.contains("booting slot A"), "trial 3: {text}");
    assert!(
        text.contains("VAULT LOCKED: the TPM refused to unseal the vault key"),
        "trial 3 fails for the wrong prediction: {text}"
    );
    vm.wait_exit(Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("trial 3: the failed gate reboots: {e:#}"));
    eprintln!(
        "trial 3 (wrong prediction): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("booting slot B"), "{text}");
    vm.console()
        .unwrap()
        .expect("healthy: boot slot B marked good", Duration::from_secs(180))
        .expect("slot B judged healthy after the fallback");
    let csrf = admin_login(&bx, &jar);
    let v = update_status(&bx, &jar);
    assert_eq!(v["running"]["slot"], "B", "{v}");
    assert!(v["pending"].is_null(), "{v}");
    assert_eq!(
        v["floor"], "99.0.0",
        "the failed update raised no floor: {v}"
    );
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("update 99.0.1 in slot A did not pass its health gate"),
        "{v}"
    );
    let (code, body) = admin_call(&bx, &jar, "GET", "/audit?limit=200", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("admin.update.fell-back"),
        "the fallback audited: {body}"
    );
    eprintln!(
        "OTA rollback (hang, kernel panic, wrong prediction; back on B): {:.1} s",
        t1.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&failing);

    // Refusals, on B: each leaves both slots as they are (RAUC's slot table, read over
    // D-Bus by the daemon) and nothing pending. Another CA's signer, another board and a
    // downgrade below the floor are refused before any install (422); a flipped byte in the
    // payload of a genuine bundle is found by RAUC's verity check.
    let t2 = Instant::now();
    let v = update_status(&bx, &jar);
    let before = slot_facts(&v);
    assert!(
        before.iter().any(|f| f == "booted \"B\""),
        "the slot table through D-Bus: {v}"
    );
    let dir = bx.keep.with_extension("refusals");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("refusals dir");
    let o = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "x.key",
            "-out",
            "x.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Other signer",
            "-addext",
            "keyUsage=critical,digitalSignature",
            "-addext",
            "extendedKeyUsage=critical,codeSigning",
        ])
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dev = root.join("board/dev-keys");
    let (cert, key) = (dev.join("ota-signer.pem"), dev.join("ota-signer.key"));
    let compatible = "sealgate-qemu-x86_64";
    let cases = [
        (
            "another CA",
            small_bundle(
                &dir,
                "otherca",
                compatible,
                "99.1.0",
                &dir.join("x.pem"),
                &dir.join("x.key"),
            ),
            "The bundle does not verify",
        ),
        (
            "another board",
            small_bundle(
                &dir,
                "board",
                "sealgate-qemu-aarch64",
                "99.1.0",
                &cert,
                &key,
            ),
            "The bundle is for another board",
        ),
        (
            "a downgrade",
            small_bundle(&dir, "old", compatible, "98.0.0", &cert, &key),
            "The bundle is older than the version floor",
        ),
    ];
    for (what, b, title) in &cases {
        let (code, body) = post_bundle(&bx, &jar, &csrf, b);
        assert_eq!(code, 422, "{what}: {body}");
        assert!(body.contains(title), "{what}: {body}");
    }
    // The genuine 99.0.0 bundle with one byte flipped in its payload (the slot image).
    let mut bytes = std::fs::read(&bundle).expect("bundle");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let flipped = dir.join("flipped.raucb");
    std::fs::write(&flipped, &bytes).expect("flipped bundle");
    drop(bytes);
    let (code, body) = post_bundle(&bx, &jar, &csrf, &flipped);
    let verdict = match code {
        422 => format!("refused at upload: {body}"),
        202 => {
            let v = wait_installed(&bx, &jar);
            assert_eq!(
                v["state"], "failed",
                "a flipped payload byte must not install: {v}"
            );
            format!("install failed: {}", v["last_error"])
        }
        _ => panic!("flipped payload byte: {code} {body}"),
    };
    eprintln!("flipped payload byte: {verdict}");
    let v = update_status(&bx, &jar);
    assert_eq!(slot_facts(&v), before, "both slots as before: {v}");
    assert!(v["pending"].is_null(), "{v}");
    assert_eq!(v["running"]["slot"], "B", "{v}");
    assert_eq!(v["floor"], "99.0.0", "{v}");
    eprintln!("OTA refusals: {:.1} s", t2.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&bundle);

    // B -> A with the next version: slot A, marked bad by the fallback and half written by
    // the refused install, takes it; the box commits on A with the vault and the settings.
    let t3 = Instant::now();
    let next = bx.keep.with_extension("next.raucb");
    xtask_bundle(&root, Board::X86_64, "99.1.0", None, &next);
    upload(&bx, &jar, &csrf, &next);
    let v = wait_installed(&bx, &jar);
    assert_eq!(v["state"], "installed", "{v}");
    assert_eq!(v["pending"]["slot"], "A", "{v}");
    reboot(vm);
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("booting slot A"), "{text}");
    vm.console()
        .unwrap()
        .expect(
            "update 99.1.0 committed in slot A",
            Duration::from_secs(180),
        )
        .expect("B -> A: the daemon commits on A after the health gate");
    admin_login(&bx, &jar);
    let v = update_status(&bx, &jar);
    assert_eq!(v["running"]["slot"], "A", "{v}");
    assert_eq!(v["floor"], "99.1.0", "{v}");
    assert!(v["pending"].is_null(), "{v}");
    let (code, body) = admin_call(&bx, &jar, "GET", "/settings", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"max_signers\":7"), "settings kept: {body}");
    eprintln!("OTA B -> A: {:.1} s", t3.elapsed().as_secs_f64());
    drop(vm);
    let _ = std::fs::remove_file(&next);
    let _ = std::fs::remove_file(&jar);
}

/// The aarch64 box updates the same way: its bundle (`cargo xtask bundle --board
/// qemu-aarch64`, the image build's slot and UKIs as 99.0.0) uploaded through the admin API,
/// installed by RAUC into slot B; slot B boots under AAVMF with the vault copy sealed for its
/// predicted PCR 4 (the firmware measures the arm64 UKI as OVMF measures the x86_64 one), the
/// health gate commits it, and the administrator's account and settings are kept.
#[test]
fn aarch64_update_a_to_b_commits_and_keeps_the_vault() {
    let _m = machine();
    require_program("rauc", "rauc");
    let bx = Appliance::on(Board::Aarch64, "ota-aarch64");
    let jar = bx.keep.with_extension("cookies");
    let _ = std::fs::remove_file(&jar);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = bx.keep.with_extension("raucb");
    xtask_bundle(&root, Board::Aarch64, "99.0.0", None, &bundle);

    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, AARCH64_READY);
    let csrf = claim_and_change_a_setting(&bx, &jar, &first);
    vm.console()
        .unwrap()
        .expect("boot slot A marked good", Duration::from_secs(120))
        .expect("slot A marked good");

    upload(&bx, &jar, &csrf, &bundle);
    let v = wait_installed(&bx, &jar);
    assert_eq!(v["state"], "installed", "{v}");
    assert_eq!(v["pending"]["slot"], "B", "{v}");

    reboot(vm);
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, AARCH64_READY);
    assert!(text.contains("booting slot B"), "{text}");
    vm.console()
        .unwrap()
        .expect(
            "update 99.0.0 committed in slot B (the vault dropped 1 older sealed copies)",
            Duration::from_secs(180),
        )
        .expect("the daemon commits after the health gate; the vault opened with the new copy");
    let _ = admin_login(&bx, &jar);
    let v = update_status(&bx, &jar);
    assert_eq!(v["running"]["slot"], "B", "{v}");
    assert_eq!(v["floor"], "99.0.0", "{v}");
    let (code, body) = admin_call(&bx, &jar, "GET", "/settings", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"max_signers\":7"), "settings kept: {body}");
}
