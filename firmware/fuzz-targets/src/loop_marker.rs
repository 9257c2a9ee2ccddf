//! Fuzz target for the loop marker's value (sealgated's `smtp/marker.rs`, included as it is,
//! since the daemon is no library): `BOX-ID; dir=VERB; t=UNIX; mac=HEX` from a message's
//! header, outsider input until its MAC verifies.
//!
//! Invariants: no panic; what reads as a marker is written back by `format` to a value that
//! reads as the same marker; a marker's time is never negative.

#[allow(dead_code)]
#[path = "../../sealgated/src/smtp/marker.rs"]
mod marker;

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let value: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(m) = marker::parse(&value) {
        assert!(m.t >= 0);
        let again = marker::format(m.box_id, m.dir, m.t, &m.mac);
        assert_eq!(
            marker::parse(&again).as_ref(),
            Some(&m),
            "{value:?} -> {again:?}"
        );
    }
}
