//! The docking audit log: one JSON line per call in `DATA/audit/docking.jsonl` (and a
//! `tracing` event). It names the client, the operation, the Message-ID, the outcome and the
//! duration; never message content, never a token.
//!
//! The file is rotated by size like the daemon's log ([`RotatingFile`]): at [`MAX_BYTES`] it
//! becomes `docking.jsonl.1` (older ones move up to `.KEEP`, the oldest is dropped), so the
//! audit log never takes more than `(KEEP + 1) × MAX_BYTES` of the data partition. Each record
//! is handed over as one whole line, so a line is never split across files.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::logfile::RotatingFile;

/// Size at which `docking.jsonl` is rotated.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Rotated audit files kept (`docking.jsonl.1` ... `.3`): at most 16 MiB in all.
pub const KEEP: u32 = 3;

/// One audited call.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// RFC 3339 time.
    pub time: String,
    /// The token's or pinned certificate's name; `-` if unauthenticated.
    pub client: &'a str,
    /// The peer's address.
    pub source: String,
    /// `decrypt`, `encrypt`, `sign`, `verify`, `certificates`, `setup`, `auth`, `smtp-decrypt`, ...
    pub operation: &'a str,
    /// The message's Message-ID, if it has one.
    pub message_id: Option<String>,
    /// `ok`, or the problem type.
    pub outcome: &'a str,
    /// The HTTP status (or SMTP-side result code).
    pub status: u16,
    /// Milliseconds.
    pub duration_ms: u64,
}

/// The log file.
pub struct AuditLog {
    file: Mutex<RotatingFile>,
    /// Messages per hour, counted from the records.
    pub messages: crate::metrics::Counters,
}

impl AuditLog {
    /// Opens (appends to) `DATA/audit/docking.jsonl`, rotated at [`MAX_BYTES`].
    pub fn open(data_dir: &Path) -> anyhow::Result<AuditLog> {
        Self::open_capped(data_dir, MAX_BYTES, KEEP)
    }

    fn open_capped(data_dir: &Path, max: u64, keep: u32) -> anyhow::Result<AuditLog> {
        let file = RotatingFile::open(&data_dir.join("audit").join("docking.jsonl"), max, keep)?;
        Ok(AuditLog {
            file: Mutex::new(file),
            messages: crate::metrics::Counters::default(),
        })
    }

    /// Appends one record.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        client: &str,
        source: &str,
        operation: &str,
        message_id: Option<String>,
        outcome: &str,
        status: u16,
        duration: Duration,
    ) {
        let rec = AuditRecord {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            client,
            source: source.to_string(),
            operation,
            message_id,
            outcome,
            status,
            duration_ms: duration.as_millis() as u64,
        };
        if let Some(kind) = crate::metrics::classify(operation, outcome, status) {
            self.messages.count(kind, crate::metrics::unix_now());
        }
        tracing::info!(target: "audit", client, source, operation, message_id = rec.message_id.as_deref().unwrap_or("-"), outcome, status, duration_ms = rec.duration_ms, "call");
        if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(&rec), self.file.lock()) {
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }

    /// Appends what became of one certificate posted to `POST /api/v1/certificates`:
    /// `stored`, `already-stored`, `pending` or `refused`, with the reason (a separate line
    /// after the call's own, `"operation":"certificate"`).
    pub fn record_certificate(
        &self,
        client: &str,
        source: &str,
        sha256: &str,
        emails: &[String],
        outcome: &str,
        reason: Option<&str>,
    ) {
        let rec = CertificateRecord {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            client,
            source,
            operation: "certificate",
            sha256,
            emails,
            outcome,
            reason,
        };
        tracing::info!(target: "audit", client, source, sha256, outcome, reason = reason.unwrap_or("-"), "certificate");
        if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(&rec), self.file.lock()) {
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }
}

/// One certificate decision (see [`AuditLog::record_certificate`]).
#[derive(Debug, Serialize)]
struct CertificateRecord<'a> {
    time: String,
    client: &'a str,
    source: &'a str,
    operation: &'a str,
    sha256: &'a str,
    emails: &'a [String],
    outcome: &'a str,
    reason: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the audit log grew without limit.
    #[test]
    fn the_audit_log_is_rotated_within_its_cap_in_whole_records() {
        let d = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open_capped(d.path(), 2000, 2).expect("open");
        for i in 0..200 {
            log.record(
                "gw",
                "192.0.2.1",
                "decrypt",
                Some(format!("<{i}@example.org>")),
                "ok",
                200,
                Duration::from_millis(3),
            );
            log.record_certificate("gw", "192.0.2.1", "00ff", &[], "stored", None);
        }
        let dir = d.path().join("audit");
        let mut records = 0;
        for name in ["docking.jsonl", "docking.jsonl.1", "docking.jsonl.2"] {
            let text = std::fs::read_to_string(dir.join(name)).expect(name);
            assert!(text.len() <= 2000, "{name}: {}", text.len());
            assert!(text.ends_with('\n'), "{name}: a split record");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a whole record");
                assert_eq!(v["client"], "gw");
                records += 1;
            }
        }
        assert!(records > 0);
        assert!(
            !dir.join("docking.jsonl.3").exists(),
            "the oldest is dropped"
        );
        // The newest record is in the current file.
        let current = std::fs::read_to_string(dir.join("docking.jsonl")).expect("current");
        assert!(current.contains("<199@example.org>"));
    }
}
