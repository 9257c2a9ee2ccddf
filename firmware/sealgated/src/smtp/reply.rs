//! SMTP replies as a client reads them: reply lines, EHLO keywords, enhanced status codes.
//! Only `std`: the fuzz target `smtp_reply` (fuzz/) includes this file as it is.
//!
//! Attacker: the next hop (or whoever sits between): any bytes. Nothing here panics, allocates
//! beyond the input, or lets control characters through.

/// Parses one reply line: the code, whether more lines follow, the text. `None` if the line
/// is not a reply line.
pub fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let code = line.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&code[0]) {
        return None;
    }
    let code = u16::from(code[0] - b'0') * 100
        + u16::from(code[1] - b'0') * 10
        + u16::from(code[2] - b'0');
    let (more, text) = match line.get(3) {
        None => (false, &[][..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return None,
    };
    let text: String = String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Some((code, more, text.trim_end().to_string()))
}

/// What the next hop said it supports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// STARTTLS.
    pub starttls: bool,
    /// PIPELINING.
    pub pipelining: bool,
    /// SIZE, with its limit (0: none given).
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eight_bit: bool,
}

/// Reads the EHLO reply's keywords.
pub fn extensions(lines: &[String]) -> Extensions {
    let mut e = Extensions::default();
    for l in lines.iter().skip(1) {
        let mut words = l.split_whitespace();
        let Some(k) = words.next() else { continue };
        match k.to_ascii_uppercase().as_str() {
            "STARTTLS" => e.starttls = true,
            "PIPELINING" => e.pipelining = true,
            "8BITMIME" => e.eight_bit = true,
            "SIZE" => e.size = Some(words.next().and_then(|v| v.parse().ok()).unwrap_or(0)),
            _ => {}
        }
    }
    e
}

/// The enhanced status code in a reply (`550 5.1.1 ...` → `5.1.1`), else one derived from the
/// reply's class.
pub fn status_code(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let first = words.next().unwrap_or("");
    let candidate = if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
        words.next().unwrap_or("")
    } else {
        first
    };
    let parts: Vec<&str> = candidate.split('.').collect();
    if parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return candidate.to_string();
    }
    if first.starts_with('4') {
        "4.0.0".into()
    } else {
        "5.0.0".into()
    }
}
