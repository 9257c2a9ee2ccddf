//! The OTA endpoints of the admin API (`/api/v1/admin/update`, `/update/commit`, `/gate`,
//! `/mark-good`, `/mark-bad`, `/floor`) against the
//! real daemon, on the host: every refusal is answered before any install step, so no RAUC
//! service is needed. The daemon reads a test `system.conf` (`SEALGATE_RAUC_CONF`: this
//! box's board, the development update CA as keyring); bundles are made here with
//! `rauc bundle` (Debian `rauc`, `squashfs-tools`), another CA with `openssl`.
//!
//! The attackers: anyone on the LAN without a session (401); an auditor or read-only account
//! or admin-plane token, a docking API token (403); a web page riding the administrator's cookie without the CSRF token (403); an
//! administrator's account used to push an oversized body (413, declared or streamed), garbage,
//! a bundle of another CA, another board's bundle or a downgrade (422); a second upload while
//! one is received (409); a client that goes away mid-body. Each leaves nothing in
//! `DATA/update/` and nothing installed.
//!
//! RAUC's own service on a private session bus (`admin_update_drives_raucs_service_over_dbus`)
//! answers the daemon's D-Bus calls: the slot table, mark-good / mark-bad, an install up to
//! the bundle's mount. Not reachable on the host: a finished install (RAUC mounts verity
//! bundles through device-mapper), the dm-verity check of a flipped payload byte, the commit
//! of a booted pending slot (needs `sealgate.slot=` on the kernel command line).
//! tests/system/ota.rs covers them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../common/rauc_bundle.rs"]
mod rauc_bundle;
use rauc_bundle::small_bundle;

use crate::admin::python;
use crate::harness::{Daemon, Pki, data_dir_with_keys, require_tool, run};

const BOARD: &str = "sealgate-qemu-x86_64";

fn dev_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../board/dev-keys/{name}"))
}

/// Another CA and a code-signing certificate under it, as an attacker makes them.
fn other_signer(dir: &Path) -> (PathBuf, PathBuf) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "x-ca.key",
        "-out",
        "x-ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Other CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    ossl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "x.key",
        "-out",
        "x.csr",
        "-subj",
        "/CN=Other signer",
    ]);
    std::fs::write(
        dir.join("x.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=critical,codeSigning\n",
    )
    .expect("ext");
    ossl(&[
        "x509",
        "-req",
        "-in",
        "x.csr",
        "-CA",
        "x-ca.pem",
        "-CAkey",
        "x-ca.key",
        "-set_serial",
        "7",
        "-days",
        "30",
        "-extfile",
        "x.ext",
        "-out",
        "x.pem",
    ]);
    (dir.join("x.pem"), dir.join("x.key"))
}

const CLIENT: &str = r#"
import http.client, json, os, ssl, time, threading
import requests

base, ca, setup, data = os.environ["BASE"], os.environ["CA"], os.environ["SETUP"], os.environ["DATA"]
A = base + "/api/v1/admin"
U = A + "/update"
PW = "correct horse battery staple"
port = int(base.rsplit(":", 1)[1])
B = {k: os.environ["B_" + k] for k in ["GOOD", "OTHERCA", "OTHERBOARD", "DOWNGRADE"]}
OCTET = {"Content-Type": "application/octet-stream"}

def problem(r, status, type_=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert p["status"] == status and p["type"].startswith("https://sealgate.example/problems/"), p
    assert p["title"], p
    if type_:
        assert p["type"].endswith("/" + type_), p
    return p

def settled():
    """The update status once the background install is no longer running (30 s at most)."""
    deadline = time.time() + 30
    while root.get(U).json()["state"] == "installing" and time.time() < deadline:
        time.sleep(0.2)
    return root.get(U).json()

def nothing_on_disk(what):
    left = sorted(os.listdir(os.path.join(data, "update"))) if os.path.isdir(os.path.join(data, "update")) else []
    assert not [f for f in left if f in ("upload.part", "staged.raucb")], (what, left)
    assert "pending.json" not in left, (what, left)

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

anon = requests.Session()
anon.verify = ca
r = anon.post(A + "/setup", json={"setup_token": setup, "username": "root", "password": PW})
assert r.status_code == 201, r.text
root = login("root")
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    r = root.post(A + "/accounts", json={"username": user, "role": role, "password": PW})
    assert r.status_code == 201, r.text
aud, ro = login("aud"), login("ro")
good = open(B["GOOD"], "rb").read()

# Nobody without a session; the auditor reads the status but uploads nothing; read-only neither.
problem(anon.get(U), 401)
problem(anon.post(U, data=good, headers=OCTET), 401)
problem(anon.post(U + "/commit", json={}), 401)
st = aud.get(U)
assert st.status_code == 200 and st.json()["state"] == "idle", st.text
problem(aud.post(U, data=good, headers=OCTET), 403)
problem(aud.post(U + "/commit", json={}), 403)
problem(ro.get(U), 403)
problem(ro.post(U, data=good, headers=OCTET), 403)
problem(ro.post(U + "/commit", json={}), 403)
# The administrator's cookie without (or with a forged) CSRF token: a web page's request.
csrf = root.headers.pop("X-CSRF-Token")
problem(root.post(U, data=good, headers=OCTET), 403)
problem(root.post(U, data=good, headers={**OCTET, "X-CSRF-Token": "0" * 64}), 403)
problem(root.post(U + "/commit", json={}), 403)
root.headers["X-CSRF-Token"] = csrf
# Tokens: a read-only or auditor admin-plane token is refused, and so is a docking API token
# (a gateway's credential is not an administrator's); an admin token needs no CSRF token.
def bearer(t):
    s = requests.Session()
    s.verify = ca
    s.headers["Authorization"] = "Bearer " + t
    return s
toks = {}
for name, role in [("ci-admin", "admin"), ("ci-ro", "read-only"), ("ci-aud", "auditor")]:
    r = root.post(A + "/admin-tokens", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    toks[role] = bearer(r.json()["token"])
r = root.post(A + "/tokens", json={"name": "gw", "scopes": ["decrypt", "encrypt", "sign", "verify"]})
assert r.status_code == 201, r.text
gw = bearer(r.json()["token"])
problem(toks["read-only"].post(U, data=good, headers=OCTET), 403)
problem(toks["auditor"].post(U, data=good, headers=OCTET), 403)
problem(toks["auditor"].post(U + "/commit", json={}), 403)
assert gw.post(U, data=good, headers=OCTET).status_code in (401, 403)
assert gw.post(U + "/commit", json={}).status_code in (401, 403)
p = problem(toks["admin"].post(U, data=open(B["DOWNGRADE"], "rb"), headers=OCTET), 422, "update-refused")
nothing_on_disk("denied")
assert root.get(U).json()["state"] == "idle"

# Too large: declared (refused before a byte is stored) and streamed without a length.
MAX = root.get(U).json()["max_bundle_bytes"]
assert MAX == 256 * 1024 * 1024, MAX
ctx = ssl.create_default_context(cafile=ca)
cookie = "; ".join(f"{k}={v}" for k, v in root.cookies.items())

def raw(length=None, chunks=(), chunked=False, read=True):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)
    c.putrequest("POST", "/api/v1/admin/update")
    c.putheader("Cookie", cookie)
    c.putheader("X-CSRF-Token", csrf)
    c.putheader("Content-Type", "application/octet-stream")
    if chunked:
        c.putheader("Transfer-Encoding", "chunked")
    else:
        c.putheader("Content-Length", str(length))
    c.endheaders()
    try:
        for ch in chunks:
            c.send(b"%x\r\n%s\r\n" % (len(ch), ch) if chunked else ch)
        if chunked:
            c.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        pass
    if not read:
        return c
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), json.loads(body) if body else None

status, ctype, p = raw(length=MAX + 1, chunks=[b"\0" * 65536])
assert status == 413 and ctype == "application/problem+json" and p["title"], (status, p)
nothing_on_disk("declared too large")
block = b"\0" * (1024 * 1024)
def stream():
    for _ in range(MAX // len(block) + 2):
        yield block
status, ctype, p = raw(chunks=stream(), chunked=True)
assert status == 413 and ctype == "application/problem+json" and "too large" in p["title"], (status, p)
nothing_on_disk("streamed too large")

# Empty, garbage, a truncated bundle: 422/400 with a clear title, nothing staged.
problem(root.post(U, data=b"", headers=OCTET), 400)
for junk in [b"MZ not a bundle" * 100, os.urandom(200000), good[: len(good) // 2], good[:-10]]:
    p = problem(root.post(U, data=junk, headers=OCTET), 422, "update-refused")
    assert p["title"] == "The bundle does not verify", p
    nothing_on_disk("garbage")
# Signed by another CA; another board's; older than the floor (the running version).
p = problem(root.post(U, data=open(B["OTHERCA"], "rb"), headers=OCTET), 422, "update-refused")
assert p["title"] == "The bundle does not verify", p
p = problem(root.post(U, data=open(B["OTHERBOARD"], "rb"), headers=OCTET), 422, "update-refused")
assert p["title"] == "The bundle is for another board", p
p = problem(root.post(U, data=open(B["DOWNGRADE"], "rb"), headers=OCTET), 422, "update-refused")
assert p["title"] == "The bundle is older than the version floor", p
nothing_on_disk("refused bundles")
st = root.get(U).json()
assert st["state"] == "idle" and st["pending"] is None, st

# Commit with nothing pending: 200, nothing committed, the floor unchanged; bad bodies 400/422.
floor = st["floor"]
r = root.post(U + "/commit", json={})
assert r.status_code == 200 and r.json() == {"committed": False}, r.text
problem(root.post(U + "/commit", data=b"{nope", headers={"Content-Type": "application/json"}), 400)
problem(root.post(U + "/commit", json={"failed_slot": "A", "evil": 1}), 400)
problem(root.post(U + "/commit", json={"failed_slot": "C"}), 422)
assert root.get(U).json()["floor"] == floor

def receiving():
    # The first upload holds the staging file (its claim is taken before the file is made).
    part = os.path.join(data, "update", "upload.part")
    deadline = time.time() + 20
    while not os.path.exists(part):
        assert time.time() < deadline, "the first upload never started"
        time.sleep(0.05)

# Two uploads at once: the second is refused while the first is received; then the first
# ends (garbage, 422) and the next upload is taken again.
c = raw(length=len(good), chunks=[good[:4096]], read=False)
receiving()
p = problem(root.post(U, data=good, headers=OCTET), 409, "update-running")
c.send(b"x" * (len(good) - 4096))
r = c.getresponse()
assert r.status == 422, (r.status, r.read())
c.close()
# A client that goes away mid-body leaves nothing and no stale claim.
c = raw(length=len(good), chunks=[good[:4096]], read=False)
receiving()
c.close()
deadline = time.time() + 10
while True:
    r = root.post(U, data=open(B["DOWNGRADE"], "rb"), headers=OCTET)
    if r.status_code != 409 or time.time() > deadline:
        break
    time.sleep(0.2)
problem(r, 422, "update-refused")
nothing_on_disk("abandoned upload")

# The daemon's health-gate checks: the console asks them as root over the socket; over the
# network only an administrator (it uses the box's own key).
problem(anon.get(U + "/gate"), 401)
problem(aud.get(U + "/gate"), 403)
problem(ro.get(U + "/gate"), 403)
problem(toks["auditor"].get(U + "/gate"), 403)
g = root.get(U + "/gate")
assert g.status_code == 200, g.text
g = g.json()
assert g["healthy"] is True, g
checks = {c["name"]: c for c in g["checks"]}
assert checks["listeners"]["ok"] and checks["self-test"]["ok"], g
assert "decrypted with its key from the vault" in checks["self-test"]["detail"], g

# Mark-good / mark-bad: administrators only, with the CSRF token; a bad body is a 4xx; on
# the host RAUC's service is absent, which is a 409 that says so (never a 5xx).
for path in ("/mark-good", "/mark-bad"):
    problem(anon.post(U + path, json={}), 401)
    problem(aud.post(U + path, json={}), 403)
    problem(ro.post(U + path, json={}), 403)
    problem(toks["auditor"].post(U + path, json={}), 403)
    assert gw.post(U + path, json={}).status_code in (401, 403)
    csrf = root.headers.pop("X-CSRF-Token")
    problem(root.post(U + path, json={"slot": "other"}), 403)
    root.headers["X-CSRF-Token"] = csrf
    problem(root.post(U + path, json={"slot": "C"}), 422, "invalid-slot")
    problem(root.post(U + path, json={"slot": "rootfs.0"}), 422, "invalid-slot")
    problem(root.post(U + path, json={"slot": "A", "x": 1}), 400)
    problem(root.post(U + path, data=b"{nope", headers={"Content-Type": "application/json"}), 400)
    p = problem(root.post(U + path, json={"slot": "other"}), 409, "rauc-refused")
    assert p["title"] == "RAUC did not change the slot", p
    p = problem(toks["admin"].post(U + path, json={"slot": "B"}), 409, "rauc-refused")

# The floor: shown in the status, set by an administrator only (audited), validated.
floor = root.get(U).json()["floor"]
problem(anon.put(U + "/floor", json={"floor": "0.0.1"}), 401)
problem(aud.put(U + "/floor", json={"floor": "0.0.1"}), 403)
problem(ro.put(U + "/floor", json={"floor": "0.0.1"}), 403)
problem(toks["auditor"].put(U + "/floor", json={"floor": "0.0.1"}), 403)
csrf = root.headers.pop("X-CSRF-Token")
problem(root.put(U + "/floor", json={"floor": "0.0.1"}), 403)
root.headers["X-CSRF-Token"] = csrf
for bad in ["", "x1", "1/../2", "1 2", "9" * 65, "1\n2"]:
    problem(root.put(U + "/floor", json={"floor": bad}), 422, "invalid-version")
problem(root.put(U + "/floor", json={}), 400)
problem(root.put(U + "/floor", json={"floor": 1}), 400)
assert root.get(U).json()["floor"] == floor
assert not os.path.exists(os.path.join(data, "update", "floor"))

# The valid bundle passes every check (202); on the host RAUC's service is absent, so the
# install fails and says so, the running system unchanged and the staged bundle removed.
r = root.post(U, data=open(B["GOOD"], "rb"), headers=OCTET)
assert r.status_code == 202 and r.json()["version"] == "9.0.0", r.text
st = settled()
assert st["state"] == "failed" and st["last_error"] and st["pending"] is None, st
nothing_on_disk("failed install")

# Staged for the console: checked (201), kept, shown; only an administrator installs it
# (checked again); nothing staged afterwards. An auditor cannot stage or install.
problem(aud.post(U + "?stage=true", data=open(B["GOOD"], "rb"), headers=OCTET), 403)
problem(root.post(U + "/staged"), 409, "nothing-staged")
r = root.post(U + "?stage=true", data=open(B["GOOD"], "rb"), headers=OCTET)
assert r.status_code == 201 and r.json()["state"] == "staged", r.text
st = root.get(U).json()
assert st["staged"] == {"version": "9.0.0"} and st["state"] == "failed", st
assert os.path.exists(os.path.join(data, "update", "staged.raucb"))
problem(aud.post(U + "/staged"), 403)
csrf = root.headers.pop("X-CSRF-Token")
problem(root.post(U + "/staged"), 403)
root.headers["X-CSRF-Token"] = csrf
r = root.post(U + "/staged")
assert r.status_code == 202 and r.json()["version"] == "9.0.0", r.text
st = settled()
assert st["state"] == "failed" and st["staged"] is None, st
nothing_on_disk("staged bundle installed")
problem(root.post(U + "/staged"), 409, "nothing-staged")
# A refused bundle staged: refused (422) like an upload, nothing staged.
problem(root.post(U + "?stage=true", data=open(B["OTHERCA"], "rb"), headers=OCTET), 422, "update-refused")
assert root.get(U).json()["staged"] is None

# A deliberate rollback: the administrator lowers the floor, and the older bundle is taken
# (its install fails on the host as above); raised again, it is refused again.
r = toks["admin"].put(U + "/floor", json={"floor": "0.0.1"})
assert r.status_code == 200 and r.json() == {"floor": "0.0.1", "previous": floor}, r.text
assert root.get(U).json()["floor"] == "0.0.1"
r = root.post(U, data=open(B["DOWNGRADE"], "rb"), headers=OCTET)
assert r.status_code == 202 and r.json()["version"] == "0.0.1", r.text
settled()
r = root.put(U + "/floor", json={"floor": floor})
assert r.status_code == 200 and r.json()["previous"] == "0.0.1", r.text
problem(root.post(U, data=open(B["DOWNGRADE"], "rb"), headers=OCTET), 422, "update-refused")
nothing_on_disk("floor raised again")
print("update client ok")
"#;

#[test]
fn admin_update_refuses_every_attacker_before_installing() {
    require_tool("python3", "python3");
    require_tool("rauc", "rauc");
    require_tool("mksquashfs", "squashfs-tools");
    require_tool("openssl", "openssl");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let (cert, key) = (dev_key("ota-signer.pem"), dev_key("ota-signer.key"));
    let good = small_bundle(w, "good", BOARD, "9.0.0", &cert, &key);
    let other_board = small_bundle(w, "board", "sealgate-qemu-aarch64", "9.0.0", &cert, &key);
    let downgrade = small_bundle(w, "old", BOARD, "0.0.1", &cert, &key);
    let (xcert, xkey) = other_signer(w);
    let other_ca = small_bundle(w, "otherca", BOARD, "9.0.0", &xcert, &xkey);
    // This box's RAUC configuration with the development update CA as its keyring.
    let conf = w.join("system.conf");
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible={BOARD}\nbootloader=noop\nbundle-formats=-plain\n\n\
             [keyring]\npath={}\ncheck-purpose=codesign\n",
            dev_key("ota-ca.pem").display()
        ),
    )
    .expect("system.conf");

    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start_env(
        dir.path(),
        "",
        &["--danger-software-sealer"],
        &[("SEALGATE_RAUC_CONF", OsStr::new(&conf))],
    );
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("DATA", dir.path().display().to_string()),
            ("B_GOOD", good.display().to_string()),
            ("B_OTHERCA", other_ca.display().to_string()),
            ("B_OTHERBOARD", other_board.display().to_string()),
            ("B_DOWNGRADE", downgrade.display().to_string()),
        ],
    );
    assert!(out.contains("update client ok"), "{out}");
    // Refusals are audited; the daemon never answered 5xx.
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(log.contains("update.refused"), "{log}");
    for action in ["update.mark-good", "update.mark-bad", "update.floor"] {
        assert!(log.contains(action), "{action} audited: {log}");
    }
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Without a RAUC configuration (a development host) an upload is a 409 that says so, and
/// nothing is stored.
#[test]
fn admin_update_without_rauc_configuration_is_unavailable() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let missing = dir.path().join("no-system.conf");
    let d = Daemon::start_env(
        dir.path(),
        "",
        &["--danger-software-sealer"],
        &[("SEALGATE_RAUC_CONF", OsStr::new(&missing))],
    );
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        r#"
import os, requests
A, ca = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"]
PW = "correct horse battery staple"
s = requests.Session(); s.verify = ca
assert s.post(A + "/setup", json={"setup_token": os.environ["SETUP"], "username": "root", "password": PW}).status_code == 201
r = s.post(A + "/session", json={"username": "root", "password": PW})
s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
r = s.post(A + "/update", data=b"x" * 1000, headers={"Content-Type": "application/octet-stream"})
assert r.status_code == 409 and r.headers["Content-Type"] == "application/problem+json", r.text
assert r.json()["title"] == "This system does not take updates", r.text
assert not os.path.exists(os.path.join(os.environ["DATA"], "update", "staged.raucb"))
print("unavailable ok")
"#,
        &[
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("DATA", dir.path().display().to_string()),
        ],
    );
    assert!(out.contains("unavailable ok"), "{out}");
}

/// The update servers and the admin session, shared by the URL tests' clients.
const URL_COMMON: &str = r#"
import http.server, os, ssl, threading, time
import requests

base, ca, setup, data = os.environ["BASE"], os.environ["CA"], os.environ["SETUP"], os.environ["DATA"]
A = base + "/api/v1/admin"
U = A + "/update"
PW = "correct horse battery staple"
W = os.environ["WORK"]

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        files = {"/good.raucb": os.environ["B_GOOD"], "/old.raucb": os.environ["B_DOWNGRADE"]}
        if self.path in files:
            body = open(files[self.path], "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/huge.raucb":
            self.send_response(200)
            self.send_header("Content-Length", str(256 * 1024 * 1024 + 1))
            self.end_headers()
            self.wfile.write(b"\0" * 4096)
        elif self.path == "/short.raucb":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\0" * 4096)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/good.raucb")
            self.end_headers()
        else:
            self.send_error(404)

def serve(cert, key):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return "https://127.0.0.1:%d" % srv.server_address[1]

# One server with a certificate of the CA the daemon's system anchors hold (SSL_CERT_FILE),
# one with a self-signed certificate nobody vouches for.
trusted = serve(W + "/srv.pem", W + "/srv.key")
wrong = serve(W + "/wrong.pem", W + "/wrong.key")

def problem(r, status, type_=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert p["title"], p
    if type_:
        assert p["type"].endswith("/" + type_), p
    return p

def settled():
    """The update status once the background install is no longer running (30 s at most)."""
    deadline = time.time() + 30
    while root.get(U).json()["state"] == "installing" and time.time() < deadline:
        time.sleep(0.2)
    return root.get(U).json()

def nothing_on_disk(what):
    d = os.path.join(data, "update")
    left = sorted(os.listdir(d)) if os.path.isdir(d) else []
    assert not [f for f in left if f in ("upload.part", "staged.raucb")], (what, left)

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

anon = requests.Session()
anon.verify = ca
assert anon.post(A + "/setup", json={"setup_token": setup, "username": "root", "password": PW}).status_code == 201
root = login("root")
assert root.post(A + "/accounts", json={"username": "aud", "role": "auditor", "password": PW}).status_code == 201
aud = login("aud")
good = {"url": trusted + "/good.raucb"}
"#;

const URL_CLIENT: &str = r#"
# Who may: administrators only, with the CSRF token.
problem(anon.post(U + "/url", json=good), 401)
problem(aud.post(U + "/url", json=good), 403)
csrf = root.headers.pop("X-CSRF-Token")
problem(root.post(U + "/url", json=good), 403)
root.headers["X-CSRF-Token"] = csrf
# What is never fetched: not https, user info, garbage, unknown fields, a CA that is no PEM.
for url in ["http://127.0.0.1/b.raucb", "file:///etc/passwd", "https://u:p@127.0.0.1/b",
            "https://127.0.0.1/a b", "https://127.0.0.1/\r\nX: y", ""]:
    problem(root.post(U + "/url", json={"url": url}), 422, "invalid-url")
problem(root.post(U + "/url", json={"url": good["url"], "x": 1}), 400)
problem(root.post(U + "/url", json={}), 400)
problem(root.post(U + "/url", json={"url": good["url"], "ca": "not pem"}), 422, "invalid-ca")
# The wrong certificate is refused before a byte of the body is read.
p = problem(root.post(U + "/url", json={"url": wrong + "/good.raucb"}), 422, "update-fetch-failed")
assert "certificate" in p["detail"].lower(), p
nothing_on_disk("wrong certificate")
# Not found, a redirect (never followed), a body cut short, a declared length over the limit.
problem(root.post(U + "/url", json={"url": trusted + "/nope"}), 422, "update-fetch-failed")
p = problem(root.post(U + "/url", json={"url": trusted + "/moved"}), 422, "update-fetch-failed")
assert "redirect" in p["detail"], p
p = problem(root.post(U + "/url", json={"url": trusted + "/short.raucb"}), 422, "update-fetch-failed")
problem(root.post(U + "/url", json={"url": trusted + "/huge.raucb"}), 413, "body-too-large")
nothing_on_disk("failed fetches")
# The request's own trust anchors admit the other server; its older bundle is then fetched
# and refused by the same checks as an upload (the floor).
p = problem(root.post(U + "/url", json={"url": wrong + "/old.raucb", "ca": open(W + "/wrong-ca.pem").read()}),
            422, "update-refused")
assert p["title"] == "The bundle is older than the version floor", p
nothing_on_disk("refused bundle")
# The valid bundle from the trusted server: accepted (202); on the host the install fails.
r = root.post(U + "/url", json=good)
assert r.status_code == 202 and r.json()["version"] == "9.0.0", r.text
st = settled()
assert st["state"] == "failed" and st["pending"] is None, st
nothing_on_disk("failed install")
print("url client ok")
"#;

/// Two CAs, each with a server certificate for 127.0.0.1 in `w` (`srv.pem`/`srv.key` under
/// `srv-ca.pem`, `wrong.pem`/`wrong.key` under `wrong-ca.pem`).
fn url_server_certificates(w: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(w).args(args));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    std::fs::write(
        w.join("srv.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    // Two CAs, each with a server certificate for 127.0.0.1: `ca`'s is the one the daemon's
    // system anchors hold; `wrong`'s CA is nobody's (the request may name it as `ca`).
    for name in ["srv", "wrong"] {
        let ca_key = format!("{name}-ca.key");
        let ca_pem = format!("{name}-ca.pem");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        ossl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &ca_key,
                    "-out",
                    &ca_pem,
                    "-days",
                    "30",
                    "-subj",
                    &format!("/CN={name} CA"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        ossl(
            &[
                &["req", "-new"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        );
        ossl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "5",
            "-days",
            "30",
            "-extfile",
            "srv.ext",
            "-out",
            &pem,
        ]);
    }
}

/// The URL tests: bundles and two servers' certificates in `w`, a daemon with RAUC's test
/// configuration and the trusted server's CA as its system anchors (`settings` its settings
/// file), and the Python `client` after [`URL_COMMON`] with `extra` in its environment; the
/// client's output and the daemon's data directory.
fn run_url_client(
    w: &Path,
    settings: &str,
    client: &str,
    extra: &[(&str, String)],
) -> (String, tempfile::TempDir) {
    require_tool("python3", "python3");
    require_tool("rauc", "rauc");
    require_tool("mksquashfs", "squashfs-tools");
    let (cert, key) = (dev_key("ota-signer.pem"), dev_key("ota-signer.key"));
    let good = small_bundle(w, "good", BOARD, "9.0.0", &cert, &key);
    let downgrade = small_bundle(w, "old", BOARD, "0.0.1", &cert, &key);
    url_server_certificates(w);
    let conf = w.join("system.conf");
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible={BOARD}\nbootloader=noop\nbundle-formats=-plain\n\n\
             [keyring]\npath={}\ncheck-purpose=codesign\n",
            dev_key("ota-ca.pem").display()
        ),
    )
    .expect("system.conf");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let anchors = w.join("srv-ca.pem");
    let d = Daemon::start_env(
        dir.path(),
        settings,
        &["--danger-software-sealer"],
        &[
            ("SEALGATE_RAUC_CONF", OsStr::new(&conf)),
            ("SSL_CERT_FILE", OsStr::new(&anchors)),
        ],
    );
    let mut env = vec![
        ("BASE", d.admin_url("")),
        ("CA", d.ca_file().display().to_string()),
        ("SETUP", d.setup_token.clone().expect("setup token")),
        ("DATA", dir.path().display().to_string()),
        ("WORK", w.display().to_string()),
        ("B_GOOD", good.display().to_string()),
        ("B_DOWNGRADE", downgrade.display().to_string()),
    ];
    env.extend(extra.iter().cloned());
    let out = python(dir.path(), &format!("{URL_COMMON}{client}"), &env);
    (out, dir)
}

/// `POST /update/url`: the box fetches the bundle over HTTPS from a local server whose
/// certificate the daemon's system anchors vouch for (`SSL_CERT_FILE`), refuses a server with
/// a wrong certificate (unless the request names its CA), and applies the upload's limits
/// and checks.
#[test]
fn admin_update_from_a_url_verifies_the_server_and_applies_the_uploads_checks() {
    require_tool("openssl", "openssl");
    let work = tempfile::tempdir().expect("tmp");
    let (out, dir) = run_url_client(work.path(), "", URL_CLIENT, &[]);
    assert!(out.contains("url client ok"), "{out}");
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(
        log.contains("update.refused") && log.contains("update.install"),
        "{log}"
    );
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const PROXY_CLIENT: &str = r#"
# Through the proxy: the trusted server's bundle is fetched (then the install fails on the
# host, as without a proxy), the wrong server's certificate is still refused end to end.
r = root.post(U + "/url", json=good)
assert r.status_code == 202 and r.json()["version"] == "9.0.0", r.text
st = settled()
assert st["state"] == "failed" and st["pending"] is None, st
p = problem(root.post(U + "/url", json={"url": wrong + "/good.raucb"}), 422, "update-fetch-failed")
assert "certificate" in p["detail"].lower(), p
# The proxy gone: a clear error naming it, nothing on disk.
import signal
os.kill(int(os.environ["PROXY_PID"]), signal.SIGTERM)
time.sleep(1)
p = problem(root.post(U + "/url", json=good), 422, "update-fetch-failed")
assert "the proxy 127.0.0.1:" in p["detail"], p
nothing_on_disk("proxy gone")
print("proxy client ok", trusted)
"#;

/// `[proxy] url`: the download goes through a real HTTP proxy (Debian `tinyproxy`) with
/// `CONNECT`, TLS end to end (a wrong certificate is refused through the tunnel as without
/// it); a proxy that is gone is a clear error naming it.
#[test]
fn admin_update_from_a_url_goes_through_the_configured_proxy() {
    require_tool("tinyproxy", "tinyproxy");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = w.join("tinyproxy.log");
    std::fs::write(
        w.join("tinyproxy.conf"),
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\n\
             MaxClients 10\nAllow 127.0.0.1\n",
            log.display()
        ),
    )
    .expect("tinyproxy.conf");
    /// Stops tinyproxy however the test ends.
    struct Proxy(std::process::Child);
    impl Drop for Proxy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let proxy = Proxy(
        Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(w.join("tinyproxy.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tinyproxy"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "tinyproxy does not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (out, _dir) = run_url_client(
        w,
        &format!("[proxy]\nurl = \"http://127.0.0.1:{port}\"\n"),
        PROXY_CLIENT,
        &[("PROXY_PID", proxy.0.id().to_string())],
    );
    drop(proxy);
    assert!(out.contains("proxy client ok"), "{out}");
    // The trusted server's port, as the proxy was asked to connect to it.
    let trusted = out
        .split_whitespace()
        .last()
        .and_then(|u| u.rsplit(':').next())
        .expect("the trusted server's URL");
    let log = std::fs::read_to_string(&log).expect("tinyproxy log");
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{trusted} ")),
        "the fetch went through the proxy: {log}"
    );
}

/// A child process stopped however the test ends.
struct Stop(std::process::Child);
impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// RAUC's own service (Debian's `rauc service`) on a private session bus, with two file
/// slots and a boot backend that keeps its state in files: the daemon drives it over D-Bus
/// (zbus) for the slot table (`GetSlotStatus`), mark-good / mark-bad (`Mark`) and the
/// install (`InstallBundle`, `Completed`, `LastError`). The install cannot finish on a host
/// without device-mapper (RAUC mounts verity bundles through dm-verity): what is checked is
/// that RAUC's own answer reaches the status, and that the daemon then marks the other slot
/// bad, as it does after any failed install. tests/system/ota.rs installs for real.
#[test]
fn admin_update_drives_raucs_service_over_dbus() {
    require_tool("python3", "python3");
    require_tool("rauc", "rauc");
    require_tool("dbus-daemon", "dbus");
    require_tool("mksquashfs", "squashfs-tools");
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let (cert, key) = (dev_key("ota-signer.pem"), dev_key("ota-signer.key"));
    let good = small_bundle(w, "good", BOARD, "9.0.0", &cert, &key);
    let backend = w.join("backend");
    std::fs::write(
        &backend,
        "#!/bin/sh\n# RAUC's custom boot backend for the test: its state in files.\n\
         d=$(dirname \"$0\")\ncase \"$1\" in\n\
         get-primary) cat \"$d/primary\" 2>/dev/null || echo A ;;\n\
         set-primary) echo \"$2\" > \"$d/primary\" ;;\n\
         get-state) cat \"$d/state.$2\" 2>/dev/null || echo good ;;\n\
         set-state) echo \"$3\" > \"$d/state.$2\" ;;\n\
         get-current) echo A ;;\n*) exit 1 ;;\nesac\n",
    )
    .expect("backend");
    run(Command::new("chmod").arg("755").arg(&backend));
    for slot in ["rootA", "rootB"] {
        std::fs::write(w.join(slot), vec![0u8; 1 << 20]).expect("slot file");
    }
    std::fs::create_dir_all(w.join("rauc-data")).expect("data");
    std::fs::create_dir_all(w.join("mnt")).expect("mnt");
    let conf = w.join("system.conf");
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible={BOARD}\nbootloader=custom\ndata-directory={w}/rauc-data\n\
             mountprefix={w}/mnt\nbundle-formats=-plain\n\n\
             [keyring]\npath={ca}\ncheck-purpose=codesign\n\n\
             [handlers]\nbootloader-custom-backend={w}/backend\n\n\
             [slot.rootfs.0]\ndevice={w}/rootA\ntype=raw\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={w}/rootB\ntype=raw\nbootname=B\n",
            w = w.display(),
            ca = dev_key("ota-ca.pem").display()
        ),
    )
    .expect("system.conf");
    let bus = format!("unix:path={}/bus", w.display());
    let _bus = Stop(
        Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={bus}"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("dbus-daemon"),
    );
    for _ in 0..100 {
        if w.join("bus").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bus_env = [
        ("DBUS_SESSION_BUS_ADDRESS", OsStr::new(&bus)),
        ("DBUS_STARTER_BUS_TYPE", OsStr::new("session")),
    ];
    let rauc_log = std::fs::File::create(w.join("rauc.log")).expect("log");
    let _rauc = Stop(
        Command::new("rauc")
            .arg("service")
            .arg(format!("--conf={}", conf.display()))
            .arg("--override-boot-slot=A")
            .envs(bus_env)
            .stdin(std::process::Stdio::null())
            .stdout(rauc_log.try_clone().expect("log"))
            .stderr(rauc_log)
            .spawn()
            .expect("rauc service"),
    );

    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let mut env = vec![("SEALGATE_RAUC_CONF", OsStr::new(&conf))];
    env.extend(bus_env);
    let d = Daemon::start_env(dir.path(), "", &["--danger-software-sealer"], &env);
    let setup = d.setup_token.clone().expect("setup token");
    let out = python(
        dir.path(),
        r#"
import os, time
import requests
A, ca, W = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["W"]
U = A + "/update"
PW = "correct horse battery staple"
root = requests.Session(); root.verify = ca
assert root.post(A + "/setup", json={"setup_token": os.environ["SETUP"], "username": "root", "password": PW}).status_code == 201
r = root.post(A + "/session", json={"username": "root", "password": PW})
root.headers["X-CSRF-Token"] = r.json()["csrf_token"]

def slots():
    """RAUC's slot table through the daemon: {bootname: slot}."""
    t = root.get(U).json()["slots"]
    return t, {s["bootname"]: s for e in t["slots"] for s in e.values()}

# The service may still be starting.
deadline = time.time() + 30
while root.get(U).json()["slots"] is None and time.time() < deadline:
    time.sleep(0.2)
t, by = slots()
assert t["compatible"] == "sealgate-qemu-x86_64" and t["booted"] == "A", t
assert by["A"]["state"] == "booted" and by["B"]["state"] == "inactive", t
assert by["A"]["boot_status"] == "good" and by["B"]["boot_status"] == "good", t

def state(slot):
    p = os.path.join(W, "state." + slot)
    return open(p).read().strip() if os.path.exists(p) else None

# Mark: RAUC's answer, through its boot backend.
r = root.post(U + "/mark-bad", json={"slot": "B"})
assert r.status_code == 200 and r.json() == {"slot": "B", "marked": "bad"}, r.text
assert state("B") == "bad"
assert slots()[1]["B"]["boot_status"] == "bad"
r = root.post(U + "/mark-good", json={"slot": "B"})
assert r.status_code == 200, r.text
assert state("B") == "good" and slots()[1]["B"]["boot_status"] == "good"
# RAUC's own refusal reaches the answer (marking the booted slot bad is not allowed).
r = root.post(U + "/mark-bad", json={"slot": "booted"})
assert r.status_code in (200, 409), r.text
if r.status_code == 409:
    assert "does not answer" not in r.json()["detail"], r.text
    root.post(U + "/mark-good", json={"slot": "A"})

# The install: accepted, run by RAUC's service; its LastError is the status's last error.
r = root.post(U, data=open(os.environ["B_GOOD"], "rb"), headers={"Content-Type": "application/octet-stream"})
assert r.status_code == 202, r.text
deadline = time.time() + 60
while root.get(U).json()["state"] == "installing" and time.time() < deadline:
    time.sleep(0.2)
st = root.get(U).json()
assert st["state"] == "failed" and st["pending"] is None, st
assert st["last_error"].startswith("rauc install failed: "), st
assert "does not answer" not in st["last_error"], st
assert "mount" in st["last_error"].lower() or "re-sealed" in st["last_error"], st
# Whatever RAUC did to the other slot, it is not booted.
assert state("B") == "bad", state("B")
print("dbus client ok")
"#,
        &[
            ("BASE", d.admin_url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("W", w.display().to_string()),
            ("B_GOOD", good.display().to_string()),
        ],
    );
    let log = std::fs::read_to_string(w.join("rauc.log")).unwrap_or_default();
    assert!(
        out.contains("dbus client ok"),
        "{out}\nrauc service:\n{log}"
    );
    assert!(
        log.contains("staged.raucb"),
        "RAUC's service ran the install:\n{log}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(audit.contains("update.mark-bad"), "{audit}");
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
