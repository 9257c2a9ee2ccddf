//! Hash databases in ClamAV's formats: `.hdb` (`MD5:size:name`) and `.hsb` (`SHA256:size:name`
//! or `SHA1:size:name`), the size `*` meaning any size; and the section databases `.mdb`
//! (`size:MD5:name`) and `.msb` (`size:SHA1-or-SHA256:name`), which name one section of a PE
//! (Windows) executable by its size and hash, as ClamAV's `sigtool --mdb` writes them. The
//! algorithm of a line is told by the length of its hash (32, 40 or 64 hex digits), as ClamAV
//! does.
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

/// What a database file holds: whole-file hashes or PE section hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.hdb`, `.hsb`: `HASH:SIZE:NAME` of whole files (and of URLs).
    Files,
    /// `.mdb`, `.msb`: `SIZE:HASH:NAME` of PE sections.
    Sections,
}

impl Kind {
    /// The kind a file name tells (`.mdb`/`.msb` sections, anything else files).
    pub fn of_file_name(name: &str) -> Kind {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".mdb") || lower.ends_with(".msb") {
            Kind::Sections
        } else {
            Kind::Files
        }
    }
}

/// Parses one line of a section database (`SIZE:HASH:NAME`).
pub fn parse_section_line(line: &str) -> Result<Option<Signature>, String> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    match trimmed.split_once(':') {
        Some((size, rest)) if !trimmed.starts_with('#') && !trimmed.trim().is_empty() => {
            let (hash, name) = rest.split_once(':').ok_or("expected SIZE:HASH:NAME")?;
            parse_line(&format!("{hash}:{size}:{name}"))
        }
        _ => parse_line(trimmed),
    }
}

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
    sections: HashMap<Vec<u8>, Vec<(Option<u64>, String)>>,
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
        self.load_kind(text, Kind::Files)
    }

    /// Adds every line of a database file of this kind (see [`HashDb::load`]).
    pub fn load_kind(&mut self, text: &str, kind: Kind) -> Result<usize, String> {
        let mut sigs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let parsed = match kind {
                Kind::Files => parse_line(line),
                Kind::Sections => parse_section_line(line),
            };
            match parsed {
                Ok(Some(s)) => sigs.push(s),
                Ok(None) => {}
                Err(e) => return Err(format!("line {}: {e}", i + 1)),
            }
        }
        let n = sigs.len();
        let map = match kind {
            Kind::Files => &mut self.by_hash,
            Kind::Sections => &mut self.sections,
        };
        for s in sigs {
            map.entry(s.hash).or_default().push((s.size, s.name));
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

    /// Whether any section signature is loaded.
    pub fn has_sections(&self) -> bool {
        !self.sections.is_empty()
    }

    /// The name of the first section signature matching a section of `data`, when it is a PE
    /// executable.
    pub fn lookup_sections(&self, data: &[u8]) -> Option<&str> {
        if self.sections.is_empty() {
            return None;
        }
        pe_sections(data).into_iter().find_map(|sec| {
            let d = Digests::of(sec);
            [&d.sha256[..], &d.sha1[..], &d.md5[..]]
                .into_iter()
                .filter_map(|h| self.sections.get(h))
                .flatten()
                .find(|(size, _)| size.is_none_or(|s| s == d.size))
                .map(|(_, name)| name.as_str())
        })
    }
}

/// Most sections read from one PE file (the format allows 96).
const MAX_SECTIONS: usize = 96;

/// The raw data of each section of a PE executable (none when `data` is not one). Bounded
/// by the file: a section's raw data must lie inside it.
pub fn pe_sections(data: &[u8]) -> Vec<&[u8]> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut out = Vec::new();
    if !data.starts_with(b"MZ") {
        return out;
    }
    let Some(pe) = u32_at(0x3c).map(|v| v as usize) else {
        return out;
    };
    if data.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
        return out;
    }
    let (Some(count), Some(opt_size)) = (u16_at(pe + 6), u16_at(pe + 20)) else {
        return out;
    };
    let table = pe + 24 + opt_size as usize;
    // As ClamAV (and the Windows loader) reads sections: the raw pointer rounded down and
    // the raw size rounded up to the file alignment, the size cut at the end of the file.
    let falign = u32_at(pe + 24 + 36)
        .map(|a| a as usize)
        .filter(|a| (1..=0x10000).contains(a))
        .unwrap_or(1);
    for i in 0..(count as usize).min(MAX_SECTIONS) {
        let at = table + i * 40;
        let (Some(raw_size), Some(raw_ptr)) = (u32_at(at + 16), u32_at(at + 20)) else {
            break;
        };
        let start = raw_ptr as usize / falign * falign;
        let len = (raw_size as usize).div_ceil(falign) * falign;
        if len == 0 || start >= data.len() {
            continue;
        }
        let end = start.saturating_add(len).min(data.len());
        out.push(&data[start..end]);
    }
    out
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
    fn section_lines_and_a_pe_without_sections() {
        let s = parse_section_line("4096:44d88612fea8a8f36de82e1278abb02f:Sec.Name")
            .expect("ok")
            .expect("some");
        assert_eq!((s.size, s.name.as_str()), (Some(4096), "Sec.Name"));
        assert!(parse_section_line("44d88612fea8a8f36de82e1278abb02f:4096").is_err());
        assert_eq!(Kind::of_file_name("x.MDB"), Kind::Sections);
        assert_eq!(Kind::of_file_name("x.hdb"), Kind::Files);
        assert!(pe_sections(b"MZ\xff\xff\xff\xff").is_empty());
        let mut db = HashDb::new();
        db.load_kind("5:5d41402abc4b2a76b9719d911017c592:Hello", Kind::Sections)
            .expect("load");
        // A minimal PE: e_lfanew at 0x40, one section whose raw data is "hello".
        let mut pe = vec![0u8; 0x40 + 24 + 40];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x46] = 1;
        let at = 0x40 + 24;
        pe[at + 16] = 5;
        let ptr = pe.len() as u8;
        pe[at + 20] = ptr;
        pe.extend_from_slice(b"hello");
        assert_eq!(db.lookup_sections(&pe), Some("Hello"));
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
