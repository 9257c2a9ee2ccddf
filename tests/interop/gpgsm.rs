//! Interop with gpgsm 2.2 (Debian package `gpgsm`), both directions.
//!
//! Each test gets its own GNUPGHOME (loopback pinentry, no CRL checks, the test root in
//! trustlist.txt, alice's `-legacy` PKCS#12 imported: gpgsm 2.2 imports nothing newer)
//! and stops its gpg-agent when done.
//!
//! What gpgsm 2.2 cannot do, so there is no test of it: decrypt AuthEnvelopedData (AES-GCM)
//! or RSA-OAEP, and encrypt to EC (ECDH) recipients. sealctl → gpgsm therefore uses
//! AES-256-CBC and RSA PKCS#1 v1.5, the defaults every tested client decrypts.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// A temporary GnuPG home for gpgsm, its agent stopped on drop.
struct GnupgHome {
    dir: tempfile::TempDir,
}

impl GnupgHome {
    /// Sets up the home: config files, trust in the test root, certificates and alice's key.
    fn new() -> Self {
        require_tool("gpgsm", "gpgsm");
        require_tool("gpg-agent", "gnupg");
        require_tool("gpgconf", "gnupg");
        let pki = pki();
        // Unix socket paths are limited to 108 bytes: keep the home short, under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("sg-gpgsm-")
            .tempdir()
            .unwrap();
        let home = dir.path();
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        write(&home.join("gpg-agent.conf"), "allow-loopback-pinentry\n");
        write(
            &home.join("gpgsm.conf"),
            "disable-crl-checks\ndisable-dirmngr\n",
        );
        let fpr = openssl_ok(
            [
                "x509",
                "-in",
                p(&pki.root),
                "-noout",
                "-fingerprint",
                "-sha1",
            ],
            None,
        )
        .stdout_str();
        let fpr = fpr.trim().rsplit('=').next().unwrap().to_string();
        write(&home.join("trustlist.txt"), format!("{fpr} S relax\n"));
        let h = GnupgHome { dir };
        // The agent started and answering before gpgsm needs it: a passphrase read while it
        // is still starting is lost (seen on a loaded machine, every retry at once failing).
        let launched = Command::new("gpgconf")
            .env("GNUPGHOME", h.path())
            .args(["--launch", "gpg-agent"])
            .status()
            .expect("gpgconf --launch gpg-agent (Debian package gnupg)");
        assert!(launched.success(), "gpgconf --launch gpg-agent failed");
        h.gpgsm(&["--import", p(&pki.root)], None).ok();
        h.gpgsm(&["--import", p(&pki.intermediate)], None).ok();
        // Still retried (bounded, with a growing pause): the loss was also seen just after
        // the agent started.
        let mut imported = h.gpgsm(&["--import", p(&pki.alice.p12_legacy)], None);
        for attempt in 1..=4 {
            if imported.code == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500 * attempt));
            imported = h.gpgsm(&["--import", p(&pki.alice.p12_legacy)], None);
        }
        assert_eq!(
            imported.code, 0,
            "gpgsm --import of the PKCS#12 failed: {}",
            imported.stderr
        );
        h
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs gpgsm in batch mode against this home.
    fn gpgsm(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut cmd = Command::new("gpgsm");
        // The passphrase (for the PKCS#12 import and later for the imported key) comes
        // on stdin: gpgsm 2.2 has --passphrase-fd but no --passphrase.
        cmd.env("GNUPGHOME", self.path())
            .args([
                "--batch",
                "--no-tty",
                "--status-fd",
                "2",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
            ])
            .args(args);
        let pass = format!("{P12_PASSWORD}\n");
        run(&mut cmd, Some(stdin.unwrap_or(pass.as_bytes())))
    }
}

impl Drop for GnupgHome {
    fn drop(&mut self) {
        // Stops the gpg-agent that gpgsm started for this home (it looks its PID up from
        // the home's socket); no stray daemons.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.path())
            .args(["--kill", "all"])
            .status();
    }
}

fn tmpfile(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let f = dir.join(name);
    write(&f, data);
    f
}

/// gpgsm encrypts (bare BER CMS), sealctl decrypts it to the exact plaintext.
#[track_caller]
fn gpgsm_encrypts(cipher: Option<&str>, armor: bool) {
    let pki = pki();
    let g = GnupgHome::new();
    let dir = tempdir();
    let input = tmpfile(dir.path(), "entity.txt", &entity(BODY));
    let out = dir.path().join("enc.p7m");
    let mut args = vec![
        "--encrypt",
        "-r",
        pki.alice.email.as_str(),
        "--output",
        p(&out),
    ];
    if let Some(c) = cipher {
        args.extend(["--cipher-algo", c]);
    }
    if armor {
        args.push("--armor");
    }
    args.push(p(&input));
    g.gpgsm(&args, None).ok();
    let enc = read(&out);
    let mut dargs = vec!["smime".to_string(), "decrypt".to_string()];
    dargs.extend(key_args(&pki.alice));
    let dec = sealctl(&dargs, Some(&enc)).ok();
    assert_eq!(
        String::from_utf8_lossy(&dec.stdout),
        String::from_utf8_lossy(&entity(BODY))
    );
}

#[test]
fn gpgsm_encrypts_default_cipher_sealctl_decrypts() {
    gpgsm_encrypts(None, false);
}

#[test]
fn gpgsm_encrypts_aes256_sealctl_decrypts() {
    gpgsm_encrypts(Some("AES256"), false);
}

#[test]
fn gpgsm_encrypts_3des_sealctl_decrypts() {
    gpgsm_encrypts(Some("3DES"), false);
}

/// `--armor` gives PEM-like "-----BEGIN SIGNED MESSAGE-----" style base64.
#[test]
fn gpgsm_encrypts_armored_sealctl_decrypts() {
    gpgsm_encrypts(Some("AES256"), true);
}

/// gpgsm as a mail client would send it: the bare CMS wrapped in an
/// application/pkcs7-mime message by us.
#[test]
fn gpgsm_encrypts_wrapped_in_mime_sealctl_decrypts() {
    use base64::Engine;
    let pki = pki();
    let g = GnupgHome::new();
    let dir = tempdir();
    let input = tmpfile(dir.path(), "entity.txt", &entity(BODY));
    let out = dir.path().join("enc.p7m");
    g.gpgsm(
        &[
            "--encrypt",
            "-r",
            &pki.alice.email,
            "--output",
            p(&out),
            p(&input),
        ],
        None,
    )
    .ok();
    let b64 = base64::engine::general_purpose::STANDARD.encode(read(&out));
    let mut msg = String::from(
        "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: from gpgsm\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=smime.p7m\r\n\r\n",
    );
    for chunk in b64.as_bytes().chunks(76) {
        msg.push_str(std::str::from_utf8(chunk).unwrap());
        msg.push_str("\r\n");
    }
    let mut dargs = vec!["smime".to_string(), "decrypt".to_string()];
    dargs.extend(key_args(&pki.alice));
    let dec = sealctl(&dargs, Some(msg.as_bytes())).ok();
    let (headers, _) = split_message(&dec.stdout);
    assert_eq!(header(&headers, "subject"), Some("from gpgsm"));
    assert_same_entity(&dec.stdout, &entity(BODY), "decrypted gpgsm message");
}

/// sealctl encrypts with what gpgsm 2.2 reads; gpgsm decrypts the CMS body.
#[test]
fn sealctl_encrypts_aes256_cbc_gpgsm_decrypts() {
    let pki = pki();
    let g = GnupgHome::new();
    let msg = message(
        "Bob <bob@example.test>",
        "Alice <alice@example.test>",
        "to gpgsm",
        BODY,
    );
    let out = sealctl(
        [
            "smime",
            "encrypt",
            "--to",
            p(&pki.alice.cert),
            "--cipher",
            "aes256-cbc",
        ],
        Some(&msg),
    )
    .ok();
    let dir = tempdir();
    let cms = tmpfile(dir.path(), "enc.p7m", &base64_body(&out.stdout));
    let dec = dir.path().join("dec.txt");
    g.gpgsm(&["--decrypt", "--output", p(&dec), p(&cms)], None)
        .ok();
    assert_same_entity(&read(&dec), &entity(BODY), "gpgsm --decrypt");
}

/// gpgsm signs with a detached signature; sealctl verifies it with `--content`.
#[test]
fn gpgsm_signs_detached_sealctl_verifies() {
    let pki = pki();
    let g = GnupgHome::new();
    let dir = tempdir();
    let content = tmpfile(dir.path(), "entity.txt", &entity(BODY));
    let sig = dir.path().join("sig.p7s");
    g.gpgsm(
        &[
            "--detach-sign",
            "--include-certs",
            "-1",
            "-u",
            &pki.alice.email,
            "--output",
            p(&sig),
            p(&content),
        ],
        None,
    )
    .ok();
    let out = sealctl(
        [
            "smime",
            "verify",
            "--ca",
            p(&pki.root),
            "--content",
            p(&content),
            "--in",
            p(&sig),
        ],
        None,
    )
    .ok();
    out.json();
}

/// gpgsm signs opaquely (signed-data with the content inside); sealctl verifies and
/// returns the content.
#[test]
fn gpgsm_signs_opaque_sealctl_verifies() {
    let pki = pki();
    let g = GnupgHome::new();
    let dir = tempdir();
    let content = tmpfile(dir.path(), "entity.txt", &entity(BODY));
    let signed = dir.path().join("signed.p7m");
    g.gpgsm(
        &[
            "--sign",
            "--include-certs",
            "-1",
            "-u",
            &pki.alice.email,
            "--output",
            p(&signed),
            p(&content),
        ],
        None,
    )
    .ok();
    let got = dir.path().join("content.out");
    let out = sealctl(
        [
            "smime",
            "verify",
            "--ca",
            p(&pki.root),
            "--in",
            p(&signed),
            "--out",
            p(&got),
        ],
        None,
    )
    .ok();
    out.json();
    assert_eq!(read(&got), entity(BODY), "opaque content out");
}

/// sealctl signs (multipart/signed); gpgsm verifies the signature part over the first
/// part's exact bytes.
#[test]
fn sealctl_signs_detached_gpgsm_verifies() {
    let pki = pki();
    let g = GnupgHome::new();
    let msg = message(
        "Alice <alice@example.test>",
        "Bob <bob@example.test>",
        "for gpgsm",
        BODY,
    );
    let out = sealctl(
        [
            "smime",
            "sign",
            "--key",
            p(&pki.alice.key),
            "--cert",
            p(&pki.alice.chain),
        ],
        Some(&msg),
    )
    .ok();
    let parts = multipart_parts(&out.stdout);
    assert_eq!(parts.len(), 2, "multipart/signed must have two parts");
    let dir = tempdir();
    let content = tmpfile(dir.path(), "content.txt", &parts[0]);
    let sig = tmpfile(dir.path(), "sig.p7s", &base64_body(&parts[1]));
    let v = g.gpgsm(&["--verify", p(&sig), p(&content)], None).ok();
    assert!(v.stderr.contains("GOODSIG"), "gpgsm says: {}", v.stderr);
    assert!(
        v.stderr.contains("TRUST_FULLY") || v.stderr.contains("VALIDSIG"),
        "gpgsm: {}",
        v.stderr
    );
}

/// sealctl signs opaquely; gpgsm verifies and outputs the content.
#[test]
fn sealctl_signs_opaque_gpgsm_verifies() {
    let pki = pki();
    let g = GnupgHome::new();
    let msg = message(
        "Alice <alice@example.test>",
        "Bob <bob@example.test>",
        "for gpgsm",
        BODY,
    );
    let out = sealctl(
        [
            "smime",
            "sign",
            "--opaque",
            "--p12",
            p(&pki.alice.p12_legacy),
            "--password-file",
            p(&pki.password_file),
        ],
        Some(&msg),
    )
    .ok();
    let dir = tempdir();
    let signed = tmpfile(dir.path(), "signed.p7m", &base64_body(&out.stdout));
    let content = dir.path().join("content.out");
    let v = g
        .gpgsm(&["--verify", "--output", p(&content), p(&signed)], None)
        .ok();
    assert!(v.stderr.contains("GOODSIG"), "gpgsm says: {}", v.stderr);
    assert_same_entity(&read(&content), &entity(BODY), "gpgsm opaque content");
}
