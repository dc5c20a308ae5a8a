//! See `fulcrum::fuzzing::parser`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum::fuzzing::parser(data));
