//! The box's own network clients, without I/O (the daemon's `network` module owns the sockets
//! and the kernel's state):
//!
//! - [`dhcp`]: the DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK, renewing at T1,
//!   rebinding at T2, the lease lost at its end, RELEASE. The attacker is anyone on the link:
//!   a reply counts only if it is a BOOTREPLY to our transaction ID and hardware address,
//!   of the type the state expects, from the server we chose; the lease it offers is checked
//!   (a usable unicast address, a contiguous mask, a router inside the subnet, bounded
//!   lists and times) before it can reach the kernel.
//! - [`ntp`]: an SNTP client request (RFC 4330) and the offset and delay computed from a
//!   server's answer, which counts only if it answers our request (originate timestamp), is
//!   in server mode and synchronised (leap indicator, stratum 1..=15).

#![forbid(unsafe_code)]

pub mod dhcp;
pub mod ntp;
