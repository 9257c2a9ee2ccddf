//! The boot's health gate (`sealgate-console health-gate`, started once by busybox init
//! after the boot script): only a healthy boot marks its slot good in GRUB's environment.
//!
//! Healthy means all of: the data partition is mounted; a TPM is present; the vault was
//! created or unsealed; sealgated answers `GET /api/v1/health` on its admin listener
//! (`sealgated --box --check-health` asks it over TLS). Any
//! flag the boot script left in `/run/sealgate/` (no-data, no-tpm, vault-failed,
//! vault-locked) makes the boot unhealthy at once; otherwise the gate waits (bounded) for the
//! daemon's health answer. An unhealthy boot is *not* marked good and nothing reboots: the
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
