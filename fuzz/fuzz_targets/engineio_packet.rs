//! See `signalbox::fuzzing::engineio_packet` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalbox::fuzzing::engineio_packet(data));
