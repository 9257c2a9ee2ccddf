//! The certificate directory through `sealctl directory lookup`, against real peers started
//! here: OpenLDAP `slapd` (plain LDAP and LDAPS, a small tree holding certificates as
//! `userSMIMECertificate` and `userCertificate;binary`) and an HTTPS certificate directory
//! (Python's http.server over TLS). The PKI is made here with rcgen: a partner CA (the trust
//! anchor), good, expired, wrong-address, CA and self-signed certificates.
//!
//! The attacker is the directory's answer: every bad candidate must be refused with its reason,
//! and a source that hangs or is down must not hold the lookup past its deadline.

#![allow(clippy::panic, clippy::unwrap_used)]

#[path = "../vault/common.rs"]
mod common;
mod dns;
mod peers;
#[path = "../common/ports.rs"]
mod ports;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use peers::*;

fn init_vault(dir: &Path) -> String {
    let d = dir.join("data");
    let d = d.to_str().unwrap().to_string();
    ok(&[
        "vault",
        "init",
        "--data-dir",
        &d,
        SW,
        "--recovery-out",
        dir.join("recovery.txt").to_str().unwrap(),
    ]);
    d
}

/// Runs the lookup: (exit code, the JSON object).
fn lookup(data: &str, settings: &Path, address: &str) -> (i32, serde_json::Value) {
    let out = sealctl(&[
        "directory",
        "lookup",
        address,
        "--data-dir",
        data,
        "--settings",
        settings.to_str().unwrap(),
        SW,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lookup {address}: not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["address", "certificate", "refused", "source"], "{v}");
    (out.status.code().unwrap(), v)
}

fn reasons(v: &serde_json::Value) -> String {
    v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r["source"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ldap_and_https_directories_answer_only_with_validated_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let ca_file = t.join("partner-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tls = server_tls(&pki, t);

    let alice = leaf(&pki, "alice@partner.test", false, false, false);
    let bob = leaf(&pki, "bob@partner.test", false, false, false);
    let carol = leaf(&pki, "carol@partner.test", true, false, false);
    let dave_names_mallory = leaf(&pki, "mallory@partner.test", false, false, false);
    let erin_ca = leaf(&pki, "erin@partner.test", false, false, true);
    let frank_self = leaf(&pki, "frank@partner.test", false, true, false);
    let (_ldap, port, tls_port) = slapd(
        t,
        &tls,
        &[
            (
                "alice",
                "alice@partner.test",
                "userSMIMECertificate",
                alice.clone(),
            ),
            (
                "bob",
                "bob@partner.test",
                "userCertificate;binary",
                bob.clone(),
            ),
            (
                "carol",
                "carol@partner.test",
                "userCertificate;binary",
                carol,
            ),
            (
                "dave",
                "dave@partner.test",
                "userCertificate;binary",
                dave_names_mallory,
            ),
            (
                "erin",
                "erin@partner.test",
                "userCertificate;binary",
                erin_ca,
            ),
            (
                "frank",
                "frank@partner.test",
                "userSMIMECertificate",
                frank_self,
            ),
        ],
    );
    let folder = t.join("http-certs");
    std::fs::create_dir_all(&folder).unwrap();
    let gina = leaf(&pki, "gina@partner.test", false, false, false);
    let gina_pem = pem::encode(&pem::Pem::new("CERTIFICATE", gina.clone()));
    std::fs::write(folder.join("gina@partner.test.pem"), &gina_pem).unwrap();
    let (_http, http_port) = http_directory(t, &tls, &folder);
    let data = init_vault(t);

    // LDAPS first (alice), then plain LDAP (the rest), then HTTPS.
    let settings = t.join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "[docking]\ntrust_anchors = \"{ca}\"\n\n\
             [[directory.ldap]]\nurl = \"ldaps://127.0.0.1:{tls_port}\"\nbase = \"dc=partner,dc=test\"\nca = \"{ca}\"\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n\n\
             [[directory.http]]\nurl = \"https://127.0.0.1:{http_port}/lookup\"\nca = \"{ca}\"\n",
            ca = ca_file.display()
        ),
    )
    .unwrap();

    let (code, v) = lookup(&data, &settings, "Alice@Partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    assert_eq!(v["address"], "alice@partner.test");
    let found = pem::parse(v["certificate"].as_str().unwrap()).unwrap();
    assert_eq!(found.contents(), &alice[..]);

    let (code, v) = lookup(&data, &settings, "bob@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    assert_eq!(
        pem::parse(v["certificate"].as_str().unwrap())
            .unwrap()
            .contents(),
        &bob[..]
    );

    let (code, v) = lookup(&data, &settings, "gina@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("http")), "{v}");
    assert_eq!(
        pem::parse(v["certificate"].as_str().unwrap())
            .unwrap()
            .contents(),
        &gina[..]
    );

    // Every bad candidate is refused, with its reason; nothing else answers: exit 1.
    for (address, why) in [
        ("carol@partner.test", "not valid now"),
        ("dave@partner.test", "does not name dave@partner.test"),
        ("erin@partner.test", "CA certificate"),
        ("frank@partner.test", "no path to a trust anchor"),
    ] {
        let (code, v) = lookup(&data, &settings, address);
        assert_eq!(code, 1, "{address}: {v}");
        assert_eq!(v["source"], "none", "{v}");
        assert!(v["certificate"].is_null(), "{v}");
        let r = reasons(&v);
        assert!(r.contains(why), "{address}: {r}");
    }
    let (code, v) = lookup(&data, &settings, "nobody@partner.test");
    assert_eq!((code, v["source"].as_str()), (1, Some("none")), "{v}");

    // Without the partner CA as a trust anchor, the same answers are refused.
    let untrusting = t.join("untrusting.toml");
    std::fs::write(
        &untrusting,
        format!(
            "[[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n"
        ),
    )
    .unwrap();
    let (code, v) = lookup(&data, &untrusting, "alice@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("trust anchor"), "{v}");

    // Blocked by an administrator: refused whatever its chain.
    let blocked = t.join("blocked.toml");
    let fp = sealgate_directory_fingerprint(&alice);
    std::fs::write(
        &blocked,
        format!(
            "[docking]\ntrust_anchors = \"{ca}\"\n[directory]\nblocked = [\"{fp}\"]\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n",
            ca = ca_file.display()
        ),
    )
    .unwrap();
    let (code, v) = lookup(&data, &blocked, "alice@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("blocked"), "{v}");

    // Every lookup without a daemon is audited in the vault's chain.
    let audit = String::from_utf8(ok(&["vault", "audit", "--data-dir", &data, SW])).unwrap();
    assert!(audit.contains("directory.lookup"), "{audit}");
    assert!(audit.contains("gina@partner.test"), "{audit}");
}

/// SHA-256 hex of `der` (openssl's fingerprint, lowercase, no colons).
fn sealgate_directory_fingerprint(der: &[u8]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.der"), der).unwrap();
    let out = openssl_ok(
        tmp.path(),
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "c.der",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    String::from_utf8(out)
        .unwrap()
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

#[test]
fn a_hanging_source_and_a_dead_ldap_server_cannot_hold_a_lookup() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = init_vault(t);
    // A server that accepts and never answers (TLS handshake or LDAP: it says nothing).
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in hang.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let down = free_port();
    let settings = t.join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "[directory]\ndeadline_ms = 1500\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{down}\"\nbase = \"dc=partner,dc=test\"\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{hang_port}\"\nbase = \"dc=partner,dc=test\"\n\n\
             [[directory.http]]\nurl = \"https://127.0.0.1:{hang_port}/lookup\"\n"
        ),
    )
    .unwrap();
    let start = Instant::now();
    let (code, v) = lookup(&data, &settings, "alice@partner.test");
    let took = start.elapsed();
    assert_eq!(code, 1, "{v}");
    // The deadline (1.5 s) plus the process's own start and vault opening.
    assert!(
        took < Duration::from_secs(6),
        "the lookup took {took:?}: {v}"
    );
    let r = reasons(&v);
    assert!(r.contains(&format!("127.0.0.1:{down}")), "{r}");
    assert!(r.contains("deadline"), "{r}");
    drop(held);
}

#[test]
fn revoked_certificates_are_refused_by_their_crl_and_hard_fail_refuses_an_unreachable_one() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let ca_file = t.join("partner-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tls = server_tls(&pki, t);
    let crls = t.join("crls");
    std::fs::create_dir_all(&crls).unwrap();
    std::fs::write(crls.join("ca.crl"), crl(&pki, &[1001])).unwrap();
    let (_files, files_port) = http_files(&crls);
    let url = format!("http://127.0.0.1:{files_port}/ca.crl");
    let dead = format!("http://127.0.0.1:{}/ca.crl", free_port());
    let (_ldap, port, _) = slapd(
        t,
        &tls,
        &[
            (
                "hank",
                "hank@partner.test",
                "userCertificate;binary",
                leaf_with_crl(&pki, "hank@partner.test", 1001, &url),
            ),
            (
                "ivy",
                "ivy@partner.test",
                "userCertificate;binary",
                leaf_with_crl(&pki, "ivy@partner.test", 1002, &url),
            ),
            (
                "jay",
                "jay@partner.test",
                "userCertificate;binary",
                leaf_with_crl(&pki, "jay@partner.test", 1003, &dead),
            ),
        ],
    );
    let data = init_vault(t);
    let settings = |name: &str, revocation: &str| {
        let p = t.join(name);
        std::fs::write(
            &p,
            format!(
                "[docking]\ntrust_anchors = \"{ca}\"\n[directory]\nrevocation = \"{revocation}\"\n\n\
                 [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n",
                ca = ca_file.display()
            ),
        )
        .unwrap();
        p
    };
    let soft = settings("soft.toml", "soft-fail");
    let hard = settings("hard.toml", "hard-fail");

    let (code, v) = lookup(&data, &soft, "hank@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("revoked"), "{v}");
    let (code, v) = lookup(&data, &soft, "ivy@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    // The CRL cannot be fetched: soft-fail uses the certificate, hard-fail refuses it.
    let (code, v) = lookup(&data, &soft, "jay@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    let (code, v) = lookup(&data, &hard, "jay@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("hard-fail"), "{v}");
    let (code, v) = lookup(&data, &hard, "ivy@partner.test");
    assert_eq!(code, 0, "{v}");
}

#[test]
fn exported_ldif_loads_into_slapd_and_is_found_there_and_smimea_names_follow_rfc_8162() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = init_vault(t);
    ok(&[
        "ca",
        "init",
        "--data-dir",
        &data,
        "--name",
        "Box Test Root CA",
        "--domain",
        "box.test",
        SW,
    ]);
    ok(&["ca", "issue", "--data-dir", &data, "alice@box.test", SW]);
    let ldif = String::from_utf8(ok(&[
        "directory",
        "export",
        "--format",
        "ldif",
        "--base",
        "dc=partner,dc=test",
        "--data-dir",
        &data,
        SW,
    ]))
    .unwrap();
    assert!(
        ldif.contains("dn: mail=alice@box.test,dc=partner,dc=test"),
        "{ldif}"
    );
    assert!(!ldif.contains("PRIVATE"), "{ldif}");
    let zone = String::from_utf8(ok(&[
        "directory",
        "export",
        "--format",
        "smimea",
        "--data-dir",
        &data,
        SW,
    ]))
    .unwrap();
    assert!(
        zone.contains("._smimecert.box.test. 3600 IN SMIMEA 3 0 0 30"),
        "{zone}"
    );

    // A partner loads our LDIF into its LDAP server; a directory that trusts our CA finds alice
    // there (order: LDAP only, so the vault does not answer first).
    let pki = pki();
    let tls = server_tls(&pki, t);
    let (_ldap, port, _) = slapd(t, &tls, &[]);
    ldapadd(port, &ldif);
    let settings = t.join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "[directory]\norder = [\"ldap\"]\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n"
        ),
    )
    .unwrap();
    let (code, v) = lookup(&data, &settings, "alice@box.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
}

#[test]
fn starttls_and_a_bind_with_a_password_file_work_and_a_wrong_password_is_a_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let ca_file = t.join("partner-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tls = server_tls(&pki, t);
    let kim = leaf(&pki, "kim@partner.test", false, false, false);
    let (_ldap, port, _) = slapd(
        t,
        &tls,
        &[("kim", "kim@partner.test", "userSMIMECertificate", kim)],
    );
    let data = init_vault(t);
    let settings = |name: &str, password: &str| {
        let pw = t.join(format!("{name}.pw"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let p = t.join(name);
        std::fs::write(
            &p,
            format!(
                "[docking]\ntrust_anchors = \"{ca}\"\n\n\
                 [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n\
                 starttls = true\nca = \"{ca}\"\nfilter = \"(&(objectClass=inetOrgPerson)(mail={{address}}))\"\n\
                 bind_dn = \"cn=admin,dc=partner,dc=test\"\nbind_password_file = \"{pw}\"\n",
                ca = ca_file.display(),
                pw = pw.display()
            ),
        )
        .unwrap();
        p
    };
    let good = settings("good.toml", "secret");
    let (code, v) = lookup(&data, &good, "kim@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    let bad = settings("bad.toml", "wrong");
    let (code, v) = lookup(&data, &bad, "kim@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("bind refused"), "{v}");
    // StartTLS against a server whose certificate the configured CA did not issue: refused.
    let other = pki_other_ca(t);
    let p = t.join("other-ca.toml");
    std::fs::write(
        &p,
        format!(
            "[docking]\ntrust_anchors = \"{ca}\"\n\n\
             [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{port}\"\nbase = \"dc=partner,dc=test\"\n\
             starttls = true\nca = \"{other}\"\n",
            ca = ca_file.display(),
            other = other.display()
        ),
    )
    .unwrap();
    let (code, v) = lookup(&data, &p, "kim@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("cannot connect"), "{v}");
}

/// Another CA's certificate (PEM file): trusting it must not trust the partner's server.
fn pki_other_ca(dir: &Path) -> std::path::PathBuf {
    let other = pki();
    let p = dir.join("other-ca.pem");
    std::fs::write(&p, &other.ca_pem).unwrap();
    p
}

/// SMIMEA (RFC 8162) through a validating resolver: Knot DNS signs `partner.example` (keys
/// made now) and serves `unsigned.example` unsigned; unbound validates with the signed zone's
/// DS as its only trust anchor. The attacker forges DNS: an unsigned answer, an answer from a
/// server that is not the zone's signer (bogus), a non-validating resolver, oversized answers.
#[test]
fn smimea_is_used_only_when_dnssec_validated_and_forged_answers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let other = peers::pki(); // a CA the box does not trust
    let dana = leaf(&other, "dana@partner.example", false, false, false);
    let erin = leaf(&other, "erin@partner.example", false, false, false);
    let old = leaf(&other, "olga@partner.example", true, false, false);
    let wrong = leaf(&other, "somebody@partner.example", false, false, false);
    let fred = leaf(&other, "fred@unsigned.example", false, false, false);
    let mallory = leaf(&other, "dana@partner.example", false, false, false);
    let junk: Vec<String> = (0..24)
        .map(|i| {
            let name = sealgate_directory::publish::smimea_name("gus@partner.example").unwrap();
            let owner = name.strip_suffix(".partner.example.").unwrap().to_string();
            format!("{owner} SMIMEA 3 0 0 {}", format!("{i:02x}").repeat(300))
        })
        .collect();
    let mut partner = vec![
        dns::smimea_line("dana@partner.example", "partner.example", 3, &dana),
        // PKIX-EE: the certificate must also chain to an anchor of the box; this one cannot.
        dns::smimea_line("erin@partner.example", "partner.example", 1, &erin),
        dns::smimea_line("olga@partner.example", "partner.example", 3, &old),
        dns::smimea_line("walt@partner.example", "partner.example", 3, &wrong),
    ];
    partner.extend(junk);
    let auth = t.join("knot");
    let (_knot, knot_port) = dns::knot(
        &auth,
        &[
            dns::Zone {
                name: "partner.example",
                signed: true,
                records: partner,
            },
            dns::Zone {
                name: "unsigned.example",
                signed: false,
                records: vec![dns::smimea_line(
                    "fred@unsigned.example",
                    "unsigned.example",
                    3,
                    &fred,
                )],
            },
        ],
    );
    let ds = dns::ds(&auth, "partner.example");
    let (_unbound, resolver) = dns::unbound(
        &t.join("unbound"),
        std::slice::from_ref(&ds),
        &["partner.example", "unsigned.example"],
        knot_port,
    );
    // The attacker's server for partner.example: the same names, their own certificate, no
    // signatures (a spoofed or hijacked authoritative answer); a resolver that holds the
    // zone's trust anchor but reaches this server.
    let rogue = t.join("rogue");
    let (_rogue, rogue_port) = dns::knot(
        &rogue,
        &[dns::Zone {
            name: "partner.example",
            signed: false,
            records: vec![dns::smimea_line(
                "dana@partner.example",
                "partner.example",
                3,
                &mallory,
            )],
        }],
    );
    let (_fooled, fooled) = dns::unbound(
        &t.join("unbound-rogue"),
        &[ds],
        &["partner.example"],
        rogue_port,
    );

    let data = init_vault(t);
    let ca_file = t.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let settings = |name: &str, resolver: u16| {
        let p = t.join(name);
        std::fs::write(
            &p,
            format!(
                "[docking]\ntrust_anchors = \"{}\"\n[directory]\nsmimea_resolver = \"127.0.0.1:{resolver}\"\ndeadline_ms = 5000\n",
                ca_file.display()
            ),
        )
        .unwrap();
        p
    };
    let good = settings("good.toml", resolver);
    let (code, v) = lookup(&data, &good, "dana@partner.example");
    assert_eq!((code, v["source"].as_str()), (0, Some("smimea")), "{v}");
    let pem = v["certificate"].as_str().unwrap();
    assert_eq!(
        pem::parse(pem).unwrap().contents(),
        &dana[..],
        "the published certificate"
    );
    // PKIX-EE without a path to an anchor, expired, another address: refused with the reason.
    let (code, v) = lookup(&data, &good, "erin@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("smimea"), "{v}");
    let (code, v) = lookup(&data, &good, "olga@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(
        reasons(&v).contains("not valid now") || reasons(&v).contains("expired"),
        "{v}"
    );
    let (code, v) = lookup(&data, &good, "walt@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(
        reasons(&v).contains("does not name walt@partner.example"),
        "{v}"
    );
    // Unsigned zone: no AD bit, not trusted.
    let (code, v) = lookup(&data, &good, "fred@unsigned.example");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("not DNSSEC-validated"), "{v}");
    // Oversized: 24 records of 300 bytes (truncated over UDP, read over TCP), none a
    // certificate: refused, bounded.
    let (code, v) = lookup(&data, &good, "gus@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("unreadable"), "{v}");
    // Nothing published: none, no error.
    let (code, v) = lookup(&data, &good, "nobody@partner.example");
    assert_eq!(code, 1, "{v}");

    // The forged zone: the validating resolver calls it bogus (SERVFAIL); never the
    // attacker's certificate.
    let forged = settings("forged.toml", fooled);
    let (code, v) = lookup(&data, &forged, "dana@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("SERVFAIL"), "{v}");
    // Asking the authoritative server directly: it does not validate, so no AD bit.
    let direct = settings("direct.toml", knot_port);
    let (code, v) = lookup(&data, &direct, "dana@partner.example");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("not DNSSEC-validated"), "{v}");
    // A resolver across a network is refused by the settings (the AD bit could be forged).
    let remote = t.join("remote.toml");
    std::fs::write(
        &remote,
        "[directory]\nsmimea_resolver = \"192.0.2.53:53\"\n",
    )
    .unwrap();
    let (code, v) = {
        let out = sealctl(&[
            "directory",
            "lookup",
            "dana@partner.example",
            "--data-dir",
            &data,
            "--settings",
            remote.to_str().unwrap(),
            SW,
        ]);
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert_ne!(code, 0);
    assert!(v.contains("loopback"), "{v}");
}

/// `sealctl directory` without a daemon: the harvested source (a file the inbound MX
/// writes; here written with the same code), forgetting one, the block list and pinning,
/// each audited in the vault's chain.
#[test]
fn harvested_certificates_are_a_source_and_blocks_pins_and_forgets_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let other = peers::pki();
    let ca_file = t.join("partner-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let settings = t.join("settings.toml");
    std::fs::write(
        &settings,
        format!("[docking]\ntrust_anchors = \"{}\"\n", ca_file.display()),
    )
    .unwrap();
    let data = init_vault(t);
    let kim = leaf(&pki, "kim@partner.test", false, false, false);
    let lou = leaf(&other, "lou@partner.test", false, false, false);
    let now = sealgate_directory::unix_now();
    let mut list = Vec::new();
    for (a, der) in [("kim@partner.test", &kim), ("lou@partner.test", &lou)] {
        let c = sealgate_smime::cert::Certificate::from_der(der).unwrap();
        let added = sealgate_directory::harvested::add(
            &mut list,
            a,
            &c,
            &["aes256-cbc".into()],
            "smtp-inbound 192.0.2.7",
            now,
        );
        assert_eq!(added, sealgate_directory::harvested::Added::Stored);
    }
    sealgate_directory::harvested::save(Path::new(&data), &list).unwrap();

    let (code, v) = lookup(&data, &settings, "kim@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("harvested")), "{v}");
    // Harvested from a signature, yet no path to an anchor now: refused.
    let (code, v) = lookup(&data, &settings, "lou@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("harvested"), "{v}");
    let listed: serde_json::Value =
        serde_json::from_slice(&ok(&["directory", "harvested", "--data-dir", &data, SW])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[0]["capabilities"][0], "aes256-cbc");

    // Block kim's certificate: never used; unblock: used again.
    let fp = sealgate_directory_fingerprint(&kim);
    ok(&[
        "directory",
        "block",
        &fp,
        "--reason",
        "key lost",
        "--data-dir",
        &data,
        SW,
    ]);
    let blocked: serde_json::Value =
        serde_json::from_slice(&ok(&["directory", "blocked", "--data-dir", &data, SW])).unwrap();
    assert_eq!(blocked[0]["sha256"], fp.as_str(), "{blocked}");
    assert_eq!(blocked[0]["reason"], "key lost");
    let (code, v) = lookup(&data, &settings, "kim@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("blocked"), "{v}");
    ok(&["directory", "unblock", &fp, "--data-dir", &data, SW]);
    assert_eq!(lookup(&data, &settings, "kim@partner.test").0, 0);
    assert!(
        fails(&[
            "directory",
            "block",
            "not-a-fingerprint",
            "--data-dir",
            &data,
            SW
        ])
        .contains("SHA-256")
    );
    assert!(fails(&["directory", "unblock", &fp, "--data-dir", &data, SW]).contains("not blocked"));

    // Forget it: gone from the source.
    ok(&["directory", "forget", &fp, "--data-dir", &data, SW]);
    assert_eq!(lookup(&data, &settings, "kim@partner.test").0, 1);
    assert!(
        fails(&["directory", "forget", &fp, "--data-dir", &data, SW]).contains("not harvested")
    );

    // Import (pin) lou's certificate: used without a path to an anchor.
    let lou_file = t.join("lou.der");
    std::fs::write(&lou_file, &lou).unwrap();
    ok(&[
        "directory",
        "import",
        lou_file.to_str().unwrap(),
        "--data-dir",
        &data,
        SW,
    ]);
    let (code, v) = lookup(&data, &settings, "lou@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("pinned")), "{v}");
    let pinned: serde_json::Value =
        serde_json::from_slice(&ok(&["directory", "pinned", "--data-dir", &data, SW])).unwrap();
    assert_eq!(pinned.as_array().unwrap().len(), 1, "{pinned}");
    // An expired certificate is not imported; nothing half-stored.
    let old_file = t.join("old.der");
    std::fs::write(
        &old_file,
        leaf(&pki, "old@partner.test", true, false, false),
    )
    .unwrap();
    assert!(
        fails(&[
            "directory",
            "import",
            old_file.to_str().unwrap(),
            "--data-dir",
            &data,
            SW
        ])
        .contains("nothing was stored")
    );

    // Audited in the vault's chain.
    let audit = String::from_utf8(ok(&["vault", "audit", "--data-dir", &data, SW])).unwrap();
    for action in [
        "directory.block",
        "directory.unblock",
        "directory.forget-harvested",
        "cert.add-recipient",
    ] {
        assert!(audit.contains(action), "{action} audited: {audit}");
    }
}

/// OCSP against `openssl ocsp` as the issuer's responder (started here, answering from an
/// `openssl ca` index): good, revoked, and the attacker's answers: one signed by another key
/// (a forged "good"), a responder that is down (soft-fail uses, hard-fail refuses).
#[test]
fn ocsp_answers_decide_revocation_and_forged_answers_prove_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pki = pki();
    let mallory = peers::pki();
    let ca_file = t.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_key = t.join("ca.key");
    std::fs::write(&ca_key, &pki.ca_key_pem).unwrap();
    let evil = t.join("evil.pem");
    std::fs::write(&evil, &mallory.ca_pem).unwrap();
    let evil_key = t.join("evil.key");
    std::fs::write(&evil_key, &mallory.ca_key_pem).unwrap();
    let index = t.join("index.txt");
    std::fs::write(
        &index,
        "V\t351231235959Z\t\t07D1\tunknown\t/CN=good@partner.test\n\
         R\t351231235959Z\t250101000000Z\t07D2\tunknown\t/CN=gone@partner.test\n\
         V\t351231235959Z\t\t07D3\tunknown\t/CN=fake@partner.test\n\
         R\t351231235959Z\t250101000000Z\t07D5\tunknown\t/CN=lost@partner.test\n",
    )
    .unwrap();
    let (_ok, port) = peers::ocsp_responder(t, &ca_file, &index, &ca_file, &ca_key);
    let (_forger, forged_port) = peers::ocsp_responder(t, &ca_file, &index, &evil, &evil_key);
    // A delegated responder: its own key, a certificate the CA issued for OCSPSigning.
    let (signer, signer_key) = peers::ocsp_signer(&pki, t, "responder");
    let (_delegated, delegated_port) =
        peers::ocsp_responder(t, &ca_file, &index, &signer, &signer_key);
    let dead_port = free_port();
    let url = |p: u16| format!("http://127.0.0.1:{p}/");
    let good = peers::leaf_with_ocsp(&pki, "good@partner.test", 2001, &url(port));
    let gone = peers::leaf_with_ocsp(&pki, "gone@partner.test", 2002, &url(port));
    let fake = peers::leaf_with_ocsp(&pki, "fake@partner.test", 2003, &url(forged_port));
    let dark = peers::leaf_with_ocsp(&pki, "dark@partner.test", 2004, &url(dead_port));
    let lost = peers::leaf_with_ocsp(&pki, "lost@partner.test", 2005, &url(delegated_port));
    let tls = server_tls(&pki, t);
    let (_ldap, ldap_port, _) = slapd(
        t,
        &tls,
        &[
            ("good", "good@partner.test", "userCertificate;binary", good),
            ("gone", "gone@partner.test", "userCertificate;binary", gone),
            ("fake", "fake@partner.test", "userCertificate;binary", fake),
            ("dark", "dark@partner.test", "userCertificate;binary", dark),
            ("lost", "lost@partner.test", "userCertificate;binary", lost),
        ],
    );
    let data = init_vault(t);
    let settings = |name: &str, revocation: &str| {
        let p = t.join(name);
        std::fs::write(
            &p,
            format!(
                "[docking]\ntrust_anchors = \"{ca}\"\n[directory]\nrevocation = \"{revocation}\"\n\n\
                 [[directory.ldap]]\nurl = \"ldap://127.0.0.1:{ldap_port}\"\nbase = \"dc=partner,dc=test\"\n",
                ca = ca_file.display()
            ),
        )
        .unwrap();
        p
    };
    let soft = settings("soft.toml", "soft-fail");
    let hard = settings("hard.toml", "hard-fail");
    let (code, v) = lookup(&data, &hard, "good@partner.test");
    assert_eq!((code, v["source"].as_str()), (0, Some("ldap")), "{v}");
    let (code, v) = lookup(&data, &soft, "gone@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("revoked"), "{v}");
    // A "good" signed by a key that is not the issuer's: no answer; hard-fail refuses.
    let (code, v) = lookup(&data, &hard, "fake@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("not signed by the issuer"), "{v}");
    let (code, v) = lookup(&data, &soft, "fake@partner.test");
    assert_eq!(code, 0, "{v}");
    // The responder is down: soft-fail uses the certificate, hard-fail refuses it.
    let (code, v) = lookup(&data, &soft, "dark@partner.test");
    assert_eq!(code, 0, "{v}");
    let (code, v) = lookup(&data, &hard, "dark@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("hard-fail"), "{v}");
    // The delegated responder's "revoked" is believed (its certificate chains to the issuer
    // with OCSPSigning).
    let (code, v) = lookup(&data, &soft, "lost@partner.test");
    assert_eq!(code, 1, "{v}");
    assert!(reasons(&v).contains("revoked"), "{v}");
}
