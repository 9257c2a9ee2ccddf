//! The certificate directory: where the box finds a recipient's certificate when it encrypts.
//!
//! One [`Directory`] serves every encrypting path (the docking API, the SMTP gateway) and
//! `sealctl directory lookup`. Sources are asked in a configured order and the first *valid*
//! answer wins: the vault's own users, pinned (stored) external certificates, harvested ones,
//! LDAP directories, HTTP certificate directories. Every candidate from outside the vault is
//! validated ([`validate`]): usable for encryption now, the address bound, a path to a trust
//! anchor of the box (or pinned), not revoked, not blocked by an administrator.
//!
//! **The attacker** is whoever answers for a directory (the LDAP or HTTP server, or the
//! network path to it): they can send anything, slowly or never. Their answer must never make
//! the box encrypt to a key they hold (only validated certificates are used), never hold a
//! message (every remote source runs under the lookup deadline), and never crash or grow the
//! box (answers are bounded; parsing errors are refusals).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealgate_smime::cert::Certificate;
use sealgate_smime::signed::Revoked;
use serde::{Deserialize, Serialize};

pub mod blocklist;
pub mod harvested;
pub mod http;
pub mod ldap;
pub mod local;
pub mod ocsp;
pub mod publish;
pub mod revocation;
pub mod smimea;
pub mod validate;

pub use local::Local;

/// A source of certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The vault's own users.
    Vault,
    /// External certificates stored by an administrator or accepted through the docking API.
    Pinned,
    /// Certificates harvested from validated signatures of inbound mail.
    Harvested,
    /// `[[directory.ldap]]`.
    Ldap,
    /// DNS SMIMEA (RFC 8162), DNSSEC-validated only.
    Smimea,
    /// `[[directory.http]]`.
    Http,
}

impl Source {
    /// The name in settings and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Vault => "vault",
            Source::Pinned => "pinned",
            Source::Harvested => "harvested",
            Source::Ldap => "ldap",
            Source::Smimea => "smimea",
            Source::Http => "http",
        }
    }

    fn remote(self) -> bool {
        matches!(self, Source::Ldap | Source::Smimea | Source::Http)
    }
}

/// Soft or hard fail when a certificate's CRLs cannot be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Revocation {
    /// Use the certificate when none of its CRL distribution points answered.
    #[default]
    SoftFail,
    /// Refuse the certificate when none of its CRL distribution points answered.
    HardFail,
}

impl Revocation {
    /// The name in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::SoftFail => "soft-fail",
            Revocation::HardFail => "hard-fail",
        }
    }
}

/// `[directory]` in the daemon's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Sources in the order asked; the first valid answer wins.
    pub order: Vec<Source>,
    /// The longest one lookup may take, all remote sources together (milliseconds).
    pub deadline_ms: u64,
    /// How long a found certificate is remembered (seconds; never past its notAfter).
    pub cache_ttl_secs: u64,
    /// How long "nothing found" (or a failing source) is remembered (seconds).
    pub negative_ttl_secs: u64,
    /// When a certificate from outside names CRL distribution points none of which answers.
    pub revocation: Revocation,
    /// More trust anchors (PEM file) for directory answers, besides `[docking] trust_anchors`
    /// and the box's CA.
    pub trust_anchors: Option<PathBuf>,
    /// SHA-256 fingerprints (hex) of certificates never used, whatever the source.
    pub blocked: Vec<String>,
    /// LDAP directories.
    pub ldap: Vec<LdapSettings>,
    /// HTTP certificate directories.
    pub http: Vec<HttpSettings>,
    /// The DNSSEC-validating resolver asked for SMIMEA records (`IP:port` on the loopback,
    /// e.g. a local unbound); the `smimea` source is not asked without it.
    pub smimea_resolver: Option<String>,
    /// Where the box publishes its users' certificates for partners (HTTPS, `GET
    /// /lookup?address=`); off when unset.
    pub publish_listen: Option<std::net::SocketAddr>,
    /// Lookups per client address per minute on `publish_listen`.
    pub publish_per_minute: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            order: vec![
                Source::Vault,
                Source::Pinned,
                Source::Harvested,
                Source::Ldap,
                Source::Smimea,
                Source::Http,
            ],
            deadline_ms: 3000,
            cache_ttl_secs: 3600,
            negative_ttl_secs: 300,
            revocation: Revocation::SoftFail,
            trust_anchors: None,
            blocked: Vec::new(),
            ldap: Vec::new(),
            http: Vec::new(),
            smimea_resolver: None,
            publish_listen: None,
            publish_per_minute: 30,
        }
    }
}

/// One `[[directory.ldap]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// The search base.
    pub base: String,
    /// The search filter; `{address}` is replaced by the escaped address.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// CA certificates (PEM file) for the server's TLS certificate; the system's otherwise.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Simple bind DN; anonymous when unset.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the bind password (first line).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
}

fn default_filter() -> String {
    "(mail={address})".into()
}

/// One `[[directory.http]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `https://host[:port]/path`; asked `GET url?address=ADDRESS`, answers PEM certificates
    /// (200) or nothing (404).
    pub url: String,
    /// CA certificates (PEM file) for the server's TLS certificate; the system's otherwise.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl Settings {
    /// Checks what can be checked without the network; the reason if not usable.
    pub fn validate(&self) -> Result<(), String> {
        for l in &self.ldap {
            if !(l.url.starts_with("ldap://") || l.url.starts_with("ldaps://")) {
                return Err(format!(
                    "directory.ldap url {:?} is not ldap:// or ldaps://",
                    l.url
                ));
            }
            if !l.filter.contains("{address}") {
                return Err(format!(
                    "directory.ldap filter {:?} does not contain {{address}}",
                    l.filter
                ));
            }
            if l.bind_password_file.is_some() && l.bind_dn.is_none() {
                return Err("directory.ldap bind_password_file without bind_dn".into());
            }
        }
        for h in &self.http {
            if !h.url.starts_with("https://") {
                return Err(format!(
                    "directory.http url {:?} is not https:// (TLS is required)",
                    h.url
                ));
            }
        }
        for b in &self.blocked {
            if normalise_fingerprint(b).len() != 64 {
                return Err(format!(
                    "directory.blocked {b:?} is not a SHA-256 fingerprint"
                ));
            }
        }
        if self.publish_per_minute == 0 || self.publish_per_minute > 10_000 {
            return Err("directory.publish_per_minute must be 1 to 10000".into());
        }
        if let Some(r) = &self.smimea_resolver {
            smimea::resolver_address(r)?;
        }
        if self.deadline_ms == 0 || self.deadline_ms > 60_000 {
            return Err("directory.deadline_ms must be 1 to 60000".into());
        }
        Ok(())
    }
}

fn normalise_fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_hexdigit())
        .collect()
}

/// A candidate refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The source's name (`ldap`, `http`, ...).
    pub source: String,
    /// Why (which server, which certificate, which rule).
    pub reason: String,
}

/// The outcome of one lookup.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The address looked up (lowercased).
    pub address: String,
    /// The source that answered, `None` when none did.
    pub source: Option<Source>,
    /// The certificate to encrypt to.
    pub certificate: Option<Certificate>,
    /// Candidates refused and sources that failed.
    pub refused: Vec<Refusal>,
}

impl Lookup {
    /// The output of `sealctl directory lookup` and the admin API: `{"address", "source",
    /// "certificate", "refused"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.address,
            "source": self.source.map_or("none", Source::as_str),
            "certificate": self.certificate.as_ref().map(Certificate::to_pem),
            "refused": self.refused,
        })
    }
}

/// Called once per lookup (address, answering source or `none`, `found`/`none`/`cached`).
pub type AuditHook = Box<dyn Fn(&Lookup, bool) + Send + Sync>;

/// What a remote source returns: candidate certificates (DER, as received), or why it failed.
pub type Fetched = Result<Vec<Vec<u8>>, String>;

/// Candidates with whether the source itself vouches for them (a DNSSEC-validated SMIMEA
/// record of usage DANE-EE: no path to an anchor needed), or why the source failed.
type Vouched = Result<Vec<(Vec<u8>, bool)>, String>;

/// One remote query, run under the deadline it is given.
type Ask = Box<dyn FnOnce(Instant) -> Vouched + Send>;

fn unvouched(f: Fetched) -> Vouched {
    f.map(|v| v.into_iter().map(|d| (d, false)).collect())
}

/// A remote answer remembered.
#[derive(Clone)]
struct Cached {
    until: Instant,
    source: Option<Source>,
    certificate: Option<Certificate>,
    refused: Vec<Refusal>,
}

/// Addresses remembered at most; beyond that the cache starts over.
const MAX_CACHED: usize = 10_000;
/// Candidates looked at per source answer at most.
pub const MAX_CANDIDATES: usize = 16;

/// The certificate directory (see the crate documentation).
pub struct Directory {
    settings: Settings,
    local: Option<Arc<dyn Local>>,
    anchors: Vec<Certificate>,
    blocked: Vec<String>,
    blocked_by_admin: std::sync::RwLock<Vec<String>>,
    harvested: std::sync::RwLock<HashMap<String, Vec<Certificate>>>,
    capabilities: std::sync::RwLock<HashMap<String, Vec<String>>>,
    ldap: Vec<Arc<ldap::LdapSource>>,
    http: Vec<Arc<http::HttpSource>>,
    smimea: Option<Arc<smimea::SmimeaSource>>,
    cache: Mutex<HashMap<String, Cached>>,
    crls: revocation::CrlCache,
    ocsp: ocsp::OcspCache,
    audit: Option<AuditHook>,
}

impl Directory {
    /// A directory over `settings`, with `anchors` (the configured trust anchors; the box
    /// CA comes from the [`Local`] side) and `local` (the vault) for [`Directory::lookup`].
    pub fn new(
        settings: Settings,
        mut anchors: Vec<Certificate>,
        local: Option<Arc<dyn Local>>,
    ) -> Result<Directory, String> {
        settings.validate()?;
        if let Some(p) = &settings.trust_anchors {
            let data = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            anchors.extend(
                Certificate::parse_many(&data).map_err(|e| format!("{}: {e}", p.display()))?,
            );
        }
        let ldap = settings
            .ldap
            .iter()
            .map(|l| ldap::LdapSource::new(l).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let http = settings
            .http
            .iter()
            .map(|h| http::HttpSource::new(h).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let smimea = settings
            .smimea_resolver
            .as_deref()
            .map(|r| smimea::SmimeaSource::new(r).map(Arc::new))
            .transpose()?;
        Ok(Directory {
            smimea,
            blocked: settings
                .blocked
                .iter()
                .map(|b| normalise_fingerprint(b))
                .collect(),
            blocked_by_admin: std::sync::RwLock::new(Vec::new()),
            harvested: std::sync::RwLock::new(HashMap::new()),
            capabilities: std::sync::RwLock::new(HashMap::new()),
            settings,
            local,
            anchors,
            ldap,
            http,
            cache: Mutex::new(HashMap::new()),
            crls: revocation::CrlCache::default(),
            ocsp: ocsp::OcspCache::default(),
            audit: None,
        })
    }

    /// Calls `hook` for every lookup (the audit record).
    pub fn with_audit(mut self, hook: AuditHook) -> Directory {
        self.audit = Some(hook);
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The deadline for a lookup starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.settings.deadline_ms)
    }

    /// Sets the certificates an administrator blocked (SHA-256 hex; see [`blocklist`]) and
    /// forgets every remembered answer.
    pub fn set_blocked(&self, sha256: Vec<String>) {
        if let Ok(mut b) = self.blocked_by_admin.write() {
            *b = sha256.iter().map(|s| normalise_fingerprint(s)).collect();
        }
        self.forget_cached();
    }

    /// Sets the harvested certificates (see [`harvested`]) and forgets every remembered
    /// answer.
    pub fn set_harvested(&self, list: &[harvested::Harvested]) {
        let mut by: HashMap<String, Vec<Certificate>> = HashMap::new();
        for e in list {
            if let Some(c) = harvested::parse(e) {
                by.entry(e.address.clone()).or_default().push(c);
            }
        }
        if let Ok(mut h) = self.harvested.write() {
            *h = by;
        }
        if let Ok(mut c) = self.capabilities.write() {
            *c = list
                .iter()
                .map(|e| (e.sha256.clone(), e.capabilities.clone()))
                .collect();
        }
        self.forget_cached();
    }

    /// The S/MIME capabilities last seen in a signature by the owner of `cert` (harvested
    /// from inbound mail), whatever source answered with it; empty when unknown.
    pub fn capabilities(&self, cert: &Certificate) -> Vec<String> {
        let fp = validate::sha256_hex(cert.der());
        self.capabilities
            .read()
            .ok()
            .and_then(|c| c.get(&fp).cloned())
            .unwrap_or_default()
    }

    /// Forgets every remembered answer.
    pub fn forget_cached(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Looks `address` up with the [`Local`] side given at creation (none: remote sources
    /// only).
    pub fn lookup(&self, address: &str, deadline: Instant) -> Lookup {
        match &self.local {
            Some(l) => self.lookup_with(l.as_ref(), address, deadline),
            None => self.lookup_with(&local::Nothing, address, deadline),
        }
    }

    /// Looks `address` up, asking `local` for the vault's users and pinned certificates.
    pub fn lookup_with(&self, local: &dyn Local, address: &str, deadline: Instant) -> Lookup {
        let address = address.trim().to_ascii_lowercase();
        let now = unix_now();
        let mut out = Lookup {
            address: address.clone(),
            source: None,
            certificate: None,
            refused: Vec::new(),
        };
        let mut remote_done = false;
        for &source in &self.settings.order {
            if source.remote() {
                if remote_done {
                    continue;
                }
                remote_done = true;
                let (found, cached) = self.remote(local, &address, deadline, now, &mut out);
                if found {
                    self.audit(&out, cached);
                    return out;
                }
                continue;
            }
            let candidates = match source {
                Source::Vault => local.own(&address).map(|c| c.into_iter().collect()),
                Source::Pinned => local.stored(&address),
                Source::Harvested => local.harvested(&address).map(|mut v| {
                    if let Ok(h) = self.harvested.read()
                        && let Some(more) = h.get(&address)
                    {
                        v.extend(more.iter().cloned());
                    }
                    v
                }),
                _ => Ok(Vec::new()),
            };
            let candidates = match candidates {
                Ok(c) => c,
                Err(e) => {
                    out.refused.push(refusal(source, e));
                    continue;
                }
            };
            let mut best: Option<Certificate> = None;
            for c in candidates {
                // The vault's users and pinned certificates were vouched for when stored;
                // harvested ones must chain like any answer from outside.
                let chain_needed = source == Source::Harvested;
                match self.check(
                    local,
                    source,
                    &c,
                    &[],
                    &address,
                    now,
                    chain_needed,
                    deadline,
                ) {
                    Ok(()) => {
                        if best.as_ref().is_none_or(|b| b.not_before < c.not_before) {
                            best = Some(c);
                        }
                    }
                    Err(why) => out.refused.push(refusal(source, why)),
                }
            }
            if let Some(c) = best {
                out.source = Some(source);
                out.certificate = Some(c);
                self.audit(&out, false);
                return out;
            }
        }
        self.audit(&out, false);
        out
    }

    fn audit(&self, l: &Lookup, cached: bool) {
        if let Some(h) = &self.audit {
            h(l, cached);
        }
    }

    /// The remote sources, in their configured order, under the deadline, through the cache;
    /// (found, from the cache).
    fn remote(
        &self,
        local: &dyn Local,
        address: &str,
        deadline: Instant,
        now: i64,
        out: &mut Lookup,
    ) -> (bool, bool) {
        if let Ok(c) = self.cache.lock()
            && let Some(hit) = c.get(address).filter(|h| h.until > Instant::now())
        {
            out.refused.extend(hit.refused.iter().cloned());
            if let Some(cert) = &hit.certificate
                && cert.not_after >= now
            {
                out.source = hit.source;
                out.certificate = Some(cert.clone());
                return (true, true);
            }
            if hit.certificate.is_none() {
                return (false, true);
            }
        }
        let before = out.refused.len();
        let mut found: Option<(Source, Certificate)> = None;
        'sources: for &source in &self.settings.order {
            let askers: Vec<(String, Ask)> = match source {
                Source::Ldap => self
                    .ldap
                    .iter()
                    .map(|l| {
                        let l = l.clone();
                        let a = address.to_string();
                        (
                            l.url().to_string(),
                            Box::new(move |d| unvouched(l.fetch(&a, d))) as Ask,
                        )
                    })
                    .collect(),
                Source::Http => self
                    .http
                    .iter()
                    .map(|h| {
                        let h = h.clone();
                        let a = address.to_string();
                        (
                            h.url().to_string(),
                            Box::new(move |d| unvouched(h.fetch(&a, d))) as Ask,
                        )
                    })
                    .collect(),
                Source::Smimea => self
                    .smimea
                    .iter()
                    .map(|s| {
                        let s = s.clone();
                        let a = address.to_string();
                        (
                            s.name(),
                            Box::new(move |d| {
                                s.fetch(&a, d)
                                    .map(|v| v.into_iter().map(|f| (f.der, f.dane_ee)).collect())
                            }) as Ask,
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            for (name, ask) in askers {
                let answer = match within(deadline, ask) {
                    Ok(d) => d,
                    Err(e) => {
                        out.refused.push(refusal(source, format!("{name}: {e}")));
                        if Instant::now() >= deadline {
                            break 'sources;
                        }
                        continue;
                    }
                };
                let vouched: Vec<Certificate> = answer
                    .iter()
                    .filter(|(_, v)| *v)
                    .filter_map(|(d, _)| Certificate::from_der(d).ok())
                    .collect();
                let certs: Vec<Certificate> = answer
                    .iter()
                    .filter_map(|(d, _)| Certificate::from_der(d).ok())
                    .collect();
                let ders = &answer;
                if certs.len() < ders.len() {
                    out.refused.push(refusal(
                        source,
                        format!(
                            "{name}: {} unreadable certificate(s)",
                            ders.len() - certs.len()
                        ),
                    ));
                }
                let mut best: Option<Certificate> = None;
                for c in certs.iter().filter(|c| !c.is_ca || c.has_email(address)) {
                    let others: Vec<Certificate> =
                        certs.iter().filter(|o| *o != c).cloned().collect();
                    let chain_needed = !vouched.contains(c);
                    match self.check(
                        local,
                        source,
                        c,
                        &others,
                        address,
                        now,
                        chain_needed,
                        deadline,
                    ) {
                        Ok(()) => {
                            if best.as_ref().is_none_or(|b| b.not_before < c.not_before) {
                                best = Some(c.clone());
                            }
                        }
                        Err(why) => out.refused.push(refusal(
                            source,
                            format!("{name}: {} ({}): {why}", c.subject_text(), short_fp(c)),
                        )),
                    }
                }
                if let Some(c) = best {
                    found = Some((source, c));
                    break 'sources;
                }
            }
        }
        let refused = out.refused[before..].to_vec();
        let ttl = match &found {
            Some((_, c)) => {
                let left = u64::try_from(c.not_after.saturating_sub(now)).unwrap_or(0);
                self.settings.cache_ttl_secs.min(left)
            }
            None => self.settings.negative_ttl_secs,
        };
        if ttl > 0
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(
                address.to_string(),
                Cached {
                    until: Instant::now() + Duration::from_secs(ttl),
                    source: found.as_ref().map(|f| f.0),
                    certificate: found.as_ref().map(|f| f.1.clone()),
                    refused,
                },
            );
        }
        match found {
            Some((s, c)) => {
                out.source = Some(s);
                out.certificate = Some(c);
                (true, false)
            }
            None => (false, false),
        }
    }

    /// Every rule a candidate must pass; the reason if it fails.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &self,
        local: &dyn Local,
        source: Source,
        c: &Certificate,
        others: &[Certificate],
        address: &str,
        now: i64,
        chain_needed: bool,
        deadline: Instant,
    ) -> Result<(), String> {
        let fp = validate::sha256_hex(c.der());
        if self.blocked.contains(&fp)
            || self
                .blocked_by_admin
                .read()
                .map_or(true, |b| b.contains(&fp))
        {
            return Err("blocked by an administrator".into());
        }
        if !c.has_email(address) {
            return Err(format!("it does not name {address}"));
        }
        if let Some(why) = validate::unusable_reason(c, now) {
            return Err(why);
        }
        if is_revoked(c, &local.revoked()) {
            return Err("it is revoked by the box's CA".into());
        }
        if !chain_needed {
            return Ok(());
        }
        // Pinned: an administrator stored exactly this certificate.
        if source != Source::Pinned
            && local
                .stored(address)
                .is_ok_and(|s| s.iter().any(|p| p.der() == c.der()))
        {
            return Ok(());
        }
        let mut anchors = self.anchors.clone();
        anchors.extend(local.anchors());
        // The path first: CRLs are fetched only for a certificate that would be used.
        validate::chains_to_anchor(c, others, &anchors, now)?;
        // OCSP first (one small signed answer); a "good" one spares the CRL.
        let mut pool = others.to_vec();
        pool.extend(anchors.iter().cloned());
        let mut ocsp_failed = None;
        if let Some(issuer) = ocsp::issuer_of(c, &pool) {
            match self.ocsp.status(c, issuer, deadline) {
                Ok(Some(ocsp::Status::Revoked)) => {
                    return Err("it is revoked (its issuer's OCSP responder says so)".into());
                }
                Ok(Some(ocsp::Status::Good)) => return Ok(()),
                Ok(Some(ocsp::Status::Unknown)) => {
                    ocsp_failed = Some("its OCSP responder does not know it".to_string());
                }
                Ok(None) => {}
                Err(e) => ocsp_failed = Some(e),
            }
        }
        let hard = self.settings.revocation == Revocation::HardFail;
        let urls = revocation::crl_urls(c.der());
        if urls.is_empty() {
            return match ocsp_failed {
                Some(e) if hard => Err(format!(
                    "no usable OCSP answer ({e}) and no CRL (revocation = hard-fail)"
                )),
                _ => Ok(()),
            };
        }
        let (crls, failed) = self.crls.get(&urls, deadline);
        if crls.is_empty() && failed > 0 && hard {
            return Err(format!(
                "none of its CRL distribution points answered ({}; revocation = hard-fail)",
                urls.join(", ")
            ));
        }
        validate::chains_to_anchor_with_crls(c, others, &anchors, &crls, now)
    }
}

fn is_revoked(c: &Certificate, revoked: &[Revoked]) -> bool {
    revoked
        .iter()
        .any(|r| sealgate_smime::cert::names_equal(&r.issuer, &c.issuer) && r.serial == c.serial)
}

fn short_fp(c: &Certificate) -> String {
    let mut f = validate::sha256_hex(c.der());
    f.truncate(16);
    format!("sha256 {f}")
}

fn refusal(source: Source, reason: String) -> Refusal {
    Refusal {
        source: source.as_str().to_string(),
        reason,
    }
}

/// Runs `ask` on its own thread and waits for it until `deadline`: a source that hangs
/// costs the lookup no more than the deadline (its thread ends by its own timeouts, which
/// are the same deadline).
fn within<T: Send + 'static>(
    deadline: Instant,
    ask: impl FnOnce(Instant) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("not asked: the lookup deadline had passed".into());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("directory-source".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ask(deadline)))
                .unwrap_or_else(|_| Err("the answer could not be read".into()));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the query ({e})"));
    }
    match rx.recv_timeout(left) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within the lookup deadline ({} ms)",
            left.as_millis()
        )),
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A rustls client configuration trusting `ca` (PEM file) or the system's CA bundle.
pub(crate) fn tls_config(
    ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let path = ca
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let data = std::fs::read(&path);
    match (data, ca) {
        (Ok(d), _) => {
            for block in pem::parse_many(&d).map_err(|e| format!("{}: {e}", path.display()))? {
                if block.tag() == "CERTIFICATE" {
                    roots
                        .add(rustls_pki_types::CertificateDer::from(
                            block.into_contents(),
                        ))
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
        }
        (Err(e), Some(_)) => return Err(format!("{}: {e}", path.display())),
        (Err(_), None) => {}
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

    use super::*;

    fn cert(email: &str) -> Certificate {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, email);
        p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        let key = KeyPair::generate().unwrap();
        Certificate::from_der(p.self_signed(&key).unwrap().der()).unwrap()
    }

    /// A vault with one local user's and one pinned certificate per address.
    struct Fake {
        own: Option<Certificate>,
        stored: Vec<Certificate>,
    }

    impl Local for Fake {
        fn own(&self, _: &str) -> Result<Option<Certificate>, String> {
            Ok(self.own.clone())
        }
        fn stored(&self, _: &str) -> Result<Vec<Certificate>, String> {
            Ok(self.stored.clone())
        }
        fn anchors(&self) -> Vec<Certificate> {
            Vec::new()
        }
        fn revoked(&self) -> Vec<Revoked> {
            Vec::new()
        }
    }

    #[test]
    fn the_configured_order_decides_and_blocked_certificates_are_never_used() {
        let own = cert("a@example.org");
        let pinned = cert("a@example.org");
        let local = Fake {
            own: Some(own.clone()),
            stored: vec![pinned.clone()],
        };
        let d = Directory::new(Settings::default(), Vec::new(), None).unwrap();
        let l = d.lookup_with(&local, " A@Example.org ", d.deadline());
        assert_eq!(l.address, "a@example.org");
        assert_eq!(
            (l.source, l.certificate),
            (Some(Source::Vault), Some(own.clone()))
        );

        let s = Settings {
            order: vec![Source::Pinned, Source::Vault],
            ..Settings::default()
        };
        let d = Directory::new(s, Vec::new(), None).unwrap();
        let l = d.lookup_with(&local, "a@example.org", d.deadline());
        assert_eq!(l.source, Some(Source::Pinned));

        let s = Settings {
            blocked: vec![
                validate::sha256_hex(own.der()),
                validate::sha256_hex(pinned.der()),
            ],
            ..Settings::default()
        };
        let d = Directory::new(s, Vec::new(), None).unwrap();
        let l = d.lookup_with(&local, "a@example.org", d.deadline());
        assert_eq!(l.source, None);
        assert_eq!(l.refused.len(), 2, "{:?}", l.refused);
        assert!(l.refused.iter().all(|r| r.reason.contains("blocked")));
        let j = l.to_json();
        assert_eq!(j["source"], "none");
        assert!(j["certificate"].is_null());

        // A stored certificate naming another address is not taken for this one.
        let l = d.lookup_with(&local, "b@example.org", d.deadline());
        assert!(
            l.refused
                .iter()
                .all(|r| r.reason.contains("does not name b@example.org")
                    || r.reason.contains("blocked"))
        );
        assert_eq!(l.source, None);
    }

    #[test]
    fn settings_are_checked() {
        let bad = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().is_err()
        };
        let ldap = |url: &str, filter: &str| LdapSettings {
            url: url.into(),
            base: "dc=x".into(),
            filter: filter.into(),
            starttls: false,
            ca: None,
            bind_dn: None,
            bind_password_file: None,
        };
        assert!(Settings::default().validate().is_ok());
        assert!(bad(&|s| s.ldap.push(ldap("http://x", "(mail={address})"))));
        assert!(bad(&|s| s.ldap.push(ldap("ldap://x", "(mail=*)"))));
        assert!(bad(&|s| s.http.push(HttpSettings {
            url: "http://x/lookup".into(),
            ca: None
        })));
        assert!(bad(&|s| s.blocked.push("abc".into())));
        assert!(bad(&|s| s.deadline_ms = 0));
        let t: Settings = toml::from_str("order = [\"ldap\", \"vault\"]\n[[ldap]]\nurl = \"ldap://127.0.0.1:3389\"\nbase = \"dc=partner,dc=test\"\n").unwrap();
        assert_eq!(t.ldap[0].filter, "(mail={address})");
        assert!(toml::from_str::<Settings>("order = [\"dns\"]").is_err());
        assert!(toml::from_str::<Settings>("nonsense = 1").is_err());
    }

    #[test]
    fn ldap_values_may_be_a_certificate_or_a_pkcs7_bundle() {
        let der: &[u8] = include_bytes!("../../../fuzz/corpus/directory/certificate.der");
        let p7: &[u8] = include_bytes!("../../../fuzz/corpus/directory/pkcs7-bundle.p7");
        assert_eq!(ldap::certificates_in(der), vec![der.to_vec()]);
        assert_eq!(ldap::certificates_in(p7), vec![der.to_vec()]);
        assert_eq!(ldap::certificates_in(b"junk"), vec![b"junk".to_vec()]);
    }
}
