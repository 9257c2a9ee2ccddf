//! The parsers of an update URL and of the HTTP answer's head (`update_fetch.rs`), without
//! I/O or dependencies: the fuzz target `update_url` includes this file.

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path and query, as sent.
    pub path: String,
}

/// The longest URL taken.
pub const MAX_URL: usize = 2048;
/// The answer's status line and headers, at most.
pub const MAX_HEAD: usize = 16 * 1024;

/// Parses an `https://host[:port]/path[?query]` URL; refuses anything else (no user info,
/// no fragment, no spaces or control characters).
pub fn parse_url(url: &str) -> Result<Target, String> {
    if url.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} characters"));
    }
    if url
        .chars()
        .any(|c| c.is_control() || c == ' ' || !c.is_ascii())
    {
        return Err("the URL has spaces, control or non-ASCII characters".into());
    }
    let rest = url
        .strip_prefix("https://")
        .ok_or("only https:// URLs are fetched (TLS is required)")?;
    if url.contains('#') {
        return Err("the URL has a fragment".into());
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("the URL has no host, or has user info".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("the URL's IPv6 host has no ]")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "the URL's port is not a number")?,
            None if after.is_empty() => 443,
            None => return Err("the URL's host is not understood".into()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| "the URL's port is not a number")?,
            ),
            None => (authority.to_string(), 443),
        }
    };
    if host.is_empty() || port == 0 {
        return Err("the URL has no host or port".into());
    }
    Ok(Target { host, port, path })
}

/// Parses `[proxy] url`: `http://HOST:PORT` (an HTTP proxy that tunnels with `CONNECT`; the
/// tunnel carries TLS end to end), with the port; no user info, path or query.
pub fn parse_proxy(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("the proxy is given as http://HOST:PORT (the tunnel through it is TLS)")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("the proxy URL has a path, a query or user info".into());
    }
    let t = parse_url(&format!("https://{rest}/"))?;
    if !rest.ends_with(&format!(":{}", t.port)) {
        return Err("the proxy URL has no port (e.g. http://proxy.example.org:3128)".into());
    }
    Ok(t)
}

/// What an answer's head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// `Content-Length`, if sent.
    pub length: Option<u64>,
}

/// Parses an HTTP/1.x answer's head (status line, headers, blank line): the status and
/// the length; refuses a transfer coding (the request is HTTP/1.0) and a bad length.
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
    if head.len() > MAX_HEAD {
        return Err(format!("the HTTP head is longer than {MAX_HEAD} bytes"));
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next().unwrap_or("");
    let mut w = first.split_whitespace();
    let (proto, code) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err("the server does not answer HTTP".into());
    }
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..=999).contains(c))
        .ok_or("the server's status line has no status")?;
    let mut length = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err("the server sent a header line without a colon".into());
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            let l: u64 = v
                .parse()
                .map_err(|_| "the server sent a bad Content-Length".to_string())?;
            if length.is_some_and(|o| o != l) {
                return Err("the server sent two different Content-Lengths".into());
            }
            length = Some(l);
        } else if k == "transfer-encoding" && !v.eq_ignore_ascii_case("identity") {
            return Err(format!(
                "the server sent Transfer-Encoding {v} to an HTTP/1.0 request"
            ));
        }
    }
    Ok(Head { status, length })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_https_urls_are_taken() {
        let t = parse_url("https://updates.example.org/b/sealgate-1.2.raucb").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("updates.example.org", 443, "/b/sealgate-1.2.raucb")
        );
        let t = parse_url("https://127.0.0.1:8443/x.raucb?sig=abc").expect("url");
        assert_eq!((t.port, t.path.as_str()), (8443, "/x.raucb?sig=abc"));
        let t = parse_url("https://[::1]:9/").expect("v6");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(parse_url("https://h?q").expect("q").path, "/?q");
        for bad in [
            "http://updates.example.org/b.raucb",
            "file:///etc/passwd",
            "https://user:pw@h/b",
            "https:///b",
            "https://h:x/b",
            "https://h:0/b",
            "https://h/b c",
            "https://h/b#f",
            "https://h/\r\nHost: x",
            "https://[::1/",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
        assert!(parse_url(&format!("https://h/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn a_proxy_is_http_host_and_port_only() {
        let t = parse_proxy("http://proxy.example.org:3128").expect("proxy");
        assert_eq!((t.host.as_str(), t.port), ("proxy.example.org", 3128));
        let t = parse_proxy("http://[::1]:8080/").expect("v6");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        for bad in [
            "https://proxy:3128",
            "http://proxy",
            "http://[::1]",
            "http://u:p@proxy:3128",
            "http://proxy:3128/path",
            "http://proxy:3128?x",
            "http://proxy:0",
            "http://proxy:3128\r\nX: y",
            "proxy:3128",
            "",
        ] {
            assert!(parse_proxy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answer_heads_are_read_or_refused() {
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\n")
            .expect("head");
        assert_eq!(
            h,
            Head {
                status: 200,
                length: Some(12)
            }
        );
        let h = parse_head(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n").expect("head");
        assert_eq!(
            h,
            Head {
                status: 302,
                length: None
            }
        );
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200\r\nno colon\r\n\r\n",
            b"",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
