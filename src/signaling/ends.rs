//! When answered calls must end: at their maximum length (with a warning
//! before it), or a while after a door was opened from them. Deadlines in
//! an ordered set, found due by [`Ends::expire`] at a time passed in; no
//! I/O, like the ring timeouts in [`super::calls`].

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::calls::CallId;

/// How long before its maximum length a call hears `call_ending`: long
/// enough to say goodbye, short enough not to interrupt the talk for long.
pub const WARNING: Duration = Duration::from_secs(10);

/// What comes due for an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// `call_ending {seconds}`: the maximum length is near.
    Warning {
        /// Seconds left when it is due.
        seconds: u64,
    },
    /// The call reached its maximum length (`max_duration`).
    MaxDuration,
    /// A door was opened from the call, which now ends (`door_opened`).
    DoorOpened,
}

impl End {
    /// Whether the call ends with it (rather than hearing a warning).
    pub fn ends(self) -> bool {
        !matches!(self, End::Warning { .. })
    }
}

/// The deadlines of answered calls.
#[derive(Debug, Default)]
pub struct Ends {
    due: BTreeSet<(Instant, CallId, End)>,
    /// Each call's entries in `due`, so that an ended call's go at once.
    by_call: HashMap<CallId, Vec<(Instant, End)>>,
}

impl Ends {
    /// Call `id`, answered at `since`, may last `max`: a warning
    /// [`WARNING`] before (at once, for a shorter `max`), then its end.
    pub fn limit(&mut self, id: CallId, since: Instant, max: Duration) {
        let warning = WARNING.min(max);
        let end = since + max;
        let seconds = warning.as_secs_f64().round() as u64;
        self.add(id, end - warning, End::Warning { seconds });
        self.add(id, end, End::MaxDuration);
    }

    /// Call `id` ends at `at`, as a door was opened from it; should
    /// another door opening have set an earlier end, that one stays.
    pub fn hang_up(&mut self, id: CallId, at: Instant) {
        let earlier = self.by_call.get(&id).is_some_and(|entries| {
            entries
                .iter()
                .any(|&(when, end)| end == End::DoorOpened && when <= at)
        });
        if !earlier {
            self.add(id, at, End::DoorOpened);
        }
    }

    fn add(&mut self, id: CallId, at: Instant, end: End) {
        self.due.insert((at, id, end));
        self.by_call.entry(id).or_default().push((at, end));
    }

    /// Call `id` ended: nothing of it is due any more.
    pub fn forget(&mut self, id: CallId) {
        for (at, end) in self.by_call.remove(&id).unwrap_or_default() {
            self.due.remove(&(at, id, end));
        }
    }

    /// What is due at or before `now`, in order; a call's entries after
    /// the one that ends it are dropped.
    pub fn expire(&mut self, now: Instant) -> Vec<(CallId, End)> {
        let mut out = Vec::new();
        while let Some(&(at, id, end)) = self.due.first()
            && at <= now
        {
            self.due.remove(&(at, id, end));
            if end.ends() {
                self.forget(id);
            } else if let Some(entries) = self.by_call.get_mut(&id) {
                entries.retain(|entry| *entry != (at, end));
            }
            out.push((id, end));
        }
        out
    }

    /// When [`Ends::expire`] next has something to say.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|&(at, ..)| at)
    }

    /// How many deadlines are kept (for tests).
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// Whether no deadline is kept.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Forgets everything (every call ended at once).
    pub fn clear(&mut self) {
        self.due.clear();
        self.by_call.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_call_is_warned_then_ended() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut ends = Ends::default();
        ends.limit(1, t0, Duration::from_secs(60));
        assert_eq!(ends.next_deadline(), Some(secs(50)));
        assert_eq!(ends.expire(secs(49)), []);
        assert_eq!(ends.expire(secs(50)), [(1, End::Warning { seconds: 10 })]);
        assert_eq!(ends.next_deadline(), Some(secs(60)));
        assert_eq!(ends.expire(secs(61)), [(1, End::MaxDuration)]);
        assert!(ends.is_empty() && ends.by_call.is_empty());
    }

    #[test]
    fn a_limit_shorter_than_the_warning_warns_at_once() {
        let t0 = Instant::now();
        let mut ends = Ends::default();
        ends.limit(1, t0, Duration::from_secs(4));
        assert_eq!(ends.expire(t0), [(1, End::Warning { seconds: 4 })]);
        assert_eq!(
            ends.expire(t0 + Duration::from_secs(4)),
            [(1, End::MaxDuration)]
        );
    }

    #[test]
    fn a_door_opened_ends_the_call_first_and_the_rest_goes() {
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        let mut ends = Ends::default();
        ends.limit(1, t0, Duration::from_secs(60));
        ends.limit(2, t0, Duration::from_secs(60));
        ends.hang_up(1, secs(5));
        // A second opening does not put the end off.
        ends.hang_up(1, secs(8));
        assert_eq!(ends.expire(secs(9)), [(1, End::DoorOpened)]);
        assert_eq!(ends.len(), 2, "call 2's warning and end stay");
        ends.forget(2);
        assert!(ends.is_empty() && ends.by_call.is_empty());
        assert_eq!(ends.next_deadline(), None);
    }
}
