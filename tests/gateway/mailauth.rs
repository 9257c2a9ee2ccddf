//! Sender authentication at the MX against real peers: Knot DNS (started here) is
//! authoritative for the senders' domains (SPF, DKIM keys, DMARC policies) and for two block
//! lists; DKIM keys come from `opendkim-genkey`, messages are signed by dkimpy (DKIM, and an
//! ARC seal as a forwarder would add).
//!
//! Attacker: the sending client on port 25, who forges a sender (a From whose domain's SPF
//! does not list the client, a domain that publishes DMARC `p=reject`), alters a signed
//! message (body or a signed header), plants an `Authentication-Results:` naming this box so
//! that a user trusts it, or sends from a listed address with links to a listed domain. And a
//! DNS that stops answering must not stop mail: it is labelled `temperror`.
//!
//! Outbound: what the box signs (`dkim_sign.rs`, the key from `opendkim-genkey`) verifies in
//! dkimpy; a key file others may read is refused (the attacker: a local account after the
//! key).
//!
//! Peers: Debian `knot`, `opendkim-tools`, `python3`; PyPI `dkimpy` (and `authres` for its
//! ARC sealing). A missing one fails
//! the test with a message naming its package.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Pki, require_tool, run};
use crate::inbound::{MAILBOXES, USERS, crlf, header_of, last_code, queued, send, start_mx};
use crate::peers::OrgServers;

/// The box's authserv-id (`[smtp] hostname`).
const HOST: &str = "mx.example.org";

struct Knot {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Knot authoritative for `test.` with `records` (zone-file lines), polled until it answers.
fn knot(records: &str) -> Knot {
    require_tool("knotd", "knot");
    require_tool("dig", "dnsutils");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = free_port();
    std::fs::write(
        dir.path().join("zone"),
        format!(
            "$ORIGIN test.\n$TTL 300\n@ SOA ns.test. admin.test. 1 3600 900 86400 60\n@ NS ns.test.\nns A 127.0.0.1\n{records}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("knot.conf"),
        format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  user: root:root\n\
             database:\n  storage: {d}\n\
             log:\n  - target: stderr\n    any: warning\n\
             zone:\n  - domain: test\n    file: {d}/zone\n"
        ),
    )
    .unwrap();
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
        ))
        .spawn()
        .expect("knotd");
    let k = Knot {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "ns.test",
                "A",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("127.0.0.1") {
            return k;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("knotd did not answer");
}

/// A DKIM key for `domain` with selector `sel` from `opendkim-genkey`: (private key file,
/// the TXT record's zone line for `sel._domainkey.NAME` under `test.`).
fn dkim_key(dir: &Path, domain: &str, name: &str) -> (std::path::PathBuf, String) {
    require_tool("opendkim-genkey", "opendkim-tools");
    run(Command::new("opendkim-genkey")
        .args(["-b", "2048", "-d", domain, "-s", "sel", "-D"])
        .arg(dir));
    let txt = std::fs::read_to_string(dir.join("sel.txt")).unwrap();
    // `sel._domainkey IN TXT ( "v=DKIM1; ..." "p=..." )  ; comment` → one zone line.
    let open = txt.find('(').unwrap();
    let close = txt.rfind(')').unwrap();
    let body = txt[open + 1..close].replace(['\n', '\t'], " ");
    (
        dir.join("sel.private"),
        format!("sel._domainkey.{name} TXT {body}"),
    )
}

/// `msg` signed by dkimpy's `dkimsign` for `domain`, selector `sel`.
fn dkim_sign(key: &Path, domain: &str, msg: &[u8]) -> Vec<u8> {
    require_tool("python3", "python3");
    let script = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
key = open(sys.argv[1], "rb").read()
sig = dkim.sign(msg, b"sel", sys.argv[2].encode(), key,
                include_headers=[b"from", b"to", b"subject", b"message-id"])
sys.stdout.buffer.write(sig + msg)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(key)
        .arg(domain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy (PyPI dkimpy) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crlf(&out.stdout)
}

/// `msg` (carrying the forwarder's `Authentication-Results: partner.test; ...`) ARC-sealed by
/// dkimpy's `arc_sign` as the forwarder `partner.test`.
fn arc_seal(key: &Path, msg: &[u8]) -> Vec<u8> {
    let script = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
key = open(sys.argv[1], "rb").read()
sig = dkim.arc_sign(msg, b"sel", b"partner.test", key, b"partner.test")
sys.stdout.buffer.write(b"".join(sig) + msg)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "dkimpy arc_sign (PyPI dkimpy, authres) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crlf(&out.stdout)
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: carol@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\
Date: Sat, 5 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The delivered message whose Subject is `subject`: (its Authentication-Results values,
/// its X-Sealgate-Scan).
fn delivered(org: &OrgServers, n: usize, subject: &str, id: &str) -> (Vec<String>, String) {
    let got = org.postfix.wait_for_mail("carol@example.org", n);
    let m = got
        .iter()
        .find(|m| {
            header_of(m, "Subject").as_deref() == Some(subject)
                && header_of(m, "Message-ID").is_some_and(|i| i.contains(id))
        })
        .unwrap_or_else(|| panic!("{subject} not delivered"));
    let text = String::from_utf8_lossy(m).replace("\r\n", "\n");
    let head = text
        .split("\n\n")
        .next()
        .unwrap()
        .replace("\n\t", " ")
        .replace("\n ", " ");
    let ar = head
        .lines()
        .filter_map(|l| l.strip_prefix("Authentication-Results:"))
        .map(|v| v.trim().to_string())
        .collect();
    (ar, header_of(m, "X-Sealgate-Scan").unwrap_or_default())
}

#[test]
fn spf_dkim_dmarc_and_block_lists_at_the_mx() {
    let started = Instant::now();
    let keys = tempfile::tempdir().unwrap();
    let (key, dkim_txt) = dkim_key(keys.path(), "partner.test", "partner");
    let dns = knot(&format!(
        "partner TXT \"v=spf1 ip4:127.0.0.1 -all\"\n{dkim_txt}\n\
         _dmarc.partner TXT \"v=DMARC1; p=none\"\n\
         fail TXT \"v=spf1 ip4:192.0.2.1 -all\"\n\
         soft TXT \"v=spf1 ip4:192.0.2.1 ~all\"\n\
         bank TXT \"v=spf1 ip4:192.0.2.1 -all\"\n\
         _dmarc.bank TXT \"v=DMARC1; p=reject\"\n\
         1.0.0.127.bl A 127.0.0.2\n\
         evil.example.uri A 127.0.0.2\n"
    ));
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    // A generous DNS timeout: on a loaded machine 500 ms gave temperror for a Knot that was
    // up (the stopped server below answers at once with a refused port).
    let mx = start_mx(
        &pki,
        &org,
        &format!(
            "[smtp]\nhostname = \"{HOST}\"\n[scan]\nenabled = true\nauth = true\n\
             resolver = \"127.0.0.1:{}\"\ndns_timeout_ms = 5000\n\
             dnsbl = [{{zone = \"bl.test\", score = 1.0}}]\n\
             uribl = [{{zone = \"uri.test\", score = 1.5}}]\n",
            dns.port
        ),
    );

    // Signed by the partner, with a forged result naming this box on top: DKIM, SPF and
    // DMARC pass; the forged field is gone; the client's address and the link are listed.
    let signed = dkim_sign(
        &key,
        "partner.test",
        &message("a@partner.test", "signed", "see https://evil.example/x now"),
    );
    let mut forged =
        format!("Authentication-Results: {HOST}; dkim=pass; spf=pass; dmarc=pass\r\n").into_bytes();
    forged.extend_from_slice(&signed);
    let r = send(&mx, "a@partner.test", &["carol@example.org"], &forged);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 1, "signed", "signed@test");
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(ar[0].starts_with(&format!("{HOST};")), "{ar:?}");
    for want in ["dkim=pass", "spf=pass", "dmarc=pass"] {
        assert!(ar[0].contains(want), "{want}: {ar:?}");
    }
    assert!(scan.contains("dnsbl:bl.test"), "{scan}");
    assert!(scan.contains("uribl:uri.test"), "{scan}");
    assert!(!scan.contains("dkim:fail"), "{scan}");

    // The body altered after signing: the body hash does not verify (`mail-auth` says
    // neutral, RFC 6376 6.3); labelled dkim:fail all the same.
    let text = String::from_utf8(signed.clone()).unwrap();
    let altered = text
        .replace(
            "see https://evil.example/x now",
            "see https://evil.example/y now",
        )
        .replace("Message-ID: <signed@test>", "Message-ID: <altered@test>");
    let r = send(
        &mx,
        "a@partner.test",
        &["carol@example.org"],
        altered.as_bytes(),
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 2, "signed", "altered@test");
    assert!(ar[0].contains("dkim=neutral (body hash"), "{ar:?}");
    assert!(scan.contains("dkim:fail"), "{scan}");
    // A signed header forged (the Subject): the signature fails.
    let forged_header = text.replace("Subject: signed", "Subject: forged");
    let r = send(
        &mx,
        "a@partner.test",
        &["carol@example.org"],
        forged_header.as_bytes(),
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 3, "forged", "signed@test");
    assert!(ar[0].contains("dkim=fail"), "{ar:?}");
    assert!(scan.contains("dkim:fail"), "{scan}");

    // A message forwarded by partner.test with its ARC seal: the chain verifies.
    let mut fwd =
        b"Authentication-Results: partner.test; spf=pass smtp.mailfrom=a@partner.test\r\n".to_vec();
    fwd.extend_from_slice(&message("a@partner.test", "arc", "forwarded"));
    let sealed = arc_seal(&key, &fwd);
    let r = send(&mx, "a@partner.test", &["carol@example.org"], &sealed);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, _) = delivered(&org, 4, "arc", "arc@test");
    assert!(ar.iter().any(|a| a.contains("arc=pass")), "{ar:?}");

    // SPF from the client's address: fail and softfail.
    let r = send(
        &mx,
        "x@fail.test",
        &["carol@example.org"],
        &message("x@fail.test", "spffail", "hi"),
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 5, "spffail", "spffail@test");
    assert!(ar[0].contains("spf=fail"), "{ar:?}");
    assert!(scan.contains("spf:fail"), "{scan}");
    let r = send(
        &mx,
        "x@soft.test",
        &["carol@example.org"],
        &message("x@soft.test", "spfsoft", "hi"),
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 6, "spfsoft", "spfsoft@test");
    assert!(ar[0].contains("spf=softfail"), "{ar:?}");
    assert!(scan.contains("spf:softfail"), "{scan}");

    // A forged sender of a domain with DMARC p=reject: 550 before the 250, nothing queued.
    let r = send(
        &mx,
        "ceo@bank.test",
        &["carol@example.org"],
        &message("ceo@bank.test", "wire", "pay now"),
    );
    let data = r[5].join("\n");
    assert!(data.starts_with("550 5.7.1"), "{r:?}");
    assert!(data.contains("dmarc:reject"), "{data}");
    assert_eq!(queued(&mx), 0);

    // The DNS server stops: mail still flows, labelled temperror.
    drop(dns);
    let r = send(
        &mx,
        "x@down.test",
        &["carol@example.org"],
        &message("x@down.test", "dnsdown", "hi"),
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let (ar, scan) = delivered(&org, 7, "dnsdown", "dnsdown@test");
    assert!(ar[0].contains("spf=temperror"), "{ar:?}");
    assert!(scan.contains("spf:temperror"), "{scan}");
    eprintln!("mailauth test took {:?}", started.elapsed());
}

#[test]
fn outbound_dkim_signatures_verify_in_dkimpy() {
    use std::os::unix::fs::PermissionsExt;
    let started = Instant::now();
    let keys = tempfile::tempdir().unwrap();
    let (key, txt) = dkim_key(keys.path(), "example.org", "example");
    let record = txt.split_once(" TXT ").unwrap().1.to_string();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let k = crate::dkim_sign::DkimKey {
        domain: "example.org".into(),
        selector: "sel".into(),
        key: key.clone(),
    };
    let msg = message("alice@example.org", "outbound", "signed by the box");
    let signed = crate::dkim_sign::sign(std::slice::from_ref(&k), &msg);
    assert!(
        signed.starts_with(b"DKIM-Signature:"),
        "{}",
        String::from_utf8_lossy(&signed)
    );
    // dkimpy verifies it, the key record given as DNS would (the zone line's strings joined).
    let verify = r#"
import sys, dkim, re
msg = open(sys.argv[1], "rb").read()
rec = "".join(re.findall(r'"([^"]*)"', sys.argv[2])).encode()
def dns(name, timeout=5):
    assert name == b"sel._domainkey.example.org.", name
    return rec
print("ok" if dkim.verify(msg, dnsfunc=dns) else "bad")
"#;
    let file = keys.path().join("signed.eml");
    std::fs::write(&file, &signed).unwrap();
    let out = run(Command::new("python3")
        .args(["-c", verify])
        .arg(&file)
        .arg(&record));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // Altered after signing: dkimpy refuses it.
    let altered = String::from_utf8(signed)
        .unwrap()
        .replace("signed by the box", "changed");
    std::fs::write(&file, altered).unwrap();
    let out = run(Command::new("python3")
        .args(["-c", verify])
        .arg(&file)
        .arg(&record));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bad");
    // Another domain's mail is not signed; a key others may read is not used.
    let other = message("bob@example.net", "other", "x");
    assert_eq!(
        crate::dkim_sign::sign(std::slice::from_ref(&k), &other),
        other
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        crate::dkim_sign::sign_with(&k, &msg)
            .unwrap_err()
            .contains("readable by others")
    );
    eprintln!("dkim signing test took {:?}", started.elapsed());
}

/// Submission end to end: what the box relays (signed and encrypted by S/MIME) carries the
/// box's DKIM signature, and dkimpy verifies it on the copy Postfix delivered.
#[test]
fn submitted_mail_leaves_dkim_signed_after_smime() {
    use std::os::unix::fs::PermissionsExt;
    let started = Instant::now();
    let keys = tempfile::tempdir().unwrap();
    let (key, txt) = dkim_key(keys.path(), "example.org", "example");
    let record = txt.split_once(" TXT ").unwrap().1.to_string();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = crate::submission::start_box(
        &pki,
        &org,
        &format!(
            "[[dkim]]\ndomain = \"example.org\"\nselector = \"sel\"\nkey = \"{}\"\n",
            key.display()
        ),
    );
    let m = crate::submission::message(
        "bob@example.org",
        &["alice@example.org"],
        "dkim",
        "signed twice",
    );
    let sent = crate::submission::client(
        &b,
        "starttls",
        "bob@example.org",
        "bob-Passw0rd",
        "bob@example.org",
        &["alice@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{text}"
    );
    assert!(text.contains("application/pkcs7-mime"), "{text}");
    let verify = r#"
import sys, dkim, re
msg = open(sys.argv[1], "rb").read()
rec = "".join(re.findall(r'"([^"]*)"', sys.argv[2])).encode()
print("ok" if dkim.verify(msg, dnsfunc=lambda name, timeout=5: rec) else "bad")
"#;
    let file = keys.path().join("delivered.eml");
    std::fs::write(&file, crlf(&got[0])).unwrap();
    let out = run(Command::new("python3")
        .args(["-c", verify])
        .arg(&file)
        .arg(&record));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{text}");
    eprintln!("submission dkim test took {:?}", started.elapsed());
}
