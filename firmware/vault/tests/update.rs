//! Updates must not brick the vault (ARCHITECTURE.md): with a private swtpm, the vault key is
//! re-sealed for the PCR 7 value an update will produce; the old boot state still opens with
//! the old blob, the updated state opens with the new one, a rollback (reboot into the old
//! state) still opens until the update is committed, and after the commit only the new state
//! opens. Also: the PCR selection is a stored setting.

use sealgate_tpm::swtpm::Swtpm;
use sealgate_tpm::{PcrSelection, pcr_extend_sha256};
use sealgate_vault::{TpmSealer, Vault, VaultError};

fn measurement(tag: &str) -> [u8; 32] {
    let mut m = [0u8; 32];
    for (i, b) in tag.bytes().enumerate() {
        m[i % 32] ^= b;
    }
    m
}

fn pcr7(sw: &Swtpm) -> [u8; 32] {
    let mut tpm = sw.connect().expect("connect");
    tpm.read_pcrs(&PcrSelection::default()).expect("read")[0].1
}

#[test]
fn reseal_for_update_then_commit() {
    sealgate_tpm::quiet_library_logging();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut sw = Swtpm::start(&tmp.path().join("t")).expect("swtpm (Debian package `swtpm`)");
    let data = tmp.path().join("data");
    let tcti = sw.tcti();
    let sealer = || TpmSealer::new(&tcti);

    let (vault, _secret) = Vault::init(&data, &mut sealer()).expect("init");
    assert_eq!(vault.pcrs().expect("pcrs"), Some(PcrSelection::default()));
    assert_eq!(vault.sealed_copies().expect("copies"), (1, Some(0)));

    // Update commit time: the running system predicts PCR 7 after the new boot chain.
    let event = measurement("new shim + kernel");
    let predicted = pcr_extend_sha256(&pcr7(&sw), &event);
    vault
        .reseal_for_update(&mut sealer(), &[(7, predicted)])
        .expect("reseal");
    assert_eq!(vault.sealed_copies().expect("copies"), (2, Some(0)));
    // A prediction must cover the vault's PCRs.
    assert!(
        vault
            .reseal_for_update(&mut sealer(), &[(8, predicted)])
            .is_err()
    );
    drop(vault);
    assert_eq!(Vault::status(&data).expect("status").sealed_copies, 2);

    // Still in the old state (before the reboot): the new blob does not open, the old does.
    let v = Vault::open(&data, &mut sealer()).expect("old state opens");
    assert_eq!(
        v.sealed_copies().expect("copies"),
        (2, Some(0)),
        "opened with the old blob"
    );
    drop(v);

    // "Reboot into the update": PCR 7 takes the predicted value; the new blob opens.
    assert_eq!(sw.extend_pcr7(&event).expect("extend"), predicted);
    let v = Vault::open(&data, &mut sealer()).expect("updated state opens");
    assert_eq!(
        v.sealed_copies().expect("copies"),
        (2, Some(1)),
        "opened with the new blob"
    );
    drop(v);

    // Rollback before the commit (the A/B fallback boots the old slot): still opens.
    sw.restart().expect("restart");
    let v = Vault::open(&data, &mut sealer()).expect("rolled back state opens");
    assert_eq!(v.sealed_copies().expect("copies"), (2, Some(0)));
    // Committing from the old state drops nothing (nothing is older than the opened blob).
    assert_eq!(v.commit_update().expect("commit"), 0);
    drop(v);

    // Boot the update again, pass the health gate, commit: the old blob is gone.
    sw.extend_pcr7(&event).expect("extend");
    let v = Vault::open(&data, &mut sealer()).expect("updated state opens");
    assert_eq!(v.commit_update().expect("commit"), 1);
    assert_eq!(v.sealed_copies().expect("copies"), (1, Some(0)));
    let log = v.audit().expect("audit");
    assert!(
        log.iter()
            .any(|e| e.action == "vault.reseal-for-update" && e.detail.contains("pcrs=sha256:7"))
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.action == "vault.commit-update")
            .count(),
        2
    );
    drop(v);
    assert_eq!(Vault::status(&data).expect("status").sealed_copies, 1);

    // The old state no longer opens after the commit.
    sw.restart().expect("restart");
    let reopened = Vault::open(&data, &mut sealer());
    assert!(
        matches!(reopened, Err(VaultError::Unseal(_))),
        "expected an unseal error, got {reopened:?}"
    );
}

#[test]
fn pcr_selection_is_stored_and_used_for_the_update() {
    sealgate_tpm::quiet_library_logging();
    let tmp = tempfile::tempdir().expect("tmp");
    let sw = Swtpm::start(&tmp.path().join("t")).expect("swtpm");
    let data = tmp.path().join("data");
    let sel: PcrSelection = "sha256:7,16".parse().expect("sel");
    let (vault, _) = Vault::init(
        &data,
        &mut TpmSealer::new(&sw.tcti()).with_pcrs(sel.clone()),
    )
    .expect("init");
    assert_eq!(vault.pcrs().expect("pcrs"), Some(sel.clone()));
    // The update's prediction is sealed to the stored selection, whatever the sealer's own.
    let mut tpm = sw.connect().expect("connect");
    let now = tpm.read_pcrs(&sel).expect("read");
    let event = measurement("debug pcr");
    let predicted: Vec<(u32, [u8; 32])> = now
        .iter()
        .map(|(i, v)| {
            (
                *i,
                if *i == 16 {
                    pcr_extend_sha256(v, &event)
                } else {
                    *v
                },
            )
        })
        .collect();
    vault
        .reseal_for_update(&mut TpmSealer::new(&sw.tcti()), &predicted)
        .expect("reseal");
    drop(vault);
    assert_eq!(
        Vault::status(&data).expect("status").pcrs.as_deref(),
        Some("sha256:7,16")
    );
    sw.extend_pcr(16, &event).expect("extend 16");
    let v = Vault::open(&data, &mut TpmSealer::new(&sw.tcti())).expect("opens with the new blob");
    assert_eq!(v.sealed_copies().expect("copies"), (2, Some(1)));
}

/// The sealer of the code before erasable sealing: version 1 blobs, no erase secret.
struct LegacySealer(sealgate_tpm::Tpm);

impl sealgate_vault::Sealer for LegacySealer {
    fn kind(&self) -> sealgate_vault::SealerKind {
        sealgate_vault::SealerKind::Tpm
    }
    fn seal(&mut self, _: &std::path::Path, key: &[u8; 32]) -> sealgate_vault::Result<Vec<u8>> {
        Ok(self
            .0
            .seal(key, &PcrSelection::default())
            .expect("seal")
            .to_bytes())
    }
    fn unseal(
        &mut self,
        _: &std::path::Path,
        blob: &[u8],
    ) -> sealgate_vault::Result<sealgate_tpm::Zeroizing<[u8; 32]>> {
        let b = sealgate_tpm::SealedBlob::from_bytes(blob).expect("blob");
        Ok(self.0.unseal(&b).expect("unseal"))
    }
    fn describe(&self) -> String {
        "legacy".into()
    }
    fn erase(&mut self, _: &std::path::Path) -> sealgate_vault::Result<bool> {
        Ok(false)
    }
}

/// A vault sealed before erasable sealing (version 1 blob) still opens, and is re-sealed with
/// the erase secret at open, so the wipe then covers it.
#[test]
fn a_vault_sealed_without_the_erase_secret_opens_and_is_resealed() {
    sealgate_tpm::quiet_library_logging();
    let tmp = tempfile::tempdir().expect("tmp");
    let sw = Swtpm::start(&tmp.path().join("t")).expect("swtpm (Debian package `swtpm`)");
    let data = tmp.path().join("data");
    let tcti = sw.tcti();
    {
        let mut legacy = LegacySealer(sw.connect().expect("connect"));
        let (v, _) = Vault::init(&data, &mut legacy).expect("init");
        drop(v);
    }
    let st = Vault::status(&data).expect("status");
    assert!(
        st.warnings.iter().any(|w| w.contains("erase secret")),
        "{:?}",
        st.warnings
    );
    let v = Vault::open(&data, &mut TpmSealer::new(&tcti)).expect("the old blob opens");
    assert_eq!(v.sealed_copies().expect("copies"), (1, Some(0)));
    assert!(
        v.audit()
            .expect("audit")
            .iter()
            .any(|e| e.action == "vault.reseal-erasable")
    );
    drop(v);
    let st = Vault::status(&data).expect("status");
    assert!(st.warnings.is_empty(), "{:?}", st.warnings);

    // Now the wipe covers it: a copy taken after the re-seal does not open after the erase.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).expect("dir");
    std::fs::copy(data.join("vault.redb"), copy.join("vault.redb")).expect("copy");
    Vault::open(&copy, &mut TpmSealer::new(&tcti)).expect("the copy opens before the wipe");
    use sealgate_vault::Sealer;
    assert!(TpmSealer::new(&tcti).erase(&data).expect("erase"));
    let e = Vault::open(&copy, &mut TpmSealer::new(&tcti)).expect_err("wiped");
    assert!(e.to_string().contains("wiped"), "{e}");
}
