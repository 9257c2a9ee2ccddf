//! Replies a server sends: a code, an enhanced status code (RFC 3463), and text.

use std::borrow::Cow;
use std::fmt;

/// The longest text line of a reply written (RFC 5321 allows 512 octets with the code).
const MAX_TEXT_LINE: usize = 400;
/// The most text lines one reply writes.
const MAX_TEXT_LINES: usize = 16;

/// One SMTP reply.
///
/// The text may come from the peer (an unknown parameter's name) or from the driver: it is
/// written with every control character replaced, lines cut at 400 bytes and at most 16 of
/// them, so that no text can inject a reply line of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code (class, subject, detail), written when the session
    /// advertises ENHANCEDSTATUSCODES.
    pub enhanced: Option<[u16; 3]>,
    /// The text; a `\n` starts another line of a multi-line reply.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an enhanced status code: `Reply::new(550, [5, 7, 1], "not allowed")`.
    pub fn new(code: u16, enhanced: [u16; 3], text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (the greeting, `354`, `334`).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// A positive completion (2xx) or intermediate (3xx) reply.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// Appends the reply's wire form (CRLF line ends) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced: bool) {
        let code = self.code.clamp(200, 599);
        let lines: Vec<&str> = self.text.split('\n').take(MAX_TEXT_LINES).collect();
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if enhanced && let Some([a, b, c]) = self.enhanced {
                out.extend_from_slice(format!("{a}.{b}.{c}").as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            let mut n = 0;
            for ch in line.chars() {
                let ch = if ch.is_control() { ' ' } else { ch };
                if n + ch.len_utf8() > MAX_TEXT_LINE {
                    break;
                }
                n += ch.len_utf8();
                let mut b = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form, with the enhanced status code.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v, true);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        f.write_str(String::from_utf8_lossy(&b).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_inject_reply_lines() {
        let r = Reply::new(501, [5, 5, 4], "bad \r\n250 OK\x00 x");
        assert_eq!(
            r.to_bytes(),
            b"501-5.5.4 bad  \r\n501 5.5.4 250 OK  x\r\n".to_vec()
        );
        let mut v = Vec::new();
        Reply::new(250, [2, 0, 0], "OK").write_to(&mut v, false);
        assert_eq!(v, b"250 OK\r\n");
        let long = Reply::new(500, [5, 0, 0], "x".repeat(10_000) + &"\n".repeat(100));
        let b = long.to_bytes();
        assert!(b.len() < 600 + 16 * 20, "{}", b.len());
        assert_eq!(Reply::plain(999, "x").to_bytes(), b"599 x\r\n");
    }
}
