//! Fuzz target for what a certificate directory answers: an HTTP directory's whole answer
//! (status line, header, body of PEM or DER), an LDAP attribute value (a certificate or a
//! PKCS#7 bundle), and the validation of every candidate found. No panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate_directory::{http, ldap, validate};
use sealgate_smime::cert::Certificate;

fn check(ders: &[Vec<u8>]) {
    for d in ders {
        if let Ok(c) = Certificate::from_der(d) {
            let _ = validate::unusable_reason(&c, 1_700_000_000);
            let _ = validate::chains_to_anchor(&c, &[], std::slice::from_ref(&c), 1_700_000_000);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ders) = http::read_answer(data) {
        check(&ders);
    }
    check(&ldap::certificates_in(data));
});
