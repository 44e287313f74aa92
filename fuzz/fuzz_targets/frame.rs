//! See `chatao_fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::frame(data));
