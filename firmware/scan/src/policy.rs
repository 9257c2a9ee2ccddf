//! The policy: from the summed score (and what could not be decrypted) to an action.

use serde::{Deserialize, Serialize};

/// What happens to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver as it is (with the scan header).
    Accept,
    /// Deliver, marked (header and Subject tag).
    Tag,
    /// Keep for an auditor.
    Quarantine,
    /// Refuse (`550` in the SMTP session when inbound, before `250`).
    Reject,
}

impl Action {
    /// The word used in JSON and in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Reject => "reject",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accept" => Ok(Action::Accept),
            "tag" => Ok(Action::Tag),
            "quarantine" => Ok(Action::Quarantine),
            "reject" => Ok(Action::Reject),
            _ => Err(format!(
                "unknown action {s:?} (accept, tag, quarantine, reject)"
            )),
        }
    }
}

/// Score thresholds (a score at or above a threshold takes its action) and the action for
/// mail the box cannot decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Tag at or above this score (SpamAssassin's usual 5).
    pub tag: f64,
    /// Quarantine at or above this score.
    pub quarantine: f64,
    /// Reject at or above this score.
    pub reject: f64,
    /// The least action for an encrypted message the box cannot decrypt (its content was
    /// not scanned).
    pub undecryptable: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tag: 5.0,
            quarantine: 10.0,
            reject: 20.0,
            undecryptable: Action::Tag,
        }
    }
}

impl Policy {
    /// Checks the thresholds are in order (tag ≤ quarantine ≤ reject) and finite.
    pub fn validate(&self) -> Result<(), String> {
        if ![self.tag, self.quarantine, self.reject]
            .iter()
            .all(|x| x.is_finite())
        {
            return Err("scan thresholds must be finite numbers".into());
        }
        if !(self.tag <= self.quarantine && self.quarantine <= self.reject) {
            return Err("scan thresholds must be ordered: tag <= quarantine <= reject".into());
        }
        Ok(())
    }

    /// The action for a score; `undecryptable` when content stayed encrypted.
    pub fn decide(&self, score: f64, undecryptable: bool) -> Action {
        let by_score = if score >= self.reject {
            Action::Reject
        } else if score >= self.quarantine {
            Action::Quarantine
        } else if score >= self.tag {
            Action::Tag
        } else {
            Action::Accept
        };
        if undecryptable {
            by_score.max(self.undecryptable)
        } else {
            by_score
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_choose_the_action() {
        let p = Policy::default();
        assert_eq!(p.decide(0.0, false), Action::Accept);
        assert_eq!(p.decide(5.0, false), Action::Tag);
        assert_eq!(p.decide(12.0, false), Action::Quarantine);
        assert_eq!(p.decide(1000.0, false), Action::Reject);
        assert_eq!(p.decide(0.0, true), Action::Tag);
        assert_eq!(p.decide(30.0, true), Action::Reject);
        assert!(p.validate().is_ok());
        let bad = Policy {
            tag: 11.0,
            ..Policy::default()
        };
        assert!(bad.validate().is_err());
        assert!("maybe".parse::<Action>().is_err());
    }
}
