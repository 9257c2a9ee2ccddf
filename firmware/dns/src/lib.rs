//! The split-horizon DNS server's protocol layer, without I/O (the daemon's `dns` module owns
//! the sockets):
//!
//! - [`settings`]: `[dns]` and `[[dns.views]]` of the settings file, parsed at the edge
//!   (networks, records in zone-file form).
//! - [`answer`]: what one datagram or TCP message from a client gets: an answer from the
//!   client's view (first view whose networks hold the client's address), a refusal, or a
//!   question to forward. The attacker is anyone who can send a packet to the listener:
//!   malformed and oversized queries get FORMERR or nothing, never a panic; `ANY` is answered
//!   with NOTIMP and zone transfers are refused (no amplification); responses are never
//!   answered (no reflection loops); forwarding is only for clients in `recursion_networks`.
//! - [`upstream`]: the question sent to a forwarder and the checks on its answer (source,
//!   ID, question; only the answer chain for the question is kept), so a spoofed or
//!   off-question answer is ignored and cannot poison the cache.
//! - [`cache`]: forwarded answers by question, bounded, with their TTLs.

#![forbid(unsafe_code)]

pub mod answer;
pub mod cache;
pub mod settings;
pub mod upstream;

pub use answer::{Decision, Views, answer};
pub use settings::{Network, Settings, View, ZoneRecord};

/// The largest UDP answer the server sends (the DNS flag day 2020 size): bigger answers are
/// truncated and the client retries over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
