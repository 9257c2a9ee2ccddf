//! Who an OAuth session (XOAUTH2, OAUTHBEARER) belongs to, as the box verifies it itself.
//!
//! The name in an OAuth request (`user=` in XOAUTH2, `a=` in OAUTHBEARER) proves nothing:
//! the token decides who logs in, and some servers ignore the name or treat it as the
//! mailbox to open (shared mailboxes). So after the server accepted the login, the box asks
//! the organisation's token introspection endpoint (RFC 7662, `[imap] oauth_introspection`)
//! whose token it is, and decrypts only for that identity, and only when the request named
//! no one else. Without an endpoint configured, OAuth sessions read mail as stored.
//!
//! Attackers: the client (chooses the token and the name: a valid token of its own with
//! someone else's name must not unlock that person's keys) and the endpoint's answer (bounded
//! in size and time, parsed as JSON; `https://` verified against `oauth_introspection_ca` or
//! the system's roots; plain `http://` only to this machine's loopback).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

pub use sealgate_imap::oauth::{identity_from_answer, oauthbearer, xoauth2};

/// The largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long one introspection may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The configured introspection endpoint.
pub struct Introspection {
    host: String,
    port: u16,
    path: String,
    /// `None`: plain HTTP (loopback only).
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// `Basic` credentials (`client_id:secret` base64), when configured.
    basic: Option<Zeroizing<String>>,
    /// The member of the answer that names the account (default `username`).
    claim: String,
}

impl Introspection {
    /// From `[imap] oauth_introspection` and its companions.
    pub fn new(
        url: &str,
        ca: Option<&std::path::Path>,
        client_id: Option<&str>,
        secret_file: Option<&std::path::Path>,
        claim: Option<&str>,
    ) -> anyhow::Result<Introspection> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("[imap] oauth_introspection {url:?}: use https://HOST[:PORT]/PATH");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@')
            || path.contains('#')
            || path.chars().any(|c| c.is_control() || c == ' ')
        {
            bail!(
                "[imap] oauth_introspection {url:?}: no credentials or fragment in the URL (use oauth_client_id and oauth_client_secret_file)"
            );
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').context("bad IPv6 host")?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().context("bad port")?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().context("bad port")?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            bail!("[imap] oauth_introspection {url:?}: no host");
        }
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            let file = ca.unwrap_or(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"));
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .with_context(|| format!("[imap] oauth_introspection_ca {}", file.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("[imap] oauth_introspection_ca {}", file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!(
                    "[imap] oauth_introspection_ca {}: no certificate",
                    file.display()
                );
            }
            let config = rustls::ClientConfig::builder_with_provider(crate::identity::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.clone())
                .map_err(|_| anyhow::anyhow!("[imap] oauth_introspection host {host:?}"))?;
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(config)),
                name.to_owned(),
            ))
        } else {
            // A token sent in the clear must not leave the machine.
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if !loopback {
                bail!(
                    "[imap] oauth_introspection {url:?}: plain http:// only to this machine (127.0.0.1, ::1); use https://"
                );
            }
            None
        };
        let basic = match (client_id, secret_file) {
            (Some(id), Some(f)) => {
                let secret = Zeroizing::new(
                    std::fs::read_to_string(f)
                        .with_context(|| {
                            format!("[imap] oauth_client_secret_file {}", f.display())
                        })?
                        .trim()
                        .to_string(),
                );
                use base64::Engine as _;
                Some(Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        form(id),
                        form(&secret)
                    )),
                ))
            }
            (None, None) => None,
            _ => bail!("[imap] oauth_client_id and oauth_client_secret_file go together"),
        };
        Ok(Introspection {
            host,
            port,
            path: path.to_string(),
            tls,
            basic,
            claim: claim.unwrap_or("username").to_string(),
        })
    }

    /// The account `token` belongs to (lower case), or why it is not known: the endpoint
    /// said it is not active, has expired, or named no account.
    pub async fn identity(&self, token: &str) -> anyhow::Result<String> {
        let answer = tokio::time::timeout(TIMEOUT, self.ask(token))
            .await
            .context("the introspection endpoint did not answer in time")??;
        identity_from_answer(
            &answer,
            &self.claim,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .map_err(|e| anyhow::anyhow!(e))
    }

    async fn ask(&self, token: &str) -> anyhow::Result<Vec<u8>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .context("cannot reach the introspection endpoint")?;
        let body = Zeroizing::new(format!(
            "token={}&token_type_hint=access_token",
            form(token)
        ));
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let auth = self
            .basic
            .as_ref()
            .map(|b| format!("Authorization: Basic {}\r\n", b.as_str()))
            .unwrap_or_default();
        let req = Zeroizing::new(format!(
            "POST {} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.path,
            body.len(),
            body.as_str()
        ));
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS with the introspection endpoint")?;
                exchange(tls, req.as_bytes()).await
            }
            None => exchange(tcp, req.as_bytes()).await,
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> anyhow::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        if answer.len() > MAX_ANSWER {
            bail!("the introspection answer is larger than 64 KiB");
        }
    }
    Ok(answer)
}

/// `application/x-www-form-urlencoded` value.
fn form(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_and_no_credentials_in_the_url() {
        assert!(
            Introspection::new("http://127.0.0.1:8080/introspect", None, None, None, None).is_ok()
        );
        assert!(Introspection::new("http://[::1]/i", None, None, None, None).is_ok());
        assert!(Introspection::new("http://idp.example.org/i", None, None, None, None).is_err());
        assert!(
            Introspection::new(
                "https://id:secret@idp.example.org/i",
                None,
                None,
                None,
                None
            )
            .is_err()
        );
        assert!(Introspection::new("ftp://idp/i", None, None, None, None).is_err());
        assert!(Introspection::new("http://127.0.0.1/i", None, Some("id"), None, None).is_err());
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form("a b+c/=&"), "a%20b%2Bc%2F%3D%26");
    }
}
