//! See `chatao_fuzz::client::client_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::client::client_handshake(data));
