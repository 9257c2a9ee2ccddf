//! The daemon's DHCP client, SNTP client and hostname in its namespace ("box", `eth0` a veth
//! to a "peer" namespace where dnsmasq serves DHCP and chrony serves time): the lease's
//! address and default route applied through the same reconcile, its NTP server used, the
//! lease given back when the settings go static, the hostname set in the daemon's own UTS
//! namespace and sent to the DHCP server.

use serde_json::json;

use crate::harness::{Daemon, Netns, chrony, dnsmasq, wait_for};

fn boxed() -> (Netns, Netns) {
    let b = Netns::new("box");
    let peer = Netns::new("peer");
    b.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    peer.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    peer.ip(&["link", "set", "eth0", "up"]);
    (b, peer)
}

fn global_v4(ns: &Netns, dev: &str) -> Vec<String> {
    let v = ns.ip_json(&["-4", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn a_dhcp_lease_is_applied_its_ntp_server_used_and_given_back_on_change() {
    let (b, peer) = boxed();
    let _time = chrony(&peer, "192.0.2.1", 123, None);
    let server = dnsmasq(
        &peer,
        "eth0",
        "192.0.2.50,192.0.2.60,255.255.255.0,2m",
        &[
            "option:router,192.0.2.1",
            "option:dns-server,192.0.2.1",
            "option:ntp-server,192.0.2.1",
        ],
    );
    let d = Daemon::start(
        &b,
        "[network]\nhostname = \"sealgate-test\"\n[[network.interfaces]]\nname = \"eth0\"\ndhcp = true\n",
    );
    // The start waited for the lease (and the clock) before going on.
    assert!(
        d.start
            .iter()
            .any(|l| l.contains("eth0: DHCP lease 192.0.2.")),
        "{:?}\n{}",
        d.start,
        server.file("log")
    );
    wait_for("the leased address", || {
        global_v4(&b, "eth0")
            .first()
            .is_some_and(|a| a.starts_with("192.0.2.5") || a.starts_with("192.0.2.60"))
    });
    let leased = global_v4(&b, "eth0")[0].clone();
    assert!(leased.ends_with("/24"), "{leased}");
    wait_for("the default route", || {
        b.ip_json(&["route", "show", "default"])[0]["gateway"] == "192.0.2.1"
    });
    let (code, st) = d.admin("GET", "/status", None);
    assert_eq!(code, 200);
    let dhcp = &st["network"]["dhcp"]["eth0"];
    assert_eq!(dhcp["state"], "bound", "{st}");
    assert_eq!(dhcp["lease"]["name_servers"], json!(["192.0.2.1"]), "{st}");
    assert_eq!(dhcp["lease"]["ntp_servers"], json!(["192.0.2.1"]), "{st}");
    assert_eq!(dhcp["lease"]["server"], "192.0.2.1");
    // Hostname: set in the daemon's UTS namespace, shown, and sent to the DHCP server.
    assert_eq!(d.hostname(), "sealgate-test");
    assert_eq!(st["network"]["hostname"], "sealgate-test");
    let leases = server.file("leases");
    assert!(leases.contains("sealgate-test"), "{leases}");
    // Time from the lease's NTP server (chrony on the same host clock: agrees).
    wait_for("the clock synchronised from the lease's NTP server", || {
        d.admin("GET", "/status", None).1["clock"]["synchronized"] == true
    });
    let clock = d.admin("GET", "/status", None).1["clock"].clone();
    assert_eq!(clock["source"], "192.0.2.1:123", "{clock}");
    assert!(
        clock["offset_ms"].as_f64().unwrap().abs() < 100.0,
        "{clock}"
    );
    assert_eq!(clock["stepped"], false);
    // A hostname change is live.
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(&json!({"network": {"hostname": "box2"}})),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(d.hostname(), "box2");
    // Static now: the lease is given back (dnsmasq forgets it), its address and route go.
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(
            &json!({"network": {"interfaces": [{"name": "eth0", "addresses": ["192.0.2.10/24"]}]}}),
        ),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(global_v4(&b, "eth0"), ["192.0.2.10/24"]);
    assert_eq!(b.ip_json(&["route", "show", "default"]), json!([]));
    wait_for("dnsmasq to forget the released lease", || {
        !server.file("leases").contains("sealgate")
    });
    assert!(
        server.file("log").contains("DHCPRELEASE"),
        "{}",
        server.file("log")
    );
    let (_, st) = d.admin("GET", "/status", None);
    assert_eq!(st["network"]["dhcp"], json!({}), "{st}");
}

#[test]
fn without_a_dhcp_server_the_daemon_starts_and_says_so() {
    let (b, _peer) = boxed();
    let d = Daemon::start(&b, "[[network.interfaces]]\nname = \"eth0\"\ndhcp = true\n");
    assert!(
        d.start
            .iter()
            .any(|l| l.contains("eth0: no DHCP lease yet")),
        "{:?}",
        d.start
    );
    let (_, st) = d.admin("GET", "/status", None);
    assert_eq!(st["network"]["dhcp"]["eth0"]["state"], "selecting", "{st}");
    assert_eq!(global_v4(&b, "eth0"), Vec::<String>::new());
}

#[test]
fn a_server_whose_clock_is_off_is_measured_and_the_clock_not_set_in_report_only_mode() {
    let (b, peer) = boxed();
    b.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    b.ip(&["link", "set", "eth0", "up"]);
    let _off = chrony(&peer, "192.0.2.1", 1123, Some("+1h"));
    let _right = chrony(&peer, "192.0.2.1", 123, None);
    let d = Daemon::start(&b, "[network]\nntp_servers = [\"192.0.2.1:1123\"]\n");
    wait_for("an answer from the server an hour ahead", || {
        d.admin("GET", "/status", None).1["clock"]["offset_ms"].is_f64()
    });
    let clock = d.admin("GET", "/status", None).1["clock"].clone();
    let off = clock["offset_ms"].as_f64().unwrap();
    assert!((off - 3_600_000.0).abs() < 1_000.0, "{clock}");
    assert_eq!(clock["synchronized"], false, "{clock}");
    assert_eq!(clock["report_only"], true);
    assert!(
        clock["note"]
            .as_str()
            .unwrap()
            .contains("--clock-report-only"),
        "{clock}"
    );
    // The right server through a live settings change: synchronised.
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(&json!({"network": {"ntp_servers": ["192.0.2.1"]}})),
    );
    assert_eq!(code, 200, "{r}");
    wait_for("synchronised with the right server", || {
        d.admin("GET", "/status", None).1["clock"]["synchronized"] == true
    });
    // A server that does not answer: a bad setting is refused, a silent one is noted.
    let (code, _) = d.admin(
        "PATCH",
        "/settings",
        Some(&json!({"network": {"ntp_servers": ["not a host"]}})),
    );
    assert_eq!(code, 422);
}

/// Renewing at T1 (dnsmasq told to send T1 = 4 s, T2 = 8 s): a unicast REQUEST to the
/// server, its ACK keeps the same address; the lease stays bound.
#[test]
fn the_lease_is_renewed_with_its_server_at_t1() {
    let (b, peer) = boxed();
    let server = dnsmasq(
        &peer,
        "eth0",
        "192.0.2.50,192.0.2.60,255.255.255.0,2m",
        &["option:router,192.0.2.1", "option:T1,4", "option:T2,8"],
    );
    let d = Daemon::start(&b, "[[network.interfaces]]\nname = \"eth0\"\ndhcp = true\n");
    wait_for("a lease", || !global_v4(&b, "eth0").is_empty());
    let first = global_v4(&b, "eth0");
    wait_for("a second DHCPACK (the renewal)", || {
        server.file("log").matches("DHCPACK").count() >= 2
    });
    let log = server.file("log");
    // The renewal is a REQUEST from the leased address (unicast, ciaddr set), not a new
    // DISCOVER.
    let after_first_ack = &log[log.find("DHCPACK").unwrap()..];
    assert!(!after_first_ack.contains("DHCPDISCOVER"), "{log}");
    assert!(!after_first_ack.contains("DHCPNAK"), "{log}");
    assert_eq!(global_v4(&b, "eth0"), first);
    let (_, st) = d.admin("GET", "/status", None);
    let state = st["network"]["dhcp"]["eth0"]["state"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(state == "bound" || state == "renewing", "{st}");
    let expires = st["network"]["dhcp"]["eth0"]["lease"]["expires_in_secs"]
        .as_u64()
        .unwrap();
    assert!(expires > 100, "renewed: {st}");
}
