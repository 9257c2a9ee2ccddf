//! A small, lenient BER reader and a strict DER writer.
//!
//! Incoming CMS is often BER: indefinite lengths, constructed (chunked) OCTET STRINGs, SETs in
//! any order. The reader accepts all of that without re-encoding, so the exact bytes of every
//! element stay available (`Tlv::raw`) for hashing signed attributes as received. It never
//! panics and bounds nesting depth; every failure is [`Error::Malformed`].
//!
//! Only low tag numbers (< 31) are supported, which covers CMS and X.509.

use std::borrow::Cow;

use crate::error::{Error, Result, malformed};

/// Maximum nesting depth accepted while reading (protects the stack).
const MAX_DEPTH: usize = 48;

/// Universal tag numbers and common tag bytes (class and constructed bits included).
pub mod tag {
    /// BOOLEAN.
    pub const BOOLEAN: u8 = 0x01;
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// BIT STRING.
    pub const BIT_STRING: u8 = 0x03;
    /// OCTET STRING (primitive form).
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL.
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// UTF8String.
    pub const UTF8_STRING: u8 = 0x0c;
    /// PrintableString.
    pub const PRINTABLE_STRING: u8 = 0x13;
    /// IA5String.
    pub const IA5_STRING: u8 = 0x16;
    /// UTCTime.
    pub const UTC_TIME: u8 = 0x17;
    /// GeneralizedTime.
    pub const GENERALIZED_TIME: u8 = 0x18;
    /// SEQUENCE (constructed).
    pub const SEQUENCE: u8 = 0x30;
    /// SET (constructed).
    pub const SET: u8 = 0x31;
    /// The constructed bit.
    pub const CONSTRUCTED: u8 = 0x20;

    /// Context-specific tag `[n]`, primitive form.
    pub const fn context(n: u8) -> u8 {
        0x80 | n
    }
    /// Context-specific tag `[n]`, constructed form.
    pub const fn context_constructed(n: u8) -> u8 {
        0xa0 | n
    }
}

/// One element: its identifier byte, its content, and its exact encoding.
#[derive(Clone, Copy)]
pub struct Tlv<'a> {
    /// The identifier octet (class, constructed bit, tag number).
    pub tag: u8,
    /// The content octets. For an indefinite-length element: everything between the header
    /// and the end-of-contents marker.
    pub value: &'a [u8],
    /// The whole element as received: header, content and end-of-contents marker.
    pub raw: &'a [u8],
    depth: usize,
}

impl std::fmt::Debug for Tlv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tlv(tag={:#04x}, len={})", self.tag, self.value.len())
    }
}

impl<'a> Tlv<'a> {
    /// Decodes exactly one element spanning all of `data` (trailing bytes are an error).
    pub fn parse(data: &'a [u8]) -> Result<Tlv<'a>> {
        let mut r = Reader::new(data);
        let tlv = r.read_any()?;
        if !r.is_empty() {
            return Err(malformed("trailing bytes after the ASN.1 element"));
        }
        Ok(tlv)
    }

    /// Decodes one element from the start of `data`, ignoring what follows it.
    pub fn parse_prefix(data: &'a [u8]) -> Result<Tlv<'a>> {
        Reader::new(data).read_any()
    }

    /// True if the constructed bit is set.
    pub fn is_constructed(&self) -> bool {
        self.tag & tag::CONSTRUCTED != 0
    }

    /// The tag with the constructed bit cleared (BER lets strings be either form).
    pub fn tag_primitive(&self) -> u8 {
        self.tag & !tag::CONSTRUCTED
    }

    /// A reader over the children of a constructed element.
    pub fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.value,
            pos: 0,
            depth: self.depth + 1,
        }
    }

    /// Checks the tag and returns self, or a malformed error naming `what`.
    pub fn expect(self, tag: u8, what: &str) -> Result<Tlv<'a>> {
        if self.tag == tag {
            Ok(self)
        } else {
            Err(malformed(format!(
                "{what}: expected tag {tag:#04x}, found {:#04x}",
                self.tag
            )))
        }
    }

    /// The content of a string type (OCTET STRING or an implicitly tagged one), concatenating
    /// the chunks of the constructed BER form.
    pub fn octets(&self) -> Result<Cow<'a, [u8]>> {
        if !self.is_constructed() {
            return Ok(Cow::Borrowed(self.value));
        }
        let mut out = Vec::with_capacity(self.value.len());
        self.collect_octets(&mut out)?;
        Ok(Cow::Owned(out))
    }

    fn collect_octets(&self, out: &mut Vec<u8>) -> Result<()> {
        if !self.is_constructed() {
            out.extend_from_slice(self.value);
            return Ok(());
        }
        let mut r = self.reader();
        while !r.is_empty() {
            let chunk = r.read_any()?;
            // Chunks of a constructed string are strings of the universal type.
            if chunk.tag_primitive() != tag::OCTET_STRING
                && chunk.tag_primitive() != self.tag_primitive()
                && chunk.tag_primitive() > 0x1e
            {
                return Err(malformed("bad chunk inside a constructed string"));
            }
            chunk.collect_octets(out)?;
        }
        Ok(())
    }

    /// The bytes of an OBJECT IDENTIFIER's content.
    pub fn oid(&self) -> Result<&'a [u8]> {
        if self.tag != tag::OID || self.value.is_empty() {
            return Err(malformed(format!(
                "expected an OBJECT IDENTIFIER, found tag {:#04x}",
                self.tag
            )));
        }
        Ok(self.value)
    }

    /// The content of an INTEGER with leading zero octets removed (unsigned magnitude).
    pub fn uint_bytes(&self) -> Result<&'a [u8]> {
        if self.tag_primitive() != tag::INTEGER && self.tag & 0xc0 == 0 {
            return Err(malformed("expected an INTEGER"));
        }
        let mut v = self.value;
        while v.len() > 1 && v[0] == 0 {
            v = &v[1..];
        }
        Ok(v)
    }

    /// A small non-negative INTEGER.
    pub fn small_uint(&self) -> Result<u64> {
        let v = self.uint_bytes()?;
        if v.len() > 8 || v.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(malformed("INTEGER out of range"));
        }
        Ok(v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The content of a BIT STRING without its unused-bits octet.
    pub fn bit_string(&self) -> Result<&'a [u8]> {
        if self.tag != tag::BIT_STRING {
            return Err(malformed("expected a BIT STRING"));
        }
        match self.value.split_first() {
            Some((_, rest)) => Ok(rest),
            None => Err(malformed("empty BIT STRING")),
        }
    }
}

/// Reads consecutive elements from a byte string.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data` at depth 0.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            depth: 0,
        }
    }

    /// True when every element has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The identifier octet of the next element, if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Reads the next element, whatever its tag.
    pub fn read_any(&mut self) -> Result<Tlv<'a>> {
        if self.depth > MAX_DEPTH {
            return Err(malformed("ASN.1 nested too deeply"));
        }
        let start = self.pos;
        let rest = self.data.get(start..).unwrap_or_default();
        let (&tag, after_tag) = rest
            .split_first()
            .ok_or_else(|| malformed("unexpected end of ASN.1 data"))?;
        if tag & 0x1f == 0x1f {
            return Err(malformed("high tag numbers are not supported"));
        }
        let (&len0, mut after_len) = after_tag
            .split_first()
            .ok_or_else(|| malformed("truncated ASN.1 length"))?;
        let header_len;
        if len0 == 0x80 {
            // Indefinite length: children until the end-of-contents marker.
            if tag & tag::CONSTRUCTED == 0 {
                return Err(malformed("indefinite length on a primitive element"));
            }
            header_len = 2;
            let content_start = start + header_len;
            let mut child = Reader {
                data: self.data,
                pos: content_start,
                depth: self.depth + 1,
            };
            loop {
                match child.data.get(child.pos..child.pos + 2) {
                    Some([0, 0]) => break,
                    Some(_) => {
                        child.read_any()?;
                    }
                    None => return Err(malformed("missing end-of-contents in BER data")),
                }
            }
            let content_end = child.pos;
            self.pos = content_end + 2;
            return Ok(Tlv {
                tag,
                value: &self.data[content_start..content_end],
                raw: &self.data[start..self.pos],
                depth: self.depth,
            });
        }
        let len = if len0 & 0x80 == 0 {
            header_len = 2;
            usize::from(len0)
        } else {
            let n = usize::from(len0 & 0x7f);
            if n == 0 || n > 8 {
                return Err(malformed("unsupported ASN.1 length encoding"));
            }
            let bytes = after_len
                .get(..n)
                .ok_or_else(|| malformed("truncated ASN.1 length"))?;
            after_len = &after_len[n..];
            header_len = 2 + n;
            let mut len: u64 = 0;
            for b in bytes {
                len = (len << 8) | u64::from(*b);
            }
            usize::try_from(len).map_err(|_| malformed("ASN.1 length too large"))?
        };
        if after_len.len() < len {
            return Err(malformed(format!(
                "truncated ASN.1 element (needs {len} bytes, {} left)",
                after_len.len()
            )));
        }
        let content_start = start + header_len;
        self.pos = content_start + len;
        Ok(Tlv {
            tag,
            value: &self.data[content_start..self.pos],
            raw: &self.data[start..self.pos],
            depth: self.depth,
        })
    }

    /// Reads the next element and checks its tag.
    pub fn read(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>> {
        let t = self.read_any().map_err(|e| match e {
            Error::Malformed(m) => malformed(format!("{what}: {m}")),
            other => other,
        })?;
        t.expect(tag, what)
    }

    /// Reads the next element if its tag (ignoring the constructed bit) is `tag`.
    pub fn read_optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>> {
        match self.peek_tag() {
            Some(t) if t & !tag::CONSTRUCTED == tag & !tag::CONSTRUCTED => {
                Ok(Some(self.read_any()?))
            }
            _ => Ok(None),
        }
    }

    /// Reads every remaining element.
    pub fn read_all(&mut self) -> Result<Vec<Tlv<'a>>> {
        let mut v = Vec::new();
        while !self.is_empty() {
            v.push(self.read_any()?);
        }
        Ok(v)
    }
}

/// DER encoding helpers. Everything we write is DER.
pub mod der {
    use super::tag;

    /// Appends a DER length.
    pub fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    /// Appends a tag and the DER length of content that follows (written by the caller).
    pub fn push_head(out: &mut Vec<u8>, tag: u8, len: usize) {
        out.push(tag);
        push_len(out, len);
    }

    /// Length of a whole element whose content is `len` bytes (tag, length, content).
    pub fn tlv_len(len: usize) -> usize {
        let len_of_len = if len < 0x80 {
            1
        } else {
            1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
        };
        1 + len_of_len + len
    }

    /// One element from a tag and its content.
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(content.len() + 10);
        out.push(tag);
        push_len(&mut out, content.len());
        out.extend_from_slice(content);
        out
    }

    /// One constructed element from already-encoded children.
    pub fn cons(tag: u8, children: &[&[u8]]) -> Vec<u8> {
        let len = children.iter().map(|c| c.len()).sum();
        let mut out = Vec::with_capacity(len + 10);
        out.push(tag);
        push_len(&mut out, len);
        for c in children {
            out.extend_from_slice(c);
        }
        out
    }

    /// A SEQUENCE of already-encoded children.
    pub fn seq(children: &[&[u8]]) -> Vec<u8> {
        cons(tag::SEQUENCE, children)
    }

    /// A SET OF, its elements sorted as DER requires.
    pub fn set_of(children: &[&[u8]]) -> Vec<u8> {
        let mut sorted: Vec<&[u8]> = children.to_vec();
        sorted.sort();
        cons(tag::SET, &sorted)
    }

    /// An OBJECT IDENTIFIER from its content bytes.
    pub fn oid(content: &[u8]) -> Vec<u8> {
        tlv(tag::OID, content)
    }

    /// An OCTET STRING.
    pub fn octet_string(content: &[u8]) -> Vec<u8> {
        tlv(tag::OCTET_STRING, content)
    }

    /// A NULL.
    pub fn null() -> Vec<u8> {
        vec![tag::NULL, 0]
    }

    /// A non-negative INTEGER from a small value.
    pub fn uint(v: u64) -> Vec<u8> {
        uint_bytes(&v.to_be_bytes())
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub fn uint_bytes(mag: &[u8]) -> Vec<u8> {
        let skip = mag.iter().take_while(|b| **b == 0).count();
        let mag = &mag[skip.min(mag.len())..];
        let mut content = Vec::with_capacity(mag.len() + 1);
        if mag.first().is_none_or(|b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend_from_slice(mag);
        tlv(tag::INTEGER, &content)
    }

    /// A BIT STRING with no unused bits.
    pub fn bit_string(content: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(content.len() + 1);
        v.push(0);
        v.extend_from_slice(content);
        tlv(tag::BIT_STRING, &v)
    }

    /// An AlgorithmIdentifier with optional encoded parameters.
    pub fn algorithm(oid_content: &[u8], params: Option<&[u8]>) -> Vec<u8> {
        let o = oid(oid_content);
        match params {
            Some(p) => seq(&[&o, p]),
            None => seq(&[&o]),
        }
    }

    /// A UTCTime (years 1950–2049) or GeneralizedTime from a Unix time.
    pub fn time(unix: i64) -> Vec<u8> {
        let dt = time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let (y, mo, d) = (dt.year(), u8::from(dt.month()), dt.day());
        let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
        if (1950..2050).contains(&y) {
            let txt = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
            tlv(tag::UTC_TIME, txt.as_bytes())
        } else {
            let txt = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
            tlv(tag::GENERALIZED_TIME, txt.as_bytes())
        }
    }
}

/// Parses a UTCTime or GeneralizedTime (`Z` form, optional fractional seconds) to Unix time.
pub fn parse_time(t: &Tlv<'_>) -> Result<i64> {
    let s = std::str::from_utf8(t.value).map_err(|_| malformed("time is not ASCII"))?;
    let digits = |r: std::ops::Range<usize>| -> Result<i32> {
        s.get(r)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<i32>().ok())
            .ok_or_else(|| malformed(format!("bad time {s:?}")))
    };
    let (year, rest) = match t.tag {
        tag::UTC_TIME => {
            let yy = digits(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        tag::GENERALIZED_TIME => (digits(0..4)?, 4),
        _ => return Err(malformed("expected a time")),
    };
    let mo = digits(rest..rest + 2)?;
    let d = digits(rest + 2..rest + 4)?;
    let h = digits(rest + 4..rest + 6)?;
    let mi = digits(rest + 6..rest + 8)?;
    let sec = digits(rest + 8..rest + 10).unwrap_or(0);
    let month = time::Month::try_from(u8::try_from(mo).unwrap_or(0))
        .map_err(|_| malformed(format!("bad month in {s:?}")))?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(d).unwrap_or(0))
        .map_err(|_| malformed(format!("bad date {s:?}")))?;
    let tod = time::Time::from_hms(
        u8::try_from(h).unwrap_or(99),
        u8::try_from(mi).unwrap_or(99),
        u8::try_from(sec).unwrap_or(99),
    )
    .map_err(|_| malformed(format!("bad time of day {s:?}")))?;
    Ok(time::PrimitiveDateTime::new(date, tod)
        .assume_utc()
        .unix_timestamp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn tlv_len_is_the_written_length() {
        for n in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            assert_eq!(
                der::tlv_len(n),
                der::tlv(tag::OCTET_STRING, &vec![0; n]).len(),
                "{n}"
            );
            let mut head = Vec::new();
            der::push_head(&mut head, tag::OCTET_STRING, n);
            assert_eq!(head.len() + n, der::tlv_len(n), "{n}");
        }
    }

    #[test]
    fn reads_definite_and_indefinite() {
        // SEQUENCE (indefinite) { INTEGER 5, OCTET STRING constructed indefinite { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c',
            0x00, 0x00, 0x00, 0x00,
        ];
        let t = Tlv::parse(&ber).unwrap();
        assert_eq!(t.tag, tag::SEQUENCE);
        assert_eq!(t.raw.len(), ber.len());
        let mut r = t.reader();
        assert_eq!(r.read(tag::INTEGER, "i").unwrap().small_uint().unwrap(), 5);
        let s = r.read_any().unwrap();
        assert_eq!(&*s.octets().unwrap(), b"abc");
        assert!(r.is_empty());
    }

    #[test]
    fn truncations_never_panic() {
        let ber = [
            0x30, 0x80, 0x02, 0x01, 0x05, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c',
            0x00, 0x00, 0x00, 0x00,
        ];
        for n in 0..ber.len() {
            assert!(Tlv::parse(&ber[..n]).is_err());
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = Vec::new();
        for _ in 0..200 {
            v.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(Tlv::parse(&v).is_err());
    }

    #[test]
    fn der_roundtrip_and_times() {
        let big = vec![7u8; 70000];
        let e = der::octet_string(&big);
        assert_eq!(Tlv::parse(&e).unwrap().value.len(), 70000);
        assert_eq!(der::uint(0x80), vec![2, 2, 0, 0x80]);
        let t = der::time(1_700_000_000);
        assert_eq!(parse_time(&Tlv::parse(&t).unwrap()).unwrap(), 1_700_000_000);
        let g = der::time(4_102_444_800); // 2100-01-01
        assert_eq!(parse_time(&Tlv::parse(&g).unwrap()).unwrap(), 4_102_444_800);
    }
}
