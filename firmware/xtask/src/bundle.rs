//! `cargo xtask bundle`: a signed RAUC update bundle (`format=verity`) from the image build's
//! slot content.
//!
//! `cargo xtask image` keeps what an update installs in `target/image/<board>/slot/`:
//! `root.img` (the slot's read-only squashfs root and its dm-verity hash tree) and both slots'
//! signed unified kernel images with their OpenPGP signatures for GRUB
//! (`uki/sealgate-{A,B}.efi{,.sig}`: kernel, stage-1 and the command line naming the slot and
//! the root hash). The bundle carries all of it; RAUC writes `root.img` into the other root
//! slot, and the box's post-install handler (`/usr/libexec/sealgate/rauc-post-install`)
//! copies that slot's UKI to the ESP. So kernel, stage-1 and root file system always move
//! together, and the new slot's PCR 4 is predictable from the bundle alone.
//!
//! The manifest names the board (`compatible=sealgate-<board>`, which the box's
//! `/etc/rauc/system.conf` must equal) and the version (the box refuses one below the
//! floor kept on its data partition). Signed with `--key`/`--cert` (default: the
//! DEVELOPMENT signer of `board/dev-keys/`, issued by `ota-ca.pem`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::{Board, sh};
use crate::test::{ensure_debian_packages, workspace_root};

/// Debian packages `cargo xtask bundle` runs (`rauc bundle`).
pub(crate) const BUNDLE_PACKAGES: &[&str] = &["rauc"];

/// The compatible string of a board's bundles and of its box's `system.conf`.
pub(crate) fn compatible(board: Board) -> String {
    format!("sealgate-{}", board.name)
}

/// Arguments of `cargo xtask bundle`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The board (a folder of board/); its image must have been built.
    #[arg(long, default_value = "qemu-x86_64")]
    pub board: String,
    /// The bundle's version (default: the workspace's version).
    #[arg(long)]
    pub version: Option<String>,
    /// Output file (default `target/bundle/<board>/sealgate-<board>-<version>.raucb`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Signer key (PEM file or PKCS#11 URI; default: the DEVELOPMENT signer).
    #[arg(long, requires = "cert")]
    pub key: Option<String>,
    /// Signer certificate (PEM file or PKCS#11 URI; default: the DEVELOPMENT signer).
    #[arg(long, requires = "key")]
    pub cert: Option<String>,
    /// TESTS ONLY: the bundle carries a plan of faults for the trial boots of the slot it is
    /// installed into, one per trial (`gate`, `hang`, `panic`, `prediction`; e.g.
    /// `hang,panic,prediction`), for the rollback tests. Refused with any signer but the
    /// development one, and honoured only by an image whose update keyring is the
    /// development CA (`sealgate_local::test_faults`).
    #[arg(long, conflicts_with_all = ["key", "cert"])]
    pub test_faults: Option<String>,
}

/// The marker file of `--test-faults` in a bundle (the box's post-install handler copies
/// it for `sealgate-console`'s health gate and the daemon's re-sealing).
pub(crate) const TEST_FAULTS: &str = "test-faults";

/// The test fault names (`sealgate_local::test_faults::Fault`).
const FAULTS: &[&str] = &["gate", "hang", "panic", "prediction"];

/// The development signer and CA (`board/dev-keys/`): for tests only.
pub(crate) struct DevKeys {
    pub ca: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
}

pub(crate) fn dev_keys(root: &Path) -> DevKeys {
    let d = root.join("board/dev-keys");
    DevKeys {
        ca: d.join("ota-ca.pem"),
        key: d.join("ota-signer.key"),
        cert: d.join("ota-signer.pem"),
    }
}

/// `cargo xtask bundle`.
pub fn run(args: Args) -> Result<()> {
    let board = Board::named(&args.board)?;
    let root = workspace_root()?;
    ensure_debian_packages(BUNDLE_PACKAGES)?;
    let slot = crate::image::out_dir(board)?.join("slot");
    if !slot.join("root.img").is_file() {
        bail!(
            "{} has no slot content: run `cargo xtask image --board {}` first",
            slot.display(),
            board.name
        );
    }
    let version = args
        .version
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
    let out = match &args.out {
        Some(o) => o.clone(),
        None => root
            .join("target/bundle")
            .join(board.name)
            .join(format!("sealgate-{}-{version}.raucb", board.name)),
    };
    let dev = dev_keys(&root);
    let (key, cert, dev_signed) = match (&args.key, &args.cert) {
        (Some(k), Some(c)) => (k.clone(), c.clone(), false),
        _ => {
            println!(
                "signing with the DEVELOPMENT key (board/dev-keys/ota-signer.key): not for products"
            );
            (
                dev.key.display().to_string(),
                dev.cert.display().to_string(),
                true,
            )
        }
    };
    let work = root.join("target/bundle").join(board.name).join("work");
    if let Some(list) = &args.test_faults {
        if !dev_signed {
            bail!("--test-faults is for development-signed test bundles only");
        }
        let names: Vec<&str> = list.split(',').map(str::trim).collect();
        if !(1..=3).contains(&names.len()) || names.iter().any(|n| !FAULTS.contains(n)) {
            bail!(
                "--test-faults {list:?}: one to three of {}, comma-separated",
                FAULTS.join(", ")
            );
        }
    }
    make(
        board,
        &slot,
        &version,
        &key,
        &cert,
        &work,
        &out,
        args.test_faults.as_deref(),
    )?;
    if dev_signed {
        // What an image built with the development keyring will check at install.
        sh(Command::new("rauc")
            .arg("-c")
            .arg(root.join("board").join(board.name).join("rauc/system.conf"))
            .arg("info")
            .arg(format!("--keyring={}", dev.ca.display()))
            .arg(&out))
        .context("the bundle does not verify against board/dev-keys/ota-ca.pem")?;
    }
    println!("bundle: {} (version {version})", out.display());
    Ok(())
}

/// Makes the bundle `out` from the slot folder `slot` (see the module documentation);
/// `faults`: the TESTS-ONLY plan of `--test-faults`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make(
    board: Board,
    slot: &Path,
    version: &str,
    key: &str,
    cert: &str,
    work: &Path,
    out: &Path,
    faults: Option<&str>,
) -> Result<()> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c))
    {
        bail!("version {version:?}: letters, digits and . - + ~ only");
    }
    let content = work.join("content");
    if content.exists() {
        fs::remove_dir_all(&content)?;
    }
    fs::create_dir_all(content.join("uki"))?;
    // Hard links where possible: the slot image is large and stays unchanged.
    let place = |from: &Path, to: &Path| -> Result<()> {
        if fs::hard_link(from, to).is_err() {
            fs::copy(from, to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    };
    place(&slot.join("root.img"), &content.join("root.img"))?;
    for s in ["A", "B"] {
        for ext in ["efi", "efi.sig"] {
            let name = format!("sealgate-{s}.{ext}");
            let from = slot.join("uki").join(&name);
            if !from.is_file() {
                bail!("{} is missing (an older image build?)", from.display());
            }
            place(&from, &content.join("uki").join(&name))?;
        }
    }
    fs::write(
        content.join("manifest.raucm"),
        manifest(&compatible(board), version),
    )?;
    if let Some(list) = faults {
        fs::write(content.join(TEST_FAULTS), format!("{list}\n"))?;
    }
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    if out.exists() {
        fs::remove_file(out)?;
    }
    sh(Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={cert}"))
        .arg(format!("--key={key}"))
        .arg(&content)
        .arg(out))
    .context("rauc bundle (Debian package rauc)")?;
    fs::remove_dir_all(&content).ok();
    Ok(())
}

/// The bundle's manifest.
pub(crate) fn manifest(compatible: &str, version: &str) -> String {
    format!(
        "[update]\ncompatible={compatible}\nversion={version}\ndescription=Sealgate {version} \
         ({compatible})\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=root.img\n"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn require(program: &str, package: &str) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "{program} is missing: apt-get install {package}");
    }

    fn info(bundle: &Path, keyring: &Path) -> (bool, String) {
        // The box's own system.conf (check-purpose=codesign), with the keyring given here.
        let conf = workspace_root()
            .unwrap()
            .join("board/qemu-x86_64/rauc/system.conf");
        let o = Command::new("rauc")
            .arg("-c")
            .arg(conf)
            .arg("info")
            .arg("--output-format=json")
            .arg(format!("--keyring={}", keyring.display()))
            .arg(bundle)
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    /// A bundle of the development signer verifies against `ota-ca.pem` and carries the
    /// board and version; one signed under another CA does not verify against it.
    #[test]
    fn bundles_verify_against_their_ca_only() {
        require("rauc", "rauc");
        require("openssl", "openssl");
        let root = workspace_root().unwrap();
        let dev = dev_keys(&root);
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        fs::create_dir_all(slot.join("uki")).unwrap();
        // Incompressible (RAUC wants a squashfs larger than one block).
        let mut x: u32 = 0x5ea1_9a7e;
        let img: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        fs::write(slot.join("root.img"), img).unwrap();
        for s in ["A", "B"] {
            fs::write(slot.join(format!("uki/sealgate-{s}.efi")), b"MZ uki").unwrap();
            fs::write(slot.join(format!("uki/sealgate-{s}.efi.sig")), b"sig").unwrap();
        }
        let board = Board::named("qemu-x86_64").unwrap();
        let good = dir.path().join("good.raucb");
        make(
            board,
            &slot,
            "1.2.3",
            &dev.key.display().to_string(),
            &dev.cert.display().to_string(),
            &dir.path().join("w1"),
            &good,
            None,
        )
        .unwrap();
        let (ok, text) = info(&good, &dev.ca);
        assert!(ok, "{text}");
        assert!(
            text.contains("\"compatible\":\"sealgate-qemu-x86_64\""),
            "{text}"
        );
        assert!(text.contains("\"version\":\"1.2.3\""), "{text}");

        // Another CA and its signer (made here, as an attacker would).
        let other = dir.path();
        let cfg = other.join("ext.cnf");
        fs::write(
            &cfg,
            "[v3ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n\
             [v3signer]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=critical,codeSigning\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .current_dir(other)
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "x-ca.key",
            "-out",
            "x-ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Other CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "x.key",
            "-out",
            "x.csr",
            "-subj",
            "/CN=Other signer",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "x.csr",
            "-CA",
            "x-ca.pem",
            "-CAkey",
            "x-ca.key",
            "-set_serial",
            "7",
            "-days",
            "30",
            "-out",
            "x.pem",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "v3signer",
        ]);
        let forged = dir.path().join("forged.raucb");
        make(
            board,
            &slot,
            "9.9.9",
            &other.join("x.key").display().to_string(),
            &other.join("x.pem").display().to_string(),
            &dir.path().join("w2"),
            &forged,
            None,
        )
        .unwrap();
        let (ok, text) = info(&forged, &dev.ca);
        assert!(!ok, "another CA's bundle verified: {text}");
        // It is a well-formed bundle: its own CA accepts it.
        let (ok, text) = info(&forged, &other.join("x-ca.pem"));
        assert!(ok, "{text}");

        // One flipped byte in the signature (the CMS before the bundle's last 8 bytes) is
        // refused. A flipped payload byte passes `rauc info` (a verity bundle's signature
        // covers the manifest with the payload's dm-verity root hash): the box's install
        // catches it while reading the payload through dm-verity.
        let mut bytes = fs::read(&good).unwrap();
        let at = bytes.len() - 40;
        bytes[at] ^= 0x01;
        let flipped = dir.path().join("flipped.raucb");
        fs::write(&flipped, bytes).unwrap();
        let (ok, text) = info(&flipped, &dev.ca);
        assert!(!ok, "a flipped bundle verified: {text}");

        assert!(
            make(
                board,
                &slot,
                "1 2",
                "k",
                "c",
                &dir.path().join("w3"),
                &good,
                None
            )
            .is_err()
        );
    }
}
