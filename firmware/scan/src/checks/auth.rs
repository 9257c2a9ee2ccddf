//! Sender authentication (SPF, DKIM, DMARC, ARC) and DNS block lists (DNSBL for the client's
//! address, URIBL for the domains of links) as a stage of the pipeline.
//!
//! The lookups are the daemon's (`sealgated/src/mailauth.rs`, through `mail-auth` and the
//! box's resolver); this module is what they mean: the [`AuthResults`] of one message turned
//! into a [`Finding`] (labels `spf:fail`, `dkim:fail`, `dmarc:reject`, `dnsbl:ZONE`, ...) and,
//! when `[scan] dmarc_policy = "honour"`, into the action the sender's domain asks for.
//!
//! Attacker: whoever sent the message, who would like it to pass for someone else's (a forged
//! From, a signature that does not cover what was changed) or to be blocked for a DNS error.
//! A DNS failure is labelled (`*:temperror`) and scores nothing.

use serde::{Deserialize, Serialize};

use crate::{Action, Finding};

/// What `[scan] dmarc_policy` does with a failing domain's `p=reject` / `p=quarantine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcMode {
    /// `p=reject` is a reject (`550` before the `250`), `p=quarantine` a quarantine.
    #[default]
    Honour,
    /// The policy only adds to the score.
    Score,
}

/// A DNS list: a zone and the score of a listing (`[scan] dnsbl = [{zone, score}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsList {
    /// The zone queried (`zen.example`): `4.3.2.1.zen.example` for a client `1.2.3.4`,
    /// `domain.zen.example` for a link's domain.
    pub zone: String,
    /// Added when listed.
    #[serde(default = "default_list_score")]
    pub score: f64,
}

fn default_list_score() -> f64 {
    5.0
}

impl DnsList {
    /// Checks the zone is a plain DNS name and the score finite.
    pub fn validate(&self) -> Result<(), String> {
        let z = self.zone.trim_end_matches('.');
        let ok = !z.is_empty()
            && z.len() <= 200
            && z.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(format!("DNS list zone {:?} is not a DNS name", self.zone));
        }
        if !self.score.is_finite() {
            return Err("DNS list scores must be finite numbers".into());
        }
        Ok(())
    }
}

/// One DNS list answer worth reporting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// `dnsbl` or `uribl`.
    pub kind: String,
    /// The list's zone.
    pub zone: String,
    /// What was looked up (the client's address, a link's domain).
    pub item: String,
    /// `listed` (an answer in 127.0.0.0/8) or `temperror` (no answer in time).
    pub outcome: String,
    /// The score of a listing.
    pub score: f64,
}

/// The authentication results of one message (stored with it in the spool, so that the
/// delivery loop's scan sees what the session's did).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthResults {
    /// The `Authentication-Results:` value (`authserv-id; spf=...; dkim=...`), empty when
    /// authentication was not checked (only the lists were).
    #[serde(default)]
    pub header: String,
    /// SPF of MAIL FROM (of HELO for `<>`): pass, fail, softfail, neutral, none, temperror,
    /// permerror; empty when not checked.
    #[serde(default)]
    pub spf: String,
    /// Each DKIM signature's result (none when unsigned).
    #[serde(default)]
    pub dkim: Vec<String>,
    /// DMARC: pass, fail, none, temperror, permerror.
    #[serde(default)]
    pub dmarc: String,
    /// The From domain's published policy: none, quarantine, reject.
    #[serde(default)]
    pub dmarc_policy: String,
    /// ARC chain: pass, fail, none, ...
    #[serde(default)]
    pub arc: String,
    /// DNS list answers (listings and failures).
    #[serde(default)]
    pub lists: Vec<ListResult>,
}

/// Scores of the authentication results.
pub const SCORE_SPF_FAIL: f64 = 3.0;
/// SPF softfail.
pub const SCORE_SPF_SOFTFAIL: f64 = 1.0;
/// A DKIM signature that does not verify.
pub const SCORE_DKIM_FAIL: f64 = 3.0;
/// DMARC fails and the domain says `p=none`.
pub const SCORE_DMARC_NONE: f64 = 2.0;
/// DMARC fails and the domain says `p=quarantine` (only scored with `dmarc_policy = "score"`).
pub const SCORE_DMARC_QUARANTINE: f64 = 10.0;
/// DMARC fails and the domain says `p=reject` (only scored with `dmarc_policy = "score"`).
pub const SCORE_DMARC_REJECT: f64 = 20.0;
/// An ARC chain that fails.
pub const SCORE_ARC_FAIL: f64 = 1.0;

impl AuthResults {
    /// Whether DMARC failed.
    pub fn dmarc_failed(&self) -> bool {
        self.dmarc == "fail"
    }

    /// The action DMARC asks for under `mode`: `p=reject` → reject, `p=quarantine` →
    /// quarantine, only when DMARC failed and the mode honours it.
    pub fn dmarc_action(&self, mode: DmarcMode) -> Option<Action> {
        if mode != DmarcMode::Honour || !self.dmarc_failed() {
            return None;
        }
        match self.dmarc_policy.as_str() {
            "reject" => Some(Action::Reject),
            "quarantine" => Some(Action::Quarantine),
            _ => None,
        }
    }

    /// Labels and scores: `spf:fail` 3, `spf:softfail` 1, `dkim:fail` 3, `dmarc:fail` with
    /// `dmarc:none|quarantine|reject` (2 for none; 10 and 20 with `dmarc_policy = "score"`, 0
    /// when honoured: the action decides), `arc:fail` 1, `*:temperror` and `*:permerror` 0,
    /// `dnsbl:ZONE` / `uribl:ZONE` their zone's score, `dnsbl:temperror` 0.
    pub fn finding(&self, mode: DmarcMode) -> Finding {
        let mut f = Finding::default();
        match self.spf.as_str() {
            "fail" => f.hit(
                SCORE_SPF_FAIL,
                "spf:fail",
                "SPF fail for the sender's domain",
            ),
            "softfail" => f.hit(SCORE_SPF_SOFTFAIL, "spf:softfail", "SPF softfail"),
            "temperror" | "permerror" => f.hit(
                0.0,
                &format!("spf:{}", self.spf),
                format!("SPF {}", self.spf),
            ),
            _ => {}
        }
        let mut dkim_failed = false;
        for d in &self.dkim {
            match d.as_str() {
                "fail" | "neutral" if !dkim_failed => {
                    dkim_failed = true;
                    f.hit(
                        SCORE_DKIM_FAIL,
                        "dkim:fail",
                        "a DKIM signature does not verify",
                    );
                }
                "temperror" | "permerror" => f.hit(0.0, &format!("dkim:{d}"), format!("DKIM {d}")),
                _ => {}
            }
        }
        match self.dmarc.as_str() {
            "fail" => {
                let (score, label) = match (self.dmarc_policy.as_str(), mode) {
                    ("reject", DmarcMode::Score) => (SCORE_DMARC_REJECT, "dmarc:reject"),
                    ("reject", DmarcMode::Honour) => (0.0, "dmarc:reject"),
                    ("quarantine", DmarcMode::Score) => {
                        (SCORE_DMARC_QUARANTINE, "dmarc:quarantine")
                    }
                    ("quarantine", DmarcMode::Honour) => (0.0, "dmarc:quarantine"),
                    _ => (SCORE_DMARC_NONE, "dmarc:none"),
                };
                f.hit(score, "dmarc:fail", "DMARC fails for the From domain");
                f.hit(
                    0.0,
                    label,
                    format!("the From domain's policy is {}", self.dmarc_policy),
                );
            }
            "temperror" | "permerror" => f.hit(
                0.0,
                &format!("dmarc:{}", self.dmarc),
                format!("DMARC {}", self.dmarc),
            ),
            _ => {}
        }
        match self.arc.as_str() {
            "fail" => f.hit(SCORE_ARC_FAIL, "arc:fail", "the ARC chain does not verify"),
            "temperror" => f.hit(0.0, "arc:temperror", "ARC temperror"),
            _ => {}
        }
        for l in &self.lists {
            let label = if l.outcome == "listed" {
                format!("{}:{}", l.kind, l.zone)
            } else {
                format!("{}:temperror", l.kind)
            };
            let item: String = l
                .item
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(255)
                .collect();
            if l.outcome == "listed" {
                f.hit(l.score, &label, format!("{item} is listed in {}", l.zone));
            } else {
                f.hit(0.0, &label, format!("{} did not answer for {item}", l.zone));
            }
        }
        f
    }
}

/// The authserv-id of an `Authentication-Results:` value (RFC 8601): the first token after
/// any comments and white space, up to `;`, white space or a comment. Empty if none.
pub fn authserv_id(value: &str) -> &str {
    let mut rest = value;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('(') {
            // A comment (nesting counted); unterminated: nothing.
            let mut depth = 1usize;
            let mut end = None;
            let mut escaped = false;
            for (i, c) in r.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            match end {
                Some(e) => rest = &r[e..],
                None => return "",
            }
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authserv_id_is_found_past_comments() {
        assert_eq!(authserv_id("mx.example.org; spf=pass"), "mx.example.org");
        assert_eq!(
            authserv_id(" (a (b) c) MX.example.org.;x"),
            "MX.example.org"
        );
        assert_eq!(authserv_id("mx.example.org 1; none"), "mx.example.org");
        assert_eq!(authserv_id("(unterminated mx.example.org; x"), "");
        assert_eq!(authserv_id(""), "");
    }

    #[test]
    fn results_become_labels_scores_and_the_dmarc_action() {
        let r = AuthResults {
            spf: "fail".into(),
            dkim: vec!["pass".into(), "fail".into(), "fail".into()],
            dmarc: "fail".into(),
            dmarc_policy: "reject".into(),
            arc: "none".into(),
            lists: vec![
                ListResult {
                    kind: "dnsbl".into(),
                    zone: "bl.test".into(),
                    item: "192.0.2.1".into(),
                    outcome: "listed".into(),
                    score: 4.0,
                },
                ListResult {
                    kind: "uribl".into(),
                    zone: "uri.test".into(),
                    item: "evil.example".into(),
                    outcome: "temperror".into(),
                    score: 4.0,
                },
            ],
            ..AuthResults::default()
        };
        let f = r.finding(DmarcMode::Honour);
        assert_eq!(
            f.labels,
            [
                "spf:fail",
                "dkim:fail",
                "dmarc:fail",
                "dmarc:reject",
                "dnsbl:bl.test",
                "uribl:temperror"
            ]
        );
        assert_eq!(f.score, 3.0 + 3.0 + 4.0);
        assert_eq!(r.dmarc_action(DmarcMode::Honour), Some(Action::Reject));
        assert_eq!(r.dmarc_action(DmarcMode::Score), None);
        assert_eq!(r.finding(DmarcMode::Score).score, 3.0 + 3.0 + 20.0 + 4.0);
        let pass = AuthResults {
            dmarc: "pass".into(),
            dmarc_policy: "reject".into(),
            ..AuthResults::default()
        };
        assert_eq!(pass.dmarc_action(DmarcMode::Honour), None);
        assert_eq!(pass.finding(DmarcMode::Honour), Finding::default());
        assert!(
            DnsList {
                zone: "a b".into(),
                score: 1.0
            }
            .validate()
            .is_err()
        );
        assert!(
            DnsList {
                zone: "zen.example.".into(),
                score: 1.0
            }
            .validate()
            .is_ok()
        );
    }
}
