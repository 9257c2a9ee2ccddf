//! The docking operations, independent of the transport: HTTPS (`http.rs`) and the SMTP
//! hand-off (`smtp.rs`) both call these. They are blocking (CPU-bound crypto): call them on a
//! blocking thread, never on the async executor.

use sealgate_smime::Error as EngineError;
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::message::{self, Layer, OpenMode};
use sealgate_smime::signed::VerifyOptions;
use serde::Serialize;

use crate::keys::KeyDirectory;
use crate::problem::Problem;
use crate::settings::{Docking, MissingPolicy, Settings, SignPolicy};

/// How the docking operations verify signatures and how much work one message may cost:
/// set at start from the settings ([`configure`]), and again when the admin API changes them;
/// the defaults until then.
#[derive(Debug, Clone, Default)]
pub struct VerifyPolicy {
    /// `[limits]`.
    pub limits: sealgate_smime::Limits,
    /// `[docking] allow_weak_signatures`.
    pub allow_weak: bool,
}

static POLICY: std::sync::RwLock<Option<VerifyPolicy>> = std::sync::RwLock::new(None);

/// Sets the process's [`VerifyPolicy`] from the settings (at start, and at every settings
/// change: the next call uses it).
pub fn configure(settings: &Settings) {
    let p = VerifyPolicy {
        limits: settings.limits.engine(),
        allow_weak: settings.docking.allow_weak_signatures,
    };
    match POLICY.write() {
        Ok(mut g) => *g = Some(p),
        Err(e) => *e.into_inner() = Some(p),
    }
}

fn policy() -> VerifyPolicy {
    match POLICY.read() {
        Ok(g) => g.clone().unwrap_or_default(),
        Err(e) => e.into_inner().clone().unwrap_or_default(),
    }
}

/// What `decrypt` reports next to the cleartext.
#[derive(Debug, Serialize)]
pub struct DecryptReport {
    /// `decrypted` or `not-encrypted`.
    pub status: &'static str,
    /// The addresses whose keys were tried.
    pub recipients: Vec<String>,
    /// The layers removed, outermost first: encryption layers (with whose key) and
    /// signature layers (each signer's verdict).
    pub layers: Vec<Layer>,
    /// Things the box could not do (e.g. no trust anchor to check a chain).
    pub notes: Vec<String>,
}

/// What `encrypt` reports next to the result.
#[derive(Debug, Serialize)]
pub struct EncryptReport {
    /// `encrypted` or `not-encrypted`.
    pub status: &'static str,
    /// Recipients encrypted to.
    pub encrypted_for: Vec<String>,
    /// Recipients without a certificate.
    pub missing: Vec<String>,
    /// Whether the sender's own certificate was added.
    pub sender_copy: bool,
    /// The address whose key signed, if signed.
    pub signed_by: Option<String>,
    /// The content cipher, if encrypted.
    pub cipher: Option<&'static str>,
}

/// What `sign` reports.
#[derive(Debug, Serialize)]
pub struct SignReport {
    /// The signer's address.
    pub signed_by: String,
    /// `multipart/signed` or `signed-data`.
    pub format: &'static str,
}

/// Addresses in the To and Cc fields of a message's header (lowercased).
pub fn header_recipients(msg: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in header_fields(msg) {
        if name.eq_ignore_ascii_case("to") || name.eq_ignore_ascii_case("cc") {
            for part in value.split(',') {
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(a), Some(b)) if a < b => part[a + 1..b].to_string(),
                    _ => part
                        .split_whitespace()
                        .find(|w| w.contains('@'))
                        .unwrap_or_default()
                        .to_string(),
                };
                let addr = addr.trim().trim_matches('"').to_ascii_lowercase();
                if addr.contains('@') && !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
    }
    out
}

/// The Message-ID of a message, for the audit log (the header is read, never the body).
pub fn message_id(msg: &[u8]) -> Option<String> {
    header_fields(msg)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("message-id"))
        .map(|(_, v)| {
            v.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect()
        })
}

/// The unfolded header fields (at most the first 256 KiB are read).
fn header_fields(msg: &[u8]) -> Vec<(String, String)> {
    let head = header_block(&msg[..msg.len().min(256 * 1024)]);
    let text = String::from_utf8_lossy(head);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            fields.push((n.trim().to_string(), v.trim().to_string()));
        } else {
            break;
        }
    }
    fields
}

/// `head` up to its first empty line (the header block; all of it when there is none), so
/// that the body is never converted to text only to be skipped.
fn header_block(head: &[u8]) -> &[u8] {
    let mut start = 0usize;
    while start < head.len() {
        let end = head[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |i| start + i + 1);
        if matches!(&head[start..end], b"\n" | b"\r\n") {
            return &head[..start];
        }
        start = end;
    }
    head
}

fn verify_options(
    keys: &dyn KeyDirectory,
    extra_anchors: &[sealgate_smime::cert::Certificate],
) -> VerifyOptions {
    let mut anchors = keys.anchors();
    anchors.extend(extra_anchors.iter().cloned());
    let policy = policy();
    VerifyOptions {
        anchors,
        // The box's own CA's revocations; chains are validated now, never at the
        // signer-claimed signingTime.
        revoked: keys.revoked(),
        allow_weak: policy.allow_weak,
        limits: policy.limits,
        ..VerifyOptions::default()
    }
}

/// Decrypts with the keys of `envelope_to` (or, if empty, of the message's To/Cc), verifying
/// the signatures on the way. Non-encrypted input comes back unchanged.
pub fn decrypt(
    keys: &dyn KeyDirectory,
    anchors: &[sealgate_smime::cert::Certificate],
    input: &[u8],
    envelope_to: &[String],
    keep_signatures: bool,
) -> Result<(Vec<u8>, DecryptReport), Problem> {
    let recipients = if envelope_to.is_empty() {
        header_recipients(input)
    } else {
        envelope_to.to_vec()
    };
    let mut held = Vec::new();
    let mut with_keys = Vec::new();
    for r in &recipients {
        let k = keys.decryption_keys(r)?;
        if !k.is_empty() {
            with_keys.push(r.clone());
        }
        held.extend(k);
    }
    let refs: Vec<&dyn PrivateKey> = held.iter().map(|k| k.as_ref() as &dyn PrivateKey).collect();
    let opts = verify_options(keys, anchors);
    let mode = if keep_signatures {
        OpenMode::Decrypt
    } else {
        OpenMode::Everything
    };
    let opened = match message::open(input, &refs, &opts, mode) {
        Ok(o) => o,
        Err(EngineError::NoMatchingRecipient) => {
            // Which of the addresses the box holds keys for is logged, not told: the
            // answer is the same whether it holds none or the message is for others.
            let p = Problem::from(EngineError::NoMatchingRecipient);
            let why = if with_keys.is_empty() {
                format!(
                    "the box holds no key for {}",
                    if recipients.is_empty() {
                        "any recipient (no to= and no To/Cc)".into()
                    } else {
                        recipients.join(", ")
                    }
                )
            } else {
                format!("not encrypted to the keys of {}", with_keys.join(", "))
            };
            return Err(p.with_log(why));
        }
        // Bare signed CMS: not encrypted.
        Err(EngineError::Usage(_)) => {
            return Ok((
                input.to_vec(),
                DecryptReport {
                    status: "not-encrypted",
                    recipients: with_keys,
                    layers: vec![],
                    notes: vec![],
                },
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut notes = Vec::new();
    if opts.anchors.is_empty() && opened.layers.iter().any(|l| matches!(l, Layer::Signed(_))) {
        notes.push(
            "no trust anchors configured: signatures checked, certificate chains not".to_string(),
        );
    }
    if !opened.decrypted() {
        return Ok((
            input.to_vec(),
            DecryptReport {
                status: "not-encrypted",
                recipients: with_keys,
                layers: opened.layers,
                notes,
            },
        ));
    }
    Ok((
        opened.output,
        DecryptReport {
            status: "decrypted",
            recipients: with_keys,
            layers: opened.layers,
            notes,
        },
    ))
}

/// Encrypts for `to` (and the sender's copy), signing first by policy.
pub fn encrypt(
    keys: &dyn KeyDirectory,
    policy: &Docking,
    input: &[u8],
    from: Option<&str>,
    to: &[String],
    missing_policy: MissingPolicy,
    now: i64,
) -> Result<(Vec<u8>, EncryptReport), Problem> {
    if to.is_empty() {
        return Err(Problem::bad_request(
            "at least one to= recipient is required",
        ));
    }
    let mut certs = Vec::new();
    let mut encrypted_for = Vec::new();
    let mut missing = Vec::new();
    for addr in to {
        let addr = addr.trim().to_ascii_lowercase();
        match crate::directory::encryption_certificate(keys, &addr, now)? {
            Some(c) => {
                certs.push(c);
                encrypted_for.push(addr);
            }
            None => missing.push(addr),
        }
    }
    if !missing.is_empty() && missing_policy == MissingPolicy::Reject {
        let mut p = Problem::new(
            422,
            "missing-certificates",
            "Recipients without a certificate",
            format!("no certificate for {}", missing.join(", ")),
        );
        p.missing = Some(missing.into_boxed_slice());
        return Err(p);
    }
    let encrypt =
        !certs.is_empty() && (missing.is_empty() || missing_policy == MissingPolicy::EncryptKnown);
    let mut sender_copy = false;
    let sender = from
        .map(|f| f.trim().to_ascii_lowercase())
        .or_else(|| message_from(input));
    if encrypt
        && policy.sender_copy
        && let Some(s) = &sender
        && !encrypted_for.contains(s)
        && let Some(c) = crate::directory::encryption_certificate(keys, s, now)?
    {
        certs.push(c);
        sender_copy = true;
    }
    let mut body = None;
    let mut signed_by = None;
    if policy.sign != SignPolicy::Never {
        let key = match &sender {
            Some(s) => keys.signing_key(s)?,
            None => None,
        };
        match key {
            Some(k) => {
                body = Some(message::sign_message(input, k.as_ref(), false, now)?);
                signed_by = sender.clone();
            }
            None if policy.sign == SignPolicy::Always => {
                return Err(Problem::new(
                    422,
                    "no-signing-key",
                    "The sender has no signing key",
                    format!(
                        "policy requires a signature and the box holds no signing key for {}",
                        sender.as_deref().unwrap_or("(no sender)")
                    ),
                ));
            }
            None => {}
        }
    }
    let signed = body.as_deref().unwrap_or(input);
    if !encrypt {
        let out = signed.to_vec();
        return Ok((
            out,
            EncryptReport {
                status: "not-encrypted",
                encrypted_for: vec![],
                missing,
                sender_copy: false,
                signed_by,
                cipher: None,
            },
        ));
    }
    // What the recipients' own software advertised in signatures the box harvested.
    let recipients = certs
        .into_iter()
        .map(crate::directory::recipient)
        .collect::<Result<Vec<_>, _>>()?;
    let out = message::encrypt_message(signed, &recipients, policy.cipher.0)?;
    let cipher = match policy.cipher.0 {
        sealgate_smime::crypto::CipherChoice::Aes256Cbc => "aes256-cbc",
        sealgate_smime::crypto::CipherChoice::Aes128Cbc => "aes128-cbc",
        sealgate_smime::crypto::CipherChoice::Aes256Gcm => "aes256-gcm",
        sealgate_smime::crypto::CipherChoice::Aes128Gcm => "aes128-gcm",
    };
    Ok((
        out,
        EncryptReport {
            status: "encrypted",
            encrypted_for,
            missing,
            sender_copy,
            signed_by,
            cipher: Some(cipher),
        },
    ))
}

/// The address of the message's From field as a mail client shows it; `None` when there is
/// no From field, several, or one naming several addresses (no key is chosen then).
fn message_from(msg: &[u8]) -> Option<String> {
    let mut from = header_fields(msg)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("from"));
    let (_, v) = from.next()?;
    if from.next().is_some() {
        return None;
    }
    match message::mailbox_addresses(&v).as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Signs with the key of `from` (or the message's From).
pub fn sign(
    keys: &dyn KeyDirectory,
    input: &[u8],
    from: Option<&str>,
    opaque: bool,
    now: i64,
) -> Result<(Vec<u8>, SignReport), Problem> {
    let sender = from
        .map(|f| f.trim().to_ascii_lowercase())
        .or_else(|| message_from(input))
        .ok_or_else(|| {
            Problem::bad_request("no from= and no From field: whose key should sign?")
        })?;
    let key = keys.signing_key(&sender)?.ok_or_else(|| {
        Problem::new(
            422,
            "no-signing-key",
            "The sender has no signing key",
            format!("the box holds no signing key for {sender}"),
        )
    })?;
    let out = message::sign_message(input, key.as_ref(), opaque, now)?;
    Ok((
        out,
        SignReport {
            signed_by: sender,
            format: if opaque {
                "signed-data"
            } else {
                "multipart/signed"
            },
        },
    ))
}

/// The verdict of `verify`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Every signature valid, every chain checked and valid, the From address bound. Never
    /// true when no chain was checked (`chain` is then `unchecked`).
    pub valid: bool,
    /// `checked`, or `unchecked` when the box has no trust anchor (no CA, none configured).
    pub chain: sealgate_smime::signed::ChainCheck,
    /// The engine's full verification.
    pub verification: sealgate_smime::signed::Verification,
    /// Things the box could not check.
    pub notes: Vec<String>,
}

/// Verifies a signed message.
pub fn verify(
    keys: &dyn KeyDirectory,
    anchors: &[sealgate_smime::cert::Certificate],
    input: &[u8],
    from: Option<&str>,
) -> Result<VerifyReport, Problem> {
    let mut opts = verify_options(keys, anchors);
    opts.from = from.map(|f| f.trim().to_ascii_lowercase());
    let (_, v) = message::verify_message(input, None, &opts)?;
    let mut notes = Vec::new();
    if opts.anchors.is_empty() {
        notes.push(
            "no trust anchors configured: signatures checked, certificate chains not".to_string(),
        );
    }
    Ok(VerifyReport {
        valid: v.valid,
        chain: v.chain,
        verification: v,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_and_message_id_come_from_the_header_only() {
        let m = b"From: A <a@x.org>\r\nTo: \"B, b\" <B@Y.org>, c@z.org\r\nCc:\r\n d@w.org\r\nMessage-ID: <1@x>\r\n\r\nTo: e@body.org\r\n";
        assert_eq!(header_recipients(m), vec!["b@y.org", "c@z.org", "d@w.org"]);
        assert_eq!(message_id(m).as_deref(), Some("<1@x>"));
        assert_eq!(message_from(m).as_deref(), Some("a@x.org"));
        // The address a client shows, not the last one in the field; several: none.
        assert_eq!(
            message_from(b"From: \"x <evil@y.org>\" <a@x.org>\r\n\r\n").as_deref(),
            Some("a@x.org")
        );
        assert_eq!(message_from(b"From: a@x.org, b@y.org\r\n\r\n"), None);
        assert_eq!(
            message_from(b"From: a@x.org\r\nFrom: b@y.org\r\n\r\n"),
            None
        );
        assert!(header_recipients(b"\x00\xff garbage").is_empty());
        // Only the header block is read: CRLF or LF, none at all, or an empty header.
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_block(b"A: 1\n\nbody\n"), b"A: 1\n");
        assert_eq!(header_block(b"A: 1\r\nB: 2"), b"A: 1\r\nB: 2");
        assert_eq!(header_block(b"\r\nbody"), b"");
        assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <body@x>\n"), None);
    }
}
