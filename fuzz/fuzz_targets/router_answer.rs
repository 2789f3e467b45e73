#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_python::fuzzing::router_answer(data));
