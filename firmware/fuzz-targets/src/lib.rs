//! The fuzz targets' bodies: one module per target of `fuzz/`, each with `run(data: &[u8])`,
//! which feeds the bytes to the parsers it names and asserts what must hold whatever the
//! input (a panic is a finding).
//!
//! Two harnesses call them:
//! - cargo-fuzz (`fuzz/fuzz_targets/NAME.rs`, three lines each): coverage-guided search with
//!   libFuzzer and AddressSanitizer, for whoever changes a parser (`cargo xtask test
//!   --fuzz-only`, or `cargo fuzz run NAME` in `fuzz/`);
//! - [`replay`], from this crate's tests in the ordinary `cargo test` run: every committed
//!   seed of `fuzz/corpus/NAME/` and a fixed number of deterministic mutations of them, so a
//!   regression against any seed (or its near neighbours) fails the test run itself.
//!
//! A panic is how a target reports a finding, so this crate allows `panic!`.
#![allow(clippy::panic)]

pub mod admin_answer;
pub mod classifier;
pub mod cms;
pub mod directory;
pub mod dns;
pub mod gateway_address;
pub mod imap;
pub mod loop_marker;
pub mod measured;
pub mod mime;
pub mod netproto;
pub mod replay;
pub mod scan;
pub mod smtp;
pub mod update_url;

/// A target's entry point.
pub type Target = fn(&[u8]);

/// Every target by its name (the name of its `fuzz/fuzz_targets/` file, `[[bin]]` and corpus
/// folder).
pub const TARGETS: &[(&str, Target)] = &[
    ("admin_answer", admin_answer::run),
    ("classifier", classifier::run),
    ("cms", cms::run),
    ("directory", directory::run),
    ("dns", dns::run),
    ("gateway_address", gateway_address::run),
    ("imap", imap::run),
    ("loop_marker", loop_marker::run),
    ("measured", measured::run),
    ("mime", mime::run),
    ("netproto", netproto::run),
    ("scan", scan::run),
    ("smtp", smtp::run),
    ("update_url", update_url::run),
];
