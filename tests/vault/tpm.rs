//! The vault sealed by a TPM: a private swtpm per test (sealgate-tpm's `Swtpm`, killed on drop).
//! Init, status, restart with state kept and reopen, a changed PCR refuses to unseal, and
//! recovery onto a second swtpm with the recovery file. Prints the unseal+open timings.

#[path = "common.rs"]
mod common;

use std::time::Instant;

use common::*;
use sealgate_tpm::swtpm::Swtpm;

fn status(d: &str, tcti: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(&["vault", "status", "--data-dir", d, "--tpm", tcti])).expect("json")
}

#[test]
fn tpm_sealed_vault_survives_restart_and_recovers_onto_another_tpm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut tpm1 = Swtpm::start(&t.join("t1")).expect("swtpm (Debian package `swtpm`)");
    let tcti1 = tpm1.tcti();
    let d = t.join("data");
    let d = d.to_str().expect("utf8");
    let rec = t.join("recovery.txt");
    ok(&[
        "vault",
        "init",
        "--data-dir",
        d,
        "--tpm",
        &tcti1,
        "--recovery-out",
        rec.to_str().expect("utf8"),
    ]);
    let st = status(d, &tcti1);
    assert_eq!(st["sealed_by"], "tpm");
    assert_eq!(st["pcrs"], "sha256:7");
    assert_eq!(st["unsealed"], true, "{st}");
    assert!(st["warnings"].as_array().expect("w").is_empty(), "{st}");
    eprintln!(
        "timing: unseal + open (swtpm, in `vault status`): {} ms",
        st["unseal_open_ms"]
    );

    ok(&[
        "ca",
        "init",
        "--data-dir",
        d,
        "--name",
        "TPM CA",
        "--tpm",
        &tcti1,
    ]);
    let start = Instant::now();
    let pem = ok(&[
        "ca",
        "issue",
        "--data-dir",
        d,
        "dave@example.org",
        "--tpm",
        &tcti1,
    ]);
    eprintln!(
        "timing: `sealctl ca issue` RSA-3072 with TPM unseal: {:?}",
        start.elapsed()
    );
    std::fs::write(t.join("dave.pem"), pem).expect("dave");

    // The software sealer is refused for a TPM vault.
    let e = fails(&["keys", "list", "--data-dir", d, SW]);
    assert!(e.contains("sealed by a TPM"), "{e}");

    // A reboot: same TPM state, PCRs reset: unseals again.
    tpm1.restart().expect("restart");
    let start = Instant::now();
    let list: serde_json::Value =
        serde_json::from_slice(&ok(&["keys", "list", "--data-dir", d, "--tpm", &tcti1]))
            .expect("json");
    eprintln!(
        "timing: `sealctl keys list` after a swtpm restart (process + unseal + open): {:?}",
        start.elapsed()
    );
    assert_eq!(list.as_array().expect("a").len(), 1);
    roundtrip_through_vault(
        t,
        d,
        &["--tpm", &tcti1],
        "dave@example.org",
        "dave.pem",
        "sealed by tpm",
    );

    // Measured state changes (PCR 7 extended): unseal fails with a clear error.
    tpm1.extend_pcr7(&[7u8; 32]).expect("extend");
    let e = fails(&["keys", "list", "--data-dir", d, "--tpm", &tcti1]);
    assert!(e.contains("cannot unseal"), "{e}");
    let st = status(d, &tcti1);
    assert_eq!(st["unsealed"], false);

    // Recovery onto a second TPM with the recovery file.
    drop(tpm1);
    let tpm2 = Swtpm::start(&t.join("t2")).expect("swtpm");
    let tcti2 = tpm2.tcti();
    fails(&["keys", "list", "--data-dir", d, "--tpm", &tcti2]);
    ok(&[
        "vault",
        "recover",
        "--data-dir",
        d,
        "--recovery-file",
        rec.to_str().expect("utf8"),
        "--tpm",
        &tcti2,
    ]);
    let st = status(d, &tcti2);
    assert_eq!(st["unsealed"], true, "{st}");
    assert_eq!(st["keys"], 1);
    roundtrip_through_vault(
        t,
        d,
        &["--tpm", &tcti2],
        "dave@example.org",
        "dave.pem",
        "after recovery",
    );
}

#[test]
fn pcr_set_is_a_setting() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let tpm = Swtpm::start(&t.join("t")).expect("swtpm (Debian package `swtpm`)");
    let tcti = tpm.tcti();
    let d = t.join("data");
    let d = d.to_str().expect("utf8");
    let rec = t.join("rec");
    let rec = rec.to_str().expect("utf8");
    // Bad selections are command-line errors.
    for bad in ["sha256:99", "sha256:", "sha1:7"] {
        let out = sealctl(&[
            "vault",
            "init",
            "--data-dir",
            d,
            "--tpm",
            &tcti,
            "--pcrs",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = sealctl(&["vault", "init", "--data-dir", d, SW, "--pcrs", "sha256:7"]);
    assert_eq!(out.status.code(), Some(2), "--pcrs needs a TPM");
    ok(&[
        "vault",
        "init",
        "--data-dir",
        d,
        "--tpm",
        &tcti,
        "--pcrs",
        "sha256:7,16",
        "--recovery-out",
        rec,
    ]);
    let st = status(d, &tcti);
    assert_eq!(st["pcrs"], "sha256:7,16", "{st}");
    assert_eq!(st["unsealed"], true, "{st}");
    assert_eq!(st["sealed_copies"], 1, "{st}");
    // PCR 16 is part of the policy now: extending it locks the key (one line on stderr, with
    // TSS2_LOG unset: libtss2 stays quiet).
    tpm.extend_pcr(16, &[16u8; 32]).expect("extend 16");
    let e = fails(&["keys", "list", "--data-dir", d, "--tpm", &tcti]);
    assert!(e.contains("cannot unseal"), "{e}");
    // Recovery re-seals to the stored setting.
    ok(&[
        "vault",
        "recover",
        "--data-dir",
        d,
        "--recovery-file",
        rec,
        "--tpm",
        &tcti,
    ]);
    let st = status(d, &tcti);
    assert_eq!(st["pcrs"], "sha256:7,16", "{st}");
    assert_eq!(st["unsealed"], true, "{st}");
}

/// Factory reset tier 2 is a crypto-erase. Attacker: someone who copied `vault.redb` (and the
/// rest of the data partition) before the box was wiped, and later gets the same box (or
/// runs code on it). After the wipe, their copy no longer unseals on that TPM; before it, a
/// normal reboot still unseals.
#[test]
fn a_copy_of_the_vault_does_not_open_after_the_wipe() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut tpm = Swtpm::start(&t.join("tpm")).expect("swtpm (Debian package `swtpm`)");
    let tcti = tpm.tcti();
    let d = t.join("data");
    let d = d.to_str().expect("utf8");
    let rec = t.join("recovery.txt");
    ok(&[
        "vault",
        "init",
        "--data-dir",
        d,
        "--tpm",
        &tcti,
        "--recovery-out",
        rec.to_str().expect("utf8"),
    ]);
    ok(&[
        "ca",
        "init",
        "--data-dir",
        d,
        "--name",
        "Wipe CA",
        "--tpm",
        &tcti,
    ]);
    // The attacker's copy.
    let copy = t.join("copy");
    std::fs::create_dir(&copy).expect("copy dir");
    std::fs::copy(t.join("data/vault.redb"), copy.join("vault.redb")).expect("copy");
    let copy = copy.to_str().expect("utf8");
    assert_eq!(
        status(copy, &tcti)["unsealed"],
        true,
        "the copy opens before the wipe"
    );

    // A normal reboot: everything still unseals.
    tpm.restart().expect("restart");
    assert_eq!(status(d, &tcti)["unsealed"], true);
    assert_eq!(status(copy, &tcti)["unsealed"], true);

    // The wipe (the console runs exactly this before it clears the data partition).
    let refused = sealctl(&["vault", "erase", "--data-dir", d, "--tpm", &tcti]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a usage error without the flag"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--destroy-every-key"));
    assert_eq!(status(copy, &tcti)["unsealed"], true, "nothing was erased");
    ok(&[
        "vault",
        "erase",
        "--data-dir",
        d,
        "--tpm",
        &tcti,
        "--destroy-every-key",
    ]);
    let st = status(copy, &tcti);
    assert_eq!(st["unsealed"], false, "{st}");
    assert!(
        st["unseal_error"]
            .as_str()
            .is_some_and(|e| e.contains("wiped")),
        "{st}"
    );
    // The first boot after the wipe makes a new vault on the same TPM; the copy still does
    // not open (a new erase secret), and the new vault survives a reboot.
    std::fs::remove_dir_all(d).expect("wipe the data partition");
    ok(&[
        "vault",
        "init",
        "--data-dir",
        d,
        "--tpm",
        &tcti,
        "--recovery-out",
        t.join("rec2").to_str().expect("utf8"),
    ]);
    tpm.restart().expect("restart");
    assert_eq!(status(d, &tcti)["unsealed"], true);
    assert_eq!(status(copy, &tcti)["unsealed"], false);
    // Only the recovery secret, kept offline by the administrator, still opens the copy.
    ok(&[
        "vault",
        "recover",
        "--data-dir",
        copy,
        "--recovery-file",
        rec.to_str().expect("utf8"),
        "--tpm",
        &tcti,
    ]);
}
