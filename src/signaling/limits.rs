//! Rate limits: a token bucket per socket for events and per user for calls.

use std::time::{Duration, Instant};

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
    /// Refused events in a row after which a socket is disconnected.
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

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    rate: f32,
    burst: f32,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst as f32,
            rate: rate as f32,
            burst: burst as f32,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes a token if there is one.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use signalbox::signaling::limits::Bucket;
    /// let t0 = Instant::now();
    /// let mut bucket = Bucket::new(1.0, 2.0, t0);
    /// assert!(bucket.take(t0) && bucket.take(t0) && !bucket.take(t0));
    /// assert!(bucket.take(t0 + Duration::from_secs(1)));
    /// ```
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (so it can be forgotten).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// How long until a token is available.
    pub fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f32((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(10.0, 5.0, t0);
        for _ in 0..5 {
            assert!(bucket.take(t0));
        }
        assert!(!bucket.take(t0));
        assert!(bucket.wait() > Duration::ZERO);
        assert!(!bucket.take(t0 + Duration::from_millis(50)));
        assert!(bucket.take(t0 + Duration::from_millis(100)));
        assert!(!bucket.is_full(t0 + Duration::from_millis(200)));
        assert!(bucket.is_full(t0 + Duration::from_secs(10)));
        // Never more than the burst, however long it rests.
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..10).filter(|_| bucket.take(later)).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = Bucket::new(1.0, 1.0, t0);
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0 - Duration::from_secs(5)));
        assert!(bucket.take(t0 + Duration::from_secs(1)));
    }
}
