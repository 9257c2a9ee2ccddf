//! gpgsm 2.2 (Debian `gpgsm`, `gnupg`) as a recipient's mail client: it decrypts what the
//! box sent and verifies the sender's signature. A temporary GNUPGHOME per use (loopback
//! pinentry, no CRL checks, the test CA trusted), its gpg-agent stopped on drop.

use std::path::Path;
use std::process::{Command, Stdio};

use sealgate_smime::mime::{self, Entity};

use crate::harness::{Pki, require_tool, run};

const PASSWORD: &str = "gpgsm-test";

pub struct Gpgsm {
    dir: tempfile::TempDir,
}

impl Gpgsm {
    /// A home holding `user`'s key (imported as a `-legacy` PKCS#12: gpgsm 2.2 reads
    /// nothing newer) and trusting the test CA.
    pub fn new(pki: &Pki, user: &str) -> Gpgsm {
        require_tool("gpgsm", "gpgsm");
        require_tool("gpgconf", "gnupg");
        // Unix socket paths are limited: keep the home short, under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("sg-gw-gpgsm-")
            .tempdir()
            .unwrap();
        let home = dir.path();
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        std::fs::write(home.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        std::fs::write(
            home.join("gpgsm.conf"),
            "disable-crl-checks\ndisable-dirmngr\n",
        )
        .unwrap();
        let out = run(Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
            .arg(pki.path("ca.crt")));
        let fpr = String::from_utf8_lossy(&out.stdout)
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .to_string();
        std::fs::write(home.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
        let p12 = home.join("user.p12");
        run(Command::new("openssl")
            .args(["pkcs12", "-export", "-legacy", "-passout"])
            .arg(format!("pass:{PASSWORD}"))
            .arg("-inkey")
            .arg(pki.key(user))
            .arg("-in")
            .arg(pki.cert(user))
            .arg("-certfile")
            .arg(pki.path("ca.crt"))
            .arg("-out")
            .arg(&p12));
        let g = Gpgsm { dir };
        g.gpgsm(&["--import"], &[pki.path("ca.crt").as_path()]);
        // The first call starts gpg-agent; a passphrase read while it starts is sometimes
        // lost: retried, bounded.
        let mut ok = false;
        for _ in 0..4 {
            if g.gpgsm(&["--import"], &[p12.as_path()]).0 {
                ok = true;
                break;
            }
        }
        assert!(ok, "gpgsm could not import the PKCS#12 of {user}");
        g
    }

    fn gpgsm(&self, args: &[&str], files: &[&Path]) -> (bool, Vec<u8>, String) {
        let mut child = Command::new("gpgsm")
            .env("GNUPGHOME", self.dir.path())
            .args([
                "--batch",
                "--no-tty",
                "--status-fd",
                "2",
                "--pinentry-mode",
                "loopback",
            ])
            .args(["--passphrase-fd", "0"])
            .args(args)
            .args(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(format!("{PASSWORD}\n").as_bytes());
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The content of an `application/pkcs7-mime` enveloped-data message.
    pub fn decrypt(&self, msg: &[u8]) -> Vec<u8> {
        let e = Entity::parse(msg);
        let der = mime::decode_body(e.body(), &e.transfer_encoding()).unwrap();
        let f = self.dir.path().join("in.p7m");
        std::fs::write(&f, &der).unwrap();
        // gpgsm exits non-zero when it misses the certificates of the other recipients of the
        // message; its status line says whether it decrypted.
        let (_, out, status) = self.gpgsm(&["--decrypt"], &[f.as_path()]);
        assert!(
            status.contains("[GNUPG:] DECRYPTION_OKAY") && !out.is_empty(),
            "gpgsm --decrypt failed: {status}"
        );
        out
    }

    /// A `multipart/signed` message from `from` to `to` whose signature gpgsm made (detached,
    /// with the signer's certificate), CRLF line ends.
    pub fn signed_message(&self, from: &str, to: &str, body: &str) -> Vec<u8> {
        // The signed part ends before the CRLF that belongs to the boundary.
        let entity = format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}");
        let c = self.dir.path().join("to-sign");
        std::fs::write(&c, &entity).unwrap();
        let (ok, sig, status) =
            self.gpgsm(&["--detach-sign", "--include-certs", "1"], &[c.as_path()]);
        assert!(ok && !sig.is_empty(), "gpgsm --detach-sign: {status}");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: signed by gpgsm\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"gpgsm-b\"\r\n\r\n\
             --gpgsm-b\r\n{entity}\r\n--gpgsm-b\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--gpgsm-b--\r\n",
            lines.join("\r\n")
        )
        .into_bytes()
    }

    /// Verifies a `multipart/signed` entity; returns gpgsm's status lines.
    pub fn verify(&self, entity: &[u8]) -> String {
        let e = Entity::parse(entity);
        let ct = e.content_type();
        let boundary = ct.param("boundary").unwrap().to_string();
        let parts = mime::split_signed(e.body(), &boundary).unwrap();
        let sig = mime::decode_body(parts.signature.body(), &parts.signature.transfer_encoding())
            .unwrap();
        let (s, c) = (
            self.dir.path().join("sig.p7s"),
            self.dir.path().join("content"),
        );
        std::fs::write(&s, &sig).unwrap();
        std::fs::write(&c, mime::canonicalize_crlf(parts.signed)).unwrap();
        let (ok, _, status) = self.gpgsm(&["--verify"], &[s.as_path(), c.as_path()]);
        assert!(ok && status.contains("GOODSIG"), "gpgsm --verify: {status}");
        status
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.dir.path())
            .args(["--kill", "all"])
            .status();
    }
}
