//! Fuzz target for the gateway's address checks (sealgated's `gateway/address.rs`, included
//! as it is, since the daemon is no library): the MX's `RCPT TO` check against the box's
//! domains and submission's sender check (`MAIL FROM`, `From`) against a login and its
//! aliases, on arbitrary input.
//!
//! Input: lines; the first is the login, the second the address checked, the rest alias
//! lines `login=addr,addr` (and, split at `,`, also the box's domains).
//!
//! Invariants: no panic; an accepted recipient is `local@domain` with exactly one `@`, one of
//! the domains, no character that could name another destination, and is accepted again as
//! itself; an address a login may use is the login itself or one of its aliases, the same
//! whatever its ASCII case and surrounding spaces, and never empty.

#[allow(dead_code)]
#[path = "../../sealgated/src/gateway/address.rs"]
mod address;

use address::{Recipient, inbound_recipient, may_send_as};

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let login = lines.next().unwrap_or_default();
    let addr = lines.next().unwrap_or_default();
    let aliases: Vec<(&str, Vec<&str>)> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(l, a)| (l, a.split(',').collect()))
        .collect();
    let domains: Vec<String> = aliases
        .iter()
        .flat_map(|(_, a)| a.iter())
        .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d))
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        // A configured domain has no surrounding space or control character (the settings
        // refuse those); a domain ending in `\v` would be trimmed off the address it names.
        .filter(|d| !d.is_empty() && d.trim() == d && !d.chars().any(char::is_control))
        .collect();
    let ds = || domains.iter().map(String::as_str);

    match inbound_recipient(ds(), addr) {
        Recipient::Accept(a) => {
            if addr.trim().eq_ignore_ascii_case("postmaster") {
                assert_eq!(a, format!("postmaster@{}", domains[0]));
            } else {
                let (local, domain) = a.rsplit_once('@').expect("an accepted address has @");
                assert!(!local.is_empty() && local.len() <= 64);
                assert!(!local.contains(['@', '%', '!', '"', '\\', ':', ',', '<', '>']));
                assert!(!local.chars().any(|c| c.is_control() || c.is_whitespace()));
                assert!(domains.iter().any(|d| d.eq_ignore_ascii_case(domain)));
                assert_eq!(
                    inbound_recipient(ds(), &a),
                    Recipient::Accept(a.clone()),
                    "accepted again as itself"
                );
            }
        }
        Recipient::NoDomain => assert!(!addr.contains('@')),
        Recipient::Denied => {}
    }

    let al = || aliases.iter().map(|(l, a)| (*l, a.iter().copied()));
    let may = may_send_as(login, addr, al());
    if may {
        let a = addr.trim();
        assert!(!a.is_empty());
        let own = login.contains('@') && login.trim().eq_ignore_ascii_case(a);
        let alias = aliases.iter().any(|(l, list)| {
            l.trim().eq_ignore_ascii_case(login.trim())
                && list.iter().any(|x| x.trim().eq_ignore_ascii_case(a))
        });
        assert!(own || alias, "{login:?} may send as {addr:?}");
    }
    // ASCII case and surrounding spaces do not matter.
    let variant = format!(" {} ", addr.to_ascii_uppercase());
    assert_eq!(may_send_as(login, &variant, al()), may);
}
