//! Sign/verify tests against a test PKI generated with the `openssl` CLI, and interop with
//! `openssl cms` in both directions.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::*;
use crate::keys::SoftwareKey;

struct Pki {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const EXT: &str = r#"
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:false
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
subjectAltName = email:alice@example.com
[leaf_ec]
basicConstraints = CA:false
keyUsage = critical, digitalSignature, nonRepudiation, keyAgreement
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
subjectAltName = email:alice@example.com
[noeku]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = email:alice@example.com
[badku]
basicConstraints = CA:false
keyUsage = critical, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:alice@example.com
[pinned]
basicConstraints = CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = emailProtection
subjectAltName = email:pinned@example.com
"#;

const CA_CNF: &str = r#"
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = .
database = index.txt
new_certs_dir = .
certificate = inter.pem
private_key = inter.key
serial = serial
crlnumber = crlnumber
default_md = sha256
default_crl_days = 30
policy = policy_any
[ policy_any ]
commonName = supplied
"#;

fn run(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("ext.cnf"), EXT).unwrap();
        std::fs::write(d.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("crlnumber"), "01\n").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        let genrsa = |name: &str| {
            run(
                &d,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    name,
                ],
            )
        };
        genrsa("root.key");
        run(
            &d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "root.key",
                "-subj",
                "/CN=Test Root",
                "-days",
                "3650",
                "-sha256",
                "-config",
                "ext.cnf",
                "-extensions",
                "ca",
                "-out",
                "root.pem",
            ],
        );
        genrsa("inter.key");
        run(
            &d,
            &[
                "req",
                "-new",
                "-key",
                "inter.key",
                "-subj",
                "/CN=Test Intermediate",
                "-out",
                "inter.csr",
            ],
        );
        run(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "inter.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-set_serial",
                "2",
                "-days",
                "3000",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ca",
                "-out",
                "inter.pem",
            ],
        );
        let leaf = |name: &str, keygen: &[&str], ext: &str, days: &str, serial: &str| {
            let key = format!("{name}.key");
            let mut args = vec!["genpkey"];
            args.extend_from_slice(keygen);
            args.extend_from_slice(&["-out", &key]);
            run(&d, &args);
            let csr = format!("{name}.csr");
            run(
                &d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-subj",
                    &format!("/CN={name}"),
                    "-out",
                    &csr,
                ],
            );
            let pem = format!("{name}.pem");
            run(
                &d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "inter.pem",
                    "-CAkey",
                    "inter.key",
                    "-set_serial",
                    serial,
                    "-days",
                    days,
                    "-sha256",
                    "-extfile",
                    "ext.cnf",
                    "-extensions",
                    ext,
                    "-out",
                    &pem,
                ],
            );
            // Leaf followed by its chain, as a key's certificate file usually is.
            let mut chain = std::fs::read(d.join(&pem)).unwrap();
            chain.extend(std::fs::read(d.join("inter.pem")).unwrap());
            std::fs::write(d.join(format!("{name}-chain.pem")), chain).unwrap();
        };
        let rsa: &[&str] = &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        leaf("rsa", rsa, "leaf", "30", "0x10");
        leaf(
            "p256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "leaf_ec",
            "30",
            "0x11",
        );
        leaf(
            "p384",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "leaf_ec",
            "30",
            "0x12",
        );
        leaf(
            "ed25519",
            &["-algorithm", "ED25519"],
            "leaf_ec",
            "30",
            "0x13",
        );
        leaf(
            "noeku",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "noeku",
            "30",
            "0x14",
        );
        leaf(
            "badku",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "badku",
            "30",
            "0x15",
        );
        leaf(
            "revoked",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "leaf_ec",
            "30",
            "0x16",
        );
        run(&d, &["ca", "-config", "ca.cnf", "-revoke", "revoked.pem"]);
        run(
            &d,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-gencrl",
                "-out",
                "inter.crl.pem",
            ],
        );
        run(
            &d,
            &[
                "crl",
                "-in",
                "inter.crl.pem",
                "-outform",
                "DER",
                "-out",
                "inter.crl",
            ],
        );
        // A self-signed partner certificate, trusted by pinning.
        run(
            &d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "pinned.key",
            ],
        );
        run(
            &d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "pinned.key",
                "-subj",
                "/CN=Pinned Partner",
                "-days",
                "30",
                "-config",
                "ext.cnf",
                "-extensions",
                "pinned",
                "-out",
                "pinned.pem",
            ],
        );
        Pki { path: d, _dir: dir }
    })
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(pki().path.join(name)).unwrap()
}

fn key(name: &str) -> SoftwareKey {
    let cert = if name == "pinned" {
        read("pinned.pem")
    } else {
        read(&format!("{name}-chain.pem"))
    };
    SoftwareKey::from_key_and_cert(&read(&format!("{name}.key")), &cert).unwrap()
}

fn cert(name: &str) -> Certificate {
    Certificate::parse_many(&read(&format!("{name}.pem")))
        .unwrap()
        .remove(0)
}

fn anchors() -> VerifyOptions {
    VerifyOptions {
        anchors: vec![cert("root")],
        ..Default::default()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

const MSG: &[u8] = b"Content-Type: text/plain\r\n\r\nHello, signed world.\r\n";

fn opts(scheme: Option<SignScheme>, detached: bool) -> SignOptions {
    SignOptions {
        scheme,
        detached,
        signing_time: now(),
        include_chain: true,
    }
}

fn roundtrip(name: &str, scheme: Option<SignScheme>, algorithm: &str) {
    let k = key(name);
    for detached in [true, false] {
        let (cms, _) = sign(MSG, &k, &opts(scheme, detached)).unwrap();
        let v = verify(&cms, detached.then_some(MSG), &anchors()).unwrap();
        assert!(v.valid, "{name} detached={detached}: {v:#?}");
        assert_eq!(v.content, MSG);
        assert_eq!(v.detached, detached);
        let s = &v.signers[0];
        assert_eq!(s.signature, SignatureStatus::Valid);
        assert_eq!(s.algorithm, algorithm);
        assert!(s.weak.is_empty(), "{:?}", s.weak);
        assert!(s.signing_time.is_some());
        assert!(s.capabilities.iter().any(|c| c == "aes256-cbc"));
        let chain = s.chain.as_ref().unwrap();
        assert!(chain.valid, "{chain:?}");
        assert_eq!(chain.path.len(), 3, "{chain:?}");
        // Without anchors: the signature alone, and never `valid`.
        let v = verify(&cms, detached.then_some(MSG), &VerifyOptions::default()).unwrap();
        assert!(v.signatures_valid && !v.chain_checked && v.signers[0].chain.is_none());
        assert!(!v.valid, "no chain checked must not be valid");
        assert_eq!(v.chain, ChainCheck::Unchecked);
        assert_eq!(
            serde_json::to_value(&v).unwrap()["chain"],
            serde_json::json!("unchecked")
        );
    }
}

#[test]
fn rsa_pkcs1_roundtrip() {
    roundtrip("rsa", None, "rsa-pkcs1v15-sha256");
    roundtrip(
        "rsa",
        Some(SignScheme::RsaPkcs1(HashAlg::Sha512)),
        "rsa-pkcs1v15-sha512",
    );
}

#[test]
fn rsa_pss_roundtrip() {
    roundtrip(
        "rsa",
        Some(SignScheme::RsaPss(HashAlg::Sha256)),
        "rsa-pss-sha256",
    );
    roundtrip(
        "rsa",
        Some(SignScheme::RsaPss(HashAlg::Sha384)),
        "rsa-pss-sha384",
    );
}

#[test]
fn ecdsa_roundtrip() {
    roundtrip("p256", None, "ecdsa-p256-sha256");
    roundtrip("p384", None, "ecdsa-p384-sha384");
}

#[test]
fn ed25519_roundtrip() {
    roundtrip("ed25519", None, "ed25519");
}

#[test]
fn tampered_content_and_signature_are_invalid() {
    for name in ["rsa", "p256", "ed25519"] {
        let k = key(name);
        let (cms, _) = sign(MSG, &k, &opts(None, true)).unwrap();
        let mut other = MSG.to_vec();
        other[30] ^= 1;
        let v = verify(&cms, Some(&other), &VerifyOptions::default()).unwrap();
        assert!(!v.valid);
        assert_eq!(v.signers[0].signature, SignatureStatus::Invalid);
        assert!(
            v.signers[0]
                .reasons
                .iter()
                .any(|r| r == "message digest mismatch"),
            "{v:?}"
        );

        // Flip a byte of the signature value (the last bytes of the DER).
        let mut bad = cms.clone();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        let v = verify(&bad, Some(MSG), &VerifyOptions::default()).unwrap();
        assert!(!v.valid, "{name}");
        assert_eq!(
            v.signers[0].signature,
            SignatureStatus::Invalid,
            "{name}: {v:?}"
        );

        // Tampered opaque content.
        let (cms, _) = sign(MSG, &k, &opts(None, false)).unwrap();
        let pos = cms.windows(5).position(|w| w == b"Hello").unwrap();
        let mut bad = cms.clone();
        bad[pos] = b'J';
        let v = verify(&bad, None, &VerifyOptions::default()).unwrap();
        assert!(
            v.signers[0]
                .reasons
                .iter()
                .any(|r| r == "message digest mismatch")
        );
    }
}

#[test]
fn truncated_and_garbage_input_never_panics() {
    let (cms, _) = sign(MSG, &key("p256"), &opts(None, false)).unwrap();
    for n in 0..cms.len() {
        if let Ok(v) = verify(&cms[..n], Some(MSG), &anchors()) {
            assert!(!v.valid);
        }
    }
    for i in (0..cms.len()).step_by(7) {
        let mut bad = cms.clone();
        bad[i] ^= 0xff;
        if let Ok(v) = verify(&bad, Some(MSG), &anchors()) {
            let _ = serde_json::to_string(&v);
        }
    }
    assert!(verify(b"", None, &VerifyOptions::default()).is_err());
    let (detached, _) = sign(MSG, &key("p256"), &opts(None, true)).unwrap();
    assert!(matches!(
        verify(&detached, None, &VerifyOptions::default()),
        Err(Error::Usage(_))
    ));
}

#[test]
fn certificates_harvests_the_signer() {
    let (cms, _) = sign(MSG, &key("rsa"), &opts(None, true)).unwrap();
    let certs = certificates(&cms).unwrap();
    assert_eq!(certs, vec![cert("rsa")]);
    assert_eq!(all_certificates(&cms).unwrap().len(), 2);
    let (cms, _) = sign(
        MSG,
        &key("rsa"),
        &SignOptions {
            include_chain: false,
            ..opts(None, true)
        },
    )
    .unwrap();
    assert_eq!(all_certificates(&cms).unwrap().len(), 1);
    let i = info(&cms).unwrap();
    assert!(i.detached);
    assert_eq!(i.signers[0].signer, "CN=rsa");
    assert_eq!(i.signers[0].digest, "sha256");
    assert_eq!(i.signers[0].algorithm, "sha256-with-rsa");
    assert!(i.signers[0].signing_time.is_some());
}

// ---- chain checks ----

fn chain_of(name: &str, o: &VerifyOptions) -> (Verification, ChainVerdict) {
    let (cms, _) = sign(MSG, &key(name), &opts(None, true)).unwrap();
    let v = verify(&cms, Some(MSG), o).unwrap();
    let c = v.signers[0].chain.clone().unwrap();
    (v, c)
}

#[test]
fn chain_expired_at_a_time() {
    let o = VerifyOptions {
        at: Some(now() + 60 * 86400),
        ..anchors()
    };
    let (v, c) = chain_of("p256", &o);
    assert!(!v.valid && !c.valid);
    assert_eq!(v.signers[0].signature, SignatureStatus::Valid);
    assert!(
        c.reasons.iter().any(|r| r.starts_with("expired at ")),
        "{c:?}"
    );
    // Before it was issued.
    let o = VerifyOptions {
        at: Some(now() - 86400),
        ..anchors()
    };
    let (_, c) = chain_of("p256", &o);
    assert!(
        c.reasons
            .iter()
            .any(|r| r.starts_with("not yet valid: not valid before ")),
        "{c:?}"
    );
}

#[test]
fn chain_without_email_eku_or_signing_key_usage() {
    let (v, c) = chain_of("noeku", &anchors());
    assert!(!v.valid);
    assert!(
        c.reasons
            .iter()
            .any(|r| r == "not valid for email protection"),
        "{c:?}"
    );
    let (v, c) = chain_of("badku", &anchors());
    assert!(!v.valid);
    assert!(c.reasons.iter().any(|r| r.contains("key usage")), "{c:?}");
}

#[test]
fn chain_revoked_with_crl() {
    let o = VerifyOptions {
        crls: vec![read("inter.crl")],
        ..anchors()
    };
    let (v, c) = chain_of("revoked", &o);
    assert!(!v.valid);
    assert_eq!(c.reasons, vec!["revoked".to_string()]);
    // Another certificate is fine with the same CRL.
    let (v, c) = chain_of("p256", &o);
    assert!(v.valid, "{c:?}");
}

#[test]
fn chain_from_binding() {
    let o = VerifyOptions {
        from: Some("Alice@Example.com".into()),
        ..anchors()
    };
    let (v, _) = chain_of("p256", &o);
    assert!(v.valid);
    assert_eq!(v.signers[0].from_matches, Some(true));
    let o = VerifyOptions {
        from: Some("bob@example.com".into()),
        ..anchors()
    };
    let (v, c) = chain_of("p256", &o);
    assert!(!v.valid);
    assert_eq!(v.signers[0].from_matches, Some(false));
    assert!(
        c.reasons
            .iter()
            .any(|r| r == "signer certificate is not for bob@example.com"),
        "{c:?}"
    );
    // Without anchors, the From check still decides validity.
    let o = VerifyOptions {
        from: Some("bob@example.com".into()),
        ..Default::default()
    };
    let (cms, _) = sign(MSG, &key("p256"), &opts(None, true)).unwrap();
    let v = verify(&cms, Some(MSG), &o).unwrap();
    assert!(!v.valid);
}

#[test]
fn chain_untrusted_and_pinned() {
    let o = VerifyOptions {
        anchors: vec![cert("pinned")],
        ..Default::default()
    };
    let (v, c) = chain_of("p256", &o);
    assert!(!v.valid);
    assert!(
        c.reasons.iter().any(|r| r == "no path to a trusted anchor"),
        "{c:?}"
    );
    // A self-signed partner certificate that is itself an anchor.
    let (cms, _) = sign(MSG, &key("pinned"), &opts(None, true)).unwrap();
    let v = verify(&cms, Some(MSG), &o).unwrap();
    assert!(v.valid, "{v:#?}");
    // ... but not when it is not pinned.
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(!v.valid);
    // Intermediate as the anchor works too.
    let o = VerifyOptions {
        anchors: vec![cert("inter")],
        ..Default::default()
    };
    let (v, c) = chain_of("rsa", &o);
    assert!(v.valid, "{c:?}");
}

// ---- interop with openssl cms ----

fn tmp_write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn openssl_verifies_our_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = tmp_write(d, "content", MSG);
    let root = pki().path.join("root.pem").to_string_lossy().into_owned();
    let cases: &[(&str, Option<SignScheme>)] = &[
        ("rsa", None),
        ("rsa", Some(SignScheme::RsaPss(HashAlg::Sha256))),
        ("p256", None),
        ("p384", None),
        // Not Ed25519: OpenSSL 3.0's CMS cannot sign or verify it ("invalid digest").
    ];
    for (name, scheme) in cases {
        for detached in [true, false] {
            let (cms, _) = sign(MSG, &key(name), &opts(*scheme, detached)).unwrap();
            let f = tmp_write(d, "sig.der", &cms);
            let mut args = vec![
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                &f,
                "-CAfile",
                &root,
                "-out",
                "/dev/null",
            ];
            if detached {
                args.extend_from_slice(&["-content", &content]);
            }
            let out = Command::new("openssl").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{name} {scheme:?} detached={detached}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn openssl_sign(name: &str, extra: &[&str]) -> Vec<u8> {
    let p = &pki().path;
    let dir = tempfile::tempdir().unwrap();
    let content = tmp_write(dir.path(), "content", MSG);
    let out = dir.path().join("out.der").to_string_lossy().into_owned();
    let signer = p.join(format!("{name}.pem")).to_string_lossy().into_owned();
    let keyf = p.join(format!("{name}.key")).to_string_lossy().into_owned();
    let inter = p.join("inter.pem").to_string_lossy().into_owned();
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-in",
        &content,
        "-signer",
        &signer,
        "-inkey",
        &keyf,
        "-certfile",
        &inter,
        "-outform",
        "DER",
        "-out",
        &out,
    ];
    args.extend_from_slice(extra);
    run(dir.path(), &args);
    std::fs::read(&out).unwrap()
}

#[test]
fn we_verify_openssl_signatures() {
    // Detached.
    let cms = openssl_sign("rsa", &[]);
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(v.valid, "{v:#?}");
    assert!(v.detached);
    // Opaque, streamed: BER with indefinite lengths and a chunked eContent.
    let cms = openssl_sign("p256", &["-nodetach", "-stream"]);
    assert_eq!(cms.get(1), Some(&0x80), "expected indefinite-length BER");
    let v = verify(&cms, None, &anchors()).unwrap();
    assert!(v.valid, "{v:#?}");
    assert_eq!(v.content, MSG);
    assert!(!v.detached);
    // RSA-PSS with OpenSSL's maximum salt length.
    let cms = openssl_sign(
        "rsa",
        &[
            "-keyopt",
            "rsa_padding_mode:pss",
            "-keyopt",
            "rsa_pss_saltlen:max",
        ],
    );
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(v.valid, "{v:#?}");
    assert_eq!(v.signers[0].algorithm, "rsa-pss-sha256");
    // SHA-1: refused as weak by default; valid (and still marked weak) when allowed.
    let cms = openssl_sign("rsa", &["-md", "sha1"]);
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(!v.valid, "{v:#?}");
    assert_eq!(v.signers[0].signature, SignatureStatus::Weak);
    assert!(v.signers[0].weak.iter().any(|w| w == "sha-1 digest"));
    let allow = VerifyOptions {
        allow_weak: true,
        ..anchors()
    };
    let v = verify(&cms, Some(MSG), &allow).unwrap();
    assert!(v.valid, "{v:#?}");
    assert!(v.signers[0].weak.iter().any(|w| w == "sha-1 digest"));
    // Signer identified by subject key identifier.
    let cms = openssl_sign("p384", &["-keyid", "-md", "sha512"]);
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(v.valid, "{v:#?}");
    assert_eq!(v.signers[0].algorithm, "ecdsa-p384-sha512");
    // (No Ed25519 here: OpenSSL 3.0's CMS cannot produce it.)
    // Without signed attributes.
    let cms = openssl_sign("rsa", &["-noattr"]);
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert!(v.valid, "{v:#?}");
    assert!(v.signers[0].signing_time.is_none());
    let mut other = MSG.to_vec();
    other[0] = b'c';
    let v = verify(&cms, Some(&other), &anchors()).unwrap();
    assert_eq!(v.signers[0].signature, SignatureStatus::Invalid);
    // Two signers.
    let p = &pki().path;
    let p256 = p.join("p256.pem").to_string_lossy().into_owned();
    let p256k = p.join("p256.key").to_string_lossy().into_owned();
    let cms = openssl_sign("rsa", &["-signer", &p256, "-inkey", &p256k]);
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert_eq!(v.signers.len(), 2);
    assert!(v.valid, "{v:#?}");
}

#[test]
fn signers_beyond_the_limit_are_not_verified() {
    let p = &pki().path;
    let f = |n: &str| p.join(n).to_string_lossy().into_owned();
    let (p256, p256k, p384, p384k) = (f("p256.pem"), f("p256.key"), f("p384.pem"), f("p384.key"));
    let cms = openssl_sign(
        "rsa",
        &[
            "-signer", &p256, "-inkey", &p256k, "-signer", &p384, "-inkey", &p384k,
        ],
    );
    assert!(verify(&cms, Some(MSG), &anchors()).unwrap().valid);
    let capped = VerifyOptions {
        limits: crate::Limits {
            max_signers: 2,
            ..crate::Limits::default()
        },
        ..anchors()
    };
    let v = verify(&cms, Some(MSG), &capped).unwrap();
    assert_eq!(v.signers.len(), 3, "{v:#?}");
    assert_eq!(v.signers[2].signature, SignatureStatus::NotVerified);
    assert!(v.signers[2].reasons[0].contains("1 more signers not verified"));
    assert!(!v.valid && !v.signatures_valid);
}

#[test]
fn chain_revoked_by_the_callers_own_list() {
    let c = cert("p256");
    let o = VerifyOptions {
        revoked: vec![Revoked {
            issuer: c.issuer.clone(),
            serial: c.serial.clone(),
        }],
        ..anchors()
    };
    let (v, ch) = chain_of("p256", &o);
    assert!(!v.valid && !ch.valid);
    assert!(ch.reasons.iter().any(|r| r.contains("revoked")), "{ch:?}");
    // Another serial of the same issuer is fine.
    let (v, _) = chain_of("p384", &o);
    assert!(v.valid);
}

#[test]
fn chain_is_checked_now_not_at_the_claimed_signing_time() {
    // A certificate valid from 10 to 20 days from now, and a signature claiming to be made
    // 15 days from now: the claim must not make the chain valid today.
    let p = &pki().path;
    let d = tempfile::tempdir().unwrap();
    let stamp = |t: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
        format!(
            "{:04}{:02}{:02}000000Z",
            t.year(),
            u8::from(t.month()),
            t.day()
        )
    };
    for f in ["inter.pem", "inter.key", "ca.cnf", "ext.cnf"] {
        std::fs::copy(p.join(f), d.path().join(f)).unwrap();
    }
    std::fs::write(d.path().join("index.txt"), "").unwrap();
    std::fs::write(d.path().join("serial"), "2000\n").unwrap();
    std::fs::write(d.path().join("crlnumber"), "01\n").unwrap();
    run(
        d.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "later.key",
        ],
    );
    run(
        d.path(),
        &[
            "req",
            "-new",
            "-key",
            "later.key",
            "-subj",
            "/CN=later",
            "-out",
            "later.csr",
        ],
    );
    let (start, end) = (stamp(now() + 10 * 86400), stamp(now() + 20 * 86400));
    run(
        d.path(),
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-in",
            "later.csr",
            "-out",
            "later.pem",
            "-startdate",
            &start,
            "-enddate",
            &end,
            "-extfile",
            "ext.cnf",
            "-extensions",
            "leaf_ec",
        ],
    );
    let mut chain = std::fs::read(d.path().join("later.pem")).unwrap();
    chain.extend(std::fs::read(p.join("inter.pem")).unwrap());
    let k =
        SoftwareKey::from_key_and_cert(&std::fs::read(d.path().join("later.key")).unwrap(), &chain)
            .unwrap();
    let claimed = now() + 15 * 86400;
    let (cms, _) = sign(
        MSG,
        &k,
        &SignOptions {
            signing_time: claimed,
            ..opts(None, true)
        },
    )
    .unwrap();
    let v = verify(&cms, Some(MSG), &anchors()).unwrap();
    assert_eq!(v.signers[0].signature, SignatureStatus::Valid);
    assert!(
        !v.valid,
        "a claimed signingTime must not validate the chain: {v:#?}"
    );
    let c = v.signers[0].chain.as_ref().unwrap();
    assert!(
        c.reasons.iter().any(|r| r.starts_with("not yet valid")),
        "{c:?}"
    );
    // A trusted time (the caller's) is used as given.
    let at = VerifyOptions {
        at: Some(claimed),
        ..anchors()
    };
    assert!(verify(&cms, Some(MSG), &at).unwrap().valid);
}
