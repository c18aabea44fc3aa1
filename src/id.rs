//! Random identifiers for sessions and sockets.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static FALLBACK: Cell<u64> = const { Cell::new(0) };
}

/// A new random identifier: 20 URL-safe characters from 120 random bits,
/// the shape Engine.IO's own session ids have.
///
/// ```
/// let a = signalbox::id::random();
/// assert_eq!(a.len(), 20);
/// assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
/// assert_ne!(a, signalbox::id::random());
/// ```
pub fn random() -> String {
    let mut bytes = [0u8; 15];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS refused randomness: stay unique (not unpredictable) and say so.
        log::warn!("no randomness from the OS; identifiers are predictable");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = FALLBACK.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..15].copy_from_slice(&count.to_le_bytes()[..7]);
    }
    let mut out = String::with_capacity(20);
    crate::base64::encode_url_into(&bytes, &mut out);
    out
}
