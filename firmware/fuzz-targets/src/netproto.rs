//! The box's own network clients: datagrams from the link fed to the DHCP client's state
//! machine (in whatever state earlier datagrams and elapsed time put it), and an NTP answer.
//! Input: records of [length (2 bytes, big-endian), seconds/8 to advance, datagram].

use std::time::{Duration, Instant};

use sealgate_netproto::dhcp::Client;
use sealgate_netproto::ntp;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let start = Instant::now();
    let mut t = start;
    let mut c = Client::new(MAC, Some("fuzz".into()), 7, start);
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % 2048;
        t += Duration::from_secs(u64::from(rest[2]) * 8);
        rest = &rest[3..];
        let (msg, r) = rest.split_at(len.min(rest.len()));
        rest = r;
        let _ = c.poll(t);
        let _ = c.receive(msg, t);
        let _ = c.lease();
    }
    let _ = c.release();
    let t1 = ntp::Timestamp(0x0123_4567_89ab_cdef);
    let _ = ntp::answer(data, t1, ntp::Timestamp(0x0123_4568_0000_0000));
}
