//! The submission listeners end to end: Python smtplib (and swaks) as the mail client, the
//! built `sealgated`, Postfix with Dovecot SASL as the organisation's server (it verifies the
//! logins and receives the relayed mail), `openssl cms` and gpgsm to decrypt and verify what
//! arrives.
//! And the abuse: AUTH before TLS, a wrong password, another user's address, a mandatory
//! message to a recipient without a certificate.

use std::net::SocketAddr;
use std::process::Command;

use crate::harness::{Daemon, Pki, data_dir_with_keys, require_tool, run};
use crate::peers::OrgServers;

const USERS: &[(&str, &str)] = &[
    ("alice@example.org", "alice-Passw0rd"),
    ("bob@example.org", "bob-Passw0rd"),
];

/// Mailboxes at the organisation's server besides the users'.
const MAILBOXES: &[&str] = &[
    "carol@example.org",
    "mallory@example.net",
    "dave@example.net",
];

/// A mail client in Python's smtplib: one transaction, printing one JSON line with the stage
/// reached and the server's last reply. Parameters in the environment.
const CLIENT: &str = r#"
import json, os, smtplib, ssl, sys
e = os.environ
ctx = ssl.create_default_context(cafile=e["CA"])
ctx.check_hostname = False
out = {"stage": "connect"}
def done(stage, code, text):
    out.update(stage=stage, code=code, text=text.decode() if isinstance(text, bytes) else str(text))
    print(json.dumps(out)); sys.exit(0)
try:
    if e["MODE"] == "implicit":
        s = smtplib.SMTP_SSL("127.0.0.1", int(e["PORT"]), context=ctx, timeout=60)
    else:
        s = smtplib.SMTP("127.0.0.1", int(e["PORT"]), timeout=60)
    s.ehlo("client.test")
    out["ehlo_plain"] = s.ehlo_resp.decode()
    if e["MODE"] == "starttls":
        code, text = s.starttls(context=ctx)
        if code != 220: done("starttls", code, text)
        s.ehlo("client.test")
    if e["MODE"] == "no-tls-auth":
        code, text = s.docmd("AUTH", "PLAIN " + __import__("base64").b64encode(("\0%s\0%s" % (e["USER"], e["PASSWORD"])).encode()).decode())
        out["auth"] = [code, text.decode()]
        code, text = s.docmd("MAIL", "FROM:<%s>" % e["FROM"])
        done("mail-without-tls", code, text)
    try:
        code, text = s.login(e["USER"], e["PASSWORD"])
    except smtplib.SMTPAuthenticationError as err:
        done("auth", err.smtp_code, err.smtp_error)
    code, text = s.mail(e["FROM"])
    if code != 250: done("mail", code, text)
    for r in e["RCPT"].split(","):
        code, text = s.rcpt(r)
        if code != 250: done("rcpt", code, text)
    code, text = s.data(open(e["MESSAGE"], "rb").read())
    done("data", code, text)
except smtplib.SMTPException as err:
    done("error", getattr(err, "smtp_code", 0), str(err))
"#;

pub(crate) struct Box {
    pub(crate) data_dir: tempfile::TempDir,
    pub(crate) daemon: Daemon,
    starttls: SocketAddr,
    implicit: SocketAddr,
    tmp: tempfile::TempDir,
}

fn listener(d: &Daemon, name: &str) -> SocketAddr {
    d.console
        .iter()
        .find_map(|l| l.strip_prefix(&format!("sealgated: listening {name} ")))
        .unwrap_or_else(|| panic!("no {name} listener: {:?}", d.console))
        .parse()
        .unwrap()
}

pub(crate) fn start_box(pki: &Pki, org: &OrgServers, extra: &str) -> Box {
    start_box_relaying_to(pki, org, org.relay(), extra)
}

fn start_box_relaying_to(pki: &Pki, org: &OrgServers, relay: SocketAddr, extra: &str) -> Box {
    let dir = data_dir_with_keys(pki);
    let settings = format!(
        "[submission]\nlisten = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"\nauth = \"smtp://127.0.0.1:{}\"\nauth_ca = \"{}\"\nrelay = \"{relay}\"\n{extra}",
        org.postfix.submission,
        org.tls.ca.display(),
    );
    let daemon = Daemon::start(dir.path(), &settings);
    let starttls = listener(&daemon, "submission");
    let implicit = listener(&daemon, "submission-tls");
    Box {
        data_dir: dir,
        daemon,
        starttls,
        implicit,
        tmp: tempfile::tempdir().unwrap(),
    }
}

#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) stage: String,
    pub(crate) code: u16,
    pub(crate) text: String,
    all: serde_json::Value,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn client(
    b: &Box,
    mode: &str,
    user: &str,
    password: &str,
    from: &str,
    rcpt: &[&str],
    message: &[u8],
) -> Sent {
    require_tool("python3", "python3");
    let msg = b.tmp.path().join("message.eml");
    std::fs::write(&msg, message).unwrap();
    let script = b.tmp.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let port = if mode == "implicit" {
        b.implicit.port()
    } else {
        b.starttls.port()
    };
    let out = run(Command::new("python3")
        .arg(&script)
        .env("CA", b.daemon.ca_file())
        .env("MODE", mode)
        .env("PORT", port.to_string())
        .env("USER", user)
        .env("PASSWORD", password)
        .env("FROM", from)
        .env("RCPT", rcpt.join(","))
        .env("MESSAGE", &msg));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    Sent {
        stage: v["stage"].as_str().unwrap().to_string(),
        code: v["code"].as_u64().unwrap() as u16,
        text: v["text"].as_str().unwrap().to_string(),
        all: v,
    }
}

pub(crate) fn message(from: &str, to: &[&str], subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        to.join(", "),
        subject.replace(' ', "-").replace(['[', ']'], "")
    )
    .into_bytes()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

/// The content of a signed entity, verified with `openssl cms` against the test CA.
fn verified(pki: &Pki, signed: &[u8]) -> String {
    String::from_utf8_lossy(&pki.openssl_verify(signed)).into_owned()
}

#[test]
fn mail_is_signed_encrypted_to_every_recipient_and_the_sender_and_split_for_the_others() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    // bob has a key in the vault, mallory an external certificate, carol nothing.
    let to = [
        "bob@example.org",
        "mallory@example.net",
        "carol@example.org",
    ];
    let m = message(
        "Alice <alice@example.org>",
        &to,
        "Quarterly figures",
        "the secret figures",
    );
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &to,
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    assert!(sent.text.contains("queued as"), "{sent:?}");
    // AUTH was offered only after STARTTLS.
    assert!(
        !sent.all["ehlo_plain"].as_str().unwrap().contains("AUTH"),
        "{sent:?}"
    );

    for (who, key) in [
        ("bob@example.org", "bob@example.org"),
        ("mallory@example.net", "mallory@example.net"),
    ] {
        let got = org.postfix.wait_for_mail(who, 1);
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        assert_eq!(
            header(&text, "X-Sealgate-Result"),
            Some("signed; encrypted=2/3; policy=if-possible; copy=encrypted"),
            "{text}"
        );
        assert!(
            !text.contains("the secret figures"),
            "ciphertext only: {text}"
        );
        assert!(text.contains("application/pkcs7-mime"), "{text}");
        // Relayed over STARTTLS (opportunistic towards the organisation's server).
        assert!(text.contains("(using TLS"), "{text}");
        // Encrypted to this recipient, and to the sender: both decrypt it.
        for reader in [key, "alice@example.org"] {
            let inner = pki.openssl_decrypt(&got[0], reader);
            let content = verified(&pki, &inner);
            assert!(content.contains("the secret figures"), "{content}");
        }
    }
    // gpgsm as mallory's mail client reads it too.
    let g = crate::gpgsm::Gpgsm::new(&pki, "mallory@example.net");
    let got = org.postfix.mailbox("mallory@example.net");
    let inner = g.decrypt(&got[0]);
    assert!(String::from_utf8_lossy(&inner).contains("the secret figures"));
    let status = g.verify(&inner);
    assert!(status.contains("GOODSIG"), "{status}");
    drop(g);
    // carol has no certificate: a separate signed cleartext copy, only to her.
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert_eq!(
        header(&text, "X-Sealgate-Result"),
        Some("signed; encrypted=2/3; policy=if-possible; copy=cleartext"),
        "{text}"
    );
    assert!(text.contains("multipart/signed"), "{text}");
    assert!(verified(&pki, &got[0]).contains("the secret figures"));
    assert_eq!(org.postfix.mailbox("bob@example.org").len(), 1);

    // The audit line names the login and the result, never the content.
    let audit = std::fs::read_to_string(b.daemon.data_dir.join("audit/docking.jsonl")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("\"submission\""))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        line.contains("alice@example.org") && line.contains("encrypted=2/3"),
        "{line}"
    );
    assert!(!audit.contains("secret figures") && !audit.contains("alice-Passw0rd"));
    let log = std::fs::read_to_string(b.daemon.data_dir.join("log/sealgated.log")).unwrap();
    assert!(!log.contains("alice-Passw0rd"), "password in the log");
}

#[test]
fn implicit_tls_and_the_subject_trigger() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    let m = message(
        "bob@example.org",
        &["alice@example.org"],
        "[secure] Salaries",
        "numbers",
    );
    let sent = client(
        &b,
        "implicit",
        "bob@example.org",
        "bob-Passw0rd",
        "bob@example.org",
        &["alice@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert_eq!(
        header(&text, "X-Sealgate-Result"),
        Some("signed; encrypted=1/1; policy=mandatory; trigger; copy=encrypted"),
        "{text}"
    );
    assert_eq!(header(&text, "Subject"), Some("Salaries"), "{text}");
    let inner = pki.openssl_decrypt(&got[0], "alice@example.org");
    assert!(verified(&pki, &inner).contains("numbers"));

    // The trigger with a recipient without a certificate: refused, naming her.
    let to = ["alice@example.org", "carol@example.org"];
    let m = message("bob@example.org", &to, "[SECURE] more", "x");
    let sent = client(
        &b,
        "implicit",
        "bob@example.org",
        "bob-Passw0rd",
        "bob@example.org",
        &to,
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 550), "{sent:?}");
    assert!(
        sent.text.contains("5.7.1") && sent.text.contains("carol@example.org"),
        "{sent:?}"
    );
    assert!(!sent.text.contains("alice@example.org"), "{sent:?}");
}

#[test]
fn mandatory_policy_refuses_recipients_without_a_certificate_by_name() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(
        &pki,
        &org,
        "[policy.domains.\"example.org\"]\nencrypt = \"mandatory\"\nsign = \"always\"\n",
    );
    let to = ["bob@example.org", "carol@example.org", "dave@example.net"];
    let m = message("alice@example.org", &to, "plans", "x");
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &to,
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 550), "{sent:?}");
    assert!(
        sent.text.contains("5.7.1")
            && sent.text.contains("carol@example.org")
            && sent.text.contains("dave@example.net"),
        "{sent:?}"
    );
    // Nothing was relayed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(org.postfix.mailbox("bob@example.org").is_empty());
}

#[test]
fn abuse_auth_before_tls_wrong_password_and_another_users_address_are_refused() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(
        &pki,
        &org,
        "max_auth_failures = 4\n[smtp]\nmax_sessions_per_address = 2\n",
    );
    let m = message("alice@example.org", &["bob@example.org"], "hi", "x");
    // AUTH before STARTTLS: not offered, refused, and MAIL needs AUTH.
    let sent = client(
        &b,
        "no-tls-auth",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &m,
    );
    assert!(
        !sent.all["ehlo_plain"].as_str().unwrap().contains("AUTH"),
        "{sent:?}"
    );
    let auth_code = sent.all["auth"][0].as_u64().unwrap();
    assert!((500..600).contains(&auth_code), "{sent:?}");
    assert_eq!(sent.code, 530, "{sent:?}");
    // A wrong password.
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "not-her-password",
        "alice@example.org",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("auth", 535), "{sent:?}");
    // Another user's address in MAIL FROM.
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "bob@example.org",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("mail", 550), "{sent:?}");
    assert!(sent.text.contains("5.7.1"), "{sent:?}");
    // Her own envelope address but another user's From.
    let forged = message("Bob <bob@example.org>", &["carol@example.org"], "hi", "x");
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["carol@example.org"],
        &forged,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 550), "{sent:?}");
    assert!(sent.text.contains("5.7.1"), "{sent:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(org.postfix.mailbox("carol@example.org").is_empty());
    assert!(org.postfix.mailbox("bob@example.org").is_empty());
    // Guessing (smtplib tries PLAIN, then LOGIN: two failures a call): after
    // max_auth_failures the box answers 454 without asking the server, even
    // to the right password (never verified, so not cached); alice's cached login passes.
    for _ in 0..2 {
        let sent = client(
            &b,
            "starttls",
            "bob@example.org",
            "guess",
            "bob@example.org",
            &["alice@example.org"],
            &m,
        );
        assert!(matches!(sent.code, 535 | 454), "{sent:?}");
    }
    let sent = client(
        &b,
        "starttls",
        "bob@example.org",
        "bob-Passw0rd",
        "bob@example.org",
        &["alice@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("auth", 454), "{sent:?}");
    let ok = message("alice@example.org", &["bob@example.org"], "still", "x");
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &ok,
    );
    assert_eq!(sent.code, 250, "{sent:?}");
    // Sessions per address: the third at once gets 421.
    use std::io::{BufRead, BufReader};
    let held: Vec<_> = (0..2)
        .map(|_| {
            let s = std::net::TcpStream::connect(b.starttls).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut greeting = String::new();
            r.read_line(&mut greeting).unwrap();
            assert!(greeting.starts_with("220"), "{greeting}");
            s
        })
        .collect();
    let third = std::net::TcpStream::connect(b.starttls).unwrap();
    let mut line = String::new();
    BufReader::new(third).read_line(&mut line).unwrap();
    assert!(line.starts_with("421"), "{line}");
    drop(held);
}

#[test]
fn swaks_submits_with_starttls_and_auth() {
    require_tool("swaks", "swaks");
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    let out = Command::new("swaks")
        .args(["--server", &b.starttls.to_string(), "--tls"])
        .args(["--auth", "PLAIN", "--auth-user", "alice@example.org"])
        .args(["--auth-password", "alice-Passw0rd"])
        .args(["--from", "alice@example.org", "--to", "bob@example.org"])
        .args(["--h-From", "alice@example.org", "--body", "from swaks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    let inner = pki.openssl_decrypt(&got[0], "bob@example.org");
    assert!(verified(&pki, &inner).contains("from swaks"));
    // Implicit TLS (465) and AUTH LOGIN.
    let out = Command::new("swaks")
        .args(["--server", &b.implicit.to_string(), "--tls-on-connect"])
        .args(["--auth", "LOGIN", "--auth-user", "alice@example.org"])
        .args(["--auth-password", "alice-Passw0rd"])
        .args(["--from", "alice@example.org", "--to", "bob@example.org"])
        .args(["--h-From", "alice@example.org", "--body", "login over 465"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let got = org.postfix.wait_for_mail("bob@example.org", 2);
    assert!(got.iter().any(|m| {
        verified(&pki, &pki.openssl_decrypt(m, "bob@example.org")).contains("login over 465")
    }));
}

#[test]
fn header_protection_puts_the_subject_inside_and_a_placeholder_outside() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(
        &pki,
        &org,
        "[policy.users.\"bob@example.org\"]\nheader_protection = true\n",
    );
    let to = ["alice@example.org", "carol@example.org"];
    let m = message(
        "bob@example.org",
        &to,
        "Merger with Initech",
        "confidential",
    );
    let sent = client(
        &b,
        "starttls",
        "bob@example.org",
        "bob-Passw0rd",
        "bob@example.org",
        &to,
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert_eq!(header(&text, "Subject"), Some("[...]"), "{text}");
    assert!(!text.contains("Merger with Initech"), "{text}");
    let inner = pki.openssl_decrypt(&got[0], "alice@example.org");
    let content = verified(&pki, &inner);
    assert!(content.contains("hp=\"cipher\""), "{content}");
    assert!(
        content.contains("Subject: Merger with Initech"),
        "{content}"
    );
    assert!(content.contains("confidential"), "{content}");
    // The cleartext copy: signed, the fields protected as copies (hp="clear").
    let got = org.postfix.wait_for_mail("carol@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert_eq!(
        header(&text, "Subject"),
        Some("Merger with Initech"),
        "{text}"
    );
    let content = verified(&pki, &got[0]);
    assert!(
        content.contains("hp=\"clear\"") && content.contains("Subject: Merger with Initech"),
        "{content}"
    );
}

#[test]
fn auto_enrolment_issues_a_key_from_the_box_ca_at_the_first_message() {
    let pki = Pki::new();
    let users = [USERS[0], USERS[1], ("carol@example.org", "carol-Passw0rd")];
    let org = OrgServers::start(&users, MAILBOXES);
    // A vault with the box CA; logins checked by Dovecot's IMAPS this time.
    let dir = data_dir_with_keys(&pki);
    let ca_pem = {
        let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
        let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).unwrap();
        v.ca_init("Box CA", &sealgate_vault::CaSettings::default())
            .unwrap();
        v.ca_certificate().unwrap().to_pem()
    };
    let ca_file = dir.path().join("box-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let settings = format!(
        "[submission]\nlisten = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"\nauth = \"imaps://127.0.0.1:{}\"\nauth_ca = \"{}\"\nrelay = \"{}\"\n[policy]\nsign = \"always\"\n[policy.users.\"carol@example.org\"]\nauto_enrol = true\n",
        org.dovecot.imaps,
        org.tls.ca.display(),
        org.relay()
    );
    let daemon = Daemon::start(dir.path(), &settings);
    let b = Box {
        starttls: listener(&daemon, "submission"),
        implicit: listener(&daemon, "submission-tls"),
        daemon,
        data_dir: dir,
        tmp: tempfile::tempdir().unwrap(),
    };
    // carol has neither a key nor a certificate: the box CA issues one at her first message.
    let m = message(
        "carol@example.org",
        &["bob@example.org"],
        "first",
        "enrolled",
    );
    let sent = client(
        &b,
        "starttls",
        "carol@example.org",
        "carol-Passw0rd",
        "carol@example.org",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    let inner = pki.openssl_decrypt(&got[0], "bob@example.org");
    let input = b.tmp.path().join("signed.eml");
    std::fs::write(&input, &inner).unwrap();
    let out = run(Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "any", "-in"])
        .arg(&input)
        .arg("-CAfile")
        .arg(&ca_file));
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled"));
    // The vault's chain names the login: the enrolment and the key's use.
    let mut b = b;
    b.daemon.terminate();
    let audit = {
        let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
        let v = sealgate_vault::Vault::open(b.data_dir.path(), &mut sealer).unwrap();
        v.audit().unwrap()
    };
    let actor = "submission:carol@example.org from 127.0.0.1";
    assert!(
        audit
            .iter()
            .any(|e| e.action == "submission.auto-enrol" && e.actor == actor),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .filter(|e| e.actor == actor)
            .any(|e| e.action != "submission.auto-enrol"),
        "the key use: {audit:#?}"
    );
}

#[test]
fn a_sender_without_a_key_is_refused_when_the_policy_requires_a_signature() {
    let pki = Pki::new();
    let users = [USERS[0], ("dave@example.net", "dave-Passw0rd")];
    let org = OrgServers::start(&users, MAILBOXES);
    let b = start_box(&pki, &org, "[policy]\nsign = \"always\"\n");
    // dave has no key either and no auto-enrolment: sign = "always" refuses his message.
    let m = message("dave@example.net", &["bob@example.org"], "x", "x");
    let sent = client(
        &b,
        "starttls",
        "dave@example.net",
        "dave-Passw0rd",
        "dave@example.net",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 550), "{sent:?}");
    assert!(
        sent.text.contains("5.7.1") && sent.text.contains("signature"),
        "{sent:?}"
    );
}

#[test]
fn openssl_s_client_sees_the_box_certificate_on_both_ports() {
    require_tool("openssl", "openssl");
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    for (port, starttls) in [(b.starttls.port(), true), (b.implicit.port(), false)] {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .arg("-CAfile")
            .arg(b.daemon.ca_file())
            .args(["-verify_return_error", "-ign_eof"]);
        if starttls {
            cmd.args(["-starttls", "smtp"]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"EHLO client.test\r\nQUIT\r\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        // Over TLS, AUTH is offered.
        assert!(text.contains("AUTH PLAIN LOGIN"), "{text}");
    }
}

/// Submitted mail goes through the queue every role shares: a recipient the organisation's
/// server refuses for good gets the sender an RFC 3464 DSN (through the same relay), and the
/// message is seen by `sealctl queue` as a submission.
#[test]
fn a_refused_recipient_gets_the_sender_a_dsn_and_the_queue_shows_the_submission() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    let to = ["bob@example.org", "nobody@example.org"];
    let m = message("alice@example.org", &to, "to a stranger", "hello");
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &to,
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    // bob gets his copy; alice gets the DSN for nobody (Postfix: 550 5.1.1 at RCPT).
    org.postfix.wait_for_mail("bob@example.org", 1);
    let got = org.postfix.wait_for_mail("alice@example.org", 1);
    let dsn = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(
        dsn.contains("multipart/report") && dsn.contains("report-type=delivery-status"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Final-Recipient: rfc822; nobody@example.org") && dsn.contains("5.1.1"),
        "{dsn}"
    );
    assert!(
        !dsn.contains("Final-Recipient: rfc822; bob@example.org"),
        "{dsn}"
    );
    // The queue kept the bounced record of the submitted copy.
    let out = run(Command::new(crate::harness::sealctl())
        .args([
            "queue",
            "list",
            "--json",
            "--state",
            "bounced",
            "--data-dir",
        ])
        .arg(&b.daemon.data_dir));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().cloned().unwrap_or_default();
    assert!(
        list.iter().any(|e| e["direction"] == "submission"
            && e["from"] == "alice@example.org"
            && e["recipients"].as_array().is_some_and(|r| r
                .iter()
                .any(|r| r["address"] == "nobody@example.org" && r["status"] == "failed"))),
        "{list:?}"
    );
    // Nothing is left in the queue, and no separate outbox exists any more.
    assert!(!b.daemon.data_dir.join("submission/outbox").exists());
}

/// The box relays through the organisation's submission port with its own login (AUTH PLAIN
/// inside STARTTLS, the certificate verified against `auth_ca`): Postfix there takes mail
/// only from authenticated clients. A wrong password leaves the message deferred in the
/// queue with the reason; the password is in no log.
#[test]
fn the_box_relays_with_its_own_credentials_and_a_wrong_password_defers() {
    let pki = Pki::new();
    let users = [USERS[0], USERS[1], ("relay@example.org", "relay-Secr3t")];
    let org = OrgServers::start(&users, MAILBOXES);
    let submission_port = SocketAddr::from(([127, 0, 0, 1], org.postfix.submission));
    let secrets = tempfile::tempdir().unwrap();
    let (good, bad) = (secrets.path().join("good"), secrets.path().join("bad"));
    std::fs::write(&good, "relay-Secr3t\n").unwrap();
    std::fs::write(&bad, "not-the-Passw0rd\n").unwrap();
    let login = |f: &std::path::Path| {
        format!(
            "relay_username = \"relay@example.org\"\nrelay_password_file = \"{}\"\n",
            f.display()
        )
    };
    let b = start_box_relaying_to(&pki, &org, submission_port, &login(&good));
    let m = message("alice@example.org", &["bob@example.org"], "via auth", "x");
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
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(text.contains("(using TLS"), "{text}");

    let w = start_box_relaying_to(&pki, &org, submission_port, &login(&bad));
    let sent = client(
        &w,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &m,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let entry = loop {
        let out = run(Command::new(crate::harness::sealctl())
            .args(["queue", "list", "--json", "--data-dir"])
            .arg(&w.daemon.data_dir));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(e) = list
            .as_array()
            .and_then(|l| l.iter().find(|e| e["state"] == "deferred"))
        {
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(entry["direction"], "submission", "{entry}");
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused the box's relay credentials")),
        "{entry}"
    );
    assert_eq!(
        org.postfix.mailbox("bob@example.org").len(),
        1,
        "nothing more arrived"
    );
    for d in [&b, &w] {
        let log = std::fs::read_to_string(d.daemon.data_dir.join("log/sealgated.log")).unwrap();
        assert!(
            !log.contains("relay-Secr3t") && !log.contains("not-the-Passw0rd"),
            "a relay password in the log"
        );
    }
}

/// `openssl cms -cmsout -print` of a delivered message: its CMS structure as text.
fn cms_print(b: &Box, msg: &[u8]) -> String {
    let input = b.tmp.path().join("printed.eml");
    std::fs::write(&input, msg).unwrap();
    let out = run(Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-in"])
        .arg(&input));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_content_cipher_in_delivered_mail_follows_every_partys_capabilities() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    // alice (the sender) and bob announced AES-256-GCM in signed mail the box harvested;
    // mallory's software never told.
    let dir = data_dir_with_keys(&pki);
    {
        let mut sealer = sealgate_vault::SoftwareSealer::danger_new();
        let v = sealgate_vault::Vault::open(dir.path(), &mut sealer).unwrap();
        let caps: Vec<String> = ["aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"]
            .map(String::from)
            .to_vec();
        for who in ["alice@example.org", "bob@example.org"] {
            v.set_recipient_capabilities_by(who, &caps, "test").unwrap();
        }
    }
    let settings = format!(
        "[submission]\nlisten = \"127.0.0.1:0\"\nlisten_tls = \"127.0.0.1:0\"\nauth = \"smtp://127.0.0.1:{}\"\nauth_ca = \"{}\"\nrelay = \"{}\"\n",
        org.postfix.submission,
        org.tls.ca.display(),
        org.relay(),
    );
    let daemon = Daemon::start(dir.path(), &settings);
    let b = Box {
        starttls: listener(&daemon, "submission"),
        implicit: listener(&daemon, "submission-tls"),
        daemon,
        data_dir: dir,
        tmp: tempfile::tempdir().unwrap(),
    };
    let send = |to: &[&str], subject: &str| {
        let m = message("alice@example.org", to, subject, "the cipher");
        let sent = client(
            &b,
            "starttls",
            "alice@example.org",
            "alice-Passw0rd",
            "alice@example.org",
            to,
            &m,
        );
        assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    };

    // Every party (bob and the sender) reads AES-256-GCM: AuthEnvelopedData with it.
    send(&["bob@example.org"], "gcm");
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(text.contains("smime-type=authEnveloped-data"), "{text}");
    let printed = cms_print(&b, &got[0]);
    assert!(
        printed.contains("id-smime-ct-authEnvelopedData"),
        "{printed}"
    );
    assert!(printed.contains("aes-256-gcm"), "{printed}");
    assert!(!printed.contains("aes-256-cbc"), "{printed}");
    for reader in ["bob@example.org", "alice@example.org"] {
        let inner = pki.openssl_decrypt(&got[0], reader);
        assert!(verified(&pki, &inner).contains("the cipher"));
    }

    // mallory's capabilities are unknown: the CBC cipher every S/MIME client reads.
    send(&["bob@example.org", "mallory@example.net"], "cbc");
    let got = org.postfix.wait_for_mail("mallory@example.net", 1);
    let printed = cms_print(&b, &got[0]);
    assert!(printed.contains("pkcs7-envelopedData"), "{printed}");
    assert!(printed.contains("aes-256-cbc"), "{printed}");
    assert!(!printed.contains("gcm"), "{printed}");
    let inner = pki.openssl_decrypt(&got[0], "mallory@example.net");
    assert!(verified(&pki, &inner).contains("the cipher"));
    // bob's copy of the second message is that one copy (one encryption for all parties).
    let bob = org.postfix.wait_for_mail("bob@example.org", 2);
    let ciphers: Vec<bool> = bob
        .iter()
        .map(|m| cms_print(&b, m).contains("aes-256-cbc"))
        .collect();
    assert_eq!(ciphers.iter().filter(|c| **c).count(), 1, "{ciphers:?}");
}

/// The `X-Sealgate-Loop` fields of a delivered message's header.
fn loop_markers(msg: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(msg).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or_default().to_string();
    head.lines()
        .filter_map(|l| l.strip_prefix("X-Sealgate-Loop: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_forged_loop_marker_changes_nothing_and_a_looping_message_is_refused() {
    let pki = Pki::new();
    let org = OrgServers::start(USERS, MAILBOXES);
    let b = start_box(&pki, &org, "");
    let box_id = std::fs::read_to_string(b.data_dir.path().join("box-id")).unwrap();
    let box_id = box_id.trim();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Markers that look like the box's (its id, a fresh time) but carry no valid MAC, and
    // one of another box: the message is encrypted as ever, the fields are gone.
    let forged = format!(
        "X-Sealgate-Loop: {box_id}; dir=submit; t={now}; mac={}\r\n",
        "ab".repeat(32)
    );
    let mut m = forged.repeat(3).into_bytes();
    m.extend_from_slice(b"X-Sealgate-Loop: otherbox; dir=inbound; t=1; mac=00\r\n");
    m.extend_from_slice(&message(
        "alice@example.org",
        &["bob@example.org"],
        "looping",
        "the secret plan",
    ));
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
    let got = org.postfix.wait_for_mail("bob@example.org", 1);
    let text = String::from_utf8_lossy(&got[0]).into_owned();
    assert!(!text.contains("the secret plan"), "ciphertext only: {text}");
    assert!(text.contains("application/pkcs7-mime"), "{text}");
    let markers = loop_markers(&got[0]);
    assert_eq!(markers.len(), 1, "only the box's own marker: {text}");
    assert!(
        markers[0].starts_with(&format!("{box_id}; dir=submit; t=")),
        "{markers:?}"
    );
    assert!(
        !text.contains(&"ab".repeat(32)) && !text.contains("otherbox"),
        "{text}"
    );

    // The box's marker is valid for that Message-ID: a message carrying it more often than
    // `[queue] max_loop_markers` (2) has passed through the box that often: 554 5.4.6.
    let valid = format!("X-Sealgate-Loop: {}\r\n", markers[0]);
    let mut looping = valid.repeat(3).into_bytes();
    looping.extend_from_slice(&message(
        "alice@example.org",
        &["bob@example.org"],
        "looping",
        "again",
    ));
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &looping,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 554), "{sent:?}");
    assert!(sent.text.starts_with("5.4.6"), "{sent:?}");
    // Twice is not a loop yet: accepted, and both markers go on with a third.
    let mut twice = valid.repeat(2).into_bytes();
    twice.extend_from_slice(&message(
        "alice@example.org",
        &["bob@example.org"],
        "looping",
        "twice",
    ));
    let sent = client(
        &b,
        "starttls",
        "alice@example.org",
        "alice-Passw0rd",
        "alice@example.org",
        &["bob@example.org"],
        &twice,
    );
    assert_eq!((sent.stage.as_str(), sent.code), ("data", 250), "{sent:?}");
    let got = org.postfix.wait_for_mail("bob@example.org", 2);
    // (Maildir's names do not sort by arrival within a second.)
    let mut counts: Vec<usize> = got.iter().map(|m| loop_markers(m).len()).collect();
    counts.sort();
    assert_eq!(
        counts,
        [1, 3],
        "{:?}",
        got.iter().map(|m| loop_markers(m)).collect::<Vec<_>>()
    );
    let audit = std::fs::read_to_string(b.daemon.data_dir.join("audit/docking.jsonl")).unwrap();
    assert!(audit.contains("refused-loop"), "{audit}");
}
