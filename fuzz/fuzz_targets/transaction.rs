#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_federation::fuzzing::transaction(data));
