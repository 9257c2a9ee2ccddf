//! GRUB's environment block on the ESP, read and written with the ESP mounted only for the
//! moment (a FAT file system mounted read-write across a power cut is the risk; grub.cfg and
//! the UKIs beside it are signed, grubenv is the one file written on the box). Used by the
//! health gate and by RAUC's custom boot loader backend (`sealgate-console rauc-backend`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::grubenv::{GrubEnv, other_slot};
use crate::{STATE, atomic, partition, run};

/// grubenv's path on the ESP.
const GRUBENV: &str = "EFI/BOOT/grubenv";

/// Runs `f` on the mounted ESP (read-write when `rw`), unmounting afterwards.
fn with_esp<T>(rw: bool, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let esp = partition("boot").context("no partition named boot")?;
    // The health gate and RAUC's backend may run at once: one at a time (the kernel refuses
    // a second mount of the ESP with other options, EBUSY, and two read-modify-writes of
    // grubenv would lose one), through an exclusive lock held until the ESP is unmounted.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(STATE).join("esp.lock"))
        .context("opening the ESP's lock")?;
    lock.lock().context("waiting for the ESP's lock")?;
    // A folder per process all the same: one left by a process killed while it held the ESP
    // is not another's mount point.
    let mnt = PathBuf::from(STATE).join(format!("esp.{}", std::process::id()));
    fs::create_dir_all(&mnt)?;
    let opts = if rw {
        "rw,noexec,nosuid,nodev"
    } else {
        "ro,noexec,nosuid,nodev"
    };
    run(
        "mount",
        &[
            "-t",
            "vfat",
            "-o",
            opts,
            &esp.to_string_lossy(),
            &mnt.to_string_lossy(),
        ],
    )?;
    let result = f(&mnt);
    let _ = run("umount", &[&mnt.to_string_lossy()]);
    let _ = fs::remove_dir(&mnt);
    drop(lock);
    result
}

/// Reads grubenv.
pub fn read() -> Result<GrubEnv> {
    with_esp(false, |mnt| {
        GrubEnv::parse(&fs::read(mnt.join(GRUBENV)).context("reading grubenv")?)
    })
}

/// Changes grubenv with `f` (a missing or damaged block is `fallback()`'s), written as a new
/// 1024-byte file renamed over the old one (GRUB's save_env finds its blocks through the FAT
/// at every boot and writes into them in place). `f` returns whether anything changed.
pub fn update<T>(
    fallback: impl FnOnce(anyhow::Error) -> Result<GrubEnv>,
    f: impl FnOnce(&mut GrubEnv) -> Result<(bool, T)>,
) -> Result<T> {
    with_esp(true, |mnt| {
        let path = mnt.join(GRUBENV);
        let parsed = fs::read(&path)
            .context("reading grubenv")
            .and_then(|b| GrubEnv::parse(&b));
        let (mut env, mut changed) = match parsed {
            Ok(env) => (env, false),
            Err(e) => (fallback(e)?, true),
        };
        let (c, out) = f(&mut env)?;
        changed |= c;
        if changed {
            atomic::write_atomic(&path, &env.to_block()?, 0o644)?;
        }
        Ok(out)
    })
}

fn slot_arg(s: &str) -> Result<char> {
    match s {
        "A" => Ok('A'),
        "B" => Ok('B'),
        _ => bail!("no slot {s:?} (A or B)"),
    }
}

/// `sealgate-console rauc-backend ...`: RAUC's custom boot loader backend
/// (`bootloader=custom` in `/etc/rauc/system.conf`): `get-primary`, `set-primary SLOT`,
/// `get-state SLOT`, `set-state SLOT good|bad`. The same variables as RAUC's grub backend,
/// which the signed grub.cfg's try ladder reads.
pub fn rauc_backend(args: &[&str]) -> Result<()> {
    let refuse = |e: anyhow::Error| -> Result<GrubEnv> { Err(e.context("grubenv is unusable")) };
    match args {
        ["get-primary"] => {
            let env = read()?;
            println!("{}", env.primary().context("no slot is marked good")?);
        }
        ["set-primary", slot] => {
            let slot = slot_arg(slot)?;
            update(refuse, |env| env.set_primary(slot).map(|()| (true, ())))?;
        }
        ["get-state", slot] => {
            let slot = slot_arg(slot)?;
            let env = read()?;
            println!("{}", if env.is_good(slot) { "good" } else { "bad" });
        }
        ["set-state", slot, state @ ("good" | "bad")] => {
            let slot = slot_arg(slot)?;
            other_slot(slot)?;
            update(refuse, |env| {
                env.set_state(slot, *state == "good").map(|()| (true, ()))
            })?;
        }
        _ => bail!(
            "usage: sealgate-console rauc-backend get-primary | set-primary SLOT | get-state SLOT \
             | set-state SLOT good|bad"
        ),
    }
    Ok(())
}
