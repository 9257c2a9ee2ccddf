//! The web UI's network page against a daemon that manages the network of its namespace
//! (`eth0`, a veth to a peer namespace): Debian's headless Chromium (Playwright for Python)
//! runs in the same namespace (`webui_countdown.py`). A change that removes an address shows
//! the confirm-or-revert countdown, counting down; *Keep this change* keeps it (the kernel has
//! the new address, nothing waits); the next such change is left alone, the page says the
//! time ran out and shows the previous address, which the kernel has again.
//!
//! Peers: Debian `chromium`, `iproute2`, `openssl`; PyPI `playwright`.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Daemon, Netns, require_tool, run};

const SETTINGS: &str = r#"[network]
confirm_secs = 30
[[network.interfaces]]
name = "eth0"
addresses = ["192.0.2.10/24"]
mtu = 1400
"#;

#[test]
fn webui_network_change_waits_for_confirmation_and_runs_out() {
    require_tool("chromium", "chromium");
    require_tool("openssl", "openssl");
    let has_playwright = Command::new("python3")
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_playwright,
        "the Python module playwright is missing (PyPI playwright; cargo xtask test installs it)"
    );
    let b = Netns::new("webui");
    let peer = Netns::new("webpeer");
    b.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    peer.ip(&["link", "set", "eth0", "up"]);
    let d = Daemon::start(&b, SETTINGS);
    let setup = d
        .start
        .iter()
        .find(|l| l.contains("setup token"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("setup token on the console")
        .to_string();
    let spki = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
        d.path("tls/box.crt").display()
    )));
    let chromium = run(Command::new("sh").args(["-c", "command -v chromium"]));
    let script = d.path("webui_countdown.py");
    std::fs::write(&script, include_bytes!("webui_countdown.py")).expect("script");
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shots = tmp.parent().unwrap_or(&tmp).join("webui-screenshots");
    let out = b
        .cmd("python3")
        .arg(&script)
        .env("BASE", format!("https://{}", d.admin))
        .env("SETUP", &setup)
        .env("SPKI", String::from_utf8_lossy(&spki.stdout).trim())
        .env("CHROMIUM", String::from_utf8_lossy(&chromium.stdout).trim())
        .env("SHOTS", &shots)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{}\ndaemon: {}",
        String::from_utf8_lossy(&out.stderr),
        d.stderr()
    );
    assert!(stdout.contains("RESULT "), "{stdout}");
    // The kernel agrees with what the page showed last: the kept address, nothing waiting.
    let v = b.ip_json(&["addr", "show", "dev", "eth0"]);
    let addrs: Vec<String> = v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| {
            format!(
                "{}/{}",
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            )
        })
        .collect();
    assert_eq!(addrs, ["192.0.2.20/24"], "{v}");
    std::thread::sleep(Duration::from_millis(100));
    let (code, net) = d.admin("GET", "/network", None);
    assert_eq!(code, 200);
    assert!(net["confirm_within_secs"].is_null(), "{net}");
}
