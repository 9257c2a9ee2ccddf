//! The box's time: an SNTP client (`sealgate_netproto::ntp`) asking `[network] ntp_servers`
//! (or, when none are set, the NTP servers of the DHCP leases) every [`POLL`], and stepping
//! the system clock when it is off by more than [`STEP_THRESHOLD`], if allowed: the process
//! must have `CAP_SYS_TIME` and not run with `--clock-report-only` (tests measure against a
//! real server without changing the host's clock). The state is in the admin status
//! (`clock`): `synchronized` is true while the last good answer is recent and the clock is
//! within [`STEP_THRESHOLD`] of it (after stepping, or because it already was).
//!
//! Time matters before TLS and certificate validation: at start the daemon waits (bounded,
//! [`FIRST_SYNC_WAIT`]) for a first answer before its listeners start (`network::settle`),
//! when a server is known by then (configured, or in a DHCP lease).
//!
//! Who sends what it reads: the configured servers, or anyone spoofing them from the path.
//! An answer must echo our request's transmit timestamp and be synchronised (see
//! `sealgate_netproto::ntp`); of the servers' answers the one with the least delay is taken.
//! A server that lies is believed (SNTP has no authentication): configure servers you trust.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sealgate_netproto::ntp::{self, Sample, Timestamp};

/// Time between two measurements once synchronised.
pub const POLL: Duration = Duration::from_secs(64);
/// Time between tries while no server answers.
pub const RETRY: Duration = Duration::from_secs(8);
/// An offset above this is corrected by stepping the clock (below it the clock counts as
/// right: certificate validity and TLS work in seconds).
pub const STEP_THRESHOLD: Duration = Duration::from_millis(128);
/// How long one server has to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long the start waits for a first answer.
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(10);

static REPORT_ONLY: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Default)]
struct ClockState {
    /// The server of the last good answer.
    source: Option<SocketAddr>,
    /// Its offset (our clock behind: positive), before any step.
    offset_nanos: Option<i128>,
    delay_nanos: Option<i128>,
    stratum: Option<u8>,
    /// When the last good answer came.
    at: Option<Instant>,
    /// Whether the clock agrees with it (within the threshold, or stepped to it).
    agrees: bool,
    /// Whether the daemon stepped the clock (ever).
    stepped: bool,
    /// Why the last round failed, or why the clock was not set.
    note: Option<String>,
}

static STATE: Mutex<Option<ClockState>> = Mutex::new(None);

fn state() -> ClockState {
    STATE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

fn set_state(f: impl FnOnce(&mut ClockState)) {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(ClockState::default));
}

/// `host` or `host:port` (port 123 by default), checked without resolving it.
pub fn server_address(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not host or host:port");
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip().to_string(), a.port()));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok((ip.to_string(), 123));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (s, 123),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ok || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The servers to ask now: the settings', or the DHCP leases'.
fn servers() -> Vec<String> {
    let s = super::applied();
    if !s.ntp_servers.is_empty() {
        return s.ntp_servers;
    }
    super::dhcp::ntp_servers()
        .into_iter()
        .map(|ip| ip.to_string())
        .collect()
}

/// Whether a server is known now (configured, or in a lease already received).
pub fn knows_a_server() -> bool {
    !servers().is_empty()
}

/// Whether there is any time source (configured, or possibly from DHCP).
pub fn has_source(s: &super::Settings) -> bool {
    !s.ntp_servers.is_empty() || s.interfaces.iter().any(|i| i.dhcp)
}

/// Starts the client's thread. With `report_only` the clock is measured, never set.
pub fn start(report_only: bool) {
    REPORT_ONLY.store(report_only, Ordering::Relaxed);
    std::thread::spawn(|| {
        let mut last: Vec<String> = Vec::new();
        let mut next = Instant::now();
        loop {
            let now_servers = servers();
            let changed = now_servers != last;
            if !now_servers.is_empty() && (changed || Instant::now() >= next) {
                let ok = round(&now_servers);
                // Until a first answer, retry sooner (the own resolver may start after us).
                let retry = if state().at.is_none() {
                    RETRY / 4
                } else {
                    RETRY
                };
                next = Instant::now() + if ok { POLL } else { retry };
            }
            last = now_servers;
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// One measurement against each server; the best answer is used. True if one counted.
fn round(servers: &[String]) -> bool {
    let mut best: Option<(SocketAddr, Sample)> = None;
    let mut why = Vec::new();
    for s in servers {
        match measure(s) {
            Ok((addr, sample)) => {
                if best.is_none_or(|(_, b)| sample.delay_nanos < b.delay_nanos) {
                    best = Some((addr, sample));
                }
            }
            Err(e) => why.push(format!("{s}: {e}")),
        }
    }
    let Some((addr, sample)) = best else {
        set_state(|st| st.note = Some(why.join("; ")));
        return false;
    };
    let off =
        Duration::from_nanos(u64::try_from(sample.offset_nanos.unsigned_abs()).unwrap_or(u64::MAX));
    let was_synced = synchronized();
    let (agrees, stepped, note) = if off <= STEP_THRESHOLD {
        (true, false, None)
    } else if let Some(no) = not_allowed() {
        (false, false, Some(format!("clock not set: {no}")))
    } else {
        match step(sample.offset_nanos) {
            Ok(()) => (true, true, None),
            Err(e) => (false, false, Some(format!("clock not set: {e}"))),
        }
    };
    if stepped {
        super::say(&format!(
            "clock: stepped by {} ms to {addr}'s time",
            sample.offset_nanos / 1_000_000
        ));
    } else if agrees && !was_synced {
        super::say(&format!(
            "clock: synchronised with {addr} (offset {} ms)",
            sample.offset_nanos / 1_000_000
        ));
    } else if let Some(n) = &note {
        super::say(&format!(
            "clock: {addr} says the clock is off by {} ms; {n}",
            sample.offset_nanos / 1_000_000
        ));
    }
    set_state(|st| {
        st.source = Some(addr);
        st.offset_nanos = Some(sample.offset_nanos);
        st.delay_nanos = Some(sample.delay_nanos);
        st.stratum = Some(sample.stratum);
        st.at = Some(Instant::now());
        st.agrees = agrees;
        st.stepped |= stepped;
        st.note = note;
    });
    true
}

fn measure(server: &str) -> Result<(SocketAddr, Sample), String> {
    let (host, port) = server_address(server)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving: {e}"))?
        .next()
        .ok_or("resolving: no address")?;
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "address")?
    } else {
        "[::]:0".parse().map_err(|_| "address")?
    };
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    // Connected: the kernel drops datagrams from anyone else.
    sock.connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(ANSWER_WAIT))
        .map_err(|e| e.to_string())?;
    let t1 = Timestamp::from_system(SystemTime::now());
    sock.send(&ntp::request(t1)).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let n = sock.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
        let t4 = Timestamp::from_system(SystemTime::now());
        match ntp::answer(&buf[..n], t1, t4) {
            Ok(s) => return Ok((addr, s)),
            Err(ntp::Refused::NotOurs) => continue,
            Err(e) => return Err(format!("answer refused: {e:?}")),
        }
    }
    Err("no answer".into())
}

/// Why the clock may not be set, if it may not.
fn not_allowed() -> Option<String> {
    if REPORT_ONLY.load(Ordering::Relaxed) {
        return Some("--clock-report-only".into());
    }
    // CAP_SYS_TIME is bit 25 of the effective capabilities.
    let caps = std::fs::read_to_string("/proc/self/status").ok()?;
    let eff = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())?;
    (eff & (1 << 25) == 0).then(|| "no CAP_SYS_TIME".to_string())
}

fn step(offset_nanos: i128) -> Result<(), String> {
    use nix::sys::time::TimeSpec;
    use nix::time::{ClockId, clock_gettime, clock_settime};
    let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(|e| e.to_string())?;
    let nanos = i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec()) + offset_nanos;
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).map_err(|e| e.to_string())?;
    let sub = i64::try_from(nanos.rem_euclid(1_000_000_000)).map_err(|e| e.to_string())?;
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::new(secs, sub)).map_err(|e| e.to_string())
}

/// Whether a recent answer agrees with the clock.
pub fn synchronized() -> bool {
    let st = state();
    st.agrees && st.at.is_some_and(|t| t.elapsed() < POLL * 4)
}

/// Waits up to `wait` for the clock to be synchronised.
pub fn wait_synchronized(wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if synchronized() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    synchronized()
}

/// `clock` in the admin status.
pub fn status() -> serde_json::Value {
    let st = state();
    serde_json::json!({
        "now": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "synchronized": synchronized(),
        "source": st.source.map(|s| s.to_string()),
        "offset_ms": st.offset_nanos.map(|n| n as f64 / 1e6),
        "delay_ms": st.delay_nanos.map(|n| n as f64 / 1e6),
        "stratum": st.stratum,
        "last_answer_secs_ago": st.at.map(|t| t.elapsed().as_secs()),
        "stepped": st.stepped,
        "report_only": REPORT_ONLY.load(Ordering::Relaxed),
        "note": st.note,
    })
}
