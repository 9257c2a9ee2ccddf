//! The outbound side: plain SMTP to the configured next hop.
//!
//! The message goes out with every line end normalised to CRLF (a bare CR or LF in the
//! engine's output, e.g. from decrypted content an outsider wrote, becomes a line end) and
//! every line starting with "." dot-stuffed, so nothing in the content can end DATA early at
//! the next hop (no smuggling through the box).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::protocol::{Line, MAX_LINE, read_line, reply};

pub(super) enum RelayError {
    Temporary(String),
    Permanent(String),
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

async fn read_reply<S: AsyncRead + Unpin>(
    r: &mut BufReader<S>,
) -> Result<(u16, String), RelayError> {
    let mut line = Vec::new();
    let mut text = String::new();
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, read_line(r, &mut line, MAX_LINE)).await {
            Ok(Ok(Line::Good | Line::Bare { .. })) => {}
            Ok(Ok(Line::Eof)) => {
                return Err(RelayError::Temporary(
                    "the next hop closed the connection".into(),
                ));
            }
            Ok(Ok(Line::TooLong { .. })) => {
                return Err(RelayError::Temporary("over-long reply".into()));
            }
            Ok(Err(e)) => return Err(RelayError::Temporary(e.to_string())),
            Err(_) => return Err(RelayError::Temporary("reply timeout".into())),
        }
        let l = String::from_utf8_lossy(&line).trim_end().to_string();
        let code = l
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| RelayError::Temporary(format!("bad reply {l:?}")))?;
        if text.len() < 4096 {
            text.push_str(&l);
        }
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

/// The DATA section for `msg`: CRLF line ends, dot-stuffed, ending with CRLF "." CRLF.
pub(super) fn data_section(msg: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(msg.len() + msg.len() / 50 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while i < msg.len() {
        let b = msg[i];
        match b {
            b'\r' | b'\n' => {
                data.extend_from_slice(b"\r\n");
                at_line_start = true;
                // CRLF is one line end.
                if b == b'\r' && msg.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            _ => {
                if at_line_start && b == b'.' {
                    data.push(b'.');
                }
                data.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
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
    let mut r = BufReader::new(tcp);
    command(&mut r, "", 220).await?;
    command(&mut r, &format!("EHLO {hostname}"), 250).await?;
    command(&mut r, &format!("MAIL FROM:<{from}>"), 250).await?;
    for t in to {
        command(&mut r, &format!("RCPT TO:<{t}>"), 250).await?;
    }
    command(&mut r, "DATA", 354).await?;
    let data = data_section(msg);
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
    fn nothing_in_the_content_ends_data_at_the_next_hop() {
        assert_eq!(data_section(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n".to_vec());
        assert_eq!(data_section(b"a"), b"a\r\n.\r\n".to_vec());
        assert_eq!(data_section(b""), b".\r\n".to_vec());
        assert_eq!(data_section(b".x\r\n"), b"..x\r\n.\r\n".to_vec());
        for smuggle in [
            &b"a\n.\nMAIL"[..],
            b"a\n.\r\nMAIL",
            b"a\r.\rMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n.\r\r\nMAIL",
            b"a\r\n.\r\nMAIL",
        ] {
            let d = data_section(smuggle);
            // The only CRLF "." CRLF is the final one.
            let ends = d.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert_eq!(ends, 1, "{:?}", String::from_utf8_lossy(&d));
            assert!(d.ends_with(b"\r\n.\r\n"));
            assert!(
                !d.windows(2)
                    .enumerate()
                    .any(|(i, w)| (w[0] == b'\r' && w[1] != b'\n')
                        || (w[1] == b'\n' && w[0] != b'\r' && i + 1 < d.len())),
                "only CRLF line ends"
            );
        }
    }
}
