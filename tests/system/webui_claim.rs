//! The browser claims the box through the forwarded admin port: the x86_64 image under QEMU
//! (TCG) with swtpm, the setup token read from the serial console, then Debian's headless
//! Chromium (Playwright for Python, `executable_path`) claims the box in the web UI and
//! loads every page, cold and from inside the UI, as `tests/docking/webui_measure.py` does
//! against a developer's daemon. The browser trusts exactly the box's key (its SPKI, read
//! with `openssl s_client` from the forwarded port). Each page's bytes and time to
//! interactive are printed (the issue's targets: first page under 300 KB, every page
//! interactive in under 1 s on the box) and written to `target/webui-measure-qemu.json`;
//! times are never asserted (TCG on a shared CI machine is slower than the box). Then the
//! account the browser made logs in over curl: the claim really made the first admin.
//!
//! Peers: the system tests' (QEMU, OVMF, swtpm), Debian `chromium`, `openssl`, `curl`; PyPI
//! `playwright`.

use std::process::Command;
use std::time::Duration;

use super::{
    ADMIN_PASSWORD, Appliance, FIRST_READY, admin_call, line_value, machine, require_program,
    wait_https, wait_ready,
};

/// base64 of the SHA-256 of the SubjectPublicKeyInfo the box serves on `url`'s port.
fn served_spki(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn browser_claims_the_box_through_the_forwarded_admin_port() {
    let _m = machine();
    require_program("chromium", "chromium");
    require_program("openssl", "openssl");
    assert!(
        python_has("playwright"),
        "the Python module playwright is missing: python3 -m pip install playwright==1.65.3 (PyPI)"
    );
    let bx = Appliance::new("webui-claim");
    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    let token = line_value(&first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let port = bx
        .ports
        .host_port("admin-https")
        .expect("the forwarded admin port");
    let spki = served_spki(port);
    assert!(!spki.is_empty(), "the box's key from its admin port");
    let target = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = target.parent().unwrap_or(&target).to_path_buf();
    let report = target.join("webui-measure-qemu.json");
    let script = bx.keep.with_extension("webui_measure.py");
    std::fs::write(&script, include_bytes!("../docking/webui_measure.py")).expect("script");
    let chromium = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", "command -v chromium"])
            .output()
            .expect("sh")
            .stdout,
    )
    .trim()
    .to_string();
    let out = Command::new("python3")
        .arg(&script)
        .env("BASE", bx.url(""))
        .env("SETUP", &token)
        .env("SPKI", &spki)
        .env("CHROMIUM", &chromium)
        .env("MEASURE_OUT", &report)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("python3");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the browser could not claim the box:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("web UI per page, the box under QEMU (TCG):\n{stdout}");
    println!("written to {}", report.display());
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("RESULT line");
    let bytes = result["cold"]["login"]["bytes"].as_u64().expect("bytes");
    assert!(bytes > 0 && bytes < 300_000, "first page {bytes} bytes");
    // The browser's claim made the first administrator: it logs in over curl; the setup
    // token is spent.
    let jar = bx.keep.with_extension("webui-cookies");
    let (code, body) = admin_call(
        &bx,
        &jar,
        "POST",
        "/session",
        Some(&format!(
            r#"{{"username":"root","password":"{ADMIN_PASSWORD}"}}"#
        )),
        None,
    );
    assert_eq!(code, 200, "login as the account the browser made: {body}");
    let claim =
        format!(r#"{{"setup_token":"{token}","username":"other","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, _) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 410, "the setup token worked once, in the browser");
    let _ = std::fs::remove_file(&jar);
    drop(vm);
}
