//! DNS peers for the SMIMEA tests: Knot DNS (`knotd`) as the authoritative server of zones it
//! signs itself (keys made at start by its automatic DNSSEC policy), and unbound as the
//! validating resolver, given the signed zone's DS as its trust anchor. A missing program
//! fails the test with the Debian package named.

#![allow(dead_code, clippy::panic, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peers::{Peer, free_port};

fn need(program: &str, package: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: install the Debian package `{package}`"
    );
}

/// One zone: its name, whether Knot signs it, its records (zone-file lines under `$ORIGIN`).
pub struct Zone<'a> {
    pub name: &'a str,
    pub signed: bool,
    pub records: Vec<String>,
}

/// `knotd` serving `zones` from `dir` on a free port (UDP and TCP); (peer, port).
pub fn knot(dir: &Path, zones: &[Zone<'_>]) -> (Peer, u16) {
    need("/usr/sbin/knotd", "knot");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let port = free_port();
    let mut conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {d}\n    pidfile: {d}/knot.pid\n\
         log:\n  - target: stderr\n    any: warning\n\
         database:\n    storage: {d}/db\n\
         template:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n    journal-content: none\n\
         zone:\n",
        d = dir.display()
    );
    for z in zones {
        conf.push_str(&format!("  - domain: {}\n", z.name));
        if z.signed {
            conf.push_str("    dnssec-signing: on\n");
        }
        let mut text = format!(
            "$ORIGIN {n}.\n$TTL 300\n@ SOA ns.{n}. hostmaster.{n}. 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\n",
            n = z.name
        );
        for r in &z.records {
            text.push_str(r);
            text.push('\n');
        }
        std::fs::write(dir.join(format!("{}.zone", z.name)), text).unwrap();
    }
    let conf_file = dir.join("knot.conf");
    std::fs::write(&conf_file, conf).unwrap();
    let child = Command::new("/usr/sbin/knotd")
        .arg("-c")
        .arg(&conf_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run knotd ({e}): install the Debian package `knot`"));
    let peer = Peer::new(child);
    crate::peers::wait_for_port(port, "knotd");
    (peer, port)
}

/// The DS record (zone-file syntax) of a zone `knotd` (configured in `dir`) signs, once it
/// made its keys.
pub fn ds(dir: &Path, zone: &str) -> String {
    need("/usr/sbin/keymgr", "knot");
    let start = Instant::now();
    loop {
        let out = Command::new("/usr/sbin/keymgr")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .args([zone, "ds"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run keymgr ({e}): install the Debian package `knot`")
            });
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = text
            .lines()
            .find(|l| l.contains(" DS ") && l.contains(" 13 2 "))
        {
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "knotd made no keys for {zone}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// unbound validating with `anchors` (DS lines), the zones `stubs` served by the
/// authoritative server on `auth_port`; (peer, port).
pub fn unbound(dir: &Path, anchors: &[String], stubs: &[&str], auth_port: u16) -> (Peer, u16) {
    need("/usr/sbin/unbound", "unbound");
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let mut conf = format!(
        "server:\n    interface: 127.0.0.1\n    port: {port}\n    do-daemonize: no\n    username: \"\"\n\
         chroot: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    use-syslog: no\n\
         logfile: \"\"\n    verbosity: 0\n    do-not-query-localhost: no\n\
         module-config: \"validator iterator\"\n    local-zone: \"example.\" nodefault\n",
        d = dir.display()
    );
    for a in anchors {
        conf.push_str(&format!("    trust-anchor: \"{a}\"\n"));
    }
    for s in stubs {
        conf.push_str(&format!(
            "stub-zone:\n    name: \"{s}\"\n    stub-addr: 127.0.0.1@{auth_port}\n"
        ));
    }
    let conf_file = dir.join("unbound.conf");
    std::fs::write(&conf_file, conf).unwrap();
    let child = Command::new("/usr/sbin/unbound")
        .arg("-d")
        .arg("-c")
        .arg(&conf_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run unbound ({e}): install the Debian package `unbound`")
        });
    let peer = Peer::new(child);
    crate::peers::wait_for_port(port, "unbound");
    (peer, port)
}

/// A zone-file SMIMEA line for `address` (owner relative to its domain's zone `zone`).
pub fn smimea_line(address: &str, zone: &str, usage: u8, der: &[u8]) -> String {
    let name = sealgate_directory::publish::smimea_name(address).unwrap();
    let owner = name
        .strip_suffix(&format!(".{zone}."))
        .unwrap_or_else(|| panic!("{name} is not in {zone}"));
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    format!("{owner} SMIMEA {usage} 0 0 {hex}")
}
