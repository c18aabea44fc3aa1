//! See `signalbox::fuzzing::signaling_event` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalbox::fuzzing::signaling_event(data));
