//! Fuzz target for the MIME layer: every parsing entry point on arbitrary bytes, plus the
//! invariants that must hold whatever the input (no panic, rebuilt messages keep the body).

use sealgate_smime::mime::{self, ContentDisposition, ContentType, Entity, TransferEncoding};

/// Parses `data` as an entity and walks it (and its sub-entities, to a small depth).
fn walk(e: &Entity<'_>, depth: usize) {
    if depth > 6 {
        return;
    }
    let ct = e.content_type();
    let _ = (ct.essence(), ct.param("boundary"), ct.param("name"));
    let _ = (
        e.transfer_encoding(),
        e.disposition(),
        e.filename(),
        e.line_ending(),
    );
    let _ = e.smime_kind();
    if let Ok(body) = e.decoded_body()
        && ct.is("message", "rfc822")
    {
        walk(&Entity::parse(&body), depth + 1);
    }
    for f in e.headers() {
        let _ = (f.name(), f.value(), f.raw_value(), f.is_malformed());
    }
    if let Ok(sp) = e.signed_parts() {
        // The signed bytes are a slice of the body, and canonical form is idempotent.
        let canon = mime::canonicalize_crlf(sp.signed);
        assert!(matches!(
            mime::canonicalize_crlf(&canon),
            std::borrow::Cow::Borrowed(_)
        ));
        walk(&Entity::parse(sp.signed), depth + 1);
        let _ = sp.signature.decoded_body();
    }
    if let Ok(mp) = e.multipart() {
        let body = e.body();
        for r in &mp.parts {
            assert!(r.start <= r.end && r.end <= body.len());
        }
        if let Ok(parts) = e.subparts() {
            for p in parts.iter().take(16) {
                walk(p, depth + 1);
            }
        }
    }
    if let Some(p) = mime::protected_headers(e) {
        let _ = p.subject();
        let outer = e.header_list();
        let subst = mime::substitute_protected_headers(&outer, &p);
        let _ = mime::assemble_message(&subst, p.content.raw());
    }
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let e = Entity::parse(data);
    // The header block, separator and body tile the input.
    assert_eq!(
        e.header_block().len() + e.separator().len() + e.body().len(),
        data.len()
    );
    walk(&e, 0);

    // Split for signing/encryption and put back together: the body survives unchanged.
    let split = mime::split_message(&e);
    let mut outer = split.outer.clone();
    outer.remove_headers_with_prefix("X-Sealgate-");
    let _ = outer.add_header("X-Sealgate-Decrypted", "yes");
    let rebuilt = mime::assemble_message(&outer, &split.inner);
    let again = Entity::parse(&rebuilt);
    assert_eq!(again.body(), e.body());
    assert!(again.header("X-Sealgate-Decrypted").is_some());
    let _ = outer.write_entity(&e);

    // Field-value parsers and decoders on the raw bytes.
    let _ = ContentType::parse(data);
    let _ = ContentDisposition::parse(data);
    let _ = TransferEncoding::parse(data);
    let _ = mime::decode_base64(data);
    let _ = mime::decode_quoted_printable(data);
    let _ = mime::canonicalize_crlf(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = mime::decode_rfc2047(s);
        // The From parser: every address it returns is lowercase and has an '@'.
        for a in sealgate_smime::message::mailbox_addresses(s) {
            assert!(a.contains('@'));
        }
    }
    if let Some((&first, rest)) = data.split_first() {
        let boundary: String = rest
            .iter()
            .take(usize::from(first % 8) + 1)
            .map(|&b| char::from(b'a' + b % 26))
            .collect();
        let _ = mime::split_multipart(rest, &boundary);
        let _ = mime::split_signed(rest, &boundary);
        // Building around arbitrary content: the signed part comes back byte for byte.
        let built = mime::build_multipart_signed(rest, "sha-256", b"sig", &[first; 16]);
        let b = Entity::parse(&built);
        let sp = b.signed_parts().expect("our own multipart/signed splits");
        assert_eq!(sp.signed, rest);
    }
}
