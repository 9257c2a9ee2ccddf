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

use crate::harness::{Daemon, Pki, require_python_module, require_tool, run, write};

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

/// SHA-256 (lowercase hex) of the certificate a listener serves, read by `openssl s_client`.
fn served(port: u16) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername sealgate.example.org </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    )));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// `sealctl tls` through the admin socket: a request whose CSR `openssl x509 -req` signs, a
/// certificate of another key refused (exit 1, the daemon's reason, nothing changed), the
/// signed one installed and served at once by the admin and docking listeners.
#[test]
fn sealctl_tls_request_and_install_through_the_running_daemon() {
    require_tool("openssl", "openssl");
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(data.path(), "");
    let sealctl = |args: &[&str]| {
        Command::new(crate::harness::sealctl())
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("sealctl")
    };
    let before = served(d.admin.port());
    let out = sealctl(&[
        "tls",
        "request",
        "--common-name",
        "sealgate.example.org",
        "--dns",
        "sealgate.example.org",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let csr = write(pki.dir.path(), "box.csr", &out.stdout);
    // A malformed name: refused with the daemon's reason.
    let out = sealctl(&["tls", "request", "--common-name", "x", "--dns", "a b"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a DNS name"),
        "{out:?}"
    );
    let ext = write(
        pki.dir.path(),
        "server.ext",
        b"basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    let sign = |csr: &std::path::Path, out: &str| {
        let crt = pki.path(out);
        run(Command::new("openssl")
            .args(["x509", "-req", "-copy_extensions", "copy", "-days", "30"])
            .arg("-in")
            .arg(csr)
            .arg("-CA")
            .arg(pki.path("ca.crt"))
            .arg("-CAkey")
            .arg(pki.path("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt));
        crt
    };
    let other_csr = pki.path("other.csr");
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=sealgate.example.org",
            "-addext",
            "subjectAltName=DNS:sealgate.example.org,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(pki.path("other.key"))
        .arg("-out")
        .arg(&other_csr));
    let wrong = sign(&other_csr, "other.crt");
    let out = sealctl(&["tls", "install", wrong.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not for the key of the box's request"),
        "{out:?}"
    );
    assert_eq!(served(d.admin.port()), before, "nothing changed");
    let good = sign(&csr, "box.crt");
    let chain = pki.path("ca.crt");
    let out = sealctl(&[
        "tls",
        "install",
        good.to_str().expect("path"),
        "--chain",
        chain.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("names:       sealgate.example.org, 127.0.0.1"),
        "{shown}"
    );
    let out = sealctl(&["tls", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sha = v["sha256"].as_str().expect("sha256").to_string();
    assert_ne!(sha, before);
    assert!(v["request"].is_null(), "{v}");
    for port in [d.admin.port(), d.docking.port()] {
        assert_eq!(served(port), sha, "port {port} serves it without a restart");
    }
}

/// `curl --unix-socket DATA/admin.sock` (root: admitted as admin): (status, body).
fn socket_call(data: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-X", method, "-w", "\n%{http_code}", "--unix-socket"])
        .arg(data.join("admin.sock"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("http://localhost/api/v1/admin{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Bad input to the TLS endpoints gets a problem 4xx, never 5xx; and while `[tls]
/// certificate` and `key` name the operator's files, nothing is installed (409), since the
/// next start would serve those files.
#[test]
fn tls_endpoints_refuse_bad_input_and_leave_the_operators_files_alone() {
    require_tool("openssl", "openssl");
    require_tool("curl", "curl");
    let data = tempfile::tempdir().expect("tmp");
    let (crt, key) = (data.path().join("op.crt"), data.path().join("op.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=operator.example.org",
            "-addext",
            "subjectAltName=DNS:operator.example.org,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    // The harness trusts DATA/tls/box.crt: the operator's certificate is the one served.
    std::fs::create_dir_all(data.path().join("tls")).expect("tls dir");
    std::fs::copy(&crt, data.path().join("tls/box.crt")).expect("copy");
    let d = Daemon::start(
        data.path(),
        &format!(
            "[tls]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            crt.display(),
            key.display()
        ),
    );
    let (code, body) = socket_call(data.path(), "GET", "/tls", "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["source"], "settings", "{v}");
    assert_eq!(
        v["names"],
        serde_json::json!(["operator.example.org", "127.0.0.1"])
    );
    let pem = std::fs::read_to_string(&crt).expect("crt");
    let key_pem = std::fs::read_to_string(&key).expect("key");
    let import = serde_json::json!({"certificate": pem, "key": key_pem}).to_string();
    for (method, path, body, want) in [
        ("POST", "/tls/import", import.as_str(), 409),
        ("PUT", "/tls/certificate", r#"{"certificate":"x"}"#, 409),
        ("POST", "/tls/request", "{", 400),
        (
            "POST",
            "/tls/request",
            r#"{"common_name":"x","dns_names":["a b"]}"#,
            422,
        ),
        ("POST", "/tls/request", r#"{"common_name":"x"}"#, 422),
        (
            "POST",
            "/tls/request",
            r#"{"common_name":"x","unknown":1}"#,
            400,
        ),
        ("GET", "/tls/csr", "", 404),
        ("DELETE", "/tls", "", 405),
    ] {
        let (code, answer) = socket_call(data.path(), method, path, body);
        assert_eq!(code, want, "{method} {path} {body}: {answer}");
        let p: serde_json::Value = serde_json::from_str(&answer).expect("problem json");
        assert!(p["title"].is_string(), "{answer}");
    }
    // Without the operator's files, bad uploads are 4xx with the field named.
    drop(d);
    let other_key = data.path().join("other.key");
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&other_key));
    let mismatched = serde_json::json!({
        "certificate": pem,
        "key": std::fs::read_to_string(&other_key).expect("key"),
    })
    .to_string();
    let data2 = tempfile::tempdir().expect("tmp");
    let _d2 = Daemon::start(data2.path(), "");
    for (path, body, want, field) in [
        (
            "/tls/import",
            r#"{"pkcs12":"!!!","password":"x"}"#,
            422,
            "pkcs12",
        ),
        (
            "/tls/import",
            r#"{"pkcs12":"AAAA","password":"x"}"#,
            422,
            "pkcs12",
        ),
        (
            "/tls/import",
            r#"{"certificate":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
            422,
            "certificate",
        ),
        ("/tls/import", r#"{"certificate":"x"}"#, 400, ""),
        ("/tls/import", mismatched.as_str(), 422, "key"),
    ] {
        let (code, answer) = socket_call(data2.path(), "POST", path, body);
        assert_eq!(code, want, "{path} {body}: {answer}");
        if !field.is_empty() {
            let p: serde_json::Value = serde_json::from_str(&answer).expect("problem json");
            assert_eq!(p["field"], field, "{answer}");
        }
    }
    let (code, answer) = socket_call(
        data2.path(),
        "PUT",
        "/tls/certificate",
        &serde_json::json!({"certificate": pem}).to_string(),
    );
    assert_eq!(code, 409, "no request waits: {answer}");
}
