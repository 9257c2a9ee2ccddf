//! Fuzz target for the parsers of an update URL, of `[proxy] url` and of the update server's
//! (or the proxy's) HTTP answer head
//! (sealgated's `update_url.rs`, included as it is, since the daemon is no library), on
//! arbitrary input.
//!
//! Invariants: no panic; a URL taken is `https://`, names a host and a non-zero port, and
//! its path starts with `/` and holds no space or control character (it goes into the
//! request line as it is); a head taken has a three-digit status.

#[allow(dead_code)]
#[path = "../../sealgated/src/update_url.rs"]
mod url;

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(t) = url::parse_url(s)
    {
        assert!(s.starts_with("https://"));
        assert!(!t.host.is_empty() && t.port != 0);
        assert!(t.path.starts_with('/'));
        assert!(!t.path.bytes().any(|b| b.is_ascii_control() || b == b' '));
        assert!(
            !t.host
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'/')
        );
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(t) = url::parse_proxy(s)
    {
        assert!(s.starts_with("http://"));
        assert!(!t.host.is_empty() && t.port != 0);
        assert!(
            !t.host
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'/')
        );
    }
    if let Ok(h) = url::parse_head(data) {
        assert!((100..=999).contains(&h.status));
    }
}
