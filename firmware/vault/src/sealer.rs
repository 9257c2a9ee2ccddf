//! Who keeps the vault key sealed: the TPM, or (only by explicit choice) a file.

use std::fs;
use std::io::Write;
use std::path::Path;

use sealgate_tpm::{ERASE_NV_INDEX, PcrSelection, SealedBlob, Tpm, TpmError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cipher::{self, VaultSecret};
use crate::error::{Result, VaultError};

/// The TCTI of the box's TPM (the kernel's resource manager).
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The file that holds the vault key under the software sealer (mode 0600).
pub const SOFTWARE_KEY_FILE: &str = "vault-key.DANGER-software-sealer";

const SOFTWARE_HEADER: &str = "# SEALGATE VAULT KEY: software sealer, NOT protected by a TPM.\n\
# Anyone who can read this file can read every private key in the vault.\n";

/// Which kind of sealer a vault was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SealerKind {
    /// A TPM 2.0 (PolicyPCR-bound sealed object).
    Tpm,
    /// A file in the data directory: no protection against a copied disk.
    Software,
}

impl SealerKind {
    /// `"tpm"` or `"software"`.
    pub fn name(self) -> &'static str {
        match self {
            SealerKind::Tpm => "tpm",
            SealerKind::Software => "software",
        }
    }
}

/// Seals and unseals the vault key. The blob that `seal` returns is stored in the database;
/// `unseal` gets it back.
pub trait Sealer {
    /// The kind, recorded in the vault so that a mismatch is refused.
    fn kind(&self) -> SealerKind;

    /// Seals the vault key; returns the blob to store.
    fn seal(&mut self, data_dir: &Path, key: &[u8; 32]) -> Result<Vec<u8>>;

    /// Unseals the blob that [`Sealer::seal`] returned.
    fn unseal(&mut self, data_dir: &Path, blob: &[u8]) -> Result<Zeroizing<[u8; 32]>>;

    /// Where the key is sealed, for `vault status` (e.g. the TCTI). No secrets.
    fn describe(&self) -> String;

    /// The PCR selection new blobs are bound to (`None`: not a TPM).
    fn pcrs(&self) -> Option<PcrSelection> {
        None
    }

    /// Whether destroying the sealer's erase secret ([`Sealer::erase`]) makes `blob` useless.
    /// Blobs sealed before erasable sealing existed are not; the vault re-seals them at open.
    fn is_erasable(&self, _blob: &[u8]) -> bool {
        true
    }

    /// The crypto-erase of the factory wipe: destroys what every blob of this sealer needs, so
    /// that no copy of the database can be opened with it again (only the recovery secret
    /// still opens a copy). `Ok(false)` if there was nothing to destroy.
    fn erase(&mut self, data_dir: &Path) -> Result<bool>;

    /// Seals the vault key for PCR values that will hold after an update (`predicted` gives
    /// every PCR of `pcrs`). Only a TPM sealer can.
    fn seal_predicted(
        &mut self,
        _data_dir: &Path,
        _key: &[u8; 32],
        _pcrs: &PcrSelection,
        _predicted: &[(u32, [u8; 32])],
    ) -> Result<Vec<u8>> {
        Err(VaultError::Usage(format!(
            "{} cannot seal for predicted PCR values: only a TPM-sealed vault is re-sealed for an update",
            self.describe()
        )))
    }
}

/// The TPM sealer: the vault key is a TPM sealed object bound to a PCR policy.
pub struct TpmSealer {
    tcti: String,
    pcrs: PcrSelection,
    tpm: Option<Tpm>,
}

impl TpmSealer {
    /// A sealer for the TPM at `tcti`, sealing to the default PCR selection (PCR 7).
    /// Connects on first use.
    pub fn new(tcti: &str) -> TpmSealer {
        TpmSealer {
            tcti: tcti.to_string(),
            pcrs: PcrSelection::default(),
            tpm: None,
        }
    }

    /// Seals to these PCRs instead of the default.
    pub fn with_pcrs(mut self, pcrs: PcrSelection) -> TpmSealer {
        self.pcrs = pcrs;
        self
    }

    fn tpm(&mut self) -> Result<&mut Tpm> {
        if self.tpm.is_none() {
            self.tpm = Some(Tpm::connect(&self.tcti).map_err(tpm_error)?);
        }
        self.tpm
            .as_mut()
            .ok_or_else(|| VaultError::Unseal("no TPM".into()))
    }
}

fn tpm_error(e: TpmError) -> VaultError {
    VaultError::Unseal(e.to_string())
}

impl Sealer for TpmSealer {
    fn kind(&self) -> SealerKind {
        SealerKind::Tpm
    }

    fn seal(&mut self, _data_dir: &Path, key: &[u8; 32]) -> Result<Vec<u8>> {
        let pcrs = self.pcrs.clone();
        Ok(self
            .tpm()?
            .seal_erasable(key, &pcrs, ERASE_NV_INDEX)
            .map_err(tpm_error)?
            .to_bytes())
    }

    fn is_erasable(&self, blob: &[u8]) -> bool {
        blob_erasable(blob)
    }

    fn erase(&mut self, _data_dir: &Path) -> Result<bool> {
        self.tpm()?
            .erase(ERASE_NV_INDEX)
            .map_err(|e| VaultError::Storage(format!("cannot destroy the TPM's erase secret: {e}")))
    }

    fn unseal(&mut self, _data_dir: &Path, blob: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let blob = SealedBlob::from_bytes(blob)
            .map_err(|e| VaultError::Corrupt(format!("sealed vault key: {e}")))?;
        self.tpm()?.unseal(&blob).map_err(tpm_error)
    }

    fn describe(&self) -> String {
        format!("tpm {} ({})", self.tcti, self.pcrs)
    }

    fn pcrs(&self) -> Option<PcrSelection> {
        Some(self.pcrs.clone())
    }

    fn seal_predicted(
        &mut self,
        _data_dir: &Path,
        key: &[u8; 32],
        pcrs: &PcrSelection,
        predicted: &[(u32, [u8; 32])],
    ) -> Result<Vec<u8>> {
        Ok(self
            .tpm()?
            .seal_erasable_for_predicted(key, pcrs, predicted, ERASE_NV_INDEX)
            .map_err(|e| VaultError::Usage(format!("cannot seal for the update: {e}")))?
            .to_bytes())
    }
}

/// Whether a TPM blob needs the TPM's erase secret (version 2), for `vault status`.
pub(crate) fn blob_erasable(blob: &[u8]) -> bool {
    SealedBlob::from_bytes(blob).is_ok_and(|b| b.erase_index().is_some())
}

/// The PCR selection a TPM blob is bound to, for `vault status`.
pub(crate) fn blob_pcrs(blob: &[u8]) -> Option<String> {
    SealedBlob::from_bytes(blob)
        .ok()
        .map(|b| b.pcrs().to_string())
}

/// The software sealer: the vault key in [`SOFTWARE_KEY_FILE`] (mode 0600) beside the
/// database. Only for boxes without a TPM, chosen with `--danger-software-sealer`; every
/// status output says the vault is not protected by a TPM.
#[derive(Debug, Default)]
pub struct SoftwareSealer {
    _private: (),
}

impl SoftwareSealer {
    /// The software sealer. Name it `danger_*` at the call site: it protects nothing at rest.
    pub fn danger_new() -> SoftwareSealer {
        SoftwareSealer { _private: () }
    }
}

impl Sealer for SoftwareSealer {
    fn kind(&self) -> SealerKind {
        SealerKind::Software
    }

    fn seal(&mut self, data_dir: &Path, key: &[u8; 32]) -> Result<Vec<u8>> {
        let path = data_dir.join(SOFTWARE_KEY_FILE);
        let mut text = Zeroizing::new(String::from(SOFTWARE_HEADER));
        text.push_str(&cipher::hex(key));
        text.push('\n');
        sealgate_local::fsio::write_atomic(
            &path,
            text.as_bytes(),
            sealgate_local::fsio::Mode::Exactly(0o600),
        )?;
        // The blob only names the file; it is checked against the key by the vault's key check.
        Ok(SOFTWARE_KEY_FILE.as_bytes().to_vec())
    }

    fn unseal(&mut self, data_dir: &Path, _blob: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let path = data_dir.join(SOFTWARE_KEY_FILE);
        let text = Zeroizing::new(
            fs::read_to_string(&path)
                .map_err(|e| VaultError::Unseal(format!("cannot read {}: {e}", path.display())))?,
        );
        let line = text
            .lines()
            .find(|l| !l.starts_with('#'))
            .unwrap_or_default()
            .trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if line.len() != 64 || !line.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VaultError::Unseal(format!("{} is damaged", path.display())));
        }
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&line[2 * i..2 * i + 2], 16)
                .map_err(|_| VaultError::Unseal(format!("{} is damaged", path.display())))?;
        }
        Ok(key)
    }

    fn describe(&self) -> String {
        format!("software sealer ({SOFTWARE_KEY_FILE}), NOT protected by a TPM")
    }

    fn erase(&mut self, data_dir: &Path) -> Result<bool> {
        let path = data_dir.join(SOFTWARE_KEY_FILE);
        match fs::metadata(&path) {
            Ok(m) => {
                // Overwrite before unlinking: the key is the whole secret.
                let mut f = fs::OpenOptions::new().write(true).open(&path)?;
                f.write_all(&vec![0u8; usize::try_from(m.len()).unwrap_or(0)])?;
                f.sync_all()?;
                fs::remove_file(&path)?;
                fs::File::open(data_dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Seals a vault key with `sealer`.
pub(crate) fn seal_key(sealer: &mut dyn Sealer, dir: &Path, key: &VaultSecret) -> Result<Vec<u8>> {
    sealer.seal(dir, key.bytes())
}
