//! Fuzz target `json_event`: see `checks::json_event`.
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::json_event(data));
