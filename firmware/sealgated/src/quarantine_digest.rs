//! Digest mails and signed release links (issue 15 §3): every `[scan] digest_hours` each
//! local recipient with quarantined inbound mail gets one mail listing their entries (time,
//! sender, subject: the message's own Subject, their content), queued through the box's
//! queue to the internal server (`[inbound] next_hop`), with one release link per entry that
//! the user may release.
//!
//! A link is `RELEASE_URL/quarantine/release?id=ID&to=RECIPIENT&exp=UNIX&sig=HEX`, served on
//! the admin listener (`admin/quarantine_link.rs`): `sig` is HMAC-SHA256 under the vault's
//! derived key `"quarantine-release"` (never stored) over the id, the recipient and the
//! expiry. Attackers, and what stops them:
//! - whoever got a digest forwarded (or read it over a shoulder): the link releases only the
//!   named recipient's copy *to that recipient*, never to whoever clicks; it works once
//!   (the recipient leaves the entry's recipients when it is released) and until `exp`;
//! - whoever edits the id, the recipient or the expiry: the signature covers all three
//!   (refused, and said so without telling which part was wrong);
//! - a replayed link: the copy was released already (the recipient is no longer in the
//!   entry), refused;
//! - guessing: 256-bit HMAC, compared in constant time;
//! - mail scanners that fetch every link in a mail: opening the link (GET) shows a page with
//!   a button; only its POST releases;
//! - a verdict no user may overrule: a `virus` label, a `reject` action (a late reject), a
//!   DLP rule whose action is `block` or `require-encryption`: no link; the digest and the
//!   page say "ask your administrator".

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::hmac;

use crate::quarantine::{Meta, Store};

/// The purpose the vault's derived key is asked for.
pub const KEY_PURPOSE: &str = "quarantine-release";

/// The release links' key and base URL, for the daemon's lifetime.
pub struct Links {
    key: hmac::Key,
    /// `https://HOST:PORT` (no trailing slash).
    pub base: String,
    /// How long a link works (seconds).
    pub lifetime: i64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("base", &self.base).finish()
    }
}

static LINKS: OnceLock<Arc<Links>> = OnceLock::new();

/// Sets the links' key (from the vault) and base once at start.
pub fn install(key: &[u8; 32], base: String, lifetime_hours: u32) -> Arc<Links> {
    let l = Arc::new(Links::new(key, base, lifetime_hours));
    let _ = LINKS.set(l.clone());
    l
}

/// The links, once [`install`]ed.
pub fn links() -> Option<Arc<Links>> {
    LINKS.get().cloned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a link the box made (any part edited, or guessed).
    Forged,
    /// Past its expiry.
    Expired,
}

impl Links {
    /// Links under `key` with `base`.
    pub fn new(key: &[u8; 32], base: String, lifetime_hours: u32) -> Links {
        Links {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            base: base.trim_end_matches('/').to_string(),
            lifetime: i64::from(lifetime_hours) * 3600,
        }
    }

    fn mac(&self, id: &str, to: &str, exp: i64) -> hmac::Tag {
        // Lengths first: no two (id, to, exp) give the same input.
        let msg = format!(
            "sealgate quarantine release v1\n{}:{id}\n{}:{to}\n{exp}",
            id.len(),
            to.len()
        );
        hmac::sign(&self.key, msg.as_bytes())
    }

    /// The signature of a link (hex).
    pub fn sign(&self, id: &str, to: &str, exp: i64) -> String {
        hex(self.mac(id, to, exp).as_ref())
    }

    /// Checks a link's signature (constant time), then its expiry.
    pub fn verify(&self, id: &str, to: &str, exp: i64, sig: &str, now: i64) -> Result<(), Refused> {
        let Some(sig) = unhex(sig) else {
            return Err(Refused::Forged);
        };
        let msg = format!(
            "sealgate quarantine release v1\n{}:{id}\n{}:{to}\n{exp}",
            id.len(),
            to.len()
        );
        hmac::verify(&self.key, msg.as_bytes(), &sig).map_err(|_| Refused::Forged)?;
        if now > exp {
            return Err(Refused::Expired);
        }
        Ok(())
    }

    /// The release link of `to`'s copy of entry `id`, good until `exp`.
    pub fn url(&self, id: &str, to: &str, exp: i64) -> String {
        format!(
            "{}/quarantine/release?id={}&to={}&exp={exp}&sig={}",
            self.base,
            pct(id),
            pct(to),
            self.sign(id, to, exp)
        )
    }
}

/// Whether a user may release their copy of `meta` themselves: never a virus, a reject, or a
/// hit of a DLP rule whose action is `block` or `require-encryption`.
pub fn user_releasable(meta: &Meta, scan: &sealgate_scan::Settings) -> bool {
    use sealgate_scan::checks::RuleAction;
    if meta.direction != "inbound" || meta.action == "reject" {
        return false;
    }
    if meta
        .labels
        .iter()
        .any(|l| l == "virus" || l.starts_with("virus:"))
    {
        return false;
    }
    !scan
        .rule_actions(&meta.labels)
        .iter()
        .any(|a| matches!(a, RuleAction::Block | RuleAction::RequireEncryption))
}

/// A value safe on one line of a mail (no control characters, bounded).
fn line(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > max {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    } else {
        s
    }
}

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// One entry of a digest: its record and the message's Subject.
pub struct Item {
    /// The index record.
    pub meta: Meta,
    /// The message's outer Subject (RFC 2047 decoded; encrypted mail is never decrypted for
    /// a digest).
    pub subject: String,
}

/// The digest mail to `to` listing `items` (the envelope sender is `<>`).
pub fn compose(
    links: &Links,
    scan: &sealgate_scan::Settings,
    hostname: &str,
    to: &str,
    items: &[Item],
    now: i64,
) -> Vec<u8> {
    let exp = now + links.lifetime;
    let domain = to.rsplit_once('@').map(|(_, d)| d).unwrap_or(hostname);
    let mut body = format!(
        "{} message(s) addressed to you are held in the quarantine of the mail gateway.\r\n\
They were not delivered. Each link below delivers your copy of one message to your\r\n\
mailbox; it works once, until {}. Opening it asks before anything is done.\r\n\r\n",
        items.len(),
        utc(exp)
    );
    for (n, it) in items.iter().enumerate() {
        body.push_str(&format!(
            "{}. {}\r\n   From:    {}\r\n   Subject: {}\r\n",
            n + 1,
            utc(it.meta.time),
            line(
                if it.meta.from.is_empty() {
                    "<>"
                } else {
                    &it.meta.from
                },
                200
            ),
            line(&it.subject, 200),
        ));
        if user_releasable(&it.meta, scan) {
            body.push_str(&format!(
                "   Release: {}\r\n\r\n",
                links.url(&it.meta.id, to, exp)
            ));
        } else {
            body.push_str(
                "   This message cannot be released from here: ask your administrator.\r\n\r\n",
            );
        }
    }
    body.push_str("Messages left in the quarantine are deleted when their retention ends.\r\n");
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default();
    let mut rnd = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut rnd);
    format!(
        "From: Mail gateway quarantine <postmaster@{domain}>\r\nTo: <{to}>\r\n\
Subject: Quarantine digest: {} message(s) held for you\r\nDate: {date}\r\n\
Message-ID: <digest.{now}.{}@{hostname}>\r\nAuto-Submitted: auto-generated\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\n{body}",
        items.len(),
        hex(&rnd)
    )
    .into_bytes()
}

/// The digests due now: (recipient, message) for every local recipient with quarantined
/// inbound mail, their entries oldest first.
pub fn digests(
    store: &Store,
    links: &Links,
    scan: &sealgate_scan::Settings,
    hostname: &str,
    now: i64,
) -> Vec<(String, Vec<u8>)> {
    let mut by: std::collections::BTreeMap<String, Vec<Item>> = Default::default();
    for meta in store.list().0 {
        if meta.direction != "inbound" {
            continue;
        }
        let subject = store
            .get(&meta.id)
            .ok()
            .flatten()
            .and_then(|(_, msg)| {
                sealgate_scan::view::View::headers_only(&msg)
                    .header("Subject")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        for to in &meta.to {
            by.entry(to.to_ascii_lowercase()).or_default().push(Item {
                meta: meta.clone(),
                subject: subject.clone(),
            });
        }
    }
    by.into_iter()
        .map(|(to, items)| {
            let m = compose(links, scan, hostname, &to, &items, now);
            (to, m)
        })
        .collect()
}

/// Queues the digests now: one queue message per recipient, relayed as it is to the
/// internal server; the count queued.
pub fn send_digests(
    store: &Store,
    queue: &crate::smtp::Spool,
    links: &Links,
    scan: &sealgate_scan::Settings,
    hostname: &str,
    now: i64,
) -> usize {
    let mut sent = 0;
    for (to, msg) in digests(store, links, scan, hostname, now) {
        let env = crate::smtp::Envelope {
            direction: crate::smtp::Direction::Inbound,
            from: String::new(),
            to: vec![to.clone()],
            client: "127.0.0.1".into(),
            client_name: Some("quarantine:digest".into()),
            received: now,
            attempts: 0,
            held_reason: None,
            released: Some("quarantine digest".into()),
            auth: None,
        };
        match queue.enqueue(&[(env, msg.as_slice())]) {
            Ok(Some(_)) => sent += 1,
            Ok(None) => tracing::warn!(to, "quarantine digest not queued: the spool is full"),
            Err(e) => tracing::error!(to, error = %e, "quarantine digest not queued"),
        }
    }
    sent
}

/// Every `hours` (the first after one period), the digests.
pub async fn digest_loop(
    store: Arc<Store>,
    queue: Arc<crate::smtp::Spool>,
    links: Arc<Links>,
    scan: sealgate_scan::Settings,
    hostname: String,
    hours: u32,
) {
    let period = Duration::from_secs(u64::from(hours) * 3600);
    loop {
        tokio::time::sleep(period).await;
        let (s, q, l, sc, h) = (
            store.clone(),
            queue.clone(),
            links.clone(),
            scan.clone(),
            hostname.clone(),
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let n = tokio::task::spawn_blocking(move || send_digests(&s, &q, &l, &sc, &h, now))
            .await
            .unwrap_or_default();
        tracing::info!(digests = n, "quarantine digests queued");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[&str], action: &str) -> Meta {
        Meta {
            id: "1700000000-0123456789ab".into(),
            time: 1_700_000_000,
            direction: "inbound".into(),
            from: "sender@example.net".into(),
            to: vec!["alice@example.org".into(), "bob@example.org".into()],
            client: "192.0.2.1".into(),
            action: action.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            score: 12.0,
            reason: String::new(),
            size: 10,
        }
    }

    #[test]
    fn links_cover_id_recipient_and_expiry() {
        let l = Links::new(&[9u8; 32], "https://box.example.org:8440/".into(), 72);
        let (id, to, exp) = (
            "1700000000-0123456789ab",
            "alice@example.org",
            1_800_000_000,
        );
        let sig = l.sign(id, to, exp);
        assert_eq!(l.verify(id, to, exp, &sig, exp - 1), Ok(()));
        assert_eq!(l.verify(id, to, exp, &sig, exp + 1), Err(Refused::Expired));
        for (i, t, e) in [
            ("1700000000-0123456789ac", to, exp),
            (id, "bob@example.org", exp),
            (id, to, exp + 3600),
        ] {
            assert_eq!(l.verify(i, t, e, &sig, 0), Err(Refused::Forged));
        }
        assert_eq!(l.verify(id, to, exp, "zz", 0), Err(Refused::Forged));
        assert_eq!(l.verify(id, to, exp, "", 0), Err(Refused::Forged));
        let other = Links::new(&[8u8; 32], "https://x".into(), 1);
        assert_eq!(other.verify(id, to, exp, &sig, 0), Err(Refused::Forged));
        assert!(l.url(id, "a+b@example.org", exp).starts_with(
            "https://box.example.org:8440/quarantine/release?id=1700000000-0123456789ab&to=a%2Bb%40example.org&exp=1800000000&sig="
        ));
    }

    #[test]
    fn viruses_rejects_and_blocking_rules_are_not_for_users() {
        let mut scan = sealgate_scan::Settings::default();
        assert!(user_releasable(&meta(&["spam"], "quarantine"), &scan));
        assert!(!user_releasable(
            &meta(&["virus", "virus:Eicar"], "quarantine"),
            &scan
        ));
        assert!(!user_releasable(&meta(&["spam"], "reject"), &scan));
        scan.card_numbers.action = Some(sealgate_scan::checks::RuleAction::Block);
        assert!(!user_releasable(
            &meta(&["dlp:card-number"], "quarantine"),
            &scan
        ));
        let mut out = meta(&["spam"], "quarantine");
        out.direction = "outbound".into();
        assert!(!user_releasable(&out, &scan));
    }

    #[test]
    fn a_digest_lists_one_recipients_entries_with_links() {
        let l = Links::new(&[9u8; 32], "https://box.example.org:8440".into(), 72);
        let scan = sealgate_scan::Settings::default();
        let items = [
            Item {
                meta: meta(&["spam"], "quarantine"),
                subject: "cheap\r\nBcc: x".into(),
            },
            Item {
                meta: meta(&["virus"], "quarantine"),
                subject: "invoice".into(),
            },
        ];
        let m = String::from_utf8(compose(
            &l,
            &scan,
            "box",
            "alice@example.org",
            &items,
            1_700_000_100,
        ))
        .expect("utf-8");
        assert!(m.contains("To: <alice@example.org>\r\n"), "{m}");
        assert!(m.contains("Subject: cheap  Bcc: x\r\n"), "{m}");
        assert_eq!(m.matches("/quarantine/release?").count(), 1, "{m}");
        assert!(m.contains("ask your administrator"), "{m}");
        assert!(!m.contains("bob@"), "{m}");
    }
}
