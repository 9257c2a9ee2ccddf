//! `cargo xtask bench smtp`: SMTP throughput of the box signing and encrypting every message,
//! against Postfix merely relaying the same load, in the same run.
//!
//! Load: Postfix's `smtp-source` (20 sessions) sends 4 KiB and 100 KiB messages from
//! alice@example.org (a key in the vault: every message is signed) to bob@example.org (an
//! external certificate: every message is encrypted).
//!
//! - **box**: the release `sealgated`'s SMTP hand-off encrypt listener with `[docking] sign =
//!   "always"`: the same pipeline as submission after AUTH (the durable queue, sign and
//!   encrypt with the vault's keys, the outbound client). Submission itself needs AUTH, which
//!   `smtp-source` does not speak, and no product listener gets a setting that would let the
//!   benchmark in without it.
//! - **postfix**: a Postfix instance started by the benchmark (`tests/gateway/peers.rs`) that
//!   relays everything unchanged.
//!
//! Both relay to the same sink (a small SMTP server in this program that timestamps each
//! message's arrival); a proxy in front of each measures, per message, how long the client
//! waits for the `250` after its end of DATA. Printed: messages per second end to end (first
//! connection to the last message at the sink), p50/p99 of that wait, and the box's rate
//! over Postfix's. On two or more CPUs the system measured (the daemon, or Postfix's master
//! and its processes) is pinned to CPU 0 and the load generator, proxy and sink to CPU 1.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;
#[path = "../../../tests/docking/harness.rs"]
mod harness;
#[path = "../../../tests/gateway/peers.rs"]
mod peers;
#[path = "../../../tests/common/ports.rs"]
mod ports;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealgate_vault::{SoftwareSealer, Vault};

const SESSIONS: usize = 20;

fn run(cmd: &mut Command) -> Vec<u8> {
    harness::run(cmd).stdout
}

/// The sink: answers every command with 250 (354 to DATA), counts messages and keeps the
/// time the last one arrived.
struct Sink {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    last: Arc<Mutex<Instant>>,
}

fn sink() -> Sink {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(Instant::now()));
    let (c, t) = (count.clone(), last.clone());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (c, t) = (c.clone(), t.clone());
            std::thread::spawn(move || sink_session(s, &c, &t));
        }
    });
    Sink { addr, count, last }
}

fn sink_session(s: TcpStream, count: &AtomicUsize, last: &Mutex<Instant>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(b"220 sink ESMTP\r\n");
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        if in_data {
            if line == b".\r\n" {
                in_data = false;
                *last.lock().unwrap() = Instant::now();
                count.fetch_add(1, Ordering::SeqCst);
                let _ = w.write_all(b"250 2.0.0 ok\r\n");
            }
            continue;
        }
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        } else if cmd.starts_with("DATA") {
            in_data = true;
            b"354 go\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        if w.write_all(reply).is_err() {
            return;
        }
    }
}

/// A proxy to `upstream` recording, per message, the time from the client's CRLF "." CRLF to
/// the server's next final reply.
struct Proxy {
    addr: SocketAddr,
    waits: Arc<Mutex<Vec<Duration>>>,
}

fn proxy(upstream: SocketAddr) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let pending: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let p = pending.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&buf[..n]);
                    let ends = tail.windows(5).filter(|w| *w == b"\r\n.\r\n").count();
                    let keep = tail.len().saturating_sub(4);
                    tail.drain(..keep);
                    if ends > 0 {
                        let now = Instant::now();
                        p.lock().unwrap().extend(std::iter::repeat_n(now, ends));
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (s_in, mut c_out) = (server, client);
            let w = w.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s_in.try_clone().unwrap());
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let is_final = line.len() >= 4 && line[3] == b' ';
                    if is_final {
                        let mut p = pending.lock().unwrap();
                        if !p.is_empty() {
                            let t = p.remove(0);
                            w.lock().unwrap().push(t.elapsed());
                        }
                    }
                    if c_out.write_all(&line).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
                let _ = s_in.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    Proxy { addr, waits }
}

struct Row {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// The reason the box gave for the first message it held (`spool/held/ID.json`), if any.
fn first_held(held: &Path) -> Option<String> {
    let entry = std::fs::read_dir(held)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    Some(
        env["held_reason"]
            .as_str()
            .unwrap_or("no reason")
            .to_string(),
    )
}

/// Sends `n` messages of `size` bytes through `target` (behind a proxy) and waits for all of
/// them at the sink. `held`: the box's `spool/held`, where a message the box cannot process
/// waits for an administrator: the run stops at once with its reason instead of waiting for
/// messages that will never arrive.
fn load(
    target: SocketAddr,
    sink: &Sink,
    n: usize,
    size: usize,
    cpu: Option<usize>,
    held: Option<&Path>,
) -> Row {
    let p = proxy(target);
    let before = sink.count.load(Ordering::SeqCst);
    let started = Instant::now();
    run(common::pinned("smtp-source", cpu)
        .args(["-s", &SESSIONS.to_string(), "-m", &n.to_string()])
        .args(["-l", &size.to_string()])
        .args(["-f", "alice@example.org", "-t", "bob@example.org"])
        .args(["-M", "bench.test", "-S", "bench"])
        .arg(format!("127.0.0.1:{}", p.addr.port())));
    let deadline = Instant::now() + Duration::from_secs(600);
    while sink.count.load(Ordering::SeqCst) < before + n {
        if let Some(reason) = held.and_then(first_held) {
            panic!("the box held a message instead of relaying it: {reason}");
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            sink.count.load(Ordering::SeqCst) - before
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = sink.last.lock().unwrap().duration_since(started);
    let mut w = p.waits.lock().unwrap().clone();
    w.sort();
    let pct = |q: f64| {
        w.get(((w.len() as f64 * q) as usize).min(w.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Row {
        rate: n as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// A self-signed S/MIME certificate and key for `email`.
fn identity(dir: &Path, email: &str) -> (Vec<u8>, Vec<u8>) {
    let (k, c) = (
        dir.join(format!("{email}.key")),
        dir.join(format!("{email}.crt")),
    );
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5",
        ])
        .args(["-subj", &format!("/CN={email}")])
        .args(["-addext", &format!("subjectAltName=email:{email}")])
        .args(["-addext", "extendedKeyUsage=emailProtection"])
        // `req -x509` makes a CA certificate unless told otherwise, and the box never
        // encrypts to a CA certificate (every message would be held).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
        ])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c));
    (std::fs::read(k).unwrap(), std::fs::read(c).unwrap())
}

/// Starts the release daemon on `data` (pinned to `cpu` if given); its encrypt listener.
fn start_daemon(data: &Path, cpu: Option<usize>) -> (std::process::Child, SocketAddr) {
    let (child, listeners) = common::start_daemon(data, cpu);
    let addr = listeners
        .iter()
        .find(|(n, _)| n == "smtp-encrypt")
        .and_then(|(_, a)| a.parse().ok())
        .expect("the encrypt listener");
    (child, addr)
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    common::one_line_panics("bench smtp");
    harness::require_tool("smtp-source", "postfix");
    harness::require_tool("openssl", "openssl");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pinned = cpus >= 2
        && Command::new("sh")
            .args(["-c", "command -v taskset"])
            .output()
            .is_ok_and(|o| o.status.success());
    let (system_cpu, load_cpu) = if pinned {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = tmp.path();
    let (alice_key, alice_cert) = identity(d, "alice@example.org");
    let (_, bob_cert) = identity(d, "bob@example.org");
    let data = d.join("data");
    {
        let (vault, _) = Vault::init(&data, &mut SoftwareSealer::danger_new()).expect("vault");
        vault
            .import_pem(&alice_key, &alice_cert, None)
            .expect("import");
        let bob = sealgate_smime::cert::Certificate::parse_many(&bob_cert).expect("cert");
        vault.add_recipient_certificate(&bob[0]).expect("bob");
    }
    let sink = sink();
    std::fs::write(
        data.join("settings.toml"),
        format!(
            "[docking]\nlisten = \"127.0.0.1:0\"\nsign = \"always\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n[smtp]\nencrypt_listen = \"127.0.0.1:0\"\nnext_hop = \"{}\"\nnext_hop_tls = \"none\"\nmax_sessions = 100\nmax_sessions_per_address = 100\n",
            sink.addr
        ),
    )
    .expect("settings");
    let (mut daemon, box_addr) = start_daemon(&data, system_cpu);
    let held = data.join("spool").join("held");
    let postfix = peers::Postfix::start_relay(d, sink.addr, system_cpu);
    let postfix_addr = SocketAddr::from(([127, 0, 0, 1], postfix.relay));

    println!(
        "smtp benchmark: {cpus} CPUs{}, smtp-source {SESSIONS} sessions; box: sign (RSA-2048) + encrypt (AES-256-CBC) via the hand-off encrypt listener; postfix: plain relay",
        if pinned {
            ", system measured on CPU 0, load on CPU 1"
        } else {
            ""
        }
    );
    println!(
        "{:<8} {:>8} {:>6} {:>10} {:>10} {:>10} {:>7}",
        "system", "size", "msgs", "msgs/s", "p50", "p99", "ratio"
    );
    for (size, label, n) in [(4 * 1024, "4 KiB", 400), (100 * 1024, "100 KiB", 200)] {
        // Warm-up (connections, caches), not measured.
        let _ = load(box_addr, &sink, 20, size, load_cpu, Some(&held));
        let _ = load(postfix_addr, &sink, 20, size, load_cpu, None);
        let cpu_before = cpu_secs(daemon.id());
        let b = load(box_addr, &sink, n, size, load_cpu, Some(&held));
        let box_cpu = (cpu_secs(daemon.id()) - cpu_before) / n as f64;
        let p = load(postfix_addr, &sink, n, size, load_cpu, None);
        println!(
            "{:<8} {:>8} {:>6} {:>10.1} {:>10} {:>10} {:>7}",
            "postfix",
            label,
            n,
            p.rate,
            ms(p.p50),
            ms(p.p99),
            ""
        );
        println!(
            "{:<8} {:>8} {:>6} {:>10.1} {:>10} {:>10} {:>7.2}   daemon CPU {:.1} ms/msg",
            "box",
            label,
            n,
            b.rate,
            ms(b.p50),
            ms(b.p99),
            b.rate / p.rate,
            box_cpu * 1000.0
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    drop(postfix);
}
