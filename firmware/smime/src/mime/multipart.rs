//! Splitting multipart bodies at their boundaries, keeping exact bytes.

use std::ops::Range;

use super::{Entity, line_end, sub};
use crate::Error;

/// A multipart body split at its delimiters. All ranges are byte offsets into the body that
/// was split.
///
/// A part's range runs from just after the line break that ends its delimiter line to just
/// before the line break that precedes the next delimiter (that line break belongs to the
/// delimiter, RFC 2046 §5.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multipart {
    /// Text before the first delimiter (without the line break before it).
    pub preamble: Range<usize>,
    /// The body parts, in order.
    pub parts: Vec<Range<usize>>,
    /// Text after the line of the close delimiter; empty when there was none.
    pub epilogue: Range<usize>,
    /// Was there a close delimiter (`--boundary--`)? If not, the last part runs to the end of
    /// the input.
    pub closed: bool,
}

/// Does `line` (with its line break) match `--boundary` or `--boundary--`, followed only by
/// whitespace? `Some(true)` for the close delimiter.
fn match_delimiter(line: &[u8], delim: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(delim)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    rest.iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// Start of the line break that ends just before `pos` (`pos` itself if there is none).
fn before_line_break(body: &[u8], pos: usize) -> usize {
    if pos == 0 || body.get(pos - 1) != Some(&b'\n') {
        return pos;
    }
    if pos >= 2 && body.get(pos - 2) == Some(&b'\r') {
        pos - 2
    } else {
        pos - 1
    }
}

/// Splits a multipart body at `--boundary` lines.
///
/// Delimiters are recognised only at the start of a line, as `--boundary` (or
/// `--boundary--`) followed by optional whitespace and the line end; CRLF and LF-only input
/// both work. No delimiter at all is [`Error::Malformed`]; a missing close delimiter is not an
/// error but is reported in [`Multipart::closed`]. An empty boundary is [`Error::Malformed`].
pub fn split_multipart(body: &[u8], boundary: &str) -> Result<Multipart, Error> {
    if boundary.is_empty() {
        return Err(Error::Malformed("MIME: empty multipart boundary".into()));
    }
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary.as_bytes());

    let mut preamble: Option<Range<usize>> = None;
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut pos = 0usize;
    while pos < body.len() {
        let end = line_end(body, pos);
        let line = sub(body, pos..end);
        if let Some(close) = match_delimiter(line, &delim) {
            let before = before_line_break(body, pos);
            match current {
                None if preamble.is_none() => preamble = Some(0..before),
                None => {}
                Some(start) => parts.push(start..before.max(start)),
            }
            if close {
                return Ok(Multipart {
                    preamble: preamble.unwrap_or(0..0),
                    parts,
                    epilogue: end..body.len(),
                    closed: true,
                });
            }
            current = Some(end);
        }
        pos = end;
    }
    let Some(preamble) = preamble else {
        return Err(Error::Malformed(format!(
            "MIME: boundary {boundary:?} not found in multipart body"
        )));
    };
    if let Some(start) = current {
        parts.push(start..body.len().max(start));
    }
    Ok(Multipart {
        preamble,
        parts,
        epilogue: body.len()..body.len(),
        closed: false,
    })
}

/// A `multipart/signed` body split for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedParts<'a> {
    /// The exact bytes of the first body part: what the signature covers (canonicalise with
    /// [`canonicalize_crlf`](super::canonicalize_crlf) before hashing if the message may have
    /// LF line endings).
    pub signed: &'a [u8],
    /// Where [`SignedParts::signed`] is in the split body.
    pub signed_range: Range<usize>,
    /// The second body part (normally `application/pkcs7-signature`), parsed.
    pub signature: Entity<'a>,
    /// Number of body parts found (RFC 1847 wants exactly 2; extra parts are ignored).
    pub part_count: usize,
    /// Was there a close delimiter?
    pub closed: bool,
}

/// Splits the body of a `multipart/signed` entity with this boundary. Fewer than two parts is
/// [`Error::Malformed`].
pub fn split_signed<'a>(body: &'a [u8], boundary: &str) -> Result<SignedParts<'a>, Error> {
    let mp = split_multipart(body, boundary)?;
    let (Some(first), Some(second)) = (mp.parts.first(), mp.parts.get(1)) else {
        return Err(Error::Malformed(format!(
            "MIME: multipart/signed with {} body part(s), expected 2",
            mp.parts.len()
        )));
    };
    Ok(SignedParts {
        signed: sub(body, first.clone()),
        signed_range: first.clone(),
        signature: Entity::parse(sub(body, second.clone())),
        part_count: mp.parts.len(),
        closed: mp.closed,
    })
}

/// Does `needle` occur in `hay`? (Used to choose a boundary that is not in the content.)
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let mut i = 0usize;
    while let Some(off) = super::tail(hay, i).iter().position(|&b| b == first) {
        let at = i + off;
        if super::tail(hay, at).starts_with(needle) {
            return true;
        }
        i = at + 1;
    }
    false
}
