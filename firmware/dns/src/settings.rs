//! `[dns]`: the listener, the forwarders and the views, as the settings file spells them.
//!
//! ```toml
//! [dns]
//! listen = "127.0.0.1:5353"
//! forwarders = ["127.0.0.1:5354"]
//! [[dns.views]]
//! name = "inside"
//! networks = ["10.0.0.0/8"]
//! records = ["mail.example.org. 300 IN A 10.0.0.5"]
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize, Serializer};

/// `[dns]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the server listens (UDP and TCP); none: no DNS server.
    pub listen: Option<SocketAddr>,
    /// Resolvers that names outside the views are forwarded to, tried in order.
    pub forwarders: Vec<SocketAddr>,
    /// Clients whose questions for other names may be forwarded (everyone else gets
    /// REFUSED for them: the box is no open resolver). Default: loopback, the private
    /// ranges (RFC 1918), unique-local and link-local IPv6.
    pub recursion_networks: Vec<Network>,
    /// The views; the first whose networks hold the client's address answers it.
    pub views: Vec<View>,
    /// The view that answers the box itself (clients on loopback: its own resolver), whatever
    /// the views' networks say; none: loopback clients are matched like any other.
    pub own_view: Option<String>,
    /// The resolver file the daemon writes for its own lookups (on the box
    /// `/run/resolv.conf`): `nameserver 127.0.0.1` when this server listens on port 53 there,
    /// else the forwarders (or the DHCP leases' name servers). None: left alone.
    pub resolv_conf: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: None,
            forwarders: Vec::new(),
            recursion_networks: [
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "::1/128",
                "fc00::/7",
                "fe80::/10",
            ]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
            views: Vec::new(),
            own_view: None,
            resolv_conf: None,
        }
    }
}

impl Settings {
    /// The checks across fields (each message names the key).
    pub fn validate(&self) -> Result<(), String> {
        if self.forwarders.len() > 8 {
            return Err("forwarders: at most 8".into());
        }
        for (i, v) in self.views.iter().enumerate() {
            if v.name.trim().is_empty() {
                return Err(format!("views[{i}]: needs a name"));
            }
            if self.views[..i].iter().any(|o| o.name == v.name) {
                return Err(format!("views: the name {:?} is used twice", v.name));
            }
            if v.networks.is_empty() {
                return Err(format!("views {:?}: networks is empty", v.name));
            }
            if v.records.len() > 10_000 {
                return Err(format!("views {:?}: at most 10000 records", v.name));
            }
        }
        if let Some(o) = &self.own_view
            && !self.views.iter().any(|v| &v.name == o)
        {
            return Err(format!("own_view: no view is named {o:?}"));
        }
        if let Some(p) = &self.resolv_conf
            && !p.is_absolute()
        {
            return Err(format!(
                "resolv_conf: {} is not an absolute path",
                p.display()
            ));
        }
        Ok(())
    }
}

/// `[[dns.views]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// Its name (for logs and status).
    pub name: String,
    /// The clients it answers.
    pub networks: Vec<Network>,
    /// Its records, one zone-file line each.
    #[serde(default)]
    pub records: Vec<ZoneRecord>,
}

/// An address block, `10.0.0.0/8`, `::/0`, or one address (the daemon's settings use it for
/// every network they name, as `Cidr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Network {
    /// `127.0.0.0/8`.
    pub const LOOPBACK_V4: Network = Network {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    /// `::1/128`.
    pub const LOOPBACK_V6: Network = Network {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n)
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0..={max}"))?,
            None => max,
        };
        let n = Network { addr, prefix };
        if !n.contains(addr) || addr.to_canonical() != addr {
            return Err(format!(
                "{s:?}: address bits beyond the prefix are set (or an IPv4-mapped address): write the network address"
            ));
        }
        Ok(n)
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One record in zone-file form: `NAME [TTL] [IN] TYPE DATA`, the name fully qualified
/// (ending in a dot). Types: A, AAAA, CNAME, MX, TXT, PTR.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ZoneRecord {
    text: String,
    record: Record,
}

impl ZoneRecord {
    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }
}

const MAX_TTL: u32 = 7 * 86_400;

impl FromStr for ZoneRecord {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("record {s:?}: {why}");
        let mut words = s.split_whitespace().peekable();
        let owner = words.next().ok_or_else(|| bad("empty"))?;
        let name = fqdn(owner).map_err(|e| bad(&e))?;
        let mut ttl = 300;
        if let Some(t) = words.peek().and_then(|w| w.parse::<u32>().ok()) {
            if t > MAX_TTL {
                return Err(bad("the TTL must be at most 604800 (7 days)"));
            }
            ttl = t;
            words.next();
        }
        if words.peek().is_some_and(|w| w.eq_ignore_ascii_case("IN")) {
            words.next();
        }
        let kind = words.next().ok_or_else(|| bad("no type"))?;
        let rest: Vec<&str> = words.collect();
        let one = |what: &str| -> Result<&str, String> {
            match rest.as_slice() {
                [v] => Ok(v),
                _ => Err(bad(&format!("{kind} takes one {what}"))),
            }
        };
        let data = match kind.to_ascii_uppercase().as_str() {
            "A" => RData::A(A(one("IPv4 address")?
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("not an IPv4 address"))?)),
            "AAAA" => RData::AAAA(AAAA(
                one("IPv6 address")?
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("not an IPv6 address"))?,
            )),
            "CNAME" => RData::CNAME(CNAME(fqdn(one("name")?).map_err(|e| bad(&e))?)),
            "PTR" => RData::PTR(PTR(fqdn(one("name")?).map_err(|e| bad(&e))?)),
            "MX" => match rest.as_slice() {
                [pref, exchange] => RData::MX(MX::new(
                    pref.parse()
                        .map_err(|_| bad("MX preference must be 0..=65535"))?,
                    fqdn(exchange).map_err(|e| bad(&e))?,
                )),
                _ => return Err(bad("MX takes a preference and a name")),
            },
            "TXT" => RData::TXT(TXT::new(txt_strings(&rest.join(" ")).map_err(|e| bad(&e))?)),
            _ => return Err(bad("the type must be A, AAAA, CNAME, MX, TXT or PTR")),
        };
        let mut record = Record::from_rdata(name, ttl, data);
        record.dns_class = DNSClass::IN;
        Ok(ZoneRecord {
            text: s.split_whitespace().collect::<Vec<_>>().join(" "),
            record,
        })
    }
}

fn fqdn(s: &str) -> Result<Name, String> {
    if !s.ends_with('.') {
        return Err(format!("{s:?} must be fully qualified (end with a dot)"));
    }
    let n = Name::from_ascii(s).map_err(|e| format!("{s:?} is not a domain name: {e}"))?;
    if n.is_wildcard() {
        return Err(format!("{s:?}: wildcards are not supported"));
    }
    Ok(n)
}

/// `"a b" "c"` or a bare word: TXT's character strings (each at most 255 bytes).
fn txt_strings(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("TXT needs data".into());
    }
    let mut out = Vec::new();
    if !s.starts_with('"') {
        out.push(s.to_string());
    } else {
        let mut rest = s;
        while let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or("unterminated quote")?;
            out.push(r[..end].to_string());
            rest = r[end + 1..].trim_start();
        }
        if !rest.is_empty() {
            return Err("text after the last quoted string".into());
        }
    }
    if out.iter().any(|t| t.len() > 255) {
        return Err("a TXT string is at most 255 bytes".into());
    }
    Ok(out)
}

impl TryFrom<String> for ZoneRecord {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for ZoneRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ZoneRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The record types a view can hold (for the answer's NODATA decision).
pub const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::PTR,
];

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn records_in_zone_file_form() {
        let r: ZoneRecord = "mail.example.org. 300 IN A 10.0.0.5".parse().unwrap();
        assert_eq!(r.record().record_type(), RecordType::A);
        assert_eq!(r.record().ttl, 300);
        let r: ZoneRecord = "example.org. MX 10 mail.example.org.".parse().unwrap();
        assert_eq!(r.record().ttl, 300);
        let r: ZoneRecord = r#"example.org. 60 IN TXT "v=spf1 -all" "x""#.parse().unwrap();
        assert_eq!(r.to_string(), r#"example.org. 60 IN TXT "v=spf1 -all" "x""#);
        for bad in [
            "",
            "mail.example.org 300 IN A 10.0.0.5",
            "mail.example.org. 300 IN A 10.0.0",
            "mail.example.org. 300 IN A 10.0.0.5 10.0.0.6",
            "mail.example.org. 300 IN SOA x",
            "mail.example.org. 99999999 IN A 10.0.0.5",
            "*.example.org. A 10.0.0.5",
            "x. TXT \"open",
        ] {
            assert!(bad.parse::<ZoneRecord>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let all: Network = "::/0".parse().unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert!(!all.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.1/8".parse::<Network>().is_err());
        assert!("10.0.0.0/33".parse::<Network>().is_err());
    }
}
