//! The quarantine end to end: the built `sealgated` as the inbound MX with `[scan]`, a raw
//! SMTP sender in Python, Postfix as the internal server, `openssl cms` for encrypted mail,
//! the admin API through Python `requests` (an auditor, a read-only account), and `sealctl
//! quarantine` offline and through the daemon's socket.
//!
//! Attackers: a sender whose message is quarantined (it must never reach the mailbox before
//! an auditor releases it, and a kill -9 after the `250` must not lose it); whoever reads the
//! data partition (the store holds no cleartext: neither the message nor the envelope); an
//! account without the auditor role (403 on every quarantine call); ids that are paths.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::harness::{Daemon, Pki, require_python_module, run, sealctl, write};
use crate::inbound::{
    MAILBOXES, Mx, USERS, body_of, crlf, header_of, last_code, queued, send, start_mx,
};
use crate::peers::OrgServers;
use crate::submission::{client, message, start_box};

const EICAR_A: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR";
const EICAR_B: &str = "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Viruses (score 100) are quarantined rather than rejected; one DLP rule quarantines,
/// whatever its score.
const SCAN: &str = "[scan]\nenabled = true\nreject = 1000\n\
[[scan.dlp]]\nname = \"nightingale\"\nkeywords = [\"Project Nightingale\"]\nscore = 1.0\naction = \"quarantine\"\n";

fn settings(pki: &Pki, org: &OrgServers, extra: &str) -> String {
    format!(
        "[docking]\ntrust_anchors = \"{}\"\n[inbound]\nlisten = \"127.0.0.1:0\"\ndomains = [\"example.org\"]\nnext_hop = \"{}\"\n{extra}",
        pki.path("ca.crt").display(),
        org.relay()
    )
}

fn inbound_addr(d: &Daemon) -> SocketAddr {
    d.console
        .iter()
        .find_map(|l| l.strip_prefix("sealgated: listening smtp-inbound "))
        .unwrap_or_else(|| panic!("no inbound listener: {:?}", d.console))
        .parse()
        .unwrap()
}

/// The id in `250 2.0.0 OK queued as ID`.
fn queued_as(reply: &[String]) -> String {
    let last = reply.last().cloned().unwrap_or_default();
    assert!(last.starts_with("250 "), "{reply:?}");
    last.rsplit(' ').next().unwrap().to_string()
}

/// Every byte under `dir`, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.extend(std::fs::read(e.path()).unwrap());
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn sealctl_json(args: &[&str]) -> serde_json::Value {
    let out = run(Command::new(sealctl()).args(args));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

const AUDITOR: &str = r#"
import os, requests
A, ca, setup = os.environ["BASE"] + "/api/v1/admin", os.environ["CA"], os.environ["SETUP"]
VIRUS, DLP = os.environ["VIRUS"], os.environ["DLP"]
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

r = requests.post(A + "/setup", json={"setup_token": setup, "username": "root", "password": PW}, verify=ca)
assert r.status_code == 201, r.text
root = login("root")
for user, role in [("aud", "auditor"), ("ro", "read-only")]:
    assert root.post(A + "/accounts", json={"username": user, "role": role, "password": PW}).status_code == 201
aud, ro = login("aud"), login("ro")
problem(requests.get(A + "/quarantine", verify=ca), 401)

# read-only: nothing of the quarantine, and nothing changes.
problem(ro.get(A + "/quarantine"), 403)
problem(ro.get(A + "/quarantine/" + VIRUS), 403)
problem(ro.post(A + "/quarantine/" + VIRUS + "/release", json={}), 403)
problem(ro.post(A + "/quarantine/" + VIRUS + "/delete", json={"reason": "x"}), 403)

# The auditor lists and reads; the encrypted one is shown decrypted.
l = aud.get(A + "/quarantine").json()
ids = sorted(m["id"] for m in l["messages"])
assert ids == sorted([VIRUS, DLP]), l
assert l["unreadable"] == [], l
v = {m["id"]: m for m in l["messages"]}
assert "virus" in v[VIRUS]["labels"] and v[VIRUS]["to"] == ["carol@example.org"], v
assert "dlp:nightingale" in v[DLP]["labels"] and v[DLP]["from"] == "partner@partner.example", v
shown = aud.get(A + "/quarantine/" + DLP).json()
assert shown["decrypted"] is True and "Project Nightingale" in shown["message"], shown
shown = aud.get(A + "/quarantine/" + VIRUS).json()
assert shown["decrypted"] is False and "EICAR" in shown["message"], shown
problem(aud.get(A + "/quarantine/..%2F..%2Fvault.redb"), 404)
problem(aud.get(A + "/quarantine/1-nothing"), 404)
problem(aud.post(A + "/quarantine/" + VIRUS + "/explode", json={}), 404)
problem(aud.post(A + "/quarantine/" + DLP + "/delete", json={}), 400)
problem(aud.post(A + "/quarantine/" + DLP + "/delete", json={"reason": "a\r\nb"}), 400)
problem(aud.post(A + "/quarantine/" + DLP + "/delete", json={"reason": "x", "more": 1}), 400)
problem(aud.post(A + "/quarantine/" + DLP + "/release", headers={"X-CSRF-Token": "0" * 64}, json={}), 403)

# Release (a false positive), delete (with a reason); each once.
r = aud.post(A + "/quarantine/" + VIRUS + "/release", json={"reason": "false positive: test file"})
assert r.status_code == 200 and r.json()["released_by"] == "aud" and len(r.json()["queued_as"]) == 1, r.text
problem(aud.post(A + "/quarantine/" + VIRUS + "/release", json={}), 404)
assert aud.post(A + "/quarantine/" + DLP + "/delete", json={"reason": "leak attempt, reported"}).status_code == 204
problem(aud.get(A + "/quarantine/" + DLP), 404)
assert aud.get(A + "/quarantine").json()["messages"] == []

# Every decision in the vault's audit chain, under the auditor, with the reason.
entries = root.get(A + "/audit", params={"limit": 500}).json()["entries"]
mine = [e for e in entries if e["actor"] == "aud"]
acts = [e["action"] for e in mine]
for a in ["admin.quarantine-show", "admin.quarantine-release", "admin.quarantine-delete"]:
    assert a in acts, (a, acts)
assert any("false positive" in str(e) for e in mine if e["action"] == "admin.quarantine-release"), mine
assert not any("ro" == e["actor"] and "quarantine" in e["action"] and "status=200" in str(e) for e in entries)
print("auditor ok")
"#;

#[test]
fn quarantined_mail_is_encrypted_at_rest_survives_a_kill_and_the_auditor_releases_it_unchanged() {
    require_python_module("requests", "requests");
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, SCAN);

    // EICAR in cleartext: quarantined before the 250, nothing queued or delivered.
    let eicar = format!("{EICAR_A}{EICAR_B}");
    let clear = format!(
        "From: partner@partner.example\r\nTo: carol@example.org\r\nSubject: invoice\r\n\
Message-ID: <q-eicar@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n\
Content-Type: application/octet-stream; name=eicar.com\r\n\r\n{eicar}\r\n--b--\r\n"
    );
    let r = send(
        &mx,
        "partner@partner.example",
        &["carol@example.org"],
        clear.as_bytes(),
    );
    let virus = queued_as(&r[5]);
    assert_eq!(queued(&mx), 0);

    // An encrypted DLP hit: decrypted for scanning, stored as it came (encrypted).
    let secret = pki.message(
        "partner@partner.example",
        "alice@example.org",
        "plans",
        "The budget of Project Nightingale is attached.",
    );
    let enc = crlf(&pki.openssl_encrypt(&secret, &["alice@example.org"]));
    let r = send(&mx, "partner@partner.example", &["alice@example.org"], &enc);
    let dlp = queued_as(&r[5]);
    assert_ne!(virus, dlp);

    // kill -9 right after the 250: both are there after the restart.
    let Mx {
        dir, mut daemon, ..
    } = mx;
    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    drop(daemon);

    // At rest: no cleartext of either message, nor of their envelopes.
    let store = dir.path().join("quarantine");
    let bytes = all_bytes(&store);
    assert!(!bytes.is_empty());
    for needle in [
        "EICAR",
        "Nightingale",
        "carol@example.org",
        "alice@example.org",
        "partner@partner.example",
        "invoice",
        "virus",
    ] {
        assert!(!contains(&bytes, needle), "{needle} in the store");
    }

    // sealctl without a daemon: lists and shows with the vault's key.
    let d_owned = dir.path().to_str().unwrap().to_string();
    let d = d_owned.as_str();
    let l = sealctl_json(&[
        "quarantine",
        "list",
        "--data-dir",
        d,
        "--danger-software-sealer",
        "--json",
    ]);
    let mut ids: Vec<&str> = l["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![virus.as_str(), dlp.as_str()];
    want.sort();
    assert_eq!(ids, want, "{l}");
    let shown = sealctl_json(&[
        "quarantine",
        "show",
        "--data-dir",
        d,
        "--danger-software-sealer",
        &virus,
    ]);
    assert!(
        shown["message"].as_str().unwrap().contains("EICAR"),
        "{shown}"
    );
    let out = Command::new(sealctl())
        .args(["quarantine", "release", "--data-dir", d, &virus])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running daemon"));

    // The daemon again; nothing was delivered meanwhile.
    let daemon = Daemon::start(dir.path(), &settings(&pki, &org, SCAN));
    let addr = inbound_addr(&daemon);
    let mx = Mx {
        dir,
        daemon,
        addr,
        tmp: tempfile::tempdir().unwrap(),
    };
    assert!(org.postfix.mailbox("carol@example.org").is_empty());
    assert!(org.postfix.mailbox("alice@example.org").is_empty());

    // sealctl through the socket reads the same.
    let l = sealctl_json(&["quarantine", "list", "--data-dir", d, "--json"]);
    assert_eq!(l["messages"].as_array().unwrap().len(), 2, "{l}");

    // The auditor decides (and a read-only account may not).
    let script = write(mx.dir.path(), "auditor.py", AUDITOR.as_bytes());
    let out = Command::new("python3")
        .arg(&script)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("BASE", mx.daemon.admin_url(""))
        .env("CA", mx.daemon.ca_file())
        .env("SETUP", mx.daemon.setup_token.clone().expect("setup token"))
        .env("VIRUS", &virus)
        .env("DLP", &dlp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("auditor ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The released message arrives as it came, with one result field naming the auditor.
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    assert_eq!(got.len(), 1);
    assert_eq!(body_of(&got[0]), body_of(clear.as_bytes()));
    let result = header_of(&got[0], "X-Sealgate-Result").unwrap();
    assert_eq!(
        result,
        format!("inbound; released from quarantine {virus} by aud")
    );
    assert_eq!(
        header_of(&got[0], "Message-ID").as_deref(),
        Some("<q-eicar@test>")
    );
    // The deleted one never arrives.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(org.postfix.mailbox("alice@example.org").is_empty());
    assert!(all_bytes(&mx.dir.path().join("quarantine")).is_empty());
}

#[test]
fn dlp_rule_actions_and_the_subject_tag() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let extra = "[scan]\nenabled = true\nsubject_tag = \"[SPAM]\"\nauditor = \"bob@example.org\"\n\
[[scan.dlp]]\nname = \"payroll\"\nkeywords = [\"payroll report\"]\nscore = 0.0\naction = \"copy-auditor\"\n\
[[scan.dlp]]\nname = \"merger\"\nkeywords = [\"merger plan\"]\nscore = 0.0\naction = \"require-encryption\"\n\
[[scan.dlp]]\nname = \"blocked\"\nkeywords = [\"forbidden words\"]\nscore = 0.0\naction = \"block\"\n";
    let mx = start_mx(&pki, &org, extra);

    // block: 550 before the 250, nothing queued.
    let m = pki.message(
        "p@partner.example",
        "carol@example.org",
        "hi",
        "these are forbidden words",
    );
    let r = send(&mx, "p@partner.example", &["carol@example.org"], &m);
    assert!(r[5].join("\n").starts_with("550 5.7.1"), "{r:?}");
    assert_eq!(queued(&mx), 0);

    // tag (an IBAN scores 5): the Subject gets the tag.
    let m = pki.message(
        "p@partner.example",
        "carol@example.org",
        "bank details",
        "please pay to DE89370400440532013000 today",
    );
    let r = send(&mx, "p@partner.example", &["carol@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    assert_eq!(
        header_of(&got[0], "Subject").as_deref(),
        Some("[SPAM] bank details")
    );
    assert!(
        header_of(&got[0], "X-Sealgate-Scan")
            .unwrap()
            .starts_with("action=tag"),
    );

    // copy-auditor: delivered, and a copy for bob.
    let m = pki.message(
        "p@partner.example",
        "carol@example.org",
        "numbers",
        "the payroll report for May",
    );
    let r = send(&mx, "p@partner.example", &["carol@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 2);
    assert!(got.iter().any(|m| contains(m, "payroll report")));
    let copy = org.postfix.wait_for_mail("bob@example.org", 1);
    assert_eq!(
        header_of(&copy[0], "X-Sealgate-Auditor-Copy").as_deref(),
        Some("original recipients: carol@example.org")
    );
    assert!(contains(&copy[0], "payroll report"));

    // require-encryption: cleartext to alice (who has a key) arrives encrypted to her.
    let m = pki.message(
        "p@partner.example",
        "alice@example.org",
        "plans",
        "the merger plan is final",
    );
    let r = send(&mx, "p@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    assert!(!contains(&got[0], "merger plan"));
    assert!(contains(&got[0], "application/pkcs7-mime"));
    let plain = pki.openssl_decrypt(&crlf(&got[0]), "alice@example.org");
    assert!(contains(&plain, "merger plan"));
    // ... and to carol (no key) it is quarantined rather than sent in clear.
    let m = pki.message(
        "p@partner.example",
        "carol@example.org",
        "plans",
        "the merger plan is final",
    );
    let r = send(&mx, "p@partner.example", &["carol@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let store = mx.dir.path().join("quarantine");
    while all_bytes(&store).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "not quarantined: {:?}",
            org.postfix.mailbox("carol@example.org").len()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        !org.postfix
            .mailbox("carol@example.org")
            .iter()
            .any(|m| contains(m, "merger plan"))
    );
}

#[test]
fn submitted_mail_is_quarantined_as_cleartext_encrypted_at_rest_and_released_through_the_policy() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(
        &pki,
        &org,
        "[scan]\nenabled = true\n[[scan.dlp]]\nname = \"confidential\"\nkeywords = [\"strictly confidential\"]\nscore = 0.0\naction = \"quarantine\"\n",
    );
    let m = message(
        "alice@example.org",
        &["bob@example.org"],
        "numbers",
        "strictly confidential: the numbers",
    );
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let id = sent.text.rsplit(' ').next().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(org.postfix.mailbox("bob@example.org").is_empty());
    let bytes = all_bytes(&b.data_dir.path().join("quarantine"));
    for needle in [
        "strictly confidential",
        "bob@example.org",
        "alice@example.org",
    ] {
        assert!(!contains(&bytes, needle), "{needle} in the store");
    }
    let l = sealctl_json(&[
        "quarantine",
        "list",
        "--data-dir",
        b.data_dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(l["messages"][0]["id"], id.as_str(), "{l}");
    assert_eq!(l["messages"][0]["direction"], "outbound", "{l}");

    // Released: signed and encrypted by the submission policy now, then relayed.
    let out = run(Command::new(sealctl()).args([
        "quarantine",
        "release",
        "--data-dir",
        b.data_dir.path().to_str().unwrap(),
        "--reason",
        "approved by the data owner",
        &id,
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"));
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    assert!(!contains(&got[0], "strictly confidential"));
    assert!(contains(&got[0], "application/pkcs7-mime"));
    let result = header_of(&got[0], "X-Sealgate-Result").unwrap();
    assert!(
        result.starts_with(&format!("submit; released from quarantine {id} by uid:")),
        "{result}"
    );
    let plain = pki.openssl_decrypt(&crlf(&got[0]), "bob@example.org");
    assert!(contains(&plain, "strictly confidential"));
    assert!(all_bytes(&b.data_dir.path().join("quarantine")).is_empty());
}
