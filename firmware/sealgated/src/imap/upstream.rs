//! Connections to the organisation's IMAP server: implicit TLS (`imaps://`) or STARTTLS
//! (`imap://`, required: a server that does not offer it, or greets with PREAUTH, is refused;
//! whatever it sends after its `OK` to STARTTLS and before the handshake is discarded). The
//! server's certificate is verified against `[imap] upstream_ca` or the system's roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use imap_codec::fragmentizer::Fragmentizer;
use imap_codec::imap_types::response::{Greeting, GreetingKind, Response, Status, StatusKind};
use imap_codec::{GreetingCodec, ResponseCodec};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::settings::ImapUpstream;

/// A TLS connection to the server.
pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// The largest response read while connecting.
const HANDSHAKE_MAX: u32 = 64 * 1024;

/// How the proxy reaches the server.
pub struct Connector {
    target: ImapUpstream,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Connector {
    /// A connector for `target`, trusting `ca` (PEM) or the system's roots.
    pub fn new(target: ImapUpstream, ca: Option<&Path>) -> anyhow::Result<Connector> {
        let mut roots = RootCertStore::empty();
        let file = ca.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .with_context(|| format!("[imap] trust anchors {}", file.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("[imap] trust anchors {}", file.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            bail!("[imap] trust anchors {}: no certificate", file.display());
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::identity::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| anyhow::anyhow!("[imap] upstream host {:?} is not a name", target.host))?;
        Ok(Connector {
            target,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Connects and returns the TLS stream and the greeting (for STARTTLS, the greeting the
    /// server sent before TLS, which the proxy does not show: it only had to be OK).
    pub async fn connect(&self) -> anyhow::Result<(Stream, Option<Greeting<'static>>)> {
        let t = &self.target;
        let tcp = tokio::time::timeout(
            Duration::from_secs(30),
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .context("connecting to the IMAP server timed out")?
        .with_context(|| format!("connecting to {t}"))?;
        let _ = tcp.set_nodelay(true);
        if t.implicit_tls {
            let mut tls = tokio::time::timeout(
                Duration::from_secs(30),
                self.tls.connect(self.name.clone(), tcp),
            )
            .await
            .context("TLS with the IMAP server timed out")?
            .with_context(|| format!("TLS with {t}"))?;
            let mut fr = Fragmentizer::new(HANDSHAKE_MAX);
            let g = read_greeting(&mut tls, &mut fr).await?;
            return Ok((tls, Some(g)));
        }
        let mut tcp = tcp;
        let mut fr = Fragmentizer::new(HANDSHAKE_MAX);
        let g = read_greeting(&mut tcp, &mut fr).await?;
        if g.kind != GreetingKind::Ok {
            bail!(
                "{t} greets with {} before TLS: refused",
                match g.kind {
                    GreetingKind::PreAuth => "PREAUTH",
                    _ => "BYE",
                }
            );
        }
        tcp.write_all(b"S0 STARTTLS\r\n").await?;
        loop {
            let r = read_response(&mut tcp, &mut fr).await?;
            match r {
                Response::Status(Status::Tagged(tg)) if tg.tag.as_ref() == "S0" => {
                    if tg.body.kind != StatusKind::Ok {
                        bail!("{t} refuses STARTTLS");
                    }
                    break;
                }
                Response::Status(Status::Bye(_)) => bail!("{t} said BYE before TLS"),
                // Anything else before TLS is ignored.
                _ => {}
            }
        }
        // What the server (or someone on the path) sent after its OK is dropped with `fr`.
        drop(fr);
        let tls = tokio::time::timeout(
            Duration::from_secs(30),
            self.tls.connect(self.name.clone(), tcp),
        )
        .await
        .context("TLS with the IMAP server timed out")?
        .with_context(|| format!("TLS with {t}"))?;
        Ok((tls, None))
    }
}

async fn fill<R: AsyncReadExt + Unpin>(r: &mut R, fr: &mut Fragmentizer) -> anyhow::Result<()> {
    let mut buf = [0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(60), r.read(&mut buf))
        .await
        .context("the IMAP server did not answer in time")??;
    if n == 0 {
        bail!("the IMAP server closed the connection");
    }
    fr.enqueue_bytes(&buf[..n]);
    Ok(())
}

/// Reads one complete message into `fr`.
pub async fn next_message<R: AsyncReadExt + Unpin>(
    r: &mut R,
    fr: &mut Fragmentizer,
) -> anyhow::Result<()> {
    loop {
        match fr.progress() {
            Some(_) if fr.is_message_complete() => return Ok(()),
            Some(_) => {}
            None => fill(r, fr).await?,
        }
    }
}

async fn read_greeting<R: AsyncReadExt + Unpin>(
    r: &mut R,
    fr: &mut Fragmentizer,
) -> anyhow::Result<Greeting<'static>> {
    next_message(r, fr).await?;
    let g = fr
        .decode_message(&GreetingCodec::default())
        .map_err(|_| anyhow::anyhow!("the IMAP server's greeting does not parse"))?;
    Ok(imap_codec::imap_types::IntoStatic::into_static(g))
}

/// Reads and decodes one response.
pub async fn read_response<R: AsyncReadExt + Unpin>(
    r: &mut R,
    fr: &mut Fragmentizer,
) -> anyhow::Result<Response<'static>> {
    next_message(r, fr).await?;
    let resp = fr
        .decode_message(&ResponseCodec::default())
        .map_err(|_| anyhow::anyhow!("a response of the IMAP server does not parse"))?;
    Ok(imap_codec::imap_types::IntoStatic::into_static(resp))
}
