//! Signature verdicts and per-message work limits through the daemon: the box's own CA's
//! revocations reach verification, no verdict is `valid` without a checked chain, SHA-1 fails
//! unless `[docking] allow_weak_signatures`, and `[limits] max_recipient_entries` bounds what
//! one message can make the box's keys do.

use std::process::Command;

use sealgate_vault::{CaSettings, SoftwareSealer, Vault};

use crate::harness::{Daemon, Pki, create_token, data_dir_with_keys, run, write};

fn verify(d: &Daemon, token: &str, msg: &[u8]) -> serde_json::Value {
    let (code, _, body) = d.curl("POST", "/api/v1/verify", Some(token), &[], Some(msg));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("json")
}

fn open_vault(dir: &std::path::Path) -> Vault {
    Vault::open(dir, &mut SoftwareSealer::danger_new()).expect("open vault")
}

/// A message signed by `user` with `openssl cms -sign -md MD` (S/MIME, with From/To).
fn openssl_signed(pki: &Pki, user: &str, md: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "entity.txt",
        b"Content-Type: text/plain\r\n\r\nsigned by openssl\r\n",
    );
    run(Command::new("openssl")
        .args(["cms", "-sign", "-md", md, "-in"])
        .arg(&input)
        .arg("-signer")
        .arg(pki.cert(user))
        .arg("-inkey")
        .arg(pki.key(user))
        .args([
            "-from",
            user,
            "-to",
            "bob@example.org",
            "-subject",
            "signed",
        ]))
    .stdout
}

#[test]
fn revocations_of_the_box_ca_reach_verification() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    {
        let vault = open_vault(dir.path());
        vault
            .ca_init("Box CA", &CaSettings::default())
            .expect("ca init");
        vault.ca_issue("dana@example.org").expect("issue");
    }
    let token = create_token(dir.path(), "gw", "sign,verify");
    let clear = pki.message(
        "dana@example.org",
        "carol@example.org",
        "revocation",
        "signed by dana",
    );
    let mut d = Daemon::start(dir.path(), "");
    let (code, _, signed) = d.curl("POST", "/api/v1/sign", Some(&token), &[], Some(&clear));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&signed));
    let v = verify(&d, &token, &signed);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["chain"], "checked", "{v}");
    d.terminate();

    open_vault(dir.path())
        .ca_revoke_user("dana@example.org")
        .expect("revoke");
    let d = Daemon::start(dir.path(), "");
    let v = verify(&d, &token, &signed);
    assert_eq!(v["valid"], false, "a revoked signer must not be valid: {v}");
    assert!(v.to_string().contains("revoked"), "{v}");
}

#[test]
fn unchecked_chains_weak_signatures_and_recipient_entry_limits() {
    let pki = Pki::new();
    let dir = data_dir_with_keys(&pki);
    let token = create_token(dir.path(), "gw", "decrypt,verify");
    let sha256 = openssl_signed(&pki, "alice@example.org", "sha256");
    let sha1 = openssl_signed(&pki, "alice@example.org", "sha1");
    let clear = pki.message(
        "carol@example.org",
        "alice@example.org",
        "entries",
        "the secret is 42",
    );
    let three = pki.openssl_encrypt(
        &clear,
        &[
            "alice@example.org",
            "alice@example.org",
            "alice@example.org",
        ],
    );

    // No trust anchor at all (no vault CA, none configured): never `valid`.
    let mut d = Daemon::start(dir.path(), "[docking]\nallow_weak_signatures = true\n");
    let v = verify(&d, &token, &sha256);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["chain"], "unchecked", "{v}");
    assert_eq!(v["verification"]["signatures_valid"], true, "{v}");
    // Allowed weak: SHA-1 verifies (still listed as weak).
    let anchors = format!("trust_anchors = \"{}\"\n", pki.path("ca.crt").display());
    d.terminate();
    let mut d = Daemon::start(
        dir.path(),
        &format!("[docking]\nallow_weak_signatures = true\n{anchors}"),
    );
    let v = verify(&d, &token, &sha1);
    assert_eq!(v["valid"], true, "{v}");
    assert!(v.to_string().contains("sha-1"), "{v}");
    // Three entries are fine by default.
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&three));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    d.terminate();

    // The defaults: SHA-1 fails; and a limit of 2 recipient entries refuses the message.
    let d = Daemon::start(
        dir.path(),
        &format!("[docking]\n{anchors}[limits]\nmax_recipient_entries = 2\n"),
    );
    let v = verify(&d, &token, &sha256);
    assert_eq!(v["valid"], true, "{v}");
    let v = verify(&d, &token, &sha1);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["verification"]["signers"][0]["signature"], "weak", "{v}");
    let (code, _, body) = d.curl("POST", "/api/v1/decrypt", Some(&token), &[], Some(&three));
    assert_eq!(code, 422, "{}", String::from_utf8_lossy(&body));
    let p: serde_json::Value = serde_json::from_slice(&body).expect("problem");
    assert_eq!(p["type"], "https://sealgate.example/problems/unsupported");
}
