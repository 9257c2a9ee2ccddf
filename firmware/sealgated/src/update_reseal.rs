//! The vault survives an update: before the reboot into the new slot, the vault key is
//! sealed again for the PCR values the new slot's boot will have, next to the current
//! sealed copy (ARCHITECTURE.md, "Updates must not brick the vault").
//!
//! The vault is sealed to PCR 4 + 7. PCR 7 (Secure Boot state and keys) does not change with
//! an update: its current value is taken. PCR 4 holds the Authenticode hashes of the EFI
//! binaries the firmware started: GRUB, then the slot's UKI. The prediction replays this
//! boot's firmware event log for PCR 4 with the last `EV_EFI_BOOT_SERVICES_APPLICATION`
//! event's digest (the running UKI) replaced by the new UKI's Authenticode SHA-256; the replay
//! with the log as it is must first give the TPM's current PCR 4, or nothing is predicted.
//!
//! Inputs (the daemon runs unprivileged): the event log copied by the boot
//! (`/run/sealgate/tpm-eventlog`, from securityfs) and the new slot's UKI copied by RAUC's
//! post-install handler (`DATA/update/uki-<slot>.efi`).
//!
//! Who feeds these: root on the box (the boot, RAUC's handler). A wrong prediction cannot
//! open the vault to anyone: the TPM checks the real PCR values at unseal; it only costs a
//! boot with a locked vault, which fails the health gate, so GRUB falls back.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sealgate_local::measured::{Event, authenticode_ranges, parse_event_log};
use sealgate_tpm::pcr_extend_sha256;

/// The event log copy the boot leaves for the daemon.
pub const EVENT_LOG: &str = "/run/sealgate/tpm-eventlog";
/// `EV_EFI_BOOT_SERVICES_APPLICATION`.
const EV_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_NO_ACTION` (not extended).
const EV_NO_ACTION: u32 = 0x3;

/// Re-seals the vault for the boot of `slot`'s UKI (see the module documentation). Without
/// a TPM (a developer's software sealer) there is nothing to predict.
pub fn reseal(
    data: &Path,
    vault: &sealgate_vault::Vault,
    tcti: Option<&str>,
    slot: &str,
) -> Result<()> {
    let Some(tcti) = tcti else {
        return Ok(());
    };
    let pcrs = vault.pcrs()?.unwrap_or_default();
    let indices = pcrs.indices();
    let uki = data.join("update").join(format!("uki-{slot}.efi"));
    let mut new_hash = authenticode_sha256(
        &std::fs::read(&uki).with_context(|| format!("reading {}", uki.display()))?,
    )?;
    if wrong_prediction_planned(data, slot) {
        crate::console(&format!(
            "TEST FAULT (development test bundle): the vault is sealed for a wrong PCR 4 of \
             slot {slot}"
        ));
        new_hash[0] ^= 0x01;
    }
    let log = std::fs::read(EVENT_LOG).with_context(|| format!("reading {EVENT_LOG}"))?;
    let events = parse_event_log(&log)?;
    let mut tpm = sealgate_tpm::Tpm::connect(tcti)?;
    let current = tpm.read_pcrs(&pcrs)?;
    let mut predicted = Vec::new();
    for (i, value) in current {
        if i == 4 {
            let replayed = replay(&events, 4, None)?;
            if replayed != value {
                bail!("the event log does not replay to the TPM's PCR 4: no prediction");
            }
            predicted.push((4, replay(&events, 4, Some(new_hash))?));
        } else if i == 7 {
            predicted.push((7, value));
        } else {
            bail!("the vault is sealed to PCR {i}, which the update cannot predict");
        }
    }
    if !indices.contains(&4) {
        // Sealed to PCR 7 alone: the new slot opens with the current copy.
        return Ok(());
    }
    let mut sealer = sealgate_vault::TpmSealer::new(tcti);
    vault.reseal_for_update(&mut sealer, &predicted)?;
    Ok(())
}

/// The image's update keyring.
const RAUC_KEYRING: &str = "/etc/rauc/keyring.pem";

/// Whether a development test bundle installed into `slot` plans a wrong prediction
/// (`sealgate_local::test_faults`: only under the development keyring).
fn wrong_prediction_planned(data: &Path, slot: &str) -> bool {
    let marker = std::fs::read(
        data.join("update")
            .join(sealgate_local::test_faults::MARKER),
    )
    .ok();
    sealgate_local::test_faults::planned(
        marker.as_deref(),
        std::fs::read(RAUC_KEYRING).ok().as_deref(),
        slot.chars().next(),
    )
    .is_some_and(|p| p.contains(&sealgate_local::test_faults::Fault::Prediction))
}

/// Replays `pcr` (SHA-256 bank) from the events, the last boot services application's
/// digest replaced by `last_app` if given.
pub fn replay(events: &[Event], pcr: u32, last_app: Option<[u8; 32]>) -> Result<[u8; 32]> {
    let last = events
        .iter()
        .rposition(|e| e.pcr == pcr && e.kind == EV_BOOT_SERVICES_APPLICATION);
    if last_app.is_some() && last.is_none() {
        bail!("no EFI application was measured into PCR {pcr}");
    }
    let mut v = [0u8; 32];
    for (i, e) in events.iter().enumerate() {
        if e.pcr != pcr || e.kind == EV_NO_ACTION {
            continue;
        }
        let d = match (Some(i) == last, last_app) {
            (true, Some(new)) => new,
            _ => e.sha256.context("an event without a SHA-256 digest")?,
        };
        v = pcr_extend_sha256(&v, &d);
    }
    Ok(v)
}

/// The Authenticode SHA-256 of a PE image (what the firmware measures into PCR 4).
pub fn authenticode_sha256(pe: &[u8]) -> Result<[u8; 32]> {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for r in authenticode_ranges(pe)? {
        h.update(pe.get(r).context("range")?);
    }
    let d = h.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPM_ALG_SHA256: u16 = 0x000b;

    fn event2(pcr: u32, kind: u32, digest: [u8; 32], data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(pcr.to_le_bytes());
        b.extend(kind.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        b.extend(TPM_ALG_SHA256.to_le_bytes());
        b.extend(digest);
        b.extend((data.len() as u32).to_le_bytes());
        b.extend(data);
        b
    }

    fn log(events: &[Vec<u8>]) -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend(0u32.to_le_bytes()); // platform class
        spec.extend([0, 2, 0, 2]); // versions, uintn size
        spec.extend(1u32.to_le_bytes());
        spec.extend(TPM_ALG_SHA256.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0); // vendor info size
        let mut b = Vec::new();
        b.extend(0u32.to_le_bytes());
        b.extend(EV_NO_ACTION.to_le_bytes());
        b.extend([0u8; 20]);
        b.extend((spec.len() as u32).to_le_bytes());
        b.extend(spec);
        for e in events {
            b.extend(e);
        }
        b
    }

    #[test]
    fn pcr4_is_replayed_with_the_new_kernel_image() {
        let (sep, grub, uki, new) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        let b = log(&[
            event2(4, 0x8000_0007, sep, b"Calling EFI Application"),
            event2(7, 0x8000_00e0, [9; 32], b""),
            event2(4, 4, sep, &[0; 4]),
            event2(4, EV_BOOT_SERVICES_APPLICATION, grub, b"grub"),
            event2(4, EV_BOOT_SERVICES_APPLICATION, uki, b"uki"),
            event2(5, 0x8000_0007, [8; 32], b"exit boot services"),
        ]);
        let events = parse_event_log(&b).expect("parse");
        assert_eq!(events.len(), 6);
        let mut want = [0u8; 32];
        for d in [sep, sep, grub, uki] {
            want = pcr_extend_sha256(&want, &d);
        }
        assert_eq!(replay(&events, 4, None).expect("replay"), want);
        let mut want_new = [0u8; 32];
        for d in [sep, sep, grub, new] {
            want_new = pcr_extend_sha256(&want_new, &d);
        }
        assert_eq!(replay(&events, 4, Some(new)).expect("replay"), want_new);
        // No application measured into PCR 5: nothing to replace.
        assert!(replay(&events, 5, Some(new)).is_err());
    }

    #[test]
    fn damaged_logs_and_images_are_errors_not_panics() {
        let b = log(&[event2(4, 4, [1; 32], b"x")]);
        for cut in 0..b.len() {
            let _ = parse_event_log(&b[..cut]);
        }
        assert!(parse_event_log(b"garbage").is_err());
        let mut pe = vec![0u8; 512];
        for cut in 0..pe.len() {
            let _ = authenticode_sha256(&pe[..cut]);
        }
        pe[0x3c] = 0xff;
        assert!(authenticode_sha256(&pe).is_err());
    }

    /// The digest osslsigncode computes for a PE image signed as the image build signs
    /// (sbsign with the development db key); the signature is not part of it.
    #[test]
    fn authenticode_matches_osslsigncode() {
        let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
        assert!(
            stub.exists(),
            "{} is missing: apt-get install systemd-boot-efi",
            stub.display()
        );
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../board/dev-keys");
        let dir = tempfile::tempdir().expect("tempdir");
        let signed = dir.path().join("stub.efi");
        let out = std::process::Command::new("sbsign")
            .arg("--key")
            .arg(keys.join("db.key"))
            .arg("--cert")
            .arg(keys.join("db.pem"))
            .arg("--output")
            .arg(&signed)
            .arg(stub)
            .output()
            .expect("sbsign is missing: apt-get install sbsigntool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("osslsigncode")
            .args(["verify", "-in"])
            .arg(&signed)
            .output()
            .expect("osslsigncode is missing: apt-get install osslsigncode");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Calculated message digest :"))
            .map(|h| h.trim().to_lowercase());
        let hex = hex.unwrap_or_else(|| format!("osslsigncode printed no digest: {text}"));
        let hexof = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let of_signed =
            authenticode_sha256(&std::fs::read(&signed).expect("signed")).expect("hash");
        // The signed image is what the firmware measures (sbsign pads the file to 8 bytes
        // before the certificate table, so the unsigned file's hash differs).
        assert_eq!(hexof(of_signed), hex);
    }
}
