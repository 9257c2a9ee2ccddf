//! Helpers shared by the vault tests: run the built `sealctl`, run `openssl`.

#![allow(dead_code, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const SEALCTL: &str = env!("CARGO_BIN_EXE_sealctl");
pub const SW: &str = "--danger-software-sealer";

/// Runs sealctl; returns the output whatever the exit code.
///
/// `TSS2_LOG` is removed from the environment: sealctl itself must keep libtss2's own
/// WARNING/ERROR lines off stderr (`sealgate_tpm::quiet_library_logging`).
pub fn sealctl(args: &[&str]) -> Output {
    Command::new(SEALCTL)
        .args(args)
        .env_remove("TSS2_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sealctl")
}

/// Runs sealctl and requires success; returns stdout.
pub fn ok(args: &[&str]) -> Vec<u8> {
    let out = sealctl(args);
    assert!(
        out.status.success(),
        "sealctl {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs sealctl and requires failure with exit code 1 and one line on stderr; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = sealctl(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "sealctl {args:?}: expected exit 1, stderr: {err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Runs openssl in `dir`; fails the test with the Debian package name if it is missing.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install the Debian package `openssl`")
        })
}

pub fn openssl_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Checks that the openssl command line is version 3.
pub fn require_openssl3(dir: &Path) {
    let v = String::from_utf8_lossy(&openssl_ok(dir, &["version"])).to_string();
    assert!(
        v.starts_with("OpenSSL 3"),
        "these tests need OpenSSL 3.x, found {v}"
    );
}

/// A self-signed RSA certificate for `email` (key.pem/cert.pem names given).
pub fn make_user(dir: &Path, name: &str, email: &str, ec: bool) {
    let key = format!("{name}.key");
    let cert = format!("{name}.pem");
    if ec {
        openssl_ok(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ],
        );
    } else {
        openssl_ok(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ],
        );
    }
    openssl_ok(
        dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            &key,
            "-out",
            &cert,
            "-days",
            "30",
            "-subj",
            &format!("/CN={email}"),
            "-addext",
            &format!("subjectAltName=email:{email}"),
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment,keyAgreement",
            "-addext",
            "extendedKeyUsage=emailProtection",
        ],
    );
}

/// Encrypts `text` to `cert` with openssl cms and decrypts it through the vault.
pub fn roundtrip_through_vault(
    dir: &Path,
    data_dir: &str,
    sealer: &[&str],
    user: &str,
    cert: &str,
    text: &str,
) {
    let msg = dir.join(format!("{user}.msg"));
    std::fs::write(&msg, text).expect("write msg");
    let enc = format!("{user}.p7m");
    openssl_ok(
        dir,
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            msg.to_str().expect("utf8"),
            "-out",
            &enc,
            cert,
        ],
    );
    let mut args = vec![
        "smime",
        "decrypt",
        "--data-dir",
        data_dir,
        "--user",
        user,
        "--in",
    ];
    let enc_path = dir.join(&enc);
    let enc_s = enc_path.to_str().expect("utf8").to_string();
    args.push(&enc_s);
    args.extend_from_slice(sealer);
    let out = ok(&args);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains(text.trim()),
        "decrypted output lacks the text: {out}"
    );
}
