//! S/MIME engine throughput, next to `openssl speed` measured in the same run.
//!
//! Run with `cargo xtask bench smime`. Prints messages/s for encrypt, decrypt, sign and verify
//! of 4 KiB and 1 MiB messages (whole messages: MIME, base64 and CMS included), then the
//! ratios against OpenSSL's RSA-2048 private operations/s and AES-256-CBC throughput.
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

fn rate(mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
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

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("smime benchmark: run it with `cargo xtask bench smime`");
        return;
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
    let recipients = vec![Recipient::new(cert.clone()).unwrap()];
    let verify_opts = VerifyOptions {
        anchors: vec![cert.clone()],
        ..VerifyOptions::default()
    };

    // References, measured now on this machine.
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
    println!(
        "reference (openssl, same run): rsa2048 private ops/s {rsa_private:.0}; aes-256-cbc {aes_mbs:.0} MB/s"
    );
    // The engine's own RSA-2048 private operation (AWS-LC), to split library from message cost.
    let engine_rsa = rate(|| {
        key.sign(
            sealgate_smime::keys::SignScheme::RsaPkcs1(sealgate_smime::crypto::HashAlg::Sha256),
            b"x",
        )
        .unwrap();
    });
    println!(
        "engine (aws-lc) rsa2048 private ops/s {engine_rsa:.0} = {:.2} of openssl",
        engine_rsa / rsa_private
    );
    println!();
    println!(
        "{:<10} {:>8} {:>12} {:>10}",
        "operation", "size", "messages/s", "MB/s"
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
            let r = rate(&mut op);
            let mbs = r * size as f64 / 1e6;
            println!("{name:<10} {label:>8} {r:>12.1} {mbs:>10.1}");
            if name == "decrypt" && size == 4096 {
                decrypt_4k = r;
            }
            if size > 4096 {
                big.push((name, mbs));
            }
        }
    }
    println!();
    println!("ratios (one core):");
    println!(
        "  4 KiB decrypt / openssl rsa2048 private ops: {:.2} (target >= 0.90)",
        decrypt_4k / rsa_private
    );
    println!(
        "  4 KiB decrypt / engine rsa2048 private ops:  {:.2} (message overhead)",
        decrypt_4k / engine_rsa
    );
    for (name, mbs) in big {
        println!(
            "  1 MiB {name:<8} {mbs:>7.0} MB/s = {:.2} of 300 MB/s target, {:.2} of openssl aes-256-cbc",
            mbs / 300.0,
            mbs / aes_mbs
        );
    }
}
