//! The signed boot chain of an image: the Secure Boot keys enrolled in the box's UEFI
//! variable store, the signed GRUB and one signed unified kernel image (UKI) per root slot.
//!
//! A UKI is systemd's EFI stub (Debian `systemd-boot-efi`) with the kernel, the stage-1
//! initramfs, the kernel command line and `os-release` added as PE sections (`objcopy`), then
//! signed with the db key (`sbsign`, Debian `sbsigntool`). With Secure Boot on, the stub
//! ignores any command line a boot loader passes: the signed one is the only one. The
//! firmware checks every EFI binary it starts against db and measures it into PCR 4, so the
//! TPM sees exactly which UKI booted.
//!
//! The keys of an image build are `board/dev-keys/` (development keys, published with the
//! source: they make Secure Boot work, not secure). A vendor's build points
//! `SEALGATE_SECURE_BOOT_KEYS` at a folder with its own `PK`, `KEK` and `db` (`.pem` and
//! `.key`); see board/README.md.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::image::sh;

/// The owner GUID of the enrolled keys (EFI signature lists name one).
pub(crate) const KEY_OWNER_GUID: &str = "5ea19a7e-0000-4000-8000-0000000005eb";

/// The Secure Boot keys an image is signed with and enrols.
pub(crate) struct Keys {
    pub dir: PathBuf,
}

impl Keys {
    /// `SEALGATE_SECURE_BOOT_KEYS`, else `board/dev-keys/`.
    pub(crate) fn find(root: &Path) -> Result<Keys> {
        let dir = std::env::var_os("SEALGATE_SECURE_BOOT_KEYS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("board/dev-keys"));
        for name in ["PK", "KEK", "db"] {
            for ext in ["pem", "key"] {
                let f = dir.join(format!("{name}.{ext}"));
                if !f.is_file() {
                    bail!("Secure Boot key file {} is missing", f.display());
                }
            }
        }
        let grub = dir.join(GRUB_KEY);
        if !grub.is_file() {
            bail!("GRUB's signing key {} is missing", grub.display());
        }
        Ok(Keys { dir })
    }

    /// Imports GRUB's signing key into a keyring of its own under `work`; returns the
    /// public key in the binary form `grub-mkimage --pubkey` embeds.
    pub(crate) fn grub_keyring(&self, work: &Path) -> Result<GrubSigner> {
        let home = work.join("gnupg");
        fs::create_dir_all(&home)?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700))?;
        let signer = GrubSigner { home };
        sh(signer.gpg().arg("--import").arg(self.dir.join(GRUB_KEY)))
            .context("gpg --import (Debian package gpg)")?;
        let out = signer
            .gpg()
            .arg("--export")
            .output()
            .context("gpg --export")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("gpg --export of GRUB's signing key gave nothing");
        }
        fs::write(signer.pubkey(), &out.stdout)?;
        Ok(signer)
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Signs the EFI binary `input` with the db key into `output`, at `epoch`: sbsign puts
    /// the signing time into the signature, so it runs under `faketime` (Debian `faketime`)
    /// for the same bytes from the same inputs.
    pub(crate) fn sign(&self, input: &Path, output: &Path, epoch: u64) -> Result<()> {
        let when = faketime_at(epoch)?;
        sh(Command::new("faketime")
            .env("TZ", "UTC")
            .arg("-f")
            .arg(&when)
            .arg("sbsign")
            .arg("--key")
            .arg(self.key("db"))
            .arg("--cert")
            .arg(self.cert("db"))
            .arg("--output")
            .arg(output)
            .arg(input))
        .context("faketime sbsign (Debian packages faketime, sbsigntool)")
    }

    /// Writes `out`: the firmware's variable store `template` with PK, KEK and db enrolled,
    /// nothing else in them or in dbx, Secure Boot on and no wait at the boot menu (the box's
    /// UEFI variables as the factory ships it). OVMF sets `Timeout` to QEMU's (none) at its
    /// first start; AAVMF's formatted store comes with 5 s, which was the largest part of the
    /// aarch64 box's boot under TCG.
    pub(crate) fn enrol(&self, template: &Path, out: &Path) -> Result<()> {
        let tool = sealgate_qemu::virt_fw_vars()?;
        let timeout = out.with_extension("timeout.json");
        fs::write(
            &timeout,
            format!(
                r#"{{"version": 2, "variables": [{{"name": "Timeout", "guid": "{EFI_GLOBAL_VARIABLE}", "attr": 7, "data": "0000"}}]}}"#
            ),
        )?;
        let result = sh(Command::new(tool)
            .arg("--input")
            .arg(template)
            .arg("--output")
            .arg(out)
            .args(["--loglevel", "error"])
            .args(["--delete", "PK", "--delete", "KEK", "--delete", "db"])
            .args(["--delete", "dbx"])
            .arg("--set-pk")
            .arg(KEY_OWNER_GUID)
            .arg(self.cert("PK"))
            .arg("--add-kek")
            .arg(KEY_OWNER_GUID)
            .arg(self.cert("KEK"))
            .arg("--add-db")
            .arg(KEY_OWNER_GUID)
            .arg(self.cert("db"))
            .arg("--set-json")
            .arg(&timeout)
            .arg("--secure-boot"))
        .context("enrolling the Secure Boot keys with virt-fw-vars");
        fs::remove_file(&timeout).ok();
        result
    }
}

/// UEFI's global variables' GUID (`Timeout`, `BootOrder`, ...).
const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// GRUB's signing key (OpenPGP, armoured secret key) in the keys folder.
const GRUB_KEY: &str = "grub.key.asc";

/// Detached OpenPGP signatures that GRUB checks (`check_signatures=enforce` follows from the
/// public key built into it): of `grub.cfg` and of each UKI. The firmware still checks each
/// UKI's own (Authenticode) signature when GRUB chainloads it.
pub(crate) struct GrubSigner {
    home: PathBuf,
}

impl GrubSigner {
    fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home)
            .args(["--batch", "--quiet", "--no-tty"]);
        c
    }

    /// The public key, binary, for `grub-mkimage --pubkey`.
    pub(crate) fn pubkey(&self) -> PathBuf {
        self.home.join("grub.pub")
    }

    /// Writes `file.sig`, made at `epoch` (same inputs, same signature: RSA PKCS#1 v1.5).
    pub(crate) fn sign(&self, file: &Path, epoch: u64) -> Result<PathBuf> {
        let mut sig = file.as_os_str().to_owned();
        sig.push(".sig");
        let sig = PathBuf::from(sig);
        let _ = fs::remove_file(&sig);
        sh(self
            .gpg()
            .arg("--faked-system-time")
            .arg(format!("{epoch}!"))
            .args(["--digest-algo", "SHA256", "--detach-sign", "--output"])
            .arg(&sig)
            .arg(file))
        .context("gpg --detach-sign")?;
        Ok(sig)
    }
}

/// systemd's EFI stub (Debian `systemd-boot-efi` of the board's architecture) and the
/// binutils that handle its architecture (their prefix, e.g. `aarch64-linux-gnu-`).
pub(crate) struct Stub<'a> {
    pub file: &'a Path,
    pub binutils: &'a str,
}

/// Builds the unsigned UKI `out` from the stub, `kernel`, `initrd`, `cmdline` and `osrel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_uki(
    epoch: u64,
    work: &Path,
    stub: Stub<'_>,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    osrel: &Path,
    out: &Path,
) -> Result<()> {
    if !stub.file.is_file() {
        bail!(
            "{} is missing: apt-get install systemd-boot-efi",
            stub.file.display()
        );
    }
    let cmdline_file = work.join("uki-cmdline");
    fs::write(&cmdline_file, cmdline)?;
    // The added sections go after the stub's own, each on a 4 KiB boundary.
    let mut at = stub_end(&stub)?;
    // objcopy writes the build time into the PE header: made at `epoch` instead.
    let mut cmd = Command::new("faketime");
    cmd.env("TZ", "UTC")
        .arg("-f")
        .arg(faketime_at(epoch)?)
        .arg(format!("{}objcopy", stub.binutils));
    for (name, file) in [
        (".osrel", osrel),
        (".cmdline", cmdline_file.as_path()),
        (".linux", kernel),
        (".initrd", initrd),
    ] {
        at = align(at);
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={at:#x}"));
        at += fs::metadata(file)
            .with_context(|| format!("{}", file.display()))?
            .len();
    }
    cmd.arg(stub.file).arg(out);
    sh(&mut cmd).context("objcopy (Debian package binutils)")
}

/// `faketime -f`'s frozen clock at `epoch` (UTC).
fn faketime_at(epoch: u64) -> Result<String> {
    let out = Command::new("date")
        .env("TZ", "UTC")
        .args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .context("date")?;
    if !out.status.success() {
        bail!("date -d @{epoch} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn align(x: u64) -> u64 {
    x.div_ceil(4096) * 4096
}

/// The end of the stub's last section (image-relative), from `objdump -h`.
fn stub_end(stub: &Stub<'_>) -> Result<u64> {
    let out = Command::new(format!("{}objdump", stub.binutils))
        .arg("-h")
        .arg(stub.file)
        .output()
        .context("objdump (Debian package binutils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut end = 0u64;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 7 && f[0].parse::<u32>().is_ok() {
            let size = u64::from_str_radix(f[2], 16)?;
            let vma = u64::from_str_radix(f[3], 16)?;
            end = end.max(vma + size);
        }
    }
    if end == 0 {
        bail!("no sections in {}", stub.file.display());
    }
    Ok(end)
}
