//! Data-loss rules: validated patterns (payment card numbers with the Luhn check, IBANs with
//! their ISO 13616 checksum and length per country) and configured rules (keywords and
//! regular expressions), each with a threshold (matches per message) and a score, in header
//! fields, bodies and text attachments (also inside archives).
//!
//! Evidence never carries what matched: a card number shows its last four digits, an IBAN its
//! country, a rule only its count.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::{Finding, Lookups, Scan, Scanned};

/// A validated pattern's threshold and score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validated {
    /// Matches per message needed (0 turns the pattern off).
    pub threshold: usize,
    /// Score when reached.
    pub score: f64,
    /// What a hit does besides its score (the daemon acts on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
}

/// What a DLP rule's hit makes the daemon do, whatever the score's action
/// (`[[scan.dlp]] action`, `[scan.card_numbers] action`, `[scan.ibans] action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    /// Kept in the quarantine for an auditor.
    Quarantine,
    /// Delivered, and a copy sent to `[scan] auditor` through the queue.
    CopyAuditor,
    /// Refused (`550` while the client waits).
    Block,
    /// Delivered only encrypted: submission's policy becomes `mandatory` for the message;
    /// inbound cleartext is encrypted to its recipients' keys, or quarantined.
    RequireEncryption,
}

impl RuleAction {
    /// The name in the settings file.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Quarantine => "quarantine",
            RuleAction::CopyAuditor => "copy-auditor",
            RuleAction::Block => "block",
            RuleAction::RequireEncryption => "require-encryption",
        }
    }
}

/// A configured rule: keywords (whole words, any case) and/or a regular expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpRule {
    /// Its name: the label is `dlp:NAME`.
    pub name: String,
    /// Whole words or phrases, matched in any case.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression (Rust `regex` syntax: linear time, no look-around).
    #[serde(default)]
    pub regex: Option<String>,
    /// Matches per message needed.
    #[serde(default = "one")]
    pub threshold: usize,
    /// Score when reached.
    #[serde(default = "ten")]
    pub score: f64,
    /// What a hit does besides its score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
}

fn one() -> usize {
    1
}

fn ten() -> f64 {
    10.0
}

/// The DLP stage: validated patterns and compiled rules.
#[derive(Debug, Clone)]
pub struct Dlp {
    card_numbers: Validated,
    ibans: Validated,
    rules: Vec<(DlpRule, Regex)>,
    card_re: Regex,
    iban_re: Regex,
}

/// Compiled size bound of one configured expression (the `regex` crate is linear in the
/// input; this bounds its memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Dlp {
    /// Card numbers score 10 (quarantine), IBANs 5 (tag), at one match each; no rules.
    pub fn new(rules: Vec<DlpRule>) -> Result<Dlp, String> {
        Dlp::with_patterns(
            Validated {
                threshold: 1,
                score: 10.0,
                action: None,
            },
            Validated {
                threshold: 1,
                score: 5.0,
                action: None,
            },
            rules,
        )
    }

    /// With explicit thresholds for the validated patterns. Refuses a rule without keywords
    /// or expression, a bad name or a bad expression.
    pub fn with_patterns(
        card_numbers: Validated,
        ibans: Validated,
        rules: Vec<DlpRule>,
    ) -> Result<Dlp, String> {
        let mut compiled = Vec::new();
        for r in rules {
            if r.name.is_empty()
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "DLP rule name {:?}: letters, digits, - and _ only",
                    r.name
                ));
            }
            let mut alts: Vec<String> = r
                .keywords
                .iter()
                .filter(|k| !k.trim().is_empty())
                .map(|k| format!(r"\b{}\b", regex::escape(k.trim())))
                .collect();
            if let Some(re) = &r.regex {
                alts.push(format!("(?:{re})"));
            }
            if alts.is_empty() {
                return Err(format!("DLP rule {}: no keywords and no regex", r.name));
            }
            let re = RegexBuilder::new(&alts.join("|"))
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("DLP rule {}: {e}", r.name))?;
            compiled.push((r, re));
        }
        Ok(Dlp {
            card_numbers,
            ibans,
            rules: compiled,
            // Constant expressions: they compile (the unit tests run them).
            card_re: Regex::new(r"\b(?:\d[ -]?){12,18}\d\b").map_err(|e| e.to_string())?,
            iban_re: Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
                .map_err(|e| e.to_string())?,
        })
    }
}

/// The Luhn check over a string of digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A plausible card number: 13 to 19 digits, an issuer prefix (2 to 6), Luhn-valid.
fn card_number(candidate: &str) -> Option<String> {
    let digits: Vec<u8> = candidate.bytes().filter(u8::is_ascii_digit).collect();
    if !(13..=19).contains(&digits.len()) || !matches!(digits.first(), Some(b'2'..=b'6')) {
        return None;
    }
    // One kind of separator at most ("4111 1111-1111" is no number anyone writes).
    if candidate.contains(' ') && candidate.contains('-') {
        return None;
    }
    luhn_valid(&digits).then(|| String::from_utf8_lossy(&digits[digits.len() - 4..]).into())
}

/// Is the match one group of a longer run (`DE89 3704 ...`, `+49 30 1234 ...`)? A separator
/// and then a digit on either side.
fn glued(text: &[u8], start: usize, end: usize) -> bool {
    let before = start >= 2
        && matches!(text.get(start - 1), Some(b' ' | b'-'))
        && text.get(start - 2).is_some_and(u8::is_ascii_digit);
    let after = matches!(text.get(end), Some(b' ' | b'-'))
        && text.get(end + 1).is_some_and(u8::is_ascii_digit);
    before || after
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// The ISO 13616 check: the country's length and mod 97 = 1 (`iban` without spaces).
pub fn iban_valid(iban: &str) -> bool {
    let b = iban.as_bytes();
    let Some(country) = iban.get(..2) else {
        return false;
    };
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == country) else {
        return false;
    };
    if b.len() != len || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The IBAN a regex match starts with: whole space-separated groups adding up to exactly
/// the country's length.
fn iban(candidate: &str) -> Option<String> {
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| Some(*c) == candidate.get(..2))?
        .1;
    let mut compact = String::new();
    for group in candidate.split(' ') {
        compact.push_str(group);
        if compact.len() >= len {
            break;
        }
    }
    (compact.len() == len && iban_valid(&compact)).then(|| compact[..2].to_string())
}

impl Scan for Dlp {
    fn name(&self) -> &'static str {
        "dlp"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        let header_text: String = m
            .view
            .headers
            .iter()
            .map(|h| format!("{}: {}\n", h.name, h.value))
            .collect();
        let texts = std::iter::once(("headers", header_text.as_str())).chain(
            m.view
                .texts
                .iter()
                .map(|t| (t.path.as_str(), t.text.as_str())),
        );
        let mut cards: Vec<(String, String)> = Vec::new();
        let mut ibans: Vec<(String, String)> = Vec::new();
        let mut rule_hits = vec![0usize; self.rules.len()];
        for (path, text) in texts {
            for c in self.card_re.find_iter(text) {
                if glued(text.as_bytes(), c.start(), c.end()) {
                    continue;
                }
                if let Some(last4) = card_number(c.as_str()) {
                    cards.push((path.to_string(), last4));
                }
            }
            for c in self.iban_re.find_iter(text) {
                if let Some(country) = iban(c.as_str()) {
                    ibans.push((path.to_string(), country));
                }
            }
            for (i, (_, re)) in self.rules.iter().enumerate() {
                rule_hits[i] += re.find_iter(text).count();
            }
        }
        let threshold = |v: &Validated, n: usize| v.threshold > 0 && n >= v.threshold;
        if threshold(&self.card_numbers, cards.len()) {
            let (path, last4) = &cards[0];
            f.hit(
                self.card_numbers.score,
                "dlp:card-number",
                format!(
                    "{} card number(s) passing the Luhn check, first in {path} ending {last4}",
                    cards.len()
                ),
            );
        }
        if threshold(&self.ibans, ibans.len()) {
            let (path, country) = &ibans[0];
            f.hit(
                self.ibans.score,
                "dlp:iban",
                format!(
                    "{} IBAN(s) with a valid checksum, first in {path} ({country})",
                    ibans.len()
                ),
            );
        }
        for ((rule, _), n) in self.rules.iter().zip(rule_hits) {
            if rule.threshold > 0 && n >= rule.threshold {
                f.hit(
                    rule.score,
                    &format!("dlp:{}", rule.name),
                    format!("rule {}: {n} match(es)", rule.name),
                );
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, Input, Lookups, Pipeline, Policy};

    fn scan(dlp: Dlp, body: &str) -> Finding {
        let p = Pipeline::new(vec![Box::new(dlp)], Lookups::default(), Policy::default());
        let msg = format!("Subject: x\r\n\r\n{body}");
        let r = p.scan(&Input::new(msg.as_bytes(), Direction::Outbound));
        r.checks[0].finding.clone()
    }

    #[test]
    fn luhn_and_iban_checks() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("DE89370400440532013001"));
        assert!(!iban_valid("DE8937040044053201300"));
        assert!(!iban_valid("ZZ89370400440532013000"));
    }

    #[test]
    fn card_numbers_are_found_with_separators_and_masked() {
        let f = scan(
            Dlp::new(vec![]).expect("dlp"),
            "pay with 4111 1111 1111 1111 please",
        );
        assert_eq!(f.labels, vec!["dlp:card-number"]);
        assert!(f.evidence[0].ends_with("ending 1111"));
        assert!(!f.evidence[0].contains("4111"));
        // Not Luhn-valid, or an order number: nothing.
        let f = scan(
            Dlp::new(vec![]).expect("dlp"),
            "ref 4111 1111 1111 1112, 1234567890123",
        );
        assert!(f.labels.is_empty(), "{f:?}");
    }

    #[test]
    fn ibans_are_found_in_groups() {
        let f = scan(
            Dlp::new(vec![]).expect("dlp"),
            "IBAN: DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX",
        );
        assert_eq!(f.labels, vec!["dlp:iban"]);
        let f = scan(
            Dlp::new(vec![]).expect("dlp"),
            "DE89 3704 0044 0532 0130 01",
        );
        assert!(f.labels.is_empty());
    }

    #[test]
    fn rules_count_keywords_and_expressions_to_their_threshold() {
        let rules = vec![
            DlpRule {
                name: "confidential".into(),
                keywords: vec!["Company Confidential".into()],
                regex: None,
                threshold: 2,
                score: 3.0,
                action: None,
            },
            DlpRule {
                name: "project".into(),
                keywords: vec![],
                regex: Some(r"PRJ-\d{4}".into()),
                threshold: 1,
                score: 1.0,
                action: None,
            },
        ];
        let dlp = Dlp::new(rules.clone()).expect("dlp");
        let f = scan(dlp.clone(), "company confidential: PRJ-1234");
        assert_eq!(f.labels, vec!["dlp:project"]);
        let f = scan(dlp, "COMPANY CONFIDENTIAL and company confidential");
        assert_eq!(f.labels, vec!["dlp:confidential"]);
        assert_eq!(f.score, 3.0);
        let bad = DlpRule {
            regex: Some("(".into()),
            ..rules[1].clone()
        };
        assert!(Dlp::new(vec![bad]).is_err());
    }
}
