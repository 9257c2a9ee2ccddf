//! The local web UI (`webui/`, served by `webui.rs` on the admin listener) in a real browser:
//! Debian's headless Chromium driven by Playwright for Python, against the real daemon whose
//! vault is sealed by a private swtpm. The flows: claim, login, the CA, a PKCS#12 import,
//! issuing, export and revocation of a certificate, creating and revoking API tokens, the
//! audit log, the queue (retry, hold, release, delete), accounts and a read-only account's
//! view; every page checked by axe-core (WCAG 2.1 A/AA); every page without console errors or CSP violations; a change without the CSRF
//! token refused from the page; the first page's transferred bytes measured (< 300 KB).
//! Screenshots of each page go to `target/webui-screenshots/`.
//!
//! The attacker: anyone on the LAN fetching the UI's files or any path under `/ui/`, and
//! pages the administrator visits (framing, injected script): the headers are checked here.
//!
//! Peers: Debian `chromium`, `swtpm`, `openssl`, `curl`; PyPI `playwright` (its own browser
//! download is never used); npm `axe-core` (under `target/webui-node/`).

use std::path::PathBuf;
use std::process::Command;

use sealgate_tpm::swtpm::Swtpm;

use crate::harness::{
    Daemon, Pki, data_dir_with_keys, header, require_python_module, require_tool, run, write,
};

pub(crate) fn chromium() -> String {
    require_tool("chromium", "chromium");
    String::from_utf8_lossy(&run(Command::new("sh").args(["-c", "command -v chromium"])).stdout)
        .trim()
        .to_string()
}

/// base64 of the SHA-256 of the box certificate's public key (Chromium's SPKI pin).
pub(crate) fn spki_pin(cert: &std::path::Path) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        cert.display()
    )));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// axe-core's script, installed from npm by `cargo xtask test` under `target/webui-node/`.
pub(crate) fn axe_core() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let axe = tmp
        .parent()
        .unwrap_or(&tmp)
        .join("webui-node/node_modules/axe-core/axe.min.js");
    assert!(
        axe.is_file(),
        "{} is missing: the npm package `axe-core` (cargo xtask test installs it: \
         `npm install --prefix target/webui-node axe-core@4.14.1`, npm from the Debian package `nodejs`)",
        axe.display()
    );
    axe
}

pub(crate) fn screenshots() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("webui-screenshots")
}

#[test]
fn webui_in_chromium_claims_imports_issues_and_audits() {
    require_tool("openssl", "openssl");
    require_tool("swtpm", "swtpm");
    let browser = chromium();
    require_python_module("playwright", "playwright");
    let axe = axe_core();
    let tmp = tempfile::tempdir().expect("tmp");
    let tpm = Swtpm::start(&tmp.path().join("tpm")).expect("swtpm (Debian package `swtpm`)");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let tcti = tpm.tcti();
    // An SMTP listener whose next hop is down, retries far apart: a message waits in the
    // queue for the browser to retry, hold, release and delete.
    let next_hop = crate::queue::free_port();
    let settings = format!(
        "[smtp]\ndecrypt_listen = \"127.0.0.1:0\"\nnext_hop = \"127.0.0.1:{next_hop}\"\nhostname = \"box.example.org\"\nretry_secs = 600\n"
    );
    // A docking client: one message decrypted (plain, passed through) and one refused (no
    // certificate for the recipient): the dashboard counts them.
    let probe = crate::harness::create_token(&data, "probe", "decrypt");
    let probe_enc = crate::harness::create_token(&data, "probe-enc", "encrypt");
    let mut d = Daemon::start_sealed(&data, &settings, &["--tpm", &tcti]);
    let setup = d.setup_token.clone().expect("setup token on the console");
    let plain: &[u8] =
        b"From: carol@example.org\r\nTo: zoe@partner.test\r\nSubject: probe\r\n\r\nhello\r\n";
    let (code, _, _) = d.curl("POST", "/api/v1/decrypt", Some(&probe), &[], Some(plain));
    assert_eq!(code, 200);
    let (code, _, _) = d.curl(
        "POST",
        "/api/v1/encrypt?from=carol@example.org&to=zoe@partner.test",
        Some(&probe_enc),
        &[],
        Some(plain),
    );
    assert!((400..500).contains(&code), "{code}");
    let reply = crate::queue::submit(
        d.smtp_decrypt.expect("smtp listener").port(),
        "carol@example.org",
        &["alice@example.org"],
        "From: carol@example.org\r\nTo: alice@example.org\r\nSubject: waiting\r\nMessage-ID: <waiting@example.org>\r\n\r\nfor the queue page",
    );
    let queued = reply
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(reply.starts_with("250 "), "{reply}");

    // Without a browser: the files and their headers; nothing outside the table.
    let (code, headers, body) = d.curl_url("GET", &d.admin_url("/ui/app.js"), None, &[], None);
    assert_eq!(code, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
    assert!(!body.is_empty());
    for path in [
        "/ui/",
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/nothing.js",
        "/ui/app.js/",
    ] {
        let (code, headers, _) = d.curl_url("GET", &d.admin_url(path), None, &[], None);
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/problem+json"),
            "{path}"
        );
    }
    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/ui/app.js"),
        ("DELETE", "/ui/app.js"),
    ] {
        let (code, headers, _) = d.curl_url(method, &d.admin_url(path), None, &[], Some(b"x"));
        assert_eq!(code, 405, "{method} {path}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/problem+json")
        );
    }
    // Revalidation: the ETag answers 304 without the body.
    let etag = header(&headers, "etag").expect("etag").to_string();
    let (code, _, body) = d.curl_url(
        "GET",
        &d.admin_url("/ui/app.js"),
        None,
        &["-H", &format!("If-None-Match: {etag}")],
        None,
    );
    assert_eq!((code, body.len()), (304, 0));
    // The docking port does not serve the UI.
    let (code, _, _) = d.curl("GET", "/ui/app.js", None, &[], None);
    assert_eq!(code, 404);

    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus/keys");
    let script = write(
        tmp.path(),
        "webui_browser.py",
        include_bytes!("webui_browser.py"),
    );
    let out = Command::new("python3")
        .arg(&script)
        .env("BASE", d.admin_url(""))
        .env("SETUP", &setup)
        .env("SPKI", spki_pin(&d.ca_file()))
        .env("SHOTS", screenshots())
        .env("CHROMIUM", &browser)
        .env("AXE", &axe)
        .env("QUEUED", &queued)
        .env("P12", corpus.join("corpus-rsa-legacy.p12"))
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
    let bytes = result["first_page_bytes"].as_u64().expect("bytes");
    println!("web UI first page: {bytes} bytes transferred");
    assert!(bytes > 0 && bytes < 300_000, "{bytes}");
    // The token the page showed once worked until it was revoked there: now it is refused.
    let token = result["docking_token"].as_str().expect("token");
    let (code, _, _) = d.curl(
        "GET",
        "/api/v1/certificates?email=a@example.org",
        Some(token),
        &[],
        None,
    );
    assert_eq!(code, 401, "the revoked token is refused");
    for name in [
        "login",
        "claim",
        "dashboard",
        "keys",
        "certificates",
        "policies",
        "tokens",
        "audit",
        "queue",
        "settings",
        "accounts",
        "system",
    ] {
        assert!(
            screenshots().join(format!("{name}.png")).is_file(),
            "screenshot {name}"
        );
    }
    // The browser's actions are in the vault's chain as the account's.
    let (status, _) = d.terminate();
    assert!(status.success() || status.code().is_none(), "{status:?}");
    drop(tpm);
}

/// The box's CA as an intermediate under a corporate CA, from the browser: the key and CSR
/// made on the box, the CSR signed by `openssl` as the corporate CA, a wrong certificate
/// refused (the CA stays pending), the right one installed with its chain; then a user's
/// certificate issued and a fresh CRL. Certificates a gateway posted wait on the
/// certificates page: one approved, one rejected.
#[test]
fn webui_in_chromium_installs_an_intermediate_ca_and_decides_pending_certificates() {
    let browser = chromium();
    require_python_module("playwright", "playwright");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    // Two self-signed certificates a gateway posts: new addresses, not from a trusted CA, so
    // they wait for an administrator (approved and rejected from the page).
    pki.issue("dave-self", "dave@example.org", "rsa", None);
    pki.issue("frank-self", "frank@example.org", "rsa", None);
    let gateway = crate::harness::create_token(dir.path(), "gw", "encrypt");
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\ntrust_anchors = \"{}\"\n",
            pki.path("ca.crt").display()
        ),
    );
    for stem in ["dave-self", "frank-self"] {
        let pem = std::fs::read(pki.cert(stem)).expect("cert");
        let (code, _, body) = d.curl(
            "POST",
            "/api/v1/certificates",
            Some(&gateway),
            &["-H", "Content-Type: application/pem-certificate-chain"],
            Some(&pem),
        );
        let a: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(code, 200, "{a}");
        assert_eq!(a["pending"].as_array().map(Vec::len), Some(1), "{a}");
    }
    let setup = d.setup_token.clone().expect("setup token on the console");
    let script = write(
        pki.dir.path(),
        "webui_browser.py",
        include_bytes!("webui_browser.py"),
    );
    let out = Command::new("python3")
        .arg(&script)
        .env("FLOW", "intermediate")
        .env("BASE", d.admin_url(""))
        .env("SETUP", &setup)
        .env("SPKI", spki_pin(&d.ca_file()))
        .env("SHOTS", screenshots())
        .env("CHROMIUM", &browser)
        .env("CORP_CA", pki.path("ca.crt"))
        .env("CORP_KEY", pki.path("ca.key"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RESULT "), "{stdout}");
}
