//! Test harness: a PKI made with `openssl`, a vault filled through the vault crate, and the
//! real `sealgated` binary started on port 0 in a temporary data directory
//! (`--danger-software-sealer`), its ports read from its console, readiness polled, killed on
//! drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sealgate_vault::{SoftwareSealer, Vault};

/// Runs a command, failing the test with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Fails with a message naming the Debian package if a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{tool}` is missing: install the Debian package `{package}` (cargo xtask test installs it)"
    );
}

/// Fails with a message naming the PyPI package if a Python module is missing.
pub fn require_python_module(module: &str, package: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "Python module `{module}` is missing: `pip install {package}` (cargo xtask test installs it)"
    );
}

/// A test PKI: a CA and users with S/MIME certificates (RSA-2048 and EC P-256).
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        require_tool("openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=Docking Test CA",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.crt")));
        let pki = Pki { dir };
        pki.user("alice@example.org", "rsa");
        pki.user("bob@example.org", "ec");
        pki.user("carol@example.org", "rsa");
        pki.user("mallory@example.net", "rsa");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn key(&self, user: &str) -> PathBuf {
        self.path(&format!("{user}.key"))
    }

    pub fn cert(&self, user: &str) -> PathBuf {
        self.path(&format!("{user}.crt"))
    }

    fn user(&self, email: &str, kind: &str) {
        self.issue(email, email, kind, Some("ca"));
    }

    /// Another CA, `NAME.crt` and `NAME.key` (e.g. one the box does not trust).
    pub fn add_ca(&self, name: &str, subject: &str) {
        let d = self.dir.path();
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
            ])
            .arg(format!("/CN={subject}"))
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(d.join(format!("{name}.key")))
            .arg("-out")
            .arg(d.join(format!("{name}.crt"))));
    }

    /// An S/MIME certificate for `email` with a fresh key, `STEM.crt` and `STEM.key`, issued
    /// by the CA `ca` (file stem) or self-signed (`None`).
    pub fn issue(&self, stem: &str, email: &str, kind: &str, ca: Option<&str>) {
        let d = self.dir.path();
        let key = self.key(stem);
        match kind {
            "ec" => run(Command::new("openssl")
                .args([
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ])
                .arg(&key)),
            _ => run(Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&key)),
        };
        let csr = d.join(format!("{stem}.csr"));
        run(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-subj",
                &format!("/CN={email}/emailAddress={email}"),
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let ext = d.join(format!("{stem}.ext"));
        std::fs::write(
            &ext,
            format!("subjectAltName=email:{email}\nextendedKeyUsage=emailProtection\nkeyUsage=critical,digitalSignature,keyEncipherment,keyAgreement\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("ext");
        let mut cmd = Command::new("openssl");
        cmd.args([
            "x509",
            "-req",
            "-days",
            "30",
            "-set_serial",
            &format!("{}", 1000 + stem.len()),
            "-in",
        ])
        .arg(&csr);
        match ca {
            Some(ca) => cmd
                .arg("-CA")
                .arg(d.join(format!("{ca}.crt")))
                .arg("-CAkey")
                .arg(d.join(format!("{ca}.key"))),
            None => cmd.arg("-key").arg(&key),
        };
        run(cmd
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(self.cert(stem)));
    }

    /// A small cleartext message.
    pub fn message(&self, from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
            subject.replace(' ', "-")
        )
        .into_bytes()
    }

    /// `message` encrypted with `openssl cms` to `recipients`' certificates.
    pub fn openssl_encrypt(&self, msg: &[u8], recipients: &[&str]) -> Vec<u8> {
        let input = tempfile::NamedTempFile::new_in(self.dir.path()).expect("tmp");
        std::fs::write(input.path(), msg).expect("write");
        let mut cmd = Command::new("openssl");
        cmd.args(["cms", "-encrypt", "-aes256", "-in"])
            .arg(input.path());
        for r in recipients {
            cmd.arg(self.cert(r));
        }
        // openssl cms writes only the MIME entity: put the header fields back in front.
        let entity = run(&mut cmd).stdout;
        let head_end = msg
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header");
        let head = String::from_utf8_lossy(&msg[..head_end]);
        let kept: Vec<&str> = head
            .split("\r\n")
            .filter(|l| {
                !l.to_ascii_lowercase().starts_with("content-type")
                    && !l.to_ascii_lowercase().starts_with("mime-version")
            })
            .collect();
        let mut out = kept.join("\r\n").into_bytes();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&entity);
        out
    }

    /// Decrypts `msg` with `user`'s key using `openssl cms`.
    pub fn openssl_decrypt(&self, msg: &[u8], user: &str) -> Vec<u8> {
        let input = tempfile::NamedTempFile::new_in(self.dir.path()).expect("tmp");
        std::fs::write(input.path(), msg).expect("write");
        run(Command::new("openssl")
            .args(["cms", "-decrypt", "-in"])
            .arg(input.path())
            .arg("-inkey")
            .arg(self.key(user))
            .arg("-recip")
            .arg(self.cert(user)))
        .stdout
    }

    /// Verifies a signed entity with `openssl cms -verify` against the test CA; returns the content.
    pub fn openssl_verify(&self, msg: &[u8]) -> Vec<u8> {
        let input = tempfile::NamedTempFile::new_in(self.dir.path()).expect("tmp");
        std::fs::write(input.path(), msg).expect("write");
        run(Command::new("openssl")
            .args(["cms", "-verify", "-purpose", "any", "-in"])
            .arg(input.path())
            .arg("-CAfile")
            .arg(self.path("ca.crt")))
        .stdout
    }
}

/// A data directory with a vault (software sealer) holding alice's and bob's keys.
pub fn data_dir_with_keys(pki: &Pki) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sealer = SoftwareSealer::danger_new();
    let (vault, _recovery) = Vault::init(dir.path(), &mut sealer).expect("vault init");
    for user in ["alice@example.org", "bob@example.org"] {
        let key = std::fs::read(pki.key(user)).expect("key");
        let mut cert = std::fs::read(pki.cert(user)).expect("cert");
        cert.extend(std::fs::read(pki.path("ca.crt")).expect("ca"));
        vault.import_pem(&key, &cert, None).expect("import");
    }
    // mallory@example.net is an external recipient: only her certificate is stored.
    let c = sealgate_smime::cert::Certificate::parse_many(
        &std::fs::read(pki.cert("mallory@example.net")).expect("cert"),
    )
    .expect("parse");
    vault
        .add_recipient_certificate(&c[0])
        .expect("recipient cert");
    drop(vault);
    dir
}

/// The `sealctl` binary of the same build (built on demand when only this package was built).
pub fn sealctl() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_sealgated"));
    let p = me.with_file_name("sealctl");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_release = me
            .parent()
            .and_then(|d| d.file_name())
            .is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--package", "sealctl", "--bin", "sealctl"]);
        if profile_release {
            cmd.arg("--release");
        }
        run(&mut cmd);
    }
    assert!(p.exists(), "no sealctl binary at {}", p.display());
    p
}

/// Makes an API token with `sealctl api-token create`.
pub fn create_token(data_dir: &Path, name: &str, scopes: &str) -> String {
    let out = run(Command::new(sealctl())
        .args(["api-token", "create", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name, "--scope", scopes]));
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// A running `sealgated`.
pub struct Daemon {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub docking: SocketAddr,
    pub admin: SocketAddr,
    pub smtp_decrypt: Option<SocketAddr>,
    pub smtp_encrypt: Option<SocketAddr>,
    pub setup_token: Option<String>,
    pub fingerprint: String,
    pub console: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `sealgated` on port 0 with `extra_settings` appended to the test settings.
    pub fn start(data_dir: &Path, extra_settings: &str) -> Daemon {
        Daemon::start_sealed(data_dir, extra_settings, &["--danger-software-sealer"])
    }

    /// As [`Daemon::start`], with `sealer` as the sealer's arguments (e.g. `--tpm TCTI` for
    /// a swtpm; the vault is created at start if the data directory has none).
    pub fn start_sealed(data_dir: &Path, extra_settings: &str, sealer: &[&str]) -> Daemon {
        Daemon::start_env(data_dir, extra_settings, sealer, &[])
    }

    /// As [`Daemon::start_sealed`], with `env` added to the daemon's environment.
    pub fn start_env(
        data_dir: &Path,
        extra_settings: &str,
        sealer: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        let settings = data_dir.join("settings.toml");
        let base = "[docking]\nlisten = \"127.0.0.1:0\"\n";
        let text = if extra_settings.contains("[docking]") {
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
                extra_settings.replace("[docking]\n", base)
            )
        } else {
            format!("{base}[admin]\nlisten = \"127.0.0.1:0\"\n{extra_settings}")
        };
        std::fs::write(&settings, text).expect("settings");
        let mut child = Command::new(env!("CARGO_BIN_EXE_sealgated"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(sealer)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(data_dir.join("stderr.log")).expect("stderr log"),
            ))
            .spawn()
            .expect("start sealgated");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            docking: "0.0.0.0:0".parse().expect("addr"),
            admin: "0.0.0.0:0".parse().expect("addr"),
            smtp_decrypt: None,
            smtp_encrypt: None,
            setup_token: None,
            fingerprint: String::new(),
            console: Vec::new(),
            lines: rx,
        };
        d.read_until_ready();
        d
    }

    /// Reads console lines until `ready` (noting listeners, setup token, fingerprint), then
    /// waits for health: after a start, or a restart through the admin API.
    pub fn read_until_ready(&mut self) {
        let d = self;
        let data_dir = d.data_dir.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match d.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "sealgated did not become ready; console: {:?}; stderr: {}",
                    d.console,
                    std::fs::read_to_string(data_dir.join("stderr.log")).unwrap_or_default()
                ),
            };
            d.console.push(line.clone());
            let Some(rest) = line.strip_prefix("sealgated: ") else {
                continue;
            };
            if let Some(l) = rest.strip_prefix("listening ") {
                let (name, addr) = l.split_once(' ').expect("listening NAME ADDR");
                let addr: SocketAddr = addr.parse().expect("address");
                match name {
                    "docking" => d.docking = addr,
                    "admin" => d.admin = addr,
                    "smtp-decrypt" => d.smtp_decrypt = Some(addr),
                    "smtp-encrypt" => d.smtp_encrypt = Some(addr),
                    _ => {}
                }
            } else if let Some(t) = rest
                .split_once("setup token")
                .and_then(|(_, t)| t.rsplit(' ').next())
            {
                d.setup_token = Some(t.to_string());
            } else if let Some(fp) = rest.strip_prefix("TLS certificate SHA-256 fingerprint: ") {
                d.fingerprint = fp.to_string();
            } else if rest == "ready" {
                break;
            }
        }
        // Readiness as the box's init sees it: the health endpoint answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (code, _, _) = d.curl("GET", "/api/v1/health", None, &[], None);
            if code == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("health never answered 200");
    }

    /// The box certificate, for `curl --cacert` (a real TLS check, not `-k`).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("tls/box.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.docking.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin.port())
    }

    /// curl against the docking port: (status, response headers, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        extra: &[&str],
        body: Option<&[u8]>,
    ) -> (u16, String, Vec<u8>) {
        self.curl_url(method, &self.url(path), token, extra, body)
    }

    pub fn curl_url(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        extra: &[&str],
        body: Option<&[u8]>,
    ) -> (u16, String, Vec<u8>) {
        require_tool("curl", "curl");
        let tmp = tempfile::tempdir().expect("tmp");
        let headers = tmp.path().join("headers");
        let out = tmp.path().join("body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-X", method, "--cacert"])
            .arg(self.ca_file())
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&out)
            .args(["-w", "%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            let f = tmp.path().join("request");
            std::fs::write(&f, b).expect("request body");
            cmd.args(["-H", "Content-Type: message/rfc822", "--data-binary"])
                .arg(format!("@{}", f.display()));
        }
        cmd.args(extra).arg(url);
        let o = cmd.output().expect("curl");
        let code: u16 = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (
            code,
            std::fs::read_to_string(&headers).unwrap_or_default(),
            std::fs::read(&out).unwrap_or_default(),
        )
    }

    /// Sends SIGTERM and waits; returns the exit status and the remaining console lines.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("running");
        run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest);
            }
            assert!(
                Instant::now() < deadline,
                "sealgated did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 30 s) for a console line containing `needle`, and returns it.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no console line with {needle:?}: {:?}", self.console));
            self.console.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits (up to 30 s) for the daemon to end on its own; its status and remaining lines.
    pub fn wait_exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                let rest: Vec<String> = self.lines.try_iter().collect();
                return (status, rest);
            }
            assert!(Instant::now() < deadline, "sealgated did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The audit log lines.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.data_dir.join("audit/docking.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit JSON"))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of a response header (case-insensitive name).
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The JSON report of a message response.
pub fn report(headers: &str) -> serde_json::Value {
    serde_json::from_str(header(headers, "Sealgate-Report").expect("Sealgate-Report header"))
        .expect("report JSON")
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Writes `text` to a file in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(text).expect("write");
    p
}
