//! See `chatao_fuzz::files::access_list`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::files::access_list(data));
