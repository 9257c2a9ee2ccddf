//! The loop marker's value, `BOX-ID; dir=VERB; t=UNIX; mac=HEX`, read and written (std only,
//! so the fuzz target `fuzz/fuzz_targets/loop_marker.rs` includes this file as it is).
//!
//! Attacker: whoever writes a message's header (a marker is outsider input until its MAC
//! verifies, `process.rs`). Reading never panics and accepts exactly four parts, a decimal
//! time and an even-length hex MAC; anything else is no marker.

/// A marker's parts, before its MAC is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker<'a> {
    /// The box that says it wrote it.
    pub box_id: &'a str,
    /// The listener (`decrypt`, `encrypt`, `inbound`, `submit`).
    pub dir: &'a str,
    /// When (Unix seconds).
    pub t: i64,
    /// The HMAC-SHA256 tag.
    pub mac: Vec<u8>,
}

/// Reads an unfolded field value (whitespace runs as single spaces).
pub fn parse(value: &str) -> Option<Marker<'_>> {
    let mut parts = value.split(';').map(str::trim);
    let (Some(box_id), Some(dir), Some(t), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let t = t.strip_prefix("t=")?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Marker {
        box_id,
        dir: dir.strip_prefix("dir=")?,
        t: t.parse().ok()?,
        mac: unhex(mac.strip_prefix("mac=")?)?,
    })
}

/// Writes a marker's value.
pub fn format(box_id: &str, dir: &str, t: i64, mac: &[u8]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{box_id}; dir={dir}; t={t}; mac={hex}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_nothing_else_is_one() {
        let v = format("box1", "inbound", 1_700_000_000, &[0xab, 0x01]);
        assert_eq!(v, "box1; dir=inbound; t=1700000000; mac=ab01");
        assert_eq!(
            parse(&v),
            Some(Marker {
                box_id: "box1",
                dir: "inbound",
                t: 1_700_000_000,
                mac: vec![0xab, 0x01]
            })
        );
        for bad in [
            "",
            "box1",
            "box1; dir=inbound; t=1; mac=ab; extra",
            "box1; inbound; t=1; mac=ab",
            "box1; dir=inbound; t=-1; mac=ab",
            "box1; dir=inbound; t=+1; mac=ab",
            "box1; dir=inbound; t=1; mac=abc",
            "box1; dir=inbound; t=1; mac=zz",
            "box1; dir=inbound; t=1; mac=é1",
            "box1; dir=inbound; t=99999999999999999999; mac=ab",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
