//! The plain-text start of a connection on `[imap] listen_starttls` (the box's port 143):
//! the proxy itself greets with `STARTTLS LOGINDISABLED`, answers CAPABILITY, NOOP and
//! LOGOUT, refuses every login (`NO [PRIVACYREQUIRED]`), and on STARTTLS answers `OK` and
//! starts TLS. No upstream connection is opened and nothing reaches the server before TLS.
//!
//! Attacker: anyone on the network path (NO STARTTLS, <https://nostarttls.secvuln.info/>).
//! Commands pipelined after STARTTLS in the same read are discarded with the plain-text
//! buffer (a man in the middle cannot inject a command that then runs inside TLS); bytes
//! that come later are TLS handshake bytes or the handshake fails. Literals are refused
//! (nothing before TLS needs one), lines are bounded, and the plain-text phase is timed.

use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use imap_codec::imap_types::command::CommandBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest command before TLS.
const MAX_LINE: u32 = 1024;
/// Commands before TLS at most.
const MAX_COMMANDS: usize = 32;
/// The plain-text phase at most.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(60);

const CAPS: &str = "IMAP4rev1 STARTTLS LOGINDISABLED";

/// Runs the plain-text phase; `Ok(Some(tcp))` when the client asked for STARTTLS and was
/// told to begin (its buffered plain text dropped), `Ok(None)` when it left.
pub async fn negotiate(mut tcp: TcpStream) -> anyhow::Result<Option<TcpStream>> {
    match tokio::time::timeout(PLAIN_TIMEOUT, plain_phase(&mut tcp)).await {
        Ok(Ok(true)) => Ok(Some(tcp)),
        Ok(Ok(false)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let _ = tcp.write_all(b"* BYE No STARTTLS in time\r\n").await;
            Ok(None)
        }
    }
}

async fn plain_phase(tcp: &mut TcpStream) -> anyhow::Result<bool> {
    tcp.write_all(format!("* OK [CAPABILITY {CAPS}] IMAP proxy ready\r\n").as_bytes())
        .await?;
    let mut fr = Fragmentizer::new(MAX_LINE);
    let mut buf = [0u8; 1024];
    let mut commands = 0usize;
    loop {
        let Some(info) = fr.progress() else {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            fr.enqueue_bytes(&buf[..n]);
            continue;
        };
        if let FragmentInfo::Line {
            announcement: Some(_),
            ..
        } = info
        {
            let _ = tcp
                .write_all(b"* BYE No literals before STARTTLS\r\n")
                .await;
            return Ok(false);
        }
        if fr.is_max_message_size_exceeded() {
            let _ = tcp.write_all(b"* BYE Command too long\r\n").await;
            return Ok(false);
        }
        if !fr.is_message_complete() {
            continue;
        }
        commands += 1;
        if commands > MAX_COMMANDS {
            let _ = tcp
                .write_all(b"* BYE Too many commands before STARTTLS\r\n")
                .await;
            return Ok(false);
        }
        let cmd = match fr.decode_message(&CommandCodec::default()) {
            Ok(c) => c,
            Err(_) => {
                let tag = fr
                    .decode_tag()
                    .map(|t| t.as_ref().to_string())
                    .unwrap_or_else(|| "*".into());
                tcp.write_all(format!("{tag} BAD Command not understood\r\n").as_bytes())
                    .await?;
                continue;
            }
        };
        let tag = cmd.tag.as_ref().to_string();
        let answer = match cmd.body {
            CommandBody::Capability => {
                format!("* CAPABILITY {CAPS}\r\n{tag} OK CAPABILITY completed\r\n")
            }
            CommandBody::Noop => format!("{tag} OK NOOP completed\r\n"),
            CommandBody::Logout => {
                tcp.write_all(
                    format!("* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n").as_bytes(),
                )
                .await?;
                return Ok(false);
            }
            CommandBody::StartTLS => {
                tcp.write_all(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes())
                    .await?;
                tcp.flush().await?;
                // Whatever the client sent after STARTTLS in plain text goes with `fr`.
                drop(fr);
                return Ok(true);
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first (LOGINDISABLED)\r\n")
            }
            _ => format!("{tag} BAD Use STARTTLS first\r\n"),
        };
        tcp.write_all(answer.as_bytes()).await?;
    }
}
