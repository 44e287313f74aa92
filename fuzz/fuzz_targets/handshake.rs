//! See `chatao_fuzz::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::handshake(data));
