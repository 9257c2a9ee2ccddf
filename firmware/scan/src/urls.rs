//! URLs of a message, normalised and hashed, for hash databases and the reputation service.
//!
//! Found in every text of the [`View`] (bodies, text attachments, office and PDF text):
//! `http://`, `https://` and `ftp://` URLs in the text, and every `href`/`src` of HTML
//! (quoted or not). At most [`MAX_URLS`] distinct URLs per message, each at most
//! [`MAX_URL_LEN`] bytes (longer ones are cut there before normalising).
//!
//! **Normalisation** (so that one address gives one hash however it is written):
//! - leading and trailing spaces removed, tabs and line breaks inside removed (as browsers do);
//! - the scheme in lower case (`HTTP` → `http`); only `http`, `https` and `ftp` are kept;
//! - the user information (`user:pass@`) dropped: it does not change the resource, and
//!   phishing uses it to show another name;
//! - the host in lower case, a trailing dot removed, internationalised names in their ASCII
//!   (punycode) form, percent-escapes in the host decoded first;
//! - the default port dropped (`:80` for http, `:443` for https, `:21` for ftp);
//! - an empty path becomes `/`; `.` and `..` segments resolved;
//! - percent-encoding: escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded, all
//!   other escapes in upper-case hex, bytes that are not printable ASCII (spaces, UTF-8,
//!   controls) escaped;
//! - the query kept (normalised the same way), the fragment (`#...`) dropped.
//!
//! The hash is of the normalised URL's UTF-8 bytes: SHA-256 (and MD5, SHA-1 for `.hdb`
//! lists), e.g. `printf %s 'https://example.org/a' | sha256sum`.
//!
//! Attacker: whoever wrote the message. Everything here is linear in its text and bounded.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use regex::Regex;

use crate::View;

/// Distinct URLs taken from one message.
pub const MAX_URLS: usize = 1_000;

/// Longest URL looked at (bytes); longer ones are cut.
pub const MAX_URL_LEN: usize = 4096;

fn text_url() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| Regex::new(r#"(?i)\b(?:https?|ftp)://[^\s<>"'`{}|\\^\[\]]+"#).ok())
        .as_ref()
}

fn html_url() -> Option<&'static Regex> {
    static R: OnceLock<Option<Regex>> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r#"(?i)\b(?:href|src)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))"#).ok()
    })
    .as_ref()
}

/// Every distinct normalised URL of the view, in the order first seen.
pub fn of_view(view: &View) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |raw: &str| {
        if out.len() >= MAX_URLS {
            return;
        }
        let raw = cut(raw, MAX_URL_LEN);
        if let Some(n) = normalise(&decode_html_entities(raw))
            && seen.insert(n.clone())
        {
            out.push(n);
        }
    };
    for t in &view.texts {
        if let Some(re) = text_url() {
            for m in re.find_iter(&t.text) {
                add(m
                    .as_str()
                    .trim_end_matches(['.', ',', ';', ':', '!', '?', ')']));
            }
        }
        if let (Some(html), Some(re)) = (&t.html, html_url()) {
            for c in re.captures_iter(html) {
                if let Some(m) = c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)) {
                    add(m.as_str());
                }
            }
        }
    }
    out
}

fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn decode_html_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
}

/// The normalised form of one URL (see the module's documentation), or `None` when it is
/// not an absolute `http`, `https` or `ftp` URL with a host.
pub fn normalise(raw: &str) -> Option<String> {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let (scheme, rest) = cleaned.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        "ftp" => "21",
        _ => return None,
    };
    // Browsers accept any number of slashes (and backslashes) after the scheme.
    let rest = rest.trim_start_matches(['/', '\\']);
    if rest.len() == cleaned.len() - scheme.len() - 1 {
        return None; // no `//`: a relative reference
    }
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_port(hostport)?;
    let host = normal_host(host)?;
    let port = match port {
        None => String::new(),
        Some(p) if p.trim_start_matches('0') == default_port => String::new(),
        Some(p) => {
            let n: u16 = p.parse().ok()?;
            format!(":{n}")
        }
    };
    let tail = tail.split('#').next().unwrap_or_default();
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = remove_dots(&percent(&path.replace('\\', "/"), false));
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let mut out = format!("{scheme}://{host}{port}{path}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(&percent(q, true));
    }
    Some(out)
}

fn split_port(hostport: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some(p),
            Some(_) => None,
            None if after.is_empty() => None,
            None => return None,
        };
        // An IPv6 literal keeps its brackets.
        return Some((&hostport[..h.len() + 2], port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            Some((h, if p.is_empty() { None } else { Some(p) }))
        }
        Some(_) => None,
        None => Some((hostport, None)),
    }
}

fn normal_host(host: &str) -> Option<String> {
    if host.starts_with('[') {
        return Some(host.to_ascii_lowercase());
    }
    let decoded = String::from_utf8(percent_decode_all(host)).ok()?;
    let h = decoded.trim_end_matches('.');
    if h.is_empty()
        || h.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#\\@:%<>[]".contains(c))
    {
        return None;
    }
    let ascii = idna::domain_to_ascii(h).ok()?;
    if ascii.is_empty() || ascii.contains(['/', '?', '#', '\\', '@', ':', '%', ' ']) {
        return None;
    }
    Some(ascii)
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode_all(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hexval),
                b.get(i + 2).copied().and_then(hexval),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encoding normalised: unreserved escapes decoded, others upper-case, unsafe bytes
/// escaped. In a query, `+` stays as written.
fn percent(s: &str, _query: bool) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hexval),
                b.get(i + 2).copied().and_then(hexval),
            )
        {
            let v = h << 4 | l;
            if unreserved(v) {
                out.push(v as char);
            } else {
                out.push_str(&format!("%{v:02X}"));
            }
            i += 3;
            continue;
        }
        if c.is_ascii_graphic() && c != b'%' {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 on a path.
fn remove_dots(path: &str) -> String {
    if !path.contains('.') {
        return path.to_string();
    }
    let mut segs: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    segs.push("");
                }
            }
            ".." => {
                if segs.len() > 1 {
                    segs.pop();
                }
                if i == last {
                    segs.push("");
                }
            }
            s => segs.push(s),
        }
    }
    let joined = segs.join("/");
    if joined.starts_with('/') || joined.is_empty() {
        joined
    } else {
        format!("/{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gives_one_form() {
        for (raw, want) in [
            ("HTTP://WWW.Example.ORG", "http://www.example.org/"),
            ("https://example.org:443/a", "https://example.org/a"),
            ("http://example.org:8080/a", "http://example.org:8080/a"),
            ("https://user:pw@example.org/", "https://example.org/"),
            (
                "https://example.org./%7euser/",
                "https://example.org/~user/",
            ),
            ("https://example.org/a%2fb", "https://example.org/a%2Fb"),
            ("https://example.org/a b", "https://example.org/a%20b"),
            ("https://example.org/a/./b/../c", "https://example.org/a/c"),
            (
                "https://example.org/x?q=1#frag",
                "https://example.org/x?q=1",
            ),
            ("https://bücher.example/", "https://xn--bcher-kva.example/"),
            ("https://[::1]:443/", "https://[::1]/"),
            (" https://example.org/\tp ", "https://example.org/p"),
            ("https:\\\\example.org\\p", "https://example.org/p"),
        ] {
            assert_eq!(normalise(raw).as_deref(), Some(want), "{raw}");
        }
        for bad in [
            "mailto:a@b",
            "javascript:alert(1)",
            "/relative",
            "https://",
            "https://h:99999/",
        ] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing_on_mutated_input() {
        let seeds = [
            "HTTPS://Example.ORG:443/a/./b/../c?q=%7e#f",
            "https://user@b%C3%BCcher.example./%41%2f",
            "http://[::1]:80/x y",
            "ftp://h:021/..//./a?b\\c",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"%/.?#@:[]\\ aZ09-_~\xc3\xbc";
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % (b.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                if next() % 2 == 0 && at < b.len() {
                    b[at] = c;
                } else {
                    b.insert(at, c);
                }
            }
            let s = String::from_utf8_lossy(&b);
            if let Some(n) = normalise(&s) {
                assert_eq!(normalise(&n).as_deref(), Some(n.as_str()), "{s:?}");
            }
        }
    }

    #[test]
    fn urls_come_from_text_and_html() {
        let m = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nsee https://Example.org/a. and (http://x.example/p)\r\n--b\r\n\
Content-Type: text/html\r\n\r\n<a href=\"HTTPS://example.org:443/a#top\">x</a> <img src=http://i.example/i.png>\r\n--b--\r\n";
        let v = View::build(m, crate::Limits::default());
        assert_eq!(
            of_view(&v),
            [
                "https://example.org/a",
                "http://x.example/p",
                "http://i.example/i.png"
            ]
        );
    }
}
