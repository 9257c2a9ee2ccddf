//! A user's keys over their life: renewal by the box's CA and retirement. A retired key no
//! longer signs and is no longer offered to senders, but stays to decrypt old mail (as a
//! revoked one does).

use redb::ReadableTable;
use sealgate_smime::cert::Certificate;

use crate::audit;
use crate::error::{Result, VaultError};
use crate::record::{KeyInfo, KeyRecord, now};
use crate::store::{KEYS, Vault, normalise};

impl Vault {
    /// Renews `email`'s keys: a new key and certificate from the box's CA (as
    /// [`Vault::ca_issue`]), the user's earlier active keys retired (kept to decrypt old mail).
    /// Unlike `ca_issue` it refuses (`NoKey`) an address the vault holds no key for.
    pub fn ca_renew(&self, email: &str) -> Result<Vec<Certificate>> {
        let e = normalise(email)?;
        if self.list(Some(&e))?.is_empty() {
            return Err(VaultError::NoKey(format!(
                "{e} has no key to renew: issue one"
            )));
        }
        self.ca_issue(&e)
    }

    /// Retires `user`'s active keys (or only the key `id`, which must be theirs): they stop
    /// signing and receiving and stay to decrypt. One transaction with its audit entries
    /// (`key.retire`). `NoKey` for an address without keys or an id that is not theirs;
    /// `Usage` when nothing is left to retire. Returns the retired keys.
    pub fn retire_keys(&self, user: &str, id: Option<u64>) -> Result<Vec<KeyInfo>> {
        let u = normalise(user)?;
        let txn = self.begin_write()?;
        let mut out = Vec::new();
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut recs = Vec::new();
            for row in keys.iter()? {
                let (_, v) = row?;
                let r: KeyRecord = serde_json::from_slice(v.value())?;
                if r.user == u {
                    recs.push(r);
                }
            }
            if recs.is_empty() {
                return Err(VaultError::NoKey(format!("{u} has no key")));
            }
            if let Some(id) = id
                && !recs.iter().any(|r| r.id == id)
            {
                return Err(VaultError::NoKey(format!("{u} has no key {id}")));
            }
            let mut a = audit::Writer::open(&txn, &self.audit_key)?;
            let t = now();
            for mut r in recs
                .into_iter()
                .filter(|r| r.active() && id.is_none_or(|id| r.id == id))
            {
                r.retired = Some(t);
                keys.insert(r.id, serde_json::to_vec(&r)?.as_slice())?;
                audit::append(
                    &mut a,
                    &self.actor,
                    "key.retire",
                    &u,
                    &format!("record={} (retired by an administrator)", r.id),
                )?;
                out.push(r.info()?);
            }
        }
        if out.is_empty() {
            return Err(VaultError::Usage(match id {
                Some(id) => format!("key {id} of {u} is not active (already retired or revoked)"),
                None => format!("{u} has no active key to retire"),
            }));
        }
        txn.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{CaSettings, KeyAlgorithm, SoftwareSealer, Vault, VaultError};

    #[test]
    fn renewal_needs_a_key_and_retired_keys_stay_to_decrypt() {
        let dir = tempfile::tempdir().expect("tmp");
        let (v, _) = Vault::init(dir.path(), &mut SoftwareSealer::danger_new()).expect("init");
        let settings = CaSettings {
            key_algorithm: KeyAlgorithm::P256,
            ..CaSettings::default()
        };
        v.ca_init("Test CA", &settings).expect("ca");
        assert!(matches!(
            v.ca_renew("dave@example.org"),
            Err(VaultError::NoKey(_))
        ));
        v.ca_issue("dave@example.org").expect("issue");
        v.ca_renew("Dave@example.org").expect("renew");
        let keys = v.list(Some("dave@example.org")).expect("list");
        let states: Vec<&str> = keys.iter().map(|k| k.status.as_str()).collect();
        assert_eq!(states, ["retired", "active"]);
        assert!(matches!(
            v.retire_keys("dave@example.org", Some(keys[0].id)),
            Err(VaultError::Usage(_))
        ));
        assert!(matches!(
            v.retire_keys("erin@example.org", None),
            Err(VaultError::NoKey(_))
        ));
        assert!(matches!(
            v.retire_keys("dave@example.org", Some(999)),
            Err(VaultError::NoKey(_))
        ));
        assert!(matches!(
            v.export_pkcs12("dave@example.org", "pw \u{1f600}"),
            Err(VaultError::Usage(_))
        ));
        assert!(
            !v.export_pkcs12("dave@example.org", "pw \u{e9}")
                .expect("p12")
                .is_empty()
        );
        let retired = v.retire_keys("dave@example.org", None).expect("retire");
        assert_eq!(retired.len(), 1);
        assert!(v.signing_key("dave@example.org").is_err());
        assert!(v.certificate("dave@example.org").is_err());
        assert_eq!(v.keys_for("dave@example.org").expect("keys").len(), 2);
        assert!(matches!(
            v.retire_keys("dave@example.org", None),
            Err(VaultError::Usage(_))
        ));
        assert!(
            v.audit()
                .expect("audit")
                .iter()
                .any(|e| e.action == "key.retire" && e.detail.contains("administrator"))
        );
    }
}
