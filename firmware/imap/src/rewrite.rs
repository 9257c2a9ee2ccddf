//! What the proxy changes in commands and responses, without I/O: the capability allow-list,
//! `ENABLE` filtering, and the FETCH rewrite (a probe added to the client's FETCH so every
//! answer says whether the message is encrypted; content items answered from a [`View`]).

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::core::{AString, LiteralMode, NString8, Vec1};
use imap_codec::imap_types::extensions::binary::Literal8;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::response::Capability;

use crate::view::{self, View};

/// Capabilities shown to clients: only those whose semantics the decrypted view honours
/// (no message content involved, or content the proxy rewrites). Everything else, and every
/// unknown name, is removed: COMPRESS, BINARY, IMAP4rev2, CATENATE, URLAUTH, URL-PARTIAL,
/// NOTIFY, ESEARCH/SEARCHRES/CONTEXT, SORT (sizes of ciphertext), PREVIEW/SNIPPET,
/// MULTIAPPEND, REPLACE, UTF8=*, UNAUTHENTICATE, referrals, STARTTLS, SCRAM-*-PLUS and every
/// SASL mechanism but PLAIN, XOAUTH2 and OAUTHBEARER (passed through; an OAuth session is
/// never decrypted for).
const ALLOWED: &[&str] = &[
    "IMAP4REV1",
    "SASL-IR",
    "ID",
    "IDLE",
    "ENABLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "QUOTA",
    "QUOTASET",
    "CONDSTORE",
    "QRESYNC",
    "OBJECTID",
    "SAVEDATE",
    "WITHIN",
    "XLIST",
    "X-GM-EXT-1",
    "LITERAL+",
    "LITERAL-",
    "LOGINDISABLED",
    "AUTH=PLAIN",
    "AUTH=XOAUTH2",
    "AUTH=OAUTHBEARER",
];

/// Prefixes of allowed capability families.
const ALLOWED_PREFIXES: &[&str] = &["THREAD=", "I18NLEVEL=", "QUOTA=", "RIGHTS="];

/// Whether a capability may be shown to clients.
pub fn allowed(cap: &Capability<'_>) -> bool {
    let name = cap.to_string().to_ascii_uppercase();
    ALLOWED.contains(&name.as_str()) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The allowed part of a capability list; `None` if nothing is left (IMAP4rev1 is always
/// there with a real server).
pub fn filter_caps(caps: &Vec1<Capability<'static>>) -> Option<Vec1<Capability<'static>>> {
    let kept: Vec<Capability<'static>> = caps
        .as_ref()
        .iter()
        .filter(|c| allowed(c))
        .cloned()
        .collect();
    Vec1::try_from(kept).ok()
}

/// The capabilities of an `ENABLE` the proxy lets through (those it shows).
pub fn filter_enable(
    caps: &Vec1<CapabilityEnable<'static>>,
) -> Option<Vec1<CapabilityEnable<'static>>> {
    let kept: Vec<CapabilityEnable<'static>> = caps
        .as_ref()
        .iter()
        .filter(|c| {
            let n = c.to_string().to_ascii_uppercase();
            n == "CONDSTORE" || n == "QRESYNC"
        })
        .cloned()
        .collect();
    Vec1::try_from(kept).ok()
}

/// The header list of the probe: no client asks for exactly these two fields, so the item in
/// an answer is known to be the proxy's own.
pub const PROBE_FIELDS: [&str; 2] = ["CONTENT-TYPE", "X-SEALGATE-PROBE"];

fn probe_section() -> Section<'static> {
    let names: Vec<AString<'static>> = PROBE_FIELDS
        .iter()
        .filter_map(|n| AString::try_from(*n).ok())
        .collect();
    match Vec1::try_from(names) {
        Ok(v) => Section::HeaderFields(None, v),
        // Unreachable with the constant names; a plain HEADER probe also works.
        Err(_) => Section::Header(None),
    }
}

fn is_probe(section: &Option<Section<'_>>) -> bool {
    match section {
        Some(Section::HeaderFields(None, names)) => {
            let names: Vec<String> = names
                .as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_uppercase())
                .collect();
            names == PROBE_FIELDS
        }
        _ => false,
    }
}

/// What the proxy added to one client FETCH, to undo in the answers.
#[derive(Debug, Clone, Default)]
pub struct FetchPlan {
    /// The client did not ask for UID (the proxy did).
    pub added_uid: bool,
    /// Partial lengths asked for, by (section, origin): the answer names only the origin.
    pub partials: HashMap<(Option<Section<'static>>, u32), u32>,
}

fn is_content(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as N;
    matches!(
        item,
        N::Body
            | N::BodyExt { .. }
            | N::BodyStructure
            | N::Envelope
            | N::Rfc822
            | N::Rfc822Header
            | N::Rfc822Size
            | N::Rfc822Text
            | N::Binary { .. }
            | N::BinarySize { .. }
    )
}

/// Adds the probe (and UID) to a FETCH that asks for anything content-dependent; `None`
/// when the FETCH stays as it is.
pub fn plan_fetch(
    items: &mut MacroOrMessageDataItemNames<'static>,
    uid_command: bool,
) -> Option<FetchPlan> {
    let mut list: Vec<MessageDataItemName<'static>> = match items {
        MacroOrMessageDataItemNames::Macro(m) => m
            .expand()
            .into_iter()
            .map(IntoStatic::into_static)
            .collect(),
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.clone(),
    };
    if !list.iter().any(is_content) {
        return None;
    }
    let mut plan = FetchPlan::default();
    for i in &list {
        if let MessageDataItemName::BodyExt {
            section,
            partial: Some((origin, len)),
            ..
        } = i
        {
            plan.partials.insert((section.clone(), *origin), len.get());
        }
    }
    if !list.iter().any(|i| matches!(i, MessageDataItemName::Uid)) {
        plan.added_uid = !uid_command;
        list.push(MessageDataItemName::Uid);
    }
    list.push(MessageDataItemName::BodyExt {
        section: Some(probe_section()),
        partial: None,
        peek: true,
    });
    *items = MacroOrMessageDataItemNames::MessageDataItemNames(list);
    Some(plan)
}

/// What one FETCH answer with the probe says about its message.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The message's UID.
    pub uid: Option<NonZeroU32>,
    /// Whether the top-level Content-Type is S/MIME encryption (`application/pkcs7-mime`
    /// or `x-pkcs7-mime`, and not `signed-data`/`certs-only`).
    pub encrypted: bool,
}

/// Removes the probe (and the UID the proxy added) from a FETCH answer; `None` when the
/// answer carries no probe (an unsolicited FETCH: flags and the like, passed unchanged).
pub fn take_probe(
    items: &mut Vec<MessageDataItem<'static>>,
    plan_added_uid: bool,
) -> Option<Probed> {
    let pos = items.iter().position(|i| match i {
        MessageDataItem::BodyExt { section, .. } => is_probe(section),
        _ => false,
    })?;
    let probe = items.remove(pos);
    let uid = items.iter().find_map(|i| match i {
        MessageDataItem::Uid(u) => Some(*u),
        _ => None,
    });
    if plan_added_uid {
        items.retain(|i| !matches!(i, MessageDataItem::Uid(_)));
    }
    let encrypted = match probe {
        MessageDataItem::BodyExt { data, .. } => {
            let raw = data.into_option().unwrap_or_default();
            view::header_value(&view::crlf(&raw), b"content-type")
                .map(|ct| is_encrypted_type(&ct))
                .unwrap_or(false)
        }
        _ => false,
    };
    Some(Probed { uid, encrypted })
}

/// Whether a Content-Type value names S/MIME encryption at the top level.
pub fn is_encrypted_type(ct: &str) -> bool {
    let (t, params) = view::parse_params(ct);
    let t = t.to_ascii_lowercase();
    if t != "application/pkcs7-mime" && t != "application/x-pkcs7-mime" {
        return false;
    }
    match params.iter().find(|(n, _)| n == "smime-type") {
        Some((_, v)) => {
            let v = v.to_ascii_lowercase();
            v == "enveloped-data" || v == "authenveloped-data"
        }
        // Old clients leave it out: the engine decides from the CMS content type.
        None => true,
    }
}

/// Answers every content item of a FETCH answer from `v` (items the view does not change,
/// such as FLAGS and UID, stay as they are and where they are).
pub fn answer_from_view(items: &mut [MessageDataItem<'static>], v: &View, plan: &FetchPlan) {
    for item in items.iter_mut() {
        let new = match item {
            MessageDataItem::Rfc822Size(_) => Some(MessageDataItem::Rfc822Size(v.size())),
            MessageDataItem::Rfc822(_) => {
                view::literal(v.bytes().to_vec()).map(MessageDataItem::Rfc822)
            }
            MessageDataItem::Rfc822Header(_) => {
                view::literal(v.header().to_vec()).map(MessageDataItem::Rfc822Header)
            }
            MessageDataItem::Rfc822Text(_) => {
                view::literal(v.text().to_vec()).map(MessageDataItem::Rfc822Text)
            }
            MessageDataItem::BodyStructure(_) => {
                Some(MessageDataItem::BodyStructure(v.body_structure(true)))
            }
            MessageDataItem::Body(_) => Some(MessageDataItem::Body(v.body_structure(false))),
            MessageDataItem::Envelope(_) => Some(MessageDataItem::Envelope(v.envelope())),
            // A part that does not exist is empty (the server said so for the ciphertext).
            MessageDataItem::Binary { section, .. } => {
                let data = v.binary(section).unwrap_or_default();
                binary_value(data).map(|value| MessageDataItem::Binary {
                    section: section.clone(),
                    value,
                })
            }
            MessageDataItem::BinarySize { section, .. } => Some(MessageDataItem::BinarySize {
                section: section.clone(),
                size: v
                    .binary(section)
                    .map_or(0, |b| u32::try_from(b.len()).unwrap_or(u32::MAX)),
            }),
            MessageDataItem::BodyExt {
                section, origin, ..
            } => {
                let data = v.section(section.as_ref()).map(|bytes| match origin {
                    Some(o) => {
                        let len = plan.partials.get(&(section.clone(), *o)).copied();
                        view::partial(&bytes, *o, len)
                    }
                    None => bytes,
                });
                // A section the message does not have is empty (as Dovecot answers).
                let data = view::literal(data.unwrap_or_default());
                data.map(|data| MessageDataItem::BodyExt {
                    section: section.clone(),
                    origin: *origin,
                    data,
                })
            }
            _ => None,
        };
        if let Some(n) = new {
            *item = n;
        }
    }
}

/// `BINARY` data as a server sends it: a `literal8` when it holds a NUL, else a literal.
fn binary_value(data: Vec<u8>) -> Option<NString8<'static>> {
    if data.contains(&0) {
        Some(NString8::Literal8(Literal8 {
            data: std::borrow::Cow::Owned(data),
            mode: LiteralMode::Sync,
        }))
    } else {
        view::literal(data).map(NString8::NString)
    }
}

/// Whether a FETCH asks for a partial `BINARY[...]<a.b>`: its answer (`BINARY[...]<a>`)
/// cannot be parsed or written by the proxy's codec, so the proxy refuses the command
/// rather than end the session on the server's answer.
pub fn asks_binary_partial(items: &MacroOrMessageDataItemNames<'_>) -> bool {
    match items {
        MacroOrMessageDataItemNames::Macro(_) => false,
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.iter().any(|i| {
            matches!(
                i,
                MessageDataItemName::Binary {
                    partial: Some(_),
                    ..
                }
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_types() {
        assert!(is_encrypted_type(
            "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"
        ));
        assert!(is_encrypted_type(
            "Application/X-PKCS7-MIME; smime-type=\"authEnveloped-data\""
        ));
        assert!(is_encrypted_type("application/pkcs7-mime; name=smime.p7m"));
        assert!(!is_encrypted_type(
            "application/pkcs7-mime; smime-type=signed-data"
        ));
        assert!(!is_encrypted_type("multipart/mixed; boundary=x"));
        assert!(!is_encrypted_type("text/plain"));
    }

    #[test]
    fn capabilities_are_an_allow_list() {
        use imap_codec::imap_types::core::Atom;
        let keep = [
            "IMAP4rev1",
            "IDLE",
            "THREAD=REFERENCES",
            "AUTH=PLAIN",
            "AUTH=XOAUTH2",
            "AUTH=OAUTHBEARER",
            "LITERAL+",
        ];
        let drop = [
            "COMPRESS=DEFLATE",
            "BINARY",
            "IMAP4rev2",
            "CATENATE",
            "URLAUTH",
            "NOTIFY",
            "ESEARCH",
            "AUTH=SCRAM-SHA-256-PLUS",
            "AUTH=GSSAPI",
            "STARTTLS",
            "LOGIN-REFERRALS",
            "X-UNKNOWN",
            "PREVIEW",
            "SORT",
            "UNAUTHENTICATE",
        ];
        for k in keep {
            let c = Capability::from(Atom::try_from(k).expect("atom"));
            assert!(allowed(&c), "{k}");
        }
        for d in drop {
            let c = Capability::from(Atom::try_from(d).expect("atom"));
            assert!(!allowed(&c), "{d}");
        }
    }
}
