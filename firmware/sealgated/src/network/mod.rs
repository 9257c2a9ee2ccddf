//! The box's network, owned by the daemon: `[[network.interfaces]]` (addresses, MTU, VLANs)
//! and `[[network.routes]]` are the desired state, reconciled with the kernel's through
//! netlink (`netlink.rs`) in the daemon's network namespace.
//!
//! - **Idempotent**: the kernel's state is read first and only the differences are changed
//!   ([`plan`], no I/O, unit-tested); applying the same settings twice changes nothing.
//! - **Only what it manages**: links not named in the settings are reported (`unmanaged`),
//!   never changed or removed; on a managed link, addresses not in the settings are removed
//!   (IPv6 link-local ones are the kernel's and stay); routes are added with protocol
//!   `static` and only such routes that the settings no longer name are removed (a route
//!   added by hand, protocol `boot`, stays).
//! - **Refused whole**: a setting that cannot be applied (an interface that does not exist,
//!   a gateway outside every configured subnet, a VLAN without its parent) is refused with an
//!   error naming it before anything is changed.
//! - **Confirm or revert** (`revert.rs`): a change through the admin API that removes an
//!   address or route the box has now (the admin may be connected through it) stays only if
//!   confirmed within `confirm_secs` (`POST /api/v1/admin/network/confirm`); otherwise the
//!   previous settings come back, as on routers.
//!
//! - **DHCP** (`dhcp.rs`, `dhcp = true`): an in-process DHCPv4 client per interface; its
//!   lease is added to the settings the reconcile applies ([`effective`]): the address, a
//!   default route via its router (unless the settings have an IPv4 default route), its name
//!   servers (the DNS server's forwarders when `[dns] forwarders` is empty) and NTP servers
//!   (when `ntp_servers` is empty). SLAAC is the kernel's (`accept_ra`), left as it is.
//! - **Hostname** (`hostname`): set in the kernel (UTS, the daemon's namespace) when it
//!   differs, and sent to the DHCP server.
//! - **Time** (`clock.rs`, `ntp_servers`): an SNTP client; the clock's state is in the status.

pub mod clock;
pub mod dhcp;
pub mod netlink;
pub mod revert;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::settings::Cidr;

/// `[network]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The interfaces the daemon manages (none: the network is left as it is).
    pub interfaces: Vec<Interface>,
    /// Static routes (main table).
    pub routes: Vec<Route>,
    /// How long a change through the admin API that removes an address or route waits for
    /// confirmation before the previous settings come back.
    pub confirm_secs: u64,
    /// The box's hostname (none: left as it is).
    pub hostname: Option<String>,
    /// NTP servers, `host` or `host:port` (none: those from a DHCP lease, if any).
    pub ntp_servers: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interfaces: Vec::new(),
            routes: Vec::new(),
            confirm_secs: 60,
            hostname: None,
            ntp_servers: Vec::new(),
        }
    }
}

/// `[[network.interfaces]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The link's name (`eth0`; for a VLAN the name it is created with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Or the link's hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Static addresses with prefix length (`192.0.2.10/24`, `2001:db8::10/64`).
    #[serde(default)]
    pub addresses: Vec<InterfaceAddress>,
    /// An IPv4 address, default route, name and NTP servers from DHCP (besides any static
    /// `addresses`).
    #[serde(default)]
    pub dhcp: bool,
    /// The MTU (none: left as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// A VLAN on another link: `vlan = { parent = "eth0", id = 10 }` (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
    /// A bond of other links: `bond = { mode = "active-backup", members = ["eth0", "eth1"] }`
    /// (created if missing, with that mode; members are added to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
}

/// `bond = { mode = "active-backup", members = ["eth0", "eth1"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    /// The bonding mode (the kernel's names): `balance-rr`, `active-backup`, `balance-xor`,
    /// `broadcast`, `802.3ad`, `balance-tlb`, `balance-alb`. Used when the bond is created.
    pub mode: BondMode,
    /// The links it bonds (by name).
    pub members: Vec<String>,
}

/// A bonding mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum BondMode {
    /// Round robin.
    #[serde(rename = "balance-rr")]
    BalanceRr,
    /// One active member, the others standing by.
    #[serde(rename = "active-backup")]
    ActiveBackup,
    /// By a hash of the addresses.
    #[serde(rename = "balance-xor")]
    BalanceXor,
    /// Everything on every member.
    #[serde(rename = "broadcast")]
    Broadcast,
    /// LACP.
    #[serde(rename = "802.3ad")]
    Ieee8023Ad,
    /// Adaptive transmit load balancing.
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    /// Adaptive load balancing.
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl Interface {
    /// How the settings name it (for messages).
    pub fn label(&self) -> String {
        match (&self.name, &self.mac) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => m.to_string(),
            (None, None) => "?".into(),
        }
    }
}

/// `vlan = { parent = "eth0", id = 10 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    /// The link it is tagged on.
    pub parent: String,
    /// The VLAN ID, 1..=4094.
    pub id: u16,
}

/// `[[network.routes]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The destination (`198.51.100.0/24`, `0.0.0.0/0` for the default route).
    #[serde(serialize_with = "display")]
    pub to: Cidr,
    /// The gateway (inside the subnet of one of the interfaces' addresses).
    pub via: IpAddr,
}

fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// An interface address with its prefix length (host bits set, unlike a [`Cidr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceAddress {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl InterfaceAddress {
    /// The subnet it is on.
    pub fn subnet_contains(&self, ip: IpAddr) -> bool {
        let net = Cidr {
            addr: mask(self.ip, self.prefix),
            prefix: self.prefix,
        };
        net.contains(ip)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for InterfaceAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: write address/prefix, e.g. 192.0.2.10/24"))?;
        let ip: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=max).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix must be 1..={max}"))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.to_canonical() != ip {
            return Err(format!("{s:?} cannot be an interface address"));
        }
        Ok(InterfaceAddress { ip, prefix })
    }
}

impl TryFrom<String> for InterfaceAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl Serialize for InterfaceAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A hardware address, `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a hardware address (52:54:00:12:34:56)");
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Mac(out))
    }
}

impl TryFrom<String> for Mac {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Settings {
    /// The checks that need no kernel state (each message names the key).
    pub fn validate(&self) -> Result<(), String> {
        for (i, iface) in self.interfaces.iter().enumerate() {
            let label = iface.label();
            match (&iface.name, &iface.mac) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(format!("interfaces[{i}]: name or mac, exactly one"));
                }
                (Some(n), None) if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) => {
                    return Err(format!("interfaces[{i}]: {n:?} is not a link name"));
                }
                _ => {}
            }
            if let Some(m) = iface.mtu
                && !(68..=65535).contains(&m)
            {
                return Err(format!("interfaces {label}: mtu must be 68..=65535"));
            }
            if let Some(b) = &iface.bond {
                if iface.name.is_none() || iface.vlan.is_some() {
                    return Err(format!(
                        "interfaces {label}: a bond needs a name and is not a VLAN"
                    ));
                }
                if b.members.is_empty() || b.members.len() > 8 {
                    return Err(format!("interfaces {label}: a bond has 1 to 8 members"));
                }
                for m in &b.members {
                    let listed = self.interfaces.iter().any(|o| o.name.as_ref() == Some(m));
                    if listed || Some(m) == iface.name.as_ref() {
                        return Err(format!(
                            "interfaces {label}: member {m} is configured on its own (a member \
                             carries no addresses of its own)"
                        ));
                    }
                }
            }
            if let Some(v) = &iface.vlan {
                if iface.name.is_none() {
                    return Err(format!("interfaces {label}: a VLAN needs a name"));
                }
                if !(1..=4094).contains(&v.id) {
                    return Err(format!("interfaces {label}: vlan id must be 1..=4094"));
                }
            }
            let same = |o: &Interface| {
                (o.name.is_some() && o.name == iface.name)
                    || (o.mac.is_some() && o.mac == iface.mac)
            };
            if self.interfaces[..i].iter().any(same) {
                return Err(format!("interfaces {label}: listed twice"));
            }
        }
        for r in &self.routes {
            if r.to.addr.is_ipv4() != r.via.is_ipv4() {
                return Err(format!(
                    "routes to {}: via {} is of the other address family",
                    r.to, r.via
                ));
            }
            let on_link = self
                .interfaces
                .iter()
                .flat_map(|i| &i.addresses)
                .any(|a| a.subnet_contains(r.via));
            // A gateway on a DHCP subnet is known only with the lease: the route waits for it.
            let dhcp = r.via.is_ipv4() && self.interfaces.iter().any(|i| i.dhcp);
            if !on_link && !dhcp {
                return Err(format!(
                    "routes to {}: via {} is not inside the subnet of any interface address",
                    r.to, r.via
                ));
            }
        }
        if self.confirm_secs > 3600 {
            return Err("confirm_secs must be at most 3600".into());
        }
        if let Some(h) = &self.hostname
            && !valid_hostname(h)
        {
            return Err(format!(
                "hostname {h:?}: letters, digits, '-' and '.', labels of 1 to 63, at most 64 in all"
            ));
        }
        if self.ntp_servers.len() > 8 {
            return Err("ntp_servers: at most 8".into());
        }
        for n in &self.ntp_servers {
            clock::server_address(n).map_err(|e| format!("ntp_servers: {e}"))?;
        }
        Ok(())
    }
}

/// A hostname the kernel and DHCP take: RFC 1123 labels, at most 64 bytes (the UTS limit).
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Sets the kernel's hostname (UTS, the daemon's namespace) if the settings name one that
/// differs.
pub fn apply_hostname(s: &Settings) -> Result<Option<String>, String> {
    let Some(want) = &s.hostname else {
        return Ok(None);
    };
    let have = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    if &have == want {
        return Ok(None);
    }
    nix::unistd::sethostname(want).map_err(|e| format!("hostname {want}: {e}"))?;
    Ok(Some(format!("hostname {want}")))
}

/// The settings the reconcile applies: `s` with what the DHCP leases add (each dhcp
/// interface's leased address, a default route via its router unless `s` has an IPv4 one),
/// less the routes whose gateway is on no subnet yet (a DHCP subnet without its lease).
pub fn effective(s: &Settings) -> Settings {
    let leases = dhcp::leases();
    let mut e = s.clone();
    let default_v4 = |routes: &[Route]| {
        routes
            .iter()
            .any(|r| r.to.prefix == 0 && r.to.addr.is_ipv4())
    };
    for i in 0..e.interfaces.len() {
        let iface = &e.interfaces[i];
        if !iface.dhcp {
            continue;
        }
        let Some(l) = leases.get(&iface.label()) else {
            continue;
        };
        let a = InterfaceAddress {
            ip: IpAddr::V4(l.address),
            prefix: l.prefix,
        };
        if !e.interfaces[i].addresses.contains(&a) {
            e.interfaces[i].addresses.push(a);
        }
        if let Some(r) = l.router
            && !default_v4(&e.routes)
        {
            e.routes.push(Route {
                to: Cidr {
                    addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                },
                via: IpAddr::V4(r),
            });
        }
    }
    let on_link = |via: IpAddr, ifaces: &[Interface]| {
        ifaces
            .iter()
            .flat_map(|i| &i.addresses)
            .any(|a| a.subnet_contains(via))
    };
    let ifaces = e.interfaces.clone();
    e.routes.retain(|r| on_link(r.via, &ifaces));
    e
}

static SAY: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// A line on the console (what `start` was given), or the log before that.
pub(crate) fn say(line: &str) {
    match SAY.get() {
        Some(f) => f(line),
        None => tracing::info!("{line}"),
    }
}

static WAKE: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// Makes the watch compare and reconcile now (a DHCP lease changed).
pub(crate) fn wake() {
    let mut w = WAKE.0.lock().unwrap_or_else(|e| e.into_inner());
    *w = true;
    WAKE.1.notify_all();
}

fn sleep_or_wake(d: std::time::Duration) {
    let w = WAKE.0.lock().unwrap_or_else(|e| e.into_inner());
    let (mut w, _) = WAKE
        .1
        .wait_timeout_while(w, d, |woken| !*woken)
        .unwrap_or_else(|e| e.into_inner());
    *w = false;
}

static APPLIED: std::sync::Mutex<Option<Settings>> = std::sync::Mutex::new(None);

/// The settings last reconciled (default: none).
pub fn applied() -> Settings {
    APPLIED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

fn set_applied(s: &Settings) {
    *APPLIED.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
}

/// How often the kernel's state is compared with the settings (links that went down, or
/// addresses and routes changed by hand, are reported and the settings applied again).
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies the settings at start; what happened goes to the console (`say`). A failure is
/// said and the daemon runs on (the serial console and the admin API must stay usable).
/// Then watches: every [`WATCH_INTERVAL`] a link's carrier change is said, and a kernel state
/// that drifted from the settings is reconciled again (and said).
pub fn start(s: &Settings, say: fn(&str)) {
    let _ = SAY.set(say);
    std::thread::spawn(move || watch(say));
    if s.interfaces.is_empty() && s.routes.is_empty() && s.hostname.is_none() {
        netlink::remember(s);
        return;
    }
    match netlink::reconcile(s) {
        Ok(a) => {
            if a.changes.is_empty() {
                say("network: as configured (no change)");
            } else {
                say(&format!("network: {}", a.changes.join("; ")));
            }
            for l in a.unmanaged {
                say(&format!(
                    "network: link {l} is not in the settings (left alone)"
                ));
            }
        }
        Err(e) => say(&format!("NETWORK NOT APPLIED: {e}")),
    }
}

/// At start, before TLS and certificate checks matter: waits (bounded) for a lease on every
/// DHCP interface and for the clock's first synchronisation, saying what did not come.
pub fn settle(s: &Settings) {
    let deadline = std::time::Instant::now() + clock::FIRST_SYNC_WAIT;
    let want: Vec<String> = s
        .interfaces
        .iter()
        .filter(|i| i.dhcp)
        .map(|i| i.label())
        .collect();
    if !want.is_empty() {
        while std::time::Instant::now() < deadline {
            let l = dhcp::leases();
            if want.iter().all(|w| l.contains_key(w)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let l = dhcp::leases();
        for w in want.iter().filter(|w| !l.contains_key(*w)) {
            say(&format!("network: {w}: no DHCP lease yet (still asking)"));
        }
    }
    if !clock::has_source(s) {
        return;
    }
    // The leases are in (or will not come in time): with no server configured and none in
    // a lease there is nothing to wait for (the box's QEMU network offers none: 10 s saved
    // at every boot).
    if !clock::knows_a_server() {
        say("clock: no time server configured or offered by DHCP: the clock is not synchronised");
        return;
    }
    if !clock::wait_synchronized(deadline.saturating_duration_since(std::time::Instant::now())) {
        say(
            "clock: NOT SYNCHRONISED yet: certificate validity is checked against the unsynchronised clock",
        );
    }
}

fn watch(say: fn(&str)) {
    let mut carrier: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    loop {
        sleep_or_wake(WATCH_INTERVAL);
        let Ok(state) = netlink::read() else {
            continue;
        };
        for l in &state.links {
            if let Some(was) = carrier.insert(l.name.clone(), l.carrier)
                && was != l.carrier
            {
                say(&format!(
                    "network: link {} {}",
                    l.name,
                    if l.carrier {
                        "is up (carrier)"
                    } else {
                        "lost its carrier"
                    }
                ));
            }
        }
        let s = applied();
        let managed = !s.interfaces.is_empty() || !s.routes.is_empty();
        let drifted = managed && plan(&effective(&s), &state).is_ok_and(|p| !p.changes.is_empty());
        if drifted {
            match netlink::reconcile(&s) {
                Ok(a) if !a.changes.is_empty() => {
                    say(&format!("network: re-applied: {}", a.changes.join("; ")));
                }
                Ok(_) => {}
                Err(e) => say(&format!("NETWORK NOT RE-APPLIED: {e}")),
            }
        }
    }
}

/// `network` in the admin status: the kernel's links and addresses, which are unmanaged, and
/// a change waiting for confirmation.
pub fn status(s: &Settings) -> serde_json::Value {
    let state = match netlink::read() {
        Ok(st) => st,
        Err(e) => return serde_json::json!({ "error": e }),
    };
    let managed = plan(s, &state).map(|p| p.unmanaged).ok();
    let links: Vec<serde_json::Value> = state
        .links
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "mac": l.mac.map(|m| m.to_string()),
                "mtu": l.mtu,
                "up": l.up,
                "carrier": l.carrier,
                "managed": managed.as_ref().is_some_and(|u| !u.contains(&l.name) && l.name != "lo"),
                "addresses": state
                    .addresses
                    .iter()
                    .filter(|a| a.index == l.index)
                    .map(|a| format!("{}/{}", a.ip, a.prefix))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let now = std::time::Instant::now();
    let dhcp: serde_json::Map<String, serde_json::Value> = dhcp::clients()
        .into_iter()
        .map(|(label, h)| {
            let lease = h.lease.map(|l| {
                serde_json::json!({
                    "address": format!("{}/{}", l.address, l.prefix),
                    "router": l.router,
                    "name_servers": l.dns,
                    "ntp_servers": l.ntp,
                    "server": l.server,
                    "expires_in_secs": h.expires.map(|e| e.saturating_duration_since(now).as_secs()),
                })
            });
            (
                label,
                serde_json::json!({ "link": h.link, "state": h.state, "lease": lease }),
            )
        })
        .collect();
    serde_json::json!({
        "links": links,
        "confirm_within_secs": revert::seconds_left(),
        "hostname": nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()),
        "dhcp": dhcp,
    })
}

/// A link as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its hardware address, if it has one of 6 bytes.
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Carrier (lower layer up).
    pub carrier: bool,
    /// For a VLAN: its parent's index and its ID.
    pub vlan: Option<(u32, u16)>,
    /// The bond (or other controller) it is a member of.
    pub controller: Option<u32>,
    /// Whether it is a bond.
    pub bond: bool,
}

/// An address as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The link's index.
    pub index: u32,
    /// The address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// A main-table route with a gateway, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination network.
    pub to: Cidr,
    /// Its gateway, if any.
    pub via: Option<IpAddr>,
    /// Added by the daemon (protocol `static`).
    pub ours: bool,
}

/// The kernel's state.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Links.
    pub links: Vec<Link>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Main-table routes.
    pub routes: Vec<KernelRoute>,
}

/// One change to the kernel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a VLAN link.
    CreateVlan {
        /// Its name.
        name: String,
        /// The parent link's index.
        parent: u32,
        /// The VLAN ID.
        id: u16,
    },
    /// Create a bond.
    CreateBond {
        /// Its name.
        name: String,
        /// Its mode.
        mode: BondMode,
    },
    /// Make a link a member of a bond (taken down first, as the kernel requires).
    Enslave {
        /// The member.
        index: u32,
        /// The bond.
        bond: u32,
    },
    /// Set a link's MTU.
    Mtu {
        /// The link.
        index: u32,
        /// The new MTU.
        mtu: u32,
    },
    /// Bring a link up.
    Up {
        /// The link.
        index: u32,
    },
    /// Add an address.
    AddAddress(Address),
    /// Remove an address.
    DelAddress(Address),
    /// Add or replace a route.
    Route {
        /// Destination.
        to: Cidr,
        /// Gateway.
        via: IpAddr,
    },
    /// Remove a route the daemon added earlier.
    DelRoute {
        /// Destination.
        to: Cidr,
        /// Gateway.
        via: Option<IpAddr>,
    },
}

impl Change {
    /// Whether it takes away something the box is reachable through now.
    pub fn removes(&self) -> bool {
        matches!(self, Change::DelAddress(_) | Change::DelRoute { .. })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateVlan { name, parent, id } => {
                write!(f, "create VLAN {name} (id {id} on link {parent})")
            }
            Change::CreateBond { name, mode } => write!(f, "create bond {name} ({mode:?})"),
            Change::Enslave { index, bond } => write!(f, "link {index}: member of bond {bond}"),
            Change::Mtu { index, mtu } => write!(f, "link {index}: mtu {mtu}"),
            Change::Up { index } => write!(f, "link {index}: up"),
            Change::AddAddress(a) => write!(f, "link {}: add {}/{}", a.index, a.ip, a.prefix),
            Change::DelAddress(a) => write!(f, "link {}: remove {}/{}", a.index, a.ip, a.prefix),
            Change::Route { to, via } => write!(f, "route {to} via {via}"),
            Change::DelRoute { to, via } => match via {
                Some(v) => write!(f, "remove route {to} via {v}"),
                None => write!(f, "remove route {to}"),
            },
        }
    }
}

/// What the plan found besides the changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, in the order to make them.
    pub changes: Vec<Change>,
    /// Links the settings do not name (reported, left alone).
    pub unmanaged: Vec<String>,
}

/// The link `iface` names in `state`.
fn find<'a>(state: &'a State, iface: &Interface) -> Option<&'a Link> {
    state
        .links
        .iter()
        .find(|l| match (&iface.name, &iface.mac) {
            (Some(n), _) => &l.name == n,
            (None, Some(m)) => l.mac.as_ref() == Some(m) && l.vlan.is_none(),
            _ => false,
        })
}

/// The changes that make `state` what `s` says. VLANs that do not exist yet are created and
/// the rest of their settings left for the next plan (the caller plans again until nothing
/// is left). An interface
/// that is missing (and no VLAN to create) is an error naming it, before any change.
pub fn plan(s: &Settings, state: &State) -> Result<Plan, String> {
    let mut p = Plan::default();
    let mut managed = Vec::new();
    for iface in &s.interfaces {
        let Some(link) = find(state, iface) else {
            if let Some(b) = &iface.bond {
                for m in &b.members {
                    if !state.links.iter().any(|l| &l.name == m) {
                        return Err(format!(
                            "interfaces {}: the bond's member {m} does not exist",
                            iface.label()
                        ));
                    }
                }
                p.changes.push(Change::CreateBond {
                    name: iface.label(),
                    mode: b.mode,
                });
                managed.push(iface.label());
                managed.extend(b.members.iter().cloned());
                continue;
            }
            if let Some(v) = &iface.vlan {
                let parent = state
                    .links
                    .iter()
                    .find(|l| l.name == v.parent)
                    .ok_or_else(|| {
                        format!(
                            "interfaces {}: the VLAN's parent link {} does not exist",
                            iface.label(),
                            v.parent
                        )
                    })?;
                p.changes.push(Change::CreateVlan {
                    name: iface.label(),
                    parent: parent.index,
                    id: v.id,
                });
                managed.push(iface.label());
                continue;
            }
            let names: Vec<&str> = state.links.iter().map(|l| l.name.as_str()).collect();
            return Err(format!(
                "interfaces {}: no such link (links: {})",
                iface.label(),
                names.join(", ")
            ));
        };
        if let Some(v) = &iface.vlan {
            let parent = state
                .links
                .iter()
                .find(|l| l.name == v.parent)
                .map(|l| l.index);
            if link.vlan != parent.map(|p| (p, v.id)) {
                return Err(format!(
                    "interfaces {}: the link exists but is not VLAN {} on {}",
                    iface.label(),
                    v.id,
                    v.parent
                ));
            }
        }
        if let Some(b) = &iface.bond {
            if !link.bond {
                return Err(format!(
                    "interfaces {}: the link exists but is not a bond",
                    iface.label()
                ));
            }
            for m in &b.members {
                let member = state.links.iter().find(|l| &l.name == m).ok_or_else(|| {
                    format!(
                        "interfaces {}: the bond's member {m} does not exist",
                        iface.label()
                    )
                })?;
                if member.controller != Some(link.index) {
                    p.changes.push(Change::Enslave {
                        index: member.index,
                        bond: link.index,
                    });
                }
                managed.push(m.clone());
            }
        }
        managed.push(link.name.clone());
        if let Some(mtu) = iface.mtu
            && link.mtu != mtu
        {
            p.changes.push(Change::Mtu {
                index: link.index,
                mtu,
            });
        }
        if !link.up {
            p.changes.push(Change::Up { index: link.index });
        }
        let have: Vec<&Address> = state
            .addresses
            .iter()
            .filter(|a| a.index == link.index)
            .collect();
        for want in &iface.addresses {
            if !have
                .iter()
                .any(|a| a.ip == want.ip && a.prefix == want.prefix)
            {
                p.changes.push(Change::AddAddress(Address {
                    index: link.index,
                    ip: want.ip,
                    prefix: want.prefix,
                }));
            }
        }
        for a in have {
            let link_local = matches!(a.ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
            if !link_local
                && !iface
                    .addresses
                    .iter()
                    .any(|w| w.ip == a.ip && w.prefix == a.prefix)
            {
                p.changes.push(Change::DelAddress(a.clone()));
            }
        }
    }
    for r in &s.routes {
        if !state
            .routes
            .iter()
            .any(|k| k.to == r.to && k.via == Some(r.via))
        {
            p.changes.push(Change::Route {
                to: r.to,
                via: r.via,
            });
        }
    }
    for k in state.routes.iter().filter(|k| k.ours) {
        if !s
            .routes
            .iter()
            .any(|r| r.to == k.to && Some(r.via) == k.via)
        {
            p.changes.push(Change::DelRoute {
                to: k.to,
                via: k.via,
            });
        }
    }
    // New VLANs and bonds alone first: routes through their subnets need them and their
    // addresses.
    let creates = |c: &Change| matches!(c, Change::CreateVlan { .. } | Change::CreateBond { .. });
    if p.changes.iter().any(creates) {
        p.changes.retain(creates);
    }
    // Removals before additions: adding first could make a new address a secondary that
    // goes with the primary being removed.
    p.changes.sort_by_key(|c| match c {
        Change::CreateVlan { .. } | Change::CreateBond { .. } => 0,
        Change::Enslave { .. } => 1,
        Change::Mtu { .. } | Change::Up { .. } => 1,
        Change::DelRoute { .. } => 2,
        Change::DelAddress(_) => 3,
        Change::AddAddress(_) => 4,
        Change::Route { .. } => 5,
    });
    p.unmanaged = state
        .links
        .iter()
        .filter(|l| l.name != "lo" && !managed.contains(&l.name))
        .map(|l| l.name.clone())
        .collect();
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        let s: Settings = toml::from_str(text).unwrap();
        s.validate().unwrap();
        s
    }

    fn state() -> State {
        State {
            links: vec![
                Link {
                    index: 1,
                    name: "lo".into(),
                    mac: None,
                    mtu: 65536,
                    up: true,
                    carrier: true,
                    vlan: None,
                    controller: None,
                    bond: false,
                },
                Link {
                    index: 2,
                    name: "eth0".into(),
                    mac: Some("52:54:00:00:00:01".parse().unwrap()),
                    mtu: 1500,
                    up: false,
                    carrier: false,
                    vlan: None,
                    controller: None,
                    bond: false,
                },
                Link {
                    index: 3,
                    name: "dummy9".into(),
                    mac: None,
                    mtu: 1500,
                    up: true,
                    carrier: true,
                    vlan: None,
                    controller: None,
                    bond: false,
                },
            ],
            addresses: vec![
                Address {
                    index: 2,
                    ip: "198.18.0.1".parse().unwrap(),
                    prefix: 24,
                },
                Address {
                    index: 2,
                    ip: "fe80::1".parse().unwrap(),
                    prefix: 64,
                },
            ],
            routes: vec![KernelRoute {
                to: "203.0.113.0/24".parse().unwrap(),
                via: Some("198.18.0.254".parse().unwrap()),
                ours: false,
            }],
        }
    }

    const S: &str = r#"
[[interfaces]]
mac = "52:54:00:00:00:01"
addresses = ["192.0.2.10/24"]
mtu = 1400
[[interfaces]]
name = "eth0.10"
vlan = { parent = "eth0", id = 10 }
addresses = ["10.10.0.1/24"]
[[routes]]
to = "198.51.100.0/24"
via = "192.0.2.1"
"#;

    #[test]
    fn plan_changes_only_the_differences_and_leaves_unmanaged_links() {
        let s = settings(S);
        // A missing VLAN is created first, alone.
        let p = plan(&s, &state()).unwrap();
        assert_eq!(
            p.changes,
            vec![Change::CreateVlan {
                name: "eth0.10".into(),
                parent: 2,
                id: 10
            }]
        );
        let vlan = Link {
            index: 4,
            name: "eth0.10".into(),
            mac: None,
            mtu: 1500,
            up: true,
            carrier: true,
            vlan: Some((2, 10)),
            controller: None,
            bond: false,
        };
        let mut with_vlan = state();
        with_vlan.links.push(vlan.clone());
        let p = plan(&s, &with_vlan).unwrap();
        assert_eq!(p.unmanaged, vec!["dummy9".to_string()]);
        assert!(p.changes.contains(&Change::Mtu {
            index: 2,
            mtu: 1400
        }));
        assert!(p.changes.contains(&Change::Up { index: 2 }));
        assert!(
            p.changes
                .iter()
                .any(|c| matches!(c, Change::DelAddress(a) if a.ip.to_string() == "198.18.0.1"))
        );
        assert!(
            !p.changes
                .iter()
                .any(|c| matches!(c, Change::DelAddress(a) if a.ip.is_ipv6()))
        );
        // The hand-added route stays.
        assert!(
            !p.changes
                .iter()
                .any(|c| matches!(c, Change::DelRoute { .. }))
        );
        // Once applied, nothing to do.
        let mut after = state();
        after.links[1].mtu = 1400;
        after.links[1].up = true;
        after.links.push(vlan);
        after.addresses = vec![
            Address {
                index: 2,
                ip: "192.0.2.10".parse().unwrap(),
                prefix: 24,
            },
            Address {
                index: 2,
                ip: "fe80::1".parse().unwrap(),
                prefix: 64,
            },
            Address {
                index: 4,
                ip: "10.10.0.1".parse().unwrap(),
                prefix: 24,
            },
        ];
        after.routes.push(KernelRoute {
            to: "198.51.100.0/24".parse().unwrap(),
            via: Some("192.0.2.1".parse().unwrap()),
            ours: true,
        });
        assert_eq!(plan(&s, &after).unwrap().changes, vec![]);
    }

    #[test]
    fn the_issue_contract_parses() {
        let s = crate::settings::Settings::parse(
            r#"
[[network.interfaces]]
name = "eth0"
addresses = ["192.0.2.10/24"]
[[network.routes]]
to = "198.51.100.0/24"
via = "192.0.2.1"
[dns]
listen = "127.0.0.1:5353"
forwarders = ["127.0.0.1:5354"]
[[dns.views]]
name = "inside"
networks = ["10.0.0.0/8"]
records = ["mail.example.org. 300 IN A 10.0.0.5"]
[[dns.views]]
name = "outside"
networks = ["0.0.0.0/0", "::/0"]
records = ["mail.example.org. 300 IN A 203.0.113.5"]
"#,
        )
        .unwrap();
        assert_eq!(
            s.network.interfaces[0].addresses[0].to_string(),
            "192.0.2.10/24"
        );
        assert_eq!(s.network.routes[0].via.to_string(), "192.0.2.1");
        assert_eq!(s.dns.views.len(), 2);
        assert_eq!(
            s.dns.views[1].records[0].to_string(),
            "mail.example.org. 300 IN A 203.0.113.5"
        );
        let s = crate::settings::Settings::parse(
            "[[network.interfaces]]\nmac = \"52:54:00:00:00:01\"\ndhcp = true\n",
        )
        .unwrap();
        assert!(s.network.interfaces[0].dhcp);
        let e = crate::settings::Settings::parse("[network]\nhostname = \"-x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("hostname"), "{e:#}");
    }

    #[test]
    fn a_dhcp_lease_adds_its_address_and_default_route_and_waiting_routes_wait() {
        let s = settings(
            "[[interfaces]]\nname = \"eth0\"\ndhcp = true\n[[routes]]\nto = \"198.51.100.0/24\"\nvia = \"192.0.2.1\"\n",
        );
        // No lease: the route through the DHCP subnet waits, the address is not there.
        let e = effective(&s);
        assert!(e.routes.is_empty());
        assert!(e.interfaces[0].addresses.is_empty());
        let p = plan(&e, &state()).unwrap();
        assert!(p.changes.contains(&Change::Up { index: 2 }));
        assert!(
            p.changes
                .iter()
                .any(|c| matches!(c, Change::DelAddress(a) if a.ip.to_string() == "198.18.0.1"))
        );
        assert!(valid_hostname("mail.example.org") && valid_hostname("box-1"));
        assert!(!valid_hostname("-a") && !valid_hostname("") && !valid_hostname(&"a".repeat(65)));
    }

    #[test]
    fn a_bond_is_created_alone_then_its_members_join_it() {
        let s = settings(
            "[[interfaces]]\nname = \"bond0\"\nbond = { mode = \"active-backup\", members = [\"eth0\", \"dummy9\"] }\naddresses = [\"192.0.2.10/24\"]\n",
        );
        let p = plan(&s, &state()).unwrap();
        assert_eq!(
            p.changes,
            vec![Change::CreateBond {
                name: "bond0".into(),
                mode: BondMode::ActiveBackup
            }]
        );
        let mut st = state();
        st.links.push(Link {
            index: 7,
            name: "bond0".into(),
            mac: None,
            mtu: 1500,
            up: true,
            carrier: false,
            vlan: None,
            controller: None,
            bond: true,
        });
        let p = plan(&s, &st).unwrap();
        assert!(p.changes.contains(&Change::Enslave { index: 2, bond: 7 }));
        assert!(p.changes.contains(&Change::Enslave { index: 3, bond: 7 }));
        assert!(
            p.unmanaged.is_empty(),
            "members are managed: {:?}",
            p.unmanaged
        );
        // Members already in: only the address is left to add.
        st.links[1].controller = Some(7);
        st.links[2].controller = Some(7);
        let p = plan(&s, &st).unwrap();
        assert!(
            !p.changes
                .iter()
                .any(|c| matches!(c, Change::Enslave { .. }))
        );
        for bad in [
            "[[interfaces]]\nname = \"bond0\"\nbond = { mode = \"active-backup\", members = [] }\n",
            "[[interfaces]]\nname = \"bond0\"\nbond = { mode = \"active-backup\", members = [\"eth0\"] }\n[[interfaces]]\nname = \"eth0\"\n",
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Settings>(
            "[[interfaces]]\nname = \"bond0\"\nbond = { mode = \"fast\", members = [\"eth0\"] }\n"
        )
        .is_err());
        let missing = settings(
            "[[interfaces]]\nname = \"bond0\"\nbond = { mode = \"802.3ad\", members = [\"eth7\"] }\n",
        );
        assert!(plan(&missing, &state()).unwrap_err().contains("eth7"));
    }

    #[test]
    fn bad_settings_are_refused_before_any_change() {
        let s = settings("[[interfaces]]\nname = \"eth9\"\naddresses = [\"192.0.2.1/24\"]\n");
        let e = plan(&s, &state()).unwrap_err();
        assert!(e.contains("eth9") && e.contains("no such link"), "{e}");
        for bad in [
            "hostname = \"a..b\"\n",
            "ntp_servers = [\"ntp:0\"]\n",
            "[[interfaces]]\nname = \"eth0\"\nmac = \"52:54:00:00:00:01\"\n",
            "[[interfaces]]\nname = \"eth0\"\naddresses = [\"192.0.2.1/24\"]\n[[routes]]\nto = \"0.0.0.0/0\"\nvia = \"198.51.100.1\"\n",
            "[[interfaces]]\nname = \"eth0\"\nmtu = 20\n",
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(s.validate().is_err(), "{bad}");
        }
        assert!(
            toml::from_str::<Settings>(
                "[[interfaces]]\nname = \"eth0\"\naddresses = [\"192.0.2.1\"]\n"
            )
            .is_err()
        );
    }
}
