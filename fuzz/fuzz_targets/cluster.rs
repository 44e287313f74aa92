//! See `chatao_fuzz::cluster::cluster`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatao_fuzz::cluster::cluster(data));
