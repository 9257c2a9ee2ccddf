//! The decrypting IMAP proxy: clients connect with implicit TLS (the box certificate), every
//! command and response is parsed and re-serialised with `imap-codec` (never a byte passed on
//! unparsed), and messages whose top-level type is S/MIME encryption are shown decrypted
//! while the server's copy stays encrypted.
//!
//! - `session.rs`: one client connection, its primary upstream connection (which mirrors the
//!   client's session exactly: same selected mailbox, same MSNs), and a worker connection
//!   (`EXAMINE`, read-only, UID commands only) that downloads the messages to decrypt.
//! - `sealgate_imap::rewrite` (firmware/imap): capability allow-list, `ENABLE` filter, the
//!   FETCH probe and the answer rewrite (no I/O, fuzzed).
//! - `sealgate_imap::view`: the decrypted view of one message and every FETCH item computed
//!   from it (no I/O, fuzzed).
//! - `upstream.rs`: connecting to the organisation's server (implicit TLS, or STARTTLS
//!   required with the handshake's pre-TLS bytes discarded), its certificate verified.
//!
//! **How a FETCH is answered.** When a client's FETCH asks for anything whose value depends
//! on the content (`BODY[...]`, `RFC822*`, `BODYSTRUCTURE`, `BODY`, `ENVELOPE`,
//! `RFC822.SIZE`), the proxy adds `UID` and a probe
//! (`BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE X-SEALGATE-PROBE)]`) to it. Every answer then says
//! whether its message is encrypted; for an encrypted one the worker connection downloads it
//! (`UID FETCH n BODY.PEEK[]`), the user's keys decrypt it (audited), and every content item
//! of the answer is computed from the one decrypted view, so `RFC822.SIZE` and
//! `BODYSTRUCTURE` are right the first time. The view is kept (per account, mailbox,
//! UIDVALIDITY and UID) so the same message always looks the same. The probe and the added
//! UID are removed from the answer; flags, UIDs, MSNs and unsolicited responses pass as the
//! server sent them.

mod cache;
pub mod feedback;
mod limits;
mod oauth;
mod session;
mod starttls;
mod upstream;

pub use cache::{CacheKey, DiskCache, Shown, ViewCache};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sealgate_smime::cert::Certificate;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::audit::AuditLog;
use crate::keys::KeyStore;
use crate::settings::Settings;

/// What the proxy needs from the daemon.
pub struct ImapProxy {
    /// Settings (`[imap]`, `[limits]`).
    pub settings: Settings,
    /// Keys (through [`crate::keys::Acting`], so every decryption is in the vault's chain).
    pub keys: Arc<dyn KeyStore>,
    /// Configured trust anchors (signature checks of decrypted content).
    pub anchors: Arc<Vec<Certificate>>,
    /// The audit log (one record per decryption: user, mailbox, UID, outcome).
    pub audit: Arc<AuditLog>,
    /// The box certificate.
    pub tls: Arc<rustls::ServerConfig>,
    /// The crypto workers shared with the other listeners.
    pub workers: Arc<Semaphore>,
    /// The data directory (the persistent view cache is `DATA/imap-cache/`).
    pub data_dir: std::path::PathBuf,
    /// The view cache's key ([`sealgate_vault::Vault::derived_key`]`("imap view cache")`).
    pub cache_key: zeroize::Zeroizing<[u8; 32]>,
}

/// Sessions of one user at once unless `[imap] max_sessions_per_user` says otherwise.
pub const DEFAULT_SESSIONS_PER_USER: usize = 20;

/// The disk cache's size unless `[imap] cache_max_mb` says otherwise.
pub const DEFAULT_CACHE_MB: u64 = 1024;

/// Client connections at once.
const MAX_SESSIONS: usize = 256;
/// Client connections at once from one address (each costs two server connections).
const MAX_SESSIONS_PER_ADDRESS: usize = 32;

/// Sessions per client address; a [`PerAddress`] slot is given back when dropped.
#[derive(Default)]
struct AddressCounts(Mutex<HashMap<std::net::IpAddr, usize>>);

struct PerAddress {
    counts: Arc<AddressCounts>,
    ip: std::net::IpAddr,
}

impl AddressCounts {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<PerAddress> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        if let Ok(mut m) = self.counts.0.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The running proxy.
pub struct Running {
    addr: SocketAddr,
    starttls_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound listeners (`imap`: implicit TLS; `imap-starttls`).
    pub fn listening(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut v = vec![("imap", self.addr)];
        if let Some(a) = self.starttls_addr {
            v.push(("imap-starttls", a));
        }
        v
    }

    /// Stops accepting and ends the sessions.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// Whether the proxy `imap` describes could start as far as its trust anchors go (a settings
/// change is refused rather than found out when the daemon does not start).
pub fn check_upstream(imap: &crate::settings::Imap) -> anyhow::Result<()> {
    if let Some(target) = imap.upstream.clone() {
        upstream::Connector::new(target, imap.upstream_ca.as_deref())?;
    }
    Ok(())
}

/// Starts the proxy if `[imap]` is configured (nothing listens otherwise).
pub async fn start(p: ImapProxy) -> anyhow::Result<Option<Running>> {
    let (Some(listen), Some(target)) = (p.settings.imap.listen, p.settings.imap.upstream.clone())
    else {
        return Ok(None);
    };
    let connector = upstream::Connector::new(target, p.settings.imap.upstream_ca.as_deref())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the IMAP proxy to {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let max_mb = p.settings.imap.cache_max_mb.unwrap_or(DEFAULT_CACHE_MB);
    let disk = if max_mb == 0 {
        None
    } else {
        let root = p.data_dir.join("imap-cache");
        let key = p.cache_key.clone();
        let d = tokio::task::spawn_blocking(move || {
            DiskCache::open(&root, &key, max_mb.saturating_mul(1024 * 1024))
        })
        .await??;
        Some(d)
    };
    let oauth = match &p.settings.imap.oauth_introspection {
        Some(url) => Some(Arc::new(oauth::Introspection::new(
            url,
            p.settings.imap.oauth_introspection_ca.as_deref(),
            p.settings.imap.oauth_client_id.as_deref(),
            p.settings.imap.oauth_client_secret_file.as_deref(),
            p.settings.imap.oauth_username_claim.as_deref(),
        )?)),
        None => None,
    };
    let shared = Arc::new(session::Shared {
        feedback: feedback::Feedback::from_settings(&p.settings, &p.data_dir),
        oauth,
        connector,
        keys: p.keys,
        anchors: p.anchors,
        audit: p.audit,
        workers: p.workers,
        cache: ViewCache::new(256 * 1024 * 1024, disk),
        encrypt_append: p.settings.imap.encrypt_append.unwrap_or(true),
        logins: limits::Logins::new(
            p.settings
                .imap
                .max_sessions_per_user
                .unwrap_or(DEFAULT_SESSIONS_PER_USER),
        ),
        login_map: p
            .settings
            .imap
            .logins
            .iter()
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_lowercase()))
            .collect(),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(p.tls);
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let per_address = Arc::new(AddressCounts::default());
    let mut tasks = Vec::new();
    let mut starttls_addr = None;
    if let Some(a) = p.settings.imap.listen_starttls {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| anyhow::anyhow!("binding the IMAP proxy (STARTTLS) to {a}: {e}"))?;
        starttls_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(accept_loop(
            l,
            true,
            acceptor.clone(),
            shared.clone(),
            sessions.clone(),
            per_address.clone(),
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(accept_loop(
        listener,
        false,
        acceptor,
        shared,
        sessions,
        per_address,
        stopped,
    )));
    Ok(Some(Running {
        addr,
        starttls_addr,
        stop,
        tasks,
    }))
}

/// Accepts clients on one listener: implicit TLS, or (`starttls`) the plain-text phase
/// first. Both listeners share the session and per-address limits.
async fn accept_loop(
    listener: TcpListener,
    starttls: bool,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<session::Shared>,
    sessions: Arc<Semaphore>,
    per_address: Arc<AddressCounts>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "imap: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Responses go out as written (a tagged OK after a literal must not wait for the
        // client's delayed ACK: Nagle cost 40 ms per FETCH).
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            // Too many sessions: closed at once (no TLS work spent on it).
            drop(tcp);
            continue;
        };
        let Some(slot) = per_address.take(peer.ip().to_canonical(), MAX_SESSIONS_PER_ADDRESS)
        else {
            tracing::info!(%peer, "imap: too many sessions from one address");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            let run = async {
                let tcp = if starttls {
                    match starttls::negotiate(tcp).await {
                        Ok(Some(t)) => t,
                        _ => return,
                    }
                } else {
                    tcp
                };
                let tls = match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
                // After STARTTLS the client sends CAPABILITY; it gets no second greeting.
                if let Err(e) = session::run(shared, tls, peer, !starttls).await {
                    tracing::info!(%peer, error = %e, "imap: session ended");
                }
            };
            tokio::select! {
                _ = run => {}
                _ = stop.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_address_are_bounded_and_given_back() {
        let c = Arc::new(AddressCounts::default());
        let a: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let b: std::net::IpAddr = "192.0.2.2".parse().expect("ip");
        let held: Vec<PerAddress> = (0..3).filter_map(|_| c.take(a, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(c.take(a, 3).is_none());
        assert!(c.take(b, 3).is_some());
        drop(held);
        assert!(c.take(a, 3).is_some());
    }
}
