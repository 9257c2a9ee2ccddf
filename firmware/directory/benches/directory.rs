//! `cargo xtask bench directory`: lookups per second, cold (nothing cached: a query to the
//! source, validation of the answer) and warm (the cache), per source, against local peers
//! started here (slapd; the HTTPS directory in Python; Knot DNS signing a zone of SMIMEA
//! records and unbound validating it). The targets: a cold LDAP
//! lookup adds < 5 ms on loopback, a warm one < 50 µs.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../../tests/directory/dns.rs"]
mod dns;
#[path = "../../../tests/directory/peers.rs"]
mod peers;
#[path = "../../../tests/common/ports.rs"]
mod ports;

use std::time::{Duration, Instant};

use sealgate_directory::{Directory, HttpSettings, LdapSettings, Settings, Source};
use sealgate_smime::cert::Certificate;

const USERS: usize = 200;
const WARM_ROUNDS: usize = 50;

fn measure(name: &str, dir: &Directory, addresses: &[String]) -> (Duration, Duration) {
    dir.forget_cached();
    let start = Instant::now();
    for a in addresses {
        let l = dir.lookup(a, dir.deadline());
        assert!(l.certificate.is_some(), "{name} {a}: {:?}", l.refused);
    }
    let cold = start.elapsed() / addresses.len() as u32;
    let start = Instant::now();
    for _ in 0..WARM_ROUNDS {
        for a in addresses {
            let l = dir.lookup(a, dir.deadline());
            assert!(l.certificate.is_some());
        }
    }
    let warm = start.elapsed() / (addresses.len() * WARM_ROUNDS) as u32;
    println!(
        "{name:<6} cold {:>9.3} ms/lookup ({:>7.0}/s)   warm {:>8.2} µs/lookup ({:>9.0}/s)",
        cold.as_secs_f64() * 1e3,
        1.0 / cold.as_secs_f64(),
        warm.as_secs_f64() * 1e6,
        1.0 / warm.as_secs_f64(),
    );
    (cold, warm)
}

fn main() {
    // A failure is one line on stderr, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload_as_str().unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("bench directory: {msg}{at}");
    }));
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = peers::pki();
    let ca_file = t.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tls = peers::server_tls(&pki, t);
    let folder = t.join("http");
    std::fs::create_dir_all(&folder).unwrap();
    let addresses: Vec<String> = (0..USERS)
        .map(|i| format!("user{i}@partner.test"))
        .collect();
    let mut entries = Vec::new();
    let mut records = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let der = peers::leaf(&pki, a, false, false, false);
        let smimea = a.replace("@partner.test", "@partner.example");
        records.push(dns::smimea_line(
            &smimea,
            "partner.example",
            3,
            &peers::leaf(&pki, &smimea, false, false, false),
        ));
        std::fs::write(
            folder.join(format!("{a}.pem")),
            pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())),
        )
        .unwrap();
        entries.push((format!("u{i}"), a.clone(), "userCertificate;binary", der));
    }
    let refs: Vec<(&str, &str, &str, Vec<u8>)> = entries
        .iter()
        .map(|(c, m, at, d)| (c.as_str(), m.as_str(), *at, d.clone()))
        .collect();
    let (_ldap, port, _) = peers::slapd(t, &tls, &refs);
    let (_http, http_port) = peers::http_directory(t, &tls, &folder);
    let anchors = Certificate::parse_many(pki.ca_pem.as_bytes()).unwrap();
    let (_knot, knot_port) = dns::knot(
        &t.join("knot"),
        &[dns::Zone {
            name: "partner.example",
            signed: true,
            records,
        }],
    );
    let ds = dns::ds(&t.join("knot"), "partner.example");
    let (_unbound, resolver) =
        dns::unbound(&t.join("unbound"), &[ds], &["partner.example"], knot_port);
    let smimea = Directory::new(
        Settings {
            order: vec![Source::Smimea],
            smimea_resolver: Some(format!("127.0.0.1:{resolver}")),
            ..Settings::default()
        },
        anchors.clone(),
        None,
    )
    .unwrap();

    let ldap = Directory::new(
        Settings {
            order: vec![Source::Ldap],
            ldap: vec![LdapSettings {
                url: format!("ldap://127.0.0.1:{port}"),
                base: "dc=partner,dc=test".into(),
                filter: "(mail={address})".into(),
                starttls: false,
                ca: None,
                bind_dn: None,
                bind_password_file: None,
            }],
            ..Settings::default()
        },
        anchors.clone(),
        None,
    )
    .unwrap();
    let http = Directory::new(
        Settings {
            order: vec![Source::Http],
            http: vec![HttpSettings {
                url: format!("https://127.0.0.1:{http_port}/lookup"),
                ca: Some(ca_file.clone()),
            }],
            ..Settings::default()
        },
        anchors,
        None,
    )
    .unwrap();
    println!("certificate directory: {USERS} addresses, warm x{WARM_ROUNDS}, loopback peers");
    let (cold, warm) = measure("ldap", &ldap, &addresses);
    measure("http", &http, &addresses);
    let dns_addresses: Vec<String> = addresses
        .iter()
        .map(|a| a.replace("@partner.test", "@partner.example"))
        .collect();
    measure("smimea", &smimea, &dns_addresses);
    println!(
        "targets: cold LDAP < 5 ms: {}; warm < 50 µs: {}",
        if cold < Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        },
        if warm < Duration::from_micros(50) {
            "met"
        } else {
            "NOT met"
        },
    );
}
