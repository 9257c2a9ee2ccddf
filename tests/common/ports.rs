//! Free loopback ports for the peers a test starts (Dovecot, Postfix, slapd, ...). Declared
//! once at each test crate's or benchmark's root (`mod ports`), used by the peers' modules.
#![allow(dead_code)]

use std::net::TcpListener;

/// `N` distinct free loopback ports. Each is held until all are chosen: a port bound and let
/// go is free again, the next bind can get it, and two listeners of one peer on one port stop
/// it from starting (Dovecot: "duplicate listener").
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound address").port())
}

/// One free loopback port (bound, then released for the peer to take).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}
