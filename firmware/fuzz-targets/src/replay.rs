//! Replays a target's committed corpus, and deterministic mutations of it, through its body.
//!
//! The mutations are libFuzzer's simplest (bit flips, interesting bytes, inserted, erased,
//! duplicated and truncated ranges, splices of two seeds), stacked one to four deep, from a
//! fixed-seed generator: every run feeds the same inputs, so a failure reproduces. An input
//! that panics is written to `fuzz/artifacts/NAME/` (where libFuzzer puts its crashes, so
//! `cargo fuzz run NAME FILE` replays it under AddressSanitizer too) before the panic goes on.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Target;

/// Mutated inputs per target unless `SEALGATE_FUZZ_MUTATIONS` says otherwise.
pub const DEFAULT_MUTATIONS: usize = 20_000;

/// The fuzz folder (`fuzz/`, holding `corpus/` and `artifacts/`).
pub fn fuzz_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    dir.canonicalize().unwrap_or(dir)
}

/// The committed seeds of one target, sorted by file name.
pub fn corpus(name: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let file = entry.file_name().to_string_lossy().into_owned();
            seeds.push((file, std::fs::read(entry.path())?));
        }
    }
    seeds.sort();
    Ok(seeds)
}

/// What a replay fed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Seeds from the corpus.
    pub seeds: usize,
    /// Mutated inputs.
    pub mutations: usize,
}

/// Feeds every seed of `name`'s corpus, then `mutations` mutated inputs, to `run`. Panics
/// (after writing the input to `fuzz/artifacts/NAME/`) when `run` does, or when the corpus
/// is missing or empty.
pub fn replay(name: &str, run: Target, mutations: usize) -> Fed {
    let seeds = match corpus(name) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => panic!("fuzz/corpus/{name}/ holds no seed"),
        Err(e) => panic!("fuzz/corpus/{name}/: {e}"),
    };
    for (file, data) in &seeds {
        feed(name, run, data, &format!("seed {file}"));
    }
    let mut rng = Rng::new(name);
    for i in 0..mutations {
        let (file, base) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, other);
        feed(name, run, &input, &format!("mutation {i} of seed {file}"));
    }
    Fed {
        seeds: seeds.len(),
        mutations,
    }
}

/// The mutation count from `SEALGATE_FUZZ_MUTATIONS`, or [`DEFAULT_MUTATIONS`].
pub fn mutations_from_env() -> usize {
    std::env::var("SEALGATE_FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MUTATIONS)
}

fn feed(name: &str, run: Target, input: &[u8], what: &str) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(input))) {
        let hash: String = Sha256::digest(input)
            .iter()
            .take(20)
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = fuzz_dir().join("artifacts").join(name);
        let file = dir.join(format!("crash-{hash}"));
        let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, input));
        eprintln!(
            "fuzz target {name} panicked on {what} ({} bytes); {}",
            input.len(),
            match saved {
                Ok(()) => format!(
                    "the input is {} (`cargo fuzz run {name} {}` in fuzz/ replays it)",
                    file.display(),
                    file.display()
                ),
                Err(e) => format!("it could not be saved to {}: {e}", file.display()),
            }
        );
        resume_unwind(panic);
    }
}

/// Bytes libFuzzer also tries first: boundaries and the separators our parsers split on.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b' ', b'\t', b':', b';', b'=', b',', b'.', b'-', b'"',
    b'<', b'>', b'@', b'/', b'\\', b'{', b'}', b'*', b'0', b'9',
];

/// One to four stacked mutations of `base` (`other` for splices), at most 64 KiB longer.
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    let limit = base.len() + 64 * 1024;
    for _ in 0..=rng.below(4) {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            3 => {
                let i = rng.below(v.len() + 1);
                let b = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.byte()
                };
                v.insert(i, b);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(64));
                v.drain(i..i + n);
            }
            5 if !v.is_empty() => {
                // Duplicate a range (repeats: lists, nested structures).
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            6 if !v.is_empty() => v.truncate(rng.below(v.len())),
            7 if !other.is_empty() => {
                // Splice: a prefix of one seed, the tail of another.
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            8 if v.len() >= 2 => {
                // A length or count field pushed to its edge: a big-endian pair of bytes.
                let i = rng.below(v.len() - 1);
                let edge: [u8; 2] = match rng.below(3) {
                    0 => [0, 0],
                    1 => [0xff, 0xff],
                    _ => [0x7f, 0xff],
                };
                v[i..i + 2].copy_from_slice(&edge);
            }
            _ => v.push(rng.byte()),
        }
        v.truncate(limit);
    }
    v
}

/// xorshift64*, seeded by the target's name: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Self {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for b in name.bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
        }
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        // The high bits of xorshift64* are its best; n is small here.
        ((self.next() >> 32) % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_the_same_on_every_run_and_bounded() {
        let (a, b) = (b"Subject: x\r\n\r\nbody".as_slice(), b"other".as_slice());
        let run = || {
            let mut rng = Rng::new("t");
            (0..500).map(|_| mutate(&mut rng, a, b)).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().all(|m| m.len() <= a.len() + 64 * 1024));
        // They differ from the seed and from each other (not one input 500 times).
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(distinct.len() > 400, "{}", distinct.len());
    }

    #[test]
    fn a_panicking_input_is_saved_where_cargo_fuzz_finds_it() {
        fn boom(data: &[u8]) {
            assert!(!data.starts_with(b"BOOM"), "found it");
        }
        let input = b"BOOM-replay-self-test";
        let r = catch_unwind(|| feed("replay_self_test", boom, input, "a test"));
        assert!(r.is_err());
        let dir = fuzz_dir().join("artifacts").join("replay_self_test");
        let saved: Vec<_> = std::fs::read_dir(&dir)
            .expect("artifacts folder")
            .filter_map(|e| e.ok())
            .map(|e| std::fs::read(e.path()).expect("read"))
            .collect();
        assert!(saved.iter().any(|s| s == input));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
