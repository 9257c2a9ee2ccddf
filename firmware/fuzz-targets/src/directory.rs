//! Fuzz target for what a certificate directory answers: an HTTP directory's whole answer
//! (status line, header, body of PEM or DER), an LDAP attribute value (a certificate or a
//! PKCS#7 bundle), an OCSP responder's answer, the query of a partner's lookup on the box's
//! own directory, a DNS resolver's SMIMEA answer (to the name below, whatever its ID), and
//! the validation of every candidate found. No panic, whatever the input.

use sealgate_directory::{http, ldap, ocsp, publish, smimea, validate};
use sealgate_smime::cert::Certificate;

fn check(ders: &[Vec<u8>]) {
    for d in ders {
        if let Ok(c) = Certificate::from_der(d) {
            let _ = validate::unusable_reason(&c, 1_700_000_000);
            let _ = validate::chains_to_anchor(&c, &[], std::slice::from_ref(&c), 1_700_000_000);
        }
    }
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    if let Ok(ders) = http::read_answer(data) {
        check(&ders);
    }
    check(&ldap::certificates_in(data));
    if let Ok(q) = std::str::from_utf8(data) {
        let _ = publish::query_address(q);
    }
    if let Ok(c) = Certificate::from_der(include_bytes!(
        "../../../fuzz/corpus/directory/certificate.der"
    )) {
        let _ = ocsp::parse_response(data, &c, &c, 1_796_443_451);
    }
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        if let Ok(a) = smimea::parse(id, SMIMEA_NAME, data)
            && let Ok(found) = smimea::certificates(&a)
        {
            check(&found.into_iter().map(|f| f.der).collect::<Vec<_>>());
        }
    }
}

/// The name the SMIMEA corpus answers (`smimea-*`).
const SMIMEA_NAME: &str =
    "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com.";
