//! What an entity is for S/MIME, from its content type and file name.

use super::ContentType;

/// The `smime-type` parameter of `application/pkcs7-mime` (RFC 8551 §3.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmimeType {
    /// `enveloped-data`: EnvelopedData.
    EnvelopedData,
    /// `authEnveloped-data`: AuthEnvelopedData (RFC 5083).
    AuthEnvelopedData,
    /// `signed-data`: opaque SignedData.
    SignedData,
    /// `certs-only`: SignedData carrying only certificates.
    CertsOnly,
    /// `compressed-data`: CompressedData (RFC 3274).
    CompressedData,
}

impl SmimeType {
    /// The parameter value as RFC 8551 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SmimeType::EnvelopedData => "enveloped-data",
            SmimeType::AuthEnvelopedData => "authEnveloped-data",
            SmimeType::SignedData => "signed-data",
            SmimeType::CertsOnly => "certs-only",
            SmimeType::CompressedData => "compressed-data",
        }
    }

    /// Parses a parameter value (case-insensitive, whitespace trimmed).
    pub fn parse(value: &str) -> Option<SmimeType> {
        let v = value.trim();
        [
            SmimeType::EnvelopedData,
            SmimeType::AuthEnvelopedData,
            SmimeType::SignedData,
            SmimeType::CertsOnly,
            SmimeType::CompressedData,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(v))
    }

    /// The conventional file name of an entity of this type (`smime.p7m`, `smime.p7c`,
    /// `smime.p7z`).
    pub fn file_name(self) -> &'static str {
        match self {
            SmimeType::CertsOnly => "smime.p7c",
            SmimeType::CompressedData => "smime.p7z",
            _ => "smime.p7m",
        }
    }
}

/// What an entity is for S/MIME.
///
/// A kind derived from a file name alone (no `smime-type`) is a hint: the caller should check
/// the CMS content type it finds, as it must for [`SmimeKind::UnknownPkcs7`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SmimeKind {
    /// EnvelopedData: `smime-type=enveloped-data`, or a `.p7m` name without `smime-type`
    /// (also on `application/octet-stream`).
    Enveloped,
    /// AuthEnvelopedData: `smime-type=authEnveloped-data`.
    AuthEnveloped,
    /// Opaque SignedData: `smime-type=signed-data`.
    SignedOpaque,
    /// `multipart/signed` with `protocol="application/(x-)pkcs7-signature"`.
    MultipartSigned,
    /// Certificates only: `smime-type=certs-only` or a `.p7c` name.
    CertsOnly,
    /// CompressedData: `smime-type=compressed-data` or a `.p7z` name.
    Compressed,
    /// `application/(x-)pkcs7-mime` whose `smime-type` is missing (and the name says nothing)
    /// or unknown: look at the CMS content type.
    UnknownPkcs7,
    /// Not an S/MIME entity.
    NotSmime,
}

impl SmimeKind {
    /// Enveloped or AuthEnveloped?
    pub fn is_enveloped(self) -> bool {
        matches!(self, SmimeKind::Enveloped | SmimeKind::AuthEnveloped)
    }

    /// Anything but [`SmimeKind::NotSmime`]?
    pub fn is_smime(self) -> bool {
        self != SmimeKind::NotSmime
    }
}

/// The kind an S/MIME file name suggests (`.p7m`, `.p7c`, `.p7z`; case-insensitive).
fn kind_from_name(name: &str) -> Option<SmimeKind> {
    let n = name
        .trim()
        .trim_end_matches(['"', '.', ' '])
        .to_ascii_lowercase();
    if n.ends_with(".p7m") {
        Some(SmimeKind::Enveloped)
    } else if n.ends_with(".p7c") {
        Some(SmimeKind::CertsOnly)
    } else if n.ends_with(".p7z") {
        Some(SmimeKind::Compressed)
    } else {
        None
    }
}

/// Classifies an entity by its content type and the `Content-Disposition` file name, if any.
///
/// - `application/pkcs7-mime` and `application/x-pkcs7-mime`: by `smime-type`; without one,
///   by the `name`/`filename` extension; otherwise [`SmimeKind::UnknownPkcs7`].
/// - `application/octet-stream` named `*.p7m` (or `.p7c`, `.p7z`): by the extension.
/// - `multipart/signed` with protocol `application/pkcs7-signature` or
///   `application/x-pkcs7-signature`: [`SmimeKind::MultipartSigned`] (other protocols, such
///   as OpenPGP's, are [`SmimeKind::NotSmime`]).
pub fn classify(ct: &ContentType, disposition_filename: Option<&str>) -> SmimeKind {
    let by_name = || {
        disposition_filename
            .and_then(kind_from_name)
            .or_else(|| ct.param("name").and_then(kind_from_name))
    };
    if ct.main_type() == "application" {
        match ct.subtype() {
            "pkcs7-mime" | "x-pkcs7-mime" => {
                return match ct.param("smime-type") {
                    Some(t) => match SmimeType::parse(t) {
                        Some(SmimeType::EnvelopedData) => SmimeKind::Enveloped,
                        Some(SmimeType::AuthEnvelopedData) => SmimeKind::AuthEnveloped,
                        Some(SmimeType::SignedData) => SmimeKind::SignedOpaque,
                        Some(SmimeType::CertsOnly) => SmimeKind::CertsOnly,
                        Some(SmimeType::CompressedData) => SmimeKind::Compressed,
                        None => SmimeKind::UnknownPkcs7,
                    },
                    None => by_name().unwrap_or(SmimeKind::UnknownPkcs7),
                };
            }
            "octet-stream" => return by_name().unwrap_or(SmimeKind::NotSmime),
            _ => {}
        }
    }
    if ct.is("multipart", "signed") {
        let protocol = ct.param("protocol").map(|p| p.trim().to_ascii_lowercase());
        if matches!(
            protocol.as_deref(),
            Some("application/pkcs7-signature" | "application/x-pkcs7-signature")
        ) {
            return SmimeKind::MultipartSigned;
        }
    }
    SmimeKind::NotSmime
}
