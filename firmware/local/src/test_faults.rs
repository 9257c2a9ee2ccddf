//! The faults a DEVELOPMENT test bundle asks of the slot it is installed into (`cargo xtask
//! bundle --test-faults LIST`), for the rollback tests: one fault per trial boot of that
//! slot, in order (GRUB tries a slot three times; the last fault repeats).
//!
//! RAUC's post-install handler writes `SLOT FAULT,FAULT,...` to `DATA/update/test-faults`
//! (and removes it for every other bundle); the console's health gate and the daemon's
//! re-sealing read it. Honoured only when the image's update keyring is the development CA
//! of `board/dev-keys/`: a product image is built with the vendor's keyring
//! (`SEALGATE_OTA_KEYRING`), so there the marker is never read as a fault; and an image that
//! trusts the development CA already installs anything signed with the development key
//! (whose key is public in the repository), so the marker gives nobody more than they had.

/// The marker's name, in a bundle and in `DATA/update/`.
pub const MARKER: &str = "test-faults";

/// The development CA of `board/dev-keys/` (its key is public in the repository).
const DEVELOPMENT_CA: &[u8] = include_bytes!("../../../board/dev-keys/ota-ca.pem");

/// One trial's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The health gate fails (the daemon's checks are taken as failed).
    Gate,
    /// The health gate hangs before its verdict, petting nothing: the watchdog resets the box.
    Hang,
    /// The kernel panics (`panic=` reboots).
    Panic,
    /// The vault was re-sealed for a wrong PCR 4: the trial boots with a locked vault, which
    /// fails the gate.
    Prediction,
}

impl Fault {
    /// The fault's name in a marker.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Gate => "gate",
            Fault::Hang => "hang",
            Fault::Panic => "panic",
            Fault::Prediction => "prediction",
        }
    }

    fn named(s: &str) -> Option<Fault> {
        [Fault::Gate, Fault::Hang, Fault::Panic, Fault::Prediction]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

/// Parses a fault list (`hang,panic,prediction`): one to three known names.
pub fn parse_list(s: &str) -> Option<Vec<Fault>> {
    let list: Option<Vec<Fault>> = s
        .trim()
        .split(',')
        .map(|f| Fault::named(f.trim()))
        .collect();
    list.filter(|l| (1..=3).contains(&l.len()))
}

/// The faults `marker` (the file's bytes) plans for `slot`, if the image's update `keyring`
/// is the development CA; `None` otherwise.
pub fn planned(
    marker: Option<&[u8]>,
    keyring: Option<&[u8]>,
    slot: Option<char>,
) -> Option<Vec<Fault>> {
    let development = keyring.is_some_and(|k| k.trim_ascii() == DEVELOPMENT_CA.trim_ascii());
    if !development {
        return None;
    }
    let text = std::str::from_utf8(marker?).ok()?;
    let (named, list) = text.trim().split_once(' ')?;
    let slot = slot?;
    if named.len() != 1 || !named.starts_with(slot) {
        return None;
    }
    parse_list(list)
}

/// The fault of trial `n` (1, 2, 3...) of `plan`: the last one repeats.
pub fn for_trial(plan: &[Fault], n: usize) -> Option<Fault> {
    plan.get(n.saturating_sub(1).min(plan.len().saturating_sub(1)))
        .copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_read_only_for_its_slot_and_the_development_keyring() {
        let dev = Some(DEVELOPMENT_CA);
        let vendor: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIvendor\n-----END CERTIFICATE-----\n";
        let m = Some(&b"A hang,panic,prediction\n"[..]);
        assert_eq!(
            planned(m, dev, Some('A')),
            Some(vec![Fault::Hang, Fault::Panic, Fault::Prediction])
        );
        assert_eq!(planned(m, dev, Some('B')), None);
        assert_eq!(planned(m, Some(vendor), Some('A')), None);
        assert_eq!(planned(m, None, Some('A')), None);
        assert_eq!(planned(None, dev, Some('A')), None);
        assert_eq!(planned(Some(b"A"), dev, Some('A')), None);
        assert_eq!(planned(Some(b"AB gate"), dev, Some('A')), None);
        assert_eq!(planned(Some(b"A gate,reboot"), dev, Some('A')), None);
        assert_eq!(
            planned(Some(b"A gate,gate,gate,gate"), dev, Some('A')),
            None
        );
        assert_eq!(planned(Some(b"A gate"), dev, None), None);
    }

    #[test]
    fn the_last_fault_repeats() {
        let p = parse_list("hang,gate").unwrap();
        assert_eq!(for_trial(&p, 1), Some(Fault::Hang));
        assert_eq!(for_trial(&p, 2), Some(Fault::Gate));
        assert_eq!(for_trial(&p, 3), Some(Fault::Gate));
        assert_eq!(for_trial(&p, 0), Some(Fault::Hang));
        assert_eq!(for_trial(&[], 1), None);
    }
}
