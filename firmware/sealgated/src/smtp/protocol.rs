//! The inbound side: who may connect, the SMTP server state machine, and the line reader.
//!
//! Attackers: anyone who reaches a listener. Without access control they could have captured
//! ciphertext decrypted to an extra RCPT of their choice, or mail signed with any user's key
//! (MAIL FROM chooses the key). So a client must come from `allow_addresses`, or from
//! `certificate_addresses` with a pinned client certificate whose scopes include the
//! listener's; everyone else gets `554` at connect (logged and audited).
//!
//! Smuggling: a line ends only at CRLF. A bare LF or a bare CR anywhere is refused (`500` for
//! a command; the whole message `550` at its end), an over-long line is consumed to its end
//! and refused (never cut into pieces that could read as `.`), and only CRLF "." CRLF ends
//! DATA. So no reading of the stream can end DATA where the next hop would not.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::spool::Envelope;
use super::{Direction, Shared};
use crate::identity::sha256;

/// The longest line accepted (commands and message lines), without its CRLF.
pub(super) const MAX_LINE: usize = 64 * 1024;
const MAX_RECIPIENTS: usize = 1000;
/// Idle time allowed for one line.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line that ended with CRLF and has no other CR or LF (in the buffer, without CRLF).
    Good,
    /// A line with a bare CR or ended by a bare LF (its bytes are in the buffer); `crlf`:
    /// it ended with CRLF (the bare CR was inside).
    Bare { crlf: bool },
    /// Longer than the limit: consumed to its LF and discarded; `crlf`: it ended with CRLF.
    TooLong { crlf: bool },
    /// End of stream (a partial last line is dropped).
    Eof,
}

/// Reads one line into `buf` (cleared first), holding at most `max` + 2 bytes of it.
pub(super) async fn read_line<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    // The byte before the current chunk (to see a CR right before the LF across chunks).
    let mut prev = 0u8;
    let mut before_lf = 0u8;
    loop {
        let avail = s.fill_buf().await?;
        if avail.is_empty() {
            return Ok(Line::Eof);
        }
        let (n, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if done {
            before_lf = if n >= 2 { avail[n - 2] } else { prev };
        }
        prev = avail[n - 1];
        if !too_long {
            if buf.len() + n > max + 2 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..n]);
            }
        }
        s.consume(n);
        if done {
            break;
        }
    }
    let crlf = before_lf == b'\r';
    if too_long {
        return Ok(Line::TooLong { crlf });
    }
    buf.pop(); // the LF
    if buf.pop_if(|b| *b == b'\r').is_none() || buf.contains(&b'\r') {
        return Ok(Line::Bare { crlf });
    }
    if buf.len() > max {
        return Ok(Line::TooLong { crlf });
    }
    Ok(Line::Good)
}

async fn read_line_timed<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Line> {
    Ok(tokio::time::timeout(READ_TIMEOUT, read_line(s, buf, MAX_LINE)).await??)
}

/// Who the client is, as far as this session knows.
#[derive(Debug, Clone)]
enum Access {
    /// May send mail; the name for the audit log.
    Open(String),
    /// Must first authenticate with a pinned certificate over STARTTLS.
    NeedsCertificate,
}

struct AddressSlot {
    sh: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.sh.per_address.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn address_slot(sh: &Arc<Shared>, ip: IpAddr) -> Option<AddressSlot> {
    let mut m = sh.per_address.lock().ok()?;
    let n = m.entry(ip).or_insert(0);
    if *n >= sh.h.settings.smtp.max_sessions_per_address {
        return None;
    }
    *n += 1;
    Some(AddressSlot { sh: sh.clone(), ip })
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    dir: Direction,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => accepted(tcp, peer, dir, &sh),
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Whether a refusal of `ip` should be logged and audited (once a minute per address; the
/// map is bounded).
fn first_refusal_this_minute(sh: &Shared, ip: IpAddr) -> bool {
    const QUIET: Duration = Duration::from_secs(60);
    let Ok(mut m) = sh.refused.lock() else {
        return true;
    };
    if m.len() >= 4096 {
        m.retain(|_, t| t.elapsed() < QUIET);
        if m.len() >= 4096 {
            m.clear();
        }
    }
    match m.get(&ip) {
        Some(t) if t.elapsed() < QUIET => false,
        _ => {
            m.insert(ip, std::time::Instant::now());
            true
        }
    }
}

/// Decides at connect: refused (one line written without waiting, then closed) or a session.
fn accepted(tcp: TcpStream, peer: SocketAddr, dir: Direction, sh: &Arc<Shared>) {
    let ip = peer.ip().to_canonical();
    let smtp = &sh.h.settings.smtp;
    let lists = super::access_lists(&sh.h.settings);
    let access = if lists.allow.iter().any(|c| c.contains(ip)) {
        Access::Open(format!("smtp:{ip}"))
    } else if lists.certificate.iter().any(|c| c.contains(ip)) {
        Access::NeedsCertificate
    } else {
        if first_refusal_this_minute(sh, ip) {
            tracing::warn!(%peer, listener = dir.name(), "SMTP client address not allowed: refused");
            sh.h.audit.record(
                &format!("smtp:{ip}"),
                &ip.to_string(),
                dir.name(),
                None,
                "refused-address",
                554,
                Duration::ZERO,
            );
        }
        let _ = tcp.try_write(
            format!(
                "554 5.7.1 {} access denied: your address is not allowed\r\n",
                smtp.hostname
            )
            .as_bytes(),
        );
        return;
    };
    let Ok(permit) = sh.sessions.clone().try_acquire_owned() else {
        let _ = tcp.try_write(b"421 4.3.2 too many connections, try again later\r\n");
        return;
    };
    let Some(slot) = address_slot(sh, ip) else {
        tracing::info!(%peer, "too many SMTP sessions from one address");
        let _ = tcp.try_write(b"421 4.7.0 too many connections from your address\r\n");
        return;
    };
    let sh = sh.clone();
    let deadline = smtp.session_timeout_secs.duration();
    tokio::spawn(async move {
        let _permit = permit;
        let _slot = slot;
        match tokio::time::timeout(deadline, session(tcp, peer, dir, access, &sh)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "SMTP session ended"),
            Err(_) => tracing::info!(%peer, "SMTP session deadline reached: closed"),
        }
    });
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    dir: Direction,
    access: Access,
    sh: &Shared,
) -> anyhow::Result<()> {
    let mut conn = BufReader::new(tcp);
    reply(
        &mut conn,
        &format!(
            "220 {} Sealgate docking ({}) ESMTP",
            sh.h.settings.smtp.hostname,
            dir.name()
        ),
    )
    .await?;
    if let Outcome::StartTls = dialogue(&mut conn, peer, dir, &access, sh, false).await? {
        if !conn.buffer().is_empty() {
            // Commands pipelined after STARTTLS would be injected into the TLS session.
            anyhow::bail!("data after STARTTLS");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(sh.h.tls.clone());
        let tls = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(conn.into_inner())).await??;
        let access = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => {
                let fp = sha256(leaf.as_ref());
                match sh.h.settings.auth.clients.iter().find(|c| c.sha256.0 == fp) {
                    Some(c) if c.scopes.contains(&dir.scope()) => {
                        Access::Open(format!("cert:{}", c.name))
                    }
                    Some(c) => {
                        tracing::warn!(%peer, client = %c.name, listener = dir.name(), "pinned client certificate lacks the listener's scope");
                        access
                    }
                    None => access,
                }
            }
            None => access,
        };
        let mut conn = BufReader::new(tls);
        dialogue(&mut conn, peer, dir, &access, sh, true).await?;
    }
    Ok(())
}

enum Outcome {
    Quit,
    StartTls,
}

pub(super) async fn reply<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> anyhow::Result<()> {
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\r\n").await?;
    s.flush().await?;
    Ok(())
}

/// The address inside `FROM:<...>` / `TO:<...>`, and the parameters after it.
fn path_arg<'a>(arg: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let rest = arg
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &arg[prefix.len()..])?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let addr = rest[..end].trim();
    if addr.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    Some((addr.to_ascii_lowercase(), rest[end + 1..].trim()))
}

async fn dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    peer: SocketAddr,
    dir: Direction,
    access: &Access,
    sh: &Shared,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let max = sh.h.settings.docking.max_message_bytes.0 as u64;
    let host = &sh.h.settings.smtp.hostname;
    let mut helo = false;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        match read_line_timed(conn, &mut line).await? {
            Line::Eof => return Ok(Outcome::Quit),
            Line::TooLong { .. } => {
                reply(conn, "500 5.5.2 line too long").await?;
                continue;
            }
            Line::Bare { .. } => {
                reply(conn, "500 5.5.2 bare CR or LF: lines end with CRLF").await?;
                continue;
            }
            Line::Good => {}
        }
        let text = String::from_utf8_lossy(&line).to_string();
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (text.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" | "HELO" => {
                if arg.is_empty() {
                    reply(conn, "501 5.5.4 a domain or address is required").await?;
                    continue;
                }
                helo = true;
                from = None;
                to.clear();
                if verb == "HELO" {
                    reply(conn, &format!("250 {host}")).await?;
                } else {
                    let mut lines = vec![
                        host.to_string(),
                        format!("SIZE {max}"),
                        "8BITMIME".into(),
                        "PIPELINING".into(),
                    ];
                    if !tls {
                        lines.push("STARTTLS".into());
                    }
                    let last = lines.len() - 1;
                    let text: String = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                        .collect();
                    conn.write_all(text.as_bytes()).await?;
                    conn.flush().await?;
                }
            }
            "STARTTLS" if !tls => {
                reply(conn, "220 2.0.0 ready to start TLS").await?;
                return Ok(Outcome::StartTls);
            }
            "STARTTLS" => reply(conn, "503 5.5.1 TLS is already active").await?,
            "MAIL" => {
                if !helo {
                    reply(conn, "503 5.5.1 EHLO first").await?;
                } else if let Access::NeedsCertificate = access {
                    let text = format!(
                        "530 5.7.0 STARTTLS with a pinned client certificate allowed to {} is required",
                        dir.verb()
                    );
                    reply(conn, &text).await?;
                } else if from.is_some() {
                    reply(conn, "503 5.5.1 MAIL already given").await?;
                } else {
                    match path_arg(&arg, "FROM:") {
                        Some((addr, params)) => {
                            let size = params
                                .split_whitespace()
                                .find_map(|p| {
                                    p.get(..5)
                                        .filter(|k| k.eq_ignore_ascii_case("SIZE="))
                                        .and(p.get(5..))
                                })
                                .and_then(|v| v.parse::<u64>().ok());
                            if size.is_some_and(|s| s > max) {
                                reply(conn, "552 5.3.4 message size exceeds the limit").await?;
                            } else if !sh.spool.has_room(size.unwrap_or(1)) {
                                reply(conn, "452 4.3.1 the spool is full, try again later").await?;
                            } else {
                                from = Some(addr);
                                reply(conn, "250 2.1.0 OK").await?;
                            }
                        }
                        None => reply(conn, "501 5.5.4 syntax: MAIL FROM:<address>").await?,
                    }
                }
            }
            "RCPT" => {
                if from.is_none() {
                    reply(conn, "503 5.5.1 MAIL first").await?;
                } else if to.len() >= MAX_RECIPIENTS {
                    reply(conn, "452 4.5.3 too many recipients").await?;
                } else {
                    match path_arg(&arg, "TO:") {
                        Some((addr, _)) if addr.contains('@') => {
                            to.push(addr);
                            reply(conn, "250 2.1.5 OK").await?;
                        }
                        _ => reply(conn, "501 5.5.4 syntax: RCPT TO:<address>").await?,
                    }
                }
            }
            "DATA" => {
                if to.is_empty() {
                    reply(conn, "503 5.5.1 RCPT first").await?;
                    continue;
                }
                let Access::Open(name) = access else {
                    reply(conn, "503 5.5.1 MAIL first").await?;
                    continue;
                };
                let received = time::OffsetDateTime::now_utc().unix_timestamp();
                let env = Envelope {
                    direction: dir,
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    client: peer.ip().to_canonical().to_string(),
                    client_name: Some(name.clone()),
                    received,
                    attempts: 0,
                    held_reason: None,
                };
                let answer = data(conn, &mut line, sh, &env, max).await?;
                if answer.starts_with("250") {
                    sh.wake.notify_one();
                }
                reply(conn, &answer).await?;
            }
            "RSET" => {
                from = None;
                to.clear();
                reply(conn, "250 2.0.0 OK").await?;
            }
            "NOOP" => reply(conn, "250 2.0.0 OK").await?,
            "VRFY" => reply(conn, "252 2.1.5 cannot verify").await?,
            "QUIT" => {
                reply(conn, &format!("221 2.0.0 {host} closing")).await?;
                return Ok(Outcome::Quit);
            }
            _ => reply(conn, "502 5.5.2 command not recognised").await?,
        }
    }
}

/// Takes a message after DATA, streaming it to the spool; the reply to send.
async fn data<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    line: &mut Vec<u8>,
    sh: &Shared,
    env: &Envelope,
    max: u64,
) -> anyhow::Result<String> {
    let mut incoming = match sh.spool.receive(env.received).await {
        Ok(i) if sh.spool.has_room(1) => Some(i),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a spool file");
            None
        }
    };
    if incoming.is_none() {
        return Ok("452 4.3.1 the spool is full or unavailable, try again later".into());
    }
    reply(conn, "354 end data with <CR><LF>.<CR><LF>").await?;
    let mut refused: Option<&'static str> = None;
    // Whether the previous line ended with CRLF: "." ends DATA only after one (CRLF "." CRLF).
    let mut after_crlf = true;
    loop {
        let l = read_line_timed(conn, line).await?;
        let at_boundary = std::mem::replace(
            &mut after_crlf,
            matches!(
                l,
                Line::Good | Line::Bare { crlf: true } | Line::TooLong { crlf: true }
            ),
        );
        match l {
            Line::Eof => anyhow::bail!("connection closed in DATA"),
            Line::Good if at_boundary && line.as_slice() == b"." => break,
            Line::Good => {}
            Line::Bare { .. } => {
                refused
                    .get_or_insert("550 5.6.0 bare CR or LF in the message: lines end with CRLF");
                continue;
            }
            Line::TooLong { .. } => {
                refused.get_or_insert("552 5.3.4 a line of the message is too long");
                continue;
            }
        }
        if !at_boundary {
            // The rest of a line ended by a bare LF: the message is refused already.
            continue;
        }
        if refused.is_some() {
            continue;
        }
        let body = line.strip_prefix(b".").unwrap_or(&line[..]);
        let Some(inc) = incoming.as_mut() else {
            continue;
        };
        if inc.len() + body.len() as u64 + 2 > max {
            refused = Some("552 5.3.4 message size exceeds the limit");
            continue;
        }
        match inc.line(body).await {
            Ok(true) => {}
            Ok(false) => refused = Some("452 4.3.1 the spool is full, try again later"),
            Err(e) => {
                tracing::error!(error = %e, "cannot write to the spool");
                refused = Some("451 4.3.0 cannot store the message now, try again later");
            }
        }
    }
    if let Some(r) = refused {
        return Ok(r.into());
    }
    let Some(inc) = incoming.take() else {
        return Ok("451 4.3.0 cannot store the message now, try again later".into());
    };
    Ok(match inc.commit(env).await {
        Ok(id) => format!("250 2.0.0 OK queued as {id}"),
        Err(e) => {
            tracing::error!(error = %e, "cannot spool a message");
            "451 4.3.0 cannot store the message now, try again later".into()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(
            path_arg("FROM:<A@b.org> SIZE=10", "FROM:"),
            Some(("a@b.org".into(), "SIZE=10"))
        );
        assert_eq!(path_arg("from: <>", "FROM:"), Some(("".into(), "")));
        assert_eq!(path_arg("TO:a@b", "TO:"), None);
        assert_eq!(path_arg("TO:<a b@c>", "TO:"), None);
        assert_eq!(path_arg("T", "TO:"), None);
    }

    async fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        // A tiny buffer, so that lines arrive in many pieces.
        let mut r = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, max).await.expect("read");
            assert!(buf.len() <= max + 2, "the buffer stays bounded");
            if l == Line::Eof {
                return out;
            }
            out.push((l, buf.clone()));
        }
    }

    #[tokio::test]
    async fn only_crlf_ends_a_line() {
        let got = lines(b"a\r\n.\r\nb\nc\rd\r\n.\r\r\n.\n\r\n", 100).await;
        let want: Vec<(Line, &[u8])> = vec![
            (Line::Good, b"a"),
            (Line::Good, b"."),
            (Line::Bare { crlf: false }, b"b"),
            (Line::Bare { crlf: true }, b"c\rd"),
            (Line::Bare { crlf: true }, b".\r"),
            (Line::Bare { crlf: false }, b"."),
            (Line::Good, b""),
        ];
        assert_eq!(
            got,
            want.into_iter()
                .map(|(l, b)| (l, b.to_vec()))
                .collect::<Vec<_>>()
        );
        // A partial last line is not a line.
        assert_eq!(lines(b".", 100).await, vec![]);
    }

    #[tokio::test]
    async fn an_over_long_line_is_one_refused_line_never_pieces() {
        let mut input = vec![b'a'; 10];
        input.extend_from_slice(b".\r\nnext\r\n");
        let got = lines(&input, 10).await;
        assert_eq!(
            got,
            vec![
                (Line::TooLong { crlf: true }, vec![]),
                (Line::Good, b"next".to_vec())
            ]
        );
        let mut input = vec![b'a'; 20];
        input.extend_from_slice(b"\n.\r\n");
        assert_eq!(
            lines(&input, 10).await,
            vec![
                (Line::TooLong { crlf: false }, vec![]),
                (Line::Good, b".".to_vec())
            ]
        );
        // Exactly at the limit is fine.
        let got = lines(b"0123456789\r\n", 10).await;
        assert_eq!(got, vec![(Line::Good, b"0123456789".to_vec())]);
    }
}
