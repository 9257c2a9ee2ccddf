//! The box's network as the daemon owns it: `network.*` (and `dns.forwarders`) in its
//! settings, read and changed through its admin API (`GET`/`PATCH /settings`, `GET
//! /network`, `GET /status`, `POST /network/confirm`) over `/run/sealgate/admin.sock`, the
//! same code and settings the web UI uses. The console's page edits one interface, the box's
//! first NIC: DHCP, or one static IPv4 address with a default gateway and name servers; the
//! rest of the settings (other interfaces, routes, IPv6 addresses) is kept as it is.
//!
//! Also the boot's one-time move of the console's earlier file (`/data/box/network.conf`)
//! into the daemon's settings file ([`migrate`]), and the view of the network the settings
//! file gives when the daemon does not run.
//!
//! Attackers. The page's inputs are typed by whoever stands at the serial console (root on
//! the box anyway); they are parsed into typed values (`menu.rs`, `network.rs`) and reach the
//! daemon only as JSON values built here, which the daemon validates like any admin's
//! change (refused whole, 4xx with its reason). `/data/box/network.conf` is on the data
//! partition, which someone with the disk in hand can write: it is parsed by the strict
//! parser (`NetworkSettings::parse_file`, unknown keys refused) and only its typed values are
//! written, as TOML values (never as text), into the settings, which the daemon validates
//! again at start; a file that does not parse is not moved (the box keeps DHCP) and is kept
//! aside for a person to read.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, bail};
use sealgate_local::admin_socket::AdminSocket;
use serde_json::{Value, json};

use crate::network::{Ipv4Cidr, NetworkSettings};

/// The settings' `network` section and `dns.forwarders`, as the daemon's JSON view has them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSettings {
    /// `network` (object).
    pub network: Value,
    /// `dns.forwarders` (array of `ip:port`).
    pub forwarders: Value,
}

impl NetSettings {
    /// From the daemon's whole settings (the JSON view, or a settings file's TOML as JSON).
    pub fn from_settings(settings: &Value) -> NetSettings {
        NetSettings {
            network: settings
                .get("network")
                .cloned()
                .unwrap_or_else(|| json!({})),
            forwarders: settings["dns"]
                .get("forwarders")
                .cloned()
                .unwrap_or_else(|| json!([])),
        }
    }

    fn interfaces(&self) -> Vec<Value> {
        self.network["interfaces"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn routes(&self) -> Vec<Value> {
        self.network["routes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The entry for `ifname` (by name), if any.
    fn entry(&self, ifname: &str) -> Option<Value> {
        self.interfaces()
            .into_iter()
            .find(|i| i["name"].as_str() == Some(ifname))
    }

    /// What the settings give `ifname`, as the console's page can show and edit it: `None`
    /// when the settings say more than the page edits (several IPv4 addresses, a VLAN, a
    /// bond, DHCP and static addresses at once, an interface not named).
    pub fn simple(&self, ifname: &str) -> Option<NetworkSettings> {
        let e = self.entry(ifname)?;
        if e.get("vlan").is_some_and(|v| !v.is_null())
            || e.get("bond").is_some_and(|v| !v.is_null())
        {
            return None;
        }
        let v4: Vec<&str> = e["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let v4: Vec<&str> = v4.into_iter().filter(|a| !a.contains(':')).collect();
        let dhcp = e["dhcp"].as_bool().unwrap_or(false);
        match (dhcp, v4.as_slice()) {
            (true, []) => Some(NetworkSettings::Dhcp),
            (false, [one]) => {
                let address: Ipv4Cidr = one.parse().ok()?;
                let gateway = self.default_gateway();
                let dns: Vec<IpAddr> = self
                    .forwarders
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .filter_map(|f| f.parse::<std::net::SocketAddr>().ok())
                            .map(|f| f.ip())
                            .collect()
                    })
                    .unwrap_or_default();
                NetworkSettings::new_static(address, gateway, dns).ok()
            }
            _ => None,
        }
    }

    /// The IPv4 default route's gateway, if the settings have one.
    fn default_gateway(&self) -> Option<Ipv4Addr> {
        self.routes().iter().find_map(|r| {
            (r["to"].as_str() == Some("0.0.0.0/0"))
                .then(|| r["via"].as_str()?.parse().ok())
                .flatten()
        })
    }

    /// One line for the status page and the network page.
    pub fn describe(&self, ifname: &str) -> String {
        if let Some(s) = self.simple(ifname) {
            return s.to_string();
        }
        let n = self.interfaces().len();
        if n == 0 && self.routes().is_empty() {
            return "not managed (the settings name no interface: the network is left as it is)"
                .into();
        }
        let names: Vec<String> = self
            .interfaces()
            .iter()
            .map(|i| {
                i["name"]
                    .as_str()
                    .or(i["mac"].as_str())
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        format!(
            "set through the admin API ({}; {} route(s)); see the web UI's network page",
            names.join(", "),
            self.routes().len()
        )
    }

    /// The merge patch (`PATCH /settings`) that gives `ifname` the settings `new`, keeping
    /// everything else: other interfaces, the entry's IPv6 addresses and MTU, routes other
    /// than the IPv4 default route. The name servers of a static address become
    /// `dns.forwarders` (port 53); DHCP leaves `dns.forwarders` alone (empty: the lease's).
    pub fn patch_for(&self, ifname: &str, new: &NetworkSettings) -> Value {
        let mut interfaces = self.interfaces();
        let idx = interfaces
            .iter()
            .position(|i| i["name"].as_str() == Some(ifname));
        let mut entry = match idx {
            Some(i) => interfaces[i].clone(),
            None => json!({ "name": ifname }),
        };
        let v6: Vec<Value> = entry["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x.as_str().is_some_and(|s| s.contains(':')))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut routes: Vec<Value> = self
            .routes()
            .into_iter()
            .filter(|r| r["to"].as_str() != Some("0.0.0.0/0"))
            .collect();
        let mut patch = json!({});
        match new {
            NetworkSettings::Dhcp => {
                entry["dhcp"] = json!(true);
                entry["addresses"] = json!(v6);
            }
            NetworkSettings::Static {
                address,
                gateway,
                dns,
            } => {
                entry["dhcp"] = json!(false);
                let mut a = vec![json!(address.to_string())];
                a.extend(v6);
                entry["addresses"] = json!(a);
                if let Some(g) = gateway {
                    routes.push(json!({ "to": "0.0.0.0/0", "via": g.to_string() }));
                }
                if !dns.is_empty() {
                    let f: Vec<String> = dns
                        .iter()
                        .map(|d| std::net::SocketAddr::new(*d, 53).to_string())
                        .collect();
                    patch["dns"] = json!({ "forwarders": f });
                }
            }
        }
        match idx {
            Some(i) => interfaces[i] = entry,
            None => interfaces.insert(0, entry),
        }
        patch["network"] = json!({ "interfaces": interfaces, "routes": routes });
        patch
    }
}

/// The problem's detail (or title) of a refusal, for one line on the console.
fn refusal(status: u16, body: &[u8]) -> String {
    let p: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = p["detail"]
        .as_str()
        .or(p["title"].as_str())
        .unwrap_or("no reason given");
    let clean: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    format!("sealgated refused ({status}): {clean}")
}

fn get(s: &AdminSocket, path: &str) -> Result<Value> {
    let (status, body) = s.call("GET", path, None)?;
    if !(200..300).contains(&status) {
        bail!("{}", refusal(status, &body));
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
}

/// `GET /settings`: the network part.
pub fn read(s: &AdminSocket) -> Result<NetSettings> {
    let v = get(s, "/settings")?;
    Ok(NetSettings::from_settings(&v["settings"]))
}

/// Changes `ifname` to `new` through `PATCH /settings` (live); a change the daemon holds
/// for confirmation is confirmed at once (`POST /network/confirm`): the serial console
/// cannot be cut off by a network change, and the technician typed it there. Returns what
/// to tell the technician.
pub fn change(s: &AdminSocket, ifname: &str, new: &NetworkSettings) -> Result<String> {
    let current = read(s)?;
    let patch = current.patch_for(ifname, new);
    let (status, body) = s.call("PATCH", "/settings", Some(&patch))?;
    if !(200..300).contains(&status) {
        bail!("{}", refusal(status, &body));
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut said = format!("Saved and applied: {new}");
    if v["outcome"]["confirm_within_secs"].as_u64().is_some() {
        let (status, body) = s.call("POST", "/network/confirm", None)?;
        if (200..300).contains(&status) {
            said.push_str("\n(kept at once: the serial console cannot be cut off by it)");
        } else {
            said.push_str(&format!(
                "\nNOT CONFIRMED ({}): the previous settings come back within a minute",
                refusal(status, &body)
            ));
        }
    }
    Ok(said)
}

/// The live state for the pages: links and addresses, DHCP leases, the clock.
pub fn live(s: &AdminSocket) -> Result<String> {
    let n = get(s, "/network")?;
    let st = get(s, "/status").ok();
    Ok(live_text(&n, st.as_ref()))
}

/// [`live`]'s text from `GET /network` and `GET /status`; control characters are dropped
/// (one line per item whatever the values hold).
fn live_text(n: &Value, st: Option<&Value>) -> String {
    let mut out = String::new();
    for l in n["links"].as_array().into_iter().flatten() {
        let name = l["name"].as_str().unwrap_or("?");
        if name == "lo" {
            continue;
        }
        let addrs: Vec<&str> = l["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "Link:      {name} {}{}{} {}\n",
            if l["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            },
            if l["carrier"].as_bool() == Some(false) {
                ", no carrier"
            } else {
                ""
            },
            if l["managed"].as_bool() == Some(true) {
                ""
            } else {
                ", not managed"
            },
            addrs.join(" ")
        ));
    }
    if let Some(d) = n["dhcp"].as_object() {
        for (label, c) in d {
            let state = c["state"].as_str().unwrap_or("?");
            match c["lease"].as_object() {
                Some(l) => out.push_str(&format!(
                    "Lease:     {label} {} from {}, router {}, {} s left\n",
                    l.get("address").and_then(Value::as_str).unwrap_or("?"),
                    l.get("server").and_then(Value::as_str).unwrap_or("?"),
                    l.get("router").and_then(Value::as_str).unwrap_or("none"),
                    l.get("expires_in_secs")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                )),
                None => out.push_str(&format!("Lease:     {label} none yet ({state})\n")),
            }
        }
    }
    if let Some(secs) = n["confirm_within_secs"].as_u64() {
        out.push_str(&format!(
            "Waiting:   a network change is put back in {secs} s unless confirmed\n"
        ));
    }
    if let Some(st) = st {
        let c = &st["clock"];
        let sync = if c["synchronized"].as_bool() == Some(true) {
            "synchronised"
        } else {
            "NOT synchronised"
        };
        out.push_str(&format!(
            "Clock:     {sync}{}{}\n",
            c["source"]
                .as_str()
                .map(|s| format!(", source {s}"))
                .unwrap_or_default(),
            c["offset_ms"]
                .as_i64()
                .map(|o| format!(", offset {o} ms"))
                .unwrap_or_default(),
        ));
    }
    out.chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

/// Merges settings `over` into `base` as the daemon does with `--box` (tables merged, any
/// other value replaced).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The network the settings files give (the data partition's over the shipped), for when
/// the daemon does not answer.
pub fn from_files(shipped: &str, data: Option<&str>) -> Result<NetSettings> {
    let mut base: toml::Table = toml::from_str(shipped).context("the shipped settings")?;
    if let Some(d) = data {
        let over: toml::Table = toml::from_str(d).context("the settings file")?;
        merge(&mut base, over);
    }
    let v = serde_json::to_value(&base).context("the settings as JSON")?;
    Ok(NetSettings::from_settings(&v))
}

/// The resolver file the daemon writes on the box (`/etc/resolv.conf` links to it).
pub const RESOLV_CONF: &str = "/run/resolv.conf";

/// What [`prepare`] decided: the settings file's new text (none: leave it), and what to say.
#[derive(Debug, PartialEq)]
pub struct Prepared {
    /// Write this settings file (before the old console file is put aside).
    pub write: Option<String>,
    /// Lines for the console.
    pub said: Vec<String>,
}

/// The boot's network step on the daemon's settings file (`data`: the data partition's
/// file if there is one, else the shipped text is its start):
/// - the console's earlier file (`conf`: `/data/box/network.conf`'s text, if it exists) is
///   moved into it for `ifname`, unless the settings name an interface already (they were set
///   through the admin API after the file was written, and win);
/// - settings that name no interface get the box's default, DHCP on `ifname` (a fresh box,
///   one whose console file never existed, or whose file does not parse): a box whose
///   settings configure no interface would be unreachable, nothing else configures the
///   network;
/// - `dns.resolv_conf` is set to [`RESOLV_CONF`] if missing (the box's own lookups).
///
/// The shipped settings themselves name no network (they are also what `sealgated --box`
/// runs on off the box, where it must never touch the host's network).
pub fn prepare(
    conf: Option<&str>,
    data: Option<&str>,
    shipped: &str,
    ifname: &str,
) -> Result<Prepared> {
    let mut said = Vec::new();
    let text = data.unwrap_or(shipped);
    let mut table: toml::Table = toml::from_str(text).context("the settings file")?;
    let names_interface = table
        .get("network")
        .and_then(|n| n.get("interfaces"))
        .and_then(toml::Value::as_array)
        .is_some_and(|a| !a.is_empty());
    // (what the first NIC gets, whether it is the box's default)
    let wanted = match conf.map(NetworkSettings::parse_file) {
        Some(Ok(old)) if !names_interface => {
            said.push(format!("{old}: moved into the daemon's settings"));
            Some((old, false))
        }
        Some(Ok(old)) => {
            said.push(format!(
                "{old}: not moved, the daemon's settings name the network already"
            ));
            None
        }
        Some(Err(e)) => {
            said.push(format!("unreadable ({e:#}): not moved"));
            (!names_interface).then_some((NetworkSettings::Dhcp, true))
        }
        None => (!names_interface).then_some((NetworkSettings::Dhcp, true)),
    };
    let mut changed = false;
    if let Some((wanted, default)) = wanted {
        if default {
            said.push(format!(
                "the settings name no interface: the box's default, DHCP on {ifname}"
            ));
        }
        let here = NetSettings::from_settings(
            &serde_json::to_value(&table).context("the settings as JSON")?,
        );
        let patch = here.patch_for(ifname, &wanted);
        let as_toml = |v: &Value| -> Result<toml::Value> {
            toml::Value::try_from(v.clone()).context("a value for the settings file")
        };
        let network = table
            .entry("network")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(network) = network.as_table_mut() else {
            bail!("the settings file's network is not a table");
        };
        network.insert(
            "interfaces".into(),
            as_toml(&patch["network"]["interfaces"])?,
        );
        let routes = patch["network"]["routes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if routes.is_empty() {
            network.remove("routes");
        } else {
            network.insert("routes".into(), as_toml(&json!(routes))?);
        }
        if let Some(f) = patch["dns"].get("forwarders") {
            let dns = table
                .entry("dns")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(dns) = dns.as_table_mut()
                && !dns.contains_key("forwarders")
            {
                dns.insert("forwarders".into(), as_toml(f)?);
            }
        }
        changed = true;
    }
    let dns = table
        .entry("dns")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(dns) = dns.as_table_mut()
        && !dns.contains_key("resolv_conf")
    {
        dns.insert(
            "resolv_conf".into(),
            toml::Value::String(RESOLV_CONF.into()),
        );
        changed = true;
    }
    let write = if changed {
        Some(format!(
            "# sealgated's settings (the box's network defaults were added at boot).\n{}",
            toml::to_string(&table).context("writing the settings")?
        ))
    } else {
        None
    };
    Ok(Prepared { write, said })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../rootfs/overlay/etc/sealgate/settings.toml");

    fn st(text: &str) -> NetworkSettings {
        NetworkSettings::parse(text).unwrap()
    }

    #[test]
    fn a_fresh_box_gets_dhcp_on_its_first_nic_and_the_shipped_settings_none() {
        // The shipped settings never touch a network (a developer's host runs them too).
        let shipped = from_files(SHIPPED, None).unwrap();
        assert!(shipped.describe("eth0").starts_with("not managed"));
        let p = prepare(None, None, SHIPPED, "eth0").unwrap();
        let text = p.write.expect("defaults written");
        let n = from_files(SHIPPED, Some(&text)).unwrap();
        assert_eq!(n.simple("eth0"), Some(NetworkSettings::Dhcp));
        assert_eq!(n.describe("eth0"), "DHCP");
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["dns"]["resolv_conf"].as_str(), Some(RESOLV_CONF));
        assert_eq!(
            t["admin"]["listen"].as_str(),
            Some("0.0.0.0:8440"),
            "{text}"
        );
        // Next boot: nothing to do.
        assert_eq!(
            prepare(None, Some(&text), SHIPPED, "eth0").unwrap(),
            Prepared {
                write: None,
                said: vec![]
            }
        );
        // Settings the admin API made: kept, only the resolver file added.
        let admin = "[[network.interfaces]]\nname = \"eth1\"\naddresses = [\"192.0.2.10/24\"]\n";
        let text = prepare(None, Some(admin), SHIPPED, "eth0")
            .unwrap()
            .write
            .unwrap();
        let n = from_files(SHIPPED, Some(&text)).unwrap();
        assert_eq!(n.simple("eth0"), None);
        assert_eq!(n.interfaces().len(), 1);
    }

    #[test]
    fn a_static_address_is_patched_keeping_the_rest() {
        let n = NetSettings::from_settings(&json!({
            "network": {
                "interfaces": [
                    {"name": "eth0", "dhcp": true, "addresses": ["2001:db8::5/64"], "mtu": 1400},
                    {"name": "eth1", "addresses": ["198.18.0.1/24"]}
                ],
                "routes": [
                    {"to": "0.0.0.0/0", "via": "10.0.0.1"},
                    {"to": "198.51.100.0/24", "via": "198.18.0.254"}
                ]
            },
            "dns": {"forwarders": []}
        }));
        let s = st("mode=static\naddress=10.0.2.77/24\ngateway=10.0.2.2\ndns=10.0.2.3\n");
        let p = n.patch_for("eth0", &s);
        assert_eq!(
            p["network"]["interfaces"][0],
            json!({"name": "eth0", "dhcp": false, "addresses": ["10.0.2.77/24", "2001:db8::5/64"], "mtu": 1400})
        );
        assert_eq!(p["network"]["interfaces"][1]["name"], "eth1");
        assert_eq!(
            p["network"]["routes"],
            json!([{"to": "198.51.100.0/24", "via": "198.18.0.254"}, {"to": "0.0.0.0/0", "via": "10.0.2.2"}])
        );
        assert_eq!(p["dns"]["forwarders"], json!(["10.0.2.3:53"]));
        // What the daemon then has reads back as what was typed.
        let after = NetSettings::from_settings(&json!({
            "network": p["network"], "dns": p["dns"]
        }));
        assert_eq!(after.simple("eth0"), Some(s));
        // Back to DHCP: the IPv4 address and the default route go, the rest stays.
        let p = after.patch_for("eth0", &NetworkSettings::Dhcp);
        assert_eq!(
            p["network"]["interfaces"][0]["addresses"],
            json!(["2001:db8::5/64"])
        );
        assert_eq!(p["network"]["interfaces"][0]["dhcp"], true);
        assert_eq!(p["network"]["routes"].as_array().unwrap().len(), 1);
        assert!(p.get("dns").is_none());
    }

    #[test]
    fn settings_beyond_the_page_are_described_not_edited() {
        let n = NetSettings::from_settings(&json!({"network": {"interfaces": [
            {"name": "eth0", "addresses": ["10.0.0.5/24", "10.0.0.6/24"]}
        ]}}));
        assert_eq!(n.simple("eth0"), None);
        assert!(
            n.describe("eth0").contains("eth0"),
            "{}",
            n.describe("eth0")
        );
        let none = NetSettings::from_settings(&json!({}));
        assert!(none.describe("eth0").starts_with("not managed"));
    }

    #[test]
    fn the_console_file_moves_into_the_settings_once() {
        let conf = "mode=static\naddress=10.0.2.77/24\ngateway=10.0.2.2\ndns=10.0.2.3 9.9.9.9\n";
        // No settings file yet: the shipped settings with the network added.
        let p = prepare(Some(conf), None, SHIPPED, "eth0").unwrap();
        assert_eq!(
            p.said,
            [
                "static 10.0.2.77/24, gateway 10.0.2.2, DNS 10.0.2.3 9.9.9.9: moved into the daemon's settings"
            ]
        );
        let text = p.write.unwrap();
        let n = from_files(SHIPPED, Some(&text)).unwrap();
        assert_eq!(n.simple("eth0"), Some(st(conf)));
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            t["admin"]["listen"].as_str(),
            Some("0.0.0.0:8440"),
            "{text}"
        );
        // A settings file the admin API wrote: its other sections are kept.
        let data = "[limits]\nmax_signers = 7\n";
        let text = prepare(Some(conf), Some(data), SHIPPED, "eth0")
            .unwrap()
            .write
            .unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["limits"]["max_signers"].as_integer(), Some(7));
        assert_eq!(
            from_files(SHIPPED, Some(&text)).unwrap().simple("eth0"),
            Some(st(conf))
        );
        // Run again over its own result (the old file put back by hand): nothing changes.
        let again = prepare(Some(conf), Some(&text), SHIPPED, "eth0").unwrap();
        assert_eq!(again.write, None);
        assert!(again.said[0].contains("not moved"), "{:?}", again.said);
        // DHCP moves as DHCP.
        let text = prepare(Some("mode=dhcp\n"), Some(data), SHIPPED, "eth0")
            .unwrap()
            .write
            .unwrap();
        assert_eq!(
            from_files(SHIPPED, Some(&text)).unwrap().simple("eth0"),
            Some(NetworkSettings::Dhcp)
        );
    }

    #[test]
    fn a_hostile_or_damaged_console_file_moves_nothing_and_the_box_keeps_dhcp() {
        for bad in [
            "",
            "\0\0\0",
            "mode=static\naddress=10.0.2.77/24\n[admin]\nlisten = \"0.0.0.0:1\"\n",
            "mode=static\naddress=10.0.2.77/24\"]\n[admin]\n",
            "mode=static\naddress=10.0.2.77/24\ngateway=10.9.9.9\n",
            "colour=blue\n",
        ] {
            let p = prepare(Some(bad), None, SHIPPED, "eth0").unwrap();
            assert!(p.said[0].starts_with("unreadable"), "{bad:?}: {:?}", p.said);
            let text = p.write.unwrap();
            let n = from_files(SHIPPED, Some(&text)).unwrap();
            assert_eq!(n.simple("eth0"), Some(NetworkSettings::Dhcp), "{bad:?}");
            let t: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(
                t["admin"]["listen"].as_str(),
                Some("0.0.0.0:8440"),
                "{bad:?}"
            );
        }
        // A damaged settings file is not rewritten from the console's file.
        assert!(prepare(Some("mode=dhcp\n"), Some("[admin\n"), SHIPPED, "eth0").is_err());
    }

    #[test]
    fn the_live_state_reads_as_lines() {
        let n = json!({
            "links": [
                {"name": "lo", "up": true, "carrier": true, "managed": false, "addresses": ["127.0.0.1/8"]},
                {"name": "eth0", "up": true, "carrier": true, "managed": true, "addresses": ["10.0.2.15/24"]},
                {"name": "eth1\u{1b}[2J", "up": false, "carrier": false, "managed": false, "addresses": []}
            ],
            "dhcp": {"eth0": {"link": "eth0", "state": "bound", "lease": {
                "address": "10.0.2.15/24", "server": "10.0.2.2", "router": "10.0.2.2",
                "expires_in_secs": 86000
            }}},
            "confirm_within_secs": null
        });
        let st = json!({"clock": {"synchronized": false, "source": null}});
        let t = live_text(&n, Some(&st));
        assert_eq!(
            t,
            "Link:      eth0 up 10.0.2.15/24\n\
             Link:      eth1[2J DOWN, no carrier, not managed \n\
             Lease:     eth0 10.0.2.15/24 from 10.0.2.2, router 10.0.2.2, 86000 s left\n\
             Clock:     NOT synchronised\n"
        );
        assert_eq!(live_text(&json!({}), None), "");
    }

    #[test]
    fn refusals_are_one_clean_line() {
        let r = refusal(
            422,
            br#"{"title":"Invalid","detail":"network.interfaces: no link \u001b[2Jeth9"}"#,
        );
        assert_eq!(
            r,
            "sealgated refused (422): network.interfaces: no link [2Jeth9"
        );
        assert_eq!(
            refusal(500, b"x"),
            "sealgated refused (500): no reason given"
        );
    }
}
