//! The trusted framer (OTS to client) against the validating one on the same bytes and chunks
//! (`cot::fuzzing::framer_differential`, which documents the input layout and the properties).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cot::fuzzing::framer_differential(data));
