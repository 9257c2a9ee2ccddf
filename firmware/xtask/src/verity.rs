//! dm-verity over a root slot's squashfs: the hash tree is appended to the squashfs in the
//! slot's partition (no superblock), and the mapping goes on the kernel command line inside
//! the slot's signed UKI as `dm-mod.create=` (the kernel's `CONFIG_DM_INIT`): the slot's
//! partition by its GPT unique GUID, table `verity 1 dev dev 4096 4096 N N sha256 ROOT SALT`.
//! The kernel maps the slot before stage-1 init runs (so the initramfs needs no `dmsetup`);
//! stage-1 reads it through once and refuses a slot that does not verify.

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

/// The name of the slot's mapping (`/sys/block/dm-N/dm/name`), which stage-1 looks for.
pub(crate) const MAPPING: &str = "sealgate-root";

impl Verity {
    /// `dm-mod.create="sealgate-root,,,ro,0 SECTORS verity 1 PARTUUID=U PARTUUID=U 4096 4096
    /// N N sha256 ROOT SALT" dm-mod.waitfor=PARTUUID=U`: the slot's partition (`partuuid`, its
    /// GPT unique GUID) holds the data and, from block N on, the hash tree. The kernel waits
    /// for the partition first: a board's disk (eMMC, NVMe, USB) may be probed after the
    /// kernel's own start-up calls, where QEMU's virtio disk is there at once.
    pub(crate) fn cmdline(&self, partuuid: &str) -> String {
        let n = self.data_blocks;
        format!(
            "dm-mod.create=\"{MAPPING},,,ro,0 {} verity 1 PARTUUID={partuuid} PARTUUID={partuuid} \
             {BLOCK} {BLOCK} {n} {n} sha256 {} {SALT}\" dm-mod.waitfor=PARTUUID={partuuid}",
            n * (BLOCK / 512),
            self.root_hash
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_names_the_slot_by_its_guid_and_the_tree_after_the_data() {
        let v = Verity {
            data_blocks: 3,
            root_hash: "ab".repeat(32),
        };
        let line = v.cmdline("5ea19a7e-0000-4000-8000-00000000000a");
        assert_eq!(
            line,
            format!(
                "dm-mod.create=\"sealgate-root,,,ro,0 24 verity 1 \
                 PARTUUID=5ea19a7e-0000-4000-8000-00000000000a \
                 PARTUUID=5ea19a7e-0000-4000-8000-00000000000a 4096 4096 3 3 sha256 {} {SALT}\" \
                 dm-mod.waitfor=PARTUUID=5ea19a7e-0000-4000-8000-00000000000a",
                "ab".repeat(32)
            )
        );
        // One kernel parameter: quoted, no quote or comma inside (dm-init splits tables at
        // commas after the fourth field).
        let create = line.split_once("\" ").map_or("", |(c, _)| c);
        let inner = create.trim_start_matches("dm-mod.create=\"");
        assert!(!inner.contains('"'));
        assert_eq!(inner.matches(',').count(), 4);
    }
}
