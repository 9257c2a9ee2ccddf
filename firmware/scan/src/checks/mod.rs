//! The stages of the standard pipeline.

mod dlp;
mod spam;

pub use dlp::{Dlp, DlpRule, Validated, iban_valid, luhn_valid};
pub use spam::SpamRules;

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
            if let Some(name) = lookups.hashes.lookup(&d) {
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
