//! The box's TLS certificate from the web UI in headless Chromium (`webui_tls_browser.py`):
//! key and CSR made on the box, the CSR signed by `openssl x509 -req` as the organisation's
//! CA, certificates of another key, without the names asked for, or with a chain that does
//! not verify refused and shown (nothing changed: the listeners still serve the old one), the
//! right one installed and served by the admin and docking listeners from the next
//! connection, without a restart; a key and certificate pair (a wrong pair refused, a
//! PKCS#12 file installed). Then a restart serves the same certificate (the file and the
//! vault's key agree). Screenshots: `target/webui-screenshots/tls*.png`.
//!
//! The attacker: an administrator's browser visiting another site (a change without the
//! CSRF token is refused), and uploaded files that are not what they claim.
//!
//! Peers: Debian `chromium`, `openssl`; PyPI `playwright`; npm `axe-core`.

use std::process::Command;

use crate::harness::{Daemon, Pki, require_python_module, require_tool, write};

#[test]
fn webui_tls_certificate_from_a_csr_and_from_a_pair() {
    require_tool("openssl", "openssl");
    require_tool("chromium", "chromium");
    require_python_module("playwright", "playwright");
    let browser = crate::webui::chromium();
    let axe = crate::webui::axe_core();
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tmp");
    let mut d = Daemon::start(data.path(), "");
    let setup = d.setup_token.clone().expect("setup token on the console");
    let script = write(
        pki.dir.path(),
        "webui_tls_browser.py",
        include_bytes!("webui_tls_browser.py"),
    );
    let out = Command::new("python3")
        .arg(&script)
        .env("BASE", d.admin_url(""))
        .env("SETUP", &setup)
        .env("PORTS", format!("{},{}", d.admin.port(), d.docking.port()))
        .env("SHOTS", crate::webui::screenshots())
        .env("CHROMIUM", &browser)
        .env("AXE", &axe)
        .env("CORP_CA", pki.path("ca.crt"))
        .env("CORP_KEY", pki.path("ca.key"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("RESULT line");
    let pair = result["pair_sha256"].as_str().expect("pair").to_string();
    // Audited, the refusals too, with the account as actor.
    let audit = d.audit();
    let of = |action: &str, outcome: &str| {
        audit
            .iter()
            .filter(|e| e["operation"] == action && e["outcome"] == outcome)
            .count()
    };
    assert!(of("admin.tls-request", "ok") >= 1, "{audit:?}");
    assert!(of("admin.tls-install", "refused") >= 3, "{audit:?}");
    assert_eq!(of("admin.tls-install", "ok"), 1, "{audit:?}");
    assert_eq!(of("admin.tls-import", "ok"), 1, "{audit:?}");
    // No clear key anywhere in the data directory; the old certificate file kept.
    let tls_dir = data.path().join("tls");
    assert!(tls_dir.join("box.crt.previous").is_file());
    for entry in std::fs::read_dir(&tls_dir).expect("tls dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains("PRIVATE KEY"), "{}", entry.path().display());
    }
    // A restart serves what was installed: the file and the vault's key agree.
    let (status, _) = d.terminate();
    assert!(status.success() || status.code().is_none(), "{status:?}");
    let d2 = Daemon::start(data.path(), "");
    assert_eq!(
        d2.fingerprint.replace(':', "").to_ascii_lowercase(),
        pair,
        "{:?}",
        d2.console
    );
    assert!(crate::webui::screenshots().join("tls.png").is_file());
}
