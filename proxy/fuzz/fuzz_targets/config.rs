//! TOML text through takgate's config loader (`takgate::fuzzing::config`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| takgate::fuzzing::config(data));
