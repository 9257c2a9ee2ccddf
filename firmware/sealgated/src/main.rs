//! `sealgated`: Sealgate's gateway daemon.
//!
//! One process: the docking API (HTTPS) for third-party mail security gateways, the SMTP
//! hand-off listeners, and the admin listener (health, first-boot setup and the admin API,
//! `admin/`). It reads
//! one settings file (`--settings`, else `DATA/settings.toml` if present, else the built-in
//! defaults) and the key vault in the data directory.
//!
//! Console (stdout) lines, which the box's init, the QEMU system tests and the docking tests
//! read: the TLS certificate's fingerprint, the one-time setup token while setup is pending,
//! `sealgated: listening NAME ADDR` per listener, then `sealgated: ready`; on SIGTERM or
//! SIGINT the listeners drain and `sealgated: stopped` is printed. Logs (`tracing`) go to
//! stderr and, as JSON lines, to `DATA/log/sealgated.log`.

#![forbid(unsafe_code)]

mod admin;
mod audit;
mod certs;
mod docking;
mod http;
mod identity;
mod keys;
mod problem;
mod settings;
mod smtp;
mod tokens;

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
}

fn main() -> ExitCode {
    // Before any other thread exists: keep libtss2's own log lines off the console.
    sealgate_tpm::quiet_library_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            console(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// One console line, flushed at once (readers wait for them).
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sealgated: {line}");
    let _ = out.flush();
}

fn init_logging(data_dir: &Path, level: &str) -> anyhow::Result<()> {
    let dir = data_dir.join("log");
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sealgated.log"))?;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).context("[log] level")?;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(true),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(file)),
        )
        .try_init()
        .context("logging")?;
    Ok(())
}

fn open_vault(data_dir: &Path, cli: &Cli) -> anyhow::Result<Vault> {
    let mut sealer: Box<dyn Sealer> = if cli.danger_software_sealer {
        Box::new(SoftwareSealer::danger_new())
    } else {
        Box::new(TpmSealer::new(cli.tpm.as_deref().unwrap_or(DEFAULT_TCTI)))
    };
    if cli.danger_software_sealer {
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
    let mut settings = match &cli.settings {
        Some(p) => Settings::load(p)?,
        None if data_dir.join("settings.toml").exists() => {
            Settings::load(&data_dir.join("settings.toml"))?
        }
        None => Settings::default(),
    };
    if let Some(a) = cli.listen_docking {
        settings.docking.listen = a;
    }
    if let Some(a) = cli.listen_admin {
        settings.admin.listen = a;
    }
    init_logging(&data_dir, &settings.log.level)?;
    tracing::info!(data_dir = %data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting");

    let vault = open_vault(&data_dir, &cli)?;
    let id = identity::load_or_create(&data_dir, &settings)?;
    if id.created {
        console("TLS certificate created");
    }
    console(&format!(
        "TLS certificate SHA-256 fingerprint: {}",
        identity::colon_hex(&id.fingerprint)
    ));

    let tokens = tokens::TokenStore::new(&data_dir);
    if tokens.setup_pending() {
        let t = tokens.issue_setup_token()?;
        console(&format!(
            "setup token (one-time; POST /api/v1/setup on the admin port): {t}"
        ));
    }
    let anchors = match &settings.docking.trust_anchors {
        Some(p) => sealgate_smime::cert::Certificate::parse_many(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        None => Vec::new(),
    };
    let workers = match settings.docking.crypto_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let audit = Arc::new(audit::AuditLog::open(&data_dir)?);
    let vault = Arc::new(vault);
    let admin_state = web::Data::new(admin::AdminState::new(vault.clone()));
    let keys: Arc<dyn keys::KeyDirectory> =
        Arc::new(keys::Cached::new(vault, Duration::from_secs(30)));
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

    let docking_listener = std::net::TcpListener::bind(settings.docking.listen)
        .with_context(|| format!("binding the docking API to {}", settings.docking.listen))?;
    let admin_listener = std::net::TcpListener::bind(settings.admin.listen)
        .with_context(|| format!("binding the admin API to {}", settings.admin.listen))?;
    let docking_addr = docking_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let timeout = settings.docking.request_timeout_secs.duration();

    actix_web::rt::System::new().block_on(async move {
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
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(st.clone())
                .app_data(ad.clone())
                .configure(admin::routes)
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
        let socket = match admin::socket::bind(&data_dir) {
            Ok((l, path, uid)) => {
                let _ = admin_state.own_uid.set(uid);
                let st = state.clone();
                let ad = admin_state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(st.clone())
                        .app_data(ad.clone())
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

        let hand_off = smtp::start(smtp::HandOff {
            settings: settings.clone(),
            data_dir: data_dir.clone(),
            keys,
            anchors,
            audit,
            tls: smtp_tls,
            workers: state.workers.clone(),
        })
        .await?;
        for (name, addr) in hand_off.listening() {
            console(&format!("listening {name} {addr}"));
            admin_state.add_listener(name, addr);
        }
        tracing::info!(%docking_addr, %admin_addr, "ready");
        console("ready");

        wait_for_signal().await?;
        tracing::info!("stopping");
        hand_off.stop().await;
        tokio::join!(docking_handle.stop(true), admin_handle.stop(true));
        if let Some(h) = socket_handle {
            h.stop(true).await;
        }
        console("stopped");
        anyhow::Ok(())
    })
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
