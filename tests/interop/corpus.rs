//! The golden corpus (tests/corpus/): each case is an input file `NAME.<ext>`, the sealctl
//! arguments `NAME.args` (paths relative to tests/corpus/), and the exact expected output
//! `NAME.expected` (what sealctl writes to `--out`). See tests/corpus/README.md.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod support;

use std::path::{Path, PathBuf};
use support::*;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus")
}

struct Case {
    name: String,
    input: PathBuf,
    args: Vec<String>,
    expected: PathBuf,
}

fn cases(dir: &str) -> Vec<Case> {
    let dir = corpus_root().join(dir);
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for args_file in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "args"))
    {
        let stem = args_file.file_stem().unwrap().to_str().unwrap().to_string();
        let input = entries
            .iter()
            .find(|p| {
                p.file_stem().is_some_and(|s| s == stem.as_str())
                    && p.extension()
                        .is_some_and(|e| e != "args" && e != "expected")
            })
            .unwrap_or_else(|| panic!("corpus case {stem}: no input file"))
            .clone();
        let args = String::from_utf8(read(args_file))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        out.push(Case {
            name: format!("{}/{stem}", dir.file_name().unwrap().to_string_lossy()),
            input,
            args,
            expected: args_file.with_extension("expected"),
        });
    }
    out
}

/// Runs every case of one corpus directory; reports all failures together.
fn run_dir(dir: &str, at_least: usize) {
    let cases = cases(dir);
    assert!(
        cases.len() >= at_least,
        "corpus {dir}: expected at least {at_least} cases, found {}",
        cases.len()
    );
    let tmp = tempdir();
    let mut failures = Vec::new();
    for case in &cases {
        let out_file = tmp.path().join("out");
        let _ = std::fs::remove_file(&out_file);
        let mut cmd = sealctl_cmd();
        cmd.current_dir(corpus_root()).args(&case.args).args([
            "--in",
            p(&case.input),
            "--out",
            p(&out_file),
        ]);
        let out = run(&mut cmd, None);
        if out.code != 0 {
            failures.push(format!(
                "{}: `sealctl {}` exited {}: {}",
                case.name,
                case.args.join(" "),
                out.code,
                out.stderr.trim()
            ));
            continue;
        }
        let got = std::fs::read(&out_file).unwrap_or_default();
        let want = read(&case.expected);
        if got != want {
            failures.push(format!(
                "{}: output differs from {}\n  got:  {:?}\n  want: {:?}",
                case.name,
                case.expected.display(),
                String::from_utf8_lossy(&got[..got.len().min(300)]),
                String::from_utf8_lossy(&want[..want.len().min(300)])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Messages made by `openssl cms` 3.0 (tests/corpus/generate.sh).
#[test]
fn corpus_openssl() {
    run_dir("openssl", 9);
}

/// Bare BER CMS made by gpgsm 2.2 (tests/corpus/generate.sh).
#[test]
fn corpus_gpgsm() {
    run_dir("gpgsm", 2);
}

/// Public test vectors (draft-ireland-examples-cms, RFC 9216 certificates).
#[test]
fn corpus_public_vectors() {
    run_dir("public", 3);
}

/// An EnvelopedData for one RSA and one X25519 recipient (RFC 8418: X9.63 KDF with SHA-256,
/// AES-128 key wrap, issuer-and-serial identifiers, Ed25519 CA), made without this engine by
/// Python `cryptography` (tests/corpus/x25519/generate.py); both recipients decrypt it.
#[test]
fn corpus_x25519_vectors() {
    run_dir("x25519", 2);
}

/// `inspect` reads every corpus input and prints JSON.
#[test]
fn corpus_inspect_prints_json() {
    let mut failures = Vec::new();
    for dir in ["openssl", "gpgsm", "public", "x25519"] {
        for case in cases(dir) {
            let out = sealctl(["smime", "inspect", "--in", p(&case.input)], None);
            if out.code != 0 || serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err() {
                failures.push(format!(
                    "{}: exit {} {}",
                    case.name,
                    out.code,
                    out.stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inspect failed:\n{}",
        failures.join("\n")
    );
}
