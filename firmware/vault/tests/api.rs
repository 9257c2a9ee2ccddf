//! The vault's library API as the daemon uses it (software sealer, no external tools):
//! engine round trips through `VaultKey`, renewal, auto-enrolment, audit, no secrets in
//! `Debug`, and the in-process timings of opening and issuing.

use std::time::Instant;

use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::Recipient;
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;
use sealgate_vault::{CaSettings, KeyAlgorithm, SoftwareSealer, Vault, VaultError};

fn encrypt_to(vault: &Vault, user: &str, text: &[u8]) -> Vec<u8> {
    let cert = vault.certificate(user).expect("certificate");
    message::encrypt_message(
        text,
        &[Recipient::new(cert).expect("recipient")],
        CipherChoice::Aes256Cbc,
    )
    .expect("encrypt")
}

fn decrypt_as(vault: &Vault, user: &str, data: &[u8]) -> Vec<u8> {
    let keys = vault.keys_for(user).expect("keys");
    let refs: Vec<&dyn PrivateKey> = keys.iter().map(|k| k as &dyn PrivateKey).collect();
    message::open(data, &refs, &VerifyOptions::default(), OpenMode::Decrypt)
        .expect("open")
        .output
}

#[test]
fn vault_keys_work_with_the_engine() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (vault, secret) = Vault::init(tmp.path(), &mut SoftwareSealer::danger_new()).expect("init");
    assert_eq!(format!("{secret:?}"), "RecoverySecret(..)");
    let settings = CaSettings {
        org_domains: vec!["example.org".into()],
        ..CaSettings::default()
    };
    vault.ca_init("Test CA", &settings).expect("ca");

    let start = Instant::now();
    vault.ca_issue("ann@example.org").expect("issue");
    eprintln!(
        "timing: in-process ca_issue RSA-3072: {:?}",
        start.elapsed()
    );

    let enc = encrypt_to(
        &vault,
        "ann@example.org",
        b"Subject: x\r\n\r\nhello ann\r\n",
    );
    assert!(
        String::from_utf8_lossy(&decrypt_as(&vault, "ann@example.org", &enc)).contains("hello ann")
    );
    let key = vault.signing_key("ann@example.org").expect("signing key");
    assert!(
        !format!("{key:?}").contains("encrypted"),
        "Debug shows no key bytes"
    );
    let signed =
        message::sign_message(b"Subject: s\r\n\r\nbody\r\n", &key, false, 0).expect("sign");
    let (_, verdict) =
        message::verify_message(&signed, None, &VerifyOptions::default()).expect("verify");
    // No trust anchor given: the signature verifies, and the verdict is never `valid`.
    assert!(verdict.signatures_valid && !verdict.valid);

    // Renewal: a new key signs; the old one still decrypts old mail.
    vault.ca_issue("ann@example.org").expect("renew");
    let keys = vault.list(Some("ann@example.org")).expect("list");
    assert_eq!(keys.iter().filter(|k| k.status == "active").count(), 1);
    assert_eq!(keys.iter().filter(|k| k.status == "retired").count(), 1);
    assert!(
        String::from_utf8_lossy(&decrypt_as(&vault, "ann@example.org", &enc)).contains("hello ann")
    );

    // Auto-enrolment only for the organisation's domains.
    assert!(vault.ensure_key("new@example.org").expect("ensure"));
    assert!(!vault.ensure_key("new@example.org").expect("ensure again"));
    assert!(matches!(
        vault.ensure_key("x@other.net"),
        Err(VaultError::NoKey(_))
    ));

    // Separate keys and P-256 as settings.
    let s2 = CaSettings {
        key_algorithm: KeyAlgorithm::P256,
        separate_keys: true,
        ..settings
    };
    vault.set_ca_settings(&s2).expect("settings");
    let start = Instant::now();
    let certs = vault.ca_issue("ec@example.org").expect("issue ec");
    eprintln!(
        "timing: in-process ca_issue 2x P-256 (separate keys): {:?}",
        start.elapsed()
    );
    assert_eq!(certs.len(), 2);
    let enc = encrypt_to(&vault, "ec@example.org", b"Subject: e\r\n\r\nhello ec\r\n");
    assert!(
        String::from_utf8_lossy(&decrypt_as(&vault, "ec@example.org", &enc)).contains("hello ec")
    );
    assert_eq!(
        vault.signing_key("ec@example.org").expect("sk").purpose(),
        sealgate_vault::Purpose::Signing
    );

    let audit = vault.audit().expect("audit verifies");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "ca.issue" && e.subject == "ann@example.org")
    );
    assert_eq!(
        vault.verify().expect("verify"),
        vault.list(None).expect("list").len()
    );
    drop(vault);

    let start = Instant::now();
    let vault = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
    eprintln!(
        "timing: in-process Vault::open (software sealer): {:?}",
        start.elapsed()
    );
    vault.check_audit().expect("the keyed chain verifies");
    drop(vault);
    let st = Vault::status(tmp.path()).expect("status");
    assert!(
        st.warnings
            .iter()
            .any(|w| w == "software sealer: NOT protected by a TPM")
    );
    assert!(st.audit_entries > 0);
}
