//! The daemon's network and split-horizon DNS in network namespaces made by the tests (root
//! needed: `ip netns`), against real peers: `dig` (Debian `dnsutils`), Knot DNS (`knot`) as
//! the upstream resolver, `ip -j` (`iproute2`) to read what the kernel has, dnsmasq
//! (`dnsmasq-base`) as the DHCP server, chrony (`chrony`, `faketime`) serving time. A missing one
//! fails the test with a message naming its package.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod dhcp;
mod dns;
mod harness;
mod network;
mod webui;
