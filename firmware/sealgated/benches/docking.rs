//! `cargo xtask bench docking`: the docking API under load, against the in-process engine in
//! the same run.
//!
//! 1. A test PKI (openssl) and a vault (software sealer) holding alice's RSA-2048 key.
//! 2. The in-process engine: `message::open` / `encrypt_message` for 4 KiB and 1 MiB messages
//!    (operations per second).
//! 3. The release `sealgated` on loopback, loaded with `wrk` (Debian `wrk`) for the same
//!    messages: requests/s, p50/p99 latency, and the ratio to the engine.
//!
//! The ratio compares like with like: on a machine with at least two CPUs the daemon is pinned
//! to CPU 0 (`taskset`, util-linux), `wrk` to CPU 1, and the engine runs one thread, so both
//! sides have exactly one CPU and the load generator takes nothing from the daemon. With one
//! CPU everything shares it (and the ratio understates the daemon). A second table gives the
//! whole-machine numbers (daemon unpinned, engine on every CPU, `wrk` competing for them).
//! 4. Peak memory (VmHWM) of the daemon while 64 clients upload 10 MiB messages at once.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate_smime::cert::Certificate;
use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::Recipient;
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{self, OpenMode};
use sealgate_smime::signed::VerifyOptions;
use sealgate_vault::{SoftwareSealer, Vault};

const SECONDS: u64 = 8;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: sender@example.com\r\nTo: alice@example.org\r\nSubject: bench\r\nMessage-ID: <bench@x>\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

/// Operations per second of `op` on `threads` threads for `secs` seconds.
/// Pins the calling thread to `cpu`.
#[allow(unsafe_code)]
fn pin_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it; the call
    // reads `size_of` bytes from it and only changes this thread's affinity.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    assert!(ok, "sched_setaffinity to CPU {cpu} failed");
}

/// Runs `op` on `threads` threads for `secs` (pinned to `cpu` when given) and returns op/s.
fn engine_rate(
    threads: usize,
    secs: u64,
    cpu: Option<usize>,
    op: Arc<dyn Fn() + Send + Sync>,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                if let Some(c) = cpu {
                    pin_thread(c);
                }
                let mut n = 0u64;
                while Instant::now() < deadline {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

fn wrk(url: &str, token: &str, body: &Path, connections: usize, cpu: Option<usize>) -> WrkResult {
    let dir = tempfile::tempdir().expect("tmp");
    let lua = dir.path().join("post.lua");
    std::fs::write(
        &lua,
        format!(
            "local f = io.open({:?}, \"rb\")\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.headers[\"Content-Type\"] = \"message/rfc822\"\n",
            body.display().to_string()
        ),
    )
    .expect("lua");
    let mut cmd = match cpu {
        Some(c) => {
            let mut c2 = Command::new("taskset");
            c2.args(["-c", &c.to_string(), "wrk", "-t", "1"]);
            c2
        }
        None => {
            let mut c2 = Command::new("wrk");
            c2.args(["-t", "2"]);
            c2
        }
    };
    let out = run(cmd
        .args([
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{SECONDS}s"),
            "--timeout",
            "30s",
            "--latency",
            "-s",
        ])
        .arg(&lua)
        .arg(url));
    let text = String::from_utf8_lossy(&out).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    WrkResult {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        non_2xx: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
    }
}

fn vm_hwm(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:").map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

struct Input {
    label: &'static str,
    clear: Vec<u8>,
    encrypted: Vec<u8>,
    enc_file: std::path::PathBuf,
    clear_file: std::path::PathBuf,
}

struct Bench<'a> {
    data: &'a Path,
    token: &'a str,
    key: &'a Arc<SoftwareKey>,
    recipients: &'a Arc<Vec<Recipient>>,
    inputs: &'a [Input],
}

impl Bench<'_> {
    /// One table: engine on `threads` threads, then the daemon (pinned to `pin.0` if given)
    /// under wrk (pinned to `pin.1`). Returns the 4 KiB decrypt ratio and the engine's 4 KiB
    /// decrypt rate.
    fn table(&self, pin: Option<(usize, usize)>, threads: usize) -> (f64, f64) {
        let (mut child, port) = start_daemon(self.data, pin.map(|p| p.0));
        let base = format!("https://127.0.0.1:{port}/api/v1");
        println!(
            "{:<10} {:>7} {:>12} {:>12} {:>10} {:>10} {:>7} {:>6}",
            "operation", "size", "engine op/s", "daemon req/s", "p50", "p99", "ratio", "non2xx"
        );
        let (mut ratio, mut engine_4k) = (0.0, 0.0);
        for input in self.inputs {
            let (k, e) = (self.key.clone(), input.encrypted.clone());
            let engine_dec = engine_rate(
                threads,
                SECONDS,
                pin.map(|p| p.0),
                Arc::new(move || {
                    let keys: [&dyn PrivateKey; 1] = [k.as_ref()];
                    let _ =
                        message::open(&e, &keys, &VerifyOptions::default(), OpenMode::Everything)
                            .expect("open");
                }),
            );
            let w = wrk(
                &format!("{base}/decrypt"),
                self.token,
                &input.enc_file,
                16,
                pin.map(|p| p.1),
            );
            row("decrypt", input.label, engine_dec, &w);
            if input.label == "4 KiB" {
                ratio = w.rps / engine_dec;
                engine_4k = engine_dec;
            }
            let (r, c) = (self.recipients.clone(), input.clear.clone());
            let engine_enc = engine_rate(
                threads,
                SECONDS,
                pin.map(|p| p.0),
                Arc::new(move || {
                    let _ =
                        message::encrypt_message(&c, &r, CipherChoice::Aes256Cbc).expect("encrypt");
                }),
            );
            let w = wrk(
                &format!("{base}/encrypt?to=alice@example.org"),
                self.token,
                &input.clear_file,
                16,
                pin.map(|p| p.1),
            );
            row("encrypt", input.label, engine_enc, &w);
        }
        stop(&mut child);
        (ratio, engine_4k)
    }
}

fn row(op: &str, label: &str, engine: f64, w: &WrkResult) {
    println!(
        "{:<10} {:>7} {:>12.0} {:>12.0} {:>10} {:>10} {:>7.2} {:>6}",
        op,
        label,
        engine,
        w.rps,
        w.p50,
        w.p99,
        w.rps / engine,
        w.non_2xx
    );
}

/// Starts the release daemon on `data` (pinned to `cpu` if given); its docking port.
fn start_daemon(data: &Path, cpu: Option<usize>) -> (std::process::Child, u16) {
    let (child, listeners) = common::start_daemon(data, cpu);
    let port = listeners
        .iter()
        .find(|(n, _)| n == "docking")
        .and_then(|(_, a)| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    (child, port)
}

fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then
    // (`cargo xtask bench docking` measures, after installing wrk).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for tool in ["openssl", "wrk", "curl"] {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "`{tool}` is missing: apt-get install {tool}");
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let tmp = tempfile::tempdir().expect("tmp");
    let d = tmp.path();
    // PKI: alice, RSA-2048.
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "5",
            "-subj",
            "/CN=alice@example.org",
            "-addext",
            "subjectAltName=email:alice@example.org",
            "-addext",
            "extendedKeyUsage=emailProtection",
        ])
        .arg("-keyout")
        .arg(d.join("alice.key"))
        .arg("-out")
        .arg(d.join("alice.crt")));
    let key_pem = std::fs::read(d.join("alice.key")).expect("key");
    let cert_pem = std::fs::read(d.join("alice.crt")).expect("cert");
    let data = d.join("data");
    // The vault's key capability (opened once, then reused as the daemon's key cache does):
    // measured separately so any cost of the vault layer (audit of each use) is visible.
    let vault_key_rate = {
        let (vault, _) = Vault::init(&data, &mut SoftwareSealer::danger_new()).expect("vault");
        vault.import_pem(&key_pem, &cert_pem, None).expect("import");
        let vk = Arc::new(vault.keys_for("alice@example.org").expect("keys").remove(0));
        let cert = Certificate::parse_many(&cert_pem).expect("cert").remove(0);
        let enc = message::encrypt_message(
            &message(4096),
            &[Recipient::new(cert).expect("r")],
            CipherChoice::Aes256Cbc,
        )
        .expect("enc");
        engine_rate(
            1,
            SECONDS / 2,
            (cpus >= 2).then_some(0),
            Arc::new(move || {
                let keys: [&dyn PrivateKey; 1] = [vk.as_ref()];
                let _ = message::open(&enc, &keys, &VerifyOptions::default(), OpenMode::Everything)
                    .expect("open");
            }),
        )
    };
    let token = "sgt_".to_string() + &"b".repeat(64);
    // The token file through its one owner (format, lock, atomic write).
    let lock = sealgate_tokenfile::lock(&data).expect("token lock");
    sealgate_tokenfile::store(
        &data,
        &sealgate_tokenfile::TokenFile {
            version: sealgate_tokenfile::VERSION,
            tokens: vec![sealgate_tokenfile::TokenRecord {
                name: "bench".to_string(),
                sha256: sealgate_tokenfile::token_hash(&token),
                scopes: vec!["decrypt".to_string(), "encrypt".to_string()],
                created: "-".to_string(),
            }],
        },
        &lock,
    )
    .expect("tokens");
    drop(lock);
    std::fs::write(data.join("settings.toml"), "[docking]\nlisten = \"127.0.0.1:0\"\nmax_message_bytes = 67108864\ncrypto_queue = 128\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n").expect("settings");

    let key = Arc::new(SoftwareKey::from_key_and_cert(&key_pem, &cert_pem).expect("key"));
    let cert = Certificate::parse_many(&cert_pem).expect("cert").remove(0);
    let recipients = Arc::new(vec![Recipient::new(cert).expect("recipient")]);

    println!("docking benchmark: {cpus} CPUs, {SECONDS} s per measurement, RSA-2048 + AES-256-CBC");
    println!(
        "engine with the vault's key capability (audited use), decrypt 4 KiB, one thread: {vault_key_rate:.0} op/s"
    );
    let pinned = cpus >= 2
        && Command::new("sh")
            .args(["-c", "command -v taskset"])
            .output()
            .is_ok_and(|o| o.status.success());
    let mut inputs = Vec::new();
    for size in [4 * 1024, 1024 * 1024] {
        let clear = message(size);
        let encrypted = message::encrypt_message(&clear, &recipients, CipherChoice::Aes256Cbc)
            .expect("encrypt");
        let enc_file = d.join(format!("enc-{size}.eml"));
        let clear_file = d.join(format!("clear-{size}.eml"));
        std::fs::write(&enc_file, &encrypted).expect("write");
        std::fs::write(&clear_file, &clear).expect("write");
        inputs.push(Input {
            label: if size < 1024 * 1024 { "4 KiB" } else { "1 MiB" },
            clear,
            encrypted,
            enc_file,
            clear_file,
        });
    }
    let bench = Bench {
        data: &data,
        token: &token,
        key: &key,
        recipients: &recipients,
        inputs: &inputs,
    };
    if pinned {
        println!();
        println!("one CPU each: daemon on CPU 0, wrk on CPU 1, engine on one thread on CPU 0");
        let (r, engine_4k) = bench.table(Some((0, 1)), 1);
        println!(
            "decrypt 4 KiB: daemon / engine = {:.2} (one CPU each; target 0.8); daemon / engine with the vault's key capability = {:.2}",
            r,
            r * engine_4k / vault_key_rate
        );
    } else {
        println!("taskset (util-linux) or a second CPU missing: no one-CPU-each table");
    }
    println!();
    println!("whole machine: daemon unpinned, engine on {cpus} threads, wrk (2 threads) competing");
    let (r, _) = bench.table(None, cpus);
    println!("decrypt 4 KiB: daemon / engine = {r:.2} (whole machine)");

    let (mut child, port) = start_daemon(&data, None);
    let pid = child.id();
    let base = format!("https://127.0.0.1:{port}/api/v1");
    // Peak memory: 64 concurrent 10 MiB decrypt uploads.
    let big = message::encrypt_message(
        &message(10 * 1024 * 1024),
        &recipients,
        CipherChoice::Aes256Cbc,
    )
    .expect("encrypt");
    let big_file = d.join("big.eml");
    std::fs::write(&big_file, &big).expect("write");
    let before = vm_hwm(pid);
    let started = Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-sk",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "300",
                    "-H",
                    &format!("Authorization: Bearer {token}"),
                    "--data-binary",
                ])
                .arg(format!("@{}", big_file.display()))
                .arg(format!("{base}/decrypt"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl")
        })
        .collect();
    let codes: Vec<String> = clients
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().expect("curl").stdout).to_string())
        .collect();
    let ok = codes.iter().filter(|c| c.as_str() == "200").count();
    let after = vm_hwm(pid);
    println!(
        "peak memory, 64 concurrent 10 MiB ({:.1} MiB encrypted) decrypts: VmHWM {} MiB (before {} MiB); {ok}/64 answered 200 in {:.1} s; codes {:?}",
        big.len() as f64 / 1048576.0,
        after / 1024,
        before / 1024,
        started.elapsed().as_secs_f64(),
        {
            let mut c = codes.clone();
            c.sort();
            c.dedup();
            c
        }
    );
    stop(&mut child);
}
