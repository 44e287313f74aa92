//! See `chatao_fuzz::files::settings`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::files::settings(data));
