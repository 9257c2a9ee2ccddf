//! The organisation's mail servers, real and started by the test: Dovecot (IMAPS with
//! passwd-file users, and the SASL provider) and Postfix (its submission port authenticating
//! through Dovecot, and a relay port that accepts mail from loopback and stores it in
//! Maildirs). Each runs as a child of the test (never daemonised) in its own temporary
//! folder on free high ports, and is stopped on drop.
//!
//! Reusable by any test that needs an organisation's server: `OrgServers::start(users)`.
//! Packages: Debian `dovecot-core`, `dovecot-imapd`, `postfix`, `openssl`; a missing one fails
//! the test with its name.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::run;

#[allow(unused_imports)]
pub use crate::ports::free_port;

fn require_file(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "`{path}` is missing: install the Debian package `{package}` (cargo xtask test installs it)"
    );
}

/// Waits until `port` accepts connections, or fails with `log`'s content.
fn wait_for_port(port: u16, what: &str, log: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} is not listening on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn id(args: &[&str]) -> u32 {
    let out = run(Command::new("id").args(args));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id")
}

/// Ends a child we started: SIGTERM, then SIGKILL after a grace period; always reaped.
fn stop(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A server certificate for `127.0.0.1`/`localhost` from its own CA (`ca.crt`).
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ServerTls {
    pub fn new(dir: &Path) -> ServerTls {
        crate::harness::require_tool("openssl", "openssl");
        let ca = dir.join("org-ca.crt");
        let ca_key = dir.join("org-ca.key");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=Organisation Test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
        let key = dir.join("org-server.key");
        let csr = dir.join("org-server.csr");
        let cert = dir.join("org-server.crt");
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let ext = dir.join("org-server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-set_serial", "7", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        ServerTls { ca, cert, key }
    }
}

/// Dovecot: IMAPS for `users` (passwd-file, plain passwords) and the SASL socket Postfix
/// authenticates through.
pub struct Dovecot {
    child: Child,
    pub dir: PathBuf,
    pub imaps: u16,
    /// Postfix's `smtpd_sasl_path`.
    pub auth_socket: PathBuf,
    pub log: PathBuf,
}

impl Dovecot {
    pub fn start(dir: &Path, tls: &ServerTls, users: &[(&str, &str)]) -> Dovecot {
        require_file("/usr/sbin/dovecot", "dovecot-core");
        require_file("/usr/lib/dovecot/imap", "dovecot-imapd");
        let dir = dir.join("dovecot");
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).expect("dovecot dirs");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let mut passwd = String::new();
        for (u, p) in users {
            passwd.push_str(&format!("{u}:{{PLAIN}}{p}::::::\n"));
        }
        std::fs::write(dir.join("users"), passwd).expect("users");
        let (uid, gid) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
        let imaps = free_port();
        let log = dir.join("dovecot.log");
        let auth_socket = dir.join("run/auth-postfix");
        let conf = format!(
            r#"
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{d}/mail/%u
first_valid_uid = {uid}
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service auth {{
  unix_listener {sock} {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"#,
            d = dir.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            sock = auth_socket.display(),
        );
        let conf_path = dir.join("dovecot.conf");
        std::fs::write(&conf_path, conf).expect("dovecot.conf");
        std::fs::set_permissions(dir.join("mail"), std::fs::Permissions::from_mode(0o777))
            .expect("mode");
        let mut child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("stderr"),
            ))
            .spawn()
            .expect("start dovecot");
        wait_for_port(imaps, "dovecot", &dir.join("stderr.log"), &mut child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !auth_socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Without it Dovecot slows every login from an address after failed ones (up to
        // 15 s), which only slows the tests: the box's own throttling is what is tested.
        let _ = std::fs::remove_file(dir.join("run/anvil-auth-penalty"));
        Dovecot {
            child,
            dir,
            imaps,
            auth_socket,
            log,
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Postfix as the organisation's server: `submission` (TLS required, AUTH through Dovecot)
/// and `relay` (plain SMTP; loopback may relay, as the box must be allowed to), delivering
/// the listed mailboxes to `mail/DOMAIN/LOCAL/` Maildirs (other addresses of their domains
/// are refused).
pub struct Postfix {
    child: Child,
    pub dir: PathBuf,
    pub submission: u16,
    /// Submission over implicit TLS (465-style), AUTH through Dovecot.
    pub smtps: u16,
    pub relay: u16,
    pub log: PathBuf,
}

impl Postfix {
    /// The instance's folders under `dir` (`postfix/`, its `conf/`).
    fn prepare(dir: &Path) -> (PathBuf, PathBuf) {
        require_file("/usr/lib/postfix/sbin/master", "postfix");
        let dir = dir.join("postfix");
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).expect("postfix dirs");
        }
        for d in [&dir, &conf, &dir.join("queue"), &dir.join("data")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("mode");
        }
        let (uid, gid) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
        run(Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(dir.join("mail")));
        run(Command::new("chown").arg("postfix").arg(dir.join("data")));
        (dir, conf)
    }

    /// The `main.cf` lines every instance has: in `dir`, loopback, no local delivery
    /// tables, its own log.
    fn base_main_cf(dir: &Path) -> String {
        format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\nmail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmydestination =\nmynetworks = 127.0.0.0/8\nmaillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\nsmtputf8_enable = no\nalias_maps =\nalias_database =\nlocal_recipient_maps =\nbiff = no\n",
            d = dir.display()
        )
    }

    /// Writes `master.cf` (Debian's services without chroot, plus `services`), checks the
    /// configuration and starts the master (pinned to `cpu` if given, its processes with
    /// it); returns once every one of `ports` accepts connections.
    fn launch(dir: &Path, services: &str, ports: &[u16], cpu: Option<usize>) -> Child {
        let conf = dir.join("conf");
        let log = dir.join("maillog");
        let dist = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .expect("postfix master.cf.dist (Debian `postfix`)");
        let mut master = String::new();
        for line in dist.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with('#') || line.starts_with(' ') || fields.len() < 8 {
                continue;
            }
            if fields[0] == "smtp" && fields[1] == "inet" {
                continue;
            }
            // No chroot: the instance lives in a temporary folder.
            let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            f[4] = "n".into();
            master.push_str(&f.join(" "));
            master.push('\n');
        }
        master.push_str(services);
        std::fs::write(conf.join("master.cf"), master).expect("master.cf");
        // Freshly written configuration makes the master wait; backdate it.
        let mut touch = Command::new("touch");
        touch.args(["-d", "-1 min"]);
        for e in std::fs::read_dir(&conf).expect("conf").flatten() {
            touch.arg(e.path());
        }
        run(&mut touch);
        let check = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&conf)
            .arg("check")
            .env("MAIL_CONFIG", &conf)
            .output()
            .expect("postfix check");
        assert!(
            check.status.success(),
            "postfix check: {}{}{}",
            String::from_utf8_lossy(&check.stderr),
            String::from_utf8_lossy(&check.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let mut cmd = match cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", &c.to_string(), "/usr/lib/postfix/sbin/master"]);
                t
            }
            None => Command::new("/usr/lib/postfix/sbin/master"),
        };
        let mut child = cmd
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .env("MAIL_CONFIG", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).expect("stderr"),
            ))
            .spawn()
            .expect("start postfix");
        for p in ports {
            wait_for_port(*p, "postfix", &dir.join("stderr.log"), &mut child);
        }
        child
    }

    /// A plain relay (the benchmark's reference): accepts mail from loopback on a free port
    /// and relays everything to `next_hop`, no TLS, no local delivery.
    pub fn start_relay(dir: &Path, next_hop: SocketAddr, cpu: Option<usize>) -> Postfix {
        let (dir, conf) = Postfix::prepare(dir);
        let relay = free_port();
        let log = dir.join("maillog");
        let main = Postfix::base_main_cf(&dir)
            + &format!(
                r#"myhostname = relay.test
relayhost = [{host}]:{port}
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtp_destination_concurrency_limit = 20
"#,
                host = next_hop.ip(),
                port = next_hop.port(),
            );
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        let child = Postfix::launch(
            &dir,
            &format!("127.0.0.1:{relay} inet n - n - - smtpd\n"),
            &[relay],
            cpu,
        );
        Postfix {
            child,
            dir,
            submission: 0,
            smtps: 0,
            relay,
            log,
        }
    }

    pub fn start(dir: &Path, tls: &ServerTls, dovecot: &Dovecot, mailboxes: &[&str]) -> Postfix {
        let (dir, conf) = Postfix::prepare(dir);
        let (uid, gid) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
        let [submission, relay, smtps] = crate::ports::free_ports();
        let log = dir.join("maillog");
        let mut map = String::new();
        let mut domains: Vec<&str> = Vec::new();
        for m in mailboxes {
            let (local, domain) = m.split_once('@').expect("mailbox address");
            map.push_str(&format!("{m} {domain}/{local}/\n"));
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        std::fs::write(conf.join("vmailbox"), map).expect("vmailbox");
        let main = Postfix::base_main_cf(&dir)
            + &format!(
                r#"myhostname = org.test
mydomain = org.test
myorigin = org.test
relay_domains =
virtual_mailbox_domains = {domains}
virtual_mailbox_maps = texthash:{c}/vmailbox
virtual_mailbox_base = {d}/mail
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sock}
smtpd_sasl_auth_enable = no
default_transport = error:no outside delivery in tests
relay_transport = error:no outside delivery in tests
"#,
                d = dir.display(),
                c = conf.display(),
                domains = domains.join(" "),
                cert = tls.cert.display(),
                key = tls.key.display(),
                sock = dovecot.auth_socket.display(),
            );
        std::fs::write(conf.join("main.cf"), main).expect("main.cf");
        let child = Postfix::launch(
            &dir,
            &format!(
                "127.0.0.1:{relay} inet n - n - - smtpd\n127.0.0.1:{submission} inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n127.0.0.1:{smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            ),
            &[relay, submission, smtps],
            None,
        );
        Postfix {
            child,
            dir,
            submission,
            smtps,
            relay,
            log,
        }
    }

    /// The messages delivered to `address` so far (Maildir `new/`), oldest first.
    pub fn mailbox(&self, address: &str) -> Vec<Vec<u8>> {
        let (local, domain) = address.split_once('@').expect("address");
        let new = self.dir.join("mail").join(domain).join(local).join("new");
        let mut files: Vec<_> = std::fs::read_dir(&new)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|p| std::fs::read(p).expect("read mail"))
            .collect()
    }

    /// Waits until `address` has `n` messages, or fails with the mail log.
    pub fn wait_for_mail(&self, address: &str, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.mailbox(address);
            if m.len() >= n {
                return m;
            }
            if Instant::now() > deadline {
                panic!(
                    "{address} has {} of {n} messages; mail log:\n{}",
                    m.len(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The organisation's servers together: Dovecot (IMAPS, SASL) and Postfix (submission,
/// relay and mailboxes), with the CA that issued their certificate.
pub struct OrgServers {
    pub dir: tempfile::TempDir,
    pub tls: ServerTls,
    pub dovecot: Dovecot,
    pub postfix: Postfix,
}

impl OrgServers {
    /// Dovecot with `users` (address, password) and Postfix with a mailbox for each of them
    /// and for each of `mailboxes`.
    pub fn start(users: &[(&str, &str)], mailboxes: &[&str]) -> OrgServers {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("mode");
        let tls = ServerTls::new(dir.path());
        let dovecot = Dovecot::start(dir.path(), &tls, users);
        let mut all: Vec<&str> = users.iter().map(|(u, _)| *u).collect();
        for m in mailboxes {
            if !all.contains(m) {
                all.push(m);
            }
        }
        let postfix = Postfix::start(dir.path(), &tls, &dovecot, &all);
        OrgServers {
            dir,
            tls,
            dovecot,
            postfix,
        }
    }

    pub fn relay(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.postfix.relay))
    }
}
