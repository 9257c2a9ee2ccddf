//! Fuzz target for the measured-boot parsers (`sealgate_local::measured`): the firmware's
//! TPM event log and a PE image's Authenticode ranges, which sealgated reads to predict an
//! updated slot's PCR 4; and a test bundle's fault plan (`sealgate_local::test_faults`), which
//! the console and sealgated read from the data partition. No panic; every range lies inside
//! the input; a plan has one to three faults.

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let _ = sealgate_local::measured::parse_event_log(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(plan) = sealgate_local::test_faults::parse_list(text)
    {
        assert!((1..=3).contains(&plan.len()));
        for n in 0..5 {
            assert!(sealgate_local::test_faults::for_trial(&plan, n).is_some());
        }
    }
    if let Ok(ranges) = sealgate_local::measured::authenticode_ranges(data) {
        for r in ranges {
            assert!(r.start <= r.end && r.end <= data.len());
        }
    }
}
