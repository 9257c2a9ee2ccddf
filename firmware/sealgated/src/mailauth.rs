//! Sender authentication of inbound mail at the MX: SPF (of MAIL FROM, of HELO for `<>`),
//! DKIM, DMARC and ARC through `mail-auth`, DNSBL for the client's address and URIBL for
//! the domains of links in the (decrypted) body; the results become the
//! `Authentication-Results:` field (authserv-id: `[smtp] hostname`) and the scan's
//! `authentication` stage (`sealgate_scan::checks::auth`: labels, scores, DMARC's action).
//!
//! DNS: `mail-auth` brings Hickory's resolver, configured here with the box's resolver:
//! `[scan] resolver` when set, else the resolver file (`/etc/resolv.conf`, which names the
//! box's own DNS server when it runs; `dns.rs`), so lookups go where every other lookup of
//! the box goes. One try per lookup, `[scan] dns_timeout_ms` each, the whole check at most
//! four times that: a DNS failure never blocks mail, it is labelled `temperror`.
//!
//! Attacker: the sending client (anyone on the Internet), who would like a forged From to pass
//! (SPF, DKIM, DMARC say so), a local user to trust a forged `Authentication-Results:` that
//! names this box (removed before ours is written: [`strip_own_results`]), or mail to be lost
//! for a slow or failing DNS (bounded, labelled, delivered). Block list answers count only in
//! 127.0.0.0/8 (a list that answers everything with another address is broken, not a hit).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult, dmarc::Policy, dmarc::verify::DmarcParameters, spf::verify::SpfParameters,
};
use sealgate_scan::checks::{AuthResults, DnsList, ListResult};

/// What the session knows of the client.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// Its address.
    pub ip: IpAddr,
    /// Its HELO/EHLO name (empty if none).
    pub helo: &'a str,
    /// MAIL FROM (empty for `<>`).
    pub mail_from: &'a str,
}

/// The authenticator for a resolver setting, built once.
#[allow(clippy::type_complexity)]
static BUILT: Mutex<Option<((Option<String>, u64), MessageAuthenticator)>> = Mutex::new(None);

fn authenticator(s: &sealgate_scan::Settings) -> Option<MessageAuthenticator> {
    let key = (s.resolver.clone(), s.dns_timeout_ms);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((k, a)) = built.as_ref()
        && *k == key
    {
        return Some(a.clone());
    }
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(s.dns_timeout_ms);
    opts.attempts = 1;
    opts.edns0 = true;
    let made = match s.resolver.as_deref().map(str::parse::<SocketAddr>) {
        Some(Ok(addr)) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = vec![udp, tcp];
            MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![ns]), opts)
        }
        Some(Err(_)) => return None,
        None => mail_auth::hickory_resolver::system_conf::read_system_conf().and_then(
            |(config, mut sys)| {
                sys.timeout = opts.timeout;
                sys.attempts = 1;
                MessageAuthenticator::new(config, sys)
            },
        ),
    };
    match made {
        Ok(a) => {
            *built = Some((key, a.clone()));
            Some(a)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no resolver for mail authentication");
            None
        }
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// A lookup name's labels are plain: no list is asked about a name a link made up.
fn plain_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The DNSBL name of an address: reversed octets (nibbles for IPv6) under the zone.
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            format!("{s}{zone}")
        }
    }
}

/// Looks `name` up in a list: `Some(true)` listed (an A in 127.0.0.0/8), `Some(false)` not
/// listed, `None` no answer in time.
async fn listed(a: &MessageAuthenticator, name: &str, timeout: Duration) -> Option<bool> {
    let q = format!("{name}.");
    match tokio::time::timeout(timeout, a.resolver().ipv4_lookup(q.as_str())).await {
        Ok(Ok(l)) => Some(l.answers().iter().any(|r| match &r.data {
            RData::A(a) => a.0.octets()[0] == 127,
            _ => false,
        })),
        Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Some(false),
        _ => None,
    }
}

/// Checks one message: authentication (when `[scan] auth`) and the block lists. Never
/// fails: what could not be looked up is `temperror`.
pub async fn check(
    s: &sealgate_scan::Settings,
    hostname: &str,
    client: Client<'_>,
    msg: &[u8],
    link_hosts: &[String],
) -> AuthResults {
    let mut r = AuthResults::default();
    let timeout = Duration::from_millis(s.dns_timeout_ms);
    let Some(a) = authenticator(s) else {
        if s.auth {
            r.spf = "temperror".into();
            r.dmarc = "temperror".into();
            r.header = format!("{hostname}; spf=temperror; dkim=temperror; dmarc=temperror");
        }
        return r;
    };
    if s.auth {
        let whole = timeout * 4;
        match tokio::time::timeout(whole, authenticate(&a, hostname, client, msg)).await {
            Ok(done) => {
                let lists = std::mem::take(&mut r.lists);
                r = done;
                r.lists = lists;
            }
            Err(_) => {
                r.spf = "temperror".into();
                r.dmarc = "temperror".into();
                r.header = format!(
                    "{hostname}; spf=temperror smtp.mailfrom={}; dkim=temperror; dmarc=temperror",
                    if client.mail_from.is_empty() {
                        "<>"
                    } else {
                        "sender"
                    }
                );
            }
        }
    }
    let ip = client.ip.to_canonical().to_string();
    for l in &s.dnsbl {
        let name = dnsbl_name(client.ip, &l.zone);
        push_list(&a, "dnsbl", l, &ip, &name, timeout, &mut r.lists).await;
    }
    for l in &s.uribl {
        for h in link_hosts {
            let name = format!("{h}.{}", l.zone.trim_end_matches('.'));
            if plain_name(&name) {
                push_list(&a, "uribl", l, h, &name, timeout, &mut r.lists).await;
            }
        }
    }
    r
}

async fn push_list(
    a: &MessageAuthenticator,
    kind: &str,
    l: &DnsList,
    item: &str,
    name: &str,
    timeout: Duration,
    out: &mut Vec<ListResult>,
) {
    let outcome = match listed(a, name, timeout).await {
        Some(true) => "listed",
        Some(false) => return,
        None => "temperror",
    };
    out.push(ListResult {
        kind: kind.into(),
        zone: l.zone.trim_end_matches('.').to_string(),
        item: item.to_string(),
        outcome: outcome.into(),
        score: l.score,
    });
}

async fn authenticate(
    a: &MessageAuthenticator,
    hostname: &str,
    client: Client<'_>,
    msg: &[u8],
) -> AuthResults {
    let mut r = AuthResults::default();
    let helo = if client.helo.is_empty() {
        "unknown"
    } else {
        client.helo
    };
    let spf = if client.mail_from.is_empty() {
        a.verify_spf(SpfParameters::verify_ehlo(client.ip, helo, hostname))
            .await
    } else {
        a.verify_spf(SpfParameters::verify_mail_from(
            client.ip,
            helo,
            hostname,
            client.mail_from,
        ))
        .await
    };
    r.spf = spf_word(spf.result()).into();
    let mail_from_domain = client
        .mail_from
        .rsplit_once('@')
        .map_or(helo, |(_, d)| d)
        .to_string();
    let Some(m) = AuthenticatedMessage::parse(msg) else {
        r.dmarc = "permerror".into();
        r.header = AuthenticationResults::new(hostname)
            .with_spf_mailfrom_result(&spf, client.ip, client.mail_from, helo)
            .to_string()
            + ";\r\n\tdkim=permerror; dmarc=permerror";
        return r;
    };
    let dkim = a.verify_dkim(&m).await;
    r.dkim = dkim
        .iter()
        .map(|d| dkim_word(d.result()).to_string())
        .collect();
    let arc = a.verify_arc(&m).await;
    r.arc = dkim_word(arc.result()).into();
    let dmarc = a
        .verify_dmarc(DmarcParameters::new(&m, &dkim, &mail_from_domain, &spf))
        .await;
    r.dmarc = dmarc_word(&dmarc.result()).into();
    r.dmarc_policy = match dmarc.policy() {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
    .into();
    let header_from = m.from();
    let mut ar = AuthenticationResults::new(hostname)
        .with_dkim_results(&dkim, header_from)
        .with_spf_mailfrom_result(&spf, client.ip, client.mail_from, helo);
    if !matches!(arc.result(), DkimResult::None) {
        ar = ar.with_arc_result(&arc, client.ip);
    }
    ar = ar.with_dmarc_result(&dmarc);
    r.header = ar.to_string();
    r
}

/// `msg` without the `Authentication-Results:` fields whose authserv-id is `authserv_id`
/// (forged: only this box writes its own, after this). Others' results stay.
pub fn strip_own_results(msg: &[u8], authserv_id: &str) -> Vec<u8> {
    use sealgate_smime::mime::Entity;
    let e = Entity::parse(msg);
    let mut h = e.header_list();
    let before = h.len();
    h.retain(|f| {
        !(f.is("Authentication-Results")
            && sealgate_scan::checks::auth::authserv_id(&f.value())
                .eq_ignore_ascii_case(authserv_id.trim_end_matches('.')))
    });
    if h.len() == before {
        return msg.to_vec();
    }
    h.write_entity(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_list_names_and_forged_results() {
        assert_eq!(
            dnsbl_name("192.0.2.10".parse().expect("ip"), "bl.test."),
            "10.2.0.192.bl.test"
        );
        assert!(
            dnsbl_name("2001:db8::1".parse().expect("ip"), "bl.test").starts_with("1.0.0.0.0.0")
        );
        assert!(!plain_name("evil .example.bl.test"));
        let msg = b"Authentication-Results: (c) MX.Example.ORG; spf=pass\r\n\
Authentication-Results: other.example; dkim=fail\r\nFrom: a@b\r\n\r\nbody\r\n";
        let out = String::from_utf8(strip_own_results(msg, "mx.example.org")).expect("utf-8");
        assert!(!out.contains("spf=pass"), "{out}");
        assert!(out.contains("other.example; dkim=fail"), "{out}");
        assert!(out.ends_with("\r\n\r\nbody\r\n"), "{out}");
    }
}
