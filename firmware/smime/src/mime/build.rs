//! Writing S/MIME entities, and moving content between a message and its inner entity.

use super::multipart::contains;
use super::{Entity, HeaderList, SmimeType, encode_base64_wrapped, is_content_header};
use crate::Error;

/// An `application/pkcs7-mime` entity carrying `der` in base64 (76 columns, CRLF):
///
/// ```text
/// Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
/// Content-Transfer-Encoding: base64
/// Content-Disposition: attachment; filename="smime.p7m"
/// ```
///
/// (`smime.p7c` for certs-only, `smime.p7z` for compressed data.)
pub fn build_pkcs7_mime(kind: SmimeType, der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(der.len() / 57 * 78 + 256);
    out.extend_from_slice(pkcs7_mime_head(kind).as_bytes());
    encode_base64_wrapped(der, &mut out);
    out
}

/// The header fields and empty line of [`build_pkcs7_mime`].
fn pkcs7_mime_head(kind: SmimeType) -> String {
    let name = kind.file_name();
    format!(
        "Content-Type: application/pkcs7-mime; smime-type={}; name=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n",
        kind.as_str()
    )
}

/// `assemble_message(outer, &build_pkcs7_mime(kind, der))` in one pass: the base64 is
/// written straight into the message (no intermediate entity to copy and parse again).
pub fn assemble_pkcs7_message(outer: &HeaderList<'_>, kind: SmimeType, der: &[u8]) -> Vec<u8> {
    let head = pkcs7_mime_head(kind);
    let mut out =
        Vec::with_capacity(outer.len() * 80 + 64 + head.len() + der.len().div_ceil(57) * 78);
    write_outer(outer, &mut out);
    out.extend_from_slice(head.as_bytes());
    encode_base64_wrapped(der, &mut out);
    out
}

/// The outer part of an assembled message: `outer`'s fields except content headers, and
/// `MIME-Version: 1.0` if they have none.
fn write_outer(outer: &HeaderList<'_>, out: &mut Vec<u8>) {
    for f in outer.fields() {
        if !is_content_header(f.name()) {
            f.write(out);
        }
    }
    if outer.get("MIME-Version").is_none() {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
}

/// Is `b` a valid boundary (RFC 2046 `bchars`, 1 to 70, not ending in a space)?
fn valid_boundary(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 70
        && !b.ends_with(' ')
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
}

/// A `multipart/signed` entity (RFC 8551 §3.5) around `signed_part` and a detached signature,
/// with a boundary made from `random` (16 bytes from the caller's random source) that does not
/// occur anywhere in `signed_part`.
///
/// `signed_part` is inserted exactly as given: it must be the bytes that were signed (a MIME
/// entity in canonical CRLF form). `micalg` is e.g. `sha-256` (written as given, quoted if it
/// is not a token).
pub fn build_multipart_signed(
    signed_part: &[u8],
    micalg: &str,
    signature_der: &[u8],
    random: &[u8; 16],
) -> Vec<u8> {
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // "=_" cannot occur in base64 or quoted-printable text; the random part makes a clash
    // with other content unlikely; the loop makes it impossible.
    let base = format!("=_sealgate_{hex}");
    let mut boundary = base.clone();
    let mut n = 0u64;
    while contains(signed_part, boundary.as_bytes()) {
        n += 1;
        boundary = format!("{base}_{n}");
    }
    write_multipart_signed(signed_part, micalg, signature_der, &boundary)
}

/// Like [`build_multipart_signed`] with a boundary chosen by the caller. A boundary that is not
/// RFC 2046 valid or that occurs in `signed_part` is [`Error::Usage`].
pub fn build_multipart_signed_with_boundary(
    signed_part: &[u8],
    micalg: &str,
    signature_der: &[u8],
    boundary: &str,
) -> Result<Vec<u8>, Error> {
    if !valid_boundary(boundary) {
        return Err(Error::Usage(format!("invalid MIME boundary {boundary:?}")));
    }
    if contains(signed_part, boundary.as_bytes()) {
        return Err(Error::Usage(format!(
            "MIME boundary {boundary:?} occurs in the signed content"
        )));
    }
    Ok(write_multipart_signed(
        signed_part,
        micalg,
        signature_der,
        boundary,
    ))
}

/// `micalg` as a parameter value: as is when it is a token, else quoted.
fn micalg_param(micalg: &str) -> String {
    let clean: String = micalg
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let is_token = !clean.is_empty()
        && clean
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._!#$%&'*+^`{|}~".contains(&b));
    if is_token {
        clean
    } else {
        format!("\"{clean}\"")
    }
}

fn write_multipart_signed(
    signed_part: &[u8],
    micalg: &str,
    signature_der: &[u8],
    boundary: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(signed_part.len() + signature_der.len() * 4 / 3 + 1024);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n \
             micalg={}; boundary=\"{boundary}\"\r\n\
             \r\n\
             This is an S/MIME signed message\r\n\
             \r\n\
             --{boundary}\r\n",
            micalg_param(micalg)
        )
        .as_bytes(),
    );
    out.extend_from_slice(signed_part);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\n\
             Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    encode_base64_wrapped(signature_der, &mut out);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// A message split into what stays outside and what gets signed or encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMessage<'a> {
    /// The header fields that are not content headers (`MIME-Version` included), in order.
    pub outer: HeaderList<'a>,
    /// The inner MIME entity: the content header fields (raw), the empty line, the body.
    /// Without a `Content-Type` in the message, `Content-Type: text/plain; charset=us-ascii`
    /// is written first (RFC 2045's default, made explicit).
    pub inner: Vec<u8>,
}

/// The `outer` part of [`split_message`] alone (nothing of the body copied).
pub fn split_outer<'a>(msg: &Entity<'a>) -> HeaderList<'a> {
    let mut outer = HeaderList::new();
    for f in msg.headers() {
        if !is_content_header(f.name()) {
            outer.push(f.clone());
        }
    }
    outer
}

/// Splits a full message into outer header fields and the inner MIME entity (see
/// [`SplitMessage`]). The bytes of the inner entity keep their line endings; canonicalise
/// them before signing.
pub fn split_message<'a>(msg: &Entity<'a>) -> SplitMessage<'a> {
    let (outer, mut inner, body) = split_message_parts(msg);
    inner.extend_from_slice(body);
    SplitMessage { outer, inner }
}

/// [`split_message`] without copying the body: the outer fields, the inner entity's content
/// header fields and empty line, and the body. The inner entity is the second and third
/// pieces, in that order; the second always ends with a line break.
pub fn split_message_parts<'a>(msg: &Entity<'a>) -> (HeaderList<'a>, Vec<u8>, &'a [u8]) {
    let mut outer = HeaderList::new();
    let mut inner = Vec::with_capacity(512);
    if msg.header("Content-Type").is_none() {
        inner.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    for f in msg.headers() {
        if is_content_header(f.name()) {
            f.write(&mut inner);
        } else {
            outer.push(f.clone());
        }
    }
    if msg.has_separator() {
        inner.extend_from_slice(msg.separator());
    } else {
        inner.extend_from_slice(b"\r\n");
    }
    (outer, inner, msg.body())
}

/// Builds a full message from outer header fields and a new inner MIME entity: the outer
/// fields except content headers (plus `MIME-Version: 1.0` if they have none), then the
/// inner entity's content header fields, its empty line and its body.
///
/// Non-content header fields of the inner entity (protected headers, RFC 9788) are not
/// copied: apply them to `outer` first with
/// [`substitute_protected_headers`](super::substitute_protected_headers).
pub fn assemble_message(outer: &HeaderList<'_>, inner: &[u8]) -> Vec<u8> {
    let e = Entity::parse(inner);
    let mut out = Vec::with_capacity(inner.len() + outer.len() * 80 + 64);
    write_outer(outer, &mut out);
    for f in e.headers() {
        if is_content_header(f.name()) {
            f.write(&mut out);
        }
    }
    if e.has_separator() {
        out.extend_from_slice(e.separator());
    } else {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(e.body());
    out
}
