//! `sealgated`: Sealgate's gateway daemon.
//!
//! One process: the docking API (HTTPS) for third-party mail security gateways, the SMTP
//! hand-off listeners, and the admin listener (health, first-boot setup and the admin API,
//! `admin/`). It reads
//! one settings file (`--settings`, else `DATA/settings.toml` if present, else the built-in
//! developer-host defaults) and the key vault in the data directory. On the box it runs with
//! `--box`: the file is read over the box's shipped settings, and a missing, empty or damaged
//! file falls back to them, said on the console (see `settings.rs`);
//! `--check-settings` prints that verdict and the listeners, and exits.
//!
//! Console (stdout) lines, which the box's init, the QEMU system tests and the docking tests
//! read: the TLS certificate's fingerprint, the one-time setup token while setup is pending,
//! `sealgated: listening NAME ADDR` per listener, then `sealgated: ready`; on SIGTERM or
//! SIGINT the listeners drain and `sealgated: stopped` is printed. Logs (`tracing`) go, as
//! JSON lines, to `DATA/log/sealgated.log` (rotated by size: see [`logfile`]) and to stderr:
//! everything at the `[log] level` on a developer's host, warnings and errors only with
//! `--box` (stderr is the serial console there), never with ANSI colours when `NO_COLOR` is
//! set.

#![forbid(unsafe_code)]

mod admin;
mod audit;
mod certs;
mod directory;
mod directory_publish;
mod dkim_sign;
mod dns;
mod docking;
mod gateway;
mod http;
mod identity;
mod imap;
mod keys;
mod logfile;
mod mailauth;
mod metrics;
mod network;
mod privileges;
mod problem;
mod quarantine;
mod quarantine_digest;
mod rauc;
mod scan;
mod selfcheck;
mod settings;
mod settings_migrate;
mod smtp;
mod spam_training;
mod tls_certificate;
mod tokens;
mod update_fetch;
mod update_gate;
mod update_reseal;
mod update_url;
mod webui;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use clap::Parser;
use sealgate_vault::{DEFAULT_TCTI, Sealer, SoftwareSealer, TpmSealer, Vault, VaultError};
use tokio::sync::Semaphore;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::Settings;

/// Sealgate's gateway daemon.
#[derive(Parser)]
#[command(name = "sealgated", version, about)]
struct Cli {
    /// The data directory (vault, TLS identity, tokens, spool, logs); created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The settings file (default: DATA/settings.toml if it exists, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Serve the docking API here instead of the settings' address.
    #[arg(long, value_name = "ADDR")]
    listen_docking: Option<SocketAddr>,
    /// Serve the admin API here instead of the settings' address.
    #[arg(long, value_name = "ADDR")]
    listen_admin: Option<SocketAddr>,
    /// DANGER: keep the vault key in a file, NOT protected by a TPM (developers' hosts only).
    #[arg(long, conflicts_with = "tpm")]
    danger_software_sealer: bool,
    /// TCTI of the TPM that seals the vault key (default device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI")]
    tpm: Option<String>,
    /// Run as the box: the settings file (DATA/settings.toml unless --settings) is read over
    /// the box's shipped settings, and a missing, empty or damaged one falls back to them and
    /// says so; the console (stderr) shows warnings and errors only.
    #[arg(long = "box")]
    box_mode: bool,
    /// Measure the clock against the NTP servers but never set it (tests on a shared host).
    #[arg(long)]
    clock_report_only: bool,
    /// Print which settings would be used (`settings ok FILE` or `settings fallback WHY`)
    /// and the listeners' addresses, then exit (0 when the file is used, 3 on fallback).
    #[arg(long)]
    check_settings: bool,
    /// Ask the running daemon's admin listener for its health (over TLS), print
    /// `health ok ADDR` or `health failed WHY`, and exit (0 when it answered "up").
    #[arg(long, conflicts_with = "check_settings")]
    check_health: bool,
    /// Started as root: become USER at once, keeping only CAP_NET_ADMIN and CAP_SYS_TIME
    /// (the box's service; see privileges.rs).
    #[arg(long, value_name = "USER")]
    run_as: Option<String>,
    /// Write the vault's verdict here once it is opened: `unsealed`, or `locked: WHY` (then
    /// the daemon exits). The box's service script reads it: the daemon's own unseal is the
    /// boot's only one (see /etc/sealgate/boot).
    #[arg(long, value_name = "FILE")]
    vault_verdict: Option<PathBuf>,
}

/// The exit code of `--check-settings` when the shipped box settings would be used.
const EXIT_FALLBACK: u8 = 3;

fn main() -> ExitCode {
    // Before any other thread exists: keep libtss2's own log lines off the console.
    sealgate_tpm::quiet_library_logging();
    let cli = Cli::parse();
    if let Some(user) = &cli.run_as
        && let Err(e) = privileges::run_as(user)
    {
        console(&format!("error: --run-as {user}: {e:#}"));
        return ExitCode::FAILURE;
    }
    if cli.check_settings {
        return check_settings(&cli);
    }
    if cli.check_health {
        return check_health(&cli);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            console(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The vault's verdict for the box's service script (`--vault-verdict`), replaced whole
/// (a reader never sees half of it). Not being able to write it is said, not fatal: the
/// console then shows the vault as still unsealing.
fn write_verdict(file: &Path, verdict: &str) {
    let tmp = file.with_extension("tmp");
    let done =
        std::fs::write(&tmp, format!("{verdict}\n")).and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = done {
        console(&format!(
            "WARNING: cannot write the vault's verdict to {}: {e}",
            file.display()
        ));
    }
}

/// One console line, flushed at once (readers wait for them).
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sealgated: {line}");
    let _ = out.flush();
}

/// The console line with the setup token (the box's init and the tests read it).
fn setup_token_line(token: &str) -> String {
    format!("setup token (one-time; POST /api/v1/admin/setup on the admin port): {token}")
}

/// Where the settings come from and what they are.
struct Chosen {
    settings: Settings,
    /// The file read, if any.
    file: Option<PathBuf>,
    /// Why the box runs on its shipped settings (`--box` only).
    fallback: Option<String>,
}

fn choose_settings(cli: &Cli, data_dir: &Path) -> anyhow::Result<Chosen> {
    let default_file = data_dir.join("settings.toml");
    if cli.box_mode {
        let file = cli.settings.clone().unwrap_or(default_file);
        let b = Settings::load_box(&file)?;
        return Ok(Chosen {
            settings: b.settings,
            file: Some(file),
            fallback: b.fallback,
        });
    }
    Ok(match &cli.settings {
        Some(p) => Chosen {
            settings: Settings::load(p)?,
            file: Some(p.clone()),
            fallback: None,
        },
        None if default_file.exists() => Chosen {
            settings: Settings::load(&default_file)?,
            file: Some(default_file),
            fallback: None,
        },
        None => Chosen {
            settings: Settings::developer(),
            file: None,
            fallback: None,
        },
    })
}

/// `--check-settings`: the verdict and the listeners, one per line, for the box's boot
/// script, its health gate and the console's status page.
fn check_settings(cli: &Cli) -> ExitCode {
    let chosen = match choose_settings(cli, &cli.data_dir) {
        Ok(c) => c,
        Err(e) => {
            println!("settings invalid {}", one_line(&format!("{e:#}")));
            return ExitCode::FAILURE;
        }
    };
    match (&chosen.fallback, &chosen.file) {
        (Some(why), _) => println!("settings fallback {}", one_line(why)),
        (None, Some(f)) => println!("settings ok {}", f.display()),
        (None, None) => println!("settings developer-defaults"),
    }
    let mut s = chosen.settings;
    if let Some(a) = cli.listen_admin {
        s.admin.listen = a;
    }
    if let Some(a) = cli.listen_docking {
        s.docking.listen = a;
    }
    println!("admin {}", s.admin.listen);
    println!("docking {}", s.docking.listen);
    if chosen.fallback.is_some() {
        ExitCode::from(EXIT_FALLBACK)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--check-health`: one request to the admin listener the settings name.
fn check_health(cli: &Cli) -> ExitCode {
    let admin = match choose_settings(cli, &cli.data_dir) {
        Ok(c) => cli.listen_admin.unwrap_or(c.settings.admin.listen),
        Err(e) => {
            println!("health failed: settings: {}", one_line(&format!("{e:#}")));
            return ExitCode::FAILURE;
        }
    };
    match selfcheck::check(admin, Duration::from_secs(10)) {
        Ok(()) => {
            println!("health ok {}", selfcheck::health_target(admin));
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("health failed: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether stderr may carry ANSI colours: a terminal, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
fn colours(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Starts logging; returns the setter of the running level (settings changes).
fn init_logging(
    data_dir: &Path,
    level: &str,
    box_mode: bool,
) -> anyhow::Result<admin::settings_change::LogLevel> {
    use tracing_subscriber::Layer;
    let file = logfile::RotatingFile::open(
        &data_dir.join("log").join("sealgated.log"),
        logfile::MAX_BYTES,
        logfile::KEEP,
    )?;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| level.to_string());
    let file_filter = tracing_subscriber::EnvFilter::try_new(&filter).context("[log] level")?;
    // On the box stderr is the serial console (115200 baud, shared with the menu): only
    // what a technician must see goes there; everything else is in the file.
    let console_filter = if box_mode {
        tracing_subscriber::EnvFilter::try_new("warn").context("console filter")?
    } else {
        tracing_subscriber::EnvFilter::try_new(&filter).context("[log] level")?
    };
    let ansi = colours(
        std::env::var_os("NO_COLOR"),
        std::io::stderr().is_terminal(),
    );
    // Both filters can be replaced while the daemon runs (`[log] level` changed through the
    // admin API); the box's console stays at warnings.
    let (file_filter, file_reload) = tracing_subscriber::reload::Layer::new(file_filter);
    let (console_filter, console_reload) = tracing_subscriber::reload::Layer::new(console_filter);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_target(true)
                .with_filter(console_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(file_filter),
        )
        .try_init()
        .context("logging")?;
    Ok(Box::new(move |level: &str| {
        let filter = |l: &str| tracing_subscriber::EnvFilter::try_new(l).map_err(|e| e.to_string());
        file_reload
            .reload(filter(level)?)
            .map_err(|e| e.to_string())?;
        if !box_mode {
            console_reload
                .reload(filter(level)?)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }))
}

fn open_vault(data_dir: &Path, software: bool, tpm: Option<&str>) -> anyhow::Result<Vault> {
    let mut sealer: Box<dyn Sealer> = if software {
        Box::new(SoftwareSealer::danger_new())
    } else {
        Box::new(TpmSealer::new(tpm.unwrap_or(DEFAULT_TCTI)))
    };
    if software {
        console("WARNING: software sealer: the vault key is NOT protected by a TPM");
    }
    match Vault::open(data_dir, sealer.as_mut()) {
        Ok(v) => Ok(v),
        Err(VaultError::NotInitialised(_)) => {
            let (v, recovery) =
                Vault::init(data_dir, sealer.as_mut()).context("creating the vault")?;
            console("vault created");
            console(&format!(
                "vault recovery secret (shown once, keep it offline): {}",
                recovery.expose_text().as_str()
            ));
            Ok(v)
        }
        Err(e) => Err(anyhow::anyhow!("cannot open the vault: {e}")),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let data_dir = cli.data_dir.canonicalize()?;
    // A factory reset asked for through the admin API is the box's service script's to carry
    // out (as root, before the daemon starts); never serve from a box that is to be wiped.
    if data_dir.join(admin::system::FACTORY_RESET_REQUEST).exists() {
        anyhow::bail!(
            "a factory reset is pending ({}): the box's service script wipes the data before the \
             daemon starts; remove the file to cancel it",
            data_dir
                .join(admin::system::FACTORY_RESET_REQUEST)
                .display()
        );
    }
    // The vault opens (the TPM's unseal, more than half a second on the box) while the
    // settings are read, the log opened and the network started. (The vault logs nothing
    // through `tracing`, whose subscriber comes later.)
    let opening = {
        let (dir, software, tpm) = (
            data_dir.clone(),
            cli.danger_software_sealer,
            cli.tpm.clone(),
        );
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            (open_vault(&dir, software, tpm.as_deref()), start.elapsed())
        })
    };
    let chosen = choose_settings(&cli, &data_dir)?;
    let mut settings = chosen.settings;
    let stored = settings.clone();
    if let Some(why) = &chosen.fallback {
        console(&format!(
            "SETTINGS NOT USABLE: {}; running on the box's shipped settings (network-facing \
             listeners). Fix the file, or reset the settings from the console menu.",
            one_line(why)
        ));
    }
    if cli.box_mode {
        for (name, addr) in settings.loopback_listeners() {
            console(&format!(
                "WARNING: the {name} listener is {addr}: not reachable from the network"
            ));
        }
    }
    if let Some(a) = cli.listen_docking {
        settings.docking.listen = a;
    }
    if let Some(a) = cli.listen_admin {
        settings.admin.listen = a;
    }
    let log_level = init_logging(&data_dir, &settings.log.level, cli.box_mode)?;
    network::start(&settings.network, console);
    network::clock::start(cli.clock_report_only);
    // The leases and the clock are waited for (bounded) while the vault opens (the TPM's
    // unseal): nothing before the TLS identity needs them, and the identity (its certificate,
    // made at first boot) waits for them.
    let settling = {
        let network = settings.network.clone();
        std::thread::spawn(move || network::settle(&network))
    };
    let settings_store = web::Data::new(admin::settings_change::SettingsStore::new(
        chosen
            .file
            .clone()
            .unwrap_or_else(|| data_dir.join("settings.toml")),
        cli.box_mode,
        stored,
        admin::settings_change::Overrides {
            admin: cli.listen_admin,
            docking: cli.listen_docking,
        },
        log_level,
    )?);
    tracing::info!(data_dir = %data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting");
    if let Some(why) = &chosen.fallback {
        tracing::info!(reason = %why, "settings not usable: running on the box's shipped settings");
    }

    let (opened, took) = opening
        .join()
        .map_err(|_| anyhow::anyhow!("opening the vault panicked"))?;
    let vault = match opened {
        Ok(v) => v,
        Err(e) => {
            if let Some(f) = &cli.vault_verdict {
                let why = format!("{e:#}");
                let why = why.trim_start_matches("cannot open the vault: ");
                write_verdict(f, &format!("locked: {}", one_line(why)));
            }
            return Err(e);
        }
    };
    if let Some(f) = &cli.vault_verdict {
        write_verdict(f, "unsealed");
    }
    console(&format!("vault open ({} ms)", took.as_millis()));
    let _ = settling.join();
    let id = identity::load_or_create(&data_dir, &settings, &vault)?;
    let loop_key = smtp::loop_key(&data_dir, &vault)?;
    let imap_cache_key = vault.derived_key("imap view cache");
    if id.created {
        console("TLS certificate created");
    }
    console(&format!(
        "TLS certificate SHA-256 fingerprint: {}",
        identity::colon_hex(&id.fingerprint)
    ));

    let tokens = tokens::TokenStore::new(&data_dir);
    // The console's "reset admin access": every admin account (first: deleting them is
    // idempotent, so a crash before the request is done deletes again) and every
    // admin-scoped token goes, setup opens again. A reset that cannot be applied is said on
    // the console; the daemon still starts (the request stays, so the next start tries again).
    let mut accounts_reset = true;
    if data_dir.join(tokens::ADMIN_RESET_REQUEST).exists() {
        match vault.remove_all_admin_accounts("console") {
            Ok(removed) => {
                console(&format!(
                    "admin access reset: {} admin account(s) removed",
                    removed.len()
                ));
                // The admin plane's own API tokens die with the accounts.
                if let Err(e) = vault.remove_all_admin_api_tokens("console") {
                    accounts_reset = false;
                    console(&format!(
                        "ADMIN RESET NOT APPLIED: {}; it is tried again at the next start",
                        one_line(&format!("{e:#}"))
                    ));
                }
            }
            Err(e) => {
                accounts_reset = false;
                console(&format!(
                    "ADMIN RESET NOT APPLIED: {}; it is tried again at the next start",
                    one_line(&format!("{e:#}"))
                ));
            }
        }
    }
    let reset = if accounts_reset {
        tokens.apply_admin_reset_request().unwrap_or_else(|e| {
            console(&format!(
                "ADMIN RESET NOT APPLIED: {}; it is tried again at the next start",
                one_line(&format!("{e:#}"))
            ));
            None
        })
    } else {
        None
    };
    if let Some(revoked) = reset {
        vault.record_event(
            "console",
            "admin.reset-access",
            "api-tokens",
            &format!("revoked={}", revoked.join(",")),
        )?;
        tracing::warn!(
            revoked = revoked.len(),
            "admin access reset from the console"
        );
        console(&format!(
            "admin access reset: {} admin token(s) revoked",
            revoked.len()
        ));
    }
    // A damaged token file fails closed (no API token is accepted); say so once here rather
    // than only in a log line per refused call.
    if let Err(e) = tokens.lookup("") {
        console(&format!(
            "API TOKEN FILE UNREADABLE: {}: no API token is accepted until it is repaired",
            one_line(&format!("{e:#}"))
        ));
    }
    if tokens.setup_pending() {
        let t = tokens.issue_setup_token()?;
        console(&setup_token_line(&t));
    }
    docking::configure(&settings);
    let anchors = match &settings.docking.trust_anchors {
        Some(p) => sealgate_smime::cert::Certificate::parse_many(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => Vec::new(),
    };
    directory::configure(&settings.directory, anchors.clone(), &data_dir)?;
    let workers = match settings.docking.crypto_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let audit = Arc::new(audit::AuditLog::open(&data_dir)?);
    let vault = Arc::new(vault);
    // Kept to write the buffered key uses at a clean stop: the servers' workers may still
    // hold clones of the state (and so of the vault) when the process ends, so its drop,
    // which would write them, cannot be relied on.
    let vault_at_stop = vault.clone();
    let admin_state = web::Data::new(admin::AdminState::new(vault.clone(), &data_dir));
    let _ = admin_state
        .tpm
        .set((!cli.danger_software_sealer).then(|| cli.tpm.clone().unwrap_or(DEFAULT_TCTI.into())));
    let submission_vault = vault.clone();
    let publish_vault = vault.clone();
    let queue = smtp::open_queue(&data_dir, &settings)?;
    let _ = admin_state.queue.set(queue.clone());
    // The quarantine (content scanning), encrypted under a key the vault derives.
    let quarantine_store = quarantine::install(&data_dir, &vault)?;
    let release_key = vault.derived_key(quarantine_digest::KEY_PURPOSE);
    let _ = admin_state.tls.set(id.live.clone());
    let keys: Arc<dyn keys::KeyStore> = Arc::new(keys::Cached::new(vault, Duration::from_secs(30)));
    let anchors = Arc::new(anchors);
    let state = web::Data::new(http::AppState {
        failures: http::FailureLimiter::new(
            settings.auth.max_failures,
            settings.auth.failure_window_secs.duration(),
        ),
        admission: Arc::new(Semaphore::new(workers + settings.docking.crypto_queue)),
        workers: Arc::new(Semaphore::new(workers)),
        memory: Arc::new(Semaphore::new(
            settings.docking.max_buffered_bytes.0.div_ceil(1024),
        )),
        keys: keys.clone(),
        anchors: anchors.clone(),
        tokens,
        audit: audit.clone(),
        settings: settings.clone(),
    });
    let pins: Vec<[u8; 32]> = settings.auth.clients.iter().map(|c| c.sha256.0).collect();
    let docking_tls = identity::server_config(&id, pins.clone(), true)?;
    let admin_tls = identity::server_config(&id, Vec::new(), true)?;
    // STARTTLS asks for the same pinned client certificates (their scopes open the listeners).
    let smtp_tls = Arc::new(identity::server_config(&id, pins, false)?);
    let submission_tls = Arc::new(identity::server_config(&id, Vec::new(), false)?);
    // The IMAP proxy: the box certificate, no client certificates.
    let imap_tls = Arc::new(identity::server_config(&id, Vec::new(), false)?);

    let docking_listener = std::net::TcpListener::bind(settings.docking.listen)
        .with_context(|| format!("binding the docking API to {}", settings.docking.listen))?;
    let admin_listener = std::net::TcpListener::bind(settings.admin.listen)
        .with_context(|| format!("binding the admin API to {}", settings.admin.listen))?;
    // The directory for partners (`[directory] publish_listen`), when configured.
    let publish = match settings.directory.publish_listen {
        Some(at) => Some((
            std::net::TcpListener::bind(at)
                .with_context(|| format!("binding the certificate directory to {at}"))?,
            identity::server_config(&id, Vec::new(), false)?,
            publish_vault,
        )),
        None => None,
    };
    let publish_per_minute = settings.directory.publish_per_minute;
    let docking_addr = docking_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    // The digests' release links: on the admin listener, as users reach it.
    let release_links =
        quarantine_digest::install(
            &release_key,
            settings.scan.release_url.clone().unwrap_or_else(|| {
                format!("https://{}:{}", settings.smtp.hostname, admin_addr.port())
            }),
            settings.scan.release_link_hours,
        );
    drop(release_key);
    let timeout = settings.docking.request_timeout_secs.duration();

    let stopped = actix_web::rt::System::new().block_on(async move {
        let st = state.clone();
        let docking = HttpServer::new(move || {
            App::new()
                .app_data(st.clone())
                .configure(http::docking_routes)
        })
        .on_connect(http::on_connect)
        .client_request_timeout(Duration::from_secs(30))
        .client_disconnect_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(75))
        .shutdown_timeout(timeout.as_secs().min(30))
        .workers(workers)
        .disable_signals()
        .listen_rustls_0_23(docking_listener, docking_tls)?
        .run();
        let st = state.clone();
        let ad = admin_state.clone();
        let ss = settings_store.clone();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(st.clone())
                .app_data(ad.clone())
                .app_data(ss.clone())
                .configure(admin::routes)
                .configure(webui::routes)
                .configure(admin::quarantine_link::routes)
                .configure(http::admin_routes)
        })
        .client_request_timeout(Duration::from_secs(30))
        .workers(1)
        .shutdown_timeout(10)
        .disable_signals()
        .listen_rustls_0_23(admin_listener, admin_tls)?
        .run();
        // The admin API on DATA/admin.sock (uid-authenticated); the daemon runs without it
        // if it cannot be bound (a data directory path too long for a socket).
        let socket = match admin::socket::bind(&data_dir, settings.admin.socket.as_deref()) {
            Ok((l, path, uid)) => {
                let _ = admin_state.own_uid.set(uid);
                let st = state.clone();
                let ad = admin_state.clone();
                let ss = settings_store.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(st.clone())
                        .app_data(ad.clone())
                        .app_data(ss.clone())
                        .configure(admin::routes)
                        .configure(http::admin_routes)
                })
                .on_connect(admin::socket::on_connect)
                .client_request_timeout(Duration::from_secs(30))
                .workers(1)
                .shutdown_timeout(10)
                .disable_signals()
                .listen_uds(l)?
                .run();
                Some((server, path))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the admin socket is not available");
                None
            }
        };
        if let Some((l, tls, v)) = publish {
            let at = l.local_addr()?;
            actix_web::rt::spawn(directory_publish::server(l, tls, v, publish_per_minute)?);
            console(&format!("listening directory {at}"));
            admin_state.add_listener("directory", at);
        }
        let docking_handle = docking.handle();
        let admin_handle = admin.handle();
        actix_web::rt::spawn(docking);
        actix_web::rt::spawn(admin);
        let socket_handle = socket.map(|(server, path)| {
            let h = server.handle();
            actix_web::rt::spawn(server);
            console(&format!("admin socket {}", path.display()));
            admin_state.add_listener("admin-socket", path.display());
            h
        });
        console(&format!("listening docking {docking_addr}"));
        console(&format!("listening admin {admin_addr}"));
        admin_state.add_listener("docking", docking_addr);
        admin_state.add_listener("admin", admin_addr);

        let submission = gateway::submission::start(gateway::submission::Submission {
            settings: settings.clone(),
            data_dir: data_dir.clone(),
            queue: queue.clone(),
            keys: keys.clone(),
            vault: submission_vault,
            audit: audit.clone(),
            tls: submission_tls,
            workers: state.workers.clone(),
        })
        .await?;
        for (name, addr) in submission.listening() {
            console(&format!("listening {name} {addr}"));
            admin_state.add_listener(name, addr);
        }
        let imap_proxy = imap::start(imap::ImapProxy {
            settings: settings.clone(),
            keys: keys.clone(),
            anchors: anchors.clone(),
            audit: audit.clone(),
            tls: imap_tls,
            workers: state.workers.clone(),
            data_dir: data_dir.clone(),
            cache_key: imap_cache_key,
        })
        .await?;
        // A DNS listener that cannot start is said, not fatal: the admin API must stay up
        // to fix it.
        let dns_server = dns::start(&settings.dns).await.unwrap_or_else(|e| {
            console(&format!("DNS SERVER NOT STARTED: {e:#}"));
            admin_state.listener_failed(&format!("dns not started: {e:#}"));
            None
        });
        for (name, addr) in dns_server.iter().flat_map(|d| d.listening()) {
            console(&format!("listening {name} {addr}"));
            admin_state.add_listener(name, addr);
        }
        if settings.scan.digest_hours > 0 {
            actix_web::rt::spawn(quarantine_digest::digest_loop(
                quarantine_store.clone(),
                queue.clone(),
                release_links,
                settings.scan.clone(),
                settings.smtp.hostname.clone(),
                settings.scan.digest_hours,
            ));
        }
        actix_web::rt::spawn(quarantine::purge_loop(
            quarantine_store,
            settings.scan.quarantine_days,
        ));
        let hand_off = smtp::start(smtp::HandOff {
            settings: settings.clone(),
            data_dir: data_dir.clone(),
            keys,
            anchors,
            audit,
            tls: smtp_tls,
            workers: state.workers.clone(),
            loop_key,
            queue: queue.clone(),
        })
        .await?;
        for (name, addr) in hand_off
            .listening()
            .into_iter()
            .chain(imap_proxy.iter().flat_map(|p| p.listening()))
        {
            console(&format!("listening {name} {addr}"));
            admin_state.add_listener(name, addr);
        }
        tracing::info!(%docking_addr, %admin_addr, "ready");
        console("ready");
        admin_state.set_ready();

        let asked = tokio::select! {
            r = wait_for_signal() => { r?; None }
            k = admin_state.stop.wait() => Some(k),
        };
        tracing::info!(?asked, "stopping");
        hand_off.stop().await;
        submission.stop().await;
        if let Some(p) = imap_proxy {
            p.stop().await;
        }
        if let Some(d) = dns_server {
            d.stop().await;
        }
        tokio::join!(docking_handle.stop(true), admin_handle.stop(true));
        if let Some(h) = socket_handle {
            h.stop(true).await;
        }
        if let Err(e) = vault_at_stop.flush_audit() {
            tracing::error!(error = %e, "the last key uses could not be written to the audit log");
        }
        console("stopped");
        anyhow::Ok(asked)
    })?;
    if let Some(admin::system::Stop::Restart) = stopped {
        // The same program and arguments, in this process (the box's pid file stays right).
        // Every descriptor the daemon opened is close-on-exec, the vault's lock included.
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("the daemon's own program")?;
        console("restarting");
        let e = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec();
        anyhow::bail!("re-executing the daemon failed: {e}");
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colours_off() {
        assert!(colours(None, true));
        assert!(colours(Some("".into()), true));
        assert!(!colours(Some("1".into()), true));
        assert!(
            !colours(Some("0".into()), true),
            "any non-empty value counts"
        );
        assert!(!colours(None, false), "never on a file or pipe");
    }
}
