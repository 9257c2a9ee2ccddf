//! Whole messages: encrypt, decrypt, sign, verify and inspect RFC 5322 messages (or bare CMS).
//!
//! This is where MIME meets CMS. Invariants:
//! - the outer header fields of a message are kept; only content header fields move in and
//!   out of the protected entity;
//! - incoming `X-Sealgate-*` fields are removed before ours are added, so a sender cannot forge
//!   a result;
//! - signed bytes are hashed exactly as received (after LF→CRLF canonicalisation only).

use std::borrow::Cow;

use crate::asn1::Tlv;
use crate::cert::Certificate;
use crate::crypto::{CipherChoice, random};
use crate::envelope::{self, DecryptReport, EnvelopeInfo, Recipient};
use crate::error::{Error, Result, malformed};
use crate::keys::PrivateKey;
use crate::mime::{
    self, Entity, HeaderList, SmimeKind, SmimeType, canonicalize_crlf, protected_headers,
    substitute_protected_headers,
};
use crate::oid;
use crate::signed::{self, SignOptions, Verification, VerifyOptions};

/// Prefix of every result header we write (and strip from incoming mail).
pub const RESULT_HEADER_PREFIX: &str = "X-Sealgate-";
/// Says that and how the message was decrypted.
pub const HEADER_DECRYPTED: &str = "X-Sealgate-Decrypted";
/// Says what the signature check found.
pub const HEADER_SIGNATURE: &str = "X-Sealgate-Signature";

/// Nesting deeper than this is refused (protects against wrapping bombs).
const MAX_LAYERS: usize = 8;

/// What the caller gave us: a MIME message/entity, or bare CMS.
pub enum Input<'a> {
    /// An RFC 5322 message or MIME entity.
    Mime(Entity<'a>),
    /// A CMS ContentInfo (already decoded from PEM or base64 if it was).
    Cms(Cow<'a, [u8]>),
}

/// Tells bare CMS (DER, BER, PEM or base64) from a MIME message.
pub fn sniff(input: &[u8]) -> Input<'_> {
    if input.first() == Some(&0x30) && Tlv::parse_prefix(input).is_ok() {
        return Input::Cms(Cow::Borrowed(input));
    }
    let trimmed = trim_ascii(input);
    if trimmed.starts_with(b"-----BEGIN ") {
        // PKCS7, CMS, and gpgsm's armor (`ENCRYPTED MESSAGE`, `SIGNED MESSAGE`): any block
        // whose contents are a ContentInfo.
        if let Ok(p) = pem::parse(trimmed) {
            let c = p.contents();
            if c.first() == Some(&0x30) && cms_content_type(c).is_some() {
                return Input::Cms(Cow::Owned(p.into_contents()));
            }
        }
    }
    let b64_alphabet = |b: &u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
    };
    if !trimmed.is_empty()
        && trimmed.iter().all(b64_alphabet)
        && let Ok(d) = mime::decode_base64(trimmed)
        && d.first() == Some(&0x30)
        && Tlv::parse_prefix(&d).is_ok()
    {
        return Input::Cms(Cow::Owned(d));
    }
    Input::Mime(Entity::parse(input))
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

/// The CMS content type of a ContentInfo, if it parses.
pub fn cms_content_type(der: &[u8]) -> Option<&[u8]> {
    envelope::content_info(der).ok().map(|(ct, _)| ct)
}

/// One layer removed from a message.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "layer", rename_all = "kebab-case")]
pub enum Layer {
    /// An encryption layer.
    Encrypted(DecryptReport),
    /// A signature layer.
    Signed(Verification),
}

/// The result of opening a message.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The message (or bare content) with the layers removed.
    pub output: Vec<u8>,
    /// The layers removed, outermost first.
    pub layers: Vec<Layer>,
}

impl Opened {
    /// True if at least one encryption layer was removed.
    pub fn decrypted(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::Encrypted(_)))
    }
}

/// How far [`open`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Remove encryption layers, and signature layers only where they wrap an encrypted one
    /// (encrypted-then-signed); an inner signature stays for the reader's client to check.
    Decrypt,
    /// Remove every layer (for scanning): the result is the innermost cleartext.
    Everything,
}

/// Opens a message or bare CMS: decrypts with `keys` and verifies signatures on the way.
pub fn open(
    input: &[u8],
    keys: &[&dyn PrivateKey],
    verify: &VerifyOptions,
    mode: OpenMode,
) -> Result<Opened> {
    match sniff(input) {
        Input::Cms(der) => open_cms(&der, keys, verify, mode),
        Input::Mime(msg) => open_mime(&msg, keys, verify, mode),
    }
}

fn open_cms(
    der: &[u8],
    keys: &[&dyn PrivateKey],
    verify: &VerifyOptions,
    mode: OpenMode,
) -> Result<Opened> {
    let mut layers = Vec::new();
    let mut cur: Vec<u8> = der.to_vec();
    for _ in 0..MAX_LAYERS {
        let Some(ct) = cms_content_type(&cur) else {
            break;
        };
        if ct == oid::ENVELOPED_DATA || ct == oid::AUTH_ENVELOPED_DATA {
            let d = envelope::decrypt_with(&cur, keys, &verify.limits)?;
            layers.push(Layer::Encrypted(d.report));
            cur = d.content;
        } else if ct == oid::SIGNED_DATA {
            let v = signed::verify(&cur, None, verify)?;
            let inner_is_cms =
                v.content.first() == Some(&0x30) && cms_content_type(&v.content).is_some();
            if mode == OpenMode::Decrypt && !inner_is_cms {
                break;
            }
            let content = v.content.clone();
            layers.push(Layer::Signed(v));
            cur = content;
        } else {
            break;
        }
        if cur.first() != Some(&0x30) {
            break;
        }
    }
    if layers.is_empty()
        && let Some(ct) = cms_content_type(der)
    {
        if ct == oid::SIGNED_DATA {
            return Err(Error::Usage(
                "the CMS input is signed, not encrypted (use verify)".into(),
            ));
        }
        return Err(Error::Unsupported(format!(
            "CMS content type {}",
            oid::name(ct)
        )));
    }
    Ok(Opened {
        output: cur,
        layers,
    })
}

/// The kind of an entity, resolving `UnknownPkcs7` by the CMS content type.
fn kind_of(e: &Entity<'_>) -> SmimeKind {
    match e.smime_kind() {
        SmimeKind::UnknownPkcs7 => {
            match e.decoded_body().ok().as_deref().and_then(cms_content_type) {
                Some(ct) if ct == oid::ENVELOPED_DATA => SmimeKind::Enveloped,
                Some(ct) if ct == oid::AUTH_ENVELOPED_DATA => SmimeKind::AuthEnveloped,
                Some(ct) if ct == oid::SIGNED_DATA => SmimeKind::SignedOpaque,
                _ => SmimeKind::UnknownPkcs7,
            }
        }
        k => k,
    }
}

fn open_mime(
    msg: &Entity<'_>,
    keys: &[&dyn PrivateKey],
    verify: &VerifyOptions,
    mode: OpenMode,
) -> Result<Opened> {
    let mut outer = owned(mime::split_outer(msg));
    outer.remove_headers_with_prefix(RESULT_HEADER_PREFIX);
    let mut verify = verify.clone();
    bind_from(&mut verify, &outer);
    let mut layers = Vec::new();
    // The outermost layer is read from the message itself when it is encrypted (its content
    // header fields and body are those of the inner entity): the body is decoded once and
    // never copied into a separate inner entity first.
    let first = match msg.header("Content-Type") {
        Some(_) => kind_of(msg),
        None => SmimeKind::NotSmime,
    };
    let mut cur: Vec<u8> = match first {
        SmimeKind::Enveloped | SmimeKind::AuthEnveloped => {
            let der = msg.decoded_body()?;
            let d = envelope::decrypt_with(&der, keys, &verify.limits)?;
            layers.push(Layer::Encrypted(d.report));
            d.content
        }
        _ => mime::split_message(msg).inner,
    };
    for _ in layers.len()..MAX_LAYERS {
        let e = Entity::parse(&cur);
        match kind_of(&e) {
            SmimeKind::Enveloped | SmimeKind::AuthEnveloped => {
                let der = e.decoded_body()?;
                let d = envelope::decrypt_with(&der, keys, &verify.limits)?;
                layers.push(Layer::Encrypted(d.report));
                cur = d.content;
            }
            SmimeKind::SignedOpaque => {
                let der = e.decoded_body()?;
                let v = signed::verify(&der, None, &verify)?;
                let inner_kind = kind_of(&Entity::parse(&v.content));
                if mode == OpenMode::Decrypt && !is_wrapping(inner_kind) {
                    break;
                }
                let content = v.content.clone();
                layers.push(Layer::Signed(v));
                cur = content;
            }
            SmimeKind::MultipartSigned => {
                let parts = e.signed_parts()?;
                let inner_kind = kind_of(&Entity::parse(parts.signed));
                if mode == OpenMode::Decrypt && !is_wrapping(inner_kind) {
                    break;
                }
                let sig = parts.signature.decoded_body()?;
                let v = signed::verify(&sig, Some(&canonicalize_crlf(parts.signed)), &verify)?;
                let content = parts.signed.to_vec();
                layers.push(Layer::Signed(v));
                cur = content;
            }
            _ => break,
        }
    }
    if let Some(ph) = protected_headers(&Entity::parse(&cur)) {
        outer = owned(substitute_protected_headers(&outer, &ph));
    }
    add_result_headers(&mut outer, &layers)?;
    Ok(Opened {
        output: mime::assemble_message(&outer, &cur),
        layers,
    })
}

fn owned(list: HeaderList<'_>) -> HeaderList<'static> {
    HeaderList::from_fields(
        list.into_fields()
            .into_iter()
            .map(|f| f.into_owned())
            .collect(),
    )
}

fn is_wrapping(k: SmimeKind) -> bool {
    matches!(
        k,
        SmimeKind::Enveloped
            | SmimeKind::AuthEnveloped
            | SmimeKind::SignedOpaque
            | SmimeKind::MultipartSigned
    )
}

/// Writes `X-Sealgate-Decrypted` / `X-Sealgate-Signature` for the layers removed.
fn add_result_headers(outer: &mut HeaderList<'_>, layers: &[Layer]) -> Result<()> {
    let mut fields = Vec::new();
    for l in layers {
        match l {
            Layer::Encrypted(r) => fields.push((
                HEADER_DECRYPTED,
                format!(
                    "yes; cipher={}; key-management={}; recipient=\"{}\"",
                    r.cipher,
                    r.key_management,
                    r.recipient.replace('"', "'")
                ),
            )),
            Layer::Signed(v) => fields.push((HEADER_SIGNATURE, signature_summary(v))),
        }
    }
    // Added at the top in reverse so they read outermost first.
    for (name, value) in fields.into_iter().rev() {
        outer.add_header(name, &value)?;
    }
    Ok(())
}

/// One line summarising a verification, for a result header: `valid` only when every
/// signature and every chain was checked and is valid; `unchecked` when the signatures verify
/// but no chain could be checked (no trust anchors); else `invalid`.
pub fn signature_summary(v: &Verification) -> String {
    let status = if v.valid {
        "valid"
    } else if v.signatures_valid && !v.chain_checked {
        "unchecked"
    } else {
        "invalid"
    };
    let signers: Vec<String> = v
        .signers
        .iter()
        .map(|s| {
            let who = s
                .emails
                .first()
                .cloned()
                .or_else(|| s.signer.clone())
                .unwrap_or_else(|| "unknown".into());
            format!("{}={:?}", who.replace(['"', ';'], "'"), s.signature)
        })
        .collect();
    let chain = if v.chain_checked {
        "chain-checked"
    } else {
        "chain-not-checked"
    };
    format!("{status}; {chain}; signers={}", signers.join(","))
}

/// Sets the From binding of `opts` from a message's header, unless the caller chose an
/// address: the one address of the (first) From field, or, when it names several (or none
/// that can be read), a refusal every signer fails with.
fn bind_from(opts: &mut VerifyOptions, headers: &HeaderList<'_>) {
    if opts.from.is_some() || opts.from_refused.is_some() {
        return;
    }
    let mut fields = headers.get_all("From");
    let Some(field) = fields.next() else {
        return;
    };
    if fields.next().is_some() {
        opts.from_refused = Some("the message has several From fields".into());
        return;
    }
    let addrs = mailbox_addresses(&field.value());
    match addrs.as_slice() {
        [one] => opts.from = Some(one.clone()),
        [] => {
            opts.from_refused = Some("the From field names no address that can be read".into());
        }
        several => {
            opts.from_refused = Some(format!(
                "the From field names {} addresses: a signature cannot vouch for it",
                several.len()
            ));
        }
    }
}

/// The address of a From field as a mail client shows it (`Name <a@b>` or `a@b`),
/// lowercased; `None` when the field is absent or does not name exactly one address.
pub fn from_address(headers: &HeaderList<'_>) -> Option<String> {
    if headers.get_all("From").count() != 1 {
        return None;
    }
    let addrs = mailbox_addresses(&headers.get("From")?.value());
    match addrs.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The addresses of an RFC 5322 address list (`mailbox-list` / `address-list`), in order,
/// lowercased: each mailbox's angle address if it has one, else its bare addr-spec.
/// Quoted strings and comments are skipped (a display name `"a@b" <c@d>` gives `c@d`);
/// group names are skipped and their members listed.
pub fn mailbox_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut plain = String::new(); // text outside quotes, comments and angle brackets
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut cur_angle = String::new();
    let mut depth = 0usize; // comment nesting
    let mut quoted = false;
    let mut escaped = false;
    fn finish(plain: &mut String, angle: &mut Option<String>, out: &mut Vec<String>) {
        let addr = match angle.take() {
            Some(a) => a,
            None => plain
                .split_whitespace()
                .find(|w| w.contains('@'))
                .unwrap_or_default()
                .to_string(),
        };
        let addr = addr.trim().to_ascii_lowercase();
        if addr.contains('@') {
            out.push(addr);
        }
        plain.clear();
    }
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if depth > 0 {
            match c {
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            continue;
        }
        if in_angle {
            if c == '>' {
                in_angle = false;
                // The first angle address of a mailbox counts.
                if angle.is_none() {
                    angle = Some(std::mem::take(&mut cur_angle));
                }
                cur_angle.clear();
            } else {
                cur_angle.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '(' => depth = 1,
            '<' => in_angle = true,
            ',' | ';' => finish(&mut plain, &mut angle, &mut out),
            // A group's display name ends at ':' (not inside an angle address).
            ':' => plain.clear(),
            _ => plain.push(c),
        }
    }
    finish(&mut plain, &mut angle, &mut out);
    out
}

/// Encrypts a message: the outer header fields stay, the inner entity becomes
/// `application/pkcs7-mime` (enveloped-data, or authEnveloped-data for AEAD ciphers).
pub fn encrypt_message(
    input: &[u8],
    recipients: &[Recipient],
    cipher: CipherChoice,
) -> Result<Vec<u8>> {
    let msg = Entity::parse(input);
    // The inner entity in two pieces (its content header fields, then the body as it is in
    // `input`), so a large body is copied once, into the ciphertext's place. Each piece is
    // canonicalised alone: the first ends with a line break, so no CR LF pair spans the two.
    let (mut outer, head, body) = mime::split_message_parts(&msg);
    outer.remove_headers_with_prefix(RESULT_HEADER_PREFIX);
    let (head, body) = (canonicalize_crlf(&head), canonicalize_crlf(body));
    let der = envelope::encrypt_parts(&[&head, &body], recipients, cipher)?;
    let kind = if cipher.is_aead() {
        SmimeType::AuthEnvelopedData
    } else {
        SmimeType::EnvelopedData
    };
    Ok(mime::assemble_pkcs7_message(&outer, kind, &der))
}

/// Signs a message: `multipart/signed` (default) or opaque `signed-data`.
pub fn sign_message(
    input: &[u8],
    key: &dyn PrivateKey,
    opaque: bool,
    signing_time: i64,
) -> Result<Vec<u8>> {
    sign_message_with(input, key, opaque, signing_time, None)
}

/// [`sign_message`] with a chosen signature scheme (e.g. RSA-PSS); `None` is the key's default.
pub fn sign_message_with(
    input: &[u8],
    key: &dyn PrivateKey,
    opaque: bool,
    signing_time: i64,
    scheme: Option<crate::keys::SignScheme>,
) -> Result<Vec<u8>> {
    let msg = Entity::parse(input);
    let split = mime::split_message(&msg);
    let mut outer = split.outer;
    outer.remove_headers_with_prefix(RESULT_HEADER_PREFIX);
    let inner = canonicalize_crlf(&split.inner).into_owned();
    let opts = SignOptions {
        scheme,
        detached: !opaque,
        signing_time,
        include_chain: true,
    };
    let (der, hash) = signed::sign(&inner, key, &opts)?;
    let entity = if opaque {
        mime::build_pkcs7_mime(SmimeType::SignedData, &der)
    } else {
        let r = random(16)?;
        let mut seed = [0u8; 16];
        seed.copy_from_slice(r.get(..16).ok_or_else(|| Error::Usage("random".into()))?);
        mime::build_multipart_signed(&inner, hash.micalg(), &der, &seed)
    };
    Ok(mime::assemble_message(&outer, &entity))
}

/// Verifies a signed message (or bare SignedData, with `detached` content if the signature
/// is detached). Returns the signed content exactly as signed (for `multipart/signed`: the
/// first body part as received; for opaque signed-data: the encapsulated content) and the
/// verdict. The signer is bound to the message's From address unless `opts.from` is set.
pub fn verify_message(
    input: &[u8],
    detached: Option<&[u8]>,
    opts: &VerifyOptions,
) -> Result<(Vec<u8>, Verification)> {
    match sniff(input) {
        Input::Cms(der) => {
            let v = signed::verify(&der, detached, opts)?;
            Ok((v.content.clone(), v))
        }
        Input::Mime(msg) => {
            let split = mime::split_message(&msg);
            let mut opts = opts.clone();
            bind_from(&mut opts, &split.outer);
            let e = Entity::parse(&split.inner);
            match kind_of(&e) {
                SmimeKind::MultipartSigned => {
                    let parts = e.signed_parts()?;
                    let sig = parts.signature.decoded_body()?;
                    let v = signed::verify(&sig, Some(&canonicalize_crlf(parts.signed)), &opts)?;
                    Ok((parts.signed.to_vec(), v))
                }
                SmimeKind::SignedOpaque => {
                    let der = e.decoded_body()?;
                    let v = signed::verify(&der, None, &opts)?;
                    Ok((v.content.clone(), v))
                }
                SmimeKind::Enveloped | SmimeKind::AuthEnveloped => Err(Error::Usage(
                    "the message is encrypted: decrypt it first".into(),
                )),
                _ => match detached {
                    Some(_) => Err(malformed(
                        "--content was given but the input is not a detached signature",
                    )),
                    None => Err(Error::Usage("the message is not signed".into())),
                },
            }
        }
    }
}

/// What `inspect` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// `message` or `cms`.
    pub input: &'static str,
    /// The MIME content type of the message's body (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The CMS content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Encryption details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<EnvelopeInfo>,
    /// Signers (signatures checked without trust anchors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<Verification>,
    /// Certificates carried in the CMS.
    pub certificates: Vec<CertificateSummary>,
}

/// A certificate, summarised.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertificateSummary {
    /// Subject.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// Serial (hex).
    pub serial: String,
    /// Addresses.
    pub emails: Vec<String>,
    /// Key type.
    pub key: String,
    /// Validity start (RFC 3339).
    pub not_before: String,
    /// Validity end (RFC 3339).
    pub not_after: String,
}

impl From<&Certificate> for CertificateSummary {
    fn from(c: &Certificate) -> Self {
        CertificateSummary {
            subject: c.subject_text(),
            issuer: c.issuer_text(),
            serial: crate::cert::hex(&c.serial),
            emails: c.emails.clone(),
            key: c.key_kind.label(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
        }
    }
}

/// Unix time as RFC 3339.
pub use crate::chain::rfc3339;

/// Describes a message or bare CMS without decrypting it.
pub fn inspect(input: &[u8]) -> Result<Inspection> {
    let (kind, mime_type, der, detached): (&str, Option<String>, Vec<u8>, Option<Vec<u8>>) =
        match sniff(input) {
            Input::Cms(d) => ("cms", None, d.into_owned(), None),
            Input::Mime(msg) => {
                let split = mime::split_message(&msg);
                let e = Entity::parse(&split.inner);
                let mt = Some(e.content_type().essence().to_string());
                match kind_of(&e) {
                    SmimeKind::MultipartSigned => {
                        let parts = e.signed_parts()?;
                        let sig = parts.signature.decoded_body()?.into_owned();
                        (
                            "message",
                            mt,
                            sig,
                            Some(canonicalize_crlf(parts.signed).into_owned()),
                        )
                    }
                    SmimeKind::NotSmime => {
                        return Ok(Inspection {
                            input: "message",
                            mime_type: mt,
                            content_type: None,
                            envelope: None,
                            signed: None,
                            certificates: vec![],
                        });
                    }
                    _ => ("message", mt, e.decoded_body()?.into_owned(), None),
                }
            }
        };
    let ct = cms_content_type(&der)
        .ok_or_else(|| malformed("not a CMS ContentInfo"))?
        .to_vec();
    let mut out = Inspection {
        input: kind,
        mime_type,
        content_type: Some(oid::name(&ct)),
        envelope: None,
        signed: None,
        certificates: vec![],
    };
    if ct == oid::ENVELOPED_DATA || ct == oid::AUTH_ENVELOPED_DATA {
        out.envelope = Some(envelope::inspect(&der)?);
    } else if ct == oid::SIGNED_DATA {
        out.certificates = signed::certificates(&der)?
            .iter()
            .map(CertificateSummary::from)
            .collect();
        out.signed = signed::verify(&der, detached.as_deref(), &VerifyOptions::default()).ok();
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::keys::SoftwareKey;
    use std::process::Command;

    fn person(dir: &std::path::Path, name: &str) -> SoftwareKey {
        let (k, c) = (format!("{name}.key"), format!("{name}.pem"));
        let subj = format!("/CN={name}/emailAddress={name}@example.test");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "3", "-subj",
                &subj, "-keyout", &k, "-out", &c,
            ])
            .current_dir(dir)
            .output()
            .expect("openssl (Debian package openssl) must be installed");
        assert!(out.status.success());
        SoftwareKey::from_key_and_cert(
            &std::fs::read(dir.join(k)).unwrap(),
            &std::fs::read(dir.join(c)).unwrap(),
        )
        .unwrap()
    }

    const MSG: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: plans\r\nX-Sealgate-Decrypted: yes; forged\r\n\r\nmeet at noon\r\n";

    fn recipients(k: &SoftwareKey) -> Vec<Recipient> {
        vec![Recipient::new(k.certificate().clone()).unwrap()]
    }

    fn anchors(k: &SoftwareKey) -> VerifyOptions {
        VerifyOptions {
            anchors: vec![k.certificate().clone()],
            ..VerifyOptions::default()
        }
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn nesting_and_hygiene() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (person(dir.path(), "alice"), person(dir.path(), "bob"));
        let keys: Vec<&dyn PrivateKey> = vec![&bob];
        let t = time::OffsetDateTime::now_utc().unix_timestamp();

        // Signed, then encrypted: decrypting keeps the signature for the reader's client;
        // opening everything checks it.
        let signed = sign_message(MSG, &alice, false, t).unwrap();
        let se = encrypt_message(&signed, &recipients(&bob), CipherChoice::Aes256Cbc).unwrap();
        let d = open(&se, &keys, &anchors(&alice), OpenMode::Decrypt).unwrap();
        assert_eq!(d.layers.len(), 1);
        assert!(
            count(&d.output, b"multipart/signed") == 1,
            "{}",
            String::from_utf8_lossy(&d.output)
        );
        let all = open(&se, &keys, &anchors(&alice), OpenMode::Everything).unwrap();
        assert!(matches!(&all.layers[..], [Layer::Encrypted(_), Layer::Signed(v)] if v.valid));
        assert!(all.output.ends_with(b"meet at noon\r\n"));
        // Forged result headers are gone; ours are there once each.
        assert_eq!(count(&all.output, b"forged"), 0);
        assert_eq!(count(&all.output, HEADER_DECRYPTED.as_bytes()), 1);
        assert_eq!(count(&all.output, HEADER_SIGNATURE.as_bytes()), 1);
        assert!(count(&all.output, b"Subject: plans") == 1);

        // Encrypted, then signed (opaque and detached): decrypting goes through the signature.
        for opaque in [true, false] {
            let es = sign_message(
                &encrypt_message(MSG, &recipients(&bob), CipherChoice::Aes256Cbc).unwrap(),
                &alice,
                opaque,
                t,
            )
            .unwrap();
            let d = open(&es, &keys, &anchors(&alice), OpenMode::Decrypt).unwrap();
            assert!(
                matches!(&d.layers[..], [Layer::Signed(v), Layer::Encrypted(_)] if v.valid),
                "{:?}",
                d.layers
            );
            assert!(d.output.ends_with(b"meet at noon\r\n"));
        }

        // Triple-wrapped: signed, encrypted, signed.
        let triple = sign_message(&se, &alice, false, t).unwrap();
        let all = open(&triple, &keys, &anchors(&alice), OpenMode::Everything).unwrap();
        assert_eq!(all.layers.len(), 3);
        assert!(all.layers.iter().all(|l| match l {
            Layer::Signed(v) => v.valid,
            Layer::Encrypted(_) => true,
        }));
        assert!(all.output.ends_with(b"meet at noon\r\n"));
    }

    /// The encrypted content is the inner entity of the message, canonicalised, whatever the
    /// line breaks at the edge of its header and body (the two are copied and canonicalised
    /// apart).
    #[test]
    fn encrypted_content_is_the_canonical_inner_entity() {
        let dir = tempfile::tempdir().unwrap();
        let bob = person(dir.path(), "bob");
        let keys: Vec<&dyn PrivateKey> = vec![&bob];
        for input in [
            MSG,
            b"Subject: lf\nContent-Type: text/plain\n\nline one\nline two\n".as_slice(),
            b"Subject: body starts with a line break\r\n\r\n\nx\r\n\n",
            b"Subject: bare lf separator\r\n\n\r\nbody\r",
            b"Subject: no separator\r\nX: y",
            b"Subject: cr at the end\r\n\r",
            b"no header at all\n",
        ] {
            let out = encrypt_message(input, &recipients(&bob), CipherChoice::Aes256Cbc).unwrap();
            let entity = Entity::parse(&out);
            let der = mime::decode_base64(entity.body()).unwrap();
            let content = envelope::decrypt(&der, &keys).unwrap().content;
            let expect =
                canonicalize_crlf(&mime::split_message(&Entity::parse(input)).inner).into_owned();
            assert_eq!(
                String::from_utf8_lossy(&content),
                String::from_utf8_lossy(&expect)
            );
        }
    }

    #[test]
    fn protected_subject_replaces_the_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let bob = person(dir.path(), "bob");
        let inner = b"Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\nSubject: Secret plans\r\nFrom: alice@example.test\r\n\r\nbody\r\n";
        let der = envelope::encrypt(inner, &recipients(&bob), CipherChoice::Aes256Cbc).unwrap();
        let entity = mime::build_pkcs7_mime(SmimeType::EnvelopedData, &der);
        let mut msg =
            b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: ...\r\n".to_vec();
        msg.extend_from_slice(&entity);
        let d = open(&msg, &[&bob], &VerifyOptions::default(), OpenMode::Decrypt).unwrap();
        let text = String::from_utf8_lossy(&d.output);
        assert!(text.contains("Subject: Secret plans"), "{text}");
        assert!(!text.contains("Subject: ..."), "{text}");
    }

    #[test]
    fn lf_only_messages_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let alice = person(dir.path(), "alice");
        let lf: Vec<u8> = MSG.iter().copied().filter(|b| *b != b'\r').collect();
        let signed = sign_message(
            &lf,
            &alice,
            false,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
        let (_, v) = verify_message(&signed, None, &anchors(&alice)).unwrap();
        assert!(v.valid, "{v:?}");
        // The same signed message after a relay turned CRLF into LF still verifies.
        let relayed: Vec<u8> = signed.iter().copied().filter(|b| *b != b'\r').collect();
        let (_, v) = verify_message(&relayed, None, &anchors(&alice)).unwrap();
        assert!(v.valid, "{v:?}");
    }

    #[test]
    fn not_encrypted_and_garbage_inputs_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let bob = person(dir.path(), "bob");
        let d = open(MSG, &[&bob], &VerifyOptions::default(), OpenMode::Decrypt).unwrap();
        assert!(!d.decrypted());
        for junk in [
            &b""[..],
            b"\x30\x80",
            b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
            b"Content-Type: application/pkcs7-mime\r\n\r\n!!!",
        ] {
            let _ = open(
                junk,
                &[&bob],
                &VerifyOptions::default(),
                OpenMode::Everything,
            );
            let _ = inspect(junk);
        }
    }

    #[test]
    fn from_addresses_as_a_client_shows_them() {
        assert_eq!(
            mailbox_addresses("Alice <Alice@Example.test>"),
            vec!["alice@example.test"]
        );
        assert_eq!(
            mailbox_addresses("alice@example.test"),
            vec!["alice@example.test"]
        );
        // Display names and comments that look like addresses are not addresses.
        assert_eq!(
            mailbox_addresses("\"bob@example.test, <bob@example.test>\" <mallory@evil.test>"),
            vec!["mallory@evil.test"]
        );
        assert_eq!(
            mailbox_addresses("Mallory <mallory@evil.test> (<alice@example.test>)"),
            vec!["mallory@evil.test"]
        );
        assert_eq!(
            mailbox_addresses("Mallory <mallory@evil.test>, Alice <alice@example.test>"),
            vec!["mallory@evil.test", "alice@example.test"]
        );
        assert_eq!(
            mailbox_addresses("friends: a@x.test, b@y.test;"),
            vec!["a@x.test", "b@y.test"]
        );
        assert!(mailbox_addresses("undisclosed").is_empty());
    }

    #[test]
    fn from_binding_refuses_several_addresses_and_skips_comments() {
        let dir = tempfile::tempdir().unwrap();
        let alice = person(dir.path(), "alice");
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let signed = sign_message(MSG, &alice, false, t).unwrap();
        let text = String::from_utf8(signed).unwrap();
        let with_from = |from: &str| {
            text.replace("From: Alice <alice@example.test>", &format!("From: {from}"))
                .into_bytes()
        };
        let (_, v) = verify_message(
            &with_from("Alice <alice@example.test>"),
            None,
            &anchors(&alice),
        )
        .unwrap();
        assert!(v.valid, "{v:#?}");
        // The address a client shows first is Mallory's: several addresses are refused
        // (the last one used to be bound).
        let (_, v) = verify_message(
            &with_from("Mallory <mallory@evil.test>, Alice <alice@example.test>"),
            None,
            &anchors(&alice),
        )
        .unwrap();
        assert!(!v.valid);
        assert_eq!(v.signers[0].from_matches, Some(false));
        assert!(
            v.signers[0]
                .reasons
                .iter()
                .any(|r| r.contains("2 addresses")),
            "{v:#?}"
        );
        // An address in a comment is not the sender.
        let (_, v) = verify_message(
            &with_from("Mallory <mallory@evil.test> (<alice@example.test>)"),
            None,
            &anchors(&alice),
        )
        .unwrap();
        assert!(!v.valid);
        assert_eq!(v.signers[0].from_matches, Some(false));
        // Two From fields.
        let two = with_from("Alice <alice@example.test>\r\nFrom: mallory@evil.test");
        let (_, v) = verify_message(&two, None, &anchors(&alice)).unwrap();
        assert!(!v.valid);
        // The result header says `unchecked` (not `valid`) when no chain could be checked.
        let opened = open(
            &with_from("Alice <alice@example.test>"),
            &[],
            &VerifyOptions::default(),
            OpenMode::Everything,
        )
        .unwrap();
        let out = String::from_utf8_lossy(&opened.output);
        assert!(
            out.contains("X-Sealgate-Signature: unchecked; chain-not-checked"),
            "{out}"
        );
    }
}
