//! Protected headers (RFC 9788, and the older `message/rfc822; forwarded=no` form).

use super::{Entity, HeaderField, HeaderList, is_content_header};

/// The `hp` parameter of RFC 9788.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HpMode {
    /// `hp="cipher"`: the message was encrypted; the outer values may be placeholders.
    Cipher,
    /// `hp="clear"`: signed only; the outer values are copies.
    Clear,
    /// Another value (lowercased).
    Other(String),
}

/// How the protected header fields were carried.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectedForm {
    /// RFC 9788: header fields in the inner entity, whose `Content-Type` has `hp`.
    Rfc9788(HpMode),
    /// The legacy form: the inner entity is `message/rfc822; forwarded=no`, whose body is a
    /// message with the protected header fields and the real content.
    LegacyRfc822,
}

/// Protected header fields found in an inner entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedHeaders<'a> {
    /// How they were carried.
    pub form: ProtectedForm,
    /// The protected header fields (non-content fields of the inner header block, `HP-Outer`
    /// excluded), raw, in order.
    pub fields: Vec<HeaderField<'a>>,
    /// The entity holding the message content: the inner entity itself (RFC 9788) or the
    /// message inside `message/rfc822` (legacy). Its content header fields and body are what
    /// [`assemble_message`](super::assemble_message) should receive.
    pub content: Entity<'a>,
}

impl<'a> ProtectedHeaders<'a> {
    /// The first protected field with this name (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&HeaderField<'a>> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// The protected `Subject` (unfolded; RFC 2047 words are left encoded).
    pub fn subject(&self) -> Option<String> {
        self.get("Subject").map(|f| f.value().into_owned())
    }
}

/// Header fields user agents show that may be protected; others are ignored.
const PROTECTABLE: &[&str] = &[
    "Subject",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Keywords",
    "Comments",
    "Followup-To",
];

/// Finds protected headers in an inner entity (a decrypted or verified MIME entity).
///
/// `Some` for a `Content-Type` with an `hp` parameter (RFC 9788) or for
/// `message/rfc822; forwarded=no`; `None` otherwise.
pub fn protected_headers<'a>(inner: &Entity<'a>) -> Option<ProtectedHeaders<'a>> {
    let ct = inner.explicit_content_type()?;
    let (form, content) = if let Some(hp) = ct.param("hp") {
        let mode = match hp.trim().to_ascii_lowercase().as_str() {
            "cipher" => HpMode::Cipher,
            "clear" => HpMode::Clear,
            other => HpMode::Other(other.to_owned()),
        };
        (ProtectedForm::Rfc9788(mode), inner.clone())
    } else if ct.is("message", "rfc822")
        && ct
            .param("forwarded")
            .is_some_and(|f| f.trim().eq_ignore_ascii_case("no"))
    {
        let body = inner.decoded_body().ok()?;
        // Only identity encodings can be borrowed; a message/rfc822 part must not be encoded
        // otherwise (RFC 2046 §5.2.1).
        let std::borrow::Cow::Borrowed(body) = body else {
            return None;
        };
        (ProtectedForm::LegacyRfc822, Entity::parse(body))
    } else {
        return None;
    };
    let fields = content
        .headers()
        .iter()
        .filter(|f| !f.is_malformed() && !is_content_header(f.name()) && !f.is("HP-Outer"))
        .cloned()
        .collect();
    Some(ProtectedHeaders {
        form,
        fields,
        content,
    })
}

/// Is this `Subject` value a placeholder for a protected one (`...`, `[...]`, `…`)?
pub fn is_placeholder_subject(value: &str) -> bool {
    matches!(value.trim(), "..." | "[...]" | "\u{2026}" | "[\u{2026}]")
}

/// The outer header list with protected values applied:
///
/// - `Subject`: the protected one replaces the outer one when the outer one is absent or a
///   placeholder ([`is_placeholder_subject`]).
/// - Other protected fields users see (`From`, `To`, `Cc`, `Reply-To`, `Date`, `Message-ID`,
///   `In-Reply-To`, `References`, `Keywords`, `Comments`) are added when the outer header has
///   none of that name; an outer value is never replaced, because the outer `From` and
///   addresses are what transport and authentication (DKIM/DMARC, recipient policy) looked at.
///
/// The protected fields keep their raw bytes (and line endings).
pub fn substitute_protected_headers<'a>(
    outer: &HeaderList<'a>,
    protected: &ProtectedHeaders<'a>,
) -> HeaderList<'a> {
    let mut out = outer.clone();
    for name in PROTECTABLE {
        let inner: Vec<&HeaderField<'a>> = protected.fields.iter().filter(|f| f.is(name)).collect();
        let Some(first) = inner.first() else {
            continue;
        };
        let outer_field = out.get(name);
        let replace = match outer_field {
            None => true,
            Some(f) => *name == "Subject" && is_placeholder_subject(&f.value()),
        };
        if !replace {
            continue;
        }
        if outer_field.is_some() {
            out.replace((*first).clone());
        } else {
            for f in inner {
                out.push(f.clone());
            }
        }
    }
    out
}
