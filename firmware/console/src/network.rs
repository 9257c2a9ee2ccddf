//! The console's view of one interface's network settings (DHCP, or a static IPv4 address
//! with gateway and name servers), parsed into typed values at the edge.
//!
//! The daemon owns the box's network (`daemon_network.rs`); this file keeps the console's
//! earlier file format (`/data/box/network.conf`, a few `key=value` lines, unknown keys
//! refused) only for its one-time move into the daemon's settings, and the fallback that
//! applies the first NIC's settings with busybox `ip` and `udhcpc` when the daemon does not
//! run.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// An IPv4 address with its prefix length, e.g. `192.0.2.10/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 1..=32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d/nn`, or an address and a dotted mask (`255.255.255.0`).
    pub fn parse_with_mask(addr: &str, mask: Option<&str>) -> Result<Ipv4Cidr> {
        match (addr.split_once('/'), mask) {
            (Some(_), _) => addr.parse(),
            (None, Some(m)) => {
                let addr: Ipv4Addr = addr
                    .trim()
                    .parse()
                    .with_context(|| format!("{addr:?} is not an IPv4 address"))?;
                let prefix = mask_to_prefix(m.trim())?;
                Ipv4Cidr::new(addr, prefix)
            }
            (None, None) => bail!("give the address as a.b.c.d/nn or with a mask"),
        }
    }

    fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Cidr> {
        if !(1..=32).contains(&prefix) {
            bail!("prefix length {prefix} is not 1..32");
        }
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback()
        {
            bail!("{addr} cannot be the box's address");
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    /// Whether `other` is in this address's subnet.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

impl FromStr for Ipv4Cidr {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Ipv4Cidr> {
        let (a, p) = s.trim().split_once('/').context("expected a.b.c.d/nn")?;
        let addr: Ipv4Addr = a
            .parse()
            .with_context(|| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .with_context(|| format!("{p:?} is not a prefix length"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `255.255.255.0` → 24; refuses non-contiguous masks.
pub fn mask_to_prefix(mask: &str) -> Result<u8> {
    let m: Ipv4Addr = mask
        .parse()
        .with_context(|| format!("{mask:?} is not a netmask"))?;
    let bits = u32::from(m);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        bail!("{mask} is not a contiguous netmask");
    }
    Ok(prefix as u8)
}

/// How the box gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSettings {
    /// DHCP (the default).
    Dhcp,
    /// A fixed address.
    Static {
        /// Address and prefix.
        address: Ipv4Cidr,
        /// Default gateway (in the address's subnet).
        gateway: Option<Ipv4Addr>,
        /// DNS servers, in order.
        dns: Vec<IpAddr>,
    },
}

impl NetworkSettings {
    /// Parses the settings file.
    pub fn parse(text: &str) -> Result<NetworkSettings> {
        let mut mode = None;
        let mut address = None;
        let mut gateway = None;
        let mut dns = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("line {}: expected key=value", n + 1))?;
            let v = v.trim();
            match k.trim() {
                "mode" => mode = Some(v.to_string()),
                "address" => {
                    address = Some(
                        v.parse::<Ipv4Cidr>()
                            .with_context(|| format!("line {}", n + 1))?,
                    )
                }
                "gateway" => {
                    gateway = Some(
                        v.parse::<Ipv4Addr>()
                            .with_context(|| format!("line {}: bad gateway {v:?}", n + 1))?,
                    )
                }
                "dns" => {
                    for s in v.split_whitespace() {
                        dns.push(
                            s.parse::<IpAddr>()
                                .with_context(|| format!("line {}: bad DNS server {s:?}", n + 1))?,
                        );
                    }
                }
                other => bail!("line {}: unknown setting {other:?}", n + 1),
            }
        }
        match mode.as_deref() {
            None | Some("dhcp") => {
                if address.is_some() || gateway.is_some() {
                    bail!("mode=dhcp takes no address or gateway");
                }
                Ok(NetworkSettings::Dhcp)
            }
            Some("static") => {
                let address = address.context("mode=static needs address=a.b.c.d/nn")?;
                NetworkSettings::new_static(address, gateway, dns)
            }
            Some(m) => bail!("unknown mode {m:?} (dhcp or static)"),
        }
    }

    /// Parses the saved settings file. Unlike [`NetworkSettings::parse`], an empty file is
    /// refused: the console never saves one, so it is damage (e.g. a power cut while it was
    /// written by an older release), and the caller says so before falling back to DHCP.
    pub fn parse_file(text: &str) -> Result<NetworkSettings> {
        if text.trim().is_empty() {
            bail!("the file is empty (damaged)");
        }
        NetworkSettings::parse(text)
    }

    /// A checked static configuration.
    pub fn new_static(
        address: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        dns: Vec<IpAddr>,
    ) -> Result<NetworkSettings> {
        if let Some(gw) = gateway {
            if !address.contains(gw) {
                bail!("gateway {gw} is not in {address}'s subnet");
            }
            if gw == address.addr {
                bail!("the gateway cannot be the box's own address");
            }
        }
        Ok(NetworkSettings::Static {
            address,
            gateway,
            dns,
        })
    }

    /// The settings file's text (the console wrote it before the daemon owned the network).
    #[cfg(test)]
    pub fn to_file(&self) -> String {
        match self {
            NetworkSettings::Dhcp => "mode=dhcp\n".into(),
            NetworkSettings::Static {
                address,
                gateway,
                dns,
            } => {
                let mut s = format!("mode=static\naddress={address}\n");
                if let Some(g) = gateway {
                    s.push_str(&format!("gateway={g}\n"));
                }
                if !dns.is_empty() {
                    let list: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
                    s.push_str(&format!("dns={}\n", list.join(" ")));
                }
                s
            }
        }
    }
}

impl fmt::Display for NetworkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkSettings::Dhcp => write!(f, "DHCP"),
            NetworkSettings::Static {
                address,
                gateway,
                dns,
            } => {
                write!(f, "static {address}")?;
                if let Some(g) = gateway {
                    write!(f, ", gateway {g}")?;
                }
                if !dns.is_empty() {
                    let list: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
                    write!(f, ", DNS {}", list.join(" "))?;
                }
                Ok(())
            }
        }
    }
}

/// The box's network interface: the first one (by name) that is not loopback.
pub fn interface(sys_class_net: &Path) -> Result<String> {
    // Links are directories (symbolic links to them); a kernel with bonding built in also
    // has the file `bonding_masters` here, and an empty `bond0` that is no NIC. A NIC has
    // its `device`; virtual links (bonds, VLANs, bridges) do not and come only as a fallback.
    // Sorted by (not a NIC, name): the first NIC by name, else the first link.
    let mut links: Vec<(bool, String)> = std::fs::read_dir(sys_class_net)
        .with_context(|| format!("reading {}", sys_class_net.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let virtual_link = !e.path().join("device").exists();
            (virtual_link, e.file_name().to_string_lossy().into_owned())
        })
        .filter(|(_, n)| n != "lo" && !n.starts_with("sit") && !n.starts_with("dummy"))
        .collect();
    links.sort();
    links
        .into_iter()
        .next()
        .map(|(_, n)| n)
        .context("no network interface")
}

/// Applies `settings` to `ifname` at once (replacing what was there). `once`: DHCP takes one
/// lease and exits (not renewed; the daemon's own client takes over when it runs), else
/// udhcpc stays in the background renewing it (a boot in which the daemon is not started).
pub fn apply(settings: &NetworkSettings, ifname: &str, once: bool) -> Result<()> {
    stop_dhcp(ifname);
    ip(&["-4", "addr", "flush", "dev", ifname])?;
    ip(&["link", "set", ifname, "up"])?;
    match settings {
        NetworkSettings::Dhcp => {
            let pidfile = format!("/run/udhcpc.{ifname}.pid");
            // -b: go to the background if no lease comes within the tries, keep trying there;
            // -q -n: one lease (or none) and exit.
            let mode: &[&str] = if once { &["-q", "-n"] } else { &["-b"] };
            let status = Command::new("udhcpc")
                .args(["-i", ifname])
                .args(mode)
                .args(["-t", "3", "-T", "2", "-p", &pidfile])
                .args(["-s", "/usr/share/udhcpc/default.script"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running udhcpc")?;
            if !status.success() {
                bail!("udhcpc failed on {ifname}");
            }
        }
        NetworkSettings::Static {
            address,
            gateway,
            dns,
        } => {
            ip(&["addr", "add", &address.to_string(), "dev", ifname])?;
            if let Some(g) = gateway {
                ip(&[
                    "route",
                    "replace",
                    "default",
                    "via",
                    &g.to_string(),
                    "dev",
                    ifname,
                ])?;
            }
            let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
            std::fs::write("/run/resolv.conf", text).context("writing /run/resolv.conf")?;
        }
    }
    Ok(())
}

fn stop_dhcp(ifname: &str) {
    let pidfile = format!("/run/udhcpc.{ifname}.pid");
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let pid = pid.trim();
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = Command::new("kill").arg(pid).status();
        }
        let _ = std::fs::remove_file(&pidfile);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The interface's IPv4 addresses as `ip -o -4 addr show` prints them.
pub fn addresses() -> Vec<(String, String)> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    parse_ip_addr(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ip -o -4 addr show` lines into (interface, address/prefix).
pub fn parse_ip_addr(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _index = words.next()?;
            let ifname = words.next()?.trim_end_matches(':').to_string();
            let mut rest = words.skip_while(|w| *w != "inet");
            rest.next()?;
            Some((ifname, rest.next()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nic_is_a_device_not_a_bond_or_a_file() {
        let dir = std::env::temp_dir().join(format!("sealgate-sysnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for link in ["bond0", "eth0", "eth1", "lo"] {
            std::fs::create_dir_all(dir.join(link)).unwrap();
        }
        std::fs::create_dir_all(dir.join("eth0/device")).unwrap();
        std::fs::create_dir_all(dir.join("eth1/device")).unwrap();
        std::fs::write(dir.join("bonding_masters"), "bond0\n").unwrap();
        assert_eq!(interface(&dir).unwrap(), "eth0");
        // Without any device (a container, say) the links themselves, never the file.
        std::fs::remove_dir_all(dir.join("eth0")).unwrap();
        std::fs::remove_dir_all(dir.join("eth1")).unwrap();
        assert_eq!(interface(&dir).unwrap(), "bond0");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_and_writes_static_settings() {
        let s = NetworkSettings::parse(
            "mode=static\naddress=10.0.2.77/24\ngateway=10.0.2.2\ndns=10.0.2.3 9.9.9.9\n",
        )
        .unwrap();
        assert_eq!(NetworkSettings::parse(&s.to_file()).unwrap(), s);
        assert_eq!(
            s.to_string(),
            "static 10.0.2.77/24, gateway 10.0.2.2, DNS 10.0.2.3 9.9.9.9"
        );
    }

    #[test]
    fn defaults_to_dhcp_and_refuses_nonsense() {
        assert_eq!(NetworkSettings::parse("").unwrap(), NetworkSettings::Dhcp);
        assert_eq!(
            NetworkSettings::parse("# x\nmode=dhcp\n").unwrap(),
            NetworkSettings::Dhcp
        );
        assert!(NetworkSettings::parse("mode=static\n").is_err());
        assert!(
            NetworkSettings::parse("mode=static\naddress=10.0.0.1/24\ngateway=10.1.0.1\n").is_err()
        );
        assert!(NetworkSettings::parse("mode=static\naddress=10.0.0.1/33\n").is_err());
        assert!(NetworkSettings::parse("mode=ppp\n").is_err());
        assert!(NetworkSettings::parse("colour=blue\n").is_err());
        assert!(NetworkSettings::parse("mode=dhcp\naddress=10.0.0.1/24\n").is_err());
        assert!(NetworkSettings::parse("mode=static\naddress=127.0.0.1/8\n").is_err());
    }

    #[test]
    fn a_saved_file_that_is_empty_or_zero_filled_is_damage() {
        assert!(NetworkSettings::parse_file("").is_err());
        assert!(NetworkSettings::parse_file("\n \n").is_err());
        assert!(NetworkSettings::parse_file("\0\0\0\0").is_err());
        assert!(NetworkSettings::parse_file("mode=static\naddress=10.0.2.15/").is_err());
        assert_eq!(
            NetworkSettings::parse_file("mode=dhcp\n").unwrap(),
            NetworkSettings::Dhcp
        );
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(mask_to_prefix("255.255.255.0").unwrap(), 24);
        assert_eq!(mask_to_prefix("255.255.254.0").unwrap(), 23);
        assert_eq!(mask_to_prefix("255.255.255.255").unwrap(), 32);
        assert!(mask_to_prefix("255.0.255.0").is_err());
        assert!(mask_to_prefix("banana").is_err());
        let c = Ipv4Cidr::parse_with_mask("192.0.2.10", Some("255.255.255.0")).unwrap();
        assert_eq!(c.to_string(), "192.0.2.10/24");
        assert!(c.contains("192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
    }

    #[test]
    fn reads_ip_addr_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                   2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\\       valid_lft forever\n";
        assert_eq!(
            parse_ip_addr(out),
            vec![
                ("lo".into(), "127.0.0.1/8".into()),
                ("eth0".into(), "10.0.2.15/24".into())
            ]
        );
    }
}
