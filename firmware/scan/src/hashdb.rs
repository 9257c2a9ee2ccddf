//! Hash databases in ClamAV's formats: `.hdb` (`MD5:size:name`) and `.hsb` (`SHA256:size:name`
//! or `SHA1:size:name`), the size `*` meaning any size. The algorithm of a line is told by the
//! length of its hash (32, 40 or 64 hex digits), as ClamAV does.
//!
//! Attacker: whoever supplies a database file (a downloaded feed, an administrator's upload).
//! A line that does not parse is refused with its line number, never half-read; lines are
//! bounded. ClamAV's optional functionality-level fields after the name are accepted and
//! ignored.

use std::collections::HashMap;

use md5::Digest as _;

/// The digests of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// MD5.
    pub md5: [u8; 16],
    /// SHA-1.
    pub sha1: [u8; 20],
    /// SHA-256.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl Digests {
    /// Hashes `data` with the three algorithms.
    pub fn of(data: &[u8]) -> Digests {
        Digests {
            md5: md5::Md5::digest(data).into(),
            sha1: sha1::Sha1::digest(data).into(),
            sha256: sha2::Sha256::digest(data).into(),
            size: data.len() as u64,
        }
    }

    /// The SHA-256 in lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The hash (16, 20 or 32 bytes: MD5, SHA-1, SHA-256).
    pub hash: Vec<u8>,
    /// The size it applies to; `None` for `*`.
    pub size: Option<u64>,
    /// The malware name.
    pub name: String,
}

/// The longest line accepted.
pub const MAX_LINE: usize = 4096;

/// Parses one line. `Ok(None)` for an empty line or a `#` comment.
pub fn parse_line(line: &str) -> Result<Option<Signature>, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let mut fields = line.split(':');
    let (Some(hash), Some(size), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected HASH:SIZE:NAME".into());
    };
    // Optional ClamAV functionality levels (numbers) may follow.
    for f in fields {
        if !f.is_empty() && !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unexpected field {f:?} after the name"));
        }
    }
    if !matches!(hash.len(), 32 | 40 | 64) {
        return Err(format!(
            "a hash of {} hex digits (MD5 32, SHA-1 40, SHA-256 64)",
            hash.len()
        ));
    }
    let hash = unhex(hash).ok_or("the hash is not hexadecimal")?;
    let size = if size == "*" {
        None
    } else {
        Some(
            size.parse::<u64>()
                .map_err(|_| format!("bad size {size:?}"))?,
        )
    };
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err("empty or unprintable name".into());
    }
    Ok(Some(Signature {
        hash,
        size,
        name: name.to_string(),
    }))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A set of hash signatures from any number of files.
#[derive(Debug, Clone, Default)]
pub struct HashDb {
    by_hash: HashMap<Vec<u8>, Vec<(Option<u64>, String)>>,
    count: usize,
}

/// The signatures the product ships: the EICAR anti-virus test file, so that a box detects
/// it out of the box (the file itself is built by the tests, never stored).
pub const SHIPPED: &str = "\
# EICAR test file (68 bytes), https://www.eicar.org/download-anti-malware-testfile/
44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature
3395856ce81f2b7382dee72602f798b642f14140:68:Eicar-Test-Signature
275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f:68:Eicar-Test-Signature
";

impl HashDb {
    /// An empty database.
    pub fn new() -> HashDb {
        HashDb::default()
    }

    /// The shipped signatures.
    pub fn shipped() -> HashDb {
        let mut db = HashDb::new();
        // The shipped text is a constant that the tests parse: it cannot fail.
        let _ = db.load(SHIPPED);
        db
    }

    /// Adds every line of a database file. On a bad line nothing of this text is added and
    /// the error names the line (1-based).
    pub fn load(&mut self, text: &str) -> Result<usize, String> {
        let mut sigs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some(s)) => sigs.push(s),
                Ok(None) => {}
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
        }
        let n = sigs.len();
        for s in sigs {
            self.by_hash
                .entry(s.hash)
                .or_default()
                .push((s.size, s.name));
        }
        self.count += n;
        Ok(n)
    }

    /// Number of signatures.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No signature at all?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The name of the first signature matching these digests (hash and size).
    pub fn lookup(&self, d: &Digests) -> Option<&str> {
        [&d.sha256[..], &d.sha1[..], &d.md5[..]]
            .into_iter()
            .filter_map(|h| self.by_hash.get(h))
            .flatten()
            .find(|(size, _)| size.is_none_or(|s| s == d.size))
            .map(|(_, name)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_clamav_writes_them() {
        let s = parse_line("44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature")
            .expect("ok")
            .expect("some");
        assert_eq!(s.hash.len(), 16);
        assert_eq!(s.size, Some(68));
        let s = parse_line(&format!("{}:*:X.Y:73", "ab".repeat(32)))
            .expect("ok")
            .expect("some");
        assert_eq!((s.hash.len(), s.size), (32, None));
        assert_eq!(parse_line("# comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in [
            "zz:1:x",
            "44d88612fea8a8f36de82e1278abb02f:68",
            "44d88612fea8a8f36de82e1278abb02f:-1:x",
            "44d88612fea8a8f36de82e1278abb02g:1:x",
            "44d88612fea8a8f36de82e1278abb02f:1:",
            "44d88612fea8a8f36de82e1278abb02f:1:x:y",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        let mut db = HashDb::new();
        let e = db
            .load("44d88612fea8a8f36de82e1278abb02f:68:A\nnonsense\n")
            .expect_err("bad");
        assert!(e.starts_with("line 2"), "{e}");
        assert!(db.is_empty());
    }

    #[test]
    fn the_shipped_database_knows_eicar_by_every_hash() {
        let eicar = [
            "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR",
            "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
        ]
        .concat();
        let db = HashDb::shipped();
        assert_eq!(db.len(), 3);
        let d = Digests::of(eicar.as_bytes());
        assert_eq!(db.lookup(&d), Some("Eicar-Test-Signature"));
        let mut md5_only = HashDb::new();
        md5_only
            .load(&format!("{}:68:M", hex(&d.md5)))
            .expect("load");
        assert_eq!(md5_only.lookup(&d), Some("M"));
        let wrong_size = Digests { size: 69, ..d };
        assert_eq!(md5_only.lookup(&wrong_size), None);
    }
}
