//! Header fields: exact raw bytes, names, values, unfolding; lists of fields.

use std::borrow::Cow;

use super::{line_content, sub};
use crate::Error;

/// One header field, kept as its exact raw bytes (name, colon, value with folding, and the
/// final line break if there was one).
///
/// A line in a header block that is not a field (no colon, or an invalid name) is kept as a
/// *malformed* field: [`HeaderField::name`] is empty and the whole line is the value, so that
/// rewriting a message passes it through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField<'a> {
    raw: Cow<'a, [u8]>,
    /// End of the name (trailing whitespace before the colon excluded); 0 when malformed.
    name_end: usize,
    /// Start of the raw value (just after the colon); 0 when malformed.
    value_start: usize,
    /// End of the raw value: the final line break excluded.
    value_end: usize,
}

/// Is `b` allowed in a field name (RFC 5322 `ftext`)?
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// If `content` (a line without its line break) starts a header field, the end of its name
/// and the position of the colon.
pub(crate) fn field_name(content: &[u8]) -> Option<(usize, usize)> {
    let colon = content.iter().position(|&b| b == b':')?;
    let name = sub(content, 0..colon);
    let name_end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    let trimmed = sub(name, 0..name_end);
    if trimmed.is_empty() || !trimmed.iter().all(|&b| is_ftext(b)) {
        return None;
    }
    Some((name_end, colon))
}

impl<'a> HeaderField<'a> {
    /// A field from its raw bytes (one line plus its continuation lines).
    pub(crate) fn from_raw(raw: Cow<'a, [u8]>) -> HeaderField<'a> {
        let value_end = line_content(&raw).len();
        let first_line_end = raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| i + 1);
        match field_name(line_content(sub(&raw, 0..first_line_end))) {
            Some((name_end, colon)) => HeaderField {
                name_end,
                value_start: (colon + 1).min(value_end),
                value_end,
                raw,
            },
            None => HeaderField {
                name_end: 0,
                value_start: 0,
                value_end,
                raw,
            },
        }
    }

    /// A new field `Name: value` ending in CRLF.
    ///
    /// The name must be 1 to 76 `ftext` characters (printable ASCII without `:`), else
    /// [`Error::Usage`]. CR and LF in the value are replaced by spaces (no header injection);
    /// the value is not folded, so keep it short.
    pub fn new(name: &str, value: &str) -> Result<HeaderField<'static>, Error> {
        if name.is_empty() || name.len() > 76 || !name.bytes().all(is_ftext) {
            return Err(Error::Usage(format!("invalid header field name {name:?}")));
        }
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend(
            value
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        raw.extend_from_slice(b"\r\n");
        Ok(HeaderField::from_raw(Cow::Owned(raw)))
    }

    /// The exact raw bytes of the field, including its final line break if it had one.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The field name as written (without trailing whitespace); empty for a malformed line.
    pub fn name(&self) -> &str {
        std::str::from_utf8(sub(&self.raw, 0..self.name_end)).unwrap_or_default()
    }

    /// Is this a line of the header block that is not a header field?
    pub fn is_malformed(&self) -> bool {
        self.name_end == 0
    }

    /// Does the field have this name (ASCII case-insensitive)?
    pub fn is(&self, name: &str) -> bool {
        !self.is_malformed() && self.name().eq_ignore_ascii_case(name)
    }

    /// Does the name start with `prefix` (ASCII case-insensitive)?
    pub fn has_name_prefix(&self, prefix: &str) -> bool {
        let name = self.name().as_bytes();
        !self.is_malformed()
            && name.len() >= prefix.len()
            && sub(name, 0..prefix.len()).eq_ignore_ascii_case(prefix.as_bytes())
    }

    /// The raw value: everything after the colon up to the final line break, folding included.
    pub fn raw_value(&self) -> &[u8] {
        sub(&self.raw, self.value_start..self.value_end)
    }

    /// The unfolded value (RFC 5322 §2.2.3: line breaks before whitespace removed), with
    /// leading and trailing whitespace trimmed. Borrowed when the field was not folded.
    pub fn unfolded(&self) -> Cow<'_, [u8]> {
        unfold(self.raw_value())
    }

    /// The unfolded, trimmed value as text (invalid UTF-8 replaced by U+FFFD).
    pub fn value(&self) -> Cow<'_, str> {
        match self.unfolded() {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        }
    }

    /// Does the raw field end with a line break?
    pub fn ends_with_line_break(&self) -> bool {
        self.raw.last() == Some(&b'\n')
    }

    /// A copy that owns its bytes.
    pub fn into_owned(self) -> HeaderField<'static> {
        HeaderField {
            raw: Cow::Owned(self.raw.into_owned()),
            name_end: self.name_end,
            value_start: self.value_start,
            value_end: self.value_end,
        }
    }

    /// Appends the raw bytes to `out`, adding CRLF if the field had no final line break.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.raw);
        if !self.ends_with_line_break() {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Removes folding line breaks and trims whitespace.
fn unfold(v: &[u8]) -> Cow<'_, [u8]> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = v.iter().position(|b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    let v = sub(v, start..end);
    if !v.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Cow::Borrowed(v);
    }
    Cow::Owned(
        v.iter()
            .copied()
            .filter(|&b| b != b'\n' && b != b'\r')
            .collect(),
    )
}

/// Is this a MIME content header (any field whose name starts with `Content-`, RFC 2045 §9)?
///
/// These describe the body and move with it into the inner entity when a message is signed or
/// encrypted; `MIME-Version` stays outside.
pub fn is_content_header(name: &str) -> bool {
    name.len() > 8
        && name
            .as_bytes()
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"content-"))
}

/// An ordered list of header fields, for rebuilding a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList<'a> {
    fields: Vec<HeaderField<'a>>,
}

impl<'a> HeaderList<'a> {
    /// An empty list.
    pub fn new() -> HeaderList<'a> {
        HeaderList { fields: Vec::new() }
    }

    /// A list of these fields, in order.
    pub fn from_fields(fields: Vec<HeaderField<'a>>) -> HeaderList<'a> {
        HeaderList { fields }
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[HeaderField<'a>] {
        &self.fields
    }

    /// The fields, in order, by value.
    pub fn into_fields(self) -> Vec<HeaderField<'a>> {
        self.fields
    }

    /// Number of fields (malformed lines included).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Is the list empty?
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first field with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&HeaderField<'a>> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// All fields with this name (case-insensitive), in order.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s HeaderField<'a>> {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// Appends a field at the end.
    pub fn push(&mut self, field: HeaderField<'a>) {
        self.fields.push(field);
    }

    /// Adds `Name: value` CRLF at the top of the header block (see [`HeaderField::new`]).
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        self.fields.insert(0, HeaderField::new(name, value)?);
        Ok(())
    }

    /// Removes every field with this name; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.is(name));
        before - self.fields.len()
    }

    /// Removes every field whose name starts with `prefix` (case-insensitive, e.g.
    /// `"X-Sealgate-"`, to drop forged result headers); returns how many were removed.
    pub fn remove_headers_with_prefix(&mut self, prefix: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| !f.has_name_prefix(prefix));
        before - self.fields.len()
    }

    /// Puts `field` where the first field of the same name was and removes the others of that
    /// name; appends it when there was none.
    pub fn replace(&mut self, field: HeaderField<'a>) {
        let name = field.name().to_owned();
        match self.fields.iter().position(|f| f.is(&name)) {
            Some(i) => {
                // Fields before `i` do not have this name, so `i` is still the right place.
                self.fields.retain(|f| !f.is(&name));
                let at = i.min(self.fields.len());
                self.fields.insert(at, field);
            }
            None => self.fields.push(field),
        }
    }

    /// Keeps only the fields for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&HeaderField<'a>) -> bool) {
        self.fields.retain(keep);
    }

    /// Appends every field's raw bytes to `out` (CRLF added to a field without line break).
    pub fn write(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            f.write(out);
        }
    }

    /// The header block as bytes (no empty line after it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// This header block followed by the separator and body of `original` (its own header
    /// fields are replaced by this list). Adds an empty line when `original` had none but has
    /// a body.
    pub fn write_entity(&self, original: &super::Entity<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(original.raw().len() + 256);
        self.write(&mut out);
        if original.has_separator() {
            out.extend_from_slice(original.separator());
        } else if !original.body().is_empty() && !self.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(original.body());
        out
    }
}

impl<'a> FromIterator<HeaderField<'a>> for HeaderList<'a> {
    fn from_iter<I: IntoIterator<Item = HeaderField<'a>>>(iter: I) -> Self {
        HeaderList {
            fields: iter.into_iter().collect(),
        }
    }
}

/// Decodes RFC 2047 encoded words (`=?charset?B|Q?text?=`) in `s`; UTF-8, US-ASCII and
/// ISO-8859-1 (also used for windows-1252) are understood, other charsets are decoded as UTF-8
/// with replacement characters. Whitespace between two adjacent encoded words is dropped.
/// Text that is not a well-formed encoded word is left as it is.
pub fn decode_rfc2047(s: &str) -> Cow<'_, str> {
    if !s.contains("=?") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, from) = rest.split_at(start);
        match parse_encoded_word(from) {
            Some((decoded, used)) => {
                if !(last_was_word && before.chars().all(|c| c == ' ' || c == '\t')) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = from.get(used..).unwrap_or_default();
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = from.get(2..).unwrap_or_default();
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Parses one encoded word at the start of `s`: (decoded text, bytes used).
fn parse_encoded_word(s: &str) -> Option<(String, usize)> {
    // RFC 2047 limits an encoded word to 75 characters; looking further than a few hundred
    // bytes would make many unterminated "=?" quadratic.
    let limit = s
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i > 1024)
        .unwrap_or(s.len());
    let s = s.get(..limit)?;
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = body.get(..q1)?;
    let after_cs = body.get(q1 + 1..)?;
    let q2 = after_cs.find('?')?;
    let enc = after_cs.get(..q2)?;
    let text_and_rest = after_cs.get(q2 + 1..)?;
    let end = text_and_rest.find("?=")?;
    let text = text_and_rest.get(..end)?;
    if text.contains(' ') {
        return None;
    }
    let bytes = if enc.eq_ignore_ascii_case("b") {
        super::decode_base64(text.as_bytes()).ok()?
    } else if enc.eq_ignore_ascii_case("q") {
        let t: Vec<u8> = text
            .bytes()
            .map(|b| if b == b'_' { b' ' } else { b })
            .collect();
        super::decode_quoted_printable(&t)
    } else {
        return None;
    };
    let used = 2 + q1 + 1 + q2 + 1 + end + 2;
    // The charset may carry an RFC 2231 language suffix: "utf-8*en".
    let charset = charset.split('*').next().unwrap_or_default();
    Some((decode_charset(charset, &bytes), used))
}

/// Bytes in `charset` to text (UTF-8 and Latin-1 family; others lossy as UTF-8).
pub(crate) fn decode_charset(charset: &str, bytes: &[u8]) -> String {
    let cs = charset.trim().to_ascii_lowercase();
    if matches!(
        cs.as_str(),
        "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" | "windows-1252" | "cp1252"
    ) {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}
