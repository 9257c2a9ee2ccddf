//! The SMTP hand-off, for security gateways that only speak SMTP: one listener decrypts, the
//! other encrypts (and signs, by policy); results go to the configured next hop.
//!
//! A message's life: **inbound** (a small SMTP server state machine; STARTTLS offered with the
//! box certificate) → **spool** (`DATA/spool/ID.eml` then `ID.json`, each fsynced, and the
//! directory fsynced, before the `250`) → **process** (the same blocking operations as the
//! HTTPS API, on a blocking thread; a message that cannot be processed passes unchanged with
//! an `X-Sealgate-Docking` result header) → **outbound** (plain SMTP to the next hop; deleted
//! from the spool only after the next hop's `250`; a temporary failure is retried every
//! `retry_secs`; a permanent one moves the message, unchanged, to `DATA/spool/held/`).
//!
//! Loops: every result carries `X-Sealgate-Loop: BOX-ID`; a message that already carries ours
//! is relayed without processing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sealgate_smime::cert::Certificate;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::docking;
use crate::identity::{hex, random};
use crate::keys::{Acting, KeyStore};
use crate::settings::Settings;

/// The loop-stopping header.
pub const LOOP_HEADER: &str = "X-Sealgate-Loop";
/// The result header of the hand-off.
pub const RESULT_HEADER: &str = "X-Sealgate-Docking";
const MAX_LINE: u64 = 64 * 1024;
const MAX_RECIPIENTS: usize = 1000;
/// SMTP sessions at once, both listeners together; beyond that a client gets `421`.
const MAX_SESSIONS: usize = 64;
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// What the hand-off needs from the daemon.
pub struct HandOff {
    /// Settings.
    pub settings: Settings,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Keys and certificates.
    pub keys: Arc<dyn KeyStore>,
    /// Configured trust anchors.
    pub anchors: Arc<Vec<Certificate>>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The box certificate for STARTTLS.
    pub tls: Arc<rustls::ServerConfig>,
    /// The crypto workers shared with the HTTPS API.
    pub workers: Arc<Semaphore>,
}

/// Which way a listener works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Decrypt and relay.
    Decrypt,
    /// Encrypt (sign by policy) and relay.
    Encrypt,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Decrypt => "smtp-decrypt",
            Direction::Encrypt => "smtp-encrypt",
        }
    }
}

/// The envelope stored beside a spooled message.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    direction: Direction,
    from: String,
    to: Vec<String>,
    client: String,
    received: i64,
}

/// The running hand-off.
pub struct Running {
    listening: Vec<(&'static str, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound listeners.
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        self.listening.clone()
    }

    /// Stops accepting, lets the delivery loop finish its current message.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

struct Shared {
    h: HandOff,
    box_id: String,
    spool: PathBuf,
    wake: Notify,
    sessions: Arc<Semaphore>,
}

/// Binds the configured listeners and starts the delivery loop.
pub async fn start(h: HandOff) -> anyhow::Result<Running> {
    let (stop, stop_rx) = watch::channel(false);
    let mut listening = Vec::new();
    let mut tasks = Vec::new();
    let Some(_) = h.settings.smtp.next_hop else {
        return Ok(Running {
            listening,
            stop,
            tasks,
        });
    };
    let spool = h.data_dir.join("spool");
    std::fs::create_dir_all(spool.join("held"))?;
    let box_id = box_id(&h.data_dir)?;
    let shared = Arc::new(Shared {
        h,
        box_id,
        spool,
        wake: Notify::new(),
        sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
    });
    for (dir, addr) in [
        (Direction::Decrypt, shared.h.settings.smtp.decrypt_listen),
        (Direction::Encrypt, shared.h.settings.smtp.encrypt_listen),
    ] {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {} to {addr}", dir.name()))?;
        listening.push((dir.name(), listener.local_addr()?));
        tasks.push(tokio::spawn(accept_loop(
            listener,
            dir,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(delivery_loop(shared, stop_rx)));
    Ok(Running {
        listening,
        stop,
        tasks,
    })
}

/// A random id for this box, kept in `DATA/box-id`, used in the loop header.
fn box_id(data_dir: &Path) -> anyhow::Result<String> {
    let p = data_dir.join("box-id");
    if let Ok(s) = std::fs::read_to_string(&p)
        && !s.trim().is_empty()
    {
        return Ok(s.trim().to_string());
    }
    let id = hex(&random(8)?);
    std::fs::write(&p, &id)?;
    Ok(id)
}

async fn accept_loop(
    listener: TcpListener,
    dir: Direction,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((mut tcp, peer)) => {
                    // Each session may buffer a whole message: cap how many run at once.
                    let Ok(permit) = sh.sessions.clone().try_acquire_owned() else {
                        let _ = tcp.write_all(b"421 4.3.2 too many connections, try again later\r\n").await;
                        continue;
                    };
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = session(tcp, peer, dir, sh).await {
                            tracing::debug!(%peer, error = %e, "SMTP session ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    dir: Direction,
    sh: Arc<Shared>,
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
    if let Outcome::StartTls = dialogue(&mut conn, peer, dir, &sh, false).await? {
        if !conn.buffer().is_empty() {
            // Commands pipelined after STARTTLS would be injected into the TLS session.
            anyhow::bail!("data after STARTTLS");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(sh.h.tls.clone());
        let tls = tokio::time::timeout(READ_TIMEOUT, acceptor.accept(conn.into_inner())).await??;
        let mut conn = BufReader::new(tls);
        dialogue(&mut conn, peer, dir, &sh, true).await?;
    }
    Ok(())
}

enum Outcome {
    Quit,
    StartTls,
}

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> anyhow::Result<()> {
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\r\n").await?;
    s.flush().await?;
    Ok(())
}

/// Reads one line (without CRLF); `None` at end of stream; refuses over-long lines.
async fn read_line<S: AsyncRead + Unpin>(
    s: &mut BufReader<S>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Option<bool>> {
    buf.clear();
    let n = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut *s).take(MAX_LINE).read_until(b'\n', buf),
    )
    .await??;
    if n == 0 {
        return Ok(None);
    }
    let complete = buf.ends_with(b"\n");
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(complete))
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
    sh: &Shared,
    tls: bool,
) -> anyhow::Result<Outcome> {
    let max = sh.h.settings.docking.max_message_bytes.0;
    let host = &sh.h.settings.smtp.hostname;
    let mut helo = false;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        let Some(complete) = read_line(conn, &mut line).await? else {
            return Ok(Outcome::Quit);
        };
        if !complete {
            reply(conn, "500 5.5.2 line too long").await?;
            continue;
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
                            if size.is_some_and(|s| s > max as u64) {
                                reply(conn, "552 5.3.4 message size exceeds the limit").await?;
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
                reply(conn, "354 end data with <CR><LF>.<CR><LF>").await?;
                let mut msg = Vec::new();
                let mut too_big = false;
                loop {
                    let Some(_) = read_line(conn, &mut line).await? else {
                        anyhow::bail!("connection closed in DATA")
                    };
                    if line == b"." {
                        break;
                    }
                    let body = line.strip_prefix(b".").unwrap_or(&line);
                    if msg.len() + body.len() + 2 > max {
                        too_big = true;
                        msg.clear();
                        continue;
                    }
                    if !too_big {
                        msg.extend_from_slice(body);
                        msg.extend_from_slice(b"\r\n");
                    }
                }
                let env = Envelope {
                    direction: dir,
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    client: peer.ip().to_string(),
                    received: time::OffsetDateTime::now_utc().unix_timestamp(),
                };
                if too_big {
                    reply(conn, "552 5.3.4 message size exceeds the limit").await?;
                    continue;
                }
                let spool = sh.spool.clone();
                match tokio::task::spawn_blocking(move || spool_message(&spool, &env, &msg)).await {
                    Ok(Ok(id)) => {
                        sh.wake.notify_one();
                        reply(conn, &format!("250 2.0.0 OK queued as {id}")).await?;
                    }
                    other => {
                        tracing::error!(result = ?other.map(|r| r.map_err(|e| e.to_string())), "cannot spool a message");
                        reply(
                            conn,
                            "451 4.3.0 cannot store the message now, try again later",
                        )
                        .await?;
                    }
                }
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

/// Writes the message and then its envelope, each fsynced, then fsyncs the directory: the
/// envelope's presence marks a complete message.
fn spool_message(spool: &Path, env: &Envelope, msg: &[u8]) -> anyhow::Result<String> {
    use std::io::Write;
    let id = format!("{}-{}", env.received, hex(&random(6)?));
    let mut f = std::fs::File::create(spool.join(format!("{id}.eml")))?;
    f.write_all(msg)?;
    f.sync_all()?;
    let tmp = spool.join(format!("{id}.json.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(env)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, spool.join(format!("{id}.json")))?;
    std::fs::File::open(spool)?.sync_all()?;
    Ok(id)
}

async fn delivery_loop(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let retry = sh.h.settings.smtp.retry_secs.duration();
    let mut last_attempt: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        let mut ids: Vec<String> = match std::fs::read_dir(&sh.spool) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                Vec::new()
            }
        };
        ids.sort();
        for id in ids {
            if *stop.borrow() {
                return;
            }
            if last_attempt.get(&id).is_some_and(|t| t.elapsed() < retry) {
                continue;
            }
            last_attempt.insert(id.clone(), Instant::now());
            if deliver(&sh, &id).await {
                last_attempt.remove(&id);
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = sh.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Processes and relays one spooled message. True when it left the spool.
async fn deliver(sh: &Arc<Shared>, id: &str) -> bool {
    let started = Instant::now();
    let env_path = sh.spool.join(format!("{id}.json"));
    let msg_path = sh.spool.join(format!("{id}.eml"));
    let (env, msg) = match (std::fs::read(&env_path), std::fs::read(&msg_path)) {
        (Ok(e), Ok(m)) => match serde_json::from_slice::<Envelope>(&e) {
            Ok(env) => (env, m),
            Err(e) => {
                tracing::error!(id, error = %e, "unreadable spool envelope: held");
                hold(sh, id);
                return true;
            }
        },
        _ => return false,
    };
    let mid = docking::message_id(&msg);
    let Ok(worker) = sh.h.workers.clone().acquire_owned().await else {
        return false;
    };
    let sh2 = sh.clone();
    let to = env.to.clone();
    let from = env.from.clone();
    let direction = env.direction;
    let client = env.client.clone();
    let processed = tokio::task::spawn_blocking(move || {
        let _w = worker;
        process(&sh2, direction, &client, &from, &to, msg)
    })
    .await;
    let (out, outcome) = match processed {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(id, error = %e, "processing panicked");
            return false;
        }
    };
    let Some(next_hop) = sh.h.settings.smtp.next_hop else {
        return false;
    };
    let result = relay(
        next_hop,
        &sh.h.settings.smtp.hostname,
        &env.from,
        &env.to,
        &out,
    )
    .await;
    let op = env.direction.name();
    let client = format!("smtp:{}", env.client);
    match result {
        Ok(()) => {
            let _ = std::fs::remove_file(&env_path);
            let _ = std::fs::remove_file(&msg_path);
            sh.h.audit.record(
                &client,
                &env.client,
                op,
                mid,
                &outcome,
                250,
                started.elapsed(),
            );
            true
        }
        Err(RelayError::Permanent(e)) => {
            tracing::error!(id, error = %e, "next hop refused the message permanently: held unchanged in spool/held");
            sh.h.audit.record(
                &client,
                &env.client,
                op,
                mid,
                "held",
                550,
                started.elapsed(),
            );
            hold(sh, id);
            true
        }
        Err(RelayError::Temporary(e)) => {
            tracing::warn!(id, error = %e, "next hop unavailable: will retry");
            false
        }
    }
}

fn hold(sh: &Shared, id: &str) {
    for ext in ["eml", "json"] {
        let _ = std::fs::rename(
            sh.spool.join(format!("{id}.{ext}")),
            sh.spool.join("held").join(format!("{id}.{ext}")),
        );
    }
}

fn header_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Runs the docking operation; on failure the message passes unchanged with a result header.
fn process(
    sh: &Shared,
    direction: Direction,
    client: &str,
    from: &str,
    to: &[String],
    msg: Vec<u8>,
) -> (Vec<u8>, String) {
    let loop_line = format!("{LOOP_HEADER}: {}\r\n", sh.box_id);
    if docking::has_header_value(&msg, LOOP_HEADER, &sh.box_id) {
        return (msg, "loop-passed-unchanged".into());
    }
    // Key uses are audited under the hand-off and the address that submitted the message.
    let service = match direction {
        Direction::Decrypt => "smtp-decrypt",
        Direction::Encrypt => "smtp-encrypt",
    };
    let acting = Acting::new(sh.h.keys.as_ref(), crate::keys::actor(service, "", client));
    let keys = &acting;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let result = match direction {
        Direction::Decrypt => docking::decrypt(keys, &sh.h.anchors, &msg, to, false)
            .map(|(o, r)| (o, r.status.to_string())),
        Direction::Encrypt => {
            let from = (!from.is_empty()).then_some(from);
            docking::encrypt(
                keys,
                &sh.h.settings.docking,
                &msg,
                from,
                to,
                sh.h.settings.docking.missing,
                now,
            )
            .map(|(o, r)| {
                let mut status = r.status.to_string();
                if !r.missing.is_empty() {
                    status.push_str(&format!("; missing-certificates={}", r.missing.join(",")));
                }
                (o, status)
            })
        }
    };
    let verb = match direction {
        Direction::Decrypt => "decrypt",
        Direction::Encrypt => "encrypt",
    };
    let (body, header, outcome) = match result {
        Ok((out, status)) => (
            out,
            format!(
                "{RESULT_HEADER}: {verb}; result={}\r\n",
                header_value(&status)
            ),
            status,
        ),
        Err(p) => {
            let mut header = format!(
                "{RESULT_HEADER}: {verb}; result=failed; problem=\"{}\"",
                p.uri()
            );
            if let Some(m) = &p.missing {
                header.push_str(&format!("; missing-certificates={}", m.join(",")));
            }
            (
                msg,
                format!("{}\r\n", header_value(&header)),
                format!("failed:{}", p.kind),
            )
        }
    };
    let mut out = Vec::with_capacity(body.len() + loop_line.len() + header.len());
    out.extend_from_slice(loop_line.as_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    (out, outcome)
}

enum RelayError {
    Temporary(String),
    Permanent(String),
}

async fn read_reply<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
) -> Result<(u16, String), RelayError> {
    let mut line = Vec::new();
    let mut text = String::new();
    loop {
        match read_line(r, &mut line).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(RelayError::Temporary(
                    "the next hop closed the connection".into(),
                ));
            }
            Err(e) => return Err(RelayError::Temporary(e.to_string())),
        }
        let l = String::from_utf8_lossy(&line).to_string();
        let code = l
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| RelayError::Temporary(format!("bad reply {l:?}")))?;
        text.push_str(&l);
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    cmd: &str,
    want: u16,
) -> Result<(), RelayError> {
    if !cmd.is_empty() {
        reply(r, cmd)
            .await
            .map_err(|e| RelayError::Temporary(e.to_string()))?;
    }
    let (code, text) = read_reply(r).await?;
    match code {
        c if c / 100 == want / 100 => Ok(()),
        c if c >= 500 => Err(RelayError::Permanent(format!("{cmd}: {text}"))),
        _ => Err(RelayError::Temporary(format!("{cmd}: {text}"))),
    }
}

/// Sends one message to the next hop (plain SMTP).
async fn relay(
    next_hop: SocketAddr,
    hostname: &str,
    from: &str,
    to: &[String],
    msg: &[u8],
) -> Result<(), RelayError> {
    let tcp = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(next_hop))
        .await
        .map_err(|_| RelayError::Temporary("connect timeout".into()))?
        .map_err(|e| RelayError::Temporary(format!("connect {next_hop}: {e}")))?;
    let mut r = BufReader::new(tcp);
    command(&mut r, "", 220).await?;
    command(&mut r, &format!("EHLO {hostname}"), 250).await?;
    command(&mut r, &format!("MAIL FROM:<{from}>"), 250).await?;
    for t in to {
        command(&mut r, &format!("RCPT TO:<{t}>"), 250).await?;
    }
    command(&mut r, "DATA", 354).await?;
    let mut data = Vec::with_capacity(msg.len() + msg.len() / 50 + 8);
    for line in msg.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
        data.extend_from_slice(b"\r\n");
    }
    // The split leaves one empty line after a final CRLF; drop it.
    if msg.ends_with(b"\n") {
        data.truncate(data.len() - 2);
    }
    data.extend_from_slice(b".\r\n");
    r.write_all(&data)
        .await
        .map_err(|e| RelayError::Temporary(e.to_string()))?;
    r.flush()
        .await
        .map_err(|e| RelayError::Temporary(e.to_string()))?;
    command(&mut r, "", 250).await?;
    let _ = command(&mut r, "QUIT", 221).await;
    Ok(())
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
}
