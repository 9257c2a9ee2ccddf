//! Parsers for measured boot, without a hash function of their own (the caller hashes): the
//! TCG PC Client crypto-agile event log the firmware leaves
//! (`/sys/kernel/security/tpm0/binary_bios_measurements`) and the byte ranges of a PE image
//! that its Authenticode digest covers. sealgated predicts an updated slot's PCR 4 with them
//! (`firmware/sealgated/src/update_reseal.rs`). Input is whatever root on the box copied;
//! errors, never panics (fuzz target `measured`).

use std::ops::Range;

use anyhow::{Context, Result, bail};

const TPM_ALG_SHA256: u16 = 0x000b;

/// One event of the log: PCR, type, its SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The PCR it was extended into.
    pub pcr: u32,
    /// The event type (`EV_*`).
    pub kind: u32,
    /// Its SHA-256 digest, if the log carries one.
    pub sha256: Option<[u8; 32]>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("event log truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("event log truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses a TCG PC Client crypto-agile event log (`binary_bios_measurements`): the first
/// event in SHA-1 format carries the Spec ID event with the digest sizes; the rest are
/// `TCG_PCR_EVENT2`. Never panics on any input.
pub fn parse_event_log(b: &[u8]) -> Result<Vec<Event>> {
    // TCG_PCR_EVENT: pcr, type, sha1[20], size, data.
    let size = u32_at(b, 28)? as usize;
    let spec = b
        .get(32..32usize.checked_add(size).context("size")?)
        .context("event log truncated")?;
    if !spec.starts_with(b"Spec ID Event03\0") {
        bail!("not a crypto-agile event log");
    }
    // Spec ID: signature[16], platformClass u32, versions 3 bytes, uintnSize u8,
    // numberOfAlgorithms u32, {algId u16, digestSize u16}...
    let n = u32_at(spec, 24)? as usize;
    if n == 0 || n > 16 {
        bail!("event log names {n} digest algorithms");
    }
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        sizes.push((
            u16_at(spec, 28 + 4 * i)?,
            u16_at(spec, 30 + 4 * i)? as usize,
        ));
    }
    let mut at = 32 + size;
    let mut events = Vec::new();
    while at + 12 <= b.len() {
        let pcr = u32_at(b, at)?;
        let kind = u32_at(b, at + 4)?;
        let count = u32_at(b, at + 8)? as usize;
        if count > 16 {
            bail!("event with {count} digests");
        }
        let mut p = at + 12;
        let mut sha256 = None;
        for _ in 0..count {
            let alg = u16_at(b, p)?;
            let len = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l)
                .with_context(|| format!("digest algorithm {alg:#x} not in the Spec ID event"))?;
            let d = b.get(p + 2..p + 2 + len).context("event log truncated")?;
            if alg == TPM_ALG_SHA256 && len == 32 {
                let mut x = [0u8; 32];
                x.copy_from_slice(d);
                sha256 = Some(x);
            }
            p += 2 + len;
        }
        let esize = u32_at(b, p)? as usize;
        let end = (p + 4).checked_add(esize).context("event size")?;
        if end > b.len() {
            bail!("event log truncated");
        }
        events.push(Event { pcr, kind, sha256 });
        at = end;
    }
    Ok(events)
}

/// The byte ranges of a PE image that its Authenticode digest hashes, in order (what the
/// firmware measures into PCR 4): the file without its checksum, its certificate table entry
/// and the certificate table, sections in file order (the algorithm of the PE/COFF
/// specification, as EDK2 implements it). Never panics on any input.
pub fn authenticode_ranges(pe: &[u8]) -> Result<Vec<Range<usize>>> {
    let pe_off = u32_at(pe, 0x3c)? as usize;
    if pe.get(pe_off..pe_off + 4) != Some(b"PE\0\0") {
        bail!("not a PE image");
    }
    let coff = pe_off + 4;
    let nsections = u16_at(pe, coff + 2)? as usize;
    let opt_size = u16_at(pe, coff + 16)? as usize;
    let opt = coff + 20;
    let magic = u16_at(pe, opt)?;
    let dd = match magic {
        0x20b => opt + 112,
        0x10b => opt + 96,
        _ => bail!("unknown optional header magic {magic:#x}"),
    };
    let checksum = opt + 64;
    let size_of_headers = u32_at(pe, opt + 60)? as usize;
    let ndirs = u32_at(pe, dd - 4)? as usize;
    let cert_entry = dd + 4 * 8;
    let (cert_off, cert_size) = if ndirs > 4 {
        (
            u32_at(pe, cert_entry)? as usize,
            u32_at(pe, cert_entry + 4)? as usize,
        )
    } else {
        (0, 0)
    };
    if size_of_headers > pe.len() || cert_entry + 8 > size_of_headers {
        bail!("PE headers out of range");
    }
    let mut out = vec![
        0..checksum,
        checksum + 4..cert_entry,
        cert_entry + 8..size_of_headers,
    ];
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let s = table + 40 * i;
        let raw_size = u32_at(pe, s + 16)? as usize;
        let raw_ptr = u32_at(pe, s + 20)? as usize;
        if raw_size > 0 {
            sections.push((raw_ptr, raw_size));
        }
    }
    sections.sort_unstable();
    let mut hashed = size_of_headers;
    for (ptr, size) in sections {
        let end = ptr.checked_add(size).context("section size")?;
        if end > pe.len() {
            bail!("a section beyond the file");
        }
        out.push(ptr..end);
        hashed += size;
    }
    let end = pe
        .len()
        .checked_sub(cert_size)
        .context("certificate table beyond the file")?;
    if cert_size > 0 && cert_off != end {
        bail!("the certificate table is not at the end of the file");
    }
    if end > hashed {
        out.push(hashed..end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_corpus_parses_and_every_cut_is_an_error_not_a_panic() {
        let pe = include_bytes!("../../../fuzz/corpus/measured/pe-headers");
        let ranges = authenticode_ranges(pe).expect("a minimal PE32+ image");
        // Headers without checksum and certificate entry, then the one section.
        let opt = 0x44 + 20;
        assert_eq!(
            ranges,
            vec![
                0..opt + 64,
                opt + 68..opt + 112 + 32,
                opt + 112 + 40..0x200,
                0x200..0x400
            ]
        );
        let log = include_bytes!("../../../fuzz/corpus/measured/eventlog-pcr4");
        let events = parse_event_log(log).expect("event log");
        assert_eq!(events.len(), 4);
        assert_eq!(events[3].kind, 0x8000_0003);
        for cut in 0..log.len() {
            let _ = parse_event_log(&log[..cut]);
        }
        for cut in 0..pe.len() {
            let _ = authenticode_ranges(&pe[..cut]);
        }
    }
}
