//! Archives opened for scanning: zip, gzip, bzip2, xz and tar (and their nesting), within
//! [`Limits`].
//!
//! Attacker: whoever wrote the message. An archive is the classic way to make a scanner
//! spend memory and time (a 42 KiB zip that expands to petabytes, a zip whose entries
//! overlap, nesting a thousand levels deep) or to hide content from it (an encrypted zip).
//! Nothing here expands past the limits: every member is decompressed through a reader that
//! stops one byte past what the limits still allow, so a lying size field costs nothing. An
//! archive that would go past them is a [`Anomaly::Bomb`] (not expanded further), one that
//! cannot be opened (encrypted, unknown method, corrupt) is [`Anomaly::Unscannable`].

use std::io::{Cursor, Read};

/// Bounds on what unpacking may cost, for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nesting: MIME parts, attached messages and archives inside archives together.
    pub max_depth: usize,
    /// Parts and archive members, all together.
    pub max_objects: usize,
    /// Expansion ratio of one member (uncompressed / compressed) allowed once a member is
    /// larger than [`Limits::ratio_floor`].
    pub max_ratio: u64,
    /// Below this many bytes a member may have any ratio (a small file of zeros is no bomb).
    pub ratio_floor: u64,
    /// Bytes produced by unpacking, all together.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 8,
            max_objects: 1_000,
            max_ratio: 100,
            ratio_floor: 1 << 20,
            max_total: 64 << 20,
        }
    }
}

/// Why an archive was not (fully) unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// It would go past a limit (ratio, total size, count, depth): not expanded.
    Bomb(String),
    /// It cannot be read (encrypted, unsupported method, corrupt).
    Unscannable(String),
}

/// The kinds of container this module opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// PKWARE zip.
    Zip,
    /// gzip (one member stream).
    Gzip,
    /// POSIX/GNU tar.
    Tar,
    /// bzip2 (one or more concatenated streams).
    Bzip2,
    /// xz (LZMA2).
    Xz,
}

/// What `data` is, by its magic bytes.
pub fn sniff(data: &[u8]) -> Option<Container> {
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        Some(Container::Zip)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Some(Container::Gzip)
    } else if data.starts_with(b"BZh") && data.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        Some(Container::Bzip2)
    } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Container::Xz)
    } else if data.get(257..262) == Some(b"ustar") {
        Some(Container::Tar)
    } else {
        None
    }
}

/// One member taken out of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name inside the archive (lossy UTF-8), if it has one.
    pub name: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// The budget shared by everything unpacked from one message.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    /// Bytes still allowed.
    bytes_left: u64,
    /// Objects still allowed.
    objects_left: usize,
}

impl Budget {
    /// A full budget.
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            bytes_left: limits.max_total,
            objects_left: limits.max_objects,
        }
    }

    /// The limits this budget applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes one object from the budget; false when none is left.
    pub fn take_object(&mut self) -> bool {
        if self.objects_left == 0 {
            return false;
        }
        self.objects_left -= 1;
        true
    }

    /// Charges `n` bytes produced.
    pub(crate) fn charge(&mut self, n: usize) {
        self.bytes_left = self.bytes_left.saturating_sub(n as u64);
    }

    /// The most one member of `compressed` bytes may expand to.
    pub(crate) fn member_allowance(&self, compressed: u64) -> u64 {
        let by_ratio = compressed
            .saturating_mul(self.limits.max_ratio)
            .max(self.limits.ratio_floor);
        by_ratio.min(self.bytes_left)
    }
}

/// Reads at most `allowance` bytes from `r`; `Err(Bomb)` if there are more.
fn read_bounded(r: impl Read, allowance: u64, what: &str) -> Result<Vec<u8>, Anomaly> {
    let mut out = Vec::new();
    let mut limited = r.take(allowance.saturating_add(1));
    limited
        .read_to_end(&mut out)
        .map_err(|e| Anomaly::Unscannable(format!("{what}: {e}")))?;
    if out.len() as u64 > allowance {
        return Err(Anomaly::Bomb(format!(
            "{what} expands past {allowance} bytes"
        )));
    }
    Ok(out)
}

/// Opens one container. Members come back with the budget charged for their bytes; the
/// caller recurses (and charges depth). `Err` says why nothing (more) came out; members read
/// before a limit was reached are still returned in `Ok` only when there was no anomaly.
pub fn unpack(kind: Container, data: &[u8], budget: &mut Budget) -> (Vec<Member>, Option<Anomaly>) {
    match kind {
        Container::Zip => unzip(data, budget),
        Container::Gzip => match gunzip(data, budget) {
            Ok(m) => (vec![m], None),
            Err(a) => (Vec::new(), Some(a)),
        },
        Container::Tar => untar(data, budget),
        Container::Bzip2 => {
            let allowance = budget.member_allowance(data.len() as u64);
            one(
                read_bounded(
                    bzip2::read::MultiBzDecoder::new(data),
                    allowance,
                    "bzip2 stream",
                ),
                budget,
            )
        }
        Container::Xz => one(unxz(data, budget), budget),
    }
}

/// A single-stream container's one member (no name: bzip2 and xz store none).
fn one(r: Result<Vec<u8>, Anomaly>, budget: &mut Budget) -> (Vec<Member>, Option<Anomaly>) {
    match r {
        Ok(data) => {
            charge(budget, data.len());
            (vec![Member { name: None, data }], None)
        }
        Err(a) => (Vec::new(), Some(a)),
    }
}

/// A writer that refuses to grow past `allowance` bytes.
struct Bounded {
    out: Vec<u8>,
    allowance: u64,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() as u64 + buf.len() as u64 > self.allowance {
            self.over = true;
            return Err(std::io::Error::other("past the allowance"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// xz through `lzma-rs`, whose output goes to a [`Bounded`] writer: decoding stops at the
/// first byte past the allowance (the dictionary grows with the output, never ahead of it).
fn unxz(data: &[u8], budget: &Budget) -> Result<Vec<u8>, Anomaly> {
    let allowance = budget.member_allowance(data.len() as u64);
    let mut w = Bounded {
        out: Vec::new(),
        allowance,
        over: false,
    };
    let mut input = data;
    match lzma_rs::xz_decompress(&mut input, &mut w) {
        Ok(()) => Ok(w.out),
        Err(_) if w.over => Err(Anomaly::Bomb(format!(
            "xz stream expands past {allowance} bytes"
        ))),
        Err(e) => Err(Anomaly::Unscannable(format!("xz stream: {e}"))),
    }
}

fn charge(budget: &mut Budget, n: usize) {
    budget.bytes_left = budget.bytes_left.saturating_sub(n as u64);
}

fn gunzip(data: &[u8], budget: &mut Budget) -> Result<Member, Anomaly> {
    let allowance = budget.member_allowance(data.len() as u64);
    let out = read_bounded(flate2::read::GzDecoder::new(data), allowance, "gzip stream")?;
    charge(budget, out.len());
    // The original name from the gzip header, if any.
    let name = flate2::read::GzDecoder::new(data)
        .header()
        .and_then(|h| h.filename())
        .map(|n| String::from_utf8_lossy(n).into_owned());
    Ok(Member { name, data: out })
}

fn unzip(data: &[u8], budget: &mut Budget) -> (Vec<Member>, Option<Anomaly>) {
    let mut archive = match zip::ZipArchive::new(Cursor::new(data)) {
        Ok(a) => a,
        Err(e) => return (Vec::new(), Some(Anomaly::Unscannable(format!("zip: {e}")))),
    };
    let mut members = Vec::new();
    // First pass over the central directory: declared sizes and encryption, before any
    // byte is expanded (a bomb is refused whole, not half-expanded).
    let mut declared: u64 = 0;
    for i in 0..archive.len() {
        let (name, size, compressed, encrypted, dir) = match archive.by_index_raw(i) {
            Ok(f) => (
                f.name()
                    .map_or_else(|_| "(unreadable name)".to_string(), |n| n.into_owned()),
                f.size(),
                f.compressed_size(),
                f.encrypted(),
                f.is_dir(),
            ),
            Err(e) => return (members, Some(Anomaly::Unscannable(format!("zip: {e}")))),
        };
        if dir {
            continue;
        }
        if encrypted {
            return (
                Vec::new(),
                Some(Anomaly::Unscannable(format!(
                    "zip member {name:?} is encrypted"
                ))),
            );
        }
        if size > budget.member_allowance(compressed) {
            return (
                Vec::new(),
                Some(Anomaly::Bomb(format!(
                    "zip member {name:?} declares {size} bytes from {compressed}"
                ))),
            );
        }
        declared = declared.saturating_add(size);
        if declared > budget.bytes_left {
            return (
                Vec::new(),
                Some(Anomaly::Bomb(format!(
                    "zip members declare more than {} bytes together",
                    budget.bytes_left
                ))),
            );
        }
    }
    for i in 0..archive.len() {
        if !budget.take_object() {
            return (
                members,
                Some(Anomaly::Bomb("more archive members than allowed".into())),
            );
        }
        let file = match archive.by_index(i) {
            Ok(f) => f,
            Err(e) => return (members, Some(Anomaly::Unscannable(format!("zip: {e}")))),
        };
        if file.is_dir() {
            continue;
        }
        let name = file
            .name()
            .map_or_else(|_| "(unreadable name)".to_string(), |n| n.into_owned());
        let allowance = budget.member_allowance(file.compressed_size());
        match read_bounded(file, allowance, &format!("zip member {name:?}")) {
            Ok(out) => {
                charge(budget, out.len());
                members.push(Member {
                    name: Some(name),
                    data: out,
                });
            }
            Err(a) => return (Vec::new(), Some(a)),
        }
    }
    (members, None)
}

fn untar(data: &[u8], budget: &mut Budget) -> (Vec<Member>, Option<Anomaly>) {
    let mut archive = tar::Archive::new(data);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return (Vec::new(), Some(Anomaly::Unscannable(format!("tar: {e}")))),
    };
    let mut members = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return (members, Some(Anomaly::Unscannable(format!("tar: {e}")))),
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if !budget.take_object() {
            return (
                members,
                Some(Anomaly::Bomb("more archive members than allowed".into())),
            );
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        // tar does not compress: the budget's total is what bounds it.
        let allowance = budget.bytes_left;
        match read_bounded(entry, allowance, &format!("tar member {name:?}")) {
            Ok(out) => {
                charge(budget, out.len());
                members.push(Member {
                    name: Some(name),
                    data: out,
                });
            }
            Err(a) => return (members, Some(a)),
        }
    }
    (members, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in files {
            w.start_file(*name, opts).expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn a_zip_gives_its_members() {
        let z = zip_of(&[("a.txt", b"hello"), ("b/c.bin", b"\x00\x01")]);
        assert_eq!(sniff(&z), Some(Container::Zip));
        let mut b = Budget::new(Limits::default());
        let (m, a) = unpack(Container::Zip, &z, &mut b);
        assert_eq!(a, None);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name.as_deref(), Some("a.txt"));
        assert_eq!(m[0].data, b"hello");
    }

    #[test]
    fn a_zip_bomb_is_not_expanded() {
        let zeros = vec![0u8; 8 << 20];
        let z = zip_of(&[("zeros", &zeros)]);
        assert!(z.len() < 100_000);
        let mut b = Budget::new(Limits::default());
        let (m, a) = unpack(Container::Zip, &z, &mut b);
        assert!(m.is_empty());
        assert!(matches!(a, Some(Anomaly::Bomb(_))), "{a:?}");
    }

    #[test]
    fn a_lying_size_field_is_caught_while_reading() {
        let zeros = vec![0u8; 4 << 20];
        let mut b = Budget::new(Limits::default());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).expect("gz");
        let gz = gz.finish().expect("gz");
        let (m, a) = unpack(Container::Gzip, &gz, &mut b);
        assert!(m.is_empty());
        assert!(matches!(a, Some(Anomaly::Bomb(_))), "{a:?}");
    }

    #[test]
    fn garbage_is_unscannable_not_a_panic() {
        let mut b = Budget::new(Limits::default());
        for kind in [
            Container::Zip,
            Container::Gzip,
            Container::Tar,
            Container::Bzip2,
            Container::Xz,
        ] {
            let (_, a) = unpack(kind, b"PK\x03\x04garbage", &mut b);
            assert!(matches!(a, Some(Anomaly::Unscannable(_))), "{kind:?} {a:?}");
        }
    }

    #[test]
    fn bzip2_and_xz_give_their_content_and_their_bombs_are_not_expanded() {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        bz.write_all(b"hello bzip2").expect("bz");
        let bz = bz.finish().expect("bz");
        assert_eq!(sniff(&bz), Some(Container::Bzip2));
        let (m, a) = unpack(Container::Bzip2, &bz, &mut Budget::new(Limits::default()));
        assert_eq!((a, m[0].data.as_slice()), (None, &b"hello bzip2"[..]));
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"hello xz"[..], &mut xz).expect("xz");
        assert_eq!(sniff(&xz), Some(Container::Xz));
        let (m, a) = unpack(Container::Xz, &xz, &mut Budget::new(Limits::default()));
        assert_eq!((a, m[0].data.as_slice()), (None, &b"hello xz"[..]));
        // 8 MiB of zeros: past the ratio once over the 1 MiB floor.
        let zeros = vec![0u8; 8 << 20];
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        bz.write_all(&zeros).expect("bz");
        let bz = bz.finish().expect("bz");
        let (m, a) = unpack(Container::Bzip2, &bz, &mut Budget::new(Limits::default()));
        assert!(m.is_empty() && matches!(a, Some(Anomaly::Bomb(_))), "{a:?}");
    }

    #[test]
    fn a_tar_gives_its_files() {
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "x.txt", &b"abc"[..]).expect("tar");
        let t = t.into_inner().expect("tar");
        assert_eq!(sniff(&t), Some(Container::Tar));
        let mut b = Budget::new(Limits::default());
        let (m, a) = unpack(Container::Tar, &t, &mut b);
        assert_eq!(a, None);
        assert_eq!(m[0].data, b"abc");
    }
}
