#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_router::fuzzing::ids(data));
