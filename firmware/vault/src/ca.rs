//! The box's own CA: an organisation root, or an intermediate under an existing corporate
//! CA, that issues S/MIME certificates to users, revokes them and signs CRLs. Its private key
//! is stored like users' keys (AES-256-GCM under the vault key).
//!
//! An intermediate is made in two steps: [`Vault::ca_init_intermediate`] generates the key
//! and returns a CSR (the CA is *pending*); [`Vault::ca_import_cert`] takes the certificate
//! the corporate CA signed, checks it, and from then on the CA issues under it with the
//! corporate chain attached to every issued key.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, RsaKeySize, SanType, SerialNumber,
};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use sealgate_smime::cert::{Certificate, hex};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::audit;
use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};
use crate::record::{KeyRecord, Purpose, b64, b64_list, now, rfc3339};
use crate::store::{CA, KEYS, META, REVOKED, Vault, normalise};

const CA_KEY_AAD: &[u8] = b"sealgate ca key";
/// The last CRL issued (meta record), dropped by every revocation.
const CRL_PEM: &str = "crl_pem";
/// smimeCapabilities (RFC 8551 §2.5.2).
const SMIME_CAPABILITIES: &[u64] = &[1, 2, 840, 113549, 1, 9, 15];
/// Root validity: ten years.
const ROOT_VALIDITY_DAYS: i64 = 3653;

/// Key type for keys the CA makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// RSA 3072 bits (the default: every S/MIME client reads it).
    Rsa3072,
    /// ECDSA / ECDH on P-256.
    P256,
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rsa3072" | "rsa-3072" | "rsa" => Ok(KeyAlgorithm::Rsa3072),
            "p256" | "p-256" | "ec" | "ecdsa-p256" => Ok(KeyAlgorithm::P256),
            other => Err(VaultError::Usage(format!(
                "unknown key algorithm {other:?} (use rsa3072 or p256)"
            ))),
        }
    }
}

/// How the CA issues; stored in the vault, set at `ca init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSettings {
    /// Key type of issued keys (and of the root).
    pub key_algorithm: KeyAlgorithm,
    /// Separate signing and encryption keys instead of one dual-use key.
    pub separate_keys: bool,
    /// Validity of issued certificates, in days.
    pub validity_days: u32,
    /// Put an S/MIME capabilities extension (AES-256-CBC, AES-128-CBC) in issued certificates.
    pub smime_capabilities: bool,
    /// The organisation's own mail domains (auto-enrolment issues only for these).
    pub org_domains: Vec<String>,
    /// Issue a key when mail for a user of an own domain with no key must be handled.
    pub auto_enrol: bool,
    /// How long a CRL is valid (its nextUpdate), in days.
    pub crl_validity_days: u32,
}

impl Default for CaSettings {
    fn default() -> Self {
        CaSettings {
            key_algorithm: KeyAlgorithm::Rsa3072,
            separate_keys: false,
            validity_days: 730,
            smime_capabilities: true,
            org_domains: Vec::new(),
            auto_enrol: true,
            crl_validity_days: 7,
        }
    }
}

/// What `ca init` made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInfo {
    /// The CA's subject.
    pub subject: String,
    /// Serial (hex).
    pub serial: String,
    /// Validity end.
    pub not_after: String,
    /// SHA-256 of the certificate DER.
    pub sha256_fingerprint: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CaRecord {
    name: String,
    #[serde(with = "b64")]
    cert: Vec<u8>,
    #[serde(with = "b64")]
    encrypted_key: Vec<u8>,
    created: i64,
    /// An intermediate under a corporate CA (its certificate was imported).
    #[serde(default)]
    intermediate: bool,
    /// The corporate certificates above the CA certificate, issuer first (DER).
    #[serde(default, with = "b64_list")]
    chain: Vec<Vec<u8>>,
}

/// An intermediate CA waiting for its certificate: the key (encrypted) and the CSR.
#[derive(Serialize, Deserialize)]
struct PendingCa {
    name: String,
    #[serde(with = "b64")]
    encrypted_key: Vec<u8>,
    csr_pem: String,
    created: i64,
}

fn read_pending(txn: &redb::ReadTransaction) -> Result<Option<PendingCa>> {
    let t = txn.open_table(CA)?;
    match t.get("pending")? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// The name of an intermediate CA that waits for its certificate, for `vault status`.
pub(crate) fn pending_ca_name(txn: &redb::ReadTransaction) -> Result<Option<String>> {
    Ok(read_pending(txn)?.map(|p| p.name))
}

fn pending_error(name: &str) -> VaultError {
    VaultError::Usage(format!(
        "the intermediate CA {name:?} waits for its certificate: import the one the corporate CA signed with `sealctl ca import-cert`"
    ))
}

impl CaRecord {
    pub(crate) fn certificate(&self) -> Result<Certificate> {
        Certificate::from_der(&self.cert)
            .map_err(|e| VaultError::Corrupt(format!("CA certificate: {e}")))
    }

    pub(crate) fn signing_key(&self, key: &VaultSecret) -> Result<KeyPair> {
        let pkcs8 = cipher::open(key.bytes(), CA_KEY_AAD, &self.encrypted_key)
            .ok_or_else(|| VaultError::Corrupt("the CA key does not decrypt".into()))?;
        KeyPair::try_from(pkcs8.as_slice())
            .map_err(|e| VaultError::Corrupt(format!("the CA key: {e}")))
    }

    fn issuer(&self, key: KeyPair) -> Result<Issuer<'static, KeyPair>> {
        if !self.intermediate {
            return Ok(Issuer::new(root_params(&self.name, None), key));
        }
        let c = self.certificate()?;
        Ok(Issuer::new(intermediate_issuer_params(&c)?, key))
    }

    fn chain_certs(&self) -> Result<Vec<Certificate>> {
        self.chain
            .iter()
            .map(|d| {
                Certificate::from_der(d)
                    .map_err(|e| VaultError::Corrupt(format!("CA chain certificate: {e}")))
            })
            .collect()
    }
}

/// What rcgen needs to issue under an imported CA certificate: its subject Name exactly as
/// encoded, and its subject key identifier (for the authority key identifier of what it
/// issues).
fn intermediate_issuer_params(c: &Certificate) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name_from_der(&c.subject)?;
    p.key_identifier_method = match &c.subject_key_id {
        Some(ski) => KeyIdMethod::PreSpecified(ski.clone()),
        None => KeyIdMethod::Sha256,
    };
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// A Name (DER) as an rcgen DistinguishedName. Refuses what rcgen cannot re-encode
/// (multi-valued RDNs, repeated attribute types, unusual string types); the import's trial
/// issuance also checks that the issuer Name comes out byte-equal.
fn name_from_der(der: &[u8]) -> Result<DistinguishedName> {
    use sealgate_smime::asn1::{Tlv, tag};
    let bad = |why: &str| {
        VaultError::Usage(format!(
            "the CA certificate's subject cannot be reproduced for issuing: {why}"
        ))
    };
    let name = Tlv::parse(der).map_err(|e| bad(&e.to_string()))?;
    let mut dn = DistinguishedName::new();
    let mut seen = Vec::new();
    let mut r = name.reader();
    while !r.is_empty() {
        let rdn = r.read_any().map_err(|e| bad(&e.to_string()))?;
        let atvs = rdn.reader().read_all().map_err(|e| bad(&e.to_string()))?;
        if atvs.len() != 1 {
            return Err(bad("a multi-valued RDN"));
        }
        let mut a = atvs[0].reader();
        let id = a
            .read(tag::OID, "attribute type")
            .map_err(|e| bad(&e.to_string()))?;
        let val = a.read_any().map_err(|e| bad(&e.to_string()))?;
        let arcs: Vec<u64> = sealgate_smime::oid::dotted(id.value)
            .split('.')
            .map(|n| n.parse::<u64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("an attribute type OID"))?;
        if seen.contains(&arcs) {
            return Err(bad("an attribute type appears twice"));
        }
        seen.push(arcs.clone());
        let text = || {
            std::str::from_utf8(val.value)
                .map(str::to_string)
                .map_err(|_| bad("an attribute value is not text"))
        };
        let value = match val.tag {
            tag::UTF8_STRING => DnValue::Utf8String(text()?),
            tag::PRINTABLE_STRING => {
                DnValue::PrintableString(text()?.try_into().map_err(|_| bad("a PrintableString"))?)
            }
            tag::IA5_STRING => {
                DnValue::Ia5String(text()?.try_into().map_err(|_| bad("an IA5String"))?)
            }
            0x1e => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(val.value.to_vec())
                    .map_err(|_| bad("a BMPString"))?,
            ),
            other => return Err(bad(&format!("string type tag {other:#04x}"))),
        };
        dn.push(DnType::CustomDnType(arcs), value);
    }
    Ok(dn)
}

pub(crate) fn read_ca(txn: &redb::ReadTransaction) -> Result<Option<CaRecord>> {
    let t = txn.open_table(CA)?;
    match t.get("root")? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn root_params(
    name: &str,
    validity: Option<(OffsetDateTime, OffsetDateTime, SerialNumber)>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    if let Some((nb, na, serial)) = validity {
        p.not_before = nb;
        p.not_after = na;
        p.serial_number = Some(serial);
    }
    p
}

fn generate(alg: KeyAlgorithm) -> Result<KeyPair> {
    Ok(match alg {
        KeyAlgorithm::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)?
        }
        KeyAlgorithm::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    })
}

fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    cipher::random(&mut b)?;
    // Positive, and no leading zero byte: the DER INTEGER is these 16 bytes.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn der_seq(children: &[&[u8]]) -> Vec<u8> {
    sealgate_smime::asn1::der::seq(children)
}

fn smime_capabilities() -> CustomExtension {
    use sealgate_smime::asn1::der;
    const AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    const AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
    let caps = der_seq(&[
        &der_seq(&[&der::oid(AES256_CBC)]),
        &der_seq(&[&der::oid(AES128_CBC)]),
    ]);
    CustomExtension::from_oid_content(SMIME_CAPABILITIES, caps)
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let s: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let s = s.strip_prefix("0x").unwrap_or(&s);
    if s.is_empty() || s.len() % 2 == 1 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VaultError::Usage(format!(
            "{s:?} is not a hex serial number"
        )));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| VaultError::Usage("bad hex".into()))
        })
        .collect()
}

impl Vault {
    /// The CA settings (defaults if never set).
    pub fn ca_settings(&self) -> Result<CaSettings> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        match t.get("ca_settings")? {
            Some(v) => Ok(serde_json::from_slice(v.value())?),
            None => Ok(CaSettings::default()),
        }
    }

    /// Replaces the CA settings. Audited.
    pub fn set_ca_settings(&self, settings: &CaSettings) -> Result<()> {
        if settings.validity_days == 0 || settings.crl_validity_days == 0 {
            return Err(VaultError::Usage(
                "validity must be at least one day".into(),
            ));
        }
        let json = serde_json::to_vec(settings)?;
        self.audited(
            |txn| {
                txn.open_table(META)?
                    .insert("ca_settings", json.as_slice())?;
                Ok(())
            },
            "ca.settings",
            "ca",
            &String::from_utf8_lossy(&json),
        )
    }

    /// The CA record; a clear error while an intermediate waits for its certificate.
    fn ca_record(&self) -> Result<CaRecord> {
        let txn = self.db.begin_read()?;
        match read_ca(&txn)? {
            Some(ca) => Ok(ca),
            None => match read_pending(&txn)? {
                Some(p) => Err(pending_error(&p.name)),
                None => Err(VaultError::NoCa),
            },
        }
    }

    fn no_ca_yet(&self, name: &str) -> Result<()> {
        if name.trim().is_empty() {
            return Err(VaultError::Usage("the CA needs a name".into()));
        }
        let txn = self.db.begin_read()?;
        if read_ca(&txn)?.is_some() {
            return Err(VaultError::CaExists);
        }
        if let Some(p) = read_pending(&txn)? {
            return Err(pending_error(&p.name));
        }
        Ok(())
    }

    /// Creates the organisation root CA named `name` with `settings`. Fails if a CA exists.
    pub fn ca_init(&self, name: &str, settings: &CaSettings) -> Result<CaInfo> {
        self.no_ca_yet(name)?;
        let key = generate(settings.key_algorithm)?;
        let nb = OffsetDateTime::now_utc() - Duration::minutes(5);
        let params = root_params(
            name,
            Some((
                nb,
                nb + Duration::days(ROOT_VALIDITY_DAYS),
                random_serial()?,
            )),
        );
        let cert = params.self_signed(&key)?;
        let pkcs8 = Zeroizing::new(key.serialize_der());
        let rec = CaRecord {
            name: name.to_string(),
            cert: cert.der().to_vec(),
            encrypted_key: cipher::seal(self.key.bytes(), CA_KEY_AAD, &pkcs8)?,
            created: now(),
            intermediate: false,
            chain: Vec::new(),
        };
        let c = rec.certificate()?;
        let info = CaInfo {
            subject: c.subject_text(),
            serial: hex(&c.serial),
            not_after: rfc3339(c.not_after),
            sha256_fingerprint: cipher::hex(&cipher::sha256(&[c.der()])),
        };
        let json = serde_json::to_vec(&rec)?;
        let settings_json = serde_json::to_vec(settings)?;
        self.audited(
            |txn| {
                let mut t = txn.open_table(CA)?;
                if t.get("root")?.is_some() || t.get("pending")?.is_some() {
                    return Err(VaultError::CaExists);
                }
                t.insert("root", json.as_slice())?;
                txn.open_table(META)?
                    .insert("ca_settings", settings_json.as_slice())?;
                Ok(())
            },
            "ca.init",
            name,
            &format!(
                "serial={} sha256={} settings={}",
                info.serial,
                info.sha256_fingerprint,
                String::from_utf8_lossy(&settings_json)
            ),
        )?;
        Ok(info)
    }

    /// Starts an intermediate CA named `name` under an existing corporate CA: generates its
    /// key (stored encrypted, like the root's) and returns a PKCS#10 CSR (PEM) for the
    /// corporate CA to sign as a CA certificate (basicConstraints cA, keyUsage keyCertSign and
    /// cRLSign). The CA stays pending until [`Vault::ca_import_cert`]. Audited.
    pub fn ca_init_intermediate(&self, name: &str, settings: &CaSettings) -> Result<String> {
        self.no_ca_yet(name)?;
        let key = generate(settings.key_algorithm)?;
        let mut params = root_params(name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let csr_pem = params.serialize_request(&key)?.pem()?;
        let pkcs8 = Zeroizing::new(key.serialize_der());
        let rec = PendingCa {
            name: name.to_string(),
            encrypted_key: cipher::seal(self.key.bytes(), CA_KEY_AAD, &pkcs8)?,
            csr_pem: csr_pem.clone(),
            created: now(),
        };
        let json = serde_json::to_vec(&rec)?;
        let settings_json = serde_json::to_vec(settings)?;
        let csr_fp = cipher::hex(&cipher::sha256(&[csr_pem.as_bytes()]));
        self.audited(
            |txn| {
                let mut t = txn.open_table(CA)?;
                if t.get("root")?.is_some() || t.get("pending")?.is_some() {
                    return Err(VaultError::CaExists);
                }
                t.insert("pending", json.as_slice())?;
                txn.open_table(META)?
                    .insert("ca_settings", settings_json.as_slice())?;
                Ok(())
            },
            "ca.init-intermediate",
            name,
            &format!(
                "csr_sha256={csr_fp} settings={}",
                String::from_utf8_lossy(&settings_json)
            ),
        )?;
        Ok(csr_pem)
    }

    /// The CSR of the intermediate CA that waits for its certificate.
    pub fn ca_pending_csr(&self) -> Result<String> {
        read_pending(&self.db.begin_read()?)?
            .map(|p| p.csr_pem)
            .ok_or_else(|| VaultError::Usage("no intermediate CA waits for its certificate".into()))
    }

    /// Completes [`Vault::ca_init_intermediate`] with the certificate the corporate CA signed
    /// (`cert`: PEM or DER; further PEM certificates in it join the chain) and the corporate
    /// chain above it (`chain`: PEM, issuer first; may be empty). Checks, changing nothing on
    /// failure: the certificate holds the pending key; it is a CA certificate (basicConstraints
    /// cA, keyUsage keyCertSign and cRLSign) valid now; and a trial certificate issued under it
    /// validates through it to the chain (the chain's self-signed root, or its last
    /// certificate, as the anchor; without a chain, the CA certificate itself). Audited.
    pub fn ca_import_cert(&self, cert: &[u8], chain: &[u8]) -> Result<CaInfo> {
        let pending = read_pending(&self.db.begin_read()?)?.ok_or_else(|| {
            VaultError::Usage(
                "no intermediate CA waits for a certificate (`sealctl ca init --intermediate`)"
                    .into(),
            )
        })?;
        let refuse = |why: String| VaultError::Import(why);
        let mut certs = Certificate::parse_many(cert)
            .map_err(|e| refuse(format!("the CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(refuse("no certificate in the file".into()));
        }
        let ca_cert = certs.remove(0);
        let mut chain_certs = certs;
        if !chain.is_empty() {
            chain_certs.extend(
                Certificate::parse_many(chain).map_err(|e| refuse(format!("the chain: {e}")))?,
            );
        }
        let pkcs8 = cipher::open(self.key.bytes(), CA_KEY_AAD, &pending.encrypted_key)
            .ok_or_else(|| VaultError::Corrupt("the pending CA key does not decrypt".into()))?;
        let key = KeyPair::try_from(pkcs8.as_slice())
            .map_err(|e| VaultError::Corrupt(format!("the pending CA key: {e}")))?;
        if key.public_key_raw() != ca_cert.public_key.as_slice() {
            return Err(refuse(
                "the certificate is not for the pending CA key (was it made from this vault's CSR?)"
                    .into(),
            ));
        }
        use sealgate_smime::cert::key_usage as ku;
        if !ca_cert.is_ca {
            return Err(refuse(
                "the certificate is not a CA certificate (basicConstraints cA is not set)".into(),
            ));
        }
        if let Some(bits) = ca_cert.key_usage
            && bits & (ku::KEY_CERT_SIGN | ku::CRL_SIGN) != (ku::KEY_CERT_SIGN | ku::CRL_SIGN)
        {
            return Err(refuse(
                "the certificate's key usage lacks keyCertSign or cRLSign".into(),
            ));
        }
        let t = now();
        if t < ca_cert.not_before || t > ca_cert.not_after {
            return Err(refuse(format!(
                "the certificate is not valid now ({} to {})",
                rfc3339(ca_cert.not_before),
                rfc3339(ca_cert.not_after)
            )));
        }
        // A trial leaf issued the way `ca_issue` issues must validate through the CA
        // certificate to the chain: this checks the corporate signature and that what we
        // issue names this CA exactly (issuer Name, authority key identifier).
        let issuer = Issuer::new(intermediate_issuer_params(&ca_cert)?, key);
        let trial_key = generate(KeyAlgorithm::P256)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sealgate import check");
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::Rfc822Name("check@sealgate.invalid".try_into()?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        p.not_after = OffsetDateTime::now_utc() + Duration::hours(1);
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        let trial = Certificate::from_der(p.signed_by(&trial_key, &issuer)?.der())
            .map_err(|e| VaultError::Ca(format!("trial certificate: {e}")))?;
        if trial.issuer != ca_cert.subject {
            return Err(refuse(
                "the CA certificate's subject cannot be reproduced exactly in issued certificates"
                    .into(),
            ));
        }
        let anchors: Vec<Certificate> = match chain_certs.iter().rev().find(|c| c.is_self_issued())
        {
            Some(root) => vec![root.clone()],
            None => chain_certs
                .last()
                .cloned()
                .map_or_else(|| vec![ca_cert.clone()], |c| vec![c]),
        };
        let mut intermediates = vec![ca_cert.clone()];
        intermediates.extend(chain_certs.iter().cloned());
        let verdict = sealgate_smime::chain::validate_signer(
            &trial,
            &sealgate_smime::chain::ChainParams {
                anchors: &anchors,
                intermediates: &intermediates,
                crls: &[],
                time: t,
                from: None,
            },
        );
        if !verdict.valid {
            return Err(refuse(format!(
                "certificates issued under it would not validate to the chain: {}",
                verdict.reasons.join("; ")
            )));
        }
        let rec = CaRecord {
            name: pending.name.clone(),
            cert: ca_cert.der().to_vec(),
            encrypted_key: pending.encrypted_key.clone(),
            created: now(),
            intermediate: true,
            chain: chain_certs.iter().map(|c| c.der().to_vec()).collect(),
        };
        let info = CaInfo {
            subject: ca_cert.subject_text(),
            serial: hex(&ca_cert.serial),
            not_after: rfc3339(ca_cert.not_after),
            sha256_fingerprint: cipher::hex(&cipher::sha256(&[ca_cert.der()])),
        };
        let json = serde_json::to_vec(&rec)?;
        self.audited(
            |txn| {
                let mut t = txn.open_table(CA)?;
                if t.get("root")?.is_some() {
                    return Err(VaultError::CaExists);
                }
                if t.remove("pending")?.is_none() {
                    return Err(VaultError::Usage(
                        "no intermediate CA waits for a certificate".into(),
                    ));
                }
                t.insert("root", json.as_slice())?;
                Ok(())
            },
            "ca.import-cert",
            &pending.name,
            &format!(
                "serial={} sha256={} issuer={} chain={}",
                info.serial,
                info.sha256_fingerprint,
                ca_cert.issuer_text(),
                verdict.path.join(" <- ")
            ),
        )?;
        Ok(info)
    }

    /// The CA's certificate.
    pub fn ca_certificate(&self) -> Result<Certificate> {
        self.ca_record()?.certificate()
    }

    /// The corporate certificates above an intermediate CA's certificate, issuer first
    /// (empty for the box's own root).
    pub fn ca_chain(&self) -> Result<Vec<Certificate>> {
        self.ca_record()?.chain_certs()
    }

    /// Issues a key and certificate for `email` (two when the settings ask for separate
    /// signing and encryption keys) and stores them. The user's earlier active keys are
    /// retired: kept to decrypt old mail, no longer used to sign or offered to senders.
    /// Returns the new certificates.
    pub fn ca_issue(&self, email: &str) -> Result<Vec<Certificate>> {
        let email = normalise(email)?;
        if !email.is_ascii() {
            return Err(VaultError::Usage(format!(
                "{email:?}: the CA issues only for ASCII addresses"
            )));
        }
        let settings = self.ca_settings()?;
        let ca = self.ca_record()?;
        let ca_cert = ca.certificate()?;
        let issuer = ca.issuer(ca.signing_key(&self.key)?)?;
        let purposes: &[Purpose] = if settings.separate_keys {
            &[Purpose::Encryption, Purpose::Signing]
        } else {
            &[Purpose::Dual]
        };
        let mut made = Vec::new();
        for &purpose in purposes {
            let key = generate(settings.key_algorithm)?;
            let rsa = settings.key_algorithm == KeyAlgorithm::Rsa3072;
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, email.as_str());
            p.distinguished_name = dn;
            p.subject_alt_names = vec![SanType::Rfc822Name(email.as_str().try_into()?)];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
            let encipher = if rsa {
                KeyUsagePurpose::KeyEncipherment
            } else {
                KeyUsagePurpose::KeyAgreement
            };
            p.key_usages = match purpose {
                Purpose::Dual => vec![KeyUsagePurpose::DigitalSignature, encipher],
                Purpose::Signing => vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::ContentCommitment,
                ],
                Purpose::Encryption => vec![encipher],
            };
            let nb = OffsetDateTime::now_utc() - Duration::minutes(5);
            p.not_before = nb;
            p.not_after = nb + Duration::days(i64::from(settings.validity_days));
            p.serial_number = Some(random_serial()?);
            p.use_authority_key_identifier_extension = true;
            p.key_identifier_method = KeyIdMethod::Sha256;
            if settings.smime_capabilities {
                p.custom_extensions.push(smime_capabilities());
            }
            let cert = p.signed_by(&key, &issuer)?;
            let pkcs8 = Zeroizing::new(key.serialize_der());
            made.push((purpose, pkcs8, cert.der().to_vec()));
        }
        let mut chain = vec![ca_cert.der().to_vec()];
        chain.extend(ca.chain.iter().cloned());
        let txn = self.begin_write()?;
        let mut out = Vec::new();
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            // Renewal: retire the active keys that the new ones replace.
            let old: Vec<KeyRecord> = keys
                .iter()?
                .filter_map(|row| {
                    row.ok()
                        .and_then(|(_, v)| serde_json::from_slice::<KeyRecord>(v.value()).ok())
                })
                .filter(|r| r.user == email && r.active())
                .filter(|r| {
                    purposes.iter().any(|p| {
                        (p.signs() && r.purpose.signs()) || (p.decrypts() && r.purpose.decrypts())
                    })
                })
                .collect();
            let t = now();
            for mut r in old {
                r.retired = Some(t);
                keys.insert(r.id, serde_json::to_vec(&r)?.as_slice())?;
                audit::append(
                    &mut a,
                    &self.actor,
                    "key.retire",
                    &email,
                    &format!("record={} (renewed)", r.id),
                )?;
            }
            for (purpose, pkcs8, der) in &made {
                let rec = self.insert_key(
                    &mut keys,
                    &email,
                    *purpose,
                    "ca",
                    pkcs8,
                    std::iter::once(der.clone())
                        .chain(chain.iter().cloned())
                        .collect(),
                )?;
                let c = rec.certificate()?;
                audit::append(
                    &mut a,
                    &self.actor,
                    "ca.issue",
                    &email,
                    &format!(
                        "record={} purpose={:?} serial={} key={} not_after={}",
                        rec.id,
                        purpose,
                        hex(&c.serial),
                        c.key_kind.label(),
                        rfc3339(c.not_after)
                    ),
                )?;
                out.push(c);
            }
        }
        txn.commit()?;
        Ok(out)
    }

    /// Makes sure `user` has a key: issues one when they have none, auto-enrolment is on and
    /// their domain is one of the organisation's. Returns whether a key was issued.
    pub fn ensure_key(&self, user: &str) -> Result<bool> {
        let u = normalise(user)?;
        if self.list(Some(&u))?.iter().any(|k| k.status == "active") {
            return Ok(false);
        }
        let s = self.ca_settings()?;
        let domain = u.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !s.auto_enrol {
            return Err(VaultError::NoKey(format!(
                "{u} has no key and auto-enrolment is off"
            )));
        }
        if !s.org_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(VaultError::NoKey(format!(
                "{u} has no key and {domain} is not one of the organisation's domains"
            )));
        }
        self.ca_issue(&u)?;
        Ok(true)
    }

    /// Revokes every certificate the CA issued to `email`. The keys stay for decryption.
    /// Returns the revoked serials.
    pub fn ca_revoke_user(&self, email: &str) -> Result<Vec<String>> {
        let e = normalise(email)?;
        self.revoke_where(|r| r.user == e, &e)
    }

    /// Revokes the CA-issued certificate with this serial (hex).
    pub fn ca_revoke_serial(&self, serial_hex: &str) -> Result<Vec<String>> {
        let want = hex(&parse_hex(serial_hex)?);
        self.revoke_where(
            |r| {
                r.certificate()
                    .map(|c| {
                        hex(&c.serial) == want
                            || hex(c.serial.strip_prefix(&[0]).unwrap_or(&c.serial)) == want
                    })
                    .unwrap_or(false)
            },
            &want,
        )
    }

    fn revoke_where(&self, pred: impl Fn(&KeyRecord) -> bool, what: &str) -> Result<Vec<String>> {
        let ca = self.ca_record()?.certificate()?;
        let txn = self.begin_write()?;
        let mut serials = Vec::new();
        {
            let recs = read_keys_w(&txn)?;
            let mut keys = txn.open_table(KEYS)?;
            let mut revoked = txn.open_table(REVOKED)?;
            // The stored CRL no longer lists everything revoked.
            txn.open_table(META)?.remove(CRL_PEM)?;
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            let t = now();
            for mut r in recs
                .into_iter()
                .filter(|r| r.source == "ca" && r.revoked.is_none())
                .filter(|r| pred(r))
            {
                let c = r.certificate()?;
                if !sealgate_smime::cert::names_equal(&c.issuer, &ca.subject) {
                    continue;
                }
                let serial = hex(&c.serial);
                r.revoked = Some(t);
                keys.insert(r.id, serde_json::to_vec(&r)?.as_slice())?;
                revoked.insert(serial.as_str(), t.to_string().as_bytes())?;
                audit::append(
                    &mut a,
                    &self.actor,
                    "ca.revoke",
                    &r.user,
                    &format!("record={} serial={serial}", r.id),
                )?;
                serials.push(serial);
            }
        }
        if serials.is_empty() {
            return Err(VaultError::Usage(format!(
                "no unrevoked certificate issued by this CA matches {what}"
            )));
        }
        txn.commit()?;
        Ok(serials)
    }

    /// A fresh CRL (PEM) signed by the CA, listing every revoked certificate. Its CRL number
    /// increases each time. Audited.
    pub fn ca_crl(&self) -> Result<String> {
        let settings = self.ca_settings()?;
        let ca = self.ca_record()?;
        let issuer = ca.issuer(ca.signing_key(&self.key)?)?;
        let txn = self.begin_write()?;
        let (number, revoked) = {
            let mut meta = txn.open_table(META)?;
            let n: u64 = match meta.get("crl_number")? {
                Some(v) => String::from_utf8_lossy(v.value()).parse().unwrap_or(0) + 1,
                None => 1,
            };
            meta.insert("crl_number", n.to_string().as_bytes())?;
            let t = txn.open_table(REVOKED)?;
            let mut list = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let when: i64 = String::from_utf8_lossy(v.value()).parse().unwrap_or(0);
                list.push((parse_hex(k.value())?, when));
            }
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            audit::append(
                &mut a,
                &self.actor,
                "ca.crl",
                "ca",
                &format!("crl_number={n} entries={}", list.len()),
            )?;
            (n, list)
        };
        let now_t = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now_t,
            next_update: now_t + Duration::days(i64::from(settings.crl_validity_days)),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .into_iter()
                .map(|(serial, when)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: OffsetDateTime::from_unix_timestamp(when).unwrap_or(now_t),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer)?;
        let pem = crl.pem()?;
        {
            let stored = StoredCrl {
                pem: pem.clone(),
                next_update: params.next_update.unix_timestamp(),
            };
            txn.open_table(META)?
                .insert(CRL_PEM, serde_json::to_vec(&stored)?.as_slice())?;
        }
        txn.commit()?;
        Ok(pem)
    }

    /// Number of revoked certificates.
    pub fn revoked_count(&self) -> Result<u64> {
        Ok(self.db.begin_read()?.open_table(REVOKED)?.len()?)
    }

    /// Serial numbers of the certificates this CA revoked. Read only: unlike
    /// [`Vault::ca_crl`] it signs nothing and appends no audit entry, so signature
    /// verification can consult it for every message.
    pub fn revoked_serials(&self) -> Result<Vec<Vec<u8>>> {
        let t = self.db.begin_read()?.open_table(REVOKED)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            out.push(parse_hex(k.value())?);
        }
        Ok(out)
    }
}

fn read_keys_w(txn: &redb::WriteTransaction) -> Result<Vec<KeyRecord>> {
    let t = txn.open_table(KEYS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

/// The last CRL [`Vault::ca_crl`] issued, kept so that readers get it without signing.
#[derive(Serialize, Deserialize)]
struct StoredCrl {
    pem: String,
    /// nextUpdate, Unix seconds.
    next_update: i64,
}

/// The box's CA as the admin API shows it (`GET ca`): public facts only.
#[derive(Debug, Clone, Serialize)]
pub struct CaOverview {
    /// `none`, `pending` (an intermediate waits for its certificate) or `active`.
    pub state: &'static str,
    /// The CA's name.
    pub name: Option<String>,
    /// An intermediate under a corporate CA.
    pub intermediate: bool,
    /// The CA certificate's subject.
    pub subject: Option<String>,
    /// Its issuer (itself for a root).
    pub issuer: Option<String>,
    /// Serial (hex).
    pub serial: Option<String>,
    /// Validity start (RFC 3339).
    pub not_before: Option<String>,
    /// Validity end (RFC 3339).
    pub not_after: Option<String>,
    /// SHA-256 of the CA certificate's DER.
    pub sha256_fingerprint: Option<String>,
    /// Subjects of the corporate chain above an intermediate, issuer first.
    pub chain: Vec<String>,
    /// How the CA issues.
    pub settings: CaSettings,
    /// Certificates it revoked.
    pub revoked: u64,
    /// The number of the last CRL it issued (0: none yet).
    pub crl_number: u64,
}

impl Vault {
    /// The CA's state and public facts.
    pub fn ca_overview(&self) -> Result<CaOverview> {
        let txn = self.db.begin_read()?;
        let settings = self.ca_settings()?;
        let revoked = txn.open_table(REVOKED)?.len()?;
        let crl_number = txn
            .open_table(META)?
            .get("crl_number")?
            .and_then(|v| String::from_utf8_lossy(v.value()).parse().ok())
            .unwrap_or(0);
        let mut o = CaOverview {
            state: "none",
            name: None,
            intermediate: false,
            subject: None,
            issuer: None,
            serial: None,
            not_before: None,
            not_after: None,
            sha256_fingerprint: None,
            chain: Vec::new(),
            settings,
            revoked,
            crl_number,
        };
        if let Some(ca) = read_ca(&txn)? {
            let c = ca.certificate()?;
            o.state = "active";
            o.name = Some(ca.name.clone());
            o.intermediate = ca.intermediate;
            o.subject = Some(c.subject_text());
            o.issuer = Some(c.issuer_text());
            o.serial = Some(hex(&c.serial));
            o.not_before = Some(rfc3339(c.not_before));
            o.not_after = Some(rfc3339(c.not_after));
            o.sha256_fingerprint = Some(cipher::hex(&cipher::sha256(&[c.der()])));
            o.chain = ca.chain_certs()?.iter().map(|c| c.subject_text()).collect();
        } else if let Some(p) = read_pending(&txn)? {
            o.state = "pending";
            o.name = Some(p.name);
            o.intermediate = true;
        }
        Ok(o)
    }

    /// The CA's certificate, then (intermediate) the corporate chain above it, PEM: what
    /// `sealctl ca cert` prints.
    pub fn ca_pem(&self) -> Result<String> {
        let mut out = self.ca_certificate()?.to_pem();
        for c in self.ca_chain()? {
            out.push_str(&c.to_pem());
        }
        Ok(out)
    }

    /// `certs` (just issued) as PEM, followed under a corporate CA by the CA certificate
    /// and the chain up to (not including) its root: what `sealctl ca issue` prints.
    pub fn ca_issued_pem(&self, certs: &[Certificate]) -> Result<String> {
        let mut out: String = certs.iter().map(Certificate::to_pem).collect();
        let chain = self.ca_chain()?;
        if !chain.is_empty() {
            out.push_str(&self.ca_certificate()?.to_pem());
            for c in chain.iter().filter(|c| !c.is_self_issued()) {
                out.push_str(&c.to_pem());
            }
        }
        Ok(out)
    }

    /// The current CRL (PEM): the last one issued while it lists every revocation and has
    /// not passed its nextUpdate, else a fresh one ([`Vault::ca_crl`], audited).
    pub fn ca_current_crl(&self) -> Result<String> {
        self.ca_record()?;
        let stored = self
            .db
            .begin_read()?
            .open_table(META)?
            .get(CRL_PEM)?
            .and_then(|v| serde_json::from_slice::<StoredCrl>(v.value()).ok());
        match stored {
            Some(s) if s.next_update > now() + 3600 => Ok(s.pem),
            _ => self.ca_crl(),
        }
    }
}

#[cfg(test)]
mod admin_tests {
    use crate::{CaSettings, KeyAlgorithm, SoftwareSealer, Vault, VaultError};

    #[test]
    fn the_current_crl_is_reissued_only_after_a_revocation() {
        let dir = tempfile::tempdir().expect("tmp");
        let (v, _) = Vault::init(dir.path(), &mut SoftwareSealer::danger_new()).expect("init");
        assert_eq!(v.ca_overview().expect("overview").state, "none");
        assert!(matches!(v.ca_current_crl(), Err(VaultError::NoCa)));
        let settings = CaSettings {
            key_algorithm: KeyAlgorithm::P256,
            ..CaSettings::default()
        };
        v.ca_init("Test CA", &settings).expect("ca");
        let first = v.ca_current_crl().expect("crl");
        assert_eq!(v.ca_current_crl().expect("crl"), first, "kept");
        assert_eq!(v.ca_overview().expect("overview").crl_number, 1);
        v.ca_issue("dave@example.org").expect("issue");
        v.ca_revoke_user("dave@example.org").expect("revoke");
        let second = v.ca_current_crl().expect("crl");
        assert_ne!(second, first, "a revocation makes the stored CRL stale");
        let o = v.ca_overview().expect("overview");
        assert_eq!((o.state, o.revoked, o.crl_number), ("active", 1, 2));
        assert!(matches!(
            v.ca_issue("dävid@example.org"),
            Err(VaultError::Usage(_))
        ));
        assert!(
            v.ca_pem()
                .expect("pem")
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}
