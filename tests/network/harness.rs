//! Network namespaces (deleted on drop), veth pairs between them, a Knot DNS upstream, and
//! the real `sealgated` started inside a namespace (killed on drop).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Fails with a message naming the Debian package if a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is missing: install the Debian package `{package}` (cargo xtask test installs it)"
    );
}

/// Runs a command, failing the test with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop (with everything in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new(role: &str) -> Netns {
        require_tool("ip", "iproute2");
        let name = format!(
            "sg{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip ARGS` inside, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        run(self.cmd("ip").args(args))
    }

    /// `ip -j ARGS` inside, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = run(self.cmd("ip").arg("-j").args(args));
        serde_json::from_slice(&out.stdout).expect("ip -j output")
    }

    /// A veth pair: `here` in this namespace with `addr_here`, `there` in `other` with
    /// `addr_there` (addresses with prefix), both up.
    pub fn veth(&self, here: &str, addr_here: &str, other: &Netns, there: &str, addr_there: &str) {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        self.ip(&["addr", "add", addr_here, "dev", here]);
        self.ip(&["link", "set", here, "up"]);
        other.ip(&["addr", "add", addr_there, "dev", there]);
        other.ip(&["link", "set", there, "up"]);
    }

    /// `dig` from inside: the answer section's values (`+short`), or the status on failure.
    pub fn dig(&self, server: &str, port: u16, args: &[&str]) -> String {
        require_tool("dig", "dnsutils");
        let out = self
            .cmd("dig")
            .args([&format!("@{server}"), "-p", &port.to_string()])
            .args(["+tries=1", "+time=3"])
            .args(args)
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A process killed on drop.
pub struct Peer {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Knot DNS in `ns` on `127.0.0.1:port`, authoritative for `zone` with `records` (zone-file
/// lines), polled until it answers.
pub fn knot(ns: &Netns, port: u16, zone: &str, records: &[&str]) -> Peer {
    require_tool("knotd", "knot");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let mut z = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns.{zone}. admin.{zone}. 1 3600 900 86400 60\n@ NS ns.{zone}.\nns A 127.0.0.1\n"
    );
    for r in records {
        z.push_str(r);
        z.push('\n');
    }
    std::fs::write(dir.path().join("zone"), z).expect("zone");
    std::fs::write(
        dir.path().join("knot.conf"),
        format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\n  user: root:root\n\
             database:\n  storage: {d}\n\
             log:\n  - target: stderr\n    any: warning\n\
             zone:\n  - domain: {zone}\n    file: {d}/zone\n"
        ),
    )
    .expect("knot.conf");
    let child = ns
        .cmd("knotd")
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).expect("log"),
        ))
        .spawn()
        .expect("knotd");
    let peer = Peer { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ns
            .dig("127.0.0.1", port, &["+short", &format!("ns.{zone}"), "A"])
            .contains("127.0.0.1")
        {
            return peer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "knotd did not answer: {}",
        std::fs::read_to_string(peer.dir.path().join("stderr.log")).unwrap_or_default()
    );
}

/// `sealgated` running inside a namespace.
pub struct Daemon {
    pub child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub admin: String,
    pub listening: Vec<(String, String)>,
    /// The console up to `ready`.
    pub start: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `sealgated` in `ns` with `settings` (docking and admin on loopback, port 0).
    pub fn start(ns: &Netns, settings: &str) -> Daemon {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[docking]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\n{settings}",
            data_dir.path().join("admin.sock").display()
        );
        std::fs::write(data_dir.path().join("settings.toml"), text).expect("settings");
        // A UTS namespace of its own (the hostname it sets is not the host's), and the clock
        // measured, never set (the host's clock is shared).
        let mut child = ns
            .cmd("unshare")
            .arg("--uts")
            .arg(env!("CARGO_BIN_EXE_sealgated"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--danger-software-sealer")
            .arg("--clock-report-only")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(data_dir.path().join("stderr.log")).expect("log"),
            ))
            .spawn()
            .expect("start sealgated");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child: Some(child),
            data_dir,
            admin: String::new(),
            listening: Vec::new(),
            start: Vec::new(),
            lines: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut console = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = d.lines.recv_timeout(left) else {
                panic!(
                    "sealgated did not become ready; console: {console:?}; stderr: {}",
                    d.stderr()
                );
            };
            console.push(line.clone());
            let Some(rest) = line.strip_prefix("sealgated: ") else {
                continue;
            };
            if let Some(l) = rest.strip_prefix("listening ") {
                let (name, addr) = l.split_once(' ').expect("listening NAME ADDR");
                if name == "admin" {
                    d.admin = addr.to_string();
                }
                d.listening.push((name.to_string(), addr.to_string()));
            } else if rest == "ready" {
                d.start = console;
                return d;
            }
        }
    }

    /// Console lines so far (after `ready`: those that came since).
    pub fn console(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// An admin API call as root on the local socket: status and JSON body.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        require_tool("curl", "curl");
        let mut c = Command::new("curl");
        c.args(["-sS", "-X", method, "-w", "\n%{http_code}", "--unix-socket"])
            .arg(self.path("admin.sock"))
            .arg(format!("http://localhost/api/v1/admin{path}"));
        if let Some(b) = body {
            c.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &b.to_string(),
            ]);
        }
        let out = run(&mut c);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (
            code.trim().parse().expect("status"),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The hostname in the daemon's UTS namespace.
    pub fn hostname(&self) -> String {
        require_tool("nsenter", "util-linux");
        let pid = self.child.as_ref().expect("running").id().to_string();
        let out = run(Command::new("nsenter").args(["-t", &pid, "-u", "hostname"]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The daemon's log (stderr).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn data(&self) -> PathBuf {
        self.data_dir.path().to_path_buf()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        Path::new(self.data_dir.path()).join(name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to 15 s for `ok`, failing with `what`.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// dnsmasq as the DHCP server of `dev` in `ns` (DNS off), leasing from `range` with `options`
/// (`--dhcp-option` values); its lease file is `leases` in its folder.
pub fn dnsmasq(ns: &Netns, dev: &str, range: &str, options: &[&str]) -> Peer {
    require_tool("dnsmasq", "dnsmasq-base");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = ns.cmd("dnsmasq");
    c.args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args([
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--log-dhcp",
        ])
        // No ICMP check of an address before offering it (it delays each OFFER by 3 s).
        .arg("--no-ping")
        .arg(format!("--interface={dev}"))
        .arg(format!("--dhcp-range={range}"))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("leases").display()
        ))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .arg(format!(
            "--log-facility={}",
            dir.path().join("log").display()
        ));
    for o in options {
        c.arg(format!("--dhcp-option={o}"));
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).expect("log"),
        ))
        .spawn()
        .expect("dnsmasq");
    let peer = Peer { child, dir };
    wait_for("dnsmasq's pid file", || {
        peer.dir.path().join("pid").exists()
    });
    peer
}

impl Peer {
    /// A file in the peer's folder (empty if missing).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// chronyd in `ns` serving its clock (local stratum 8) on `addr` port `port`, never adjusting
/// any clock (`-x`); with `faketime` (a libfaketime offset such as `+1h`) its clock is off by
/// that much. Polled with `chronyc`-free readiness: the pid file.
pub fn chrony(ns: &Netns, addr: &str, port: u16, faketime: Option<&str>) -> Peer {
    require_tool("chronyd", "chrony");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("chrony.conf"),
        format!(
            "local stratum 8\nallow all\nport {port}\nbindaddress {addr}\ncmdport 0\n\
             pidfile {d}/pid\ndriftfile {d}/drift\n"
        ),
    )
    .expect("chrony.conf");
    let mut c = ns.cmd("chronyd");
    if let Some(f) = faketime {
        // The library itself (the `faketime` wrapper forks: killing it would leave chronyd).
        let lib = std::fs::read_dir("/usr/lib")
            .expect("/usr/lib")
            .flatten()
            .map(|d| d.path().join("faketime/libfaketime.so.1"))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("libfaketime is missing: install the Debian package `faketime`")
            });
        c.env("LD_PRELOAD", lib).env("FAKETIME", f);
    }
    let child = c
        .args(["-d", "-x", "-u", "root", "-f"])
        .arg(dir.path().join("chrony.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).expect("log"),
        ))
        .spawn()
        .expect("chronyd");
    let peer = Peer { child, dir };
    wait_for("chronyd's pid file", || {
        peer.dir.path().join("pid").exists()
    });
    peer
}
