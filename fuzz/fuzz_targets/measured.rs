//! Fuzz target for the measured-boot parsers (`sealgate_local::measured`): the firmware's
//! TPM event log and a PE image's Authenticode ranges, which sealgated reads to predict an
//! updated slot's PCR 4. No panic; every range lies inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sealgate_local::measured::parse_event_log(data);
    if let Ok(ranges) = sealgate_local::measured::authenticode_ranges(data) {
        for r in ranges {
            assert!(r.start <= r.end && r.end <= data.len());
        }
    }
});
