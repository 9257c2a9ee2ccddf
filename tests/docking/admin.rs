//! The admin API (`/api/v1/admin/` on the admin listener) against the real daemon: claiming
//! the box with the setup token (once only), sessions and CSRF with Python `requests`, role
//! denials, the login lockout (per account and address: an attacker does not lock the
//! administrator out from another address), bad input as problem+json, and schemathesis
//! checking `admin-openapi.json` against the server.
//!
//! The attacker: anyone on the LAN reaches the admin port (box: 8440), and any web page the
//! administrator's browser visits can send it requests.

use std::process::Command;

use crate::harness::{Daemon, Pki, data_dir_with_keys, require_python_module, require_tool, write};

pub(crate) fn python(dir: &std::path::Path, script: &str, env: &[(&str, String)]) -> String {
    require_python_module("requests", "requests");
    let file = write(dir, "admin_client.py", script.as_bytes());
    let out = Command::new("python3")
        .arg(&file)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const CLIENT: &str = r#"
import json, os
import requests
from requests.adapters import HTTPAdapter

base, docking, ca, setup = os.environ["BASE"], os.environ["DOCKING"], os.environ["CA"], os.environ["SETUP"]
A = base + "/api/v1/admin"
PW = "correct horse battery staple"

def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert p["status"] == status and p["type"].startswith("https://sealgate.example/problems/"), p
    return p

def session(source=None):
    s = requests.Session()
    s.verify = ca
    if source:
        class Src(HTTPAdapter):
            def init_poolmanager(self, *a, **kw):
                kw["source_address"] = (source, 0)
                super().init_poolmanager(*a, **kw)
        s.mount("https://", Src())
    return s

def login(user, pw=PW, source=None):
    s = session(source)
    r = s.post(A + "/session", json={"username": user, "password": pw})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s, r

anon = session()
# Nothing but health, the document, setup and login without a session.
problem(anon.get(A + "/status"), 401)
problem(anon.get(A + "/accounts"), 401)
problem(anon.post(A + "/tokens", json={"name": "x", "scopes": ["decrypt"]}), 401)
problem(anon.get(A + "/nowhere"), 404)
problem(anon.put(A + "/status"), 405)
assert anon.get(A + "/openapi.json").json()["openapi"].startswith("3.1")

# Claiming the box: a wrong token is 401, a weak password 422, then it works once.
problem(anon.post(A + "/setup", json={"setup_token": "sgt_guess", "username": "root", "password": PW}), 401)
problem(anon.post(A + "/setup", json={"setup_token": setup, "username": "root", "password": "short"}), 422)
problem(anon.post(A + "/setup", json={"setup_token": setup, "username": "bad name!", "password": PW}), 422)
problem(anon.post(A + "/setup", data=b"{not json"), 400)
problem(anon.post(A + "/setup", json={"setup_token": setup, "username": "root", "password": PW, "role": "x"}), 400)
problem(anon.post(A + "/setup", data=b"x" * 100000), 413)
r = anon.post(A + "/setup", json={"setup_token": setup, "username": "Root", "password": PW})
assert r.status_code == 201 and r.json()["username"] == "root" and r.json()["role"] == "admin", r.text
# Replayed: dead, here and on the older setup endpoint.
problem(anon.post(A + "/setup", json={"setup_token": setup, "username": "evil", "password": PW}), 410)
problem(anon.post(base + "/api/v1/setup", json={"setup_token": setup}), 410)

# Login: wrong password 401; the cookie is Secure, HttpOnly, SameSite=Strict.
problem(anon.post(A + "/session", json={"username": "root", "password": "wrong password!"}), 401)
problem(anon.post(A + "/session", json={"username": "nobody", "password": PW}), 401)
root, r = login("root")
cookie = r.headers["Set-Cookie"]
for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/api/v1/admin"]:
    assert attr in cookie, cookie
assert r.headers.get("Cache-Control") == "no-store", r.headers
st = root.get(A + "/status").json()
assert st["vault"]["sealer"] == "software" and st["setup_pending"] is False, st
assert {l["name"] for l in st["listeners"]} >= {"docking", "admin"}, st
assert root.get(A + "/session").json()["username"] == "root"
cfg = root.get(A + "/settings").json()
assert cfg["settings"]["admin"]["listen"] == "127.0.0.1:0", cfg
assert cfg["settings"]["docking"]["missing"] == "reject" and cfg["settings"]["log"]["level"] == "info", cfg
assert set(cfg["changed"]) == {"docking.listen", "admin.listen"}, cfg

# CSRF: missing or forged is 403, nothing changes.
csrf = root.headers.pop("X-CSRF-Token")
problem(root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}), 403)
problem(root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}, headers={"X-CSRF-Token": "0" * 64}), 403)
assert [a["username"] for a in root.get(A + "/accounts").json()] == ["root"]
root.headers["X-CSRF-Token"] = csrf
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    r = root.post(A + "/accounts", json={"username": user, "role": role, "password": PW})
    assert r.status_code == 201 and r.json()["role"] == role, r.text
problem(root.post(A + "/accounts", json={"username": "aud", "role": "admin", "password": PW}), 422)
problem(root.post(A + "/accounts", json={"username": "x", "role": "superuser", "password": PW}), 400)
problem(root.delete(A + "/accounts/root"), 422)

# Tokens: created once, listed without the token, and it works on the docking API.
r = root.post(A + "/tokens", json={"name": "gw1", "scopes": ["verify"]})
assert r.status_code == 201, r.text
token = r.json()["token"]
problem(root.post(A + "/tokens", json={"name": "gw1", "scopes": ["verify"]}), 422)
problem(root.post(A + "/tokens", json={"name": "adm", "scopes": ["admin"]}), 422)
listed = root.get(A + "/tokens").json()
assert [t["name"] for t in listed] == ["gw1"] and token not in json.dumps(listed), listed
r = requests.get(docking + "/api/v1/certificates", params={"email": "alice@example.org"}, verify=ca,
                 headers={"Authorization": "Bearer " + token})
assert r.status_code == 200, r.text
keys = root.get(A + "/keys").json()
assert {k["user"] for k in keys} == {"alice@example.org", "bob@example.org"}, keys

# Roles: the auditor reads the audit log but changes nothing; read-only reads no audit log.
aud, _ = login("aud")
ro, _ = login("ro")
page = aud.get(A + "/audit", params={"limit": 500}).json()
actions = [e["action"] for e in page["entries"]]
for a in ["admin.claim", "admin.login-failed", "admin.login", "admin.account-create", "admin.token-create"]:
    assert a in actions, (a, actions)
assert any(e["action"] == "admin.login" and e["actor"] == "root" for e in page["entries"])
assert len(aud.get(A + "/audit", params={"offset": 1, "limit": 2}).json()["entries"]) == 2
problem(aud.get(A + "/audit", params={"limit": 0}), 400)
problem(aud.get(A + "/audit", params={"offset": -1}), 400)
problem(aud.post(A + "/tokens", json={"name": "gw2", "scopes": ["decrypt"]}), 403)
problem(aud.post(A + "/accounts", json={"username": "x2", "role": "admin", "password": PW}), 403)
problem(ro.get(A + "/audit"), 403)
problem(ro.delete(A + "/accounts/aud"), 403)
assert ro.get(A + "/status").status_code == 200
assert ro.get(A + "/settings").status_code == 200
# Another session's CSRF token does not work (the token is per session).
problem(aud.post(A + "/tokens", json={"name": "gw3", "scopes": ["decrypt"]}, headers={"X-CSRF-Token": csrf}), 403)

# Lockout: an attacker at 127.0.0.1 guessing aud's password locks aud only from there.
for _ in range(5):
    problem(anon.post(A + "/session", json={"username": "aud", "password": "guess guess guess"}), 401)
problem(anon.post(A + "/session", json={"username": "aud", "password": PW}), 429)
login("aud", source="127.0.0.2")
login("root")

# Password change: the current password is checked, the other sessions end.
a1, _ = login("aud", source="127.0.0.2")
a2, _ = login("aud", source="127.0.0.2")
NEW = "a new long password"
problem(a1.put(A + "/session/password", json={"current_password": "wrong wrong wrong", "new_password": NEW}), 403)
problem(a1.put(A + "/session/password", json={"current_password": PW, "new_password": "short"}), 422)
problem(a1.put(A + "/session/password", json={"current_password": PW, "new_password": NEW}, headers={"X-CSRF-Token": "x"}), 403)
r = a1.put(A + "/session/password", json={"current_password": PW, "new_password": NEW})
assert r.status_code == 204, r.text
assert a1.get(A + "/status").status_code == 200
problem(a2.get(A + "/status"), 401)
login("aud", pw=NEW, source="127.0.0.2")
failed = root.get(A + "/audit", params={"action": "admin.login-failed", "limit": 500}).json()["entries"]
assert failed and all(e["action"] == "admin.login-failed" for e in failed), failed
assert any(e["action"] == "admin.password-change" and e["actor"] == "aud"
           for e in root.get(A + "/audit", params={"actor": "aud", "limit": 500}).json()["entries"])

# Deleting an account ends its sessions; logout ends a session.
assert root.delete(A + "/accounts/ro").status_code == 204
problem(ro.get(A + "/status"), 401)
r = root.delete(A + "/session")
assert r.status_code == 204 and "Max-Age=0" in r.headers["Set-Cookie"], r.headers
problem(root.get(A + "/status"), 401)
print("admin client ok")
"#;

#[test]
fn admin_api_claim_sessions_csrf_roles_lockout() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token on the console");
    let out = python(
        dir.path(),
        CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("DOCKING", d.url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
        ],
    );
    assert!(out.contains("admin client ok"), "{out}");
    // The daemon's own audit log names the admin actions too; no password reached a log.
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(log.contains("admin.login"), "{log}");
    for f in ["audit/docking.jsonl", "log/sealgated.log", "stderr.log"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        assert!(!text.contains("correct horse"), "a password in {f}");
    }
}

const LOGIN: &str = r#"
import os, requests
A, ca = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"]
r = requests.post(A + "/setup", verify=ca, json={"setup_token": os.environ["SETUP"], "username": "root", "password": "correct horse battery staple"})
assert r.status_code == 201, r.text
r = requests.post(A + "/session", verify=ca, json={"username": "root", "password": "correct horse battery staple"})
assert r.status_code == 200, r.text
print(r.cookies["sealgate_admin"])
print(r.json()["csrf_token"])
"#;

#[test]
fn schemathesis_checks_the_admin_api_against_its_openapi_document() {
    require_python_module("schemathesis", "schemathesis");
    require_tool("st", "schemathesis (PyPI)");
    require_tool("rauc", "rauc");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    // A RAUC configuration (the development update CA), so uploads reach `rauc info`.
    let conf = dir.path().join("rauc-system.conf");
    let keyring = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../board/dev-keys/ota-ca.pem"
    );
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible=sealgate-qemu-x86_64\nbootloader=noop\nbundle-formats=-plain\n\n\
             [keyring]\npath={keyring}\ncheck-purpose=codesign\n"
        ),
    )
    .expect("system.conf");
    let d = Daemon::start_env(
        dir.path(),
        "",
        &["--danger-software-sealer"],
        &[("SEALGATE_RAUC_CONF", conf.as_os_str())],
    );
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        LOGIN,
        &[
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
        ],
    );
    let mut lines = out.lines();
    let (cookie, csrf) = (lines.next().expect("cookie"), lines.next().expect("csrf"));
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/admin-openapi.json");
    let st = |extra: &[&str]| {
        let reports = tempfile::tempdir().expect("tmp");
        let out = Command::new("st")
            .args(["run", schema, "--url", &d.admin_url("")])
            .args(["-H", &format!("Cookie: sealgate_admin={cookie}")])
            .args(["-H", &format!("X-CSRF-Token: {csrf}")])
            // Logging out would end the session the run uses; a restart moves the ports.
            .args(["--exclude-operation-id", "logout"])
            .args(["--exclude-operation-id", "restart"])
            .args(extra)
            .arg("--tls-verify")
            .arg(d.ca_file())
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "1",
                "--no-color",
                "--report-dir",
            ])
            .arg(reports.path())
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .current_dir(reports.path())
            .output()
            .expect("st");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "schemathesis found problems:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{stdout}");
    };
    // First the keys, certificates and CA alone, while the session surely lives (the whole
    // run below may delete the account it uses and then gets only 401s).
    st(&[
        "--include-path-regex",
        "/api/v1/admin/(keys|certificates|ca)",
    ]);
    st(&[]);
    // The daemon still answers afterwards (the run may have deleted the account it used:
    // it can create another admin, then delete the first).
    let (code, _, _) = d.curl_url("GET", &d.admin_url("/api/v1/health"), None, &[], None);
    assert_eq!(code, 200);
}

const KEYS_CLIENT: &str = r#"
import base64, os
import requests

A, ca, setup = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["SETUP"]
docking, dtoken = os.environ["DOCKING"], os.environ["DTOKEN"]
PW = "correct horse battery staple"

def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    return r.json()

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

r = requests.post(A + "/setup", verify=ca, json={"setup_token": setup, "username": "root", "password": PW})
assert r.status_code == 201, r.text
root = login("root")
assert root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}).status_code == 201
aud = login("aud")
p12 = base64.b64encode(open(os.environ["P12"], "rb").read()).decode()

MSG = b"From: bob@example.org\r\nTo: carol@example.org\r\nSubject: hi\r\nMessage-ID: <1@example.org>\r\n\r\nhello\r\n"
def encrypt_to_carol():
    return requests.post(docking + "/api/v1/encrypt", params=[("from", "bob@example.org"), ("to", "carol@example.org")],
                         data=MSG, verify=ca, headers={"Authorization": "Bearer " + dtoken, "Content-Type": "message/rfc822"})

# Before the import the box has no certificate for carol; the daemon caches the answer.
problem(encrypt_to_carol(), 422)

# Import: the auditor may not; bad input is 4xx; a wrong password changes nothing.
problem(aud.post(A + "/keys/import", json={"pkcs12": p12, "password": "pw"}), 403)
problem(root.post(A + "/keys/import", json={"pkcs12": "not base64!", "password": "pw"}), 400)
problem(root.post(A + "/keys/import", json={"pkcs12": base64.b64encode(b"garbage").decode(), "password": "pw"}), 422)
problem(root.post(A + "/keys/import", json={"pkcs12": p12, "password": "wrong"}), 422)
problem(root.post(A + "/keys/import", json={"pkcs12": "A" * 300000, "password": "pw"}), 413)
r = root.post(A + "/keys/import", json={"pkcs12": p12, "password": "pw"})
assert r.status_code == 201 and r.json()[0]["user"] == "carol@example.org", r.text
# At once on the docking API (no stale cache).
r = encrypt_to_carol()
assert r.status_code == 200, r.text

# Export: any role; PEM.
r = aud.get(A + "/keys/carol@example.org/certificate")
assert r.status_code == 200 and r.text.startswith("-----BEGIN CERTIFICATE-----"), r.text
assert r.headers["Content-Type"] == "application/pem-certificate-chain"
problem(aud.get(A + "/keys/nobody@example.org/certificate"), 404)
problem(aud.get(A + "/keys/not-an-address/certificate"), 404)

# Issue from the box CA, then revoke: admin only.
problem(aud.post(A + "/keys/issue", json={"user": "dave@example.org"}), 403)
problem(root.post(A + "/keys/issue", json={"user": "not an address"}), 422)
r = root.post(A + "/keys/issue", json={"user": "dave@example.org"})
assert r.status_code == 201 and r.json()[0]["source"] == "ca", r.text
problem(aud.post(A + "/keys/dave@example.org/revoke"), 403)
r = root.post(A + "/keys/dave@example.org/revoke")
assert r.status_code == 200 and len(r.json()["revoked"]) == 1, r.text
statuses = [k["status"] for k in root.get(A + "/keys").json() if k["user"] == "dave@example.org"]
assert statuses == ["revoked"], statuses

actions = [(e["actor"], e["action"]) for e in aud.get(A + "/audit", params={"limit": 500}).json()["entries"]]
for a in ["admin.key-import", "admin.key-issue", "admin.key-revoke"]:
    assert ("root", a) in actions, (a, actions)
print("keys client ok")
"#;

#[test]
fn admin_api_imports_exports_issues_and_revokes_keys() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    {
        let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
        let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).expect("vault");
        v.ca_init("Admin Test CA", &sealgate_vault::CaSettings::default())
            .expect("ca init");
    }
    let p12 = pki.path("carol.p12");
    crate::harness::run(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:pw", "-inkey"])
            .arg(pki.key("carol@example.org"))
            .arg("-in")
            .arg(pki.cert("carol@example.org"))
            .arg("-out")
            .arg(&p12),
    );
    let dtoken = crate::harness::create_token(dir.path(), "gw", "encrypt");
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        KEYS_CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("DOCKING", d.url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("P12", p12.display().to_string()),
            ("DTOKEN", dtoken),
        ],
    );
    assert!(out.contains("keys client ok"), "{out}");
}

/// curl over the admin socket, optionally as another uid (`setpriv`): (status, body).
fn socket_curl(
    sock: &std::path::Path,
    as_uid: Option<u32>,
    method: &str,
    path: &str,
) -> (u16, String) {
    require_tool("curl", "curl");
    let mut cmd = match as_uid {
        Some(uid) => {
            require_tool("setpriv", "util-linux");
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "curl",
            ]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args(["-sS", "-X", method, "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock)
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn admin_socket_admits_root_and_the_daemons_uid_only() {
    // The test runs as root (as `cargo xtask test` does): it must switch to another uid.
    assert!(
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0),
        "this test runs as root (it checks that other uids are refused)"
    );
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), "");
    let sock = dir.path().join("admin.sock");
    assert!(
        d.console.iter().any(|l| l.contains("admin socket")),
        "{:?}",
        d.console
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Root (the daemon's own uid here) is admin: no session, no CSRF token.
    let (code, body) = socket_curl(&sock, None, "GET", "/api/v1/admin/status");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("admin-socket"), "{body}");
    let (code, body) = socket_curl(&sock, None, "GET", "/api/v1/admin/audit");
    assert_eq!(code, 200, "{body}");
    // nobody cannot connect (mode 0600) ...
    let (code, _) = socket_curl(&sock, Some(65534), "GET", "/api/v1/admin/status");
    assert_eq!(code, 0, "nobody connected to a 0600 socket");
    // ... and is refused by uid if the mode is widened.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (code, body) = socket_curl(&sock, Some(65534), "GET", "/api/v1/admin/status");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("/problems/forbidden"), "{body}");
    // The claim still needs the setup token over the socket.
    let (code, _) = socket_curl(&sock, None, "POST", "/api/v1/admin/setup");
    assert_eq!(code, 400);
}

const CLAIM_AND_LOGIN: &str = r#"
import os, requests
A, ca = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"]
PW = "correct horse battery staple"
if os.environ.get("SETUP"):
    r = requests.post(A + "/setup", verify=ca, json={"setup_token": os.environ["SETUP"], "username": os.environ["USER_NAME"], "password": PW})
    print("claim", r.status_code)
r = requests.post(A + "/session", verify=ca, json={"username": os.environ["LOGIN"], "password": PW})
print("login", r.status_code)
"#;

#[test]
fn console_reset_of_admin_access_removes_every_admin_account() {
    require_tool("python3", "python3");
    let dir = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(dir.path(), "");
    let env = |d: &Daemon, setup: Option<String>, user: &str, login: &str| {
        vec![
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup.unwrap_or_default()),
            ("USER_NAME", user.to_string()),
            ("LOGIN", login.to_string()),
        ]
    };
    let out = python(
        dir.path(),
        CLAIM_AND_LOGIN,
        &env(&d, d.setup_token.clone(), "old", "old"),
    );
    assert!(
        out.contains("claim 201") && out.contains("login 200"),
        "{out}"
    );
    let mut d = d;
    // The console's action: the request file, then a restart of the daemon.
    std::fs::write(dir.path().join("reset-admin.request"), b"reset\n").expect("request");
    assert!(d.terminate().0.success());
    let d = Daemon::start(dir.path(), "");
    assert!(
        d.console
            .iter()
            .any(|l| l.contains("admin access reset: 1 admin account(s) removed")),
        "{:?}",
        d.console
    );
    // The earlier account is dead; the new setup token claims the box again, once.
    let setup = d.setup_token.clone().expect("a new setup token");
    let out = python(dir.path(), CLAIM_AND_LOGIN, &env(&d, None, "", "old"));
    assert!(out.contains("login 401"), "{out}");
    let out = python(
        dir.path(),
        CLAIM_AND_LOGIN,
        &env(&d, Some(setup.clone()), "new", "new"),
    );
    assert!(
        out.contains("claim 201") && out.contains("login 200"),
        "{out}"
    );
    let out = python(
        dir.path(),
        CLAIM_AND_LOGIN,
        &env(&d, Some(setup), "evil", "new"),
    );
    assert!(out.contains("claim 410"), "{out}");
}

const PENDING_CLIENT: &str = r#"
import os
import requests

A, ca, setup = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["SETUP"]
docking, dtoken, sha = os.environ["DOCKING"], os.environ["DTOKEN"], os.environ["SHA"]
PW = "correct horse battery staple"

def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    return r.json()

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

def dock(method, path, **kw):
    return requests.request(method, docking + path, verify=ca,
                            headers={"Authorization": "Bearer " + dtoken, **kw.pop("headers", {})}, **kw)

r = requests.post(A + "/setup", verify=ca, json={"setup_token": setup, "username": "root", "password": PW})
assert r.status_code == 201, r.text
root = login("root")
assert root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}).status_code == 201
aud = login("aud")
anon = requests.Session()
anon.verify = ca

MSG = b"From: bob@example.org\r\nTo: dave@example.org\r\nSubject: hi\r\nMessage-ID: <1@example.org>\r\n\r\nhello\r\n"
def encrypt_to_dave():
    return dock("POST", "/api/v1/encrypt", params=[("from", "bob@example.org"), ("to", "dave@example.org")],
                data=MSG, headers={"Content-Type": "message/rfc822"})

# A gateway posts dave's self-signed certificate: it waits; encrypt refuses (and caches that).
r = dock("POST", "/api/v1/certificates", data=open(os.environ["DAVE"], "rb").read(),
         headers={"Content-Type": "application/pem-certificate-chain"})
assert r.status_code == 200 and r.json()["pending"][0]["sha256"] == sha, r.text
problem(encrypt_to_dave(), 422)

# Listing: any role with a session; none without.
problem(anon.get(A + "/certificates/pending"), 401)
listed = aud.get(A + "/certificates/pending").json()
assert [p["sha256"] for p in listed] == [sha] and listed[0]["emails"] == ["dave@example.org"], listed
assert listed[0]["pem"].startswith("-----BEGIN CERTIFICATE-----") and listed[0]["requested_by"] == "gw", listed

# Deciding: admin only, with the session's CSRF token.
problem(aud.post(A + "/certificates/pending/" + sha + "/approve"), 403)
problem(anon.post(A + "/certificates/pending/" + sha + "/approve"), 401)
problem(root.post(A + "/certificates/pending/" + sha + "/approve", headers={"X-CSRF-Token": "wrong"}), 403)
problem(root.post(A + "/certificates/pending/" + sha + "/maybe"), 404)
problem(root.post(A + "/certificates/pending/abc/approve"), 422)
problem(root.post(A + "/certificates/pending/" + "0" * 64 + "/reject"), 404)
assert aud.get(A + "/certificates/pending").json()[0]["sha256"] == sha
# A unique prefix will do; encrypt uses the certificate at once.
r = root.post(A + "/certificates/pending/" + sha[:16] + "/approve")
assert r.status_code == 200 and r.json()["sha256"] == sha, r.text
assert root.get(A + "/certificates/pending").json() == []
r = encrypt_to_dave()
assert r.status_code == 200, r.text
problem(root.post(A + "/certificates/pending/" + sha + "/reject"), 404)

# Revoking a docking token: admin only, with CSRF; the token is refused at once.
problem(aud.delete(A + "/tokens/gw"), 403)
problem(root.delete(A + "/tokens/gw", headers={"X-CSRF-Token": "wrong"}), 403)
problem(root.delete(A + "/tokens/nosuch"), 404)
assert dock("GET", "/api/v1/certificates", params={"email": "alice@example.org"}).status_code == 200
r = root.delete(A + "/tokens/gw")
assert r.status_code == 204, r.text
assert dock("GET", "/api/v1/certificates", params={"email": "alice@example.org"}).status_code == 401
problem(encrypt_to_dave(), 401)
assert [t["name"] for t in root.get(A + "/tokens").json()] == []
problem(root.delete(A + "/tokens/gw"), 404)

actions = [(e["actor"], e["action"]) for e in aud.get(A + "/audit", params={"limit": 500}).json()["entries"]]
for a in ["admin.cert-approve", "admin.token-revoke"]:
    assert ("root", a) in actions, (a, actions)
print("pending client ok")
"#;

/// The admin API decides external recipients' pending certificates (approval is used by
/// `encrypt` at once) and revokes docking tokens (refused at once): admin only, sessions and
/// CSRF as everywhere.
#[test]
fn admin_api_decides_pending_certificates_and_revokes_tokens() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    pki.issue("dave-self", "dave@example.org", "ec", None);
    let sha = crate::harness::run(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(pki.cert("dave-self")),
    );
    let sha = String::from_utf8_lossy(&sha.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    let dir = data_dir_with_keys(&pki);
    let dtoken = crate::harness::create_token(dir.path(), "gw", "encrypt,verify");
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        PENDING_CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("DOCKING", d.url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("DAVE", pki.cert("dave-self").display().to_string()),
            ("SHA", sha),
            ("DTOKEN", dtoken),
        ],
    );
    assert!(out.contains("pending client ok"), "{out}");
}

const SETTINGS_CLIENT: &str = r#"
import json, os
import requests

base, ca, setup, path = os.environ["BASE"], os.environ["CA"], os.environ["SETUP"], os.environ["FILE"]
A = base + "/api/v1/admin"
PW = "correct horse battery staple"

def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    return r.json()

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

def file():
    return open(path, "rb").read()

MERGE = {"Content-Type": "application/merge-patch+json"}
r = requests.post(A + "/setup", verify=ca, json={"setup_token": setup, "username": "root", "password": PW})
assert r.status_code == 201, r.text
root = login("root")
assert root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}).status_code == 201
aud = login("aud")

g = root.get(A + "/settings").json()
assert g["default"]["docking"]["missing"] is True and g["default"]["admin"]["listen"] is False, g
assert g["restart_required"] == [] and g["file"] == path, g
original = file()

# Only an admin, only with the CSRF token.
problem(aud.patch(A + "/settings", json={"log": {"level": "debug"}}), 403)
csrf = root.headers.pop("X-CSRF-Token")
problem(root.patch(A + "/settings", json={"log": {"level": "debug"}}), 403)
root.headers["X-CSRF-Token"] = csrf
assert file() == original

# Bad patches: 422 naming the field, the file and the model unchanged.
for patch, field in [
    ({"docking": {"listen_port": 1}}, "docking.listen_port"),
    ({"colour": {"x": 1}}, "colour"),
    ({"docking": "reject"}, "docking"),
    ({"docking": {"missing": "maybe"}}, "docking.missing"),
    ({"docking": {"max_message_bytes": "big"}}, "docking.max_message_bytes"),
    ({"smtp": {"allow_addresses": ["192.0.2.1/24"]}}, "smtp.allow_addresses"),
    ({"limits": {"max_signers": 0}}, None),
    ({"log": {"level": "sealgated=loud"}}, None),
]:
    p = problem(root.patch(A + "/settings", json=patch, headers=MERGE), 422)
    if field:
        assert p.get("field") == field and field in p["detail"], (patch, p)
problem(root.patch(A + "/settings", data=b"[1, 2]", headers=MERGE), 422)
problem(root.patch(A + "/settings", data=b"{not json", headers=MERGE), 400)
problem(root.patch(A + "/settings", data=b"{" + b" " * 20000 + b"}", headers=MERGE), 413)
assert file() == original
assert root.get(A + "/settings").json()["settings"] == g["settings"]

# A good patch: live fields applied at once, the others wait for a restart.
r = root.patch(A + "/settings", headers=MERGE, json={
    "docking": {"missing": "encrypt-known"},
    "log": {"level": "debug"},
    "limits": {"max_signers": 4},
    "smtp": {"allow_addresses": ["127.0.0.0/8", "192.0.2.0/24"]},
})
assert r.status_code == 200, r.text
o = r.json()["outcome"]
assert set(o["changed"]) == {"docking.missing", "log.level", "limits.max_signers", "smtp.allow_addresses"}, o
assert set(o["applied"]) == {"log.level", "limits.max_signers", "smtp.allow_addresses"}, o
assert o["restart_required"] is True and o["pending_restart"] == ["docking.missing"], o
g2 = root.get(A + "/settings").json()
assert g2["settings"]["docking"]["missing"] == "encrypt-known" and g2["default"]["docking"]["missing"] is False, g2
assert g2["settings"]["limits"]["max_signers"] == 4 and g2["restart_required"] == ["docking.missing"], g2
assert aud.get(A + "/settings").json()["settings"] == g2["settings"]
assert open(path + ".previous", "rb").read() == original
written = file()
assert b"encrypt-known" in written and b"max_signers = 4" in written, written

# Applying fails (an address this host does not have): everything is put back.
p = problem(root.patch(A + "/settings", headers=MERGE, json={"docking": {"listen": "192.0.2.1:9"}, "log": {"level": "warn"}}), 409)
assert p["field"] == "docking.listen" and "192.0.2.1:9" in p["detail"], p
assert file() == written
assert root.get(A + "/settings").json()["settings"] == g2["settings"]

# null: back to the default.
r = root.patch(A + "/settings", json={"docking": {"missing": None}})
assert r.status_code == 200 and r.json()["outcome"]["changed"] == ["docking.missing"], r.text
assert root.get(A + "/settings").json()["restart_required"] == []

# Audited: who and which fields, never the values.
entries = aud.get(A + "/audit", params={"action": "admin.settings-change", "limit": 500}).json()["entries"]
done = [e for e in entries if e["actor"] == "root" and "docking.missing" in e["subject"] and "log.level" in e["subject"]]
assert done, entries
assert not any("encrypt-known" in e["subject"] or "192.0.2.0" in e["subject"] for e in entries), entries
assert any("settings-not-applied" in e["subject"] for e in entries), entries
print("settings client ok")
"#;

#[test]
fn admin_api_changes_settings_validates_applies_rolls_back_and_audits() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token on the console");
    let file = dir.path().join("settings.toml");
    let out = python(
        dir.path(),
        SETTINGS_CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("FILE", file.display().to_string()),
        ],
    );
    assert!(out.contains("settings client ok"), "{out}");

    // The local socket (root or the daemon's user) changes settings too, audited as uid:N.
    let s = sealgate_local::admin_socket::AdminSocket::for_data_dir(dir.path())
        .expect("the daemon answers on its socket");
    let answer: serde_json::Value = s
        .json(
            "PATCH",
            "/settings",
            Some(&serde_json::json!({"limits": {"max_recipient_entries": 8}})),
        )
        .expect("patched over the socket");
    assert_eq!(answer["settings"]["limits"]["max_recipient_entries"], 8);
    let bad = s
        .json::<serde_json::Value>(
            "PATCH",
            "/settings",
            Some(&serde_json::json!({"limits": {"max_recipient_entries": -1}})),
        )
        .expect_err("refused");
    assert_eq!(bad.status, Some(422), "{bad}");
    // Trust anchors the gateway's clients could not be built from are refused now, not found
    // out when the daemon does not start again; nothing is written.
    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "").expect("empty CA file");
    for patch in [
        serde_json::json!({"submission": {"listen": "127.0.0.1:0", "auth": "smtps://127.0.0.1:3465",
            "auth_ca": empty.display().to_string(), "relay": "127.0.0.1:3525"}}),
        serde_json::json!({"imap": {"listen": "127.0.0.1:0", "upstream": "imaps://127.0.0.1:3993",
            "upstream_ca": empty.display().to_string()}}),
    ] {
        let bad = s
            .json::<serde_json::Value>("PATCH", "/settings", Some(&patch))
            .expect_err("refused");
        assert!(matches!(bad.status, Some(409 | 422)), "{patch}: {bad}");
        let text = std::fs::read_to_string(&file).expect("settings file");
        assert!(!text.contains("empty-ca.pem"), "{text}");
    }

    // The file the daemon wrote is what the next start reads.
    let text = std::fs::read_to_string(&file).expect("settings file");
    assert!(text.contains("max_recipient_entries = 8"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_sealgated"))
        .arg("--check-settings")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("sealgated --check-settings");
    let verdict = String::from_utf8_lossy(&out.stdout);
    assert!(verdict.starts_with("settings ok "), "{verdict}");
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(log.contains("admin.settings-change"), "{log}");
}

/// The SMTP greeting a client at 127.0.0.3 gets from `port` (its first line).
fn smtp_greeting_from_127_0_0_3(port: u16) -> String {
    let script = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=10, source_address=('127.0.0.3', 0))\nprint(s.recv(512).decode(errors='replace').splitlines()[0])\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_settings_change_of_the_smtp_allow_list_applies_to_the_next_connection() {
    // The attacker: a host outside the allow list. A change made to let a gateway in (or to
    // shut a network out) must hold at once, without a restart that drops queued sessions.
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(
        dir.path(),
        "[smtp]\ndecrypt_listen = \"127.0.0.1:0\"\nnext_hop = \"127.0.0.1:9\"\nallow_addresses = [\"127.0.0.1/32\"]\n",
    );
    let port = d.smtp_decrypt.expect("decrypt listener").port();
    let greeting = smtp_greeting_from_127_0_0_3(port);
    assert!(greeting.starts_with("554"), "{greeting}");

    let s = sealgate_local::admin_socket::AdminSocket::for_data_dir(dir.path())
        .expect("the daemon answers on its socket");
    let patch = |list: &[&str]| -> serde_json::Value {
        s.json(
            "PATCH",
            "/settings",
            Some(&serde_json::json!({"smtp": {"allow_addresses": list}})),
        )
        .expect("patched")
    };
    let v = patch(&["127.0.0.0/8"]);
    assert_eq!(
        v["outcome"]["applied"],
        serde_json::json!(["smtp.allow_addresses"]),
        "{v}"
    );
    assert_eq!(v["outcome"]["restart_required"], false, "{v}");
    let greeting = smtp_greeting_from_127_0_0_3(port);
    assert!(greeting.starts_with("220"), "{greeting}");

    patch(&["127.0.0.1/32"]);
    let greeting = smtp_greeting_from_127_0_0_3(port);
    assert!(greeting.starts_with("554"), "{greeting}");
}
