//! Replacing the box's TLS certificate (`admin/tls.rs` is its HTTP side): a key and CSR made
//! on the box, the certificate an organisation's CA signed for it, or a key and certificate
//! pair made elsewhere (PKCS#12 or PEM). Everything is checked before anything changes: the
//! chain (each certificate signed by the next; the last one taken as the anchor), the key
//! (the CSR's, or the pair's own), validity now, the serverAuth purpose when the certificate
//! names purposes, and the names (each one the CSR asked for; at least one DNS name or IP
//! address). Then the certificate file, the vault's key and the listeners' resolver change,
//! the file put back if the vault refuses.
//!
//! The attacker: an administrator's session driven by someone else (CSRF is `authorize`'s)
//! and whatever an uploaded file holds: every certificate, key and PKCS#12 file is parsed as
//! untrusted input (x509-parser, rustls-webpki, p12-keystore), sizes bounded by the caller.

use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sealgate_smime::cert::Certificate;
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::identity::{LiveCertificate, certified_key, hex, sha256};

/// Names in one request, at most.
pub const MAX_NAMES: usize = 32;
/// Longest subject common name and organisation, in characters.
pub const MAX_SUBJECT: usize = 64;

/// A refusal of the caller's input: `field` names what it is about (for the web UI).
#[derive(Debug)]
pub struct Refused {
    /// The request field (`dns_names`, `certificate`, `key`, `pkcs12`, ...).
    pub field: &'static str,
    /// What is wrong, in a sentence for the administrator.
    pub detail: String,
}

fn refuse(field: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        field,
        detail: detail.into(),
    }
}

/// A name the certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A DNS name (lowercase; may start with `*.`).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Dns(d) => f.write_str(d),
            Name::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A DNS name as a certificate may name the box: labels of letters, digits and hyphens
/// (1 to 63 characters, no hyphen at either end), at most 253 characters, optionally after
/// one leading `*.`.
pub fn dns_name(text: &str) -> Result<Name, String> {
    let t = text.trim().to_ascii_lowercase();
    let body = t.strip_prefix("*.").unwrap_or(&t);
    let ok = !body.is_empty()
        && t.len() <= 253
        && body.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // An all-numeric last label is an address written as a name.
        && !body.rsplit('.').next().is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(Name::Dns(t))
    } else {
        Err(format!("{text:?} is not a DNS name"))
    }
}

/// The request for a new certificate, as the caller gives it.
pub struct RequestInput {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organisation, if any.
    pub organization: Option<String>,
    /// DNS names.
    pub dns_names: Vec<String>,
    /// IP addresses.
    pub ip_addresses: Vec<String>,
    /// `p256` (default) or `rsa3072`.
    pub key_algorithm: Option<String>,
}

fn subject_text(field: &'static str, what: &str, v: &str) -> Result<String, Refused> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > MAX_SUBJECT || v.chars().any(char::is_control) {
        return Err(refuse(
            field,
            format!("the {what} is 1 to {MAX_SUBJECT} characters, no control characters"),
        ));
    }
    Ok(v.to_string())
}

/// Makes a key and its CSR for `input` (checked first). Returns (key PEM, CSR PEM).
pub fn make_request(input: &RequestInput) -> Result<(Zeroizing<Vec<u8>>, String), Refused> {
    let cn = subject_text("common_name", "common name", &input.common_name)?;
    let org = match &input.organization {
        Some(o) if !o.trim().is_empty() => Some(subject_text("organization", "organisation", o)?),
        _ => None,
    };
    let mut names = Vec::new();
    for d in &input.dns_names {
        names.push(dns_name(d).map_err(|e| refuse("dns_names", e))?);
    }
    for ip in &input.ip_addresses {
        let a: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| refuse("ip_addresses", format!("{ip:?} is not an IP address")))?;
        names.push(Name::Ip(a));
    }
    names.dedup();
    if names.is_empty() {
        return Err(refuse(
            "dns_names",
            "name at least one DNS name or IP address: browsers and mail clients check the certificate's names, not its common name",
        ));
    }
    if names.len() > MAX_NAMES {
        return Err(refuse(
            "dns_names",
            format!("at most {MAX_NAMES} names in one certificate"),
        ));
    }
    let key = match input.key_algorithm.as_deref().unwrap_or("p256") {
        "p256" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        "rsa3072" => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        other => {
            return Err(refuse(
                "key_algorithm",
                format!("{other:?}: the key algorithm is p256 or rsa3072"),
            ));
        }
    }
    .map_err(|e| refuse("key_algorithm", format!("the key cannot be made: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn.as_str());
    if let Some(o) = org {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
    }
    for n in &names {
        params.subject_alt_names.push(match n {
            Name::Dns(d) => rcgen::SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|_| refuse("dns_names", format!("{d:?} is not a DNS name")))?,
            ),
            Name::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        });
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| refuse("common_name", format!("the CSR cannot be made: {e}")))?;
    Ok((Zeroizing::new(key.serialize_pem().into_bytes()), csr))
}

/// What a CSR asks for: its subject and names.
#[derive(Debug, Serialize)]
pub struct RequestView {
    /// The subject, as text.
    pub subject: String,
    /// The names (DNS names and IP addresses).
    pub names: Vec<String>,
    /// When the request was made (RFC 3339).
    pub created: String,
    /// SHA-256 of the CSR's PEM text.
    pub csr_sha256: String,
}

/// The names a CSR (PEM) asks for, and its subject.
pub fn request_names(csr_pem: &str) -> anyhow::Result<(String, Vec<Name>)> {
    let der = pem::parse(csr_pem)?.into_contents();
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| anyhow::anyhow!("the stored CSR: {e}"))?;
    let mut names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            names.extend(san.general_names.iter().filter_map(general_name));
        }
    }
    Ok((csr.certification_request_info.subject.to_string(), names))
}

fn general_name(g: &GeneralName<'_>) -> Option<Name> {
    match g {
        GeneralName::DNSName(d) => Some(Name::Dns(d.to_ascii_lowercase())),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b)
                .ok()
                .map(|a| Name::Ip(IpAddr::from(a))),
            16 => <[u8; 16]>::try_from(*b)
                .ok()
                .map(|a| Name::Ip(IpAddr::from(a))),
            _ => None,
        },
        _ => None,
    }
}

/// The certificate the listeners serve, as the API shows it.
#[derive(Debug, Serialize)]
pub struct CertificateView {
    /// `box` (the box's own, changeable here) or `settings` (`[tls] certificate`, `key`).
    pub source: &'static str,
    /// The subject, as text.
    pub subject: String,
    /// The issuer, as text.
    pub issuer: String,
    /// The names it is for (DNS names and IP addresses).
    pub names: Vec<String>,
    /// Validity start (RFC 3339).
    pub not_before: String,
    /// Validity end (RFC 3339).
    pub not_after: String,
    /// Days until it expires (negative: expired).
    pub days_left: i64,
    /// SHA-256 of the leaf's DER, lowercase hex.
    pub sha256: String,
    /// The issuer is the subject.
    pub self_signed: bool,
    /// Certificates served (the leaf and the chain above it).
    pub chain_length: usize,
    /// The key's kind (`ec-p256`, `rsa-3072`, ...).
    pub key: String,
}

/// The view of a chain (leaf first) the listeners serve.
pub fn view(chain: &[CertificateDer<'_>], from_settings: bool) -> anyhow::Result<CertificateView> {
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no certificate"))?;
    let c = Certificate::from_der(leaf.as_ref())?;
    let (_, x) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| anyhow::anyhow!("the certificate: {e}"))?;
    let names = san_names(&x).iter().map(ToString::to_string).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(CertificateView {
        source: if from_settings { "settings" } else { "box" },
        subject: c.subject_text(),
        issuer: c.issuer_text(),
        names,
        not_before: sealgate_smime::chain::rfc3339(c.not_before),
        not_after: sealgate_smime::chain::rfc3339(c.not_after),
        days_left: (c.not_after - now).div_euclid(86_400),
        sha256: hex(&sha256(leaf.as_ref())),
        self_signed: c.is_self_issued(),
        chain_length: chain.len(),
        key: c.key_kind.label(),
    })
}

fn san_names(x: &X509Certificate<'_>) -> Vec<Name> {
    match x.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(general_name)
            .collect(),
        _ => Vec::new(),
    }
}

/// Certificates from PEM text (`CERTIFICATE` blocks) or one DER certificate.
pub fn parse_chain(
    field: &'static str,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, Refused> {
    let chain: Vec<CertificateDer<'static>> = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        pem::parse_many(bytes)
            .map_err(|e| refuse(field, format!("not readable PEM: {e}")))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| CertificateDer::from(p.into_contents()))
            .collect()
    } else {
        vec![CertificateDer::from(bytes.to_vec())]
    };
    if chain.is_empty() {
        return Err(refuse(
            field,
            "no certificate (a PEM CERTIFICATE block) in it",
        ));
    }
    for (i, c) in chain.iter().enumerate() {
        X509Certificate::from_der(c.as_ref()).map_err(|e| {
            refuse(
                field,
                format!("certificate {} of the chain is not X.509: {e}", i + 1),
            )
        })?;
    }
    Ok(chain)
}

/// Checks a chain (leaf first) for the box's listeners at `now` (Unix seconds): validity,
/// purpose, the names (`wanted`, or at least one), and that each certificate is signed by
/// the next one (the last is taken as the anchor: the organisation's own root need not be
/// public).
pub fn check_chain(chain: &[CertificateDer<'_>], wanted: &[Name], now: i64) -> Result<(), Refused> {
    let field = "certificate";
    let leaf_der = chain
        .first()
        .ok_or_else(|| refuse(field, "no certificate"))?;
    let (_, leaf) = X509Certificate::from_der(leaf_der.as_ref())
        .map_err(|e| refuse(field, format!("the certificate is not X.509: {e}")))?;
    let (from, to) = (
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );
    if now < from || now > to {
        return Err(refuse(
            field,
            format!(
                "the certificate is not valid now (valid from {} to {})",
                sealgate_smime::chain::rfc3339(from),
                sealgate_smime::chain::rfc3339(to)
            ),
        ));
    }
    if leaf.is_ca() {
        return Err(refuse(
            field,
            "the first certificate is a CA certificate (basicConstraints cA), which TLS clients refuse as a server's: give the box's own certificate first, then the chain above it (`openssl req -x509` makes CA certificates unless given -addext basicConstraints=critical,CA:FALSE)",
        ));
    }
    if let Ok(Some(eku)) = leaf.extended_key_usage()
        && !(eku.value.server_auth || eku.value.any)
    {
        return Err(refuse(
            field,
            "the certificate's extended key usage lacks serverAuth (TLS server)",
        ));
    }
    let has = san_names(&leaf);
    if has.is_empty() {
        return Err(refuse(
            field,
            "the certificate names no DNS name or IP address (subjectAltName)",
        ));
    }
    let ee = webpki::EndEntityCert::try_from(leaf_der)
        .map_err(|e| refuse(field, format!("the certificate cannot be used: {e:?}")))?;
    for n in wanted {
        let sn = match n {
            Name::Dns(d) => {
                ServerName::try_from(d.trim_start_matches("*.").to_string()).map(|s| s.to_owned())
            }
            Name::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        };
        // A wildcard asked for: the certificate must hold that wildcard itself.
        let covered = match n {
            Name::Dns(d) if d.starts_with("*.") => has.contains(n),
            _ => sn.is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok()),
        };
        if !covered {
            return Err(refuse(
                field,
                format!("the certificate is not for {n}, which the request asked for"),
            ));
        }
    }
    if chain.len() > 1 {
        let last = &chain[chain.len() - 1];
        let anchor = webpki::anchor_from_trusted_cert(last)
            .map_err(|e| refuse("chain", format!("the last certificate of the chain: {e:?}")))?;
        let intermediates = &chain[1..chain.len() - 1];
        let now_t = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        ee.verify_for_usage(
            crate::identity::provider()
                .signature_verification_algorithms
                .all,
            &[anchor],
            intermediates,
            now_t,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            refuse(
                "chain",
                format!(
                    "the chain does not verify: each certificate must be signed by the next one, all valid now ({e:?})"
                ),
            )
        })?;
    }
    Ok(())
}

/// A key and chain from a PKCS#12 file: its one private key and that key's certificates
/// (leaf first). Returns (key PEM, chain).
pub fn from_pkcs12(
    data: &[u8],
    password: &str,
) -> Result<(Zeroizing<Vec<u8>>, Vec<CertificateDer<'static>>), Refused> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        data,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => {
            refuse("password", "wrong password (or a damaged file)")
        }
        other => refuse("pkcs12", format!("not a readable PKCS#12 file: {other}")),
    })?;
    let mut found = Vec::new();
    for (_, entry) in store.entries() {
        if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
            found.push((
                Zeroizing::new(chain.key().as_der().to_vec()),
                chain
                    .certs()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_der().to_vec()))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    if found.len() != 1 {
        return Err(refuse(
            "pkcs12",
            format!(
                "the file holds {} private keys with certificates; the box's TLS identity is exactly one",
                found.len()
            ),
        ));
    }
    let (pkcs8, chain) = found.remove(0);
    if chain.is_empty() {
        return Err(refuse("pkcs12", "the private key has no certificate"));
    }
    let key_pem =
        Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())).into_bytes());
    Ok((key_pem, chain))
}

/// What changed where, for the API's answer.
pub struct Installed {
    /// The new certificate.
    pub view: CertificateView,
    /// The listeners serve it from the next handshake on (always, with the shared resolver).
    pub live: bool,
}

/// Installs a checked chain and key: the certificate file (`DATA/tls/box.crt`, the old one
/// kept as `box.crt.previous`), the key through `store_key` (the vault's one transaction),
/// then the listeners' resolver. If `store_key` fails the old file is put back.
pub fn install(
    data_dir: &Path,
    live: &LiveCertificate,
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    store_key: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Installed> {
    let key = certified_key(chain.clone(), key_pem)?;
    let view = view(&chain, false)?;
    let path = data_dir.join("tls").join(crate::identity::CERT_FILE);
    let old = std::fs::read(&path).ok();
    let pem_text: String = chain
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
        .collect();
    let mode = sealgate_local::fsio::Mode::Exactly(0o644);
    if let Some(old) = &old {
        sealgate_local::fsio::write_atomic(
            &data_dir.join("tls").join("box.crt.previous"),
            old,
            mode,
        )?;
    }
    sealgate_local::fsio::write_atomic(&path, pem_text.as_bytes(), mode)?;
    if let Err(e) = store_key() {
        if let Some(old) = &old
            && let Err(put_back) = sealgate_local::fsio::write_atomic(&path, old, mode)
        {
            tracing::error!(error = %put_back, "the previous TLS certificate file could not be put back");
        }
        return Err(e);
    }
    live.replace(key);
    Ok(Installed { view, live: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn dns_names_are_checked() {
        assert_eq!(
            dns_name("Box.Example.org"),
            Ok(Name::Dns("box.example.org".into()))
        );
        assert!(dns_name("*.example.org").is_ok());
        assert!(dns_name("sealgate").is_ok());
        for bad in [
            "", "*.", "a..b", "-a.b", "a-.b", "a b", "a_b.c", "10.0.0.1", "*.*.a", "é.a",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?}");
        }
        assert!(dns_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn a_request_names_what_was_asked_and_nothing_else() {
        let input = RequestInput {
            common_name: "box.example.org".into(),
            organization: Some("Example".into()),
            dns_names: names(&["box.example.org", "mail.example.org"]),
            ip_addresses: names(&["192.0.2.7"]),
            key_algorithm: None,
        };
        let (key, csr) = make_request(&input).expect("request");
        assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
        let (subject, got) = request_names(&csr).expect("names");
        assert!(subject.contains("box.example.org"), "{subject}");
        assert_eq!(
            got,
            vec![
                Name::Dns("box.example.org".into()),
                Name::Dns("mail.example.org".into()),
                Name::Ip("192.0.2.7".parse().expect("ip")),
            ]
        );
        for (field, bad) in [
            (
                "dns_names",
                RequestInput {
                    dns_names: names(&["not a name"]),
                    ..clone(&input)
                },
            ),
            (
                "ip_addresses",
                RequestInput {
                    ip_addresses: names(&["300.1.1.1"]),
                    ..clone(&input)
                },
            ),
            (
                "dns_names",
                RequestInput {
                    dns_names: vec![],
                    ip_addresses: vec![],
                    ..clone(&input)
                },
            ),
            (
                "common_name",
                RequestInput {
                    common_name: "a\nb".into(),
                    ..clone(&input)
                },
            ),
            (
                "key_algorithm",
                RequestInput {
                    key_algorithm: Some("dsa".into()),
                    ..clone(&input)
                },
            ),
        ] {
            assert_eq!(
                make_request(&bad).map(|_| ()).expect_err("refused").field,
                field
            );
        }
    }

    fn clone(i: &RequestInput) -> RequestInput {
        RequestInput {
            common_name: i.common_name.clone(),
            organization: i.organization.clone(),
            dns_names: i.dns_names.clone(),
            ip_addresses: i.ip_addresses.clone(),
            key_algorithm: i.key_algorithm.clone(),
        }
    }

    /// A CA and a leaf it signs for `names`, valid around now.
    fn signed(names: Vec<String>, ca_flag: bool) -> (Vec<CertificateDer<'static>>, String) {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Example CA");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(names).expect("params");
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        if ca_flag {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let leaf = p.signed_by(&key, &issuer).expect("leaf");
        (
            vec![leaf.der().clone(), ca_cert.der().clone()],
            key.serialize_pem(),
        )
    }

    #[test]
    fn chains_are_checked_for_names_validity_and_signatures() {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (chain, key) = signed(names(&["box.example.org", "192.0.2.7"]), false);
        let want = [
            Name::Dns("box.example.org".into()),
            Name::Ip("192.0.2.7".parse().expect("ip")),
        ];
        check_chain(&chain, &want, now).expect("good chain");
        assert!(certified_key(chain.clone(), key.as_bytes()).is_ok());
        // Another name than asked.
        let e = check_chain(&chain, &[Name::Dns("other.example.org".into())], now)
            .expect_err("refused");
        assert!(e.detail.contains("other.example.org"), "{}", e.detail);
        // Not valid then.
        let e = check_chain(&chain, &want, now + 60 * 86_400).expect_err("refused");
        assert!(e.detail.contains("not valid now"), "{}", e.detail);
        // The chain's CA did not sign it.
        let (other, _) = signed(names(&["box.example.org"]), false);
        let mixed = vec![chain[0].clone(), other[1].clone()];
        assert_eq!(
            check_chain(&mixed, &want, now).expect_err("refused").field,
            "chain"
        );
        // Another key.
        let (_, other_key) = signed(names(&["x.example.org"]), false);
        let e = certified_key(chain.clone(), other_key.as_bytes()).expect_err("refused");
        assert!(e.to_string().contains("not the certificate's key"), "{e}");
        // A CA certificate first.
        let (ca_first, _) = signed(names(&["box.example.org"]), true);
        assert!(check_chain(&ca_first, &[], now).is_err());
        // Garbage is refused, not a panic.
        assert!(
            parse_chain(
                "certificate",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
        assert!(parse_chain("certificate", b"\x30\x03\x02\x01\x01").is_err());
        assert!(from_pkcs12(b"not pkcs12", "x").is_err());
    }
}
