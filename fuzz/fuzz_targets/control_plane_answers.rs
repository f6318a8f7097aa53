#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grantbridge::fuzzing::control_plane_answers(data));
