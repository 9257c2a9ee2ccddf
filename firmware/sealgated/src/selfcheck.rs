//! `sealgated --check-health`: asks the running daemon's admin listener `GET /api/v1/health`
//! over TLS, as the box's health gate (`sealgate-console health-gate`) must before it marks
//! the boot slot good. busybox's `wget` cannot talk TLS to rustls reliably, and this binary
//! already holds a TLS stack.
//!
//! The server's certificate is not checked against a CA (the box's own is self-signed); the
//! handshake signature is, so it is a real TLS exchange. Who could answer in the daemon's
//! place: a process on the box itself listening on the admin port, i.e. root on the box, who
//! owns the boot anyway; the question is "is the daemon up", not "is it trusted".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls_pki_types::ServerName;

/// Where to ask: a wildcard listener is asked on loopback.
pub fn health_target(admin: SocketAddr) -> SocketAddr {
    let ip = match admin.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, admin.port())
}

/// One health request; Ok when the daemon answers 200 with `"status":"up"`.
pub fn check(admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let target = health_target(admin);
    let provider = crate::identity::provider();
    let verifier = Arc::new(crate::identity::AnyCertificate {
        algs: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::IpAddress(target.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let tcp = TcpStream::connect_timeout(&target, timeout)
        .with_context(|| format!("connecting to {target}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET /api/v1/health HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut answer = Vec::new();
    // Bounded: the answer is a few hundred bytes.
    let _ = Read::by_ref(&mut tls)
        .take(64 * 1024)
        .read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200") {
        bail!(
            "{target} answered {:?}",
            text.lines().next().unwrap_or("nothing")
        );
    }
    if !text.contains("\"up\"") {
        bail!("{target} answered 200 without \"up\"");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_asked_on_loopback() {
        let t = |s: &str| health_target(s.parse().expect("addr")).to_string();
        assert_eq!(t("0.0.0.0:8440"), "127.0.0.1:8440");
        assert_eq!(t("[::]:8440"), "[::1]:8440");
        assert_eq!(t("192.0.2.7:9440"), "192.0.2.7:9440");
    }

    #[test]
    fn nothing_listening_is_not_healthy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        assert!(check(addr, Duration::from_secs(2)).is_err());
    }
}
