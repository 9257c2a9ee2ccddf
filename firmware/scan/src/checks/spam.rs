//! Spam and phishing rules, each with a SpamAssassin-like score; `spam` is added once the
//! rules together reach 5.
//!
//! - Header anomalies (inbound only: mail clients of local users write what they write):
//!   no `From`, several `From` fields, no `Date`, no `Message-ID`, a display name that
//!   is an address in another domain than the real one.
//! - Links whose text shows one domain while the target goes to another.
//! - Punycode (`xn--`) and lookalike (mixed-script) domains in link targets and in `From`.
//! - Dangerous attachment types (executables and scripts, also inside archives, and
//!   double extensions such as `invoice.pdf.exe`).

use std::sync::LazyLock;

use regex::Regex;

use crate::{Direction, Finding, Lookups, Scan, Scanned};

/// The spam rules stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpamRules;

/// The summed rule score at which a message is labelled `spam`.
pub const SPAM_LABEL_SCORE: f64 = 5.0;

/// Extensions Windows (and some mail clients) execute on a double click.
const DANGEROUS: &[&str] = &[
    "exe",
    "scr",
    "pif",
    "com",
    "bat",
    "cmd",
    "cpl",
    "js",
    "jse",
    "vbs",
    "vbe",
    "wsf",
    "wsh",
    "hta",
    "msi",
    "msp",
    "jar",
    "ps1",
    "lnk",
    "reg",
    "iso",
    "img",
    "vhd",
    "vhdx",
    "chm",
    "dll",
    "application",
    "appref-ms",
    "library-ms",
    "scf",
    "url",
];

/// Extensions of documents a double extension pretends to be.
const DOCUMENT: &[&str] = &[
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "jpg", "jpeg", "png", "zip",
];

impl Scan for SpamRules {
    fn name(&self) -> &'static str {
        "spam-rules"
    }

    fn scan(&self, m: &Scanned<'_>, _: &Lookups) -> Finding {
        let mut f = Finding::default();
        if m.direction == Direction::Inbound {
            header_anomalies(m, &mut f);
        }
        links(m, &mut f);
        from_domain(m, &mut f);
        attachments(m, &mut f);
        if f.score >= SPAM_LABEL_SCORE {
            f.labels.insert(0, "spam".into());
        }
        f
    }
}

fn header_anomalies(m: &Scanned<'_>, f: &mut Finding) {
    let top = || m.view.headers.iter().filter(|h| h.path.is_empty());
    let count = |name: &str| top().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    match count("From") {
        0 => f.hit(1.5, "header-anomaly", "no From field"),
        1 => {}
        n => f.hit(2.5, "header-anomaly", format!("{n} From fields")),
    }
    if count("Date") == 0 {
        f.hit(1.0, "header-anomaly", "no Date field");
    }
    if count("Message-ID") == 0 {
        f.hit(0.5, "header-anomaly", "no Message-ID field");
    }
    if let Some(from) = m.view.header("From")
        && let Some((display, addr)) = from.rsplit_once('<')
    {
        let real = domain_of_address(addr.trim_end_matches('>'));
        let shown = display
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .find(|w| w.contains('@'))
            .map(domain_of_address);
        if let (Some(shown), Some(real)) = (shown.flatten(), real)
            && shown != real
        {
            f.hit(
                2.5,
                "phish:display-name",
                format!("the display name shows {shown}, the address is at {real}"),
            );
        }
    }
}

fn domain_of_address(a: &str) -> Option<String> {
    let d = a.rsplit_once('@')?.1;
    let d = d
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '.' && c != '-')
        .to_lowercase();
    (!d.is_empty()).then_some(d)
}

/// The host of an `http(s)://` URL, lower case.
fn url_host(url: &str) -> Option<String> {
    let u = url.trim();
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .or_else(|| {
            let l = u.get(..8)?.to_ascii_lowercase();
            if l.starts_with("https://") {
                u.get(8..)
            } else if l.starts_with("http://") {
                u.get(7..)
            } else {
                None
            }
        })?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?.trim_end_matches('.').to_lowercase();
    (!host.is_empty()).then_some(host)
}

/// A domain as link text shows one: `example.org`, `www.example.org/path`, a URL.
fn shown_domain(text: &str) -> Option<String> {
    let t = text.trim();
    if let Some(h) = url_host(t) {
        return Some(h);
    }
    let first = t
        .split(['/', ' '])
        .next()?
        .trim_end_matches('.')
        .to_lowercase();
    let labels: Vec<&str> = first.split('.').collect();
    let looks = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic));
    looks.then_some(first)
}

/// The last two labels (a registrable domain, roughly: no public suffix list yet).
fn base_domain(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".")
}

/// Anchors: href in single or double quotes, then the text up to `</a>`.
static ANCHOR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?is)<a\s[^>]*?href\s*=\s*["']([^"']*)["'][^>]*>(.*?)</a\s*>"#).ok()
});

fn links(m: &Scanned<'_>, f: &mut Finding) {
    let Some(anchor) = ANCHOR.as_ref() else {
        return;
    };
    let mut mismatch = 0;
    let mut hosts: Vec<String> = Vec::new();
    for t in &m.view.texts {
        let Some(html) = &t.html else { continue };
        for c in anchor.captures_iter(html) {
            let (Some(href), Some(text)) = (c.get(1), c.get(2)) else {
                continue;
            };
            let Some(target) = url_host(href.as_str()) else {
                continue;
            };
            hosts.push(target.clone());
            let text = crate::view::strip_markup(text.as_str());
            if let Some(shown) = shown_domain(&text)
                && base_domain(&shown) != base_domain(&target)
            {
                mismatch += 1;
                if mismatch == 1 {
                    f.hit(
                        3.0,
                        "phish:link-mismatch",
                        format!(
                            "a link shows {shown} but goes to {target} (part {})",
                            t.path
                        ),
                    );
                }
            }
        }
    }
    for t in &m.view.texts {
        for word in t.text.split_whitespace() {
            if let Some(h) = url_host(word) {
                hosts.push(h);
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    for h in hosts {
        domain_checks(&h, "a link", f);
    }
}

/// The hosts of the message's links (`href` targets and `http(s)://` words), lower case,
/// each once, IP literals left out, at most `max`: what URIBL looks up.
pub fn link_hosts(view: &crate::View, max: usize) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    let mut add = |h: String| {
        if hosts.len() < max
            && h.parse::<std::net::IpAddr>().is_err()
            && !h.starts_with('[')
            && h.contains('.')
            && !hosts.contains(&h)
        {
            hosts.push(h);
        }
    };
    for t in &view.texts {
        if let (Some(html), Some(anchor)) = (&t.html, ANCHOR.as_ref()) {
            for c in anchor.captures_iter(html) {
                if let Some(h) = c.get(1).and_then(|m| url_host(m.as_str())) {
                    add(h);
                }
            }
        }
        for word in t.text.split_whitespace() {
            if let Some(h) = url_host(word) {
                add(h);
            }
        }
    }
    hosts
}

fn from_domain(m: &Scanned<'_>, f: &mut Finding) {
    if let Some(from) = m.view.header("From") {
        let addr = from
            .rsplit_once('<')
            .map_or(from, |(_, a)| a.trim_end_matches('>'));
        if let Some(d) = domain_of_address(addr) {
            domain_checks(&d, "From", f);
        }
    }
}

/// Punycode labels, and domains whose Unicode form mixes scripts (Latin with Cyrillic or
/// Greek: the classic lookalike).
fn domain_checks(host: &str, where_: &str, f: &mut Finding) {
    let (unicode, ok) = idna::domain_to_unicode(host);
    if host.split('.').any(|l| l.starts_with("xn--")) {
        f.hit(
            1.5,
            "phish:punycode",
            format!("{where_} names the punycode domain {host} ({unicode})"),
        );
    }
    if ok.is_err() {
        return;
    }
    for label in unicode.split('.') {
        let latin = label.chars().any(|c| c.is_ascii_alphabetic());
        let cyrillic = label
            .chars()
            .any(|c| ('\u{0400}'..='\u{04FF}').contains(&c));
        let greek = label
            .chars()
            .any(|c| ('\u{0370}'..='\u{03FF}').contains(&c));
        if (latin && (cyrillic || greek)) || (cyrillic && greek) {
            f.hit(
                3.5,
                "phish:lookalike",
                format!("{where_} names {host}, which mixes scripts ({unicode})"),
            );
            return;
        }
    }
}

fn attachments(m: &Scanned<'_>, f: &mut Finding) {
    for o in &m.view.objects {
        let Some(name) = &o.name else { continue };
        let lower = name.trim().trim_end_matches(['.', ' ']).to_lowercase();
        let mut parts = lower.rsplit('.');
        let (Some(ext), Some(before)) = (parts.next(), parts.next()) else {
            continue;
        };
        if DANGEROUS.contains(&ext) {
            let double = DOCUMENT.contains(&before);
            let clean: String = name.chars().filter(|c| !c.is_control()).collect();
            f.hit(
                if double { 5.0 } else { 3.0 },
                "dangerous-attachment",
                format!(
                    "part {} is {clean:?}{}",
                    o.path,
                    if double { " (a double extension)" } else { "" }
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Input, Pipeline, Policy};

    fn scan(msg: &str, dir: Direction) -> Finding {
        let p = Pipeline::new(
            vec![Box::new(SpamRules)],
            Lookups::default(),
            Policy::default(),
        );
        p.scan(&Input::new(msg.as_bytes(), dir)).checks[0]
            .finding
            .clone()
    }

    const OK_HEAD: &str = "From: a@example.org\r\nDate: x\r\nMessage-ID: <1@x>\r\n";

    #[test]
    fn a_plain_message_is_clean() {
        let f = scan(
            &format!("{OK_HEAD}\r\nhello https://example.org/x"),
            Direction::Inbound,
        );
        assert_eq!(f, Finding::default());
    }

    #[test]
    fn header_anomalies_inbound_only() {
        let f = scan("Subject: x\r\n\r\nhi", Direction::Inbound);
        assert_eq!(f.labels, vec!["header-anomaly"]);
        assert_eq!(f.score, 3.0);
        assert_eq!(scan("Subject: x\r\n\r\nhi", Direction::Outbound).score, 0.0);
    }

    #[test]
    fn link_text_and_target_must_agree() {
        let html = format!(
            "{OK_HEAD}Content-Type: text/html\r\n\r\n<a href=\"https://evil.example.net/login\">www.mybank.com</a>\
             <a href='https://docs.example.org/a'>https://example.org</a>"
        );
        let f = scan(&html, Direction::Inbound);
        assert_eq!(f.labels, vec!["phish:link-mismatch"], "{f:?}");
        assert!(f.evidence[0].contains("mybank.com"));
    }

    #[test]
    fn punycode_and_mixed_scripts() {
        // "аpple.com" with a Cyrillic а.
        let f = scan(
            &format!("{OK_HEAD}\r\nsee https://xn--pple-43d.com/"),
            Direction::Inbound,
        );
        assert!(f.labels.contains(&"phish:punycode".to_string()), "{f:?}");
        assert!(f.labels.contains(&"phish:lookalike".to_string()), "{f:?}");
        assert!(f.labels.contains(&"spam".to_string()), "{f:?}");
    }

    #[test]
    fn dangerous_attachments_and_double_extensions() {
        let msg = format!(
            "{OK_HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\n\r\nMZ\r\n--b--\r\n"
        );
        let f = scan(&msg, Direction::Inbound);
        assert_eq!(f.labels, vec!["spam", "dangerous-attachment"]);
        let msg = format!(
            "{OK_HEAD}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\r\n%PDF\r\n--b--\r\n"
        );
        assert!(scan(&msg, Direction::Inbound).labels.is_empty());
    }

    #[test]
    fn a_display_name_showing_another_address() {
        let f = scan(
            "From: \"service@mybank.com\" <x@evil.example>\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nhi",
            Direction::Inbound,
        );
        assert_eq!(f.labels, vec!["phish:display-name"]);
    }
}
