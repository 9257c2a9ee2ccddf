//! What a submitted message gets, per message and recipient.
//!
//! - **Levels**, the more specific winning: built-in (`Policy::default()`) < the global
//!   `[policy]` values < the sender's domain (`[policy.domains."D"]`) < the sender
//!   (`[policy.users."A"]`): [`effective`].
//! - **Who may send as whom**: a login may use its own address (a login name that is an
//!   address) and its `[submission] aliases`, nothing else: [`may_send_as`].
//! - **The subject trigger** (default `[secure]`) forces `mandatory` and is removed from the
//!   Subject: [`take_subject_trigger`].
//! - **The plan** ([`plan`], pure): sign with the sender's key; encrypt to every recipient
//!   whose certificate is known and to the sender; recipients without one get a separate
//!   signed cleartext copy under `if-possible` (a split envelope), or the whole message is
//!   refused naming them under `mandatory`.
//! - [`apply`] carries the plan out with the engine and the key directory (blocking: call it
//!   off the async executor) and writes the result header on every copy:
//!   `X-Sealgate-Result: signed; encrypted=3/4; copy=encrypted; policy=if-possible`.

use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::{self, Recipient};
use sealgate_smime::keys::PrivateKey;
use sealgate_smime::message::{self, RESULT_HEADER_PREFIX};
use sealgate_smime::mime::{self, Entity, HeaderField};
use sealgate_smime::signed::{self, SignOptions};

use crate::keys::KeyDirectory;
use crate::settings::{EncryptPolicy, Policy, SignLevel, Submission};

/// The header field every submitted copy carries.
pub const RESULT_HEADER: &str = "X-Sealgate-Result";

/// The policy in force for one sender, all levels applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// Encryption.
    pub encrypt: EncryptPolicy,
    /// Signature.
    pub sign: SignLevel,
    /// Issue a key from the box CA to a sender without one.
    pub auto_enrol: bool,
    /// RFC 9788 header protection.
    pub header_protection: bool,
}

/// The policy for `sender` (an address, lowercased or not).
pub fn effective(p: &Policy, sender: &str) -> Effective {
    let sender = sender.trim().to_ascii_lowercase();
    let mut e = Effective {
        encrypt: p.encrypt,
        sign: p.sign,
        auto_enrol: p.auto_enrol,
        header_protection: p.header_protection,
    };
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_string());
    let levels = [
        domain.and_then(|d| p.domains.iter().find(|(k, _)| k.0 == d).map(|(_, o)| o)),
        p.users.iter().find(|(k, _)| k.0 == sender).map(|(_, o)| o),
    ];
    for o in levels.into_iter().flatten() {
        e.encrypt = o.encrypt.unwrap_or(e.encrypt);
        e.sign = o.sign.unwrap_or(e.sign);
        e.auto_enrol = o.auto_enrol.unwrap_or(e.auto_enrol);
        e.header_protection = o.header_protection.unwrap_or(e.header_protection);
    }
    e
}

/// Whether the login `login` may send as `address`: its own address (when the login name is
/// an address) or one of its `[submission] aliases`. Compared without regard to case.
pub fn may_send_as(s: &Submission, login: &str, address: &str) -> bool {
    super::address::may_send_as(
        login,
        address,
        s.aliases
            .iter()
            .map(|(l, a)| (l.as_str(), a.iter().map(|a| a.0.as_str()))),
    )
}

/// If the Subject holds `trigger` (ASCII case ignored), the message with the trigger removed
/// from its Subject and `true`; otherwise the message unchanged and `false`. An empty
/// trigger never matches.
pub fn take_subject_trigger(msg: &[u8], trigger: &str) -> (Vec<u8>, bool) {
    if trigger.is_empty() {
        return (msg.to_vec(), false);
    }
    let entity = Entity::parse(msg);
    let Some(subject) = entity.header("Subject").map(|f| f.value().into_owned()) else {
        return (msg.to_vec(), false);
    };
    let lower = subject.to_ascii_lowercase();
    let Some(at) = lower.find(&trigger.to_ascii_lowercase()) else {
        return (msg.to_vec(), false);
    };
    let rest = format!("{}{}", &subject[..at], &subject[at + trigger.len()..]);
    let cleaned = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut header = entity.header_list();
    match HeaderField::new("Subject", &cleaned) {
        Ok(f) => header.replace(f),
        Err(_) => return (msg.to_vec(), true),
    }
    (header.write_entity(&entity), true)
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `550 5.7.1`: policy forbids it (the text names why, never a key or content).
    Policy(String),
    /// `451 4.3.0`: the box could not do it now (vault, engine); the client may retry.
    Temporary(String),
    /// `554 5.6.0`: the message itself cannot be signed or encrypted (malformed, too large,
    /// unsupported); retrying will not help.
    Content(String),
}

/// An engine error while signing or encrypting: the message's fault or ours.
fn engine(e: sealgate_smime::Error) -> Refusal {
    use sealgate_smime::Error as E;
    match e {
        E::Malformed(_) | E::Unsupported(_) | E::TooLarge(_) => Refusal::Content(e.to_string()),
        other => Refusal::Temporary(other.to_string()),
    }
}

/// What to do with one message (pure: made from what the key directory knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sign with the sender's key.
    pub sign: bool,
    /// Recipients the encrypted copy goes to.
    pub encrypted: Vec<String>,
    /// Recipients the cleartext (signed by policy) copy goes to.
    pub cleartext: Vec<String>,
    /// The encryption level applied (after the subject trigger).
    pub encrypt: EncryptPolicy,
    /// Whether the subject trigger forced `mandatory`.
    pub triggered: bool,
}

/// Decides for `recipients`, `has_cert` telling which have a certificate and `has_key`
/// whether the sender has (or will be issued) a signing key.
pub fn plan(
    e: &Effective,
    triggered: bool,
    recipients: &[String],
    has_cert: &[bool],
    has_key: bool,
) -> Result<Plan, Refusal> {
    let encrypt = if triggered {
        EncryptPolicy::Mandatory
    } else {
        e.encrypt
    };
    let sign = match e.sign {
        SignLevel::Never => false,
        SignLevel::IfPossible => has_key,
        SignLevel::Always if has_key => true,
        SignLevel::Always => {
            return Err(Refusal::Policy(
                "the policy requires a signature and the sender has no key on the box".into(),
            ));
        }
    };
    let (mut encrypted, mut cleartext) = (Vec::new(), Vec::new());
    for (r, c) in recipients.iter().zip(has_cert.iter().copied()) {
        if c && encrypt != EncryptPolicy::Never {
            encrypted.push(r.clone());
        } else {
            cleartext.push(r.clone());
        }
    }
    if encrypt == EncryptPolicy::Mandatory && !cleartext.is_empty() {
        return Err(Refusal::Policy(format!(
            "encryption is mandatory and there is no certificate for {}",
            cleartext.join(", ")
        )));
    }
    Ok(Plan {
        sign,
        encrypted,
        cleartext,
        encrypt,
        triggered,
    })
}

/// Content ciphers by preference, with the names the engine gives them in S/MIME
/// capabilities.
const CIPHERS: [(CipherChoice, &str); 4] = [
    (CipherChoice::Aes256Gcm, "aes256-gcm"),
    (CipherChoice::Aes128Gcm, "aes128-gcm"),
    (CipherChoice::Aes256Cbc, "aes256-cbc"),
    (CipherChoice::Aes128Cbc, "aes128-cbc"),
];

/// The content cipher for an encrypted copy whose parties (recipients and sender) announced
/// `parties` (`None`: not known): the first of [`CIPHERS`] every party reads. A party whose
/// capabilities are unknown, or name none of them, reads the CBC ciphers every S/MIME client
/// reads; when the parties share none, the engine's default (AES-256-CBC).
pub fn choose_cipher(parties: &[Option<Vec<String>>]) -> CipherChoice {
    let reads = |caps: &Option<Vec<String>>, name: &str| match caps {
        Some(c) if c.iter().any(|x| CIPHERS.iter().any(|(_, n)| x == n)) => {
            c.iter().any(|x| x == name)
        }
        _ => name.ends_with("-cbc"),
    };
    CIPHERS
        .iter()
        .find(|(_, name)| parties.iter().all(|p| reads(p, name)))
        .map_or(CipherChoice::Aes256Cbc, |(c, _)| *c)
}

/// One copy to relay: its envelope recipients and the message.
#[derive(Debug, Clone)]
pub struct Copy {
    /// Envelope recipients of this copy.
    pub recipients: Vec<String>,
    /// The message, with the result header.
    pub message: Vec<u8>,
}

/// What [`apply`] made.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// One or two copies (encrypted, cleartext).
    pub copies: Vec<Copy>,
    /// The result in one line (the result header's value without `copy=`), for the audit.
    pub summary: String,
    /// Whether the box CA issued the sender a key for this message.
    pub enrolled: bool,
}

/// Issues a key from the box CA (auto-enrolment); returns whether one was issued.
pub type Enrol<'a> = &'a (dyn Fn(&str) -> Result<(), String> + Sync);

/// Carries out the policy for a message `sender` submitted to `recipients`: strips incoming
/// `X-Sealgate-*` fields, applies the subject trigger, signs, encrypts, splits.
pub fn apply(
    keys: &dyn KeyDirectory,
    policy: &Policy,
    enrol: Enrol<'_>,
    sender: &str,
    recipients: &[String],
    msg: &[u8],
    now: i64,
) -> Result<Outcome, Refusal> {
    let sender = sender.trim().to_ascii_lowercase();
    let e = effective(policy, &sender);
    let msg = strip_result_headers(msg);
    let (msg, triggered) = take_subject_trigger(&msg, &policy.subject_trigger.0);
    let temp = |e: &dyn std::fmt::Display| Refusal::Temporary(e.to_string());
    let mut certs = Vec::with_capacity(recipients.len());
    for r in recipients {
        // The certificate directory (vault first, then the configured sources). A certificate
        // the engine cannot encrypt to (a legacy RSA key under 2048 bits, an unsupported key
        // type) counts as none: the recipient is not silently dropped.
        certs.push(
            crate::directory::encryption_certificate(keys, &r.trim().to_ascii_lowercase(), now)
                .map_err(|e| temp(&e))?
                .and_then(|c| crate::directory::recipient(c).ok()),
        );
    }
    let has_cert: Vec<bool> = certs.iter().map(Option::is_some).collect();
    let mut key = match e.sign {
        SignLevel::Never => None,
        _ => keys.signing_key(&sender).map_err(|e| temp(&e))?,
    };
    let mut enrolled = false;
    if key.is_none() && e.sign != SignLevel::Never && e.auto_enrol {
        enrol(&sender).map_err(Refusal::Temporary)?;
        enrolled = true;
        key = keys.signing_key(&sender).map_err(|e| temp(&e))?;
    }
    let p = plan(&e, triggered, recipients, &has_cert, key.is_some())?;
    let signer = match (&key, p.sign) {
        (Some(k), true) => Some(k.as_ref() as &dyn PrivateKey),
        _ => None,
    };
    // With header protection each copy is built from the message itself (its inner entity
    // differs: hp="cipher" or "clear"); without, the encrypted copy encrypts the signed one.
    let hp = e.header_protection && (signer.is_some() || !p.encrypted.is_empty());
    let signed = match signer {
        Some(k) if !hp => message::sign_message(&msg, k, false, now).map_err(engine)?,
        _ => msg.clone(),
    };
    let total = recipients.len();
    let head = format!(
        "{}; encrypted={}/{total}; policy={}{}",
        if p.sign { "signed" } else { "unsigned" },
        p.encrypted.len(),
        p.encrypt.name(),
        if p.triggered { "; trigger" } else { "" }
    );
    let mut copies = Vec::new();
    if !p.encrypted.is_empty() {
        let mut to: Vec<Recipient> = Vec::new();
        for (r, c) in recipients.iter().zip(certs) {
            if let Some(c) = c
                && p.encrypted.contains(r)
            {
                to.push(c);
            }
        }
        // The sender's own certificate, so the Sent copy stays readable.
        if !p.encrypted.iter().any(|r| r.eq_ignore_ascii_case(&sender))
            && let Some(c) = crate::directory::encryption_certificate(keys, &sender, now)
                .map_err(|e| temp(&e))?
            && let Ok(r) = Recipient::new(c)
        {
            to.push(r);
        }
        // The content cipher every party reads: the recipients' announced capabilities
        // (harvested from their signed mail), the sender's too.
        let parties: Vec<Option<Vec<String>>> = p
            .encrypted
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(sender.as_str()))
            .map(|a| keys.capabilities(&a.trim().to_ascii_lowercase()))
            .collect();
        let cipher = choose_cipher(&parties);
        let out = if hp {
            protected_copy(&msg, signer, Some(&to), cipher, now).map_err(engine)?
        } else {
            message::encrypt_message(&signed, &to, cipher).map_err(engine)?
        };
        copies.push(Copy {
            recipients: p.encrypted.clone(),
            message: with_result(&out, &format!("{head}; copy=encrypted")),
        });
    }
    if !p.cleartext.is_empty() {
        let clear = if hp && signer.is_some() {
            protected_copy(&msg, signer, None, CipherChoice::Aes256Cbc, now).map_err(engine)?
        } else {
            signed
        };
        copies.push(Copy {
            recipients: p.cleartext.clone(),
            message: with_result(&clear, &format!("{head}; copy=cleartext")),
        });
    }
    Ok(Outcome {
        copies,
        summary: head,
        enrolled,
    })
}

/// Header fields a mail client shows, protected by RFC 9788 when the policy asks.
const PROTECTED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// RFC 9788: a copy whose cryptographic payload carries the protected header fields, its
/// Content-Type marked `hp="cipher"` (encrypted: the outer Subject becomes `[...]`) or
/// `hp="clear"` (signed only: the outer fields stay as they are).
fn protected_copy(
    msg: &[u8],
    signer: Option<&dyn PrivateKey>,
    encrypt_to: Option<&[Recipient]>,
    cipher: CipherChoice,
    now: i64,
) -> sealgate_smime::Result<Vec<u8>> {
    let entity = Entity::parse(msg);
    let split = mime::split_message(&entity);
    let mut outer = split.outer;
    outer.remove_headers_with_prefix(RESULT_HEADER_PREFIX);
    let hp = if encrypt_to.is_some() {
        "cipher"
    } else {
        "clear"
    };
    let payload = Entity::parse(&split.inner);
    let mut inner = Vec::with_capacity(split.inner.len() + 1024);
    for f in payload.headers() {
        if f.is("Content-Type") {
            let v = f.value();
            let v = v.trim_end().trim_end_matches(';');
            inner.extend_from_slice(format!("Content-Type: {v}; hp=\"{hp}\"\r\n").as_bytes());
        } else {
            f.write(&mut inner);
        }
    }
    for name in PROTECTED {
        for f in outer.get_all(name) {
            f.write(&mut inner);
        }
    }
    inner.extend_from_slice(b"\r\n");
    inner.extend_from_slice(payload.body());
    let inner = mime::canonicalize_crlf(&inner).into_owned();
    let mut body = inner;
    if let Some(k) = signer {
        let opts = SignOptions {
            scheme: None,
            detached: true,
            signing_time: now,
            include_chain: true,
        };
        let (der, hash) = signed::sign(&body, k, &opts)?;
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&sealgate_smime::crypto::random(16)?);
        body = mime::build_multipart_signed(&body, hash.micalg(), &der, &seed);
    }
    match encrypt_to {
        Some(r) => {
            let der = envelope::encrypt(&mime::canonicalize_crlf(&body), r, cipher)?;
            let kind = if cipher.is_aead() {
                mime::SmimeType::AuthEnvelopedData
            } else {
                mime::SmimeType::EnvelopedData
            };
            let entity = mime::build_pkcs7_mime(kind, &der);
            if outer.get("Subject").is_some() {
                outer.replace(HeaderField::new("Subject", "[...]")?);
            }
            Ok(mime::assemble_message(&outer, &entity))
        }
        None => Ok(mime::assemble_message(&outer, &body)),
    }
}

/// `msg` without any `X-Sealgate-*` header field: a sender cannot forge a result.
fn strip_result_headers(msg: &[u8]) -> Vec<u8> {
    let entity = Entity::parse(msg);
    let mut header = entity.header_list();
    if header.remove_headers_with_prefix(RESULT_HEADER_PREFIX) == 0 {
        return msg.to_vec();
    }
    header.write_entity(&entity)
}

fn with_result(msg: &[u8], value: &str) -> Vec<u8> {
    let line = format!("{RESULT_HEADER}: {value}\r\n");
    let mut out = Vec::with_capacity(msg.len() + line.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn settings(text: &str) -> Settings {
        Settings::parse(text).expect("settings")
    }

    #[test]
    fn the_cipher_follows_what_every_party_announced() {
        let caps = |c: &[&str]| Some(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let gcm = caps(&["aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"]);
        // Nothing known: the engine's default.
        assert_eq!(choose_cipher(&[None, None]), CipherChoice::Aes256Cbc);
        assert_eq!(
            choose_cipher(&[]),
            CipherChoice::Aes256Gcm,
            "no party at all"
        );
        // Everyone announced GCM.
        assert_eq!(
            choose_cipher(&[gcm.clone(), gcm.clone()]),
            CipherChoice::Aes256Gcm
        );
        // One party unknown: CBC, which every client reads.
        assert_eq!(choose_cipher(&[gcm.clone(), None]), CipherChoice::Aes256Cbc);
        // One party reads only AES-128-CBC.
        assert_eq!(
            choose_cipher(&[gcm.clone(), caps(&["aes128-cbc", "des-ede3-cbc"]), None]),
            CipherChoice::Aes128Cbc
        );
        // AES-128-GCM only, shared.
        assert_eq!(
            choose_cipher(&[caps(&["aes128-gcm"]), gcm.clone()]),
            CipherChoice::Aes128Gcm
        );
        // Names of no cipher we write: as unknown.
        assert_eq!(
            choose_cipher(&[caps(&["rsaencryption"]), gcm]),
            CipherChoice::Aes256Cbc
        );
        // Nothing shared: the default.
        assert_eq!(
            choose_cipher(&[caps(&["aes128-gcm"]), caps(&["aes256-cbc"])]),
            CipherChoice::Aes256Cbc
        );
    }

    #[test]
    fn levels_the_more_specific_winning() {
        let s = settings(
            "[policy]\nsign = \"always\"\n[policy.domains.\"example.org\"]\nencrypt = \"mandatory\"\nauto_enrol = true\n[policy.users.\"ceo@example.org\"]\nencrypt = \"never\"\n",
        );
        let builtin = effective(&Policy::default(), "a@example.org");
        assert_eq!(builtin.encrypt, EncryptPolicy::IfPossible);
        assert_eq!(builtin.sign, SignLevel::IfPossible);
        let other = effective(&s.policy, "x@example.net");
        assert_eq!(
            (other.encrypt, other.sign),
            (EncryptPolicy::IfPossible, SignLevel::Always)
        );
        let dom = effective(&s.policy, "Bob@Example.org");
        assert_eq!(dom.encrypt, EncryptPolicy::Mandatory);
        assert!(dom.auto_enrol);
        let user = effective(&s.policy, "ceo@example.org");
        assert_eq!(user.encrypt, EncryptPolicy::Never);
        assert!(
            user.auto_enrol,
            "the user level leaves auto_enrol to the domain"
        );
        assert_eq!(user.sign, SignLevel::Always);
    }

    #[test]
    fn a_login_sends_only_as_its_own_addresses() {
        let s = settings(
            "[submission]\naliases = { \"alice@example.org\" = [\"sales@example.org\"], \"bob\" = [\"bob@example.org\"] }\n",
        )
        .submission;
        assert!(may_send_as(&s, "alice@example.org", "ALICE@example.org"));
        assert!(may_send_as(&s, "Alice@Example.org", "sales@example.org"));
        assert!(!may_send_as(&s, "alice@example.org", "bob@example.org"));
        assert!(may_send_as(&s, "bob", "bob@example.org"));
        assert!(!may_send_as(&s, "bob", "bob"));
        assert!(!may_send_as(&s, "alice@example.org", ""), "null sender");
        assert!(!may_send_as(&s, "mallory@example.org", "sales@example.org"));
    }

    #[test]
    fn the_subject_trigger_is_removed_and_forces_mandatory() {
        let m = b"From: a@example.org\r\nSubject: [SECURE]  Quarterly  figures\r\n\r\nbody [secure]\r\n";
        let (out, hit) = take_subject_trigger(m, "[secure]");
        assert!(hit);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("Subject: Quarterly figures\r\n"), "{text}");
        assert!(text.ends_with("body [secure]\r\n"), "the body is untouched");
        let (same, hit) = take_subject_trigger(b"Subject: hello\r\n\r\nx", "[secure]");
        assert!(!hit);
        assert_eq!(same, b"Subject: hello\r\n\r\nx");
        assert!(!take_subject_trigger(m, "").1);
        // Non-ASCII around the trigger, and a trigger that is the whole Subject.
        let (out, hit) = take_subject_trigger(
            "Subject: Grüße [Secure] ünd\r\n\r\nx".as_bytes(),
            "[secure]",
        );
        assert!(hit);
        assert!(String::from_utf8_lossy(&out).contains("Subject: Grüße ünd\r\n"));
        let (out, hit) = take_subject_trigger(b"Subject: [secure]\r\n\r\nx", "[secure]");
        assert!(
            hit && !String::from_utf8_lossy(&out).contains("secure"),
            "{out:?}"
        );
        let e = effective(&Policy::default(), "a@example.org");
        let r = ["x@partner.example".to_string()];
        assert!(matches!(
            plan(&e, true, &r, &[false], true),
            Err(Refusal::Policy(_))
        ));
    }

    #[test]
    fn plans_split_refuse_and_sign() {
        let rcpts: Vec<String> = ["a@x.org", "b@x.org", "c@y.org", "d@y.org"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let certs = [true, true, false, true];
        let base = effective(&Policy::default(), "s@x.org");
        let p = plan(&base, false, &rcpts, &certs, true).expect("plan");
        assert!(p.sign);
        assert_eq!(p.encrypted, vec!["a@x.org", "b@x.org", "d@y.org"]);
        assert_eq!(p.cleartext, vec!["c@y.org"]);
        let mandatory = Effective {
            encrypt: EncryptPolicy::Mandatory,
            ..base
        };
        match plan(&mandatory, false, &rcpts, &certs, true) {
            Err(Refusal::Policy(t)) => {
                assert!(t.contains("c@y.org") && !t.contains("a@x.org"), "{t}")
            }
            other => unreachable!("{other:?}"),
        }
        let never = Effective {
            encrypt: EncryptPolicy::Never,
            ..base
        };
        let p = plan(&never, false, &rcpts, &certs, false).expect("plan");
        assert!(p.encrypted.is_empty() && !p.sign);
        let always = Effective {
            sign: SignLevel::Always,
            ..base
        };
        assert!(matches!(
            plan(&always, false, &rcpts, &certs, false),
            Err(Refusal::Policy(_))
        ));
        let no_sign = Effective {
            sign: SignLevel::Never,
            ..base
        };
        assert!(
            !plan(&no_sign, false, &rcpts, &certs, true)
                .expect("plan")
                .sign
        );
    }

    #[test]
    fn engine_errors_are_the_messages_fault_or_temporary() {
        use sealgate_smime::Error as E;
        assert!(matches!(
            engine(E::Malformed("x".into())),
            Refusal::Content(_)
        ));
        assert!(matches!(
            engine(E::TooLarge("x".into())),
            Refusal::Content(_)
        ));
        assert!(matches!(engine(E::Key("x".into())), Refusal::Temporary(_)));
    }

    #[test]
    fn forged_result_headers_are_removed() {
        let m = b"X-Sealgate-Result: signed; encrypted=9/9\r\nFrom: a@x.org\r\n\r\nbody\r\n";
        let out = strip_result_headers(m);
        assert_eq!(out, b"From: a@x.org\r\n\r\nbody\r\n");
    }
}
