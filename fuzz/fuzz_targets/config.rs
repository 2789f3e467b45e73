#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presenced::fuzzing::config(data));
