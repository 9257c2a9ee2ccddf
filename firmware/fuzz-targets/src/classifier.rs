//! The spam classifier's model loader on attacker bytes (a model file on the data partition
//! or given to `sealctl scan --model`): `Counts::parse` as read, and again with the checksum
//! made right so the fuzzer reaches the header and entry checks. No panic; a file that loads
//! writes back to the same bytes, and a model made from it judges a message in [0, 1].

use sealgate_scan::classifier::{self, Counts, Model};
use sha2::{Digest, Sha256};

fn check(bytes: &[u8]) {
    if let Ok(c) = Counts::parse(bytes) {
        assert_eq!(
            c.to_bytes(),
            bytes,
            "a loaded model writes back to its bytes"
        );
        if c.bits() <= 18
            && let Ok(m) = Model::new(&c, Some(&c))
        {
            let view = classifier::view_of(b"Subject: hello\r\n\r\ncheap pills offer now\r\n");
            let (p, _) = m.probability(&view);
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
    }
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    check(data);
    let mut fixed = data.to_vec();
    fixed.extend_from_slice(&Sha256::digest(data));
    check(&fixed);
}
