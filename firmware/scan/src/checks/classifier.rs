//! The statistical classifier's stage: the probability of spam from the model
//! ([`crate::classifier`]) becomes a score and the label `spam:classifier`.

use crate::classifier::{LABEL_PROBABILITY, Loaded, SURE_PROBABILITY};
use crate::{Finding, Lookups, Scan, Scanned};

/// Label of a message the model finds likely spam.
pub const LABEL_CLASSIFIER: &str = "spam:classifier";
/// Label when the model file is missing: the classifier did not run.
pub const LABEL_CLASSIFIER_UNAVAILABLE: &str = "classifier-unavailable";
/// Score of a message whose probability of spam is at least 0.99 (tags it alone).
pub const SURE_SCORE: f64 = 5.0;
/// Score of one from 0.9 to 0.99.
pub const LIKELY_SCORE: f64 = 2.5;

/// The classifier stage: probability ≥ 0.9 scores 2.5 with `spam:classifier`, ≥ 0.99 scores
/// 5 with `spam` and `spam:classifier`. Evidence gives the probability, never content.
#[derive(Debug, Clone, Copy, Default)]
pub struct Classifier;

impl Scan for Classifier {
    fn name(&self) -> &'static str {
        "classifier"
    }

    fn scan(&self, m: &Scanned<'_>, lookups: &Lookups) -> Finding {
        let mut f = Finding::default();
        let model = match &lookups.classifier {
            Loaded::Off => return f,
            Loaded::Missing(why) => {
                f.hit(0.0, LABEL_CLASSIFIER_UNAVAILABLE, why.clone());
                return f;
            }
            Loaded::Ready(model) => model,
        };
        if m.decryption == crate::Decryption::Undecryptable {
            // Only its outer header fields are readable: not enough to judge.
            f.evidence
                .push("not classified: the content is encrypted and was not decrypted".into());
            return f;
        }
        let (p, n) = model.probability(m.view);
        let p = if p.is_finite() { p } else { 0.5 };
        let evidence = if n < crate::classifier::MIN_CLUES {
            format!("probability of spam {p:.3} (not judged: {n} clues)")
        } else {
            format!("probability of spam {p:.3} ({n} clues)")
        };
        if p >= SURE_PROBABILITY {
            f.hit(SURE_SCORE, "spam", evidence);
            f.labels.push(LABEL_CLASSIFIER.into());
        } else if p >= LABEL_PROBABILITY {
            f.hit(LIKELY_SCORE, LABEL_CLASSIFIER, evidence);
        } else {
            f.evidence.push(evidence);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::{Counts, Model, view_of};
    use crate::{Direction, HashDb, Input, Pipeline, Policy, checks};

    fn pipeline(classifier: Loaded) -> Pipeline {
        Pipeline::standard(
            Lookups {
                hashes: HashDb::shipped(),
                classifier,
            },
            checks::Dlp::new(vec![]).expect("dlp"),
            Policy::default(),
        )
    }

    #[test]
    fn a_model_labels_spam_with_its_probability_and_a_missing_one_is_a_label() {
        let mut c = Counts::new(16).expect("bits");
        for i in 0..20 {
            c.train(
                &view_of(format!("Subject: cheap pills {i}\r\n\r\nbuy cheap pills now, limited offer, click here, free shipping, no prescription, order today").as_bytes()),
                true,
            );
            c.train(
                &view_of(format!("Subject: minutes {i}\r\n\r\nthe meeting moved to Tuesday, agenda attached, see you there with the minutes and the budget review").as_bytes()),
                false,
            );
        }
        let p = pipeline(Loaded::Ready(Model::new(&c, None).expect("model")));
        let msg = b"From: a@example.org\r\nDate: x\r\nMessage-ID: <1@x>\r\nSubject: cheap pills\r\n\r\nbuy cheap pills now, limited offer, click here, free shipping, order today\r\n";
        let r = p.scan(&Input::new(msg, Direction::Inbound));
        assert!(r.labels.contains(&LABEL_CLASSIFIER.to_string()), "{r:?}");
        let check = r.checks.last().expect("stage");
        assert_eq!(check.check, "classifier");
        let e = &check.finding.evidence[0];
        let prob: f64 = e
            .strip_prefix("probability of spam ")
            .and_then(|r| r.split(' ').next())
            .and_then(|x| x.parse().ok())
            .expect("probability");
        assert!(prob >= 0.9, "{e}");
        assert!(!check.finding.evidence[0].contains("pills"));
        let ham = b"From: a@example.org\r\nDate: x\r\nMessage-ID: <1@x>\r\nSubject: minutes\r\n\r\nthe meeting moved to Tuesday, agenda attached, see you there with the budget review\r\n";
        let r = p.scan(&Input::new(ham, Direction::Inbound));
        assert!(r.labels.is_empty(), "{r:?}");
        let r = pipeline(Loaded::Missing("no spam model at /x".into()))
            .scan(&Input::new(ham, Direction::Inbound));
        assert_eq!(r.labels, [LABEL_CLASSIFIER_UNAVAILABLE]);
        assert_eq!(r.score, 0.0);
    }
}
