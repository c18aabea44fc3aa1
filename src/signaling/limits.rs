//! Signaling limits: payload sizes, and the rates of the token buckets
//! ([`crate::rate::Bucket`]) each socket has for events and each user for calls.

/// Signaling limits, each a flag with a safe default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest SDP offer or answer, as JSON text.
    pub max_sdp_bytes: usize,
    /// Largest ICE candidate, as JSON text.
    pub max_candidate_bytes: usize,
    /// Events a socket may send per second, on average.
    pub event_rate: f64,
    /// Events a socket may send in a burst.
    pub event_burst: f64,
    /// Refused events after which a socket is disconnected; refusals are
    /// forgiven at `event_rate` a second, so a socket a little over its
    /// rate is only refused, and one that floods is disconnected.
    pub event_strikes: u32,
    /// Calls a user may start per minute, on average.
    pub calls_per_minute: f64,
    /// Calls a user may start in a burst.
    pub call_burst: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sdp_bytes: 64 * 1024,
            max_candidate_bytes: 4 * 1024,
            // Trickle ICE sends a few dozen candidates at a call's start.
            event_rate: 50.0,
            event_burst: 100.0,
            event_strikes: 100,
            calls_per_minute: 10.0,
            call_burst: 10.0,
        }
    }
}
