//! Transfer encodings (base64, quoted-printable) and CRLF canonicalisation.

use std::borrow::Cow;

use super::TransferEncoding;
use super::params::hex_val;
use crate::Error;

/// Marks in [`B64`] for bytes that are not alphabet characters.
const B64_INVALID: u8 = 0xFF;
const B64_SPACE: u8 = 0xFE;
const B64_PAD: u8 = 0xFD;

/// The standard base64 alphabet as a lookup table, whitespace and `=` marked.
static B64: [u8; 256] = {
    let mut t = [B64_INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = B64_SPACE;
    t[b'\t' as usize] = B64_SPACE;
    t[b'\r' as usize] = B64_SPACE;
    t[b'\n' as usize] = B64_SPACE;
    t[0x0b] = B64_SPACE;
    t[0x0c] = B64_SPACE;
    t[b'=' as usize] = B64_PAD;
    t
};

/// The table entry for `b` (a 256-entry table indexed by a byte cannot be out of bounds).
#[inline]
fn b64(b: u8) -> u8 {
    B64[usize::from(b)]
}

/// Decodes base64 leniently: whitespace and line breaks anywhere are ignored, padding may be
/// missing, and data may continue after padding (concatenated encodings). Any other byte, or a
/// lone final character (6 bits), is [`Error::Malformed`] with its offset. Linear time.
///
/// The common case (lines of alphabet characters ending in CRLF or LF, padding only at the
/// end) is decoded with SIMD (`base64-simd`); anything that path refuses, including every
/// error, goes through the lenient decoder, which gives the same bytes wherever both accept.
pub fn decode_base64(input: &[u8]) -> Result<Vec<u8>, Error> {
    if let Some(out) = decode_base64_lines(input) {
        return Ok(out);
    }
    decode_base64_lenient(input)
}

/// The fast path of [`decode_base64`]: line breaks removed a line at a time (`memchr`), then
/// one SIMD decode in place (WHATWG "forgiving" base64: other ASCII whitespace dropped, up to
/// two `=` at the very end). `None` where it refuses.
fn decode_base64_lines(input: &[u8]) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(input.len());
    let mut from = 0usize;
    for nl in memchr::memchr_iter(b'\n', input) {
        let line = super::sub(input, from..nl);
        buf.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        from = nl + 1;
    }
    buf.extend_from_slice(super::tail(input, from));
    let n = base64_simd::forgiving_decode_inplace(&mut buf).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

/// The byte-at-a-time decoder behind [`decode_base64`] (every input it accepts, every error
/// with its offset).
pub(super) fn decode_base64_lenient(input: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0u32; // characters in `acc`
    let mut i = 0usize;
    let mut last_char = 0usize;
    while i < input.len() {
        if n == 0 {
            // Fast path: four alphabet characters at once.
            if let Some(&[a, b, c, d]) = input.get(i..i + 4) {
                let (a, b, c, d) = (b64(a), b64(b), b64(c), b64(d));
                if (a | b | c | d) < 64 {
                    let v =
                        u32::from(a) << 18 | u32::from(b) << 12 | u32::from(c) << 6 | u32::from(d);
                    out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
                    i += 4;
                    continue;
                }
            }
        }
        let byte = input.get(i).copied().unwrap_or_default();
        match b64(byte) {
            v @ 0..=63 => {
                acc = acc << 6 | u32::from(v);
                n += 1;
                last_char = i;
                if n == 4 {
                    out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                    acc = 0;
                    n = 0;
                }
            }
            B64_SPACE => {}
            B64_PAD => {
                flush_b64(&mut out, acc, n, last_char)?;
                acc = 0;
                n = 0;
            }
            _ => {
                return Err(Error::Malformed(format!(
                    "base64: invalid byte 0x{byte:02x} at offset {i}"
                )));
            }
        }
        i += 1;
    }
    flush_b64(&mut out, acc, n, last_char)?;
    Ok(out)
}

/// Emits the bytes of a partial quantum of `n` characters.
fn flush_b64(out: &mut Vec<u8>, acc: u32, n: u32, last: usize) -> Result<(), Error> {
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        1 => {
            return Err(Error::Malformed(format!(
                "base64: truncated quantum (one character) at offset {last}"
            )));
        }
        _ => {}
    }
    Ok(())
}

/// Appends `data` base64-encoded in lines of 76 characters, each ending in CRLF.
///
/// SIMD encoding (`base64-simd`) of 64 lines at a time into a buffer that stays in the CPU's
/// cache, then each line appended with its CRLF: `out` is written once, never zeroed first
/// or moved within.
pub fn encode_base64_wrapped(data: &[u8], out: &mut Vec<u8>) {
    const LINES: usize = 64;
    let b64 = base64_simd::STANDARD;
    out.reserve(b64.encoded_length(data.len()) + 2 * data.len().div_ceil(57));
    let mut buf = [0u8; 76 * LINES];
    // Every block but the last is a whole number of 3-byte groups: no padding inside.
    for block in data.chunks(57 * LINES) {
        let encoded = b64.encode(block, base64_simd::Out::from_slice(&mut buf));
        for line in encoded.chunks(76) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Decodes quoted-printable (RFC 2045 §6.7). Never fails: an `=` not followed by two hex
/// digits or a line break is kept as it is. Soft line breaks (`=` at the end of a line, after
/// optional whitespace) are removed, trailing whitespace on lines is dropped, hard line breaks
/// are kept as written (CRLF or LF). Linear time.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut pos = 0usize;
    while pos < input.len() {
        let end = super::line_end(input, pos);
        let line = super::sub(input, pos..end);
        let content = super::line_content(line);
        let brk = super::sub(line, content.len()..line.len());
        let trimmed_len = content
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |i| i + 1);
        let text = super::sub(content, 0..trimmed_len);
        let (text, soft) = match text.strip_suffix(b"=") {
            Some(t) => (t, true),
            None => (text, false),
        };
        let mut i = 0usize;
        while i < text.len() {
            let rest = super::tail(text, i);
            match rest.iter().position(|&b| b == b'=') {
                None => {
                    out.extend_from_slice(rest);
                    break;
                }
                Some(eq) => {
                    out.extend_from_slice(super::sub(rest, 0..eq));
                    let h = rest.get(eq + 1).and_then(|&b| hex_val(b));
                    let l = rest.get(eq + 2).and_then(|&b| hex_val(b));
                    if let (Some(h), Some(l)) = (h, l) {
                        out.push(h << 4 | l);
                        i += eq + 3;
                    } else {
                        out.push(b'=');
                        i += eq + 1;
                    }
                }
            }
        }
        if !soft {
            out.extend_from_slice(brk);
        }
        pos = end;
    }
    out
}

/// Undoes a transfer encoding. Identity encodings borrow; an unknown encoding is
/// [`Error::Unsupported`]; bad base64 is [`Error::Malformed`].
pub fn decode_body<'a>(
    body: &'a [u8],
    encoding: &TransferEncoding,
) -> Result<Cow<'a, [u8]>, Error> {
    match encoding {
        TransferEncoding::Base64 => decode_base64(body).map(Cow::Owned),
        TransferEncoding::QuotedPrintable => Ok(Cow::Owned(decode_quoted_printable(body))),
        TransferEncoding::Other(name) => Err(Error::Unsupported(format!(
            "Content-Transfer-Encoding {name:?}"
        ))),
        _ => Ok(Cow::Borrowed(body)),
    }
}

/// Turns every bare LF into CRLF, leaving CRLF (and lone CR) alone. Borrows when the input is
/// already canonical. Linear time (LFs found with `memchr`).
pub fn canonicalize_crlf(input: &[u8]) -> Cow<'_, [u8]> {
    let is_bare_lf = |i: usize| i == 0 || input.get(i - 1) != Some(&b'\r');
    let mut lfs = memchr::memchr_iter(b'\n', input)
        .filter(|&i| is_bare_lf(i))
        .peekable();
    if lfs.peek().is_none() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 16);
    let mut from = 0usize;
    for i in lfs {
        out.extend_from_slice(super::sub(input, from..i));
        out.extend_from_slice(b"\r\n");
        from = i + 1;
    }
    out.extend_from_slice(super::tail(input, from));
    Cow::Owned(out)
}
