//! External correspondents' S/MIME capabilities (RFC 8551 §2.5.2), as the signed mail they
//! sent announced them (table `recipient_capabilities`, keyed by address; the value is the
//! capability names, comma-separated, in the signer's order of preference). The gateway
//! stores them with a harvested certificate and reads them to choose the content cipher.
//! Public facts only; each change is audited (`cert.capabilities`).

use redb::{ReadableDatabase, TableDefinition, TableError};

use crate::error::{Result, VaultError};
use crate::store::{Vault, normalise_user};

const CAPABILITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("recipient_capabilities");

/// At most this many capability names are kept per address.
const MAX_NAMES: usize = 32;

fn clean(caps: &[String]) -> Vec<String> {
    caps.iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
        })
        .take(MAX_NAMES)
        .collect()
}

impl Vault {
    /// The S/MIME capabilities last announced by `email`, if any were stored.
    pub fn recipient_capabilities(&self, email: &str) -> Result<Option<Vec<String>>> {
        let e = normalise_user(email)?;
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(CAPABILITIES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(v) = t.get(e.as_str())? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(v.value())
            .map_err(|_| VaultError::Corrupt("stored S/MIME capabilities are not text".into()))?;
        Ok(Some(
            text.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ))
    }

    /// Stores the S/MIME capabilities `email` announced (names as the engine reports them;
    /// anything else is dropped); audited under `actor` when they change. An empty list
    /// changes nothing (the signature carried none).
    pub fn set_recipient_capabilities_by(
        &self,
        email: &str,
        caps: &[String],
        actor: &str,
    ) -> Result<()> {
        let e = normalise_user(email)?;
        let caps = clean(caps);
        if caps.is_empty() || self.recipient_capabilities(&e)?.as_deref() == Some(&caps[..]) {
            return Ok(());
        }
        let joined = caps.join(",");
        self.audited_by(
            actor,
            |txn| {
                let mut t = txn.open_table(CAPABILITIES)?;
                t.insert(e.as_str(), joined.as_bytes())?;
                Ok(())
            },
            "cert.capabilities",
            &e,
            &joined,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::SoftwareSealer;
    use crate::store::Vault;

    #[test]
    fn capabilities_are_stored_per_address_and_only_clean_names_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let (v, _) = Vault::init(dir.path(), &mut SoftwareSealer::danger_new()).expect("init");
        assert_eq!(
            v.recipient_capabilities("a@example.org").expect("get"),
            None
        );
        let caps = vec![
            "aes256-gcm".to_string(),
            "AES128-CBC".into(),
            "bad,name".into(),
            "x\ny".into(),
        ];
        v.set_recipient_capabilities_by("A@Example.org", &caps, "smtp-inbound")
            .expect("set");
        assert_eq!(
            v.recipient_capabilities("a@example.org").expect("get"),
            Some(vec!["aes256-gcm".to_string(), "aes128-cbc".into()])
        );
        // Nothing announced: the stored ones stay.
        v.set_recipient_capabilities_by("a@example.org", &[], "smtp-inbound")
            .expect("set");
        assert!(
            v.recipient_capabilities("a@example.org")
                .expect("get")
                .is_some()
        );
        assert!(v.recipient_capabilities("not an address").is_err());
    }
}
