//! Crash safety: `sealctl` writers (imports and CA issues) are SIGKILLed at random moments;
//! after each kill the vault opens, its audit chain verifies, and every listed key decrypts
//! and matches its certificate.

#[path = "common.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sealgate_vault::{SoftwareSealer, Vault};

const ITERATIONS: u32 = 30;

/// A small xorshift: the kill moments need not be unpredictable, only spread out.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_during_writes_leaves_old_or_new_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let d = t.join("data");
    let ds = d.to_str().expect("utf8").to_string();
    ok(&[
        "vault",
        "init",
        "--data-dir",
        &ds,
        SW,
        "--recovery-out",
        t.join("rec").to_str().expect("utf8"),
    ]);
    ok(&["ca", "init", "--data-dir", &ds, "--name", "Crash CA", SW]);
    // A PKCS#12 to import repeatedly under new user names.
    require_openssl3(t);
    make_user(t, "imp", "imp@example.org", false);
    openssl_ok(
        t,
        &[
            "pkcs12", "-export", "-inkey", "imp.key", "-in", "imp.pem", "-out", "imp.p12",
            "-passout", "pass:",
        ],
    );
    let p12 = t.join("imp.p12");

    let mut seed = u64::from(std::process::id()) | 1;
    let mut killed = 0;
    let mut finished = 0;
    let mut last_count = 0usize;
    for i in 0..ITERATIONS {
        let user = format!("u{i}@example.org");
        let mut cmd = Command::new(SEALCTL);
        if i % 2 == 0 {
            cmd.args(["ca", "issue", "--data-dir", &ds, &user, SW]);
        } else {
            cmd.args([
                "keys",
                "import",
                "--data-dir",
                &ds,
                "--p12",
                p12.to_str().expect("utf8"),
                "--user",
                &user,
                SW,
            ]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let delay = Duration::from_micros(next(&mut seed) % 250_000);
        let start = Instant::now();
        let mut done = false;
        while start.elapsed() < delay {
            if child.try_wait().expect("wait").is_some() {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if done {
            finished += 1;
        } else {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        let _ = child.wait();

        let vault = Vault::open(&d, &mut SoftwareSealer::danger_new())
            .expect("the vault opens after a kill");
        let checked = vault
            .verify()
            .expect("audit chain verifies and every key decrypts and matches");
        let keys = vault.list(None).expect("list");
        assert_eq!(checked, keys.len());
        assert!(keys.len() >= last_count, "keys never disappear");
        assert!(
            keys.len() <= last_count + 1,
            "at most one new key per writer"
        );
        // Old or new: the new user's key exists exactly when its audit entry does.
        let audited = vault
            .audit()
            .expect("audit")
            .iter()
            .any(|e| e.subject == user && (e.action == "ca.issue" || e.action == "key.import"));
        let has_key = keys.iter().any(|k| k.user == user);
        assert_eq!(
            audited, has_key,
            "iteration {i}: key and audit entry must come together"
        );
        last_count = keys.len();
    }
    eprintln!(
        "crash loop: {ITERATIONS} writers, {killed} killed mid-run, {finished} finished, {last_count} keys at the end"
    );
    assert!(killed > 0, "no writer was killed: the loop tested nothing");
}
