//! `[scan]` of the settings file and the pipeline it configures (shared by the daemon and
//! `sealctl scan --settings`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checks::{Dlp, DlpRule, DmarcMode, DnsList, RuleAction, Validated};
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
    /// Days a quarantined message is kept before it is purged.
    pub quarantine_days: u32,
    /// Where `copy-auditor` rules send their copy (an address; none: such rules quarantine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auditor: Option<String>,
    /// Put before the Subject of mail whose action is `tag` (none: the header only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_tag: Option<String>,
    /// The URL reputation service (`https://HOST[:PORT]/PATH`): the SHA-256 of the message's
    /// normalised URLs are POSTed there (none: not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reputation_url: Option<String>,
    /// The CA certificates (PEM) its TLS certificate is verified with (none: the system's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reputation_ca: Option<PathBuf>,
    /// Milliseconds the service may take for one message, connection included.
    pub reputation_timeout_ms: u64,
    /// Hashes per request (1..=1000); a message with more URLs asks in several requests.
    pub reputation_batch: usize,
    /// clamd's socket: a Unix socket path (`/run/clamav/clamd.ctl`) or `HOST:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clamd: Option<String>,
    /// Milliseconds clamd may take for one message, connection included.
    pub clamd_timeout_ms: u64,
    /// Hours between digest mails to users with quarantined inbound mail (0: none).
    pub digest_hours: u32,
    /// Hours a digest's release link works.
    pub release_link_hours: u32,
    /// The base of the digest's release links (`https://HOST:PORT`, the admin listener as
    /// users reach it); default `https://[smtp] hostname:the admin port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_url: Option<String>,
    /// Check SPF, DKIM, DMARC and ARC of inbound mail at the MX (DNS lookups through the
    /// box's resolver). Off by default.
    pub auth: bool,
    /// What a failing domain's DMARC `p=reject` / `p=quarantine` does: `honour` (the action)
    /// or `score` (only adds to the score).
    pub dmarc_policy: DmarcMode,
    /// DNS block lists for the client's address (`[{zone = "...", score = N}]`).
    pub dnsbl: Vec<DnsList>,
    /// DNS block lists for the domains of links in the (decrypted) body.
    pub uribl: Vec<DnsList>,
    /// The resolver for these lookups (`IP:port`); none: the box's resolver file
    /// (`/etc/resolv.conf`, which names the box's own DNS server when it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    /// How long one DNS lookup may take, in milliseconds (the whole check at most four
    /// times that).
    pub dns_timeout_ms: u64,
    /// The spam classifier's model file (the shipped one by default; empty: no classifier).
    pub model: PathBuf,
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
                action: None,
            },
            ibans: Validated {
                threshold: 1,
                score: 5.0,
                action: None,
            },
            dlp: Vec::new(),
            quarantine_days: 30,
            auditor: None,
            subject_tag: None,
            reputation_url: None,
            reputation_ca: None,
            reputation_timeout_ms: 2_000,
            reputation_batch: 100,
            clamd: None,
            clamd_timeout_ms: 10_000,
            digest_hours: 0,
            release_link_hours: 72,
            release_url: None,
            auth: false,
            dmarc_policy: DmarcMode::Honour,
            dnsbl: Vec::new(),
            uribl: Vec::new(),
            resolver: None,
            dns_timeout_ms: 2000,
            model: PathBuf::from(crate::classifier::SHIPPED_MODEL),
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
        if !(1..=3650).contains(&self.quarantine_days) {
            return Err("quarantine_days must be between 1 and 3650".into());
        }
        if self.digest_hours > 720 {
            return Err("digest_hours must be between 0 (off) and 720".into());
        }
        if !(1..=8760).contains(&self.release_link_hours) {
            return Err("release_link_hours must be between 1 and 8760".into());
        }
        if let Some(u) = &self.release_url {
            let rest = u.strip_prefix("https://").unwrap_or_default();
            let ok = u.len() <= 200
                && !rest.is_empty()
                && !rest.starts_with('/')
                && u.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>\\\"'?#".contains(&b));
            if !ok {
                return Err(format!(
                    "release_url {u:?} must be an https:// URL of the box (no query)"
                ));
            }
        }
        if let Some(a) = &self.auditor {
            let ok = a.len() <= 254
                && a.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
                && a.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>\\\"".contains(&b));
            if !ok {
                return Err(format!("auditor {a:?} is not a plain mail address"));
            }
        }
        if let Some(t) = &self.subject_tag
            && (t.is_empty() || t.len() > 64 || t.chars().any(char::is_control))
        {
            return Err("subject_tag must be 1 to 64 characters, no control characters".into());
        }
        for l in self.dnsbl.iter().chain(&self.uribl) {
            l.validate()?;
        }
        if let Some(r) = &self.resolver
            && r.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!("scan.resolver {r:?} is not IP:port"));
        }
        if !(100..=30_000).contains(&self.dns_timeout_ms) {
            return Err("dns_timeout_ms must be between 100 and 30000".into());
        }
        if let Some(u) = &self.reputation_url
            && (!u.starts_with("https://")
                || u.len() > 2048
                || u.chars().any(|c| c.is_control() || c == ' ' || c == '#'))
        {
            return Err(format!("reputation_url {u:?} must be an https:// URL"));
        }
        if !(1..=1000).contains(&self.reputation_batch) {
            return Err("reputation_batch must be between 1 and 1000".into());
        }
        for (key, ms) in [
            ("reputation_timeout_ms", self.reputation_timeout_ms),
            ("clamd_timeout_ms", self.clamd_timeout_ms),
        ] {
            if !(100..=120_000).contains(&ms) {
                return Err(format!("{key} must be between 100 and 120000"));
            }
        }
        if let Some(c) = &self.clamd
            && (c.is_empty() || c.chars().any(char::is_control))
        {
            return Err("clamd must be a socket path or HOST:PORT".into());
        }
        let copies = self
            .rule_actions_configured()
            .any(|a| a == RuleAction::CopyAuditor);
        if copies && self.auditor.is_none() {
            return Err("a DLP rule has action copy-auditor but [scan] auditor is not set".into());
        }
        self.dlp_stage().map(|_| ())
    }

    fn rule_actions_configured(&self) -> impl Iterator<Item = RuleAction> + '_ {
        [self.card_numbers.action, self.ibans.action]
            .into_iter()
            .chain(self.dlp.iter().map(|r| r.action))
            .flatten()
    }

    /// The actions of the DLP rules whose label (`dlp:card-number`, `dlp:iban`, `dlp:NAME`)
    /// is among `labels`, each once, in rule order.
    pub fn rule_actions(&self, labels: &[String]) -> Vec<RuleAction> {
        let hit = |l: &str| labels.iter().any(|x| x == l);
        let mut out = Vec::new();
        let mut add = |a: Option<RuleAction>, label: &str| {
            if let Some(a) = a
                && hit(label)
                && !out.contains(&a)
            {
                out.push(a);
            }
        };
        add(self.card_numbers.action, "dlp:card-number");
        add(self.ibans.action, "dlp:iban");
        for r in &self.dlp {
            add(r.action, &format!("dlp:{}", r.name));
        }
        out
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
            hashes
                .load_kind(text, crate::hashdb::Kind::of_file_name(name))
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let mut p = Pipeline::standard(
            Lookups {
                hashes,
                ..Lookups::default()
            },
            self.dlp_stage()?,
            self.policy(),
        );
        if self.reputation_url.is_some() {
            p.push(Box::new(crate::checks::Reputation));
        }
        if self.clamd.is_some() {
            p.push(Box::new(crate::checks::Clamd));
        }
        Ok(p)
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
                action: None,
            }],
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
        let e = s
            .pipeline(&[("extra.hdb".into(), "nonsense".into())])
            .expect_err("bad db");
        assert!(e.starts_with("extra.hdb: line 1"), "{e}");
    }

    #[test]
    fn rule_actions_and_the_quarantine_keys() {
        let s: Settings = serde_json::from_str(
            r#"{"auditor": "audit@example.org", "subject_tag": "[SPAM]", "quarantine_days": 7,
                "card_numbers": {"threshold": 1, "score": 10.0, "action": "quarantine"},
                "dlp": [{"name": "secret", "keywords": ["secret"], "action": "copy-auditor"}]}"#,
        )
        .expect("parse");
        assert!(s.validate().is_ok());
        assert_eq!(s.quarantine_days, 7);
        let digest = Settings {
            digest_hours: 24,
            release_url: Some("https://box.example.org:8440".into()),
            ..s.clone()
        };
        assert!(digest.validate().is_ok());
        let labels = vec!["dlp:secret".to_string(), "dlp:card-number".to_string()];
        assert_eq!(
            s.rule_actions(&labels),
            vec![RuleAction::Quarantine, RuleAction::CopyAuditor]
        );
        assert!(s.rule_actions(&["spam".to_string()]).is_empty());
        for bad in [
            Settings {
                auditor: None,
                ..s.clone()
            },
            Settings {
                auditor: Some("a@b\r\nRCPT TO:<x@y>".into()),
                ..s.clone()
            },
            Settings {
                subject_tag: Some(String::new()),
                ..s.clone()
            },
            Settings {
                quarantine_days: 0,
                ..s.clone()
            },
            Settings {
                digest_hours: 721,
                ..s.clone()
            },
            Settings {
                release_link_hours: 0,
                ..s.clone()
            },
            Settings {
                release_url: Some("http://box.example.org".into()),
                ..s.clone()
            },
            Settings {
                release_url: Some("https://box.example.org/?x=<".into()),
                ..s.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
