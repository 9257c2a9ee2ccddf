//! The boot's health gate (`sealgate-console health-gate`, started once by busybox init
//! after the boot script): only a healthy boot marks its slot good in GRUB's environment.
//!
//! Healthy means all of: the data partition is mounted; a TPM is present; the vault was
//! created or unsealed; sealgated answers `GET /api/v1/health` on its admin listener
//! (`sealgated --box --check-health` asks it over TLS). Any
//! flag the boot script left in `/run/sealgate/` (no-data, no-tpm, vault-failed,
//! vault-locked) makes the boot unhealthy at once; otherwise the gate waits (bounded) for the
//! daemon's health answer, then asks the daemon's own checks (`GET /update/gate`: listeners,
//! self-test decrypt) and its settings verdict ([`verdict`]). An update's trial (the
//! daemon's pending update names the booted slot) that fails reboots, so GRUB's three tries
//! run down to the old slot without anyone at the box. Any other unhealthy boot is *not*
//! marked good and nothing reboots: the
//! box stays at the console menu, which says why (status page, `Boot:` line). GRUB counts
//! the try, so at the next reboot (a technician's, a power cut) it tries the slot at most
//! three times, then the other good slot; when no slot is left it boots slot A as a last
//! resort (`LASTRESORT=1` in grubenv, flagged by the box's boot), which again reaches this menu
//! and says why. Hence no boot loop even when both slots have a locked vault.

use std::path::Path;

/// The flags of `/run/sealgate/` that make a boot unhealthy, with what the console says.
pub const UNHEALTHY_FLAGS: [(&str, &str); 4] = [
    (
        "no-data",
        "the data partition is missing or could not be mounted",
    ),
    ("no-tpm", "no TPM"),
    ("vault-failed", "creating the vault failed"),
    (
        "vault-locked",
        "the vault is locked (the TPM refused to unseal it)",
    ),
];

/// Why this boot is unhealthy from the boot script's flags alone, if it is.
pub fn flags_verdict(state: &Path) -> Option<String> {
    let why: Vec<&str> = UNHEALTHY_FLAGS
        .iter()
        .filter(|(f, _)| state.join(f).exists())
        .map(|(_, why)| *why)
        .collect();
    (!why.is_empty()).then(|| why.join("; "))
}

/// Whether this boot is an update's trial: the daemon's pending update
/// (`DATA/update/pending.json`, written after the install) names the booted slot. Such a
/// boot that fails its gate reboots (GRUB counts the try; after three it boots the old
/// slot); any other boot that fails stays at the console menu.
pub fn update_boot(pending_json: Option<&[u8]>, booted: Option<char>) -> bool {
    let Some(b) = booted else { return false };
    pending_json
        .and_then(|j| serde_json::from_slice::<serde_json::Value>(j).ok())
        .and_then(|v| v["slot"].as_str().map(str::to_string))
        .is_some_and(|s| s.len() == 1 && s.starts_with(b))
}

/// The daemon's checks (`GET /update/gate`): why they failed, if they did.
pub fn gate_answer(status: u16, body: &[u8]) -> Result<(), String> {
    // A daemon without the resource (404) has no checks of its own to add.
    if status == 404 {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| format!("sealgated answered {status} with no verdict"))?;
    if status != 200 {
        return Err(format!(
            "sealgated answered {status}: {}",
            v["detail"].as_str().unwrap_or("no detail")
        ));
    }
    if v["healthy"] == true {
        return Ok(());
    }
    let why: Vec<String> = v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("failed")
            )
        })
        .collect();
    Err(if why.is_empty() {
        "sealgated's checks failed".into()
    } else {
        why.join("; ")
    })
}

/// What the gate does with a boot.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Mark the slot good; the warning (a full check that failed on a committed slot) is
    /// said on the console.
    Good(Option<String>),
    /// Not marked good; the box waits at the console menu (not an update's trial).
    NotGood(String),
    /// An update's trial that failed: not marked good, reboot (GRUB counts the try).
    Reboot(String),
}

/// The verdict from the basic checks (boot flags, the daemon's health answer) and the full
/// ones (the daemon's listeners and self-test decrypt, the settings file used).
///
/// On an update's trial any failure reboots. On a committed slot a basic failure leaves the
/// slot unmarked as before; a failed full check is said but the slot is still marked good:
/// it was judged good on this software before, and a fallback to the other slot would not
/// mend a setting or a port in use, but could boot older software.
pub fn verdict(update_boot: bool, basic: Result<(), String>, full: Result<(), String>) -> Verdict {
    match (basic, full) {
        (Err(why), _) | (Ok(()), Err(why)) if update_boot => Verdict::Reboot(why),
        (Err(why), _) => Verdict::NotGood(why),
        (Ok(()), Err(why)) => Verdict::Good(Some(why)),
        (Ok(()), Ok(())) => Verdict::Good(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pending_slot_boot_is_an_update_trial() {
        let p = br#"{"version":"0.2.0","slot":"B","from_slot":"A"}"#;
        assert!(update_boot(Some(p), Some('B')));
        assert!(!update_boot(Some(p), Some('A')));
        assert!(!update_boot(None, Some('B')));
        assert!(!update_boot(Some(b"garbage"), Some('B')));
        assert!(!update_boot(Some(br#"{"slot":"BB"}"#), Some('B')));
        assert!(!update_boot(Some(p), None));
    }

    #[test]
    fn the_daemons_checks_are_read_and_their_failures_named() {
        assert_eq!(gate_answer(404, b""), Ok(()));
        assert_eq!(gate_answer(200, br#"{"healthy":true,"checks":[]}"#), Ok(()));
        let bad = br#"{"healthy":false,"checks":[{"name":"listeners","ok":true,"detail":"3"},
            {"name":"self-test","ok":false,"detail":"decrypting the probe: no key"}]}"#;
        let why = gate_answer(200, bad).unwrap_err();
        assert!(
            why.contains("self-test: decrypting") && !why.contains("listeners"),
            "{why}"
        );
        assert!(gate_answer(500, b"{}").is_err());
        assert!(gate_answer(200, b"not json").is_err());
        assert!(gate_answer(200, br#"{"healthy":"yes"}"#).is_err());
    }

    #[test]
    fn a_failed_update_trial_reboots_and_a_committed_slot_never_does() {
        let e = || Err("x".to_string());
        assert_eq!(verdict(true, e(), Ok(())), Verdict::Reboot("x".into()));
        assert_eq!(verdict(true, Ok(()), e()), Verdict::Reboot("x".into()));
        assert_eq!(verdict(true, Ok(()), Ok(())), Verdict::Good(None));
        assert_eq!(verdict(false, e(), Ok(())), Verdict::NotGood("x".into()));
        assert_eq!(verdict(false, Ok(()), e()), Verdict::Good(Some("x".into())));
        assert_eq!(verdict(false, Ok(()), Ok(())), Verdict::Good(None));
    }

    #[test]
    fn a_locked_vault_or_a_missing_tpm_is_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(flags_verdict(dir.path()), None);
        std::fs::write(dir.path().join("vault-locked"), "").unwrap();
        assert!(
            flags_verdict(dir.path())
                .unwrap()
                .contains("vault is locked")
        );
        std::fs::write(dir.path().join("no-tpm"), "").unwrap();
        let v = flags_verdict(dir.path()).unwrap();
        assert!(v.contains("no TPM") && v.contains("locked"), "{v}");
    }
}
