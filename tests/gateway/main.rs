//! End-to-end tests of the all-in-one gateway's submission role against real peers started by
//! the tests: Dovecot (IMAPS, passwd-file users, SASL) and Postfix (submission with Dovecot
//! SASL; the organisation's relay and mailboxes) as the organisation's servers, Python
//! smtplib and swaks as mail clients, `openssl cms` and gpgsm to check what arrives.
//!
//! Peers: Debian `postfix`, `dovecot-core`, `dovecot-imapd`, `openssl`, `gpgsm`, `gnupg`,
//! `swaks`, `python3`. A missing one fails the test with a message naming its package.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

mod gpgsm;
#[path = "../docking/harness.rs"]
mod harness;
mod peers;
#[path = "../common/ports.rs"]
mod ports;

/// The daemon's login verifier, compiled as it is (it uses no other module of the daemon).
#[path = "../../firmware/sealgated/src/gateway/auth.rs"]
#[allow(dead_code)]
mod verifier;

/// DKIM signing of submission mail, compiled as it is (it uses no other module of the daemon).
#[path = "../../firmware/sealgated/src/dkim_sign.rs"]
#[allow(dead_code)]
mod dkim_sign;

mod auth;
mod inbound;
mod mailauth;
mod quarantine;
mod quarantine_webui;
mod submission;
