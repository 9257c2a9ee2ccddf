//! Publishing our users' encryption certificates for partners: an LDIF file for an LDAP
//! server and an SMIMEA (RFC 8162) zone fragment. Only the vault's users' current
//! certificates usable for encryption now; never keys, never other certificates.

use std::fmt::Write as _;

use sealgate_smime::cert::Certificate;
use sealgate_vault::Vault;

/// The vault's users and their current certificates usable for encryption now, by address.
pub fn local_users(vault: &Vault, now: i64) -> Result<Vec<(String, Certificate)>, String> {
    let mut users: Vec<String> = vault
        .list(None)
        .map_err(|e| format!("the vault: {e}"))?
        .into_iter()
        .map(|k| k.user)
        .collect();
    users.sort();
    users.dedup();
    let mut out = Vec::new();
    for u in users {
        if let Ok(c) = vault.certificate(&u)
            && c.has_email(&u)
            && crate::validate::unusable_reason(&c, now).is_none()
        {
            out.push((u, c));
        }
    }
    Ok(out)
}

fn b64(d: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// One LDIF line `name: value` (or `name:: base64`), folded at 76 columns.
fn ldif_line(out: &mut String, line: &str) {
    let mut rest = line;
    let mut first = true;
    while !rest.is_empty() {
        let max = if first { 76 } else { 75 };
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..cut]);
        out.push('\n');
        rest = &rest[cut..];
        first = false;
    }
}

/// A value written as `name: value` when LDIF allows it (safe ASCII), else base64.
fn attr(out: &mut String, name: &str, value: &str) {
    let safe = !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        ldif_line(out, &format!("{name}: {value}"));
    } else {
        ldif_line(out, &format!("{name}:: {}", b64(value.as_bytes())));
    }
}

/// An LDIF file with one `inetOrgPerson` per user under `base` (`mail=ADDRESS,BASE`), the
/// certificate as `userCertificate;binary` and `userSMIMECertificate`.
pub fn ldif(users: &[(String, Certificate)], base: &str) -> String {
    let mut out = String::from("version: 1\n\n");
    for (address, cert) in users {
        attr(
            &mut out,
            "dn",
            &format!("mail={},{base}", ldap3::dn_escape(address)),
        );
        out.push_str("objectClass: inetOrgPerson\n");
        attr(&mut out, "mail", address);
        let cn = cert.common_name.clone().unwrap_or_else(|| address.clone());
        attr(&mut out, "cn", &cn);
        attr(&mut out, "sn", &cn);
        ldif_line(
            &mut out,
            &format!("userCertificate;binary:: {}", b64(cert.der())),
        );
        ldif_line(
            &mut out,
            &format!("userSMIMECertificate:: {}", b64(cert.der())),
        );
        out.push('\n');
    }
    out
}

/// The SMIMEA owner name of `address` (RFC 8162 §3): the SHA2-256 of the local part,
/// truncated to 28 octets, hex, under `_smimecert.` of the domain (with a final dot).
pub fn smimea_name(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, local.as_bytes());
    let mut name = String::new();
    for b in &h.as_ref()[..28] {
        let _ = write!(name, "{b:02x}");
    }
    Some(format!(
        "{name}._smimecert.{}.",
        domain.trim_end_matches('.')
    ))
}

/// A zone fragment: one `SMIMEA 3 0 0` record (DANE-EE, the full certificate) per user.
pub fn smimea(users: &[(String, Certificate)], ttl: u32) -> String {
    let mut out = String::new();
    for (address, cert) in users {
        let Some(name) = smimea_name(address) else {
            continue;
        };
        let _ = writeln!(out, "; {address}");
        let _ = writeln!(
            out,
            "{name} {ttl} IN SMIMEA 3 0 0 {}",
            sealgate_smime::cert::hex(cert.der())
        );
    }
    out
}

/// The one exact address of a publishing lookup's query string (`address=local@domain`,
/// percent-encoded): at most 254 characters, nothing that could be a pattern or a second
/// address; `None` for anything else.
pub fn query_address(q: &str) -> Option<String> {
    let mut found = None;
    for (k, v) in url_pairs(q)? {
        if k != "address" || found.is_some() {
            return None;
        }
        found = Some(v);
    }
    let a = found?.trim().to_ascii_lowercase();
    let ok = a.len() <= 254
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !a.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '*' | '?' | '%' | '<' | '>' | '(' | ')' | '\\' | ',' | ';'
                )
        });
    ok.then_some(a)
}

fn url_pairs(q: &str) -> Option<Vec<(String, String)>> {
    if q.len() > 1024 {
        return None;
    }
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=')?;
        out.push((decode(k)?, decode(v)?));
        if out.len() > 2 {
            return None;
        }
    }
    Some(out)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_standard() {
        // RFC 8162's example: hugh@example.com.
        assert_eq!(
            smimea_name("hugh@example.com").expect("an address"),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com."
        );
        let mut s = String::new();
        ldif_line(&mut s, &"x".repeat(200));
        assert!(s.lines().all(|l| l.len() <= 76), "{s}");
        assert_eq!(s.replace("\n ", "").trim_end(), "x".repeat(200));
        let mut s = String::new();
        attr(&mut s, "cn", " leading space");
        assert!(s.starts_with("cn:: "), "{s}");
    }

    #[test]
    fn one_exact_address_only() {
        assert_eq!(
            query_address("address=Bob%40Example.org").as_deref(),
            Some("bob@example.org")
        );
        for q in [
            "",
            "address=*@example.org",
            "address=bob",
            "address=a@b@c",
            "address=bob@example.org&address=eve@example.org",
            "address=bob@example.org&x=1",
            "address=%ZZ",
            "address=(mail=*)",
            "address=bob@example.org,eve@example.org",
        ] {
            assert_eq!(query_address(q), None, "{q}");
        }
    }
}
