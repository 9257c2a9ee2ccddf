//! Content scanning on decrypted mail, without I/O.
//!
//! A message goes through a [`Pipeline`] of [`Scan`] stages. Each stage is a pure function of
//! the message as received, its decrypted [`View`] and the [`Lookups`] (hash databases
//! today; reputation answers, DNS lists and the classifier's model later), giving a
//! [`Finding`]: a score, labels and evidence. The [`Policy`] turns the summed score into an
//! [`Action`]: accept, tag, quarantine or reject.
//!
//! The stages, in order ([`Pipeline::standard`]): GTUBE ([`checks::Gtube`]), hashes of every
//! attachment and archive member against ClamAV databases ([`checks::Hashes`]), what unpacking
//! could not open ([`checks::Unpacking`]: bombs, encrypted archives, undecryptable S/MIME),
//! data-loss rules ([`checks::Dlp`]), spam rules ([`checks::SpamRules`]), URLs by hash
//! ([`checks::Urls`]) and the statistical classifier ([`checks::Classifier`],
//! [`classifier`]); with `[scan] reputation_url` and `clamd`, the answers of those services
//! ([`checks::Reputation`], [`checks::Clamd`]), which the caller asks between
//! [`Pipeline::prepare`] and [`Pipeline::finish`] (this crate does no I/O).
//!
//! **Never scanned as ciphertext:** the caller decrypts (the engine with the vault's keys) and
//! hands the cleartext over as [`Input::decrypted`]; an encrypted message without it is
//! labelled `encrypted-undecryptable`, only its outer header fields are looked at, and the
//! policy's `undecryptable` action applies.
//!
//! Attacker: whoever wrote the message. Nothing here panics on it or goes past
//! [`unpack::Limits`]; evidence names what matched (rule, masked number, signature name,
//! file name), never the content.

#![forbid(unsafe_code)]

pub mod checks;
pub mod classifier;
pub mod hashdb;
pub mod office;
pub mod pdf;
pub mod policy;
pub mod settings;
pub mod subject;
pub mod unpack;
pub mod urls;
pub mod view;

use serde::Serialize;

pub use hashdb::HashDb;
pub use policy::{Action, Policy};
pub use settings::Settings;
pub use unpack::Limits;
pub use view::View;

/// Which way a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the Internet to a local user.
    Inbound,
    /// From a local user out.
    Outbound,
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(format!("unknown direction {s:?} (inbound, outbound)")),
        }
    }
}

/// Whether the content was encrypted, and whether the box could read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decryption {
    /// It was not encrypted.
    None,
    /// It was encrypted and the box decrypted it for scanning.
    Decrypted,
    /// It is encrypted and the box could not decrypt it: its content was not scanned.
    Undecryptable,
}

/// A message to scan.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The message as received.
    pub message: &'a [u8],
    /// Its cleartext with the S/MIME layers removed, when the caller could (decrypted, or an
    /// opaque signature unwrapped); reported as decrypted only when `message` is encrypted.
    pub decrypted: Option<&'a [u8]>,
    /// Which way it goes.
    pub direction: Direction,
}

impl<'a> Input<'a> {
    /// A message as received, not decrypted.
    pub fn new(message: &'a [u8], direction: Direction) -> Input<'a> {
        Input {
            message,
            decrypted: None,
            direction,
        }
    }
}

/// Is the message itself S/MIME encrypted (its top-level entity)?
pub fn is_encrypted(message: &[u8]) -> bool {
    use sealgate_smime::mime::{Entity, SmimeKind};
    let e = Entity::parse(message);
    match e.smime_kind() {
        SmimeKind::Enveloped | SmimeKind::AuthEnveloped => true,
        SmimeKind::UnknownPkcs7 => e
            .decoded_body()
            .ok()
            .as_deref()
            .and_then(sealgate_smime::message::cms_content_type)
            .is_some_and(|ct| {
                ct == sealgate_smime::oid::ENVELOPED_DATA
                    || ct == sealgate_smime::oid::AUTH_ENVELOPED_DATA
            }),
        _ => false,
    }
}

/// What a stage sees.
#[derive(Debug, Clone, Copy)]
pub struct Scanned<'a> {
    /// The message as received.
    pub message: &'a [u8],
    /// The decrypted view: header fields, texts, objects.
    pub view: &'a View,
    /// Which way it goes.
    pub direction: Direction,
    /// Whether it was decrypted.
    pub decryption: Decryption,
    /// What the network services answered (nothing when none was asked).
    pub remote: &'a Remote,
}

/// The reputation service's answer on a message's URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReputationAnswer {
    /// SHA-256 (lower-case hex) of the normalised URLs it lists as malicious.
    pub malicious: Vec<String>,
    /// Why it could not be asked (no answer, timeout, TLS, bad answer).
    pub error: Option<String>,
}

/// clamd's answer on a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClamdAnswer {
    /// The names of what it found.
    pub viruses: Vec<String>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// What the network services answered about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// The reputation service.
    pub reputation: ReputationAnswer,
    /// clamd.
    pub clamd: ClamdAnswer,
}

/// A message parsed for scanning, before the stages run: what the caller needs to ask the
/// network services (its URLs, its cleartext).
#[derive(Debug, Clone)]
pub struct Prepared<'a> {
    input: Input<'a>,
    /// The decrypted view.
    pub view: View,
    /// Whether it was decrypted.
    pub decryption: Decryption,
}

impl Prepared<'_> {
    /// The normalised URLs of the message ([`urls`]).
    pub fn urls(&self) -> Vec<String> {
        urls::of_view(&self.view)
    }

    /// What a virus scanner should see: the cleartext, or nothing when the message stays
    /// encrypted (never scanned as ciphertext).
    pub fn cleartext(&self) -> Option<&[u8]> {
        match self.decryption {
            Decryption::Undecryptable => None,
            _ => Some(self.input.decrypted.unwrap_or(self.input.message)),
        }
    }
}

/// What the stages look things up in. Loaded once, shared by every message.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// Hash signatures (the shipped ones plus configured ClamAV files).
    pub hashes: HashDb,
    /// The spam classifier's model (the shipped counts plus the local layer).
    pub classifier: classifier::Loaded,
}

/// What one stage found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Finding {
    /// Added to the message's score.
    pub score: f64,
    /// Labels (`spam`, `virus`, `dlp:card-number`, ...).
    pub labels: Vec<String>,
    /// What matched, for the administrator (never message content).
    pub evidence: Vec<String>,
}

impl Finding {
    /// Adds `score` with a label (once) and a line of evidence.
    pub fn hit(&mut self, score: f64, label: &str, evidence: impl Into<String>) {
        self.score += score;
        if !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
        self.evidence.push(evidence.into());
    }
}

/// One check of the pipeline.
pub trait Scan: Send + Sync {
    /// Its name in reports (`gtube`, `hashes`, ...).
    fn name(&self) -> &'static str;

    /// Looks at one message. Must not panic and must stay bounded on any input.
    fn scan(&self, message: &Scanned<'_>, lookups: &Lookups) -> Finding;
}

/// One stage's part of a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The stage's name.
    pub check: &'static str,
    /// What it found.
    #[serde(flatten)]
    pub finding: Finding,
}

/// The verdict on one message: the contract of `sealctl scan`'s JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What to do.
    pub action: Action,
    /// The sum of the stages' scores.
    pub score: f64,
    /// Every stage's labels, once each, in stage order.
    pub labels: Vec<String>,
    /// Every stage's finding.
    pub checks: Vec<CheckReport>,
    /// Whether the content was decrypted for scanning.
    pub decryption: Decryption,
}

impl Report {
    /// The value of `X-Sealgate-Scan:` (`action=...; score=...; labels=...`).
    pub fn header_value(&self) -> String {
        let labels: String = self
            .labels
            .join(",")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        format!(
            "action={}; score={}; labels={}",
            self.action.as_str(),
            round2(self.score),
            labels
        )
    }
}

/// A message saved from a mailbox file starts with the mbox `From ` line, which no SMTP
/// client sends: it is not a header field, and without it the header block parses.
pub(crate) fn without_mbox_line(m: &[u8]) -> &[u8] {
    if m.starts_with(b"From ")
        && let Some(end) = m.iter().position(|&b| b == b'\n')
    {
        &m[end + 1..]
    } else {
        m
    }
}

/// How evidence names a part: `the body` for the message's own, else `part PATH`.
pub(crate) fn part_name(path: &str) -> String {
    if path.is_empty() {
        "the body".into()
    } else {
        format!("part {path}")
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The stages, the lookups they use, the unpacking limits and the policy.
pub struct Pipeline {
    stages: Vec<Box<dyn Scan>>,
    /// What the stages look things up in.
    pub lookups: Lookups,
    /// Bounds on unpacking.
    pub limits: Limits,
    /// Score to action.
    pub policy: Policy,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field(
                "stages",
                &self.stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("signatures", &self.lookups.hashes.len())
            .field("limits", &self.limits)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline of these stages.
    pub fn new(stages: Vec<Box<dyn Scan>>, lookups: Lookups, policy: Policy) -> Pipeline {
        Pipeline {
            stages,
            lookups,
            limits: Limits::default(),
            policy,
        }
    }

    /// The product's stages in their order: GTUBE, hashes, unpacking, DLP, spam rules, URLs,
    /// the classifier.
    pub fn standard(lookups: Lookups, dlp: checks::Dlp, policy: Policy) -> Pipeline {
        Pipeline::new(
            vec![
                Box::new(checks::Gtube),
                Box::new(checks::Hashes),
                Box::new(checks::Unpacking),
                Box::new(dlp),
                Box::new(checks::SpamRules),
                Box::new(checks::Urls),
                Box::new(checks::Classifier),
            ],
            lookups,
            policy,
        )
    }

    /// The names of the stages, in order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Adds a stage at the end.
    pub fn push(&mut self, stage: Box<dyn Scan>) {
        self.stages.push(stage);
    }

    /// Scans one message (no network service asked).
    pub fn scan(&self, input: &Input<'_>) -> Report {
        self.scan_with(input, None)
    }

    /// The hosts of the links in a message (its cleartext), for URIBL: at most 20.
    pub fn link_hosts(&self, content: &[u8]) -> Vec<String> {
        checks::link_hosts(&View::build(without_mbox_line(content), self.limits), 20)
    }

    /// Scans one message, with the sender authentication and DNS list results the daemon
    /// looked up (an `authentication` stage before the others; `dmarc` says what DMARC's
    /// policy does, see [`checks::auth`]); no network service asked.
    pub fn scan_with(
        &self,
        input: &Input<'_>,
        auth: Option<(&checks::AuthResults, checks::DmarcMode)>,
    ) -> Report {
        self.finish(&self.prepare(input), &Remote::default(), auth)
    }

    /// Parses and unpacks one message: the first half of [`Pipeline::scan`].
    pub fn prepare<'a>(&self, input: &Input<'a>) -> Prepared<'a> {
        let input = Input {
            message: without_mbox_line(input.message),
            decrypted: input.decrypted.map(without_mbox_line),
            direction: input.direction,
        };
        let (view, decryption) = match input.decrypted {
            Some(clear) => (
                View::build(clear, self.limits),
                if is_encrypted(input.message) {
                    Decryption::Decrypted
                } else {
                    Decryption::None
                },
            ),
            None if is_encrypted(input.message) => {
                (View::headers_only(input.message), Decryption::Undecryptable)
            }
            None => (View::build(input.message, self.limits), Decryption::None),
        };
        Prepared {
            input,
            view,
            decryption,
        }
    }

    /// Runs the stages on a prepared message with what the network services answered and
    /// the sender authentication results (see [`Pipeline::scan_with`]).
    pub fn finish(
        &self,
        prepared: &Prepared<'_>,
        remote: &Remote,
        auth: Option<(&checks::AuthResults, checks::DmarcMode)>,
    ) -> Report {
        let decryption = prepared.decryption;
        let scanned = Scanned {
            message: prepared.input.message,
            view: &prepared.view,
            direction: prepared.input.direction,
            decryption,
            remote,
        };
        let mut score = 0.0;
        let mut labels: Vec<String> = Vec::new();
        let mut checks = Vec::with_capacity(self.stages.len() + 1);
        let auth_finding = auth.map(|(r, mode)| ("authentication", r.finding(mode)));
        let findings = auth_finding.into_iter().chain(
            self.stages
                .iter()
                .map(|stage| (stage.name(), stage.scan(&scanned, &self.lookups))),
        );
        for (name, mut finding) in findings {
            if !finding.score.is_finite() {
                finding.score = 0.0;
            }
            finding.score = round2(finding.score);
            score += finding.score;
            for l in &finding.labels {
                if !labels.contains(l) {
                    labels.push(l.clone());
                }
            }
            checks.push(CheckReport {
                check: name,
                finding,
            });
        }
        let score = round2(score);
        let undecryptable = labels.iter().any(|l| l == checks::LABEL_UNDECRYPTABLE);
        let mut action = self.policy.decide(score, undecryptable);
        if let Some(a) = auth.and_then(|(r, mode)| r.dmarc_action(mode)) {
            action = action.max(a);
        }
        Report {
            action,
            score,
            labels,
            checks,
            decryption,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> Pipeline {
        Pipeline::standard(
            Lookups {
                hashes: HashDb::shipped(),
                ..Lookups::default()
            },
            checks::Dlp::new(vec![]).expect("dlp"),
            Policy::default(),
        )
    }

    const HEAD: &str = "From: a@example.org\r\nDate: x\r\nMessage-ID: <1@x>\r\n";

    #[test]
    fn stages_run_in_the_contract_order() {
        assert_eq!(
            standard().stage_names(),
            [
                "gtube",
                "hashes",
                "unpacking",
                "dlp",
                "spam-rules",
                "urls",
                "classifier"
            ]
        );
    }

    #[test]
    fn a_clean_message_is_accepted() {
        let msg = format!("{HEAD}Subject: hi\r\n\r\nsee you tomorrow\r\n");
        let r = standard().scan(&Input::new(msg.as_bytes(), Direction::Inbound));
        assert_eq!(r.action, Action::Accept);
        assert_eq!(r.score, 0.0);
        assert!(r.labels.is_empty());
        assert_eq!(r.decryption, Decryption::None);
        assert_eq!(r.header_value(), "action=accept; score=0; labels=");
    }

    #[test]
    fn gtube_is_rejected_and_eicar_is_a_virus() {
        let msg = format!("{HEAD}\r\n{}\r\n", checks::GTUBE);
        let r = standard().scan(&Input::new(msg.as_bytes(), Direction::Inbound));
        assert_eq!(r.action, Action::Reject);
        assert_eq!(r.labels, ["spam", "gtube"]);
        let eicar = [
            "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR",
            "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
        ]
        .concat();
        let msg = format!(
            "{HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n\
             Content-Type: application/octet-stream; name=eicar.com.txt\r\n\r\n{eicar}\r\n--b--\r\n"
        );
        let r = standard().scan(&Input::new(msg.as_bytes(), Direction::Inbound));
        assert_eq!(r.action, Action::Reject);
        assert!(r.labels.contains(&"virus".into()), "{r:?}");
        assert!(r.labels.contains(&"virus:Eicar-Test-Signature".into()));
    }

    #[test]
    fn an_encrypted_message_without_its_cleartext_is_labelled_not_scanned() {
        let msg = format!(
            "{HEAD}Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n"
        );
        let r = standard().scan(&Input::new(msg.as_bytes(), Direction::Inbound));
        assert_eq!(r.decryption, Decryption::Undecryptable);
        assert_eq!(r.labels, [checks::LABEL_UNDECRYPTABLE]);
        assert_eq!(r.action, Action::Tag);
        // With the cleartext, the cleartext is what is scanned.
        let clear = format!("{HEAD}\r\n{}\r\n", checks::GTUBE);
        let r = standard().scan(&Input {
            message: msg.as_bytes(),
            decrypted: Some(clear.as_bytes()),
            direction: Direction::Inbound,
        });
        assert_eq!(r.decryption, Decryption::Decrypted);
        assert_eq!(r.action, Action::Reject);
    }

    #[test]
    fn the_report_is_the_contract_json() {
        let msg = format!("{HEAD}\r\ncard 4111-1111-1111-1111\r\n");
        let r = standard().scan(&Input::new(msg.as_bytes(), Direction::Outbound));
        let j = serde_json::to_value(&r).expect("json");
        assert_eq!(j["action"], "quarantine");
        assert_eq!(j["score"], 10.0);
        assert_eq!(j["labels"][0], "dlp:card-number");
        assert_eq!(j["checks"][3]["check"], "dlp");
        assert_eq!(j["checks"][3]["labels"][0], "dlp:card-number");
    }
}
