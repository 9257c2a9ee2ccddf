//! Dovecot (Debian `dovecot-imapd`) as the IMAP proxy's upstream and reference, started as a
//! child in a temp dir on free loopback ports: passwd-file users, Maildir, IMAPS and IMAP
//! with STARTTLS; optionally OAuth (XOAUTH2 and OAUTHBEARER checked by Dovecot's `oauth2`
//! passdb against an RFC 7662 introspection endpoint). Shared by the tests
//! (`tests/docking/imap.rs`) and `cargo xtask bench imap`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{require_tool, run};

/// The mail user's uid and gid (Dovecot refuses uid 0 for mail).
const MAIL_UID: u32 = 65534;

/// A Dovecot instance; killed on drop. Its own penalty for failed logins (anvil) is off and
/// users may have 100 connections per address, so the proxy's throttling and per-user limits
/// are what the tests meet.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub imaps: u16,
    pub imap: u16,
    child: Child,
}

#[allow(unused_imports)]
pub use crate::ports::free_port;

impl Dovecot {
    /// Starts Dovecot with `users` (address, password).
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Dovecot::start_with(users, None)
    }

    /// Starts Dovecot with `users`; with `introspection` (an RFC 7662 endpoint's URL) it also
    /// offers XOAUTH2 and OAUTHBEARER, the token checked there (`active` true, the login
    /// name its `username`).
    pub fn start_with(users: &[(&str, &str)], introspection: Option<&str>) -> Dovecot {
        require_tool("dovecot", "dovecot-imapd");
        require_tool("openssl", "openssl");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // A CA and a server certificate it issued (a self-signed leaf is not its own anchor).
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
            ])
            .args(["-subj", "/CN=Mail Test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign"])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.crt")));
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.csr")));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "3", "-in"])
            .arg(d.join("server.csr"))
            .arg("-CA")
            .arg(d.join("ca.crt"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .args(["-CAcreateserial", "-extfile"])
            .arg(d.join("ext.cnf"))
            .arg("-out")
            .arg(d.join("server.crt")));
        let [imaps, imap] = crate::ports::free_ports();
        let p = d.display();
        let (mechanisms, oauth) = match introspection {
            Some(url) => {
                std::fs::write(
                    d.join("oauth2.conf"),
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\n\
                         force_introspection = yes\nusername_attribute = username\n\
                         active_attribute = active\nactive_value = true\n"
                    ),
                )
                .expect("oauth2.conf");
                (
                    "plain xoauth2 oauthbearer",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {p}/oauth2.conf\n}}\n"
                    ),
                )
            }
            None => ("plain", String::new()),
        };
        let conf = format!(
            "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\nssl = yes\n\
             ssl_cert = <{p}/server.crt\nssl_key = <{p}/server.key\n\
             disable_plaintext_auth = no\ndefault_login_user = dovenull\n\
             default_internal_user = dovecot\nfirst_valid_uid = 1\n\
             mail_location = maildir:{p}/mail/%u\nauth_mechanisms = {mechanisms}\n\
             auth_failure_delay = 0\nmail_max_userip_connections = 100\n\
             service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
             {oauth}\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {p}/passwd\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {p}/passwd\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap}\n  }}\n\
             \x20 inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps}\n    ssl = yes\n  }}\n}}\n"
        );
        std::fs::write(d.join("dovecot.conf"), conf).expect("conf");
        let passwd: String = users
            .iter()
            .map(|(u, pw)| format!("{u}:{{PLAIN}}{pw}:{MAIL_UID}:{MAIL_UID}::{p}/home/{u}\n"))
            .collect();
        std::fs::write(d.join("passwd"), passwd).expect("passwd");
        for sub in ["mail", "home"] {
            std::fs::create_dir(d.join(sub)).expect("mkdir");
            std::os::unix::fs::chown(d.join(sub), Some(MAIL_UID), Some(MAIL_UID)).expect("chown");
        }
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(d.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(d.join("stderr.log")).expect("log"),
            ))
            .spawn()
            .expect("start dovecot");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", imaps)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}",
                std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dovecot {
            dir,
            imaps,
            imap,
            child,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The daemon's `[imap]` section for a proxy in front of this Dovecot (implicit TLS, a
    /// free loopback port), followed by `extra` lines of the same section.
    pub fn proxy_settings(&self, extra: &str) -> String {
        format!(
            "[imap]\nlisten = \"127.0.0.1:0\"\nupstream = \"imaps://127.0.0.1:{}\"\nupstream_ca = \"{}\"\n{extra}",
            self.imaps,
            self.ca().display()
        )
    }

    /// Dovecot's own log (what its auth process said).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM to the master (our own child) ends its processes.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
