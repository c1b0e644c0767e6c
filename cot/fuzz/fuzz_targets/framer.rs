//! Arbitrary bytes to the framer in arbitrary chunks (`cot::fuzzing::framer`, which documents
//! the input layout and the invariants).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cot::fuzzing::framer(data));
