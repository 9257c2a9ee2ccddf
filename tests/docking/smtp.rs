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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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
        &format!("X-Sealgate-Loop: {}", box_id.trim())
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

    // A message that already carries our loop header is relayed without processing.
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
    assert!(!contains(&msg, "smtp secret"), "not decrypted again");
    assert!(!contains(&msg, "X-Sealgate-Docking"));

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
