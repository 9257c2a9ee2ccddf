//! cargo-fuzz's entry for `sealgate_fuzz_targets::netproto`
//! (firmware/fuzz-targets: the body and what must hold; the test run replays the corpus there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate_fuzz_targets::netproto::run(data));
