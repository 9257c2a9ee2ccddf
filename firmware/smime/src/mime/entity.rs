//! An RFC 5322 message or MIME entity: header fields and body, borrowed from the input.

use std::borrow::Cow;

use super::header::field_name;
use super::{
    ContentDisposition, ContentType, HeaderField, HeaderList, Multipart, SignedParts, SmimeKind,
    TransferEncoding, line_content, line_end, sub, tail,
};
use crate::Error;

/// A parsed message or MIME entity. Every accessor borrows from the input; nothing is copied
/// except the list of field positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity<'a> {
    raw: &'a [u8],
    fields: Vec<HeaderField<'a>>,
    /// End of the last header field (start of the separator line).
    header_end: usize,
    /// Start of the body (after the separator line, if any).
    body_start: usize,
}

/// An RFC 5322 message is parsed like any MIME entity.
pub type Message<'a> = Entity<'a>;

impl<'a> Entity<'a> {
    /// Parses `raw`. Never fails: garbage gives an entity with no header fields and `raw` as
    /// its body.
    ///
    /// The header block ends at the first empty line (`CRLF` or `LF`); lines inside it that are
    /// not fields are kept as malformed fields. If there is no empty line, the header block
    /// ends at the first line that is neither a field nor a continuation line, and the body
    /// starts there. If the first line is not a header field the whole input is body.
    pub fn parse(raw: &'a [u8]) -> Entity<'a> {
        let mut fields = Vec::new();
        let mut pos = 0usize;
        let mut cur: Option<usize> = None; // start of the field being read
        // Lazily computed: does an empty line follow? (Some(true/false) once known.)
        let mut blank_follows: Option<bool> = None;
        let flush = |fields: &mut Vec<HeaderField<'a>>, start: Option<usize>, end: usize| {
            if let Some(s) = start {
                fields.push(HeaderField::from_raw(Cow::Borrowed(sub(raw, s..end))));
            }
        };
        while pos < raw.len() {
            let end = line_end(raw, pos);
            let line = sub(raw, pos..end);
            let content = line_content(line);
            if content.is_empty() {
                // The separator (an empty line).
                flush(&mut fields, cur, pos);
                return Entity {
                    raw,
                    fields,
                    header_end: pos,
                    body_start: end,
                };
            }
            let first = content.first().copied().unwrap_or_default();
            if (first == b' ' || first == b'\t') && cur.is_some() {
                // Continuation line of the current field.
            } else if field_name(content).is_some() {
                flush(&mut fields, cur, pos);
                cur = Some(pos);
            } else {
                if pos == 0 {
                    break;
                }
                let follows = *blank_follows.get_or_insert_with(|| has_empty_line(tail(raw, pos)));
                if !follows {
                    break;
                }
                flush(&mut fields, cur, pos);
                cur = Some(pos);
            }
            pos = end;
        }
        flush(&mut fields, cur, pos);
        Entity {
            raw,
            fields,
            header_end: pos,
            body_start: pos,
        }
    }

    /// The input this entity was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The header fields, in order (malformed lines included).
    pub fn headers(&self) -> &[HeaderField<'a>] {
        &self.fields
    }

    /// A copy of the header fields as a list to edit.
    pub fn header_list(&self) -> HeaderList<'a> {
        HeaderList::from_fields(self.fields.clone())
    }

    /// The first field with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&HeaderField<'a>> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// All fields with this name (case-insensitive), in order.
    pub fn headers_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s HeaderField<'a>> + 's {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// The unfolded, trimmed value of the first field with this name.
    pub fn header_value(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(name).map(HeaderField::value)
    }

    /// The raw header block: every field, without the empty line after it.
    pub fn header_block(&self) -> &'a [u8] {
        sub(self.raw, 0..self.header_end)
    }

    /// The empty line between header block and body (`CRLF`, `LF`), or empty if none.
    pub fn separator(&self) -> &'a [u8] {
        sub(self.raw, self.header_end..self.body_start)
    }

    /// Did the input have an empty line ending the header block?
    pub fn has_separator(&self) -> bool {
        self.body_start > self.header_end
    }

    /// The raw body (everything after the empty line).
    pub fn body(&self) -> &'a [u8] {
        tail(self.raw, self.body_start)
    }

    /// Offset of the body in [`Entity::raw`].
    pub fn body_offset(&self) -> usize {
        self.body_start
    }

    /// The line ending of the first line: `b"\r\n"` unless it ends in a bare LF.
    pub fn line_ending(&self) -> &'static [u8] {
        let first = sub(self.raw, 0..line_end(self.raw, 0));
        if first.ends_with(b"\n") && !first.ends_with(b"\r\n") {
            b"\n"
        } else {
            b"\r\n"
        }
    }

    /// The `Content-Type`, if present and valid (type and subtype).
    pub fn explicit_content_type(&self) -> Option<ContentType> {
        let ct = ContentType::parse(&self.header("Content-Type")?.unfolded());
        ct.is_valid().then_some(ct)
    }

    /// The content type, with RFC 2045's default `text/plain; charset=us-ascii` when the field
    /// is absent or invalid.
    ///
    /// (The default inside `multipart/digest`, `message/rfc822`, is the caller's to apply.)
    pub fn content_type(&self) -> ContentType {
        self.explicit_content_type()
            .unwrap_or_else(ContentType::text_plain_default)
    }

    /// The `Content-Transfer-Encoding` (`7bit` when absent).
    pub fn transfer_encoding(&self) -> TransferEncoding {
        self.header("Content-Transfer-Encoding")
            .map_or(TransferEncoding::SevenBit, |f| {
                TransferEncoding::parse(&f.unfolded())
            })
    }

    /// The `Content-Disposition`, if present.
    pub fn disposition(&self) -> Option<ContentDisposition> {
        Some(ContentDisposition::parse(
            &self.header("Content-Disposition")?.unfolded(),
        ))
    }

    /// The file name: `Content-Disposition` `filename`, else `Content-Type` `name`.
    pub fn filename(&self) -> Option<String> {
        self.disposition()
            .and_then(|d| d.filename().map(str::to_owned))
            .or_else(|| {
                self.explicit_content_type()
                    .and_then(|c| c.param("name").map(str::to_owned))
            })
    }

    /// What this entity is for S/MIME (see [`classify`](super::classify)).
    pub fn smime_kind(&self) -> SmimeKind {
        let disp = self.disposition();
        let ct = self.content_type();
        super::classify(&ct, disp.as_ref().and_then(ContentDisposition::filename))
    }

    /// The body with its `Content-Transfer-Encoding` undone (borrowed for identity encodings).
    pub fn decoded_body(&self) -> Result<Cow<'a, [u8]>, Error> {
        super::decode_body(self.body(), &self.transfer_encoding())
    }

    /// The boundary of a multipart entity.
    fn boundary(&self) -> Result<String, Error> {
        let ct = self.content_type();
        if !ct.is_multipart() {
            return Err(Error::Malformed(format!(
                "MIME: expected a multipart entity, got {}",
                ct.essence()
            )));
        }
        ct.param("boundary")
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Malformed("MIME: multipart without boundary".into()))
    }

    /// Splits a multipart body (byte ranges relative to [`Entity::body`]).
    pub fn multipart(&self) -> Result<Multipart, Error> {
        super::split_multipart(self.body(), &self.boundary()?)
    }

    /// The body parts of a multipart entity, parsed (one level; recurse for nesting).
    pub fn subparts(&self) -> Result<Vec<Entity<'a>>, Error> {
        let body = self.body();
        let mp = self.multipart()?;
        Ok(mp
            .parts
            .iter()
            .map(|r| Entity::parse(sub(body, r.clone())))
            .collect())
    }

    /// Splits a `multipart/signed` entity into the signed bytes and the signature entity.
    pub fn signed_parts(&self) -> Result<SignedParts<'a>, Error> {
        let ct = self.content_type();
        if !ct.is("multipart", "signed") {
            return Err(Error::Malformed(format!(
                "MIME: expected multipart/signed, got {}",
                ct.essence()
            )));
        }
        super::split_signed(self.body(), &self.boundary()?)
    }
}

/// Does `s` contain an empty line (at its start or after a LF)?
fn has_empty_line(s: &[u8]) -> bool {
    let mut pos = 0;
    while pos < s.len() {
        let end = line_end(s, pos);
        if line_content(sub(s, pos..end)).is_empty() {
            return true;
        }
        pos = end;
    }
    false
}
