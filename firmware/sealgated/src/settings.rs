//! The one settings model: a TOML file, unknown fields refused, every default written once
//! here (the `Default` impls), every value that can be wrong parsed into a typed value at the
//! edge (the newtypes below), so the rest of the daemon never re-checks them.
//!
//! Two kinds of defaults, kept apart on purpose:
//!
//! - **Developer-host defaults** (the `Default` impls, [`Settings::developer`]): with no file
//!   `sealgated --data-dir DIR --danger-software-sealer` runs on a developer's host with
//!   loopback listeners and no SMTP hand-off; an empty file means the same.
//! - **The box's shipped settings** ([`BOX_SETTINGS`], the text of
//!   `rootfs/overlay/etc/sealgate/settings.toml` compiled in): network-facing listeners.
//!   With `sealgated --box` ([`Settings::load_box`]) the data partition's file is read *over*
//!   them, so a key it lacks takes the box's value, not the developer's; and a file that is
//!   missing, empty, not UTF-8 or invalid is never taken for "all defaults": the daemon runs
//!   on the shipped box settings and says why ([`BoxSettings::fallback`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sealgate_smime::crypto::CipherChoice;
use serde::{Deserialize, Serialize};

/// All settings of the daemon.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The docking API (HTTPS) and its policies.
    pub docking: Docking,
    /// The admin HTTPS listener (health, first-boot setup).
    pub admin: Admin,
    /// The TLS certificate of every listener.
    pub tls: Tls,
    /// Who may call the docking API.
    pub auth: Auth,
    /// The SMTP hand-off listeners.
    pub smtp: Smtp,
    /// Logging.
    pub log: Log,
    /// The work one message may cost the engine.
    pub limits: Limits,
    /// The certificate directory (`[directory]`, `[[directory.ldap]]`, `[[directory.http]]`).
    pub directory: sealgate_directory::Settings,
    /// The durable SMTP queue (retries, lifetime, loops).
    pub queue: Queue,
    /// Mail submission by employees' mail clients (587 STARTTLS, 465 implicit TLS).
    pub submission: Submission,
    /// Mail from the Internet (MX).
    pub inbound: Inbound,
    /// What submitted mail gets: signature, encryption, by level.
    pub policy: Policy,
    /// The decrypting IMAP proxy.
    pub imap: Imap,
    /// The split-horizon DNS server (`[dns]`, `[[dns.views]]`).
    pub dns: sealgate_dns::Settings,
    /// The box's network (`[[network.interfaces]]`, `[[network.routes]]`).
    pub network: crate::network::Settings,
    /// Content scanning (`[scan]`, `[[scan.dlp]]`): `scan.rs`, `sealgate-scan`.
    pub scan: sealgate_scan::Settings,
    /// DKIM signing of submission mail (`[[dkim]]`): `dkim_sign.rs`.
    pub dkim: Vec<crate::dkim_sign::DkimKey>,
    /// The HTTP proxy of the box's update downloads (`[proxy]`).
    pub proxy: Proxy,
}

/// `[proxy]`: an HTTP proxy between the box and the Internet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// `http://HOST:PORT`: an update fetched from a URL (`POST /api/v1/admin/update/url`)
    /// goes through it with `CONNECT`; TLS runs end to end through the tunnel and the server's
    /// certificate is verified as without a proxy. Default: none (direct connections).
    pub url: Option<String>,
}

/// `[docking]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Docking {
    /// Where the docking API listens (`--listen-docking` overrides it).
    pub listen: SocketAddr,
    /// Largest message accepted (bytes); larger requests get 413.
    pub max_message_bytes: ByteCount,
    /// Request bodies held in memory at once, all requests together (bytes); a request
    /// waits (within its timeout) for room before its body is read, so many large uploads
    /// cost at most this much plus the running operations.
    pub max_buffered_bytes: ByteCount,
    /// Seconds a request may take to arrive and to wait for a crypto worker.
    pub request_timeout_secs: Seconds,
    /// Crypto operations running at once (0: one per CPU).
    pub crypto_workers: usize,
    /// Requests allowed to wait for a crypto worker; beyond that, 503 + `Retry-After`.
    pub crypto_queue: usize,
    /// What `encrypt` does with recipients without a certificate when the request does not say.
    pub missing: MissingPolicy,
    /// Whether `encrypt` adds the sender's own certificate as a recipient.
    pub sender_copy: bool,
    /// Whether `encrypt` signs with the sender's key.
    pub sign: SignPolicy,
    /// Content cipher for `encrypt`.
    pub cipher: Cipher,
    /// PEM file of trust anchors for signature chains (besides the vault's own CA).
    pub trust_anchors: Option<PathBuf>,
    /// Accept signatures with SHA-1 or RSA keys under 2048 bits (reported as weak). Default:
    /// such signatures are `weak` and the verdict invalid.
    pub allow_weak_signatures: bool,
}

impl Default for Docking {
    fn default() -> Self {
        Docking {
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            max_message_bytes: ByteCount(64 * 1024 * 1024),
            max_buffered_bytes: ByteCount(256 * 1024 * 1024),
            request_timeout_secs: Seconds(120),
            crypto_workers: 0,
            crypto_queue: 64,
            missing: MissingPolicy::Reject,
            sender_copy: true,
            sign: SignPolicy::IfKey,
            cipher: Cipher(CipherChoice::Aes256Cbc),
            trust_anchors: None,
            allow_weak_signatures: false,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Where the admin API listens (`--listen-admin` overrides it).
    pub listen: SocketAddr,
    /// The admin API's local Unix socket (default: `DATA/admin.sock`). When it is elsewhere
    /// (the box: under `/run/sealgate/`), `DATA/admin.sock` is made a link to it, so
    /// `sealctl --data-dir DATA` finds the daemon.
    pub socket: Option<PathBuf>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 8440)),
            socket: None,
        }
    }
}

/// `[tls]`: both or neither; without them the box's own self-signed certificate is used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Failed authentications from one source address within `failure_window_secs` after
    /// which that address's further failed attempts get 429 until the window ends (valid
    /// credentials from it still pass).
    pub max_failures: u32,
    /// The window of `max_failures`.
    pub failure_window_secs: Seconds,
    /// Clients authenticated by a pinned TLS client certificate.
    pub clients: Vec<PinnedClient>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            max_failures: 10,
            failure_window_secs: Seconds(60),
            clients: Vec::new(),
        }
    }
}

/// `[[auth.clients]]`: one client certificate, pinned by its SHA-256 fingerprint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedClient {
    /// The client's name in the audit log.
    pub name: String,
    /// SHA-256 of the certificate's DER (hex, colons allowed).
    pub sha256: Fingerprint,
    /// What it may call.
    pub scopes: Vec<Scope>,
}

/// `[smtp]`: the hand-off listeners; each is off unless given, and both need `next_hop`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// Mail taken here is decrypted and relayed.
    pub decrypt_listen: Option<SocketAddr>,
    /// Mail taken here is encrypted (and signed, by policy) and relayed.
    pub encrypt_listen: Option<SocketAddr>,
    /// Where results go (plain SMTP).
    pub next_hop: Option<SocketAddr>,
    /// Our name in the greeting and EHLO.
    pub hostname: String,
    /// Seconds between delivery attempts of a spooled message.
    pub retry_secs: Seconds,
    /// Client networks that may send mail (default: loopback only).
    pub allow_addresses: Vec<Cidr>,
    /// Client networks that may connect but send mail only after STARTTLS with a pinned
    /// `[[auth.clients]]` certificate whose scopes include the listener's (`decrypt` or
    /// `encrypt`). Every other client gets `554` at connect.
    pub certificate_addresses: Vec<Cidr>,
    /// SMTP sessions at once, both listeners together; beyond that `421`.
    pub max_sessions: usize,
    /// SMTP sessions at once from one client address; beyond that `421`.
    pub max_sessions_per_address: usize,
    /// The longest an SMTP session may last, whatever it does.
    pub session_timeout_secs: Seconds,
    /// Disk the spool may use (queued and held messages together); beyond that `452`.
    pub spool_max_bytes: ByteCount,
    /// Processing attempts that ended in a crash (or a daemon stop) after which a message
    /// is held instead of being tried again.
    pub max_processing_attempts: u32,
    /// What the encrypt listener does when a message cannot be encrypted (including
    /// recipients without a certificate under `[docking] missing = "reject"`): `hold` it in
    /// `DATA/spool/held/` with the reason, or `send-plain` (relay the cleartext).
    pub encrypt_failure: EncryptFailure,
    /// TLS to `next_hop`: `opportunistic` (STARTTLS when offered, certificate not enforced,
    /// plain if the handshake fails), `require` (STARTTLS and a verified certificate, else
    /// the message waits) or `none`.
    pub next_hop_tls: TlsMode,
    /// Trust anchors (PEM) for the next hop's certificate instead of the system's roots.
    pub next_hop_ca: Option<PathBuf>,
    /// The next hop's certificate pinned by its SHA-256 fingerprint (instead of a chain).
    pub next_hop_fingerprint: Option<Fingerprint>,
    /// The name the next hop's certificate must carry (default: its IP address).
    pub next_hop_name: Option<String>,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            decrypt_listen: None,
            encrypt_listen: None,
            next_hop: None,
            hostname: "sealgate.localdomain".into(),
            retry_secs: Seconds(30),
            allow_addresses: vec![Cidr::LOOPBACK_V4, Cidr::LOOPBACK_V6],
            certificate_addresses: Vec::new(),
            max_sessions: 64,
            max_sessions_per_address: 8,
            session_timeout_secs: Seconds(900),
            spool_max_bytes: ByteCount(1024 * 1024 * 1024),
            max_processing_attempts: 3,
            encrypt_failure: EncryptFailure::Hold,
            next_hop_tls: TlsMode::Opportunistic,
            next_hop_ca: None,
            next_hop_fingerprint: None,
            next_hop_name: None,
        }
    }
}

/// TLS to a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TlsMode {
    /// Plain SMTP, STARTTLS never tried.
    None,
    /// STARTTLS when offered; the certificate is not enforced.
    Opportunistic,
    /// STARTTLS with a verified certificate, or no delivery.
    Require,
}

impl TryFrom<String> for TlsMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "none" => TlsMode::None,
            "opportunistic" => TlsMode::Opportunistic,
            "require" => TlsMode::Require,
            other => {
                return Err(format!("{other:?}: use none, opportunistic or require"));
            }
        })
    }
}

/// `[queue]`: the durable queue every SMTP role shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// The first retry after a temporary failure (default: `[smtp] retry_secs`); each
    /// further one waits twice as long, up to `retry_max_secs`.
    pub retry_min_secs: Option<Seconds>,
    /// The longest wait between two attempts.
    pub retry_max_secs: Seconds,
    /// How long a message may wait for delivery before it is returned to its sender with a
    /// delivery status notification (seconds; default 5 days).
    pub lifetime_secs: u64,
    /// A message with more `Received` fields than this is looping: it is returned, not sent.
    pub max_received: usize,
    /// A message carrying more of this box's own valid loop markers (`X-Sealgate-Loop`, one
    /// per pass through the box) than this is looping: the MX and submission refuse it
    /// (`554 5.4.6`).
    pub max_loop_markers: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            retry_min_secs: None,
            retry_max_secs: Seconds(3600),
            lifetime_secs: 5 * 86_400,
            max_received: 30,
            max_loop_markers: 2,
        }
    }
}

/// `[smtp] encrypt_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EncryptFailure {
    /// Keep the message in `DATA/spool/held/` with the reason (never relay cleartext).
    Hold,
    /// Relay the message unencrypted, with a `result=failed` header.
    SendPlain,
}

impl TryFrom<String> for EncryptFailure {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "hold" => EncryptFailure::Hold,
            "send-plain" => EncryptFailure::SendPlain,
            other => {
                return Err(format!(
                    "encrypt_failure = {other:?}: use hold or send-plain"
                ));
            }
        })
    }
}

/// An address block, `192.0.2.0/24`, `2001:db8::/32`, or one address (one parser with the DNS
/// server's views).
pub use sealgate_dns::Network as Cidr;

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter (`info`, `sealgated=debug`, ...).
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// `[limits]`: bounds on the work one message (HTTPS or SMTP) can make the engine do. A
/// message is attacker-controlled: each recipient entry naming a key of the box would cost a
/// private-key operation, a vault audit entry and a content decryption, each signer a
/// signature and chain check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Recipient entries read in one encrypted layer (1..=65536); a message with more is
    /// refused before any key is used.
    pub max_recipient_entries: usize,
    /// Signers verified in one signed layer (1..=1024); further signers are not verified and
    /// make the verdict invalid.
    pub max_signers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let engine = sealgate_smime::Limits::default();
        Limits {
            max_recipient_entries: engine.max_recipient_entries,
            max_signers: engine.max_signers,
        }
    }
}

impl Limits {
    /// The engine's limits.
    pub fn engine(&self) -> sealgate_smime::Limits {
        sealgate_smime::Limits {
            max_recipient_entries: self.max_recipient_entries,
            max_signers: self.max_signers,
        }
    }
}

/// `[imap]`: the decrypting IMAP proxy; off unless both `listen` and `upstream` are given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Imap {
    /// Where clients connect (implicit TLS with the box certificate; the box's port is 993).
    pub listen: Option<SocketAddr>,
    /// The organisation's IMAP server: `imaps://HOST:PORT` (implicit TLS) or
    /// `imap://HOST:PORT` (STARTTLS, required).
    pub upstream: Option<ImapUpstream>,
    /// PEM trust anchors for the upstream's certificate (default: the system's roots).
    pub upstream_ca: Option<PathBuf>,
    /// The persistent cache of decrypted views (`DATA/imap-cache/`, encrypted), in MiB
    /// (default 1024; 0: kept in memory only).
    pub cache_max_mb: Option<u64>,
    /// Messages a client APPENDs to Sent or Drafts are stored encrypted to the user's own
    /// certificate (default true).
    pub encrypt_append: Option<bool>,
    /// A second listener where clients start in plain text and must use STARTTLS before
    /// logging in (the box's port 143).
    pub listen_starttls: Option<SocketAddr>,
    /// Sessions of one login name at once (default 20).
    pub max_sessions_per_user: Option<usize>,
    /// `[imap.logins]`: login names that are not the vault user's address, mapped to it
    /// (`"jdoe" = "john.doe@example.org"`).
    pub logins: std::collections::BTreeMap<String, String>,
    /// The organisation's OAuth token introspection endpoint (RFC 7662): an XOAUTH2 or
    /// OAUTHBEARER session decrypts only for the account it names for the token (`https://`,
    /// or `http://` to this machine's loopback); without it such sessions read mail as stored.
    pub oauth_introspection: Option<String>,
    /// PEM trust anchors for the introspection endpoint (default: the system's roots).
    pub oauth_introspection_ca: Option<PathBuf>,
    /// The box's client id at the endpoint (HTTP Basic, with `oauth_client_secret_file`).
    pub oauth_client_id: Option<String>,
    /// A file holding the client secret (never the secret itself in the settings).
    pub oauth_client_secret_file: Option<PathBuf>,
    /// The answer's member that names the account (default `username`).
    pub oauth_username_claim: Option<String>,
    /// Users' Junk-folder moves train the spam classifier's local layer (a message moved into
    /// a Junk folder counts as spam, one moved out of it, not to Trash, as ham). Default: on
    /// when `[scan] enabled`.
    pub junk_feedback: Option<bool>,
    /// Mailbox names (the last component, any case) that are Junk folders, besides those the
    /// server's LIST marks `\Junk` (default `Junk`, `Spam`, `Junk E-mail`, `Junk Email`,
    /// `Bulk Mail`).
    pub junk_folders: Vec<String>,
    /// Messages one login name's feedback may count per day (default 200; 0: none).
    pub junk_feedback_daily: Option<u32>,
}

/// `[imap] upstream`: `imaps://HOST[:PORT]` or `imap://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ImapUpstream {
    /// Implicit TLS (`imaps`), else STARTTLS.
    pub implicit_tls: bool,
    /// The host name (or address) the certificate must name.
    pub host: String,
    /// The port (default 993 for imaps, 143 for imap).
    pub port: u16,
}

impl fmt::Display for ImapUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.implicit_tls { "imaps" } else { "imap" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl TryFrom<String> for ImapUpstream {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("upstream = {s:?}: use imaps://HOST:PORT or imap://HOST:PORT");
        let (implicit_tls, rest) = if let Some(r) = s.strip_prefix("imaps://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("imap://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let default_port = if implicit_tls { 993 } else { 143 };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| bad())?),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty()
            || port == 0
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(bad());
        }
        Ok(ImapUpstream {
            implicit_tls,
            host,
            port,
        })
    }
}

/// The box's shipped settings (`/etc/sealgate/settings.toml` on the box), compiled in so
/// the daemon's fallback and the file the boot copies to the data partition are one text.
pub const BOX_SETTINGS: &str = include_str!("../../../rootfs/overlay/etc/sealgate/settings.toml");

/// What `sealgated --box` runs with.
#[derive(Debug, Clone)]
pub struct BoxSettings {
    /// The settings.
    pub settings: Settings,
    /// Why the data partition's file was not used (then `settings` are the shipped box
    /// settings); `None` when it was.
    pub fallback: Option<String>,
}

impl Settings {
    /// The developer-host defaults (loopback listeners); what no file and an empty file
    /// mean without `--box`.
    pub fn developer() -> Settings {
        Settings::default()
    }

    /// The box's shipped settings ([`BOX_SETTINGS`]).
    pub fn box_shipped() -> anyhow::Result<Settings> {
        Settings::parse(BOX_SETTINGS).map_err(|e| anyhow::anyhow!("the shipped box settings: {e}"))
    }

    /// The box's settings: `path` read over the shipped box settings, or the shipped box
    /// settings alone (with the reason) when `path` is missing, empty, unreadable or invalid.
    pub fn load_box(path: &Path) -> anyhow::Result<BoxSettings> {
        let shipped = Settings::box_shipped()?;
        let fallback = |why: String| BoxSettings {
            settings: shipped.clone(),
            fallback: Some(format!("{}: {why}", path.display())),
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(fallback("missing".into()));
            }
            Err(e) => return Ok(fallback(format!("unreadable ({e})"))),
        };
        // An older release's file, read as this release's format (written so at commit).
        let bytes = match crate::settings_migrate::effective(path, &bytes) {
            Ok(b) => b,
            Err(e) => return Ok(fallback(e)),
        };
        match Settings::parse_over_box(&bytes) {
            Ok(settings) => Ok(BoxSettings {
                settings,
                fallback: None,
            }),
            Err(e) => Ok(fallback(e)),
        }
    }

    /// Parses a box's settings file over the shipped box settings; the error says what is
    /// wrong with the file (one line).
    pub(crate) fn parse_over_box(bytes: &[u8]) -> Result<Settings, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8 text (damaged, e.g. half-written)".to_string())?;
        if text.contains('\0') {
            return Err("holds NUL bytes (damaged, e.g. half-written)".into());
        }
        if text.trim().is_empty() {
            return Err("empty".into());
        }
        let one_line = |e: &dyn fmt::Display| {
            let s = e.to_string();
            format!(
                "invalid: {}",
                s.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        };
        let mut base: toml::Table = toml::from_str(BOX_SETTINGS).map_err(|e| one_line(&e))?;
        let over: toml::Table = toml::from_str(text).map_err(|e| one_line(&e))?;
        merge(&mut base, over);
        let s: Settings = toml::Value::Table(base)
            .try_into()
            .map_err(|e| one_line(&e))?;
        s.validate().map_err(|e| one_line(&e))?;
        Ok(s)
    }

    /// Listeners that only this host can reach (a box's console warns about them).
    pub fn loopback_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut v = Vec::new();
        for (name, addr) in [
            ("admin", self.admin.listen),
            ("docking", self.docking.listen),
        ] {
            if addr.ip().is_loopback() {
                v.push((name, addr));
            }
        }
        v
    }

    /// Reads and validates a settings file.
    pub fn load(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Settings::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates settings text.
    pub fn parse(text: &str) -> anyhow::Result<Settings> {
        let s: Settings = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(u) = &self.proxy.url {
            crate::update_url::parse_proxy(u).map_err(|e| anyhow::anyhow!("[proxy] url: {e}"))?;
        }
        self.directory
            .validate()
            .map_err(|e| anyhow::anyhow!("[directory] {e}"))?;
        anyhow::ensure!(
            self.tls.certificate.is_some() == self.tls.key.is_some(),
            "[tls] needs both certificate and key, or neither"
        );
        anyhow::ensure!(
            (self.smtp.decrypt_listen.is_none() && self.smtp.encrypt_listen.is_none())
                || self.smtp.next_hop.is_some(),
            "[smtp] listeners need a next_hop"
        );
        anyhow::ensure!(
            self.docking.max_message_bytes.0 > 0,
            "[docking] max_message_bytes must be positive"
        );
        anyhow::ensure!(
            self.docking.max_buffered_bytes.0 >= self.docking.max_message_bytes.0,
            "[docking] max_buffered_bytes must be at least max_message_bytes"
        );
        let smtp = &self.smtp;
        anyhow::ensure!(
            (1..=4096).contains(&smtp.max_sessions),
            "[smtp] max_sessions must be 1..=4096"
        );
        anyhow::ensure!(
            (1..=smtp.max_sessions).contains(&smtp.max_sessions_per_address),
            "[smtp] max_sessions_per_address must be 1..=max_sessions"
        );
        anyhow::ensure!(
            smtp.spool_max_bytes.0 >= self.docking.max_message_bytes.0,
            "[smtp] spool_max_bytes must be at least [docking] max_message_bytes"
        );
        anyhow::ensure!(
            (1..=100).contains(&smtp.max_processing_attempts),
            "[smtp] max_processing_attempts must be 1..=100"
        );
        anyhow::ensure!(
            smtp.certificate_addresses.is_empty()
                || self.auth.clients.iter().any(|c| {
                    c.scopes.contains(&Scope::Decrypt) || c.scopes.contains(&Scope::Encrypt)
                }),
            "[smtp] certificate_addresses needs an [[auth.clients]] entry with the decrypt or encrypt scope"
        );
        let q = &self.queue;
        anyhow::ensure!(
            q.retry_min_secs.is_none_or(|m| q.retry_max_secs.0 >= m.0),
            "[queue] retry_max_secs must be at least retry_min_secs"
        );
        anyhow::ensure!(
            (60..=60 * 86_400).contains(&q.lifetime_secs),
            "[queue] lifetime_secs must be 60..=5184000 (60 days)"
        );
        anyhow::ensure!(
            (1..=1000).contains(&q.max_received),
            "[queue] max_received must be 1..=1000"
        );
        anyhow::ensure!(
            (1..=100).contains(&q.max_loop_markers),
            "[queue] max_loop_markers must be 1..=100"
        );
        anyhow::ensure!(
            smtp.next_hop_ca.is_none() || smtp.next_hop_fingerprint.is_none(),
            "[smtp] next_hop_ca and next_hop_fingerprint exclude each other"
        );
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| anyhow::anyhow!("[log] level {:?}: {e}", self.log.level))?;
        if let Some(p) = &self.admin.socket {
            anyhow::ensure!(p.is_absolute(), "[admin] socket must be an absolute path");
        }
        for c in &self.auth.clients {
            anyhow::ensure!(!c.name.trim().is_empty(), "[[auth.clients]] needs a name");
        }
        anyhow::ensure!(
            (1..=65536).contains(&self.limits.max_recipient_entries),
            "[limits] max_recipient_entries must be 1..=65536"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.limits.max_signers),
            "[limits] max_signers must be 1..=1024"
        );
        self.submission.validate()?;
        self.inbound.validate()?;
        anyhow::ensure!(
            self.imap.listen.is_some() == self.imap.upstream.is_some(),
            "[imap] needs both listen and upstream, or neither"
        );
        anyhow::ensure!(
            self.imap.listen_starttls.is_none() || self.imap.listen.is_some(),
            "[imap] listen_starttls needs listen and upstream"
        );
        anyhow::ensure!(
            self.imap.max_sessions_per_user != Some(0),
            "[imap] max_sessions_per_user must be at least 1"
        );
        anyhow::ensure!(
            self.imap.oauth_client_id.is_some() == self.imap.oauth_client_secret_file.is_some(),
            "[imap] oauth_client_id and oauth_client_secret_file go together"
        );
        for (login, address) in &self.imap.logins {
            anyhow::ensure!(
                !login.trim().is_empty() && address.contains('@'),
                "[imap.logins] {login:?} = {address:?}: map a login name to a user's address"
            );
        }
        self.dns
            .validate()
            .map_err(|e| anyhow::anyhow!("[dns] {e}"))?;
        self.network
            .validate()
            .map_err(|e| anyhow::anyhow!("[network] {e}"))?;
        crate::scan::check_settings(&self.scan).map_err(|e| anyhow::anyhow!("[scan] {e}"))?;
        crate::dkim_sign::validate(&self.dkim).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

/// Puts `over`'s values into `base`: tables are merged key by key, anything else (values,
/// arrays such as `[[auth.clients]]`) replaces what `base` had.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A byte count (plain integer in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct ByteCount(pub usize);

impl TryFrom<u64> for ByteCount {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        usize::try_from(v)
            .map(ByteCount)
            .map_err(|_| format!("{v} bytes is too large"))
    }
}

/// A positive number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Seconds(pub u64);

impl TryFrom<u64> for Seconds {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 0 || v > 86_400 {
            Err(format!("{v} seconds: must be 1..=86400"))
        } else {
            Ok(Seconds(v))
        }
    }
}

impl Seconds {
    /// As a `Duration`.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

/// What an API token or a pinned client may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// `POST /decrypt`.
    Decrypt,
    /// `POST /encrypt`.
    Encrypt,
    /// `POST /sign`.
    Sign,
    /// `POST /verify` and `GET /certificates`.
    Verify,
    /// The admin API (the token that first-boot setup returns).
    Admin,
}

impl Scope {
    /// The docking scopes, which a token gets when none are named.
    pub const DOCKING: [Scope; 4] = [Scope::Decrypt, Scope::Encrypt, Scope::Sign, Scope::Verify];

    /// The name on the wire and in files.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Decrypt => "decrypt",
            Scope::Encrypt => "encrypt",
            Scope::Sign => "sign",
            Scope::Verify => "verify",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "decrypt" => Scope::Decrypt,
            "encrypt" => Scope::Encrypt,
            "sign" => Scope::Sign,
            "verify" => Scope::Verify,
            "admin" => Scope::Admin,
            other => {
                return Err(format!(
                    "unknown scope {other:?} (decrypt, encrypt, sign, verify, admin)"
                ));
            }
        })
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.name().to_string()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `missing=`: what to do with recipients that have no certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MissingPolicy {
    /// Refuse the request (422, naming them).
    Reject,
    /// Return the message unencrypted (signed if the sign policy says so).
    SendPlain,
    /// Encrypt to the recipients with a certificate; the report names the others.
    EncryptKnown,
}

impl FromStr for MissingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "reject" => MissingPolicy::Reject,
            "send-plain" => MissingPolicy::SendPlain,
            "encrypt-known" => MissingPolicy::EncryptKnown,
            other => {
                return Err(format!(
                    "missing={other:?}: use reject, send-plain or encrypt-known"
                ));
            }
        })
    }
}

impl TryFrom<String> for MissingPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Whether `encrypt` signs with the sender's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SignPolicy {
    /// Never sign.
    Never,
    /// Sign when the vault holds a signing key for the sender.
    IfKey,
    /// Always sign; a sender without a key is refused (422).
    Always,
}

impl TryFrom<String> for SignPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "never" => SignPolicy::Never,
            "if-key" => SignPolicy::IfKey,
            "always" => SignPolicy::Always,
            other => return Err(format!("sign = {other:?}: use never, if-key or always")),
        })
    }
}

/// A content cipher name (`aes256-cbc`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cipher(pub CipherChoice);

impl TryFrom<String> for Cipher {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse::<CipherChoice>()
            .map(Cipher)
            .map_err(|e| e.to_string())
    }
}

/// A SHA-256 fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Fingerprint(pub [u8; 32]);

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{s:?} is not a SHA-256 fingerprint (64 hex digits)"
            ));
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let s = Settings::parse("").expect("defaults");
        assert_eq!(s.docking.listen.port(), 8444);
        assert_eq!(s.docking.missing, MissingPolicy::Reject);
        assert!(s.smtp.next_hop.is_none());
    }

    #[test]
    fn limits_and_weak_signatures() {
        let s = Settings::parse("").expect("defaults");
        assert_eq!(s.limits.engine(), sealgate_smime::Limits::default());
        assert!(!s.docking.allow_weak_signatures);
        let s = Settings::parse(
            "[limits]\nmax_recipient_entries = 8\nmax_signers = 2\n[docking]\nallow_weak_signatures = true\n",
        )
        .expect("limits");
        assert_eq!(s.limits.max_recipient_entries, 8);
        assert_eq!(s.limits.max_signers, 2);
        assert!(s.docking.allow_weak_signatures);
        assert!(Settings::parse("[limits]\nmax_signers = 0\n").is_err());
        assert!(Settings::parse("[limits]\nmax_recipient_entries = 0\n").is_err());
        assert!(Settings::parse("[limits]\nmax_keys = 1\n").is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(Settings::parse("[docking]\nlisten_port = 1\n").is_err());
        assert!(Settings::parse("[nonsense]\n").is_err());
    }

    #[test]
    fn newtypes_refuse_bad_values() {
        assert!(Settings::parse("[docking]\nmissing = \"maybe\"\n").is_err());
        assert!(Settings::parse("[docking]\ncipher = \"rc2\"\n").is_err());
        assert!(Settings::parse("[docking]\nrequest_timeout_secs = 0\n").is_err());
        assert!(
            Settings::parse(
                "[[auth.clients]]\nname = \"a\"\nsha256 = \"zz\"\nscopes = [\"decrypt\"]\n"
            )
            .is_err()
        );
        assert!(
            Settings::parse(
                "[[auth.clients]]\nname = \"a\"\nsha256 = \"00\"\nscopes = [\"fly\"]\n"
            )
            .is_err()
        );
        assert!(
            Settings::parse("[smtp]\ndecrypt_listen = \"127.0.0.1:25\"\n").is_err(),
            "listener without next hop"
        );
        assert!(
            Settings::parse("[tls]\ncertificate = \"/x\"\n").is_err(),
            "certificate without key"
        );
    }

    fn box_file(text: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("settings.toml");
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn the_shipped_box_settings_face_the_network() {
        let s = Settings::box_shipped().expect("the shipped box settings parse");
        assert!(
            s.loopback_listeners().is_empty(),
            "{:?}",
            s.loopback_listeners()
        );
        assert_eq!(s.admin.listen.port(), 8440);
        assert_eq!(s.docking.listen.port(), 8444);
        // The developer's defaults stay loopback.
        assert_eq!(Settings::developer().loopback_listeners().len(), 2);
    }

    #[test]
    fn a_box_with_an_empty_settings_file_runs_on_the_shipped_settings_and_says_so() {
        for empty in [&b""[..], b"\n", b"  \n\t\n"] {
            let (_d, p) = box_file(empty);
            let b = Settings::load_box(&p).expect("loads");
            let why = b.fallback.expect("reported");
            assert!(why.contains("empty"), "{why}");
            assert!(b.settings.loopback_listeners().is_empty());
        }
    }

    #[test]
    fn a_box_with_a_truncated_or_invalid_settings_file_falls_back() {
        let full = "[admin]\nlisten = \"0.0.0.0:9440\"\n\n[docking]\nlisten = \"0.0.0.0:9444\"\n";
        // Cut in the middle of a value, of a table name, or zero-filled as ext4 leaves a
        // file whose data blocks were never written.
        let cases: Vec<Vec<u8>> = vec![
            full.as_bytes()[..20].to_vec(),
            full.as_bytes()[..full.len() - 12].to_vec(),
            full.as_bytes()[..34].to_vec(),
            vec![0u8; 64],
            b"\xff\xfe[admin]".to_vec(),
            b"[admin]\nlisten = \"nowhere\"\n".to_vec(),
            b"[smtp]\ndecrypt_listen = \"0.0.0.0:25\"\n".to_vec(),
            b"[colour]\n".to_vec(),
        ];
        for bytes in cases {
            let (_d, p) = box_file(&bytes);
            let b = Settings::load_box(&p).expect("loads");
            assert!(
                b.fallback.is_some(),
                "not reported: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(b.settings.loopback_listeners().is_empty());
            assert_eq!(b.settings.admin.listen.port(), 8440);
        }
    }

    #[test]
    fn a_box_settings_file_is_read_over_the_shipped_settings() {
        // A file cut at a line boundary is valid TOML: what it lacks is the box's, never
        // the developer's loopback.
        let (_d, p) = box_file(b"[admin]\nlisten = \"0.0.0.0:9440\"\n");
        let b = Settings::load_box(&p).expect("loads");
        assert!(b.fallback.is_none(), "{:?}", b.fallback);
        assert_eq!(b.settings.admin.listen.port(), 9440);
        assert_eq!(b.settings.docking.listen.to_string(), "0.0.0.0:8444");
        let (_d, p) = box_file(b"[docking]\nmissing = \"encrypt-known\"\n");
        let b = Settings::load_box(&p).expect("loads");
        assert_eq!(b.settings.docking.missing, MissingPolicy::EncryptKnown);
        assert_eq!(b.settings.docking.listen.to_string(), "0.0.0.0:8444");
        // An administrator's explicit loopback is kept (and warned about by the daemon).
        let (_d, p) = box_file(b"[admin]\nlisten = \"127.0.0.1:8440\"\n");
        let b = Settings::load_box(&p).expect("loads");
        assert_eq!(b.settings.loopback_listeners().len(), 1);
        // Missing: the shipped settings, reported.
        let d = tempfile::tempdir().expect("temp dir");
        let b = Settings::load_box(&d.path().join("nope.toml")).expect("loads");
        assert!(b.fallback.expect("reported").contains("missing"));
    }

    #[test]
    fn smtp_access_and_limits_parse_and_are_checked() {
        use std::net::IpAddr;
        let s = Settings::parse("").expect("defaults");
        let local: IpAddr = "127.0.0.5".parse().expect("ip");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        let remote: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(s.smtp.allow_addresses.iter().any(|c| c.contains(local)));
        assert!(s.smtp.allow_addresses.iter().any(|c| c.contains(mapped)));
        assert!(
            s.smtp
                .allow_addresses
                .iter()
                .any(|c| c.contains("::1".parse().expect("ip")))
        );
        assert!(!s.smtp.allow_addresses.iter().any(|c| c.contains(remote)));
        assert_eq!(s.smtp.encrypt_failure, EncryptFailure::Hold);
        let s = Settings::parse(
            "[smtp]\nallow_addresses = [\"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\", \"0.0.0.0/0\"]\nencrypt_failure = \"send-plain\"\n",
        )
        .expect("parse");
        let a = &s.smtp.allow_addresses;
        assert!(a[0].contains(remote) && !a[0].contains("192.0.3.1".parse().expect("ip")));
        assert!(a[1].contains("2001:db8:1::9".parse().expect("ip")));
        assert!(a[2].contains("198.51.100.7".parse().expect("ip")));
        assert!(!a[2].contains("198.51.100.8".parse().expect("ip")));
        assert!(a[3].contains(remote) && !a[3].contains("::1".parse().expect("ip")));
        assert_eq!(s.smtp.encrypt_failure, EncryptFailure::SendPlain);
        for bad in [
            "[smtp]\nallow_addresses = [\"192.0.2.1/24\"]\n",
            "[smtp]\nallow_addresses = [\"192.0.2.0/33\"]\n",
            "[smtp]\nallow_addresses = [\"example.org\"]\n",
            "[smtp]\nencrypt_failure = \"relay\"\n",
            "[smtp]\nmax_sessions = 0\n",
            "[smtp]\nmax_sessions = 4\nmax_sessions_per_address = 5\n",
            "[smtp]\nspool_max_bytes = 10\n",
            "[smtp]\nmax_processing_attempts = 0\n",
            "[smtp]\nsession_timeout_secs = 0\n",
            "[smtp]\ncertificate_addresses = [\"0.0.0.0/0\"]\n",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_and_next_hop_tls_settings_parse_and_are_checked() {
        let s = Settings::parse("").expect("defaults");
        assert_eq!(s.queue.lifetime_secs, 5 * 86_400);
        assert_eq!(s.queue.retry_min_secs, None);
        assert_eq!(s.queue.retry_max_secs, Seconds(3600));
        assert_eq!(s.queue.max_received, 30);
        assert_eq!(s.smtp.next_hop_tls, TlsMode::Opportunistic);
        let s = Settings::parse(&format!(
            "[smtp]\nnext_hop_tls = \"require\"\nnext_hop_name = \"mx.example.org\"\nnext_hop_fingerprint = \"{}\"\n[queue]\nretry_min_secs = 60\nretry_max_secs = 600\nlifetime_secs = 3600\nmax_received = 10\n",
            "ab".repeat(32)
        ))
        .expect("ok");
        assert_eq!(s.smtp.next_hop_tls, TlsMode::Require);
        assert_eq!(s.smtp.next_hop_fingerprint, Some(Fingerprint([0xab; 32])));
        assert_eq!(s.queue.retry_min_secs, Some(Seconds(60)));
        for bad in [
            "[smtp]\nnext_hop_tls = \"maybe\"\n",
            "[queue]\nretry_min_secs = 600\nretry_max_secs = 60\n",
            "[queue]\nlifetime_secs = 10\n",
            "[queue]\nmax_received = 0\n",
            "[queue]\nretry = 1\n",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn imap_needs_listen_and_upstream_and_parses_both_schemes() {
        let s = Settings::parse("").expect("defaults");
        assert!(s.imap.listen.is_none() && s.imap.upstream.is_none());
        let s = Settings::parse(
            "[imap]\nlisten = \"127.0.0.1:2993\"\nupstream = \"imaps://127.0.0.1:3993\"\nupstream_ca = \"/x/ca.pem\"\n",
        )
        .expect("imap");
        let u = s.imap.upstream.expect("upstream");
        assert!(u.implicit_tls);
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 3993));
        assert_eq!(u.to_string(), "imaps://127.0.0.1:3993");
        let u = ImapUpstream::try_from("imap://mail.example.org".to_string()).expect("imap");
        assert_eq!((u.implicit_tls, u.port), (false, 143));
        let u = ImapUpstream::try_from("imaps://[::1]:993".to_string()).expect("v6");
        assert_eq!(u.host, "::1");
        for bad in [
            "[imap]\nlisten = \"127.0.0.1:2993\"\n",
            "[imap]\nupstream = \"imaps://h:1\"\n",
            "[imap]\nlisten = \"127.0.0.1:2993\"\nupstream = \"pop3://h:1\"\n",
            "[imap]\nlisten = \"127.0.0.1:2993\"\nupstream = \"imaps://h:x\"\n",
            "[imap]\nlisten = \"127.0.0.1:2993\"\nupstream = \"imaps://a b:1\"\n",
            "[imap]\nport = 1\n",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fingerprints_and_scopes_parse() {
        let fp = "AB:".repeat(31) + "AB";
        let s = Settings::parse(&format!("[[auth.clients]]\nname = \"gw\"\nsha256 = \"{fp}\"\nscopes = [\"decrypt\", \"verify\"]\n")).expect("ok");
        assert_eq!(s.auth.clients[0].sha256.0, [0xab; 32]);
        assert_eq!(
            s.auth.clients[0].scopes,
            vec![Scope::Decrypt, Scope::Verify]
        );
        assert_eq!("sign".parse::<Scope>(), Ok(Scope::Sign));
        assert_eq!(
            "encrypt-known".parse::<MissingPolicy>(),
            Ok(MissingPolicy::EncryptKnown)
        );
    }
}

/// `[submission]`: employees' mail clients submit here (issue 10 §2). Off unless `listen` or
/// `listen_tls` is given; either needs `auth` (where passwords are checked: the box holds
/// none) and `relay` (where accepted mail goes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Submission {
    /// STARTTLS submission (the box: `0.0.0.0:587`).
    pub listen: Option<SocketAddr>,
    /// Implicit TLS submission (the box: `0.0.0.0:465`).
    pub listen_tls: Option<SocketAddr>,
    /// The organisation's server that verifies credentials: `smtp://HOST[:PORT]` (STARTTLS
    /// required, AUTH PLAIN; port 587), `smtps://` (465) or `imaps://` (LOGIN; 993).
    pub auth: Option<AuthServer>,
    /// PEM trust anchors for `auth`'s certificate (default: the system's roots).
    pub auth_ca: Option<PathBuf>,
    /// The organisation's server: accepted mail is relayed there.
    pub relay: Option<SocketAddr>,
    /// The box's own login at `relay` (AUTH PLAIN, sent only over STARTTLS to a certificate
    /// verified against `auth_ca` or the system's roots); none: the box is a trusted relay
    /// by its address.
    pub relay_username: Option<String>,
    /// The file whose first line is `relay_username`'s password (read at start, never
    /// logged or shown).
    pub relay_password_file: Option<PathBuf>,
    /// The name `relay`'s certificate must carry when `relay_username` is set (default: its
    /// IP address).
    pub relay_name: Option<String>,
    /// Seconds a verified password is remembered (as a keyed hash, in memory only).
    pub auth_cache_secs: Seconds,
    /// Failed logins of one user, or from one client address, within
    /// `auth_failure_window_secs` after which further attempts are refused (`454`) until the
    /// window ends, without asking the organisation's server.
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`.
    pub auth_failure_window_secs: Seconds,
    /// Further sender addresses per login name (`"alice@example.org" = ["sales@example.org"]`);
    /// a login name that is an address may always send as itself.
    pub aliases: std::collections::BTreeMap<String, Vec<Address>>,
    /// TLS to `relay`: `opportunistic` (the default without `relay_username`), `require`
    /// (STARTTLS and a certificate verified against `auth_ca` or the system's roots for
    /// `relay_name`, or `relay_fingerprint`; the default, and the only choice, with
    /// `relay_username`) or `none`.
    pub relay_tls: Option<TlsMode>,
    /// `relay`'s certificate pinned by its SHA-256 fingerprint (with `relay_tls = "require"`).
    pub relay_fingerprint: Option<Fingerprint>,
}

impl Default for Submission {
    fn default() -> Self {
        Submission {
            listen: None,
            listen_tls: None,
            auth: None,
            auth_ca: None,
            relay: None,
            relay_username: None,
            relay_password_file: None,
            relay_name: None,
            auth_cache_secs: Seconds(300),
            max_auth_failures: 5,
            auth_failure_window_secs: Seconds(300),
            aliases: std::collections::BTreeMap::new(),
            relay_tls: None,
            relay_fingerprint: None,
        }
    }
}

impl Submission {
    fn validate(&self) -> anyhow::Result<()> {
        if self.listen.is_some() || self.listen_tls.is_some() {
            anyhow::ensure!(
                self.auth.is_some(),
                "[submission] listeners need auth (the server that verifies passwords)"
            );
            anyhow::ensure!(
                self.relay.is_some(),
                "[submission] listeners need relay (the organisation's server)"
            );
        }
        anyhow::ensure!(
            self.relay_username.is_some() == self.relay_password_file.is_some(),
            "[submission] relay_username and relay_password_file go together"
        );
        if let Some(u) = &self.relay_username {
            anyhow::ensure!(
                !u.is_empty() && u.len() <= 256 && !u.chars().any(char::is_control),
                "[submission] relay_username must be 1..=256 characters without control characters"
            );
            anyhow::ensure!(
                matches!(self.relay_tls, None | Some(TlsMode::Require)),
                "[submission] relay_username needs relay_tls = \"require\" (the box's password goes only to a verified server)"
            );
        }
        anyhow::ensure!(
            self.relay_fingerprint.is_none() || self.relay_tls == Some(TlsMode::Require),
            "[submission] relay_fingerprint needs relay_tls = \"require\""
        );
        anyhow::ensure!(
            self.auth_cache_secs.0 <= 3600,
            "[submission] auth_cache_secs must be 1..=3600"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.max_auth_failures),
            "[submission] max_auth_failures must be 1..=1000"
        );
        for login in self.aliases.keys() {
            anyhow::ensure!(
                !login.trim().is_empty()
                    && login.len() <= 256
                    && !login.chars().any(|c| c.is_control() || c.is_whitespace()),
                "[submission] aliases: {login:?} is not a login name"
            );
        }
        Ok(())
    }
}

/// How `[submission] auth` asks the organisation's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// SMTP submission with STARTTLS (required), then AUTH PLAIN.
    Smtp,
    /// SMTP over implicit TLS, then AUTH PLAIN.
    Smtps,
    /// IMAP over implicit TLS, then LOGIN.
    Imaps,
}

/// `[submission] auth`: `smtp://HOST[:PORT]`, `smtps://...` or `imaps://...`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AuthServer {
    /// How to ask.
    pub scheme: AuthScheme,
    /// The host name (or address) connected to and checked in its certificate.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl FromStr for AuthServer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?}: use smtp://HOST[:PORT], smtps://HOST[:PORT] or imaps://HOST[:PORT]");
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => (AuthScheme::Smtp, 587),
            "smtps" => (AuthScheme::Smtps, 465),
            "imaps" => (AuthScheme::Imaps, 993),
            _ => return Err(bad()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // `[v6]:port`, `host:port`, `host`.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad()),
            };
            h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
            None => default_port,
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !host_ok {
            return Err(bad());
        }
        Ok(AuthServer {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl TryFrom<String> for AuthServer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            AuthScheme::Smtp => "smtp",
            AuthScheme::Smtps => "smtps",
            AuthScheme::Imaps => "imaps",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A mail address, `local@domain`, lowercased (as the vault keys users).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Address(pub String);

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let a = s.trim().to_ascii_lowercase();
        let ok = match a.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !local
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"".contains(c))
                    && Domain::from_str(domain).is_ok()
            }
            None => false,
        };
        if ok {
            Ok(Address(a))
        } else {
            Err(format!("{s:?} is not a mail address (local@domain)"))
        }
    }
}

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mail domain, `example.org`, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Domain(pub String);

impl FromStr for Domain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            Ok(Domain(d))
        } else {
            Err(format!("{s:?} is not a mail domain"))
        }
    }
}

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[inbound]`: mail from the Internet (MX). Off unless `listen` is given; it then needs
/// `domains` (mail for any other domain is refused: no open relay) and `next_hop`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inbound {
    /// Where the MX listens (the box: `0.0.0.0:25`).
    pub listen: Option<SocketAddr>,
    /// The domains accepted.
    pub domains: Vec<Domain>,
    /// The internal mail server accepted mail goes to.
    pub next_hop: Option<SocketAddr>,
    /// Cleartext mail is encrypted to its recipients' own keys before delivery (when every
    /// recipient has one).
    pub encrypt_at_rest: bool,
    /// New connections from one client address (IPv6: its /64) per minute; beyond that `421`.
    pub max_connections_per_minute: u32,
    /// Recipients per message; beyond that `452 4.5.3`.
    pub max_recipients: usize,
    /// TLS to `next_hop`, as `[smtp] next_hop_tls` (default `opportunistic`).
    pub next_hop_tls: TlsMode,
    /// Trust anchors (PEM) for `next_hop`'s certificate instead of the system's roots.
    pub next_hop_ca: Option<PathBuf>,
    /// `next_hop`'s certificate pinned by its SHA-256 fingerprint.
    pub next_hop_fingerprint: Option<Fingerprint>,
    /// The name `next_hop`'s certificate must carry (default: its IP address).
    pub next_hop_name: Option<String>,
    /// Each RCPT for an accepted domain is checked at `next_hop` first (`MAIL FROM:<>`,
    /// `RCPT TO`, `RSET`; answers cached in memory): unknown there is `550 5.1.1`, a
    /// temporary failure or an unreachable next hop `450 4.4.3`.
    pub verify_recipients: bool,
    /// How long a recipient the next hop accepted stays known (seconds).
    pub verify_positive_ttl_secs: Seconds,
    /// How long a recipient the next hop refused stays known (seconds).
    pub verify_negative_ttl_secs: Seconds,
    /// Addresses the cache holds at most.
    pub verify_cache_entries: usize,
    /// Checks at the next hop one client address (IPv6: its /64) may cause per minute
    /// (answers from the cache are free); beyond that `450 4.7.1`.
    pub verify_probes_per_minute: u32,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            listen: None,
            domains: Vec::new(),
            next_hop: None,
            encrypt_at_rest: false,
            max_connections_per_minute: 60,
            max_recipients: 100,
            next_hop_tls: TlsMode::Opportunistic,
            next_hop_ca: None,
            next_hop_fingerprint: None,
            next_hop_name: None,
            verify_recipients: false,
            verify_positive_ttl_secs: Seconds(3600),
            verify_negative_ttl_secs: Seconds(600),
            verify_cache_entries: 10_000,
            verify_probes_per_minute: 20,
        }
    }
}

impl Inbound {
    fn validate(&self) -> anyhow::Result<()> {
        if self.listen.is_some() {
            anyhow::ensure!(
                !self.domains.is_empty(),
                "[inbound] listen needs domains (the box is no open relay)"
            );
            anyhow::ensure!(
                self.next_hop.is_some(),
                "[inbound] listen needs next_hop (the internal mail server)"
            );
            anyhow::ensure!(
                self.max_connections_per_minute > 0 && self.max_recipients > 0,
                "[inbound] max_connections_per_minute and max_recipients must be at least 1"
            );
        }
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.verify_cache_entries),
            "[inbound] verify_cache_entries must be 1..=1000000"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.verify_probes_per_minute),
            "[inbound] verify_probes_per_minute must be 1..=10000"
        );
        anyhow::ensure!(
            self.next_hop_ca.is_none() || self.next_hop_fingerprint.is_none(),
            "[inbound] next_hop_ca and next_hop_fingerprint exclude each other"
        );
        Ok(())
    }
}

/// `[policy] encrypt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum EncryptPolicy {
    /// Never encrypt.
    Never,
    /// Encrypt to the recipients with a certificate; the others get a separate signed
    /// cleartext copy.
    IfPossible,
    /// Refuse (`550 5.7.1`, naming them) a message with a recipient without a certificate.
    Mandatory,
}

impl EncryptPolicy {
    /// The name in the settings file.
    pub fn name(self) -> &'static str {
        match self {
            EncryptPolicy::Never => "never",
            EncryptPolicy::IfPossible => "if-possible",
            EncryptPolicy::Mandatory => "mandatory",
        }
    }
}

impl TryFrom<String> for EncryptPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "never" => EncryptPolicy::Never,
            "if-possible" => EncryptPolicy::IfPossible,
            "mandatory" => EncryptPolicy::Mandatory,
            other => {
                return Err(format!(
                    "encrypt = {other:?}: use never, if-possible or mandatory"
                ));
            }
        })
    }
}

/// `[policy] sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SignLevel {
    /// Never sign.
    Never,
    /// Sign when the sender has a key (or auto-enrolment issues one).
    IfPossible,
    /// Sign; a sender without a key (and no auto-enrolment) is refused (`550 5.7.1`).
    Always,
}

impl SignLevel {
    /// The name in the settings file.
    pub fn name(self) -> &'static str {
        match self {
            SignLevel::Never => "never",
            SignLevel::IfPossible => "if-possible",
            SignLevel::Always => "always",
        }
    }
}

impl TryFrom<String> for SignLevel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "never" => SignLevel::Never,
            "if-possible" => SignLevel::IfPossible,
            "always" => SignLevel::Always,
            other => {
                return Err(format!(
                    "sign = {other:?}: use never, if-possible or always"
                ));
            }
        })
    }
}

/// `[policy] subject_trigger`: text in a Subject that forces `encrypt = "mandatory"` for
/// that message and is removed from the Subject (compared without regard to ASCII case).
/// Empty: no trigger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SubjectTrigger(pub String);

impl TryFrom<String> for SubjectTrigger {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() > 64 || s.chars().any(char::is_control) || (!s.is_empty() && s.trim().is_empty())
        {
            return Err(format!(
                "subject_trigger = {s:?}: at most 64 characters, no control characters, not only spaces"
            ));
        }
        Ok(SubjectTrigger(s))
    }
}

/// One level's overrides (`[policy.domains."example.org"]`, `[policy.users."a@example.org"]`):
/// what it leaves out comes from the level below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOverride {
    /// See [`Policy::encrypt`].
    pub encrypt: Option<EncryptPolicy>,
    /// See [`Policy::sign`].
    pub sign: Option<SignLevel>,
    /// See [`Policy::auto_enrol`].
    pub auto_enrol: Option<bool>,
    /// See [`Policy::header_protection`].
    pub header_protection: Option<bool>,
}

/// `[policy]`: what submitted mail gets. Levels, the more specific winning: built-in (the
/// `Default`) < these global values < `domains` (the sender's domain) < `users` (the sender).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Encryption to the recipients' certificates.
    pub encrypt: EncryptPolicy,
    /// Signature with the sender's key.
    pub sign: SignLevel,
    /// See [`SubjectTrigger`] (default `[secure]`).
    pub subject_trigger: SubjectTrigger,
    /// A sender without a key gets one issued by the box's CA at their first message.
    pub auto_enrol: bool,
    /// Protect the header fields too (RFC 9788: the Subject inside the encryption, a
    /// placeholder outside).
    pub header_protection: bool,
    /// Per sender domain.
    pub domains: std::collections::BTreeMap<Domain, PolicyOverride>,
    /// Per sender address.
    pub users: std::collections::BTreeMap<Address, PolicyOverride>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            encrypt: EncryptPolicy::IfPossible,
            sign: SignLevel::IfPossible,
            subject_trigger: SubjectTrigger("[secure]".into()),
            auto_enrol: false,
            header_protection: false,
            domains: std::collections::BTreeMap::new(),
            users: std::collections::BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod gateway_settings_tests {
    use super::*;

    #[test]
    fn nothing_listens_by_default() {
        let s = Settings::parse("").expect("defaults");
        assert!(s.submission.listen.is_none() && s.submission.listen_tls.is_none());
        assert!(s.inbound.listen.is_none());
        assert_eq!(s.policy.encrypt, EncryptPolicy::IfPossible);
        assert_eq!(s.policy.sign, SignLevel::IfPossible);
        assert_eq!(s.policy.subject_trigger.0, "[secure]");
        let b = Settings::box_shipped().expect("box");
        assert!(b.submission.listen.is_none() && b.inbound.listen.is_none());
    }

    #[test]
    fn the_issue_contract_parses() {
        let s = Settings::parse(
            r#"
[submission]
listen = "127.0.0.1:2587"
listen_tls = "127.0.0.1:2465"
auth = "smtp://127.0.0.1:3587"
auth_ca = "/path/ca.pem"
relay = "127.0.0.1:3525"
aliases = { "alice@example.org" = ["Sales@Example.org"], "bob" = ["bob@example.org"] }
[inbound]
listen = "127.0.0.1:2525"
domains = ["example.org"]
next_hop = "127.0.0.1:3526"
[policy]
encrypt = "if-possible"
sign = "always"
[policy.domains."Example.ORG"]
encrypt = "mandatory"
[policy.users."ceo@example.org"]
encrypt = "never"
auto_enrol = true
"#,
        )
        .expect("contract");
        let a = s.submission.auth.expect("auth");
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port),
            (AuthScheme::Smtp, "127.0.0.1", 3587)
        );
        assert_eq!(s.submission.relay.expect("relay").port(), 3525);
        assert_eq!(
            s.submission.aliases["alice@example.org"][0].0,
            "sales@example.org"
        );
        assert_eq!(s.inbound.domains, vec![Domain("example.org".into())]);
        assert_eq!(s.policy.sign, SignLevel::Always);
        assert_eq!(
            s.policy.domains[&Domain("example.org".into())].encrypt,
            Some(EncryptPolicy::Mandatory)
        );
        assert_eq!(
            s.policy.users[&Address("ceo@example.org".into())].auto_enrol,
            Some(true)
        );
    }

    #[test]
    fn auth_servers_parse() {
        let p = |s: &str| s.parse::<AuthServer>();
        assert_eq!(p("imaps://mail.example.org").expect("imaps").port, 993);
        assert_eq!(
            p("smtps://Mail.Example.org:4650").expect("smtps").host,
            "mail.example.org"
        );
        assert_eq!(p("smtp://[::1]:3587").expect("v6").host, "::1");
        assert_eq!(
            p("smtp://[::1]:3587").expect("v6").to_string(),
            "smtp://[::1]:3587"
        );
        for bad in [
            "imap://x",
            "http://x",
            "smtp://",
            "smtp://x:0",
            "smtp://x:99999",
            "smtp://a b",
            "smtp://user@host",
            "127.0.0.1:587",
            "smtp://[::1",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_gateway_settings_are_refused() {
        for bad in [
            "[submission]\nlisten = \"127.0.0.1:2587\"\n",
            "[submission]\nlisten = \"127.0.0.1:2587\"\nauth = \"imaps://x\"\n",
            "[submission]\nlisten_tls = \"127.0.0.1:2465\"\nrelay = \"127.0.0.1:25\"\n",
            "[submission]\nauth = \"pop3://x\"\n",
            "[submission]\nauth_cache_secs = 7200\n",
            "[submission]\nmax_auth_failures = 0\n",
            "[submission]\naliases = { \"a\" = [\"not an address\"] }\n",
            "[submission]\naliases = { \"a b\" = [\"a@b.org\"] }\n",
            "[submission]\nport = 587\n",
            "[inbound]\nlisten = \"127.0.0.1:2525\"\nnext_hop = \"127.0.0.1:25\"\n",
            "[inbound]\nlisten = \"127.0.0.1:2525\"\ndomains = [\"example.org\"]\n",
            "[inbound]\ndomains = [\"exa mple.org\"]\n",
            "[policy]\nencrypt = \"always\"\n",
            "[policy]\nsign = \"if-key\"\n",
            "[policy]\nsubject_trigger = \"a\\nb\"\n",
            "[policy]\nsubject_trigger = \"   \"\n",
            "[policy.users.\"nobody\"]\nencrypt = \"never\"\n",
            "[policy.domains.\"example.org\"]\ncolour = \"red\"\n",
        ] {
            assert!(Settings::parse(bad).is_err(), "{bad}");
        }
        let s = Settings::parse("[policy]\nsubject_trigger = \"\"\n").expect("no trigger");
        assert!(s.policy.subject_trigger.0.is_empty());
    }
}
