//! Line framing: only CRLF ends a line.
//!
//! A line is read up to its LF. It is good when the LF follows a CR and no other CR is in it;
//! otherwise it is bare (a bare LF ended it, or a bare CR is inside). A line longer than the
//! limit is consumed to its LF and reported as one over-long line, never cut into pieces
//! (a piece could read as "." and end DATA where the next hop would not).

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Ended with CRLF, no other CR or LF; its bytes (without CRLF) are in the buffer.
    Good,
    /// A bare CR inside or ended by a bare LF; `crlf`: it ended with CRLF.
    Bare { crlf: bool },
    /// Longer than the limit: discarded; `crlf`: it ended with CRLF.
    TooLong { crlf: bool },
}

impl Kind {
    /// Whether the line ended with CRLF (so that the next one starts at a line boundary).
    pub(crate) fn crlf(self) -> bool {
        match self {
            Kind::Good => true,
            Kind::Bare { crlf } | Kind::TooLong { crlf } => crlf,
        }
    }
}

/// Collects one line at a time from pieces of input; holds at most `max` + 2 bytes.
#[derive(Debug)]
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    max: usize,
    too_long: bool,
    /// The last byte seen (to see a CR right before an LF that comes in the next piece).
    prev: u8,
    /// The previous call completed a line: clear before the next.
    done: bool,
}

impl LineBuf {
    pub(crate) fn new(max: usize) -> LineBuf {
        LineBuf {
            buf: Vec::new(),
            max,
            too_long: false,
            prev: 0,
            done: false,
        }
    }

    /// Forgets a partial line.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.too_long = false;
        self.prev = 0;
        self.done = false;
    }

    /// Overwrites the held line with zeros (it carried credentials).
    pub(crate) fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.buf.zeroize();
    }

    /// Takes bytes from `input` up to and including the first LF. Returns how many were
    /// taken and, when a line is complete, how it ended ([`LineBuf::line`] has its bytes).
    pub(crate) fn push(&mut self, input: &[u8]) -> (usize, Option<Kind>) {
        if self.done {
            self.buf.clear();
            self.too_long = false;
            self.done = false;
        }
        let Some(&last) = input.last() else {
            return (0, None);
        };
        let (n, lf) = match input.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (input.len(), false),
        };
        let before_lf = if n >= 2 { input[n - 2] } else { self.prev };
        self.prev = if lf { b'\n' } else { last };
        if !self.too_long {
            if self.buf.len() + n > self.max + 2 {
                self.too_long = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(&input[..n]);
            }
        }
        if !lf {
            return (n, None);
        }
        self.done = true;
        let crlf = before_lf == b'\r';
        if self.too_long {
            return (n, Some(Kind::TooLong { crlf }));
        }
        self.buf.pop(); // the LF
        if self.buf.pop_if(|b| *b == b'\r').is_none() || self.buf.contains(&b'\r') {
            return (n, Some(Kind::Bare { crlf }));
        }
        if self.buf.len() > self.max {
            return (n, Some(Kind::TooLong { crlf }));
        }
        (n, Some(Kind::Good))
    }

    /// The last complete line, without its line end.
    pub(crate) fn line(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes.
    fn lines(input: &[u8], max: usize, step: usize) -> Vec<(Kind, Vec<u8>)> {
        let mut lb = LineBuf::new(max);
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, k) = lb.push(rest);
                assert!(n > 0);
                assert!(lb.buf.len() <= max + 2, "the buffer stays bounded");
                rest = &rest[n..];
                if let Some(k) = k {
                    out.push((k, lb.line().to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn only_crlf_ends_a_line() {
        for step in [1, 2, 3, 100] {
            let got = lines(b"a\r\n.\r\nb\nc\rd\r\n.\r\r\n.\n\r\n", 100, step);
            let want: Vec<(Kind, &[u8])> = vec![
                (Kind::Good, b"a"),
                (Kind::Good, b"."),
                (Kind::Bare { crlf: false }, b"b"),
                (Kind::Bare { crlf: true }, b"c\rd"),
                (Kind::Bare { crlf: true }, b".\r"),
                (Kind::Bare { crlf: false }, b"."),
                (Kind::Good, b""),
            ];
            let want: Vec<(Kind, Vec<u8>)> =
                want.into_iter().map(|(k, b)| (k, b.to_vec())).collect();
            assert_eq!(got, want, "step {step}");
        }
        // A partial last line is not a line.
        assert_eq!(lines(b".", 100, 1), vec![]);
        // A CR at the end of one piece and the LF at the start of the next is CRLF.
        assert_eq!(lines(b"x\r\n", 10, 2), vec![(Kind::Good, b"x".to_vec())]);
        // A LF first in a piece after a line that ended does not see the old CR.
        assert_eq!(
            lines(b"\r\n\n", 10, 2),
            vec![(Kind::Good, vec![]), (Kind::Bare { crlf: false }, vec![])]
        );
    }

    #[test]
    fn an_over_long_line_is_one_refused_line_never_pieces() {
        for step in [1, 3, 7, 1000] {
            let mut input = vec![b'a'; 10];
            input.extend_from_slice(b".\r\nnext\r\n");
            assert_eq!(
                lines(&input, 10, step),
                vec![
                    (Kind::TooLong { crlf: true }, vec![]),
                    (Kind::Good, b"next".to_vec())
                ]
            );
            let mut input = vec![b'a'; 20];
            input.extend_from_slice(b"\n.\r\n");
            assert_eq!(
                lines(&input, 10, step),
                vec![
                    (Kind::TooLong { crlf: false }, vec![]),
                    (Kind::Good, b".".to_vec())
                ]
            );
            // Exactly at the limit is fine.
            assert_eq!(
                lines(b"0123456789\r\n", 10, step),
                vec![(Kind::Good, b"0123456789".to_vec())]
            );
        }
    }
}
