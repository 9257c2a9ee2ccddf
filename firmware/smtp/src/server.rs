//! The server side: one SMTP session as a state machine, bytes in, events and replies out.
//!
//! Attackers: whoever reaches a listener. They may send any bytes split anywhere, pipeline
//! without reading replies, hide a second transaction behind a line end the next hop reads
//! differently (smuggling), inject commands before a STARTTLS handshake, send endless lines,
//! chunks or recipients. The session answers all of it with a reply and bounded memory;
//! what a role allows (which senders, recipients, credentials) is the driver's decision,
//! asked through [`Event`]s.

use std::collections::VecDeque;
use std::fmt;

use base64::Engine;
use smtp_proto::Request;
use zeroize::Zeroizing;

use crate::line::{Kind, LineBuf};
use crate::reply::Reply;

/// Pending output above which the session asks the driver to write before going on.
const OUTPUT_HIGH: usize = 16 * 1024;
/// Message bytes collected before they are handed out as one [`Event::Data`].
const DATA_CHUNK: usize = 64 * 1024;

/// The extensions a session advertises in its EHLO reply (and so accepts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// CHUNKING: the BDAT command (RFC 3030).
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034): replies carry `X.Y.Z` codes.
    pub enhanced_status_codes: bool,
    /// SIZE with [`Config::max_message_bytes`] (RFC 1870).
    pub size: bool,
    /// STARTTLS (RFC 3207), offered while the connection is not TLS yet.
    pub starttls: bool,
    /// AUTH PLAIN LOGIN (RFC 4954), offered and accepted only over TLS.
    pub auth: bool,
}

impl Default for Extensions {
    /// Everything but STARTTLS and AUTH, which a role turns on when it has a certificate and
    /// a way to check credentials.
    fn default() -> Self {
        Extensions {
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            enhanced_status_codes: true,
            size: true,
            starttls: false,
            auth: false,
        }
    }
}

/// How a session behaves: one per role (hand-off, submission, inbound).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// The greeting's text after the hostname (`220 HOSTNAME TEXT`).
    pub greeting: String,
    /// What is advertised.
    pub extensions: Extensions,
    /// The connection is TLS from the start (implicit TLS, port 465).
    pub tls: bool,
    /// MAIL is refused (`530 5.7.0`) until AUTH succeeded.
    pub require_auth: bool,
    /// The largest message taken (DATA after unstuffing, or all BDAT chunks together).
    pub max_message_bytes: u64,
    /// Accepted recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// The longest command line (and AUTH response), without CRLF; longer is consumed and
    /// refused with `500 5.5.2`.
    pub max_command_line: usize,
    /// The longest message line in DATA, without CRLF; a longer one refuses the message
    /// with `552 5.3.4` (it is read to its end first, never cut into pieces).
    pub max_data_line: usize,
    /// Refused commands (syntax, sequence) before the session ends with `421`.
    pub max_errors: usize,
    /// Refused AUTH attempts before the session ends with `421`.
    pub max_auth_failures: usize,
}

impl Config {
    /// The defaults for `hostname`: [`Extensions::default`], no TLS, 25 MiB messages, 100
    /// recipients, 4 KiB command and AUTH lines (RFC 4954 allows AUTH lines up to 12 KiB;
    /// PLAIN and LOGIN with real credentials stay far below 4 KiB), 64 KiB message lines,
    /// 20 errors, 3 AUTH failures.
    pub fn new(hostname: impl Into<String>) -> Config {
        Config {
            hostname: hostname.into(),
            greeting: "ESMTP".into(),
            extensions: Extensions::default(),
            tls: false,
            require_auth: false,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 4096,
            max_data_line: 64 * 1024,
            max_errors: 20,
            max_auth_failures: 3,
        }
    }
}

/// The BODY parameter of MAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// Not given.
    Unspecified,
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// A MAIL command the session accepted syntactically; the driver decides.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MailFrom {
    /// The reverse path as given (empty for the null sender `<>`).
    pub address: String,
    /// The declared size (`SIZE=`), already checked against the limit.
    pub size: Option<u64>,
    /// The BODY parameter.
    pub body: Body,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// A RCPT command the session accepted syntactically; the driver decides.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RcptTo {
    /// The forward path as given (never empty).
    pub address: String,
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (the common draft).
    Login,
}

/// Credentials a client gave with AUTH. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The authorisation identity (PLAIN's first field; usually empty).
    pub authzid: String,
    /// The user name.
    pub username: String,
    /// The password, wiped from memory when dropped.
    pub password: Zeroizing<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the driver must do next (from [`Session::next_event`]).
///
/// Events marked *answer* stop the session until the driver calls [`Session::accept`],
/// [`Session::accept_with`] or [`Session::refuse`]; asking again returns the same event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Write [`Session::take_output`] to the peer, then read and [`Session::feed`] more bytes.
    NeedInput,
    /// Much output is pending: write [`Session::take_output`], then ask again (no new input
    /// is needed).
    Flush,
    /// The `220` to STARTTLS is in the output: write it, run the TLS handshake, then call
    /// [`Session::tls_started`]. Input that came after the command was discarded (the
    /// STARTTLS injection defence).
    StartTls,
    /// *Answer*: check the credentials; accept (`235`) or refuse (`535 5.7.8`, say).
    Auth {
        /// The mechanism used.
        mechanism: Mechanism,
        /// What the client gave.
        credentials: Credentials,
    },
    /// *Answer*: a sender; accept (`250 2.1.0`) or refuse with the role's reply.
    MailFrom(MailFrom),
    /// *Answer*: a recipient; accept (`250 2.1.5`) or refuse with the role's reply.
    RcptTo(RcptTo),
    /// *Answer*: the message is about to come (DATA, or the first BDAT chunk): open where it
    /// goes and accept, or refuse (`452 4.3.1` when there is no room, say).
    DataStart,
    /// Message bytes: unstuffed, in order; DATA's have CRLF line ends only, BDAT's are as
    /// the client sent them.
    Data(Vec<u8>),
    /// The message being received will not be completed (refused for a bare line end, an
    /// over-long line or its size, or ended by RSET, EHLO or STARTTLS): discard what was
    /// stored. The session answers the client itself.
    DataAborted,
    /// *Answer*: the whole message was given as [`Event::Data`]: make it durable, then accept
    /// (`250 2.0.0`, with [`Session::accept_with`] to name the queue id) or refuse.
    EndOfMessage,
    /// The client said QUIT; the `221` is in the output: write it and close.
    Quit,
    /// The session ended for abuse (too many errors or AUTH failures); the `421` is in the
    /// output: write it and close.
    Close,
}

/// What the session waits for the driver to answer.
#[derive(Debug, Clone)]
enum Pending {
    Auth(Event),
    Mail(Event),
    Rcpt(Event),
    /// DATA, or the first BDAT chunk (its size and LAST).
    DataStart(Option<(u64, bool)>),
    EndOfMessage,
}

#[derive(Debug)]
enum State {
    Command,
    /// Reading the client's answer to a `334` (AUTH).
    AuthLine(AuthStep),
    Pending(Pending),
    /// In DATA: whether the previous line ended with CRLF ("." ends DATA only after one).
    Data {
        after_crlf: bool,
    },
    /// In a BDAT chunk: bytes left, LAST, and the reply when the chunk is being discarded.
    Bdat {
        left: u64,
        last: bool,
        discard: Option<Reply>,
    },
    AwaitTls,
    Closed,
}

#[derive(Debug)]
enum AuthStep {
    /// PLAIN, waiting for the response.
    Plain,
    /// LOGIN, waiting for the user name.
    LoginUser,
    /// LOGIN, waiting for the password.
    LoginPassword(String),
}

/// The current mail transaction.
#[derive(Debug, Default)]
struct Transaction {
    mail: bool,
    rcpts: usize,
    /// DATA or BDAT began (the driver accepted [`Event::DataStart`]).
    sink_open: bool,
    bdat: bool,
    bytes: u64,
    /// The message is refused: this reply at its end.
    refused: Option<Reply>,
}

/// One SMTP server session. See the crate documentation for a driver loop.
///
/// Debug shows the state only, never buffered bytes (they may hold credentials or content).
pub struct Session {
    cfg: Config,
    state: State,
    input: Vec<u8>,
    pos: usize,
    command: LineBuf,
    data_line: LineBuf,
    output: Vec<u8>,
    events: VecDeque<Event>,
    data: Vec<u8>,
    tls: bool,
    helo: bool,
    ehlo: bool,
    helo_name: Option<String>,
    authenticated: Option<String>,
    txn: Transaction,
    errors: usize,
    auth_failures: usize,
    /// The pending question was given to the driver by [`Session::next_event`]: only then
    /// does an answer count (a question queued behind [`Event::Data`] is not yet asked).
    asked: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Command => "command",
            State::AuthLine(_) => "auth",
            State::Pending(_) => "waiting for the driver",
            State::Data { .. } => "data",
            State::Bdat { .. } => "bdat",
            State::AwaitTls => "starting TLS",
            State::Closed => "closed",
        };
        f.debug_struct("Session")
            .field("hostname", &self.cfg.hostname)
            .field("state", &state)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("buffered", &(self.input.len().saturating_sub(self.pos)))
            .field("output", &self.output.len())
            .finish()
    }
}

fn r(code: u16, esc: [u16; 3], text: &'static str) -> Reply {
    Reply::new(code, esc, text)
}

impl Session {
    /// A new session; the greeting is already in the output.
    pub fn new(cfg: Config) -> Session {
        let mut s = Session {
            command: LineBuf::new(cfg.max_command_line),
            data_line: LineBuf::new(cfg.max_data_line),
            tls: cfg.tls,
            cfg,
            state: State::Command,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            data: Vec::new(),
            helo: false,
            ehlo: false,
            helo_name: None,
            authenticated: None,
            txn: Transaction::default(),
            errors: 0,
            auth_failures: 0,
            asked: false,
        };
        let greeting = Reply::plain(
            220,
            format!("{} {}", s.cfg.hostname, s.cfg.greeting)
                .trim_end()
                .to_string(),
        );
        s.reply(greeting);
        s
    }

    /// Whether the connection is TLS (implicit, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user name AUTH accepted, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The name the client gave with EHLO or HELO (for a `Received` field).
    pub fn helo_name(&self) -> Option<&str> {
        self.helo_name.as_deref()
    }

    /// Ends the session from the driver's side (an idle timeout, a stop): `reply` (a `421`)
    /// goes into the output after what is pending, a message being received is aborted
    /// ([`Event::DataAborted`]), and [`Session::next_event`] then gives [`Event::Close`].
    pub fn shutdown(&mut self, reply: Reply) {
        if !self.is_closed() {
            self.close(reply);
        }
    }

    /// Whether the session has ended (QUIT or abuse): nothing more will be read.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Bytes read from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::AwaitTls | State::Closed) {
            return;
        }
        if self.pos >= self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The replies to write, in order (taken out of the session).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// The pending output, without taking it.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: the session starts over
    /// (RFC 3207: the client must EHLO again) and may now offer AUTH.
    pub fn tls_started(&mut self) {
        if let State::AwaitTls = self.state {
            self.tls = true;
            self.helo = false;
            self.ehlo = false;
            self.helo_name = None;
            self.input.clear();
            self.pos = 0;
            self.command.clear();
            self.state = State::Command;
        }
    }

    /// Accepts what the pending event asked, with the usual reply.
    pub fn accept(&mut self) {
        self.answer(true, None);
    }

    /// Accepts what the pending event asked, with this reply (`250 2.0.0 OK queued as ID`).
    pub fn accept_with(&mut self, reply: Reply) {
        self.answer(true, Some(reply));
    }

    /// Refuses what the pending event asked, with this reply.
    pub fn refuse(&mut self, reply: Reply) {
        self.answer(false, Some(reply));
    }

    fn answer(&mut self, ok: bool, reply: Option<Reply>) {
        // An answer when nothing is asked is ignored (it must never change the state: in
        // DATA, that would read the message as commands). A question is asked only once
        // next_event has returned it: a driver answering while it still has Data events
        // to read must not end the message it has not yet stored.
        if !std::mem::take(&mut self.asked) || !matches!(self.state, State::Pending(_)) {
            return;
        }
        let State::Pending(p) = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        let default = |code, esc, text: &'static str| reply.clone().unwrap_or(r(code, esc, text));
        match p {
            Pending::Auth(ev) => {
                if ok {
                    if let Event::Auth { credentials, .. } = ev {
                        self.authenticated = Some(credentials.username.clone());
                    }
                    self.reply(default(235, [2, 7, 0], "authentication succeeded"));
                } else {
                    self.auth_failures += 1;
                    self.reply(default(
                        535,
                        [5, 7, 8],
                        "authentication credentials invalid",
                    ));
                    if self.auth_failures >= self.cfg.max_auth_failures {
                        self.close(r(421, [4, 7, 0], "too many authentication failures"));
                    }
                }
            }
            Pending::Mail(_) => {
                if ok {
                    self.txn = Transaction {
                        mail: true,
                        ..Transaction::default()
                    };
                }
                self.reply(default(250, [2, 1, 0], "OK"));
            }
            Pending::Rcpt(_) => {
                if ok {
                    self.txn.rcpts += 1;
                }
                self.reply(default(250, [2, 1, 5], "OK"));
            }
            Pending::DataStart(bdat) => match (ok, bdat) {
                (true, None) => {
                    self.txn.sink_open = true;
                    self.reply(
                        reply.unwrap_or(Reply::plain(354, "end data with <CR><LF>.<CR><LF>")),
                    );
                    self.data_line.clear();
                    self.state = State::Data { after_crlf: true };
                }
                (true, Some((left, last))) => {
                    self.txn.sink_open = true;
                    self.txn.bdat = true;
                    self.state = State::Bdat {
                        left,
                        last,
                        discard: None,
                    };
                }
                (false, None) => {
                    self.reset_transaction();
                    self.reply(default(451, [4, 3, 0], "cannot take the message now"));
                }
                (false, Some((left, _))) => {
                    self.reset_transaction();
                    self.state = State::Bdat {
                        left,
                        last: true,
                        discard: Some(default(451, [4, 3, 0], "cannot take the message now")),
                    };
                }
            },
            Pending::EndOfMessage => {
                self.txn.sink_open = false;
                self.reset_transaction();
                self.reply(default(250, [2, 0, 0], "OK"));
            }
        }
    }

    /// Runs the session on the input it has until the driver must act.
    pub fn next_event(&mut self) -> Event {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return ev;
            }
            match &self.state {
                State::Closed => return Event::Close,
                State::AwaitTls => return Event::NeedInput,
                State::Pending(p) => {
                    self.asked = true;
                    return match p {
                        Pending::Auth(ev) | Pending::Mail(ev) | Pending::Rcpt(ev) => ev.clone(),
                        Pending::DataStart(_) => Event::DataStart,
                        Pending::EndOfMessage => Event::EndOfMessage,
                    };
                }
                _ => {}
            }
            if self.output.len() >= OUTPUT_HIGH {
                return Event::Flush;
            }
            if let State::Bdat { left: 0, .. } = self.state {
                // An empty chunk (BDAT 0 LAST) ends without input.
                self.step_bdat();
                continue;
            }
            if self.pos >= self.input.len() {
                if !self.data.is_empty() {
                    return Event::Data(std::mem::take(&mut self.data));
                }
                return Event::NeedInput;
            }
            match self.state {
                State::Data { .. } => self.step_data(),
                State::Bdat { .. } => self.step_bdat(),
                _ => self.step_command(),
            }
            if self.data.len() >= DATA_CHUNK {
                return Event::Data(std::mem::take(&mut self.data));
            }
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output, self.cfg.extensions.enhanced_status_codes);
    }

    /// A refused command: counted; too many end the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.close(r(421, [4, 7, 0], "too many errors, closing"));
        }
    }

    fn close(&mut self, reply: Reply) {
        self.reply(reply);
        self.abort_message();
        self.state = State::Closed;
        self.input.clear();
        self.pos = 0;
    }

    /// Tells the driver to drop a message it is storing.
    fn abort_message(&mut self) {
        if self.txn.sink_open {
            self.txn.sink_open = false;
            self.data.clear();
            self.events.push_back(Event::DataAborted);
        }
    }

    fn reset_transaction(&mut self) {
        self.abort_message();
        self.txn = Transaction::default();
    }

    fn step_command(&mut self) {
        let (n, kind) = self.command.push(&self.input[self.pos..]);
        self.pos += n;
        let Some(kind) = kind else { return };
        match kind {
            Kind::Good => {}
            Kind::Bare { .. } => {
                if let State::AuthLine(_) = self.state {
                    self.state = State::Command;
                }
                return self.error(r(500, [5, 5, 2], "bare CR or LF: lines end with CRLF"));
            }
            Kind::TooLong { .. } => {
                if let State::AuthLine(_) = self.state {
                    self.state = State::Command;
                }
                return self.error(r(500, [5, 5, 2], "line too long"));
            }
        }
        let mut line = self.command.line().to_vec();
        if let State::AuthLine(_) = self.state {
            self.command.wipe();
            let State::AuthLine(step) = std::mem::replace(&mut self.state, State::Command) else {
                return;
            };
            let line = Zeroizing::new(line);
            return self.auth_line(step, &line);
        }
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"AUTH") {
            // An initial response carries credentials.
            self.command.wipe();
            let mut line = Zeroizing::new(line);
            line.extend_from_slice(b"\r\n");
            let parsed = Request::parse(&mut line.iter()).map(Request::into_owned);
            return match parsed {
                Ok(req) => self.command_request(req),
                Err(e) => self.parse_error(e),
            };
        }
        line.extend_from_slice(b"\r\n");
        let parsed = Request::parse(&mut line.iter()).map(Request::into_owned);
        match parsed {
            Ok(req) => self.command_request(req),
            Err(e) => self.parse_error(e),
        }
    }

    fn parse_error(&mut self, e: smtp_proto::Error) {
        use smtp_proto::Error as E;
        let reply = match e {
            E::UnknownCommand => r(500, [5, 5, 1], "command not recognised"),
            E::InvalidSenderAddress => r(501, [5, 1, 7], "invalid sender address"),
            E::InvalidRecipientAddress => r(501, [5, 1, 3], "invalid recipient address"),
            E::SyntaxError { syntax } => Reply::new(501, [5, 5, 4], format!("syntax: {syntax}")),
            E::InvalidParameter { param } => {
                Reply::new(501, [5, 5, 4], format!("invalid parameter {param}"))
            }
            E::UnsupportedParameter { param } => {
                let param: String = param.chars().take(64).collect();
                Reply::new(555, [5, 5, 4], format!("unsupported parameter {param}"))
            }
            _ => r(500, [5, 5, 2], "command not understood"),
        };
        self.error(reply);
    }

    fn ehlo_reply(&mut self) -> Reply {
        let x = &self.cfg.extensions;
        let mut lines = vec![self.cfg.hostname.clone()];
        if x.size {
            lines.push(format!("SIZE {}", self.cfg.max_message_bytes));
        }
        for (on, name) in [
            (x.pipelining, "PIPELINING"),
            (x.eight_bit_mime, "8BITMIME"),
            (x.smtputf8, "SMTPUTF8"),
            (x.chunking, "CHUNKING"),
            (x.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
            (x.starttls && !self.tls, "STARTTLS"),
            (x.auth && self.tls, "AUTH PLAIN LOGIN"),
        ] {
            if on {
                lines.push(name.into());
            }
        }
        Reply::plain(250, lines.join("\n"))
    }

    fn command_request(&mut self, req: Request<String>) {
        match req {
            Request::Ehlo { host } | Request::Helo { host } if host.is_empty() => {
                self.error(r(501, [5, 5, 4], "a domain or address is required"))
            }
            Request::Ehlo { host } => {
                self.reset_transaction();
                self.helo_name = Some(host);
                self.helo = true;
                self.ehlo = true;
                let reply = self.ehlo_reply();
                self.reply(reply);
            }
            Request::Helo { host } => {
                self.reset_transaction();
                self.helo_name = Some(host);
                self.helo = true;
                self.ehlo = false;
                let reply = Reply::plain(250, self.cfg.hostname.clone());
                self.reply(reply);
            }
            Request::StartTls => {
                if self.tls {
                    self.error(r(503, [5, 5, 1], "TLS is already active"));
                } else if !self.cfg.extensions.starttls {
                    self.error(r(502, [5, 5, 1], "STARTTLS is not offered"));
                } else {
                    self.reset_transaction();
                    self.reply(r(220, [2, 0, 0], "ready to start TLS"));
                    // Anything the client sent after the command would be read as if it
                    // came over TLS: discarded (CVE-2011-0411 and relatives).
                    self.input.clear();
                    self.pos = 0;
                    self.command.clear();
                    self.state = State::AwaitTls;
                    self.events.push_back(Event::StartTls);
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => {
                if !self.txn.mail {
                    self.error(r(503, [5, 5, 1], "MAIL first"))
                } else if self.txn.rcpts == 0 {
                    self.error(r(503, [5, 5, 1], "RCPT first"))
                } else if self.txn.bdat {
                    self.error(r(503, [5, 5, 1], "DATA after BDAT"))
                } else {
                    self.state = State::Pending(Pending::DataStart(None));
                }
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size as u64, is_last),
            Request::Rset => {
                self.reset_transaction();
                self.reply(r(250, [2, 0, 0], "OK"));
            }
            Request::Noop { .. } => self.reply(r(250, [2, 0, 0], "OK")),
            Request::Vrfy { .. } => self.reply(r(252, [2, 1, 5], "cannot verify")),
            Request::Help { .. } => self.reply(r(214, [2, 0, 0], "see RFC 5321")),
            Request::Quit => {
                let text = format!("{} closing", self.cfg.hostname);
                self.reply(Reply::new(221, [2, 0, 0], text));
                self.abort_message();
                self.state = State::Closed;
                self.input.clear();
                self.pos = 0;
                self.events.push_back(Event::Quit);
            }
            _ => self.error(r(502, [5, 5, 1], "command not implemented")),
        }
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) {
        let x = &self.cfg.extensions;
        if !self.helo {
            return self.error(r(503, [5, 5, 1], "EHLO first"));
        }
        if self.txn.mail {
            return self.error(r(503, [5, 5, 1], "MAIL already given"));
        }
        if self.cfg.require_auth && self.authenticated.is_none() {
            return self.error(r(530, [5, 7, 0], "authentication required"));
        }
        if from
            .address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return self.error(r(501, [5, 1, 7], "invalid sender address"));
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 && !x.smtputf8 {
            return self.error(r(555, [5, 5, 4], "SMTPUTF8 is not offered"));
        }
        if from.flags & (smtp_proto::MAIL_BODY_BINARYMIME | smtp_proto::MAIL_REQUIRETLS) != 0 {
            return self.error(r(555, [5, 5, 4], "parameter not offered"));
        }
        if !from.address.is_ascii() && from.flags & smtp_proto::MAIL_SMTPUTF8 == 0 {
            return self.error(r(553, [5, 6, 7], "a non-ASCII address needs SMTPUTF8"));
        }
        let size = (from.size != 0).then_some(from.size as u64);
        if size.is_some_and(|s| s > self.cfg.max_message_bytes) {
            return self.reply(r(552, [5, 3, 4], "message size exceeds the limit"));
        }
        let body = if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 {
            Body::EightBitMime
        } else if from.flags & smtp_proto::MAIL_BODY_7BIT != 0 {
            Body::SevenBit
        } else {
            Body::Unspecified
        };
        let ev = Event::MailFrom(MailFrom {
            address: from.address,
            size,
            body,
            smtputf8: from.flags & smtp_proto::MAIL_SMTPUTF8 != 0,
        });
        self.state = State::Pending(Pending::Mail(ev));
    }

    fn rcpt(&mut self, to: smtp_proto::RcptTo<String>) {
        if !self.txn.mail {
            return self.error(r(503, [5, 5, 1], "MAIL first"));
        }
        if self.txn.sink_open {
            return self.error(r(503, [5, 5, 1], "RCPT after the message began"));
        }
        if self.txn.rcpts >= self.cfg.max_recipients {
            return self.reply(r(452, [4, 5, 3], "too many recipients"));
        }
        if to.address.is_empty()
            || to
                .address
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return self.error(r(501, [5, 1, 3], "invalid recipient address"));
        }
        let ev = Event::RcptTo(RcptTo {
            address: to.address,
        });
        self.state = State::Pending(Pending::Rcpt(ev));
    }

    fn bdat(&mut self, size: u64, last: bool) {
        // The chunk's bytes follow whatever the answer: they are always read as data, never
        // as commands.
        let refuse = if !self.cfg.extensions.chunking || !self.ehlo {
            Some(r(502, [5, 5, 1], "BDAT is not offered"))
        } else if !self.txn.mail {
            Some(r(503, [5, 5, 1], "MAIL first"))
        } else if self.txn.rcpts == 0 {
            Some(r(503, [5, 5, 1], "RCPT first"))
        } else if self.txn.bytes.saturating_add(size) > self.cfg.max_message_bytes {
            Some(r(552, [5, 3, 4], "message size exceeds the limit"))
        } else {
            None
        };
        if let Some(reply) = refuse {
            if self.txn.mail {
                self.reset_transaction();
            }
            self.errors += 1;
            self.state = State::Bdat {
                left: size,
                last,
                discard: Some(reply),
            };
            return;
        }
        self.txn.bytes += size;
        if self.txn.sink_open {
            self.state = State::Bdat {
                left: size,
                last,
                discard: None,
            };
        } else {
            self.state = State::Pending(Pending::DataStart(Some((size, last))));
        }
    }

    fn step_bdat(&mut self) {
        let State::Bdat { left, last, .. } = &mut self.state else {
            return;
        };
        let avail = &self.input[self.pos..];
        let n = avail
            .len()
            .min(usize::try_from(*left).unwrap_or(usize::MAX));
        *left -= n as u64;
        let (done, last) = (*left == 0, *last);
        if let State::Bdat { discard: None, .. } = self.state {
            self.data.extend_from_slice(&avail[..n]);
        }
        self.pos += n;
        if !done {
            return;
        }
        let State::Bdat { discard, .. } = std::mem::replace(&mut self.state, State::Command) else {
            return;
        };
        if let Some(reply) = discard {
            self.reply(reply);
            if self.errors >= self.cfg.max_errors {
                self.close(r(421, [4, 7, 0], "too many errors, closing"));
            }
            return;
        }
        if last {
            if !self.data.is_empty() {
                self.events
                    .push_back(Event::Data(std::mem::take(&mut self.data)));
            }
            self.state = State::Pending(Pending::EndOfMessage);
        } else {
            let text = format!("{} octets received", self.txn.bytes);
            self.reply(Reply::new(250, [2, 0, 0], text));
        }
    }

    fn step_data(&mut self) {
        let (n, kind) = self.data_line.push(&self.input[self.pos..]);
        self.pos += n;
        let Some(kind) = kind else { return };
        let State::Data { after_crlf } = &mut self.state else {
            return;
        };
        let at_boundary = std::mem::replace(after_crlf, kind.crlf());
        let line = self.data_line.line();
        match kind {
            Kind::Good if at_boundary && line == b"." => return self.end_of_data(),
            Kind::Good => {}
            Kind::Bare { .. } => {
                return self.refuse_message(r(
                    550,
                    [5, 6, 0],
                    "bare CR or LF in the message: lines end with CRLF",
                ));
            }
            Kind::TooLong { .. } => {
                return self.refuse_message(r(552, [5, 3, 4], "a line of the message is too long"));
            }
        }
        if !at_boundary || self.txn.refused.is_some() {
            // The rest of a line a bare LF ended: the message is refused already.
            return;
        }
        let body = line.strip_prefix(b".").unwrap_or(line);
        let n = body.len() as u64 + 2;
        if self.txn.bytes + n > self.cfg.max_message_bytes {
            return self.refuse_message(r(552, [5, 3, 4], "message size exceeds the limit"));
        }
        self.txn.bytes += n;
        self.data.extend_from_slice(body);
        self.data.extend_from_slice(b"\r\n");
    }

    /// Refuses the message in DATA: read on to its real end, answer then.
    fn refuse_message(&mut self, reply: Reply) {
        if self.txn.refused.is_none() {
            self.txn.refused = Some(reply);
            self.abort_message();
        }
    }

    fn end_of_data(&mut self) {
        self.state = State::Command;
        if let Some(reply) = self.txn.refused.take() {
            self.reset_transaction();
            return self.reply(reply);
        }
        if !self.data.is_empty() {
            self.events
                .push_back(Event::Data(std::mem::take(&mut self.data)));
        }
        self.state = State::Pending(Pending::EndOfMessage);
    }

    fn auth(&mut self, mechanism: u64, initial: String) {
        let x = &self.cfg.extensions;
        if !x.auth {
            return self.error(r(502, [5, 5, 1], "AUTH is not offered"));
        }
        if !self.tls {
            return self.error(r(538, [5, 7, 11], "encryption required: STARTTLS first"));
        }
        if !self.ehlo {
            return self.error(r(503, [5, 5, 1], "EHLO first"));
        }
        if self.authenticated.is_some() {
            return self.error(r(503, [5, 5, 1], "already authenticated"));
        }
        if self.txn.mail {
            return self.error(r(503, [5, 5, 1], "AUTH during a mail transaction"));
        }
        let initial = Zeroizing::new(initial);
        match mechanism {
            smtp_proto::AUTH_PLAIN => {
                if initial.is_empty() {
                    self.reply(Reply::plain(334, ""));
                    self.state = State::AuthLine(AuthStep::Plain);
                } else {
                    self.auth_line(AuthStep::Plain, initial.as_bytes());
                }
            }
            smtp_proto::AUTH_LOGIN => {
                if initial.is_empty() {
                    self.reply(Reply::plain(334, "VXNlcm5hbWU6"));
                    self.state = State::AuthLine(AuthStep::LoginUser);
                } else {
                    self.auth_line(AuthStep::LoginUser, initial.as_bytes());
                }
            }
            _ => self.error(r(504, [5, 5, 4], "mechanism not supported")),
        }
    }

    fn auth_line(&mut self, step: AuthStep, line: &[u8]) {
        if line == b"*" {
            return self.error(r(501, [5, 7, 0], "authentication cancelled"));
        }
        let decoded = if line == b"=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(line)
        };
        let Ok(decoded) = decoded.map(Zeroizing::new) else {
            return self.error(r(501, [5, 5, 2], "cannot decode the response"));
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let (mechanism, credentials) = match step {
            AuthStep::Plain => {
                let mut parts = decoded.split(|b| *b == 0);
                let (Some(z), Some(u), Some(p), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return self.error(r(501, [5, 5, 2], "malformed PLAIN response"));
                };
                let (Some(authzid), Some(username), Some(password)) = (text(z), text(u), text(p))
                else {
                    return self.error(r(501, [5, 5, 2], "credentials must be UTF-8"));
                };
                (
                    Mechanism::Plain,
                    Credentials {
                        authzid,
                        username,
                        password: Zeroizing::new(password),
                    },
                )
            }
            AuthStep::LoginUser => {
                let Some(user) = text(&decoded) else {
                    return self.error(r(501, [5, 5, 2], "credentials must be UTF-8"));
                };
                self.reply(Reply::plain(334, "UGFzc3dvcmQ6"));
                self.state = State::AuthLine(AuthStep::LoginPassword(user));
                return;
            }
            AuthStep::LoginPassword(username) => {
                let Some(password) = text(&decoded) else {
                    return self.error(r(501, [5, 5, 2], "credentials must be UTF-8"));
                };
                (
                    Mechanism::Login,
                    Credentials {
                        authzid: String::new(),
                        username,
                        password: Zeroizing::new(password),
                    },
                )
            }
        };
        if credentials.username.is_empty()
            || credentials.username.chars().any(char::is_control)
            || credentials.authzid.chars().any(char::is_control)
        {
            return self.error(r(501, [5, 5, 2], "malformed credentials"));
        }
        self.state = State::Pending(Pending::Auth(Event::Auth {
            mechanism,
            credentials,
        }));
    }
}
