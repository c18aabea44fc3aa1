//! How many sessions a client may open: Engine.IO handshakes per client
//! address (a rate), and sessions that have not joined a namespace yet per
//! address and per TCP connection (a count). No I/O: the time is passed in.
//!
//! A session that joined nothing is cheap to make and costs the server a
//! place in its session table until the connect timeout; without these
//! limits, one connection pipelining handshakes filled the polling pool in
//! a fraction of a second and locked every other client out.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::rate::Bucket;

/// The limits, each a flag with a default.
#[derive(Debug, Clone)]
pub struct HandshakeLimits {
    /// Handshakes one client address may make per second, on average.
    pub rate: f64,
    /// Handshakes one client address may make in a burst.
    pub burst: f64,
    /// Sessions that joined no namespace, per client address.
    pub max_unjoined_per_ip: usize,
    /// Sessions that joined no namespace, per TCP connection they were
    /// opened on (a client opens one per connection).
    pub max_unjoined_per_connection: usize,
}

impl Default for HandshakeLimits {
    fn default() -> HandshakeLimits {
        // A building's phones reconnect at once after a Wi-Fi restart, each
        // from its own address; a test rig opens hundreds from one. A
        // thousand sessions that joined nothing is a fifth of the polling
        // pool: one address cannot fill it.
        HandshakeLimits {
            rate: 100.0,
            burst: 1000.0,
            max_unjoined_per_ip: 1000,
            max_unjoined_per_connection: 8,
        }
    }
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// The address made handshakes faster than its rate.
    TooFast,
    /// The address holds its most sessions that joined no namespace.
    TooManyUnjoined,
    /// The connection holds its most sessions that joined no namespace.
    TooManyOnConnection,
}

impl fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeRefusal::TooFast => "Too many handshakes from this address: slow down",
            HandshakeRefusal::TooManyUnjoined => {
                "Too many sessions from this address that joined no namespace"
            }
            HandshakeRefusal::TooManyOnConnection => {
                "Too many sessions on this connection that joined no namespace"
            }
        })
    }
}

/// One client address: its handshake bucket and its sessions that joined
/// no namespace.
#[derive(Debug)]
struct Address {
    bucket: Bucket,
    unjoined: usize,
}

/// How often addresses that need no keeping are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The handshake bookkeeping of one endpoint.
#[derive(Debug)]
pub struct Handshakes {
    limits: HandshakeLimits,
    addresses: HashMap<IpAddr, Address>,
    next_sweep: Instant,
}

impl Handshakes {
    /// No handshakes yet.
    pub fn new(limits: HandshakeLimits, now: Instant) -> Handshakes {
        Handshakes {
            limits,
            addresses: HashMap::new(),
            next_sweep: now + SWEEP_EVERY,
        }
    }

    /// A handshake from `address` on a connection that opened
    /// `on_connection` sessions that joined nothing yet. `Ok`: the new
    /// session counts as one more that joined nothing, until
    /// [`Handshakes::joined`].
    pub fn admit(
        &mut self,
        address: IpAddr,
        on_connection: usize,
        now: Instant,
    ) -> Result<(), HandshakeRefusal> {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if on_connection >= self.limits.max_unjoined_per_connection {
            return Err(HandshakeRefusal::TooManyOnConnection);
        }
        let limits = &self.limits;
        let entry = self.addresses.entry(address).or_insert_with(|| Address {
            bucket: Bucket::new(limits.rate, limits.burst, now),
            unjoined: 0,
        });
        if entry.unjoined >= limits.max_unjoined_per_ip {
            return Err(HandshakeRefusal::TooManyUnjoined);
        }
        if !entry.bucket.take(now) {
            return Err(HandshakeRefusal::TooFast);
        }
        entry.unjoined += 1;
        Ok(())
    }

    /// A session from `address` that joined nothing joined a namespace, or
    /// ended.
    pub fn joined(&mut self, address: IpAddr) {
        if let Some(entry) = self.addresses.get_mut(&address) {
            entry.unjoined = entry.unjoined.saturating_sub(1);
        }
    }

    /// A session from `address` left its last namespace: it joined nothing
    /// again.
    pub fn unjoined(&mut self, address: IpAddr, now: Instant) {
        let limits = &self.limits;
        self.addresses
            .entry(address)
            .or_insert_with(|| Address {
                bucket: Bucket::new(limits.rate, limits.burst, now),
                unjoined: 0,
            })
            .unjoined += 1;
    }

    /// How many sessions from `address` joined nothing.
    #[cfg(test)]
    pub fn unjoined_from(&self, address: IpAddr) -> usize {
        self.addresses.get(&address).map_or(0, |a| a.unjoined)
    }

    /// How many addresses are remembered.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }

    /// Forgets the addresses whose bucket is full and that hold no session
    /// that joined nothing: a fresh entry would be the same.
    fn sweep(&mut self, now: Instant) {
        self.addresses
            .retain(|_, address| address.unjoined > 0 || !address.bucket.is_full(now));
        if self.addresses.capacity() > 2 * self.addresses.len() + 16 {
            self.addresses.shrink_to_fit();
        }
        self.next_sweep = now + SWEEP_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HandshakeLimits {
        HandshakeLimits {
            rate: 2.0,
            burst: 4.0,
            max_unjoined_per_ip: 3,
            max_unjoined_per_connection: 2,
        }
    }

    const LAN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 21));

    #[test]
    fn a_connection_holds_few_sessions_that_joined_nothing() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(limits(), t0);
        assert_eq!(h.admit(LAN, 0, t0), Ok(()));
        assert_eq!(h.admit(LAN, 1, t0), Ok(()));
        assert_eq!(
            h.admit(LAN, 2, t0),
            Err(HandshakeRefusal::TooManyOnConnection)
        );
        // A refusal costs the address nothing.
        assert_eq!(h.unjoined_from(LAN), 2);
        assert_eq!(h.admit(LAN, 0, t0), Ok(()));
    }

    #[test]
    fn an_address_holds_few_sessions_that_joined_nothing() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(limits(), t0);
        for _ in 0..3 {
            assert_eq!(h.admit(LAN, 0, t0), Ok(()));
        }
        assert_eq!(h.admit(LAN, 0, t0), Err(HandshakeRefusal::TooManyUnjoined));
        // Other addresses are not held back.
        assert_eq!(h.admit(OTHER, 0, t0), Ok(()));
        // A session that joins frees its place.
        h.joined(LAN);
        assert_eq!(h.admit(LAN, 0, t0), Ok(()));
        assert_eq!(h.admit(LAN, 0, t0), Err(HandshakeRefusal::TooManyUnjoined));
        // One that leaves its last namespace takes a place again.
        h.joined(LAN);
        h.unjoined(LAN, t0);
        assert_eq!(h.unjoined_from(LAN), 3);
    }

    #[test]
    fn handshakes_are_held_to_their_rate() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(limits(), t0);
        for _ in 0..4 {
            assert_eq!(h.admit(LAN, 0, t0), Ok(()));
            h.joined(LAN);
        }
        assert_eq!(h.admit(LAN, 0, t0), Err(HandshakeRefusal::TooFast));
        assert_eq!(h.admit(OTHER, 0, t0), Ok(()));
        // Two a second come back.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(h.admit(LAN, 0, later), Ok(()));
        assert_eq!(h.admit(LAN, 0, later), Err(HandshakeRefusal::TooFast));
    }

    #[test]
    fn addresses_are_forgotten_once_they_need_no_keeping() {
        let t0 = Instant::now();
        let mut h = Handshakes::new(limits(), t0);
        for i in 0..1000u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(h.admit(address, 0, t0), Ok(()));
            if i > 0 {
                h.joined(address);
            }
        }
        assert_eq!(h.addresses(), 1000);
        // Buckets refill in two seconds; the sweep after that keeps only the
        // address whose session still joined nothing.
        let later = t0 + SWEEP_EVERY;
        assert_eq!(h.admit(LAN, 0, later), Ok(()));
        assert_eq!(h.addresses(), 2);
        assert_eq!(
            h.unjoined_from(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000))),
            1
        );
    }
}
