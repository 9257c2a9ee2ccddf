//! S/MIME engine throughput, next to `openssl speed` measured in the same run.
//!
//! Run with `cargo xtask bench smime`. Prints messages/s for encrypt, decrypt, sign and verify
//! of 4 KiB and 1 MiB messages (whole messages: MIME, base64 and CMS included), then the
//! ratios against OpenSSL's RSA-2048 private operations/s and AES-256-CBC throughput.
//! `--json FILE` also writes every row and ratio as JSON (`{"rows": [...], "ratios": {...}}`;
//! the names are listed in README's benchmark section and stay stable).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::process::Command;
use std::time::{Duration, Instant};

use sealgate_smime::cert::Certificate;
use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::Recipient;
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;

const RUN: Duration = Duration::from_secs(2);

/// This thread's CPU time. `openssl speed` counts CPU time too (user time, unless
/// `-elapsed`), so on a machine shared with other work both sides of a ratio are measured
/// alike; wall-clock rates are printed next to them.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    assert!(ok, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Operations per second of CPU time (and per second of wall time) of `f` on this thread.
fn rate(f: impl FnMut()) -> (f64, f64) {
    rate_for(RUN, f)
}

/// Two operations' rates measured in turns (ten turns of 0.4 s of CPU time each), so that a
/// change of the machine's speed during the measurement (other load, frequency) falls on both
/// alike: for a ratio between the two.
fn paired(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let turn = Duration::from_millis(400);
    a();
    b();
    let (mut na, mut nb, mut ta, mut tb) = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        for (f, n, t) in [
            (&mut a as &mut dyn FnMut(), &mut na, &mut ta),
            (&mut b as &mut dyn FnMut(), &mut nb, &mut tb),
        ] {
            let cpu0 = thread_cpu();
            while thread_cpu() - cpu0 < turn {
                f();
                *n += 1;
            }
            *t += thread_cpu() - cpu0;
        }
    }
    (na as f64 / ta.as_secs_f64(), nb as f64 / tb.as_secs_f64())
}

/// [`rate`] over `run` of CPU time.
fn rate_for(run: Duration, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm up
    let (start, cpu0) = (Instant::now(), thread_cpu());
    let mut n = 0u64;
    while thread_cpu() - cpu0 < run {
        f();
        n += 1;
    }
    let cpu = (thread_cpu() - cpu0).as_secs_f64();
    (n as f64 / cpu, n as f64 / start.elapsed().as_secs_f64())
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) is needed for the reference");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl speed`: RSA-2048 private operations/s and AES-256-CBC MB/s (16 KiB blocks), both
/// per second of CPU time (its default).
fn references(d: &std::path::Path) -> (f64, f64) {
    let speed = openssl(&["speed", "-seconds", "3", "rsa2048"], d);
    let rsa_private: f64 = speed
        .lines()
        .find(|l| l.starts_with("rsa 2048 bits") || l.starts_with("rsa  2048 bits"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|v| v.parse().ok())
        .expect("parse openssl speed rsa2048");
    let aes = openssl(&["speed", "-seconds", "2", "-evp", "aes-256-cbc"], d);
    let aes_mbs: f64 = aes
        .lines()
        .rev()
        .find(|l| l.to_ascii_uppercase().starts_with("AES-256-CBC"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.trim_end_matches('k').parse::<f64>().ok())
        .map(|kbs| kbs * 1000.0 / 1e6)
        .expect("parse openssl speed aes-256-cbc");
    (rsa_private, aes_mbs)
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

/// A failure as one line on stderr, never a backtrace.
fn one_line_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload_as_str().unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "bench smime: {}{at}",
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
}

/// The `--json FILE` argument, if given.
fn json_arg() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--json")
        .map(|i| args.get(i + 1).expect("--json needs a FILE").into())
}

/// `--only OP_SIZE` (e.g. `encrypt_1m`): loop that one operation for `perf record`, measure
/// nothing else.
fn only_arg() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).expect("--only needs OP_SIZE").clone())
}

/// Rows and ratios for `--json`.
#[derive(Default)]
struct Record {
    rows: Vec<serde_json::Value>,
    ratios: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    fn row(&mut self, name: &str, value: f64, unit: &str) {
        self.rows
            .push(serde_json::json!({"name": name, "value": round(value), "unit": unit}));
    }
    fn ratio(&mut self, name: &str, value: f64) {
        self.ratios.insert(name.into(), round(value).into());
    }
    fn write(self, file: &std::path::Path) {
        let json = serde_json::json!({"rows": self.rows, "ratios": self.ratios});
        std::fs::write(file, serde_json::to_vec_pretty(&json).unwrap())
            .unwrap_or_else(|e| panic!("--json {}: {e}", file.display()));
        println!("wrote {}", file.display());
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("smime benchmark: run it with `cargo xtask bench smime`");
        return;
    }
    one_line_panics();
    let json = json_arg();
    let only = only_arg();
    let mut record = Record::default();
    let have_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_openssl {
        eprintln!("bench smime: `openssl` is missing: install the Debian package `openssl`");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
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
            "/CN=bench/emailAddress=alice@example.test",
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
    let keys: Vec<&dyn PrivateKey> = vec![&key];
    // The engine's own RSA-2048 private operation (AWS-LC): a PKCS#1 v1.5 signature.
    let engine_rsa_op = || {
        key.sign(
            sealgate_smime::keys::SignScheme::RsaPkcs1(sealgate_smime::crypto::HashAlg::Sha256),
            b"x",
        )
        .unwrap();
    };
    let recipients = vec![Recipient::new(cert.clone()).unwrap()];
    let verify_opts = VerifyOptions {
        anchors: vec![cert.clone()],
        ..VerifyOptions::default()
    };

    if let Some(only) = only {
        // Profiling: one operation in a loop, nothing else (`perf record ... --only encrypt_1m`).
        let (name, size) = only
            .split_once('_')
            .expect("--only OP_SIZE, e.g. encrypt_1m");
        let size = if size == "1m" { 1 << 20 } else { 4096 };
        let msg = message(size);
        let encrypted =
            message::encrypt_message(&msg, &recipients, CipherChoice::Aes256Cbc).unwrap();
        let signed = message::sign_message(&msg, &key, false, 1_800_000_000).unwrap();
        let (r, _) = rate_for(Duration::from_secs(15), || match name {
            "encrypt" => {
                drop(message::encrypt_message(&msg, &recipients, CipherChoice::Aes256Cbc).unwrap())
            }
            "decrypt" => drop(
                message::open(
                    &encrypted,
                    &keys,
                    &VerifyOptions::default(),
                    OpenMode::Decrypt,
                )
                .unwrap(),
            ),
            "sign" => drop(message::sign_message(&msg, &key, false, 1_800_000_000).unwrap()),
            "verify" => drop(message::verify_message(&signed, None, &verify_opts).unwrap()),
            // The reference of "decrypt / engine RSA" (`--only rsa_private`).
            "rsa" => engine_rsa_op(),
            other => panic!("--only: unknown operation {other:?}"),
        });
        println!("{only}: {r:.1} messages per CPU second");
        return;
    }
    // References, measured now on this machine, before and after the engine (their mean).
    let (rsa_before, aes_before) = references(d);
    // The engine's own RSA-2048 private operation (AWS-LC), to split library from message
    // cost: measured in turns with the 4 KiB decryption (see `paired`), so that the machine's
    // drift during the run falls on both sides of that ratio alike.
    let encrypted_4k =
        message::encrypt_message(&message(4096), &recipients, CipherChoice::Aes256Cbc).unwrap();
    let (engine_rsa, decrypt_4k_paired) = paired(engine_rsa_op, || {
        message::open(
            &encrypted_4k,
            &keys,
            &VerifyOptions::default(),
            OpenMode::Decrypt,
        )
        .unwrap();
    });
    record.row("engine_rsa2048_private", engine_rsa, "op/s");
    record.row("decrypt_4k_paired", decrypt_4k_paired, "msg/CPU s");
    println!();
    println!(
        "{:<10} {:>8} {:>12} {:>10} {:>12}",
        "operation", "size", "msg/CPU s", "MB/CPU s", "msg/s (wall)"
    );

    let mut decrypt_4k = 0.0;
    let mut big = Vec::new();
    for (label, size) in [("4 KiB", 4096usize), ("1 MiB", 1 << 20)] {
        let msg = message(size);
        let encrypted =
            message::encrypt_message(&msg, &recipients, CipherChoice::Aes256Cbc).unwrap();
        let signed = message::sign_message(&msg, &key, false, 1_800_000_000).unwrap();
        let ops: [(&str, Box<dyn FnMut()>); 4] = [
            (
                "encrypt",
                Box::new(|| {
                    message::encrypt_message(&msg, &recipients, CipherChoice::Aes256Cbc).unwrap();
                }),
            ),
            (
                "decrypt",
                Box::new(|| {
                    message::open(
                        &encrypted,
                        &keys,
                        &VerifyOptions::default(),
                        OpenMode::Decrypt,
                    )
                    .unwrap();
                }),
            ),
            (
                "sign",
                Box::new(|| {
                    message::sign_message(&msg, &key, false, 1_800_000_000).unwrap();
                }),
            ),
            (
                "verify",
                Box::new(|| {
                    message::verify_message(&signed, None, &verify_opts).unwrap();
                }),
            ),
        ];
        for (name, mut op) in ops {
            let (r, wall) = rate(&mut op);
            let mbs = r * size as f64 / 1e6;
            println!("{name:<10} {label:>8} {r:>12.1} {mbs:>10.1} {wall:>12.1}");
            let short = if size == 4096 { "4k" } else { "1m" };
            record.row(&format!("{name}_{short}"), r, "msg/CPU s");
            record.row(&format!("{name}_{short}_throughput"), mbs, "MB/CPU s");
            record.row(&format!("{name}_{short}_wall"), wall, "msg/s");
            if name == "decrypt" && size == 4096 {
                decrypt_4k = r;
            }
            if size > 4096 {
                big.push((name, mbs));
            }
        }
    }
    let (rsa_after, aes_after) = references(d);
    let (rsa_private, aes_mbs) = (
        (rsa_before + rsa_after) / 2.0,
        (aes_before + aes_after) / 2.0,
    );
    println!(
        "reference (openssl speed, CPU time, before/after): rsa2048 private ops/s {rsa_before:.0}/{rsa_after:.0}; aes-256-cbc {aes_before:.0}/{aes_after:.0} MB/s"
    );
    record.row("openssl_rsa2048_private", rsa_private, "op/s");
    record.row("openssl_aes256cbc", aes_mbs, "MB/s");
    record.ratio("engine_rsa_vs_openssl_rsa", engine_rsa / rsa_private);
    println!(
        "engine (aws-lc) rsa2048 private ops per CPU second {engine_rsa:.0} = {:.2} of openssl",
        engine_rsa / rsa_private
    );
    println!();
    println!("ratios (one core, CPU time on both sides):");
    println!(
        "  4 KiB decrypt / openssl rsa2048 private ops: {:.2} (goal >= 0.95)",
        decrypt_4k / rsa_private
    );
    record.ratio("decrypt_4k_vs_openssl_rsa", decrypt_4k / rsa_private);
    record.ratio("decrypt_4k_vs_engine_rsa", decrypt_4k_paired / engine_rsa);
    println!(
        "  4 KiB decrypt / engine rsa2048 private ops:  {:.2} (message overhead, measured in turns; goal >= 0.95)",
        decrypt_4k_paired / engine_rsa
    );
    for (name, mbs) in big {
        println!(
            "  1 MiB {name:<8} {mbs:>7.0} MB/s = {:.2} of 300 MB/s target, {:.2} of openssl aes-256-cbc",
            mbs / 300.0,
            mbs / aes_mbs
        );
        record.ratio(&format!("{name}_1m_vs_openssl_aes"), mbs / aes_mbs);
    }
    println!("  (goal for 1 MiB encrypt and decrypt: >= 0.6 of openssl aes-256-cbc)");
    if let Some(file) = json {
        record.write(&file);
    }
}
