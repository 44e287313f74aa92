//! See `chatao_fuzz::files::known_servers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::files::known_servers(data));
