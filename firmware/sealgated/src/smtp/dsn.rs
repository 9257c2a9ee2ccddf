//! Delivery status notifications (RFC 3464): `multipart/report; report-type=delivery-status`
//! with a human-readable part, a `message/delivery-status` part (one block per failed
//! recipient) and the original's header only (`text/rfc822-headers`, RFC 6522), so a DSN
//! never carries the content back (it may be a decrypted message).
//!
//! Sent from `<>` (so nothing ever answers it with another DSN) and marked
//! `Auto-Submitted: auto-replied` (RFC 3834).

use sealgate_smime::mime::Entity;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::queue::Recipient;
use crate::identity::{hex, random};

/// The most of the original header a DSN carries.
const MAX_HEADER: usize = 64 * 1024;

fn date(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc2822)
        .unwrap_or_default()
}

/// Keeps `s` on one line, printable, bounded.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| c.is_ascii())
        .take(max)
        .collect()
}

/// The DSN for `failed` recipients of `original`, to `sender`.
pub fn build(
    hostname: &str,
    sender: &str,
    queue_id: &str,
    received: i64,
    failed: &[&Recipient],
    original: &[u8],
    now: i64,
) -> Vec<u8> {
    let boundary = format!(
        "sealgate-dsn-{}",
        hex(&random(12).unwrap_or_else(|_| queue_id.as_bytes().to_vec()))
    );
    let host = clean(hostname, 200);
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", clean(sender, 300)));
    m.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    m.push_str(&format!("Date: {}\r\n", date(now)));
    m.push_str(&format!(
        "Message-ID: <{}.{}@{host}>\r\n",
        clean(queue_id, 100),
        hex(&random(6).unwrap_or_default())
    ));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    m.push_str(&format!(
        "This is the mail system at {host}.\r\n\r\nYour message could not be delivered to the following recipients.\r\nIts header is attached below; the content was not kept.\r\n\r\n"
    ));
    for r in failed {
        m.push_str(&format!(
            "<{}>: {}\r\n",
            clean(&r.address, 300),
            clean(r.reply.as_deref().unwrap_or("failed"), 500)
        ));
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    m.push_str("Content-Type: message/delivery-status\r\n\r\n");
    m.push_str(&format!("Reporting-MTA: dns; {host}\r\n"));
    m.push_str(&format!(
        "X-Sealgate-Queue-ID: {}\r\n",
        clean(queue_id, 100)
    ));
    m.push_str(&format!("Arrival-Date: {}\r\n", date(received)));
    for r in failed {
        let reply = clean(r.reply.as_deref().unwrap_or("failed"), 500);
        m.push_str("\r\n");
        m.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            clean(&r.address, 300)
        ));
        m.push_str("Action: failed\r\n");
        m.push_str(&format!("Status: {}\r\n", status_code(&reply)));
        if reply
            .get(..3)
            .is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()))
        {
            m.push_str(&format!("Diagnostic-Code: smtp; {reply}\r\n"));
        } else {
            m.push_str(&format!("X-Sealgate-Diagnostic: {reply}\r\n"));
        }
        m.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now)));
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    m.push_str("Content-Type: text/rfc822-headers\r\n\r\n");
    let mut out = m.into_bytes();
    let head = Entity::parse(original).header_block();
    let head = &head[..head.len().min(MAX_HEADER)];
    // Line ends as CRLF; a header cut at the limit ends at its last whole line.
    let cut = if head.len() == MAX_HEADER {
        head.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1)
    } else {
        head.len()
    };
    for line in head[..cut].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        // The boundary cannot appear: it is random, but be sure.
        if line.starts_with(b"--")
            && line
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The enhanced status code in a reply (`550 5.1.1 ...` → `5.1.1`), else one derived from the
/// reply's class.
pub fn status_code(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let first = words.next().unwrap_or("");
    let candidate = if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
        words.next().unwrap_or("")
    } else {
        first
    };
    let parts: Vec<&str> = candidate.split('.').collect();
    if parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return candidate.to_string();
    }
    if first.starts_with('4') {
        "4.0.0".into()
    } else {
        "5.0.0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::queue::RcptStatus;

    #[test]
    fn status_codes_come_from_the_reply() {
        assert_eq!(status_code("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_code("552 message too big"), "5.0.0");
        assert_eq!(status_code("451 later"), "4.0.0");
        assert_eq!(status_code("4.4.7 delivery time expired"), "4.4.7");
        assert_eq!(status_code("5.4.6 loop"), "5.4.6");
        assert_eq!(status_code(""), "5.0.0");
        assert_eq!(status_code("550 5.1111.1 x"), "5.0.0");
    }

    #[test]
    fn a_dsn_carries_the_header_only_and_one_block_per_recipient() {
        let original =
            b"From: a@example.org\r\nSubject: secret plans\r\nMessage-ID: <1@x>\r\n\r\nthe secret body\r\n";
        let r = |a: &str, reply: &str| Recipient {
            address: a.into(),
            status: RcptStatus::Failed,
            reply: Some(reply.into()),
            notified: false,
        };
        let (x, y) = (
            r("x@example.net", "550 5.1.1 unknown"),
            r("y@example.net", "4.4.7 expired\r\nInjected: 1"),
        );
        let d = build(
            "box.example.org",
            "a@example.org",
            "17-ab",
            17,
            &[&x, &y],
            original,
            1_700_000_000,
        );
        let text = String::from_utf8(d.clone()).expect("ascii");
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(text.contains("Content-Type: message/delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; x@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 unknown"));
        assert!(text.contains("Status: 4.4.7"));
        assert!(text.contains("Subject: secret plans"));
        assert!(!text.contains("the secret body"), "never the content");
        assert!(
            !text.contains("\r\nInjected: 1"),
            "replies stay on one line"
        );
        assert!(text.contains("To: <a@example.org>"));
        assert!(text.contains("Auto-Submitted: auto-replied"));
        // It parses as a multipart with three parts.
        let e = Entity::parse(&d);
        assert_eq!(e.subparts().expect("multipart").len(), 3);
        // Every line ends with CRLF.
        assert!(!d.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }
}
