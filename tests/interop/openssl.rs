//! Interop matrix against the OpenSSL 3.0 command line (`openssl cms`, `openssl smime`),
//! both directions, on a test PKI made at test time. Each cell is its own test, named
//! `<who makes it>::<algorithm and form>`.
//!
//! Cases OpenSSL 3.0 cannot make, so they have no test here (the engine's own unit tests
//! and the corpus cover them):
//! - X25519 recipients (RFC 8418): `openssl cms -encrypt` to an X25519 certificate fails
//!   with "operation not supported for this keytype".
//! - ChaCha20-Poly1305 AuthEnvelopedData (RFC 8103): `openssl cms -encrypt
//!   -chacha20-poly1305` fails with "unsupported content encryption algorithm".
//! - Ed25519 signatures (RFC 8419): `openssl cms -sign` with an Ed25519 key fails with
//!   "invalid digest" (`-md sha512`) or "no default digest" (without `-md`). The golden
//!   corpus has a public Ed25519 SignedData vector instead.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use std::path::Path;
use support::*;

/// How `openssl cms` writes its output.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// A whole S/MIME message (`-outform SMIME`), with From/To/Subject.
    Smime,
    /// Bare DER ContentInfo.
    Der,
    /// Bare PEM ContentInfo (`-----BEGIN CMS-----`).
    Pem,
    /// Streamed BER with indefinite lengths (`-stream -outform DER`).
    BerStream,
}

const FROM: &str = "Alice <alice@example.test>";
const TO: &str = "Bob <bob@example.test>";

/// A recipient of an `openssl cms -encrypt`: certificate and the `-keyopt`s for it.
struct Recip<'a> {
    leaf: &'a Leaf,
    keyopts: &'a [&'a str],
}

fn recip<'a>(leaf: &'a Leaf, keyopts: &'a [&'a str]) -> Recip<'a> {
    Recip { leaf, keyopts }
}

/// `openssl cms -encrypt` of [`entity`]`(BODY)`; returns the output bytes.
fn openssl_encrypt(
    dir: &Path,
    cipher: &str,
    recips: &[Recip],
    form: Form,
    extra: &[&str],
) -> Vec<u8> {
    let input = dir.join("entity.txt");
    write(&input, entity(BODY));
    let out = dir.join("encrypted");
    let mut args: Vec<String> = vec!["cms".into(), "-encrypt".into(), "-binary".into()];
    args.push(format!("-{cipher}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "-in".into(),
        p(&input).into(),
        "-out".into(),
        p(&out).into(),
    ]);
    match form {
        Form::Smime => args.extend(
            [
                "-outform",
                "SMIME",
                "-from",
                FROM,
                "-to",
                TO,
                "-subject",
                "openssl to sealctl",
            ]
            .map(String::from),
        ),
        Form::Der => args.extend(["-outform", "DER"].map(String::from)),
        Form::Pem => args.extend(["-outform", "PEM"].map(String::from)),
        Form::BerStream => args.extend(["-stream", "-outform", "DER"].map(String::from)),
    }
    for r in recips {
        args.extend(["-recip".into(), p(&r.leaf.cert).into()]);
        for opt in r.keyopts {
            args.extend(["-keyopt".into(), opt.to_string()]);
        }
    }
    openssl_ok(&args, None);
    read(&out)
}

/// How `sealctl smime decrypt` gets its key.
#[derive(Clone, Copy, Debug)]
enum KeySource {
    /// `--key KEY.pem --cert CERT.pem`.
    PemFiles,
    /// `--key KEY.der --cert CERT.der`.
    DerFiles,
    /// `--p12` OpenSSL 3 default with `--password-file`.
    P12,
    /// `--p12` OpenSSL 3 default, empty password, no `--password-file`.
    P12NoPass,
    /// `--p12 -legacy` with `--password-file`.
    P12Legacy,
    /// `--p12 -legacy`, empty password.
    P12LegacyNoPass,
    /// `--p12` with a password file ending in "\n".
    P12PasswordNewline,
}

fn key_source_args(leaf: &Leaf, src: KeySource) -> Vec<String> {
    let pki = pki();
    let v = |a: &[&Path]| -> Vec<String> { a.iter().map(|x| p(x).to_string()).collect() };
    match src {
        KeySource::PemFiles => key_args(leaf),
        KeySource::DerFiles => {
            let f = v(&[&leaf.key_der, &leaf.cert_der]);
            vec!["--key".into(), f[0].clone(), "--cert".into(), f[1].clone()]
        }
        KeySource::P12 => vec![
            "--p12".into(),
            p(&leaf.p12).into(),
            "--password-file".into(),
            p(&pki.password_file).into(),
        ],
        KeySource::P12NoPass => vec!["--p12".into(), p(&leaf.p12_nopass).into()],
        KeySource::P12Legacy => vec![
            "--p12".into(),
            p(&leaf.p12_legacy).into(),
            "--password-file".into(),
            p(&pki.password_file).into(),
        ],
        KeySource::P12LegacyNoPass => vec!["--p12".into(), p(&leaf.p12_legacy_nopass).into()],
        KeySource::P12PasswordNewline => vec![
            "--p12".into(),
            p(&leaf.p12).into(),
            "--password-file".into(),
            p(&pki.password_file_nl).into(),
        ],
    }
}

/// Decrypts `encrypted` (as made in `form`) with sealctl as `leaf` and checks the result.
#[track_caller]
fn sealctl_decrypts(encrypted: &[u8], form: Form, leaf: &Leaf, src: KeySource) {
    let mut args: Vec<String> = vec!["smime".into(), "decrypt".into()];
    args.extend(key_source_args(leaf, src));
    let out = sealctl(&args, Some(encrypted)).ok();
    let want = entity(BODY);
    match form {
        Form::Smime => {
            let (headers, _) = split_message(&out.stdout);
            assert_eq!(
                header(&headers, "from"),
                Some(FROM),
                "outer From kept: {headers:?}"
            );
            assert_eq!(
                header(&headers, "to"),
                Some(TO),
                "outer To kept: {headers:?}"
            );
            assert_eq!(
                header(&headers, "subject"),
                Some("openssl to sealctl"),
                "outer Subject kept: {headers:?}"
            );
            assert!(
                header(&headers, "x-sealgate-decrypted").is_some(),
                "X-Sealgate-Decrypted result header missing: {headers:?}"
            );
            assert_same_entity(&out.stdout, &want, "decrypted message");
        }
        // Bare CMS: the content bytes, exactly.
        _ => assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&want),
            "decrypted content must be the exact plaintext"
        ),
    }
}

/// One openssl → sealctl encryption cell.
#[track_caller]
fn enc_cell(
    cipher: &str,
    recips: &[Recip],
    form: Form,
    extra: &[&str],
    decrypt_as: &Leaf,
    src: KeySource,
) {
    let dir = tempdir();
    let encrypted = openssl_encrypt(dir.path(), cipher, recips, form, extra);
    sealctl_decrypts(&encrypted, form, decrypt_as, src);
}

/// openssl makes it, sealctl decrypts it.
mod openssl_encrypts {
    use super::*;

    macro_rules! rsa_pkcs1_smime {
        ($($name:ident => $cipher:literal,)*) => {$(
            #[test]
            fn $name() {
                let pki = pki();
                enc_cell($cipher, &[recip(&pki.alice, &[])], Form::Smime, &[], &pki.alice, KeySource::PemFiles);
            }
        )*};
    }

    rsa_pkcs1_smime! {
        cms_aes128_cbc_rsa_pkcs1_smime => "aes-128-cbc",
        cms_aes192_cbc_rsa_pkcs1_smime => "aes-192-cbc",
        cms_aes256_cbc_rsa_pkcs1_smime => "aes-256-cbc",
        cms_des_ede3_cbc_rsa_pkcs1_smime => "des-ede3-cbc",
        cms_aes128_gcm_rsa_pkcs1_smime => "aes-128-gcm",
        cms_aes192_gcm_rsa_pkcs1_smime => "aes-192-gcm",
        cms_aes256_gcm_rsa_pkcs1_smime => "aes-256-gcm",
    }

    #[test]
    fn cms_aes256_cbc_rsa_pkcs1_der() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, &[])],
            Form::Der,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa_pkcs1_pem() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, &[])],
            Form::Pem,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa_pkcs1_ber_stream() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, &[])],
            Form::BerStream,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_gcm_rsa_pkcs1_ber_stream() {
        let pki = pki();
        enc_cell(
            "aes-256-gcm",
            &[recip(&pki.alice, &[])],
            Form::BerStream,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_des_ede3_cbc_rsa_pkcs1_der() {
        let pki = pki();
        enc_cell(
            "des-ede3-cbc",
            &[recip(&pki.alice, &[])],
            Form::Der,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa3072_pkcs1_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.bob, &[])],
            Form::Smime,
            &[],
            &pki.bob,
            KeySource::PemFiles,
        );
    }

    const OAEP_SHA1: &[&str] = &["rsa_padding_mode:oaep", "rsa_oaep_md:sha1"];
    const OAEP_SHA256: &[&str] = &["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"];
    /// SHA-256 OAEP with MGF1-SHA-1, as Java/BouncyCastle sends it.
    const OAEP_SHA256_MGF1_SHA1: &[&str] = &[
        "rsa_padding_mode:oaep",
        "rsa_oaep_md:sha256",
        "rsa_mgf1_md:sha1",
    ];

    #[test]
    fn cms_aes256_cbc_rsa_oaep_sha1_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, OAEP_SHA1)],
            Form::Smime,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa_oaep_sha256_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, OAEP_SHA256)],
            Form::Smime,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa_oaep_sha256_mgf1_sha1_der() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, OAEP_SHA256_MGF1_SHA1)],
            Form::Der,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_gcm_rsa_oaep_sha256_der() {
        let pki = pki();
        enc_cell(
            "aes-256-gcm",
            &[recip(&pki.alice, OAEP_SHA256)],
            Form::Der,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_rsa_keyid_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.alice, &[])],
            Form::Smime,
            &["-keyid"],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p256_kdf_sha1_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.carol, &[])],
            Form::Smime,
            &[],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p256_kdf_sha256_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.carol, &["ecdh_kdf_md:sha256"])],
            Form::Smime,
            &[],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes128_cbc_ec_p256_kdf_sha256_der() {
        let pki = pki();
        enc_cell(
            "aes-128-cbc",
            &[recip(&pki.carol, &["ecdh_kdf_md:sha256"])],
            Form::Der,
            &[],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_gcm_ec_p256_kdf_sha256_der() {
        let pki = pki();
        enc_cell(
            "aes-256-gcm",
            &[recip(&pki.carol, &["ecdh_kdf_md:sha256"])],
            Form::Der,
            &[],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p256_keyid_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.carol, &[])],
            Form::Smime,
            &["-keyid"],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p384_kdf_sha1_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.dave, &[])],
            Form::Smime,
            &[],
            &pki.dave,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p384_kdf_sha256_smime() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.dave, &["ecdh_kdf_md:sha256"])],
            Form::Smime,
            &[],
            &pki.dave,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_aes256_cbc_ec_p384_kdf_sha384_ber_stream() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[recip(&pki.dave, &["ecdh_kdf_md:sha384"])],
            Form::BerStream,
            &[],
            &pki.dave,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_two_recipients_rsa_and_ec_decrypt_as_rsa() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[
                recip(&pki.alice, &[]),
                recip(&pki.carol, &["ecdh_kdf_md:sha256"]),
            ],
            Form::Smime,
            &[],
            &pki.alice,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_two_recipients_rsa_and_ec_decrypt_as_ec() {
        let pki = pki();
        enc_cell(
            "aes-256-cbc",
            &[
                recip(&pki.alice, &[]),
                recip(&pki.carol, &["ecdh_kdf_md:sha256"]),
            ],
            Form::Smime,
            &[],
            &pki.carol,
            KeySource::PemFiles,
        );
    }

    #[test]
    fn cms_two_rsa_recipients_decrypt_as_second() {
        let pki = pki();
        enc_cell(
            "aes-128-cbc",
            &[recip(&pki.alice, &[]), recip(&pki.bob, OAEP_SHA256)],
            Form::Der,
            &[],
            &pki.bob,
            KeySource::PemFiles,
        );
    }

    // Key sources for the same message.
    macro_rules! key_sources {
        ($($name:ident => $leaf:ident, $src:ident,)*) => {$(
            #[test]
            fn $name() {
                let pki = pki();
                enc_cell("aes-256-cbc", &[recip(&pki.$leaf, &[])], Form::Smime, &[], &pki.$leaf, KeySource::$src);
            }
        )*};
    }

    key_sources! {
        key_der_files_rsa => alice, DerFiles,
        key_der_files_ec => carol, DerFiles,
        key_p12_default_rsa => alice, P12,
        key_p12_default_no_password_rsa => alice, P12NoPass,
        key_p12_legacy_rsa => alice, P12Legacy,
        key_p12_legacy_no_password_rsa => alice, P12LegacyNoPass,
        key_p12_password_file_with_newline_rsa => alice, P12PasswordNewline,
        key_p12_default_ec => carol, P12,
        key_p12_legacy_ec => carol, P12Legacy,
    }

    /// `openssl smime -encrypt` (the older command; recipients after all options).
    #[track_caller]
    fn smime_cell(cipher: &str) {
        let pki = pki();
        let dir = tempdir();
        let input = dir.path().join("entity.txt");
        write(&input, entity(BODY));
        let out = dir.path().join("encrypted.eml");
        openssl_ok(
            [
                "smime",
                "-encrypt",
                "-binary",
                cipher,
                "-in",
                p(&input),
                "-out",
                p(&out),
                "-from",
                FROM,
                "-to",
                TO,
                "-subject",
                "openssl to sealctl",
                p(&pki.alice.cert),
            ],
            None,
        );
        sealctl_decrypts(&read(&out), Form::Smime, &pki.alice, KeySource::PemFiles);
    }

    #[test]
    fn smime_aes256_cbc_rsa_pkcs1() {
        smime_cell("-aes256");
    }

    #[test]
    fn smime_aes128_cbc_rsa_pkcs1() {
        smime_cell("-aes128");
    }

    #[test]
    fn smime_des_ede3_cbc_rsa_pkcs1() {
        smime_cell("-des3");
    }
}

// ---------------------------------------------------------------------------------------
// Signatures made by openssl, verified by sealctl.

/// `openssl cms -sign` of `content` as `leaf`; extra options (e.g. `-nodetach`, `-md`,
/// `-keyopt` after the signer) go in `opts`. Output form: SMIME unless `outform` says.
fn openssl_sign(dir: &Path, leaf: &Leaf, content: &[u8], opts: &[&str], from: &str) -> Vec<u8> {
    let input = dir.join("content.txt");
    write(&input, content);
    let out = dir.join("signed");
    let mut args: Vec<&str> = vec![
        "cms",
        "-sign",
        "-in",
        p(&input),
        "-out",
        p(&out),
        "-certfile",
        p(&pki().intermediate),
        "-from",
        from,
        "-to",
        TO,
        "-subject",
        "signed by openssl",
    ];
    // Signer options first, then the per-signer -keyopt/-md that follow it.
    let signer = p(&leaf.cert).to_string();
    let key = p(&leaf.key).to_string();
    let mut tail: Vec<&str> = Vec::new();
    for o in opts {
        tail.push(o);
    }
    args.extend(["-signer", &signer, "-inkey", &key]);
    args.extend(tail);
    openssl_ok(&args, None);
    read(&out)
}

/// Runs `sealctl smime verify` with `args` on `input`; returns the output and the
/// content written to `--out`.
fn sealctl_verify(input: &[u8], args: &[&str]) -> (Out, Vec<u8>) {
    let dir = tempdir();
    let content = dir.path().join("content.out");
    let mut all: Vec<&str> = vec!["smime", "verify", "--out", p(&content)];
    all.extend(args);
    let out = sealctl(&all, Some(input));
    let got = std::fs::read(&content).unwrap_or_default();
    (out, got)
}

/// A valid signature with a valid chain: exit 0, JSON verdict, signed content out.
#[track_caller]
fn verify_valid(signed: &[u8], want_content: &[u8], extra: &[&str]) -> serde_json::Value {
    let pki = pki();
    let mut args = vec!["--ca", p(&pki.root)];
    args.extend(extra);
    let (out, content) = sealctl_verify(signed, &args);
    let out = out.ok();
    let v = out.json();
    assert_same_entity(&content, want_content, "verified content");
    v
}

/// openssl signs, sealctl verifies.
mod openssl_signs {
    use super::*;

    fn alice_from() -> String {
        format!("Alice <{}>", pki().alice.email)
    }

    #[test]
    fn cms_rsa_sha256_detached_smime() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_rsa_sha256_opaque_smime() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-nodetach", "-md", "sha256"],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_rsa_sha256_opaque_bare_der() {
        let pki = pki();
        let dir = tempdir();
        openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-nodetach", "-binary", "-outform", "DER", "-md", "sha256"],
            &alice_from(),
        );
        let der = read(&dir.path().join("signed"));
        let (out, content) = sealctl_verify(&der, &["--ca", p(&pki.root)]);
        out.ok().json();
        assert_eq!(
            content,
            entity(BODY),
            "opaque content must come out exactly"
        );
    }

    #[test]
    fn cms_rsa_sha256_detached_bare_der_with_content() {
        let pki = pki();
        let dir = tempdir();
        openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-binary", "-outform", "DER", "-md", "sha256"],
            &alice_from(),
        );
        let der = read(&dir.path().join("signed"));
        let content_file = dir.path().join("content.txt");
        let (out, _) = sealctl_verify(&der, &["--ca", p(&pki.root), "--content", p(&content_file)]);
        out.ok().json();
    }

    /// SHA-1 fails by default (status `weak`); `--allow-weak` accepts it, still marked weak.
    #[test]
    fn cms_rsa_sha1_fails_unless_allowed() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha1"],
            &alice_from(),
        );
        let (out, _) = sealctl_verify(&signed, &["--ca", p(&pki.root)]);
        assert_eq!(out.code, 1, "SHA-1 must fail by default: {}", out.stderr);
        assert!(out.stderr.contains("weak"), "{}", out.stderr);
        let v = out.json();
        assert_eq!(v["valid"], false);
        assert_eq!(v["signers"][0]["signature"], "weak");
        let v = verify_valid(&signed, &entity(BODY), &["--allow-weak"]);
        assert_eq!(v["valid"], true);
        assert_mentions(&v, &["weak"], "SHA-1 signature");
    }

    #[test]
    fn cms_rsa_pss_sha256_saltlen_max() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &[
                "-md",
                "sha256",
                "-keyopt",
                "rsa_padding_mode:pss",
                "-keyopt",
                "rsa_pss_saltlen:max",
            ],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_rsa_pss_sha256_saltlen_digest() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &[
                "-md",
                "sha256",
                "-keyopt",
                "rsa_padding_mode:pss",
                "-keyopt",
                "rsa_pss_saltlen:digest",
            ],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_rsa_pss_sha512_rsa3072_saltlen_max() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.bob,
            &entity(BODY),
            &[
                "-md",
                "sha512",
                "-keyopt",
                "rsa_padding_mode:pss",
                "-keyopt",
                "rsa_pss_saltlen:max",
            ],
            &format!("Bob <{}>", pki.bob.email),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_ecdsa_p256_sha256() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.carol,
            &entity(BODY),
            &["-md", "sha256"],
            &format!("Carol <{}>", pki.carol.email),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_ecdsa_p384_sha384() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.dave,
            &entity(BODY),
            &["-md", "sha384"],
            &format!("Dave <{}>", pki.dave.email),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    #[test]
    fn cms_ecdsa_p384_sha384_opaque() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.dave,
            &entity(BODY),
            &["-nodetach", "-md", "sha384"],
            &format!("Dave <{}>", pki.dave.email),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    /// Text mode with LF-only input: openssl canonicalises to CRLF before signing.
    #[test]
    fn cms_rsa_text_mode_lf_input() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &lf(&entity(BODY)),
            &["-md", "sha256"],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    /// `-binary` with CRLF input: the bytes are signed as they are.
    #[test]
    fn cms_rsa_binary_crlf_input() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-binary", "-md", "sha256"],
            &alice_from(),
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    /// The signed message as a Unix mail store keeps it: every CRLF turned into LF. The
    /// verifier must canonicalise back to CRLF.
    #[test]
    fn cms_rsa_message_stored_with_lf_endings() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            &alice_from(),
        );
        verify_valid(&lf(&signed), &entity(BODY), &[]);
    }

    #[test]
    fn smime_command_rsa_detached() {
        let pki = pki();
        let dir = tempdir();
        let input = dir.path().join("content.txt");
        write(&input, entity(BODY));
        let out = dir.path().join("signed.eml");
        openssl_ok(
            [
                "smime",
                "-sign",
                "-in",
                p(&input),
                "-out",
                p(&out),
                "-signer",
                p(&pki.alice.cert),
                "-inkey",
                p(&pki.alice.key),
                "-certfile",
                p(&pki.intermediate),
                "-from",
                &alice_from(),
                "-to",
                TO,
                "-subject",
                "openssl smime",
            ],
            None,
        );
        verify_valid(&read(&out), &entity(BODY), &[]);
    }

    /// Without --ca: signatures alone, exit 0, and the verdict says the chain was not checked.
    #[test]
    fn cms_rsa_without_ca_checks_signature_only() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            &alice_from(),
        );
        let (out, content) = sealctl_verify(&signed, &[]);
        let out = out.ok();
        out.json();
        assert_same_entity(&content, &entity(BODY), "verified content");
    }

    /// The root given in DER.
    #[test]
    fn cms_rsa_ca_file_der() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            &alice_from(),
        );
        let (out, _) = sealctl_verify(&signed, &["--ca", p(&pki.root_der)]);
        out.ok().json();
    }
}

/// Chain failures: a good signature whose certificate must not be trusted. Non-zero exit,
/// the reason in the JSON verdict.
mod chain_failures {
    use super::*;

    #[track_caller]
    fn refused(leaf: &Leaf, from: &str, extra: &[&str], words: &[&str]) {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(dir.path(), leaf, &entity(BODY), &["-md", "sha256"], from);
        let mut args = vec!["--ca", p(&pki.root)];
        args.extend(extra);
        let (out, _) = sealctl_verify(&signed, &args);
        assert!(
            out.code != 0 && out.code != 101,
            "`{}` must fail (not 0, not a panic), got {}\nstdout: {}\nstderr: {}",
            out.what,
            out.code,
            out.stdout_str(),
            out.stderr
        );
        let v = out.json();
        assert_mentions(&v, words, "refused chain");
    }

    #[test]
    fn expired_at_signing_time() {
        let pki = pki();
        refused(
            &pki.expired,
            "Expired <expired@example.test>",
            &[],
            &["expired", "validity", "not after", "notafter"],
        );
    }

    /// The verdict without `--ca`: the signature alone, `"chain": "unchecked"` and never
    /// `"valid": true`; the exit status reflects the signature.
    #[test]
    fn no_ca_is_never_valid() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            "Alice <alice@example.test>",
        );
        let (out, _) = sealctl_verify(&signed, &[]);
        let v = out.ok().json();
        assert_eq!(v["valid"], false, "{v}");
        assert_eq!(v["chain"], "unchecked", "{v}");
        assert_eq!(v["signatures_valid"], true, "{v}");
    }

    /// A multi-address From is refused even when the signer is one of the addresses.
    #[test]
    fn multi_address_from_is_refused() {
        let pki = pki();
        refused(
            &pki.alice,
            "Mallory <mallory@evil.test>, Alice <alice@example.test>",
            &[],
            &["From field names 2 addresses"],
        );
    }

    #[test]
    fn valid_cert_but_expired_at_given_time() {
        let pki = pki();
        refused(
            &pki.alice,
            "Alice <alice@example.test>",
            &["--at", "2099-01-01T00:00:00Z"],
            &["expired", "validity", "not after", "notafter"],
        );
    }

    #[test]
    fn not_yet_valid_at_given_time() {
        let pki = pki();
        refused(
            &pki.alice,
            "Alice <alice@example.test>",
            &["--at", "2001-01-01T00:00:00Z"],
            &[
                "not yet valid",
                "notyetvalid",
                "validity",
                "not before",
                "notbefore",
            ],
        );
    }

    #[test]
    fn no_email_protection_eku() {
        let pki = pki();
        refused(
            &pki.noeku,
            "No EKU <noeku@example.test>",
            &[],
            &[
                "emailprotection",
                "email protection",
                "extended key usage",
                "extendedkeyusage",
                "eku",
            ],
        );
    }

    #[test]
    fn key_usage_without_digital_signature() {
        let pki = pki();
        refused(
            &pki.badku,
            "Bad KU <badku@example.test>",
            &[],
            &[
                "key usage",
                "keyusage",
                "digitalsignature",
                "digital signature",
            ],
        );
    }

    #[test]
    fn revoked_with_crl() {
        let pki = pki();
        refused(
            &pki.revoked,
            "Revoked <revoked@example.test>",
            &["--crl", p(&pki.crl)],
            &["revoked"],
        );
    }

    #[test]
    fn from_address_not_in_certificate() {
        let pki = pki();
        refused(
            &pki.alice,
            "Mallory <mallory@example.test>",
            &[],
            &["from", "address", "email", "mismatch"],
        );
    }

    #[test]
    fn unknown_ca() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            "Alice <alice@example.test>",
        );
        let (out, _) = sealctl_verify(&signed, &["--ca", p(&pki.other_root)]);
        assert!(
            out.code != 0 && out.code != 101,
            "unknown CA must fail: {} {}",
            out.code,
            out.stderr
        );
        out.json();
    }

    /// The revoked leaf without a CRL is not known to be revoked: valid.
    #[test]
    fn revoked_leaf_without_crl_is_valid() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.revoked,
            &entity(BODY),
            &["-md", "sha256"],
            "R <revoked@example.test>",
        );
        verify_valid(&signed, &entity(BODY), &[]);
    }

    /// A CRL given for a chain without revoked certificates changes nothing.
    #[test]
    fn good_leaf_with_crl_is_valid() {
        let pki = pki();
        let dir = tempdir();
        let signed = openssl_sign(
            dir.path(),
            &pki.alice,
            &entity(BODY),
            &["-md", "sha256"],
            "Alice <alice@example.test>",
        );
        verify_valid(&signed, &entity(BODY), &["--crl", p(&pki.crl)]);
    }
}

// ---------------------------------------------------------------------------------------
// sealctl makes it, openssl reads it.

const OID_AES128_CBC: &str = "2.16.840.1.101.3.4.1.2";
const OID_AES256_CBC: &str = "2.16.840.1.101.3.4.1.42";
const OID_AES128_GCM: &str = "2.16.840.1.101.3.4.1.6";
const OID_AES256_GCM: &str = "2.16.840.1.101.3.4.1.46";
const OID_RSAES_OAEP: &str = "1.2.840.113549.1.1.7";
const OID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";
const OID_SMIME_CAPABILITIES: &str = "1.2.840.113549.1.9.15";

/// `openssl cms -cmsout -print` of an S/MIME message, for checking algorithms.
fn cms_print(message: &[u8]) -> String {
    let dir = tempdir();
    let f = dir.path().join("m.eml");
    write(&f, message);
    openssl_ok(["cms", "-cmsout", "-print", "-in", p(&f)], None).stdout_str()
}

mod sealctl_encrypts {
    use super::*;

    /// sealctl encrypts a message to `to`; each of them decrypts it with openssl.
    #[track_caller]
    fn cell(to: &[&Leaf], opts: &[&str], oids: &[&str], auth_enveloped: bool) {
        let msg = message(FROM, TO, "sealctl to openssl", BODY);
        let mut args: Vec<&str> = vec!["smime", "encrypt"];
        for leaf in to {
            args.extend(["--to", p(&leaf.cert)]);
        }
        args.extend(opts);
        let out = sealctl(&args, Some(&msg)).ok();
        let (headers, _) = split_message(&out.stdout);
        assert_eq!(
            header(&headers, "from"),
            Some(FROM),
            "outer From kept: {headers:?}"
        );
        assert_eq!(
            header(&headers, "subject"),
            Some("sealctl to openssl"),
            "Subject kept"
        );
        let ct = header(&headers, "content-type")
            .unwrap_or("")
            .to_lowercase()
            .replace('"', "");
        assert!(
            ct.starts_with("application/pkcs7-mime"),
            "Content-Type: {ct}"
        );
        let want_type = if auth_enveloped {
            "smime-type=authenveloped-data"
        } else {
            "smime-type=enveloped-data"
        };
        assert!(
            ct.contains(want_type),
            "Content-Type should say {want_type}: {ct}"
        );

        let printed = cms_print(&out.stdout);
        for oid in oids {
            assert!(
                printed.contains(oid),
                "expected algorithm {oid} in:\n{printed}"
            );
        }

        let dir = tempdir();
        let enc = dir.path().join("encrypted.eml");
        write(&enc, &out.stdout);
        for leaf in to {
            let dec = dir.path().join(format!("{}.out", leaf.name));
            openssl_ok(
                [
                    "cms",
                    "-decrypt",
                    "-in",
                    p(&enc),
                    "-inkey",
                    p(&leaf.key),
                    "-recip",
                    p(&leaf.cert),
                    "-out",
                    p(&dec),
                ],
                None,
            );
            assert_same_entity(
                &read(&dec),
                &entity(BODY),
                &format!("openssl decrypt as {}", leaf.name),
            );
        }
    }

    #[test]
    fn default_cipher_rsa() {
        let pki = pki();
        // The default every tested client decrypts: AES-256-CBC, PKCS#1 v1.5.
        cell(&[&pki.alice], &[], &[OID_AES256_CBC], false);
    }

    #[test]
    fn aes128_cbc_rsa_pkcs1() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes128-cbc"],
            &[OID_AES128_CBC],
            false,
        );
    }

    #[test]
    fn aes256_cbc_rsa_pkcs1() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes256-cbc"],
            &[OID_AES256_CBC],
            false,
        );
    }

    #[test]
    fn aes128_gcm_rsa_pkcs1() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes128-gcm"],
            &[OID_AES128_GCM],
            true,
        );
    }

    #[test]
    fn aes256_gcm_rsa_pkcs1() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes256-gcm"],
            &[OID_AES256_GCM],
            true,
        );
    }

    #[test]
    fn aes256_cbc_rsa_oaep_sha1() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes256-cbc", "--oaep", "sha1"],
            &[OID_AES256_CBC, OID_RSAES_OAEP],
            false,
        );
    }

    #[test]
    fn aes256_cbc_rsa_oaep_sha256() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes256-cbc", "--oaep", "sha256"],
            // OpenSSL prints the OAEP parameters' hash by name, not by OID.
            &[OID_AES256_CBC, OID_RSAES_OAEP, ":sha256"],
            false,
        );
    }

    #[test]
    fn aes256_gcm_rsa_oaep_sha256() {
        let pki = pki();
        cell(
            &[&pki.alice],
            &["--cipher", "aes256-gcm", "--oaep", "sha256"],
            &[OID_AES256_GCM, OID_RSAES_OAEP],
            true,
        );
    }

    #[test]
    fn aes256_cbc_rsa3072() {
        let pki = pki();
        cell(
            &[&pki.bob],
            &["--cipher", "aes256-cbc"],
            &[OID_AES256_CBC],
            false,
        );
    }

    #[test]
    fn aes256_cbc_ec_p256() {
        let pki = pki();
        cell(
            &[&pki.carol],
            &["--cipher", "aes256-cbc"],
            &[OID_AES256_CBC],
            false,
        );
    }

    #[test]
    fn aes128_cbc_ec_p256() {
        let pki = pki();
        cell(
            &[&pki.carol],
            &["--cipher", "aes128-cbc"],
            &[OID_AES128_CBC],
            false,
        );
    }

    #[test]
    fn aes256_gcm_ec_p256() {
        let pki = pki();
        cell(
            &[&pki.carol],
            &["--cipher", "aes256-gcm"],
            &[OID_AES256_GCM],
            true,
        );
    }

    #[test]
    fn aes256_cbc_ec_p384() {
        let pki = pki();
        cell(
            &[&pki.dave],
            &["--cipher", "aes256-cbc"],
            &[OID_AES256_CBC],
            false,
        );
    }

    #[test]
    fn aes128_gcm_ec_p384() {
        let pki = pki();
        cell(
            &[&pki.dave],
            &["--cipher", "aes128-gcm"],
            &[OID_AES128_GCM],
            true,
        );
    }

    #[test]
    fn three_recipients_rsa_oaep_and_ec() {
        let pki = pki();
        cell(
            &[&pki.alice, &pki.bob, &pki.carol],
            &["--oaep", "sha256"],
            &[OID_RSAES_OAEP],
            false,
        );
    }

    #[test]
    fn recipient_cert_in_der() {
        let pki = pki();
        let msg = message(FROM, TO, "der recipient", BODY);
        let out = sealctl(
            ["smime", "encrypt", "--to", p(&pki.alice.cert_der)],
            Some(&msg),
        )
        .ok();
        let dir = tempdir();
        let enc = dir.path().join("e.eml");
        write(&enc, &out.stdout);
        let dec = openssl_ok(
            [
                "cms",
                "-decrypt",
                "-in",
                p(&enc),
                "-inkey",
                p(&pki.alice.key),
                "-recip",
                p(&pki.alice.cert),
            ],
            None,
        );
        assert_same_entity(&dec.stdout, &entity(BODY), "openssl decrypt");
    }

    /// The older `openssl smime -decrypt` command reads it too.
    #[test]
    fn openssl_smime_command_decrypts() {
        let pki = pki();
        let msg = message(FROM, TO, "smime command", BODY);
        let out = sealctl(
            [
                "smime",
                "encrypt",
                "--to",
                p(&pki.alice.cert),
                "--cipher",
                "aes256-cbc",
            ],
            Some(&msg),
        )
        .ok();
        let dir = tempdir();
        let enc = dir.path().join("e.eml");
        write(&enc, &out.stdout);
        let dec = openssl_ok(
            [
                "smime",
                "-decrypt",
                "-in",
                p(&enc),
                "-inkey",
                p(&pki.alice.key),
                "-recip",
                p(&pki.alice.cert),
            ],
            None,
        );
        assert_same_entity(&dec.stdout, &entity(BODY), "openssl smime -decrypt");
    }

    /// --in/--out files instead of stdin/stdout.
    #[test]
    fn in_out_files() {
        let pki = pki();
        let dir = tempdir();
        let input = dir.path().join("in.eml");
        let output = dir.path().join("out.eml");
        write(&input, message(FROM, TO, "files", BODY));
        let out = sealctl(
            [
                "smime",
                "encrypt",
                "--to",
                p(&pki.alice.cert),
                "--in",
                p(&input),
                "--out",
                p(&output),
            ],
            None,
        )
        .ok();
        assert!(out.stdout.is_empty(), "nothing on stdout with --out");
        let dec = openssl_ok(
            [
                "cms",
                "-decrypt",
                "-in",
                p(&output),
                "-inkey",
                p(&pki.alice.key),
                "-recip",
                p(&pki.alice.cert),
            ],
            None,
        );
        assert_same_entity(&dec.stdout, &entity(BODY), "openssl decrypt");
    }
}

mod sealctl_signs {
    use super::*;

    /// How sealctl gets the signing key.
    enum Signer<'a> {
        /// `--key` and `--cert` (the chain file: leaf then intermediate).
        Files(&'a Leaf),
        P12(&'a Leaf),
        P12Legacy(&'a Leaf),
    }

    /// sealctl signs; openssl cms -verify and openssl smime -verify accept it with only the
    /// root as anchor (so the chain must be in the message); the signed attributes carry
    /// signingTime and smimeCapabilities.
    #[track_caller]
    fn cell(signer: Signer, opaque: bool) {
        cell_with(signer, opaque, &[]);
    }

    #[track_caller]
    fn cell_with(signer: Signer, opaque: bool, extra: &[&str]) {
        let pki = pki();
        let (leaf, key_args): (&Leaf, Vec<String>) = match signer {
            Signer::Files(l) => (
                l,
                vec![
                    "--key".into(),
                    p(&l.key).into(),
                    "--cert".into(),
                    p(&l.chain).into(),
                ],
            ),
            Signer::P12(l) => (
                l,
                vec![
                    "--p12".into(),
                    p(&l.p12).into(),
                    "--password-file".into(),
                    p(&pki.password_file).into(),
                ],
            ),
            Signer::P12Legacy(l) => (
                l,
                vec![
                    "--p12".into(),
                    p(&l.p12_legacy).into(),
                    "--password-file".into(),
                    p(&pki.password_file).into(),
                ],
            ),
        };
        let from = format!("{} <{}>", leaf.name, leaf.email);
        let msg = message(&from, TO, "sealctl signs", BODY);
        let mut args: Vec<String> = vec!["smime".into(), "sign".into()];
        args.extend(key_args);
        if opaque {
            args.push("--opaque".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = sealctl(&args, Some(&msg)).ok();
        let (headers, _) = split_message(&out.stdout);
        assert_eq!(
            header(&headers, "from"),
            Some(from.as_str()),
            "outer From kept"
        );
        assert_eq!(
            header(&headers, "subject"),
            Some("sealctl signs"),
            "Subject kept"
        );
        let ct = header(&headers, "content-type")
            .unwrap_or("")
            .to_lowercase()
            .replace('"', "");
        if opaque {
            assert!(
                ct.starts_with("application/pkcs7-mime") && ct.contains("smime-type=signed-data"),
                "opaque Content-Type: {ct}"
            );
        } else {
            assert!(
                ct.starts_with("multipart/signed")
                    && ct.contains("protocol=application/pkcs7-signature"),
                "detached Content-Type: {ct}"
            );
        }

        let dir = tempdir();
        let signed = dir.path().join("signed.eml");
        write(&signed, &out.stdout);
        // `openssl smime` (the PKCS#7 code) cannot verify RSA-PSS at all; `openssl cms` can.
        let commands: &[&str] = if extra.contains(&"--pss") {
            &["cms"]
        } else {
            &["cms", "smime"]
        };
        for &command in commands {
            let content = dir.path().join(format!("{command}.out"));
            openssl_ok(
                [
                    command,
                    "-verify",
                    "-in",
                    p(&signed),
                    "-CAfile",
                    p(&pki.root),
                    "-out",
                    p(&content),
                ],
                None,
            );
            assert_same_entity(
                &read(&content),
                &entity(BODY),
                &format!("openssl {command} -verify content"),
            );
        }
        let printed = cms_print(&out.stdout);
        assert!(
            printed.contains(OID_SIGNING_TIME),
            "signingTime missing:\n{printed}"
        );
        assert!(
            printed.contains(OID_SMIME_CAPABILITIES),
            "smimeCapabilities missing:\n{printed}"
        );
    }

    #[test]
    fn rsa_detached_key_files() {
        cell(Signer::Files(&pki().alice), false);
    }

    #[test]
    fn rsa_opaque_key_files() {
        cell(Signer::Files(&pki().alice), true);
    }

    #[test]
    fn rsa3072_detached_key_files() {
        cell(Signer::Files(&pki().bob), false);
    }

    #[test]
    fn ec_p256_detached_key_files() {
        cell(Signer::Files(&pki().carol), false);
    }

    #[test]
    fn ec_p256_opaque_key_files() {
        cell(Signer::Files(&pki().carol), true);
    }

    #[test]
    fn ec_p384_detached_key_files() {
        cell(Signer::Files(&pki().dave), false);
    }

    #[test]
    fn rsa_pss_detached_key_files() {
        cell_with(Signer::Files(&pki().alice), false, &["--pss"]);
    }

    #[test]
    fn rsa_pss_opaque_p12_default() {
        cell_with(Signer::P12(&pki().alice), true, &["--pss"]);
    }

    #[test]
    fn rsa_detached_p12_default() {
        cell(Signer::P12(&pki().alice), false);
    }

    #[test]
    fn rsa_opaque_p12_legacy() {
        cell(Signer::P12Legacy(&pki().alice), true);
    }

    #[test]
    fn rsa_detached_p12_legacy() {
        cell(Signer::P12Legacy(&pki().alice), false);
    }

    #[test]
    fn ec_p256_detached_p12_default() {
        cell(Signer::P12(&pki().carol), false);
    }

    #[test]
    fn ec_p384_detached_p12_legacy() {
        cell(Signer::P12Legacy(&pki().dave), false);
    }

    /// sealctl's own verify accepts what sealctl signs, with the chain.
    #[test]
    fn sealctl_verifies_its_own_signature() {
        let pki = pki();
        let msg = message("Alice <alice@example.test>", TO, "own", BODY);
        let mut args = vec!["smime".to_string(), "sign".to_string()];
        args.extend([
            "--key".into(),
            p(&pki.alice.key).into(),
            "--cert".into(),
            p(&pki.alice.chain).into(),
        ]);
        let out = sealctl(&args, Some(&msg)).ok();
        verify_valid(&out.stdout, &entity(BODY), &[]);
    }
}

/// Legacy RSA keys under 2048 bits: mail encrypted to them years ago still opens; nothing new
/// is encrypted to them.
mod legacy_keys {
    use super::*;

    #[test]
    fn rsa_1024_decrypts_openssl_mail_and_is_never_encrypted_to() {
        let dir = tempdir();
        let d = dir.path();
        let (key, cert) = (d.join("old.key"), d.join("old.pem"));
        openssl_ok(
            [
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-newkey",
                "rsa:1024",
                "-days",
                "30",
                "-subj",
                "/CN=Old Key/emailAddress=old@example.test",
                "-keyout",
                p(&key),
                "-out",
                p(&cert),
            ],
            None,
        );
        let input = d.join("entity.txt");
        write(&input, entity(BODY));
        for (form, extra) in [
            ("SMIME", &[][..]),
            ("DER", &["-keyopt", "rsa_padding_mode:oaep"][..]),
        ] {
            let enc = d.join("enc");
            let mut args = vec![
                "cms",
                "-encrypt",
                "-binary",
                "-aes256",
                "-in",
                p(&input),
                "-out",
                p(&enc),
                "-outform",
                form,
                "-recip",
                p(&cert),
            ];
            args.extend_from_slice(extra);
            openssl_ok(&args, None);
            let out = sealctl(
                [
                    "smime",
                    "decrypt",
                    "--key",
                    p(&key),
                    "--cert",
                    p(&cert),
                    "--in",
                    p(&enc),
                ],
                None,
            )
            .ok();
            assert_same_entity(&out.stdout, &entity(BODY), "decrypted with a 1024-bit key");
        }
        // Encrypting to it is refused with one clear line, and nothing is written.
        let refused = d.join("refused.out");
        let out = sealctl(
            [
                "smime",
                "encrypt",
                "--to",
                p(&cert),
                "--in",
                p(&input),
                "--out",
                p(&refused),
            ],
            None,
        );
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("1024-bit RSA"), "{}", out.stderr);
        assert!(!refused.exists(), "no output for a refused encryption");
        // Signatures made with it (by openssl) verify only when weak ones are allowed, and
        // are reported as weak either way.
        let signed = d.join("signed.eml");
        openssl_ok(
            [
                "cms",
                "-sign",
                "-md",
                "sha256",
                "-in",
                p(&input),
                "-signer",
                p(&cert),
                "-inkey",
                p(&key),
                "-from",
                "old@example.test",
                "-out",
                p(&signed),
            ],
            None,
        );
        let signed = read(&signed);
        let (out, _) = sealctl_verify(&signed, &["--ca", p(&cert)]);
        assert_eq!(
            out.code, 1,
            "a 1024-bit signer must fail by default: {}",
            out.stderr
        );
        let v = out.json();
        assert_eq!(v["signers"][0]["signature"], "weak", "{v}");
        let (out, _) = sealctl_verify(&signed, &["--ca", p(&cert), "--allow-weak"]);
        let v = out.ok().json();
        assert_eq!(v["valid"], true, "{v}");
        assert_mentions(&v, &["rsa-1024"], "legacy signer");
        // Signing with it is refused.
        let out = sealctl(
            [
                "smime",
                "sign",
                "--key",
                p(&key),
                "--cert",
                p(&cert),
                "--in",
                p(&input),
            ],
            None,
        );
        assert!(out.code != 0 && out.code != 101, "{}", out.stderr);
    }
}
