#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grantbridge::fuzzing::functions_api(data));
