//! The SMTP hand-off: swaks (Debian `swaks`, STARTTLS through `libnet-ssleay-perl`) into the
//! box, Python's aiosmtpd (PyPI `aiosmtpd`) as the next hop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    Daemon, Pki, contains, data_dir_with_keys, require_python_module, require_tool, run, write,
};

const RECEIVER: &str = r#"
import json, os, sys, time
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])

class Sink:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        base = os.path.join(out, "%04d" % n)
        with open(base + ".json", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos}, f)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK stored"

c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// aiosmtpd on a free port, writing each message to `dir/NNNN.eml`; killed on drop.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

use crate::ports::free_port;

impl Receiver {
    fn start(port: u16) -> Receiver {
        require_python_module("aiosmtpd", "aiosmtpd");
        let dir = tempfile::tempdir().expect("tmp");
        let script = write(dir.path(), "receiver.py", RECEIVER.as_bytes());
        let out = dir.path().join("mail");
        std::fs::create_dir(&out).expect("mail dir");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Receiver { child, dir, port }
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Waits for message number `n` (0-based); returns (envelope JSON, message).
    fn wait_for(&self, n: usize) -> (serde_json::Value, Vec<u8>) {
        let eml = self.mail_dir().join(format!("{n:04}.eml"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !eml.exists() {
            assert!(
                Instant::now() < deadline,
                "the next hop received no message {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let env = std::fs::read(self.mail_dir().join(format!("{n:04}.json"))).expect("envelope");
        (
            serde_json::from_slice(&env).expect("json"),
            std::fs::read(eml).expect("message"),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// swaks with STARTTLS into `port`.
fn swaks(port: u16, from: &str, to: &[&str], message: &Path, tls: bool) -> String {
    require_tool("swaks", "swaks");
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &format!("127.0.0.1:{port}"),
        "--from",
        from,
        "--helo",
        "gateway.test",
    ]);
    for t in to {
        cmd.args(["--to", t]);
    }
    if tls {
        cmd.arg("--tls");
    }
    cmd.args(["--data", &format!("@{}", message.display())]);
    let out = run(&mut cmd);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn smtp_settings(next_hop: u16) -> String {
    format!(
        "[smtp]\ndecrypt_listen = \"127.0.0.1:0\"\nencrypt_listen = \"127.0.0.1:0\"\nnext_hop = \"127.0.0.1:{next_hop}\"\nretry_secs = 1\n"
    )
}

#[test]
fn smtp_decrypt_and_encrypt_hand_off_with_swaks_and_aiosmtpd() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let tmp = tempfile::tempdir().expect("tmp");

    // Decrypt port, over STARTTLS.
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "smtp in",
        "smtp secret",
    );
    let enc = write(
        tmp.path(),
        "enc.eml",
        &pki.openssl_encrypt(&clear, &["alice@example.org"]),
    );
    let transcript = swaks(
        d.smtp_decrypt.expect("decrypt port").port(),
        "carol@example.org",
        &["alice@example.org"],
        &enc,
        true,
    );
    assert!(
        transcript.contains("STARTTLS") && transcript.contains("250 2.0.0 OK queued"),
        "{transcript}"
    );
    let (env, msg) = rx.wait_for(0);
    assert_eq!(env["from"], "carol@example.org");
    assert_eq!(env["to"], serde_json::json!(["alice@example.org"]));
    assert!(
        contains(&msg, "smtp secret"),
        "{}",
        String::from_utf8_lossy(&msg)
    );
    assert!(contains(
        &msg,
        "X-Sealgate-Docking: decrypt; result=decrypted"
    ));
    let box_id = std::fs::read_to_string(dir.path().join("box-id")).expect("box id");
    assert!(contains(
        &msg,
        &format!("X-Sealgate-Loop: {}; dir=decrypt; t=", box_id.trim())
    ));

    // Encrypt port: signed by bob, encrypted to alice (and bob's copy).
    let clear = write(
        tmp.path(),
        "clear.eml",
        &pki.message(
            "bob@example.org",
            "alice@example.org",
            "smtp out",
            "outbound over smtp",
        ),
    );
    swaks(
        d.smtp_encrypt.expect("encrypt port").port(),
        "bob@example.org",
        &["alice@example.org"],
        &clear,
        true,
    );
    let (_, msg) = rx.wait_for(1);
    assert!(!contains(&msg, "outbound over smtp"));
    assert!(contains(
        &msg,
        "X-Sealgate-Docking: encrypt; result=encrypted"
    ));
    let inner = pki.openssl_decrypt(&msg, "alice@example.org");
    assert!(contains(&pki.openssl_verify(&inner), "outbound over smtp"));

    // Cannot be processed (no key for carol): passes unchanged, with a result header.
    let foreign = pki.openssl_encrypt(
        &pki.message("x@y.org", "carol@example.org", "foreign", "not ours"),
        &["carol@example.org"],
    );
    let foreign_path = write(tmp.path(), "foreign.eml", &foreign);
    swaks(
        d.smtp_decrypt.expect("port").port(),
        "x@y.org",
        &["carol@example.org"],
        &foreign_path,
        false,
    );
    let (_, msg) = rx.wait_for(2);
    assert!(contains(
        &msg,
        "X-Sealgate-Docking: decrypt; result=failed; problem=\"https://sealgate.example/problems/no-matching-key\""
    ));
    // Compare bodies with line ends normalised (the receiver may store LF).
    let lf = |m: &[u8]| String::from_utf8_lossy(m).replace("\r\n", "\n");
    let (got, sent) = (lf(&msg), lf(&foreign));
    // (swaks may add a final line end.)
    let body = |m: &str| {
        m.split_once("\n\n")
            .map(|(_, b)| b.trim_end().to_string())
            .expect("header end")
    };
    assert_eq!(body(&got), body(&sent), "body unchanged");

    // A loop marker with this box's id but without a valid MAC (anyone can write the id):
    // removed, and the message processed normally.
    let mut looped = format!("X-Sealgate-Loop: {}\r\n", box_id.trim()).into_bytes();
    looped.extend_from_slice(&std::fs::read(&enc).expect("enc"));
    let looped_path = write(tmp.path(), "looped.eml", &looped);
    swaks(
        d.smtp_decrypt.expect("port").port(),
        "carol@example.org",
        &["alice@example.org"],
        &looped_path,
        false,
    );
    let (_, msg) = rx.wait_for(3);
    assert!(contains(&msg, "smtp secret"), "decrypted");
    assert!(!contains(
        &msg,
        &format!("X-Sealgate-Loop: {}\r\n", box_id.trim())
    ));

    let audit = d.audit();
    assert!(
        audit
            .iter()
            .any(|a| a["operation"] == "smtp-decrypt" && a["outcome"] == "decrypted")
    );
    assert!(
        audit
            .iter()
            .any(|a| a["operation"] == "smtp-encrypt" && a["outcome"] == "encrypted")
    );
}

#[test]
fn smtp_mail_waits_in_the_spool_while_the_next_hop_is_down() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let port = free_port();
    let d = Daemon::start(dir.path(), &smtp_settings(port));
    let tmp = tempfile::tempdir().expect("tmp");
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "spooled",
        "kept safe",
    );
    let enc = write(
        tmp.path(),
        "enc.eml",
        &pki.openssl_encrypt(&clear, &["alice@example.org"]),
    );
    // 250 means it is on disk, even though nobody can take it yet.
    let transcript = swaks(
        d.smtp_decrypt.expect("port").port(),
        "carol@example.org",
        &["alice@example.org"],
        &enc,
        false,
    );
    assert!(transcript.contains("250 2.0.0 OK queued"), "{transcript}");
    let spooled: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .expect("spool")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .collect();
    assert_eq!(spooled.len(), 1);
    // The next hop comes up; the retry delivers.
    let rx = Receiver::start(port);
    let (_, msg) = rx.wait_for(0);
    assert!(contains(&msg, "kept safe"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = std::fs::read_dir(dir.path().join("spool"))
            .expect("spool")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool was not emptied after delivery"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
}

/// swaks with extra arguments; the transcript whether or not it succeeded.
fn swaks_raw(port: u16, from: &str, to: &str, message: &Path, extra: &[&str]) -> (bool, String) {
    require_tool("swaks", "swaks");
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--from",
            from,
            "--to",
            to,
            "--helo",
            "gateway.test",
            "--data",
            &format!("@{}", message.display()),
        ])
        .args(extra)
        .output()
        .expect("swaks");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A raw SMTP client over a plain socket, for what swaks will not send.
struct Raw {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Raw {
            r: std::io::BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    /// One whole reply (all its lines); empty when the server closed the connection.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.w.write_all(bytes).expect("send");
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// EHLO, MAIL, RCPT, DATA: ready for the message.
    fn start_data(&mut self, from: &str, to: &str) {
        assert!(self.reply().starts_with("220 "));
        assert!(self.cmd("EHLO gateway.test").starts_with("250"));
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("250"), "{r}");
        assert!(self.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "{r}");
    }
}

fn spool_files(data_dir: &Path, sub: &str, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join(sub))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(ext))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A self-signed client certificate; (certificate, key, SHA-256 fingerprint).
fn client_certificate(pki: &Pki, name: &str) -> (PathBuf, PathBuf, String) {
    let key = pki.path(&format!("{name}.key"));
    let crt = pki.path(&format!("{name}.crt"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "5",
            "-subj",
            &format!("/CN={name}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&crt));
    let fp = String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string();
    (crt, key, fp)
}

#[test]
fn smtp_refuses_clients_outside_the_allow_list_and_lets_pinned_certificates_in() {
    // The attacker: a host on the network that reaches the listeners. Without access control
    // it could have captured ciphertext decrypted to an RCPT of its choice, or mail signed
    // with any user's key.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let (gw_crt, gw_key, gw_fp) = client_certificate(&pki, "gw");
    let (other_crt, other_key, _) = client_certificate(&pki, "other");
    let settings = format!(
        "{}allow_addresses = [\"127.0.0.1/32\"]\ncertificate_addresses = [\"127.0.0.2/32\"]\n\n[[auth.clients]]\nname = \"gw\"\nsha256 = \"{gw_fp}\"\nscopes = [\"decrypt\"]\n",
        smtp_settings(rx.port)
    );
    let d = Daemon::start(dir.path(), &settings);
    let dec = d.smtp_decrypt.expect("decrypt").port();
    let enc_port = d.smtp_encrypt.expect("encrypt").port();
    let tmp = tempfile::tempdir().expect("tmp");
    let enc = write(
        tmp.path(),
        "enc.eml",
        &pki.openssl_encrypt(
            &pki.message(
                "carol@example.org",
                "alice@example.org",
                "acl",
                "pinned secret",
            ),
            &["alice@example.org"],
        ),
    );
    let from_127_0_0_3 = ["--local-interface", "127.0.0.3"];
    let from_127_0_0_2 = ["--local-interface", "127.0.0.2"];

    // Neither allowed nor a certificate network: 554 at connect, audited.
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &from_127_0_0_3);
    assert!(!ok && t.contains("554 5.7.1"), "{t}");
    assert!(!t.contains("MAIL FROM"), "refused before any command: {t}");
    assert!(d.audit().iter().any(|a| a["operation"] == "smtp-decrypt"
        && a["outcome"] == "refused-address"
        && a["source"] == "127.0.0.3"));

    // A certificate network without a certificate: no MAIL, with or without TLS.
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &from_127_0_0_2);
    assert!(!ok && t.contains("530 5.7.0"), "{t}");
    let mut args = from_127_0_0_2.to_vec();
    args.push("--tls");
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &args);
    assert!(!ok && t.contains("530 5.7.0"), "{t}");

    // An unpinned certificate does not get through the handshake.
    let mut args = from_127_0_0_2.to_vec();
    args.extend([
        "--tls",
        "--tls-cert",
        other_crt.to_str().expect("path"),
        "--tls-key",
        other_key.to_str().expect("path"),
    ]);
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &args);
    assert!(!ok && !t.contains("queued"), "{t}");

    // The pinned certificate, scope decrypt: the decrypt listener takes the mail ...
    let mut args = from_127_0_0_2.to_vec();
    args.extend([
        "--tls",
        "--tls-cert",
        gw_crt.to_str().expect("path"),
        "--tls-key",
        gw_key.to_str().expect("path"),
    ]);
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &args);
    assert!(ok && t.contains("250 2.0.0 OK queued"), "{t}");
    let (_, msg) = rx.wait_for(0);
    assert!(contains(&msg, "pinned secret"));
    wait_until("the audit record", || {
        d.audit()
            .iter()
            .any(|a| a["client"] == "cert:gw" && a["outcome"] == "decrypted")
    });
    // ... the encrypt listener does not (no encrypt scope).
    let clear = write(
        tmp.path(),
        "clear.eml",
        &pki.message("bob@example.org", "alice@example.org", "acl2", "outbound"),
    );
    let (ok, t) = swaks_raw(
        enc_port,
        "bob@example.org",
        "alice@example.org",
        &clear,
        &args,
    );
    assert!(!ok && t.contains("530 5.7.0"), "{t}");

    // The allowed address needs nothing.
    let (ok, t) = swaks_raw(dec, "x@y.org", "alice@example.org", &enc, &[]);
    assert!(ok && t.contains("250 2.0.0 OK queued"), "{t}");
    rx.wait_for(1);
}

#[test]
fn smtp_smuggling_variants_never_end_data() {
    // The attacker: a sender whose message hides a second SMTP transaction behind a line end
    // that this box and the next hop might read differently.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let port = d.smtp_decrypt.expect("port").port();
    let smuggled = b"MAIL FROM:<mallory@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n";
    let mut variants: Vec<(String, Vec<u8>)> = [
        "\n.\n",
        "\n.\r\n",
        "\r.\r",
        "\r\n.\r",
        "\r\n.\r\r\n",
        "\r.\r\n",
        "\r\n.\n",
        "\n.\r",
    ]
    .iter()
    .map(|v| (format!("{v:?}"), v.as_bytes().to_vec()))
    .collect();
    // A line longer than 64 KiB whose cut-off tail would be ".".
    let mut long = b"\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', 64 * 1024));
    long.extend_from_slice(b".\r\n");
    variants.push(("64 KiB split".into(), long));
    let mut long = b"\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'a', 64 * 1024 - 1));
    long.extend_from_slice(b"\n.\r\n");
    variants.push(("64 KiB split with LF".into(), long));
    for (name, v) in &variants {
        let mut c = Raw::connect(port);
        c.start_data("carol@example.org", "alice@example.org");
        let mut data = b"From: carol@example.org\r\nSubject: first\r\n\r\nfirst".to_vec();
        data.extend_from_slice(v);
        data.extend_from_slice(smuggled);
        data.extend_from_slice(b"\r\n.\r\n");
        c.send(&data);
        let r = c.reply();
        assert!(
            r.starts_with("550 ") || r.starts_with("552 "),
            "{name}: the message was not refused: {r}"
        );
        // The whole rest was DATA: the next reply answers QUIT.
        let q = c.cmd("QUIT");
        assert!(
            q.starts_with("221 "),
            "{name}: after the message came {q:?}"
        );
        assert!(
            spool_files(dir.path(), "spool", ".json").is_empty(),
            "{name}: nothing spooled"
        );
    }
    // A clean message still goes through, and it is the only one the next hop sees.
    let mut c = Raw::connect(port);
    c.start_data("carol@example.org", "alice@example.org");
    c.send(b"From: carol@example.org\r\nSubject: clean\r\n\r\n..dot-stuffed\r\nclean\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 OK queued"), "{r}");
    let (_, msg) = rx.wait_for(0);
    assert!(contains(&msg, "clean") && contains(&msg, "\n.dot-stuffed"));
    assert!(!contains(&msg, "smuggled"));
    assert!(c.cmd("QUIT").starts_with("221 "));
    // Commands with a bare LF are refused too.
    let mut c = Raw::connect(port);
    assert!(c.reply().starts_with("220 "));
    c.send(b"EHLO gateway.test\n");
    assert!(c.reply().starts_with("500 "));
    drop(d);
    assert_eq!(
        std::fs::read_dir(rx.mail_dir())
            .expect("mail")
            .filter(|e| e
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".eml")))
            .count(),
        1
    );
}

#[test]
fn smtp_forged_result_headers_and_loop_markers_are_removed_on_every_path() {
    // The attacker: an outside sender who writes X-Sealgate-* fields so that the recipient's
    // client shows a verdict the box never gave, or a loop marker so the box skips the mail.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let dec = d.smtp_decrypt.expect("port").port();
    let enc_port = d.smtp_encrypt.expect("port").port();
    let box_id = std::fs::read_to_string(dir.path().join("box-id")).expect("box id");
    let tmp = tempfile::tempdir().expect("tmp");
    let forged = format!(
        "X-Sealgate-Signature: valid\r\nX-Sealgate-Docking: decrypt; result=decrypted\r\nX-Sealgate-Loop: {}; t=1; mac=00\r\nx-sealgate-decrypted: yes;\r\n folded\r\n",
        box_id.trim()
    );
    let with_forged = |m: &[u8]| {
        let mut v = forged.clone().into_bytes();
        v.extend_from_slice(m);
        v
    };
    let check = |msg: &[u8], result: &str| {
        let text = String::from_utf8_lossy(msg);
        let docking: Vec<&str> = text
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-sealgate-docking"))
            .collect();
        assert_eq!(docking.len(), 1, "{text}");
        assert!(docking[0].contains(result), "{text}");
        // (The engine's own verdict names the signers; the forged one is bare.)
        assert!(
            !text
                .lines()
                .any(|l| l.trim_end() == "X-Sealgate-Signature: valid"),
            "{text}"
        );
        assert!(!text.to_ascii_lowercase().contains("folded"), "{text}");
        assert!(!text.contains("t=1; mac=00"), "{text}");
    };
    let paths: [(&str, Vec<u8>, &str); 3] = [
        // Not encrypted: passes through.
        (
            "plain",
            pki.message("x@y.org", "alice@example.org", "plain", "just text"),
            "result=not-encrypted",
        ),
        // Not for a key we hold: the failure path.
        (
            "foreign",
            pki.openssl_encrypt(
                &pki.message("x@y.org", "carol@example.org", "foreign", "not ours"),
                &["carol@example.org"],
            ),
            "result=failed",
        ),
        // Ours: decrypted, with the forged loop marker ignored.
        (
            "ours",
            pki.openssl_encrypt(
                &pki.message("x@y.org", "alice@example.org", "ours", "forged loop"),
                &["alice@example.org"],
            ),
            "result=decrypted",
        ),
    ];
    for (i, (name, m, result)) in paths.iter().enumerate() {
        let p = write(tmp.path(), &format!("{name}.eml"), &with_forged(m));
        swaks(dec, "x@y.org", &["alice@example.org"], &p, false);
        let (_, msg) = rx.wait_for(i);
        check(&msg, result);
        if *name == "ours" {
            assert!(contains(&msg, "forged loop"), "processed normally");
        }
    }
    // A marker the box made verifies: a message the encrypt listener sent that comes back
    // to it is relayed without processing (not encrypted twice), still without forged fields.
    let clear = write(
        tmp.path(),
        "out.eml",
        &pki.message(
            "bob@example.org",
            "alice@example.org",
            "looping",
            "loop secret",
        ),
    );
    swaks(
        enc_port,
        "bob@example.org",
        &["alice@example.org"],
        &clear,
        false,
    );
    let (_, sent) = rx.wait_for(3);
    assert!(contains(&sent, "encrypt; result=encrypted") && !contains(&sent, "loop secret"));
    let back = write(tmp.path(), "back.eml", &with_forged(&sent));
    swaks(
        enc_port,
        "bob@example.org",
        &["alice@example.org"],
        &back,
        false,
    );
    let (_, msg) = rx.wait_for(4);
    let text = String::from_utf8_lossy(&msg);
    assert!(
        text.contains("X-Sealgate-Docking: encrypt; result=loop-not-processed"),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.trim_end() == "X-Sealgate-Signature: valid")
            && !text.contains("t=1; mac=00")
    );
    let once = pki.openssl_decrypt(&msg, "alice@example.org");
    assert!(
        contains(&pki.openssl_verify(&once), "loop secret"),
        "encrypted once"
    );
    // The other listener's marker does not stop processing: the encrypted result is
    // decrypted for alice, and a message the box decrypted is encrypted when it goes out
    // again (a marker never lets cleartext pass the encrypt listener).
    swaks(dec, "x@y.org", &["alice@example.org"], &back, false);
    let (_, msg) = rx.wait_for(5);
    check(&msg, "result=decrypted");
    assert!(contains(&msg, "loop secret"));
    let (_, decrypted) = rx.wait_for(2);
    assert!(contains(&decrypted, "; dir=decrypt; t="));
    let again = write(tmp.path(), "again.eml", &decrypted);
    swaks(
        enc_port,
        "bob@example.org",
        &["alice@example.org"],
        &again,
        false,
    );
    let (_, msg) = rx.wait_for(6);
    assert!(contains(&msg, "encrypt; result=encrypted") && !contains(&msg, "forged loop"));
    wait_until("the audit record", || {
        d.audit()
            .iter()
            .any(|a| a["outcome"] == "loop-passed-unchanged")
    });
}

#[test]
fn smtp_encryption_failure_is_held_not_relayed_in_cleartext() {
    // The attacker's gain would be a confidential message relayed in clear because a
    // certificate was missing or the engine failed.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let tmp = tempfile::tempdir().expect("tmp");
    let clear = write(
        tmp.path(),
        "clear.eml",
        &pki.message(
            "bob@example.org",
            "carol@example.org",
            "held",
            "confidential text",
        ),
    );
    let t = swaks(
        d.smtp_encrypt.expect("port").port(),
        "bob@example.org",
        &["carol@example.org"],
        &clear,
        false,
    );
    assert!(t.contains("250 2.0.0 OK queued"), "{t}");
    // The hold writes the envelope (with its reason) first, then moves the message: held
    // once both are there.
    wait_until("the held message", || {
        !spool_files(dir.path(), "spool/held", ".json").is_empty()
            && !spool_files(dir.path(), "spool/held", ".eml").is_empty()
    });
    let held = &spool_files(dir.path(), "spool/held", ".json")[0];
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(held).expect("held")).expect("json");
    let reason = env["held_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("missing-certificates") && reason.contains("carol@example.org"),
        "{env}"
    );
    assert!(spool_files(dir.path(), "spool/held", ".eml").len() == 1);
    assert!(
        std::fs::read_dir(rx.mail_dir())
            .expect("mail")
            .next()
            .is_none(),
        "nothing relayed"
    );
    assert!(
        d.audit().iter().any(
            |a| a["operation"] == "smtp-encrypt" && a["outcome"] == "held:missing-certificates"
        )
    );
    drop(d);

    // Cleartext only where the policy says so, explicitly.
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(
        dir.path(),
        &format!(
            "{}encrypt_failure = \"send-plain\"\n",
            smtp_settings(rx.port)
        ),
    );
    swaks(
        d.smtp_encrypt.expect("port").port(),
        "bob@example.org",
        &["carol@example.org"],
        &clear,
        false,
    );
    let (_, msg) = rx.wait_for(0);
    assert!(contains(&msg, "confidential text"));
    assert!(contains(
        &msg,
        "X-Sealgate-Docking: encrypt; result=failed; problem=\"https://sealgate.example/problems/missing-certificates\""
    ));
}

#[test]
fn smtp_limits_sessions_per_address_and_their_duration() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(
        dir.path(),
        &format!(
            "{}max_sessions_per_address = 2\nsession_timeout_secs = 3\n",
            smtp_settings(free_port())
        ),
    );
    let port = d.smtp_decrypt.expect("port").port();
    let mut a = Raw::connect(port);
    let mut b = Raw::connect(port);
    assert!(a.reply().starts_with("220 "));
    assert!(b.reply().starts_with("220 "));
    let mut c = Raw::connect(port);
    assert!(c.reply().starts_with("421 4.7.0"));
    // A client that keeps sending NOOPs is still closed at the session deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        use std::io::Write;
        assert!(Instant::now() < deadline, "the session was never closed");
        if a.w.write_all(b"NOOP\r\n").is_err() || a.reply().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.reply(), "", "closed at the deadline");
    // Their slots are free again.
    let mut e = Raw::connect(port);
    assert!(e.reply().starts_with("220 "));
}

#[test]
fn smtp_spool_quota_answers_452_and_a_message_that_keeps_failing_is_held() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    // A message whose processing never finished three times (the daemon crashed on it):
    // held with the reason instead of being tried forever.
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool");
    std::fs::write(spool.join("1-crash.eml"), b"Subject: boom\r\n\r\nx\r\n").expect("eml");
    std::fs::write(
        spool.join("1-crash.json"),
        br#"{"direction":"decrypt","from":"a@b.org","to":["alice@example.org"],"client":"127.0.0.1","received":1,"attempts":3}"#,
    )
    .expect("json");
    // The next hop is down: what is accepted stays in the spool.
    let d = Daemon::start(
        dir.path(),
        &format!(
            "[docking]\nmax_message_bytes = 4000\n{}spool_max_bytes = 5000\n",
            smtp_settings(free_port())
        ),
    );
    wait_until("the crashing message to be held", || {
        spool.join("held/1-crash.json").exists()
    });
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spool.join("held/1-crash.json")).expect("held"))
            .expect("json");
    assert!(
        env["held_reason"]
            .as_str()
            .is_some_and(|r| r.contains("3 attempts")),
        "{env}"
    );
    let port = d.smtp_decrypt.expect("port").port();
    let body = |n: usize| {
        let mut m = b"From: carol@example.org\r\nSubject: quota\r\n\r\n".to_vec();
        for _ in 0..n {
            m.extend_from_slice(&[b'q'; 78]);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b".\r\n");
        m
    };
    // 3000 bytes fit.
    let mut c = Raw::connect(port);
    c.start_data("carol@example.org", "alice@example.org");
    c.send(&body(37));
    let r = c.reply();
    assert!(r.starts_with("250 "), "{r}");
    // 3000 more do not: 452 at the end of DATA, nothing left behind ...
    c.cmd("RSET");
    assert!(c.cmd("MAIL FROM:<carol@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&body(37));
    let r = c.reply();
    assert!(r.starts_with("452 4.3.1"), "{r}");
    assert_eq!(
        spool_files(dir.path(), "spool", ".part"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(spool_files(dir.path(), "spool", ".json").len(), 1);
    // ... and at MAIL when the size is declared.
    let r = c.cmd("MAIL FROM:<carol@example.org> SIZE=3000");
    assert!(r.starts_with("452 4.3.1"), "{r}");
    // A message that fits still goes in.
    let r = c.cmd("MAIL FROM:<carol@example.org> SIZE=100");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("RCPT TO:<alice@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&body(1));
    assert!(c.reply().starts_with("250 "));
}

const STARTTLS_INJECTION: &str = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def reply(f):
    out = ""
    while True:
        l = f.readline().decode()
        out += l
        if len(l) < 4 or l[3] != "-":
            return out
f = s.makefile("rb", buffering=0)
print(reply(f), end="")
s.sendall(b"EHLO attacker.test\r\n")
print(reply(f), end="")
# STARTTLS with commands behind it in the same write: they must never run as if sent
# over TLS (CVE-2011-0411 and relatives).
s.sendall(b"STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<injected@evil.test>\r\n")
print(reply(f), end="")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
g = t.makefile("rb", buffering=0)
t.sendall(b"MAIL FROM:<carol@example.org>\r\n")
print("TLS " + reply(g), end="")
t.sendall(b"QUIT\r\n")
print("TLS " + reply(g), end="")
"#;

#[test]
fn smtp_commands_pipelined_behind_starttls_are_discarded() {
    // The attacker: a man in the middle who appends commands to the client's STARTTLS in
    // clear text, hoping the server runs them inside the client's TLS session.
    require_tool("python3", "python3");
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let d = Daemon::start(dir.path(), &smtp_settings(free_port()));
    let tmp = tempfile::tempdir().expect("tmp");
    let script = write(tmp.path(), "inject.py", STARTTLS_INJECTION.as_bytes());
    let out = run(Command::new("python3")
        .arg(&script)
        .arg(d.smtp_decrypt.expect("port").port().to_string()));
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(t.contains("220 2.0.0 ready to start TLS"), "{t}");
    // Over TLS the session starts over: the injected EHLO never happened.
    assert!(t.contains("TLS 503 5.5.1 EHLO first"), "{t}");
    assert!(t.contains("TLS 221 "), "{t}");
    assert!(!t.contains("injected"), "{t}");
}

#[test]
fn smtp_smuggling_variants_pipelined_in_one_write_are_refused() {
    // The same variants as above, but the whole transaction in one write (PIPELINING), with
    // a clean message behind the refused one in the same session: the refusal ends exactly
    // at the real CRLF.CRLF, and the session goes on.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let port = d.smtp_decrypt.expect("port").port();
    for v in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\n.\r",
    ] {
        let name = format!("{:?}", String::from_utf8_lossy(v));
        let mut c = Raw::connect(port);
        assert!(c.reply().starts_with("220 "));
        let mut all = b"EHLO gateway.test\r\nMAIL FROM:<carol@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: first\r\n\r\nfirst".to_vec();
        all.extend_from_slice(v);
        all.extend_from_slice(b"MAIL FROM:<mallory@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n");
        all.extend_from_slice(b"MAIL FROM:<carol@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: clean\r\n\r\nclean\r\n.\r\nQUIT\r\n");
        c.send(&all);
        let replies: Vec<String> = (0..9).map(|_| c.reply()).collect();
        let codes: Vec<&str> = replies.iter().map(|r| r.get(..3).unwrap_or("")).collect();
        assert_eq!(
            codes,
            [
                "250", "250", "250", "354", "550", "250", "250", "354", "250"
            ],
            "{name}: {replies:?}"
        );
        assert!(c.reply().starts_with("221 "), "{name}");
    }
    // Only the clean messages reached the next hop, never a smuggled one.
    for i in 0..7 {
        let (env, msg) = rx.wait_for(i);
        assert_eq!(env["from"], "carol@example.org");
        assert!(contains(&msg, "clean") && !contains(&msg, "smuggled"));
    }
    drop(d);
}

#[test]
fn smtp_a_pipelining_client_gets_its_replies_in_order() {
    // swaks --pipeline sends MAIL, every RCPT and DATA in one write and matches the replies
    // by position: one refused recipient in the middle must not shift the others.
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let rx = Receiver::start(free_port());
    let d = Daemon::start(dir.path(), &smtp_settings(rx.port));
    let tmp = tempfile::tempdir().expect("tmp");
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "pipelined",
        "pipelined text",
    );
    let enc = write(
        tmp.path(),
        "enc.eml",
        &pki.openssl_encrypt(&clear, &["alice@example.org"]),
    );
    let (ok, t) = swaks_raw(
        d.smtp_decrypt.expect("port").port(),
        "carol@example.org",
        "alice@example.org,no-at-sign,bob@example.org",
        &enc,
        &["--pipeline"],
    );
    assert!(t.contains("PIPELINING"), "{t}");
    assert!(t.contains("<** 501 5.1.3 invalid recipient address"), "{t}");
    let _ = ok; // (swaks reports the refused recipient as a failure.)
    assert!(t.contains("250 2.0.0 OK queued"), "{t}");
    let (env, msg) = rx.wait_for(0);
    assert_eq!(
        env["to"],
        serde_json::json!(["alice@example.org", "bob@example.org"])
    );
    assert!(contains(&msg, "pipelined text"));
}
