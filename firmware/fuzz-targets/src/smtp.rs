//! Fuzz target for the SMTP protocol layer: a server session fed arbitrary bytes, split at
//! arbitrary points, with a driver that accepts or refuses by the input's own bits; the client
//! reply reader and the dot-stuffing writer on the same bytes.
//!
//! Invariants: no panic; the pending output stays bounded (the session asks for a flush);
//! message bytes come only between DataStart and EndOfMessage/DataAborted; a DATA message
//! never contains a bare CR or LF; the dot-stuffed form has exactly one CRLF "." CRLF.

use sealgate_smtp::client::{Capabilities, ReplyReader};
use sealgate_smtp::{Config, Event, Reply, Session, data_section};

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let Some((&split, input)) = rest.split_first() else {
        return;
    };
    let mut cfg = Config::new("fuzz.test");
    cfg.extensions.starttls = knobs & 1 != 0;
    cfg.extensions.auth = knobs & 2 != 0;
    cfg.tls = knobs & 4 != 0;
    cfg.require_auth = knobs & 8 != 0;
    cfg.extensions.enhanced_status_codes = knobs & 16 != 0;
    cfg.max_message_bytes = 1 + u64::from(knobs) * 40;
    cfg.max_command_line = 64 + usize::from(split);
    cfg.max_data_line = 32 + usize::from(split);
    cfg.max_recipients = 1 + usize::from(knobs % 5);
    let step = usize::from(split % 31) + 1;

    let mut s = Session::new(cfg);
    let mut pieces = input.chunks(step);
    let mut in_message = false;
    let mut message = Vec::new();
    let bdat = input.windows(4).any(|w| w.eq_ignore_ascii_case(b"BDAT"));
    let mut decision = knobs;
    let mut total_out = 0usize;
    for _ in 0..(input.len() * 4 + 64) {
        assert!(s.output().len() <= 16 * 1024 + 8 * 1024, "output bounded");
        let ev = s.next_event();
        decision = decision.rotate_left(1) ^ 0x5a;
        let refuse = decision & 3 == 0;
        match ev {
            Event::NeedInput => {
                total_out += s.take_output().len();
                match pieces.next() {
                    Some(p) => s.feed(p),
                    None => break,
                }
            }
            Event::Flush => total_out += s.take_output().len(),
            Event::StartTls => s.tls_started(),
            Event::Data(d) => {
                assert!(in_message && !d.is_empty());
                // DATA comes in whole lines (drivers may store it line by line).
                assert!(bdat || d.ends_with(b"\r\n"));
                message.extend_from_slice(&d);
                if decision & 0x80 != 0 {
                    // A driver answering when nothing is asked: must change nothing.
                    s.accept();
                }
            }
            Event::DataAborted => {
                assert!(in_message);
                in_message = false;
                message.clear();
            }
            Event::DataStart => {
                assert!(!in_message);
                if refuse {
                    s.refuse(Reply::new(452, [4, 3, 1], "full"));
                } else {
                    in_message = true;
                    s.accept();
                }
            }
            Event::EndOfMessage => {
                assert!(in_message);
                if !bdat {
                    // DATA: only CRLF line ends reach the driver.
                    for (i, &b) in message.iter().enumerate() {
                        match b {
                            b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n')),
                            b'\n' => assert!(i > 0 && message[i - 1] == b'\r'),
                            _ => {}
                        }
                    }
                }
                in_message = false;
                message.clear();
                if refuse {
                    s.refuse(Reply::new(451, [4, 3, 0], "no"));
                } else {
                    s.accept_with(Reply::new(250, [2, 0, 0], "queued"));
                }
            }
            Event::Quit | Event::Close => {
                assert!(s.is_closed());
                break;
            }
            Event::MailFrom(_) | Event::RcptTo(_) | Event::Auth { .. } => {
                if refuse {
                    s.refuse(Reply::new(550, [5, 7, 1], "no \r\n250 injected"));
                } else {
                    s.accept();
                }
            }
            _ => {}
        }
    }
    // Replies are bounded by the input that caused them.
    assert!(total_out <= 512 + input.len() * 1100, "{total_out}");

    // The client side on the same bytes.
    let mut r = ReplyReader::new();
    for p in input.chunks(step) {
        r.feed(p);
        while let Some(reply) = r.next_reply() {
            match reply {
                Ok(reply) => {
                    let _ = reply.to_string();
                    let _ = Capabilities::from_ehlo(&reply);
                }
                Err(_) => break,
            }
        }
    }
    let d = data_section(input);
    assert_eq!(
        d.windows(5).filter(|w| w == b"\r\n.\r\n").count() + usize::from(d == b".\r\n"),
        1
    );
}
