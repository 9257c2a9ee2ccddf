//! `cargo xtask bench imap`: the IMAP proxy against Dovecot itself, in the same run.
//!
//! One mailbox of 1,000 messages (every tenth S/MIME-encrypted to alice, sizes 4–200 KiB,
//! stored in a Dovecot started here) is read two ways, each through the release `sealgated`'s
//! proxy and directly from Dovecot:
//! - `mbsync` (isync) syncs the whole mailbox into an empty Maildir: through the proxy cold
//!   (an empty view cache: every encrypted message downloaded and decrypted), then warm, and
//!   directly (Dovecot warmed by one sync first, so both sides read from its page cache);
//! - a Python `imaplib` client fetches every message by UID (`UID FETCH n (BODY.PEEK[])`) one
//!   at a time, timing each round trip.
//!
//! The decryption time is measured in-process too (the same 100 messages opened by the
//! S/MIME engine and made into views), so the cold goal can be checked: a warm sync within
//! 1.2× direct, a cold one within 1.2× direct plus that decryption time.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs, dead_code)]

#[path = "../../../tests/docking/dovecot.rs"]
mod dovecot;
#[path = "../../../tests/docking/harness.rs"]
mod harness;
#[path = "../../../tests/common/ports.rs"]
mod ports;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;

const COUNT: usize = 1000;
const ROUNDS: usize = 3;

/// Exits with one line when a tool the benchmark needs is missing.
fn need(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("imap benchmark: `{tool}` is missing: install the Debian package `{package}`");
        std::process::exit(1);
    }
}

/// Message `i` (1-based): its size in bytes, 4–200 KiB, spread evenly but not in order.
fn size_of(i: usize) -> usize {
    (4 + (i * 37 + 11) % 197) * 1024
}

/// A plain text message of about `size` bytes.
fn plain(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: carol@example.org\r\nTo: alice@example.org\r\nSubject: message {i}\r\n\
         Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0usize;
    while m.len() + 2 < size {
        n += 1;
        m.extend_from_slice(
            format!("Line {n} of message {i}: the quick brown fox jumps over the lazy dog.\r\n")
                .as_bytes(),
        );
    }
    m
}

const FILL: &str = r#"
import imaplib, os, ssl
d = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['PORT']), ssl_context=ssl.create_default_context(cafile=os.environ['CA']))
d.login('alice@example.org', 'alicepw')
src = os.environ['DIR']
for i in range(1, int(os.environ['COUNT']) + 1):
    msg = open(os.path.join(src, '%d.eml' % i), 'rb').read()
    assert d.append('INBOX', None, None, msg)[0] == 'OK'
d.logout()
print('filled')
"#;

const FETCH: &str = r#"
import imaplib, os, ssl, time, json
c = imaplib.IMAP4_SSL('127.0.0.1', int(os.environ['PORT']), ssl_context=ssl.create_default_context(cafile=os.environ['CA']))
c.login('alice@example.org', 'alicepw')
c.select('INBOX', readonly=True)
typ, data = c.uid('SEARCH', None, 'ALL')
uids = data[0].split()
lat = []
total_bytes = 0
started = time.perf_counter()
for u in uids:
    t = time.perf_counter()
    typ, d = c.uid('FETCH', u, '(BODY.PEEK[])')
    lat.append(time.perf_counter() - t)
    assert typ == 'OK', d
    total_bytes += len(d[0][1])
total = time.perf_counter() - started
c.logout()
lat.sort()
print(json.dumps({'n': len(lat), 'total': total, 'bytes': total_bytes,
                  'p50': lat[len(lat) // 2], 'p99': lat[int(len(lat) * 0.99)],
                  'mean': sum(lat) / len(lat)}))
"#;

/// Syncs INBOX from `port` into a new Maildir under `work`; the time mbsync took.
fn mbsync(work: &Path, name: &str, port: u16, ca: &Path) -> (Duration, PathBuf) {
    let maildir = work.join(name);
    let _ = std::fs::remove_dir_all(&maildir);
    std::fs::create_dir_all(&maildir).unwrap();
    let conf = format!(
        "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser alice@example.org\nPass alicepw\n\
         SSLType IMAPS\nCertificateFile {}\nTimeout 60\n\n\
         IMAPStore remote\nAccount a\n\n\
         MaildirStore local\nPath {m}/\nInbox {m}/INBOX\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\n\
         SyncState *\n",
        ca.display(),
        m = maildir.display()
    );
    let rc = work.join(format!("{name}.mbsyncrc"));
    std::fs::write(&rc, conf).unwrap();
    let started = Instant::now();
    let out = Command::new("mbsync")
        .arg("-q")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .output()
        .expect("mbsync");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "mbsync ({name}) failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let files = messages(&maildir);
    assert_eq!(files.len(), COUNT, "mbsync ({name}) synced {}", files.len());
    (took, maildir)
}

fn messages(maildir: &Path) -> Vec<PathBuf> {
    ["cur", "new"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(maildir.join("INBOX").join(s))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .collect()
}

struct Fetched {
    total: f64,
    p50: f64,
    p99: f64,
    mean: f64,
}

fn fetch_each(work: &Path, port: u16, ca: &Path) -> Fetched {
    let script = work.join("fetch.py");
    std::fs::write(&script, FETCH).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .env("PORT", port.to_string())
        .env("CA", ca)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], COUNT);
    let f = |k: &str| v[k].as_f64().unwrap();
    Fetched {
        total: f("total"),
        p50: f("p50"),
        p99: f("p99"),
        mean: f("mean"),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("imap benchmark: run it with `cargo xtask bench imap`");
        return;
    }
    need("dovecot", "dovecot-imapd");
    need("mbsync", "isync");
    need("python3", "python3");
    need("openssl", "openssl");

    let pki = harness::Pki::new();
    let data = harness::data_dir_with_keys(&pki);
    let dv = dovecot::Dovecot::start(&[("alice@example.org", "alicepw")]);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // The mailbox: every tenth message encrypted to alice (openssl cms, AES-256-CBC).
    let src = w.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut encrypted = Vec::new();
    let mut stored = 0usize;
    for i in 1..=COUNT {
        let size = size_of(i);
        let m = if i % 10 == 0 {
            // base64 and the CMS envelope add about 37%: the stored message is `size`.
            let e = pki.openssl_encrypt(&plain(i, size * 100 / 138), &["alice@example.org"]);
            encrypted.push(e.clone());
            e
        } else {
            plain(i, size)
        };
        stored += m.len();
        std::fs::write(src.join(format!("{i}.eml")), m).unwrap();
    }
    let fill = w.join("fill.py");
    std::fs::write(&fill, FILL).unwrap();
    let out = Command::new("python3")
        .arg(&fill)
        .env("PORT", dv.imaps.to_string())
        .env("CA", dv.ca())
        .env("DIR", &src)
        .env("COUNT", COUNT.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "filling the mailbox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&src).unwrap();
    println!(
        "mailbox: {COUNT} messages, {} encrypted, {:.1} MiB stored",
        encrypted.len(),
        stored as f64 / (1024.0 * 1024.0)
    );

    // The decryption itself, in-process: the engine opens each encrypted message and the
    // view is built, as the proxy does for a message it has not seen.
    let key = SoftwareKey::from_key_and_cert(
        &std::fs::read(pki.key("alice@example.org")).unwrap(),
        &std::fs::read(pki.cert("alice@example.org")).unwrap(),
    )
    .unwrap();
    let keys: Vec<&dyn PrivateKey> = vec![&key];
    let started = Instant::now();
    for e in &encrypted {
        let o = message::open(e, &keys, &VerifyOptions::default(), OpenMode::Decrypt).unwrap();
        assert!(o.decrypted());
        let _ = sealgate_imap::view::View::new(&o.output);
    }
    let decrypt = started.elapsed();

    let dca = dv.ca();
    // Dovecot warmed (its indexes and the page cache), not measured.
    mbsync(w, "warmup", dv.imaps, &dca);

    let mut daemon = harness::Daemon::start(
        data.path(),
        &format!(
            "[imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"imaps://127.0.0.1:{}\"\nupstream_ca = \"{}\"\n",
            dv.imaps,
            dca.display()
        ),
    );
    let proxy = daemon
        .console
        .iter()
        .find_map(|l| l.strip_prefix("sealgated: listening imap "))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .expect("the proxy's listener");
    let pca = daemon.ca_file();

    let (cold, maildir) = mbsync(w, "cold", proxy, &pca);
    let decrypted = messages(&maildir)
        .iter()
        .filter(|f| {
            let b = std::fs::read(f).unwrap();
            harness::contains(&b, "X-Sealgate-Decrypted: yes")
        })
        .count();
    assert_eq!(decrypted, encrypted.len(), "messages shown decrypted");

    let (mut direct, mut warm) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        direct.push(mbsync(w, &format!("direct{r}"), dv.imaps, &dca).0);
        warm.push(mbsync(w, &format!("warm{r}"), proxy, &pca).0);
    }
    let (direct, warm) = (median(direct), median(warm));
    let f_direct = fetch_each(w, dv.imaps, &dca);
    let f_proxy = fetch_each(w, proxy, &pca);
    let _ = daemon.terminate();

    let ratio_warm = warm.as_secs_f64() / direct.as_secs_f64();
    let cold_goal = direct.mul_f64(1.2) + decrypt;
    println!("mbsync, {COUNT} messages into an empty Maildir (median of {ROUNDS}):");
    println!("  direct from Dovecot   {}", secs(direct));
    println!(
        "  proxy, warm           {}   {ratio_warm:.3}x direct (goal <= 1.2x: {})",
        secs(warm),
        if ratio_warm <= 1.2 { "met" } else { "MISSED" }
    );
    println!(
        "  proxy, cold           {}   {:.2}x direct; decryption in-process {} ({:.1} ms per message); goal <= 1.2x direct + decryption = {} ({})",
        secs(cold),
        cold.as_secs_f64() / direct.as_secs_f64(),
        secs(decrypt),
        decrypt.as_secs_f64() * 1000.0 / encrypted.len() as f64,
        secs(cold_goal),
        if cold <= cold_goal { "met" } else { "MISSED" }
    );
    println!("Python imaplib, UID FETCH n (BODY.PEEK[]) one message at a time (warm):");
    for (name, f) in [("direct from Dovecot", &f_direct), ("proxy", &f_proxy)] {
        println!(
            "  {name:<20}  {:.2} s total; per FETCH mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
            f.total,
            f.mean * 1000.0,
            f.p50 * 1000.0,
            f.p99 * 1000.0
        );
    }
    println!(
        "  proxy / direct        {:.2}x total, {:.2}x p50",
        f_proxy.total / f_direct.total,
        f_proxy.p50 / f_direct.p50
    );
}
