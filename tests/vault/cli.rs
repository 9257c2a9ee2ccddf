//! The vault through `sealctl` with the software sealer, against the openssl command line:
//! PKCS#12 import (default and -legacy, with and without password), the DB holds no clear key,
//! the CA's certificates verify for S/MIME and decrypt through the vault, revocation/CRL,
//! PKCS#12 export, sealer mismatch and recovery.

#[path = "common.rs"]
mod common;

use std::time::Instant;

use common::*;

fn init_sw(dir: &std::path::Path) -> String {
    let d = dir.join("data");
    let d = d.to_str().expect("utf8").to_string();
    let rec = dir.join("recovery.txt");
    ok(&[
        "vault",
        "init",
        "--data-dir",
        &d,
        SW,
        "--recovery-out",
        rec.to_str().expect("utf8"),
    ]);
    d
}

fn count_keys(d: &str) -> usize {
    let v: serde_json::Value =
        serde_json::from_slice(&ok(&["keys", "list", "--data-dir", d, SW])).expect("json");
    v.as_array().expect("array").len()
}

#[test]
fn pkcs12_imports_decrypt_and_db_holds_no_clear_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    require_openssl3(t);
    let d = init_sw(t);
    std::fs::write(t.join("pw"), "s3cret pass\n").expect("pw");
    let cases: &[(&str, bool, bool, bool)] = &[
        // name, legacy, password, ec
        ("def-pw", false, true, false),
        ("legacy-pw", true, true, false),
        ("def-nopw", false, false, false),
        ("legacy-nopw", true, false, false),
        ("ec-def-pw", false, true, true),
    ];
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (name, legacy, pw, ec)) in cases.iter().enumerate() {
        let email = format!("user{i}@example.org");
        make_user(t, name, &email, *ec);
        let p12 = format!("{name}.p12");
        let pass = if *pw { "pass:s3cret pass" } else { "pass:" };
        let mut args = vec![
            "pkcs12",
            "-export",
            "-inkey",
            &format!("{name}.key"),
            "-in",
            &format!("{name}.pem"),
            "-out",
            &p12,
            "-passout",
            pass,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if *legacy {
            args.push("-legacy".into());
        }
        let args_ref: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        openssl_ok(t, &args_ref);
        let p12_path = t.join(&p12);
        let mut imp = vec![
            "keys",
            "import",
            "--data-dir",
            &d,
            "--p12",
            p12_path.to_str().expect("utf8"),
            SW,
        ];
        let pw_path = t.join("pw");
        if *pw {
            imp.extend_from_slice(&["--password-file", pw_path.to_str().expect("utf8")]);
        }
        ok(&imp);
        roundtrip_through_vault(
            t,
            &d,
            &[SW],
            &email,
            &format!("{name}.pem"),
            &format!("secret text for {name}"),
        );
        // The key's PKCS#8 DER and its raw private value, to search the DB for.
        let der = openssl_ok(
            t,
            &["pkey", "-in", &format!("{name}.key"), "-outform", "DER"],
        );
        secrets.push((format!("{name} PKCS#8"), der));
        let text = String::from_utf8_lossy(&openssl_ok(
            t,
            &["pkey", "-in", &format!("{name}.key"), "-noout", "-text"],
        ))
        .to_string();
        let field = if *ec { "priv:" } else { "prime1:" };
        let hex: String = text
            .split(field)
            .nth(1)
            .expect("private field")
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .flat_map(|l| l.trim().split(':').map(String::from).collect::<Vec<_>>())
            .collect();
        let raw: Vec<u8> = (0..hex.len() / 2)
            .map(|j| u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).expect("hex"))
            .collect();
        let raw = if raw.first() == Some(&0) {
            raw[1..].to_vec()
        } else {
            raw
        };
        assert!(raw.len() >= 32, "{name}: private value too short");
        secrets.push((format!("{name} raw private value"), raw));
    }
    assert_eq!(count_keys(&d), cases.len());

    // Wrong password, a file that is no PKCS#12, and a mismatched key/cert: refused, nothing changes.
    std::fs::write(t.join("wrong"), "nope").expect("pw");
    let e = fails(&[
        "keys",
        "import",
        "--data-dir",
        &d,
        "--p12",
        t.join("def-pw.p12").to_str().expect("utf8"),
        "--password-file",
        t.join("wrong").to_str().expect("utf8"),
        SW,
    ]);
    assert!(e.contains("wrong password"), "{e}");
    let e = fails(&[
        "keys",
        "import",
        "--data-dir",
        &d,
        "--key",
        t.join("def-pw.key").to_str().expect("utf8"),
        "--cert",
        t.join("legacy-pw.pem").to_str().expect("utf8"),
        SW,
    ]);
    assert!(e.contains("does not match"), "{e}");
    assert_eq!(count_keys(&d), cases.len());

    let db = std::fs::read(std::path::Path::new(&d).join("vault.redb")).expect("db");
    for (what, bytes) in &secrets {
        assert!(
            !db.windows(bytes.len()).any(|w| w == bytes.as_slice()),
            "the database contains {what} in clear"
        );
        // Any 16-byte window of it would be a leak too.
        let probe = &bytes[bytes.len() / 2..bytes.len() / 2 + 16];
        assert!(
            !db.windows(16).any(|w| w == probe),
            "the database contains part of {what} in clear"
        );
    }
}

#[test]
fn ca_issues_smime_certificates_that_openssl_accepts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    require_openssl3(t);
    let d = init_sw(t);
    ok(&[
        "ca",
        "init",
        "--data-dir",
        &d,
        "--name",
        "Example Org Root CA",
        "--domain",
        "example.org",
        SW,
    ]);
    std::fs::write(t.join("ca.pem"), ok(&["ca", "cert", "--data-dir", &d, SW])).expect("ca");
    let start = Instant::now();
    let pem = ok(&["ca", "issue", "--data-dir", &d, "alice@example.org", SW]);
    eprintln!(
        "timing: `sealctl ca issue` (RSA-3072, incl. process start and vault open): {:?}",
        start.elapsed()
    );
    std::fs::write(t.join("alice.pem"), &pem).expect("alice");
    for purpose in ["smimeencrypt", "smimesign"] {
        let out = openssl_ok(
            t,
            &[
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                "ca.pem",
                "alice.pem",
            ],
        );
        assert!(String::from_utf8_lossy(&out).contains("OK"), "{purpose}");
    }
    let text = String::from_utf8_lossy(&openssl_ok(
        t,
        &["x509", "-in", "alice.pem", "-noout", "-text"],
    ))
    .to_string();
    assert!(text.contains("email:alice@example.org"), "{text}");
    assert!(text.contains("E-mail Protection"), "{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(text.contains("Public-Key: (3072 bit)"), "{text}");
    assert!(
        text.contains("1.2.840.113549.1.9.15") || text.contains("S/MIME Capabilities"),
        "{text}"
    );
    roundtrip_through_vault(
        t,
        &d,
        &[SW],
        "alice@example.org",
        "alice.pem",
        "to alice via the CA",
    );

    // Signing through the vault verifies with openssl against the CA.
    std::fs::write(t.join("plain.txt"), "Subject: hi\r\n\r\nsigned body\r\n").expect("plain");
    ok(&[
        "smime",
        "sign",
        "--data-dir",
        &d,
        "--user",
        "alice@example.org",
        SW,
        "--in",
        t.join("plain.txt").to_str().expect("utf8"),
        "--out",
        t.join("signed.eml").to_str().expect("utf8"),
    ]);
    openssl_ok(
        t,
        &[
            "cms",
            "-verify",
            "-in",
            "signed.eml",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "smimesign",
            "-out",
            "/dev/null",
        ],
    );

    // Renewal keeps the old key for decryption.
    let old_enc = t.join("old.p7m");
    std::fs::write(t.join("old.txt"), "old mail").expect("old");
    openssl_ok(
        t,
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-in",
            "old.txt",
            "-out",
            "old.p7m",
            "alice.pem",
        ],
    );
    std::fs::write(
        t.join("alice2.pem"),
        ok(&["ca", "issue", "--data-dir", &d, "alice@example.org", SW]),
    )
    .expect("alice2");
    let out = ok(&[
        "smime",
        "decrypt",
        "--data-dir",
        &d,
        "--user",
        "alice@example.org",
        SW,
        "--in",
        old_enc.to_str().expect("utf8"),
    ]);
    assert!(String::from_utf8_lossy(&out).contains("old mail"));
    let cur = ok(&[
        "keys",
        "export-cert",
        "--data-dir",
        &d,
        "alice@example.org",
        SW,
    ]);
    let alice2 = std::fs::read(t.join("alice2.pem")).expect("alice2");
    assert!(
        cur.starts_with(&alice2),
        "export-cert gives the renewed certificate first"
    );

    // Revocation and CRL.
    let serial = String::from_utf8_lossy(&openssl_ok(
        t,
        &["x509", "-in", "alice.pem", "-noout", "-serial"],
    ))
    .trim()
    .trim_start_matches("serial=")
    .to_string();
    ok(&["ca", "revoke", "--data-dir", &d, "--serial", &serial, SW]);
    std::fs::write(t.join("crl.pem"), ok(&["ca", "crl", "--data-dir", &d, SW])).expect("crl");
    openssl_ok(t, &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"]);
    let out = openssl(
        t,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "ca.pem",
            "alice.pem",
        ],
    );
    assert!(
        !out.status.success(),
        "a revoked certificate must fail the CRL check"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked")
            || String::from_utf8_lossy(&out.stderr).contains("revoked")
    );
    openssl_ok(
        t,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "ca.pem",
            "alice2.pem",
        ],
    );

    // Auto-enrolment on signing for an own domain; refused for a foreign one.
    ok(&[
        "smime",
        "sign",
        "--data-dir",
        &d,
        "--user",
        "bob@example.org",
        SW,
        "--in",
        t.join("plain.txt").to_str().expect("utf8"),
        "--out",
        t.join("bob.eml").to_str().expect("utf8"),
    ]);
    let e = fails(&[
        "smime",
        "sign",
        "--data-dir",
        &d,
        "--user",
        "eve@elsewhere.net",
        SW,
        "--in",
        t.join("plain.txt").to_str().expect("utf8"),
    ]);
    assert!(e.contains("not one of the organisation's domains"), "{e}");

    // PKCS#12 export, read back by openssl.
    std::fs::write(t.join("exp-pw"), "export pw\n").expect("pw");
    let p12 = t.join("alice-export.p12");
    ok(&[
        "keys",
        "export-pkcs12",
        "--data-dir",
        &d,
        "alice@example.org",
        "--password-file",
        t.join("exp-pw").to_str().expect("utf8"),
        "--out",
        p12.to_str().expect("utf8"),
        SW,
    ]);
    let dump = openssl_ok(
        t,
        &[
            "pkcs12",
            "-in",
            "alice-export.p12",
            "-passin",
            "pass:export pw",
            "-nodes",
        ],
    );
    let dump = String::from_utf8_lossy(&dump);
    assert!(dump.contains("BEGIN PRIVATE KEY") && dump.contains("BEGIN CERTIFICATE"));
}

#[test]
fn software_sealer_is_flagged_and_mismatch_refused_and_recovery_works() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let d = init_sw(t);
    let key_file = std::path::Path::new(&d).join("vault-key.DANGER-software-sealer");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(t.join("recovery.txt"))
            .expect("rec")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&["vault", "status", "--data-dir", &d])).expect("json");
    assert_eq!(st["sealed_by"], "software");
    assert!(
        st["warnings"]
            .as_array()
            .expect("w")
            .iter()
            .any(|w| w == "software sealer: NOT protected by a TPM"),
        "{st}"
    );
    let e = fails(&[
        "keys",
        "list",
        "--data-dir",
        &d,
        "--tpm",
        "swtpm:path=/nonexistent",
    ]);
    assert!(e.contains("--danger-software-sealer"), "{e}");
    // init twice is refused; init without a sealer choice is a usage error.
    fails(&["vault", "init", "--data-dir", &d, SW]);
    assert_eq!(
        sealctl(&[
            "vault",
            "init",
            "--data-dir",
            t.join("x").to_str().expect("utf8")
        ])
        .status
        .code(),
        Some(2)
    );

    // Lose the key file: the vault does not open; the recovery secret re-seals it.
    ok(&["ca", "init", "--data-dir", &d, "--name", "R", SW]);
    ok(&["ca", "issue", "--data-dir", &d, "carol@example.org", SW]);
    std::fs::remove_file(&key_file).expect("rm");
    fails(&["keys", "list", "--data-dir", &d, SW]);
    std::fs::write(t.join("bad-rec"), "AAAAA-BBBBB").expect("bad");
    let e = fails(&[
        "vault",
        "recover",
        "--data-dir",
        &d,
        "--recovery-file",
        t.join("bad-rec").to_str().expect("utf8"),
        SW,
    ]);
    assert!(e.contains("recovery"), "{e}");
    // `--recovery-file -`: the secret on standard input (as the box's console hands it over).
    let piped = |secret: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new(SEALCTL)
            .args([
                "vault",
                "recover",
                "--data-dir",
                &d,
                "--recovery-file",
                "-",
                SW,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sealctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(secret)
            .expect("write");
        child.wait_with_output().expect("sealctl")
    };
    let out = piped(b"AAAAA-BBBBB\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recovery secret is not valid"));
    let out = piped(&std::fs::read(t.join("recovery.txt")).expect("rec"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("vault recovered"));
    // And from a file.
    ok(&[
        "vault",
        "recover",
        "--data-dir",
        &d,
        "--recovery-file",
        t.join("recovery.txt").to_str().expect("utf8"),
        SW,
    ]);
    let list: serde_json::Value =
        serde_json::from_slice(&ok(&["keys", "list", "--data-dir", &d, SW])).expect("json");
    assert_eq!(list.as_array().expect("a").len(), 1);
    // The recovery secret never shows up in the database or in status output.
    let rec = std::fs::read_to_string(t.join("recovery.txt")).expect("rec");
    let secret_line = rec
        .lines()
        .find(|l| !l.starts_with('#'))
        .expect("line")
        .to_string();
    let db = std::fs::read(std::path::Path::new(&d).join("vault.redb")).expect("db");
    assert!(
        !db.windows(secret_line.len())
            .any(|w| w == secret_line.as_bytes())
    );
    let st = String::from_utf8_lossy(&ok(&["vault", "status", "--data-dir", &d])).to_string();
    assert!(!st.contains(&secret_line));
}

/// The first PEM certificate of `pem`.
fn first_pem(pem: &[u8]) -> String {
    let text = String::from_utf8_lossy(pem);
    let end = "-----END CERTIFICATE-----";
    let i = text.find(end).expect("a certificate") + end.len();
    format!("{}\n", &text[..i])
}

#[test]
fn intermediate_ca_under_a_corporate_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    require_openssl3(t);
    let d = init_sw(t);
    // The corporate root, made by openssl.
    let ca_ext = "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n";
    std::fs::write(t.join("ca.ext"), ca_ext).expect("ext");
    for root in ["root", "other-root"] {
        openssl_ok(
            t,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{root}.key"),
                "-out",
                &format!("{root}.pem"),
                "-days",
                "30",
                "-subj",
                &format!("/O=Corp/CN=Corp {root}"),
                "-addext",
                "basicConstraints=critical,CA:true",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    // `ca init --intermediate` writes a CSR and leaves the CA pending.
    ok(&[
        "ca",
        "init",
        "--data-dir",
        &d,
        "--name",
        "Example Issuing CA",
        "--domain",
        "example.org",
        "--intermediate",
        "--csr-out",
        t.join("inter.csr").to_str().expect("utf8"),
        SW,
    ]);
    openssl_ok(t, &["req", "-in", "inter.csr", "-noout", "-verify"]);
    let e = fails(&["ca", "issue", "--data-dir", &d, "alice@example.org", SW]);
    assert!(e.contains("waits for its certificate"), "{e}");
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&["vault", "status", "--data-dir", &d, SW])).expect("json");
    assert!(
        st["warnings"]
            .to_string()
            .contains("waits for its signed certificate"),
        "{st}"
    );
    let e = fails(&["ca", "init", "--data-dir", &d, "--name", "Again", SW]);
    assert!(e.contains("waits for its certificate"), "{e}");

    let sign_csr = |out: &str, ext: &str, root: &str| {
        openssl_ok(
            t,
            &[
                "x509",
                "-req",
                "-in",
                "inter.csr",
                "-CA",
                &format!("{root}.pem"),
                "-CAkey",
                &format!("{root}.key"),
                "-CAcreateserial",
                "-out",
                out,
                "-days",
                "30",
                "-extfile",
                ext,
            ],
        );
    };
    let import = |cert: &str, chain: &str| {
        let c = t.join(cert);
        let ch = t.join(chain);
        sealctl(&[
            "ca",
            "import-cert",
            "--data-dir",
            &d,
            "--cert",
            c.to_str().expect("utf8"),
            "--chain",
            ch.to_str().expect("utf8"),
            SW,
        ])
    };
    let refused = |cert: &str, chain: &str, why: &str| {
        let out = import(cert, chain);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{cert}: {err}");
        assert!(err.contains(why), "{cert}: expected {why:?}, got {err}");
    };
    // Refused, changing nothing: not a CA certificate; another key; the wrong chain.
    std::fs::write(
        t.join("leaf.ext"),
        "basicConstraints=CA:false\nkeyUsage=digitalSignature\n",
    )
    .expect("ext");
    sign_csr("not-ca.pem", "leaf.ext", "root");
    refused("not-ca.pem", "root.pem", "not a CA certificate");
    refused("root.pem", "root.pem", "not for the pending CA key");
    sign_csr("inter.pem", "ca.ext", "root");
    refused("inter.pem", "other-root.pem", "would not validate");

    // The right one.
    let out = import("inter.pem", "root.pem");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value =
        serde_json::from_slice(&ok(&["vault", "status", "--data-dir", &d, SW])).expect("json");
    assert!(!st["warnings"].to_string().contains("waits"), "{st}");
    let ca_out = ok(&["ca", "cert", "--data-dir", &d, SW]);
    assert_eq!(
        String::from_utf8_lossy(&ca_out)
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    // Issued certificates chain to the corporate root through the intermediate.
    let pem = ok(&["ca", "issue", "--data-dir", &d, "alice@example.org", SW]);
    assert_eq!(
        String::from_utf8_lossy(&pem)
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "the leaf, then the intermediate (the root is not repeated)"
    );
    std::fs::write(t.join("alice.pem"), first_pem(&pem)).expect("alice");
    for purpose in ["smimeencrypt", "smimesign"] {
        let out = openssl_ok(
            t,
            &[
                "verify",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "inter.pem",
                "-purpose",
                purpose,
                "alice.pem",
            ],
        );
        assert!(String::from_utf8_lossy(&out).contains("OK"), "{purpose}");
    }
    let out = openssl(
        t,
        &[
            "verify",
            "-CAfile",
            "other-root.pem",
            "-untrusted",
            "inter.pem",
            "alice.pem",
        ],
    );
    assert!(!out.status.success(), "another root does not accept it");
    roundtrip_through_vault(
        t,
        &d,
        &[SW],
        "alice@example.org",
        "alice.pem",
        "to alice under the corporate root",
    );
    // A signature made through the vault carries the intermediate: openssl needs only the root.
    std::fs::write(t.join("plain.txt"), "Subject: hi\r\n\r\nsigned body\r\n").expect("plain");
    ok(&[
        "smime",
        "sign",
        "--data-dir",
        &d,
        "--user",
        "alice@example.org",
        SW,
        "--in",
        t.join("plain.txt").to_str().expect("utf8"),
        "--out",
        t.join("signed.eml").to_str().expect("utf8"),
    ]);
    openssl_ok(
        t,
        &[
            "cms",
            "-verify",
            "-in",
            "signed.eml",
            "-CAfile",
            "root.pem",
            "-purpose",
            "smimesign",
            "-out",
            "/dev/null",
        ],
    );
    // The CRL is signed by the intermediate.
    ok(&["ca", "revoke", "--data-dir", &d, "alice@example.org", SW]);
    std::fs::write(t.join("crl.pem"), ok(&["ca", "crl", "--data-dir", &d, SW])).expect("crl");
    std::fs::write(t.join("chain.pem"), &ca_out).expect("chain");
    openssl_ok(
        t,
        &["crl", "-in", "crl.pem", "-CAfile", "chain.pem", "-noout"],
    );
    let out = openssl(
        t,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "alice.pem",
        ],
    );
    assert!(!out.status.success(), "revoked by the intermediate's CRL");
}
