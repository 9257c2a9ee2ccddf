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
//! 4. The transport's ceiling: this benchmark run again as a bare HTTPS server (`--floor-server`:
//!    the daemon's HTTP and TLS stack, actix-web and rustls on AWS-LC, one worker per CPU,
//!    pinned like the daemon) whose one handler spends the engine's CPU time for the operation (a busy
//!    loop on the thread's CPU clock) and returns the request body. It is what a daemon whose
//!    own code cost nothing would do, `wrk` waiting on it as on the daemon: its requests per CPU
//!    second over the engine's operations per CPU second is the highest docking ratio this
//!    transport allows on this machine.
//! 5. Peak memory (VmHWM) of the daemon while 64 clients upload 10 MiB messages at once.
//!
//! `--json FILE` also writes every row and ratio as JSON (`{"rows": [...], "ratios": {...}}`;
//! the names are listed in README's benchmark section and stay stable).

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

/// This thread's CPU time in seconds.
#[allow(unsafe_code)]
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    assert!(ok, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time (user + system, every thread) that process `pid` has used, in seconds.
#[allow(unsafe_code)]
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start with field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// An engine measurement: operations per second of wall time and per second of CPU time.
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Runs `op` on `threads` threads for `secs` (pinned to `cpu` when given): op/s of wall time
/// and op per CPU second (the threads' own CPU time, so other work on a shared machine does
/// not count).
fn engine_rate(
    threads: usize,
    secs: u64,
    cpu: Option<usize>,
    op: Arc<dyn Fn() + Send + Sync>,
) -> Rate {
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
                let cpu0 = thread_cpu();
                while Instant::now() < deadline {
                    op();
                    n += 1;
                }
                (n, thread_cpu() - cpu0)
            })
        })
        .collect();
    let (mut total, mut cpu_s) = (0u64, 0.0);
    for h in handles {
        let (n, c) = h.join().unwrap_or((0, 0.0));
        total += n;
        cpu_s += c;
    }
    Rate {
        wall: total as f64 / started.elapsed().as_secs_f64(),
        cpu: total as f64 / f64::max(cpu_s, 1e-9),
    }
}

struct WrkResult {
    rps: f64,
    /// Requests per second of the daemon's CPU time (all its threads).
    per_cpu: f64,
    /// CPUs the daemon kept busy during the run (its CPU seconds per wall second).
    daemon_cpus: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

/// Milliseconds of a wrk latency (`850.00us`, `12.34ms`, `1.02s`, `2.00m`); NaN if unknown.
fn wrk_ms(v: &str) -> f64 {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e3)
    } else {
        (v, f64::NAN)
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

/// Rows and ratios for `--json`.
#[derive(Default)]
struct Record {
    rows: Vec<serde_json::Value>,
    ratios: serde_json::Map<String, serde_json::Value>,
}

fn round(v: f64) -> serde_json::Value {
    if v.is_finite() {
        ((v * 1000.0).round() / 1000.0).into()
    } else {
        serde_json::Value::Null
    }
}

impl Record {
    fn ratio(&mut self, name: &str, value: f64) {
        self.ratios.insert(name.into(), round(value));
    }
    fn write(self, file: &Path) {
        let json = serde_json::json!({"rows": self.rows, "ratios": self.ratios});
        std::fs::write(file, serde_json::to_vec_pretty(&json).unwrap())
            .unwrap_or_else(|e| panic!("--json {}: {e}", file.display()));
        println!("wrote {}", file.display());
    }
}

/// One measured line of a table: the daemon under wrk next to the engine.
struct Row {
    op: &'static str,
    size: &'static str,
    engine: Rate,
    wrk: WrkResult,
}

impl Row {
    /// Daemon requests/s over engine op/s (wall time).
    fn ratio(&self) -> f64 {
        self.wrk.rps / self.engine.wall
    }
    /// The same per second of CPU time on each side.
    fn cpu_ratio(&self) -> f64 {
        self.wrk.per_cpu / self.engine.cpu
    }
    fn json(&self, table: &str) -> serde_json::Value {
        serde_json::json!({
            "name": format!("{table}_{}_{}", self.op, self.size),
            "value": round(self.wrk.rps),
            "unit": "req/s",
            "engine_op_per_s": round(self.engine.wall),
            "engine_op_per_cpu_s": round(self.engine.cpu),
            "req_per_daemon_cpu_s": round(self.wrk.per_cpu),
            "daemon_cpus": round(self.wrk.daemon_cpus),
            "p50_ms": round(wrk_ms(&self.wrk.p50)),
            "p99_ms": round(wrk_ms(&self.wrk.p99)),
            "non_2xx": self.wrk.non_2xx,
        })
    }
}

fn find<'a>(rows: &'a [Row], op: &str, size: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.op == op && r.size == size)
}

fn wrk(
    url: &str,
    token: &str,
    body: &Path,
    connections: usize,
    cpu: Option<usize>,
    daemon: u32,
) -> WrkResult {
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
    let cpu0 = process_cpu(daemon);
    let wall0 = Instant::now();
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
    let daemon_cpu = process_cpu(daemon) - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .and_then(|(n, _)| n.parse().ok())
        })
        .unwrap_or(0.0);
    WrkResult {
        per_cpu: requests / f64::max(daemon_cpu, 1e-9),
        daemon_cpus: daemon_cpu / f64::max(wall, 1e-9),
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        non_2xx: field("Non-2xx or 3xx responses:").parse().unwrap_or(0),
    }
}

/// One request with curl before the load: a benchmark of failing requests measures nothing,
/// so a non-200 answer is printed with its problem (and counted in the row as `probe`).
fn probe(url: &str, token: &str, body: &Path) -> u16 {
    let out = run(Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "Content-Type: message/rfc822", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(url));
    let text = String::from_utf8_lossy(&out);
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code = code.trim().parse().unwrap_or(0);
    if code != 200 {
        let shown: String = answer.chars().take(300).collect();
        println!("probe {url}: HTTP {code}: {shown}");
    }
    code
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
    short: &'static str,
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
    /// under wrk (pinned to `pin.1`). Returns its rows.
    fn table(&self, pin: Option<(usize, usize)>, threads: usize) -> Vec<Row> {
        let (mut child, port) = start_daemon(self.data, pin.map(|p| p.0));
        let base = format!("https://127.0.0.1:{port}/api/v1");
        println!(
            "{:<10} {:>7} {:>12} {:>12} {:>10} {:>10} {:>7} {:>9} {:>6}",
            "operation",
            "size",
            "engine op/s",
            "daemon req/s",
            "p50",
            "p99",
            "ratio",
            "CPU ratio",
            "non2xx"
        );
        let mut rows = Vec::new();
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
            probe(&format!("{base}/decrypt"), self.token, &input.enc_file);
            let w = wrk(
                &format!("{base}/decrypt"),
                self.token,
                &input.enc_file,
                16,
                pin.map(|p| p.1),
                child.id(),
            );
            rows.push(row("decrypt", input.short, engine_dec, w));
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
            probe(
                &format!("{base}/encrypt?to=alice@example.org"),
                self.token,
                &input.clear_file,
            );
            let w = wrk(
                &format!("{base}/encrypt?to=alice@example.org"),
                self.token,
                &input.clear_file,
                16,
                pin.map(|p| p.1),
                child.id(),
            );
            rows.push(row("encrypt", input.short, engine_enc, w));
        }
        stop(&mut child);
        rows
    }
}

fn row(op: &'static str, size: &'static str, engine: Rate, w: WrkResult) -> Row {
    println!(
        "{:<10} {:>7} {:>12.0} {:>12.0} {:>10} {:>10} {:>7.2} {:>9.2} {:>6}",
        op,
        size,
        engine.wall,
        w.rps,
        w.p50,
        w.p99,
        w.rps / engine.wall,
        w.per_cpu / engine.cpu,
        w.non_2xx
    );
    Row {
        op,
        size,
        engine,
        wrk: w,
    }
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

/// `--floor-server CERT KEY SPIN_NS`: serves `POST /echo` over TLS on a loopback port printed
/// as `listening PORT`, until killed: each request spends `SPIN_NS` of the thread's CPU time,
/// then gets its body back. The same stack and settings as the docking API.
fn floor_server(cert: &Path, key: &Path, spin: Duration) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate")
        .collect::<Result<_, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("TLS configuration");
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!(
        "listening {}",
        listener.local_addr().expect("address").port()
    );
    use std::io::Write as _;
    std::io::stdout().flush().expect("stdout");
    actix_web::rt::System::new()
        .block_on(async move {
            HttpServer::new(move || {
                App::new().route(
                    "/echo",
                    web::post().to(move |body: web::Bytes| async move {
                        // The engine's share, as CPU time: a busy loop on the thread's clock.
                        let until = thread_cpu() + spin.as_secs_f64();
                        while thread_cpu() < until {
                            std::hint::spin_loop();
                        }
                        HttpResponse::Ok().content_type("message/rfc822").body(body)
                    }),
                )
            })
            .keep_alive(Duration::from_secs(75))
            // One worker per CPU it may use, as the daemon.
            .workers(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2),
            )
            .disable_signals()
            .listen_rustls_0_23(listener, tls)?
            .run()
            .await
        })
        .expect("floor server");
}

/// Starts [`floor_server`] (pinned to `cpu` if given), spending `spin` per request: the child
/// and its port.
fn start_floor(dir: &Path, cpu: Option<usize>, spin: Duration) -> (std::process::Child, u16) {
    let exe = std::env::current_exe().expect("this benchmark's path");
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string()]).arg(exe);
            t
        }
        None => Command::new(exe),
    };
    let mut child = cmd
        .arg("--floor-server")
        .arg(dir.join("alice.crt"))
        .arg(dir.join("alice.key"))
        .arg(spin.as_nanos().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the floor server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the floor server's port");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("the floor server's port");
    (child, port)
}

/// One `wrk` load on [`floor_server`] (pinned to `cpu` if given, `wrk` then to the next CPU),
/// spending `spin` per request and returning `body`.
fn floor_run(
    dir: &Path,
    cpu: Option<usize>,
    spin: Duration,
    token: &str,
    body: &Path,
) -> WrkResult {
    let (mut floor, port) = start_floor(dir, cpu, spin);
    let url = format!("https://127.0.0.1:{port}/echo");
    probe(&url, token, body);
    let f = wrk(&url, token, body, 16, cpu.map(|c| c + 1), floor.id());
    stop(&mut floor);
    f
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--floor-server") {
        let (cert, key) = (args.get(i + 1), args.get(i + 2));
        let spin = args.get(i + 3).and_then(|n| n.parse().ok());
        let (Some(cert), Some(key), Some(spin)) = (cert, key, spin) else {
            panic!("--floor-server CERT KEY SPIN_NS");
        };
        floor_server(Path::new(cert), Path::new(key), Duration::from_nanos(spin));
        return;
    }
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do then
    // (`cargo xtask bench docking` measures, after installing wrk).
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    common::one_line_panics("bench docking");
    let json = common::json_arg();
    let mut record = Record::default();
    for (tool, package) in [
        ("openssl", "openssl"),
        ("wrk", "wrk"),
        ("curl", "curl"),
        ("taskset", "util-linux"),
    ] {
        common::require("bench docking", tool, package);
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
            // An end-entity certificate (req -x509 makes a CA one by default), which the
            // box encrypts to; a CA certificate is refused and every encrypt would be a 422.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment",
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
        .wall
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
    let pinned = cpus >= 2;
    record.rows.push(serde_json::json!({
        "name": "engine_vault_decrypt_4k", "value": round(vault_key_rate), "unit": "op/s"
    }));
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
            short: if size < 1024 * 1024 { "4k" } else { "1m" },
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
    let mut one_cpu = Vec::new();
    if pinned {
        println!();
        println!("one CPU each: daemon on CPU 0, wrk on CPU 1, engine on one thread on CPU 0");
        one_cpu = bench.table(Some((0, 1)), 1);
        for r in &one_cpu {
            record.rows.push(r.json("docking"));
            record.ratio(&format!("docking_{}_{}_vs_engine", r.op, r.size), r.ratio());
            record.ratio(
                &format!("docking_{}_{}_vs_engine_cpu", r.op, r.size),
                r.cpu_ratio(),
            );
        }
        if let Some(d) = find(&one_cpu, "decrypt", "4k") {
            println!(
                "decrypt 4 KiB: daemon / engine = {:.2} (one CPU each; goal >= 0.9); daemon / engine with the vault's key capability = {:.2}; p99 {} (goal < 20 ms)",
                d.ratio(),
                d.wrk.rps / vault_key_rate,
                d.wrk.p99
            );
            record.ratio(
                "docking_decrypt_4k_vs_engine_vault",
                d.wrk.rps / vault_key_rate,
            );
        }
        if let Some(e) = find(&one_cpu, "encrypt", "4k") {
            println!(
                "encrypt 4 KiB: daemon / engine = {:.2} (one CPU each; goal >= 0.6)",
                e.ratio()
            );
        }
        // The transport's ceiling, pinned as the daemon was: the bare HTTPS stack spending
        // the engine's CPU time per request and returning the 4 KiB message.
        for op in ["decrypt", "encrypt"] {
            let Some(r) = find(&one_cpu, op, "4k") else {
                continue;
            };
            let spin = Duration::from_secs_f64(1.0 / r.engine.cpu);
            let f = floor_run(d, Some(0), spin, &token, &inputs[0].clear_file);
            let ceiling = f.per_cpu / r.engine.cpu;
            let (daemon_us, engine_us, floor_us) = (
                1e6 / r.wrk.per_cpu,
                1e6 / r.engine.cpu,
                1e6 / f.per_cpu - 1e6 / r.engine.cpu,
            );
            println!(
                "{op} 4 KiB: the transport alone allows {ceiling:.2} of the engine (the bare HTTPS stack spending the engine's {engine_us:.0} us per request: {floor_us:.0} us more); the daemon reaches {:.2}: {daemon_us:.0} us a call = engine {engine_us:.0} + transport {floor_us:.0} + the daemon's own {:.0}",
                r.cpu_ratio(),
                daemon_us - engine_us - floor_us
            );
            record.rows.push(serde_json::json!({
                "name": format!("transport_{op}_4k"), "value": round(f.per_cpu),
                "unit": "req/CPU s", "req_per_s": round(f.rps), "p99_ms": round(wrk_ms(&f.p99)),
                "spin_us": round(engine_us),
            }));
            record.ratio(&format!("docking_{op}_4k_ceiling"), ceiling);
        }
    } else {
        println!("one CPU: no one-CPU-each table");
    }
    println!();
    println!("whole machine: daemon unpinned, engine on {cpus} threads, wrk (2 threads) competing");
    let machine = bench.table(None, cpus);
    for r in &machine {
        record.rows.push(r.json("machine"));
        record.ratio(&format!("machine_{}_{}_vs_engine", r.op, r.size), r.ratio());
        record.ratio(
            &format!("machine_{}_{}_vs_engine_cpu", r.op, r.size),
            r.cpu_ratio(),
        );
    }
    if let Some(d) = find(&machine, "decrypt", "4k") {
        println!(
            "decrypt 4 KiB: daemon / engine = {:.2} (whole machine; goal >= 0.85)",
            d.ratio()
        );
        // The transport's ceiling on the whole machine: the bare HTTPS stack, unpinned, one
        // worker per CPU, spending the engine's CPU time per request, `wrk` competing.
        let spin = Duration::from_secs_f64(1.0 / d.engine.cpu);
        let f = floor_run(tmp.path(), None, spin, &token, &inputs[0].clear_file);
        let ceiling = f.rps / d.engine.wall;
        println!(
            "decrypt 4 KiB: the transport alone allows {ceiling:.2} of the engine on the whole machine (the bare HTTPS stack spending the engine's time per request: {:.0} req/s; the daemon {:.0})",
            f.rps, d.wrk.rps
        );
        record.rows.push(serde_json::json!({
            "name": "transport_machine_decrypt_4k", "value": round(f.rps), "unit": "req/s",
            "req_per_cpu_s": round(f.per_cpu), "p99_ms": round(wrk_ms(&f.p99)),
        }));
        record.ratio("machine_decrypt_4k_ceiling", ceiling);
        if let Some(one) = find(&one_cpu, "decrypt", "4k") {
            let scaling = d.wrk.rps / one.wrk.rps;
            println!(
                "decrypt 4 KiB: daemon on {cpus} CPUs / daemon on one = {scaling:.2} (goal >= 1.8; wrk shares the CPUs here)"
            );
            record.ratio("docking_decrypt_4k_scaling", scaling);
            // The wall-clock figure above shares the CPUs with wrk and, on a shared machine,
            // with everything else running then. Per CPU second the daemon's cost does not
            // depend on that: this is the scaling it shows with the CPUs to itself.
            let efficiency = d.wrk.per_cpu / one.wrk.per_cpu;
            println!(
                "decrypt 4 KiB: requests per daemon CPU second, {cpus} CPUs / one = {efficiency:.2} (the daemon kept {:.2} CPUs busy): {:.2}x its one-CPU rate with the CPUs to itself",
                d.wrk.daemon_cpus,
                efficiency * cpus as f64
            );
            record.ratio("docking_decrypt_4k_cpu_efficiency", efficiency);
            record.ratio("docking_decrypt_4k_scaling_cpu", efficiency * cpus as f64);
        }
    }

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
    record.rows.push(serde_json::json!({
        "name": "memory_64x10m_decrypt", "value": after / 1024, "unit": "MiB",
        "answered_200": ok, "seconds": round(started.elapsed().as_secs_f64()),
    }));
    stop(&mut child);
    if let Some(file) = json {
        record.write(&file);
    }
}
