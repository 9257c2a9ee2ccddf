//! `Content-Type`, `Content-Disposition` and `Content-Transfer-Encoding` values.

use super::header::{decode_charset, decode_rfc2047};

/// Parameters of a structured MIME field: names lowercased, values decoded (quoted strings
/// unescaped, RFC 2231 continuations joined and charset-decoded, RFC 2047 encoded words
/// decoded in `name` and `filename`). The first occurrence of a name wins, except that an RFC
/// 2231 form of a parameter wins over the plain form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value of a parameter (name case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All parameters, in order of first appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Are there no parameters?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed `Content-Type` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    main: String,
    subtype: String,
    params: Params,
}

impl ContentType {
    /// Parses an (unfolded) `Content-Type` value leniently; type and subtype are lowercased
    /// and may be empty when the value is garbage (see [`ContentType::is_valid`]).
    pub fn parse(value: &[u8]) -> ContentType {
        let mut c = Cursor { s: value, i: 0 };
        c.skip_cfws();
        let main = c.token(|b| b == b'/' || b == b';').to_ascii_lowercase();
        c.skip_cfws();
        let subtype = if c.eat(b'/') {
            c.skip_cfws();
            c.token(|b| b == b';').to_ascii_lowercase()
        } else {
            Vec::new()
        };
        ContentType {
            main: String::from_utf8_lossy(&main).into_owned(),
            subtype: String::from_utf8_lossy(&subtype).into_owned(),
            params: parse_params(&mut c),
        }
    }

    /// `text/plain; charset=us-ascii`, the RFC 2045 default.
    pub fn text_plain_default() -> ContentType {
        ContentType {
            main: "text".into(),
            subtype: "plain".into(),
            params: Params(vec![("charset".into(), "us-ascii".into())]),
        }
    }

    /// Were both type and subtype present?
    pub fn is_valid(&self) -> bool {
        !self.main.is_empty() && !self.subtype.is_empty()
    }

    /// The media type, lowercase (`"multipart"`).
    pub fn main_type(&self) -> &str {
        &self.main
    }

    /// The subtype, lowercase (`"signed"`).
    pub fn subtype(&self) -> &str {
        &self.subtype
    }

    /// `type/subtype`, lowercase.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.main, self.subtype)
    }

    /// Is it `main/subtype` (case-insensitive)?
    pub fn is(&self, main: &str, subtype: &str) -> bool {
        self.main.eq_ignore_ascii_case(main) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Is the media type `multipart`?
    pub fn is_multipart(&self) -> bool {
        self.main == "multipart"
    }

    /// A parameter value, e.g. `param("boundary")`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// All parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// A parsed `Content-Disposition` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDisposition {
    kind: String,
    params: Params,
}

impl ContentDisposition {
    /// Parses an (unfolded) `Content-Disposition` value leniently.
    pub fn parse(value: &[u8]) -> ContentDisposition {
        let mut c = Cursor { s: value, i: 0 };
        c.skip_cfws();
        let kind = c.token(|b| b == b';').to_ascii_lowercase();
        ContentDisposition {
            kind: String::from_utf8_lossy(&kind).into_owned(),
            params: parse_params(&mut c),
        }
    }

    /// The disposition type, lowercase (`"attachment"`, `"inline"`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Is the disposition `attachment`?
    pub fn is_attachment(&self) -> bool {
        self.kind == "attachment"
    }

    /// The `filename` parameter.
    pub fn filename(&self) -> Option<&str> {
        self.params.get("filename")
    }

    /// A parameter value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// All parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// A `Content-Transfer-Encoding`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferEncoding {
    /// `7bit` (also the default when the field is absent).
    SevenBit,
    /// `8bit`.
    EightBit,
    /// `binary`.
    Binary,
    /// `base64`.
    Base64,
    /// `quoted-printable`.
    QuotedPrintable,
    /// Anything else (lowercased); bodies in it cannot be decoded.
    Other(String),
}

impl TransferEncoding {
    /// Parses an (unfolded) field value; comments are skipped, case ignored.
    pub fn parse(value: &[u8]) -> TransferEncoding {
        let mut c = Cursor { s: value, i: 0 };
        c.skip_cfws();
        let t = c.token(|b| b == b';').to_ascii_lowercase();
        match t.as_slice() {
            b"7bit" | b"" => TransferEncoding::SevenBit,
            b"8bit" => TransferEncoding::EightBit,
            b"binary" => TransferEncoding::Binary,
            b"base64" => TransferEncoding::Base64,
            b"quoted-printable" => TransferEncoding::QuotedPrintable,
            other => TransferEncoding::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// The canonical lowercase name.
    pub fn as_str(&self) -> &str {
        match self {
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::EightBit => "8bit",
            TransferEncoding::Binary => "binary",
            TransferEncoding::Base64 => "base64",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Other(s) => s,
        }
    }

    /// Is the body the content itself (7bit, 8bit, binary)?
    pub fn is_identity(&self) -> bool {
        matches!(
            self,
            TransferEncoding::SevenBit | TransferEncoding::EightBit | TransferEncoding::Binary
        )
    }
}

/// A position in a field value.
struct Cursor<'s> {
    s: &'s [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips whitespace and (nested) comments.
    fn skip_cfws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => self.skip_comment(),
                _ => break,
            }
        }
    }

    /// Skips a comment starting at `(`; an unterminated one runs to the end.
    fn skip_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' => self.i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
        self.i = self.i.min(self.s.len());
    }

    /// A token: bytes up to whitespace, `(`, `"`, or a byte for which `stop` is true.
    fn token(&mut self, stop: impl Fn(u8) -> bool) -> Vec<u8> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if stop(b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b'"') {
                break;
            }
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or_default().to_vec()
    }

    /// A quoted string starting at `"`: its unescaped content (to the end if unterminated).
    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return out,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                b'\r' | b'\n' => {}
                _ => out.push(b),
            }
        }
        out
    }

    /// An unquoted parameter value: up to `;` or a comment, trailing whitespace trimmed
    /// (lenient: allows spaces inside, as some mailers write unquoted file names).
    fn bare_value(&mut self) -> Vec<u8> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b';' || b == b'(' {
                break;
            }
            self.i += 1;
        }
        let v = self.s.get(start..self.i).unwrap_or_default();
        let end = v
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .map_or(0, |i| i + 1);
        v.get(..end).unwrap_or_default().to_vec()
    }

    /// Skips to the next `;` (outside quoted strings and comments).
    fn skip_to_semicolon(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b';' => return,
                b'"' => {
                    self.quoted();
                }
                b'(' => self.skip_comment(),
                _ => self.i += 1,
            }
        }
    }
}

/// One raw parameter: RFC 2231 pieces kept apart until joined.
struct RawParam {
    /// Base name, lowercase (without `*`, section number).
    base: String,
    /// RFC 2231 section number, if any (`name*3`).
    section: Option<u32>,
    /// Was the value in RFC 2231 extended form (`name*=` or `name*N*=`)?
    extended: bool,
    value: Vec<u8>,
}

/// Parses `; name=value` pairs from the cursor to the end.
fn parse_params(c: &mut Cursor<'_>) -> Params {
    let mut raw: Vec<RawParam> = Vec::new();
    loop {
        c.skip_cfws();
        if c.peek().is_none() {
            break;
        }
        if !c.eat(b';') {
            c.skip_to_semicolon();
            continue;
        }
        c.skip_cfws();
        let name = c.token(|b| b == b'=' || b == b';').to_ascii_lowercase();
        c.skip_cfws();
        if name.is_empty() || !c.eat(b'=') {
            continue;
        }
        c.skip_cfws();
        let value = if c.peek() == Some(b'"') {
            c.quoted()
        } else {
            c.bare_value()
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        raw.push(split_2231_name(name, value));
        if raw.len() >= 200 {
            break;
        }
    }
    join_params(raw)
}

/// Splits `name*N*` into its parts; a name that does not fit RFC 2231 is taken as it is.
fn split_2231_name(name: String, value: Vec<u8>) -> RawParam {
    if let Some((base, rest)) = name.split_once('*') {
        let (digits, extended) = match rest.strip_suffix('*') {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if digits.is_empty() && extended {
            // `name**` is not RFC 2231.
        } else if digits.is_empty() {
            return RawParam {
                base: base.into(),
                section: None,
                extended: true,
                value,
            };
        } else if digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n = digits.parse::<u32>().unwrap_or_default();
            return RawParam {
                base: base.into(),
                section: Some(n),
                extended,
                value,
            };
        }
    }
    RawParam {
        base: name,
        section: None,
        extended: false,
        value,
    }
}

/// Joins RFC 2231 sections and decodes values.
fn join_params(raw: Vec<RawParam>) -> Params {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for p in &raw {
        if done.contains(&p.base.as_str()) {
            continue;
        }
        done.push(&p.base);
        let is_2231 = |q: &&RawParam| q.base == p.base && (q.section.is_some() || q.extended);
        let mut pieces: Vec<&RawParam> = raw.iter().filter(is_2231).collect();
        let value = if pieces.is_empty() {
            String::from_utf8_lossy(&p.value).into_owned()
        } else {
            // Prefer the single `name*=` form if given, else join sections in order.
            let single = pieces.iter().find(|q| q.section.is_none()).copied();
            if let Some(s) = single {
                pieces = vec![s];
            } else {
                pieces.sort_by_key(|q| q.section);
                pieces.dedup_by_key(|q| q.section);
            }
            let mut charset = String::new();
            let mut bytes = Vec::new();
            for (i, q) in pieces.iter().enumerate() {
                if q.extended {
                    let mut v = q.value.as_slice();
                    if i == 0 {
                        // charset'language'value
                        let mut it = v.splitn(3, |&b| b == b'\'');
                        if let (Some(cs), Some(_lang), Some(rest)) =
                            (it.next(), it.next(), it.next())
                        {
                            charset = String::from_utf8_lossy(cs).into_owned();
                            v = rest;
                        }
                    }
                    percent_decode(v, &mut bytes);
                } else {
                    bytes.extend_from_slice(&q.value);
                }
            }
            decode_charset(&charset, &bytes)
        };
        let value = if p.base == "name" || p.base == "filename" {
            decode_rfc2047(&value).into_owned()
        } else {
            value
        };
        out.push((p.base.clone(), value));
    }
    Params(out)
}

/// `%XX` decoding; a `%` not followed by two hex digits is kept.
fn percent_decode(v: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        if b == b'%' {
            let h = v.get(i + 1).and_then(|&h| hex_val(h));
            let l = v.get(i + 2).and_then(|&l| hex_val(l));
            if let (Some(h), Some(l)) = (h, l) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

/// The value of a hex digit (either case).
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
