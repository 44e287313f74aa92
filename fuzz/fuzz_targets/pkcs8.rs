//! See `chatao_fuzz::files::pkcs8`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::files::pkcs8(data));
