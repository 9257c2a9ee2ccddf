//! `[scan]` of the settings file and the pipeline it configures (shared by the daemon and
//! `sealctl scan --settings`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checks::{Dlp, DlpRule, Validated};
use crate::{Action, HashDb, Lookups, Pipeline, Policy};

/// `[scan]` and `[[scan.dlp]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Scan mail in the daemon: the inbound MX (before `250`) and submission. Off by default.
    pub enabled: bool,
    /// ClamAV hash databases (`.hdb` MD5, `.hsb` SHA-256/SHA-1) added to the shipped ones.
    pub hashdb: Vec<PathBuf>,
    /// Tag at or above this score.
    pub tag: f64,
    /// Quarantine at or above this score.
    pub quarantine: f64,
    /// Reject at or above this score.
    pub reject: f64,
    /// The least action for encrypted mail the box cannot decrypt.
    pub undecryptable: Action,
    /// Card numbers (Luhn-valid): matches needed and score.
    pub card_numbers: Validated,
    /// IBANs (checksum-valid): matches needed and score.
    pub ibans: Validated,
    /// Data-loss rules: keywords and regular expressions (`[[scan.dlp]]`).
    pub dlp: Vec<DlpRule>,
}

impl Default for Settings {
    fn default() -> Self {
        let p = Policy::default();
        Settings {
            enabled: false,
            hashdb: Vec::new(),
            tag: p.tag,
            quarantine: p.quarantine,
            reject: p.reject,
            undecryptable: p.undecryptable,
            card_numbers: Validated {
                threshold: 1,
                score: 10.0,
            },
            ibans: Validated {
                threshold: 1,
                score: 5.0,
            },
            dlp: Vec::new(),
        }
    }
}

impl Settings {
    /// The policy these settings give.
    pub fn policy(&self) -> Policy {
        Policy {
            tag: self.tag,
            quarantine: self.quarantine,
            reject: self.reject,
            undecryptable: self.undecryptable,
        }
    }

    /// Checks what can be checked without reading files: thresholds, scores, DLP rules.
    pub fn validate(&self) -> Result<(), String> {
        self.policy().validate()?;
        for v in [&self.card_numbers, &self.ibans] {
            if !v.score.is_finite() {
                return Err("DLP scores must be finite numbers".into());
            }
        }
        if self.dlp.iter().any(|r| !r.score.is_finite()) {
            return Err("DLP scores must be finite numbers".into());
        }
        self.dlp_stage().map(|_| ())
    }

    fn dlp_stage(&self) -> Result<Dlp, String> {
        Dlp::with_patterns(self.card_numbers, self.ibans, self.dlp.clone())
    }

    /// The standard pipeline with these settings; `hashdbs` are the texts of the database
    /// files (`[scan] hashdb` and any more), as `(file name, text)`, added to the shipped
    /// signatures.
    pub fn pipeline(&self, hashdbs: &[(String, String)]) -> Result<Pipeline, String> {
        self.validate()?;
        let mut hashes = HashDb::shipped();
        for (name, text) in hashdbs {
            hashes.load(text).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(Pipeline::standard(
            Lookups { hashes },
            self.dlp_stage()?,
            self.policy(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_a_bad_rule() {
        let s = Settings::default();
        assert!(!s.enabled);
        assert!(s.pipeline(&[]).is_ok());
        let bad = Settings {
            dlp: vec![DlpRule {
                name: "x".into(),
                keywords: vec![],
                regex: None,
                threshold: 1,
                score: 1.0,
            }],
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
        let e = s
            .pipeline(&[("extra.hdb".into(), "nonsense".into())])
            .expect_err("bad db");
        assert!(e.starts_with("extra.hdb: line 1"), "{e}");
    }
}
