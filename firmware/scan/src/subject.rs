//! The Subject tag of `[scan] subject_tag` (`[SPAM]`) for mail whose action is `tag`.
//!
//! Attacker: the message's writer (any header bytes). Only the first Subject field of the
//! header block is changed, by inserting the tag before its value; everything else, folded
//! lines and the body included, stays byte for byte. Fuzzed (`fuzz_targets/scan.rs`).

/// `tag` before the value of the first Subject field of the header (a Subject field added
/// when there is none); the rest of the message unchanged. Already tagged: unchanged.
pub fn tag_subject(msg: &[u8], tag: &str) -> Vec<u8> {
    let tag: String = tag.chars().filter(|c| !c.is_control()).collect();
    let header_end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(msg.len());
    let mut at = 0;
    while at < header_end {
        let line_end = msg[at..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| at + p + 2)
            .unwrap_or(header_end);
        let line = &msg[at..line_end];
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            let mut v = 8;
            while v < line.len() && (line[v] == b' ' || line[v] == b'\t') {
                v += 1;
            }
            if line[v..].starts_with(tag.as_bytes()) {
                return msg.to_vec();
            }
            let mut out = Vec::with_capacity(msg.len() + tag.len() + 1);
            out.extend_from_slice(&msg[..at + v]);
            out.extend_from_slice(tag.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&msg[at + v..]);
            return out;
        }
        at = line_end;
    }
    let mut out = format!("Subject: {tag}\r\n").into_bytes();
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_goes_before_the_first_subject_only() {
        let m = b"From: a@b\r\nSUBJECT:  hello\r\n\tworld\r\nSubject: two\r\n\r\nSubject: body\r\n";
        assert_eq!(
            tag_subject(m, "[SPAM]"),
            b"From: a@b\r\nSUBJECT:  [SPAM] hello\r\n\tworld\r\nSubject: two\r\n\r\nSubject: body\r\n"
        );
        // Tagged already: unchanged. No Subject: one is added. No header end: still bounded.
        let once = tag_subject(m, "[SPAM]");
        assert_eq!(tag_subject(&once, "[SPAM]"), once);
        assert_eq!(
            tag_subject(b"From: a@b\r\n\r\nbody", "[X]"),
            b"Subject: [X]\r\nFrom: a@b\r\n\r\nbody"
        );
        assert_eq!(tag_subject(b"Subject:", "[X]"), b"Subject:[X] ");
        assert_eq!(tag_subject(b"", "[X]\r\n"), b"Subject: [X]\r\n");
    }
}
