//! Token buckets: how rates are limited everywhere (events per socket,
//! calls per user, handshakes per client address).

use std::time::{Duration, Instant};

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
    /// use signalbox::rate::Bucket;
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
