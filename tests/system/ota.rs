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

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// Polls `GET /update` until its state is not `installing`.
fn wait_installed(bx: &Appliance, jar: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, body) = admin_call(bx, jar, "GET", "/update", None, None);
        assert_eq!(code, 200, "update status: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        if v["state"] != "installing" {
            return v;
        }
        assert!(Instant::now() < deadline, "install still running: {v}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Uploads `bundle` to `POST /update` (the session in `jar`); the answer's body, after a 202.
fn upload(bx: &Appliance, jar: &std::path::Path, csrf: &str, bundle: &std::path::Path) -> String {
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
    assert_eq!(code.trim(), "202", "upload of {}: {body}", bundle.display());
    body.to_string()
}

#[test]
fn update_a_to_b_through_the_admin_api_commits_after_the_health_gate_and_keeps_the_vault() {
    let _m = machine();
    require_program("rauc", "rauc");
    let t0 = Instant::now();
    let bx = Appliance::new("ota");
    let jar = bx.keep.with_extension("cookies");
    let _ = std::fs::remove_file(&jar);

    // The bundle: the image build's slot content as version 99.0.0.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = bx.keep.with_extension("raucb");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "xtask",
            "bundle",
            "--board",
            "qemu-x86_64",
            "--version",
            "99.0.0",
            "--out",
        ])
        .arg(&bundle)
        .output()
        .expect("cargo xtask bundle");
    assert!(
        out.status.success(),
        "cargo xtask bundle: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    let token = line_value(&first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");
    let claim =
        format!(r#"{{"setup_token":"{token}","username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, body) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 201, "claim: {body}");
    let csrf = admin_login(&bx, &jar);
    let (code, body) = admin_call(
        &bx,
        &jar,
        "PATCH",
        "/settings",
        Some(r#"{"limits":{"max_signers":7}}"#),
        Some(&csrf),
    );
    assert_eq!(code, 200, "settings change: {body}");
    // Slot A good before anything is installed (the first boot's health gate).
    vm.console()
        .unwrap()
        .expect("boot slot A marked good", Duration::from_secs(120))
        .expect("slot A marked good");

    // A power cut during an install: the upload is taken, RAUC is writing slot B, QEMU is
    // killed. Slot A boots as before (vault, settings) and the next install works.
    upload(&bx, &jar, &csrf, &bundle);
    // The install takes about 5 s under TCG, and one status request through the forwarded
    // port about as long as RAUC needs to check the slots and the bundle: the cut comes at
    // the first answer, which says installing (at 80-90 % in the runs measured).
    let (code, body) = admin_call(&bx, &jar, "GET", "/update", None, None);
    assert_eq!(code, 200, "update status: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(
        v["state"], "installing",
        "the cut must come during the install: {v}"
    );
    eprintln!("power cut during the install at {} %", v["progress"]);
    drop(vm);
    let mut vm = bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(text.contains("booting slot A"), "after the cut: {text}");
    let csrf = admin_login(&bx, &jar);
    let (code, body) = admin_call(&bx, &jar, "GET", "/update", None, Some(&csrf));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
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
    let (code, body) = admin_call(&bx, &jar, "GET", "/update", None, Some(&csrf));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
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
    let _ = std::fs::remove_file(&bundle);

    // Rollback, in the same box: a development test bundle with a fault planned for each of
    // its slot's three trials, installed into A.
    let t1 = Instant::now();
    let failing = bx.keep.with_extension("fail.raucb");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "xtask",
            "bundle",
            "--board",
            "qemu-x86_64",
            "--version",
            "99.0.1",
            "--test-faults",
            "hang,panic,prediction",
            "--out",
        ])
        .arg(&failing)
        .output()
        .expect("cargo xtask bundle");
    assert!(
        out.status.success(),
        "cargo xtask bundle --test-faults: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
    // Trial 1 hangs: nothing pets the watchdog (the gate set it to 120 s on a trial).
    let t = Instant::now();
    let mut vm = bx.boot();
    let text = vm
        .console()
        .unwrap()
        .expect("trial 1 of slot A hangs here", READY)
        .unwrap_or_else(|e| panic!("trial 1 of slot A: {e:#}"));
    assert!(text.contains("booting slot A"), "trial 1: {text}");
    vm.wait_exit(Duration::from_secs(300))
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
    let (code, body) = admin_call(&bx, &jar, "GET", "/update", None, Some(&csrf));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
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
    let _ = std::fs::remove_file(&jar);
}
