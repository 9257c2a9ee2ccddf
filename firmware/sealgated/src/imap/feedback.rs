//! Junk-folder feedback: a message a user moves (or copies) into a Junk folder through the
//! proxy counts as spam in the classifier's local layer, one moved out of Junk (not to Trash)
//! as ham (`crate::spam_training`, with its ledger: each message once, in its last class).
//!
//! The session (`session.rs`) sees the move's `COPYUID` (RFC 4315; `MOVE` sends it too, RFC
//! 6851), asks [`Feedback::class`] what the move means and [`Feedback::allow`] how many of the
//! messages count, then downloads the copies on its worker connection and trains off the
//! session's path: the client's answer never waits for it.
//!
//! Attackers: a user poisoning the box-wide classifier by moving mail about (bounded:
//! `[imap] junk_feedback_daily` messages per login name per day, and each message counts
//! once, in the class it was last moved to); whoever sent the message (it counts only as a
//! user judged it); the server (the downloads are bounded like every other). Ciphertext is
//! never trained on: a message the user's keys do not decrypt (encrypted to someone else, or
//! damaged) is skipped, and so is every encrypted message of a login that has no vault
//! address. Each batch is audited (`imap-feedback`: the class, the mailboxes, how many
//! counted and were skipped; never content).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::keys::{Acting, KeyStore};
use sealgate_smime::cert::Certificate;

/// `[imap] junk_feedback_daily` by default.
pub const DEFAULT_DAILY: u32 = 200;

/// `[imap] junk_folders` by default.
pub const DEFAULT_FOLDERS: &[&str] = &["Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail"];

/// Usual names of a Trash mailbox (the last component, lower case): moving spam there from
/// Junk says nothing about it.
const TRASH: &[&str] = &["trash", "deleted items", "deleted messages", "bin"];

/// Messages one COPY or MOVE gives as feedback at most.
pub const MAX_PER_COMMAND: usize = 100;

/// The Junk folder names in effect for `configured` (`[imap] junk_folders`).
pub fn folder_names(configured: &[String]) -> Vec<String> {
    if configured.is_empty() {
        DEFAULT_FOLDERS.iter().map(|s| (*s).to_string()).collect()
    } else {
        configured.to_vec()
    }
}

/// What feedback the proxy gives, and how much each user has given today.
pub struct Feedback {
    data_dir: PathBuf,
    model: PathBuf,
    /// Junk folder names, lower case.
    folders: Vec<String>,
    daily: u32,
    /// Login name (lower case) → (day, messages counted that day).
    used: Mutex<HashMap<String, (u64, u32)>>,
}

impl std::fmt::Debug for Feedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedback")
            .field("folders", &self.folders)
            .field("daily", &self.daily)
            .finish_non_exhaustive()
    }
}

impl Feedback {
    /// The feedback `settings` configure (`None`: off).
    pub fn from_settings(
        settings: &crate::settings::Settings,
        data_dir: &Path,
    ) -> Option<Arc<Feedback>> {
        let imap = &settings.imap;
        if !imap.junk_feedback.unwrap_or(settings.scan.enabled) {
            return None;
        }
        Some(Arc::new(Feedback {
            data_dir: data_dir.to_path_buf(),
            model: settings.scan.model.clone(),
            folders: folder_names(&imap.junk_folders)
                .iter()
                .map(|f| f.trim().to_lowercase())
                .collect(),
            daily: imap.junk_feedback_daily.unwrap_or(DEFAULT_DAILY),
            used: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether `name` is a Junk folder: marked `\Junk` by the server (`marked`), or its name
    /// (whole, or its last component) is one of the configured.
    fn is_junk(&self, name: &str, marked: &HashSet<String>) -> bool {
        marked.contains(name) || {
            let (whole, last) = names(name);
            self.folders.iter().any(|f| *f == whole || *f == last)
        }
    }

    /// What moving messages from `from` to `to` says of them: `Some(true)` spam (into Junk),
    /// `Some(false)` ham (out of Junk, not to Trash), `None` nothing.
    pub fn class(
        &self,
        from: &str,
        to: &str,
        junk: &HashSet<String>,
        trash: &HashSet<String>,
    ) -> Option<bool> {
        match (self.is_junk(from, junk), self.is_junk(to, junk)) {
            (false, true) => Some(true),
            (true, false) => {
                let to_trash = trash.contains(to) || TRASH.contains(&names(to).1.as_str());
                (!to_trash).then_some(false)
            }
            _ => None,
        }
    }

    /// How many of `n` messages `login`'s feedback may still count today (and counts them).
    pub fn allow(&self, login: &str, n: usize) -> usize {
        let day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if used.len() > 10_000 {
            used.retain(|_, (d, _)| *d == day);
        }
        let e = used.entry(login.to_lowercase()).or_insert((day, 0));
        if e.0 != day {
            *e = (day, 0);
        }
        let left = usize::try_from(self.daily.saturating_sub(e.1)).unwrap_or(usize::MAX);
        let n = n.min(left);
        e.1 = e.1.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        n
    }

    /// Counts `messages` (`spam` or ham) in the local layer, with the ledger.
    pub fn train(
        &self,
        messages: &[Vec<u8>],
        spam: bool,
    ) -> Result<crate::spam_training::Trained, crate::spam_training::TrainError> {
        let items: Vec<(&[u8], bool)> = messages.iter().map(|m| (m.as_slice(), spam)).collect();
        crate::spam_training::train(&self.data_dir, &self.model, &items, true)
    }
}

/// A mailbox name, lower case, whole and its last component (`/` or `.` separated).
fn names(name: &str) -> (String, String) {
    let whole = name.trim().to_lowercase();
    let last = whole.rsplit(['/', '.']).next().unwrap_or("").to_string();
    (whole, last)
}

/// What a stored message `raw` counts as content for training: decrypted with the keys of
/// `address` when it is encrypted, as stored when it is not; `Err(why)` when it cannot be
/// known without training on ciphertext.
pub fn content(
    keys: &dyn KeyStore,
    anchors: &[Certificate],
    actor: String,
    address: Option<&str>,
    raw: &[u8],
) -> Result<Vec<u8>, &'static str> {
    let Some(address) = address else {
        return if looks_encrypted(raw) {
            Err("encrypted")
        } else {
            Ok(raw.to_vec())
        };
    };
    let acting = Acting::new(keys, actor);
    // As the proxy decrypts for reading (signatures kept): an encrypted layer the keys do not
    // open is an error there, never passed on as if it were cleartext.
    match crate::docking::decrypt(&acting, anchors, raw, &[address.to_string()], true) {
        Ok((out, r)) if r.status == "decrypted" => Ok(out),
        Ok(_) if !looks_encrypted(raw) => Ok(raw.to_vec()),
        Ok(_) => Err("not-decrypted"),
        Err(p) => Err(p.kind),
    }
}

/// Whether the top-level Content-Type names S/MIME encryption (`pkcs7-mime`).
fn looks_encrypted(raw: &[u8]) -> bool {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    let header = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    header.contains("pkcs7-mime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(daily: u32) -> Feedback {
        Feedback {
            data_dir: PathBuf::new(),
            model: PathBuf::new(),
            folders: folder_names(&[]).iter().map(|f| f.to_lowercase()).collect(),
            daily,
            used: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn moves_into_junk_are_spam_out_of_it_ham_and_to_trash_nothing() {
        let f = fb(10);
        let none = HashSet::new();
        assert_eq!(f.class("INBOX", "Junk", &none, &none), Some(true));
        assert_eq!(f.class("INBOX", "INBOX.spam", &none, &none), Some(true));
        assert_eq!(f.class("Archive", "Junk E-mail", &none, &none), Some(true));
        assert_eq!(f.class("Junk", "INBOX", &none, &none), Some(false));
        assert_eq!(f.class("Junk", "Trash", &none, &none), None);
        assert_eq!(f.class("Junk", "INBOX/Deleted Items", &none, &none), None);
        assert_eq!(f.class("INBOX", "Archive", &none, &none), None);
        assert_eq!(f.class("Junk", "Spam", &none, &none), None);
        // What the server marks counts whatever its name.
        let marked: HashSet<String> = ["Unerwünscht".to_string()].into();
        let bin: HashSet<String> = ["Papierkorb".to_string()].into();
        assert_eq!(f.class("INBOX", "Unerwünscht", &marked, &none), Some(true));
        assert_eq!(f.class("Unerwünscht", "Papierkorb", &marked, &bin), None);
    }

    #[test]
    fn each_login_gives_at_most_its_daily_count() {
        let f = fb(5);
        assert_eq!(f.allow("alice@example.org", 3), 3);
        assert_eq!(f.allow("ALICE@example.org", 3), 2);
        assert_eq!(f.allow("alice@example.org", 1), 0);
        assert_eq!(f.allow("bob@example.org", 9), 5);
        assert_eq!(fb(0).allow("carol@example.org", 1), 0);
    }

    #[test]
    fn encrypted_messages_are_told_by_their_content_type() {
        assert!(looks_encrypted(
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAG"
        ));
        assert!(!looks_encrypted(
            b"Subject: x\r\n\r\napplication/pkcs7-mime in the body"
        ));
    }
}
