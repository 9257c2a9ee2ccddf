//! Content scanning throughput, next to SpamAssassin (`spamd` with `spamc`) measured in the
//! same run on the same messages.
//!
//! Run with `cargo xtask bench scan`. Messages of 10 KiB and 1 MiB (a text and an HTML body
//! with links, a PDF-like text attachment for the large one), encrypted to an RSA-2048
//! certificate (AES-256-CBC). The box's rate: decrypt with the engine, then every local
//! check of the standard pipeline (GTUBE, hashes, unpacking, DLP with a keyword rule, spam
//! rules, URLs by hash), on two threads (the box's two cores), messages per second of wall
//! time. SpamAssassin's: `spamd` started here (local tests only, `-L`, two children) and two
//! `spamc -c` clients at a time on the cleartext of the same messages (SpamAssassin cannot
//! decrypt), messages per second of wall time. Prints both and the ratio (goal: ≥ 10× and
//! ≥ 500 msg/s at 10 KiB).
#![allow(missing_docs, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sealgate_scan::{Direction, Input, Settings};
use sealgate_smime::cert::Certificate;
use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::Recipient;
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;

const THREADS: usize = 2;

fn fail(msg: &str) -> ! {
    eprintln!("bench scan: {msg}");
    std::process::exit(2);
}

fn run(cmd: &str, args: &[&str], dir: &std::path::Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| fail(&format!("`{cmd}` cannot run: {e}")));
    if !out.status.success() {
        fail(&format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
}

/// A message of about `size` bytes: headers, text and HTML with links, and for large sizes a
/// text attachment (base64) that fills it up.
fn message(size: usize) -> Vec<u8> {
    let words = "the quarterly report is attached please review the figures before friday \
                 and send your comments to the finance team at your earliest convenience ";
    let mut text = String::new();
    while text.len() < size.min(6 * 1024) / 2 {
        text.push_str(words);
        text.push_str("see https://www.example.org/reports/q3?id=42 for details\r\n");
    }
    let html = format!(
        "<html><body><p>{}</p><a href=\"https://intranet.example.org/a\">intranet</a></body></html>",
        &text[..text.len().min(2048)]
    );
    let mut m = format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Quarterly report\r\n\
         Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
         --b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b2--\r\n"
    );
    if m.len() + 200 < size {
        use base64::Engine;
        let need = (size - m.len() - 200) * 3 / 4;
        let mut data = Vec::with_capacity(need);
        while data.len() < need {
            data.extend_from_slice(words.as_bytes());
        }
        data.truncate(need);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        m.push_str(
            "--b1\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\
             Content-Disposition: attachment; filename=\"notes.txt\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n",
        );
        for line in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push_str("\r\n");
        }
    }
    m.push_str("--b1--\r\n");
    m.into_bytes()
}

/// Messages per second of wall time of `f` run by `THREADS` threads for `secs` seconds.
fn rate(secs: u64, f: impl Fn() + Sync) -> f64 {
    let count = AtomicU64::new(0);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while Instant::now() < until {
                    f();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(&format!("no free port: {e}")))
}

/// spamd on 127.0.0.1, local tests only, two children; ready when it answers PING.
fn spamd(dir: &std::path::Path) -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("spamd")
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--max-children",
            "2",
            "--min-children",
            "2",
            "--local",
            "--nouser-config",
            "--syslog",
            "stderr",
            "--username",
            "nobody",
            "--pidfile",
        ])
        .arg(dir.join("spamd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|_| {
            Command::new("/usr/sbin/spamd")
                .args([
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--max-children",
                    "2",
                    "--min-children",
                    "2",
                    "--local",
                    "--nouser-config",
                    "--syslog",
                    "stderr",
                    "--username",
                    "nobody",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .unwrap_or_else(|e| {
            fail(&format!(
                "`spamd` is missing ({e}): install the Debian package `spamd`"
            ))
        });
    let child = Killed(child);
    let started = Instant::now();
    loop {
        let ok = Command::new("spamc")
            .args(["-d", "127.0.0.1", "-p", &port.to_string(), "-K"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return (child, port);
        }
        if started.elapsed() > Duration::from_secs(120) {
            fail("spamd did not answer within 120 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One `spamc -c` round trip with the message on its standard input.
fn spamc(port: u16, msg: &[u8]) {
    let mut c = Command::new("spamc")
        .args([
            "-d",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            "-s",
            "4000000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "`spamc` is missing ({e}): install the Debian package `spamc`"
            ))
        });
    c.stdin.take().unwrap().write_all(msg).unwrap();
    let st = c.wait().unwrap();
    // -c exits 0 for ham, 1 for spam; anything else is an error.
    if !matches!(st.code(), Some(0 | 1)) {
        fail(&format!("spamc failed: {st:?}"));
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scan benchmark: run it with `cargo xtask bench scan`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-subj",
            "/CN=bench/emailAddress=bob@example.net",
            "-days",
            "2",
        ],
        d,
    );
    let key = SoftwareKey::from_key_and_cert(
        &std::fs::read(d.join("k.pem")).unwrap(),
        &std::fs::read(d.join("c.pem")).unwrap(),
    )
    .unwrap();
    let cert = Certificate::parse_many(&std::fs::read(d.join("c.pem")).unwrap())
        .unwrap()
        .remove(0);
    let recipients = vec![Recipient::new(cert).unwrap()];
    let settings: Settings = serde_json::from_str(
        r#"{"dlp": [{"name": "project-x", "keywords": ["Project X"], "regex": "PX-\\d{4}"}]}"#,
    )
    .unwrap();
    let pipeline = settings.pipeline(&[]).unwrap();
    let (_spamd, port) = spamd(d);
    println!(
        "{:<8} {:>18} {:>18} {:>8}",
        "size", "sealgate msg/s", "spamassassin msg/s", "ratio"
    );
    for (label, size, secs, sa_secs) in [("10 KiB", 10 * 1024, 5, 10), ("1 MiB", 1 << 20, 5, 15)] {
        let clear = message(size);
        let encrypted =
            message::encrypt_message(&clear, &recipients, CipherChoice::Aes256Cbc).unwrap();
        // Correctness first: the pipeline sees the cleartext and accepts it.
        let keys: Vec<&dyn PrivateKey> = vec![&key];
        let scan_one = || {
            let opened = message::open(
                &encrypted,
                &keys,
                &VerifyOptions::default(),
                OpenMode::Decrypt,
            )
            .unwrap();
            let r = pipeline.scan(&Input {
                message: &encrypted,
                decrypted: Some(&opened.output),
                direction: Direction::Inbound,
            });
            assert_eq!(r.decryption, sealgate_scan::Decryption::Decrypted);
            std::hint::black_box(r);
        };
        scan_one();
        let ours = rate(secs, scan_one);
        let theirs = rate(sa_secs, || spamc(port, &clear));
        println!(
            "{label:<8} {ours:>18.1} {theirs:>18.1} {:>7.1}x",
            ours / theirs
        );
    }
}
