//! Reading and changing the kernel's network state through rtnetlink, in the daemon's
//! network namespace. [`reconcile`] runs on a thread of its own with its own small runtime,
//! so the admin API's settings change (synchronous) and the start-up (async) call it alike.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    BondMode as KernelBondMode, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkBond, LinkUnspec, LinkVlan, RouteMessageBuilder};

use super::{Address, BondMode, Change, KernelRoute, Link, Mac, Plan, Settings, State};
use crate::settings::Cidr;

/// What a reconcile did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The changes made (empty: the kernel had the settings already).
    pub changes: Vec<String>,
    /// Links the settings do not name (left alone).
    pub unmanaged: Vec<String>,
    /// Whether a change removed an address or route.
    pub removed: bool,
}

/// Makes the kernel's state what `s` says (see the module documentation of `network`).
/// With no interfaces and no routes in `s`, nothing is read or changed.
pub fn reconcile(s: &Settings) -> Result<Applied, String> {
    // One reconcile at a time (start-up, the watch, a settings change, a revert).
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    remember(s);
    // Leases of interfaces no longer on DHCP are given back while their address is there.
    super::dhcp::stop_unwanted(s);
    let hostname = super::apply_hostname(s)?;
    if s.interfaces.is_empty() && s.routes.is_empty() {
        return Ok(Applied {
            changes: hostname.into_iter().collect(),
            ..Applied::default()
        });
    }
    let effective = super::effective(s);
    let mut applied = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("netlink: {e}"))?;
        rt.block_on(reconcile_async(&effective))
    })
    .join()
    .map_err(|_| "netlink: the network thread failed".to_string())??;
    applied.changes.splice(0..0, hostname);
    super::dhcp::start_wanted(s);
    Ok(applied)
}

/// Records `s` as the settings in force (what the watch and the status compare with).
pub fn remember(s: &Settings) {
    super::set_applied(s);
}

/// The kernel's state (for the admin status).
pub fn read() -> Result<State, String> {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("netlink: {e}"))?;
        rt.block_on(async {
            let handle = connect()?;
            state(&handle).await
        })
    })
    .join()
    .map_err(|_| "netlink: the network thread failed".to_string())?
}

fn connect() -> Result<Handle, String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Rounds of plan-and-change before giving up: a round may make the next necessary (a new
/// VLAN gets its addresses in the next; removing a primary IPv4 address makes the kernel drop
/// its secondaries and the routes through it, which the next round puts back).
const ROUNDS: usize = 4;

async fn reconcile_async(s: &Settings) -> Result<Applied, String> {
    let handle = connect()?;
    let mut out = Applied::default();
    for _ in 0..ROUNDS {
        let plan: Plan = super::plan(s, &state(&handle).await?)?;
        if plan.changes.is_empty() {
            out.unmanaged = plan.unmanaged;
            return Ok(out);
        }
        for c in &plan.changes {
            execute(&handle, c).await?;
            out.removed |= c.removes();
            out.changes.push(c.to_string());
        }
    }
    Err(format!(
        "the kernel does not keep the settings (changes made: {})",
        out.changes.join("; ")
    ))
}

async fn state(h: &Handle) -> Result<State, String> {
    let err = |what: &str, e: rtnetlink::Error| format!("netlink: reading {what}: {e}");
    let mut st = State::default();
    let mut links = h.link().get().execute();
    while let Some(m) = links.try_next().await.map_err(|e| err("links", e))? {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            vlan: None,
            controller: None,
            bond: false,
        };
        let mut parent = None;
        let mut vlan_id = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(m) => l.mtu = *m,
                LinkAttribute::Address(b) => {
                    l.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac);
                }
                LinkAttribute::Link(p) => parent = Some(*p),
                LinkAttribute::Controller(c) => l.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(InfoKind::Bond) = i {
                            l.bond = true;
                        }
                        if let LinkInfo::Data(InfoData::Vlan(v)) = i {
                            for x in v {
                                if let InfoVlan::Id(id) = x {
                                    vlan_id = Some(*id);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(p), Some(id)) = (parent, vlan_id) {
            l.vlan = Some((p, id));
        }
        st.links.push(l);
    }
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await.map_err(|e| err("addresses", e))? {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
        // point-to-point links); IPv6 has only IFA_ADDRESS.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(addr) {
            st.addresses.push(Address {
                index: m.header.index,
                ip,
                prefix: m.header.prefix_len,
            });
        }
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        let mut routes = h.route().get(q).execute();
        while let Some(m) = routes.try_next().await.map_err(|e| err("routes", e))? {
            if m.header.table != RouteHeader::RT_TABLE_MAIN || m.header.kind != RouteType::Unicast {
                continue;
            }
            let mut dst = None;
            let mut via = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = ip_of(d),
                    RouteAttribute::Gateway(g) => via = ip_of(g),
                    _ => {}
                }
            }
            let dst = dst.unwrap_or(match family {
                AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            });
            st.routes.push(KernelRoute {
                to: Cidr {
                    addr: dst,
                    prefix: m.header.destination_prefix_length,
                },
                via,
                ours: m.header.protocol == RouteProtocol::Static,
            });
        }
    }
    Ok(st)
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_message(to: Cidr, via: Option<IpAddr>) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(to.addr, to.prefix)
        .map_err(|e| format!("route {to}: {e}"))?
        .protocol(RouteProtocol::Static)
        .scope(RouteScope::Universe);
    if let Some(v) = via {
        b = b
            .gateway(v)
            .map_err(|e| format!("route {to} via {v}: {e}"))?;
    }
    Ok(b.build())
}

async fn execute(h: &Handle, c: &Change) -> Result<(), String> {
    let fail = |e: rtnetlink::Error| format!("{c}: {e}");
    match c {
        Change::CreateVlan { name, parent, id } => h
            .link()
            .add(LinkVlan::new(name, *parent, *id).up().build())
            .execute()
            .await
            .map_err(fail),
        Change::CreateBond { name, mode } => h
            .link()
            .add(LinkBond::new(name).mode(kernel_mode(*mode)).up().build())
            .execute()
            .await
            .map_err(fail),
        Change::Enslave { index, bond } => {
            h.link()
                .set(LinkUnspec::new_with_index(*index).down().build())
                .execute()
                .await
                .map_err(fail)?;
            h.link()
                .set(LinkUnspec::new_with_index(*index).controller(*bond).build())
                .execute()
                .await
                .map_err(fail)
        }
        Change::Mtu { index, mtu } => h
            .link()
            .set(LinkUnspec::new_with_index(*index).mtu(*mtu).build())
            .execute()
            .await
            .map_err(fail),
        Change::Up { index } => h
            .link()
            .set(LinkUnspec::new_with_index(*index).up().build())
            .execute()
            .await
            .map_err(fail),
        Change::AddAddress(a) => h
            .address()
            .add(a.index, a.ip, a.prefix)
            .replace()
            .execute()
            .await
            .map_err(fail),
        Change::DelAddress(a) => {
            let mut found = h
                .address()
                .get()
                .set_link_index_filter(a.index)
                .set_address_filter(a.ip)
                .execute();
            while let Some(m) = found.try_next().await.map_err(fail)? {
                if m.header.prefix_len == a.prefix {
                    h.address().del(m).execute().await.map_err(fail)?;
                }
            }
            Ok(())
        }
        Change::Route { to, via } => h
            .route()
            .add(route_message(*to, Some(*via))?)
            .replace()
            .execute()
            .await
            .map_err(fail),
        Change::DelRoute { to, via } => h
            .route()
            .del(route_message(*to, *via)?)
            .execute()
            .await
            .map_err(fail),
    }
}

fn kernel_mode(m: BondMode) -> KernelBondMode {
    match m {
        BondMode::BalanceRr => KernelBondMode::BalanceRr,
        BondMode::ActiveBackup => KernelBondMode::ActiveBackup,
        BondMode::BalanceXor => KernelBondMode::BalanceXor,
        BondMode::Broadcast => KernelBondMode::Broadcast,
        BondMode::Ieee8023Ad => KernelBondMode::Ieee8023Ad,
        BondMode::BalanceTlb => KernelBondMode::BalanceTlb,
        BondMode::BalanceAlb => KernelBondMode::BalanceAlb,
    }
}
