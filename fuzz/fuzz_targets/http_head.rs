//! See `signalbox::fuzzing::http_head` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalbox::fuzzing::http_head(data));
