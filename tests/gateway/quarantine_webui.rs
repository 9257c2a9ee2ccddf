//! The quarantine for people: the web UI's quarantine pages in Debian's headless Chromium
//! (Playwright, axe-core), and the digest mails with their signed release links, against the
//! built `sealgated` as the inbound MX with Postfix as the internal server (what a release
//! sends is read from the mailbox), `openssl cms` for the encrypted message, curl for the
//! links.
//!
//! Attackers of the release links (each tried here): whoever got a digest forwarded and edits
//! the id, the recipient or the expiry (403: the HMAC covers all three); whoever uses another
//! recipient's link for themselves (the recipient is in the signature: 403); a replayed link
//! (410: the copy was released); a guessed signature (403); a mail scanner that opens the link
//! (GET releases nothing); a virus verdict (no link: "ask your administrator"). An expired
//! link is refused by the same check (`quarantine_digest.rs` unit tests; the shortest
//! lifetime is an hour).
//!
//! Peers: Debian `postfix`, `openssl`, `curl`, `chromium`, `python3`; PyPI `playwright`,
//! `requests`; npm `axe-core` (under `target/webui-node/`).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::Pki;
use crate::harness::{require_python_module, require_tool, run, write};
use crate::inbound::{MAILBOXES, USERS, body_of, crlf, header_of, queued, send, start_mx};
use crate::peers::OrgServers;

const EICAR: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Viruses (score 100) are quarantined rather than rejected; one DLP rule quarantines.
const SCAN: &str = "[scan]\nenabled = true\nreject = 1000\n\
[[scan.dlp]]\nname = \"nightingale\"\nkeywords = [\"Project Nightingale\"]\nscore = 1.0\naction = \"quarantine\"\n";

fn queued_as(reply: &[String]) -> String {
    let last = reply.last().cloned().unwrap_or_default();
    assert!(last.starts_with("250 "), "{reply:?}");
    last.rsplit(' ').next().unwrap().to_string()
}

/// The release links of a digest: (entry id, path and query on the admin listener).
fn links(digest: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(digest)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Release: "))
        .map(|u| {
            let path = &u[u.find("/quarantine/release").expect("path")..];
            let id = path
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("id="))
                .expect("id")
                .to_string();
            (id, path.to_string())
        })
        .collect()
}

fn set(query: &str, key: &str, value: &str) -> String {
    let (path, q) = query.split_once('?').expect("query");
    let q: Vec<String> = q
        .split('&')
        .map(|kv| {
            if kv.starts_with(&format!("{key}=")) {
                format!("{key}={value}")
            } else {
                kv.to_string()
            }
        })
        .collect();
    format!("{path}?{}", q.join("&"))
}

fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).to_path_buf()
}

#[test]
fn quarantine_pages_in_chromium_and_digest_links_release_once_to_their_recipient() {
    require_tool("chromium", "chromium");
    let chromium = String::from_utf8_lossy(
        &run(Command::new("sh").args(["-c", "command -v chromium"])).stdout,
    )
    .trim()
    .to_string();
    require_tool("curl", "curl");
    require_python_module("playwright", "playwright");
    require_python_module("requests", "requests");
    let axe = target_dir().join("webui-node/node_modules/axe-core/axe.min.js");
    assert!(
        axe.is_file(),
        "{} is missing: the npm package `axe-core` (cargo xtask test installs it)",
        axe.display()
    );
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, SCAN);
    let d = &mx.daemon;

    // A: an encrypted DLP hit for alice; B: EICAR for carol; C: a DLP hit for both.
    let secret = pki.message(
        "partner@partner.example",
        "alice@example.org",
        "plans",
        "The budget of Project Nightingale is attached.",
    );
    let enc = crlf(&pki.openssl_encrypt(&secret, &["alice@example.org"]));
    let a = queued_as(&send(&mx, "partner@partner.example", &["alice@example.org"], &enc)[5]);
    let virus = format!(
        "From: partner@partner.example\r\nTo: carol@example.org\r\nSubject: invoice\r\n\
Message-ID: <qw-eicar@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n\
Content-Type: application/octet-stream; name=eicar.com\r\n\r\n{EICAR}\r\n--b--\r\n"
    );
    let b = queued_as(
        &send(
            &mx,
            "partner@partner.example",
            &["carol@example.org"],
            virus.as_bytes(),
        )[5],
    );
    let both = "From: partner@partner.example\r\nTo: alice@example.org, carol@example.org\r\n\
Subject: =?utf-8?q?Nightingale_=C3=BCpdate?=\r\nMessage-ID: <qw-both@test>\r\n\r\nProject Nightingale: the update.\r\n";
    let c = queued_as(
        &send(
            &mx,
            "partner@partner.example",
            &["alice@example.org", "carol@example.org"],
            both.as_bytes(),
        )[6],
    );
    assert_eq!(queued(&mx), 0);

    // The digests, now (the admin socket: uid 0 is admin there).
    let sock = mx.dir.path().join("admin.sock");
    let out = run(Command::new("curl")
        .args(["-sS", "-X", "POST", "--unix-socket"])
        .arg(&sock)
        .arg("http://localhost/api/v1/admin/quarantine/digest"));
    let n: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(n["queued"], 2, "{n}");
    let alice = org.postfix.wait_for_mail("alice@example.org", 1);
    let carol = org.postfix.wait_for_mail("carol@example.org", 1);
    let text = String::from_utf8_lossy(&alice[0]).to_string();
    assert!(
        text.contains("Subject: Quarantine digest: 2 message(s)"),
        "{text}"
    );
    assert!(
        text.contains("Subject: plans") && text.contains("Nightingale üpdate"),
        "{text}"
    );
    assert!(
        !text.contains("invoice") && !text.contains("carol@"),
        "{text}"
    );
    let carol_text = String::from_utf8_lossy(&carol[0]).to_string();
    assert!(carol_text.contains("invoice"), "{carol_text}");
    assert!(
        carol_text.contains("ask your administrator"),
        "{carol_text}"
    );
    let alice_links = links(&alice[0]);
    let carol_links = links(&carol[0]);
    assert_eq!(alice_links.len(), 2, "{text}");
    assert_eq!(
        carol_links.iter().map(|l| &l.0).collect::<Vec<_>>(),
        vec![&c],
        "{carol_text}"
    );
    let alice_c = alice_links
        .iter()
        .find(|l| l.0 == c)
        .expect("link")
        .1
        .clone();
    let carol_c = carol_links[0].1.clone();

    let get = |path: &str| d.curl_url("GET", &d.admin_url(path), None, &[], None);
    let post = |path: &str| d.curl_url("POST", &d.admin_url(path), None, &[], None);
    // Opening the link releases nothing; the page is plain and locked down.
    let (code, headers, page) = get(&alice_c);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&page));
    assert!(String::from_utf8_lossy(&page).contains("Deliver it to my mailbox"));
    assert!(!String::from_utf8_lossy(&page).contains("<script"));
    assert!(
        crate::harness::header(&headers, "content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    // Edited, foreign, guessed: refused, nothing released.
    for (what, path) in [
        ("id", set(&alice_c, "id", &b)),
        ("recipient", set(&alice_c, "to", "carol%40example.org")),
        ("expiry", set(&alice_c, "exp", "99999999999")),
        ("signature", set(&alice_c, "sig", &"0".repeat(64))),
        (
            "carol's for alice",
            set(&carol_c, "to", "alice%40example.org"),
        ),
    ] {
        let (code, _, body) = post(&path);
        assert_eq!(code, 403, "{what}: {}", String::from_utf8_lossy(&body));
    }
    let (code, _, _) = post("/quarantine/release?id=x");
    assert_eq!(code, 400);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(org.postfix.mailbox("alice@example.org").len(), 1);
    // The link: alice's copy arrives as it came; once.
    let (code, _, body) = post(&alice_c);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let got = org.postfix.wait_for_mail("alice@example.org", 2);
    let released = got
        .iter()
        .find(|m| header_of(m, "Message-ID").as_deref() == Some("<qw-both@test>"))
        .expect("released copy");
    assert_eq!(body_of(released), body_of(both.as_bytes()));
    assert_eq!(
        header_of(released, "X-Sealgate-Result").unwrap(),
        format!("inbound; released from quarantine {c} by link:alice@example.org")
    );
    let (code, _, _) = post(&alice_c);
    assert_eq!(code, 410, "replayed");
    let (code, _, _) = get(&alice_c);
    assert_eq!(code, 410, "replayed");
    // Carol's copy stays for carol; every use of a signed link is in the vault's chain.
    let out = run(Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&sock)
        .arg("http://localhost/api/v1/admin/audit?action=quarantine.link&limit=500"));
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let acts: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    assert!(acts.contains(&"quarantine.link-release"), "{audit}");
    assert!(acts.contains(&"quarantine.link-refused"), "{audit}");

    // The web UI: the auditor releases A and deletes B; a read-only account sees nothing.
    let script = write(
        mx.tmp.path(),
        "quarantine_browser.py",
        include_bytes!("quarantine_browser.py"),
    );
    let pin = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        d.ca_file().display()
    )));
    let out = Command::new("python3")
        .arg(&script)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("BASE", d.admin_url(""))
        .env("CA", d.ca_file())
        .env("SETUP", d.setup_token.clone().expect("setup token"))
        .env("SPKI", String::from_utf8_lossy(&pin.stdout).trim())
        .env("CHROMIUM", &chromium)
        .env("AXE", &axe)
        .env("SHOTS", target_dir().join("webui-screenshots"))
        .env("DLP", &a)
        .env("VIRUS", &b)
        .env("LINK", &carol_c)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RESULT "),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A arrives as it came (still encrypted), B never.
    let got = org.postfix.wait_for_mail("alice@example.org", 3);
    let released = got
        .iter()
        .find(|m| header_of(m, "X-Sealgate-Result").is_some_and(|r| r.contains(&a)))
        .expect("released A");
    assert_eq!(body_of(released), body_of(&enc));
    assert_eq!(
        header_of(released, "X-Sealgate-Result").unwrap(),
        format!("inbound; released from quarantine {a} by aud")
    );
    // Carol's copy of C, released by `sealctl` (the admin socket) as the policy would have sent it: with its
    // scan verdict. A mode that does not exist is refused.
    let api = |path: &str, body: &str| {
        let out = run(Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", "--unix-socket"])
            .arg(&sock)
            .args(["-H", "Content-Type: application/json", "--data", body])
            .arg(format!("http://localhost/api/v1/admin{path}")));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let r = api(&format!("/quarantine/{c}/release"), r#"{"as": "sideways"}"#);
    assert!(r.ends_with("\n400"), "{r}");
    let out = run(Command::new(crate::harness::sealctl()).args([
        "quarantine",
        "release",
        "--data-dir",
        mx.dir.path().to_str().unwrap(),
        "--as",
        "policy",
        "--reason",
        "ok for carol",
        &c,
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with(&format!("{c} released (queued as ")),
        "{said}"
    );
    let got = org.postfix.wait_for_mail("carol@example.org", 2);
    let released = got
        .iter()
        .find(|m| header_of(m, "Message-ID").as_deref() == Some("<qw-both@test>"))
        .expect("carol's copy");
    assert!(
        header_of(released, "X-Sealgate-Scan").is_some_and(|v| v.contains("dlp:nightingale")),
        "{}",
        String::from_utf8_lossy(released)
    );
    assert_eq!(body_of(released), body_of(both.as_bytes()));
    // B (deleted) never arrived: carol has the digest and C only.
    assert_eq!(org.postfix.mailbox("carol@example.org").len(), 2);
}
