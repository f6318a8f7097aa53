#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grantbridge::fuzzing::config(data));
