//! Submitted mail on its way to the organisation's server (`[submission] relay`).
//!
//! The narrow interface the submission listener uses ([`Outbox::enqueue`] and the delivery
//! task [`Outbox::run`]) until the shared durable queue of issue 10 §1 takes its place.
//! **Durable before `250`**: every copy (message and envelope) is written to a temporary
//! file, fsynced, renamed into `DATA/submission/outbox/`, and the folder fsynced, before
//! `enqueue` returns. Delivery: the shared outbound client (`smtp::client`: STARTTLS
//! opportunistic, PIPELINING, SIZE, DATA dot-stuffed with CRLF line ends); recipients
//! deferred are tried again every `retry`; recipients refused for good are moved, with the
//! reason, to `DATA/submission/held/` (no bounce yet: DSNs are the shared queue's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::Copy;
use crate::smtp::client::NextHop;
use crate::smtp::queue::Fate;

/// One copy's envelope (`ID.json` next to `ID.eml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    from: String,
    to: Vec<String>,
    /// Who submitted it (the login), for the log.
    login: String,
    /// Delivery attempts so far.
    attempts: u32,
    /// Why it was held (in `held/` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held_reason: Option<String>,
}

/// The outbox in `DATA/submission/`.
pub struct Outbox {
    dir: PathBuf,
    held: PathBuf,
    relay: NextHop,
    hostname: String,
    retry: Duration,
    wake: tokio::sync::Notify,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Outbox {
    /// Opens (creates) `data_dir/submission/outbox/` and `held/`.
    pub fn open(
        data_dir: &Path,
        settings: &crate::settings::Settings,
        relay: SocketAddr,
        retry: Duration,
    ) -> anyhow::Result<Arc<Outbox>> {
        // The shared outbound client, STARTTLS opportunistic (the organisation's server is
        // on the internal network; `relay_tls` settings may follow).
        let mut hop = settings.clone();
        hop.smtp.next_hop = Some(relay);
        hop.smtp.next_hop_tls = crate::settings::TlsMode::Opportunistic;
        hop.smtp.next_hop_ca = None;
        hop.smtp.next_hop_fingerprint = None;
        hop.smtp.next_hop_name = None;
        let relay = NextHop::from_settings(&hop)?
            .ok_or_else(|| anyhow::anyhow!("[submission] relay is not set"))?;
        let hostname = settings.smtp.hostname.as_str();
        let base = data_dir.join("submission");
        let dir = base.join("outbox");
        let held = base.join("held");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&held)?;
        // Temporary files of a write a crash interrupted: never acknowledged, so removed.
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Arc::new(Outbox {
            dir,
            held,
            relay,
            hostname: hostname.to_string(),
            retry,
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// Stores every copy durably (blocking: call it off the executor); returns the queue id
    /// named in the `250`.
    pub fn enqueue(&self, login: &str, from: &str, copies: &[Copy]) -> anyhow::Result<String> {
        let r = crate::identity::random(8)?;
        let id = format!(
            "{}-{}",
            time::OffsetDateTime::now_utc().unix_timestamp(),
            crate::identity::hex(&r)
        );
        let mut names = Vec::new();
        for (n, c) in copies.iter().enumerate() {
            let name = format!("{id}.{n}");
            let env = Envelope {
                from: from.to_string(),
                to: c.recipients.clone(),
                login: login.to_string(),
                attempts: 0,
                held_reason: None,
            };
            write_synced(&self.dir.join(format!("{name}.eml.tmp")), &c.message)?;
            write_synced(
                &self.dir.join(format!("{name}.json.tmp")),
                &serde_json::to_vec(&env)?,
            )?;
            names.push(name);
        }
        // The message before its envelope: an envelope always has its message.
        for name in &names {
            std::fs::rename(
                self.dir.join(format!("{name}.eml.tmp")),
                self.dir.join(format!("{name}.eml")),
            )?;
        }
        for name in &names {
            std::fs::rename(
                self.dir.join(format!("{name}.json.tmp")),
                self.dir.join(format!("{name}.json")),
            )?;
        }
        sync_dir(&self.dir)?;
        self.wake.notify_one();
        Ok(id)
    }

    /// The copies waiting, oldest first.
    fn waiting(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|r| {
                r.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".json"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Delivers until `stop` says so: at start, after each `enqueue`, and every `retry`.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            for name in self.waiting() {
                if *stop.borrow() {
                    return;
                }
                self.deliver_one(&name).await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.retry) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn deliver_one(&self, name: &str) {
        let json = self.dir.join(format!("{name}.json"));
        let eml = self.dir.join(format!("{name}.eml"));
        let (mut env, msg) = match (std::fs::read(&json), std::fs::read(&eml)) {
            (Ok(j), Ok(m)) => match serde_json::from_slice::<Envelope>(&j) {
                Ok(e) => (e, m),
                Err(e) => {
                    tracing::error!(copy = name, error = %e, "unreadable outbox envelope: held");
                    self.hold_files(name);
                    return;
                }
            },
            _ => return,
        };
        env.attempts += 1;
        let fates =
            crate::smtp::client::send(&self.relay, &self.hostname, &env.from, &env.to, &msg).await;
        let (mut again, mut refused, mut why_again) = (Vec::new(), Vec::new(), None);
        for (r, f) in env.to.iter().zip(fates) {
            match f {
                Fate::Delivered(_) => {}
                Fate::Temporary(w) => {
                    again.push(r.clone());
                    why_again = Some(w);
                }
                Fate::Permanent(w) => refused.push(format!("{r}: {w}")),
            }
        }
        let delivered = env.to.len() - again.len() - refused.len();
        if delivered > 0 {
            tracing::info!(copy = name, login = %env.login, recipients = delivered, "relayed");
        }
        if !refused.is_empty() {
            tracing::warn!(copy = name, refused = %refused.join("; "), "the relay refused recipients: held");
            let mut held = env.clone();
            held.to = env
                .to
                .iter()
                .filter(|r| refused.iter().any(|x| x.starts_with(&format!("{r}: "))))
                .cloned()
                .collect();
            self.hold(name, held, &msg, refused.join("; "));
        }
        if again.is_empty() {
            let _ = std::fs::remove_file(&json);
            let _ = std::fs::remove_file(&eml);
            let _ = sync_dir(&self.dir);
            return;
        }
        tracing::warn!(copy = name, attempts = env.attempts, reason = %why_again.unwrap_or_default(), "relay failed; will retry");
        env.to = again;
        if let Ok(j) = serde_json::to_vec(&env) {
            let tmp = self.dir.join(format!("{name}.json.tmp"));
            let _ = std::fs::remove_file(&tmp);
            if write_synced(&tmp, &j).is_ok() {
                let _ = std::fs::rename(&tmp, &json);
                let _ = sync_dir(&self.dir);
            }
        }
    }

    fn hold(&self, name: &str, mut env: Envelope, msg: &[u8], why: String) {
        env.held_reason = Some(why);
        let ok = write_synced(&self.held.join(format!("{name}.eml")), msg).is_ok()
            && serde_json::to_vec(&env)
                .ok()
                .is_some_and(|j| write_synced(&self.held.join(format!("{name}.json")), &j).is_ok())
            && sync_dir(&self.held).is_ok();
        if !ok {
            tracing::error!(copy = name, "could not write the held copy");
        }
    }

    fn hold_files(&self, name: &str) {
        for ext in ["eml", "json"] {
            let _ = std::fs::rename(
                self.dir.join(format!("{name}.{ext}")),
                self.held.join(format!("{name}.{ext}")),
            );
        }
    }
}
