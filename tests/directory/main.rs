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

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Kills a peer on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Pki {
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

fn pki() -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Partner Test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&key).unwrap().pem();
    Pki {
        ca: Issuer::new(p, key),
        ca_pem,
    }
}

/// A recipient certificate (DER) for `email`, signed by the CA unless `self_signed`.
fn leaf(pki: &Pki, email: &str, expired: bool, self_signed: bool, ca: bool) -> Vec<u8> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, email);
    p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    } else {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    }
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let c = if self_signed {
        p.self_signed(&key).unwrap()
    } else {
        p.signed_by(&key, &pki.ca).unwrap()
    };
    c.der().to_vec()
}

/// The TLS server certificate and key for 127.0.0.1 (files in `dir`).
fn server_tls(pki: &Pki, dir: &Path) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &pki.ca).unwrap();
    let (c, k) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn b64(d: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// slapd in `dir` on (ldap port, ldaps port) with `entries` (cn, mail, attribute, DER).
fn slapd(
    dir: &Path,
    tls: &(PathBuf, PathBuf),
    entries: &[(&str, &str, &str, Vec<u8>)],
) -> (Peer, u16, u16) {
    let slapd = Path::new("/usr/sbin/slapd");
    assert!(
        slapd.exists(),
        "/usr/sbin/slapd is missing: install the Debian packages `slapd` and `ldap-utils`"
    );
    let db = dir.join("ldap-db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {pid}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"dc=partner,dc=test\"\n\
             rootdn \"cn=admin,dc=partner,dc=test\"\n\
             rootpw secret\n\
             directory {db}\n",
            pid = dir.join("slapd.pid").display(),
            cert = tls.0.display(),
            key = tls.1.display(),
            db = db.display(),
        ),
    )
    .unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let child = Command::new(slapd)
        .args([
            "-f",
            conf.to_str().unwrap(),
            "-h",
            &format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"),
            "-d",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run slapd ({e}): install the Debian package `slapd`"));
    let peer = Peer(child);
    wait_for_port(port, "slapd");
    let mut ldif = String::from(
        "dn: dc=partner,dc=test\nobjectClass: dcObject\nobjectClass: organization\no: Partner\ndc: partner\n\n",
    );
    for (cn, mail, attr, der) in entries {
        ldif.push_str(&format!(
            "dn: cn={cn},dc=partner,dc=test\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: {cn}\nmail: {mail}\n{attr}:: {}\n\n",
            b64(der)
        ));
    }
    let mut add = Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
            "-D",
            "cn=admin,dc=partner,dc=test",
            "-w",
            "secret",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run ldapadd ({e}): install the Debian package `ldap-utils`")
        });
    add.stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ldapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (peer, port, tls_port)
}

const HTTP_SERVER: &str = r#"
import http.server, ssl, sys, os, urllib.parse
cert, key, folder = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        a = q.get("address", [""])[0]
        p = os.path.join(folder, a + ".pem")
        if u.path != "/lookup" or "/" in a or not os.path.exists(p):
            self.send_response(404); self.end_headers(); return
        body = open(p, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/pem-certificate-chain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The HTTPS directory serving `folder/ADDRESS.pem`; its port.
fn http_directory(dir: &Path, tls: &(PathBuf, PathBuf), folder: &Path) -> (Peer, u16) {
    let script = dir.join("directory.py");
    std::fs::write(&script, HTTP_SERVER).unwrap();
    let mut child = Command::new("python3")
        .args([
            script.to_str().unwrap(),
            tls.0.to_str().unwrap(),
            tls.1.to_str().unwrap(),
            folder.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install the Debian package `python3`")
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the HTTPS directory's port");
    (Peer(child), port)
}

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
