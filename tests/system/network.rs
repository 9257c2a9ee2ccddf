//! The box's network, owned by the daemon, set as the web UI sets it: a fresh box gets its
//! address from the daemon's own DHCP client (no udhcpc at boot); then `PATCH
//! /api/v1/admin/settings` makes eth0 static (QEMU's user network: 10.0.2.15/24, gateway
//! 10.0.2.2) with a second address, and after a reboot (a fresh QEMU) the static settings
//! are in force: no DHCP client, both addresses up, and the forwarded admin port answers.
//!
//! Peers: the system tests' (QEMU, OVMF, swtpm), `curl`.

use std::time::Duration;

use super::{
    ADMIN_PASSWORD, Appliance, FIRST_READY, READY, admin_call, admin_login, line_value, machine,
    reboot, status, wait_https, wait_ready,
};

/// eth0's addresses in `GET /network`.
fn eth0_addresses(v: &serde_json::Value) -> Vec<String> {
    v["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == "eth0")
        .flat_map(|l| l["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[test]
fn static_address_set_through_the_admin_api_is_kept_across_a_reboot() {
    let _m = machine();
    let bx = Appliance::new("net-static");
    let jar = bx.keep.with_extension("cookies");
    let _ = std::fs::remove_file(&jar);

    let mut vm = bx.boot();
    let first = wait_ready(&mut vm, FIRST_READY);
    assert!(
        first.contains("sealgate: network eth0: DHCP (applied by sealgated)"),
        "{first}"
    );
    let token = line_value(&first, "POST /api/v1/admin/setup on the admin port):")
        .expect("setup token on the console");
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
    let claim =
        format!(r#"{{"setup_token":"{token}","username":"admin","password":"{ADMIN_PASSWORD}"}}"#);
    let (code, body) = admin_call(&bx, &jar, "POST", "/setup", Some(&claim), None);
    assert_eq!(code, 201, "claim: {body}");
    let csrf = admin_login(&bx, &jar);

    // The address QEMU forwards to came from the daemon's DHCP client.
    let (code, body) = admin_call(&bx, &jar, "GET", "/network", None, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("network JSON");
    assert_eq!(
        v["dhcp"]["eth0"]["lease"]["address"], "10.0.2.15/24",
        "the daemon's lease: {v}"
    );

    // Static, as the web UI's network page sends it.
    let patch = r#"{"network":{"interfaces":[{"name":"eth0","addresses":["10.0.2.15/24","10.0.2.16/24"]}],"routes":[{"to":"0.0.0.0/0","via":"10.0.2.2"}]}}"#;
    let (code, body) = admin_call(&bx, &jar, "PATCH", "/settings", Some(patch), Some(&csrf));
    assert_eq!(code, 200, "static network: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("settings JSON");
    if v["outcome"]["confirm_within_secs"].is_u64() {
        let (code, body) = admin_call(&bx, &jar, "POST", "/network/confirm", None, Some(&csrf));
        assert_eq!(code, 200, "confirm: {body}");
    }
    let (code, body) = admin_call(&bx, &jar, "GET", "/network", None, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("network JSON");
    let addrs = eth0_addresses(&v);
    for a in ["10.0.2.15/24", "10.0.2.16/24"] {
        assert!(addrs.iter().any(|x| x == a), "{a} applied at once: {v}");
    }
    reboot(vm);

    // Boot 2: the static settings are in force, the daemon's DHCP client is not started.
    let mut vm = bx.boot();
    let second = wait_ready(&mut vm, READY);
    assert!(
        second.contains("sealgate: network eth0: set through the admin API"),
        "{second}"
    );
    assert_eq!(
        wait_https(&bx.url("/api/v1/health"), Duration::from_secs(30)),
        200,
        "the forwarded port answers on the static address"
    );
    let _ = std::fs::remove_file(&jar);
    admin_login(&bx, &jar);
    let (code, body) = admin_call(&bx, &jar, "GET", "/network", None, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("network JSON");
    let addrs = eth0_addresses(&v);
    for a in ["10.0.2.15/24", "10.0.2.16/24"] {
        assert!(addrs.iter().any(|x| x == a), "{a} after the reboot: {v}");
    }
    assert!(
        v["dhcp"].as_object().is_none_or(|d| d.is_empty()),
        "no DHCP lease: {v}"
    );
    let routes = v["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        routes
            .iter()
            .any(|r| r["to"] == "0.0.0.0/0" && r["via"] == "10.0.2.2"),
        "the default route: {v}"
    );
    // The console's status page reads the same through the daemon's admin socket.
    let s = status(&mut vm);
    assert!(s.contains("Address:   eth0 10.0.2.16/24"), "{s}");
    assert!(s.contains("Network:   set through the admin API"), "{s}");
    let _ = std::fs::remove_file(&jar);
}
