//! See `signalbox::fuzzing::chunked_body` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalbox::fuzzing::chunked_body(data));
