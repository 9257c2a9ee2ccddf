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
use sealgate_scan::checks::RuleAction;

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
    /// Sender authentication and DNS list results (inbound, `mailauth.rs`).
    pub auth: Option<&'a sealgate_scan::checks::AuthResults>,
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

/// What the DLP rules' actions and `[scan]` add to a [`Verdict`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// A `copy-auditor` rule hit: a copy goes to this address through the queue.
    pub copy_auditor: Option<String>,
    /// A `require-encryption` rule hit: the message leaves only encrypted.
    pub require_encryption: bool,
    /// The action is `tag` and `[scan] subject_tag` is set: put it before the Subject.
    pub subject_tag: Option<String>,
}

/// A verdict and its extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the message.
    pub verdict: Verdict,
    /// What else to do.
    pub extras: Extras,
}

/// A content scanner.
pub trait Scanner: Send + Sync {
    /// Whether it looks at content at all (if not, encrypted mail is not decrypted for it).
    fn wants_content(&self) -> bool {
        true
    }

    /// Scans one message.
    fn scan(&self, message: &Scanned<'_>) -> Verdict;

    /// Scans one message, with what the rules' actions add.
    fn decide(&self, message: &Scanned<'_>) -> Decision {
        Decision {
            verdict: self.scan(message),
            extras: Extras::default(),
        }
    }
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

/// The `sealgate-scan` pipeline as the daemon's scanner, with the network services of
/// `[scan]` (the URL reputation service, clamd: `sealgate-scan-net`) asked between its two
/// halves; a service that fails is a label, never a hold.
pub struct PipelineScanner {
    pipeline: sealgate_scan::Pipeline,
    settings: sealgate_scan::Settings,
    services: sealgate_scan_net::Services,
}

/// Runs `f`, which may wait on the network, without stalling a runtime worker: on a worker
/// of the multi-threaded runtime through `block_in_place`, elsewhere (the blocking pool, no
/// runtime) as it is.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Scanner for PipelineScanner {
    fn scan(&self, m: &Scanned<'_>) -> Verdict {
        self.decide(m).verdict
    }

    /// The score's action, then the DLP rules' actions of the labels found: `block` makes it
    /// a reject, `quarantine` a quarantine (unless rejected), `copy-auditor` and
    /// `require-encryption` go to the extras; `[scan] subject_tag` for `tag`.
    fn decide(&self, m: &Scanned<'_>) -> Decision {
        let direction = match m.flow {
            Flow::Inbound => sealgate_scan::Direction::Inbound,
            Flow::Outbound => sealgate_scan::Direction::Outbound,
        };
        let input = sealgate_scan::Input::new(m.content, direction);
        let auth = m.auth.map(|a| (a, self.settings.dmarc_policy));
        let report = if self.services.is_empty() {
            self.pipeline.scan_with(&input, auth)
        } else {
            blocking(|| self.services.scan(&self.pipeline, &input, auth))
        };
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
        let mut extras = Extras::default();
        let mut action = report.action;
        for a in self.settings.rule_actions(&report.labels) {
            match a {
                RuleAction::Block => action = Action::Reject,
                RuleAction::Quarantine if action != Action::Reject => action = Action::Quarantine,
                RuleAction::Quarantine => {}
                RuleAction::CopyAuditor => match &self.settings.auditor {
                    Some(a) => extras.copy_auditor = Some(a.clone()),
                    // Settings are checked: a copy rule has an auditor. Never pass silently.
                    None if action != Action::Reject => action = Action::Quarantine,
                    None => {}
                },
                RuleAction::RequireEncryption => extras.require_encryption = true,
            }
        }
        let header = if action == report.action {
            header
        } else {
            let mut r = report.clone();
            r.action = action;
            r.header_value()
        };
        if action == Action::Tag {
            extras.subject_tag = self.settings.subject_tag.clone();
        }
        let verdict = match action {
            Action::Accept | Action::Tag => Verdict::Tag(header),
            Action::Quarantine => Verdict::Hold(header),
            Action::Reject => Verdict::Reject(header),
        };
        Decision { verdict, extras }
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

/// The pipeline of `[scan]`, its hash database files and spam model read (with the local
/// layer under `data_dir`, when given and present), and its network services (the
/// reputation service's CA file read).
fn load(
    s: &sealgate_scan::Settings,
    data_dir: Option<&std::path::Path>,
) -> Result<(sealgate_scan::Pipeline, sealgate_scan_net::Services), String> {
    let mut dbs = Vec::new();
    for p in &s.hashdb {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("hashdb {}: {e}", p.display()))?;
        dbs.push((p.display().to_string(), text));
    }
    let mut pipeline = s.pipeline(&dbs)?;
    pipeline.lookups.classifier = load_classifier(&s.model, data_dir)?;
    Ok((pipeline, sealgate_scan_net::Services::new(s)?))
}

/// The classifier of `[scan] model` plus the local layer (`DATA/scan/spam-local.bin`): a
/// missing model file is a label, one that does not load an error.
pub fn load_classifier(
    model: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> Result<sealgate_scan::classifier::Loaded, String> {
    let read = |p: &std::path::Path| match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    };
    if model.as_os_str().is_empty() {
        return Ok(sealgate_scan::classifier::Loaded::Off);
    }
    let base = read(model)?;
    let local = match data_dir {
        Some(d) => read(&d.join(sealgate_scan::classifier::LOCAL_LAYER))?,
        None => None,
    };
    sealgate_scan::classifier::Loaded::from_files(model, base.as_deref(), local.as_deref())
}

/// Bumped when the local layer changes (admin training, feedback): the next message gets a
/// pipeline with the new counts.
pub static LOCAL_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Checks `[scan]`: thresholds and rules, and when enabled, that every database loads.
pub fn check_settings(s: &sealgate_scan::Settings) -> Result<(), String> {
    if s.enabled {
        load(s, None).map(|_| ())
    } else {
        s.validate()
    }
}

/// The last scanner built, for the settings, data directory and local layer it was built
/// from (databases and the model are read once, not per message).
#[allow(clippy::type_complexity)]
static BUILT: Mutex<
    Option<(
        sealgate_scan::Settings,
        std::path::PathBuf,
        u64,
        Arc<dyn Scanner>,
    )>,
> = Mutex::new(None);

/// The scanner the settings configure: the pipeline when `[scan] enabled`, else [`NoScan`].
pub fn configured(
    settings: &crate::settings::Settings,
    data_dir: &std::path::Path,
) -> Arc<dyn Scanner> {
    if !settings.scan.enabled {
        return Arc::new(NoScan);
    }
    let generation = LOCAL_GENERATION.load(std::sync::atomic::Ordering::Acquire);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((s, d, g, scanner)) = built.as_ref()
        && *s == settings.scan
        && d == data_dir
        && *g == generation
    {
        return scanner.clone();
    }
    let scanner: Arc<dyn Scanner> = match load(&settings.scan, Some(data_dir)) {
        Ok((pipeline, services)) => {
            if let sealgate_scan::classifier::Loaded::Missing(why) = &pipeline.lookups.classifier {
                tracing::warn!(%why, "[scan] spam classifier unavailable");
            }
            Arc::new(PipelineScanner {
                pipeline,
                settings: settings.scan.clone(),
                services,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "[scan] cannot be loaded: mail is held");
            Arc::new(Unavailable(e))
        }
    };
    *built = Some((
        settings.scan.clone(),
        data_dir.to_path_buf(),
        generation,
        scanner.clone(),
    ));
    scanner
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealgate_scan::checks::DlpRule;

    fn scanner(rules: &[(&str, RuleAction)], auditor: Option<&str>) -> PipelineScanner {
        let settings = sealgate_scan::Settings {
            enabled: true,
            dlp: rules
                .iter()
                .map(|(k, a)| DlpRule {
                    name: k.replace(' ', "-"),
                    keywords: vec![k.to_string()],
                    regex: None,
                    threshold: 1,
                    score: 0.0,
                    action: Some(*a),
                })
                .collect(),
            auditor: auditor.map(str::to_string),
            subject_tag: Some("[SPAM]".into()),
            ..sealgate_scan::Settings::default()
        };
        PipelineScanner {
            pipeline: settings.pipeline(&[]).expect("pipeline"),
            services: sealgate_scan_net::Services::new(&settings).expect("services"),
            settings,
        }
    }

    fn decide(s: &PipelineScanner, body: &str) -> Decision {
        let msg = format!(
            "From: a@example.net\r\nTo: b@example.org\r\nDate: Sat, 5 Dec 2026 10:00:00 +0000\r\n\
             Message-ID: <t@example.net>\r\nSubject: hi\r\n\r\n{body}\r\n"
        );
        s.decide(&Scanned {
            flow: Flow::Inbound,
            from: "a@example.net",
            to: &["b@example.org".to_string()],
            content: msg.as_bytes(),
            auth: None,
        })
    }

    #[test]
    fn a_network_service_that_is_down_is_labelled_and_the_mail_passes() {
        let settings = sealgate_scan::Settings {
            enabled: true,
            clamd: Some("/nonexistent/clamd.ctl".into()),
            reputation_url: Some("https://127.0.0.1:9/check".into()),
            reputation_timeout_ms: 300,
            ..sealgate_scan::Settings::default()
        };
        let s = PipelineScanner {
            pipeline: settings.pipeline(&[]).expect("pipeline"),
            services: sealgate_scan_net::Services::new(&settings).expect("services"),
            settings,
        };
        let v = decide(&s, "see https://example.org/");
        assert!(
            matches!(&v.verdict, Verdict::Tag(h) if h.starts_with("action=accept")
                && h.contains("clamd-unavailable") && h.contains("reputation-unavailable")),
            "{:?}",
            v.verdict
        );
    }

    #[test]
    fn rule_actions_override_the_score_and_block_wins() {
        let s = scanner(
            &[
                ("alpha", RuleAction::Quarantine),
                ("beta", RuleAction::Block),
                ("gamma", RuleAction::CopyAuditor),
                ("delta", RuleAction::RequireEncryption),
            ],
            Some("audit@example.org"),
        );
        assert!(
            matches!(decide(&s, "nothing here").verdict, Verdict::Tag(h) if h.starts_with("action=accept"))
        );
        let d = decide(&s, "alpha");
        assert!(
            matches!(&d.verdict, Verdict::Hold(h) if h.starts_with("action=quarantine")),
            "{d:?}"
        );
        assert!(matches!(
            decide(&s, "alpha beta").verdict,
            Verdict::Reject(_)
        ));
        let d = decide(&s, "gamma delta");
        assert!(matches!(d.verdict, Verdict::Tag(_)));
        assert_eq!(d.extras.copy_auditor.as_deref(), Some("audit@example.org"));
        assert!(d.extras.require_encryption);
        assert_eq!(d.extras.subject_tag, None);
        // An IBAN scores 5: tag, and the Subject tag with it.
        let d = decide(&s, "pay DE89370400440532013000");
        assert_eq!(d.extras.subject_tag.as_deref(), Some("[SPAM]"));
    }
}
