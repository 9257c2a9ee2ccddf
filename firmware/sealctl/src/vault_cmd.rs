//! `sealctl vault ...`: create the vault, show its status, recover it onto a new TPM; and the
//! vault side of `smime decrypt|sign --data-dir DIR --user EMAIL`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use sealgate_smime::cert::Certificate;
use sealgate_smime::keys::{OaepParams, PrivateKey, SignScheme};
use sealgate_tpm::PcrSelection;
use sealgate_vault::{
    DEFAULT_TCTI, RecoverySecret, Sealer, SealerKind, SoftwareSealer, TpmSealer, Vault, VaultKey,
};
use zeroize::Zeroizing;

use crate::{Failure, Outcome, read_file, read_input};

/// Which sealer opens (or creates) the vault.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct SealerArgs {
    /// TCTI of the TPM that seals the vault key (default device:/dev/tpmrm0; a swtpm: swtpm:path=SOCK).
    #[arg(long, value_name = "TCTI", conflicts_with = "danger_software_sealer")]
    pub tpm: Option<String>,
    /// DANGER: keep the vault key in a file, NOT protected by a TPM (boxes without a TPM only).
    #[arg(long)]
    pub danger_software_sealer: bool,
}

impl SealerArgs {
    pub(crate) fn sealer(&self) -> Box<dyn Sealer> {
        self.sealer_with_pcrs(None)
    }

    /// The sealer; a TPM sealer binds new blobs to `pcrs` (default PCR 7).
    fn sealer_with_pcrs(&self, pcrs: Option<PcrSelection>) -> Box<dyn Sealer> {
        if self.danger_software_sealer {
            Box::new(SoftwareSealer::danger_new())
        } else {
            let s = TpmSealer::new(self.tpm.as_deref().unwrap_or(DEFAULT_TCTI));
            Box::new(match pcrs {
                Some(p) => s.with_pcrs(p),
                None => s,
            })
        }
    }

    fn explicit(&self) -> bool {
        self.tpm.is_some() || self.danger_software_sealer
    }
}

/// Opens an existing vault with the sealer the command line names.
pub(crate) fn open_vault(data_dir: &Path, sealer: &SealerArgs) -> Result<Vault, Failure> {
    Ok(Vault::open(data_dir, sealer.sealer().as_mut())?)
}

#[derive(Subcommand)]
pub(crate) enum VaultCmd {
    /// Create a vault: a random vault key sealed by the TPM (or, explicitly, the software
    /// sealer) and a recovery secret shown once (or written, mode 0600, to --recovery-out).
    Init {
        /// The data directory (created if missing).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
        /// Write the recovery secret to this new file (mode 0600) instead of showing it.
        #[arg(long, value_name = "FILE")]
        recovery_out: Option<PathBuf>,
        /// The PCRs the vault key is sealed to (SHA-256 bank), e.g. sha256:7 (the default) or
        /// sha256:0,2,7. Stored in the vault; `vault status` shows it.
        #[arg(long, value_name = "PCRS", conflicts_with = "danger_software_sealer")]
        pcrs: Option<String>,
    },
    /// The vault's status as JSON: sealed by, PCRs, counts, warnings.
    Status {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// The audit log as JSON lines (oldest first), after verifying the whole keyed chain
    /// (needs the vault key: the TPM, or the software sealer). Fails if the chain breaks.
    Audit {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Only the last N entries (the whole chain is verified anyway).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
    /// Crypto-erase, the factory wipe's first step: destroy the TPM's erase secret (a TPM NV
    /// index) that every sealed copy of the vault key needs, so that no copy of the vault's
    /// database opens on this box again (only its recovery secret still opens one).
    /// Irreversible; works whether or not the vault opens.
    Erase {
        /// The data directory (the software sealer's key file is there).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        sealer: SealerArgs,
        /// Required: says that every key sealed by this TPM (or software sealer) is destroyed.
        #[arg(long)]
        destroy_every_key: bool,
    },
    /// Open the vault with its recovery secret and re-seal the vault key on this TPM.
    Recover {
        /// The data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// File holding the recovery secret; `-` reads it from standard input (how the box's
        /// console hands over what the technician typed).
        #[arg(long, value_name = "F")]
        recovery_file: PathBuf,
        /// The PCRs to seal to on the new TPM (default: the vault's setting, else sha256:7).
        #[arg(long, value_name = "PCRS", conflicts_with = "danger_software_sealer")]
        pcrs: Option<String>,
        #[command(flatten)]
        sealer: SealerArgs,
    },
}

fn parse_pcrs(text: &str) -> Result<PcrSelection, Failure> {
    text.parse()
        .map_err(|e: sealgate_tpm::TpmError| Failure(format!("--pcrs {text:?}: {e}"), 2))
}

pub(crate) fn run(cmd: VaultCmd) -> Outcome {
    match cmd {
        VaultCmd::Init {
            data_dir,
            sealer,
            recovery_out,
            pcrs,
        } => {
            let pcrs = pcrs.as_deref().map(parse_pcrs).transpose()?;
            if !sealer.explicit() {
                return Err(Failure(
                    "give --tpm TCTI or --danger-software-sealer".into(),
                    2,
                ));
            }
            if let Some(out) = recovery_out.as_ref().filter(|o| o.exists()) {
                return Err(Failure(
                    format!(
                        "{} exists: the recovery secret is never written over a file",
                        out.display()
                    ),
                    1,
                ));
            }
            let (vault, secret) = Vault::init(&data_dir, sealer.sealer_with_pcrs(pcrs).as_mut())?;
            let text = secret.expose_text();
            match &recovery_out {
                Some(out) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(out)
                        .map_err(|e| Failure(format!("cannot create {}: {e}", out.display()), 1))?;
                    let body = format!(
                        "# Sealgate vault recovery secret for {}. Keep it offline; it opens every key in the vault.\n{}\n",
                        vault.data_dir().display(),
                        &*text
                    );
                    f.write_all(body.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Failure(format!("cannot write {}: {e}", out.display()), 1))?;
                    println!(
                        "vault created in {}; recovery secret written to {}",
                        vault.data_dir().display(),
                        out.display()
                    );
                }
                None => {
                    println!("vault created in {}", vault.data_dir().display());
                    println!("RECOVERY SECRET (shown once; write it down and keep it offline):");
                    println!("{}", &*text);
                }
            }
            if vault.sealer_kind() == SealerKind::Software {
                eprintln!("sealctl: warning: software sealer: NOT protected by a TPM");
            }
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Status { data_dir, sealer } => {
            let mut status = Vault::status(&data_dir)?;
            // Try to unseal with the sealer the vault was made with, and time it.
            let mut s: Box<dyn Sealer> = match status.sealed_by {
                SealerKind::Software => Box::new(SoftwareSealer::danger_new()),
                SealerKind::Tpm => Box::new(TpmSealer::new(
                    sealer.tpm.as_deref().unwrap_or(DEFAULT_TCTI),
                )),
            };
            let start = Instant::now();
            let opened = Vault::open(&data_dir, s.as_mut());
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            match opened {
                Ok(vault) => {
                    status.unsealed = Some(true);
                    // The keyed chain, from the last checkpoint on (fast however long the log).
                    match vault.check_audit() {
                        Ok(c) => {
                            status.audit_chain = "ok".into();
                            status.audit_verified_now = Some(c.verified);
                        }
                        Err(e) => {
                            status.audit_chain = e.to_string();
                            status.warnings.push(e.to_string());
                        }
                    }
                }
                Err(e) => {
                    status.unsealed = Some(false);
                    status.unseal_error = Some(e.to_string());
                }
            }
            let mut json = serde_json::to_value(&status)?;
            if let Some(o) = json.as_object_mut() {
                o.insert(
                    "unseal_open_ms".into(),
                    serde_json::json!((ms * 10.0).round() / 10.0),
                );
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Erase {
            data_dir,
            sealer,
            destroy_every_key,
        } => {
            if !destroy_every_key {
                return Err(Failure(
                    "vault erase destroys every key: give --destroy-every-key".into(),
                    2,
                ));
            }
            if !sealer.explicit() {
                return Err(Failure(
                    "give --tpm TCTI or --danger-software-sealer".into(),
                    2,
                ));
            }
            let destroyed = sealer.sealer().erase(&data_dir)?;
            println!(
                "{}",
                if destroyed {
                    "erase secret destroyed: no copy of this vault opens with this sealer again"
                } else {
                    "there was no erase secret to destroy"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Audit {
            data_dir,
            tail,
            sealer,
        } => {
            let vault = open_vault(&data_dir, &sealer)?;
            let log = vault.audit()?;
            let skip = tail.map_or(0, |n| log.len().saturating_sub(n));
            let mut out = std::io::stdout().lock();
            for e in &log[skip..] {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        VaultCmd::Recover {
            data_dir,
            recovery_file,
            pcrs,
            sealer,
        } => {
            let pcrs = match pcrs {
                Some(p) => Some(parse_pcrs(&p)?),
                None => Vault::status(&data_dir)?
                    .pcrs
                    .as_deref()
                    .map(parse_pcrs)
                    .transpose()?,
            };
            if !sealer.explicit() {
                return Err(Failure(
                    "give --tpm TCTI (or --danger-software-sealer) to re-seal the vault key".into(),
                    2,
                ));
            }
            let raw = if recovery_file.as_os_str() == "-" {
                read_input(None)?
            } else {
                read_file(&recovery_file)?
            };
            let text = zeroize::Zeroizing::new(
                String::from_utf8(raw)
                    .map_err(|_| Failure("the recovery file is not text".into(), 1))?,
            );
            let secret = RecoverySecret::parse(&text)?;
            let vault = Vault::recover(&data_dir, &secret, sealer.sealer_with_pcrs(pcrs).as_mut())?;
            println!(
                "vault recovered and re-sealed by {}",
                vault.sealer_kind().name()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The keys `smime decrypt|sign --data-dir DIR --user EMAIL` use: for decryption every key
/// of the user (old ones too); for signing the current signing key (auto-enrolled if the
/// settings allow).
pub(crate) fn smime_keys(
    data_dir: &Path,
    user: &str,
    sealer: &SealerArgs,
    signing: bool,
) -> Result<Vec<Box<dyn PrivateKey>>, Failure> {
    let vault = Arc::new(open_vault(data_dir, sealer)?);
    let held = |key: VaultKey| {
        Box::new(OpenKey {
            key,
            _vault: vault.clone(),
        }) as Box<dyn PrivateKey>
    };
    if signing {
        if vault.ca_certificate().is_ok() {
            vault.ensure_key(user)?;
        }
        return Ok(vec![held(vault.signing_key(user)?)]);
    }
    let keys = vault.keys_for(user)?;
    if keys.is_empty() {
        return Err(Failure(format!("the vault holds no key for {user}"), 1));
    }
    Ok(keys.into_iter().map(held).collect())
}

/// Every key of every user in the vault of `data_dir` (for `scan`: any local recipient's
/// mail opens), or none when the directory holds no vault.
pub(crate) fn all_keys(
    data_dir: &Path,
    sealer: &SealerArgs,
) -> Result<Vec<Box<dyn PrivateKey>>, Failure> {
    if !data_dir.join(sealgate_vault::DB_FILE).exists() {
        return Ok(Vec::new());
    }
    let vault = Arc::new(open_vault(data_dir, sealer)?);
    let mut users: Vec<String> = vault.list(None)?.into_iter().map(|k| k.user).collect();
    users.sort();
    users.dedup();
    let mut out: Vec<Box<dyn PrivateKey>> = Vec::new();
    for user in users {
        for key in vault.keys_for(&user)? {
            out.push(Box::new(OpenKey {
                key,
                _vault: vault.clone(),
            }));
        }
    }
    Ok(out)
}

/// A vault key with its vault kept open: a `VaultKey` works only while its vault is open
/// (the vault writes the key's audit entries, at the latest when the last one is dropped).
struct OpenKey {
    key: VaultKey,
    _vault: Arc<Vault>,
}

impl PrivateKey for OpenKey {
    fn certificate(&self) -> &Certificate {
        self.key.certificate()
    }

    fn chain(&self) -> &[Certificate] {
        self.key.chain()
    }

    fn rsa_pkcs1_decrypt(
        &self,
        encrypted_key: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key.rsa_pkcs1_decrypt(encrypted_key, key_len)
    }

    fn rsa_oaep_decrypt(
        &self,
        encrypted_key: &[u8],
        params: OaepParams,
        label: &[u8],
        key_len: usize,
    ) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key
            .rsa_oaep_decrypt(encrypted_key, params, label, key_len)
    }

    fn ecdh(&self, peer_public: &[u8]) -> sealgate_smime::Result<Zeroizing<Vec<u8>>> {
        self.key.ecdh(peer_public)
    }

    fn sign(&self, scheme: SignScheme, message: &[u8]) -> sealgate_smime::Result<Vec<u8>> {
        self.key.sign(scheme, message)
    }
}
