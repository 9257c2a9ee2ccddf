//! The daemon's quarantine: where content scanning's `quarantine` (and a DLP rule's
//! `quarantine`) puts a message instead of delivering it. The store is
//! `sealgate_local::quarantine` (`DATA/quarantine/`, AES-256-GCM under the vault's derived key
//! `"quarantine"`, durable before the SMTP `250`); this module opens it once at start, holds
//! it for the SMTP roles and the admin API, purges what outlived `[scan] quarantine_days`
//! (hourly), and builds what a release sends.
//!
//! Attackers: a sender filling the quarantine to fill the disk (a quarantined message counts
//! against the spool's quota: refused `452` when the spool has no room, like any message);
//! a reader of the data partition without the vault (sees ids and sizes only).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use sealgate_local::quarantine::{Meta, Store};

static STORE: OnceLock<Arc<Store>> = OnceLock::new();

/// Opens `DATA/quarantine` with the vault's quarantine key, for the whole daemon.
pub fn install(data_dir: &Path, vault: &sealgate_vault::Vault) -> anyhow::Result<Arc<Store>> {
    let key = vault.derived_key(sealgate_local::quarantine::KEY_PURPOSE);
    let store = Arc::new(Store::open(&data_dir.join("quarantine"), &key)?);
    let _ = STORE.set(store.clone());
    Ok(store)
}

/// The store, once [`install`]ed.
pub fn store() -> Option<Arc<Store>> {
    STORE.get().cloned()
}

/// Purges expired entries now and then every hour (`days` from `[scan] quarantine_days`).
pub async fn purge_loop(store: Arc<Store>, days: u32) {
    loop {
        let s = store.clone();
        let gone = tokio::task::spawn_blocking(move || s.purge(unix_now(), days))
            .await
            .unwrap_or_default();
        for id in gone {
            tracing::info!(id, days, "quarantined message purged: retention ended");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The index record of a message quarantined for `verdict` (the `X-Sealgate-Scan` value:
/// `action=...; score=...; labels=...`, or a reason without them).
pub fn meta(direction: &str, from: &str, to: &[String], client: &str, verdict: &str) -> Meta {
    let field = |name: &str| {
        verdict
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    Meta {
        id: String::new(),
        time: unix_now(),
        direction: direction.to_string(),
        from: from.to_string(),
        to: to.to_vec(),
        client: client.to_string(),
        action: field("action").unwrap_or_else(|| "quarantine".into()),
        labels: field("labels")
            .map(|l| {
                l.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        score: field("score").and_then(|s| s.parse().ok()).unwrap_or(0.0),
        reason: verdict
            .chars()
            .filter(|c| !c.is_control())
            .take(1000)
            .collect(),
        size: 0,
    }
}

/// A name safe in a header field (no control characters, bounded).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

/// What a release sends: the message as it came, after one result field saying who
/// released it.
pub fn released_message(id: &str, by: &str, direction: &str, msg: &[u8]) -> Vec<u8> {
    let verb = if direction == "outbound" {
        "submit"
    } else {
        "inbound"
    };
    let line = format!(
        "X-Sealgate-Result: {verb}; released from quarantine {id} by {}\r\n",
        clean(by)
    );
    let mut out = line.into_bytes();
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_takes_the_verdict_apart() {
        let m = meta(
            "inbound",
            "a@example.net",
            &["b@example.org".into()],
            "192.0.2.1",
            "action=quarantine; score=100; labels=virus,dlp:card-number",
        );
        assert_eq!(m.action, "quarantine");
        assert_eq!(m.score, 100.0);
        assert_eq!(m.labels, vec!["virus", "dlp:card-number"]);
        let r = released_message(
            "1-ab",
            "eve\r\nBcc: x",
            "inbound",
            b"Subject: x\r\n\r\nbody",
        );
        assert!(r.starts_with(
            b"X-Sealgate-Result: inbound; released from quarantine 1-ab by eve??Bcc: x\r\nSubject"
        ));
    }
}
