//! The connection to a TPM and the seal/unseal operations.

use std::fmt;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::thread::sleep;
use std::time::Duration;

use tss_esapi::Context;
use tss_esapi::attributes::{
    NvIndexAttributesBuilder, ObjectAttributesBuilder, SessionAttributesBuilder,
};
use tss_esapi::constants::{CapabilityType, PropertyTag, SessionType, StartupType};
use tss_esapi::handles::{
    KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Digest, DigestValues, EccParameter, EccPoint, KeyedHashScheme, MaxNvBuffer,
    NvPublicBuilder, PcrSelectSize, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::{DeviceConfig, TctiNameConf};
use tss_esapi::traits::{Marshall, UnMarshall};
use zeroize::Zeroizing;

use crate::TpmError;
use crate::blob::SealedBlob;
use crate::error::{raw_rc, rc, tpm_err};
use crate::pcr::{PcrSelection, policy_pcr_digest};
use crate::relay::Relay;
use crate::tcti::{self, Tcti};

/// How often a command answered with TPM_RC_RETRY / YIELDED / TESTING is sent again (ESYS
/// itself already resubmits a few times without waiting; these attempts wait 5 ms doubling up
/// to 200 ms, about 2 s in all).
const TRANSIENT_RETRIES: u32 = 12;
/// How often an unseal is tried again after the PCRs changed under it (TPM_RC_PCR_CHANGED,
/// TPM_RC_POLICY_FAIL) before it is reported as [`TpmError::PolicyMismatch`].
const UNSEAL_ATTEMPTS: u32 = 3;

/// The NV index that holds the box's *erase secret* (owner range, "SG" 01): 32 random bytes
/// that every erasable blob ([`Tpm::seal_erasable`]) is XORed with. [`Tpm::erase`] undefines
/// it: that is the crypto-erase of the factory wipe.
pub const ERASE_NV_INDEX: u32 = 0x0153_4701;

/// An open connection to a TPM.
///
/// Holds the storage primary key (SRK): an ECC P-256 restricted decryption key in the owner
/// hierarchy with `noDA` set, created from the standard TCG template on first use. TPM2_CreatePrimary
/// derives it from the owner seed, so it is the same key on every connection until the TPM is
/// cleared; no persistent handle is used.
///
/// One `Tpm` issues one command at a time (`&mut self`); keep it behind a mutex to share it.
/// Without a resource manager (swtpm; `/dev/tpm0` instead of `/dev/tpmrm0`) the TPM has only
/// about three transient object slots: keep one `Tpm` per TPM at a time there.
pub struct Tpm {
    // Field order matters: the ESYS context is dropped before the relay it talks through.
    ctx: Context,
    srk: Option<KeyHandle>,
    tcti: String,
    _relay: Option<Relay>,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .finish_non_exhaustive()
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        if let Some(srk) = self.srk.take() {
            let _ = self.ctx.flush_context(srk.into());
        }
    }
}

impl Tpm {
    /// Connects to the TPM named by a TCTI string:
    ///
    /// - `device:/dev/tpmrm0` (or just `device`): the kernel's resource-managed TPM device;
    /// - `swtpm:path=SOCKET`: a swtpm on a Unix socket, its control socket at `SOCKET.ctrl`;
    /// - `swtpm:host=HOST,port=PORT`: a swtpm on TCP (control channel on `PORT + 1`).
    ///
    /// Sends TPM2_Startup(CLEAR) if the TPM was never started (a bare simulator), and waits
    /// out TPM_RC_RETRY / YIELDED / TESTING.
    pub fn connect(tcti_str: &str) -> Result<Tpm, TpmError> {
        let unreachable = |reason: String| TpmError::Unreachable {
            tcti: tcti_str.to_string(),
            reason,
        };
        let (conf, relay) = match tcti::parse(tcti_str)? {
            Tcti::Device(path) => {
                if !path.exists() {
                    return Err(unreachable(format!(
                        "{} does not exist (no TPM, or its kernel driver is not loaded)",
                        path.display()
                    )));
                }
                let path = path.to_str().ok_or_else(|| TpmError::InvalidTcti {
                    tcti: tcti_str.to_string(),
                    reason: "the device path is not UTF-8".into(),
                })?;
                let conf = DeviceConfig::from_str(path).map_err(|e| unreachable(e.to_string()))?;
                (TctiNameConf::Device(conf), None)
            }
            Tcti::SwtpmUnix(sock) => {
                // Probe first: a missing socket is the common mistake and deserves a clear error.
                UnixStream::connect(&sock).map_err(|e| {
                    unreachable(format!(
                        "cannot connect to swtpm socket {}: {e}",
                        sock.display()
                    ))
                })?;
                let relay = Relay::start(&sock)
                    .map_err(|e| unreachable(format!("cannot start the loopback relay: {e}")))?;
                let conf = TctiNameConf::from_str(&relay.tcti())
                    .map_err(|e| unreachable(e.to_string()))?;
                (conf, Some(relay))
            }
            Tcti::SwtpmTcp { host, port } => {
                let conf = TctiNameConf::from_str(&format!("swtpm:host={host},port={port}"))
                    .map_err(|e| unreachable(e.to_string()))?;
                (conf, None)
            }
        };
        let ctx = Context::new(conf).map_err(|e| unreachable(e.to_string()))?;
        let mut tpm = Tpm {
            ctx,
            srk: None,
            tcti: tcti_str.to_string(),
            _relay: relay,
        };
        tpm.ensure_started()?;
        Ok(tpm)
    }

    /// The TCTI string this connection was opened with.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Seals `secret` so that only this TPM can unseal it, and only while the PCRs in `pcrs`
    /// hold the values they hold now. The sealed object has `noDA` and no password: its only
    /// authorization is the PolicyPCR policy. The policy is the TPM's own trial-session digest
    /// of the current values; a PCR extended between that and the creation would leave a blob
    /// that does not open, so callers should unseal once before they rely on a new blob.
    pub fn seal(&mut self, secret: &[u8; 32], pcrs: &PcrSelection) -> Result<SealedBlob, TpmError> {
        let policy = self.trial_policy_digest(pcrs)?;
        self.seal_with_policy(secret, pcrs, policy)
    }

    /// Seals `secret` for PCR values that do not hold yet: `predicted` gives, for every PCR in
    /// `selection`, the value it will have (e.g. after an update's next boot). The policy digest
    /// is computed offline with [`policy_pcr_digest`]. The current PCR values play no part, so
    /// the blob does not unseal now (unless the values happen to be equal).
    pub fn seal_for_predicted(
        &mut self,
        secret: &[u8; 32],
        selection: &PcrSelection,
        predicted: &[(u32, [u8; 32])],
    ) -> Result<SealedBlob, TpmError> {
        let policy = policy_pcr_digest(selection, predicted)?;
        self.seal_with_policy(secret, selection, policy)
    }

    /// Like [`Tpm::seal`], but the sealed object holds `secret` XORed with the erase secret in
    /// NV index `nv_index` (defined with fresh random bytes if it does not exist): opening the
    /// blob needs the index too, so [`Tpm::erase`] makes it useless, copies included.
    pub fn seal_erasable(
        &mut self,
        secret: &[u8; 32],
        pcrs: &PcrSelection,
        nv_index: u32,
    ) -> Result<SealedBlob, TpmError> {
        let masked = self.masked(secret, nv_index)?;
        let mut blob = self.seal(&masked, pcrs)?;
        blob.erase_index = Some(nv_index);
        Ok(blob)
    }

    /// [`Tpm::seal_for_predicted`] with the erase secret, as [`Tpm::seal_erasable`].
    pub fn seal_erasable_for_predicted(
        &mut self,
        secret: &[u8; 32],
        selection: &PcrSelection,
        predicted: &[(u32, [u8; 32])],
        nv_index: u32,
    ) -> Result<SealedBlob, TpmError> {
        let masked = self.masked(secret, nv_index)?;
        let mut blob = self.seal_for_predicted(&masked, selection, predicted)?;
        blob.erase_index = Some(nv_index);
        Ok(blob)
    }

    /// Destroys the erase secret in NV index `nv_index` (TPM2_NV_UndefineSpace, owner
    /// authorization): every blob sealed erasably under it can no longer be opened by anyone,
    /// on this TPM or elsewhere. `Ok(false)` if there was none.
    pub fn erase(&mut self, nv_index: u32) -> Result<bool, TpmError> {
        let Some(handle) = self.nv_handle(nv_index)? else {
            return Ok(false);
        };
        self.with_retry("undefine the erase secret", |ctx| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_undefine_space(Provision::Owner, handle)
            })
        })?;
        Ok(true)
    }

    /// Whether NV index `nv_index` holds an erase secret.
    pub fn erase_secret_exists(&mut self, nv_index: u32) -> Result<bool, TpmError> {
        self.nv_defined(nv_index)
    }

    /// Unseals a blob made by [`Tpm::seal`] or [`Tpm::seal_for_predicted`] on this TPM.
    ///
    /// Fails with [`TpmError::PolicyMismatch`] (and returns no secret) when the PCRs no longer
    /// hold the values the blob was sealed to, after retrying a few times in case they changed
    /// between the policy check and the unseal; with [`TpmError::ForeignBlob`] when the blob was
    /// made by another TPM or this TPM was cleared.
    ///
    /// The policy session is salted with the storage key and encrypts the response, so the
    /// secret does not cross the bus in the clear.
    pub fn unseal(&mut self, blob: &SealedBlob) -> Result<Zeroizing<[u8; 32]>, TpmError> {
        let public = Public::unmarshall(&blob.public)
            .map_err(|e| TpmError::BadBlob(format!("public area: {e}")))?;
        let private = Private::try_from(blob.private.clone())
            .map_err(|e| TpmError::BadBlob(format!("private area: {e}")))?;
        if public_auth_policy(&public).as_deref() != Some(&blob.policy_digest[..]) {
            return Err(TpmError::BadBlob(
                "the recorded policy digest differs from the object's authPolicy".into(),
            ));
        }
        let selection = pcr_selection_list(&blob.pcrs)?;
        let srk = self.srk()?;

        for attempt in 0..UNSEAL_ATTEMPTS {
            if attempt > 0 {
                sleep(Duration::from_millis(10 << attempt));
            }
            let object = self.load(srk, &private, &public)?;
            let outcome = self.unseal_once(srk, object, &selection, &blob.policy_digest);
            let _ = self.ctx.flush_context(object.into());
            match outcome {
                Ok(mut secret) => {
                    if let Some(index) = blob.erase_index {
                        let pad = self.erase_secret(index, false)?.ok_or(TpmError::Erased)?;
                        for (s, p) in secret.iter_mut().zip(pad.iter()) {
                            *s ^= p;
                        }
                    }
                    return Ok(secret);
                }
                Err(Attempt::Mismatch) => {}
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
        Err(TpmError::PolicyMismatch)
    }

    /// Reads the current values of the selected PCRs, ascending by index.
    pub fn read_pcrs(
        &mut self,
        selection: &PcrSelection,
    ) -> Result<Vec<(u32, [u8; 32])>, TpmError> {
        let mut wanted = selection.indices();
        let mut out = Vec::with_capacity(wanted.len());
        // TPM2_PCR_Read returns at most 8 digests per call: ask again for the rest.
        while !wanted.is_empty() {
            let list = pcr_selection_list(&PcrSelection::sha256(&wanted)?)?;
            let (_counter, read_sel, digests) = self.with_retry("read PCRs", |ctx| {
                ctx.execute_without_session(|c| c.pcr_read(list.clone()))
            })?;
            let read: Vec<u32> = read_sel
                .get_selections()
                .iter()
                .filter(|s| s.hashing_algorithm() == HashingAlgorithm::Sha256)
                .flat_map(|s| s.selected())
                .map(slot_index)
                .collect();
            if read.is_empty() || read.len() != digests.len() {
                return Err(TpmError::Tpm {
                    op: "read PCRs",
                    code: None,
                    detail: format!(
                        "the TPM returned {} digests for {} PCRs (is the SHA-256 bank active?)",
                        digests.len(),
                        read.len()
                    ),
                });
            }
            let mut read_sorted = read.clone();
            read_sorted.sort_unstable();
            for (i, d) in read_sorted.iter().zip(digests.value()) {
                out.push((*i, digest32(d, "read PCRs")?));
            }
            wanted.retain(|i| !read.contains(i));
        }
        out.sort_unstable_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// The PolicyPCR digest the TPM itself computes in a trial session for the current values
    /// of the selected PCRs (what [`Tpm::seal`] binds to).
    pub fn trial_policy_digest(&mut self, pcrs: &PcrSelection) -> Result<[u8; 32], TpmError> {
        let list = pcr_selection_list(pcrs)?;
        let session = self.start_session(SessionType::Trial, None, false, false)?;
        let result = self.policy_pcr_digest_in(session, &list);
        self.flush_session(session);
        result
    }

    /// Extends a SHA-256 PCR: `PCR[index] = SHA-256(PCR[index] || digest)`.
    pub fn pcr_extend(&mut self, index: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        PcrSelection::sha256(&[index])?;
        let handle = PcrHandle::try_from(index)
            .map_err(|e| TpmError::InvalidPcrs(format!("PCR {index}: {e}")))?;
        let mut values = DigestValues::new();
        let d = Digest::try_from(digest.to_vec()).map_err(tpm_err("extend PCR"))?;
        values.set(HashingAlgorithm::Sha256, d);
        self.with_retry("extend PCR", |ctx| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values.clone())
            })
        })
    }

    /// The TPM's dictionary-attack failure counter (TPM_PT_LOCKOUT_COUNTER). Objects made by
    /// this crate have `noDA`, so wrong guesses against them never raise it.
    pub fn lockout_counter(&mut self) -> Result<u32, TpmError> {
        let (data, _more) = self.with_retry("read lockout counter", |ctx| {
            ctx.execute_without_session(|c| {
                c.get_capability(
                    CapabilityType::TpmProperties,
                    tss_esapi::constants::tss::TPM2_PT_LOCKOUT_COUNTER,
                    1,
                )
            })
        })?;
        match data {
            CapabilityData::TpmProperties(list) => list
                .find(PropertyTag::LockoutCounter)
                .map(|p| p.value())
                .ok_or_else(|| TpmError::Tpm {
                    op: "read lockout counter",
                    code: None,
                    detail: "the TPM did not report TPM_PT_LOCKOUT_COUNTER".into(),
                }),
            _ => Err(TpmError::Tpm {
                op: "read lockout counter",
                code: None,
                detail: "unexpected capability data".into(),
            }),
        }
    }

    /// Test support: one authorization attempt with a wrong password against a fresh storage
    /// key that has `noDA` (or not, as a control), and how the TPM answered.
    #[cfg(feature = "test-support")]
    pub fn wrong_auth_attempt(&mut self, no_da: bool) -> Result<WrongAuth, TpmError> {
        use tss_esapi::structures::Auth;
        let right = Auth::try_from(b"right".to_vec()).map_err(tpm_err("auth"))?;
        let wrong = Auth::try_from(b"wrong".to_vec()).map_err(tpm_err("auth"))?;
        let template = storage_key_template(no_da).map_err(tpm_err("storage key template"))?;
        let key = self
            .with_retry("create test key", |ctx| {
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    c.create_primary(
                        Hierarchy::Owner,
                        template.clone(),
                        Some(right.clone()),
                        None,
                        None,
                        None,
                    )
                })
            })?
            .key_handle;
        let sealed = sealed_object_template(&[0u8; 32]).map_err(tpm_err("template"))?;
        let data = SensitiveData::try_from(vec![0u8; 4]).map_err(tpm_err("data"))?;
        let result = self.ctx.tr_set_auth(key.into(), wrong).and_then(|()| {
            self.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create(key, sealed, None, Some(data), None, None)
                })
        });
        let _ = self.ctx.flush_context(key.into());
        Ok(match result.map_err(|e| raw_rc(&e)) {
            Ok(_) => WrongAuth::Accepted,
            Err(Some(c)) if rc::is_fmt1(c, rc::FMT1_BAD_AUTH) => WrongAuth::BadAuth,
            Err(Some(c)) if rc::is_fmt1(c, rc::FMT1_AUTH_FAIL) => WrongAuth::AuthFail,
            Err(Some(c)) if rc::is_fmt0(c, rc::LOCKOUT) => WrongAuth::Lockout,
            Err(code) => WrongAuth::Other(code),
        })
    }

    // ---- internals ----

    /// `secret` XOR the erase secret of `nv_index` (created if missing).
    fn masked(
        &mut self,
        secret: &[u8; 32],
        nv_index: u32,
    ) -> Result<Zeroizing<[u8; 32]>, TpmError> {
        let pad = self.erase_secret(nv_index, true)?.ok_or(TpmError::Erased)?;
        let mut out = Zeroizing::new(*secret);
        for (o, p) in out.iter_mut().zip(pad.iter()) {
            *o ^= p;
        }
        Ok(out)
    }

    fn nv_defined(&mut self, nv_index: u32) -> Result<bool, TpmError> {
        let (data, _more) = self.with_retry("list NV indices", |ctx| {
            ctx.execute_without_session(|c| c.get_capability(CapabilityType::Handles, nv_index, 1))
        })?;
        Ok(match data {
            CapabilityData::Handles(list) => list
                .into_inner()
                .first()
                .is_some_and(|h| u32::from(*h) == nv_index),
            _ => false,
        })
    }

    /// The ESYS handle of NV index `nv_index`, if it is defined.
    fn nv_handle(&mut self, nv_index: u32) -> Result<Option<NvIndexHandle>, TpmError> {
        if !self.nv_defined(nv_index)? {
            return Ok(None);
        }
        let tpm_handle = NvIndexTpmHandle::new(nv_index).map_err(|e| TpmError::Tpm {
            op: "erase secret index",
            code: None,
            detail: e.to_string(),
        })?;
        let object = self.with_retry("open the erase secret", |ctx| {
            ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)))
        })?;
        Ok(Some(NvIndexHandle::from(object)))
    }

    /// Reads the 32-byte erase secret of `nv_index`; with `create`, defines the index with
    /// fresh random bytes first if it does not exist. The bytes cross the bus only inside a
    /// session salted with the storage key (response or command parameter encryption).
    fn erase_secret(
        &mut self,
        nv_index: u32,
        create: bool,
    ) -> Result<Option<Zeroizing<[u8; 32]>>, TpmError> {
        let handle = match self.nv_handle(nv_index)? {
            Some(h) => h,
            None if !create => return Ok(None),
            None => {
                let tpm_handle =
                    NvIndexTpmHandle::new(nv_index).map_err(tpm_err("erase secret index"))?;
                let attrs = NvIndexAttributesBuilder::new()
                    .with_owner_write(true)
                    .with_owner_read(true)
                    .with_no_da(true)
                    .build()
                    .map_err(tpm_err("erase secret attributes"))?;
                let public = NvPublicBuilder::new()
                    .with_nv_index(tpm_handle)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attrs)
                    .with_data_area_size(32)
                    .build()
                    .map_err(tpm_err("erase secret template"))?;
                let handle = self.with_retry("define the erase secret", |ctx| {
                    ctx.execute_with_session(Some(AuthSession::Password), |c| {
                        c.nv_define_space(Provision::Owner, None, public.clone())
                    })
                })?;
                let mut fresh = Zeroizing::new([0u8; 32]);
                aws_lc_rs::rand::fill(&mut fresh[..]).map_err(|_| TpmError::Tpm {
                    op: "erase secret",
                    code: None,
                    detail: "the random number generator failed".into(),
                })?;
                let data =
                    MaxNvBuffer::try_from(fresh.to_vec()).map_err(tpm_err("erase secret"))?;
                let srk = self.srk()?;
                let session = self.start_session(SessionType::Hmac, Some(srk), true, false)?;
                let written = self.with_retry("write the erase secret", |ctx| {
                    ctx.execute_with_session(Some(session), |c| {
                        c.nv_write(NvAuth::Owner, handle, data.clone(), 0)
                    })
                });
                self.flush_session(session);
                written?;
                handle
            }
        };
        let srk = self.srk()?;
        let session = self.start_session(SessionType::Hmac, Some(srk), false, true)?;
        let read = self.with_retry("read the erase secret", |ctx| {
            ctx.execute_with_session(Some(session), |c| c.nv_read(NvAuth::Owner, handle, 32, 0))
        });
        self.flush_session(session);
        let mut h: ObjectHandle = handle.into();
        let _ = self.ctx.tr_close(&mut h);
        let data = Zeroizing::new(read?.value().to_vec());
        let pad = <[u8; 32]>::try_from(data.as_slice()).map_err(|_| TpmError::Tpm {
            op: "read the erase secret",
            code: None,
            detail: format!("{} bytes, want 32", data.len()),
        })?;
        Ok(Some(Zeroizing::new(pad)))
    }

    fn ensure_started(&mut self) -> Result<(), TpmError> {
        match self.probe() {
            Err(TpmError::Tpm { code: Some(c), .. }) if rc::is_fmt0(c, rc::INITIALIZE) => {
                self.with_retry("startup", |ctx| ctx.startup(StartupType::Clear))?;
                self.probe()
            }
            Err(TpmError::Tpm {
                code: Some(c),
                detail,
                ..
            }) if !rc::is_tpm_layer(c) => Err(TpmError::Unreachable {
                tcti: self.tcti.clone(),
                reason: format!("{detail} (TSS2_RC {c:#x})"),
            }),
            other => other,
        }
    }

    fn probe(&mut self) -> Result<(), TpmError> {
        self.with_retry("probe", |ctx| {
            ctx.execute_without_session(|c| {
                c.get_capability(
                    CapabilityType::TpmProperties,
                    tss_esapi::constants::tss::TPM2_PT_MANUFACTURER,
                    1,
                )
            })
        })
        .map(|_| ())
    }

    /// Runs `f`, sending it again while the TPM answers RETRY / YIELDED / TESTING.
    fn with_retry<T>(
        &mut self,
        op: &'static str,
        mut f: impl FnMut(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<T, TpmError> {
        let mut delay = Duration::from_millis(5);
        let mut attempt = 0;
        loop {
            match f(&mut self.ctx) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let transient = raw_rc(&e).is_some_and(rc::is_transient);
                    if !transient || attempt >= TRANSIENT_RETRIES {
                        return Err(tpm_err(op)(e));
                    }
                    attempt += 1;
                    sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// The storage primary key, created on first use.
    fn srk(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some(k) = self.srk {
            return Ok(k);
        }
        let template = storage_key_template(true).map_err(tpm_err("storage key template"))?;
        let key = self
            .with_retry("create storage primary key", |ctx| {
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    c.create_primary(Hierarchy::Owner, template.clone(), None, None, None, None)
                })
            })?
            .key_handle;
        self.srk = Some(key);
        Ok(key)
    }

    fn start_session(
        &mut self,
        kind: SessionType,
        salt_key: Option<KeyHandle>,
        decrypt: bool,
        encrypt: bool,
    ) -> Result<AuthSession, TpmError> {
        let session = self
            .with_retry("start session", |ctx| {
                ctx.execute_without_session(|c| {
                    c.start_auth_session(
                        salt_key,
                        None,
                        None,
                        kind,
                        SymmetricDefinition::AES_128_CFB,
                        HashingAlgorithm::Sha256,
                    )
                })
            })?
            .ok_or(TpmError::Tpm {
                op: "start session",
                code: None,
                detail: "no session returned".into(),
            })?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_decrypt(decrypt)
            .with_encrypt(encrypt)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(session, attrs, mask) {
            self.flush_session(session);
            return Err(tpm_err("set session attributes")(e));
        }
        Ok(session)
    }

    fn flush_session(&mut self, session: AuthSession) {
        let handle: ObjectHandle = SessionHandle::from(session).into();
        let _ = self.ctx.flush_context(handle);
    }

    fn policy_pcr_digest_in(
        &mut self,
        session: AuthSession,
        list: &PcrSelectionList,
    ) -> Result<[u8; 32], TpmError> {
        let policy = PolicySession::try_from(session).map_err(tpm_err("policy session"))?;
        self.with_retry("PolicyPCR", |ctx| {
            ctx.execute_without_session(|c| c.policy_pcr(policy, Digest::default(), list.clone()))
        })?;
        let digest = self.with_retry("PolicyGetDigest", |ctx| {
            ctx.execute_without_session(|c| c.policy_get_digest(policy))
        })?;
        digest32(&digest, "PolicyGetDigest")
    }

    fn seal_with_policy(
        &mut self,
        secret: &[u8; 32],
        pcrs: &PcrSelection,
        policy: [u8; 32],
    ) -> Result<SealedBlob, TpmError> {
        let srk = self.srk()?;
        let template =
            sealed_object_template(&policy).map_err(tpm_err("sealed object template"))?;
        let data = SensitiveData::try_from(secret.to_vec()).map_err(tpm_err("sealed data"))?;
        // Salted HMAC session with `decrypt`: the secret crosses the bus encrypted.
        let session = self.start_session(SessionType::Hmac, Some(srk), true, false)?;
        let created = self.with_retry("create sealed object", |ctx| {
            ctx.execute_with_session(Some(session), |c| {
                c.create(srk, template.clone(), None, Some(data.clone()), None, None)
            })
        });
        self.flush_session(session);
        let created = created?;
        let public = created
            .out_public
            .marshall()
            .map_err(tpm_err("marshal public area"))?;
        Ok(SealedBlob {
            pcrs: pcrs.clone(),
            policy_digest: policy,
            public,
            private: created.out_private.value().to_vec(),
            erase_index: None,
        })
    }

    fn load(
        &mut self,
        srk: KeyHandle,
        private: &Private,
        public: &Public,
    ) -> Result<KeyHandle, TpmError> {
        self.with_retry("load sealed object", |ctx| {
            ctx.execute_with_session(Some(AuthSession::Password), |c| {
                c.load(srk, private.clone(), public.clone())
            })
        })
        .map_err(|e| match e {
            TpmError::Tpm {
                code: Some(c),
                detail,
                ..
            } if rc::is_tpm_layer(c) && c & 0x80 != 0 => TpmError::ForeignBlob {
                detail: format!("{detail} (TSS2_RC {c:#x})"),
            },
            other => other,
        })
    }

    fn unseal_once(
        &mut self,
        srk: KeyHandle,
        object: KeyHandle,
        selection: &PcrSelectionList,
        want_policy: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>, Attempt> {
        // Salted with the SRK, `encrypt` set: the unsealed secret comes back encrypted.
        let session = self
            .start_session(SessionType::Policy, Some(srk), false, true)
            .map_err(Attempt::Fatal)?;
        let result = self.unseal_in(session, object, selection, want_policy);
        self.flush_session(session);
        result
    }

    fn unseal_in(
        &mut self,
        session: AuthSession,
        object: KeyHandle,
        selection: &PcrSelectionList,
        want_policy: &[u8; 32],
    ) -> Result<Zeroizing<[u8; 32]>, Attempt> {
        let got = self
            .policy_pcr_digest_in(session, selection)
            .map_err(Attempt::Fatal)?;
        if &got != want_policy {
            return Err(Attempt::Mismatch);
        }
        let unsealed = self.with_retry("unseal", |ctx| {
            ctx.execute_with_session(Some(session), |c| c.unseal(object.into()))
        });
        match unsealed {
            Ok(data) => {
                let bytes = data.value();
                if bytes.len() != 32 {
                    return Err(Attempt::Fatal(TpmError::BadBlob(format!(
                        "sealed data is {} bytes, want 32",
                        bytes.len()
                    ))));
                }
                let mut out = Zeroizing::new([0u8; 32]);
                out.copy_from_slice(bytes);
                Ok(out)
            }
            Err(TpmError::Tpm { code: Some(c), .. })
                if rc::is_fmt0(c, rc::PCR_CHANGED) || rc::is_fmt1(c, rc::FMT1_POLICY_FAIL) =>
            {
                Err(Attempt::Mismatch)
            }
            Err(e) => Err(Attempt::Fatal(e)),
        }
    }
}

/// How the TPM answered [`Tpm::wrong_auth_attempt`] (test support).
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongAuth {
    /// TPM_RC_BAD_AUTH: refused, not counted (the key has `noDA`).
    BadAuth,
    /// TPM_RC_AUTH_FAIL: refused and counted by dictionary-attack protection.
    AuthFail,
    /// TPM_RC_LOCKOUT: the TPM is in dictionary-attack lockout.
    Lockout,
    /// The wrong password was accepted (a bug).
    Accepted,
    /// Another response code.
    Other(Option<u32>),
}

/// Outcome of one unseal attempt.
enum Attempt {
    /// The PCRs do not (or no longer) match: worth another try, then `PolicyMismatch`.
    Mismatch,
    /// Anything else: reported at once.
    Fatal(TpmError),
}

/// The TCG ECC P-256 storage key template ("SRK template"), with `noDA` as chosen.
fn storage_key_template(no_da: bool) -> tss_esapi::Result<Public> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(no_da)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::new(
            EccParameter::try_from(vec![0u8; 32])?,
            EccParameter::try_from(vec![0u8; 32])?,
        ))
        .build()
}

/// A sealed data object usable only through `policy` (no password: `userWithAuth` clear,
/// `adminWithPolicy` set), with `noDA`.
fn sealed_object_template(policy: &[u8; 32]) -> tss_esapi::Result<Public> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(false)
        .with_admin_with_policy(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_auth_policy(Digest::try_from(policy.to_vec())?)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
}

fn public_auth_policy(public: &Public) -> Option<Vec<u8>> {
    match public {
        Public::KeyedHash { auth_policy, .. } => Some(auth_policy.value().to_vec()),
        _ => None,
    }
}

fn pcr_selection_list(sel: &PcrSelection) -> Result<PcrSelectionList, TpmError> {
    let slots = sel
        .indices()
        .into_iter()
        .map(|i| {
            PcrSlot::try_from(1u32 << i).map_err(|e| TpmError::InvalidPcrs(format!("PCR {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_size_of_select(PcrSelectSize::ThreeOctets)
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| TpmError::InvalidPcrs(e.to_string()))
}

fn slot_index(slot: PcrSlot) -> u32 {
    u32::from(slot).trailing_zeros()
}

fn digest32(d: &Digest, op: &'static str) -> Result<[u8; 32], TpmError> {
    <[u8; 32]>::try_from(d.value()).map_err(|_| TpmError::Tpm {
        op,
        code: None,
        detail: format!("digest of {} bytes, want 32", d.value().len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Tpm>();
    }

    #[test]
    fn slot_indices() {
        let sel = PcrSelection::sha256(&[0, 7, 23]).expect("sel");
        let list = pcr_selection_list(&sel).expect("list");
        let idx: Vec<u32> = list.get_selections()[0]
            .selected()
            .into_iter()
            .map(slot_index)
            .collect();
        assert_eq!(idx, vec![0, 7, 23]);
    }
}
