//! The daemon's part of the boot's health gate (`GET /api/v1/admin/update/gate`, asked by
//! `sealgate-console health-gate` over the admin socket after the daemon answered health):
//! what only the running daemon can tell.
//!
//! - **listeners**: the daemon finished starting (`ready`: every listener its settings enable
//!   was started, a bind failure of a mandatory one ends the daemon) and no optional listener
//!   failed to start (the DNS server's failure is not fatal, so it is recorded); each
//!   recorded listener then accepts a connection (TCP on its address, loopback for a
//!   wildcard; the admin socket by its path), so "bound" means bound now.
//! - **self-test**: a random probe encrypted (CMS EnvelopedData, the engine's default
//!   algorithms) to the box's own certificate (`DATA/tls/box.crt`) and decrypted by the
//!   engine with the box's own key, read from the vault (`Vault::tls_key`, sealed under the
//!   vault key the TPM released at this boot): after an update this proves that the new
//!   slot's daemon reads the vault's records and that its engine decrypts. A box whose
//!   `[tls]` names the operator's key files from its first start has no such key in the
//!   vault: the check then says so and passes (the vault was still opened with the TPM).
//!
//! Vault unsealed and the data partition mounted are the boot's flags, judged by the console
//! before it asks here; settings taken from the data partition's file is `sealgated
//! --check-settings`, also asked by the console.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sealgate_smime::crypto::CipherChoice;
use sealgate_smime::envelope::{Recipient, encrypt};
use sealgate_smime::keys::{PrivateKey, SoftwareKey};
use sealgate_smime::message::{OpenMode, open};
use sealgate_smime::signed::VerifyOptions;
use serde::Serialize;

/// One check's verdict.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// How long a listener may take to accept the check's connection.
const CONNECT: Duration = Duration::from_secs(3);

/// Where to connect to a listener recorded as `addr` (a wildcard is asked on loopback).
fn target(addr: SocketAddr) -> SocketAddr {
    crate::selfcheck::health_target(addr)
}

/// Every recorded listener accepts a connection; the daemon is ready and no listener failed.
pub fn listeners(ready: bool, recorded: &[(String, String)], failed: &[String]) -> Check {
    let mut bad: Vec<String> = Vec::new();
    if !ready {
        bad.push("the daemon has not finished starting its listeners".into());
    }
    bad.extend(failed.iter().cloned());
    for (name, addr) in recorded {
        let r = match addr.parse::<SocketAddr>() {
            Ok(a) => TcpStream::connect_timeout(&target(a), CONNECT).map(drop),
            Err(_) => std::os::unix::net::UnixStream::connect(addr).map(drop),
        };
        if let Err(e) = r {
            bad.push(format!("{name} {addr} does not accept connections: {e}"));
        }
    }
    Check {
        name: "listeners",
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("{} listeners bound", recorded.len())
        } else {
            bad.join("; ")
        },
    }
}

/// Encrypts a random probe to `cert_pem` and decrypts it with `key_pem` through the engine.
pub fn probe_round_trip(key_pem: &[u8], cert_pem: &[u8]) -> Result<(), String> {
    let key = SoftwareKey::from_key_and_cert(key_pem, cert_pem)
        .map_err(|e| format!("the box's key and certificate: {e}"))?;
    let nonce = crate::identity::random(16).map_err(|e| e.to_string())?;
    let probe = format!(
        "Content-Type: text/plain; charset=us-ascii\r\n\r\nsealgate self-test {}\r\n",
        crate::identity::hex(&nonce)
    );
    let recipient = Recipient::new(key.certificate().clone())
        .map_err(|e| format!("encrypting to the box's certificate: {e}"))?;
    let der = encrypt(probe.as_bytes(), &[recipient], CipherChoice::Aes256Cbc)
        .map_err(|e| format!("encrypting the probe: {e}"))?;
    let keys: [&dyn PrivateKey; 1] = [&key];
    let opened = open(&der, &keys, &VerifyOptions::default(), OpenMode::Decrypt)
        .map_err(|e| format!("decrypting the probe: {e}"))?;
    let want = format!("sealgate self-test {}", crate::identity::hex(&nonce));
    if !opened.decrypted() || !String::from_utf8_lossy(&opened.output).contains(&want) {
        return Err("the probe decrypted to something else".into());
    }
    Ok(())
}

/// The self-test decrypt with the box's own key (see the module documentation).
pub fn self_test(vault: &sealgate_vault::Vault, data_dir: &Path) -> Check {
    let check = |ok: bool, detail: String| Check {
        name: "self-test",
        ok,
        detail,
    };
    let key = match vault.tls_key() {
        Ok(Some(k)) => k,
        Ok(None) => {
            return check(
                true,
                "the vault holds no key of the box's own ([tls] names the operator's key \
                 files): no decrypt tested"
                    .into(),
            );
        }
        Err(e) => return check(false, format!("the vault's key record: {e}")),
    };
    let cert = match std::fs::read(data_dir.join("tls").join("box.crt")) {
        Ok(c) => c,
        Err(e) => return check(false, format!("the box's certificate: {e}")),
    };
    match probe_round_trip(&key, &cert) {
        Ok(()) => check(
            true,
            "a probe encrypted to the box's certificate decrypted with its key from the vault"
                .into(),
        ),
        Err(e) => check(false, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_is_gone_fails_the_check() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = l.local_addr().expect("addr").to_string();
        let gone = {
            let g = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            g.local_addr().expect("addr").to_string()
        };
        let ok = listeners(true, &[("docking".into(), up.clone())], &[]);
        assert!(ok.ok, "{ok:?}");
        let bad = listeners(
            true,
            &[("docking".into(), up.clone()), ("imap".into(), gone)],
            &[],
        );
        assert!(!bad.ok && bad.detail.contains("imap"), "{bad:?}");
        let failed = listeners(
            true,
            &[("docking".into(), up.clone())],
            &["dns: in use".into()],
        );
        assert!(!failed.ok && failed.detail.contains("dns"), "{failed:?}");
        let starting = listeners(false, &[("docking".into(), up)], &[]);
        assert!(!starting.ok, "{starting:?}");
    }

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (key.serialize_pem(), cert.pem())
    }

    #[test]
    fn the_probe_decrypts_with_the_boxs_own_key_only() {
        let (key, cert) = pair();
        probe_round_trip(key.as_bytes(), cert.as_bytes()).expect("round trip");
        // Another key than the certificate's is refused before anything is encrypted.
        let (other, _) = pair();
        assert!(probe_round_trip(other.as_bytes(), cert.as_bytes()).is_err());
        assert!(probe_round_trip(b"garbage", cert.as_bytes()).is_err());
    }
}
