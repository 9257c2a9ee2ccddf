//! Shared code of the interop tests: running `sealctl` and its peers, the test PKI,
//! and small MIME helpers. Included by each interop test binary with `mod support;`.
//!
//! A peer that is missing makes a test fail with the Debian package to install: these
//! tests never skip themselves (CI must prove interop, not silently pass without it).

#![allow(dead_code, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------
// Running programs

/// What a finished program left behind.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// The command line, for failure messages.
    pub what: String,
}

impl Out {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with the whole story unless the program exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        if self.code != 0 {
            panic!(
                "`{}` exited {}\n--- stderr ---\n{}\n--- stdout (first 2000 bytes) ---\n{}",
                self.what,
                self.code,
                self.stderr,
                String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)])
            );
        }
        self
    }

    /// A failure the way the CLI contract wants it: exit code 1 or 2 (never 101, a
    /// panic), exactly one non-empty line on stderr, no panic message.
    #[track_caller]
    pub fn clean_failure(self) -> Self {
        assert!(
            self.code == 1 || self.code == 2,
            "`{}` should fail with exit code 1 or 2, got {} (101 = panic)\nstderr: {}",
            self.what,
            self.code,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "`{}` panicked: {}",
            self.what,
            self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}` should print exactly one line on stderr, got: {:?}",
            self.what,
            self.stderr
        );
        self
    }

    /// The JSON document on stdout.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` should print JSON on stdout ({e}); got: {}\nstderr: {}",
                self.what,
                self.stdout_str(),
                self.stderr
            )
        })
    }
}

/// Runs `cmd` to completion, feeding `stdin` (or nothing) and collecting its output.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Out {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        // A writer thread: a child that fills its stdout pipe before reading all of its
        // stdin would otherwise deadlock with us. A child that exits early closes the
        // pipe; that broken pipe is its business, not ours.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        what,
    }
}

/// The `sealctl` binary under test.
pub fn sealctl_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sealctl"))
}

/// Runs `sealctl ARGS...` with `stdin`.
pub fn sealctl<I, S>(args: I, stdin: Option<&[u8]>) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = sealctl_cmd();
    cmd.args(args);
    let mut out = run(&mut cmd, stdin);
    out.what = out
        .what
        .replacen(env!("CARGO_BIN_EXE_sealctl"), "sealctl", 1);
    out
}

/// Finds `program` on PATH, or fails the test naming the Debian package to install.
#[track_caller]
pub fn require_tool(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed: this interop test needs the Debian package \
         `{debian_package}` (apt-get install -y {debian_package}; `cargo xtask test` installs it)"
    );
}

/// `openssl`, after checking once that it is OpenSSL 3.x (the version these tests know).
pub fn openssl() -> Command {
    static CHECKED: OnceLock<()> = OnceLock::new();
    let path = require_tool("openssl", "openssl");
    CHECKED.get_or_init(|| {
        let out = run(Command::new(&path).arg("version"), None).ok();
        let v = out.stdout_str();
        assert!(
            v.starts_with("OpenSSL 3."),
            "these tests know OpenSSL 3.x; found: {v}"
        );
    });
    Command::new(path)
}

/// Runs `openssl ARGS...` and requires success.
#[track_caller]
pub fn openssl_ok<I, S>(args: I, stdin: Option<&[u8]>) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = openssl();
    cmd.args(args);
    run(&mut cmd, stdin).ok()
}

/// A fresh temporary directory under cargo's per-target tmp dir.
pub fn tempdir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix("interop-")
        .tempdir_in(base)
        .unwrap()
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A path as an argument string.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// JSON verdicts: the tests look for words, not for one exact schema, so the engine's JSON
// may grow without breaking them.

/// The JSON document as lowercase text.
pub fn json_text(v: &serde_json::Value) -> String {
    v.to_string().to_lowercase()
}

/// Panics unless the JSON mentions one of `words` (case-insensitive).
#[track_caller]
pub fn assert_mentions(v: &serde_json::Value, words: &[&str], why: &str) {
    let text = json_text(v);
    assert!(
        words.iter().any(|w| text.contains(&w.to_lowercase())),
        "{why}: the JSON verdict should mention one of {words:?}; got {v:#}"
    );
}

// ---------------------------------------------------------------------------------------
// MIME helpers

/// The body every test message carries: several lines, a long one, non-ASCII in UTF-8,
/// a line starting with "From " and trailing spaces (things that break naive handling).
pub const BODY: &str = "Hello Bob,\r\n\r\nthe quarterly numbers are attached in spirit.\r\n\
From here on, everything is encrypted.  \r\n\
Gr\u{fc}\u{df}e, \u{e9}t\u{e9}, \u{65e5}\u{672c}\r\n\
0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n\
-- \r\nAlice\r\n";

/// A MIME entity (the part that gets encrypted or signed), CRLF line endings.
pub fn entity(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
    .into_bytes()
}

/// An RFC 5322 message around a text body.
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}@example.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
    .into_bytes()
}

/// Splits a message or entity into unfolded headers (name lowercased) and its body.
/// Accepts CRLF and LF line endings.
pub fn split_message(msg: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let (head, body) = match find(msg, b"\r\n\r\n") {
        Some(i) => (&msg[..i + 2], &msg[i + 4..]),
        None => match find(msg, b"\n\n") {
            Some(i) => (&msg[..i + 1], &msg[i + 2..]),
            None => (msg, &b""[..]),
        },
    };
    let head = String::from_utf8_lossy(head).replace("\r\n", "\n");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_lowercase(), value.trim().to_string()));
        }
    }
    (headers, body.to_vec())
}

/// The first value of header `name` (lowercase), if any.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks that a decrypted or verified entity is the one that went in: same body bytes
/// (line endings normalised to CRLF, since a peer may canonicalise) and the same
/// Content-Type.
#[track_caller]
pub fn assert_same_entity(got: &[u8], want: &[u8], what: &str) {
    let (gh, gb) = split_message(got);
    let (wh, wb) = split_message(want);
    assert_eq!(
        String::from_utf8_lossy(&crlf(&gb)),
        String::from_utf8_lossy(&crlf(&wb)),
        "{what}: body differs"
    );
    let ct = |h: &[(String, String)]| {
        header(h, "content-type").map(|v| v.to_lowercase().replace([' ', '"'], ""))
    };
    assert_eq!(
        ct(&gh),
        ct(&wh),
        "{what}: Content-Type differs (got headers {gh:?})"
    );
}

/// LF or mixed line endings to CRLF.
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// CRLF to LF (what a Unix mail store does to a message).
pub fn lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// The parts of a multipart body: each part's exact bytes (between the delimiter line's
/// CRLF and the CRLF before the next delimiter), as RFC 2046 and RFC 8551 define them.
pub fn multipart_parts(msg: &[u8]) -> Vec<Vec<u8>> {
    let (headers, body) = split_message(msg);
    let ct = header(&headers, "content-type").expect("multipart without Content-Type");
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .expect("multipart without boundary");
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    // Work on CRLF text; each delimiter is at the start of a line.
    let body = crlf(&body);
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&body[i..], delim.as_bytes()) {
        let at = i + pos;
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
        }
        i = at + delim.len();
    }
    for w in starts.windows(2) {
        let line_end = find(&body[w[0]..], b"\r\n").unwrap() + w[0] + 2;
        let end = w[1].saturating_sub(2).max(line_end);
        parts.push(body[line_end..end].to_vec());
    }
    parts
}

/// The base64 body of a message or entity, decoded.
pub fn base64_body(msg: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let (_, body) = split_message(msg);
    let text: Vec<u8> = body
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("body is not base64")
}

// ---------------------------------------------------------------------------------------
// DER surgery with `openssl asn1parse`, to tamper with exact fields.

/// One line of `openssl asn1parse` output.
#[derive(Debug, Clone)]
pub struct Asn1Item {
    pub offset: usize,
    pub header_len: usize,
    pub len: usize,
    pub depth: usize,
    pub primitive: bool,
    pub tag: String,
}

/// Parses a DER file's structure with `openssl asn1parse`.
pub fn asn1parse(der_file: &Path) -> Vec<Asn1Item> {
    let out = openssl_ok(["asn1parse", "-inform", "DER", "-in", p(der_file)], None);
    let mut items = Vec::new();
    for line in out.stdout_str().lines() {
        // "  123:d=5  hl=4 l= 256 prim: OCTET STRING      [HEX DUMP]:..."
        let Some((off, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(offset) = off.trim().parse() else {
            continue;
        };
        let field = |key: &str| -> Option<usize> {
            let i = rest.find(key)? + key.len();
            rest[i..]
                .trim_start()
                .split(' ')
                .next()?
                .trim()
                .parse()
                .ok()
        };
        // " l=" with its space: "hl=" also contains "l=".
        let (Some(depth), Some(header_len), Some(len)) = (field("d="), field("hl="), field(" l="))
        else {
            continue;
        };
        let primitive = rest.contains("prim:");
        let tag = rest
            .split_once(if primitive { "prim:" } else { "cons:" })
            .map(|(_, t)| t.split(':').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        items.push(Asn1Item {
            offset,
            header_len,
            len,
            depth,
            primitive,
            tag,
        });
    }
    items
}

// ---------------------------------------------------------------------------------------
// The test PKI, made once per test process with the openssl CLI.

/// One end-entity certificate with its key and packagings.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub name: &'static str,
    pub email: String,
    pub key: PathBuf,
    pub cert: PathBuf,
    /// Leaf then intermediate, PEM.
    pub chain: PathBuf,
    pub cert_der: PathBuf,
    pub key_der: PathBuf,
    /// OpenSSL 3 default PKCS#12 (PBES2/AES), password [`P12_PASSWORD`].
    pub p12: PathBuf,
    /// OpenSSL 3 default PKCS#12 with the empty password.
    pub p12_nopass: PathBuf,
    /// `-legacy` PKCS#12 (RC2/3DES), password [`P12_PASSWORD`].
    pub p12_legacy: PathBuf,
    /// `-legacy` PKCS#12 with the empty password.
    pub p12_legacy_nopass: PathBuf,
}

pub const P12_PASSWORD: &str = "s3cret pass";

/// The whole test PKI.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub root_der: PathBuf,
    pub intermediate: PathBuf,
    /// A second root that issued nothing we use: "unknown CA" cases.
    pub other_root: PathBuf,
    /// The intermediate's CRL, listing `revoked`, PEM.
    pub crl: PathBuf,
    /// [`P12_PASSWORD`] without a trailing newline.
    pub password_file: PathBuf,
    /// [`P12_PASSWORD`] followed by "\n", as `echo pw > file` writes it.
    pub password_file_nl: PathBuf,
    /// RSA-2048, dual use (digitalSignature, keyEncipherment), EKU emailProtection.
    pub alice: Leaf,
    /// RSA-3072.
    pub bob: Leaf,
    /// EC P-256 (digitalSignature, keyAgreement).
    pub carol: Leaf,
    /// EC P-384.
    pub dave: Leaf,
    /// Ed25519 signer (openssl 3.0 cannot make CMS signatures with it; kept for
    /// sealctl-made cases and inspection).
    pub erin: Leaf,
    /// Expired in 2021.
    pub expired: Leaf,
    /// EKU clientAuth only, no emailProtection.
    pub noeku: Leaf,
    /// keyUsage keyEncipherment only: no digitalSignature.
    pub badku: Leaf,
    /// Revoked by the intermediate's CRL.
    pub revoked: Leaf,
}

/// The test PKI, generated on first use (about a second) and kept for the process.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(make_pki)
}

fn ca_config(dir: &Path, md: &str) -> String {
    format!(
        "[ca]\ndefault_ca = ca_default\n\
         [ca_default]\ndir = {d}\ndatabase = {d}/index.txt\nnew_certs_dir = {d}/newcerts\n\
         serial = {d}/serial\ncrlnumber = {d}/crlnumber\ncertificate = {d}/ca.pem\n\
         private_key = {d}/ca.key\ndefault_md = {md}\npolicy = policy_any\n\
         unique_subject = no\ncopy_extensions = none\ndefault_days = 365\n\
         default_crl_days = 30\nrand_serial = yes\n\
         [policy_any]\ncommonName = supplied\norganizationName = optional\nemailAddress = optional\n",
        d = dir.display()
    )
}

/// `md`: the CA's signature hash. gpgsm refuses a hash shorter than the curve (SHA-256
/// with P-384), so the P-384 intermediate signs with SHA-384.
fn init_ca_dir(dir: &Path, md: &str) {
    std::fs::create_dir_all(dir.join("newcerts")).unwrap();
    write(&dir.join("index.txt"), "");
    write(&dir.join("serial"), "1000\n");
    write(&dir.join("crlnumber"), "1000\n");
    write(&dir.join("ca.cnf"), ca_config(dir, md));
}

/// Issues a certificate from the CA in `ca_dir` for the key `key` with the extension
/// section text `ext`. `dates`: Some((start, end)) as YYYYMMDDHHMMSSZ, else 365 days.
fn issue(
    ca_dir: &Path,
    key: &Path,
    subject: &str,
    ext: &str,
    dates: Option<(&str, &str)>,
    out: &Path,
) {
    let work = out.with_extension("work");
    std::fs::create_dir_all(&work).unwrap();
    let csr = work.join("req.csr");
    let extfile = work.join("ext.cnf");
    write(&extfile, format!("[ext]\n{ext}"));
    let req_cnf = work.join("req.cnf");
    write(
        &req_cnf,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = placeholder\n",
    );
    openssl_ok(
        [
            "req",
            "-new",
            "-config",
            p(&req_cnf),
            "-key",
            p(key),
            "-subj",
            subject,
            "-out",
            p(&csr),
        ],
        None,
    );
    let cnf = ca_dir.join("ca.cnf");
    let mut args: Vec<String> = [
        "ca",
        "-batch",
        "-notext",
        "-config",
        p(&cnf),
        "-in",
        p(&csr),
        "-out",
        p(out),
        "-subj",
        subject,
        "-extfile",
        p(&extfile),
        "-extensions",
        "ext",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match dates {
        Some((start, end)) => args.extend([
            "-startdate".into(),
            start.into(),
            "-enddate".into(),
            end.into(),
        ]),
        None => args.extend(["-days".into(), "365".into()]),
    }
    openssl_ok(&args, None);
}

fn genkey(kind: &str, out: &Path) {
    let args: Vec<&str> = match kind {
        "rsa2048" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        "rsa3072" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
        ],
        "p256" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        "p384" => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ],
        "ed25519" => vec!["genpkey", "-algorithm", "ED25519"],
        other => panic!("unknown key kind {other}"),
    };
    let mut args: Vec<&str> = args;
    args.extend(["-out", p(out)]);
    openssl_ok(&args, None);
}

fn leaf_ext(ku: &str, eku: Option<&str>, email: &str) -> String {
    let mut s = format!(
        "basicConstraints = critical, CA:false\nkeyUsage = critical, {ku}\n\
         subjectAltName = email:{email}\nsubjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n"
    );
    if let Some(eku) = eku {
        s.push_str(&format!("extendedKeyUsage = {eku}\n"));
    }
    s
}

fn make_leaf(
    pki_dir: &Path,
    int_dir: &Path,
    name: &'static str,
    kind: &str,
    ku: &str,
    eku: Option<&str>,
    dates: Option<(&str, &str)>,
) -> Leaf {
    let dir = pki_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let email = format!("{name}@example.test");
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    genkey(kind, &key);
    issue(
        int_dir,
        &key,
        &format!("/O=Sealgate Interop/CN={name}/emailAddress={email}"),
        &leaf_ext(ku, eku, &email),
        dates,
        &cert,
    );
    let chain = dir.join("chain.pem");
    let mut chain_pem = read(&cert);
    chain_pem.extend(read(&int_dir.join("ca.pem")));
    write(&chain, chain_pem);
    let cert_der = dir.join("cert.der");
    openssl_ok(
        [
            "x509",
            "-in",
            p(&cert),
            "-outform",
            "DER",
            "-out",
            p(&cert_der),
        ],
        None,
    );
    let key_der = dir.join("key.der");
    openssl_ok(
        [
            "pkey",
            "-in",
            p(&key),
            "-outform",
            "DER",
            "-out",
            p(&key_der),
        ],
        None,
    );
    let int = int_dir.join("ca.pem");
    let p12 = |file: &str, legacy: bool, pass: &str| {
        let out = dir.join(file);
        let passout = format!("pass:{pass}");
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            p(&key),
            "-in",
            p(&cert),
            "-certfile",
            p(&int),
            "-name",
            name,
            "-passout",
            &passout,
            "-out",
            p(&out),
        ];
        if legacy {
            args.push("-legacy");
        }
        openssl_ok(&args, None);
        out
    };
    Leaf {
        name,
        email,
        p12: p12("default.p12", false, P12_PASSWORD),
        p12_nopass: p12("default-nopass.p12", false, ""),
        p12_legacy: p12("legacy.p12", true, P12_PASSWORD),
        p12_legacy_nopass: p12("legacy-nopass.p12", true, ""),
        key,
        cert,
        chain,
        cert_der,
        key_der,
    }
}

fn make_root(dir: &Path, cn: &str) {
    init_ca_dir(dir, "sha256");
    genkey("rsa3072", &dir.join("ca.key"));
    let cnf = dir.join("req.cnf");
    write(
        &cnf,
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_root\n[dn]\nCN = x\n\
         [v3_root]\nbasicConstraints = critical, CA:true\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    );
    openssl_ok(
        [
            "req",
            "-x509",
            "-new",
            "-config",
            p(&cnf),
            "-key",
            p(&dir.join("ca.key")),
            "-sha256",
            "-days",
            "3650",
            "-subj",
            cn,
            "-out",
            p(&dir.join("ca.pem")),
        ],
        None,
    );
}

fn make_pki() -> Pki {
    // Kept for the whole process: statics are never dropped, so the directory stays until
    // `cargo clean` (it lives under target/).
    let dir = tempdir().keep();
    let root_dir = dir.join("root");
    make_root(
        &root_dir,
        "/O=Sealgate Interop/CN=Sealgate Interop Test Root",
    );
    let other_dir = dir.join("other-root");
    make_root(&other_dir, "/O=Someone Else/CN=Unrelated Test Root");

    let int_dir = dir.join("intermediate");
    init_ca_dir(&int_dir, "sha384");
    genkey("p384", &int_dir.join("ca.key"));
    issue(
        &root_dir,
        &int_dir.join("ca.key"),
        "/O=Sealgate Interop/CN=Sealgate Interop Test Intermediate",
        "basicConstraints = critical, CA:true, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        None,
        &int_dir.join("ca.pem"),
    );

    let sign_enc = "digitalSignature, nonRepudiation, keyEncipherment";
    let sign_agree = "digitalSignature, nonRepudiation, keyAgreement";
    let mail = Some("emailProtection");
    let leaf = |name, kind, ku, eku, dates| make_leaf(&dir, &int_dir, name, kind, ku, eku, dates);
    let alice = leaf("alice", "rsa2048", sign_enc, mail, None);
    let bob = leaf("bob", "rsa3072", sign_enc, mail, None);
    let carol = leaf("carol", "p256", sign_agree, mail, None);
    let dave = leaf("dave", "p384", sign_agree, mail, None);
    let erin = leaf(
        "erin",
        "ed25519",
        "digitalSignature, nonRepudiation",
        mail,
        None,
    );
    let expired = leaf(
        "expired",
        "rsa2048",
        sign_enc,
        mail,
        Some(("20200101000000Z", "20210101000000Z")),
    );
    let noeku = leaf("noeku", "rsa2048", sign_enc, Some("clientAuth"), None);
    let badku = leaf("badku", "rsa2048", "keyEncipherment", mail, None);
    let revoked = leaf("revoked", "rsa2048", sign_enc, mail, None);

    let int_cnf = int_dir.join("ca.cnf");
    openssl_ok(
        [
            "ca",
            "-batch",
            "-config",
            p(&int_cnf),
            "-revoke",
            p(&revoked.cert),
            "-crl_reason",
            "keyCompromise",
        ],
        None,
    );
    let crl = dir.join("intermediate.crl.pem");
    openssl_ok(
        [
            "ca",
            "-batch",
            "-config",
            p(&int_cnf),
            "-gencrl",
            "-out",
            p(&crl),
        ],
        None,
    );

    let root = root_dir.join("ca.pem");
    let root_der = dir.join("root.der");
    openssl_ok(
        [
            "x509",
            "-in",
            p(&root),
            "-outform",
            "DER",
            "-out",
            p(&root_der),
        ],
        None,
    );
    let password_file = dir.join("password.txt");
    write(&password_file, P12_PASSWORD);
    let password_file_nl = dir.join("password-nl.txt");
    write(&password_file_nl, format!("{P12_PASSWORD}\n"));

    Pki {
        root,
        root_der,
        intermediate: int_dir.join("ca.pem"),
        other_root: other_dir.join("ca.pem"),
        crl,
        password_file,
        password_file_nl,
        alice,
        bob,
        carol,
        dave,
        erin,
        expired,
        noeku,
        badku,
        revoked,
        dir,
    }
}

/// Key arguments for `sealctl smime decrypt|sign` from a key file and its certificate.
pub fn key_args(leaf: &Leaf) -> Vec<String> {
    vec![
        "--key".into(),
        p(&leaf.key).into(),
        "--cert".into(),
        p(&leaf.cert).into(),
    ]
}

/// A small deterministic generator for garbage and random replacement bytes (no `rand`
/// dependency; the seed is printed by the tests that use it).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
