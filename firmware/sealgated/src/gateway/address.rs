//! The gateway's address checks, without the settings types or I/O (only `std`): which
//! sender addresses a login may use (submission's `MAIL FROM` and `From`), and which
//! recipient addresses the MX accepts (`RCPT TO`). The fuzz target `gateway_address`
//! (fuzz/) includes this file as it is.
//!
//! Attackers: an authenticated employee choosing a sender address (another user's, an
//! alias of another login, a case or space variant), anyone on the Internet choosing a
//! recipient address (another domain, or another destination hidden inside a local part:
//! `user@evil@example.org`, `"user@evil"@example.org`, `user%evil@example.org`,
//! `evil!user@example.org`, a source route `@a:user@evil`). Nothing here panics.

/// Whether the login `login` may send as `address`: its own address (when the login name is
/// an address) or one of its aliases (`aliases`: login name → addresses). Compared without
/// regard to ASCII case and surrounding spaces; an empty address never matches.
pub fn may_send_as<'a, I, A>(login: &str, address: &str, aliases: I) -> bool
where
    I: IntoIterator<Item = (&'a str, A)>,
    A: IntoIterator<Item = &'a str>,
{
    let address = address.trim().to_ascii_lowercase();
    if address.is_empty() || address.chars().any(char::is_control) {
        return false;
    }
    let login = login.trim().to_ascii_lowercase();
    if login.contains('@') && login == address {
        return true;
    }
    aliases
        .into_iter()
        .filter(|(l, _)| l.trim().eq_ignore_ascii_case(&login))
        .flat_map(|(_, a)| a)
        .any(|a| {
            let a = a.trim();
            !a.is_empty() && a.eq_ignore_ascii_case(&address)
        })
}

/// What the MX makes of a `RCPT TO` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A mailbox of one of the box's domains: the address to deliver to (domain lowercased).
    Accept(String),
    /// No domain at all.
    NoDomain,
    /// Another domain, or a local part that could name another destination.
    Denied,
}

/// Checks a `RCPT TO` address against the box's `domains` (lowercase, without a trailing
/// dot): a plain local part at one of them, or `postmaster` alone (for the first domain).
pub fn inbound_recipient<'a>(
    domains: impl IntoIterator<Item = &'a str> + Clone,
    address: &str,
) -> Recipient {
    let a = address.trim();
    if a.eq_ignore_ascii_case("postmaster") {
        return match domains.into_iter().next() {
            Some(d) => Recipient::Accept(format!("postmaster@{d}")),
            None => Recipient::Denied,
        };
    }
    if a.starts_with('@') || a.contains(':') || a.contains(',') {
        return Recipient::Denied;
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Recipient::NoDomain;
    };
    let bad_local = local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || local.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '@' | '%' | '!' | '"' | '\\' | '<' | '>')
        });
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if bad_local
        || domain.is_empty()
        || !domains.into_iter().any(|d| d.eq_ignore_ascii_case(&domain))
    {
        return Recipient::Denied;
    }
    Recipient::Accept(format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIASES: &[(&str, &[&str])] = &[
        ("alice@example.org", &["sales@example.org"]),
        ("bob", &["bob@example.org"]),
    ];

    fn may(login: &str, address: &str) -> bool {
        may_send_as(
            login,
            address,
            ALIASES.iter().map(|(l, a)| (*l, a.iter().copied())),
        )
    }

    #[test]
    fn a_login_sends_as_itself_and_its_aliases_only() {
        assert!(may("alice@example.org", "alice@example.org"));
        assert!(may("Alice@Example.org", " ALICE@example.org "));
        assert!(may("alice@example.org", "Sales@example.org"));
        assert!(may("bob", "bob@example.org"));
        assert!(!may("bob", "bob"), "a login without @ is no address");
        assert!(!may("alice@example.org", "bob@example.org"));
        assert!(!may("alice@example.org", ""));
        assert!(!may("mallory@example.org", "sales@example.org"));
        assert!(!may("alice@example.org", "sales@example.org\0"));
        assert!(!may("", ""));
    }

    #[test]
    fn only_plain_mailboxes_of_the_boxs_domains_are_accepted() {
        let d = ["example.org", "example.net"];
        let check = |a: &str| inbound_recipient(d.iter().copied(), a);
        assert_eq!(
            check("u@Example.ORG."),
            Recipient::Accept("u@example.org".into())
        );
        assert_eq!(
            check("Postmaster"),
            Recipient::Accept("postmaster@example.org".into())
        );
        assert_eq!(check("user"), Recipient::NoDomain);
        for bad in [
            "u@evil.example",
            "user@evil@example.org",
            "\"user@evil\"@example.org",
            "user%evil@example.org",
            "evil!user@example.org",
            "@a:user@evil",
            "a,b@example.org",
            ".u@example.org",
            "u..v@example.org",
            "u v@example.org",
            "@example.org",
            "u@",
            "u@.",
            "<u>@example.org",
        ] {
            assert_eq!(check(bad), Recipient::Denied, "{bad:?}");
        }
        assert_eq!(
            inbound_recipient(std::iter::empty(), "postmaster"),
            Recipient::Denied
        );
    }
}
