//! See `chatao_fuzz::client::server_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::client::server_records(data));
