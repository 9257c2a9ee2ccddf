//! The DHCPv4 client's sockets: one thread per interface with `dhcp = true`, running
//! `sealgate_netproto::dhcp::Client` over a UDP socket on port 68 bound to the link
//! (`SO_BINDTODEVICE`, broadcast allowed). A lease is not applied here: it is recorded
//! ([`leases`]) and the network's reconcile adds its address, its default route and its
//! name and NTP servers to the settings it applies (`network::effective`), so a lease goes
//! through the same checks and the same idempotent netlink path as static settings.
//!
//! Who talks to it: anyone on the link (see `sealgate_netproto::dhcp`: only the reply to
//! our transaction, from the chosen server, with a checked lease, counts). A rogue server on
//! the link that answers first is what every DHCP client gets; use static addresses where
//! the link is not trusted.
//!
//! Lifecycle: [`stop_unwanted`] (before a reconcile) stops the clients of interfaces that no
//! longer have `dhcp = true` and gives their leases back (RELEASE); [`start_wanted`] (after)
//! starts the missing ones. A lease bound, changed or lost wakes the network's watch, which
//! reconciles again.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sealgate_netproto::dhcp::{Client, Event, Lease, Outgoing};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Mac, Settings};

/// A client's state as the status shows it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The link it runs on.
    pub link: String,
    /// `selecting`, `bound`, `renewing`, ...
    pub state: &'static str,
    /// The lease, if one is held.
    pub lease: Option<Lease>,
    /// When the lease ends.
    pub expires: Option<Instant>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Clients by the interface's label in the settings (name or MAC).
static RUNNING: Mutex<BTreeMap<String, Running>> = Mutex::new(BTreeMap::new());
/// What each client holds, by the interface's label.
static HELD: Mutex<BTreeMap<String, Held>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<String, Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

fn running() -> std::sync::MutexGuard<'static, BTreeMap<String, Running>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The leases held now, by the interface's label.
pub fn leases() -> BTreeMap<String, Lease> {
    held()
        .iter()
        .filter_map(|(k, h)| h.lease.clone().map(|l| (k.clone(), l)))
        .collect()
}

/// Every client's state, by the interface's label.
pub fn clients() -> BTreeMap<String, Held> {
    held().clone()
}

/// Name servers from the leases (the DNS server's forwarders when `[dns] forwarders` is
/// empty).
pub fn dns_servers() -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = leases().values().flat_map(|l| l.dns.clone()).collect();
    out.dedup();
    out
}

/// NTP servers from the leases (used when `[network] ntp_servers` is empty).
pub fn ntp_servers() -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = leases().values().flat_map(|l| l.ntp.clone()).collect();
    out.dedup();
    out
}

fn wanted(s: &Settings) -> Vec<String> {
    s.interfaces
        .iter()
        .filter(|i| i.dhcp)
        .map(|i| i.label())
        .collect()
}

/// Stops the clients whose interface no longer has `dhcp = true` (each gives its lease back
/// first), and forgets their leases.
pub fn stop_unwanted(s: &Settings) {
    let want = wanted(s);
    let stopping: Vec<(String, Running)> = {
        let mut r = running();
        let gone: Vec<String> = r.keys().filter(|k| !want.contains(k)).cloned().collect();
        gone.into_iter()
            .filter_map(|k| r.remove(&k).map(|x| (k, x)))
            .collect()
    };
    for (label, r) in stopping {
        r.stop.store(true, Ordering::Relaxed);
        let _ = r.thread.join();
        held().remove(&label);
        crate::dns::write_resolv_conf();
    }
}

/// Starts a client for every interface with `dhcp = true` that has none, on the link the
/// kernel has for it.
pub fn start_wanted(s: &Settings) {
    let want = wanted(s);
    if want.iter().all(|w| running().contains_key(w)) {
        return;
    }
    let state = match super::netlink::read() {
        Ok(st) => st,
        Err(e) => {
            super::say(&format!("network: DHCP not started: {e}"));
            return;
        }
    };
    for iface in s.interfaces.iter().filter(|i| i.dhcp) {
        let label = iface.label();
        if running().contains_key(&label) {
            continue;
        }
        let Some(link) = super::find(&state, iface) else {
            continue;
        };
        let Some(mac) = link.mac else {
            super::say(&format!(
                "network: {label}: no hardware address, DHCP not started"
            ));
            continue;
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (name, hostname) = (link.name.clone(), s.hostname.clone());
        let (l2, stop2) = (label.clone(), stop.clone());
        held().insert(
            label.clone(),
            Held {
                link: name.clone(),
                state: "init",
                lease: None,
                expires: None,
            },
        );
        let thread = std::thread::spawn(move || run(&l2, &name, mac, hostname, &stop2));
        running().insert(label, Running { stop, thread });
    }
}

/// A socket on port 68 bound to `link`.
fn open(link: &str) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(link.as_bytes()))?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        dhcproto_ports::CLIENT,
    )))?;
    Ok(s.into())
}

mod dhcproto_ports {
    pub const CLIENT: u16 = 68;
    pub const SERVER: u16 = 67;
}

fn send(sock: &UdpSocket, o: &Outgoing) {
    let to = SocketAddrV4::new(o.to.unwrap_or(Ipv4Addr::BROADCAST), dhcproto_ports::SERVER);
    if let Err(e) = sock.send_to(&o.bytes, to) {
        tracing::debug!(error = %e, %to, "DHCP: sending failed");
    }
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_be_bytes(b)
}

fn run(label: &str, link: &str, mac: Mac, hostname: Option<String>, stop: &AtomicBool) {
    let sock = match open(link) {
        Ok(s) => s,
        Err(e) => {
            super::say(&format!(
                "network: {label}: DHCP socket on {link}: {e} (no lease)"
            ));
            return;
        }
    };
    let mut c = Client::new(mac.0, hostname, random_xid(), Instant::now());
    let mut buf = [0u8; 1500];
    loop {
        if stop.load(Ordering::Relaxed) {
            if let Some(o) = c.release() {
                send(&sock, &o);
                super::say(&format!("network: {label}: DHCP lease given back"));
            }
            return;
        }
        let (out, ev) = c.poll(Instant::now());
        if let Some(ev) = ev {
            apply(label, link, &c, ev);
        }
        if let Some(o) = out {
            send(&sock, &o);
        }
        update(label, link, &c);
        let wait = c
            .next_due()
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let _ = sock.set_read_timeout(Some(wait));
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if from.port() == dhcproto_ports::SERVER
                    && let Some(ev) = c.receive(&buf[..n], Instant::now())
                {
                    apply(label, link, &c, ev);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                tracing::debug!(error = %e, "DHCP: receiving failed");
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn update(label: &str, link: &str, c: &Client) {
    held().insert(
        label.to_string(),
        Held {
            link: link.to_string(),
            state: c.state_name(),
            lease: c.lease().cloned(),
            expires: c.expires(),
        },
    );
}

fn apply(label: &str, link: &str, c: &Client, ev: Event) {
    let before = held().get(label).and_then(|h| h.lease.clone());
    update(label, link, c);
    match ev {
        Event::Bound(l) => {
            let same = before.as_ref().is_some_and(|b| {
                b.address == l.address
                    && b.prefix == l.prefix
                    && b.router == l.router
                    && b.dns == l.dns
                    && b.ntp == l.ntp
            });
            if !same {
                super::say(&format!(
                    "network: {label}: DHCP lease {}/{} from {} (router {}, name servers {:?}, NTP {:?}, {} s)",
                    l.address,
                    l.prefix,
                    l.server,
                    l.router
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "none".into()),
                    l.dns,
                    l.ntp,
                    l.duration.as_secs()
                ));
                super::wake();
                crate::dns::write_resolv_conf();
            }
        }
        Event::Lost => {
            super::say(&format!("network: {label}: DHCP lease lost"));
            super::wake();
            crate::dns::write_resolv_conf();
        }
    }
}
