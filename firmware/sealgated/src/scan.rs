//! Where content scanning (spam, viruses, data-loss prevention) plugs in: a [`Scanner`] sees
//! a message's decrypted content, in both directions, before it leaves the box.
//!
//! Callers: the inbound MX (`smtp/inbound.rs`: cleartext and signed mail as received,
//! encrypted mail decrypted with the recipients' keys only when the scanner wants content)
//! and submission (`gateway/submission.rs`, on the cleartext before signing and encrypting).
//! The scanner decides; the caller acts on the [`Verdict`] (relay, or hold for an
//! administrator). The product has no scanner yet: [`NoScan`] passes everything without
//! looking, so nothing is decrypted for it.
//!
//! Attacker: whoever wrote the message. A scanner gets the content as bytes, never panics on
//! it (its caller runs it on the blocking pool under `catch_unwind` with the rest of the
//! processing), and its verdict's text goes into a header only after control characters are
//! removed.

/// Which way the message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// From the Internet to a local user (the MX).
    Inbound,
    /// From a local user out (submission, the hand-off's encrypt listener).
    Outbound,
}

/// One message to scan.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // read by the scanners that plug in here (issue 15)
pub struct Scanned<'a> {
    /// Which way it goes.
    pub flow: Flow,
    /// The envelope sender (empty for `<>`).
    pub from: &'a str,
    /// The envelope recipients.
    pub to: &'a [String],
    /// The content: the whole message, decrypted where the box could.
    pub content: &'a [u8],
}

/// What a scanner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // given by the scanners that plug in here (issue 15)
pub enum Verdict {
    /// Deliver.
    Pass,
    /// Deliver, noting this in the result header (a spam score, say).
    Tag(String),
    /// Keep it for an administrator, for this reason.
    Hold(String),
}

/// A content scanner.
pub trait Scanner: Send + Sync {
    /// Whether it looks at content at all (if not, encrypted mail is not decrypted for it).
    fn wants_content(&self) -> bool {
        true
    }

    /// Scans one message.
    fn scan(&self, message: &Scanned<'_>) -> Verdict;
}

/// No scanning: every message passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScan;

impl Scanner for NoScan {
    fn wants_content(&self) -> bool {
        false
    }

    fn scan(&self, _: &Scanned<'_>) -> Verdict {
        Verdict::Pass
    }
}

/// The scanner the settings configure (none exists yet: [`NoScan`]).
pub fn configured(_settings: &crate::settings::Settings) -> std::sync::Arc<dyn Scanner> {
    std::sync::Arc::new(NoScan)
}
