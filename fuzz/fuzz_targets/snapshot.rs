//! Fuzz target `snapshot`: see `checks::snapshot`.
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::snapshot(data));
