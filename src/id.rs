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

/// A fast hasher for maps keyed by identifiers this server generated
/// (session and socket ids): they are random, so nobody can choose keys
/// that collide, and SipHash's protection against that is not needed.
/// Maps keyed by what clients choose (user names) keep the default hasher.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // FxHash: rotate, xor, multiply, a word at a time.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A map keyed by server-generated identifiers.
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Gives a map's room back once it has emptied out to well under what it
/// holds room for (after a burst: a map keeps its peak's room otherwise).
pub fn shrink_when_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 4 * map.len() + 64 {
        map.shrink_to_fit();
    }
}
