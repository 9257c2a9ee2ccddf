//! Negative cases: tampered, truncated, garbage and wrong-key input give one clear line on
//! stderr and exit code 1 or 2 (never 101, a panic); a 50 MiB message goes through in
//! bounded memory; RSA PKCS#1 v1.5 decryption does not tell a wrong key from bad padding.

// wait4() is the one libc call: it gives one child's own peak RSS, which
// getrusage(RUSAGE_CHILDREN) cannot while other tests run children in parallel.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use std::path::Path;
use support::*;

/// An enveloped message made by openssl for alice, bare DER, in `dir/name`.
fn openssl_enveloped_der(dir: &Path, name: &str, cipher: &str) -> std::path::PathBuf {
    let pki = pki();
    let input = dir.join("entity.txt");
    write(&input, entity(BODY));
    let out = dir.join(name);
    openssl_ok(
        [
            "cms",
            "-encrypt",
            "-binary",
            cipher,
            "-in",
            p(&input),
            "-out",
            p(&out),
            "-outform",
            "DER",
            "-recip",
            p(&pki.alice.cert),
        ],
        None,
    );
    out
}

/// An opaque signed-data by alice, bare DER.
fn openssl_signed_der(dir: &Path) -> std::path::PathBuf {
    let pki = pki();
    let input = dir.join("content.txt");
    write(&input, entity(BODY));
    let out = dir.join("signed.der");
    openssl_ok(
        [
            "cms",
            "-sign",
            "-nodetach",
            "-binary",
            "-md",
            "sha256",
            "-in",
            p(&input),
            "-out",
            p(&out),
            "-outform",
            "DER",
            "-signer",
            p(&pki.alice.cert),
            "-inkey",
            p(&pki.alice.key),
            "-certfile",
            p(&pki.intermediate),
        ],
        None,
    );
    out
}

fn decrypt_as_alice(input: &[u8]) -> Out {
    let pki = pki();
    let mut args = vec!["smime".to_string(), "decrypt".to_string()];
    args.extend(key_args(&pki.alice));
    sealctl(&args, Some(input))
}

/// The last primitive `[0]` in a DER EnvelopedData/AuthEnvelopedData: encryptedContent.
fn encrypted_content(items: &[Asn1Item]) -> &Asn1Item {
    items
        .iter()
        .rev()
        .find(|i| i.primitive && i.tag.starts_with("cont [ 0 ]"))
        .expect("no encryptedContent [0] found")
}

#[test]
fn tampered_ciphertext_cbc_is_a_clear_error() {
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-cbc");
    let mut der = read(&f);
    let items = asn1parse(&f);
    let ec = encrypted_content(&items);
    let start = ec.offset + ec.header_len;
    let end = start + ec.len;
    assert!(ec.len >= 32, "encryptedContent too short: {ec:?}");
    // Flip the last byte of the next-to-last block: in CBC that flips the last plaintext
    // byte, the padding length, so the padding check fails deterministically.
    der[end - 17] ^= 0x01;
    decrypt_as_alice(&der).clean_failure();
}

#[test]
fn tampered_ciphertext_gcm_is_a_clear_error() {
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-gcm");
    let mut der = read(&f);
    let items = asn1parse(&f);
    let ec = encrypted_content(&items);
    der[ec.offset + ec.header_len + ec.len / 2] ^= 0x80;
    decrypt_as_alice(&der).clean_failure();
}

#[test]
fn tampered_signature_is_invalid() {
    let pki = pki();
    let dir = tempdir();
    let f = openssl_signed_der(dir.path());
    let mut der = read(&f);
    // No unsigned attributes: the last OCTET STRING is the signature value.
    let items = asn1parse(&f);
    let sig = items
        .iter()
        .rev()
        .find(|i| i.tag.starts_with("OCTET STRING"))
        .unwrap();
    der[sig.offset + sig.header_len + sig.len / 2] ^= 0x01;
    let out = sealctl(["smime", "verify", "--ca", p(&pki.root)], Some(&der));
    assert!(
        out.code != 0 && out.code != 101,
        "tampered signature must fail: {} {}",
        out.code,
        out.stderr
    );
    let v = out.json();
    assert_mentions(
        &v,
        &["invalid", "bad signature", "mismatch", "failed"],
        "tampered signature",
    );
}

#[test]
fn tampered_signed_content_is_invalid() {
    let pki = pki();
    let dir = tempdir();
    let input = dir.path().join("content.txt");
    write(&input, entity(BODY));
    let out = dir.path().join("signed.eml");
    openssl_ok(
        [
            "cms",
            "-sign",
            "-md",
            "sha256",
            "-in",
            p(&input),
            "-out",
            p(&out),
            "-signer",
            p(&pki.alice.cert),
            "-inkey",
            p(&pki.alice.key),
            "-from",
            "alice@example.test",
        ],
        None,
    );
    let signed = String::from_utf8(read(&out))
        .unwrap()
        .replacen("quarterly", "quarterlY", 1);
    let out = sealctl(
        ["smime", "verify", "--ca", p(&pki.root)],
        Some(signed.as_bytes()),
    );
    assert!(
        out.code != 0 && out.code != 101,
        "tampered content must fail: {} {}",
        out.code,
        out.stderr
    );
    out.json();
}

/// Amplification: a message with more recipient entries than the engine reads (256 by
/// default; here 300 entries all naming alice, made by openssl) is refused before any key is
/// used; 40 entries naming her decrypt (her key opens one of them).
#[test]
fn too_many_recipient_entries_are_refused_before_any_key_is_used() {
    let pki = pki();
    let dir = tempdir();
    let input = dir.path().join("entity.txt");
    write(&input, entity(BODY));
    for (n, refused) in [(40usize, false), (300, true)] {
        let out = dir.path().join(format!("many-{n}.der"));
        let mut args: Vec<String> = [
            "cms",
            "-encrypt",
            "-binary",
            "-aes256",
            "-in",
            p(&input),
            "-out",
            p(&out),
            "-outform",
            "DER",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..n {
            args.extend(["-recip".to_string(), p(&pki.alice.cert).to_string()]);
        }
        openssl_ok(&args, None);
        let mut args = vec!["smime".to_string(), "decrypt".to_string()];
        args.extend(key_args(&pki.alice));
        let got = sealctl(&args, Some(&read(&out)));
        if refused {
            let got = got.clean_failure();
            assert!(
                got.stderr.contains("more than 256 recipient entries"),
                "{}",
                got.stderr
            );
        } else {
            let got = got.ok();
            assert_eq!(
                String::from_utf8_lossy(&got.stdout),
                String::from_utf8_lossy(&entity(BODY))
            );
        }
    }
}

#[test]
fn wrong_recipient_key_is_a_clear_error() {
    let pki = pki();
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-cbc");
    let mut args = vec!["smime".to_string(), "decrypt".to_string()];
    args.extend(key_args(&pki.bob));
    sealctl(&args, Some(&read(&f))).clean_failure();
}

#[test]
fn key_and_cert_that_do_not_match_is_a_clear_error() {
    let pki = pki();
    let out = sealctl(
        [
            "smime",
            "decrypt",
            "--key",
            p(&pki.bob.key),
            "--cert",
            p(&pki.alice.cert),
        ],
        Some(b"whatever"),
    );
    out.clean_failure();
}

#[test]
fn wrong_p12_password_is_a_clear_error() {
    let pki = pki();
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-cbc");
    let pw = dir.path().join("wrong.txt");
    write(&pw, "not the password");
    let out = sealctl(
        [
            "smime",
            "decrypt",
            "--p12",
            p(&pki.alice.p12),
            "--password-file",
            p(&pw),
        ],
        Some(&read(&f)),
    );
    out.clean_failure();
}

#[test]
fn missing_input_file_is_a_clear_error() {
    let pki = pki();
    sealctl(
        [
            "smime",
            "encrypt",
            "--to",
            p(&pki.alice.cert),
            "--in",
            "/nonexistent/message.eml",
        ],
        None,
    )
    .clean_failure();
}

#[test]
fn unreadable_certificate_is_a_clear_error() {
    let dir = tempdir();
    let bad = dir.path().join("bad.pem");
    write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    sealctl(
        ["smime", "encrypt", "--to", p(&bad)],
        Some(&message("a@x", "b@x", "s", BODY)),
    )
    .clean_failure();
}

/// Cut a DER message and its S/MIME form at many offsets.
#[test]
fn truncated_input_at_many_offsets() {
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-cbc");
    let der = read(&f);
    let n = der.len();
    let mut offsets: Vec<usize> = (0..64).map(|i| i * n / 64).collect();
    offsets.extend([1, 2, 3, 4, 5, 10, n - 1, n - 2, n - 16, n - 17]);
    offsets.sort();
    offsets.dedup();
    for &cut in &offsets {
        let out = decrypt_as_alice(&der[..cut]);
        assert!(
            out.code == 1 || out.code == 2,
            "DER cut at {cut}/{n}: exit {} (101 = panic), stderr: {}",
            out.code,
            out.stderr
        );
        out.clean_failure();
    }

    // The S/MIME form, cut inside its base64 body.
    let pki = pki();
    let input = dir.path().join("entity.txt");
    let smime = dir.path().join("e.eml");
    openssl_ok(
        [
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-in",
            p(&input),
            "-out",
            p(&smime),
            "-outform",
            "SMIME",
            "-recip",
            p(&pki.alice.cert),
        ],
        None,
    );
    let msg = read(&smime);
    let body_at = find(&msg, b"\n\n")
        .or_else(|| find(&msg, b"\r\n\r\n"))
        .unwrap();
    for i in 0..24 {
        let cut = body_at + 4 + i * (msg.len() - body_at - 4) / 24;
        decrypt_as_alice(&msg[..cut]).clean_failure();
    }

    // A signature cut short, to verify.
    let s = read(&openssl_signed_der(dir.path()));
    for i in 0..32 {
        let cut = i * s.len() / 32;
        let out = sealctl(["smime", "verify"], Some(&s[..cut]));
        assert!(
            out.code != 0 && out.code != 101 && !out.stderr.contains("panicked"),
            "signature cut at {cut}: exit {}, stderr {}",
            out.code,
            out.stderr
        );
    }
}

#[test]
fn garbage_input_to_every_command() {
    let pki = pki();
    let seed = 0x5ea1_6a7e_u64;
    let mut rng = XorShift(seed);
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\n".to_vec(),
        b"From: a@b\r\n\r\n".to_vec(),
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n!!!!not base64!!!!\r\n"
            .to_vec(),
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
          boundary=\"b\"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n"
            .to_vec(),
        // A DER SEQUENCE claiming 4 GiB.
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x09],
        // Deeply nested indefinite-length BER.
        [0x30u8, 0x80].repeat(10_000),
        b"-----BEGIN CMS-----\nMIIB\n-----END CMS-----\n".to_vec(),
    ];
    for len in [1usize, 7, 64, 1000, 65_536] {
        inputs.push(rng.bytes(len));
    }
    let decrypt_args = {
        let mut a = vec!["smime".to_string(), "decrypt".to_string()];
        a.extend(key_args(&pki.alice));
        a
    };
    for (i, input) in inputs.iter().enumerate() {
        let d = sealctl(&decrypt_args, Some(input));
        assert!(
            d.code == 1 || d.code == 2,
            "decrypt of garbage #{i} (seed {seed:#x}): exit {} stderr {}",
            d.code,
            d.stderr
        );
        d.clean_failure();
        let v = sealctl(["smime", "verify"], Some(input));
        assert!(
            v.code != 0 && v.code != 101 && !v.stderr.contains("panicked"),
            "verify of garbage #{i}: exit {} stderr {}",
            v.code,
            v.stderr
        );
        let s = sealctl(["smime", "inspect"], Some(input));
        assert!(
            s.code != 101 && !s.stderr.contains("panicked"),
            "inspect of garbage #{i}: exit {} stderr {}",
            s.code,
            s.stderr
        );
    }
}

#[test]
fn unknown_option_is_a_usage_error_not_a_panic() {
    let out = sealctl(["smime", "encrypt", "--no-such-option"], Some(b""));
    assert!(
        out.code == 1 || out.code == 2,
        "usage error exit {}: {}",
        out.code,
        out.stderr
    );
}

/// Runs sealctl with files for input and output and returns (exit code, peak RSS in
/// bytes) of that very child, via wait4().
fn sealctl_peak_rss(args: &[&str], stderr_file: &Path) -> (i32, u64) {
    let stderr = std::fs::File::create(stderr_file).unwrap();
    let child = sealctl_cmd()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `status` is a valid int; `pid` is
    // our own child, which we reap here instead of through `Child::wait` (not called).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed: {}", std::io::Error::last_os_error());
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // ru_maxrss is in KiB on Linux.
    (code, usage.ru_maxrss as u64 * 1024)
}

/// 50 MiB through encrypt and decrypt: exact result, peak memory under 8× the message.
#[test]
fn fifty_mib_message_with_bounded_memory() {
    use std::io::Write;
    let pki = pki();
    let dir = tempdir();
    let plain = dir.path().join("big.eml");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&plain).unwrap());
        f.write_all(&message(
            "Alice <alice@example.test>",
            "Bob <bob@example.test>",
            "big",
            "",
        ))
        .unwrap();
        let mut rng = XorShift(0x50_1b);
        let mut written = 0usize;
        while written < 50 << 20 {
            // 76 printable characters and CRLF, like a base64 attachment.
            let line: String = rng
                .bytes(76)
                .into_iter()
                .map(|b| (b'A' + b % 26) as char)
                .collect();
            f.write_all(line.as_bytes()).unwrap();
            f.write_all(b"\r\n").unwrap();
            written += 78;
        }
    }
    let size = std::fs::metadata(&plain).unwrap().len();
    let enc = dir.path().join("big.p7m.eml");
    let dec = dir.path().join("big.out.eml");
    let err = dir.path().join("stderr.txt");

    let t = std::time::Instant::now();
    let (code, enc_rss) = sealctl_peak_rss(
        &[
            "smime",
            "encrypt",
            "--to",
            p(&pki.alice.cert),
            "--in",
            p(&plain),
            "--out",
            p(&enc),
        ],
        &err,
    );
    let enc_time = t.elapsed();
    assert_eq!(
        code,
        0,
        "encrypt failed: {}",
        String::from_utf8_lossy(&read(&err))
    );

    let t = std::time::Instant::now();
    let (code, dec_rss) = sealctl_peak_rss(
        &[
            "smime",
            "decrypt",
            "--key",
            p(&pki.alice.key),
            "--cert",
            p(&pki.alice.cert),
            "--in",
            p(&enc),
            "--out",
            p(&dec),
        ],
        &err,
    );
    let dec_time = t.elapsed();
    assert_eq!(
        code,
        0,
        "decrypt failed: {}",
        String::from_utf8_lossy(&read(&err))
    );

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "50 MiB message ({:.1} MiB): encrypt peak RSS {:.1} MiB in {:.2?}, decrypt peak RSS {:.1} MiB in {:.2?}",
        mib(size),
        mib(enc_rss),
        enc_time,
        mib(dec_rss),
        dec_time
    );
    let (_, want_body) = split_message(&read(&plain));
    let (_, got_body) = split_message(&read(&dec));
    assert!(
        got_body == want_body,
        "decrypted 50 MiB body differs from the original"
    );
    let limit = 8 * size;
    assert!(
        enc_rss < limit,
        "encrypt peak RSS {} MiB over 8x the message",
        mib(enc_rss)
    );
    assert!(
        dec_rss < limit,
        "decrypt peak RSS {} MiB over 8x the message",
        mib(dec_rss)
    );
}

// ---------------------------------------------------------------------------------------
// Implicit rejection (Bleichenbacher/Marvin): for RSA PKCS#1 v1.5 key transport, a wrong
// key, random bytes in place of the encrypted key, and a correctly encrypted block with
// bad padding must all look the same to the caller: same exit code, same stderr.
//
// The content is AES-256-GCM so that the pseudo-random key of implicit rejection always
// fails the content decryption (with CBC it would pass the padding check about once in
// 256 runs and "decrypt" to garbage, which would make this test flaky, not the engine).

/// Offset and length of the one 256-byte encryptedKey (RSA-2048) in a DER EnvelopedData.
fn encrypted_key(items: &[Asn1Item]) -> (usize, usize) {
    let keys: Vec<&Asn1Item> = items
        .iter()
        .filter(|i| i.tag.starts_with("OCTET STRING") && i.len == 256)
        .collect();
    assert_eq!(
        keys.len(),
        1,
        "expected one 256-byte encryptedKey, found {keys:?}"
    );
    (keys[0].offset + keys[0].header_len, 256)
}

/// Raw RSA (no padding) encryption of a 256-byte block to alice's public key.
fn raw_rsa_encrypt(dir: &Path, block: &[u8]) -> Vec<u8> {
    let pki = pki();
    let input = dir.join("block.bin");
    write(&input, block);
    let out = dir.join("block.enc");
    openssl_ok(
        [
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            p(&pki.alice.cert),
            "-pkeyopt",
            "rsa_padding_mode:none",
            "-in",
            p(&input),
            "-out",
            p(&out),
        ],
        None,
    );
    read(&out)
}

#[test]
fn implicit_rejection_wrong_key_and_bad_padding_look_the_same() {
    let pki = pki();
    let dir = tempdir();
    let f = openssl_enveloped_der(dir.path(), "e.der", "-aes-256-gcm");
    let der = read(&f);
    let (at, len) = encrypted_key(&asn1parse(&f));

    // Sanity: the untouched message decrypts.
    let ok = decrypt_as_alice(&der).ok();
    assert_eq!(ok.stdout, entity(BODY));

    let mut cases: Vec<(&str, Out)> = Vec::new();

    // 1. Someone else's key (bob's key and certificate): no recipient entry names it, so
    //    the engine tries it on every entry, and it must fail exactly like a corrupt key.
    //    (A key paired with a certificate it does not belong to is refused at load time,
    //    before the message is read: that says nothing about the message.)
    let mismatched = dir.path().join("wrong-key.pem");
    openssl_ok(
        [
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p(&mismatched),
        ],
        None,
    );
    let refused = sealctl(
        [
            "smime",
            "decrypt",
            "--key",
            p(&mismatched),
            "--cert",
            p(&pki.alice.cert),
        ],
        Some(&der),
    );
    assert!(
        refused.code == 1 && refused.stderr.contains("does not match"),
        "a mismatched key and certificate must be refused: {}",
        refused.stderr
    );
    cases.push((
        "wrong key",
        sealctl(
            [
                "smime",
                "decrypt",
                "--key",
                p(&pki.bob.key),
                "--cert",
                p(&pki.bob.cert),
            ],
            Some(&der),
        ),
    ));

    // 2. Random bytes as the encrypted key (below the modulus: top byte cleared).
    let mut rng = XorShift(0x1b1e_1c4e);
    let mut random_key = rng.bytes(len);
    random_key[0] &= 0x3f;
    let mut m = der.clone();
    m[at..at + len].copy_from_slice(&random_key);
    cases.push(("random encrypted key", decrypt_as_alice(&m)));

    // 3. Correctly RSA-encrypted blocks whose PKCS#1 v1.5 padding is wrong.
    let pad = |first: u8, second: u8, zero_at: Option<usize>, keylen: usize| {
        let mut b = vec![0u8; 256];
        b[0] = first;
        b[1] = second;
        for x in b.iter_mut().skip(2) {
            *x = 0x5a;
        }
        if let Some(z) = zero_at {
            b[z] = 0;
        }
        let _ = keylen;
        b
    };
    let bad_blocks: Vec<(&str, Vec<u8>)> = vec![
        (
            "padding: block type 01",
            pad(0x00, 0x01, Some(256 - 33), 32),
        ),
        ("padding: no zero separator", pad(0x00, 0x02, None, 0)),
        ("padding: first byte not zero", {
            let mut b = pad(0x00, 0x02, Some(256 - 33), 32);
            b[0] = 0x01;
            b[0] &= 0x3f;
            b
        }),
        (
            "padding: separator too early",
            pad(0x00, 0x02, Some(5), 250),
        ),
        (
            "padding: wrong key length (16 not 32)",
            pad(0x00, 0x02, Some(256 - 17), 16),
        ),
    ];
    for (name, block) in bad_blocks {
        let enc = raw_rsa_encrypt(dir.path(), &block);
        assert_eq!(enc.len(), 256);
        let mut m = der.clone();
        m[at..at + len].copy_from_slice(&enc);
        cases.push((name, decrypt_as_alice(&m)));
    }

    for (name, out) in &cases {
        assert!(
            out.code != 0 && out.code != 101,
            "{name}: must fail cleanly, got {} {}",
            out.code,
            out.stderr
        );
    }
    let (first_name, first) = &cases[0];
    for (name, out) in &cases[1..] {
        assert_eq!(
            (out.code, out.stderr.trim()),
            (first.code, first.stderr.trim()),
            "`{name}` must be indistinguishable from `{first_name}`"
        );
    }
}
