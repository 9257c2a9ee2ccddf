//! SNTP (RFC 4330): the 48-byte client request and the clock offset from a server's answer.
//!
//! With T1 our transmit time, T2 the server's receive time, T3 its transmit time and T4 our
//! receive time: offset = ((T2 − T1) + (T3 − T4)) / 2, delay = (T4 − T1) − (T3 − T2).
//!
//! Who sends what it reads: the NTP server, or anyone who can spoof it. An answer counts
//! only if it is 48 bytes or more, in server mode (4), version 3 or 4, synchronised (leap
//! indicator not 3, stratum 1..=15), echoes our transmit timestamp as its originate
//! timestamp (so an off-path attacker must guess 64 bits), and has T2 ≤ T3 and a delay that
//! is not negative. Even then one answer is one sample: the caller decides what to do with
//! the offset (the daemon sets the clock only when allowed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP's era 0) to 1970-01-01.
const UNIX_OFFSET: u64 = 2_208_988_800;

/// The size of an NTP packet without extensions.
pub const PACKET: usize = 48;

/// An NTP timestamp: seconds since 1900 in the high 32 bits, the fraction in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp of a system time (era 0: until 2036; later times wrap as NTP does).
    pub fn from_system(t: SystemTime) -> Timestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = d.as_secs().wrapping_add(UNIX_OFFSET) & 0xffff_ffff;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp((secs << 32) | frac)
    }

    /// Nanoseconds in NTP's scale (for differences).
    fn nanos(self) -> i128 {
        let secs = i128::from(self.0 >> 32);
        let frac = i128::from(self.0 & 0xffff_ffff);
        secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
    }
}

/// A client request (mode 3, version 4) carrying `transmit` (T1), which the answer must echo.
pub fn request(transmit: Timestamp) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

/// One measurement against a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How far our clock is behind the server's, in nanoseconds (positive: ours is slow).
    pub offset_nanos: i128,
    /// The round trip minus the server's processing, in nanoseconds.
    pub delay_nanos: i128,
    /// The server's stratum (1: it has a reference clock).
    pub stratum: u8,
}

/// Why an answer does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than 48 bytes, not version 3 or 4, or not in server mode.
    NotAnAnswer,
    /// It does not echo our request's transmit timestamp.
    NotOurs,
    /// The server says it is not synchronised (leap indicator 3 or stratum 0 — a
    /// kiss-o'-death — or 16 and above).
    Unsynchronised,
    /// Its timestamps contradict each other (T3 before T2, a negative delay, zeros).
    Inconsistent,
}

/// The sample an answer gives to the request sent at `t1` and received at `t4`.
pub fn answer(bytes: &[u8], t1: Timestamp, t4: Timestamp) -> Result<Sample, Refused> {
    if bytes.len() < PACKET {
        return Err(Refused::NotAnAnswer);
    }
    let li = bytes[0] >> 6;
    let version = (bytes[0] >> 3) & 7;
    let mode = bytes[0] & 7;
    if mode != 4 || !(3..=4).contains(&version) {
        return Err(Refused::NotAnAnswer);
    }
    let ts = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        Timestamp(u64::from_be_bytes(b))
    };
    if ts(24) != t1 {
        return Err(Refused::NotOurs);
    }
    let stratum = bytes[1];
    if li == 3 || !(1..=15).contains(&stratum) {
        return Err(Refused::Unsynchronised);
    }
    let (t2, t3) = (ts(32), ts(40));
    if t2.0 == 0 || t3.0 == 0 || t3 < t2 {
        return Err(Refused::Inconsistent);
    }
    let (t1, t2, t3, t4) = (t1.nanos(), t2.nanos(), t3.nanos(), t4.nanos());
    let delay = (t4 - t1) - (t3 - t2);
    if delay < 0 {
        return Err(Refused::Inconsistent);
    }
    Ok(Sample {
        offset_nanos: ((t2 - t1) + (t3 - t4)) / 2,
        delay_nanos: delay,
        stratum,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn server_answer(req: &[u8; PACKET], t2: Timestamp, t3: Timestamp) -> [u8; PACKET] {
        let mut p = [0u8; PACKET];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&req[40..48]);
        p[32..40].copy_from_slice(&t2.0.to_be_bytes());
        p[40..48].copy_from_slice(&t3.0.to_be_bytes());
        p
    }

    fn at(secs: u64, millis: u64) -> Timestamp {
        Timestamp::from_system(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
    }

    #[test]
    fn the_offset_and_delay_are_computed_from_the_four_timestamps() {
        // Our clock is 10 s slow; 20 ms each way; the server takes 5 ms.
        let t1 = at(1_700_000_000, 0);
        let req = request(t1);
        let a = server_answer(&req, at(1_700_000_010, 20), at(1_700_000_010, 25));
        let s = answer(&a, t1, at(1_700_000_000, 45)).unwrap();
        assert_eq!((s.delay_nanos + 500_000) / 1_000_000, 40);
        assert_eq!((s.offset_nanos + 500_000) / 1_000_000, 10_000);
        assert_eq!(s.stratum, 2);
    }

    #[test]
    fn answers_that_are_not_ours_or_not_synchronised_are_refused() {
        let t1 = at(1_700_000_000, 0);
        let req = request(t1);
        let good = server_answer(&req, at(1_700_000_000, 1), at(1_700_000_000, 2));
        let t4 = at(1_700_000_000, 3);
        assert!(answer(&good, t1, t4).is_ok());
        assert_eq!(answer(&good[..47], t1, t4), Err(Refused::NotAnAnswer));
        assert_eq!(answer(&good, at(1, 0), t4), Err(Refused::NotOurs));
        let mut b = good;
        b[0] = (4 << 3) | 3;
        assert_eq!(answer(&b, t1, t4), Err(Refused::NotAnAnswer));
        let mut b = good;
        b[0] |= 0xc0;
        assert_eq!(answer(&b, t1, t4), Err(Refused::Unsynchronised));
        let mut b = good;
        b[1] = 0;
        assert_eq!(answer(&b, t1, t4), Err(Refused::Unsynchronised));
        let mut b = good;
        b[32..40].copy_from_slice(&at(1_700_000_000, 9).0.to_be_bytes());
        assert_eq!(answer(&b, t1, t4), Err(Refused::Inconsistent));
        // A delay below zero: the server claims to have held it longer than the round trip.
        let b = server_answer(&req, at(1_700_000_000, 0), at(1_700_000_001, 0));
        assert_eq!(answer(&b, t1, t4), Err(Refused::Inconsistent));
        for n in 0..PACKET {
            let _ = answer(&vec![0xff; n], t1, t4);
        }
    }
}
