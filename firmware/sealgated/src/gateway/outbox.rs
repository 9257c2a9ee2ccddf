//! Submitted mail on its way to the organisation's server (`[submission] relay`).
//!
//! The narrow interface the submission listener uses ([`Outbox::enqueue`] and the delivery
//! task [`Outbox::run`]) until the shared durable queue of issue 10 §1 takes its place.
//! **Durable before `250`**: every copy (message and envelope) is written to a temporary
//! file, fsynced, renamed into `DATA/submission/outbox/`, and the folder fsynced, before
//! `enqueue` returns. Delivery: plain SMTP through the protocol crate's client side
//! (commands written safely, replies parsed, DATA dot-stuffed with CRLF line ends); a
//! temporary failure is tried again every `retry`; a permanent refusal moves the copy, with
//! the reason, to `DATA/submission/held/` (no bounce yet: DSNs come with the shared queue).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealgate_smtp::client::{Command, ReplyReader, ServerReply};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::policy::Copy;

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
    relay: SocketAddr,
    hostname: String,
    retry: Duration,
    wake: tokio::sync::Notify,
}

/// How long the relay may take to answer one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

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
        relay: SocketAddr,
        hostname: &str,
        retry: Duration,
    ) -> anyhow::Result<Arc<Outbox>> {
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
        match send(self.relay, &self.hostname, &env.from, &env.to, &msg).await {
            Ok(refused) => {
                tracing::info!(copy = name, login = %env.login, recipients = env.to.len() - refused.len(), "relayed");
                if !refused.is_empty() {
                    let why = refused
                        .iter()
                        .map(|(r, reply)| format!("{r}: {reply}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    env.to = refused.into_iter().map(|(r, _)| r).collect();
                    self.hold(name, env, &msg, why);
                }
                let _ = std::fs::remove_file(&json);
                let _ = std::fs::remove_file(&eml);
                let _ = sync_dir(&self.dir);
            }
            Err(Failure::Temporary(why)) => {
                tracing::warn!(copy = name, attempts = env.attempts, reason = %why, "relay failed; will retry");
                if let Ok(j) = serde_json::to_vec(&env) {
                    let tmp = self.dir.join(format!("{name}.json.tmp"));
                    let _ = std::fs::remove_file(&tmp);
                    if write_synced(&tmp, &j).is_ok() {
                        let _ = std::fs::rename(&tmp, &json);
                    }
                }
            }
            Err(Failure::Permanent(why)) => {
                tracing::warn!(copy = name, reason = %why, "relay refused the copy: held");
                self.hold(name, env, &msg, why);
                let _ = std::fs::remove_file(&json);
                let _ = std::fs::remove_file(&eml);
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

enum Failure {
    Temporary(String),
    Permanent(String),
}

struct Conn {
    tcp: TcpStream,
    replies: ReplyReader,
}

impl Conn {
    async fn reply(&mut self) -> Result<ServerReply, Failure> {
        let mut buf = [0u8; 4096];
        loop {
            match self.replies.next_reply() {
                Some(Ok(r)) => return Ok(r),
                Some(Err(e)) => return Err(Failure::Temporary(format!("bad reply: {e:?}"))),
                None => {}
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.tcp.read(&mut buf))
                .await
                .map_err(|_| Failure::Temporary("the relay did not answer".into()))?
                .map_err(|e| Failure::Temporary(format!("read: {e}")))?;
            if n == 0 {
                return Err(Failure::Temporary("the relay closed the connection".into()));
            }
            self.replies.feed(&buf[..n]);
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.tcp
            .write_all(bytes)
            .await
            .map_err(|e| Failure::Temporary(format!("write: {e}")))
    }

    async fn command(&mut self, c: Command<'_>) -> Result<ServerReply, Failure> {
        let line = c.encode().map_err(|e| Failure::Permanent(e.to_string()))?;
        self.write(&line).await?;
        self.reply().await
    }
}

fn classify(what: &str, r: &ServerReply) -> Failure {
    let why = format!("{what}: {r}");
    if r.is_transient() {
        Failure::Temporary(why)
    } else {
        Failure::Permanent(why)
    }
}

/// One delivery; returns the recipients the relay refused permanently (with its reply).
async fn send(
    relay: SocketAddr,
    hostname: &str,
    from: &str,
    to: &[String],
    msg: &[u8],
) -> Result<Vec<(String, String)>, Failure> {
    let tcp = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(relay))
        .await
        .map_err(|_| Failure::Temporary(format!("connect to {relay}: timeout")))?
        .map_err(|e| Failure::Temporary(format!("connect to {relay}: {e}")))?;
    let mut c = Conn {
        tcp,
        replies: ReplyReader::new(),
    };
    let greeting = c.reply().await?;
    if !greeting.is_positive() {
        return Err(classify("greeting", &greeting));
    }
    let r = c.command(Command::Ehlo(hostname)).await?;
    if !r.is_positive() {
        return Err(classify("EHLO", &r));
    }
    let r = c
        .command(Command::MailFrom {
            address: from,
            size: None,
            eight_bit: false,
            smtputf8: false,
        })
        .await?;
    if !r.is_positive() {
        return Err(classify("MAIL", &r));
    }
    let mut refused = Vec::new();
    let mut accepted = 0;
    let mut transient = None;
    for rcpt in to {
        let r = c.command(Command::RcptTo(rcpt)).await?;
        if r.is_positive() {
            accepted += 1;
        } else if r.is_transient() {
            transient = Some(format!("RCPT {rcpt}: {r}"));
        } else {
            refused.push((rcpt.clone(), r.to_string()));
        }
    }
    // A recipient deferred: the whole copy is tried again later (none was sent yet).
    if let Some(why) = transient {
        let _ = c.command(Command::Rset).await;
        return Err(Failure::Temporary(why));
    }
    if accepted == 0 {
        return Err(Failure::Permanent(
            refused
                .iter()
                .map(|(r, w)| format!("{r}: {w}"))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    let r = c.command(Command::Data).await?;
    if !r.is_intermediate() {
        return Err(classify("DATA", &r));
    }
    c.write(&sealgate_smtp::dot::data_section(msg)).await?;
    let r = c.reply().await?;
    if !r.is_positive() {
        return Err(classify("end of DATA", &r));
    }
    let _ = c.command(Command::Quit).await;
    Ok(refused)
}
