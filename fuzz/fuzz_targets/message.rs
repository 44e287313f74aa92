//! See `chatao_fuzz::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::message(data));
