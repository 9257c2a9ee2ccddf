//! The inbound MX end to end: a sending MTA in Python (raw SMTP over a socket, so that every
//! reply and every trick is visible), the built `sealgated` with `[inbound]`, Postfix as the
//! internal server receiving the mail, `openssl cms` to make and check S/MIME, the docking API
//! to use a harvested certificate. And the abuse of an Internet-facing port: relay attempts
//! (foreign domains and the ways of hiding one in a local address), forged `X-Sealgate-*`
//! fields, a forged or tampered signature (nothing harvested), connections per address per
//! minute, too many recipients, a slow client.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Daemon, Pki, create_token, data_dir_with_keys, require_tool, run};
use crate::peers::OrgServers;

pub(crate) const USERS: &[(&str, &str)] = &[
    ("alice@example.org", "alice-Passw0rd"),
    ("bob@example.org", "bob-Passw0rd"),
];

/// Mailboxes at the internal server besides the users'. `mallory@example.net` is there so
/// that a relay through the box would be seen arriving.
pub(crate) const MAILBOXES: &[&str] = &["carol@example.org", "mallory@example.net"];

/// A sending MTA: connects, reads the greeting, then for each step sends a line (or, for
/// `@MSG FILE`, the file's bytes; for `@BDAT FILE`, `BDAT n LAST` and the bytes; for
/// `@STARTTLS`, STARTTLS and the handshake) and reads the reply. Prints every reply as JSON;
/// a closed connection ends the list.
const MTA: &str = r#"
import json, os, socket, ssl, sys
e = os.environ
s = socket.create_connection(("127.0.0.1", int(e["PORT"])), timeout=30)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        try:
            l = f.readline()
        except (ConnectionResetError, socket.timeout):
            return lines
        if not l:
            return lines
        lines.append(l.decode("utf-8", "replace").rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return lines
out = [reply()]
for step in json.loads(e["STEPS"]):
    try:
        if step.startswith("@MSG "):
            s.sendall(open(step[5:], "rb").read())
        elif step.startswith("@BDAT "):
            b = open(step[6:], "rb").read()
            s.sendall(b"BDAT %d LAST\r\n" % len(b) + b)
        elif step == "@STARTTLS":
            s.sendall(b"STARTTLS\r\n")
            r = reply(); out.append(r)
            ctx = ssl.create_default_context(cafile=e["CA"]); ctx.check_hostname = False
            s = ctx.wrap_socket(s); f = s.makefile("rb")
            continue
        else:
            s.sendall(step.encode() + b"\r\n")
    except OSError:
        out.append([]); break
    r = reply()
    out.append(r)
    if not r:
        break
print(json.dumps(out))
"#;

pub(crate) struct Mx {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) daemon: Daemon,
    pub(crate) addr: SocketAddr,
    pub(crate) tmp: tempfile::TempDir,
}

pub(crate) fn start_mx(pki: &Pki, org: &OrgServers, extra: &str) -> Mx {
    start_mx_to(pki, org.relay(), "127.0.0.1:0", extra)
}

/// The MX on `listen` with `next_hop` as its internal server.
fn start_mx_to(pki: &Pki, next_hop: SocketAddr, listen: &str, extra: &str) -> Mx {
    let dir = data_dir_with_keys(pki);
    let settings = format!(
        "[docking]\ntrust_anchors = \"{}\"\n[inbound]\nlisten = \"{listen}\"\ndomains = [\"example.org\"]\nnext_hop = \"{next_hop}\"\n{extra}",
        pki.path("ca.crt").display(),
    );
    let daemon = Daemon::start(dir.path(), &settings);
    let addr = daemon
        .console
        .iter()
        .find_map(|l| l.strip_prefix("sealgated: listening smtp-inbound "))
        .unwrap_or_else(|| panic!("no inbound listener: {:?}", daemon.console))
        .parse()
        .unwrap();
    Mx {
        dir,
        daemon,
        addr,
        tmp: tempfile::tempdir().unwrap(),
    }
}

/// Runs the MTA's `steps`; each reply's lines.
pub(crate) fn mta(mx: &Mx, steps: &[String]) -> Vec<Vec<String>> {
    require_tool("python3", "python3");
    let script = mx.tmp.path().join("mta.py");
    std::fs::write(&script, MTA).unwrap();
    let out = run(Command::new("python3")
        .arg(&script)
        .env("PORT", mx.addr.port().to_string())
        .env("CA", mx.daemon.ca_file())
        .env("STEPS", serde_json::to_string(steps).unwrap()));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The message as DATA sends it (dot-stuffed, ended by CRLF "." CRLF), in a file.
pub(crate) fn data_file(mx: &Mx, name: &str, msg: &[u8]) -> String {
    let mut d = Vec::new();
    for line in msg.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            d.push(b'.');
        }
        d.extend_from_slice(line);
    }
    if !d.ends_with(b"\r\n") {
        d.extend_from_slice(b"\r\n");
    }
    d.extend_from_slice(b".\r\n");
    let p = mx.tmp.path().join(name);
    std::fs::write(&p, d).unwrap();
    format!("@MSG {}", p.display())
}

/// One transaction: MAIL, RCPTs, DATA; the replies.
pub(crate) fn send(mx: &Mx, from: &str, rcpts: &[&str], msg: &[u8]) -> Vec<Vec<String>> {
    let mut steps = vec![
        "EHLO mta.partner.example".to_string(),
        format!("MAIL FROM:<{from}>"),
    ];
    steps.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
    steps.push("DATA".into());
    steps.push(data_file(mx, "msg.eml", msg));
    steps.push("QUIT".into());
    mta(mx, &steps)
}

pub(crate) fn code(reply: &[String]) -> u16 {
    reply
        .last()
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn last_code(replies: &[Vec<String>], step: usize) -> u16 {
    code(&replies[step])
}

/// The header of a delivered message (Postfix's Maildir has LF line ends), unfolded.
pub(crate) fn header_of(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg).replace("\r\n", "\n");
    let head = text
        .split("\n\n")
        .next()?
        .replace("\n\t", " ")
        .replace("\n ", " ");
    head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    })
}

/// The one of `msgs` that contains `text` (Maildir names do not sort in arrival order).
fn with<'a>(msgs: &'a [Vec<u8>], text: &str) -> &'a [u8] {
    let found: Vec<&Vec<u8>> = msgs
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains(text))
        .collect();
    assert_eq!(found.len(), 1, "{text:?} in {} messages", found.len());
    found[0]
}

pub(crate) fn body_of(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg).replace("\r\n", "\n");
    text.split_once("\n\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default()
}

pub(crate) fn queued(mx: &Mx) -> usize {
    std::fs::read_dir(mx.dir.path().join("spool"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// `msg` signed by `signer` (`openssl cms -sign`, multipart/signed), From as given.
fn signed(pki: &Pki, signer: &str, from: &str, to: &str, body: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("entity.txt");
    std::fs::write(
        &input,
        format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"),
    )
    .unwrap();
    let mut out = run(Command::new("openssl")
        .args(["cms", "-sign", "-md", "sha256", "-in"])
        .arg(&input)
        .arg("-signer")
        .arg(pki.cert(signer))
        .arg("-inkey")
        .arg(pki.key(signer))
        .args(["-from", from, "-to", to, "-subject", "signed"]))
    .stdout;
    // openssl writes LF line ends; mail has CRLF.
    out = crlf(&out);
    out
}

/// `b` with CRLF line ends (as an MTA sends it).
pub(crate) fn crlf(b: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(b)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[test]
fn mail_for_the_domains_reaches_the_internal_server_and_nothing_is_relayed_elsewhere() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, "");

    // What an MX speaks.
    let r = mta(&mx, &["EHLO mta.partner.example".into(), "QUIT".into()]);
    assert!(r[0][0].starts_with("220 "), "{r:?}");
    let ehlo = r[1].join("\n");
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "SIZE",
    ] {
        assert!(ehlo.contains(ext), "{ext} not offered: {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "{ehlo}");

    // Relay attempts: every one refused 550 5.7.1, and no transaction gets a message.
    let tricks = [
        "mallory@example.net",
        "mallory@example.net@example.org",
        "mallory@example.org@example.net",
        "\"mallory@example.net\"@example.org",
        "mallory%example.net@example.org",
        "example.net!mallory@example.org",
        "@example.org:mallory@example.net",
        "mallory@example.org.example.net",
    ];
    for t in tricks {
        let msg = pki.message(
            "evil@attacker.example",
            "mallory@example.net",
            "relay",
            "spam",
        );
        let r = send(&mx, "evil@attacker.example", &[t], &msg);
        let rcpt = r[3].join("\n");
        assert!(
            rcpt.starts_with("550 5.7.1") || rcpt.starts_with("501") || rcpt.starts_with("553"),
            "{t}: {r:?}"
        );
        assert_ne!(last_code(&r, 5), 250, "{t}: message accepted: {r:?}");
    }
    assert_eq!(queued(&mx), 0, "nothing may be queued");

    // A local recipient, with a forged result header and a forged loop marker.
    let mut forged = b"X-Sealgate-Result: inbound; signature=valid; signer=ceo@example.org\r\nX-Sealgate-Signature: valid\r\n".to_vec();
    forged.extend(pki.message(
        "partner@partner.example",
        "carol@example.org",
        "hello carol",
        "cleartext for carol",
    ));
    let r = send(
        &mx,
        "partner@partner.example",
        &["carol@example.org", "mallory@example.net"],
        &forged,
    );
    assert_eq!(last_code(&r, 3), 250, "{r:?}");
    assert_eq!(last_code(&r, 4), 550, "{r:?}");
    assert_eq!(last_code(&r, 6), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert_eq!(
        header_of(&got[0], "X-Sealgate-Result").as_deref(),
        Some("inbound; cleartext"),
        "{text}"
    );
    // The box's result and its loop marker; nothing from outside.
    assert_eq!(
        text.matches("X-Sealgate-").count(),
        2,
        "forged fields removed: {text}"
    );
    assert_eq!(text.matches("\nX-Sealgate-Loop: ").count(), 1, "{text}");
    assert!(text.contains("cleartext for carol"), "{text}");

    // BDAT (CHUNKING) after STARTTLS.
    let bdat = mx.tmp.path().join("bdat.eml");
    std::fs::write(
        &bdat,
        pki.message(
            "partner@partner.example",
            "carol@example.org",
            "chunked",
            "sent with BDAT",
        ),
    )
    .unwrap();
    let r = mta(
        &mx,
        &[
            "EHLO mta.partner.example".into(),
            "@STARTTLS".into(),
            "EHLO mta.partner.example".into(),
            "MAIL FROM:<partner@partner.example>".into(),
            "RCPT TO:<carol@example.org>".into(),
            format!("@BDAT {}", bdat.display()),
            "QUIT".into(),
        ],
    );
    assert_eq!(code(&r[2]), 220, "{r:?}");
    assert_eq!(code(&r[6]), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 2);
    with(&got, "sent with BDAT");

    // The relay attempts never arrived anywhere.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        org.postfix.mailbox("mallory@example.net").is_empty(),
        "the box relayed to a foreign domain"
    );
    assert_eq!(queued(&mx), 0, "everything delivered");
}

#[test]
fn encrypted_mail_passes_unchanged_and_signed_mail_is_verified_and_harvested() {
    let pki = Pki::new();
    pki.issue(
        "partner@partner.example",
        "partner@partner.example",
        "rsa",
        Some("ca"),
    );
    pki.add_ca("evil-ca", "Evil CA");
    pki.issue("forger", "forged@partner.example", "rsa", Some("evil-ca"));
    pki.issue("tampered", "tampered@partner.example", "ec", Some("ca"));
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, "");
    let token = create_token(mx.dir.path(), "gw", "encrypt");
    let encrypt_to = |to: &str| {
        let msg = pki.message("bob@example.org", to, "reply", "an answer");
        mx.daemon.curl(
            "POST",
            &format!("/api/v1/encrypt?from=bob@example.org&to={to}"),
            Some(&token),
            &[],
            Some(&msg),
        )
    };
    // Nothing known of the partner yet.
    assert_eq!(encrypt_to("partner@partner.example").0, 422);

    // Encrypted: the body arrives byte for byte.
    let clear = pki.message(
        "partner@partner.example",
        "alice@example.org",
        "secret",
        "for alice only",
    );
    let enc = crlf(&pki.openssl_encrypt(&clear, &["alice@example.org"]));
    let r = send(&mx, "partner@partner.example", &["alice@example.org"], &enc);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    assert_eq!(
        header_of(&got[0], "X-Sealgate-Result").as_deref(),
        Some("inbound; encrypted; relayed unchanged")
    );
    assert_eq!(
        body_of(&got[0]),
        body_of(&enc),
        "the encrypted body is unchanged"
    );
    assert!(
        String::from_utf8_lossy(&pki.openssl_decrypt(&got[0], "alice@example.org"))
            .contains("for alice only")
    );

    // Signed by a partner whose CA the box trusts: verified, and the certificate harvested.
    let m = signed(
        &pki,
        "partner@partner.example",
        "partner@partner.example",
        "alice@example.org",
        "signed hello",
    );
    let r = send(&mx, "partner@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 2);
    let signed_hello = with(&got, "signed hello");
    let result = header_of(signed_hello, "X-Sealgate-Result").unwrap_or_default();
    assert!(
        result.starts_with("inbound; signature=valid; signer=partner@partner.example"),
        "{result}"
    );
    assert!(
        result.contains("certificate=stored (partner@partner.example)"),
        "{result}"
    );
    // The signature still verifies at the recipient (the box added a header only).
    assert!(String::from_utf8_lossy(&pki.openssl_verify(signed_hello)).contains("signed hello"));
    // The harvested certificate is used: the docking API encrypts to the partner.
    let (code, _, body) = encrypt_to("partner@partner.example");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&pki.openssl_decrypt(&body, "partner@partner.example"))
            .contains("an answer")
    );

    // A signature from a CA the box does not trust: not valid, nothing harvested.
    let m = signed(
        &pki,
        "forger",
        "forged@partner.example",
        "alice@example.org",
        "trust me",
    );
    let r = send(&mx, "forged@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    // A valid signer certificate, content changed after signing.
    let m = signed(
        &pki,
        "tampered",
        "tampered@partner.example",
        "alice@example.org",
        "pay 10 EUR",
    );
    let m = String::from_utf8(m)
        .unwrap()
        .replace("pay 10 EUR", "pay 99 EUR")
        .into_bytes();
    let r = send(&mx, "tampered@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    // The partner's certificate used by someone claiming another From: not bound.
    let m = signed(
        &pki,
        "partner@partner.example",
        "boss@partner.example",
        "alice@example.org",
        "from the boss",
    );
    let r = send(&mx, "boss@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 5);
    for (text, who) in [
        ("trust me", "forged"),
        ("pay 99 EUR", "tampered"),
        ("from the boss", "boss"),
    ] {
        let result = header_of(with(&got, text), "X-Sealgate-Result").unwrap_or_default();
        assert!(
            result.starts_with("inbound; signature=invalid"),
            "{who}: {result}"
        );
        assert!(!result.contains("certificate="), "{who}: {result}");
        assert_eq!(
            encrypt_to(&format!("{who}@partner.example")).0,
            422,
            "{who}: no certificate may be harvested"
        );
    }
    // Audited: one harvest.
    let audit =
        std::fs::read_to_string(mx.dir.path().join("audit/docking.jsonl")).unwrap_or_default();
    assert_eq!(audit.matches("\"stored\"").count(), 1, "{audit}");

    // Signed with gpgsm (another S/MIME implementation): harvested too, as the directory's
    // `harvested` source.
    pki.issue(
        "gus@partner.example",
        "gus@partner.example",
        "rsa",
        Some("ca"),
    );
    let g = crate::gpgsm::Gpgsm::new(&pki, "gus@partner.example");
    let m = g.signed_message("gus@partner.example", "alice@example.org", "from gpgsm");
    let r = send(&mx, "gus@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 6);
    let result = header_of(with(&got, "from gpgsm"), "X-Sealgate-Result").unwrap_or_default();
    assert!(
        result.contains("signature=valid")
            && result.contains("certificate=stored (gus@partner.example)"),
        "{result}"
    );
    assert_eq!(encrypt_to("gus@partner.example").0, 200);
    let harvested = sealgate_directory::harvested::load(mx.dir.path()).unwrap();
    assert!(
        harvested.iter().any(|h| h.address == "gus@partner.example")
            && harvested
                .iter()
                .any(|h| h.address == "partner@partner.example"),
        "{harvested:?}"
    );
}

#[test]
fn cleartext_is_encrypted_at_rest_when_asked() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, "encrypt_at_rest = true\n");
    let m = pki.message(
        "partner@partner.example",
        "alice@example.org",
        "plain",
        "at rest",
    );
    let r = send(&mx, "partner@partner.example", &["alice@example.org"], &m);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    // carol has no key: her copy stays cleartext, said so.
    let m2 = pki.message(
        "partner@partner.example",
        "carol@example.org",
        "plain",
        "no key",
    );
    let r = send(&mx, "partner@partner.example", &["carol@example.org"], &m2);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    assert_eq!(
        header_of(&got[0], "X-Sealgate-Result").as_deref(),
        Some("inbound; cleartext; encrypted at rest")
    );
    assert!(!String::from_utf8_lossy(&body_of(&got[0])).contains("at rest"));
    assert!(
        String::from_utf8_lossy(&pki.openssl_decrypt(&got[0], "alice@example.org"))
            .contains("at rest")
    );
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    let result = header_of(&got[0], "X-Sealgate-Result").unwrap_or_default();
    assert!(
        result.starts_with("inbound; cleartext; not encrypted at rest"),
        "{result}"
    );
}

#[test]
fn abuse_of_the_mx_is_limited() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(
        &pki,
        &org,
        "max_connections_per_minute = 4\nmax_recipients = 2\n[smtp]\nsession_timeout_secs = 3\n",
    );
    // Too many recipients: the third gets 452 4.5.3.
    let r = mta(
        &mx,
        &[
            "EHLO x".into(),
            "MAIL FROM:<a@partner.example>".into(),
            "RCPT TO:<alice@example.org>".into(),
            "RCPT TO:<bob@example.org>".into(),
            "RCPT TO:<carol@example.org>".into(),
            "QUIT".into(),
        ],
    );
    assert_eq!(code(&r[4]), 250, "{r:?}");
    assert_eq!(code(&r[5]), 452, "{r:?}");
    assert!(r[5][0].starts_with("452 4.5.3"), "{r:?}");

    // A slow client is cut off by the session deadline.
    require_tool("python3", "python3");
    let started = Instant::now();
    let out = run(Command::new("python3").arg("-c").arg(format!(
        "import socket,time\ns=socket.create_connection(('127.0.0.1',{}))\ns.settimeout(20)\nd=b''\nwhile True:\n  c=s.recv(100)\n  if not c: break\n  d+=c\nprint(repr(d))",
        mx.addr.port()
    )));
    assert!(started.elapsed() < Duration::from_secs(15), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("220 "),
        "{out:?}"
    );

    // Two connections so far; the next two pass, the fifth in the minute gets 421.
    for _ in 0..2 {
        let r = mta(&mx, &["QUIT".into()]);
        assert_eq!(code(&r[0]), 220, "{r:?}");
    }
    let r = mta(&mx, &["QUIT".into()]);
    assert!(r[0][0].starts_with("421 4.7.0"), "{r:?}");
    assert_eq!(queued(&mx), 0);
}

#[test]
fn scanning_rejects_before_250_and_tags_what_it_delivers() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(&pki, &org, "[scan]\nenabled = true\n");
    let gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

    // GTUBE: 550 at the end of DATA, nothing queued, nothing delivered.
    let msg = pki.message(
        "spammer@attacker.example",
        "carol@example.org",
        "offer",
        gtube,
    );
    let r = send(
        &mx,
        "spammer@attacker.example",
        &["carol@example.org"],
        &msg,
    );
    let data = r[5].join("\n");
    assert!(data.starts_with("550 5.7.1"), "{r:?}");
    assert!(data.contains("action=reject"), "{data}");
    assert_eq!(queued(&mx), 0);

    // EICAR encrypted to a local user: decrypted for scanning, refused the same way.
    let eicar = [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR",
        "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat();
    let clear = format!(
        "From: partner@partner.example\r\nTo: alice@example.org\r\nSubject: invoice\r\n\
Message-ID: <eicar@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n\
Content-Type: application/octet-stream; name=eicar.com\r\n\r\n{eicar}\r\n--b--\r\n"
    );
    let enc = crlf(&pki.openssl_encrypt(clear.as_bytes(), &["alice@example.org"]));
    let r = send(&mx, "partner@partner.example", &["alice@example.org"], &enc);
    let data = r[5].join("\n");
    assert!(data.starts_with("550 5.7.1"), "{r:?}");
    assert!(data.contains("virus"), "{data}");
    assert_eq!(queued(&mx), 0);
    // Both refusals audited with their message ids, without content.
    let audit =
        std::fs::read_to_string(mx.dir.path().join("audit/docking.jsonl")).unwrap_or_default();
    assert_eq!(audit.matches("\"refused-scan\"").count(), 2, "{audit}");
    assert!(audit.contains("eicar@test"), "{audit}");
    assert!(!audit.contains("EICAR"), "{audit}");

    // Clean mail: delivered with X-Sealgate-Scan (a forged one removed first).
    let mut forged = b"X-Sealgate-Scan: action=accept; score=0; labels=\r\n".to_vec();
    forged.extend(pki.message(
        "partner@partner.example",
        "carol@example.org",
        "lunch",
        "lunch at noon? https://example.org/menu",
    ));
    let r = send(
        &mx,
        "partner@partner.example",
        &["carol@example.org"],
        &forged,
    );
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert_eq!(text.matches("X-Sealgate-Scan").count(), 1, "{text}");
    let scan = header_of(&got[0], "X-Sealgate-Scan").unwrap();
    assert!(scan.starts_with("action=accept; score="), "{scan}");
    assert!(scan.contains("; labels="), "{scan}");
    assert_eq!(
        header_of(&got[0], "X-Sealgate-Result").as_deref(),
        Some("inbound; cleartext")
    );

    // Encrypted to a user the box holds no key for: labelled, relayed unchanged.
    pki.issue("outsider", "outsider@partner.example", "rsa", Some("ca"));
    let enc = crlf(
        &pki.openssl_encrypt(
            pki.message("partner@partner.example", "carol@example.org", "x", "y")
                .as_slice(),
            &["outsider"],
        ),
    );
    let r = send(&mx, "partner@partner.example", &["carol@example.org"], &enc);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    let got = org.postfix.wait_for_mail("carol@example.org", 2);
    let undecryptable = got
        .iter()
        .filter_map(|m| header_of(m, "X-Sealgate-Scan"))
        .find(|h| h.contains("encrypted-undecryptable"));
    assert!(
        undecryptable
            .as_deref()
            .is_some_and(|h| h.starts_with("action=tag")),
        "{undecryptable:?}"
    );
}

/// RCPT lines of the MTA for `rcpts` after EHLO and MAIL.
fn rcpt_steps(from: &str, rcpts: &[&str]) -> Vec<String> {
    let mut steps = vec![
        "EHLO mta.partner.example".to_string(),
        format!("MAIL FROM:<{from}>"),
    ];
    steps.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>")));
    steps
}

/// The lines of Postfix's log that mention `text`, once the log has settled.
fn log_lines(org: &OrgServers, text: &str) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(500));
    std::fs::read_to_string(&org.postfix.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_string)
        .collect()
}

#[test]
fn recipients_are_checked_at_the_internal_server_with_a_cache_and_a_budget() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let mx = start_mx(
        &pki,
        &org,
        "verify_recipients = true\nverify_probes_per_minute = 6\n",
    );
    // Known: 250; unknown at Postfix (its virtual mailbox table): 550 5.1.1; asked again:
    // the cache answers (Postfix sees each address once); the mail reaches the known one.
    let mut steps = rcpt_steps(
        "spy@partner.example",
        &[
            "alice@example.org",
            "nobody@example.org",
            "nobody@example.org",
            "Alice@Example.ORG",
            "postmaster@example.org",
        ],
    );
    steps.push("DATA".into());
    steps.push(data_file(
        &mx,
        "probe.eml",
        b"From: spy@partner.example\r\nTo: alice@example.org\r\nSubject: checked\r\nMessage-ID: <probe-1@partner.example>\r\n\r\nhello\r\n",
    ));
    steps.push("QUIT".into());
    let r = mta(&mx, &steps);
    assert_eq!(code(&r[3]), 250, "{r:?}");
    assert!(r[4][0].starts_with("550 5.1.1"), "{r:?}");
    assert!(r[5][0].starts_with("550 5.1.1"), "{r:?}");
    assert_eq!(code(&r[6]), 250, "{r:?}");
    assert_eq!(code(&r[7]), 250, "postmaster is never probed: {r:?}");
    assert_eq!(code(&r[9]), 250, "{r:?}");
    assert_eq!(org.postfix.wait_for_mail("alice@example.org", 1).len(), 1);
    let rejected = log_lines(&org, "reject: RCPT");
    let nobody: Vec<_> = rejected
        .iter()
        .filter(|l| l.contains("<nobody@example.org>"))
        .collect();
    assert_eq!(
        nobody.len(),
        1,
        "one probe for the unknown address: {rejected:?}"
    );
    // The probe's sender is the null sender, never the client's.
    assert!(nobody[0].contains("from=<>"), "{nobody:?}");
    assert!(
        !rejected
            .iter()
            .any(|l| l.contains("NOQUEUE") && l.contains("from=<spy@partner.example>")),
        "{rejected:?}"
    );

    // Enumeration: 3 probes so far (a local part's case makes another address, RFC 5321
    // §2.4); 3 more in the minute, then 450 4.7.1 without a probe; cached answers stay free.
    let r = mta(
        &mx,
        &rcpt_steps(
            "spy@partner.example",
            &[
                "u1@example.org",
                "u2@example.org",
                "u3@example.org",
                "u4@example.org",
                "u5@example.org",
                "nobody@example.org",
                "alice@example.org",
            ],
        ),
    );
    for i in 3..6 {
        assert!(r[i][0].starts_with("550 5.1.1"), "{i}: {r:?}");
    }
    assert!(r[6][0].starts_with("450 4.7.1"), "{r:?}");
    assert!(r[7][0].starts_with("450 4.7.1"), "{r:?}");
    assert!(r[8][0].starts_with("550 5.1.1"), "{r:?}");
    assert_eq!(code(&r[9]), 250, "{r:?}");
    assert!(
        log_lines(&org, "<u4@example.org>").is_empty(),
        "over the budget, nothing reaches the internal server"
    );

    // The internal server goes away: the cached answers still hold.
    let log = std::fs::read_to_string(&org.postfix.log).unwrap_or_default();
    drop(org);
    let r = mta(
        &mx,
        &rcpt_steps(
            "x@partner.example",
            &["alice@example.org", "nobody@example.org"],
        ),
    );
    assert_eq!(code(&r[3]), 250, "{r:?}\n{log}");
    assert!(r[4][0].starts_with("550 5.1.1"), "{r:?}");
    assert_eq!(queued(&mx), 0);
}

#[test]
fn recipients_wait_while_the_internal_server_is_down() {
    let pki = Pki::new();
    // Nothing listens at the next hop.
    let down = SocketAddr::from(([127, 0, 0, 1], crate::peers::free_port()));
    let mx = start_mx_to(&pki, down, "127.0.0.1:0", "verify_recipients = true\n");
    let mut steps = rcpt_steps(
        "a@partner.example",
        &[
            "alice@example.org",
            "bob@example.org",
            "elsewhere@example.net",
        ],
    );
    steps.push("DATA".into());
    steps.push("QUIT".into());
    let started = Instant::now();
    let r = mta(&mx, &steps);
    assert!(r[3][0].starts_with("450 4.4.3"), "{r:?}");
    assert!(r[4][0].starts_with("450 4.4.3"), "{r:?}");
    // Not one of the domains: refused before any check.
    assert!(r[5][0].starts_with("550 5.7.1"), "{r:?}");
    assert!(code(&r[6]) >= 500, "no recipient, no DATA: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a down next hop is not asked again for every RCPT"
    );
    assert_eq!(queued(&mx), 0);
}

#[test]
fn a_loop_through_another_server_ends_with_a_refusal() {
    let pki = Pki::new();
    // A misconfigured internal server: it relays everything, the box's domain included,
    // back to the box's MX.
    let mx_port = crate::peers::free_port();
    let mx_addr = SocketAddr::from(([127, 0, 0, 1], mx_port));
    let pdir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        pdir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let postfix = crate::peers::Postfix::start_relay(pdir.path(), mx_addr, None);
    let relay = SocketAddr::from(([127, 0, 0, 1], postfix.relay));
    let mx = start_mx_to(&pki, relay, &mx_addr.to_string(), "");
    // Markers that look like the box's but do not verify count for nothing: the first
    // message is taken like any other.
    let box_id = std::fs::read_to_string(mx.dir.path().join("box-id")).unwrap();
    let forged = format!(
        "X-Sealgate-Loop: {}; dir=inbound; t=1; mac={}\r\n",
        box_id.trim(),
        "cd".repeat(32)
    );
    let mut msg = forged.repeat(4).into_bytes();
    msg.extend_from_slice(b"From: a@partner.example\r\nTo: alice@example.org\r\nSubject: round and round\r\nMessage-ID: <loop-1@partner.example>\r\n\r\nhello\r\n");
    let r = send(&mx, "a@partner.example", &["alice@example.org"], &msg);
    assert_eq!(last_code(&r, 5), 250, "{r:?}");
    // box -> Postfix -> box (1 marker) -> Postfix -> box (2) -> Postfix -> box: 3 markers,
    // more than max_loop_markers = 2: refused 554 5.4.6, Postfix returns it to its sender.
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&postfix.log).unwrap_or_default();
        if log.contains("5.4.6") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let to_box =
        |l: &&str| l.contains(&format!(":{mx_port},")) && l.contains("to=<alice@example.org>");
    let bounced: Vec<&str> = log
        .lines()
        .filter(to_box)
        .filter(|l| l.contains("status=bounced"))
        .collect();
    assert_eq!(bounced.len(), 1, "{log}");
    assert!(bounced[0].contains("554 5.4.6"), "{log}");
    // Nothing more goes round: the count of passes stays where it is.
    std::thread::sleep(Duration::from_secs(5));
    let log = std::fs::read_to_string(&postfix.log).unwrap_or_default();
    let sent = log
        .lines()
        .filter(to_box)
        .filter(|l| l.contains("status=sent"))
        .count();
    assert_eq!(sent, 2, "two passes accepted, the third refused: {log}");
    assert_eq!(queued(&mx), 0);
    let audit = std::fs::read_to_string(mx.daemon.data_dir.join("audit/docking.jsonl")).unwrap();
    assert!(audit.contains("refused-loop"), "{audit}");
}
