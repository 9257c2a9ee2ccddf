//! What an OAuth login (XOAUTH2, OAUTHBEARER) carries, and the account a token
//! introspection answer (RFC 7662) names, without I/O. The daemon's `imap/oauth.rs` asks the
//! endpoint; the name in a request is only compared with the answer, never believed.
//!
//! **Invariants: no panics on any input; fuzzed** (`fuzz/fuzz_targets/imap.rs`).

use zeroize::Zeroizing;

/// What a client's OAuth message carries.
#[derive(PartialEq, Eq)]
pub struct OAuthRequest {
    /// The name the request gives (`user=` / `a=`), if any.
    pub name: Option<String>,
    /// The bearer token.
    pub token: Zeroizing<String>,
}

impl std::fmt::Debug for OAuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in a log.
        f.debug_struct("OAuthRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The account an RFC 7662 answer (status line, header, JSON body) names: `active` must be
/// true, `exp` (if given) in the future, and `claim` a string.
pub fn identity_from_answer(answer: &[u8], claim: &str, now: i64) -> Result<String, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the introspection answer is not HTTP")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if status != "200" {
        return Err(format!("the introspection endpoint answered {status:?}"));
    }
    let body: serde_json::Value = serde_json::from_slice(&answer[split + 4..])
        .map_err(|_| "the introspection answer is not JSON")?;
    if body.get("active") != Some(&serde_json::Value::Bool(true)) {
        return Err("the token is not active".into());
    }
    if let Some(exp) = body.get("exp")
        && exp.as_i64().is_none_or(|e| e <= now)
    {
        return Err("the token has expired".into());
    }
    let name = body
        .get(claim)
        .and_then(|v| v.as_str())
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
        .ok_or_else(|| format!("the introspection answer names no {claim:?}"))?;
    Ok(name)
}

/// An XOAUTH2 message: `user=NAME ^A auth=Bearer TOKEN ^A ^A`.
pub fn xoauth2(data: &[u8]) -> Option<OAuthRequest> {
    let text = std::str::from_utf8(data).ok()?;
    let mut name = None;
    let mut token = None;
    for field in text.split('\x01').filter(|f| !f.is_empty()) {
        if let Some(u) = field.strip_prefix("user=") {
            name = Some(u.to_string());
        } else if let Some(a) = field.strip_prefix("auth=") {
            token = Some(bearer(a)?);
        }
    }
    Some(OAuthRequest {
        name,
        token: token?,
    })
}

/// An OAUTHBEARER message (RFC 7628): `GS2-HEADER ^A key=value ^A ... ^A ^A`, the GS2
/// header `n,a=NAME,` (the name optional, `=2C` and `=3D` escaped).
pub fn oauthbearer(data: &[u8]) -> Option<OAuthRequest> {
    let text = std::str::from_utf8(data).ok()?;
    let mut fields = text.split('\x01');
    let gs2 = fields.next()?;
    let mut parts = gs2.split(',');
    let flag = parts.next()?;
    if !matches!(flag, "n" | "y") {
        // Channel binding ("p=") cannot cross the proxy.
        return None;
    }
    let mut name = None;
    for p in parts {
        if let Some(a) = p.strip_prefix("a=") {
            name = Some(a.replace("=2C", ",").replace("=3D", "="));
        }
    }
    let mut token = None;
    for f in fields.filter(|f| !f.is_empty()) {
        if let Some(a) = f.strip_prefix("auth=") {
            token = Some(bearer(a)?);
        }
    }
    Some(OAuthRequest {
        name,
        token: token?,
    })
}

fn bearer(auth: &str) -> Option<Zeroizing<String>> {
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| Zeroizing::new(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_and_oauthbearer_messages() {
        let r = xoauth2(b"user=alice@example.org\x01auth=Bearer tok123\x01\x01").expect("x");
        assert_eq!(r.name.as_deref(), Some("alice@example.org"));
        assert_eq!(r.token.as_str(), "tok123");
        let r =
            oauthbearer(b"n,a=alice@example.org,\x01host=h\x01port=993\x01auth=Bearer t\x01\x01")
                .expect("o");
        assert_eq!(r.name.as_deref(), Some("alice@example.org"));
        assert_eq!(r.token.as_str(), "t");
        let r = oauthbearer(b"n,,\x01auth=Bearer t\x01\x01").expect("no name");
        assert_eq!(r.name, None);
        assert!(oauthbearer(b"p=tls-unique,,\x01auth=Bearer t\x01\x01").is_none());
        assert!(xoauth2(b"user=a\x01auth=Basic x\x01\x01").is_none());
        assert!(xoauth2(b"user=a\x01\x01").is_none());
        assert!(xoauth2(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn only_an_active_unexpired_answer_names_an_account() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"active\":true,\"username\":\"Alice@Example.org\",\"exp\":2000}";
        assert_eq!(
            identity_from_answer(ok, "username", 1000).expect("ok"),
            "alice@example.org"
        );
        assert!(identity_from_answer(ok, "username", 3000).is_err());
        assert!(identity_from_answer(ok, "email", 1000).is_err());
        for bad in [
            &b"HTTP/1.0 200 OK\r\n\r\n{\"active\":false,\"username\":\"a\"}"[..],
            b"HTTP/1.0 200 OK\r\n\r\n{\"active\":\"true\",\"username\":\"a\"}",
            b"HTTP/1.0 401 No\r\n\r\n{\"active\":true,\"username\":\"a\"}",
            b"HTTP/1.0 200 OK\r\n\r\nnot json",
            b"garbage",
        ] {
            assert!(identity_from_answer(bad, "username", 0).is_err());
        }
    }
}
