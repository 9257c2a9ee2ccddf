//! dm-verity over a root slot's squashfs: the hash tree is appended to the squashfs in the
//! slot's partition (no superblock), and the root hash, the data size and the salt go on the
//! kernel command line inside the slot's signed UKI as
//! `sealgate.verity=<data blocks>,<root hash>,<salt>`. Stage-1 init maps the slot with the
//! kernel's dm-verity (`dmsetup`, table `verity 1 dev dev 4096 4096 N N sha256 ROOT SALT`),
//! reads it through once, and refuses a slot that does not verify.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Data and hash block size.
pub(crate) const BLOCK: u64 = 4096;
/// A fixed salt, so the same squashfs gives the same tree (and the same image bytes).
const SALT: &str = "5ea19a7e5ea19a7e5ea19a7e5ea19a7e5ea19a7e5ea19a7e5ea19a7e5ea19a7e";

/// What the command line tells stage-1.
pub(crate) struct Verity {
    pub data_blocks: u64,
    pub root_hash: String,
}

impl Verity {
    /// `sealgate.verity=<data blocks>,<root hash>,<salt>`.
    pub(crate) fn cmdline(&self) -> String {
        format!(
            "sealgate.verity={},{},{SALT}",
            self.data_blocks, self.root_hash
        )
    }
}

/// Writes `out`: `squashfs` padded to whole blocks, then its hash tree.
pub(crate) fn format(squashfs: &Path, out: &Path, work: &Path) -> Result<Verity> {
    let mut data = fs::read(squashfs).with_context(|| format!("{}", squashfs.display()))?;
    let padded = data.len().div_ceil(BLOCK as usize) * BLOCK as usize;
    data.resize(padded, 0);
    let data_file = work.join("verity-data");
    fs::write(&data_file, &data)?;
    let tree = work.join("verity-tree");
    let _ = fs::remove_file(&tree);
    let output = Command::new("veritysetup")
        .arg("format")
        .args(["--no-superblock", "--hash", "sha256"])
        .args(["--data-block-size", &BLOCK.to_string()])
        .args(["--hash-block-size", &BLOCK.to_string()])
        .args(["--salt", SALT])
        .arg(&data_file)
        .arg(&tree)
        .output()
        .context("veritysetup (Debian package cryptsetup-bin)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "veritysetup format failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let root_hash = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .context("veritysetup printed no root hash")?;
    if root_hash.len() != 64 || !root_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("veritysetup's root hash {root_hash:?} is not SHA-256 hex");
    }
    let mut f = fs::File::create(out)?;
    f.write_all(&data)?;
    f.write_all(&fs::read(&tree)?)?;
    f.sync_all()?;
    fs::remove_file(&data_file)?;
    Ok(Verity {
        data_blocks: padded as u64 / BLOCK,
        root_hash,
    })
}
