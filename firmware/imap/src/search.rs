//! SEARCH over decrypted views, without I/O.
//!
//! The server searches what it stores, so for an encrypted message its answer to `BODY`,
//! `TEXT`, `LARGER`, `SMALLER` or a header key is about the ciphertext. The proxy keeps the
//! client's criteria and lets the server evaluate them, except that every content-dependent
//! key `c` becomes
//!
//! ```text
//! OR (c NOT UID <shown decrypted>) (UID <shown decrypted and matching c in the view>)
//! ```
//!
//! so the server still does all the rest (flags, dates, MSNs, `NOT`/`OR` nesting, the order
//! and form of the answer) and the result is exactly that of a server that stored the views.
//!
//! Matching in a view follows what an IMAP server does without a full-text index: a
//! case-insensitive substring of the text with the transfer encodings (base64,
//! quoted-printable) of every part removed; header keys match the unfolded field value.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{AString, Vec1};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;

use crate::view::View;

/// Whether the value of `k` depends on a message's content (the view changes it).
pub fn is_content_key(k: &SearchKey<'_>) -> bool {
    matches!(
        k,
        SearchKey::Body(_)
            | SearchKey::Text(_)
            | SearchKey::Larger(_)
            | SearchKey::Smaller(_)
            | SearchKey::Header(..)
            | SearchKey::Subject(_)
            | SearchKey::From(_)
            | SearchKey::To(_)
            | SearchKey::Cc(_)
            | SearchKey::Bcc(_)
    )
}

/// Whether any key of the criteria (at any depth, bounded) depends on content.
pub fn needs_views(criteria: &[SearchKey<'_>]) -> bool {
    fn walk(k: &SearchKey<'_>, depth: usize) -> bool {
        if depth > 64 {
            return false;
        }
        match k {
            SearchKey::And(v) => v.as_ref().iter().any(|k| walk(k, depth + 1)),
            SearchKey::Not(k) => walk(k, depth + 1),
            SearchKey::Or(a, b) => walk(a, depth + 1) || walk(b, depth + 1),
            k => is_content_key(k),
        }
    }
    criteria.iter().any(|k| walk(k, 0))
}

fn astr(a: &AString<'_>) -> String {
    String::from_utf8_lossy(a.as_ref()).to_lowercase()
}

fn contains(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.contains(needle)
}

/// The searchable text of a view, decoded and lower-cased once.
#[derive(Debug, Clone)]
pub struct Searchable {
    size: u32,
    header: String,
    body: String,
    fields: Vec<(String, String)>,
}

impl Searchable {
    /// The searchable text of `v`.
    pub fn new(v: &View) -> Searchable {
        let header = lower(v.header());
        let body = lower(&v.decoded_text());
        let fields = crate::view::header_fields_unfolded(v.header())
            .into_iter()
            .map(|(n, val)| (n.to_ascii_lowercase(), val.to_lowercase()))
            .collect();
        Searchable {
            size: v.size(),
            header,
            body,
            fields,
        }
    }

    fn field(&self, name: &str, needle: &str) -> bool {
        self.fields
            .iter()
            .any(|(n, v)| n == name && contains(v, needle))
    }

    /// Whether the content key `k` matches (a key that is not a content key: false).
    pub fn matches(&self, k: &SearchKey<'_>) -> bool {
        match k {
            SearchKey::Body(s) => contains(&self.body, &astr(s)),
            SearchKey::Text(s) => {
                let s = astr(s);
                contains(&self.header, &s) || contains(&self.body, &s)
            }
            SearchKey::Larger(n) => self.size > *n,
            SearchKey::Smaller(n) => self.size < *n,
            SearchKey::Header(name, s) => self.field(&astr(name), &astr(s)),
            SearchKey::Subject(s) => self.field("subject", &astr(s)),
            SearchKey::From(s) => self.field("from", &astr(s)),
            SearchKey::To(s) => self.field("to", &astr(s)),
            SearchKey::Cc(s) => self.field("cc", &astr(s)),
            SearchKey::Bcc(s) => self.field("bcc", &astr(s)),
            _ => false,
        }
    }
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_lowercase()
}

/// A UID set of `uids` (sorted, consecutive ones as ranges); `None` when empty.
pub fn uid_set(uids: &[u32]) -> Option<SequenceSet> {
    let mut u: Vec<u32> = uids.iter().copied().filter(|u| *u > 0).collect();
    u.sort_unstable();
    u.dedup();
    let mut text = String::new();
    let mut i = 0;
    while i < u.len() {
        let start = u[i];
        let mut end = start;
        while i + 1 < u.len() && u[i + 1] == end + 1 {
            i += 1;
            end = u[i];
        }
        if !text.is_empty() {
            text.push(',');
        }
        if start == end {
            text.push_str(&start.to_string());
        } else {
            text.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    if text.is_empty() {
        return None;
    }
    SequenceSet::try_from(text.as_str()).ok()
}

/// Rewrites `criteria` so the server answers for the views: `views` are the UIDs shown
/// decrypted with their searchable text. Keys that do not depend on content stay as they
/// are; with no views nothing changes.
pub fn rewrite(criteria: &mut Vec1<SearchKey<'static>>, views: &[(u32, Searchable)]) {
    let uids: Vec<u32> = views.iter().map(|(u, _)| *u).collect();
    let Some(all) = uid_set(&uids) else {
        return;
    };
    let mut keys: Vec<SearchKey<'static>> = criteria.as_ref().to_vec();
    for k in keys.iter_mut() {
        rewrite_key(k, &all, views, 0);
    }
    if let Ok(v) = Vec1::try_from(keys) {
        *criteria = v;
    }
}

fn rewrite_key(
    k: &mut SearchKey<'static>,
    all: &SequenceSet,
    views: &[(u32, Searchable)],
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match k {
        SearchKey::And(v) => {
            let mut list = v.as_ref().to_vec();
            for k in list.iter_mut() {
                rewrite_key(k, all, views, depth + 1);
            }
            if let Ok(l) = Vec1::try_from(list) {
                *v = l;
            }
        }
        SearchKey::Not(inner) => rewrite_key(inner, all, views, depth + 1),
        SearchKey::Or(a, b) => {
            rewrite_key(a, all, views, depth + 1);
            rewrite_key(b, all, views, depth + 1);
        }
        c if is_content_key(c) => {
            let matching: Vec<u32> = views
                .iter()
                .filter(|(_, s)| s.matches(c))
                .map(|(u, _)| *u)
                .collect();
            let stored = keys2(
                c.clone(),
                SearchKey::Not(Box::new(SearchKey::Uid(all.clone()))),
            );
            *c = match uid_set(&matching) {
                Some(m) => SearchKey::Or(Box::new(stored), Box::new(SearchKey::Uid(m))),
                None => stored,
            };
        }
        _ => {}
    }
}

fn keys2(a: SearchKey<'static>, b: SearchKey<'static>) -> SearchKey<'static> {
    match Vec1::try_from(vec![a.clone(), b]) {
        Ok(v) => SearchKey::And(v),
        // Unreachable (two keys); the key alone is the safe fallback.
        Err(_) => a,
    }
}

/// The UIDs of a `UID SEARCH` answer.
pub fn uids(found: &[NonZeroU32]) -> Vec<u32> {
    found.iter().map(|n| n.get()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::CommandCodec;
    use imap_codec::encode::Encoder;
    use imap_codec::imap_types::command::{Command, CommandBody};

    fn view(s: &str) -> Searchable {
        Searchable::new(&View::new(s.as_bytes()))
    }

    #[test]
    fn matching_in_a_view() {
        let s = view(
            "Subject: Quarterly Plans\r\nFrom: Carol <carol@example.org>\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             UGluZWFwcGxlIHBpenph\r\n--b\r\nContent-Type: text/plain\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\nsoft=\r\nbreak caf=C3=A9\r\n--b--\r\n",
        );
        let a = |x: &str| AString::try_from(x.to_string()).expect("astring");
        assert!(s.matches(&SearchKey::Body(a("PINEAPPLE"))));
        assert!(s.matches(&SearchKey::Body(a("softbreak café"))));
        assert!(!s.matches(&SearchKey::Body(a("quarterly"))));
        assert!(s.matches(&SearchKey::Text(a("quarterly"))));
        assert!(s.matches(&SearchKey::Subject(a("plans"))));
        assert!(s.matches(&SearchKey::From(a("carol@"))));
        assert!(!s.matches(&SearchKey::To(a("carol"))));
        assert!(s.matches(&SearchKey::Header(a("content-type"), a("MIXED"))));
        assert!(s.matches(&SearchKey::Header(a("Subject"), a(""))));
        assert!(!s.matches(&SearchKey::Header(a("X-None"), a(""))));
        assert!(s.matches(&SearchKey::Larger(10)));
        assert!(!s.matches(&SearchKey::Smaller(10)));
    }

    #[test]
    fn uid_sets_are_compact() {
        let s = uid_set(&[7, 1, 2, 3, 9, 8, 20]).expect("set");
        let cmd = Command::new(
            "A",
            CommandBody::search(None, Vec1::from(SearchKey::Uid(s)), true),
        )
        .expect("cmd");
        let text = CommandCodec::default().encode(&cmd).dump();
        assert_eq!(text, b"A UID SEARCH UID 1:3,7:9,20\r\n");
        assert!(uid_set(&[]).is_none());
    }

    #[test]
    fn content_keys_are_rewritten_and_the_rest_kept() {
        let views = vec![
            (2, view("Subject: a\r\n\r\nthe pineapple\r\n")),
            (3, view("Subject: b\r\n\r\nnothing\r\n")),
        ];
        let a = |x: &str| AString::try_from(x.to_string()).expect("astring");
        let mut c = Vec1::try_from(vec![
            SearchKey::Unseen,
            SearchKey::Not(Box::new(SearchKey::Body(a("pineapple")))),
            SearchKey::Text(a("zzz")),
        ])
        .expect("criteria");
        rewrite(&mut c, &views);
        let cmd = Command::new("A", CommandBody::search(None, c, true)).expect("cmd");
        let text = String::from_utf8(CommandCodec::default().encode(&cmd).dump()).expect("utf8");
        assert_eq!(
            text,
            "A UID SEARCH UNSEEN NOT OR (BODY pineapple NOT UID 2:3) UID 2 (TEXT zzz NOT UID 2:3)\r\n"
        );
        // No views: unchanged.
        let mut c = Vec1::from(SearchKey::Body(a("x")));
        rewrite(&mut c, &[]);
        assert_eq!(c.as_ref(), &[SearchKey::Body(a("x"))]);
        assert!(needs_views(&[SearchKey::Or(
            Box::new(SearchKey::Seen),
            Box::new(SearchKey::Not(Box::new(SearchKey::Larger(5))))
        )]));
        assert!(!needs_views(&[SearchKey::Seen, SearchKey::All]));
    }
}
