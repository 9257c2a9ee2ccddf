//! The decrypted view `V` of one message and every FETCH item answered from it, without I/O.
//!
//! A view is plain bytes (CRLF line ends) plus the MIME tree parsed from them once: the
//! offsets of every entity's header and body. Sections (`HEADER`, `HEADER.FIELDS`, `TEXT`,
//! `MIME`, part numbers, `message/rfc822` nesting), partials, `RFC822.SIZE`, `BODYSTRUCTURE`,
//! `BODY` and `ENVELOPE` are computed from that tree as an IMAP server computes them for a
//! stored message (Dovecot is the reference the tests compare with). **Invariant: no panics
//! on any input, every loop bounded** (nesting depth and part count are capped).

use std::num::NonZeroU32;
use std::ops::Range;

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use imap_codec::imap_types::fetch::Section;

/// Nesting (multipart and message/rfc822) deeper than this is shown as an opaque part.
const MAX_DEPTH: usize = 16;
/// Parts kept at most in one view; the rest of a multipart is left out of the tree.
const MAX_PARTS: usize = 2000;

/// One MIME entity: where its header and body are in the view's bytes.
#[derive(Debug, Clone)]
struct Entity {
    /// The header, including the empty line that ends it.
    header: Range<usize>,
    /// The body.
    body: Range<usize>,
    /// `type/subtype`, lower case (`text/plain` when absent).
    mime_type: String,
    mime_subtype: String,
    /// Content-Type parameters (names lower case, values as written).
    params: Vec<(String, String)>,
    /// Children of a multipart.
    parts: Vec<Entity>,
    /// The message inside a `message/rfc822` part.
    message: Option<Box<Entity>>,
}

/// A decrypted view.
#[derive(Debug, Clone)]
pub struct View {
    bytes: Vec<u8>,
    root: Entity,
}

impl View {
    /// A view of `bytes` (line ends made CRLF).
    pub fn new(bytes: &[u8]) -> View {
        let bytes = crlf(bytes);
        let mut count = 0;
        let root = parse_entity(&bytes, 0..bytes.len(), 0, &mut count, false);
        View { bytes, root }
    }

    /// The whole view (`BODY[]`, `RFC822`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `RFC822.SIZE`.
    pub fn size(&self) -> u32 {
        u32::try_from(self.bytes.len()).unwrap_or(u32::MAX)
    }

    /// The top-level header block (`BODY[HEADER]`, `RFC822.HEADER`).
    pub fn header(&self) -> &[u8] {
        self.slice(&self.root.header)
    }

    /// The top-level body (`BODY[TEXT]`, `RFC822.TEXT`).
    pub fn text(&self) -> &[u8] {
        self.slice(&self.root.body)
    }

    fn slice(&self, r: &Range<usize>) -> &[u8] {
        self.bytes.get(r.clone()).unwrap_or_default()
    }

    /// The bytes of `section` (`None`: `BODY[]`); `None` when the section does not exist.
    pub fn section(&self, section: Option<&Section<'_>>) -> Option<Vec<u8>> {
        let Some(section) = section else {
            return Some(self.bytes.clone());
        };
        match section {
            Section::Part(p) => {
                let e = self.part(p.0.as_ref())?;
                Some(self.slice(&part_body(e)).to_vec())
            }
            Section::Header(p) => {
                let m = self.message_at(p.as_ref().map(|p| p.0.as_ref()))?;
                Some(self.slice(&m.header).to_vec())
            }
            Section::Text(p) => {
                let m = self.message_at(p.as_ref().map(|p| p.0.as_ref()))?;
                Some(self.slice(&m.body).to_vec())
            }
            Section::Mime(p) => {
                let e = self.part(p.0.as_ref())?;
                Some(self.slice(&e.header).to_vec())
            }
            Section::HeaderFields(p, names) => {
                let m = self.message_at(p.as_ref().map(|p| p.0.as_ref()))?;
                Some(self.fields(&m.header, names.as_ref(), true))
            }
            Section::HeaderFieldsNot(p, names) => {
                let m = self.message_at(p.as_ref().map(|p| p.0.as_ref()))?;
                Some(self.fields(&m.header, names.as_ref(), false))
            }
        }
    }

    /// `BINARY[path]` (RFC 3516): a leaf part's body with its transfer encoding (base64,
    /// quoted-printable) removed; a multipart or message part, or the whole message (an
    /// empty path), as stored. `None` when the part does not exist.
    pub fn binary(&self, path: &[NonZeroU32]) -> Option<Vec<u8>> {
        if path.is_empty() {
            return Some(self.bytes.clone());
        }
        let e = self.part(path)?;
        let body = self.slice(&part_body(e));
        if e.mime_type == "multipart" || e.message.is_some() {
            return Some(body.to_vec());
        }
        let cte = header_value(self.slice(&e.header), b"content-transfer-encoding")
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        Some(match cte.as_str() {
            "base64" => decode_base64(body),
            "quoted-printable" => decode_qp(body),
            _ => body.to_vec(),
        })
    }

    /// The text SEARCH's `BODY` looks at: every part's body with its transfer encoding
    /// (base64, quoted-printable) removed, and the header of every attached message, in
    /// order, separated by line ends.
    pub fn decoded_text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.decoded_into(&self.root, &mut out, 0);
        out
    }

    fn decoded_into(&self, e: &Entity, out: &mut Vec<u8>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        if !e.parts.is_empty() {
            for p in &e.parts {
                self.decoded_into(p, out, depth + 1);
            }
        } else if let Some(m) = &e.message {
            out.extend_from_slice(self.slice(&m.header));
            self.decoded_into(m, out, depth + 1);
        } else {
            let cte = header_value(self.slice(&e.header), b"content-transfer-encoding")
                .map(|v| v.trim().to_ascii_lowercase())
                .unwrap_or_default();
            let body = self.slice(&e.body);
            match cte.as_str() {
                "base64" => out.extend_from_slice(&decode_base64(body)),
                "quoted-printable" => out.extend_from_slice(&decode_qp(body)),
                _ => out.extend_from_slice(body),
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The entity a part number names: `1` of a non-multipart message is its body; a
    /// `message/rfc822` part's children are those of the message inside.
    fn part(&self, path: &[NonZeroU32]) -> Option<&Entity> {
        let mut cur = &self.root;
        // Whether `cur` stands for a message (the top level, or the one inside a
        // message/rfc822 part) rather than a body part.
        let mut is_message = true;
        for n in path {
            let idx = usize::try_from(n.get()).ok()?.checked_sub(1)?;
            // A message/rfc822 part's children are those of the message inside.
            if !is_message && let Some(m) = cur.message.as_deref() {
                cur = m;
                is_message = true;
            }
            if cur.mime_type == "multipart" {
                cur = cur.parts.get(idx)?;
            } else if idx != 0 || !is_message {
                // Only a message has a part 1 (its body) when it is not multipart.
                return None;
            }
            is_message = false;
        }
        Some(cur)
    }

    /// The message whose HEADER/TEXT a section names: the top-level one, or the message
    /// inside the `message/rfc822` part `path`.
    fn message_at(&self, path: Option<&[NonZeroU32]>) -> Option<&Entity> {
        match path {
            None => Some(&self.root),
            Some(p) => self.part(p)?.message.as_deref(),
        }
    }

    /// `HEADER.FIELDS` (`keep`) or `HEADER.FIELDS.NOT`: the fields as written (folded lines
    /// included), in header order, then the empty line.
    fn fields(&self, header: &Range<usize>, names: &[AString<'_>], keep: bool) -> Vec<u8> {
        let wanted: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                let b: &[u8] = n.as_ref();
                b.to_ascii_lowercase()
            })
            .collect();
        let mut out = Vec::new();
        for f in header_fields(self.slice(header)) {
            let name = field_name(f).to_ascii_lowercase();
            if wanted.contains(&name) == keep {
                out.extend_from_slice(f);
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// `BODYSTRUCTURE` (`extended`) or `BODY`.
    pub fn body_structure(&self, extended: bool) -> BodyStructure<'static> {
        self.structure(&self.root, extended, 0)
    }

    fn structure(&self, e: &Entity, ext: bool, depth: usize) -> BodyStructure<'static> {
        let hdr = self.slice(&e.header);
        let disposition = || {
            let d = header_value(hdr, b"content-disposition")?;
            let (v, params) = parse_params(&d);
            let v = v.trim().to_string();
            if v.is_empty() {
                return None;
            }
            Some((istr(v.as_bytes()), param_list(&params)))
        };
        let language = || {
            header_value(hdr, b"content-language")
                .map(|l| {
                    l.split(',')
                        .map(|s| s.trim())
                        .filter(|s| !s.is_empty())
                        .map(|s| istr(s.as_bytes()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let location =
            || nstr(header_value(hdr, b"content-location").map(|s| s.trim().to_string()));
        if e.mime_type == "multipart" && !e.parts.is_empty() && depth < MAX_DEPTH {
            let bodies: Vec<BodyStructure<'static>> = e
                .parts
                .iter()
                .map(|p| self.structure(p, ext, depth + 1))
                .collect();
            let bodies = match Vec1::try_from(bodies) {
                Ok(b) => b,
                Err(_) => return self.opaque(e),
            };
            let extension_data = ext.then(|| MultiPartExtensionData {
                parameter_list: param_list(&e.params),
                tail: Some(Disposition {
                    disposition: disposition(),
                    tail: Some(Language {
                        language: language(),
                        tail: Some(Location {
                            location: location(),
                            extensions: vec![],
                        }),
                    }),
                }),
            });
            return BodyStructure::Multi {
                bodies,
                subtype: istr(e.mime_subtype.as_bytes()),
                extension_data,
            };
        }
        let body_bytes = self.slice(&e.body);
        let size = u32::try_from(body_bytes.len()).unwrap_or(u32::MAX);
        let lines = count_lines(body_bytes);
        let cte = header_value(hdr, b"content-transfer-encoding")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "7bit".into());
        let mut params = param_list(&e.params);
        // A text part without a charset is us-ascii (RFC 2045), and servers say so.
        if e.mime_type == "text" && !e.params.iter().any(|(n, _)| n == "charset") {
            params.push((istr(b"charset"), istr(b"us-ascii")));
        }
        let basic = BasicFields {
            parameter_list: params,
            id: nstr(header_value(hdr, b"content-id").map(|s| s.trim().to_string())),
            description: nstr(
                header_value(hdr, b"content-description").map(|s| s.trim().to_string()),
            ),
            content_transfer_encoding: istr(cte.as_bytes()),
            size,
        };
        let specific = match (e.mime_type.as_str(), e.message.as_deref()) {
            ("text", _) => SpecificFields::Text {
                subtype: istr(e.mime_subtype.as_bytes()),
                number_of_lines: lines,
            },
            ("message", Some(m)) if depth < MAX_DEPTH => SpecificFields::Message {
                envelope: Box::new(self.envelope_of(m)),
                body_structure: Box::new(self.structure(m, ext, depth + 1)),
                number_of_lines: lines,
            },
            _ => SpecificFields::Basic {
                r#type: istr(e.mime_type.as_bytes()),
                subtype: istr(e.mime_subtype.as_bytes()),
            },
        };
        let extension_data = ext.then(|| SinglePartExtensionData {
            md5: nstr(header_value(hdr, b"content-md5").map(|s| s.trim().to_string())),
            tail: Some(Disposition {
                disposition: disposition(),
                tail: Some(Language {
                    language: language(),
                    tail: Some(Location {
                        location: location(),
                        extensions: vec![],
                    }),
                }),
            }),
        });
        BodyStructure::Single {
            body: Body { basic, specific },
            extension_data,
        }
    }

    fn opaque(&self, e: &Entity) -> BodyStructure<'static> {
        let size = u32::try_from(e.body.len()).unwrap_or(u32::MAX);
        BodyStructure::Single {
            body: Body {
                basic: BasicFields {
                    parameter_list: vec![],
                    id: NString(None),
                    description: NString(None),
                    content_transfer_encoding: istr(b"7bit"),
                    size,
                },
                specific: SpecificFields::Basic {
                    r#type: istr(b"application"),
                    subtype: istr(b"octet-stream"),
                },
            },
            extension_data: None,
        }
    }

    /// `ENVELOPE` of the top-level message.
    pub fn envelope(&self) -> Envelope<'static> {
        self.envelope_of(&self.root)
    }

    fn envelope_of(&self, m: &Entity) -> Envelope<'static> {
        let hdr = self.slice(&m.header);
        let raw = |name: &[u8]| header_value(hdr, name).map(|s| s.trim().to_string());
        let from = addresses(raw(b"from").as_deref());
        let sender = match raw(b"sender") {
            Some(s) => addresses(Some(&s)),
            None => from.clone(),
        };
        let reply_to = match raw(b"reply-to") {
            Some(s) => addresses(Some(&s)),
            None => from.clone(),
        };
        Envelope {
            date: nstr(raw(b"date")),
            subject: nstr(raw(b"subject")),
            from,
            sender,
            reply_to,
            to: addresses(raw(b"to").as_deref()),
            cc: addresses(raw(b"cc").as_deref()),
            bcc: addresses(raw(b"bcc").as_deref()),
            in_reply_to: nstr(raw(b"in-reply-to")),
            message_id: nstr(raw(b"message-id")),
        }
    }
}

/// The body of a part as `BODY[n]` returns it: a `message/rfc822` part's body is the whole
/// message inside.
fn part_body(e: &Entity) -> Range<usize> {
    e.body.clone()
}

/// Line ends made CRLF (a bare LF gets a CR; a bare CR is kept as written).
pub fn crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Lines as IMAP servers count them: line feeds (a last line without one is not counted).
fn count_lines(b: &[u8]) -> u32 {
    u32::try_from(b.iter().filter(|c| **c == b'\n').count()).unwrap_or(u32::MAX)
}

/// An IMAP string: quoted when it can be, else a literal.
fn istr(b: &[u8]) -> IString<'static> {
    match IString::try_from(b.to_vec()) {
        Ok(s) => s,
        // Only NUL cannot be sent in a string: replaced.
        Err(_) => {
            let clean: Vec<u8> = b.iter().map(|c| if *c == 0 { b'?' } else { *c }).collect();
            IString::try_from(clean)
                .unwrap_or_else(|_| IString::from(Literal::unvalidated(Vec::new())))
        }
    }
}

fn nstr(s: Option<String>) -> NString<'static> {
    match s {
        Some(s) => NString(Some(istr(s.as_bytes()))),
        None => NString(None),
    }
}

fn param_list(params: &[(String, String)]) -> Vec<(IString<'static>, IString<'static>)> {
    params
        .iter()
        .map(|(n, v)| (istr(n.as_bytes()), istr(v.as_bytes())))
        .collect()
}

/// Where the header ends in `b[r]`: (header range including the empty line, body range).
fn split_header(b: &[u8], r: Range<usize>) -> (Range<usize>, Range<usize>) {
    let s = b.get(r.clone()).unwrap_or_default();
    if s.starts_with(b"\r\n") {
        return (r.start..r.start + 2, r.start + 2..r.end);
    }
    match find(s, b"\r\n\r\n") {
        Some(i) => (r.start..r.start + i + 4, r.start + i + 4..r.end),
        None => (r.clone(), r.end..r.end),
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    h.windows(n.len()).position(|w| w == n)
}

fn parse_entity(
    b: &[u8],
    r: Range<usize>,
    depth: usize,
    count: &mut usize,
    digest: bool,
) -> Entity {
    *count += 1;
    let (header, body) = split_header(b, r);
    let hdr = b.get(header.clone()).unwrap_or_default();
    let (mut mime_type, mut mime_subtype, mut params) = match header_value(hdr, b"content-type") {
        Some(v) => {
            let (t, p) = parse_params(&v);
            let (ty, sub) = t.split_once('/').unwrap_or((t.as_str(), ""));
            (
                ty.trim().to_ascii_lowercase(),
                sub.trim().to_ascii_lowercase(),
                p,
            )
        }
        None => (String::new(), String::new(), Vec::new()),
    };
    if mime_type.is_empty() || mime_subtype.is_empty() {
        if digest {
            mime_type = "message".into();
            mime_subtype = "rfc822".into();
        } else {
            mime_type = "text".into();
            mime_subtype = "plain".into();
        }
        if mime_type == "text" && !params.iter().any(|(n, _)| n == "charset") {
            params.clear();
        }
    }
    let mut e = Entity {
        header,
        body: body.clone(),
        mime_type,
        mime_subtype,
        params,
        parts: Vec::new(),
        message: None,
    };
    if depth >= MAX_DEPTH || *count >= MAX_PARTS {
        return e;
    }
    if e.mime_type == "multipart" {
        let boundary = e
            .params
            .iter()
            .find(|(n, _)| n == "boundary")
            .map(|(_, v)| v.clone());
        if let Some(bd) = boundary.filter(|s| !s.is_empty()) {
            let child_digest = e.mime_subtype == "digest";
            for pr in split_multipart(b, body, bd.as_bytes()) {
                if *count >= MAX_PARTS {
                    break;
                }
                let end = pr.end;
                let mut child = parse_entity(b, pr, depth + 1, count, child_digest);
                // A multipart part keeps the line end of its closing delimiter (the CRLF
                // before the next delimiter), as servers count it.
                if child.mime_type == "multipart"
                    && child.body.end == end
                    && b.get(end..end + 2) == Some(b"\r\n")
                {
                    child.body.end = end + 2;
                }
                e.parts.push(child);
            }
        }
    } else if e.mime_type == "message" && e.mime_subtype == "rfc822" {
        let inner = parse_entity(b, body, depth + 1, count, false);
        e.message = Some(Box::new(inner));
    }
    e
}

/// The parts of a multipart body: each from after its delimiter line's CRLF to before the
/// CRLF that precedes the next delimiter.
fn split_multipart(b: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut starts: Vec<(usize, usize, bool)> = Vec::new(); // (line start, line end incl CRLF, close)
    let mut pos = body.start;
    while pos < body.end {
        let line_end = match find(b.get(pos..body.end).unwrap_or_default(), b"\n") {
            Some(i) => pos + i + 1,
            None => body.end,
        };
        let line = b.get(pos..line_end).unwrap_or_default();
        if line.starts_with(&delim) {
            let rest = &line[delim.len()..];
            let close = rest.starts_with(b"--");
            let tail = if close { &rest[2..] } else { rest };
            if tail
                .iter()
                .all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            {
                starts.push((pos, line_end, close));
                if close {
                    break;
                }
            }
        }
        pos = line_end;
    }
    let mut out = Vec::new();
    for w in 0..starts.len() {
        let (_, begin, close) = starts[w];
        if close {
            break;
        }
        let end = match starts.get(w + 1) {
            Some((next, _, _)) => {
                // The CRLF before the delimiter belongs to it.
                if *next >= 2 && b.get(next - 2..*next) == Some(b"\r\n") && next - 2 >= begin {
                    next - 2
                } else {
                    *next
                }
            }
            None => body.end,
        };
        out.push(begin..end.max(begin));
    }
    out
}

/// The header fields of a header block, each as written (folded lines and CRLF included).
fn header_fields(h: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < h.len() {
        let line_end = match find(&h[i..], b"\n") {
            Some(j) => i + j + 1,
            None => h.len(),
        };
        let next = h.get(line_end).copied();
        if !matches!(next, Some(b' ' | b'\t')) {
            let field = &h[start..line_end];
            if field != b"\r\n" && !field.is_empty() {
                out.push(field);
            }
            start = line_end;
        }
        i = line_end;
    }
    out
}

fn field_name(f: &[u8]) -> Vec<u8> {
    let end = f.iter().position(|c| *c == b':').unwrap_or(f.len());
    f[..end]
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect()
}

/// Every header field as (name, unfolded value).
pub fn header_fields_unfolded(hdr: &[u8]) -> Vec<(String, String)> {
    header_fields(hdr)
        .into_iter()
        .map(|f| {
            let name = String::from_utf8_lossy(&field_name(f)).into_owned();
            let v = f
                .iter()
                .position(|c| *c == b':')
                .map_or(&[][..], |i| &f[i + 1..]);
            let unfolded: Vec<u8> = v
                .iter()
                .copied()
                .filter(|c| *c != b'\r' && *c != b'\n')
                .collect();
            (name, String::from_utf8_lossy(&unfolded).trim().to_string())
        })
        .collect()
}

/// Base64 decoded, ignoring everything outside the alphabet (line ends, garbage).
pub fn decode_base64(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut n = 0;
    for c in b {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

/// Quoted-printable decoded (soft line breaks removed; a broken escape kept as written).
pub fn decode_qp(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
            if b.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The first value of header field `name` (lower case), unfolded.
pub fn header_value(hdr: &[u8], name: &[u8]) -> Option<String> {
    for f in header_fields(hdr) {
        if field_name(f).to_ascii_lowercase() == name {
            let colon = f.iter().position(|c| *c == b':')?;
            let v = &f[colon + 1..];
            let unfolded: Vec<u8> = v
                .iter()
                .copied()
                .filter(|c| *c != b'\r' && *c != b'\n')
                .collect();
            return Some(String::from_utf8_lossy(&unfolded).into_owned());
        }
    }
    None
}

/// `value; a=b; c="d"` → (value, [(a, b), (c, d)]) (names lower case).
pub fn parse_params(v: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
        if parts.len() > 64 {
            break;
        }
    }
    parts.push(cur);
    let mut it = parts.into_iter();
    let head = it.next().unwrap_or_default().trim().to_string();
    let params = it
        .filter_map(|p| {
            let (n, v) = p.split_once('=')?;
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim();
            let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                unquote(&v[1..v.len() - 1])
            } else {
                v.to_string()
            };
            (!n.is_empty()).then_some((n, v))
        })
        .collect();
    (head, params)
}

fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// An address list as `ENVELOPE` shows it (empty: NIL).
fn addresses(v: Option<&str>) -> Vec<Address<'static>> {
    let Some(v) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in split_top(v, ',') {
        if out.len() > 1000 {
            break;
        }
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // Group: "name: a, b;" (only the simple form).
        if let Some((g, rest)) = split_group(item) {
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: nstr(Some(g)),
                host: NString(None),
            });
            for a in split_top(rest.trim_end_matches(';'), ',') {
                if let Some(a) = address(a.trim()) {
                    out.push(a);
                }
            }
            out.push(Address {
                name: NString(None),
                adl: NString(None),
                mailbox: NString(None),
                host: NString(None),
            });
            continue;
        }
        if let Some(a) = address(item) {
            out.push(a);
        }
    }
    out
}

fn split_group(item: &str) -> Option<(String, &str)> {
    let mut quoted = false;
    for (i, c) in item.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' | '@' if !quoted => return None,
            ':' if !quoted => return Some((item[..i].trim().to_string(), &item[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Splits at `sep` outside quotes, angle brackets and comments.
fn split_top(v: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut comment) = (false, false, 0u32);
    let mut start = 0;
    let mut prev = ' ';
    for (i, c) in v.char_indices() {
        match c {
            '"' if prev != '\\' && comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            '(' if !quoted => comment = comment.saturating_add(1),
            ')' if !quoted => comment = comment.saturating_sub(1),
            c if c == sep && !quoted && !angle && comment == 0 => {
                out.push(&v[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
        prev = c;
    }
    out.push(&v[start..]);
    out
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let (mut depth, mut quoted) = (0u32, false);
    for c in s.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth = depth.saturating_add(1),
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn address(item: &str) -> Option<Address<'static>> {
    let (name, spec) = match (item.rfind('<'), item.rfind('>')) {
        (Some(a), Some(b)) if a < b => {
            let name = item[..a].trim();
            let name = if name.len() >= 2 && name.starts_with('"') && name.ends_with('"') {
                unquote(&name[1..name.len() - 1])
            } else {
                strip_comments(name).trim().to_string()
            };
            (
                (!name.is_empty()).then_some(name),
                item[a + 1..b].trim().to_string(),
            )
        }
        _ => (None, strip_comments(item).trim().to_string()),
    };
    let spec = spec
        .rsplit_once(':')
        .map_or(spec.as_str(), |(_, s)| s)
        .to_string();
    let (mailbox, host) = match spec.rsplit_once('@') {
        Some((m, h)) => (m.trim().to_string(), Some(h.trim().to_string())),
        None => (spec.trim().to_string(), None),
    };
    if mailbox.is_empty() && host.is_none() {
        return None;
    }
    let mailbox = if mailbox.len() >= 2 && mailbox.starts_with('"') && mailbox.ends_with('"') {
        unquote(&mailbox[1..mailbox.len() - 1])
    } else {
        mailbox
    };
    Some(Address {
        name: nstr(name),
        adl: NString(None),
        mailbox: nstr(Some(mailbox)),
        host: nstr(host),
    })
}

/// `data` cut to the partial `<origin.length>` of a request.
pub fn partial(data: &[u8], origin: u32, length: Option<u32>) -> Vec<u8> {
    let start = (origin as usize).min(data.len());
    let end = match length {
        Some(l) => start.saturating_add(l as usize).min(data.len()),
        None => data.len(),
    };
    data[start..end].to_vec()
}

/// Message data as a literal (as servers send message data).
pub fn literal(data: Vec<u8>) -> Option<NString<'static>> {
    Literal::try_from(data).ok().map(NString::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::fetch::Part;

    const MULTI: &[u8] = b"From: \"Alice A.\" <alice@example.test>\r\nTo: bob@example.test, Carol <carol@example.test>\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n--b1\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1--\r\n";

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    #[test]
    fn sections_of_a_multipart() {
        let v = View::new(MULTI);
        assert_eq!(v.size() as usize, MULTI.len());
        assert!(v.header().ends_with(b"\r\n\r\n"));
        let p1 = v
            .section(Some(&Section::Part(Part(Vec1::from(nz(1))))))
            .expect("part 1");
        assert_eq!(p1, b"hello\r\nworld");
        let p2 = v
            .section(Some(&Section::Part(Part(Vec1::from(nz(2))))))
            .expect("part 2");
        assert_eq!(p2, b"AAEC");
        let m2 = v
            .section(Some(&Section::Mime(Part(Vec1::from(nz(2))))))
            .expect("mime 2");
        assert!(m2.starts_with(b"Content-Type: application/octet-stream"));
        assert!(
            v.section(Some(&Section::Part(Part(Vec1::from(nz(3))))))
                .is_none()
        );
        let f = v
            .section(Some(&Section::HeaderFields(
                None,
                Vec1::from(AString::try_from("subject").expect("astring")),
            )))
            .expect("fields");
        assert_eq!(f, b"Subject: hi\r\n\r\n");
        let env = v.envelope();
        assert_eq!(env.to.len(), 2);
        assert_eq!(partial(b"abcdef", 2, Some(3)), b"cde");
        assert_eq!(partial(b"abcdef", 9, Some(3)), b"");
    }

    #[test]
    fn binary_sections_are_decoded() {
        let v = View::new(MULTI);
        assert_eq!(v.binary(&[nz(2)]).expect("part 2"), [0u8, 1, 2]);
        assert_eq!(v.binary(&[nz(1)]).expect("part 1"), b"hello\r\nworld");
        assert_eq!(v.binary(&[]).expect("whole"), MULTI);
        assert!(v.binary(&[nz(3)]).is_none());
        assert!(v.binary(&[nz(1), nz(1)]).is_none());
    }

    #[test]
    fn bare_lf_becomes_crlf_and_nothing_panics_on_garbage() {
        assert_eq!(crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        for junk in [
            &b""[..],
            b"\r\n",
            b"Content-Type: multipart/x; boundary=\"\"\r\n\r\n--\r\n",
            b"Content-Type: message/rfc822\r\n\r\n",
        ] {
            let v = View::new(junk);
            let _ = v.body_structure(true);
            let _ = v.envelope();
        }
    }
}
