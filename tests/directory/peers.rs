//! Peers for the certificate directory's tests (shared by `tests/directory` and the docking
//! tests): a partner PKI made with rcgen, OpenLDAP `slapd` with a small tree, and an HTTPS
//! certificate directory (Python's http.server over TLS). A missing peer fails the test with
//! the Debian package named.

#![allow(dead_code, clippy::panic, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Kills a peer on drop.
pub struct Peer(Child);

impl Peer {
    pub fn new(child: Child) -> Peer {
        Peer(child)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Pki {
    pub ca: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    pub ca_key_pem: String,
}

pub fn pki() -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Partner Test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&key).unwrap().pem();
    let ca_key_pem = key.serialize_pem();
    Pki {
        ca: Issuer::new(p, key),
        ca_pem,
        ca_key_pem,
    }
}

/// A recipient certificate (DER) for `email`, signed by the CA unless `self_signed`.
pub fn leaf(pki: &Pki, email: &str, expired: bool, self_signed: bool, ca: bool) -> Vec<u8> {
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
pub fn server_tls(pki: &Pki, dir: &Path) -> (PathBuf, PathBuf) {
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

#[allow(unused_imports)]
pub use crate::ports::free_port;

pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn b64(d: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// slapd in `dir` on (ldap port, ldaps port) with `entries` (cn, mail, attribute, DER).
pub fn slapd(
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
    let [port, tls_port] = crate::ports::free_ports();
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
    ldapadd(port, &ldif);
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
pub fn http_directory(dir: &Path, tls: &(PathBuf, PathBuf), folder: &Path) -> (Peer, u16) {
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

/// A recipient certificate (DER) for `email` with serial `serial` whose CRL is at `crl_url`.
pub fn leaf_with_crl(pki: &Pki, email: &str, serial: u64, crl_url: &str) -> Vec<u8> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, email);
    p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    p.serial_number = Some(rcgen::SerialNumber::from(serial));
    p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![crl_url.to_string()],
    }];
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &pki.ca).unwrap().der().to_vec()
}

/// The CA's CRL (DER) revoking `serials`.
pub fn crl(pki: &Pki, serials: &[u64]) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: now - time::Duration::hours(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&pki.ca)
    .unwrap()
    .der()
    .to_vec()
}

/// A plain HTTP server (Python's) serving `folder` on a free port: the CRL distribution point.
pub fn http_files(folder: &Path) -> (Peer, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(folder)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install the Debian package `python3`")
        });
    let peer = Peer(child);
    wait_for_port(port, "python3 -m http.server");
    (peer, port)
}

/// Adds `ldif` to the slapd on `port` (as its root DN).
pub fn ldapadd(port: u16, ldif: &str) {
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
}

/// A recipient certificate (DER) for `email` with serial `serial` whose issuer's OCSP
/// responder is `ocsp_url` (Authority Information Access).
pub fn leaf_with_ocsp(pki: &Pki, email: &str, serial: u64, ocsp_url: &str) -> Vec<u8> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, email);
    p.subject_alt_names = vec![SanType::Rfc822Name(email.try_into().unwrap())];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
    p.serial_number = Some(rcgen::SerialNumber::from(serial));
    // AuthorityInfoAccess ::= SEQUENCE OF SEQUENCE { id-ad-ocsp, [6] URI }
    let oid = [0x06, 8, 0x2b, 6, 1, 5, 5, 7, 0x30, 1];
    let mut uri = vec![0x86, ocsp_url.len() as u8];
    uri.extend_from_slice(ocsp_url.as_bytes());
    let mut ad = vec![0x30, (oid.len() + uri.len()) as u8];
    ad.extend_from_slice(&oid);
    ad.extend_from_slice(&uri);
    let mut aia = vec![0x30, ad.len() as u8];
    aia.extend_from_slice(&ad);
    p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        aia,
    )];
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &pki.ca).unwrap().der().to_vec()
}

/// `openssl ocsp` as a responder on a free port for the CA `ca` (PEM file), answering from
/// `index` (an `openssl ca` index file), signing with `signer`/`key` (PEM files).
pub fn ocsp_responder(
    dir: &Path,
    ca: &Path,
    index: &Path,
    signer: &Path,
    key: &Path,
) -> (Peer, u16) {
    let port = free_port();
    let child = Command::new("openssl")
        .args(["ocsp", "-port", &port.to_string(), "-index"])
        .arg(index)
        .arg("-CA")
        .arg(ca)
        .arg("-rsigner")
        .arg(signer)
        .arg("-rkey")
        .arg(key)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install the Debian package `openssl`")
        });
    // Not probed with a connection: `openssl ocsp` serves one connection at a time and
    // waits for a request on an empty one. It says ACCEPT once it listens.
    let mut child = child;
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("ACCEPT"), "openssl ocsp: {line}");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (Peer(child), port)
}

/// A delegated OCSP responder's certificate and key (PEM files `NAME.pem`, `NAME.key` in
/// `dir`), issued by the CA for `OCSPSigning` only.
pub fn ocsp_signer(pki: &Pki, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "Partner OCSP responder");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &pki.ca).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}
