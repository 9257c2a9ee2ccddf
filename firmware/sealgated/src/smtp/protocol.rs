//! The inbound side: who may connect, and a thin I/O driver over the protocol layer
//! ([`sealgate_smtp::Session`]: framing, commands, replies, smuggling defences).
//!
//! Attackers: anyone who reaches a listener. Without access control they could have captured
//! ciphertext decrypted to an extra RCPT of their choice, or mail signed with any user's key
//! (MAIL FROM chooses the key). So a client must come from `allow_addresses`, or from
//! `certificate_addresses` with a pinned client certificate whose scopes include the
//! listener's; everyone else gets `554` at connect (logged and audited).
//!
//! Smuggling (in the protocol layer): a line ends only at CRLF. A bare LF or a bare CR
//! anywhere is refused (`500` for a command; the whole message `550` at its end), an
//! over-long line is consumed to its end and refused (never cut into pieces that could read
//! as `.`), and only CRLF "." CRLF ends DATA. So no reading of the stream can end DATA where
//! the next hop would not. Commands pipelined behind STARTTLS are discarded.
//!
//! The driver reads, feeds the session, writes its replies, and answers its events with the
//! hand-off's policy (access, the spool's room). It reaches the spool through four calls:
//! `has_room`, `receive`, `Incoming::line` and `Incoming::commit` (`250` only after the
//! commit's fsyncs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sealgate_smtp::{Config, Event, Reply, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::spool::{Envelope, Incoming};
use super::{Direction, Shared};
use crate::identity::sha256;

/// The longest message line accepted, without its CRLF.
const MAX_DATA_LINE: usize = 64 * 1024;
const MAX_RECIPIENTS: usize = 1000;
/// Idle time allowed between two reads.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

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
    let access = if dir == Direction::Inbound {
        // The MX: anyone on the Internet, within the rate per address; what they may send
        // is decided per recipient (`inbound::recipient`).
        if !super::inbound::rate_allows(sh, ip) {
            if first_refusal_this_minute(sh, ip) {
                tracing::warn!(%peer, "too many inbound connections from one address");
                sh.h.audit.record(
                    &format!("mx:{ip}"),
                    &ip.to_string(),
                    dir.name(),
                    None,
                    "refused-rate",
                    421,
                    Duration::ZERO,
                );
            }
            let _ = tcp.try_write(
                b"421 4.7.0 too many connections from your address, try again later\r\n",
            );
            return;
        }
        Access::Open(format!("mx:{ip}"))
    } else if lists.allow.iter().any(|c| c.contains(ip)) {
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

/// The protocol layer's settings for a hand-off listener.
fn session_config(sh: &Shared, dir: Direction) -> Config {
    if dir == Direction::Inbound {
        return super::inbound::session_config(&sh.h.settings);
    }
    let mut c = Config::new(sh.h.settings.smtp.hostname.clone());
    c.greeting = format!("Sealgate docking ({}) ESMTP", dir.name());
    c.extensions.starttls = true;
    // The next hop gets plain SMTP with DATA: no UTF-8 envelopes, and messages arrive in
    // whole lines (DATA, not BDAT), as the spool stores them.
    c.extensions.smtputf8 = false;
    c.extensions.chunking = false;
    c.max_message_bytes = sh.h.settings.docking.max_message_bytes.0 as u64;
    c.max_recipients = MAX_RECIPIENTS;
    c.max_data_line = MAX_DATA_LINE;
    c
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    dir: Direction,
    access: Access,
    sh: &Arc<Shared>,
) -> anyhow::Result<()> {
    let mut s = Session::new(session_config(sh, dir));
    let mut tcp = tcp;
    if let Outcome::Quit = drive(&mut tcp, &mut s, peer, dir, &access, sh).await? {
        return Ok(());
    }
    // The session discarded whatever came after STARTTLS; bytes still in flight go to the
    // handshake, which fails on them.
    let acceptor = tokio_rustls::TlsAcceptor::from(sh.h.tls.clone());
    let mut tls = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(tcp)).await??;
    let access = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => {
            let fp = sha256(leaf.as_ref());
            match sh.h.settings.auth.clients.iter().find(|c| c.sha256.0 == fp) {
                Some(c) if dir.scope().is_some_and(|sc| c.scopes.contains(&sc)) => {
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
    s.tls_started();
    drive(&mut tls, &mut s, peer, dir, &access, sh).await?;
    Ok(())
}

enum Outcome {
    Quit,
    StartTls,
}

/// Writes the session's pending replies.
async fn flush<S: AsyncWrite + Unpin>(conn: &mut S, s: &mut Session) -> anyhow::Result<()> {
    let out = s.take_output();
    if !out.is_empty() {
        conn.write_all(&out).await?;
        conn.flush().await?;
    }
    Ok(())
}

/// The inbound MX's scan before its `250` (`inbound::before_accept`): `Some(reply)` when the
/// message is answered here: `550` when the scanning policy rejects it (nothing is queued;
/// the client's side keeps it), `250` once it is durably in the quarantine (nothing is
/// queued either), `452`/`451` when the quarantine has no room or cannot be written.
#[allow(clippy::too_many_arguments)]
async fn scan_before_accept(
    sh: &Arc<Shared>,
    r: &mut Receiving<'_>,
    peer: SocketAddr,
    client_name: &str,
    helo: &str,
    from: &str,
    to: &[String],
    auth_out: &mut Option<sealgate_scan::checks::AuthResults>,
) -> Option<Reply> {
    use super::inbound::Early;
    if !sh.scanner.wants_content() {
        return None;
    }
    let msg = match r.incoming.contents().await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a spooled message back");
            return Some(cannot_store());
        }
    };
    let started = std::time::Instant::now();
    let message_id = crate::docking::message_id(&msg);
    let ip = peer.ip().to_canonical().to_string();
    let actor = crate::keys::actor(Direction::Inbound.name(), client_name, &ip);
    // Sender authentication and DNS lists (`mailauth.rs`), before the content scan.
    let scan_settings = &sh.h.settings.scan;
    let auth = if scan_settings.auth
        || !scan_settings.dnsbl.is_empty()
        || !scan_settings.uribl.is_empty()
    {
        let hosts = if scan_settings.uribl.is_empty() {
            Vec::new()
        } else {
            let worker = sh.h.workers.clone().acquire_owned().await.ok()?;
            let (sh2, to2, actor2, msg2) = (sh.clone(), to.to_vec(), actor.clone(), msg.clone());
            tokio::task::spawn_blocking(move || {
                let _w = worker;
                super::inbound::link_hosts(&sh2, &actor2, &to2, &msg2)
            })
            .await
            .unwrap_or_default()
        };
        let client = crate::mailauth::Client {
            ip: peer.ip().to_canonical(),
            helo,
            mail_from: from,
        };
        Some(
            crate::mailauth::check(
                scan_settings,
                &sh.h.settings.smtp.hostname,
                client,
                &msg,
                &hosts,
            )
            .await,
        )
    } else {
        None
    };
    *auth_out = auth.clone();
    let worker = sh.h.workers.clone().acquire_owned().await.ok()?;
    let (sh2, from2, to2) = (sh.clone(), from.to_string(), to.to_vec());
    let early = tokio::task::spawn_blocking(move || {
        let _w = worker;
        super::inbound::before_accept(&sh2, &actor, &from2, &to2, &msg, auth.as_ref())
    })
    .await
    .ok()?;
    let (reply, outcome) = match early {
        Early::Accept => return None,
        Early::Reject(reply) => (reply, "refused-scan"),
        Early::Quarantine { message, verdict } => {
            let store = crate::quarantine::store()?;
            let quota = sh.h.settings.smtp.spool_max_bytes.0 as u64;
            let meta = crate::quarantine::meta("inbound", from, to, &ip, &verdict);
            let stored = tokio::task::spawn_blocking(move || {
                if store.bytes() + message.len() as u64 > quota {
                    return Ok(None);
                }
                store.put(&meta, &message).map(Some)
            })
            .await;
            match stored {
                Ok(Ok(Some(id))) => {
                    tracing::info!(%peer, quarantine = %id, "message quarantined");
                    (
                        Reply::new(250, [2, 0, 0], format!("OK queued as {id}")),
                        "quarantined",
                    )
                }
                Ok(Ok(None)) => (
                    Reply::new(452, [4, 3, 1], "the spool is full, try again later"),
                    "quarantine-full",
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot write to the quarantine");
                    (cannot_store(), "quarantine-failed")
                }
                Err(_) => (cannot_store(), "quarantine-failed"),
            }
        }
    };
    // The verdict (score and labels are in the reply and the daemon's log), never content.
    sh.h.audit.record(
        &format!("mx:{ip}"),
        &ip,
        Direction::Inbound.name(),
        message_id,
        outcome,
        reply.code,
        started.elapsed(),
    );
    Some(reply)
}

/// The MX's loop check before its `250` (`loops.rs`): `Some(554 5.4.6)` when the message
/// carries more of this box's valid loop markers than `[queue] max_loop_markers`.
async fn loop_before_accept(
    sh: &Arc<Shared>,
    r: &mut Receiving<'_>,
    peer: SocketAddr,
) -> Option<Reply> {
    let msg = match r.incoming.contents().await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a spooled message back");
            return Some(cannot_store());
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let reply = sh.loops.refusal(&sh.loops.own(&msg, now))?;
    let ip = peer.ip().to_canonical().to_string();
    tracing::warn!(%peer, "a message looping through the box refused (554 5.4.6)");
    sh.h.audit.record(
        &format!("mx:{ip}"),
        &ip,
        Direction::Inbound.name(),
        crate::docking::message_id(&msg),
        "refused-loop",
        554,
        std::time::Duration::ZERO,
    );
    Some(reply)
}

/// The message being received: where it goes, and why it will be refused at its end.
struct Receiving<'a> {
    incoming: Incoming<'a>,
    received: i64,
    refused: Option<Reply>,
    /// Bytes stored as they come (BDAT chunks end anywhere); else whole lines.
    raw: bool,
}

impl Receiving<'_> {
    /// Appends message bytes (whole CRLF lines: the session gives DATA so; BDAT's as sent).
    async fn write(&mut self, bytes: &[u8]) {
        if self.refused.is_some() {
            return;
        }
        if self.raw {
            match self.incoming.bytes(bytes).await {
                Ok(true) => {}
                Ok(false) => self.refused = Some(spool_full()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot write to the spool");
                    self.refused = Some(cannot_store());
                }
            }
            return;
        }
        let body = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
        for line in body.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match self.incoming.line(line).await {
                Ok(true) => {}
                Ok(false) => {
                    self.refused = Some(spool_full());
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write to the spool");
                    self.refused = Some(cannot_store());
                    return;
                }
            }
        }
    }
}

fn spool_full() -> Reply {
    Reply::new(452, [4, 3, 1], "the spool is full, try again later")
}

fn cannot_store() -> Reply {
    Reply::new(
        451,
        [4, 3, 0],
        "cannot store the message now, try again later",
    )
}

/// Runs the session over one stream until QUIT, the end of the stream, or STARTTLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    s: &mut Session,
    peer: SocketAddr,
    dir: Direction,
    access: &Access,
    sh: &Arc<Shared>,
) -> anyhow::Result<Outcome> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut from = String::new();
    let mut to: Vec<String> = Vec::new();
    let mut receiving: Option<Receiving<'_>> = None;
    loop {
        match s.next_event() {
            Event::NeedInput => {
                flush(conn, s).await?;
                let Ok(n) = tokio::time::timeout(READ_TIMEOUT, conn.read(&mut buf)).await else {
                    s.shutdown(Reply::new(421, [4, 4, 2], "idle too long, closing"));
                    flush(conn, s).await?;
                    anyhow::bail!("idle timeout");
                };
                let n = n?;
                if n == 0 {
                    return Ok(Outcome::Quit);
                }
                s.feed(&buf[..n]);
            }
            Event::Flush => flush(conn, s).await?,
            Event::StartTls => {
                flush(conn, s).await?;
                return Ok(Outcome::StartTls);
            }
            Event::Quit | Event::Close => {
                flush(conn, s).await?;
                return Ok(Outcome::Quit);
            }
            Event::MailFrom(m) => {
                if let Access::NeedsCertificate = access {
                    s.refuse(Reply::new(
                        530,
                        [5, 7, 0],
                        format!(
                            "STARTTLS with a pinned client certificate allowed to {} is required",
                            dir.verb()
                        ),
                    ));
                } else if !sh.spool.has_room(m.size.unwrap_or(1)) {
                    s.refuse(Reply::new(
                        452,
                        [4, 3, 1],
                        "the spool is full, try again later",
                    ));
                } else {
                    from = m.address.to_ascii_lowercase();
                    to.clear();
                    s.accept();
                }
            }
            Event::RcptTo(r) if dir == Direction::Inbound => {
                match super::inbound::recipient(&sh.h.settings.inbound, &r.address) {
                    Ok(a) => {
                        let checked = match (&sh.verifier, &sh.inbound_hop) {
                            (Some(v), Some(hop)) => {
                                v.check(hop, &sh.h.settings.smtp.hostname, peer.ip(), &a)
                                    .await
                            }
                            _ => super::verify::Answer::Accept,
                        };
                        match checked {
                            super::verify::Answer::Accept => {
                                to.push(a);
                                s.accept();
                            }
                            super::verify::Answer::Refuse(reply) => s.refuse(reply),
                        }
                    }
                    Err(reply) => {
                        tracing::info!(%peer, rcpt = %r.address.escape_debug(), "inbound recipient refused");
                        s.refuse(reply);
                    }
                }
            }
            Event::RcptTo(r) => {
                if r.address.contains('@') {
                    to.push(r.address.to_ascii_lowercase());
                    s.accept();
                } else {
                    s.refuse(Reply::new(501, [5, 5, 4], "syntax: RCPT TO:<address>"));
                }
            }
            Event::DataStart => {
                let received = time::OffsetDateTime::now_utc().unix_timestamp();
                match sh.spool.receive(received).await {
                    Ok(incoming) if sh.spool.has_room(1) => {
                        receiving = Some(Receiving {
                            incoming,
                            received,
                            refused: None,
                            raw: dir == Direction::Inbound,
                        });
                        s.accept();
                    }
                    r => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, "cannot create a spool file");
                        }
                        s.refuse(Reply::new(
                            452,
                            [4, 3, 1],
                            "the spool is full or unavailable, try again later",
                        ));
                    }
                }
            }
            Event::Data(bytes) => {
                if let Some(r) = receiving.as_mut() {
                    r.write(&bytes).await;
                }
            }
            Event::DataAborted => receiving = None,
            Event::EndOfMessage => {
                let Some(r) = receiving.take() else {
                    s.refuse(cannot_store());
                    continue;
                };
                if let Some(reply) = r.refused {
                    s.refuse(reply);
                    continue;
                }
                let Access::Open(name) = access else {
                    s.refuse(Reply::new(503, [5, 5, 1], "MAIL first"));
                    continue;
                };
                let mut r = r;
                if dir == Direction::Inbound
                    && let Some(reply) = loop_before_accept(sh, &mut r, peer).await
                {
                    s.refuse(reply);
                    continue;
                }
                let helo = s.helo_name().unwrap_or_default().to_string();
                let mut auth = None;
                if dir == Direction::Inbound
                    && let Some(reply) =
                        scan_before_accept(sh, &mut r, peer, name, &helo, &from, &to, &mut auth)
                            .await
                {
                    // Quarantined (`250`, durably stored) or refused: nothing is queued.
                    if reply.code == 250 {
                        s.accept_with(reply);
                    } else {
                        s.refuse(reply);
                    }
                    continue;
                }
                let env = Envelope {
                    direction: dir,
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    client: peer.ip().to_canonical().to_string(),
                    client_name: Some(name.clone()),
                    received: r.received,
                    attempts: 0,
                    held_reason: None,
                    released: None,
                    auth,
                };
                let bytes = r.incoming.len();
                match r.incoming.commit(&env).await {
                    Ok(id) => {
                        tracing::debug!(%peer, id, bytes, "message spooled");
                        sh.wake.notify_one();
                        s.accept_with(Reply::new(250, [2, 0, 0], format!("OK queued as {id}")));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot spool a message");
                        s.refuse(cannot_store());
                    }
                }
            }
            Event::Auth { .. } => {
                // Not offered by the hand-off; the session never asks.
                s.refuse(Reply::new(502, [5, 5, 1], "AUTH is not offered"));
            }
            _ => {}
        }
    }
}
