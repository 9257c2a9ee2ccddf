//! The stages of the standard pipeline.

pub mod auth;
mod classifier;
mod dlp;
mod spam;

pub use auth::{AuthResults, DmarcMode, DnsList, ListResult};
pub use classifier::{Classifier, LABEL_CLASSIFIER, LABEL_CLASSIFIER_UNAVAILABLE};
pub use dlp::{Dlp, DlpRule, RuleAction, Validated, iban_valid, luhn_valid};
pub use spam::{SpamRules, link_hosts};

use crate::hashdb::Digests;
use crate::view::ViewAnomaly;
use crate::{Finding, Lookups, Scan, Scanned};

/// Label of an encrypted message (or part) the box could not decrypt.
pub const LABEL_UNDECRYPTABLE: &str = "encrypted-undecryptable";

/// SpamAssassin's Generic Test for Unsolicited Bulk Email: a message containing it is spam.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// GTUBE in any body or text attachment: score 1000 (SpamAssassin's), labels `spam`, `gtube`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gtube;

impl Scan for Gtube {
    fn name(&self) -> &'static str {
        "gtube"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        if let Some(t) = m.view.texts.iter().find(|t| t.text.contains(GTUBE)) {
            f.hit(
                1000.0,
                "spam",
                format!("GTUBE in {}", crate::part_name(&t.path)),
            );
            f.labels.push("gtube".into());
        }
        f
    }
}

/// MD5, SHA-1 and SHA-256 of every attachment and archive member against the hash
/// databases: a match scores 100 with the labels `virus` and `virus:NAME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hashes;

impl Scan for Hashes {
    fn name(&self) -> &'static str {
        "hashes"
    }

    fn scan(&self, m: &Scanned<'_>, lookups: &Lookups) -> Finding {
        let mut f = Finding::default();
        if lookups.hashes.is_empty() {
            return f;
        }
        for o in &m.view.objects {
            let d = Digests::of(&o.data);
            let found = lookups
                .hashes
                .lookup(&d)
                .or_else(|| lookups.hashes.lookup_sections(&o.data));
            if let Some(name) = found {
                let name: String = name.chars().filter(|c| c.is_ascii_graphic()).collect();
                f.hit(
                    100.0,
                    "virus",
                    format!("{name} in part {} (sha256 {})", o.path, d.sha256_hex()),
                );
                let label = format!("virus:{name}");
                if !f.labels.contains(&label) {
                    f.labels.push(label);
                }
            }
        }
        f
    }
}

/// What could not be looked into: `bomb` (10: quarantined by default), `unscannable`
/// (encrypted or corrupt archive, 5: tagged), `encrypted-undecryptable` (0: the policy's
/// `undecryptable` action applies).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpacking;

impl Scan for Unpacking {
    fn name(&self) -> &'static str {
        "unpacking"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        let mut bomb = false;
        let mut unscannable = false;
        for x in &m.view.findings {
            let at = if x.path.is_empty() {
                "the message".to_string()
            } else {
                format!("part {}", x.path)
            };
            match &x.anomaly {
                ViewAnomaly::Bomb(why) => {
                    f.hit(
                        if bomb { 0.0 } else { 10.0 },
                        "bomb",
                        format!("{at}: {why}"),
                    );
                    bomb = true;
                }
                ViewAnomaly::Unscannable(why) => {
                    f.hit(
                        if unscannable { 0.0 } else { 5.0 },
                        "unscannable",
                        format!("{at}: {why}"),
                    );
                    unscannable = true;
                }
                ViewAnomaly::Encrypted => f.hit(
                    0.0,
                    LABEL_UNDECRYPTABLE,
                    format!("{at} is encrypted and the box holds no key for it"),
                ),
            }
        }
        f
    }
}

/// Every URL of the bodies and text attachments, normalised ([`crate::urls`]), hashed
/// (SHA-256, SHA-1, MD5 of the normalised form) against the hash databases: a match scores
/// 10 with the labels `malicious-url` and `url:NAME`. Evidence names the URL's host and hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct Urls;

/// The host of a normalised URL (for evidence).
pub(crate) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default()
}

impl Scan for Urls {
    fn name(&self) -> &'static str {
        "urls"
    }

    fn scan(&self, m: &Scanned<'_>, lookups: &Lookups) -> Finding {
        let mut f = Finding::default();
        if lookups.hashes.is_empty() {
            return f;
        }
        for url in crate::urls::of_view(m.view) {
            let d = Digests::of(url.as_bytes());
            if let Some(name) = lookups.hashes.lookup(&d) {
                let name: String = name.chars().filter(|c| c.is_ascii_graphic()).collect();
                f.hit(
                    10.0,
                    "malicious-url",
                    format!(
                        "{name}: a URL of host {} (sha256 {})",
                        url_host(&url),
                        d.sha256_hex()
                    ),
                );
                let label = format!("url:{name}");
                if !f.labels.contains(&label) {
                    f.labels.push(label);
                }
            }
        }
        f
    }
}

/// The reputation service's answer (asked by the caller before the pipeline's last step):
/// each URL it lists scores 10 with the label `malicious-url`; a service that did not answer
/// is labelled `reputation-unavailable` (score 0: mail is never held for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reputation;

impl Scan for Reputation {
    fn name(&self) -> &'static str {
        "reputation"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        let r = &m.remote.reputation;
        if let Some(e) = &r.error {
            f.hit(0.0, "reputation-unavailable", e.clone());
        }
        for url in crate::urls::of_view(m.view) {
            let sha = crate::hashdb::hex(&<sha2::Sha256 as md5::Digest>::digest(url.as_bytes()));
            if r.malicious.contains(&sha) {
                f.hit(
                    10.0,
                    "malicious-url",
                    format!(
                        "the reputation service lists a URL of host {} (sha256 {sha})",
                        url_host(&url)
                    ),
                );
            }
        }
        f
    }
}

/// clamd's answer on the cleartext (asked by the caller): each virus it names scores 100
/// with `virus` and `virus:NAME`; clamd that did not answer is labelled `clamd-unavailable`
/// (score 0: mail is never held for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clamd;

impl Scan for Clamd {
    fn name(&self) -> &'static str {
        "clamd"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        let c = &m.remote.clamd;
        if let Some(e) = &c.error {
            f.hit(0.0, "clamd-unavailable", e.clone());
        }
        for name in &c.viruses {
            let name: String = name.chars().filter(|c| c.is_ascii_graphic()).collect();
            f.hit(100.0, "virus", format!("clamd: {name}"));
            let label = format!("virus:{name}");
            if !f.labels.contains(&label) {
                f.labels.push(label);
            }
        }
        f
    }
}
