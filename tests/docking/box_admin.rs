//! The box's administration as the daemon sees it, against the real `sealgated`:
//!
//! - the console resets admin access: every admin credential made earlier stops working (the
//!   daemon applies the console's request at start), docking tokens keep working, setup opens
//!   again, and the reset is in the vault's audit chain. Attacker: a former administrator (or
//!   whoever copied their token) who keeps an admin token after the reset;
//! - every key use through the daemon is attributed in the vault's audit chain to the client
//!   that asked and its address (not to the daemon's default actor), so a gateway token used
//!   to decrypt someone's mail is named there.

use sealgate_vault::{SoftwareSealer, Vault};

use crate::harness::{Daemon, Pki, contains, create_token, data_dir_with_keys};

fn vault_audit(dir: &std::path::Path) -> Vec<sealgate_vault::AuditEntry> {
    Vault::open(dir, &mut SoftwareSealer::danger_new())
        .expect("open the vault")
        .audit()
        .expect("the keyed audit chain verifies")
}

/// What the console's "Reset admin access" writes (sealgate-console's `request_admin_reset`).
const REQUEST: &str = "reset-admin.request";

/// Claims the box (the first administrator), then makes an admin-plane API token over the
/// admin socket (root is admin there); returns the token.
fn setup(d: &Daemon) -> String {
    let body = format!(
        "{{\"setup_token\":\"{}\",\"username\":\"root\",\"password\":\"correct horse battery staple\"}}",
        d.setup_token.as_deref().expect("setup is pending")
    );
    let (code, _, resp) = d.curl_url(
        "POST",
        &d.admin_url("/api/v1/admin/setup"),
        None,
        &["-H", "Content-Type: application/json", "--data", &body],
        None,
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&resp));
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
        ])
        .arg(r#"{"name":"ci","role":"admin"}"#)
        .arg("--unix-socket")
        .arg(d.data_dir.join("admin.sock"))
        .arg("http://localhost/api/v1/admin/admin-tokens")
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().expect("token").to_string()
}

/// 200 for a valid admin-plane token, 401 for a revoked one.
fn admin_status(d: &Daemon, token: &str) -> u16 {
    d.curl_url(
        "GET",
        &d.admin_url("/api/v1/admin/status"),
        Some(token),
        &[],
        None,
    )
    .0
}

/// 200 for any valid credential, 401 for a revoked one.
fn openapi_status(d: &Daemon, token: &str) -> u16 {
    d.curl("GET", "/api/v1/openapi.json", Some(token), &[], None)
        .0
}

#[test]
fn reset_admin_access_kills_every_earlier_admin_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = Daemon::start(dir.path(), "");
    let from_setup = setup(&d);
    let named_admin = create_token(dir.path(), "ops", "admin");
    let gateway = create_token(dir.path(), "gw1", "decrypt,verify");
    assert_eq!(admin_status(&d, &from_setup), 200);
    for t in [&named_admin, &gateway] {
        assert_eq!(
            openapi_status(&d, t),
            200,
            "the token works before the reset"
        );
    }

    // The console's action: the request file, then a restart of the daemon.
    std::fs::write(dir.path().join(REQUEST), b"reset\n").expect("request");
    let (status, _) = d.terminate();
    assert!(status.success());
    let mut d = Daemon::start(dir.path(), "");
    assert!(
        d.console
            .iter()
            .any(|l| l.contains("admin access reset: 1 admin token(s) revoked")),
        "{:?}",
        d.console
    );
    assert_eq!(
        admin_status(&d, &from_setup),
        401,
        "an admin-plane API token"
    );
    assert_eq!(
        openapi_status(&d, &named_admin),
        401,
        "an admin-scoped token"
    );
    assert_eq!(openapi_status(&d, &gateway), 200, "docking tokens stay");
    assert!(!dir.path().join(REQUEST).exists(), "the request is done");

    // Setup is open again, with a new setup token, and works once.
    let again = setup(&d);
    assert_eq!(admin_status(&d, &again), 200);
    let (status, _) = d.terminate();
    assert!(status.success());

    // A restart does not reset again, and the reset is in the vault's audit chain.
    let d = Daemon::start(dir.path(), "");
    assert!(d.setup_token.is_none());
    assert_eq!(admin_status(&d, &again), 200);
    drop(d);
    let reset: Vec<_> = vault_audit(dir.path())
        .into_iter()
        .filter(|e| e.action == "admin.reset-access")
        .collect();
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert_eq!(reset[0].actor, "console");
    assert!(reset[0].detail.contains("ops"), "{reset:?}");
}

#[test]
fn key_uses_through_the_daemon_name_the_client_and_its_address() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let gw = create_token(dir.path(), "gw-scanner", "decrypt,sign");
    let mut d = Daemon::start(dir.path(), "");
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "q",
        "the secret is 42",
    );
    let enc = pki.openssl_encrypt(&clear, &["alice@example.org"]);
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", Some(&gw), &[], Some(&enc));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(contains(&body, "the secret is 42"));
    let out = pki.message("bob@example.org", "carol@example.org", "s", "signed");
    let (code, _, body) = d.curl(
        "POST",
        "/api/v1/sign?from=bob@example.org",
        Some(&gw),
        &[],
        Some(&out),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _) = d.terminate();
    assert!(status.success());

    let log = vault_audit(dir.path());
    let uses: Vec<_> = log
        .iter()
        .filter(|e| e.action == "key.decrypt" || e.action == "key.sign")
        .collect();
    assert!(
        uses.iter()
            .any(|e| e.action == "key.decrypt" && e.subject == "alice@example.org"),
        "{log:#?}"
    );
    assert!(
        uses.iter()
            .any(|e| e.action == "key.sign" && e.subject == "bob@example.org"),
        "{log:#?}"
    );
    for e in &uses {
        assert_eq!(e.actor, "docking:gw-scanner from 127.0.0.1", "{e:?}");
        assert!(!e.mac.is_empty(), "the entry is keyed");
    }
}
