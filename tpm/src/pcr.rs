//! PCR selections and the offline computation of PolicyPCR digests.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;

use crate::TpmError;

/// Highest PCR index accepted (a PC client TPM has PCRs 0..=23).
pub const MAX_PCR: u32 = 23;

/// TPM_CC_PolicyPCR.
const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_ALG_SHA256.
pub(crate) const TPM_ALG_SHA256: u16 = 0x000B;
/// sizeofSelect used in every TPMS_PCR_SELECTION this crate sends (PCRs 0..=23).
pub(crate) const SIZE_OF_SELECT: u8 = 3;

/// A set of PCRs of the SHA-256 bank that a sealed secret is bound to.
///
/// The default is PCR 7 (Secure Boot state). Parses from and prints as `"sha256:0,2,7"`
/// (the `sha256:` prefix is optional when parsing).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    pcrs: BTreeSet<u32>,
}

impl PcrSelection {
    /// A selection of the given PCR indices (SHA-256 bank). At least one, each `0..=23`.
    pub fn sha256(indices: &[u32]) -> Result<Self, TpmError> {
        if indices.is_empty() {
            return Err(TpmError::InvalidPcrs("no PCR selected".into()));
        }
        let mut pcrs = BTreeSet::new();
        for &i in indices {
            if i > MAX_PCR {
                return Err(TpmError::InvalidPcrs(format!(
                    "PCR {i} is out of range 0..={MAX_PCR}"
                )));
            }
            if !pcrs.insert(i) {
                return Err(TpmError::InvalidPcrs(format!("PCR {i} selected twice")));
            }
        }
        Ok(PcrSelection { pcrs })
    }

    /// The selected PCR indices, ascending.
    pub fn indices(&self) -> Vec<u32> {
        self.pcrs.iter().copied().collect()
    }

    /// Whether `index` is selected.
    pub fn contains(&self, index: u32) -> bool {
        self.pcrs.contains(&index)
    }

    /// The 3-byte PCR bitmap (`pcrSelect`) of this selection.
    pub(crate) fn bitmap(&self) -> [u8; SIZE_OF_SELECT as usize] {
        let mut map = [0u8; SIZE_OF_SELECT as usize];
        for &i in &self.pcrs {
            map[(i / 8) as usize] |= 1 << (i % 8);
        }
        map
    }

    /// The marshalled TPML_PCR_SELECTION (one SHA-256 selection), as the TPM hashes it.
    pub(crate) fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        out.push(SIZE_OF_SELECT);
        out.extend_from_slice(&self.bitmap());
        out
    }
}

impl Default for PcrSelection {
    /// PCR 7 of the SHA-256 bank.
    fn default() -> Self {
        PcrSelection {
            pcrs: BTreeSet::from([7]),
        }
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (n, i) in self.pcrs.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{i}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcrSelection({self})")
    }
}

impl FromStr for PcrSelection {
    type Err = TpmError;

    fn from_str(s: &str) -> Result<Self, TpmError> {
        let list = s.trim();
        let list = list.strip_prefix("sha256:").unwrap_or(list);
        let mut indices = Vec::new();
        for part in list.split(',') {
            let part = part.trim();
            let i = part.parse::<u32>().map_err(|_| {
                TpmError::InvalidPcrs(format!("{part:?} is not a PCR index (in {s:?})"))
            })?;
            indices.push(i);
        }
        PcrSelection::sha256(&indices)
    }
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The value a SHA-256 PCR holds after `TPM2_PCR_Extend(digest)` when it held `old`:
/// `SHA-256(old || digest)`. Used to predict PCR values after an update.
pub fn pcr_extend_sha256(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(old);
    buf[32..].copy_from_slice(digest);
    sha256(&buf)
}

/// Checks that `values` name each PCR of `selection` exactly once, and returns them in
/// ascending PCR order (the order in which the TPM concatenates them).
pub(crate) fn ordered_values<'a>(
    selection: &PcrSelection,
    values: &'a [(u32, [u8; 32])],
) -> Result<Vec<&'a [u8; 32]>, TpmError> {
    let mut seen = BTreeSet::new();
    for (i, _) in values {
        if !selection.contains(*i) {
            return Err(TpmError::InvalidPcrs(format!(
                "a value is given for PCR {i}, which is not in the selection {selection}"
            )));
        }
        if !seen.insert(*i) {
            return Err(TpmError::InvalidPcrs(format!("PCR {i} is given twice")));
        }
    }
    selection
        .indices()
        .into_iter()
        .map(|i| {
            values
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, v)| v)
                .ok_or_else(|| TpmError::InvalidPcrs(format!("no value given for PCR {i}")))
        })
        .collect()
}

/// The policy digest that `TPM2_PolicyPCR(selection)` produces in a fresh SHA-256 policy
/// session when the selected PCRs hold `values`, computed without a TPM:
///
/// `SHA-256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA-256(value_1 || ... || value_n))`
///
/// with the values concatenated in ascending PCR order. `values` must name every selected PCR
/// exactly once (any order).
pub fn policy_pcr_digest(
    selection: &PcrSelection,
    values: &[(u32, [u8; 32])],
) -> Result<[u8; 32], TpmError> {
    let ordered = ordered_values(selection, values)?;
    let mut concat = Vec::with_capacity(32 * ordered.len());
    for v in ordered {
        concat.extend_from_slice(v);
    }
    let pcr_digest = sha256(&concat);

    let mut msg = Vec::with_capacity(32 + 4 + 10 + 32);
    msg.extend_from_slice(&[0u8; 32]);
    msg.extend_from_slice(&TPM_CC_POLICY_PCR.to_be_bytes());
    msg.extend_from_slice(&selection.marshal());
    msg.extend_from_slice(&pcr_digest);
    Ok(sha256(&msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let s: PcrSelection = "sha256:7, 0,2".parse().expect("parse");
        assert_eq!(s.indices(), vec![0, 2, 7]);
        assert_eq!(s.to_string(), "sha256:0,2,7");
        assert_eq!(
            "7".parse::<PcrSelection>().expect("parse"),
            PcrSelection::default()
        );
        assert!("24".parse::<PcrSelection>().is_err());
        assert!("".parse::<PcrSelection>().is_err());
        assert!("7,7".parse::<PcrSelection>().is_err());
        assert!("sha1:7".parse::<PcrSelection>().is_err());
    }

    #[test]
    fn bitmap_and_marshalling() {
        let s = PcrSelection::sha256(&[0, 7, 8, 23]).expect("sel");
        assert_eq!(s.bitmap(), [0x81, 0x01, 0x80]);
        assert_eq!(s.marshal(), vec![0, 0, 0, 1, 0, 0x0B, 3, 0x81, 0x01, 0x80]);
    }

    #[test]
    fn values_must_match_selection() {
        let s = PcrSelection::sha256(&[0, 7]).expect("sel");
        assert!(policy_pcr_digest(&s, &[(7, [0; 32])]).is_err());
        assert!(policy_pcr_digest(&s, &[(7, [0; 32]), (1, [0; 32])]).is_err());
        assert!(policy_pcr_digest(&s, &[(7, [0; 32]), (7, [0; 32])]).is_err());
        let a = policy_pcr_digest(&s, &[(7, [1; 32]), (0, [2; 32])]).expect("digest");
        let b = policy_pcr_digest(&s, &[(0, [2; 32]), (7, [1; 32])]).expect("digest");
        assert_eq!(a, b, "order of the given values does not matter");
        let c = policy_pcr_digest(&s, &[(0, [1; 32]), (7, [2; 32])]).expect("digest");
        assert_ne!(a, c);
    }

    #[test]
    fn extend_is_sha256_of_concatenation() {
        // SHA-256 of 64 zero bytes.
        let expect = [
            0xf5, 0xa5, 0xfd, 0x42, 0xd1, 0x6a, 0x20, 0x30, 0x27, 0x98, 0xef, 0x6e, 0xd3, 0x09,
            0x97, 0x9b, 0x43, 0x00, 0x3d, 0x23, 0x20, 0xd9, 0xf0, 0xe8, 0xea, 0x98, 0x31, 0xa9,
            0x27, 0x59, 0xfb, 0x4b,
        ];
        assert_eq!(pcr_extend_sha256(&[0; 32], &[0; 32]), expect);
    }
}
