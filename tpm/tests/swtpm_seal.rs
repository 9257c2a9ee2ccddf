//! Seal/unseal against a real (software) TPM: one swtpm per test, in its own temp dir.

use std::time::Instant;

use sealgate_tpm::swtpm::Swtpm;
use sealgate_tpm::{
    PcrSelection, SealedBlob, Tpm, TpmError, WrongAuth, pcr_extend_sha256, policy_pcr_digest,
};

const SECRET: [u8; 32] = *b"0123456789abcdef0123456789ABCDEF";

fn swtpm() -> (tempfile::TempDir, Swtpm) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tpm = Swtpm::start(dir.path()).expect("start swtpm (Debian package `swtpm`)");
    (dir, tpm)
}

fn measurement(tag: &str) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..tag.len()].copy_from_slice(tag.as_bytes());
    d
}

#[test]
fn seal_unseal_round_trip() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let blob = tpm.seal(&SECRET, &PcrSelection::default()).expect("seal");
    assert_eq!(blob.pcrs().indices(), vec![7]);

    // What the vault stores on disk, read back.
    let bytes = blob.to_bytes();
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET),
        "the sealed blob must not contain the secret in clear"
    );
    let blob = SealedBlob::from_bytes(&bytes).expect("parse blob");
    assert!(!format!("{blob:?}").contains("0123456789"));

    let secret = tpm.unseal(&blob).expect("unseal");
    assert_eq!(*secret, SECRET);

    // A fresh connection (new storage key from the same seed) unseals too.
    drop(tpm);
    let mut tpm = sw.connect().expect("reconnect");
    assert_eq!(*tpm.unseal(&blob).expect("unseal again"), SECRET);
}

#[test]
fn several_pcrs_round_trip() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let sel: PcrSelection = "0,2,7,16".parse().expect("selection");
    let blob = tpm.seal(&SECRET, &sel).expect("seal");
    assert_eq!(*tpm.unseal(&blob).expect("unseal"), SECRET);
    // A PCR that is not in the selection may change freely.
    sw.extend_pcr(3, &measurement("pcr3")).expect("extend 3");
    assert_eq!(*tpm.unseal(&blob).expect("unseal after PCR 3"), SECRET);
    // One that is, may not.
    sw.extend_pcr(16, &measurement("pcr16")).expect("extend 16");
    assert_eq!(tpm.unseal(&blob).err(), Some(TpmError::PolicyMismatch));
}

#[test]
fn extending_pcr7_makes_unseal_fail_clearly() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let blob = tpm.seal(&SECRET, &PcrSelection::default()).expect("seal");
    sw.extend_pcr7(&measurement("secure boot db changed"))
        .expect("extend");

    let err = tpm
        .unseal(&blob)
        .expect_err("unseal must fail after PCR 7 changed");
    assert_eq!(err, TpmError::PolicyMismatch);
    let text = err.to_string();
    assert!(
        text.contains("measured state of this box changed"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("0123456789"));
}

#[test]
fn restarted_swtpm_with_kept_state_unseals_again() {
    let (_dir, mut sw) = swtpm();
    let blob = {
        let mut tpm = sw.connect().expect("connect");
        tpm.seal(&SECRET, &PcrSelection::default()).expect("seal")
    };
    // Change PCR 7, then "reboot": the PCR starts from its boot value again.
    sw.extend_pcr7(&measurement("transient")).expect("extend");
    assert_eq!(
        sw.connect().expect("connect").unseal(&blob).err(),
        Some(TpmError::PolicyMismatch)
    );
    sw.restart().expect("restart swtpm");
    let mut tpm = sw.connect().expect("connect after restart");
    assert_eq!(*tpm.unseal(&blob).expect("unseal after restart"), SECRET);

    // Another TPM (fresh state, other seeds) cannot even load the blob.
    let (_dir2, other) = swtpm();
    let err = other
        .connect()
        .expect("connect other")
        .unseal(&blob)
        .expect_err("another TPM must not unseal");
    assert!(matches!(err, TpmError::ForeignBlob { .. }), "{err}");
}

#[test]
fn wrong_auth_attempts_do_not_lock_out() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let good = tpm.seal(&SECRET, &PcrSelection::default()).expect("seal");
    // A blob for PCR values that do not hold: every unseal of it fails its policy.
    let bad = tpm
        .seal_for_predicted(&SECRET, &PcrSelection::default(), &[(7, [0x5A; 32])])
        .expect("seal for other values");

    for i in 0..20 {
        assert_eq!(
            tpm.unseal(&bad).err(),
            Some(TpmError::PolicyMismatch),
            "attempt {i}"
        );
        assert_eq!(
            tpm.wrong_auth_attempt(true).expect("attempt"),
            WrongAuth::BadAuth,
            "attempt {i} against a noDA key"
        );
    }
    assert_eq!(tpm.lockout_counter().expect("lockout counter"), 0);
    assert_eq!(
        *tpm.unseal(&good).expect("unseal after 40 failures"),
        SECRET
    );

    // Control: the counter does move for a key without noDA, so the check above means something.
    assert_eq!(
        tpm.wrong_auth_attempt(false).expect("attempt"),
        WrongAuth::AuthFail
    );
    assert_eq!(tpm.lockout_counter().expect("lockout counter"), 1);
    // ...and the vault key still unseals (its objects are noDA).
    assert_eq!(*tpm.unseal(&good).expect("unseal"), SECRET);
}

#[test]
fn reseal_for_predicted_pcr_values_survives_the_update() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let sel = PcrSelection::default();
    let current = tpm.seal(&SECRET, &sel).expect("seal");

    // Update commit: the old values still hold; predict PCR 7 after the new boot chain.
    let update_event = measurement("new shim + db");
    let values = tpm.read_pcrs(&sel).expect("read");
    assert_eq!(values.len(), 1);
    let (index, now) = values[0];
    assert_eq!(index, 7);
    let predicted = pcr_extend_sha256(&now, &update_event);
    let next = tpm
        .seal_for_predicted(&SECRET, &sel, &[(7, predicted)])
        .expect("seal for predicted");
    // Before the reboot only the current blob opens.
    assert_eq!(tpm.unseal(&next).err(), Some(TpmError::PolicyMismatch));
    assert_eq!(*tpm.unseal(&current).expect("current"), SECRET);

    // "Reboot into the update": PCR 7 takes the predicted value.
    let after = sw.extend_pcr7(&update_event).expect("extend");
    assert_eq!(after, predicted);
    assert_eq!(*tpm.unseal(&next).expect("unseal predicted"), SECRET);
    assert_eq!(tpm.unseal(&current).err(), Some(TpmError::PolicyMismatch));
}

#[test]
fn offline_policy_digest_matches_trial_session() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    for sel in ["7", "0,7", "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,23"] {
        let sel: PcrSelection = sel.parse().expect("selection");
        for round in 0..2 {
            let values = tpm.read_pcrs(&sel).expect("read");
            assert_eq!(values.len(), sel.indices().len());
            let offline = policy_pcr_digest(&sel, &values).expect("offline digest");
            let trial = tpm.trial_policy_digest(&sel).expect("trial digest");
            assert_eq!(offline, trial, "selection {sel}, round {round}");
            // Make some PCRs non-zero for the next round.
            sw.extend_pcr(7, &measurement("x")).expect("extend 7");
            sw.extend_pcr(0, &measurement("y")).expect("extend 0");
        }
    }
}

#[test]
fn read_all_24_pcrs() {
    let (_dir, sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    let all: Vec<u32> = (0..=23).collect();
    let sel = PcrSelection::sha256(&all).expect("selection");
    let values = tpm.read_pcrs(&sel).expect("read");
    assert_eq!(values.iter().map(|(i, _)| *i).collect::<Vec<_>>(), all);
    let extended = sw.extend_pcr(12, &measurement("twelve")).expect("extend");
    let values = tpm.read_pcrs(&sel).expect("read");
    assert_eq!(values[12], (12, extended));
    assert_eq!(
        extended,
        pcr_extend_sha256(&[0; 32], &measurement("twelve"))
    );
}

#[test]
fn bad_tcti_gives_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-sock");
    let err = Tpm::connect(&format!("swtpm:path={}", missing.display())).expect_err("no socket");
    assert!(matches!(err, TpmError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("no-such-sock"), "{err}");

    let err = Tpm::connect("device:/nonexistent/tpmrm9").expect_err("no device");
    assert!(err.to_string().contains("/nonexistent/tpmrm9"), "{err}");

    for bad in ["bogus", "swtpm:sock=/x", "device:relative/path", ""] {
        let err = Tpm::connect(bad).expect_err(bad);
        assert!(matches!(err, TpmError::InvalidTcti { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("swtpm:path=SOCKET"), "{err}");
    }

    // A TCP port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = Tpm::connect(&format!("swtpm:host=127.0.0.1,port={port}")).expect_err("closed port");
    assert!(matches!(err, TpmError::Unreachable { .. }), "{err}");
}

#[test]
fn connect_and_unseal_timing() {
    let (_dir, sw) = swtpm();
    let blob = sw
        .connect()
        .expect("connect")
        .seal(&SECRET, &PcrSelection::default())
        .expect("seal");
    let mut times = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let mut tpm = sw.connect().expect("connect");
        let secret = tpm.unseal(&blob).expect("unseal");
        times.push(start.elapsed());
        assert_eq!(*secret, SECRET);
    }
    times.sort();
    let median = (times[4] + times[5]) / 2;
    eprintln!(
        "connect+unseal against swtpm: median {median:?} (min {:?}, max {:?})",
        times[0], times[9]
    );
    assert!(median.as_secs() < 5, "connect+unseal took {median:?}");
}

/// The factory wipe's crypto-erase: an erasable blob needs the erase secret in its NV index;
/// a reboot keeps it, `erase` destroys it, and a blob sealed before (a copy of the database)
/// never opens again, not even after a new vault defined a new secret at the same index.
#[test]
fn erasable_blob_dies_with_its_erase_secret() {
    use sealgate_tpm::ERASE_NV_INDEX;
    let (_dir, mut sw) = swtpm();
    let mut tpm = sw.connect().expect("connect");
    assert!(!tpm.erase_secret_exists(ERASE_NV_INDEX).expect("probe"));
    let blob = tpm
        .seal_erasable(&SECRET, &PcrSelection::default(), ERASE_NV_INDEX)
        .expect("seal");
    assert_eq!(blob.erase_index(), Some(ERASE_NV_INDEX));
    let bytes = blob.to_bytes();
    assert_eq!(bytes[8], 2, "versioned: an erasable blob is version 2");
    let copy = SealedBlob::from_bytes(&bytes).expect("parse");
    assert_eq!(*tpm.unseal(&copy).expect("unseal"), SECRET);
    // A second blob reuses the same erase secret.
    let second = tpm
        .seal_erasable(&SECRET, &PcrSelection::default(), ERASE_NV_INDEX)
        .expect("seal again");
    assert_eq!(*tpm.unseal(&second).expect("unseal"), SECRET);
    // An old, plain (version 1) blob still opens: existing vaults stay openable.
    let plain = tpm.seal(&SECRET, &PcrSelection::default()).expect("seal");
    assert_eq!(plain.to_bytes()[8], 1);

    // A normal reboot keeps the erase secret (NV is non-volatile).
    drop(tpm);
    sw.restart().expect("restart");
    let mut tpm = sw.connect().expect("connect");
    assert_eq!(*tpm.unseal(&copy).expect("unseal after reboot"), SECRET);

    // The wipe.
    assert!(tpm.erase(ERASE_NV_INDEX).expect("erase"));
    assert!(
        !tpm.erase(ERASE_NV_INDEX).expect("erase again"),
        "nothing left"
    );
    assert_eq!(tpm.unseal(&copy).err(), Some(TpmError::Erased));
    assert!(
        tpm.unseal(&copy)
            .err()
            .is_some_and(|e| e.to_string().contains("wiped"))
    );
    // The first boot after the wipe seals a new vault: a new secret at the same index. The
    // old copy unseals to noise, never to the old secret (the vault's key check refuses it).
    let fresh = tpm
        .seal_erasable(&[9u8; 32], &PcrSelection::default(), ERASE_NV_INDEX)
        .expect("seal the new vault");
    assert_eq!(*tpm.unseal(&fresh).expect("unseal"), [9u8; 32]);
    assert_ne!(*tpm.unseal(&copy).expect("unseals to noise"), SECRET);
    assert_eq!(*tpm.unseal(&plain).expect("plain"), SECRET);
}
