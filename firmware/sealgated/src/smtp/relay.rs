//! The outbound side: plain SMTP to the configured next hop.
//!
//! The message goes out through the protocol layer's DATA writer
//! ([`sealgate_smtp::data_section`]): every line end normalised to CRLF (a bare CR or LF in
//! the engine's output, e.g. from decrypted content an outsider wrote, becomes a line end)
//! and every line starting with "." dot-stuffed, so nothing in the content can end DATA
//! early at the next hop (no smuggling through the box). Commands are written by
//! [`sealgate_smtp::client::Command`] (no CR or LF from an address reaches the wire) and
//! replies read by its reply reader.

use std::net::SocketAddr;
use std::time::Duration;

use sealgate_smtp::client::{Command, ReplyReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) enum RelayError {
    Temporary(String),
    Permanent(String),
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// The connection to the next hop and the protocol layer's reply reader.
struct Conn {
    tcp: TcpStream,
    replies: ReplyReader,
    buf: Vec<u8>,
}

impl Conn {
    /// Writes `cmd` (if any) and reads the reply; an error unless it is in `want`'s class.
    async fn command(&mut self, cmd: Option<Command<'_>>, want: u16) -> Result<(), RelayError> {
        let label = match cmd {
            Some(c) => {
                let bytes = c
                    .encode()
                    .map_err(|e| RelayError::Permanent(e.to_string()))?;
                self.tcp
                    .write_all(&bytes)
                    .await
                    .map_err(|e| RelayError::Temporary(e.to_string()))?;
                String::from_utf8_lossy(&bytes).trim_end().to_string()
            }
            None => String::new(),
        };
        let reply = loop {
            if let Some(r) = self.replies.next_reply() {
                break r.map_err(|e| RelayError::Temporary(e.to_string()))?;
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.tcp.read(&mut self.buf))
                .await
                .map_err(|_| RelayError::Temporary("reply timeout".into()))?
                .map_err(|e| RelayError::Temporary(e.to_string()))?;
            if n == 0 {
                return Err(RelayError::Temporary(
                    "the next hop closed the connection".into(),
                ));
            }
            self.replies.feed(&self.buf[..n]);
        };
        match reply.code {
            c if c / 100 == want / 100 => Ok(()),
            _ if reply.is_permanent() => Err(RelayError::Permanent(format!("{label}: {reply}"))),
            _ => Err(RelayError::Temporary(format!("{label}: {reply}"))),
        }
    }
}

/// Sends one message to the next hop (plain SMTP).
pub(super) async fn relay(
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
    let mut c = Conn {
        tcp,
        replies: ReplyReader::new(),
        buf: vec![0; 8192],
    };
    c.command(None, 220).await?;
    c.command(Some(Command::Ehlo(hostname)), 250).await?;
    c.command(
        Some(Command::MailFrom {
            address: from,
            size: None,
            eight_bit: false,
            smtputf8: false,
        }),
        250,
    )
    .await?;
    for t in to {
        c.command(Some(Command::RcptTo(t)), 250).await?;
    }
    c.command(Some(Command::Data), 354).await?;
    let data = sealgate_smtp::data_section(msg);
    c.tcp
        .write_all(&data)
        .await
        .map_err(|e| RelayError::Temporary(e.to_string()))?;
    c.tcp
        .flush()
        .await
        .map_err(|e| RelayError::Temporary(e.to_string()))?;
    c.command(None, 250).await?;
    let _ = c.command(Some(Command::Quit), 221).await;
    Ok(())
}
