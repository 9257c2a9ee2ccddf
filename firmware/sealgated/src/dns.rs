//! The split-horizon DNS server's sockets (the answers themselves are `sealgate_dns`'s, which
//! does no I/O): UDP and TCP on `[dns] listen` (one port), each message answered from the
//! client's view or forwarded to `[dns] forwarders` through the cache. Views, forwarders,
//! `recursion_networks`, `own_view` and `resolv_conf` are live ([`configure`]: a settings
//! change swaps them whole, with an empty cache); `listen` takes a restart.
//!
//! Who talks to it: any host that reaches the listener (on the box, the Internet for the
//! outside view). What it bounds: at most [`MAX_FORWARDS`] questions wait for a forwarder at
//! once (more get SERVFAIL at once), at most [`MAX_TCP`] TCP connections (more are closed),
//! each idle at most [`TCP_IDLE`] and answered at most [`TCP_MESSAGES`] times; the cache holds
//! at most [`CACHE_ENTRIES`] questions. Questions to a forwarder go out from a fresh socket
//! (a random port) with a random ID, connected to the forwarder, and only its answer to
//! exactly that question counts (`sealgate_dns::upstream`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealgate_dns::answer::{Question, Transport, failed, forwarded};
use sealgate_dns::upstream::{self, Checked, Upstream};
use sealgate_dns::{Decision, Views, answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Questions waiting for a forwarder at once.
pub const MAX_FORWARDS: usize = 512;
/// TCP connections at once.
pub const MAX_TCP: usize = 64;
/// A TCP connection without a complete message for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Messages answered on one TCP connection.
pub const TCP_MESSAGES: usize = 100;
/// Questions in the cache.
pub const CACHE_ENTRIES: usize = 10_000;
/// How long one forwarder has to answer.
const FORWARDER_WAIT: Duration = Duration::from_secs(2);

struct Shared {
    views: Views,
    forwarders: Vec<SocketAddr>,
    cache: Mutex<sealgate_dns::cache::Cache>,
    forwards: Arc<Semaphore>,
}

/// The views, forwarders and cache in force: replaced whole by [`configure`] (a settings
/// change), read once per message.
static LIVE: std::sync::RwLock<Option<Arc<Shared>>> = std::sync::RwLock::new(None);

/// What answers the next message: the live configuration, or the one the server started
/// with.
fn live(base: &Arc<Shared>) -> Arc<Shared> {
    LIVE.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| base.clone())
}

impl Shared {
    fn new(s: &sealgate_dns::Settings, forwards: Arc<Semaphore>) -> Shared {
        // Without forwarders in the settings, the DHCP leases' name servers are the forwarders.
        let leased = crate::network::applied().interfaces.iter().any(|i| i.dhcp);
        Shared {
            views: Views::new(s).with_forwarding(leased),
            forwarders: s.forwarders.clone(),
            cache: Mutex::new(sealgate_dns::cache::Cache::new(CACHE_ENTRIES)),
            forwards,
        }
    }
}

/// Puts `[dns]`'s views, forwarders, `recursion_networks`, `own_view` and `resolv_conf` in
/// force in the running server (a settings change; `listen` waits for a restart). The cache
/// starts empty (its answers came from the old forwarders). Without a running server only
/// the resolver file is written.
pub fn configure(s: &sealgate_dns::Settings) {
    {
        let mut r = RESOLV.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = r.as_mut() {
            let listen = old.listen;
            *old = s.clone();
            // The resolver file names the listener the server has, not the one it will have.
            old.listen = listen;
        }
    }
    write_resolv_conf();
    let mut g = LIVE.write().unwrap_or_else(|e| e.into_inner());
    if let Some(cur) = g.as_ref() {
        *g = Some(Arc::new(Shared::new(s, cur.forwards.clone())));
    }
}

/// The running server.
pub struct DnsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The resolver file's settings (`[dns] resolv_conf`), kept for rewriting it when a DHCP
/// lease's name servers change.
static RESOLV: std::sync::RwLock<Option<sealgate_dns::Settings>> = std::sync::RwLock::new(None);

/// The text of the box's resolver file: this server when it listens on port 53 on loopback
/// or every address (the box's own lookups then get `own_view`), else the forwarders on port
/// 53, else the DHCP leases' name servers (resolv.conf has no ports; at most 3 servers).
fn resolv_text(s: &sealgate_dns::Settings, leased: &[Ipv4Addr]) -> String {
    let mut servers: Vec<IpAddr> = Vec::new();
    match s.listen {
        Some(l) if l.port() == 53 && (l.ip().is_unspecified() || l.ip().is_loopback()) => {
            servers.push(if l.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(l) if l.port() == 53 => servers.push(l.ip()),
        _ if !s.forwarders.is_empty() => servers.extend(
            s.forwarders
                .iter()
                .filter(|f| f.port() == 53)
                .map(|f| f.ip()),
        ),
        _ => servers.extend(leased.iter().map(|ip| IpAddr::from(*ip))),
    }
    let mut text = String::from("# Written by sealgated ([dns] resolv_conf).\n");
    for ip in servers.iter().take(3) {
        text.push_str(&format!("nameserver {ip}\n"));
    }
    text
}

/// Writes `[dns] resolv_conf` (if set) from the settings given at start and the leases now.
/// Written in place, not renamed over: the file may be a bind mount or a symlink's target.
pub fn write_resolv_conf() {
    let Some(s) = RESOLV.read().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let Some(path) = &s.resolv_conf else {
        return;
    };
    let text = resolv_text(&s, &crate::network::dhcp::dns_servers());
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return;
    }
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(error = %e, path = %path.display(), "DNS: writing the resolver file failed");
    }
}

/// Starts the server if `[dns] listen` is set (and writes `[dns] resolv_conf` if set).
pub async fn start(s: &sealgate_dns::Settings) -> anyhow::Result<Option<DnsServer>> {
    *RESOLV.write().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
    write_resolv_conf();
    let Some(listen) = s.listen else {
        return Ok(None);
    };
    let (udp, tcp) = bind(listen).await?;
    let addr = udp.local_addr()?;
    let shared = Arc::new(Shared::new(s, Arc::new(Semaphore::new(MAX_FORWARDS))));
    *LIVE.write().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(serve_udp(Arc::new(udp), shared.clone(), stopped.clone())),
        tokio::spawn(serve_tcp(tcp, shared, stopped)),
    ];
    tracing::info!(%addr, views = s.views.len(), forwarders = s.forwarders.len(), "DNS server listening");
    Ok(Some(DnsServer { addr, stop, tasks }))
}

/// UDP and TCP on the same port (with port 0: one the system picks that is free for both).
async fn bind(listen: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("[dns] listen {listen} (UDP): {e}"))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => anyhow::bail!("[dns] listen {listen} (TCP): {e}"),
        }
    }
    anyhow::bail!(
        "[dns] listen {listen}: no port free for both UDP and TCP ({})",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

impl DnsServer {
    /// Its listener, for the console and the admin status.
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![("dns", self.addr)]
    }

    /// Stops answering.
    pub async fn stop(self) {
        *LIVE.write().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, base: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: receiving failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let shared = live(&base);
        let q = match answer(&buf[..n], peer.ip(), &shared.views, Transport::Udp) {
            Decision::Reply(b) => {
                let _ = sock.send_to(&b, peer).await;
                continue;
            }
            Decision::Drop => continue,
            Decision::Forward(q) => q,
        };
        if let Some(a) = shared.cached(&q) {
            if let Some(b) = forwarded(&q, &a, Transport::Udp) {
                let _ = sock.send_to(&b, peer).await;
            }
            continue;
        }
        let Ok(permit) = shared.forwards.clone().try_acquire_owned() else {
            if let Some(b) = failed(&q, Transport::Udp) {
                let _ = sock.send_to(&b, peer).await;
            }
            continue;
        };
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            let b = match shared.resolve(&q).await {
                Some(a) => forwarded(&q, &a, Transport::Udp),
                None => failed(&q, Transport::Udp),
            };
            if let Some(b) = b {
                let _ = sock.send_to(&b, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, base: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: accepting failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let base = base.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp_connection(stream, peer.ip(), &base).await {
                tracing::debug!(%peer, error = %e, "DNS: TCP connection ended");
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(mut s: TcpStream, peer: IpAddr, base: &Arc<Shared>) -> std::io::Result<()> {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    for _ in 0..TCP_MESSAGES {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return Ok(());
        };
        let len = usize::from(len?);
        let msg = &mut buf[..len];
        if tokio::time::timeout(TCP_IDLE, s.read_exact(msg))
            .await
            .is_err()
        {
            return Ok(());
        }
        let shared = live(base);
        let reply = match answer(msg, peer, &shared.views, Transport::Tcp) {
            Decision::Reply(b) => Some(b),
            Decision::Drop => return Ok(()),
            Decision::Forward(q) => match shared.cached(&q) {
                Some(a) => forwarded(&q, &a, Transport::Tcp),
                None => match shared.resolve(&q).await {
                    Some(a) => forwarded(&q, &a, Transport::Tcp),
                    None => failed(&q, Transport::Tcp),
                },
            },
        };
        let Some(reply) = reply else {
            return Ok(());
        };
        let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&reply[..usize::from(len)]);
        s.write_all(&out).await?;
    }
    Ok(())
}

impl Shared {
    fn cached(&self, q: &Question) -> Option<Upstream> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(&q.query, Instant::now())
    }

    /// The forwarders' answer to `q`, tried in order; stored in the cache. With no
    /// `[dns] forwarders`, the name servers of the DHCP leases are the forwarders.
    async fn resolve(&self, q: &Question) -> Option<Upstream> {
        let forwarders = if self.forwarders.is_empty() {
            crate::network::dhcp::dns_servers()
                .into_iter()
                .map(|ip| SocketAddr::new(ip.into(), 53))
                .collect()
        } else {
            self.forwarders.clone()
        };
        for fw in &forwarders {
            match ask(*fw, q).await {
                Ok(a) => {
                    let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    c.put(&q.query, &a, Instant::now());
                    return Some(a);
                }
                Err(e) => tracing::debug!(forwarder = %fw, error = %e, "DNS: forwarder failed"),
            }
        }
        None
    }
}

fn random_id() -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| std::io::Error::other("no randomness"))?;
    Ok(u16::from_be_bytes(b))
}

async fn ask(fw: SocketAddr, q: &Question) -> std::io::Result<Upstream> {
    let id = random_id()?;
    let bytes = upstream::query(&q.query, id, q.dnssec_ok)
        .ok_or_else(|| std::io::Error::other("the question cannot be encoded"))?;
    let local: IpAddr = if fw.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((local, 0)).await?;
    // Connected: the kernel drops datagrams from any other address and port.
    sock.connect(fw).await?;
    sock.send(&bytes).await?;
    let deadline = tokio::time::Instant::now() + FORWARDER_WAIT;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        match upstream::check(&buf[..n], id, &q.query) {
            Checked::Answer(a) => return Ok(a),
            Checked::Truncated => return ask_tcp(fw, q).await,
            Checked::Ignore => continue,
        }
    }
}

async fn ask_tcp(fw: SocketAddr, q: &Question) -> std::io::Result<Upstream> {
    let id = random_id()?;
    let bytes = upstream::query(&q.query, id, q.dnssec_ok)
        .ok_or_else(|| std::io::Error::other("the question cannot be encoded"))?;
    let exchange = async {
        let mut s = TcpStream::connect(fw).await?;
        let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        s.write_all(&out).await?;
        let len = usize::from(s.read_u16().await?);
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        match upstream::check(&buf, id, &q.query) {
            Checked::Answer(a) => Ok(a),
            _ => Err(std::io::Error::other("no answer to the question over TCP")),
        }
    };
    tokio::time::timeout(FORWARDER_WAIT * 2, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn settings(listen: Option<&str>, forwarders: &[&str]) -> sealgate_dns::Settings {
        sealgate_dns::Settings {
            listen: listen.map(|l| l.parse().unwrap()),
            forwarders: forwarders.iter().map(|f| f.parse().unwrap()).collect(),
            ..sealgate_dns::Settings::default()
        }
    }

    #[test]
    fn the_resolver_file_names_this_server_then_forwarders_then_leases() {
        let leased = [Ipv4Addr::new(192, 0, 2, 1)];
        let lines = |s: &sealgate_dns::Settings| -> Vec<String> {
            resolv_text(s, &leased)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            lines(&settings(Some("0.0.0.0:53"), &["192.0.2.9:53"])),
            ["nameserver 127.0.0.1"]
        );
        assert_eq!(lines(&settings(Some("[::]:53"), &[])), ["nameserver ::1"]);
        assert_eq!(
            lines(&settings(Some("10.0.0.1:53"), &[])),
            ["nameserver 10.0.0.1"]
        );
        // Not on port 53 (resolv.conf has no ports): the forwarders on port 53.
        assert_eq!(
            lines(&settings(
                Some("127.0.0.1:5353"),
                &["192.0.2.9:53", "192.0.2.8:5300"]
            )),
            ["nameserver 192.0.2.9"]
        );
        assert_eq!(lines(&settings(None, &[])), ["nameserver 192.0.2.1"]);
    }
}
