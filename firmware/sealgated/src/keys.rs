//! Where the docking operations get keys and certificates: a narrow trait, so the vault (today
//! redb, later maybe a shared database or an HSM) stays behind one boundary.
//!
//! Two traits: [`KeyStore`] is the vault side (keys as shared [`VaultKey`]s, cached across
//! requests); [`KeyDirectory`] is what the docking operations see. The only way from one to
//! the other is [`Acting`], which names who asks (the docking client and its address, or
//! the SMTP hand-off and its client's address): every key use through it is recorded in the
//! vault's audit chain under that name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::signed::Revoked;
use sealgate_vault::{PendingOutcome, Vault, VaultError, VaultKey};

/// A private key the engine may use from any thread.
pub type Key = Arc<dyn PrivateKey + Send + Sync>;

/// Who uses keys, as the vault's audit chain names them: `docking:<client> from <address>`
/// (the token's name, or `cert:<name>` for a pinned client certificate) or
/// `smtp-<direction> from <address>`. Control characters are replaced.
pub fn actor(service: &str, client: &str, peer: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(200)
            .collect()
    };
    if client.is_empty() {
        format!("{} from {}", clean(service), clean(peer))
    } else {
        format!("{}:{} from {}", clean(service), clean(client), clean(peer))
    }
}

/// Keys and certificates by email address, as the docking operations use them.
pub trait KeyDirectory: Send + Sync {
    /// Every key (all states: old keys still decrypt) of the local user `address`; empty if
    /// the box holds none.
    fn decryption_keys(&self, address: &str) -> Result<Vec<Key>, VaultError>;
    /// Whether the box holds a decryption key of `address` (nothing is handed out, so no
    /// use is possible through the answer).
    fn holds_keys(&self, address: &str) -> Result<bool, VaultError> {
        Ok(!self.decryption_keys(address)?.is_empty())
    }
    /// The key `address` signs with, if the box holds one.
    fn signing_key(&self, address: &str) -> Result<Option<Key>, VaultError>;
    /// The certificate to encrypt to for `address`: a local user's own, else a stored
    /// recipient certificate valid now (the newest).
    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError>;
    /// Everything the box knows of `address`: (local user's certificate, stored recipient
    /// certificates).
    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError>;
    /// Trust anchors the box itself provides (its CA).
    fn anchors(&self) -> Vec<Certificate>;
    /// Certificates the box's own CA revoked, for signature verification.
    fn revoked(&self) -> Vec<Revoked> {
        Vec::new()
    }
    /// Stores an external recipient's certificate under each of its email addresses.
    fn add_recipient_certificate(&self, cert: &Certificate) -> Result<(), VaultError>;
    /// Keeps an external recipient's certificate for an administrator's decision: never
    /// returned by [`KeyDirectory::encryption_certificate`] until approved.
    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError>;
    /// The S/MIME capabilities `address` announced in signed mail, if the box knows them.
    fn capabilities(&self, _address: &str) -> Option<Vec<String>> {
        None
    }
    /// Stores the S/MIME capabilities `address` announced (with a harvested certificate).
    fn set_capabilities(&self, _address: &str, _caps: &[String]) -> Result<(), VaultError> {
        Ok(())
    }
}

/// The vault side: keys as shared [`VaultKey`]s (whose uses [`Acting`] attributes).
pub trait KeyStore: Send + Sync {
    /// Every key of the local user `address` that decrypts.
    fn decryption_keys(&self, address: &str) -> Result<Vec<Arc<VaultKey>>, VaultError>;
    /// The key `address` signs with.
    fn signing_key(&self, address: &str) -> Result<Option<Arc<VaultKey>>, VaultError>;
    /// See [`KeyDirectory::encryption_certificate`].
    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError>;
    /// Everything the box knows of `address`: (local user's certificate, stored recipient
    /// certificates).
    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError>;
    /// See [`KeyDirectory::anchors`].
    fn anchors(&self) -> Vec<Certificate>;
    /// See [`KeyDirectory::revoked`].
    fn revoked(&self) -> Vec<Revoked>;
    /// Stores an external recipient's certificate; `actor` is named in the audit entry.
    fn add_recipient_certificate(&self, cert: &Certificate, actor: &str) -> Result<(), VaultError>;
    /// See [`KeyDirectory::add_pending_certificate`].
    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError>;
    /// Forgets what is cached, so that a change made through the admin API (import, issue,
    /// revocation) takes effect at once.
    fn forget_cached(&self) {}
    /// See [`KeyDirectory::capabilities`].
    fn capabilities(&self, _address: &str) -> Option<Vec<String>> {
        None
    }
    /// See [`KeyDirectory::set_capabilities`]; `actor` is named in the audit entry.
    fn set_capabilities(
        &self,
        _address: &str,
        _caps: &[String],
        _actor: &str,
    ) -> Result<(), VaultError> {
        Ok(())
    }
}

/// A [`KeyStore`] seen by one caller: every key it hands out records its uses under `actor`.
pub struct Acting<'a> {
    store: &'a dyn KeyStore,
    actor: String,
}

impl<'a> Acting<'a> {
    /// `store` used on behalf of `actor` (see [`actor`]).
    pub fn new(store: &'a dyn KeyStore, actor: String) -> Acting<'a> {
        Acting { store, actor }
    }
}

impl KeyDirectory for Acting<'_> {
    fn decryption_keys(&self, address: &str) -> Result<Vec<Key>, VaultError> {
        Ok(self
            .store
            .decryption_keys(address)?
            .iter()
            .map(|k| Arc::new(k.acting_as(&self.actor)) as Key)
            .collect())
    }

    fn holds_keys(&self, address: &str) -> Result<bool, VaultError> {
        Ok(!self.store.decryption_keys(address)?.is_empty())
    }

    fn signing_key(&self, address: &str) -> Result<Option<Key>, VaultError> {
        Ok(self
            .store
            .signing_key(address)?
            .map(|k| Arc::new(k.acting_as(&self.actor)) as Key))
    }

    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError> {
        self.store.encryption_certificate(address, now)
    }

    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
        self.store.certificates(address)
    }

    fn anchors(&self) -> Vec<Certificate> {
        self.store.anchors()
    }

    fn revoked(&self) -> Vec<Revoked> {
        self.store.revoked()
    }

    fn add_recipient_certificate(&self, cert: &Certificate) -> Result<(), VaultError> {
        self.store.add_recipient_certificate(cert, &self.actor)
    }

    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError> {
        self.store
            .add_pending_certificate(cert, reason, requested_by)
    }

    fn capabilities(&self, address: &str) -> Option<Vec<String>> {
        self.store.capabilities(address)
    }

    fn set_capabilities(&self, address: &str, caps: &[String]) -> Result<(), VaultError> {
        self.store.set_capabilities(address, caps, &self.actor)
    }
}

/// Unknown address (or not an address): "holds nothing", not an error.
fn absent<T>(r: Result<T, VaultError>) -> Result<Option<T>, VaultError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(VaultError::NoKey(_) | VaultError::Usage(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl KeyStore for Vault {
    fn decryption_keys(&self, address: &str) -> Result<Vec<Arc<VaultKey>>, VaultError> {
        Ok(absent(self.keys_for(address))?
            .unwrap_or_default()
            .into_iter()
            .filter(|k| k.purpose().decrypts())
            .map(Arc::new)
            .collect())
    }

    fn signing_key(&self, address: &str) -> Result<Option<Arc<VaultKey>>, VaultError> {
        Ok(absent(Vault::signing_key(self, address))?.map(Arc::new))
    }

    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError> {
        if let Some(c) = absent(self.certificate(address))? {
            return Ok(Some(c));
        }
        let mut certs: Vec<Certificate> = absent(self.recipient_certificates(address))?
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.not_before <= now && now <= c.not_after)
            .collect();
        certs.sort_by_key(|c| std::cmp::Reverse(c.not_before));
        Ok(certs.into_iter().next())
    }

    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
        Ok((
            absent(self.certificate(address))?,
            absent(self.recipient_certificates(address))?.unwrap_or_default(),
        ))
    }

    fn anchors(&self) -> Vec<Certificate> {
        self.ca_certificate().ok().into_iter().collect()
    }

    fn revoked(&self) -> Vec<Revoked> {
        let Ok(ca) = self.ca_certificate() else {
            return Vec::new();
        };
        self.revoked_serials()
            .unwrap_or_default()
            .into_iter()
            .map(|serial| Revoked {
                issuer: ca.subject.clone(),
                serial,
            })
            .collect()
    }

    fn add_recipient_certificate(&self, cert: &Certificate, actor: &str) -> Result<(), VaultError> {
        Vault::add_recipient_certificate_by(self, cert, actor)
    }

    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError> {
        Vault::add_pending_certificate(self, cert, reason, requested_by)
    }

    fn capabilities(&self, address: &str) -> Option<Vec<String>> {
        self.recipient_capabilities(address).ok().flatten()
    }

    fn set_capabilities(
        &self,
        address: &str,
        caps: &[String],
        actor: &str,
    ) -> Result<(), VaultError> {
        self.set_recipient_capabilities_by(address, caps, actor)
    }
}

/// What one address resolves to, cached.
#[derive(Clone)]
struct Entry {
    at: Instant,
    decryption: Vec<Arc<VaultKey>>,
    signing: Option<Arc<VaultKey>>,
    encryption: Option<Certificate>,
}

/// Caches a directory's answers per address for a short time.
///
/// The vault's queries read and deserialise every key record, and opening a key (decrypting
/// and validating it) costs several times its RSA operation, so both are paid once per
/// address per TTL rather than per message. The cached values are [`sealgate_vault::VaultKey`]s,
/// which hold their clear key from first use until dropped; dropping a stale entry drops
/// them. The daemon is the only process that has the vault open (redb admits
/// one), so the cache can only go stale through the daemon itself; the TTL bounds it anyway.
pub struct Cached<D> {
    inner: D,
    ttl: Duration,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    anchors: Mutex<Option<(Instant, Vec<Certificate>)>>,
    revoked: Mutex<Option<(Instant, Vec<Revoked>)>>,
}

/// Entries kept at most; beyond that the cache starts over.
const MAX_ENTRIES: usize = 10_000;

impl<D: KeyStore> Cached<D> {
    /// Caches `inner`'s answers for `ttl`.
    pub fn new(inner: D, ttl: Duration) -> Cached<D> {
        Cached {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
            anchors: Mutex::new(None),
            revoked: Mutex::new(None),
        }
    }

    /// The cached answers for `address` (shared: a hit copies nothing but what the caller
    /// takes from it).
    fn entry(&self, address: &str, now: i64) -> Result<Arc<Entry>, VaultError> {
        let key = address.trim().to_ascii_lowercase();
        if let Ok(m) = self.entries.lock()
            && let Some(e) = m.get(&key).filter(|e| e.at.elapsed() < self.ttl)
        {
            return Ok(e.clone());
        }
        let e = Arc::new(Entry {
            at: Instant::now(),
            decryption: self.inner.decryption_keys(&key)?,
            signing: self.inner.signing_key(&key)?,
            encryption: self.inner.encryption_certificate(&key, now)?,
        });
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(key, e.clone());
        }
        Ok(e)
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl<D: KeyStore> KeyStore for Cached<D> {
    fn forget_cached(&self) {
        if let Ok(mut m) = self.entries.lock() {
            m.clear();
        }
        if let Ok(mut a) = self.anchors.lock() {
            *a = None;
        }
        if let Ok(mut r) = self.revoked.lock() {
            *r = None;
        }
    }

    fn decryption_keys(&self, address: &str) -> Result<Vec<Arc<VaultKey>>, VaultError> {
        Ok(self.entry(address, unix_now())?.decryption.clone())
    }

    fn signing_key(&self, address: &str) -> Result<Option<Arc<VaultKey>>, VaultError> {
        Ok(self.entry(address, unix_now())?.signing.clone())
    }

    fn encryption_certificate(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<Certificate>, VaultError> {
        // A cached certificate that expired since is looked up afresh.
        let e = self.entry(address, now)?;
        match &e.encryption {
            Some(c) if c.not_before <= now && now <= c.not_after => Ok(Some(c.clone())),
            Some(_) => self.inner.encryption_certificate(address, now),
            None => Ok(None),
        }
    }

    fn certificates(
        &self,
        address: &str,
    ) -> Result<(Option<Certificate>, Vec<Certificate>), VaultError> {
        self.inner.certificates(address)
    }

    fn capabilities(&self, address: &str) -> Option<Vec<String>> {
        self.inner.capabilities(address)
    }

    fn set_capabilities(
        &self,
        address: &str,
        caps: &[String],
        actor: &str,
    ) -> Result<(), VaultError> {
        self.inner.set_capabilities(address, caps, actor)
    }

    fn add_recipient_certificate(&self, cert: &Certificate, actor: &str) -> Result<(), VaultError> {
        self.inner.add_recipient_certificate(cert, actor)?;
        // The addresses' cached answers are stale now.
        if let Ok(mut m) = self.entries.lock() {
            for e in &cert.emails {
                m.remove(&e.trim().to_ascii_lowercase());
            }
        }
        Ok(())
    }

    fn add_pending_certificate(
        &self,
        cert: &Certificate,
        reason: &str,
        requested_by: &str,
    ) -> Result<PendingOutcome, VaultError> {
        // Nothing cached changes: a pending certificate is not used.
        self.inner
            .add_pending_certificate(cert, reason, requested_by)
    }

    fn revoked(&self) -> Vec<Revoked> {
        let Ok(mut a) = self.revoked.lock() else {
            return self.inner.revoked();
        };
        match &*a {
            Some((at, v)) if at.elapsed() < self.ttl => v.clone(),
            _ => {
                let v = self.inner.revoked();
                *a = Some((Instant::now(), v.clone()));
                v
            }
        }
    }

    fn anchors(&self) -> Vec<Certificate> {
        let Ok(mut a) = self.anchors.lock() else {
            return self.inner.anchors();
        };
        match &*a {
            Some((at, v)) if at.elapsed() < self.ttl => v.clone(),
            _ => {
                let v = self.inner.anchors();
                *a = Some((Instant::now(), v.clone()));
                v
            }
        }
    }
}
