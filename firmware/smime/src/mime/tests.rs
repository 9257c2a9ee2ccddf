//! Unit tests of the MIME layer.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::borrow::Cow;

use super::*;

const SIGNED_QP: &[u8] = b"From: alice@example.com\r\n\
To: bob@example.com\r\n\
Subject: signed\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
\tmicalg=sha-256; boundary=\"----=_Part_1\"\r\n\
\r\n\
This is an S/MIME signed message\r\n\
\r\n\
------=_Part_1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
A long line that was wrapped by the sender with a soft line break right h=\r\n\
ere, and an encoded =C3=A9 character. ------=_Part_1 not at line start.\r\n\
\r\n\
------=_Part_1\r\n\
Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
\r\n\
MIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n\
\r\n\
------=_Part_1--\r\n\
epilogue\r\n";

const SIGNED_PART_QP: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
A long line that was wrapped by the sender with a soft line break right h=\r\n\
ere, and an encoded =C3=A9 character. ------=_Part_1 not at line start.\r\n";

fn lf_only(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&b| b != b'\r').collect()
}

// ---------------------------------------------------------------- headers and entities

#[test]
fn parses_headers_and_body_crlf() {
    let raw = b"Subject: hello\r\n  world\r\nFROM: a@b\r\nX-Empty:\r\n\r\nbody\r\nline 2\r\n";
    let e = Entity::parse(raw);
    assert_eq!(e.headers().len(), 3);
    let s = e.header("subject").unwrap();
    assert_eq!(s.raw(), b"Subject: hello\r\n  world\r\n");
    assert_eq!(s.raw_value(), b" hello\r\n  world");
    assert_eq!(s.value(), "hello  world");
    assert_eq!(e.header_value("From").unwrap(), "a@b");
    assert_eq!(e.header("x-empty").unwrap().value(), "");
    assert_eq!(e.separator(), b"\r\n");
    assert_eq!(e.body(), b"body\r\nline 2\r\n");
    assert_eq!(e.header_block().len() + 2 + e.body().len(), raw.len());
    assert_eq!(e.line_ending(), b"\r\n");
}

#[test]
fn parses_lf_only_and_mixed() {
    let e = Entity::parse(b"Subject: x\n\tfolded\nTo: y\n\nbody\n");
    assert_eq!(e.headers().len(), 2);
    assert_eq!(e.header("subject").unwrap().value(), "x\tfolded");
    assert_eq!(e.separator(), b"\n");
    assert_eq!(e.body(), b"body\n");
    assert_eq!(e.line_ending(), b"\n");

    let e = Entity::parse(b"A: 1\r\nB: 2\n\r\nbody");
    assert_eq!(e.headers().len(), 2);
    assert_eq!(e.separator(), b"\r\n");
    assert_eq!(e.body(), b"body");
    let e = Entity::parse(b"A: 1\r\n\nbody");
    assert_eq!(e.separator(), b"\n");
    assert_eq!(e.body(), b"body");
}

#[test]
fn headers_only_body_only_and_garbage() {
    let e = Entity::parse(b"Subject: only headers\r\nTo: x");
    assert_eq!(e.headers().len(), 2);
    assert!(!e.has_separator());
    assert!(e.body().is_empty());
    assert_eq!(e.header("to").unwrap().value(), "x");
    assert!(!e.header("to").unwrap().ends_with_line_break());

    let e = Entity::parse(b"just some text\r\nmore: text\r\n\r\nx");
    assert!(e.headers().is_empty());
    assert_eq!(e.body(), b"just some text\r\nmore: text\r\n\r\nx");

    // A non-field line inside a header block that has an empty line later: kept.
    let e = Entity::parse(b"A: 1\r\nnot a field\r\nB: 2\r\n\r\nbody");
    assert_eq!(e.headers().len(), 3);
    assert!(e.headers()[1].is_malformed());
    assert_eq!(e.header("B").unwrap().value(), "2");
    assert_eq!(e.body(), b"body");

    // Without an empty line, the body starts at the first non-field line.
    let e = Entity::parse(b"A: 1\r\nbody text\r\n");
    assert_eq!(e.headers().len(), 1);
    assert_eq!(e.body(), b"body text\r\n");

    // Starts with an empty line: no headers.
    let e = Entity::parse(b"\r\nbody");
    assert!(e.headers().is_empty());
    assert_eq!(e.body(), b"body");

    for g in [
        &b""[..],
        b"\r",
        b"\n",
        b":",
        b" :",
        b"\xff\xfe\x00",
        b"a:\r\r\r",
        b"--\n--",
    ] {
        let e = Entity::parse(g);
        let _ = (e.content_type(), e.smime_kind(), e.decoded_body());
    }
}

#[test]
fn header_field_names_and_lookup() {
    let e = Entity::parse(b"Received: a\r\nreceived: b\r\nSubject : spaced\r\n\r\n");
    assert_eq!(e.headers_named("RECEIVED").count(), 2);
    assert_eq!(e.header("subject").unwrap().name(), "Subject");
    assert_eq!(e.header("subject").unwrap().value(), "spaced");
}

#[test]
fn rfc2047_words() {
    assert_eq!(decode_rfc2047("=?UTF-8?B?c21pbWUucDdt?="), "smime.p7m");
    assert_eq!(
        decode_rfc2047("=?iso-8859-1?Q?caf=E9_au_lait?="),
        "café au lait"
    );
    assert_eq!(decode_rfc2047("a =?utf-8?q?x?= =?utf-8?q?y?= b"), "a xy b");
    assert_eq!(decode_rfc2047("=?broken"), "=?broken");
    assert_eq!(decode_rfc2047("plain"), "plain");
}

// ---------------------------------------------------------------- content type and friends

#[test]
fn content_type_params() {
    let ct = ContentType::parse(
        b"Multipart/Signed (comment (nested)) ; protocol=\"application/pkcs7-signature\"; \
          micalg = sha-256 ; boundary=\"a \\\"quoted\\\" b\"",
    );
    assert_eq!(ct.essence(), "multipart/signed");
    assert!(ct.is("MULTIPART", "signed"));
    assert_eq!(ct.param("protocol"), Some("application/pkcs7-signature"));
    assert_eq!(ct.param("MICALG"), Some("sha-256"));
    assert_eq!(ct.param("boundary"), Some("a \"quoted\" b"));

    let ct = ContentType::parse(b"text/plain; charset=us-ascii (Plain text)");
    assert_eq!(ct.param("charset"), Some("us-ascii"));

    let ct = ContentType::parse(b"garbage");
    assert!(!ct.is_valid());
    let e = Entity::parse(b"Content-Type: garbage\r\n\r\n");
    assert!(e.explicit_content_type().is_none());
    assert_eq!(e.content_type(), ContentType::text_plain_default());
    assert!(Entity::parse(b"\r\nx").content_type().is("text", "plain"));

    // Junk between parameters is skipped; first occurrence wins.
    let ct = ContentType::parse(b"a/b; junk; x=1; x=2; =3; y");
    assert_eq!(ct.param("x"), Some("1"));
    assert_eq!(ct.params().len(), 1);
}

#[test]
fn rfc2231_filenames() {
    let ct = ContentType::parse(b"application/pkcs7-mime; name*=UTF-8''r%C3%A9sum%C3%A9.p7m");
    assert_eq!(ct.param("name"), Some("résumé.p7m"));

    let d = ContentDisposition::parse(
        b"attachment; filename*0*=utf-8'en'%C3%A9t%C3%A9; filename*1=\" report\";\
          filename*2*=%2Ep7m; filename=\"fallback.txt\"",
    );
    assert!(d.is_attachment());
    assert_eq!(d.filename(), Some("été report.p7m"));

    // Sections out of order, ISO-8859-1.
    let d = ContentDisposition::parse(b"inline; filename*1*=%E9.txt; filename*0*=iso-8859-1''caf");
    assert_eq!(d.kind(), "inline");
    assert_eq!(d.filename(), Some("café.txt"));

    // RFC 2047 inside a quoted name (Outlook does this).
    let e = Entity::parse(
        b"Content-Type: application/octet-stream;\r\n name=\"=?utf-8?B?c21pbWUucDdt?=\"\r\n\r\n",
    );
    assert_eq!(e.filename().as_deref(), Some("smime.p7m"));
    assert_eq!(e.smime_kind(), SmimeKind::Enveloped);
}

#[test]
fn transfer_encodings() {
    let t = |s: &[u8]| TransferEncoding::parse(s);
    assert_eq!(t(b"BASE64"), TransferEncoding::Base64);
    assert_eq!(
        t(b" quoted-printable (x)"),
        TransferEncoding::QuotedPrintable
    );
    assert_eq!(t(b"7bit"), TransferEncoding::SevenBit);
    assert_eq!(t(b"8Bit"), TransferEncoding::EightBit);
    assert_eq!(t(b"binary"), TransferEncoding::Binary);
    assert_eq!(
        t(b"x-uuencode"),
        TransferEncoding::Other("x-uuencode".into())
    );
    assert_eq!(
        Entity::parse(b"A: b\r\n\r\n").transfer_encoding(),
        TransferEncoding::SevenBit
    );
    assert!(matches!(
        decode_body(b"x", &t(b"x-uuencode")),
        Err(crate::Error::Unsupported(_))
    ));
}

// ---------------------------------------------------------------- classification

fn kind(headers: &str) -> SmimeKind {
    let raw = format!("{headers}\r\n\r\nbody");
    Entity::parse(raw.as_bytes()).smime_kind()
}

#[test]
fn classification() {
    use SmimeKind::*;
    let cases = [
        (
            "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
            Enveloped,
        ),
        (
            "Content-Type: application/x-pkcs7-mime; smime-type=\"Enveloped-Data\"",
            Enveloped,
        ),
        (
            "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data",
            AuthEnveloped,
        ),
        (
            "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m",
            SignedOpaque,
        ),
        (
            "Content-Type: application/pkcs7-mime; smime-type=certs-only",
            CertsOnly,
        ),
        (
            "Content-Type: application/pkcs7-mime; smime-type=compressed-data",
            Compressed,
        ),
        (
            "Content-Type: application/pkcs7-mime; smime-type=weird",
            UnknownPkcs7,
        ),
        (
            "Content-Type: application/pkcs7-mime; name=smime.P7M",
            Enveloped,
        ),
        ("Content-Type: application/x-pkcs7-mime", UnknownPkcs7),
        (
            "Content-Type: application/pkcs7-mime; name=data.bin",
            UnknownPkcs7,
        ),
        (
            "Content-Type: application/pkcs7-mime\r\nContent-Disposition: attachment; filename=x.p7m",
            Enveloped,
        ),
        (
            "Content-Type: application/octet-stream; name=\"smime.p7m\"",
            Enveloped,
        ),
        (
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"SMIME.P7M\"",
            Enveloped,
        ),
        (
            "Content-Type: application/octet-stream; name=report.pdf",
            NotSmime,
        ),
        (
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x",
            MultipartSigned,
        ),
        (
            "Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; boundary=x",
            MultipartSigned,
        ),
        (
            "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=x",
            NotSmime,
        ),
        ("Content-Type: multipart/signed; boundary=x", NotSmime),
        ("Content-Type: text/plain", NotSmime),
        ("Subject: no content type", NotSmime),
    ];
    for (h, want) in cases {
        assert_eq!(kind(h), want, "{h}");
    }
    assert!(SmimeKind::AuthEnveloped.is_enveloped());
    assert!(!SmimeKind::NotSmime.is_smime());
}

// ---------------------------------------------------------------- body decoding

#[test]
fn base64_lenient() {
    assert_eq!(decode_base64(b"aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
    assert_eq!(
        decode_base64(b"aGVs\r\nbG8g\n d29y bGQ").unwrap(),
        b"hello world"
    );
    assert_eq!(decode_base64(b"aGVsbG8=aGVsbG8=").unwrap(), b"hellohello");
    assert_eq!(decode_base64(b"").unwrap(), b"");
    assert_eq!(decode_base64(b"\r\n").unwrap(), b"");
    assert_eq!(decode_base64(b"YQ").unwrap(), b"a");
    assert_eq!(decode_base64(b"YWI").unwrap(), b"ab");
    assert!(decode_base64(b"aGVs*G8=").is_err());
    assert!(decode_base64(b"aGVsb").is_err());
    assert!(decode_base64(b"aGVs\xffbG8=").is_err());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut enc = Vec::new();
    encode_base64_wrapped(&data, &mut enc);
    assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    assert!(enc.ends_with(b"\r\n"));
    assert_eq!(decode_base64(&enc).unwrap(), data);
    assert_eq!(decode_base64(&lf_only(&enc)).unwrap(), data);
}

/// The encoder works in blocks of 64 lines: around and across their edges it writes exactly
/// RFC 2045's lines (76 characters and CRLF, the last one shorter, padding only at the end),
/// after what `out` already held.
#[test]
fn base64_wrapped_lines_across_block_edges() {
    let b64 = base64_simd::STANDARD;
    for n in [0, 1, 56, 57, 58, 3647, 3648, 3649, 3650, 7296, 7297, 10_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 131 % 256) as u8).collect();
        let mut enc = b"kept\r\n".to_vec();
        encode_base64_wrapped(&data, &mut enc);
        let whole = b64.encode_to_string(&data);
        let mut expect = b"kept\r\n".to_vec();
        for line in whole.as_bytes().chunks(76) {
            expect.extend_from_slice(line);
            expect.extend_from_slice(b"\r\n");
        }
        assert_eq!(enc, expect, "{n} bytes");
    }
}

/// The SIMD path of `decode_base64` gives exactly what the lenient decoder gives, wherever it
/// accepts (it hands everything else to the lenient decoder).
#[test]
fn base64_fast_path_agrees_with_the_lenient_decoder() {
    let chars: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/==  \t\r\n\n\x0b\x0c*\xff";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for _ in 0..50_000 {
        let len = (next() % 48) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                // Mostly alphabet characters, so that many inputs are valid.
                if r % 8 == 0 {
                    chars[(r >> 8) as usize % chars.len()]
                } else {
                    chars[(r >> 8) as usize % 64]
                }
            })
            .collect();
        inputs.push(input);
    }
    for n in 0..300usize {
        let data: Vec<u8> = (0..n).map(|i| (i * 31 % 256) as u8).collect();
        let mut enc = Vec::new();
        encode_base64_wrapped(&data, &mut enc);
        assert_eq!(decode_base64(&enc).unwrap(), data, "{n}");
        inputs.push(lf_only(&enc));
        inputs.push(enc);
    }
    for input in &inputs {
        let fast = decode_base64(input);
        let lenient = super::encoding::decode_base64_lenient(input);
        assert_eq!(
            format!("{fast:?}"),
            format!("{lenient:?}"),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn pkcs7_message_in_one_pass_is_the_assembled_one() {
    let msg = Entity::parse(
        b"From: a@example.test\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
    );
    let split = split_message(&msg);
    for n in [0usize, 1, 56, 57, 58, 114, 1000] {
        let der: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
        for kind in [SmimeType::EnvelopedData, SmimeType::AuthEnvelopedData] {
            assert_eq!(
                assemble_pkcs7_message(&split.outer, kind, &der),
                assemble_message(&split.outer, &build_pkcs7_mime(kind, &der)),
                "{n}"
            );
        }
    }
}

#[test]
fn quoted_printable() {
    let q = decode_quoted_printable;
    assert_eq!(q(b"caf=C3=A9 =3D ok"), "café = ok".as_bytes());
    assert_eq!(q(b"soft=\r\nbreak\r\nhard\r\n"), b"softbreak\r\nhard\r\n");
    assert_eq!(q(b"soft= \nbreak\n"), b"softbreak\n");
    assert_eq!(q(b"trailing   \r\nx"), b"trailing\r\nx");
    assert_eq!(q(b"bad =ZZ =4"), b"bad =ZZ =4");
    assert_eq!(q(b"lower=c3=a9"), "loweré".as_bytes());
    assert_eq!(q(b"end="), b"end");
    let e = Entity::parse(SIGNED_PART_QP);
    let body = e.decoded_body().unwrap();
    assert!(
        String::from_utf8(body.into_owned())
            .unwrap()
            .contains("right here, and an encoded é")
    );
}

#[test]
fn crlf_canonicalisation() {
    assert!(matches!(canonicalize_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
    assert!(matches!(canonicalize_crlf(b""), Cow::Borrowed(_)));
    assert_eq!(
        &*canonicalize_crlf(b"a\nb\r\nc\n\n"),
        b"a\r\nb\r\nc\r\n\r\n"
    );
    assert_eq!(&*canonicalize_crlf(b"\n"), b"\r\n");
    assert_eq!(&*canonicalize_crlf(b"a\rb\n"), b"a\rb\r\n");
    assert_eq!(
        &*canonicalize_crlf(&lf_only(SIGNED_PART_QP)),
        SIGNED_PART_QP
    );
}

#[test]
fn large_body_linear() {
    // 8 MiB keeps the debug-build test quick; the code paths are single passes.
    large_body(8 << 20);
}

// The 50 MiB case runs end to end through sealctl in tests/interop/negative.rs.

fn large_body(size: usize) {
    let mut data = Vec::with_capacity(size);
    let mut x = 1u32;
    while data.len() < size {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        data.push((x >> 24) as u8);
    }
    let mut enc = Vec::new();
    encode_base64_wrapped(&data, &mut enc);
    let start = std::time::Instant::now();
    assert_eq!(decode_base64(&enc).unwrap(), data);
    let lf = lf_only(&enc);
    assert_eq!(&*canonicalize_crlf(&lf), &enc[..]);
    let _ = decode_quoted_printable(&enc);
    let mut msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n".to_vec();
    msg.extend_from_slice(&enc);
    msg.extend_from_slice(b"\r\n--b--\r\n");
    let e = Entity::parse(&msg);
    let parts = e.subparts().unwrap();
    assert_eq!(parts[0].body(), &enc[..]);
    assert!(start.elapsed().as_secs() < 30);
}

// ---------------------------------------------------------------- multiparts

#[test]
fn multipart_preamble_parts_epilogue() {
    let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b \t\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n";
    let mp = split_multipart(body, "b").unwrap();
    assert_eq!(&body[mp.preamble.clone()], b"preamble");
    assert_eq!(mp.parts.len(), 2);
    assert_eq!(&body[mp.parts[0].clone()], b"A: 1\r\n\r\none");
    assert_eq!(&body[mp.parts[1].clone()], b"\r\ntwo");
    assert_eq!(&body[mp.epilogue.clone()], b"epilogue\r\n");
    assert!(mp.closed);

    let lf = lf_only(body);
    let mp = split_multipart(&lf, "b").unwrap();
    assert_eq!(&lf[mp.parts[0].clone()], b"A: 1\n\none");
    assert_eq!(&lf[mp.parts[1].clone()], b"\ntwo");
    assert_eq!(&lf[mp.epilogue.clone()], b"epilogue\n");
}

#[test]
fn multipart_boundary_only_at_line_start() {
    let body = b"--b\r\ntext --b not at start\r\n--bb is another boundary\r\n --b\r\n--b\r\nsecond\r\n--b--";
    let mp = split_multipart(body, "b").unwrap();
    assert_eq!(mp.parts.len(), 2);
    assert_eq!(
        &body[mp.parts[0].clone()],
        b"text --b not at start\r\n--bb is another boundary\r\n --b"
    );
    assert_eq!(&body[mp.parts[1].clone()], b"second");
    assert!(mp.closed);
    assert!(mp.preamble.is_empty());
    assert!(mp.epilogue.is_empty());
}

#[test]
fn multipart_missing_close_and_missing_boundary() {
    let body = b"--b\r\none\r\n--b\r\ntwo, truncated";
    let mp = split_multipart(body, "b").unwrap();
    assert!(!mp.closed);
    assert_eq!(&body[mp.parts[1].clone()], b"two, truncated");
    assert!(split_multipart(b"no delimiter here\r\n", "b").is_err());
    assert!(split_multipart(b"--\r\n", "").is_err());
    let e = Entity::parse(b"Content-Type: multipart/mixed\r\n\r\n--b\r\n");
    assert!(e.multipart().is_err());
    let e = Entity::parse(b"Content-Type: text/plain\r\n\r\n--b\r\n");
    assert!(e.multipart().is_err());
    // Empty parts.
    let mp = split_multipart(b"--b\r\n--b\r\n--b--", "b").unwrap();
    assert_eq!(mp.parts, vec![5..5, 10..10]);
}

#[test]
fn nested_multiparts() {
    let msg = b"Content-Type: multipart/mixed; boundary=outer\n\n\
--outer\n\
Content-Type: multipart/alternative; boundary=\"inner\"\n\n\
--inner\n\
Content-Type: text/plain\n\nplain\n\
--inner\n\
Content-Type: text/html\n\n<p>html</p>\n\
--inner--\n\
--outer\n\
Content-Type: application/octet-stream; name=a.p7m\n\
Content-Transfer-Encoding: base64\n\naGVsbG8=\n\
--outer--\n";
    let e = Entity::parse(msg);
    let parts = e.subparts().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].smime_kind(), SmimeKind::Enveloped);
    assert_eq!(&*parts[1].decoded_body().unwrap(), b"hello");
    let inner = parts[0].subparts().unwrap();
    assert_eq!(inner.len(), 2);
    assert_eq!(inner[0].body(), b"plain");
    assert_eq!(inner[1].content_type().essence(), "text/html");
    assert_eq!(inner[1].body(), b"<p>html</p>");
}

#[test]
fn signed_split_keeps_exact_qp_bytes() {
    let e = Entity::parse(SIGNED_QP);
    assert_eq!(e.smime_kind(), SmimeKind::MultipartSigned);
    let sp = e.signed_parts().unwrap();
    assert_eq!(sp.signed, SIGNED_PART_QP);
    assert_eq!(&e.body()[sp.signed_range.clone()], SIGNED_PART_QP);
    assert_eq!(sp.part_count, 2);
    assert!(sp.closed);
    assert_eq!(
        sp.signature.content_type().essence(),
        "application/pkcs7-signature"
    );
    assert_eq!(sp.signature.filename().as_deref(), Some("smime.p7s"));
    assert_eq!(
        sp.signature.decoded_body().unwrap().as_ref(),
        decode_base64(b"MIAGCSqGSIb3DQEHAqCAMIACAQEx")
            .unwrap()
            .as_slice()
    );

    // LF-only: the split gives the LF bytes, canonicalisation gives the CRLF original.
    let lf = lf_only(SIGNED_QP);
    let e = Entity::parse(&lf);
    let sp = e.signed_parts().unwrap();
    assert_eq!(sp.signed, lf_only(SIGNED_PART_QP).as_slice());
    assert_eq!(&*canonicalize_crlf(sp.signed), SIGNED_PART_QP);

    // Not multipart/signed, or only one part.
    assert!(
        Entity::parse(b"Content-Type: text/plain\r\n\r\nx")
            .signed_parts()
            .is_err()
    );
    assert!(split_signed(b"--b\r\nonly one\r\n--b--\r\n", "b").is_err());
}

// ---------------------------------------------------------------- building

#[test]
fn builds_pkcs7_mime() {
    let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let out = build_pkcs7_mime(SmimeType::EnvelopedData, &der);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with(
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
    ));
    assert!(text.lines().all(|l| l.len() <= 90));
    let e = Entity::parse(&out);
    assert_eq!(e.smime_kind(), SmimeKind::Enveloped);
    assert_eq!(e.decoded_body().unwrap().as_ref(), der.as_slice());
    for b in e.body().split(|&b| b == b'\n') {
        assert!(b.len() <= 77);
    }
    let e2 = build_pkcs7_mime(SmimeType::AuthEnvelopedData, &der);
    assert_eq!(Entity::parse(&e2).smime_kind(), SmimeKind::AuthEnveloped);
    let e3 = build_pkcs7_mime(SmimeType::SignedData, &der);
    assert_eq!(Entity::parse(&e3).smime_kind(), SmimeKind::SignedOpaque);
    assert_eq!(Entity::parse(&e3).filename().as_deref(), Some("smime.p7m"));
}

#[test]
fn builds_multipart_signed_round_trip() {
    let sig = b"\x30\x80signature bytes\x00\x00";
    let out = build_multipart_signed(SIGNED_PART_QP, "sha-256", sig, &[0xab; 16]);
    let e = Entity::parse(&out);
    assert_eq!(e.smime_kind(), SmimeKind::MultipartSigned);
    let ct = e.content_type();
    assert_eq!(ct.param("micalg"), Some("sha-256"));
    assert_eq!(ct.param("protocol"), Some("application/pkcs7-signature"));
    let sp = e.signed_parts().unwrap();
    assert_eq!(sp.signed, SIGNED_PART_QP);
    assert!(sp.closed);
    assert_eq!(sp.signature.decoded_body().unwrap().as_ref(), sig);
    assert_eq!(sp.signature.filename().as_deref(), Some("smime.p7s"));
    assert_eq!(sp.signature.content_type().param("name"), Some("smime.p7s"));

    // The boundary is changed when the content contains it.
    let boundary = format!("=_sealgate_{}", "cd".repeat(16));
    let mut part = b"Content-Type: text/plain\r\n\r\n".to_vec();
    part.extend_from_slice(format!("--{boundary}\r\n--{boundary}_1\r\n").as_bytes());
    let out = build_multipart_signed(&part, "sha-256", sig, &[0xcd; 16]);
    let e = Entity::parse(&out);
    assert_eq!(
        e.content_type().param("boundary"),
        Some(format!("{boundary}_2").as_str())
    );
    assert_eq!(e.signed_parts().unwrap().signed, part.as_slice());

    assert!(build_multipart_signed_with_boundary(&part, "sha-256", sig, &boundary).is_err());
    assert!(build_multipart_signed_with_boundary(&part, "sha-256", sig, "bad\"quote").is_err());
    assert!(build_multipart_signed_with_boundary(&part, "sha-256", sig, "").is_err());
    let out =
        build_multipart_signed_with_boundary(&part, "sha-256,sha-1", sig, "ok-boundary").unwrap();
    let e = Entity::parse(&out);
    assert_eq!(e.content_type().param("micalg"), Some("sha-256,sha-1"));
    assert_eq!(e.signed_parts().unwrap().signed, part.as_slice());
}

#[test]
fn split_and_assemble_message() {
    let msg = b"Received: from x\r\nFrom: a@b\r\nMIME-Version: 1.0\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nSubject: s\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n";
    let e = Entity::parse(msg);
    let split = split_message(&e);
    let names: Vec<&str> = split.outer.fields().iter().map(HeaderField::name).collect();
    assert_eq!(names, ["Received", "From", "MIME-Version", "Subject"]);
    assert_eq!(
        split.inner,
        b"Content-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n"
    );
    // Put a new entity in.
    let new_inner = build_pkcs7_mime(SmimeType::EnvelopedData, b"der");
    let rebuilt = assemble_message(&split.outer, &new_inner);
    let r = Entity::parse(&rebuilt);
    assert_eq!(r.headers().len(), 7);
    assert_eq!(r.headers_named("MIME-Version").count(), 1);
    assert_eq!(r.smime_kind(), SmimeKind::Enveloped);
    assert_eq!(&*r.decoded_body().unwrap(), b"der");
    // And back again: the original inner entity gives back the original message bytes
    // (content headers now after the others).
    let back = assemble_message(&split.outer, &split.inner);
    assert_eq!(
        back,
        b"Received: from x\r\nFrom: a@b\r\nMIME-Version: 1.0\r\nSubject: s\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n"
    );

    // No Content-Type: the default becomes explicit; no MIME-Version: it is added.
    let e = Entity::parse(b"From: a@b\nSubject: plain\n\nhello\n");
    let split = split_message(&e);
    assert_eq!(
        split.inner,
        b"Content-Type: text/plain; charset=us-ascii\r\n\nhello\n"
    );
    let rebuilt = assemble_message(&split.outer, &split.inner);
    assert_eq!(
        rebuilt,
        b"From: a@b\nSubject: plain\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\nhello\n"
    );

    // Headers only, and an inner entity without header fields.
    let e = Entity::parse(b"Subject: x");
    let split = split_message(&e);
    assert_eq!(
        split.inner,
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    let rebuilt = assemble_message(&split.outer, b"no headers here");
    assert_eq!(
        rebuilt,
        b"Subject: x\r\nMIME-Version: 1.0\r\n\r\nno headers here"
    );
}

#[test]
fn header_list_editing() {
    let msg = b"X-Sealgate-Decrypted: forged\r\nFrom: a@b\r\nx-sealgate-signature: forged\r\n too\r\nX-Sealgatex: keep\r\n\r\nbody";
    let e = Entity::parse(msg);
    let mut h = e.header_list();
    assert_eq!(h.remove_headers_with_prefix("X-Sealgate-"), 2);
    h.add_header("X-Sealgate-Decrypted", "yes\r\nBcc: injected")
        .unwrap();
    assert!(h.add_header("Bad Name", "x").is_err());
    assert!(h.add_header("", "x").is_err());
    assert!(h.add_header("Bad:Name", "x").is_err());
    let out = h.write_entity(&e);
    assert_eq!(
        out,
        b"X-Sealgate-Decrypted: yes  Bcc: injected\r\nFrom: a@b\r\nX-Sealgatex: keep\r\n\r\nbody"
    );
    let r = Entity::parse(&out);
    assert!(r.header("Bcc").is_none());

    h.replace(HeaderField::new("from", "c@d").unwrap());
    assert_eq!(h.get("FROM").unwrap().value(), "c@d");
    assert_eq!(h.fields()[1].name(), "from");
    assert_eq!(h.remove("from"), 1);
    assert_eq!(h.len(), 2);
    let list: HeaderList<'_> = e.headers().iter().cloned().collect();
    assert_eq!(list.len(), 4);
    assert_eq!(list.to_bytes(), e.header_block());
}

// ---------------------------------------------------------------- protected headers

#[test]
fn protected_headers_rfc9788() {
    let outer_msg = b"From: a@b\r\nTo: c@d\r\nSubject: [...]\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nxxx";
    let inner = b"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n\
Subject: The real subject\r\n\
From: forged@evil\r\n\
Cc: e@f\r\n\
HP-Outer: Subject: [...]\r\n\
\r\n\
secret text\r\n";
    let outer = Entity::parse(outer_msg);
    let ie = Entity::parse(inner);
    let p = protected_headers(&ie).unwrap();
    assert_eq!(p.form, ProtectedForm::Rfc9788(HpMode::Cipher));
    assert_eq!(p.subject().as_deref(), Some("The real subject"));
    assert!(p.get("HP-Outer").is_none());
    let mut h = outer.header_list();
    h = substitute_protected_headers(&h, &p);
    assert_eq!(h.get("Subject").unwrap().value(), "The real subject");
    assert_eq!(h.get("From").unwrap().value(), "a@b");
    assert_eq!(h.get("Cc").unwrap().value(), "e@f");
    let msg = assemble_message(&h, p.content.raw());
    let m = Entity::parse(&msg);
    assert_eq!(m.headers_named("Subject").count(), 1);
    assert_eq!(m.headers_named("From").count(), 1);
    assert!(m.header("HP-Outer").is_none());
    assert_eq!(m.body(), b"secret text\r\n");
    assert_eq!(m.content_type().param("hp"), Some("cipher"));

    // hp="clear" and a real outer subject: outer kept.
    let inner = b"Content-Type: text/plain; hp=clear\r\nSubject: inner\r\n\r\nx";
    let p = protected_headers(&Entity::parse(inner)).unwrap();
    assert_eq!(p.form, ProtectedForm::Rfc9788(HpMode::Clear));
    let h =
        substitute_protected_headers(&Entity::parse(b"Subject: outer\r\n\r\n").header_list(), &p);
    assert_eq!(h.get("Subject").unwrap().value(), "outer");

    assert!(is_placeholder_subject(" ... "));
    assert!(is_placeholder_subject("[...]"));
    assert!(!is_placeholder_subject("hello..."));
    assert!(
        protected_headers(&Entity::parse(
            b"Content-Type: text/plain\r\nSubject: x\r\n\r\n"
        ))
        .is_none()
    );
}

#[test]
fn protected_headers_legacy() {
    let inner = b"Content-Type: message/rfc822; forwarded=no\n\n\
Subject: Legacy subject\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
Content-Type: text/plain\n\n\
legacy body\n";
    let p = protected_headers(&Entity::parse(inner)).unwrap();
    assert_eq!(p.form, ProtectedForm::LegacyRfc822);
    assert_eq!(p.subject().as_deref(), Some("Legacy subject"));
    let outer = Entity::parse(b"Subject: ...\nFrom: a@b\n\n");
    let h = substitute_protected_headers(&outer.header_list(), &p);
    assert_eq!(
        h.get("Subject").unwrap().raw(),
        b"Subject: Legacy subject\n"
    );
    assert_eq!(
        h.get("Date").unwrap().value(),
        "Mon, 1 Jan 2024 00:00:00 +0000"
    );
    let msg = assemble_message(&h, p.content.raw());
    let m = Entity::parse(&msg);
    assert_eq!(m.content_type().essence(), "text/plain");
    assert_eq!(m.body(), b"legacy body\n");
    assert_eq!(m.headers_named("Subject").count(), 1);
    // forwarded=yes is an ordinary forwarded message.
    assert!(
        protected_headers(&Entity::parse(
            b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n"
        ))
        .is_none()
    );
}

// ---------------------------------------------------------------- robustness

/// Runs every entry point on `data`; used on truncations here and by the fuzz target's
/// equivalent.
fn exercise(data: &[u8]) {
    let e = Entity::parse(data);
    let _ = (
        e.content_type(),
        e.transfer_encoding(),
        e.disposition(),
        e.filename(),
    );
    let _ = e.smime_kind();
    let _ = e.decoded_body();
    if let Ok(parts) = e.subparts() {
        for p in parts {
            let _ = (p.smime_kind(), p.decoded_body(), p.subparts());
        }
    }
    if let Ok(sp) = e.signed_parts() {
        let _ = canonicalize_crlf(sp.signed);
        let _ = sp.signature.decoded_body();
    }
    let split = split_message(&e);
    let mut outer = split.outer.clone();
    outer.remove_headers_with_prefix("X-Sealgate-");
    let _ = outer.add_header("X-Sealgate-Test", "1");
    let rebuilt = assemble_message(&outer, &split.inner);
    let again = Entity::parse(&rebuilt);
    assert_eq!(again.body(), e.body());
    if let Some(p) = protected_headers(&e) {
        let _ = substitute_protected_headers(&outer, &p);
    }
    let _ = decode_quoted_printable(data);
    let _ = decode_base64(data);
    let _ = canonicalize_crlf(data);
    for f in e.headers() {
        let _ = (f.value(), f.name(), f.unfolded());
    }
}

#[test]
fn every_prefix_parses() {
    let mut samples: Vec<Vec<u8>> = vec![SIGNED_QP.to_vec(), lf_only(SIGNED_QP)];
    samples.push(build_multipart_signed(
        SIGNED_PART_QP,
        "sha-256",
        b"sig",
        &[1; 16],
    ));
    samples.push(build_pkcs7_mime(SmimeType::EnvelopedData, &[7; 200]));
    samples.push(
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822; forwarded=no\r\n\r\nSubject: x\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--i--\r\n--o--\r\n"
            .to_vec(),
    );
    for s in &samples {
        for n in 0..=s.len() {
            exercise(&s[..n]);
            exercise(&s[n..]);
        }
    }
}
