//! The admin API's second factor, machine clients and the box as a whole, against the real
//! daemon with Python `requests` (and the TOTP codes computed by Python's own `hmac`, an
//! implementation independent of the box's):
//!
//! - TOTP: enrolment (pending until confirmed), login with a code, a wrong, malformed or
//!   replayed code refused and counted toward the lockout, disabling by the account (password
//!   and code) or by an admin;
//! - admin-plane API tokens: bearer calls without CSRF, roles (a read-only token refused a
//!   change), revocation refused at once, the token's name as the audit actor, failures
//!   limited per address;
//! - the audit log's filters and its chain verification;
//! - the support bundle holds no secret; restart; reset of admin access; factory reset with
//!   and without the exact phrase; the retired `POST /api/v1/setup`.
//!
//! Attackers: a guesser on the LAN (codes, tokens), a thief of a session or of a revoked or
//! low-role token, and a mistaken or replayed destructive call.

use std::process::Command;

use crate::harness::{Daemon, Pki, data_dir_with_keys, require_python_module, require_tool, write};

fn python(dir: &std::path::Path, name: &str, script: &str, env: &[(&str, String)]) -> String {
    require_python_module("requests", "requests");
    let file = write(dir, name, format!("{PRELUDE}{script}").as_bytes());
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

fn env(d: &Daemon, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("BASE", d.admin_url("")),
        ("DOCKING", d.url("")),
        ("CA", d.ca_file().display().to_string()),
        ("DATA", d.data_dir.display().to_string()),
    ];
    v.extend_from_slice(extra);
    v
}

const PRELUDE: &str = r#"
import base64, hashlib, hmac, io, json, os, struct, tarfile, time
import requests
from requests.adapters import HTTPAdapter

base, ca = os.environ["BASE"], os.environ["CA"]
A = base + "/api/v1/admin"
PW = "correct horse battery staple"

def problem(r, status, kind=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    if kind:
        assert p["type"].endswith("/" + kind), p
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

def login(user, pw=PW, source=None, code=None):
    s = session(source)
    body = {"username": user, "password": pw}
    if code is not None:
        body["totp_code"] = code
    r = s.post(A + "/session", json=body)
    if r.status_code == 200:
        s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s, r

def bearer(token, source=None):
    s = session(source)
    s.headers["Authorization"] = "Bearer " + token
    return s

# RFC 6238 in Python's standard library: the peer the box must agree with.
def totp(secret, step):
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7fffffff) % 1000000)

def step():
    return int(time.time()) // 30

def not_a_code(secret):
    s = step()
    valid = {totp(secret, s + d) for d in (-1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in valid)
"#;

const TOTP_AND_TOKENS: &str = r#"
anon = session()
r = anon.post(A + "/setup", json={"setup_token": os.environ["SETUP"], "username": "root", "password": PW})
assert r.status_code == 201, r.text
root, r = login("root")
assert r.status_code == 200, r.text
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    assert root.post(A + "/accounts", json={"username": user, "role": role, "password": PW}).status_code == 201

# --- TOTP ---------------------------------------------------------------------------------
r = root.post(A + "/session/totp")
assert r.status_code == 201, r.text
e = r.json()
secret = e["secret"]
assert e["otpauth_uri"].startswith("otpauth://totp/Sealgate:root?secret=" + secret), e
assert e["digits"] == 6 and e["period_secs"] == 30, e
assert r.headers.get("Cache-Control") == "no-store"
# Pending: login does not ask for a code yet, the account does not show it on.
s, r = login("root")
assert r.status_code == 200, r.text
assert [a["totp"] for a in root.get(A + "/accounts").json() if a["username"] == "root"] == [False]
# Without CSRF, nothing; a wrong or malformed code is refused; the right one turns it on.
problem(root.post(A + "/session/totp/confirm", json={"code": totp(secret, step())}, headers={"X-CSRF-Token": "x"}), 403, "csrf")
problem(root.post(A + "/session/totp/confirm", json={"code": not_a_code(secret)}), 403, "wrong-code")
problem(root.post(A + "/session/totp/confirm", json={"code": "12a456"}), 403, "wrong-code")
problem(root.post(A + "/session/totp/confirm", json={"code": 123456}), 400)
confirm_step = step()
r = root.post(A + "/session/totp/confirm", json={"code": totp(secret, confirm_step)})
assert r.status_code == 204, r.text
problem(root.post(A + "/session/totp"), 422)
assert [a["totp"] for a in root.get(A + "/accounts").json() if a["username"] == "root"] == [True]

# Login now needs the code: missing, wrong, replayed (the confirming code) are 401.
src = "127.0.0.3"
problem(login("root", source=src)[1], 401, "totp-required")
problem(login("root", source=src, code=not_a_code(secret))[1], 401)
problem(login("root", source=src, code=totp(secret, confirm_step))[1], 401)
problem(login("root", pw="wrong password!!", source=src, code=totp(secret, confirm_step + 1))[1], 401)
good = totp(secret, confirm_step + 1)
root2, r = login("root", source=src, code=good)
assert r.status_code == 200, r.text
problem(login("root", source=src, code=good)[1], 401)  # each code works once
# Wrong codes count toward the lockout: five failures of root from 127.0.0.3 lock it there
# (the lock is checked before anything else), not elsewhere.
for _ in range(4):
    problem(login("root", source=src, code=not_a_code(secret))[1], 401)
problem(login("root", source=src, code=totp(secret, step() + 1))[1], 429)
assert root.get(A + "/status").status_code == 200

# The account itself turns TOTP off with password and code; wrong ones are refused.
aud, r = login("aud")
assert r.status_code == 200
asecret = aud.post(A + "/session/totp").json()["secret"]
astep = step()
assert aud.post(A + "/session/totp/confirm", json={"code": totp(asecret, astep)}).status_code == 204
problem(aud.post(A + "/session/totp/disable", json={"password": "wrong password!!", "code": totp(asecret, astep + 1)}), 403)
problem(aud.post(A + "/session/totp/disable", json={"password": PW, "code": totp(asecret, astep)}), 403)  # used
r = aud.post(A + "/session/totp/disable", json={"password": PW, "code": totp(asecret, astep + 1)})
assert r.status_code == 204, r.text
aud, r = login("aud")
assert r.status_code == 200, r.text
problem(aud.post(A + "/session/totp/disable", json={"password": PW, "code": "123456"}), 422)
# Only an admin turns off another account's TOTP.
problem(aud.delete(A + "/accounts/root/totp"), 403)
problem(root.delete(A + "/accounts/aud/totp"), 404)
problem(root.delete(A + "/accounts/nobody/totp"), 404)

# --- admin-plane API tokens ---------------------------------------------------------------
problem(aud.post(A + "/admin-tokens", json={"name": "x", "role": "admin"}), 403)
problem(root.post(A + "/admin-tokens", json={"name": "bad name", "role": "admin"}), 422)
problem(root.post(A + "/admin-tokens", json={"name": "x", "role": "root"}), 400)
toks = {}
for name, role in [("ci-admin", "admin"), ("ci-ro", "read-only"), ("ci-aud", "auditor")]:
    r = root.post(A + "/admin-tokens", json={"name": name, "role": role})
    assert r.status_code == 201 and r.json()["token"].startswith("sga_"), r.text
    toks[name] = r.json()["token"]
problem(root.post(A + "/admin-tokens", json={"name": "ci-ro", "role": "admin"}), 422)
listed = root.get(A + "/admin-tokens").json()
assert sorted(t["name"] for t in listed) == ["ci-admin", "ci-aud", "ci-ro"], listed
assert all(t["created_by"] == "root" for t in listed) and not any(v in json.dumps(listed) for v in toks.values())

ro_t, adm_t, aud_t = bearer(toks["ci-ro"]), bearer(toks["ci-admin"]), bearer(toks["ci-aud"])
assert ro_t.get(A + "/status").status_code == 200
problem(ro_t.post(A + "/accounts", json={"username": "evil", "role": "admin", "password": PW}), 403, "forbidden")
problem(ro_t.delete(A + "/admin-tokens/ci-admin"), 403)
problem(ro_t.get(A + "/audit"), 403)
assert aud_t.get(A + "/audit").status_code == 200
problem(aud_t.post(A + "/restart"), 403)
# An admin token needs no CSRF token and no cookie.
r = adm_t.post(A + "/accounts", json={"username": "made-by-ci", "role": "read-only", "password": PW})
assert r.status_code == 201, r.text
# The admin-plane token is not a docking credential, nor a docking token an admin one.
assert requests.get(os.environ["DOCKING"] + "/api/v1/openapi.json", verify=ca, headers={"Authorization": "Bearer " + toks["ci-admin"]}).status_code == 401
problem(bearer(os.environ["DTOKEN"]).get(A + "/status"), 401)
problem(bearer("sga_" + "0" * 64).get(A + "/status"), 401)
# Self-service TOTP is for browser sessions only.
problem(adm_t.post(A + "/session/totp"), 422)
# The admin token turns off root's TOTP (a lost phone); root logs in with the password alone.
assert adm_t.delete(A + "/accounts/root/totp").status_code == 204
assert login("root")[1].status_code == 200
# Revoked: refused at once.
assert root.delete(A + "/admin-tokens/ci-ro").status_code == 204
problem(ro_t.get(A + "/status"), 401)
problem(root.delete(A + "/admin-tokens/ci-ro"), 404)
# Failed bearer calls are limited per address like logins; a valid token still passes there.
guesser = bearer("sga_" + "1" * 64, source="127.0.0.4")
codes = [guesser.get(A + "/status").status_code for _ in range(21)]
assert codes[0] == 401 and codes[-1] == 429, codes
assert bearer(toks["ci-admin"], source="127.0.0.4").get(A + "/status").status_code == 200

# --- the audit log ------------------------------------------------------------------------
page = aud.get(A + "/audit", params={"action": "admin.totp", "limit": 500}).json()
acts = {x["action"] for x in page["entries"]}
assert {"admin.totp-enrol", "admin.totp-enable", "admin.totp-disable"} <= acts, acts
assert all(a.startswith("admin.totp") for a in acts), acts
assert page["chain"]["verified"] is True and page["chain"]["scope"] == "tail", page["chain"]
assert page["chain"]["entries"] >= page["total"], page["chain"]
by_token = aud.get(A + "/audit", params={"actor": "token:ci-admin", "limit": 500}).json()["entries"]
assert {x["action"] for x in by_token} >= {"admin.account-create", "admin.totp-disable"}, by_token
failed = aud.get(A + "/audit", params={"action": "admin.login-failed", "limit": 500}).json()["entries"]
assert any("TOTP" in x["subject"] for x in failed), failed
assert aud.get(A + "/audit", params={"since": str(int(time.time()) + 3600)}).json()["total"] == 0
assert aud.get(A + "/audit", params={"until": "1970-01-02T00:00:00Z"}).json()["total"] == 0
recent = aud.get(A + "/audit", params={"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))}).json()
assert recent["total"] > 10, recent["total"]
full = aud.get(A + "/audit", params={"verify": "full", "limit": 1}).json()
assert full["chain"] == {"verified": True, "scope": "full", "entries": full["chain"]["entries"]}, full["chain"]
problem(aud.get(A + "/audit", params={"since": "yesterday"}), 400)
problem(aud.get(A + "/audit", params={"verify": "some"}), 400)
print("totp and tokens ok")
"#;

#[test]
fn admin_api_totp_machine_tokens_and_audit_filters() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let dtoken = crate::harness::create_token(dir.path(), "gw", "verify");
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        "totp_tokens.py",
        TOTP_AND_TOKENS,
        &env(&d, &[("SETUP", setup), ("DTOKEN", dtoken)]),
    );
    assert!(out.contains("totp and tokens ok"), "{out}");
    // No code, secret or token reached a log.
    for f in ["audit/docking.jsonl", "log/sealgated.log", "stderr.log"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        assert!(!text.contains("sga_"), "an admin token in {f}");
        assert!(!text.contains("otpauth"), "a TOTP secret in {f}");
    }
}

const CLAIM: &str = r#"
anon = session()
# The retired endpoint: a clear pointer, and the setup token is not spent.
p = problem(anon.post(base + "/api/v1/setup", json={"setup_token": os.environ["SETUP"]}), 410, "setup-moved")
assert "/api/v1/admin/setup" in p["detail"], p
r = anon.post(A + "/setup", json={"setup_token": os.environ["SETUP"], "username": "root", "password": PW})
assert r.status_code == 201, r.text
root, _ = login("root")
assert root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}).status_code == 201
assert root.post(A + "/accounts", json={"username": "ro", "role": "read-only", "password": PW}).status_code == 201
ro, _ = login("ro")
aud, _ = login("aud")
adm = root.post(A + "/admin-tokens", json={"name": "ops", "role": "admin"}).json()["token"]
dock = root.post(A + "/tokens", json={"name": "gw", "scopes": ["verify"]}).json()["token"]
tsecret = root.post(A + "/session/totp").json()["secret"]

# The support bundle: admin and auditor; a tar.gz with the named files and no secret.
problem(ro.get(A + "/support-bundle"), 403)
r = aud.get(A + "/support-bundle")
assert r.status_code == 200 and r.headers["Content-Type"] == "application/gzip", r.headers
assert r.headers["Content-Disposition"].startswith("attachment; filename=\"sealgate-support-"), r.headers
t = tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz")
names = t.getnames()
for n in ["versions.json", "status.json", "settings.json", "log/sealgated.log"]:
    assert "sealgate-support/" + n in names, names
assert json.load(t.extractfile("sealgate-support/status.json"))["accounts"] == 3
assert "admin" in json.load(t.extractfile("sealgate-support/settings.json"))["settings"]
blob = b"".join(t.extractfile(m).read() for m in t.getmembers() if m.isfile())
for secret in [os.environ["SETUP"], adm, dock, tsecret, PW, "PRIVATE KEY", "sga_", "sgt_"]:
    assert secret.encode() not in blob, secret
print(json.dumps({"adm": adm, "dock": dock}))
print("claim ok")
"#;

const RESTART: &str = r#"
root, _ = login("root")
ro, _ = login("ro")
problem(ro.post(A + "/restart"), 403)
problem(root.post(A + "/restart", headers={"X-CSRF-Token": "x"}), 403)
r = root.post(A + "/restart")
assert r.status_code == 202, r.text
print("restart asked")
"#;

const AFTER_RESTART: &str = r#"
state = json.loads(os.environ["STATE"])
# Sessions ended with the old process; accounts and the vault's tokens stay.
root, r = login("root")
assert r.status_code == 200, r.text
assert bearer(state["adm"]).get(A + "/status").json()["uptime_secs"] < 60

# Reset of admin access: only with the exact phrase; nothing changes otherwise.
problem(root.post(A + "/setup-token/reset", json={"confirm": "reset admin"}), 422, "confirmation-required")
problem(root.post(A + "/setup-token/reset", json={}), 400)
problem(root.post(A + "/setup-token/reset", json={"confirm": "reset admin access", "x": 1}), 400)
ro, _ = login("ro")
problem(ro.post(A + "/setup-token/reset", json={"confirm": "reset admin access"}), 403)
assert len(root.get(A + "/accounts").json()) == 3
assert root.get(A + "/status").json()["setup_pending"] is False
r = root.post(A + "/setup-token/reset", json={"confirm": "reset admin access"})
assert r.status_code == 200, r.text
out = r.json()
assert sorted(out["accounts_removed"]) == ["aud", "ro", "root"] and out["admin_tokens_revoked"] == ["ops"], out
assert "console" in out["setup_token"], out
# Every earlier admin credential is dead: sessions, accounts, admin-plane tokens.
problem(root.get(A + "/status"), 401)
problem(login("root")[1], 401)
problem(bearer(state["adm"]).get(A + "/status"), 401)
# Docking tokens stay.
assert requests.get(os.environ["DOCKING"] + "/api/v1/openapi.json", verify=ca, headers={"Authorization": "Bearer " + state["dock"]}).status_code == 200
print("reset ok")
"#;

const AFTER_RESET: &str = r#"
anon = session()
r = anon.post(A + "/setup", json={"setup_token": os.environ["SETUP"], "username": "new", "password": PW})
assert r.status_code == 201, r.text
new, _ = login("new")
# Factory reset: only with the exact phrase; a wrong one changes nothing.
for body in [{"confirm": "factory"}, {"confirm": "Factory Reset"}, {"confirm": " factory reset"}]:
    problem(new.post(A + "/factory-reset", json=body), 422, "confirmation-required")
problem(new.post(A + "/factory-reset", data=b"factory reset"), 400)
assert not os.path.exists(os.path.join(os.environ["DATA"], "factory-reset.request"))
assert new.get(A + "/status").status_code == 200
r = new.post(A + "/factory-reset", json={"confirm": "factory reset"})
assert r.status_code == 202, r.text
print("factory reset asked")
"#;

#[test]
fn admin_api_support_bundle_restart_reset_and_factory_reset() {
    require_tool("python3", "python3");
    let dir = tempfile::tempdir().expect("tmp");
    let mut d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        "claim.py",
        CLAIM,
        &env(&d, &[("SETUP", setup.clone())]),
    );
    assert!(out.contains("claim ok"), "{out}");
    let state = out
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("state")
        .to_string();

    // Restart: the daemon answers, stops cleanly and re-executes itself (new ports here).
    let out = python(dir.path(), "restart.py", RESTART, &env(&d, &[]));
    assert!(out.contains("restart asked"), "{out}");
    d.wait_line("sealgated: restarting");
    d.read_until_ready();
    let out = python(
        dir.path(),
        "after_restart.py",
        AFTER_RESTART,
        &env(&d, &[("STATE", state)]),
    );
    assert!(out.contains("reset ok"), "{out}");
    let line = d.wait_line("setup token (one-time; POST /api/v1/admin/setup");
    let new_setup = line.rsplit(' ').next().expect("token").to_string();
    assert_ne!(new_setup, setup);

    let out = python(
        dir.path(),
        "after_reset.py",
        AFTER_RESET,
        &env(&d, &[("SETUP", new_setup)]),
    );
    assert!(out.contains("factory reset asked"), "{out}");
    let (status, rest) = d.wait_exit();
    assert!(status.success(), "{rest:?}");
    assert!(dir.path().join("factory-reset.request").exists());
    // The daemon never serves a box that is to be wiped; the request is in the vault's chain.
    let again = Command::new(env!("CARGO_BIN_EXE_sealgated"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--danger-software-sealer")
        .output()
        .expect("sealgated");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("a factory reset is pending"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let log = sealgate_vault::Vault::open(
        dir.path(),
        &mut sealgate_vault::SoftwareSealer::danger_new(),
    )
    .expect("vault")
    .audit()
    .expect("chain verifies");
    for (actor, action) in [
        ("root", "admin.restart"),
        ("root", "admin.reset-access"),
        ("new", "admin.factory-reset"),
        ("aud", "admin.support-bundle"),
    ] {
        assert!(
            log.iter().any(|e| e.actor == actor && e.action == action),
            "{actor} {action}"
        );
    }
}
