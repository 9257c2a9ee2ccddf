//! Fuzz target for the outbound SMTP client's reply reading (sealgated's `smtp/reply.rs`,
//! included as it is): reply lines, EHLO keywords and enhanced status codes from a next hop,
//! on arbitrary bytes. Invariants: no panic, codes are 200..=599, texts hold no control
//! characters.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../firmware/sealgated/src/smtp/reply.rs"]
mod reply;

fuzz_target!(|data: &[u8]| {
    let mut lines = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some((code, _more, text)) = reply::parse_reply_line(line) {
            assert!((200..=599).contains(&code));
            assert!(!text.chars().any(char::is_control));
            let status = reply::status_code(&format!("{code} {text}"));
            assert!(status.starts_with(['2', '4', '5']));
            lines.push(text);
        }
    }
    let e = reply::extensions(&lines);
    let _ = (e.starttls, e.pipelining, e.size, e.eight_bit);
});
