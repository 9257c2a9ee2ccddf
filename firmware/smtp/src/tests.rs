//! Server sessions driven by scripts, without sockets: every script is fed whole and split at
//! every size, and must give the same replies and messages.

use crate::Reply;
use crate::server::{Body, Config, Event, Mechanism, Session};

/// What a run produced.
#[derive(Debug, Default, PartialEq)]
struct Run {
    /// Everything the session wrote.
    out: String,
    /// The answer-events seen, in order (Data and NeedInput left out).
    events: Vec<String>,
    /// Messages completed (EndOfMessage accepted).
    messages: Vec<Vec<u8>>,
    /// Messages aborted.
    aborted: usize,
}

/// The role's policy in tests: `None` accepts, `Some(reply)` refuses.
type Policy<'a> = &'a mut dyn FnMut(&Event) -> Option<Reply>;

fn drive(cfg: Config, input: &[u8], step: usize, policy: Policy<'_>) -> Run {
    let mut s = Session::new(cfg);
    let mut run = Run::default();
    let mut pieces = input.chunks(step.max(1));
    let mut current: Option<Vec<u8>> = None;
    let mut max_output = 0;
    for _ in 0..10_000_000 {
        max_output = max_output.max(s.output().len());
        let ev = s.next_event();
        match &ev {
            Event::NeedInput => {
                run.out.push_str(&String::from_utf8_lossy(&s.take_output()));
                match pieces.next() {
                    Some(p) => s.feed(p),
                    None => break,
                }
            }
            Event::Flush => run.out.push_str(&String::from_utf8_lossy(&s.take_output())),
            Event::StartTls => {
                run.events.push("StartTls".into());
                run.out.push_str(&String::from_utf8_lossy(&s.take_output()));
                s.tls_started();
            }
            Event::Data(d) => {
                assert!(!d.is_empty());
                current.as_mut().expect("Data after DataStart").extend(d)
            }
            Event::DataAborted => {
                run.events.push("DataAborted".into());
                assert!(current.take().is_some(), "DataAborted without DataStart");
                run.aborted += 1;
            }
            Event::Quit | Event::Close => {
                run.events.push(format!("{ev:?}"));
                run.out.push_str(&String::from_utf8_lossy(&s.take_output()));
                break;
            }
            _ => {
                run.events.push(match &ev {
                    Event::MailFrom(m) => format!("MailFrom({})", m.address),
                    Event::RcptTo(r) => format!("RcptTo({})", r.address),
                    Event::Auth { credentials, .. } => format!("Auth({})", credentials.username),
                    other => format!("{other:?}"),
                });
                let answer = policy(&ev);
                match (&ev, answer) {
                    (Event::DataStart, None) => {
                        assert!(current.is_none());
                        current = Some(Vec::new());
                        s.accept();
                    }
                    (Event::EndOfMessage, None) => {
                        run.messages
                            .push(current.take().expect("EndOfMessage after DataStart"));
                        s.accept_with(Reply::new(250, [2, 0, 0], "OK queued as X"));
                    }
                    (Event::EndOfMessage, Some(r)) => {
                        current = None;
                        s.refuse(r)
                    }
                    (_, None) => s.accept(),
                    (_, Some(r)) => s.refuse(r),
                }
            }
        }
    }
    assert!(
        max_output <= 16 * 1024 + 8 * 1024,
        "output stayed bounded: {max_output}"
    );
    run
}

fn accept_all(_: &Event) -> Option<Reply> {
    None
}

/// Runs `input` whole and in pieces of 1, 2, 3, 7 and 64 bytes; all must agree.
fn script(cfg: Config, input: &[u8]) -> Run {
    script_with(cfg, input, &mut accept_all)
}

fn script_with(cfg: Config, input: &[u8], policy: &mut dyn FnMut(&Event) -> Option<Reply>) -> Run {
    let whole = drive(cfg.clone(), input, input.len(), policy);
    for step in [1, 2, 3, 7, 64] {
        let split = drive(cfg.clone(), input, step, policy);
        assert_eq!(split, whole, "split into pieces of {step}");
    }
    whole
}

fn cfg() -> Config {
    Config::new("box.test")
}

/// The reply codes in the order they were written (continuation lines left out).
fn codes(out: &str) -> Vec<&str> {
    out.split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect()
}

const TXN: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n";

fn with_txn(body: &[u8]) -> Vec<u8> {
    let mut v = TXN.to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn a_pipelined_transaction_in_any_pieces() {
    let run = script(
        cfg(),
        &with_txn(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNOOP\r\nQUIT\r\n"),
    );
    assert_eq!(
        codes(&run.out),
        ["220", "250", "250", "250", "354", "250", "250", "221"]
    );
    assert!(
        run.out
            .starts_with("220 box.test ESMTP\r\n250-box.test\r\n")
    );
    for ext in [
        "SIZE 26214400",
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(
            run.out.contains(&format!("250-{ext}\r\n"))
                || run.out.contains(&format!("250 {ext}\r\n")),
            "{ext}"
        );
    }
    assert!(!run.out.contains("STARTTLS") && !run.out.contains("AUTH"));
    assert_eq!(
        run.messages,
        vec![b"Subject: x\r\n\r\n.leading dot\r\n".to_vec()]
    );
    assert_eq!(
        run.events,
        [
            "MailFrom(a@x.org)",
            "RcptTo(b@y.org)",
            "DataStart",
            "EndOfMessage",
            "Quit"
        ]
    );
    assert!(run.out.contains("250 2.0.0 OK queued as X\r\n"));
}

#[test]
fn published_smuggling_variants_never_end_data() {
    // SEC Consult (2023) and the variants that followed: each hides a second transaction
    // behind a line end that some server reads as the end of DATA.
    let smuggled = b"MAIL FROM:<mallory@evil.test>\r\nRCPT TO:<b@y.org>\r\nDATA\r\nsmuggled\r\n";
    for v in [
        &b"\n.\n"[..],
        b"\n.\r\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\n.\r",
        b"\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
    ] {
        let mut body = b"Subject: first\r\n\r\nfirst".to_vec();
        body.extend_from_slice(v);
        body.extend_from_slice(smuggled);
        body.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        let run = script(cfg(), &with_txn(&body));
        let name = format!("{v:?}");
        if v == b"\r\n\x00.\r\n" {
            // Not a line end at all: one message, the NUL and all.
            assert_eq!(run.messages.len(), 1, "{name}");
            continue;
        }
        assert!(run.messages.is_empty(), "{name}: refused: {}", run.out);
        assert_eq!(codes(&run.out)[5..], ["550", "221"], "{name}: {}", run.out);
        assert!(run.out.contains("550 5.6.0 "), "{name}");
        assert_eq!(
            run.events,
            [
                "MailFrom(a@x.org)",
                "RcptTo(b@y.org)",
                "DataStart",
                "DataAborted",
                "Quit"
            ],
            "{name}: the smuggled MAIL was never a command"
        );
    }
}

#[test]
fn bare_line_ends_in_commands_are_refused() {
    let run = script(cfg(), b"EHLO c.test\nNOOP\rNOOP\r\nEHLO c.test\r\nQUIT\r\n");
    assert_eq!(codes(&run.out), ["220", "500", "500", "250", "221"]);
    assert!(run.out.contains("500 5.5.2 bare CR or LF"));
}

#[test]
fn over_long_lines_are_consumed_and_refused_never_split() {
    let mut c = cfg();
    c.max_command_line = 20;
    c.max_data_line = 30;
    let mut input = b"NOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100));
    input.extend_from_slice(b"QUIT\r\nNOOP\r\n");
    input.extend_from_slice(TXN);
    // A data line whose tail after the limit would be "." on its own.
    input.extend(std::iter::repeat_n(b'a', 29));
    input.extend_from_slice(b"\r\n");
    input.extend(std::iter::repeat_n(b'a', 31));
    input.extend_from_slice(b".\r\nMAIL FROM:<m@evil.test>\r\n.\r\nQUIT\r\n");
    let run = script(c, &input);
    assert_eq!(
        codes(&run.out),
        [
            "220", "500", "250", "250", "250", "250", "354", "552", "221"
        ],
        "{}",
        run.out
    );
    assert!(
        run.out
            .contains("552 5.3.4 a line of the message is too long")
    );
    assert!(run.messages.is_empty());
}

#[test]
fn size_limits_at_mail_and_in_data() {
    let mut c = cfg();
    c.max_message_bytes = 20;
    let mut input = b"EHLO c\r\nMAIL FROM:<a@x.org> SIZE=21\r\nMAIL FROM:<a@x.org> SIZE=20 BODY=8BITMIME\r\nRCPT TO:<b@y.org>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(b"0123456789\r\n0123456789\r\n.\r\n");
    input.extend_from_slice(
        b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n012345678901234567\r\n.\r\nQUIT\r\n",
    );
    let mut seen = Vec::new();
    let run = script_with(c, &input, &mut |e| {
        if let Event::MailFrom(m) = e {
            seen.push((m.size, m.body));
        }
        None
    });
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "552", "250", "250", "354", "552", "250", "250", "354", "250", "221"
        ],
        "{}",
        run.out
    );
    assert_eq!(run.messages, vec![b"012345678901234567\r\n".to_vec()]);
    assert_eq!(run.aborted, 1);
    assert_eq!(seen[0], (Some(20), Body::EightBitMime));
}

#[test]
fn recipients_are_limited_and_the_driver_decides_each() {
    let mut c = cfg();
    c.max_recipients = 2;
    let input = b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<no@y.org>\r\nRCPT TO:<>\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\nRCPT TO:<d@y.org>\r\nQUIT\r\n";
    let run = script_with(c, input, &mut |e| match e {
        Event::RcptTo(r) if r.address.starts_with("no@") => {
            Some(Reply::new(550, [5, 1, 1], "no such user"))
        }
        _ => None,
    });
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "250", "550", "501", "250", "250", "452", "221"
        ],
        "{}",
        run.out
    );
}

#[test]
fn a_refused_sender_makes_the_pipelined_rest_fail_in_order() {
    let input = with_txn(b"QUIT\r\n");
    let run = script_with(cfg(), &input, &mut |e| match e {
        Event::MailFrom(_) => Some(Reply::new(550, [5, 7, 1], "not your address")),
        _ => None,
    });
    assert_eq!(
        codes(&run.out),
        ["220", "250", "550", "503", "503", "221"],
        "{}",
        run.out
    );
    assert!(
        run.out
            .contains("550 5.7.1 not your address\r\n503 5.5.1 MAIL first\r\n")
    );
}

#[test]
fn the_driver_may_refuse_the_message_before_and_after_it_comes() {
    let input = with_txn(
        b"x\r\n.\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    let mut n = 0;
    let run = script_with(cfg(), &input, &mut |e| match e {
        Event::DataStart => {
            n += 1;
            (n % 2 == 1).then(|| Reply::new(452, [4, 3, 1], "spool full"))
        }
        Event::EndOfMessage => Some(Reply::new(451, [4, 3, 0], "cannot store")),
        _ => None,
    });
    // The first DATA is refused: its lines are commands (bad ones), then a new transaction
    // whose message is refused at its end.
    assert!(run.out.contains("452 4.3.1 spool full"), "{}", run.out);
    assert!(run.out.contains("451 4.3.0 cannot store"), "{}", run.out);
    assert!(run.messages.is_empty());
}

#[test]
fn bdat_chunks_are_counted_never_scanned() {
    let mut input = b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n".to_vec();
    input.extend_from_slice(b"BDAT 8\r\nline\n.\r\nBDAT 17 LAST\r\nMAIL FROM:<m@e>\r\n");
    // Outside a transaction: the chunk's bytes are still data, never commands.
    input.extend_from_slice(b"BDAT 6\r\nQUIT\r\nBDAT 0 LAST\r\nQUIT\r\n");
    let run = script(cfg(), &input);
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "250", "250", "250", "250", "503", "503", "221"
        ],
        "{}",
        run.out
    );
    assert!(run.out.contains("250 2.0.0 8 octets received"));
    assert_eq!(
        run.messages,
        vec![b"line\n.\r\nMAIL FROM:<m@e>\r\n".to_vec()]
    );
    assert_eq!(
        run.events,
        [
            "MailFrom(a@x.org)",
            "RcptTo(b@y.org)",
            "DataStart",
            "EndOfMessage",
            "Quit"
        ]
    );
    // Over the size limit: refused, the chunk still consumed; RSET after a chunk aborts.
    let mut c = cfg();
    c.max_message_bytes = 10;
    let input = b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nBDAT 5\r\nabcdeBDAT 6 LAST\r\nQUIT\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nBDAT 1\r\nxRSET\r\nBDAT 0 LAST\r\nQUIT\r\n";
    let run = script(c, input);
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "250", "250", "250", "552", "250", "250", "250", "250", "503", "221"
        ],
        "{}",
        run.out
    );
    assert_eq!(run.aborted, 2);
    assert!(run.messages.is_empty());
    // Without CHUNKING advertised BDAT is refused, its bytes consumed.
    let mut c = cfg();
    c.extensions.chunking = false;
    let run = script(c, b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(codes(&run.out), ["220", "250", "502", "250", "221"]);
    assert!(!run.out.contains("CHUNKING"));
}

fn tls_cfg() -> Config {
    let mut c = cfg();
    c.extensions.starttls = true;
    c.extensions.auth = true;
    c
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    // The STARTTLS injection: commands sent in clear behind STARTTLS must not run as if
    // they came over TLS.
    let input = b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@evil.test>\r\nRCPT TO:<b@y.org>\r\n";
    let run = drive(tls_cfg(), input, input.len(), &mut accept_all);
    assert_eq!(codes(&run.out), ["220", "250", "220"], "{}", run.out);
    assert_eq!(run.events, ["StartTls"]);
    assert!(run.out.contains("250 STARTTLS") && !run.out.contains("AUTH"));
    // After the handshake: EHLO again, no STARTTLS, AUTH offered; nothing from before.
    let mut s = Session::new(tls_cfg());
    s.feed(b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n");
    assert_eq!(s.next_event(), Event::StartTls);
    assert_eq!(s.next_event(), Event::NeedInput);
    s.feed(b"QUIT\r\n"); // still clear text: ignored
    s.tls_started();
    assert!(s.is_tls());
    assert_eq!(s.next_event(), Event::NeedInput);
    s.take_output();
    s.feed(b"MAIL FROM:<a@x.org>\r\nEHLO c\r\n");
    assert_eq!(s.next_event(), Event::NeedInput);
    let out = String::from_utf8(s.take_output()).expect("utf8");
    assert!(out.starts_with("503 5.5.1 EHLO first\r\n"), "{out}");
    assert!(out.contains("250-AUTH PLAIN LOGIN") || out.contains("250 AUTH PLAIN LOGIN"));
    assert!(!out.contains("STARTTLS"));
    s.feed(b"STARTTLS\r\n");
    assert_eq!(s.next_event(), Event::NeedInput);
    assert!(
        s.take_output()
            .starts_with(b"503 5.5.1 TLS is already active")
    );
}

#[test]
fn auth_only_over_tls_with_plain_and_login() {
    // Before TLS: refused, credentials never asked for.
    let run = script(tls_cfg(), b"EHLO c\r\nAUTH PLAIN AHUAcA==\r\nQUIT\r\n");
    assert!(run.out.contains("538 5.7.11"), "{}", run.out);
    assert!(!run.events.iter().any(|e| e.starts_with("Auth")));
    let mut c = tls_cfg();
    c.tls = true;
    c.require_auth = true;
    let mut creds = Vec::new();
    let input = b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nAUTH PLAIN AHUAcA==\r\nAUTH PLAIN\r\nAHVzZXIAc2VjcmV0\r\nAUTH LOGIN\r\nMAIL FROM:<a@x.org>\r\nQUIT\r\n";
    let run = script_with(c.clone(), input, &mut |e| match e {
        Event::Auth {
            mechanism,
            credentials,
        } => {
            let dbg = format!("{credentials:?}");
            assert!(!dbg.contains("secret") && !dbg.contains("pass\""), "{dbg}");
            creds.push((
                *mechanism,
                credentials.username.clone(),
                credentials.password.to_string(),
            ));
            (credentials.username != "user" || *mechanism == Mechanism::Login)
                .then(|| Reply::new(535, [5, 7, 8], "bad"))
        }
        _ => None,
    });
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "530", "535", "334", "235", "503", "250", "221"
        ],
        "{}",
        run.out
    );
    assert_eq!(creds[0], (Mechanism::Plain, "u".into(), "p".into()));
    assert_eq!(creds[1], (Mechanism::Plain, "user".into(), "secret".into()));
    // LOGIN, a cancel and bad base64, then three failures end the session.
    let input = b"EHLO c\r\nAUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!\r\nAUTH PLAIN AHUAcA==\r\nAUTH PLAIN AHUAcA==\r\nNOOP\r\n";
    let run = script_with(c, input, &mut |e| match e {
        Event::Auth { .. } => Some(Reply::new(535, [5, 7, 8], "bad")),
        _ => None,
    });
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "334", "334", "535", "334", "501", "501", "535", "535", "421"
        ],
        "{}",
        run.out
    );
    assert_eq!(run.events.last().map(String::as_str), Some("Close"));
}

#[test]
fn too_many_errors_end_the_session() {
    let mut c = cfg();
    c.max_errors = 3;
    let run = script(c, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(codes(&run.out), ["220", "500", "500", "500", "421"]);
    assert_eq!(run.events, ["Close"]);
}

#[test]
fn output_stays_bounded_when_the_client_never_reads() {
    let input = b"EHLO c\r\n".repeat(5000);
    // `drive` asserts the pending output never passes its bound.
    let run = drive(cfg(), &input, input.len(), &mut accept_all);
    assert_eq!(codes(&run.out).len(), 5001);
}

#[test]
fn without_enhanced_status_codes_replies_are_plain() {
    let mut c = cfg();
    c.extensions.enhanced_status_codes = false;
    let run = script(c, b"HELO c\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(
        run.out,
        "220 box.test ESMTP\r\n250 box.test\r\n250 OK\r\n221 box.test closing\r\n"
    );
}

#[test]
fn smtputf8_and_unknown_parameters() {
    let input = "EHLO c\r\nMAIL FROM:<jörg@x.org>\r\nMAIL FROM:<jörg@x.org> SMTPUTF8\r\nRCPT TO:<b@y.org> FOO=1\r\nQUIT\r\n";
    let run = script(cfg(), input.as_bytes());
    let c = codes(&run.out);
    assert_eq!(c[..3], ["220", "250", "553"], "{}", run.out);
    assert_eq!(c[3], "250");
    assert!(c[4].starts_with('5'), "{}", run.out);
    let mut c = cfg();
    c.extensions.smtputf8 = false;
    let run = script(
        c,
        "EHLO c\r\nMAIL FROM:<a@x.org> SMTPUTF8\r\nQUIT\r\n".as_bytes(),
    );
    assert_eq!(codes(&run.out), ["220", "250", "555", "221"]);
}

#[test]
fn data_comes_in_whole_lines_and_bounded_chunks() {
    // Drivers may store DATA line by line: every chunk ends at a CRLF.
    let mut body = Vec::new();
    for i in 0..5000 {
        body.extend_from_slice(format!("line {i} {}\r\n", "x".repeat(i % 90)).as_bytes());
    }
    let mut input = with_txn(&body);
    input.extend_from_slice(b".\r\nQUIT\r\n");
    for step in [1000, 4096, 100_000, input.len()] {
        let mut s = Session::new(cfg());
        let mut chunks = 0;
        let mut got = Vec::new();
        for piece in input.chunks(step) {
            s.feed(piece);
            loop {
                match s.next_event() {
                    Event::NeedInput => break,
                    Event::Data(d) => {
                        assert!(d.ends_with(b"\r\n") && d.len() <= 64 * 1024 + 200);
                        chunks += 1;
                        got.extend(d);
                    }
                    Event::Quit => break,
                    Event::Flush => drop(s.take_output()),
                    _ => s.accept(),
                }
            }
        }
        assert_eq!(got, body, "step {step}");
        assert!(chunks >= 2, "step {step}");
    }
}

#[test]
fn the_driver_can_end_a_session_and_knows_the_helo_name() {
    let mut s = Session::new(cfg());
    s.feed(b"EHLO client.test\r\nMAIL FROM:<a@x.org>\r\n");
    assert!(matches!(s.next_event(), Event::MailFrom(_)));
    s.accept();
    assert_eq!(s.helo_name(), Some("client.test"));
    s.feed(b"RCPT TO:<b@y.org>\r\nDATA\r\nhalf a mess");
    assert!(matches!(s.next_event(), Event::RcptTo(_)));
    s.accept();
    assert_eq!(s.next_event(), Event::DataStart);
    s.accept();
    assert_eq!(s.next_event(), Event::NeedInput);
    s.shutdown(Reply::new(421, [4, 4, 2], "idle too long"));
    assert_eq!(s.next_event(), Event::DataAborted);
    assert_eq!(s.next_event(), Event::Close);
    let out = String::from_utf8(s.take_output()).expect("utf8");
    assert!(
        out.ends_with("354 end data with <CR><LF>.<CR><LF>\r\n421 4.4.2 idle too long\r\n"),
        "{out}"
    );
    s.feed(b"QUIT\r\n");
    assert_eq!(s.next_event(), Event::Close);
    assert!(s.take_output().is_empty());
}

#[test]
fn paths_parse_as_the_hand_off_read_them() {
    // The hand-off's old path reader's cases, now read by smtp-proto.
    let mut seen = Vec::new();
    let input = b"EHLO c\r\nMAIL FROM:<A@b.org> SIZE=10\r\nRSET\r\nmail from:<>\r\nRSET\r\nMAIL FROM: <x@y.org>\r\nRCPT TO:a@b\r\nRCPT TO:<a b@c>\r\nRCPT TO:<ok@c.org>\r\nRCPT\r\nQUIT\r\n";
    let run = script_with(cfg(), input, &mut |e| {
        match e {
            Event::MailFrom(m) => seen.push(format!("from {} {:?}", m.address, m.size)),
            Event::RcptTo(r) => seen.push(format!("to {}", r.address)),
            _ => {}
        }
        None
    });
    assert_eq!(
        codes(&run.out),
        [
            "220", "250", "250", "250", "250", "250", "250", "501", "501", "250", "501", "221"
        ],
        "{}",
        run.out
    );
    // (script_with runs the input six times.)
    assert_eq!(
        seen[..4],
        [
            "from A@b.org Some(10)",
            "from  None",
            "from x@y.org None",
            "to ok@c.org"
        ]
    );
}

/// 100 KiB messages back to back in one session, fed in 16 KiB reads; prints the rate
/// (`cargo test --release -p sealgate-smtp -- throughput --nocapture`: about 4,000 messages
/// a second here, with `n` raised to 2,000).
#[test]
fn throughput_of_100_kib_messages() {
    let mut body = Vec::new();
    while body.len() < 100 * 1024 {
        body.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    let mut one = b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\nDATA\r\n".to_vec();
    one.extend_from_slice(&body);
    one.extend_from_slice(b".\r\n");
    let n = 20;
    let start = std::time::Instant::now();
    let mut s = Session::new(cfg());
    s.feed(b"EHLO c\r\n");
    let mut bytes = 0;
    for _ in 0..n {
        for piece in one.chunks(16 * 1024) {
            s.feed(piece);
            loop {
                match s.next_event() {
                    Event::NeedInput => break,
                    Event::Flush => drop(s.take_output()),
                    Event::Data(d) => bytes += d.len(),
                    Event::EndOfMessage => {
                        s.accept();
                        s.take_output();
                    }
                    _ => s.accept(),
                }
            }
        }
    }
    assert_eq!(bytes, n as usize * body.len());
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} messages of 100 KiB: {:.0} msg/s, {:.0} MiB/s",
        f64::from(n) / secs,
        bytes as f64 / secs / 1048576.0
    );
}

#[test]
fn an_answer_when_nothing_is_asked_changes_nothing() {
    // A driver bug must not turn a message into commands.
    let mut s = Session::new(cfg());
    s.feed(&with_txn(b"MAIL FROM:<m@evil.test>\r\n"));
    for _ in 0..3 {
        assert!(!matches!(s.next_event(), Event::NeedInput | Event::Data(_)));
        s.accept();
    }
    assert_eq!(
        s.next_event(),
        Event::Data(b"MAIL FROM:<m@evil.test>\r\n".to_vec())
    );
    s.accept();
    s.refuse(Reply::new(550, [5, 0, 0], "x"));
    s.accept_with(Reply::new(250, [2, 0, 0], "x"));
    s.feed(b".\r\n");
    assert_eq!(s.next_event(), Event::EndOfMessage);
}

#[test]
fn an_answer_while_data_is_still_queued_does_not_end_the_message() {
    // The last BDAT chunk queues its Data ahead of the EndOfMessage question: a driver
    // answering on Data (a bug) must not accept a message it has not finished storing.
    for body in [
        &b"BDAT 5\r\nabcdeBDAT 3 LAST\r\nxyz"[..],
        b"DATA\r\nabc\r\n.\r\n",
    ] {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@y.org>\r\n".to_vec();
        input.extend_from_slice(body);
        let mut s = Session::new(cfg());
        s.feed(&input);
        let mut saw_end = false;
        for _ in 0..100 {
            match s.next_event() {
                Event::Data(_) => {
                    s.accept();
                    assert!(!saw_end);
                }
                Event::EndOfMessage => {
                    saw_end = true;
                    s.accept();
                }
                Event::NeedInput => break,
                _ => s.accept(),
            }
        }
        assert!(saw_end, "EndOfMessage was asked");
        let out = String::from_utf8_lossy(&s.take_output()).into_owned();
        assert_eq!(out.matches("250 2.0.0 OK").count(), 1, "{out}");
    }
}
