//! See `chatao_fuzz::e2e::e2e`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::e2e::e2e(data));
