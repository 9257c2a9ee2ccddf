//! Split-horizon DNS: two client namespaces ("inside" 10.9.0.0/24, "outside"
//! 198.51.100.0/24) reach the daemon's namespace over veth pairs; each gets its own view,
//! names beyond the views are forwarded (inside only) to Knot DNS, and the abuse cases get
//! what they should.

use std::process::Stdio;

use crate::harness::{Daemon, Netns, Peer, knot};

const PORT: u16 = 5353;
const UPSTREAM: u16 = 5354;

struct Net {
    server: Netns,
    inside: Netns,
    outside: Netns,
}

fn net() -> Net {
    let server = Netns::new("srv");
    let inside = Netns::new("in");
    let outside = Netns::new("out");
    server.veth("to-in", "10.9.0.1/24", &inside, "eth0", "10.9.0.2/24");
    server.veth(
        "to-out",
        "198.51.100.1/24",
        &outside,
        "eth0",
        "198.51.100.2/24",
    );
    Net {
        server,
        inside,
        outside,
    }
}

fn settings(forwarder: u16) -> String {
    format!(
        r#"[dns]
listen = "0.0.0.0:{PORT}"
forwarders = ["127.0.0.1:{forwarder}"]
[[dns.views]]
name = "inside"
networks = ["10.0.0.0/8"]
records = ["mail.example.org. 300 IN A 10.0.0.5", "webmail.example.org. 300 IN CNAME mail.example.org."]
[[dns.views]]
name = "outside"
networks = ["0.0.0.0/0", "::/0"]
records = ["mail.example.org. 300 IN A 203.0.113.5"]
"#
    )
}

fn short(ns: &Netns, server: &str, args: &[&str]) -> String {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    ns.dig(server, PORT, &a).trim().to_string()
}

fn status(ns: &Netns, server: &str, args: &[&str]) -> String {
    let out = ns.dig(server, PORT, args);
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in {out}"))
        .to_string()
}

#[test]
fn each_client_network_gets_its_view_and_only_inside_is_forwarded() {
    let n = net();
    let upstream: Peer = knot(&n.server, UPSTREAM, "upstream.test", &["www A 192.0.2.80"]);
    let d = Daemon::start(&n.server, &settings(UPSTREAM));
    assert!(
        d.listening
            .iter()
            .any(|(n, a)| n == "dns" && a.ends_with(":5353")),
        "{:?}",
        d.listening
    );
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.5"
    );
    assert_eq!(
        short(&n.outside, "198.51.100.1", &["mail.example.org", "A"]),
        "203.0.113.5"
    );
    // Over TCP too, and a CNAME chased inside the view.
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["+tcp", "webmail.example.org", "A"]),
        "mail.example.org.\n10.0.0.5"
    );
    // A name of the view without the asked type: no data (not forwarded, not the other view).
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "AAAA"]),
        ""
    );
    assert_eq!(
        status(&n.inside, "10.9.0.1", &["mail.example.org", "AAAA"]),
        "NOERROR"
    );
    // Forwarded to Knot for the inside only; then from the cache, with Knot gone.
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["www.upstream.test", "A"]),
        "192.0.2.80"
    );
    assert_eq!(
        status(&n.inside, "10.9.0.1", &["nothing.upstream.test", "A"]),
        "NXDOMAIN"
    );
    drop(upstream);
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["+tcp", "WWW.upstream.test", "A"]),
        "192.0.2.80"
    );
    assert_eq!(
        status(&n.inside, "10.9.0.1", &["nothing.upstream.test", "A"]),
        "NXDOMAIN",
        "negative answers are cached too (the SOA's minimum)"
    );
    assert_eq!(
        status(&n.inside, "10.9.0.1", &["other.upstream.test", "A"]),
        "SERVFAIL",
        "no forwarder answers"
    );
    assert_eq!(
        status(&n.outside, "198.51.100.1", &["www.upstream.test", "A"]),
        "REFUSED",
        "no open recursion for the outside"
    );
    // Amplification: ANY and zone transfers.
    assert_eq!(
        status(&n.outside, "198.51.100.1", &["mail.example.org", "ANY"]),
        "NOTIMP"
    );
    let axfr = n.inside.dig("10.9.0.1", PORT, &["example.org", "AXFR"]);
    assert!(
        axfr.contains("Transfer failed") || axfr.contains("REFUSED"),
        "{axfr}"
    );
    let ixfr = n
        .outside
        .dig("198.51.100.1", PORT, &["+tcp", "example.org", "IXFR=1"]);
    assert!(
        ixfr.contains("Transfer failed") || ixfr.contains("REFUSED"),
        "{ixfr}"
    );
    // Still answering after all that.
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.5"
    );
}

/// A forwarder that first sends forged answers (wrong ID, then the right ID for another
/// question carrying a record for a name of the views), then the real one: only the real
/// one reaches the client and the cache.
const FORGER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\0"
def answer(id, qname, owner, ip):
    q = name(qname) + struct.pack(">HH", 1, 1)
    rr = name(owner) + struct.pack(">HHIH", 1, 1, 3600, 4) + socket.inet_aton(ip)
    return struct.pack(">HHHHHH", id, 0x8180, 1, 1, 0, 0) + q + rr
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    id = struct.unpack(">H", data[:2])[0]
    s.sendto(answer(id ^ 0x5a5a, "www.upstream.test", "www.upstream.test", "6.6.6.6"), peer)
    s.sendto(answer(id, "mail.example.org", "mail.example.org", "6.6.6.6"), peer)
    s.sendto(answer(id, "www.upstream.test", "www.upstream.test", "192.0.2.99")[:-3], peer)
    s.sendto(answer(id, "www.upstream.test", "www.upstream.test", "192.0.2.99"), peer)
"#;

#[test]
fn forged_forwarder_answers_are_ignored() {
    crate::harness::require_tool("python3", "python3");
    let n = net();
    let dir = tempfile::tempdir().unwrap();
    let mut child = n
        .server
        .cmd("python3")
        .args(["-c", FORGER, &UPSTREAM.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "ready");
    let _forger = Peer { child, dir };
    let d = Daemon::start(&n.server, &settings(UPSTREAM));
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["www.upstream.test", "A"]),
        "192.0.2.99"
    );
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.5"
    );
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["www.upstream.test", "A"]),
        "192.0.2.99"
    );
    drop(d);
}

#[test]
fn malformed_and_oversized_datagrams_get_formerr_or_nothing() {
    crate::harness::require_tool("python3", "python3");
    let n = net();
    let d = Daemon::start(&n.server, &settings(UPSTREAM));
    // From the outside client: garbage, a header claiming 65535 questions, a 4000-byte
    // datagram, a response; then a real question still gets its answer.
    let script = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
dst = ("198.51.100.1", 5353)
def ask(b):
    s.sendto(b, dst)
    try:
        return s.recvfrom(65535)[0]
    except socket.timeout:
        return None
r = ask(b"\x01")
assert r is None, r
r = ask(struct.pack(">HHHHHH", 7, 0x0100, 65535, 0, 0, 0) + b"\0" * 30)
assert r is not None and r[:2] == b"\x00\x07" and r[3] & 0x0f == 1, r
r = ask(struct.pack(">HHHHHH", 8, 0x0100, 1, 0, 0, 0) + b"\x3f" + b"a" * 4000)
assert r is not None and r[3] & 0x0f == 1, r
r = ask(struct.pack(">HHHHHH", 9, 0x8180, 1, 0, 0, 0) + b"\0\0\1\0\1")
assert r is None, r
# 80 idle TCP connections (more than the 64 served): UDP is still answered.
conns = [socket.create_connection(dst, timeout=2) for _ in range(80)]
q = struct.pack(">HHHHHH", 10, 0x0100, 1, 0, 0, 0) + b"\4mail\7example\3org\0" + struct.pack(">HH", 1, 1)
r = ask(q)
assert r is not None and r[:2] == b"\x00\x0a" and r[3] & 0x0f == 0, r
for c in conns:
    c.close()
print("ok")
"#;
    let out = n
        .outside
        .cmd("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        short(&n.outside, "198.51.100.1", &["mail.example.org", "A"]),
        "203.0.113.5"
    );
    assert_eq!(
        short(
            &n.outside,
            "198.51.100.1",
            &["+tcp", "mail.example.org", "A"]
        ),
        "203.0.113.5",
        "TCP again once the idle connections are gone"
    );
    drop(d);
}

/// `/etc/netns/NAME/resolv.conf`, which `ip netns exec` bind-mounts over `/etc/resolv.conf`
/// for what runs in the namespace; removed on drop.
struct NetnsResolvConf(std::path::PathBuf);

impl NetnsResolvConf {
    fn new(ns: &Netns) -> NetnsResolvConf {
        let dir = std::path::PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "").unwrap();
        NetnsResolvConf(dir)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.0.join("resolv.conf")).unwrap_or_default()
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The box's own lookups: the daemon writes its resolver file pointing at itself, and its
/// own questions (from loopback) get `own_view`, here the inside view: the NTP server's name
/// resolves to the inside address (where chrony answers), not the outside one.
#[test]
fn the_box_resolves_its_own_names_in_its_own_view() {
    let n = net();
    let resolv = NetnsResolvConf::new(&n.server);
    let _time = crate::harness::chrony(&n.inside, "10.9.0.2", 123, None);
    let d = Daemon::start(
        &n.server,
        r#"[network]
ntp_servers = ["time.example.org"]
[dns]
listen = "0.0.0.0:53"
own_view = "inside"
resolv_conf = "/etc/resolv.conf"
[[dns.views]]
name = "inside"
networks = ["10.0.0.0/8"]
records = ["time.example.org. 300 IN A 10.9.0.2"]
[[dns.views]]
name = "outside"
networks = ["0.0.0.0/0", "::/0"]
records = ["time.example.org. 300 IN A 198.51.100.2"]
"#,
    );
    assert_eq!(
        resolv.text(),
        "# Written by sealgated ([dns] resolv_conf).\nnameserver 127.0.0.1\n"
    );
    // From the box itself: the inside view; from outside: the outside one.
    assert_eq!(
        n.server
            .dig("127.0.0.1", 53, &["+short", "time.example.org", "A"])
            .trim(),
        "10.9.0.2"
    );
    assert_eq!(
        n.outside
            .dig("198.51.100.1", 53, &["+short", "time.example.org", "A"])
            .trim(),
        "198.51.100.2"
    );
    // The daemon's own lookup of its NTP server went through its resolver to the inside view.
    crate::harness::wait_for("the clock synchronised through the own view", || {
        d.admin("GET", "/status", None).1["clock"]["synchronized"] == true
    });
    let (_, st) = d.admin("GET", "/status", None);
    assert_eq!(st["clock"]["source"], "10.9.0.2:123", "{st}");
}

/// Views change without a restart (`PATCH /settings`); a bad record is refused and the old
/// answers stay; `listen` waits for a restart.
#[test]
fn a_views_change_is_live_and_a_bad_one_changes_nothing() {
    let n = net();
    let d = Daemon::start(&n.server, &settings(UPSTREAM));
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.5"
    );
    let (_, s) = d.admin("GET", "/settings", None);
    let mut views = s["settings"]["dns"]["views"].clone();
    views[0]["records"] = serde_json::json!(["mail.example.org. 60 IN A 10.0.0.6"]);
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(&serde_json::json!({"dns": {"views": views}})),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["outcome"]["restart_required"], false, "{r}");
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.6"
    );
    assert_eq!(
        short(&n.outside, "198.51.100.1", &["mail.example.org", "A"]),
        "203.0.113.5"
    );
    views[0]["records"] = serde_json::json!(["mail.example.org. 60 IN A not-an-address"]);
    let (code, p) = d.admin(
        "PATCH",
        "/settings",
        Some(&serde_json::json!({"dns": {"views": views}})),
    );
    assert_eq!(code, 422, "{p}");
    assert_eq!(
        short(&n.inside, "10.9.0.1", &["mail.example.org", "A"]),
        "10.0.0.6"
    );
    // The box's own view, set live (the field is there while unset: null).
    assert_eq!(
        short(&n.server, "127.0.0.1", &["mail.example.org", "A"]),
        "203.0.113.5"
    );
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(&serde_json::json!({"dns": {"own_view": "inside"}})),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        short(&n.server, "127.0.0.1", &["mail.example.org", "A"]),
        "10.0.0.6"
    );
    let (code, p) = d.admin(
        "PATCH",
        "/settings",
        Some(&serde_json::json!({"dns": {"own_view": "nowhere"}})),
    );
    assert_eq!(code, 422, "{p}");
    let (code, r) = d.admin(
        "PATCH",
        "/settings",
        Some(&serde_json::json!({"dns": {"listen": "0.0.0.0:5355"}})),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["outcome"]["restart_required"], true, "{r}");
}
