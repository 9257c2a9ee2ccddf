//! Where content scanning (spam, viruses, data-loss prevention) plugs in: a [`Scanner`] sees
//! a message's decrypted content, in both directions, before it leaves the box.
//!
//! Callers: the inbound MX (`smtp/inbound.rs`: cleartext and signed mail as received,
//! encrypted mail decrypted with the recipients' keys only when the scanner wants content)
//! and submission (`gateway/submission.rs`, on the cleartext before signing and encrypting).
//! The scanner decides; the caller acts on the [`Verdict`] (relay with `X-Sealgate-Scan`, hold
//! for an administrator, or refuse). With `[scan] enabled` the scanner is the pipeline of
//! `sealgate-scan` ([`PipelineScanner`]): the inbound MX runs it before its `250` (a reject is
//! `550` in the session) and again when it processes the message (tag header, quarantine);
//! submission runs it on the cleartext. Without it, [`NoScan`] passes everything without
//! looking, so nothing is decrypted for it.
//!
//! Attacker: whoever wrote the message. A scanner gets the content as bytes, never panics on
//! it (its caller runs it on the blocking pool under `catch_unwind` with the rest of the
//! processing), and its verdict's text goes into a header only after control characters are
//! removed.

use std::sync::{Arc, Mutex, PoisonError};

use sealgate_scan::Action;

/// Which way the message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From the Internet to a local user (the MX).
    Inbound,
    /// From a local user out (submission, the hand-off's encrypt listener).
    Outbound,
}

/// One message to scan.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // the envelope is for the scanners' later checks (per-user rules)
pub struct Scanned<'a> {
    /// Which way it goes.
    pub flow: Flow,
    /// The envelope sender (empty for `<>`).
    pub from: &'a str,
    /// The envelope recipients.
    pub to: &'a [String],
    /// The content: the whole message, decrypted where the box could.
    pub content: &'a [u8],
}

/// What a scanner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver (nothing was looked at).
    Pass,
    /// Deliver, with this `X-Sealgate-Scan` value (`action=...; score=...; labels=...`).
    Tag(String),
    /// Keep it for an administrator, for this reason.
    Hold(String),
    /// Refuse it (`550` while the client waits; held when it was already accepted).
    Reject(String),
}

/// A content scanner.
pub trait Scanner: Send + Sync {
    /// Whether it looks at content at all (if not, encrypted mail is not decrypted for it).
    fn wants_content(&self) -> bool {
        true
    }

    /// Scans one message.
    fn scan(&self, message: &Scanned<'_>) -> Verdict;
}

/// No scanning: every message passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScan;

impl Scanner for NoScan {
    fn wants_content(&self) -> bool {
        false
    }

    fn scan(&self, _: &Scanned<'_>) -> Verdict {
        Verdict::Pass
    }
}

/// The `sealgate-scan` pipeline as the daemon's scanner.
pub struct PipelineScanner {
    pipeline: sealgate_scan::Pipeline,
}

impl Scanner for PipelineScanner {
    fn scan(&self, m: &Scanned<'_>) -> Verdict {
        let direction = match m.flow {
            Flow::Inbound => sealgate_scan::Direction::Inbound,
            Flow::Outbound => sealgate_scan::Direction::Outbound,
        };
        let report = self
            .pipeline
            .scan(&sealgate_scan::Input::new(m.content, direction));
        let header = report.header_value();
        // The verdict, never the content (evidence stays out of the log too).
        tracing::info!(
            message_id = %crate::docking::message_id(m.content)
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_graphic)
                .take(256)
                .collect::<String>(),
            flow = ?m.flow,
            action = report.action.as_str(),
            score = report.score,
            labels = %report.labels.join(","),
            "scanned"
        );
        match report.action {
            Action::Accept | Action::Tag => Verdict::Tag(header),
            Action::Quarantine => Verdict::Hold(header),
            Action::Reject => Verdict::Reject(header),
        }
    }
}

/// The hash databases could not be loaded after the settings were checked (a file removed
/// since): everything is held rather than passed unscanned.
struct Unavailable(String);

impl Scanner for Unavailable {
    fn scan(&self, _: &Scanned<'_>) -> Verdict {
        Verdict::Hold(format!("scanning unavailable: {}", self.0))
    }
}

/// The pipeline of `[scan]`, its hash database files read.
fn load(s: &sealgate_scan::Settings) -> Result<sealgate_scan::Pipeline, String> {
    let mut dbs = Vec::new();
    for p in &s.hashdb {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("hashdb {}: {e}", p.display()))?;
        dbs.push((p.display().to_string(), text));
    }
    s.pipeline(&dbs)
}

/// Checks `[scan]`: thresholds and rules, and when enabled, that every database loads.
pub fn check_settings(s: &sealgate_scan::Settings) -> Result<(), String> {
    if s.enabled {
        load(s).map(|_| ())
    } else {
        s.validate()
    }
}

/// The last scanner built, for the settings it was built from (databases are read once,
/// not per message).
#[allow(clippy::type_complexity)]
static BUILT: Mutex<Option<(sealgate_scan::Settings, Arc<dyn Scanner>)>> = Mutex::new(None);

/// The scanner the settings configure: the pipeline when `[scan] enabled`, else [`NoScan`].
pub fn configured(settings: &crate::settings::Settings) -> Arc<dyn Scanner> {
    if !settings.scan.enabled {
        return Arc::new(NoScan);
    }
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((s, scanner)) = built.as_ref()
        && *s == settings.scan
    {
        return scanner.clone();
    }
    let scanner: Arc<dyn Scanner> = match load(&settings.scan) {
        Ok(pipeline) => Arc::new(PipelineScanner { pipeline }),
        Err(e) => {
            tracing::error!(error = %e, "[scan] cannot be loaded: mail is held");
            Arc::new(Unavailable(e))
        }
    };
    *built = Some((settings.scan.clone(), scanner.clone()));
    scanner
}
