//! Training the spam classifier's local layer (`DATA/scan/spam-local.bin`,
//! `sealgate_scan::classifier`): the one place that reads, counts and writes it, for the
//! admin API's `POST /scan/train` and for users' Junk-folder feedback through the IMAP proxy.
//!
//! Feedback goes through a ledger (`DATA/scan/feedback-ledger`: a message's SHA-256 and the
//! class it was last counted as, the newest [`MAX_LEDGER`] messages): a message is counted
//! once however often it is moved, and a message moved out of Junk again is taken back from
//! spam before it counts as ham. An admin's training is counted as given (no ledger).
//!
//! Invariants: one training at a time in this process (read, count, write under
//! [`TRAINING`]); the layer is replaced atomically (a crash leaves the old or the new file);
//! a damaged layer is refused, never silently restarted from nothing; the pipeline picks the
//! new counts up at the next message ([`crate::scan::LOCAL_GENERATION`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use sealgate_local::fsio::{Mode, write_atomic};
use sealgate_scan::View;
use sealgate_scan::classifier::{Counts, DEFAULT_BITS, LOCAL_LAYER, view_of};

/// One training at a time (read, count, write the local layer and the ledger).
static TRAINING: Mutex<()> = Mutex::new(());

/// The feedback ledger, next to the local layer.
pub const LEDGER: &str = "scan/feedback-ledger";

/// Messages the ledger remembers (the oldest are forgotten first; one forgotten and given
/// again counts again).
pub const MAX_LEDGER: usize = 20_000;

/// Why a training did not happen (nothing changed).
#[derive(Debug)]
pub enum TrainError {
    /// The local layer does not load.
    Damaged(String),
    /// The local layer's hash bits are not the model's.
    Mismatch {
        /// The local layer's.
        local: u32,
        /// The configured model's.
        model: u32,
    },
    /// Reading or writing failed.
    Io(std::io::Error),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Damaged(e) => write!(f, "the local spam model is damaged: {e}"),
            TrainError::Mismatch { local, model } => write!(
                f,
                "the local spam model has {local} hash bits, the configured model {model}"
            ),
            TrainError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The local layer after a training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trained {
    /// Messages counted as spam in the local layer now.
    pub spam: u32,
    /// Messages counted as ham.
    pub ham: u32,
    /// Messages this training counted (with a ledger: those not already counted so).
    pub counted: usize,
    /// Of them, messages first taken back from the other class.
    pub changed: usize,
}

/// A message's SHA-256 in hex.
pub fn sha256_hex(message: &[u8]) -> String {
    crate::identity::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message).as_ref())
}

/// Counts `messages` (`(message, spam)`) in the local layer under `data_dir`, with the hash
/// bits of the model file `model` (the default bits when it is not there). With `ledger`,
/// as feedback (see the module documentation).
pub fn train(
    data_dir: &Path,
    model: &Path,
    messages: &[(&[u8], bool)],
    ledger: bool,
) -> Result<Trained, TrainError> {
    let _one = TRAINING.lock().unwrap_or_else(PoisonError::into_inner);
    let path = data_dir.join(LOCAL_LAYER);
    // The local layer has the shipped model's hash bits (else the two do not add).
    let bits = std::fs::read(model)
        .ok()
        .and_then(|b| Counts::parse(&b).ok())
        .map_or(DEFAULT_BITS, |c| c.bits());
    let mut counts = match std::fs::read(&path) {
        Ok(b) => Counts::parse(&b).map_err(TrainError::Damaged)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Counts::new(bits).map_err(TrainError::Damaged)?
        }
        Err(e) => return Err(TrainError::Io(e)),
    };
    if counts.bits() != bits {
        return Err(TrainError::Mismatch {
            local: counts.bits(),
            model: bits,
        });
    }
    let ledger_path = data_dir.join(LEDGER);
    let mut book = if ledger {
        Some(Ledger::read(&ledger_path).map_err(TrainError::Io)?)
    } else {
        None
    };
    let (mut counted, mut changed) = (0, 0);
    for &(message, spam) in messages {
        let view: View = view_of(message);
        if let Some(book) = book.as_mut() {
            match book.set(sha256_hex(message), spam) {
                Some(before) if before == spam => continue,
                Some(before) => {
                    counts.untrain(&view, before);
                    changed += 1;
                }
                None => {}
            }
        }
        counts.train(&view, spam);
        counted += 1;
    }
    if counted > 0 {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(TrainError::Io)?;
        }
        write_atomic(&path, &counts.to_bytes(), Mode::KeepOr(0o600)).map_err(TrainError::Io)?;
        crate::scan::LOCAL_GENERATION.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    if let Some(book) = book
        && counted > 0
    {
        write_atomic(&ledger_path, &book.to_bytes(), Mode::KeepOr(0o600))
            .map_err(TrainError::Io)?;
    }
    Ok(Trained {
        spam: counts.spam_messages(),
        ham: counts.ham_messages(),
        counted,
        changed,
    })
}

/// Which class each message was last counted as, oldest first.
struct Ledger {
    order: Vec<String>,
    class: HashMap<String, bool>,
}

impl Ledger {
    /// The ledger at `path` (empty when there is none; lines that do not parse are
    /// skipped: the ledger only saves double counts, it is not the model).
    fn read(path: &Path) -> std::io::Result<Ledger> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => String::new(),
            Err(e) => return Err(e),
        };
        let mut l = Ledger {
            order: Vec::new(),
            class: HashMap::new(),
        };
        for line in text.lines() {
            let Some((sha, c)) = line.split_once(' ') else {
                continue;
            };
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let spam = match c {
                "spam" => true,
                "ham" => false,
                _ => continue,
            };
            l.set(sha.to_string(), spam);
        }
        Ok(l)
    }

    /// Records `sha` as `spam` (newest); returns the class it had.
    fn set(&mut self, sha: String, spam: bool) -> Option<bool> {
        let before = self.class.insert(sha.clone(), spam);
        if before.is_some() {
            self.order.retain(|s| *s != sha);
        }
        self.order.push(sha);
        if self.order.len() > MAX_LEDGER {
            let drop = self.order.len() - MAX_LEDGER;
            for s in self.order.drain(..drop) {
                self.class.remove(&s);
            }
        }
        before
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.order.len() * 70);
        for s in &self.order {
            let c = if self.class.get(s) == Some(&true) {
                "spam"
            } else {
                "ham"
            };
            out.extend_from_slice(s.as_bytes());
            out.push(b' ');
            out.extend_from_slice(c.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAM: &[u8] =
        b"Subject: Make money fast\r\n\r\nEarn $5000 a week from home, click now.\r\n";
    const HAM: &[u8] =
        b"Subject: meeting notes\r\n\r\nThe release slips a week; next meeting Tuesday.\r\n";

    fn counts(d: &Path) -> (u32, u32) {
        let c = Counts::parse(&std::fs::read(d.join(LOCAL_LAYER)).expect("layer")).expect("loads");
        (c.spam_messages(), c.ham_messages())
    }

    #[test]
    fn feedback_counts_a_message_once_and_moves_it_between_classes() {
        let d = tempfile::tempdir().expect("tmp");
        let none = d.path().join("no-model");
        let t = train(d.path(), &none, &[(SPAM, true), (HAM, false)], true).expect("train");
        assert_eq!((t.spam, t.ham, t.counted, t.changed), (1, 1, 2, 0));
        // The same feedback again: nothing counted, nothing written.
        let t = train(d.path(), &none, &[(SPAM, true)], true).expect("train");
        assert_eq!((t.spam, t.ham, t.counted), (1, 1, 0));
        // Moved out of Junk: taken back from spam, counted as ham.
        let t = train(d.path(), &none, &[(SPAM, false)], true).expect("train");
        assert_eq!((t.spam, t.ham, t.counted, t.changed), (0, 2, 1, 1));
        assert_eq!(counts(d.path()), (0, 2));
        // An admin's training is counted as given.
        let t = train(d.path(), &none, &[(SPAM, false)], false).expect("train");
        assert_eq!((t.spam, t.ham), (0, 3));
    }

    #[test]
    fn a_damaged_layer_is_refused_and_left_alone() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("scan")).expect("dir");
        std::fs::write(d.path().join(LOCAL_LAYER), b"not a model").expect("write");
        let e = train(d.path(), &d.path().join("m"), &[(SPAM, true)], true)
            .expect_err("a damaged layer");
        assert!(matches!(e, TrainError::Damaged(_)), "{e}");
        assert_eq!(
            std::fs::read(d.path().join(LOCAL_LAYER)).expect("read"),
            b"not a model"
        );
    }

    #[test]
    fn the_ledger_forgets_the_oldest_and_skips_what_does_not_parse() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("ledger");
        std::fs::write(&p, format!("junk\n{} spam\nshort ham\n", "a".repeat(64))).expect("w");
        let mut l = Ledger::read(&p).expect("read");
        assert_eq!(l.order.len(), 1);
        for i in 0..MAX_LEDGER {
            l.set(format!("{i:064x}"), false);
        }
        assert_eq!(l.order.len(), MAX_LEDGER);
        assert!(!l.class.contains_key(&"a".repeat(64)));
    }
}
