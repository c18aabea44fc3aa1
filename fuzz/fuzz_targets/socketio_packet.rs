//! See `signalbox::fuzzing::socketio_packet` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalbox::fuzzing::socketio_packet(data));
