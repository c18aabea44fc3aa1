//! The heartbeat, as a value: the server pings every `pingInterval` after
//! the last pong, and a session whose pong does not come within
//! `pingTimeout` of the ping is dead. No clock: the time is passed in, and
//! the session reads [`Heartbeat::deadline`] after every call into it.
//!
//! One deadline at a time (the next ping, or the check for its pong) is all
//! a session needs, so the endpoint keeps one alarm per session in the
//! thread's one queue of deadlines ([`crate::rt::Alarm`]); a task and a
//! reactor timer per session would cost several hundred bytes each. For
//! the same reason the interval and timeout, the endpoint's and the same
//! for all its sessions, are passed in ([`Rhythm`]), not kept in each: a
//! heartbeat is 40 bytes, where it was 80.
//!
//! Engine.IO 3 turns it around: the client pings, the server answers, and a
//! session that has not pinged within an interval and a timeout is dead
//! ([`Heartbeat::client_pings`]); the deadline is then that check alone.

use std::time::{Duration, Instant};

/// The ping interval and the ping timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rhythm {
    /// From the last pong to the next ping.
    pub interval: Duration,
    /// From a ping to the check for its pong.
    pub timeout: Duration,
}

/// What the heartbeat waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a ping.
    Ping,
    /// The pong for the ping sent a timeout before the deadline must have
    /// come.
    PongCheck,
    /// Engine.IO 3: the client's next ping must have come.
    PingCheck,
}

/// What the heartbeat asks for when its deadline comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Send a ping now.
    Ping,
    /// Nothing yet.
    Wait,
    /// No pong came: the session is dead.
    Dead,
}

/// A session's heartbeat.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heartbeat {
    /// The last sign of life: the open, then each pong.
    last_pong: Instant,
    due: Due,
    at: Instant,
}

impl Heartbeat {
    /// A heartbeat for a session opened at `now`: the first ping comes one
    /// interval later.
    pub fn new(rhythm: Rhythm, now: Instant) -> Heartbeat {
        Heartbeat {
            last_pong: now,
            due: Due::Ping,
            at: now + rhythm.interval,
        }
    }

    /// A heartbeat for an Engine.IO 3 session opened at `now`, whose client
    /// pings: [`Heartbeat::pong`] is called for each of its pings.
    pub fn client_pings(rhythm: Rhythm, now: Instant) -> Heartbeat {
        Heartbeat {
            last_pong: now,
            due: Due::PingCheck,
            at: now + rhythm.interval + rhythm.timeout,
        }
    }

    /// When the heartbeat next needs [`Heartbeat::timeout`].
    pub fn deadline(&self) -> Instant {
        self.at
    }

    /// When the session is dead if nothing more is heard from the client:
    /// an interval and a timeout after its last pong.
    pub fn dead_at(&self, rhythm: Rhythm) -> Instant {
        self.last_pong + rhythm.interval + rhythm.timeout
    }

    /// A pong arrived.
    pub fn pong(&mut self, now: Instant) {
        self.last_pong = now;
    }

    /// The deadline came (or `now` is past it).
    pub fn timeout(&mut self, now: Instant, rhythm: Rhythm) -> Beat {
        if now < self.at {
            return Beat::Wait;
        }
        match self.due {
            Due::Ping => {
                self.due = Due::PongCheck;
                self.at = now + rhythm.timeout;
                Beat::Ping
            }
            Due::PongCheck if self.last_pong >= self.at - rhythm.timeout => {
                // The next ping an interval after the pong, not after the
                // check: a client is pinged every interval, whatever the
                // timeout.
                self.due = Due::Ping;
                self.at = (self.last_pong + rhythm.interval).max(now);
                self.timeout(now, rhythm)
            }
            Due::PongCheck => Beat::Dead,
            Due::PingCheck => {
                let dead = self.dead_at(rhythm);
                if now >= dead {
                    return Beat::Dead;
                }
                self.at = dead;
                Beat::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(25);
    const TIMEOUT: Duration = Duration::from_secs(20);
    const RHYTHM: Rhythm = Rhythm {
        interval: INTERVAL,
        timeout: TIMEOUT,
    };

    #[test]
    fn a_client_that_answers_is_pinged_every_interval() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(RHYTHM, t0);
        assert_eq!(beat.deadline(), t0 + INTERVAL);
        assert_eq!(
            beat.timeout(t0 + INTERVAL - Duration::from_millis(1), RHYTHM),
            Beat::Wait
        );
        assert_eq!(beat.timeout(t0 + INTERVAL, RHYTHM), Beat::Ping);
        assert_eq!(beat.deadline(), t0 + INTERVAL + TIMEOUT);
        let pong = t0 + INTERVAL + Duration::from_millis(40);
        beat.pong(pong);
        // The check finds the pong and waits for the next ping time.
        assert_eq!(beat.timeout(t0 + INTERVAL + TIMEOUT, RHYTHM), Beat::Wait);
        assert_eq!(beat.deadline(), pong + INTERVAL);
        assert_eq!(beat.timeout(pong + INTERVAL, RHYTHM), Beat::Ping);
    }

    #[test]
    fn a_silent_client_is_dead_an_interval_and_a_timeout_after_its_last_pong() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(RHYTHM, t0);
        assert_eq!(beat.dead_at(RHYTHM), t0 + INTERVAL + TIMEOUT);
        assert_eq!(beat.timeout(t0 + INTERVAL, RHYTHM), Beat::Ping);
        assert_eq!(beat.timeout(t0 + INTERVAL + TIMEOUT, RHYTHM), Beat::Dead);
        // A pong from before the ping does not count.
        let mut beat = Heartbeat::new(RHYTHM, t0);
        beat.pong(t0 + Duration::from_secs(1));
        assert_eq!(beat.timeout(t0 + INTERVAL, RHYTHM), Beat::Ping);
        assert_eq!(beat.timeout(t0 + INTERVAL + TIMEOUT, RHYTHM), Beat::Dead);
    }

    #[test]
    fn an_engineio_3_client_pings_and_is_dead_when_it_stops() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::client_pings(RHYTHM, t0);
        // The server never pings; it checks an interval and a timeout on.
        assert_eq!(beat.deadline(), t0 + INTERVAL + TIMEOUT);
        let ping = t0 + INTERVAL;
        beat.pong(ping);
        assert_eq!(beat.timeout(t0 + INTERVAL + TIMEOUT, RHYTHM), Beat::Wait);
        assert_eq!(beat.deadline(), ping + INTERVAL + TIMEOUT);
        assert_eq!(
            beat.timeout(ping + INTERVAL + TIMEOUT - Duration::from_millis(1), RHYTHM),
            Beat::Wait
        );
        assert_eq!(beat.timeout(ping + INTERVAL + TIMEOUT, RHYTHM), Beat::Dead);
    }

    #[test]
    fn a_late_timer_pings_at_once_when_the_pong_came_long_ago() {
        let t0 = Instant::now();
        let mut beat = Heartbeat::new(RHYTHM, t0);
        assert_eq!(beat.timeout(t0 + INTERVAL, RHYTHM), Beat::Ping);
        beat.pong(t0 + INTERVAL + Duration::from_secs(1));
        // The check runs an hour late: the next ping is due already.
        let late = t0 + Duration::from_secs(3600);
        assert_eq!(beat.timeout(late, RHYTHM), Beat::Ping);
        assert_eq!(beat.deadline(), late + TIMEOUT);
    }
}
