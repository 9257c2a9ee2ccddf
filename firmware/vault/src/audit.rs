//! The append-only, hash-chained audit log of key operations.
//!
//! Each entry carries the SHA-256 of the previous one; `hash` covers every other field. An
//! entry is written in the same redb write transaction as the change it records, so a log
//! entry exists exactly when its change does. Entries name users, certificates and record
//! ids, never key material.

use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};

use crate::cipher;
use crate::error::{Result, VaultError};

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When (Unix seconds, UTC).
    pub time: i64,
    /// Who (the operator or service that asked).
    pub actor: String,
    /// What, e.g. `key.import`, `ca.issue`, `key.export-pkcs12`.
    pub action: String,
    /// On what: a user, a serial number, the vault.
    pub subject: String,
    /// Details (record ids, certificate fingerprints, sealer kind).
    pub detail: String,
    /// Hash of the previous entry (hex; 64 zeros for the first).
    pub prev: String,
    /// Hash of this entry (hex).
    pub hash: String,
}

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

fn entry_hash(e: &AuditEntry) -> Result<String> {
    let body = Body {
        seq: e.seq,
        time: e.time,
        actor: &e.actor,
        action: &e.action,
        subject: &e.subject,
        detail: &e.detail,
        prev: &e.prev,
    };
    let bytes = serde_json::to_vec(&body)?;
    Ok(cipher::hex(&cipher::sha256(&[
        b"sealgate audit v1\n",
        &bytes,
    ])))
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends an entry inside the caller's write transaction.
pub(crate) fn append(
    table: &mut Table<'_, u64, &[u8]>,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    let (seq, prev) = match table.last()? {
        Some((k, v)) => {
            let last: AuditEntry = serde_json::from_slice(v.value())?;
            (k.value() + 1, last.hash)
        }
        None => (1, GENESIS.to_string()),
    };
    let mut e = AuditEntry {
        seq,
        time: crate::record::now(),
        actor: actor.to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail: detail.to_string(),
        prev,
        hash: String::new(),
    };
    e.hash = entry_hash(&e)?;
    table.insert(seq, serde_json::to_vec(&e)?.as_slice())?;
    Ok(())
}

/// Reads every entry and checks the chain; fails naming the first bad entry.
pub(crate) fn read_verified(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Vec<AuditEntry>> {
    let mut out: Vec<AuditEntry> = Vec::new();
    let mut prev = GENESIS.to_string();
    for (n, row) in table.iter()?.enumerate() {
        let expect = n as u64 + 1;
        let (k, v) = row?;
        let e: AuditEntry = serde_json::from_slice(v.value())
            .map_err(|_| VaultError::Corrupt(format!("audit entry {} is unreadable", k.value())))?;
        if e.seq != k.value() || e.seq != expect {
            return Err(VaultError::Corrupt(format!(
                "audit log: entry {} is out of sequence",
                k.value()
            )));
        }
        if e.prev != prev || entry_hash(&e)? != e.hash {
            return Err(VaultError::Corrupt(format!(
                "audit log: the hash chain breaks at entry {}",
                e.seq
            )));
        }
        prev = e.hash.clone();
        out.push(e);
    }
    Ok(out)
}
