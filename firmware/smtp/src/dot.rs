//! The DATA section a client writes: CRLF line ends and dot-stuffing (RFC 5321 4.5.2).
//!
//! Every bare CR, bare LF and CRLF in the content becomes one CRLF, and every line that
//! starts with "." gets another in front, so that nothing in the content (decrypted text an
//! outsider wrote, say) can end DATA early at the next hop: the only CRLF "." CRLF is the
//! final one.

/// A streaming dot-stuffing writer: [`DotStuffer::write`] the message in pieces of any size,
/// then [`DotStuffer::finish`].
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last byte written was a CR turned into CRLF: an LF right after it belongs to it.
    after_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A writer at the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            after_cr: false,
        }
    }

    /// Appends the DATA form of `input` to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 2);
        for &b in input {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.at_line_start = false;
                    self.after_cr = false;
                }
            }
        }
    }

    /// Ends the message: a line end if the content did not end with one, then "." CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The whole DATA section for `msg`: CRLF line ends, dot-stuffed, ending with CRLF "." CRLF.
pub fn data_section(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut d = DotStuffer::new();
    d.write(msg, &mut out);
    d.finish(&mut out);
    out
}

/// The message with every line end as CRLF (bare CR, bare LF and CRLF each become one CRLF),
/// not dot-stuffed: for BDAT, which needs no stuffing.
pub fn normalize_crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 64);
    let mut i = 0;
    while i < msg.len() {
        match msg[i] {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                if msg[i] == b'\r' && msg.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_crlf(d: &[u8]) -> bool {
        d.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => d.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && d[i - 1] == b'\r',
            _ => true,
        })
    }

    #[test]
    fn nothing_in_the_content_ends_data_at_the_next_hop() {
        assert_eq!(data_section(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n".to_vec());
        assert_eq!(data_section(b"a"), b"a\r\n.\r\n".to_vec());
        assert_eq!(data_section(b""), b".\r\n".to_vec());
        assert_eq!(data_section(b".x\r\n"), b"..x\r\n.\r\n".to_vec());
        assert_eq!(data_section(b"a\n\nb"), b"a\r\n\r\nb\r\n.\r\n".to_vec());
        assert_eq!(data_section(b"a\r\rb"), b"a\r\n\r\nb\r\n.\r\n".to_vec());
        // The published smuggling variants (SEC Consult, 2023) and their relatives.
        for smuggle in [
            &b"a\n.\nMAIL"[..],
            b"a\n.\r\nMAIL",
            b"a\r.\rMAIL",
            b"a\r.\r\nMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n.\nMAIL",
            b"a\n.\rMAIL",
            b"a\r\n.\r\r\nMAIL",
            b"a\r\n.\r\nMAIL",
            b"a\r\n\x00.\r\nMAIL",
        ] {
            let d = data_section(smuggle);
            let ends = d.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert_eq!(ends, 1, "{:?}", String::from_utf8_lossy(&d));
            assert!(d.ends_with(b"\r\n.\r\n"));
            assert!(only_crlf(&d), "only CRLF line ends");
        }
    }

    #[test]
    fn streaming_in_any_pieces_gives_the_same_bytes() {
        let msg = b".a\r\n.\r\nb\r\r\n\n.c\rd\r";
        let whole = data_section(msg);
        for step in 1..msg.len() {
            let mut out = Vec::new();
            let mut d = DotStuffer::new();
            for piece in msg.chunks(step) {
                d.write(piece, &mut out);
            }
            d.finish(&mut out);
            assert_eq!(out, whole, "step {step}");
        }
        assert_eq!(
            normalize_crlf(b"a\nb\rc\r\nd"),
            b"a\r\nb\r\nc\r\nd".to_vec()
        );
    }
}
