//! Fuzz target: see `slotgate_fuzz::checks::differential` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotgate_fuzz::checks::differential::check(
    data,
    slotgate_fuzz::peak_allocation
));
