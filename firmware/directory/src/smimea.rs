//! DNS SMIMEA (RFC 8162): a recipient's certificate published in the DNS of their domain,
//! used **only when the answer is DNSSEC-validated**.
//!
//! The box does not validate DNSSEC itself: it asks a *validating resolver on the box's own
//! loopback* (`[directory] smimea_resolver`, e.g. unbound with the zones' trust anchors) and
//! trusts an answer only when that resolver set the AD ("authentic data") bit. The AD bit
//! proves nothing when it crosses a network (anyone on the path may set it), so the resolver
//! must be a loopback address; the settings refuse any other.
//!
//! **The attacker** forges DNS answers (off-path spoofing, a compromised or lying
//! authoritative server, a path that strips signatures): the validating resolver answers
//! SERVFAIL for a bogus answer, and an unsigned (insecure) answer comes without AD; both are
//! refusals. A spoofed UDP packet must match the query's random ID, our socket and the
//! question; anything else is ignored until the deadline. Answers are bounded
//! ([`MAX_ANSWER`], [`crate::MAX_CANDIDATES`] records) and parsed without panicking (fuzzed:
//! `fuzz/fuzz_targets/directory.rs`).
//!
//! Which records give a certificate: usage 3 (DANE-EE: the DNSSEC-validated record *is* the
//! trust, no path to a CA is needed) or usage 1 (PKIX-EE: the certificate must also chain to
//! a trust anchor), with selector 0 (the full certificate) and matching type 0 (not hashed).
//! Trust-anchor usages (0, 2) and hashed or key-only records cannot give a certificate to
//! encrypt to and are skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::MAX_CANDIDATES;

/// Largest answer read (UDP and TCP).
pub const MAX_ANSWER: usize = 65_535;
/// The SMIMEA RR type.
pub const TYPE_SMIMEA: u16 = 53;
/// The EDNS0 UDP payload size we announce.
const UDP_SIZE: u16 = 4096;

/// One SMIMEA record's RDATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Certificate usage (0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE).
    pub usage: u8,
    /// Selector (0 full certificate, 1 SubjectPublicKeyInfo).
    pub selector: u8,
    /// Matching type (0 exact, 1 SHA-256, 2 SHA-512).
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

/// What a resolver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The AD bit: the resolver validated the answer with DNSSEC.
    pub authenticated: bool,
    /// TC: the answer was truncated (ask again over TCP).
    pub truncated: bool,
    /// The SMIMEA records at the name asked (none for NXDOMAIN or NODATA).
    pub records: Vec<Record>,
}

/// A certificate found in a validated SMIMEA answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The certificate (DER, as published).
    pub der: Vec<u8>,
    /// Usage 3 (DANE-EE): the validated record is the trust, no path to an anchor needed.
    pub dane_ee: bool,
}

/// A DNS query for `name` (absolute, with or without the final dot), type SMIMEA, with RD,
/// AD and EDNS0's DO bit (so a validating resolver reports what it validated).
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(64 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0120u16.to_be_bytes()); // RD, AD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // QD 1, AN 0, NS 0, AR 1
    encode_name(&mut q, name)?;
    q.extend_from_slice(&TYPE_SMIMEA.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    // OPT: root name, type 41, class = UDP size, TTL = ext-rcode 0, version 0, DO bit.
    q.push(0);
    q.extend_from_slice(&41u16.to_be_bytes());
    q.extend_from_slice(&UDP_SIZE.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0x80, 0]);
    q.extend_from_slice(&[0, 0]);
    Ok(q)
}

fn encode_name(out: &mut Vec<u8>, name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 {
        return Err("the name is too long for the DNS".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{name:?} is not a DNS name (only letters, digits, - and _)"
            ));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// A bounded reader over a DNS message.
struct Msg<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Msg<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("the answer is cut short")?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("the answer is cut short")?;
        let b = self
            .data
            .get(self.pos..end)
            .ok_or("the answer is cut short")?;
        self.pos = end;
        Ok(b)
    }
    /// A (possibly compressed) name, lowercased, dot-separated, without the final dot.
    fn name(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let mut pos = self.pos;
        let mut jumped = false;
        let mut hops = 0;
        loop {
            let len = *self.data.get(pos).ok_or("the answer is cut short")?;
            match len & 0xc0 {
                0x00 => {
                    pos += 1;
                    if len == 0 {
                        break;
                    }
                    let label = self
                        .data
                        .get(pos..pos + usize::from(len))
                        .ok_or("the answer is cut short")?;
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                    if out.len() > 255 {
                        return Err("a name in the answer is too long".into());
                    }
                    pos += usize::from(len);
                }
                0xc0 => {
                    let lo = *self.data.get(pos + 1).ok_or("the answer is cut short")?;
                    if !jumped {
                        self.pos = pos + 2;
                        jumped = true;
                    }
                    hops += 1;
                    if hops > 32 {
                        return Err("a name in the answer loops".into());
                    }
                    pos = usize::from(len & 0x3f) << 8 | usize::from(lo);
                }
                _ => return Err("a name in the answer has an unknown label type".into()),
            }
        }
        if !jumped {
            self.pos = pos;
        }
        Ok(out)
    }
}

/// Reads a resolver's answer to [`query`]`(id, name)`. `Err` for an answer to another
/// question, a failure (SERVFAIL: bogus or unreachable) or a malformed message.
pub fn parse(id: u16, name: &str, data: &[u8]) -> Result<Answer, String> {
    let want = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if data.len() > MAX_ANSWER {
        return Err("the answer is too large".into());
    }
    let mut m = Msg { data, pos: 0 };
    if m.u16()? != id {
        return Err("an answer to another query".into());
    }
    let flags = m.u16()?;
    if flags & 0x8000 == 0 {
        return Err("not an answer".into());
    }
    let (qd, an) = (m.u16()?, m.u16()?);
    let _ns_ar = m.bytes(4)?;
    if qd != 1 {
        return Err("an answer to another question".into());
    }
    let qname = m.name()?;
    let (qtype, qclass) = (m.u16()?, m.u16()?);
    if qname != want || qtype != TYPE_SMIMEA || qclass != 1 {
        return Err("an answer to another question".into());
    }
    let truncated = flags & 0x0200 != 0;
    match flags & 0x000f {
        0 | 3 => {}
        2 => {
            return Err(
                "the resolver failed (SERVFAIL: a bogus DNSSEC answer, or the zone unreachable)"
                    .into(),
            );
        }
        r => return Err(format!("the resolver refused (rcode {r})")),
    }
    let mut records = Vec::new();
    for _ in 0..an {
        if truncated && m.pos >= data.len() {
            break;
        }
        let owner = m.name()?;
        let (rtype, rclass) = (m.u16()?, m.u16()?);
        let _ttl = m.bytes(4)?;
        let len = usize::from(m.u16()?);
        let rdata = m.bytes(len)?;
        if owner != want || rtype != TYPE_SMIMEA || rclass != 1 {
            continue; // RRSIGs, CNAMEs (their target's records carry another owner)
        }
        if rdata.len() < 3 {
            return Err("an SMIMEA record is too short".into());
        }
        if records.len() < MAX_CANDIDATES {
            records.push(Record {
                usage: rdata[0],
                selector: rdata[1],
                matching: rdata[2],
                data: rdata[3..].to_vec(),
            });
        }
    }
    Ok(Answer {
        authenticated: flags & 0x0020 != 0,
        truncated,
        records,
    })
}

/// The certificates an answer may give: refused unless DNSSEC-validated; full certificates
/// of usage 1 or 3 only.
pub fn certificates(a: &Answer) -> Result<Vec<Found>, String> {
    if !a.authenticated {
        return Err(
            "the answer is not DNSSEC-validated (no AD bit from the resolver): not trusted".into(),
        );
    }
    let found: Vec<Found> = a
        .records
        .iter()
        .filter(|r| matches!(r.usage, 1 | 3) && r.selector == 0 && r.matching == 0)
        .map(|r| Found {
            der: r.data.clone(),
            dane_ee: r.usage == 3,
        })
        .collect();
    if found.is_empty() && !a.records.is_empty() {
        return Err(format!(
            "{} SMIMEA record(s), none with a full end-entity certificate (usage 1 or 3, selector 0, matching 0)",
            a.records.len()
        ));
    }
    Ok(found)
}

/// The `[directory] smimea_resolver` address, if it is one we may trust: `IP:port` on the
/// loopback (the AD bit means nothing once it crossed a network).
pub fn resolver_address(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| format!("directory.smimea_resolver {s:?} is not IP:port"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "directory.smimea_resolver {s:?} is not a loopback address: the resolver's DNSSEC \
             validation (the AD bit) can only be trusted on the box itself"
        ));
    }
    Ok(a)
}

/// The SMIMEA source: the validating resolver to ask.
pub struct SmimeaSource {
    resolver: SocketAddr,
}

impl SmimeaSource {
    /// Checks the resolver's address.
    pub fn new(resolver: &str) -> Result<SmimeaSource, String> {
        Ok(SmimeaSource {
            resolver: resolver_address(resolver)?,
        })
    }

    /// The resolver, for refusals.
    pub fn name(&self) -> String {
        format!("dns {}", self.resolver)
    }

    /// Asks for `address`'s SMIMEA records before `deadline`.
    pub fn fetch(&self, address: &str, deadline: Instant) -> Result<Vec<Found>, String> {
        let name = crate::publish::smimea_name(address)
            .ok_or_else(|| format!("{address} has no SMIMEA name"))?;
        let mut idb = [0u8; 2];
        aws_lc_rs::rand::fill(&mut idb).map_err(|_| "no randomness")?;
        let id = u16::from_be_bytes(idb);
        let q = query(id, &name)?;
        let mut a = self.udp(id, &name, &q, deadline)?;
        if a.truncated {
            a = self.tcp(id, &name, &q, deadline)?;
        }
        certificates(&a)
    }

    fn udp(&self, id: u16, name: &str, q: &[u8], deadline: Instant) -> Result<Answer, String> {
        let local: SocketAddr = if self.resolver.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        }
        .parse()
        .map_err(|_| "address")?;
        let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
        s.connect(self.resolver).map_err(|e| e.to_string())?;
        s.send(q).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; MAX_ANSWER];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer within the lookup deadline".into());
            }
            s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            let n = s.recv(&mut buf).map_err(|e| e.to_string())?;
            match parse(id, name, &buf[..n]) {
                // Another query's answer, or a spoofed packet: keep waiting for ours.
                Err(e) if e.starts_with("an answer to another") || e == "not an answer" => {}
                r => return r,
            }
        }
    }

    fn tcp(&self, id: u16, name: &str, q: &[u8], deadline: Instant) -> Result<Answer, String> {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let mut s =
            TcpStream::connect_timeout(&self.resolver, left()).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let mut framed = u16::try_from(q.len())
            .map_err(|_| "query too long")?
            .to_be_bytes()
            .to_vec();
        framed.extend_from_slice(q);
        s.write_all(&framed).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        let mut got = 0;
        while got < buf.len() {
            s.set_read_timeout(Some(left()))
                .map_err(|e| e.to_string())?;
            match s.read(&mut buf[got..]) {
                Ok(0) => return Err("the answer is cut short".into()),
                Ok(n) => got += n,
                Err(e) => return Err(e.to_string()),
            }
            if Instant::now() >= deadline {
                return Err("no answer within the lookup deadline".into());
            }
        }
        parse(id, name, &buf)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An answer to `query(id, name)` with `flags` and one record per `(owner, rdata)`.
    pub(crate) fn answer(id: u16, name: &str, flags: u16, rrs: &[(&str, &[u8])]) -> Vec<u8> {
        let q = query(id, name).unwrap();
        let mut a = q[..12].to_vec();
        a[2..4].copy_from_slice(&(0x8000 | flags).to_be_bytes());
        a[6..8].copy_from_slice(&(rrs.len() as u16).to_be_bytes());
        a[10..12].copy_from_slice(&[0, 0]);
        // The question, as asked (without the OPT record).
        a.extend_from_slice(&q[12..q.len() - 11]);
        for (owner, rdata) in rrs {
            if *owner == name {
                a.extend_from_slice(&[0xc0, 12]); // compressed: the question's name
            } else {
                encode_name(&mut a, owner).unwrap();
            }
            a.extend_from_slice(&TYPE_SMIMEA.to_be_bytes());
            a.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
            a.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            a.extend_from_slice(rdata);
        }
        a
    }

    #[test]
    fn only_validated_full_certificates_of_end_entities_are_taken() {
        let name = "abc._smimecert.example.org.";
        let rec = [&[3u8, 0, 0][..], b"CERT"].concat();
        let hashed = [&[3u8, 0, 1][..], b"HASH"].concat();
        let ta = [&[2u8, 0, 0][..], b"CA"].concat();
        let a = parse(
            7,
            name,
            &answer(7, name, 0x0020, &[(name, &rec), (name, &hashed)]),
        )
        .unwrap();
        assert!(a.authenticated);
        assert_eq!(
            certificates(&a).unwrap(),
            vec![Found {
                der: b"CERT".to_vec(),
                dane_ee: true
            }]
        );
        // The same records without AD: refused.
        let a = parse(7, name, &answer(7, name, 0, &[(name, &rec)])).unwrap();
        assert!(
            certificates(&a)
                .unwrap_err()
                .contains("not DNSSEC-validated")
        );
        // A record for another owner is not taken.
        let a = parse(
            7,
            name,
            &answer(7, name, 0x20, &[("x._smimecert.example.org", &rec)]),
        )
        .unwrap();
        assert!(a.records.is_empty());
        // Only a trust anchor: refused with the reason.
        let a = parse(7, name, &answer(7, name, 0x20, &[(name, &ta)])).unwrap();
        assert!(certificates(&a).unwrap_err().contains("none with a full"));
        // SERVFAIL (bogus), another ID, another question.
        assert!(
            parse(7, name, &answer(7, name, 0x0002, &[]))
                .unwrap_err()
                .contains("SERVFAIL")
        );
        assert!(parse(8, name, &answer(7, name, 0x20, &[])).is_err());
        assert!(parse(7, "other.example.org", &answer(7, name, 0x20, &[])).is_err());
        // Cut short anywhere, or a name pointing at itself: an error, never a panic.
        let full = answer(7, name, 0x20, &[(name, &rec)]);
        for n in 0..full.len() {
            let _ = parse(7, name, &full[..n]);
        }
        let mut looped = full.clone();
        let at = looped.len() - rec.len() - 12;
        looped[at..at + 2].copy_from_slice(&[0xc0, at as u8]);
        assert!(parse(7, name, &looped).is_err());
    }

    #[test]
    fn the_fuzz_corpus_answers_are_what_they_say() {
        let name =
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com.";
        let read = |f: &[u8]| parse(0x1234, name, f).and_then(|a| certificates(&a));
        let cert: &[u8] = include_bytes!("../../../fuzz/corpus/directory/certificate.der");
        let found = read(include_bytes!(
            "../../../fuzz/corpus/directory/smimea-validated"
        ))
        .unwrap();
        assert_eq!(
            found,
            vec![Found {
                der: cert.to_vec(),
                dane_ee: true
            }]
        );
        assert!(
            read(include_bytes!(
                "../../../fuzz/corpus/directory/smimea-unsigned"
            ))
            .is_err()
        );
        assert!(
            read(include_bytes!(
                "../../../fuzz/corpus/directory/smimea-servfail"
            ))
            .is_err()
        );
        assert!(
            read(include_bytes!(
                "../../../fuzz/corpus/directory/smimea-hashed"
            ))
            .is_err()
        );
    }

    #[test]
    fn only_a_loopback_resolver_is_trusted() {
        assert!(resolver_address("127.0.0.1:53").is_ok());
        assert!(resolver_address("[::1]:5353").is_ok());
        assert!(
            resolver_address("192.0.2.1:53")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(resolver_address("localhost:53").is_err());
        assert!(query(1, "a b.example").is_err());
        assert!(query(1, &format!("{}.example", "a".repeat(64))).is_err());
    }
}
