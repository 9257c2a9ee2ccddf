//! Sealgate's SMTP protocol layer: everything about SMTP except the sockets.
//!
//! No I/O, no panics on input, fuzzed (`fuzz/fuzz_targets/smtp.rs`). Every SMTP role of the
//! box drives it: the docking hand-off, submission, inbound MX, and the outbound client.
//! Commands and replies are parsed by `smtp-proto` (Stalwart's); line framing, the state
//! machine and the smuggling defences are ours.
//!
//! - [`server::Session`]: one server session. Bytes in ([`Session::feed`]), [`Event`]s out
//!   ([`Session::next_event`]), replies in [`Session::take_output`]. The role's policy (who
//!   may send as whom, which recipients, whether there is room) stays in the driver, which
//!   answers the events that ask ([`Session::accept`], [`Session::accept_with`],
//!   [`Session::refuse`]). Configured per role by [`Config`] and [`Extensions`].
//! - [`client`]: [`client::Command`] written safely, [`client::ReplyReader`] for
//!   (multi-line, pipelined) replies, [`client::Capabilities`] from an EHLO reply.
//! - [`dot`]: the DATA a client writes, CRLF-normalised and dot-stuffed.
//! - [`Reply`]: a reply with its enhanced status code, written without injectable text.
//!
//! Smuggling: only CRLF ends a line. A bare CR or LF in a command gets `500`; in DATA the
//! whole message is refused with `550 5.6.0` after reading on to the real CRLF "." CRLF
//! (`\n.\n`, `\r.\r`, `\n.\r\n`, `\r\n.\r`, `.` on a bare-LF line never end DATA). An
//! over-long line is consumed and refused, never split. BDAT chunks are counted, never
//! scanned. Input that follows STARTTLS before the handshake is discarded.
//!
//! # A driver loop
//!
//! ```
//! use sealgate_smtp::{Config, Event, Reply, Session};
//!
//! # fn main() -> std::io::Result<()> {
//! // A socket stand-in: a client that pipelines a whole transaction.
//! let mut incoming: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n\
//!     RCPT TO:<b@example.org>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
//! let mut sent = Vec::new();
//! let mut stored = Vec::new();
//!
//! let mut s = Session::new(Config::new("box.test"));
//! loop {
//!     match s.next_event() {
//!         Event::NeedInput => {
//!             sent.extend(s.take_output()); // write_all + flush
//!             let mut buf = [0u8; 16];
//!             let n = std::io::Read::read(&mut incoming, &mut buf)?; // with a timeout
//!             if n == 0 {
//!                 break; // the client left: drop any half-stored message
//!             }
//!             s.feed(&buf[..n]);
//!         }
//!         Event::Flush => sent.extend(s.take_output()),
//!         Event::StartTls => { /* write output, handshake, then */ s.tls_started() }
//!         Event::Auth { .. } => s.refuse(Reply::new(535, [5, 7, 8], "no")),
//!         Event::MailFrom(m) if m.address.ends_with("@example.org") => s.accept(),
//!         Event::MailFrom(_) => s.refuse(Reply::new(550, [5, 7, 1], "not our sender")),
//!         Event::RcptTo(_) => s.accept(),
//!         Event::DataStart => { stored.clear(); s.accept() } // open the spool file
//!         Event::Data(bytes) => stored.extend(bytes),        // write (streamed)
//!         Event::DataAborted => stored.clear(),              // delete it
//!         Event::EndOfMessage => {
//!             // fsync file and directory first: 250 means durable.
//!             s.accept_with(Reply::new(250, [2, 0, 0], "OK queued as 1"));
//!         }
//!         Event::Quit | Event::Close => {
//!             sent.extend(s.take_output());
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(stored, b"Subject: hi\r\n\r\n.dot\r\n");
//! let sent = String::from_utf8(sent).unwrap();
//! assert!(sent.contains("250 2.0.0 OK queued as 1\r\n221 2.0.0 box.test closing\r\n"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod dot;
mod line;
pub mod reply;
pub mod server;

pub use dot::{DotStuffer, data_section};
pub use reply::Reply;
pub use server::{
    Body, Config, Credentials, Event, Extensions, MailFrom, Mechanism, RcptTo, Session,
};

#[cfg(test)]
mod tests;
