//! The inbound MX (`[inbound]`): mail from the Internet for the organisation's domains,
//! relayed to the internal server (`[inbound] next_hop`) through the queue.
//!
//! Attacker: **anyone on the Internet** reaches port 25, with no credentials. What they would
//! like the box to do: relay mail to third parties (an open relay: a foreign domain, or a
//! local one smuggling another destination through `%`, `!`, a quoted local part, a second
//! `@` or a source route: all refused `550 5.7.1`, nothing is queued); make a local user
//! believe a message was signed or checked (incoming `X-Sealgate-*` fields are removed before
//! the box writes its own `X-Sealgate-Result`); plant a certificate of their own for a
//! partner's address, so that later mail to that partner is encrypted to them (a certificate
//! is harvested only from a signature that is valid — chain to a trust anchor of the box,
//! From bound to the signer — and then only by `certs.rs`'s rules: never a local user's
//! address, never displacing a certificate from another issuer, which waits for an
//! administrator instead; audited); exhaust the box (connections per address per minute,
//! sessions per address, recipients per message, message size, the spool quota, an idle
//! timeout and a whole-session deadline); smuggle a second message past the internal server
//! (the protocol layer's defences; the outbound client re-frames everything it sends).
//!
//! Life of a message: connect (rate per address) → the protocol layer's session
//! (`protocol.rs`, shared with the hand-off: STARTTLS with the box certificate, 8BITMIME,
//! SMTPUTF8, CHUNKING, PIPELINING, ENHANCEDSTATUSCODES, SIZE) → each RCPT checked by
//! [`recipient`] (and, with `verify_recipients`, at the next hop: `verify.rs`) → spooled
//! (fsynced before `250`; a message that went round through the box more than `[queue]
//! max_loop_markers` times is refused `554 5.4.6`: `loops.rs`) → [`process`] in the delivery
//! loop (the box's loop marker added) → `[inbound] next_hop`.
//!
//! What [`process`] does: encrypted mail is relayed unchanged (only the result header is
//! added; the mailbox stays encrypted); signed mail is verified (the docking API's verify,
//! with the box's anchors) and its signer's certificate harvested when the signature is
//! valid; cleartext is relayed as it is, or encrypted to the recipients' own keys with
//! `encrypt_at_rest` (when every recipient has one). The scanner (`scan.rs`) sees the content
//! first.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sealgate_smime::cert::Certificate;
use sealgate_smime::mime::{Entity, SmimeKind};
use sealgate_smime::{message, oid, signed};
use sealgate_smtp::{Config, Reply};

use super::Shared;
use super::process::{Processed, header_value};
use crate::certs::{Decision, addresses, decide, unusable_reason};
use crate::docking;
use crate::keys::{Acting, KeyDirectory};
use crate::scan::{Decision as ScanDecision, Extras, Flow, Scanned, Verdict};
use crate::settings::{Inbound, MissingPolicy, Settings};

/// The result header the MX writes (any incoming `X-Sealgate-*` field is removed first).
pub const RESULT_HEADER: &str = "X-Sealgate-Result";
/// The scanner's verdict on inbound mail: `action=...; score=...; labels=...`.
pub const SCAN_HEADER: &str = "X-Sealgate-Scan";

/// The longest message line accepted in DATA, without its CRLF.
const MAX_DATA_LINE: usize = 64 * 1024;

/// The protocol layer's settings for the MX.
pub(super) fn session_config(s: &Settings) -> Config {
    let mut c = Config::new(s.smtp.hostname.clone());
    c.greeting = "ESMTP Sealgate".into();
    // Everything an MX is expected to speak; STARTTLS with the box certificate.
    c.extensions.starttls = true;
    c.extensions.auth = false;
    c.max_message_bytes = s.docking.max_message_bytes.0 as u64;
    c.max_recipients = s.inbound.max_recipients;
    c.max_data_line = MAX_DATA_LINE;
    c
}

/// The key connections are counted under: the address, an IPv6 address's /64.
pub(super) fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Whether `ip` may open one more connection this minute (`[inbound]
/// max_connections_per_minute`); counts it.
pub(super) fn rate_allows(sh: &Shared, ip: IpAddr) -> bool {
    const WINDOW: Duration = Duration::from_secs(60);
    let limit = sh.h.settings.inbound.max_connections_per_minute;
    let Ok(mut m) = sh.inbound_rate.lock() else {
        return false;
    };
    if m.len() >= 65_536 {
        m.retain(|_, (t, _)| t.elapsed() < WINDOW);
    }
    let e = m.entry(rate_key(ip)).or_insert((Instant::now(), 0));
    if e.0.elapsed() >= WINDOW {
        *e = (Instant::now(), 0);
    }
    if e.1 >= limit {
        return false;
    }
    e.1 += 1;
    true
}

fn relay_denied(address: &str) -> Reply {
    let shown: String = address
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Reply::new(
        550,
        [5, 7, 1],
        format!("<{shown}>: relaying denied, the box accepts mail for its own domains only"),
    )
}

/// Checks a RCPT address: a mailbox in one of `[inbound] domains` (`postmaster` alone is one
/// too), with a plain local part. Returns the address to deliver to (domain lowercased).
///
/// Refused, `550 5.7.1`: any other domain; a local part with `@`, `%`, `!`, quotes, a
/// backslash, spaces or control characters (the ways to name another destination inside a
/// local one: `user@evil@example.org`, `"user@evil"@example.org`, `user%evil@example.org`,
/// `evil!user@example.org`); a source route (`@a:user@evil`).
pub fn recipient(inbound: &Inbound, address: &str) -> Result<String, Reply> {
    use crate::gateway::address::{Recipient, inbound_recipient};
    match inbound_recipient(inbound.domains.iter().map(|d| d.0.as_str()), address) {
        Recipient::Accept(a) => Ok(a),
        Recipient::NoDomain => Err(Reply::new(
            550,
            [5, 1, 3],
            "the recipient needs a domain: RCPT TO:<user@domain>",
        )),
        Recipient::Denied => Err(relay_denied(address.trim())),
    }
}

/// The kind of message as the engine reads it (an `application/pkcs7-mime` without
/// `smime-type` by its CMS content type).
fn kind(e: &Entity<'_>) -> SmimeKind {
    match e.smime_kind() {
        SmimeKind::UnknownPkcs7 => {
            match e
                .decoded_body()
                .ok()
                .as_deref()
                .and_then(message::cms_content_type)
            {
                Some(ct) if ct == oid::ENVELOPED_DATA => SmimeKind::Enveloped,
                Some(ct) if ct == oid::AUTH_ENVELOPED_DATA => SmimeKind::AuthEnveloped,
                Some(ct) if ct == oid::SIGNED_DATA => SmimeKind::SignedOpaque,
                _ => SmimeKind::UnknownPkcs7,
            }
        }
        k => k,
    }
}

/// `NAME: VALUE` prepended to `body` (which is otherwise unchanged).
fn with_field(name: &str, value: &str, body: &[u8]) -> Vec<u8> {
    let line = format!("{name}: {}\r\n", header_value(value));
    let mut out = Vec::with_capacity(line.len() + body.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(body);
    out
}

/// The scanner's verdict on a message of the MX: encrypted mail is decrypted with the
/// recipients' keys for a scanner that looks at content (and scanned as it is, so labelled
/// undecryptable, when the box cannot decrypt it).
fn scan(
    sh: &Shared,
    keys: &dyn KeyDirectory,
    kind: SmimeKind,
    from: &str,
    to: &[String],
    msg: &[u8],
    auth: Option<&sealgate_scan::checks::AuthResults>,
) -> ScanDecision {
    let scanner = &sh.scanner;
    if !scanner.wants_content() {
        return ScanDecision {
            verdict: Verdict::Pass,
            extras: Extras::default(),
        };
    }
    let plain = match kind {
        SmimeKind::Enveloped | SmimeKind::AuthEnveloped => {
            docking::decrypt(keys, &sh.h.anchors, msg, to, false)
                .ok()
                .map(|(p, _)| p)
        }
        _ => None,
    };
    scanner.decide(&Scanned {
        flow: Flow::Inbound,
        from,
        to,
        content: plain.as_deref().unwrap_or(msg),
        auth,
    })
}

/// The hosts of the links in a message of the MX (decrypted with the recipients' keys when
/// encrypted), for URIBL (on a blocking thread; a panic gives none).
pub(super) fn link_hosts(sh: &Shared, actor: &str, to: &[String], msg: &[u8]) -> Vec<String> {
    super::process::guarded(|| {
        let acting = Acting::new(sh.h.keys.as_ref(), actor.to_string());
        let plain = match kind(&Entity::parse(msg)) {
            SmimeKind::Enveloped | SmimeKind::AuthEnveloped => {
                docking::decrypt(&acting, &sh.h.anchors, msg, to, false)
                    .ok()
                    .map(|(p, _)| p)
            }
            _ => None,
        };
        sealgate_scan::Settings::default()
            .pipeline(&[])
            .map(|p| p.link_hosts(plain.as_deref().unwrap_or(msg)))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// What the scan before the `250` decided.
pub(super) enum Early {
    /// Queue it (the delivery loop scans again and tags).
    Accept,
    /// `550`: the sender learns it and nothing is queued.
    Reject(Reply),
    /// Into the quarantine (before the `250`): this message (incoming `X-Sealgate-*`
    /// fields removed), for this verdict.
    Quarantine { message: Vec<u8>, verdict: String },
}

/// The scan before the `250` (on a blocking thread). A panic accepts (the delivery loop
/// scans again, under its own guard, and holds).
pub(super) fn before_accept(
    sh: &Shared,
    actor: &str,
    from: &str,
    to: &[String],
    msg: &[u8],
    auth: Option<&sealgate_scan::checks::AuthResults>,
) -> Early {
    let r = super::process::guarded(|| {
        let msg = super::process::strip_result_headers(msg);
        let msg = with_auth_results(sh, auth, &msg);
        let acting = Acting::new(sh.h.keys.as_ref(), actor.to_string());
        let kind = kind(&Entity::parse(&msg));
        (scan(sh, &acting, kind, from, to, &msg, auth), msg)
    });
    let Ok((decision, msg)) = r else {
        return Early::Accept;
    };
    match decision.verdict {
        Verdict::Reject(why) => Early::Reject(Reply::new(
            550,
            [5, 7, 1],
            format!("refused by content scanning: {why}"),
        )),
        Verdict::Hold(why) if crate::quarantine::store().is_some() => Early::Quarantine {
            message: msg,
            verdict: why,
        },
        _ => Early::Accept,
    }
}

/// Puts `msg` in the quarantine; its id, or `None` (logged) when there is no store, no room
/// (`[smtp] spool_max_bytes`) or the write failed (the caller then holds the message in the
/// queue).
fn quarantine(
    sh: &Shared,
    from: &str,
    to: &[String],
    client: &str,
    verdict: &str,
    msg: &[u8],
) -> Option<String> {
    let store = crate::quarantine::store()?;
    if store.bytes() + msg.len() as u64 > sh.h.settings.smtp.spool_max_bytes.0 as u64 {
        tracing::error!("the quarantine is full: the message is held in the queue");
        return None;
    }
    let meta = crate::quarantine::meta("inbound", from, to, client, verdict);
    match store.put(&meta, msg) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(error = %e, "cannot write to the quarantine: the message is held in the queue");
            None
        }
    }
}

/// Queues a copy of `out` for the auditor (relayed as it is, not scanned again).
fn copy_to_auditor(
    sh: &Shared,
    auditor: &str,
    from: &str,
    to: &[String],
    client: &str,
    out: &[u8],
) {
    let copy = with_field(
        "X-Sealgate-Auditor-Copy",
        &format!("original recipients: {}", to.join(", ")),
        out,
    );
    let env = super::spool::Envelope {
        direction: super::Direction::Inbound,
        from: from.to_string(),
        to: vec![auditor.to_string()],
        client: client.to_string(),
        client_name: Some("scan:copy-auditor".into()),
        received: time::OffsetDateTime::now_utc().unix_timestamp(),
        attempts: 0,
        held_reason: None,
        released: Some("a copy for the auditor (DLP rule copy-auditor)".into()),
        auth: None,
    };
    match sh.spool.enqueue(&[(env, copy.as_slice())]) {
        Ok(Some(ids)) => tracing::info!(id = %ids.join(" "), "a copy queued for the auditor"),
        Ok(None) => tracing::error!("the queue has no room for the auditor's copy"),
        Err(e) => tracing::error!(error = %e, "cannot queue the auditor's copy"),
    }
}

/// `X-Sealgate-Result: inbound; RESULT` prepended to `body` (which is otherwise unchanged).
fn with_result(result: &str, body: &[u8]) -> Vec<u8> {
    let line = format!("{RESULT_HEADER}: inbound; {}\r\n", header_value(result));
    let mut out = Vec::with_capacity(line.len() + body.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(body);
    out
}

/// What became of a signer's certificate.
struct Harvest {
    address: String,
    outcome: &'static str,
}

/// The signature's CMS in a signed message.
fn signature_cms(msg: &[u8]) -> Option<Vec<u8>> {
    let e = Entity::parse(msg);
    match kind(&e) {
        SmimeKind::MultipartSigned => e
            .signed_parts()
            .ok()?
            .signature
            .decoded_body()
            .ok()
            .map(|b| b.into_owned()),
        SmimeKind::SignedOpaque => e.decoded_body().ok().map(|b| b.into_owned()),
        _ => None,
    }
}

/// Who brought a message (for the audit).
struct Origin<'a> {
    actor: &'a str,
    client: &'a str,
}

/// Keeps a harvested certificate for an administrator; the outcome's name.
fn pending(
    keys: &dyn KeyDirectory,
    c: &Certificate,
    reason: &str,
    actor: &str,
    record: &dyn Fn(&str, Option<&str>),
    fp: &str,
) -> &'static str {
    match keys.add_pending_certificate(c, reason, actor) {
        Ok(sealgate_vault::PendingOutcome::Full) => {
            record("refused", Some("too many certificates are pending"));
            "refused"
        }
        Ok(_) => {
            record("pending", Some(reason));
            tracing::warn!(sha256 = %fp, reason = %reason, "a harvested certificate waits for an administrator (sealctl certs pending)");
            "pending"
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a harvested certificate");
            "failed"
        }
    }
}

/// Keeps what a valid signature of `from` announced (for the cipher of mail to it).
fn store_capabilities(keys: &dyn KeyDirectory, from: &str, capabilities: &[String]) {
    if let Err(e) = keys.set_capabilities(from, capabilities) {
        tracing::warn!(error = %e, address = from, "cannot store the signer's S/MIME capabilities");
    }
}

/// Stores the certificates of a message's signers whose address is `from`, by `certs.rs`'s
/// rules. Only called for a valid signature with `from` bound.
fn harvest(
    sh: &Shared,
    keys: &dyn KeyDirectory,
    origin: &Origin<'_>,
    msg: &[u8],
    from: &str,
    capabilities: &[String],
    now: i64,
) -> Vec<Harvest> {
    let Origin { actor, client } = *origin;
    let mut anchors = keys.anchors();
    anchors.extend(sh.h.anchors.iter().cloned());
    let anchors = anchors.as_slice();
    let Some(cms) = signature_cms(msg) else {
        return Vec::new();
    };
    let (Ok(signers), Ok(all)) = (signed::certificates(&cms), signed::all_certificates(&cms))
    else {
        return Vec::new();
    };
    let cas: Vec<Certificate> = all.into_iter().filter(|c| c.is_ca).collect();
    let mut out = Vec::new();
    for c in signers
        .iter()
        .filter(|c| addresses(c).iter().any(|a| a == from))
    {
        let fp = crate::identity::hex(&crate::identity::sha256(c.der()));
        let record = |outcome: &str, reason: Option<&str>| {
            sh.h.audit
                .record_certificate(actor, client, &fp, &addresses(c), outcome, reason);
        };
        if let Some(why) = unusable_reason(c, now) {
            record("not-harvested", Some(&why));
            continue;
        }
        let outcome = match decide(keys, anchors, c, &cas, now) {
            // Stored as the directory's `harvested` source (not pinned: an administrator
            // did not decide it), unless the address already has one from another issuer.
            Ok(Decision::Store) => match crate::directory::change_harvested(&sh.h.data_dir, |l| {
                sealgate_directory::harvested::add(
                    l,
                    from,
                    c,
                    capabilities,
                    &format!("{actor} {client}"),
                    now,
                )
            }) {
                Ok(sealgate_directory::harvested::Added::Stored) => {
                    store_capabilities(keys, from, capabilities);
                    let caps = format!(
                        "harvested from a signed message; S/MIME capabilities: {}",
                        if capabilities.is_empty() {
                            "none".to_string()
                        } else {
                            capabilities.join(",")
                        }
                    );
                    record("stored", Some(&caps));
                    tracing::info!(sha256 = %fp, address = from, "signer certificate harvested");
                    "stored"
                }
                Ok(sealgate_directory::harvested::Added::Known) => "known",
                Ok(sealgate_directory::harvested::Added::OtherIssuer(reason)) => {
                    pending(keys, c, &reason, actor, &record, &fp)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store a harvested certificate");
                    "failed"
                }
            },
            Ok(Decision::AlreadyStored) => {
                store_capabilities(keys, from, capabilities);
                "known"
            }
            Ok(Decision::Pending(reason)) => pending(keys, c, &reason, actor, &record, &fp),
            Ok(Decision::LocalUser(a)) => {
                record("refused", Some(&format!("{a} is a local user of the box")));
                "local-user"
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot decide on a harvested certificate");
                "failed"
            }
        };
        out.push(Harvest {
            address: from.to_string(),
            outcome,
        });
    }
    out
}

/// `msg` without forged `Authentication-Results:` fields naming this box and, with results,
/// this box's own on top.
fn with_auth_results(
    sh: &Shared,
    auth: Option<&sealgate_scan::checks::AuthResults>,
    msg: &[u8],
) -> Vec<u8> {
    let host = &sh.h.settings.smtp.hostname;
    let msg = crate::mailauth::strip_own_results(msg, host);
    match auth {
        Some(a) if !a.header.is_empty() => {
            // The value is `mail-auth`'s, folded with CRLF TAB; parts of it come from the
            // client (MAIL FROM, HELO, the From domain): only printable text goes in, and
            // every line after the first is a continuation (never a field of its own).
            let value = fold_safely(&a.header);
            let mut out = format!("Authentication-Results: {value}\r\n").into_bytes();
            out.extend_from_slice(&msg);
            out
        }
        _ => msg,
    }
}

/// A header value with its lines joined by CRLF TAB (continuations only), control
/// characters other than TAB removed, empty lines dropped.
fn fold_safely(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect::<Vec<_>>()
        .join("\r\n\t")
}

/// Processes one message of the MX (on a blocking thread, under `catch_unwind`).
#[allow(clippy::too_many_arguments)]
pub(super) fn process(
    sh: &Shared,
    actor: &str,
    client: &str,
    from: &str,
    to: &[String],
    msg: Vec<u8>,
    now: i64,
    auth: Option<&sealgate_scan::checks::AuthResults>,
) -> Processed {
    // This box's valid loop markers go on with the message (`loops.rs`); nothing else
    // named `X-Sealgate-*` does.
    let kept = sh.loops.own(&msg, now);
    let msg = super::process::strip_result_headers(&msg);
    let msg = with_auth_results(sh, auth, &msg);
    let acting = Acting::new(sh.h.keys.as_ref(), actor.to_string());
    let keys: &dyn KeyDirectory = &acting;
    let e = Entity::parse(&msg);
    let kind = kind(&e);
    drop(e);
    let ScanDecision { verdict, extras } = scan(sh, keys, kind, from, to, &msg, auth);
    // What goes to the quarantine: the message as it came (the forged fields removed).
    let original = msg.clone();
    let (verdict, result, out) = match kind {
        SmimeKind::Enveloped | SmimeKind::AuthEnveloped => {
            // Relayed unchanged (the scanner saw it decrypted, where the box could).
            (verdict, "encrypted; relayed unchanged".to_string(), msg)
        }
        SmimeKind::MultipartSigned | SmimeKind::SignedOpaque => {
            let result = match docking::verify(keys, &sh.h.anchors, &msg, None) {
                Ok(r) => {
                    let v = &r.verification;
                    // `valid`, `unchecked` or `invalid`, as every result header says it.
                    let summary = message::signature_summary(v);
                    let status = summary.split(';').next().unwrap_or("invalid");
                    let signer = v
                        .signers
                        .iter()
                        .flat_map(|s| s.emails.first())
                        .next()
                        .cloned()
                        .unwrap_or_default();
                    let mut result = format!("signature={status}");
                    if !signer.is_empty() {
                        result.push_str(&format!("; signer={signer}"));
                    }
                    let bound_from = v.signers.iter().all(|s| s.from_matches == Some(true));
                    if v.valid && bound_from {
                        let from_addr = message::from_address(&Entity::parse(&msg).header_list());
                        let caps: Vec<String> = v
                            .signers
                            .iter()
                            .flat_map(|s| s.capabilities.iter().cloned())
                            .collect();
                        let origin = Origin { actor, client };
                        if let Some(from_addr) = from_addr {
                            for h in harvest(sh, keys, &origin, &msg, &from_addr, &caps, now) {
                                result.push_str(&format!(
                                    "; certificate={} ({})",
                                    h.outcome, h.address
                                ));
                            }
                        }
                    } else if let Some(reason) =
                        v.signers.iter().flat_map(|s| s.reasons.first()).next()
                    {
                        result.push_str(&format!("; reason=\"{}\"", reason.replace('"', "'")));
                    }
                    result
                }
                Err(p) => format!(
                    "signature=invalid; reason=\"{}\"",
                    p.detail.replace('"', "'")
                ),
            };
            (verdict, result, msg)
        }
        _ => {
            if sh.h.settings.inbound.encrypt_at_rest {
                let docking_policy = &sh.h.settings.docking;
                match docking::encrypt(
                    keys,
                    docking_policy,
                    &msg,
                    None,
                    to,
                    MissingPolicy::Reject,
                    now,
                ) {
                    Ok((enc, _)) => (verdict, "cleartext; encrypted at rest".into(), enc),
                    Err(p) => {
                        let why = match &p.missing {
                            Some(m) => format!("no key for {}", m.join(",")),
                            None => p.kind.to_string(),
                        };
                        (
                            verdict,
                            format!("cleartext; not encrypted at rest ({why})"),
                            msg,
                        )
                    }
                }
            } else {
                (verdict, "cleartext".into(), msg)
            }
        }
    };
    let scan_header = match verdict {
        Verdict::Pass => None,
        Verdict::Tag(t) => Some(t),
        // A quarantine, or a reject after the `250` (the scan before it did not reject: the
        // keys or the databases changed in between), goes to the quarantine; never bounced.
        // Without a quarantine it is kept in the queue for an administrator.
        Verdict::Hold(reason) | Verdict::Reject(reason) => {
            if let Some(qid) = quarantine(sh, from, to, client, &reason, &original) {
                return Processed::Quarantined { qid };
            }
            return Processed::Hold {
                reason: format!("held by the content scanner: {reason}"),
                outcome: "held:scan".into(),
            };
        }
    };
    // A `require-encryption` rule: cleartext leaves only encrypted to its recipients' keys.
    let encrypted = matches!(kind, SmimeKind::Enveloped | SmimeKind::AuthEnveloped)
        || result.contains("encrypted at rest");
    let (out, result) = if extras.require_encryption && !encrypted {
        match docking::encrypt(
            keys,
            &sh.h.settings.docking,
            &out,
            None,
            to,
            MissingPolicy::Reject,
            now,
        ) {
            Ok((enc, _)) => (
                enc,
                format!("{result}; encrypted (DLP rule require-encryption)"),
            ),
            Err(_) => {
                let reason = format!(
                    "{}; DLP rule require-encryption: not every recipient has a key",
                    scan_header.as_deref().unwrap_or("")
                );
                if let Some(qid) = quarantine(sh, from, to, client, &reason, &original) {
                    return Processed::Quarantined { qid };
                }
                return Processed::Hold {
                    reason: format!("held by the content scanner: {reason}"),
                    outcome: "held:scan".into(),
                };
            }
        }
    } else {
        (out, result)
    };
    let out = match &extras.subject_tag {
        Some(tag) => sealgate_scan::subject::tag_subject(&out, tag),
        None => out,
    };
    if let Some(auditor) = &extras.copy_auditor {
        copy_to_auditor(sh, auditor, from, to, client, &out);
    }
    let out = match scan_header {
        Some(v) => with_field(SCAN_HEADER, &v, &out),
        None => out,
    };
    let outcome = result
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Processed::Relay {
        out: sh
            .loops
            .stamp("inbound", &kept, &with_result(&result, &out), now),
        outcome: format!("inbound:{outcome}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Domain;

    fn inbound() -> Inbound {
        Inbound {
            domains: vec![Domain("example.org".into()), Domain("example.net".into())],
            ..Inbound::default()
        }
    }

    #[test]
    fn the_mx_settings_have_limits_and_refuse_to_be_an_open_relay() {
        let base = "[inbound]\nlisten = \"127.0.0.1:2525\"\nnext_hop = \"127.0.0.1:3526\"\n";
        let s = Settings::parse(&format!("{base}domains = [\"Example.ORG\"]\n")).expect("parse");
        assert_eq!(s.inbound.domains, vec![Domain("example.org".into())]);
        assert!(!s.inbound.encrypt_at_rest);
        assert_eq!(s.inbound.max_connections_per_minute, 60);
        assert_eq!(s.inbound.max_recipients, 100);
        let c = session_config(&s);
        assert!(c.extensions.starttls && c.extensions.chunking && c.extensions.smtputf8);
        assert!(!c.extensions.auth);
        assert_eq!(c.max_recipients, 100);
        // No domains: every recipient would be refused, or, worse, someone "fixes" it.
        assert!(Settings::parse(base).is_err());
        assert!(!s.inbound.verify_recipients);
        assert_eq!(s.inbound.verify_probes_per_minute, 20);
        assert_eq!(s.queue.max_loop_markers, 2);
        for bad in [
            "max_connections_per_minute = 0",
            "max_recipients = 0",
            "verify_cache_entries = 0",
            "verify_probes_per_minute = 0",
            "verify_negative_ttl_secs = 0",
            "open_relay = true",
        ] {
            let text = format!("{base}domains = [\"example.org\"]\n{bad}\n");
            assert!(Settings::parse(&text).is_err(), "{bad}");
        }
        assert!(Settings::parse(&format!("{base}domains = [\"*\"]\n")).is_err());
    }

    #[test]
    fn authentication_results_cannot_start_a_field_of_their_own() {
        let v = fold_safely(
            "mx.example.org;\r\n\tspf=pass smtp.mailfrom=a@b\r\nX-Evil: 1\n\rdkim=none",
        );
        assert_eq!(
            v,
            "mx.example.org;\r\n\tspf=pass smtp.mailfrom=a@b\r\n\tX-Evil: 1\r\n\tdkim=none"
        );
    }

    #[test]
    fn only_plain_mailboxes_of_the_configured_domains_are_recipients() {
        let i = inbound();
        assert_eq!(
            recipient(&i, "Alice@Example.ORG").expect("local"),
            "Alice@example.org"
        );
        assert_eq!(
            recipient(&i, "bob@example.net.").expect("local"),
            "bob@example.net"
        );
        assert_eq!(
            recipient(&i, "PostMaster").expect("postmaster"),
            "postmaster@example.org"
        );
        for evil in [
            "user@evil.example",
            "user@example.org@evil.example",
            "user@evil.example@example.org",
            "\"user@evil.example\"@example.org",
            "user%evil.example@example.org",
            "evil.example!user@example.org",
            "@relay.example:user@evil.example",
            "@example.org:user@example.org",
            "user@sub.example.org",
            "user@example.org.evil.example",
            "us er@example.org",
            "user\r\n@example.org",
            ".user@example.org",
            "@example.org",
            "user",
            "",
        ] {
            let r = recipient(&i, evil).expect_err(evil);
            assert!(
                String::from_utf8_lossy(&r.to_bytes()).starts_with("550 "),
                "{evil}: {r:?}"
            );
        }
    }
}
