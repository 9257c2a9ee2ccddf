//! The box's identity: its TLS certificate (self-signed on first start unless one is
//! configured), the rustls server configuration every listener shares, and the pinned client
//! certificates of mutual TLS.
//!
//! The box's own TLS private key is kept in the vault, encrypted under the vault key like
//! users' keys ([`sealgate_vault::Vault::tls_key`]); only the certificate is a file
//! (`DATA/tls/box.crt`). A clear `DATA/tls/box.key` left by an earlier version is moved into
//! the vault at start and then overwritten and removed. A certificate and key configured in
//! the settings (`[tls] certificate`, `key`) are the operator's files and are read as they
//! are.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use sealgate_vault::Vault;
use zeroize::Zeroizing;

use crate::settings::Settings;

/// File names under `DATA/tls/`.
pub(crate) const CERT_FILE: &str = "box.crt";
const KEY_FILE: &str = "box.key";

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    sealgate_smime::cert::hex(b)
}

/// `AB:CD:...` as browsers and `openssl x509 -fingerprint` show it.
pub fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `n` random bytes from AWS-LC's generator.
pub fn random(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut v).map_err(|_| anyhow::anyhow!("the random generator failed"))?;
    Ok(v)
}

/// The TLS certificate and key every listener serves.
pub struct TlsIdentity {
    /// The certificate and key as every listener serves them (replaceable at run time).
    pub live: Arc<LiveCertificate>,
    /// SHA-256 of the leaf.
    pub fingerprint: [u8; 32],
    /// True if we created it just now.
    pub created: bool,
}

/// The box's certificate chain and key as every TLS listener serves them: one resolver shared
/// by all their configurations, so a new certificate (`admin/tls.rs`) is served from the next
/// handshake on, without a restart. Connections already open keep the one they began with.
#[derive(Debug)]
pub struct LiveCertificate {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
    /// True when the certificate is the operator's files (`[tls] certificate`, `key`): the
    /// admin API then does not replace it.
    pub from_settings: bool,
}

impl LiveCertificate {
    /// A resolver serving `key`.
    pub fn new(key: CertifiedKey, from_settings: bool) -> LiveCertificate {
        LiveCertificate {
            current: std::sync::RwLock::new(Arc::new(key)),
            from_settings,
        }
    }

    /// What the listeners serve now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certified key of a chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1),
/// refused unless the key is the leaf's.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
) -> anyhow::Result<CertifiedKey> {
    let key_block = pem::parse_many(key_pem)
        .context("the private key is not PEM")?
        .into_iter()
        .find(|p| p.tag().ends_with("PRIVATE KEY"))
        .context("no private key in the PEM")?;
    let key = match key_block.tag() {
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(key_block.into_contents().into()),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(key_block.into_contents().into()),
        _ => PrivateKeyDer::Pkcs8(key_block.into_contents().into()),
    };
    let refused = |e: rustls::Error| match e {
        rustls::Error::InconsistentKeys(_) => {
            anyhow::anyhow!("the private key is not the certificate's key")
        }
        e => anyhow::anyhow!("the private key cannot be used: {e}"),
    };
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(refused)?;
    // `from_der` lets an unknown match pass; the box's keys always tell.
    certified.keys_match().map_err(refused)?;
    Ok(certified)
}

/// Loads the configured certificate, or the box's own (its key from `vault`), creating it on
/// first start and moving a clear key file of an earlier version into the vault.
pub fn load_or_create(
    data_dir: &Path,
    settings: &Settings,
    vault: &Vault,
) -> anyhow::Result<TlsIdentity> {
    if let (Some(c), Some(k)) = (&settings.tls.certificate, &settings.tls.key) {
        let key_pem =
            Zeroizing::new(fs::read(k).with_context(|| format!("reading {}", k.display()))?);
        return identity(c, &key_pem, k, false, true);
    }
    let dir = data_dir.join("tls");
    let cert_path = dir.join(CERT_FILE);
    let clear_key = dir.join(KEY_FILE);
    // An earlier version's clear key file: into the vault, then gone.
    if clear_key.exists() {
        let pem = Zeroizing::new(
            fs::read(&clear_key).with_context(|| format!("reading {}", clear_key.display()))?,
        );
        if cert_path.exists() && vault.tls_key()?.is_none() {
            vault
                .store_tls_key(&pem, "moved from tls/box.key into the vault")
                .context("storing the TLS key in the vault")?;
        }
        destroy_file(&clear_key)?;
    }
    let mut created = false;
    let key_pem = match vault.tls_key()? {
        Some(k) if cert_path.exists() => k,
        _ => {
            let pem = create_self_signed(data_dir)?;
            vault
                .store_tls_key(&pem, "created (self-signed)")
                .context("storing the TLS key in the vault")?;
            created = true;
            pem
        }
    };
    identity(
        &cert_path,
        &key_pem,
        Path::new("the vault's TLS key"),
        created,
        false,
    )
}

/// Checks that a configured certificate and key (`[tls]`) make an identity, as the next start
/// will need them (a settings change is refused otherwise).
pub fn check_files(certificate: &Path, key: &Path) -> anyhow::Result<()> {
    let key_pem =
        Zeroizing::new(fs::read(key).with_context(|| format!("reading {}", key.display()))?);
    identity(certificate, &key_pem, key, false, true).map(|_| ())
}

/// Overwrites a file with zeros, syncs, and removes it.
pub(crate) fn destroy_file(path: &Path) -> anyhow::Result<()> {
    let len = fs::metadata(path)?.len();
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)])?;
    f.sync_all()?;
    drop(f);
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The identity from a certificate file and a PEM private key.
fn identity(
    cert_path: &Path,
    key_pem: &[u8],
    key_name: &Path,
    created: bool,
    from_settings: bool,
) -> anyhow::Result<TlsIdentity> {
    let cert_pem =
        fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&cert_pem)
        .with_context(|| format!("{}: not PEM", cert_path.display()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let leaf = chain
        .first()
        .with_context(|| format!("{}: no certificate", cert_path.display()))?;
    let fingerprint = sha256(leaf.as_ref());
    let key = certified_key(chain, key_pem)
        .with_context(|| format!("{} with {}", key_name.display(), cert_path.display()))?;
    Ok(TlsIdentity {
        live: Arc::new(LiveCertificate::new(key, from_settings)),
        fingerprint,
        created,
    })
}

/// A self-signed ECDSA P-256 certificate for this host's names, written to `DATA/tls/`;
/// returns its private key (PEM) for the vault.
fn create_self_signed(data_dir: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir)?;
    let host = fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !host.is_empty() && host != "localhost" {
        names.insert(0, host.clone());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        if host.is_empty() {
            "sealgate".to_string()
        } else {
            format!("sealgate {host}")
        },
    );
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    let cert = params.self_signed(&key)?;
    sealgate_local::fsio::write_atomic(
        &dir.join(CERT_FILE),
        cert.pem().as_bytes(),
        sealgate_local::fsio::Mode::Exactly(0o644),
    )?;
    Ok(Zeroizing::new(key.serialize_pem().into_bytes()))
}

/// The crypto provider of every listener: AWS-LC, the one C crypto library in the binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls server configuration: our certificate, TLS 1.2/1.3, and client certificates
/// asked for (not required) when any are pinned.
pub fn server_config(
    id: &TlsIdentity,
    pins: Vec<[u8; 32]>,
    alpn_http: bool,
) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if pins.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(Arc::new(PinnedClients {
            pins,
            algs: provider.signature_verification_algorithms,
        }))
    };
    let mut cfg = builder.with_cert_resolver(id.live.clone());
    if alpn_http {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(cfg)
}

/// Accepts exactly the pinned client certificates (by SHA-256 of the DER): partners'
/// gateways often present self-signed certificates, so there is no chain to build. The
/// handshake signature is still checked, so the client must hold the key.
#[derive(Debug)]
struct PinnedClients {
    pins: Vec<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = sha256(end_entity.as_ref());
        if self.pins.contains(&fp) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(sha256 = %hex(&fp), "TLS client certificate not pinned: handshake refused");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A client-side verifier that accepts any server certificate but still checks the
/// handshake signature: the health probe of our own listener, and opportunistic STARTTLS to a
/// next hop (encryption against a passive listener only, RFC 7435).
#[derive(Debug)]
pub(crate) struct AnyCertificate {
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealgate_vault::SoftwareSealer;

    fn vault(dir: &Path) -> Vault {
        Vault::init(dir, &mut SoftwareSealer::danger_new())
            .expect("vault")
            .0
    }

    #[test]
    fn the_tls_key_is_kept_in_the_vault_not_in_a_file() {
        let d = tempfile::tempdir().expect("tmp");
        let v = vault(d.path());
        let id = load_or_create(d.path(), &Settings::default(), &v).expect("create");
        assert!(id.created);
        assert!(d.path().join("tls/box.crt").exists());
        assert!(!d.path().join("tls/box.key").exists(), "no clear key file");
        let key_pem = v.tls_key().expect("read").expect("stored");
        assert!(String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY"));
        // Nothing in the data directory holds the key in clear.
        let der = pem::parse(&*key_pem).expect("pem").into_contents();
        for entry in fs::read_dir(d.path()).expect("dir").flatten() {
            if entry.path().is_file() {
                let bytes = fs::read(entry.path()).expect("read");
                assert!(
                    !bytes.windows(der.len()).any(|w| w == der.as_slice()),
                    "{} holds the TLS key in clear",
                    entry.path().display()
                );
            }
        }
        // A restart serves the same identity.
        let again = load_or_create(d.path(), &Settings::default(), &v).expect("load");
        assert!(!again.created);
        assert_eq!(again.fingerprint, id.fingerprint);
    }

    /// Regression: the key was stored in clear at DATA/tls/box.key.
    #[test]
    fn a_clear_key_file_of_an_earlier_version_moves_into_the_vault() {
        let d = tempfile::tempdir().expect("tmp");
        let key_pem = create_self_signed(d.path()).expect("old identity");
        fs::write(d.path().join("tls/box.key"), &*key_pem).expect("old key file");
        let old_fp = sha256(
            pem::parse(fs::read(d.path().join("tls/box.crt")).expect("crt"))
                .expect("pem")
                .contents(),
        );
        let v = vault(d.path());
        let id = load_or_create(d.path(), &Settings::default(), &v).expect("migrate");
        assert!(!id.created, "the same identity, not a new one");
        assert_eq!(id.fingerprint, old_fp);
        assert!(
            !d.path().join("tls/box.key").exists(),
            "the clear file is gone"
        );
        assert_eq!(
            v.tls_key().expect("read").expect("stored").as_slice(),
            key_pem.as_slice()
        );
        let audit = v.audit().expect("audit");
        assert!(audit.iter().any(|e| e.action == "vault.tls-key"
            && e.detail.contains("moved from tls/box.key")));
    }
}
