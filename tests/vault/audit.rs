//! The vault's audit chain through `sealctl`, against someone who can write `vault.redb` but
//! does not hold the vault key (a stolen or copied disk, a process running as the daemon's
//! user without the TPM): rewriting an entry and recomputing the plain SHA-256 chain is
//! detected by `vault audit` (whole chain) and `vault status` (from the last checkpoint); and
//! `vault status` verifies only what was appended since its last run.

#[path = "common.rs"]
mod common;

use common::*;
use redb::{Database, ReadableTable, TableDefinition};
use sealgate_smime::crypto::HashAlg;
use serde::Serialize;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

fn status(d: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(&["vault", "status", "--data-dir", d, SW])).expect("json")
}

/// The plain hash exactly as the vault computes it (`audit.rs`: `entry_hash`).
fn plain_hash(e: &serde_json::Value) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        seq: u64,
        time: i64,
        actor: &'a str,
        action: &'a str,
        subject: &'a str,
        detail: &'a str,
        prev: &'a str,
    }
    let s = |k: &str| e[k].as_str().expect("text field");
    let body = Body {
        seq: e["seq"].as_u64().expect("seq"),
        time: e["time"].as_i64().expect("time"),
        actor: s("actor"),
        action: s("action"),
        subject: s("subject"),
        detail: s("detail"),
        prev: s("prev"),
    };
    let mut bytes = b"sealgate audit v1\n".to_vec();
    bytes.extend(serde_json::to_vec(&body).expect("json"));
    HashAlg::Sha256
        .digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_rewritten_entry_with_recomputed_plain_hashes_is_detected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path().to_str().expect("utf8");
    ok(&["vault", "init", "--data-dir", d, SW]);
    ok(&["ca", "init", "--data-dir", d, "--name", "Audit CA", SW]);
    ok(&["ca", "issue", "--data-dir", d, "erin@example.org", SW]);

    // First status: everything verified; the second: nothing new to verify.
    let st = status(d);
    assert_eq!(st["audit_chain"], "ok", "{st}");
    let n = st["audit_entries"].as_u64().expect("entries");
    assert!(n >= 3, "{st}");
    assert_eq!(st["audit_verified_now"], n, "{st}");
    let st = status(d);
    assert_eq!(st["audit_verified_now"], 0, "{st}");
    ok(&["ca", "issue", "--data-dir", d, "fred@example.org", SW]);
    let st = status(d);
    assert!(
        st["audit_verified_now"].as_u64().expect("n") < st["audit_entries"].as_u64().expect("n"),
        "only the entries after the checkpoint: {st}"
    );

    let log: Vec<serde_json::Value> =
        String::from_utf8(ok(&["vault", "audit", "--data-dir", d, SW]))
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
    assert!(
        log.iter()
            .all(|e| e["mac"].as_str().is_some_and(|m| m.len() == 64))
    );
    let issue = log
        .iter()
        .find(|e| e["action"] == "ca.issue" && e["subject"] == "erin@example.org")
        .expect("the issue entry")["seq"]
        .as_u64()
        .expect("seq");

    // Rewrite who issued erin's key, and recompute every plain hash from there on.
    {
        let db = Database::open(tmp.path().join("vault.redb")).expect("redb");
        let txn = db.begin_write().expect("w");
        {
            let mut t = txn.open_table(AUDIT).expect("audit table");
            let mut entries: Vec<serde_json::Value> = t
                .iter()
                .expect("iter")
                .map(|r| serde_json::from_slice(r.expect("row").1.value()).expect("entry"))
                .collect();
            let mut prev = String::new();
            for e in entries.iter_mut() {
                let seq = e["seq"].as_u64().expect("seq");
                if seq < issue {
                    prev = e["hash"].as_str().expect("hash").to_string();
                    continue;
                }
                if seq == issue {
                    e["actor"] = "local:someone-else".into();
                }
                e["prev"] = prev.clone().into();
                e["hash"] = plain_hash(e).into();
                prev = e["hash"].as_str().expect("hash").to_string();
                t.insert(seq, serde_json::to_vec(e).expect("json").as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    let e = fails(&["vault", "audit", "--data-dir", d, SW]);
    assert!(e.contains(&format!("MAC of entry {issue}")), "{e}");
    let st = status(d);
    assert_ne!(st["audit_chain"], "ok", "{st}");
    assert!(
        st["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("audit log"))),
        "{st}"
    );
}
