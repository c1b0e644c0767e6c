//! An HTTP/1.1 request head through takgate's checks, routing, CORS and header rewriting
//! (`takgate::fuzzing::http_head`, which documents the input layout and the invariants).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| takgate::fuzzing::http_head(data));
