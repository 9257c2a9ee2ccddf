//! Fuzzes the CMS side of the engine: the BER reader, certificate parsing, EnvelopedData and
//! SignedData decoding, decryption with real keys, and the message pipeline around them.

use std::sync::OnceLock;

use sealgate_smime::asn1::Tlv;
use sealgate_smime::cert::Certificate;
use sealgate_smime::envelope;
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::{self, VerifyOptions};

fn keys() -> &'static [SoftwareKey] {
    static KEYS: OnceLock<Vec<SoftwareKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            (
                &include_bytes!("../../../fuzz/keys/rsa.key")[..],
                &include_bytes!("../../../fuzz/keys/rsa.pem")[..],
            ),
            (
                &include_bytes!("../../../fuzz/keys/ec.key")[..],
                &include_bytes!("../../../fuzz/keys/ec.pem")[..],
            ),
            (
                &include_bytes!("../../../fuzz/keys/x25519.key")[..],
                &include_bytes!("../../../fuzz/keys/x25519.pem")[..],
            ),
            (
                &include_bytes!("../../../fuzz/keys/rsa-1024.key")[..],
                &include_bytes!("../../../fuzz/keys/rsa-1024.pem")[..],
            ),
        ]
        .iter()
        .map(|(k, c)| SoftwareKey::from_key_and_cert(k, c).expect("fuzz keys load"))
        .collect()
    })
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let keys: Vec<&dyn PrivateKey> = keys().iter().map(|k| k as &dyn PrivateKey).collect();
    let _ = Tlv::parse(data).map(|t| t.octets().map(|o| o.len()));
    let _ = Certificate::from_der(data);
    let _ = envelope::inspect(data);
    let _ = envelope::decrypt(data, &keys);
    let _ = signed::verify(data, None, &VerifyOptions::default());
    let _ = signed::verify(data, Some(b"detached content"), &VerifyOptions::default());
    let _ = signed::certificates(data);
    let _ = message::inspect(data);
    let _ = message::open(data, &keys, &VerifyOptions::default(), OpenMode::Everything);
    let _ = message::verify_message(data, None, &VerifyOptions::default());
}
