//! The network page in headless Chromium (`webui_network_browser.py`) against a daemon that
//! manages no network (no `[[network.interfaces]]`, no routes: `network::start` changes
//! nothing and a reconcile of such settings returns before touching netlink): the kernel's
//! links, addresses and routes are shown read from netlink, changes that cannot be applied
//! (a malformed address or route, a link the kernel does not have) are refused and shown
//! with nothing changed, DNS views are added and removed, a read-only account sees no forms.
//! The host's addresses and routes are compared before and after: the test must not change
//! them. (The confirm-or-revert countdown needs a change that removes an address: that is
//! the network namespace tests' ground, `tests/network`.) Screenshots:
//! `target/webui-screenshots/network*.png`.
//!
//! Peers: Debian `chromium`, `iproute2`; PyPI `playwright`; npm `axe-core`.

use std::process::Command;

use crate::harness::{Daemon, require_python_module, require_tool, run, write};

/// The host's addresses and routes, as `ip -j` prints them.
fn host_network() -> (serde_json::Value, serde_json::Value) {
    require_tool("ip", "iproute2");
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&run(Command::new("ip").args(args)).stdout).expect("ip -j")
    };
    (json(&["-j", "address"]), json(&["-j", "route"]))
}

#[test]
fn webui_network_page_shows_the_kernel_and_changes_nothing_it_cannot_apply() {
    require_tool("chromium", "chromium");
    require_python_module("playwright", "playwright");
    let browser = crate::webui::chromium();
    let axe = crate::webui::axe_core();
    let before = host_network();
    let data = tempfile::tempdir().expect("tmp");
    let d = Daemon::start(data.path(), "");
    let setup = d.setup_token.clone().expect("setup token on the console");
    let script = write(
        data.path(),
        "webui_network_browser.py",
        include_bytes!("webui_network_browser.py"),
    );
    let out = Command::new("python3")
        .arg(&script)
        .env("BASE", d.admin_url(""))
        .env("SETUP", &setup)
        .env("SPKI", crate::webui::spki_pin(&d.ca_file()))
        .env("SHOTS", crate::webui::screenshots())
        .env("CHROMIUM", &browser)
        .env("AXE", &axe)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RESULT "), "{stdout}");
    drop(d);
    // Addresses and routes of the host as they were (link state counters may move).
    let after = host_network();
    let addrs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| {
                let name = l["ifname"].as_str().unwrap_or_default().to_string();
                l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(move |a| format!("{name} {}/{}", a["local"], a["prefixlen"]))
            })
            .collect()
    };
    assert_eq!(addrs(&before.0), addrs(&after.0), "host addresses changed");
    assert_eq!(before.1, after.1, "host routes changed");
}
