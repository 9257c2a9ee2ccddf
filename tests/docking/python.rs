//! Python clients as a vendor would write them: `requests` (PyPI `requests`), 32 concurrent
//! clients, and schemathesis (PyPI `schemathesis`) checking the OpenAPI document against the
//! running server.

use std::path::Path;
use std::process::Command;

use crate::harness::{
    Daemon, Pki, create_token, data_dir_with_keys, require_python_module, require_tool, write,
};

fn python(dir: &Path, script: &str, env: &[(&str, String)]) -> String {
    let file = write(dir, "client.py", script.as_bytes());
    let mut cmd = Command::new("python3");
    // requests lets these variables override a Session's `verify`: the tests pin the box
    // certificate, so they must not be replaced by the machine's bundle.
    cmd.arg(&file)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const VENDOR_CLIENT: &str = r#"
import json, os, sys
import requests

base, token, ca = os.environ["BASE"], os.environ["TOKEN"], os.environ["CA"]
s = requests.Session()
s.verify = ca
s.headers["Authorization"] = "Bearer " + token

r = requests.get(base + "/api/v1/health", verify=ca)
assert r.status_code == 200 and r.json() == {"status": "up"}, r.text

# Decrypt for scanning, envelope recipient given.
enc = open(os.environ["ENCRYPTED"], "rb").read()
r = s.post(base + "/api/v1/decrypt", params=[("to", "alice@example.org")], data=enc,
           headers={"Content-Type": "message/rfc822"})
assert r.status_code == 200, r.text
report = json.loads(r.headers["Sealgate-Report"])
assert report["status"] == "decrypted", report
assert b"vendor secret" in r.content

# Encrypt outgoing mail; a recipient without a certificate, then encrypt-known.
clear = open(os.environ["CLEAR"], "rb").read()
params = [("from", "bob@example.org"), ("to", "alice@example.org"), ("to", "unknown@example.com")]
r = s.post(base + "/api/v1/encrypt", params=params, data=clear, headers={"Content-Type": "message/rfc822"})
assert r.status_code == 422, r.text
assert r.headers["Content-Type"] == "application/problem+json"
problem = r.json()
assert problem["type"].endswith("/missing-certificates") and problem["missing"] == ["unknown@example.com"], problem
r = s.post(base + "/api/v1/encrypt", params=params + [("missing", "encrypt-known")], data=clear,
           headers={"Content-Type": "message/rfc822"})
assert r.status_code == 200, r.text
report = json.loads(r.headers["Sealgate-Report"])
assert report["status"] == "encrypted" and report["signed_by"] == "bob@example.org", report
encrypted = r.content

# Round trip through the box: decrypt what it encrypted, and verify the inner signature.
r = s.post(base + "/api/v1/decrypt", params={"to": "alice@example.org", "keep-signatures": "true"}, data=encrypted)
assert r.status_code == 200, r.text
r = s.post(base + "/api/v1/verify", data=r.content)
assert r.status_code == 200 and r.json()["valid"] is True, r.text

# A bad token is a 401 problem with WWW-Authenticate.
r = requests.post(base + "/api/v1/decrypt", data=enc, verify=ca, headers={"Authorization": "Bearer sgt_nope"})
assert r.status_code == 401 and "WWW-Authenticate" in r.headers, r.text
print("vendor client ok")
"#;

#[test]
fn python_requests_vendor_client() {
    require_python_module("requests", "requests");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "vendor", "decrypt,encrypt,verify");
    // The test CA as a trust anchor: without one no verdict is `valid`.
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\ntrust_anchors = \"{}\"\n",
            pki.path("ca.crt").display()
        ),
    );
    let clear = pki.message(
        "bob@example.org",
        "alice@example.org",
        "vendor",
        "vendor secret",
    );
    let enc = pki.openssl_encrypt(&clear, &["alice@example.org"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let out = python(
        tmp.path(),
        VENDOR_CLIENT,
        &[
            ("BASE", d.url("")),
            ("TOKEN", token),
            ("CA", d.ca_file().display().to_string()),
            (
                "ENCRYPTED",
                write(tmp.path(), "enc.eml", &enc).display().to_string(),
            ),
            (
                "CLEAR",
                write(tmp.path(), "clear.eml", &clear).display().to_string(),
            ),
        ],
    );
    assert!(out.contains("vendor client ok"));
}

const CONCURRENT: &str = r#"
import json, os
from concurrent.futures import ThreadPoolExecutor
import requests

base, token, ca = os.environ["BASE"], os.environ["TOKEN"], os.environ["CA"]
enc = open(os.environ["ENCRYPTED"], "rb").read()
clients, rounds = 32, 4

def client(n):
    s = requests.Session()
    s.verify = ca
    s.headers["Authorization"] = "Bearer " + token
    statuses = []
    for i in range(rounds):
        marker = "client %d round %d" % (n, i)
        msg = ("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: c\r\n"
               "Message-ID: <%d.%d@load>\r\n\r\n%s\r\n" % (n, i, marker)).encode()
        r = s.post(base + "/api/v1/encrypt", params={"from": "bob@example.org", "to": "alice@example.org"}, data=msg)
        statuses.append(r.status_code)
        if r.status_code != 200:
            continue
        r = s.post(base + "/api/v1/decrypt", data=r.content)
        statuses.append(r.status_code)
        assert r.status_code != 200 or marker.encode() in r.content, "wrong cleartext for " + marker
        r = s.post(base + "/api/v1/decrypt", data=enc)
        statuses.append(r.status_code)
    return statuses

with ThreadPoolExecutor(max_workers=clients) as pool:
    results = list(pool.map(client, range(clients)))
flat = [c for r in results for c in r]
print(json.dumps({"requests": len(flat), "ok": flat.count(200), "other": sorted(set(flat) - {200})}))
"#;

#[test]
fn thirty_two_concurrent_clients() {
    require_python_module("requests", "requests");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "load", "decrypt,encrypt");
    let d = Daemon::start(dir.path(), "");
    let enc = pki.openssl_encrypt(
        &pki.message("c@x.org", "alice@example.org", "load", "shared message"),
        &["alice@example.org"],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let out = python(
        tmp.path(),
        CONCURRENT,
        &[
            ("BASE", d.url("")),
            ("TOKEN", token),
            ("CA", d.ca_file().display().to_string()),
            (
                "ENCRYPTED",
                write(tmp.path(), "enc.eml", &enc).display().to_string(),
            ),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("summary");
    assert_eq!(v["requests"], 32 * 4 * 3, "{v}");
    assert_eq!(
        v["ok"], v["requests"],
        "every request answered 200 within the queue: {v}"
    );
    // The daemon is still healthy and audited every call.
    let (code, _, _) = d.curl("GET", "/api/v1/health", None, &[], None);
    assert_eq!(code, 200);
    assert_eq!(
        d.audit().iter().filter(|a| a["outcome"] == "ok").count(),
        32 * 4 * 3
    );
}

#[test]
fn schemathesis_checks_the_running_server_against_the_openapi_document() {
    require_python_module("schemathesis", "schemathesis");
    require_tool("st", "schemathesis (PyPI)");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "fuzz", "decrypt,encrypt,sign,verify");
    // Fuzzing sends many bad requests: keep the failure limiter out of its way.
    let d = Daemon::start(dir.path(), "[auth]\nmax_failures = 1000000\n");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let reports = tempfile::tempdir().expect("tmp");
    let out = Command::new("st")
        .args(["run", schema, "--url", &d.url(""), "-H", &format!("Authorization: Bearer {token}")])
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
            // One worker: CPython 3.11's ast.parse is not thread-safe and hypothesis calls it
            // from schemathesis' worker threads ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
        ])
        .arg(reports.path())
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        // Its example database and state go to the temporary directory, not the work tree.
        .current_dir(reports.path())
        .output()
        .expect("st");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passed") || stdout.contains("No issues found"),
        "{stdout}"
    );
    let (code, _, _) = d.curl("GET", "/api/v1/health", None, &[], None);
    assert_eq!(code, 200);
}
