//! Fuzz target `proto_event`: see `checks::proto_event`.
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proto_event(data));
