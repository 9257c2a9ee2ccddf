//! The decrypted view of a message as the checks see it: header fields, texts (bodies and
//! textual attachments, HTML with its markup removed) and objects (every attachment and every
//! archive member, as bytes to hash), plus what could not be looked into.
//!
//! Built once per message by walking the MIME tree with the engine's parser
//! (`sealgate_smime::mime`; no second MIME parser) and unpacking archives (`unpack.rs`), all
//! inside one [`Budget`]. Never panics and never goes past the limits: the attacker writes
//! the message.

use sealgate_smime::mime::{ContentType, Entity, SmimeKind};

use crate::unpack::{self, Anomaly, Budget, Container, Limits};

/// One header field, unfolded, RFC 2047 words decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Where: `""` for the message itself, else the part path of an attached message.
    pub path: String,
    /// The field name as written.
    pub name: String,
    /// The value, unfolded and decoded.
    pub value: String,
}

/// A text: a body, or an attachment that is text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// Part path (`1.2`, `2/inner.txt` inside an archive).
    pub path: String,
    /// The text (HTML with its markup removed).
    pub text: String,
    /// The HTML source, when the part is HTML (for link checks).
    pub html: Option<String>,
}

/// Bytes to hash: an attachment, or a member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Part path.
    pub path: String,
    /// Its file name, if it has one.
    pub name: Option<String>,
    /// Its declared content type (members of archives: empty).
    pub content_type: String,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// What could not be looked into, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Part path.
    pub path: String,
    /// What happened.
    pub anomaly: ViewAnomaly,
}

/// Why part of a message was not looked into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewAnomaly {
    /// An archive or nesting past the limits (not expanded).
    Bomb(String),
    /// An archive that cannot be read (encrypted, corrupt).
    Unscannable(String),
    /// An encrypted S/MIME entity the box could not decrypt (never scanned as ciphertext).
    Encrypted,
}

/// The message as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Header fields, the message's first, then those of attached messages.
    pub headers: Vec<Header>,
    /// Bodies and textual attachments.
    pub texts: Vec<Text>,
    /// Attachments and archive members.
    pub objects: Vec<Object>,
    /// What was not looked into.
    pub findings: Vec<Finding>,
}

impl View {
    /// The view of a cleartext (or decrypted) message.
    pub fn build(message: &[u8], limits: Limits) -> View {
        let mut v = View::default();
        let mut budget = Budget::new(limits);
        let e = Entity::parse(message);
        v.add_headers(&e, "");
        v.walk(&e, "", 0, &mut budget);
        v
    }

    /// The view of a message that stays encrypted: its outer header fields only.
    pub fn headers_only(message: &[u8]) -> View {
        let mut v = View::default();
        v.add_headers(&Entity::parse(message), "");
        v.findings.push(Finding {
            path: String::new(),
            anomaly: ViewAnomaly::Encrypted,
        });
        v
    }

    /// The first header field of the message itself with this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.path.is_empty() && h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    fn add_headers(&mut self, e: &Entity<'_>, path: &str) {
        for f in e.headers() {
            if f.is_malformed() {
                continue;
            }
            self.headers.push(Header {
                path: path.to_string(),
                name: f.name().to_string(),
                value: sealgate_smime::mime::decode_rfc2047(&f.value()).into_owned(),
            });
        }
    }

    fn anomaly(&mut self, path: &str, a: Anomaly) {
        match a {
            Anomaly::Bomb(why) => self.bomb(path, why),
            Anomaly::Unscannable(why) => self.findings.push(Finding {
                path: path.to_string(),
                anomaly: ViewAnomaly::Unscannable(why),
            }),
        }
    }

    fn bomb(&mut self, path: &str, why: String) {
        self.findings.push(Finding {
            path: path.to_string(),
            anomaly: ViewAnomaly::Bomb(why),
        });
    }

    fn walk(&mut self, e: &Entity<'_>, path: &str, depth: usize, budget: &mut Budget) {
        if depth > budget.limits().max_depth {
            self.bomb(
                path,
                format!("nested deeper than {}", budget.limits().max_depth),
            );
            return;
        }
        if !budget.take_object() {
            self.bomb(path, "more parts than allowed".into());
            return;
        }
        let kind = e.smime_kind();
        if kind.is_enveloped() || kind == SmimeKind::UnknownPkcs7 {
            // Encrypted content that was not decrypted: never scanned as ciphertext.
            self.findings.push(Finding {
                path: path.to_string(),
                anomaly: ViewAnomaly::Encrypted,
            });
            return;
        }
        let ct = e.content_type();
        if ct.is_multipart() {
            match e.subparts() {
                Ok(parts) => {
                    for (i, p) in parts.iter().enumerate() {
                        let sub = join(path, &(i + 1).to_string());
                        self.walk(p, &sub, depth + 1, budget);
                    }
                }
                Err(_) => self.add_text(path, &ct, e.body()),
            }
            return;
        }
        let body = match e.decoded_body() {
            Ok(b) => b.into_owned(),
            // An unknown transfer encoding: the raw bytes are what a reader's client shows.
            Err(_) => e.body().to_vec(),
        };
        if ct.is("application", "pkcs7-signature") || ct.is("application", "x-pkcs7-signature") {
            return;
        }
        if ct.main_type() == "message" && matches!(ct.subtype(), "rfc822" | "global") {
            let inner = Entity::parse(&body);
            let sub = join(path, "msg");
            self.add_headers(&inner, &sub);
            self.walk(&inner, &sub, depth + 1, budget);
            return;
        }
        let name = e.filename();
        let attachment = name.is_some()
            || e.disposition().is_some_and(|d| d.is_attachment())
            || ct.main_type() != "text";
        if attachment {
            self.add_object(path, name, ct.essence(), body, depth, budget, true);
        } else {
            self.add_text(path, &ct, &body);
        }
    }

    fn add_text(&mut self, path: &str, ct: &ContentType, body: &[u8]) {
        let s = String::from_utf8_lossy(body).into_owned();
        if ct.subtype() == "html" {
            self.texts.push(Text {
                path: path.to_string(),
                text: strip_markup(&s),
                html: Some(s),
            });
        } else {
            self.texts.push(Text {
                path: path.to_string(),
                text: s,
                html: None,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_object(
        &mut self,
        path: &str,
        name: Option<String>,
        content_type: String,
        data: Vec<u8>,
        depth: usize,
        budget: &mut Budget,
        as_text: bool,
    ) {
        let lower = name.as_deref().unwrap_or_default().to_ascii_lowercase();
        if as_text && crate::pdf::is_pdf(&data) {
            match crate::pdf::text(&data, budget) {
                Ok(t) => self.texts.push(Text {
                    path: path.to_string(),
                    text: t,
                    html: None,
                }),
                Err(a) => self.anomaly(path, a),
            }
        }
        // Also as text when it reads as text, whatever it starts with: `%PDF-` in front of a
        // text file must not hide the text from DLP.
        if as_text && is_textual(&content_type, &lower, &data) {
            let ct = ContentType::parse(if lower.ends_with(".html") || lower.ends_with(".htm") {
                b"text/html"
            } else {
                b"text/plain"
            });
            self.add_text(path, &ct, &data);
        }
        if lower.ends_with(".eml") || content_type == "message/rfc822" {
            let inner = Entity::parse(&data);
            let sub = join(path, "msg");
            self.add_headers(&inner, &sub);
            self.walk(&inner, &sub, depth + 1, budget);
        } else if let Some(kind) = unpack::sniff(&data) {
            if depth + 1 > budget.limits().max_depth {
                self.bomb(
                    path,
                    format!("nested deeper than {}", budget.limits().max_depth),
                );
            } else {
                let (members, anomaly) = unpack::unpack(kind, &data, budget);
                if let Some(a) = anomaly {
                    self.anomaly(path, a);
                }
                // An office document: its text once, from the members that carry it (their
                // XML is not read again as text, which would count every match twice).
                let document = kind == Container::Zip && crate::office::family(&members).is_some();
                if document && as_text {
                    self.texts.push(Text {
                        path: path.to_string(),
                        text: crate::office::text(&members),
                        html: None,
                    });
                }
                for (i, m) in members.into_iter().enumerate() {
                    let label = m.name.clone().unwrap_or_else(|| (i + 1).to_string());
                    let sub = format!("{path}/{label}");
                    let member_text = as_text
                        && !(document && m.name.as_deref().is_some_and(|n| n.ends_with(".xml")));
                    self.add_object(
                        &sub,
                        m.name,
                        String::new(),
                        m.data,
                        depth + 1,
                        budget,
                        member_text,
                    );
                }
            }
        }
        self.objects.push(Object {
            path: path.to_string(),
            name,
            content_type,
            data,
        });
    }
}

fn join(path: &str, part: &str) -> String {
    if path.is_empty() {
        part.to_string()
    } else {
        format!("{path}.{part}")
    }
}

/// Text files by type or name, or archive members that read as text (UTF-8, no NUL).
fn is_textual(content_type: &str, lower_name: &str, data: &[u8]) -> bool {
    const TEXT_EXT: &[&str] = &[
        ".txt", ".csv", ".tsv", ".html", ".htm", ".xml", ".json", ".md", ".log", ".eml",
    ];
    if content_type.starts_with("text/") || TEXT_EXT.iter().any(|e| lower_name.ends_with(e)) {
        return true;
    }
    if !content_type.is_empty() && content_type != "application/octet-stream" {
        return false;
    }
    let head = data.get(..8192).unwrap_or(data);
    !head.is_empty() && !head.contains(&0) && std::str::from_utf8(head).is_ok()
}

/// HTML to text: markup, comments and `<script>`/`<style>` contents removed, entities for
/// the characters that matter decoded. Not a renderer: enough to read words and numbers.
pub fn strip_markup(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let rest = &lower[i..];
            let skip_to = if rest.starts_with("<!--") {
                rest.find("-->").map(|e| e + 3)
            } else if rest.starts_with("<script") {
                rest.find("</script")
                    .and_then(|e| rest[e..].find('>').map(|g| e + g + 1))
            } else if rest.starts_with("<style") {
                rest.find("</style")
                    .and_then(|e| rest[e..].find('>').map(|g| e + g + 1))
            } else {
                rest.find('>').map(|e| e + 1)
            };
            match skip_to {
                Some(n) => {
                    out.push(' ');
                    i += n;
                }
                None => break,
            }
        } else {
            let next = html[i..].find('<').map_or(html.len(), |n| i + n);
            out.push_str(&decode_entities(&html[i..next]));
            i = next;
        }
    }
    out
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_become_texts_and_objects() {
        let m = b"From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>hi <b>there</b></p>\r\n\
--b\r\nContent-Type: application/octet-stream; name=x.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n";
        let v = View::build(m, Limits::default());
        assert_eq!(v.header("subject"), Some("café"));
        assert_eq!(v.texts[0].text, "hello");
        assert!(v.texts[1].text.contains("hi"));
        assert!(v.texts[1].html.is_some());
        assert_eq!(v.objects[0].data, vec![0, 1, 2]);
        assert_eq!(v.objects[0].name.as_deref(), Some("x.bin"));
        assert!(
            v.headers
                .iter()
                .any(|h| h.path == "4.msg" && h.value == "inner")
        );
        assert!(v.texts.iter().any(|t| t.text.contains("inner body")));
    }

    #[test]
    fn nested_messages_stop_at_the_depth_limit() {
        let mut m = b"Subject: x\r\n\r\nbottom".to_vec();
        for _ in 0..50 {
            let mut outer = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
            outer.extend_from_slice(&m);
            m = outer;
        }
        let v = View::build(&m, Limits::default());
        assert!(
            v.findings
                .iter()
                .any(|f| matches!(f.anomaly, ViewAnomaly::Bomb(_)))
        );
    }

    #[test]
    fn an_encrypted_part_is_not_read() {
        let m = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB";
        let v = View::build(m, Limits::default());
        assert!(v.texts.is_empty() && v.objects.is_empty());
        assert_eq!(v.findings[0].anomaly, ViewAnomaly::Encrypted);
    }

    #[test]
    fn a_pdf_header_does_not_hide_a_text_file() {
        let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain; name=n.txt\r\nContent-Disposition: attachment\r\n\r\n%PDF-1.4 card 4111 1111 1111 1111\r\n--b--\r\n";
        let v = View::build(m, Limits::default());
        assert!(
            v.texts.iter().any(|t| t.text.contains("4111 1111")),
            "{v:?}"
        );
    }

    #[test]
    fn markup_is_removed() {
        assert_eq!(
            strip_markup("a<script>x</script>b<!-- c -->d&amp;e").replace(' ', ""),
            "abd&e"
        );
    }
}
