//! The docking audit log: one JSON line per call in `DATA/audit/docking.jsonl` (and a
//! `tracing` event). It names the client, the operation, the Message-ID, the outcome and the
//! duration; never message content, never a token.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

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
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (appends to) `DATA/audit/docking.jsonl`.
    pub fn open(data_dir: &Path) -> anyhow::Result<AuditLog> {
        let dir = data_dir.join("audit");
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("docking.jsonl"))?;
        Ok(AuditLog {
            file: Mutex::new(file),
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
