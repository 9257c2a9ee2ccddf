//! The MIME layer of the S/MIME engine: parse, classify, split, decode and rebuild messages.
//!
//! Pure functions over byte slices: no I/O, no panics on any input, linear time in the input
//! size (a 50 MiB body is one pass for each operation). Bytes we pass through keep their
//! original line endings; header lines we write end in CRLF.
//!
//! # Parsing
//! - [`Entity::parse`] (alias [`Message`]) splits an RFC 5322 message or a MIME entity into
//!   header fields ([`HeaderField`]: exact raw bytes, name, raw and unfolded value) and body, at
//!   the first empty line (CRLF, LF or mixed). Without an empty line, input whose first line is
//!   a header field is headers up to the first line that is not one; anything else is body only.
//! - [`ContentType`], [`ContentDisposition`] and [`TransferEncoding`] parse the MIME fields
//!   (quoted strings, comments, RFC 2231 continuations and charsets, RFC 2047 encoded words in
//!   `name`/`filename`). [`Entity::content_type`] applies the RFC 2045 default
//!   (`text/plain; charset=us-ascii`).
//! - [`SmimeKind`] / [`classify`] / [`Entity::smime_kind`] say what an entity is for S/MIME.
//!
//! # Bodies
//! - [`decode_body`], [`decode_base64`] (lenient about whitespace and padding, strict about
//!   other bytes), [`decode_quoted_printable`], [`encode_base64_wrapped`].
//! - [`canonicalize_crlf`]: bare LF to CRLF, zero-copy when already canonical.
//!
//! # Multiparts
//! - [`split_multipart`] → [`Multipart`]: byte ranges of preamble, parts and epilogue;
//!   delimiters are recognised only at line starts; a missing close delimiter is reported, not
//!   an error.
//! - [`split_signed`] / [`Entity::signed_parts`] → [`SignedParts`]: the exact bytes the
//!   signature covers (RFC 8551 §3.5: the line break before a delimiter belongs to the
//!   delimiter) and the signature entity.
//!
//! # Building and rebuilding
//! - [`build_pkcs7_mime`], [`build_multipart_signed`], [`build_multipart_signed_with_boundary`].
//! - [`split_message`]: full message → outer (non-content) header fields + the inner MIME entity
//!   that gets signed or encrypted. [`assemble_message`]: the inverse.
//! - [`HeaderList`]: `remove_headers_with_prefix`, `add_header` (at the top), `replace`, `write`.
//!
//! # Protected headers (RFC 9788)
//! - [`protected_headers`] finds `hp="cipher"`/`hp="clear"` or the legacy
//!   `message/rfc822; forwarded=no` wrapping; [`substitute_protected_headers`] applies them to
//!   the outer header list.
//!
//! Errors are the crate's [`Error`](crate::Error): `Malformed` for bad input, `Unsupported` for
//! an unknown transfer encoding, `Usage` for caller mistakes (bad header name, bad boundary).

mod build;
mod encoding;
mod entity;
mod header;
mod multipart;
mod params;
mod protected;
mod smime;

pub use build::{
    SplitMessage, assemble_message, assemble_pkcs7_message, build_multipart_signed,
    build_multipart_signed_with_boundary, build_pkcs7_mime, split_message, split_message_parts,
    split_outer,
};
pub use encoding::{
    canonicalize_crlf, decode_base64, decode_body, decode_quoted_printable, encode_base64_wrapped,
};
pub use entity::{Entity, Message};
pub use header::{HeaderField, HeaderList, decode_rfc2047, is_content_header};
pub use multipart::{Multipart, SignedParts, split_multipart, split_signed};
pub use params::{ContentDisposition, ContentType, Params, TransferEncoding};
pub use protected::{
    HpMode, ProtectedForm, ProtectedHeaders, is_placeholder_subject, protected_headers,
    substitute_protected_headers,
};
pub use smime::{SmimeKind, SmimeType, classify};

/// `s[r]`, or an empty slice when `r` is out of bounds (never panics).
pub(crate) fn sub(s: &[u8], r: std::ops::Range<usize>) -> &[u8] {
    s.get(r).unwrap_or_default()
}

/// `s[from..]`, or an empty slice when `from` is out of bounds (never panics).
pub(crate) fn tail(s: &[u8], from: usize) -> &[u8] {
    s.get(from..).unwrap_or_default()
}

/// End (exclusive) of the line starting at `pos`: just after its LF, or the end of `s`.
pub(crate) fn line_end(s: &[u8], pos: usize) -> usize {
    match tail(s, pos).iter().position(|&b| b == b'\n') {
        Some(i) => pos + i + 1,
        None => s.len().max(pos),
    }
}

/// A line without its line break (LF, CRLF, or a lone CR at the end of input).
pub(crate) fn line_content(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

#[cfg(test)]
mod tests;
