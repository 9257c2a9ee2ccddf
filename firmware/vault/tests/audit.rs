//! Every key use is audited: decrypt and sign through a `VaultKey` append entries (who, what,
//! which key, when; never content or key material) to the hash-chained log, in batches that
//! are written by size, on read, and when the vault and its keys are dropped.

use std::time::Duration;

use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::Recipient;
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;
use sealgate_vault::{CaSettings, KeyAlgorithm, SoftwareSealer, Vault};

const SECRET_TEXT: &str = "the quarterly numbers";

fn decrypt(vault: &Vault, user: &str, enc: &[u8]) -> Vec<u8> {
    let keys = vault.keys_for(user).expect("keys");
    let refs: Vec<&dyn PrivateKey> = keys.iter().map(|k| k as &dyn PrivateKey).collect();
    message::open(enc, &refs, &VerifyOptions::default(), OpenMode::Decrypt)
        .expect("open")
        .output
}

#[test]
fn decrypt_and_sign_are_audited_with_actor_key_and_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut vault, _) = Vault::init(tmp.path(), &mut SoftwareSealer::danger_new()).expect("init");
    let settings = CaSettings {
        key_algorithm: KeyAlgorithm::P256,
        ..CaSettings::default()
    };
    vault.ca_init("Audit CA", &settings).expect("ca");
    vault.ca_issue("ann@example.org").expect("issue");
    let record = vault.list(Some("ann@example.org")).expect("list")[0].id;
    let enc = message::encrypt_message(
        format!("Subject: q\r\n\r\n{SECRET_TEXT}\r\n").as_bytes(),
        &[Recipient::new(vault.certificate("ann@example.org").expect("cert")).expect("r")],
        CipherChoice::Aes256Cbc,
    )
    .expect("encrypt");

    vault.set_actor("smtp:inbound");
    let start = sealgate_smime_now();
    assert!(
        String::from_utf8_lossy(&decrypt(&vault, "ann@example.org", &enc)).contains(SECRET_TEXT)
    );
    let mut key = vault.signing_key("ann@example.org").expect("signing key");
    key.set_actor("smtp:outbound");
    message::sign_message(b"Subject: s\r\n\r\nbody\r\n", &key, false, 0).expect("sign");

    let log = vault.audit().expect("audit verifies");
    let dec: Vec<_> = log.iter().filter(|e| e.action == "key.decrypt").collect();
    let sig: Vec<_> = log.iter().filter(|e| e.action == "key.sign").collect();
    assert_eq!(dec.len(), 1, "{log:#?}");
    assert_eq!(sig.len(), 1, "{log:#?}");
    assert_eq!(dec[0].actor, "smtp:inbound");
    assert_eq!(dec[0].subject, "ann@example.org");
    assert_eq!(dec[0].detail, format!("record={record} op=ecdh"));
    assert!(dec[0].time >= start - 1);
    assert_eq!(sig[0].actor, "smtp:outbound");
    assert_eq!(sig[0].detail, format!("record={record} op=ecdsa"));
    // Never content or key material: the entries are exactly the fields above.
    let json = serde_json::to_string(&log).expect("json");
    assert!(!json.contains(SECRET_TEXT));
    assert!(!json.contains("PRIVATE"));

    // Batched: nothing is lost when the vault and its keys are dropped.
    vault.set_use_audit_batch(1000, Duration::from_secs(3600));
    for _ in 0..5 {
        decrypt(&vault, "ann@example.org", &enc);
    }
    drop(key);
    drop(vault);
    let vault = Vault::open(tmp.path(), &mut SoftwareSealer::danger_new()).expect("open");
    vault.check_audit().expect("the keyed chain verifies");
    let log = vault.audit().expect("audit");
    assert_eq!(
        log.iter().filter(|e| e.action == "key.decrypt").count(),
        6,
        "the buffered uses were written at drop"
    );
    // The chain interleaves uses and changes in order.
    vault.ca_issue("bob@example.org").expect("issue");
    decrypt(&vault, "ann@example.org", &enc);
    vault.ca_issue("cy@example.org").expect("issue");
    let log = vault.audit().expect("audit");
    let tail: Vec<&str> = log
        .iter()
        .rev()
        .take(3)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(tail, ["ca.issue", "key.decrypt", "ca.issue"]);
    assert_eq!(vault.verify().expect("verify"), 3);
}

fn sealgate_smime_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
