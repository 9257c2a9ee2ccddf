//! `cargo xtask bench dns`: answers per second of the split-horizon DNS server against Knot
//! DNS serving the same zone, in the same run, both measured with `dnsperf` (Debian).
//!
//! The zone: `example.org` with the names a box serves (mail, web UI, directory; A, AAAA,
//! MX, TXT, a CNAME). The box answers them from one view (`0.0.0.0/0`); Knot is authoritative
//! for the same records. The queries cycle over those names and types. Printed: each one's
//! queries per second, average latency, and the box's rate over Knot's (goal: at least 0.5).
//! On two or more CPUs the server measured is pinned to CPU 0 and `dnsperf` to CPU 1.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RECORDS: [&str; 7] = [
    "mail.example.org. 300 IN A 10.0.0.5",
    "mail.example.org. 300 IN AAAA 2001:db8::5",
    "example.org. 300 IN MX 10 mail.example.org.",
    "example.org. 300 IN TXT \"v=spf1 mx -all\"",
    "webmail.example.org. 300 IN CNAME mail.example.org.",
    "ldap.example.org. 300 IN A 10.0.0.6",
    "admin.example.org. 300 IN A 10.0.0.7",
];

const QUERIES: &str = "mail.example.org A\nmail.example.org AAAA\nexample.org MX\nexample.org TXT\nwebmail.example.org A\nldap.example.org A\nadmin.example.org A\n";

fn require(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{tool}` is missing: install the Debian package `{package}` (cargo xtask bench dns installs it)"
    );
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn knot(dir: &std::path::Path, port: u16, cpu: Option<usize>) -> Killed {
    let d = dir.display();
    let mut zone = String::from(
        "$ORIGIN example.org.\n$TTL 300\n@ SOA ns.example.org. admin.example.org. 1 3600 900 86400 60\n@ NS ns.example.org.\nns A 10.0.0.1\n",
    );
    for r in RECORDS {
        zone.push_str(r);
        zone.push('\n');
    }
    std::fs::write(dir.join("zone"), zone).unwrap();
    std::fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  user: root:root\n\
             database:\n  storage: {d}\n\
             log:\n  - target: stderr\n    any: error\n\
             zone:\n  - domain: example.org\n    file: {d}/zone\n"
        ),
    )
    .unwrap();
    let child = common::pinned("knotd", cpu)
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

/// Waits until `port` answers a query for mail.example.org.
fn wait_answering(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .args(["mail.example.org", "A"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("10.0.0.5") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing answers on port {port}");
}

/// `dnsperf` for `secs` seconds: (queries per second, average latency in ms, lost queries).
fn dnsperf(port: u16, queries: &std::path::Path, secs: u32, cpu: Option<usize>) -> (f64, f64, u64) {
    let out = common::pinned("dnsperf", cpu)
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", &secs.to_string(), "-c", "4", "-q", "200", "-T", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dnsperf failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let num = |label: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in dnsperf's output:\n{text}"))
    };
    (
        num("Queries per second:"),
        num("Average Latency (s):") * 1000.0,
        num("Queries lost:") as u64,
    )
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then
    // (`cargo xtask bench dns` measures, after installing dnsperf and Knot).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    common::one_line_panics("bench dns");
    require("dnsperf", "dnsperf");
    require("knotd", "knot");
    require("dig", "dnsutils");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (server_cpu, load_cpu) = if cpus >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries");
    std::fs::write(&queries, QUERIES).unwrap();
    let secs = 10;

    let knot_dir = dir.path().join("knot");
    std::fs::create_dir(&knot_dir).unwrap();
    let knot_port = free_port();
    let k = knot(&knot_dir, knot_port, server_cpu);
    wait_answering(knot_port);
    let knot = dnsperf(knot_port, &queries, secs, load_cpu);
    drop(k);

    let data = dir.path().join("box");
    std::fs::create_dir(&data).unwrap();
    let records: Vec<String> = RECORDS.iter().map(|r| format!("{r:?}")).collect();
    let box_port = free_port();
    std::fs::write(
        data.join("settings.toml"),
        format!(
            "[docking]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
             [dns]\nlisten = \"127.0.0.1:{box_port}\"\n\
             [[dns.views]]\nname = \"all\"\nnetworks = [\"0.0.0.0/0\", \"::/0\"]\nrecords = [{}]\n",
            records.join(", ")
        ),
    )
    .unwrap();
    let (child, listeners) = common::start_daemon(&data, server_cpu);
    let _daemon = Killed(child);
    assert!(listeners.iter().any(|(n, _)| n == "dns"), "{listeners:?}");
    wait_answering(box_port);
    let boxed = dnsperf(box_port, &queries, secs, load_cpu);

    println!("dns: {secs} s of dnsperf (4 clients, 200 outstanding) per server, {cpus} CPUs");
    println!(
        "  knot: {:>10.0} answers/s, {:.3} ms average, {} lost",
        knot.0, knot.1, knot.2
    );
    println!(
        "  box:  {:>10.0} answers/s, {:.3} ms average, {} lost",
        boxed.0, boxed.1, boxed.2
    );
    println!("  box / knot: {:.2} (goal: at least 0.5)", boxed.0 / knot.0);
}
