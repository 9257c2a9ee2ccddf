//! The admin API's users' keys (renew, retire, per-user listing, PEM import, export formats,
//! PKCS#12 export), external recipients' certificates (list, show, add, delete) and the CA
//! (show, init, intermediate CSR and install, CRL, revoke by serial) against the real daemon,
//! with Python `requests` and openssl as peers; and `sealctl keys` / `sealctl ca` while the
//! daemon runs (through its admin socket: the daemon holds the vault).
//!
//! The attacker: a session of a role that may only read (auditor, read-only) trying changes;
//! an administrator's bad input (garbage PKCS#12, a wrong password, an unknown address, a
//! non-CA certificate as the intermediate's) must be a 4xx problem and change nothing.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use crate::admin::python;
use crate::harness::{self, Daemon, Pki, create_token, data_dir_with_keys, require_tool, run};

const CLIENT: &str = r#"
import base64, os, subprocess, tempfile
import requests

A, ca, setup = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["SETUP"]
docking, dtoken = os.environ["DOCKING"], os.environ["DTOKEN"]
PW = "correct horse battery staple"

def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/problem+json", r.headers
    p = r.json()
    assert p["status"] == status and p["title"] and p["detail"], p
    return p

def login(user):
    s = requests.Session()
    s.verify = ca
    r = s.post(A + "/session", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s

def b64(path):
    return base64.b64encode(open(path, "rb").read()).decode()

def encrypt_to(addr):
    msg = ("From: bob@example.org\r\nTo: %s\r\nSubject: hi\r\nMessage-ID: <%s@example.org>\r\n\r\nhello\r\n" % (addr, os.urandom(6).hex())).encode()
    return requests.post(docking + "/api/v1/encrypt", params=[("from", "bob@example.org"), ("to", addr)], data=msg,
                         verify=ca, headers={"Authorization": "Bearer " + dtoken, "Content-Type": "message/rfc822"})

def openssl(*args, data=None):
    r = subprocess.run(["openssl", *args], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout

r = requests.post(A + "/setup", verify=ca, json={"setup_token": setup, "username": "root", "password": PW})
assert r.status_code == 201, r.text
root = login("root")
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    assert root.post(A + "/accounts", json={"username": user, "role": role, "password": PW}).status_code == 201
aud, ro = login("aud"), login("ro")
readers, changes_denied = [aud, ro], [aud, ro]

# --- The CA: none yet; readers may not create it; bad input changes nothing. ---
ov = ro.get(A + "/ca").json()
assert ov["state"] == "none" and ov["subject"] is None and ov["crl_number"] == 0, ov
problem(ro.get(A + "/ca/certificate"), 404)
problem(ro.get(A + "/ca/crl"), 404)
problem(ro.get(A + "/ca/csr"), 404)
for s in changes_denied:
    problem(s.post(A + "/ca", json={"name": "Box CA"}), 403)
    problem(s.post(A + "/ca/intermediate", json={"name": "Box CA"}), 403)
    problem(s.post(A + "/ca/crl"), 403)
problem(root.post(A + "/ca", json={"name": ""}), 422)
problem(root.post(A + "/ca", json={"name": "Box CA", "validity_days": 0}), 422)
problem(root.post(A + "/ca", json={"name": "Box CA", "validity_days": 4000000000}), 422)
problem(root.post(A + "/ca", json={"name": "Box CA", "domains": ["not a domain"]}), 422)
problem(root.post(A + "/ca", json={"name": "Box CA", "key_algorithm": "dsa"}), 400)
problem(root.post(A + "/ca", json={"name": "Box CA", "extra": 1}), 400)
problem(root.post(A + "/keys/issue", json={"user": "dave@example.org"}), 409)
problem(root.put(A + "/ca/certificate", json={"certificate": base64.b64encode(b"garbage").decode()}), 409)
assert ro.get(A + "/ca").json()["state"] == "none"
r = root.post(A + "/ca", json={"name": "Box CA", "key_algorithm": "p256", "domains": ["Example.org"]})
assert r.status_code == 201 and r.json()["subject"] == "CN=Box CA", r.text
problem(root.post(A + "/ca", json={"name": "Again"}), 409)
problem(root.post(A + "/ca/intermediate", json={"name": "Again"}), 409)
ov = ro.get(A + "/ca").json()
assert ov["state"] == "active" and not ov["intermediate"] and ov["settings"]["org_domains"] == ["example.org"], ov
assert ov["settings"]["key_algorithm"] == "p256", ov
r = ro.get(A + "/ca/certificate")
assert r.status_code == 200 and r.headers["Content-Type"] == "application/pem-certificate-chain", r.headers
assert r.text.count("BEGIN CERTIFICATE") == 1, r.text
crl1 = ro.get(A + "/ca/crl").text
assert crl1.startswith("-----BEGIN X509 CRL-----"), crl1
assert aud.get(A + "/ca/crl").text == crl1, "the current CRL is kept, not re-signed per read"
r = root.post(A + "/ca/crl")
assert r.status_code == 200 and r.text != crl1, r.text
assert ro.get(A + "/ca").json()["crl_number"] == 2

# --- Keys: issue, renew, the per-user listing. ---
r = root.post(A + "/keys/issue", json={"user": "dave@example.org"})
assert r.status_code == 201 and [k["status"] for k in r.json()] == ["active"], r.text
r = root.post(A + "/keys/issue", json={"user": "frank@example.org"}, headers={"Accept": "application/pem-certificate-chain"})
assert r.status_code == 201 and r.headers["Content-Type"] == "application/pem-certificate-chain", r.headers
assert r.text.count("BEGIN CERTIFICATE") == 1, r.text
for s in changes_denied:
    problem(s.post(A + "/keys/dave@example.org/renew"), 403)
    problem(s.post(A + "/keys/dave@example.org/retire"), 403)
problem(root.post(A + "/keys/nobody@example.org/renew"), 404)
problem(root.post(A + "/keys/not-an-address/renew"), 404)
r = root.post(A + "/keys/dave@example.org/renew")
assert r.status_code == 201 and [k["status"] for k in r.json()] == ["retired", "active"], r.text
u = ro.get(A + "/keys/dave@example.org").json()
assert u["user"] == "dave@example.org" and [k["status"] for k in u["keys"]] == ["retired", "active"], u
assert u["signing_key"] == u["encryption_key"] == u["keys"][1]["id"], u
problem(ro.get(A + "/keys/nobody@example.org"), 404)
listed = ro.get(A + "/keys", params={"user": "Dave@example.org"}).json()
assert [k["user"] for k in listed] == ["dave@example.org"] * 2, listed
assert ro.get(A + "/keys", params={"user": "nobody@example.org"}).json() == []
problem(ro.get(A + "/keys", params={"user": "not an address"}), 422)
problem(ro.get(A + "/keys", params={"bogus": "1"}), 400)

# Export formats (any role), PKCS#12 (admin, with a password).
r = ro.get(A + "/keys/dave@example.org/certificate", params={"format": "der"})
assert r.status_code == 200 and r.headers["Content-Type"] == "application/pkix-cert" and r.content[0] == 0x30, r.headers
openssl("x509", "-inform", "DER", "-noout", data=r.content)
r = ro.get(A + "/keys/dave@example.org/certificate", params={"format": "p7c"})
assert r.status_code == 200 and r.headers["Content-Type"] == "application/pkcs7-mime", r.headers
assert b"BEGIN CERTIFICATE" in openssl("pkcs7", "-inform", "DER", "-print_certs", data=r.content)
problem(ro.get(A + "/keys/dave@example.org/certificate", params={"format": "txt"}), 400)
for s in changes_denied:
    problem(s.post(A + "/keys/dave@example.org/pkcs12", json={"password": "pw"}), 403)
problem(root.post(A + "/keys/dave@example.org/pkcs12", json={"password": ""}), 422)
problem(root.post(A + "/keys/nobody@example.org/pkcs12", json={"password": "pw"}), 404)
r = root.post(A + "/keys/dave@example.org/pkcs12", json={"password": "export pw"})
assert r.status_code == 200 and r.headers["Content-Type"] == "application/pkcs12", r.headers
with tempfile.NamedTemporaryFile() as f:
    f.write(r.content); f.flush()
    out = openssl("pkcs12", "-in", f.name, "-passin", "pass:export pw", "-nodes")
assert out.count(b"BEGIN PRIVATE KEY") == 2, "both of dave's keys"

# Retire: alice's key stops receiving at once (the daemon had cached it).
assert encrypt_to("alice@example.org").status_code == 200
problem(root.post(A + "/keys/alice@example.org/retire", params={"id": 9999}), 404)
problem(root.post(A + "/keys/alice@example.org/retire", params={"id": "x"}), 400)
problem(root.post(A + "/keys/nobody@example.org/retire"), 404)
r = root.post(A + "/keys/alice@example.org/retire")
assert r.status_code == 200 and [k["status"] for k in r.json()["retired"]] == ["retired"], r.text
problem(encrypt_to("alice@example.org"), 422)
problem(root.post(A + "/keys/alice@example.org/retire"), 422)
problem(ro.get(A + "/keys/alice@example.org/certificate"), 404)
u = ro.get(A + "/keys/alice@example.org").json()
assert u["signing_key"] is None and u["encryption_key"] is None and len(u["keys"]) == 1, u

# Import PEM: bad input is 4xx and imports nothing.
for s in changes_denied:
    problem(s.post(A + "/keys/import-pem", json={"key": b64(os.environ["CAROL_KEY"]), "certificate": b64(os.environ["CAROL_CERT"])}), 403)
problem(root.post(A + "/keys/import-pem", json={"key": base64.b64encode(b"garbage").decode(), "certificate": b64(os.environ["CAROL_CERT"])}), 422)
problem(root.post(A + "/keys/import-pem", json={"key": b64(os.environ["ALICE_KEY"]), "certificate": b64(os.environ["CAROL_CERT"])}), 422)
problem(root.post(A + "/keys/import-pem", json={"key": "!!", "certificate": "x"}), 400)
problem(root.post(A + "/keys/import", json={"pkcs12": base64.b64encode(b"garbage").decode(), "password": "pw"}), 422)
assert not [k for k in ro.get(A + "/keys").json() if k["user"] == "carol@example.org"]
r = root.post(A + "/keys/import-pem", json={"key": b64(os.environ["CAROL_KEY"]), "certificate": b64(os.environ["CAROL_CERT"])})
assert r.status_code == 201 and r.json()[0]["user"] == "carol@example.org" and r.json()[0]["source"] == "pem", r.text
assert encrypt_to("carol@example.org").status_code == 200

# A revocation applies at once to the docking API's verify (the cached revocations go too).
def dock(path, data, **params):
    return requests.post(docking + path, params=params, data=data, verify=ca,
                         headers={"Authorization": "Bearer " + dtoken, "Content-Type": "message/rfc822"})
signed = dock("/api/v1/sign", b"From: frank@example.org\r\nTo: bob@example.org\r\nSubject: s\r\nMessage-ID: <s1@example.org>\r\n\r\nhello\r\n",
              **{"from": "frank@example.org"})
assert signed.status_code == 200, signed.text
v = dock("/api/v1/verify", signed.content).json()
assert v["valid"] is True, v
r = root.post(A + "/keys/frank@example.org/revoke")
assert r.status_code == 200 and len(r.json()["revoked"]) == 1, r.text
v = dock("/api/v1/verify", signed.content).json()
assert v["valid"] is False, v

# Revoke by serial: the current CRL lists it at once.
serial = ro.get(A + "/keys/dave@example.org").json()["keys"][1]["serial"]
for s in changes_denied:
    problem(s.post(A + "/ca/revoke", json={"serial": serial}), 403)
problem(root.post(A + "/ca/revoke", json={"serial": "zz"}), 422)
problem(root.post(A + "/ca/revoke", json={"serial": "01"}), 422)
r = root.post(A + "/ca/revoke", json={"serial": serial})
assert r.status_code == 200 and r.json()["revoked"] == [serial], r.text
crl = ro.get(A + "/ca/crl").text
text = openssl("crl", "-noout", "-text", data=crl.encode()).decode()
assert serial.upper().lstrip("0") in text.upper().replace(":", ""), text
assert [k["status"] for k in ro.get(A + "/keys/dave@example.org").json()["keys"]] == ["retired", "revoked"]

# --- External recipients' certificates. ---
listed = ro.get(A + "/certificates").json()
assert [c["emails"] for c in listed] == [["mallory@example.net"]], listed
erin = open(os.environ["ERIN"]).read()
for s in changes_denied:
    problem(s.post(A + "/certificates", json={"certificate": erin}), 403)
problem(root.post(A + "/certificates", json={"certificate": "garbage!"}), 400)
problem(root.post(A + "/certificates", json={"certificate": open(os.environ["TESTCA"]).read()}), 422)
problem(root.post(A + "/certificates", json={"certificate": open(os.environ["BOB_CERT"]).read()}), 409)
problem(root.post(A + "/certificates", json={"certificate": open(os.environ["ALICE_CERT"]).read()}), 409)
problem(encrypt_to("erin@example.org"), 422)
# Self-signed, so the docking API would keep it pending: the administrator vouches for it.
r = root.post(A + "/certificates", json={"certificate": erin})
assert r.status_code == 201 and r.json()[0]["emails"] == ["erin@example.org"], r.text
sha = r.json()[0]["sha256"]
assert encrypt_to("erin@example.org").status_code == 200
der = openssl("x509", "-outform", "DER", data=erin.encode())
r = root.post(A + "/certificates", json={"certificate": base64.b64encode(der).decode()})
assert r.status_code == 201 and r.json()[0]["sha256"] == sha, r.text
c = ro.get(A + "/certificates/" + sha[:12]).json()
assert c["sha256"] == sha and c["pem"].startswith("-----BEGIN CERTIFICATE-----"), c
problem(ro.get(A + "/certificates/abc"), 422)
problem(ro.get(A + "/certificates/" + "0" * 64), 404)
for s in changes_denied:
    problem(s.delete(A + "/certificates/" + sha), 403)
r = root.delete(A + "/certificates/" + sha)
assert r.status_code == 200 and r.json()["sha256"] == sha, r.text
problem(encrypt_to("erin@example.org"), 422)
problem(root.delete(A + "/certificates/" + sha), 404)
assert [c["emails"] for c in ro.get(A + "/certificates").json()] == [["mallory@example.net"]]

# Everything is in the vault's audit chain: the admin events name the account.
entries = aud.get(A + "/audit", params={"limit": 500}).json()["entries"]
actions = [(e["actor"], e["action"]) for e in entries]
for a in ["admin.ca-init", "admin.crl-issue", "admin.key-issue", "admin.key-renew", "admin.key-retire",
          "admin.key-export-pkcs12", "admin.key-import", "admin.ca-revoke", "admin.cert-add",
          "admin.cert-delete", "cert.add-recipient", "cert.remove-recipient"]:
    assert ("root", a) in actions, (a, actions)
assert any(a == "key.retire" for _, a in actions) and any(a == "ca.crl" for _, a in actions)
print("keys and ca client ok")
"#;

#[test]
fn admin_api_manages_keys_external_certificates_and_the_ca() {
    require_tool("python3", "python3");
    let pki = Pki::new();
    pki.issue("erin-self", "erin@example.org", "ec", None);
    let dir = data_dir_with_keys(&pki);
    let dtoken = create_token(dir.path(), "gw", "encrypt,sign,verify");
    let d = Daemon::start(dir.path(), "");
    let setup = d.setup_token.clone().expect("setup token");
    let p = |p: std::path::PathBuf| p.display().to_string();
    let out = python(
        dir.path(),
        CLIENT,
        &[
            ("BASE", d.admin_url("")),
            ("DOCKING", d.url("")),
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("DTOKEN", dtoken),
            ("ERIN", p(pki.cert("erin-self"))),
            ("TESTCA", p(pki.path("ca.crt"))),
            ("ALICE_CERT", p(pki.cert("alice@example.org"))),
            ("ALICE_KEY", p(pki.key("alice@example.org"))),
            ("BOB_CERT", p(pki.cert("bob@example.org"))),
            ("CAROL_CERT", p(pki.cert("carol@example.org"))),
            ("CAROL_KEY", p(pki.key("carol@example.org"))),
        ],
    );
    assert!(out.contains("keys and ca client ok"), "{out}");
    let text = std::fs::read_to_string(dir.path().join("log/sealgated.log")).unwrap_or_default();
    assert!(!text.contains("export pw"), "a password in the log");
}

/// A JSON request over the admin socket: (status, content type, body).
fn socket_json(
    sock: &Path,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, String, String) {
    let body = serde_json::to_vec(body).expect("json");
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("admin socket");
    write!(
        s,
        "{method} /api/v1/admin{path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("write");
    s.write_all(&body).expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `sealctl keys ...` and `sealctl ca ...` while the daemon runs (it holds the vault's lock):
/// they ask it through `DATA/admin.sock`, say so, and print what they print without a daemon;
/// bad input fails, saying why, and changes nothing; the changes apply at once.
#[test]
fn sealctl_keys_and_ca_use_the_running_daemon() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let work = tempfile::tempdir().expect("tmp");
    let w = |name: &str| work.path().join(name);
    let pw = harness::write(work.path(), "pw", b"pw\n");
    let wrong = harness::write(work.path(), "wrong", b"wrong\n");
    let garbage = harness::write(work.path(), "garbage", b"not a PKCS#12 file");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:pw", "-inkey"])
        .arg(pki.key("carol@example.org"))
        .arg("-in")
        .arg(pki.cert("carol@example.org"))
        .arg("-out")
        .arg(w("carol.p12")));
    let dtoken = create_token(dir.path(), "gw", "encrypt");
    let sealctl = |args: &[&str]| -> Output {
        Command::new(harness::sealctl())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--danger-software-sealer")
            .output()
            .expect("sealctl")
    };
    let ok = |args: &[&str]| -> Output {
        let o = sealctl(args);
        assert!(o.status.success(), "sealctl {args:?}: {}", stderr(&o));
        o
    };
    let s = |p: &Path| p.display().to_string();
    let offline_list = ok(&["keys", "list"]);
    assert!(!stderr(&offline_list).contains("admin.sock"));

    let mut d = Daemon::start(dir.path(), "");
    let o = ok(&["keys", "list"]);
    assert!(stderr(&o).contains("admin.sock"), "{}", stderr(&o));
    assert_eq!(stdout(&o), stdout(&offline_list));

    // keys import while the daemon runs; bad input fails and imports nothing.
    for (file, pwf) in [(&garbage, &pw), (&w("carol.p12"), &wrong)] {
        let o = sealctl(&[
            "keys",
            "import",
            "--p12",
            &s(file),
            "--password-file",
            &s(pwf),
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("admin.sock") && stderr(&o).contains("(422)"),
            "{}",
            stderr(&o)
        );
    }
    let o = sealctl(&[
        "keys",
        "import",
        "--key",
        &s(&pki.key("alice@example.org")),
        "--cert",
        &s(&pki.cert("carol@example.org")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&ok(&["keys", "list"])), stdout(&offline_list));
    let msg = pki.message("bob@example.org", "carol@example.org", "hi", "for carol");
    let to_carol = "/api/v1/encrypt?from=bob@example.org&to=carol@example.org";
    assert_eq!(
        d.curl("POST", to_carol, Some(&dtoken), &[], Some(&msg)).0,
        422
    );
    let o = ok(&[
        "keys",
        "import",
        "--p12",
        &s(&w("carol.p12")),
        "--password-file",
        &s(&pw),
    ]);
    let imported: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(imported[0]["user"], "carol@example.org", "{imported}");
    // At once on the docking API.
    let (code, _, body) = d.curl("POST", to_carol, Some(&dtoken), &[], Some(&msg));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));

    // An intermediate CA: the CSR, a refused reply (garbage, a non-CA certificate: the CA
    // stays pending), then the corporate CA's real answer.
    let o = ok(&[
        "ca",
        "init",
        "--name",
        "Box Intermediate",
        "--key-algorithm",
        "p256",
        "--intermediate",
        "--csr-out",
        &s(&w("inter.csr")),
    ]);
    assert!(stdout(&o).starts_with("intermediate CA \"Box Intermediate\" pending: CSR written to"));
    let csr = std::fs::read_to_string(w("inter.csr")).expect("csr");
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    assert!(!sealctl(&["ca", "cert"]).status.success(), "pending");
    let sign = |out: &Path, ext: &str| {
        let extfile = harness::write(work.path(), "ext.cnf", ext.as_bytes());
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "4242", "-in"])
            .arg(w("inter.csr"))
            .arg("-CA")
            .arg(pki.path("ca.crt"))
            .arg("-CAkey")
            .arg(pki.path("ca.key"))
            .arg("-extfile")
            .arg(&extfile)
            .arg("-out")
            .arg(out));
    };
    sign(
        &w("notca.crt"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    );
    sign(
        &w("inter.crt"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    let chain = s(&pki.path("ca.crt"));
    for (cert, why) in [
        (&garbage, "the CA certificate"),
        (&w("notca.crt"), "not a CA certificate"),
    ] {
        let o = sealctl(&["ca", "import-cert", "--cert", &s(cert), "--chain", &chain]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
    }
    // The API's answer is a problem document with a clear title.
    let sock = dir.path().join("admin.sock");
    let notca = std::fs::read_to_string(w("notca.crt")).expect("cert");
    let (code, ctype, body) = socket_json(
        &sock,
        "PUT",
        "/ca/certificate",
        &serde_json::json!({ "certificate": notca }),
    );
    assert_eq!(
        (code, ctype.as_str()),
        (422, "application/problem+json"),
        "{body}"
    );
    assert!(body.contains("The CA certificate was refused"), "{body}");
    let (code, _, body) = socket_json(&sock, "GET", "/ca", &serde_json::json!({}));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"pending\""), "{body}");
    let o = ok(&[
        "ca",
        "import-cert",
        "--cert",
        &s(&w("inter.crt")),
        "--chain",
        &chain,
    ]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(info["subject"], "CN=Box Intermediate", "{info}");
    let ca_cert_online = stdout(&ok(&["ca", "cert"]));
    assert_eq!(ca_cert_online.matches("BEGIN CERTIFICATE").count(), 2);

    // Issue under it: the leaf and the intermediate, which openssl validates to the root.
    let o = ok(&["ca", "issue", "dave@example.org"]);
    assert!(stderr(&o).contains("admin.sock"));
    assert_eq!(
        stdout(&o).matches("BEGIN CERTIFICATE").count(),
        2,
        "{}",
        stdout(&o)
    );
    let issued = harness::write(work.path(), "dave.pem", &o.stdout);
    run(Command::new("openssl")
        .args(["verify", "-purpose", "smimesign", "-CAfile"])
        .arg(pki.path("ca.crt"))
        .arg("-untrusted")
        .arg(&issued)
        .arg(&issued));
    let o = ok(&["keys", "export-cert", "dave@example.org", "--format", "der"]);
    assert_eq!(o.stdout.first(), Some(&0x30));
    ok(&[
        "keys",
        "export-pkcs12",
        "dave@example.org",
        "--password-file",
        &s(&pw),
        "--out",
        &s(&w("dave.p12")),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w("dave.p12"))
        .expect("p12")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    run(Command::new("openssl")
        .args(["pkcs12", "-noout", "-passin", "pass:pw", "-in"])
        .arg(w("dave.p12")));
    let o = sealctl(&["ca", "revoke", "--serial", "zz"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = ok(&["ca", "revoke", "dave@example.org"]);
    let revoked: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(
        revoked["revoked"].as_array().map(Vec::len),
        Some(1),
        "{revoked}"
    );
    let crl = stdout(&ok(&["ca", "crl"]));
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    let online_list = stdout(&ok(&["keys", "list"]));

    // Stopped: the same commands open the vault and print the same.
    assert!(d.terminate().0.success());
    let o = ok(&["keys", "list"]);
    assert!(!stderr(&o).contains("admin.sock"));
    assert_eq!(stdout(&o), online_list);
    assert_eq!(stdout(&ok(&["ca", "cert"])), ca_cert_online);
    let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
    let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).expect("vault");
    let audit = v.audit().expect("audit");
    for action in [
        "admin.key-import",
        "admin.ca-intermediate",
        "admin.ca-install",
        "admin.key-issue",
        "admin.key-export-pkcs12",
        "admin.key-revoke",
        "admin.crl-issue",
    ] {
        assert!(
            audit
                .iter()
                .any(|e| e.action == action && e.actor.starts_with("uid:")),
            "{action} audited"
        );
    }
}
