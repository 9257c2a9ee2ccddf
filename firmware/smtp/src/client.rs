//! The client side, for the outbound client: commands written, replies read, EHLO
//! capabilities understood.
//!
//! Attacker: the next hop, or whoever sits in its place (a plain connection, a hijacked
//! address). Its replies are bounded (4 KiB each, smtp-proto's limit) and never panic us;
//! what we write never carries a CR or LF from an address, so no address can add a command.

use std::fmt;

use smtp_proto::response::parser::ResponseReceiver;

/// A command the client writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `EHLO host`.
    Ehlo(&'a str),
    /// `HELO host`.
    Helo(&'a str),
    /// `STARTTLS`.
    StartTls,
    /// `AUTH PLAIN <base64>` with an initial response.
    AuthPlain {
        /// The user name.
        username: &'a str,
        /// The password.
        password: &'a str,
    },
    /// `MAIL FROM:<address>` with optional SIZE, BODY=8BITMIME and SMTPUTF8.
    MailFrom {
        /// The reverse path (empty for `<>`).
        address: &'a str,
        /// `SIZE=` (give it only when the server advertised SIZE).
        size: Option<u64>,
        /// `BODY=8BITMIME`.
        eight_bit: bool,
        /// `SMTPUTF8`.
        smtputf8: bool,
    },
    /// `RCPT TO:<address>`.
    RcptTo(&'a str),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (the chunk's bytes follow, unstuffed).
    Bdat {
        /// The chunk's size.
        size: u64,
        /// The last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
}

/// A command that cannot be written safely.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// An address or host name with a control character, a space or `<>`, or (for a path)
    /// empty where a path is required.
    Invalid(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Invalid(what) => write!(f, "cannot write the command: invalid {what}"),
        }
    }
}

impl std::error::Error for CommandError {}

fn clean(s: &str, what: &'static str) -> Result<(), CommandError> {
    if s.len() > 1000
        || s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(CommandError::Invalid(what));
    }
    Ok(())
}

impl Command<'_> {
    /// The command's wire form, with CRLF.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        use base64::Engine;
        let line = match *self {
            Command::Ehlo(h) | Command::Helo(h) => {
                clean(h, "host name")?;
                if h.is_empty() {
                    return Err(CommandError::Invalid("host name"));
                }
                let verb = if matches!(self, Command::Ehlo(_)) {
                    "EHLO"
                } else {
                    "HELO"
                };
                format!("{verb} {h}")
            }
            Command::StartTls => "STARTTLS".into(),
            Command::AuthPlain { username, password } => {
                let mut raw = Vec::with_capacity(username.len() + password.len() + 2);
                raw.push(0);
                raw.extend_from_slice(username.as_bytes());
                raw.push(0);
                raw.extend_from_slice(password.as_bytes());
                let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
                raw.iter_mut().for_each(|b| *b = 0);
                format!("AUTH PLAIN {b64}")
            }
            Command::MailFrom {
                address,
                size,
                eight_bit,
                smtputf8,
            } => {
                clean(address, "sender address")?;
                let mut l = format!("MAIL FROM:<{address}>");
                if let Some(n) = size {
                    l.push_str(&format!(" SIZE={n}"));
                }
                if eight_bit {
                    l.push_str(" BODY=8BITMIME");
                }
                if smtputf8 {
                    l.push_str(" SMTPUTF8");
                }
                l
            }
            Command::RcptTo(a) => {
                clean(a, "recipient address")?;
                if a.is_empty() {
                    return Err(CommandError::Invalid("recipient address"));
                }
                format!("RCPT TO:<{a}>")
            }
            Command::Data => "DATA".into(),
            Command::Bdat { size, last } => {
                format!("BDAT {size}{}", if last { " LAST" } else { "" })
            }
            Command::Rset => "RSET".into(),
            Command::Noop => "NOOP".into(),
            Command::Quit => "QUIT".into(),
        };
        let mut v = line.into_bytes();
        v.extend_from_slice(b"\r\n");
        Ok(v)
    }
}

/// A reply the client read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code, when the server gave one.
    pub enhanced: Option<[u16; 3]>,
    /// The text, lines joined with `\n` (without codes).
    pub text: String,
}

impl ServerReply {
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (`354`, `334`).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx (or a code outside the defined classes): do not try again.
    pub fn is_permanent(&self) -> bool {
        !(200..500).contains(&self.code)
    }
}

impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some([a, b, c]) = self.enhanced {
            write!(f, " {a}.{b}.{c}")?;
        }
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(512)
            .collect();
        write!(f, " {text}")
    }
}

impl From<&ServerReply> for crate::Reply {
    /// The same reply, to pass on to a client (a next hop's refusal, say); its text is
    /// written sanitised like any reply's.
    fn from(r: &ServerReply) -> crate::Reply {
        crate::Reply {
            code: r.code,
            enhanced: r.enhanced,
            text: r.text.clone().into(),
        }
    }
}

/// A reply the client could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// Not an SMTP reply (no code, a bad separator).
    Malformed,
    /// Longer than 4 KiB.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed => f.write_str("malformed SMTP reply"),
            ReplyError::TooLong => f.write_str("SMTP reply too long"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Reads replies from pieces of input (smtp-proto's reply parser; multi-line replies are
/// one reply; pipelined replies come out one at a time, in order).
#[derive(Default)]
pub struct ReplyReader {
    receiver: ResponseReceiver,
    input: Vec<u8>,
    pos: usize,
}

impl fmt::Debug for ReplyReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyReader")
            .field("buffered", &(self.input.len() - self.pos))
            .finish()
    }
}

impl ReplyReader {
    /// A reader at the start of a reply.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Bytes read from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos >= self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet part of a returned reply. After the `220` to STARTTLS this must
    /// be 0: bytes a server sent behind it in clear would otherwise be read as if they came
    /// over TLS (the client side of the STARTTLS injection); close the connection instead.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next complete reply; `None` until more bytes are fed. After an error the reader
    /// is not usable (close the connection).
    pub fn next_reply(&mut self) -> Option<Result<ServerReply, ReplyError>> {
        if self.pos >= self.input.len() {
            return None;
        }
        let slice = &self.input[self.pos..];
        let mut it = slice.iter();
        let result = self.receiver.parse(&mut it);
        self.pos += slice.len() - it.as_slice().len();
        match result {
            Ok(resp) => {
                self.receiver.reset();
                Some(Ok(ServerReply {
                    code: resp.code,
                    enhanced: (resp.esc != [0, 0, 0]).then_some(resp.esc.map(u16::from)),
                    text: resp.message.trim_end_matches(['\r', '\n']).to_string(),
                }))
            }
            Err(smtp_proto::Error::NeedsMoreData { .. }) => None,
            Err(smtp_proto::Error::ResponseTooLong) => {
                self.input.clear();
                self.pos = 0;
                Some(Err(ReplyError::TooLong))
            }
            Err(_) => {
                self.input.clear();
                self.pos = 0;
                Some(Err(ReplyError::Malformed))
            }
        }
    }
}

/// What a server's EHLO reply advertised (the extensions the outbound client uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The server's name (the first line).
    pub hostname: String,
    /// SIZE, with its limit (`Some(0)`: no fixed limit).
    pub size: Option<u64>,
    /// PIPELINING.
    pub pipelining: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// CHUNKING (BDAT).
    pub chunking: bool,
    /// 8BITMIME.
    pub eight_bit_mime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// AUTH PLAIN.
    pub auth_plain: bool,
    /// AUTH LOGIN.
    pub auth_login: bool,
}

impl Capabilities {
    /// The capabilities in a positive EHLO reply (smtp-proto's EHLO parser); a reply that
    /// is not `250` gives `None`.
    pub fn from_ehlo(reply: &ServerReply) -> Option<Capabilities> {
        if reply.code != 250 {
            return None;
        }
        // Back to the wire form the parser reads.
        let lines: Vec<&str> = reply.text.split('\n').collect();
        let mut wire = Vec::with_capacity(reply.text.len() + lines.len() * 6);
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            wire.extend_from_slice(format!("250{sep}{}\r\n", l.trim_end_matches('\r')).as_bytes());
        }
        let parsed = smtp_proto::EhloResponse::parse(&mut wire.iter());
        let mut caps = Capabilities {
            hostname: lines
                .first()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string(),
            ..Capabilities::default()
        };
        let Ok(e) = parsed else {
            // A server whose extension lines smtp-proto cannot read: assume none.
            return Some(caps);
        };
        let has = |c: u32| e.capabilities & c != 0;
        caps.size = has(smtp_proto::EXT_SIZE).then_some(e.size as u64);
        caps.pipelining = has(smtp_proto::EXT_PIPELINING);
        caps.starttls = has(smtp_proto::EXT_START_TLS);
        caps.chunking = has(smtp_proto::EXT_CHUNKING);
        caps.eight_bit_mime = has(smtp_proto::EXT_8BIT_MIME);
        caps.smtputf8 = has(smtp_proto::EXT_SMTP_UTF8);
        caps.enhanced_status_codes = has(smtp_proto::EXT_ENHANCED_STATUS_CODES);
        caps.auth_plain = e.auth_mechanisms & smtp_proto::AUTH_PLAIN != 0;
        caps.auth_login = e.auth_mechanisms & smtp_proto::AUTH_LOGIN != 0;
        Some(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(input: &[u8], step: usize) -> Vec<Result<ServerReply, ReplyError>> {
        let mut r = ReplyReader::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            r.feed(piece);
            while let Some(x) = r.next_reply() {
                out.push(x);
            }
        }
        out
    }

    #[test]
    fn commands_are_written_and_nothing_can_add_a_line() {
        let enc = |c: Command<'_>| String::from_utf8(c.encode().expect("encode")).expect("utf8");
        assert_eq!(enc(Command::Ehlo("box.test")), "EHLO box.test\r\n");
        assert_eq!(
            enc(Command::MailFrom {
                address: "a@b.org",
                size: Some(10),
                eight_bit: true,
                smtputf8: false
            }),
            "MAIL FROM:<a@b.org> SIZE=10 BODY=8BITMIME\r\n"
        );
        assert_eq!(
            enc(Command::MailFrom {
                address: "",
                size: None,
                eight_bit: false,
                smtputf8: false
            }),
            "MAIL FROM:<>\r\n"
        );
        assert_eq!(enc(Command::RcptTo("c@d.org")), "RCPT TO:<c@d.org>\r\n");
        assert_eq!(
            enc(Command::Bdat {
                size: 5,
                last: true
            }),
            "BDAT 5 LAST\r\n"
        );
        assert_eq!(
            enc(Command::AuthPlain {
                username: "u",
                password: "p"
            }),
            "AUTH PLAIN AHUAcA==\r\n"
        );
        for bad in ["a@b\r\nRSET", "a b@c", "a>@b", "a@b\n", ""] {
            assert!(Command::RcptTo(bad).encode().is_err(), "{bad:?}");
        }
        assert!(
            Command::MailFrom {
                address: "x\r\nDATA",
                size: None,
                eight_bit: false,
                smtputf8: false
            }
            .encode()
            .is_err()
        );
        assert!(Command::Ehlo("").encode().is_err());
    }

    #[test]
    fn replies_multi_line_pipelined_and_in_pieces() {
        let input = b"220 mx.test ESMTP\r\n250-mx.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-CHUNKING\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n250 2.1.0 OK\r\n550 5.7.1 no\r\n354 go ahead\r\n";
        for step in [1, 2, 5, 1000] {
            let got = replies(input, step);
            assert_eq!(got.len(), 5, "step {step}: {got:?}");
            let got: Vec<ServerReply> = got.into_iter().map(|r| r.expect("reply")).collect();
            assert_eq!(got[0].code, 220);
            assert_eq!(got[0].text, "mx.test ESMTP");
            let caps = Capabilities::from_ehlo(&got[1]).expect("caps");
            assert_eq!(caps.hostname, "mx.test");
            assert_eq!(caps.size, Some(1000));
            assert!(caps.pipelining && caps.starttls && caps.chunking && caps.eight_bit_mime);
            assert!(caps.enhanced_status_codes && caps.auth_plain && caps.auth_login);
            assert!(!caps.smtputf8);
            assert_eq!(got[2].enhanced, Some([2, 1, 0]));
            assert_eq!(got[2].text, "OK");
            assert!(got[3].is_permanent() && got[3].enhanced == Some([5, 7, 1]));
            assert!(got[4].is_intermediate() && got[4].enhanced.is_none());
        }
        // A server that advertises nothing.
        let got = replies(b"250 old.test\r\n", 3);
        let caps = Capabilities::from_ehlo(got[0].as_ref().expect("reply")).expect("caps");
        assert_eq!(caps.size, None);
        assert!(!caps.pipelining && !caps.starttls);
        assert_eq!(
            Capabilities::from_ehlo(&ServerReply {
                code: 502,
                enhanced: None,
                text: "no".into()
            }),
            None
        );
    }

    #[test]
    fn bad_and_endless_replies_are_errors() {
        assert!(matches!(
            replies(b"hello\r\n", 100).first(),
            Some(Err(ReplyError::Malformed))
        ));
        let mut long = b"250-".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10_000));
        let got = replies(&long, 512);
        assert!(
            matches!(got.first(), Some(Err(ReplyError::TooLong))),
            "{got:?}"
        );
        let mut r = ReplyReader::new();
        r.feed(b"25");
        assert_eq!(r.next_reply(), None);
        r.feed(b"0 ok\r\n");
        assert_eq!(r.next_reply().map(|x| x.map(|r| r.code)), Some(Ok(250)));
    }

    #[test]
    fn bytes_behind_a_starttls_reply_are_visible() {
        let mut r = ReplyReader::new();
        r.feed(b"220 2.0.0 go ahead\r\n250 injected\r\n");
        assert_eq!(r.next_reply().map(|x| x.map(|r| r.code)), Some(Ok(220)));
        assert!(
            r.buffered() > 0,
            "the client must see the injection and close"
        );
    }

    #[test]
    fn a_next_hops_refusal_can_be_passed_on() {
        let mut r = ReplyReader::new();
        r.feed(b"550-5.1.1 no such\r\n550 5.1.1 user \x1b[31m\r\n");
        let got = r.next_reply().expect("reply").expect("ok");
        assert_eq!(got.enhanced, Some([5, 1, 1]));
        let passed = crate::Reply::from(&got);
        assert_eq!(
            passed.to_bytes(),
            b"550-5.1.1 no such\r\n550 5.1.1 user  [31m\r\n".to_vec()
        );
    }
}
