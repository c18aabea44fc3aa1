//! Calls between two users: who rings whom, who talks to whom, and when a
//! ringing call times out. No I/O and no clock: time is passed in, and expiry
//! is a deadline the I/O side wakes the hub for.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Instant;

/// Identifies one call for its lifetime.
pub type CallId = u64;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// The callee's phone rings until `deadline`.
    Ringing {
        /// When the call times out unanswered.
        deadline: Instant,
    },
    /// Answered; the parties talk.
    Active {
        /// When it was answered.
        since: Instant,
    },
}

/// A call between a caller and a callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Who called.
    pub caller: Rc<str>,
    /// Who was called.
    pub callee: Rc<str>,
    /// Ringing or active.
    pub state: CallState,
}

impl Call {
    /// The other party, if `user` is in this call.
    pub fn peer_of(&self, user: &str) -> Option<&Rc<str>> {
        if *self.caller == *user {
            Some(&self.callee)
        } else if *self.callee == *user {
            Some(&self.caller)
        } else {
            None
        }
    }

    /// Whether the call is ringing.
    pub fn is_ringing(&self) -> bool {
        matches!(self.state, CallState::Ringing { .. })
    }
}

/// Every call in progress; a user is in at most one.
#[derive(Debug, Default)]
pub struct Calls {
    calls: HashMap<CallId, Call>,
    by_user: HashMap<Rc<str>, CallId>,
    deadlines: BTreeSet<(Instant, CallId)>,
    next_id: CallId,
}

impl Calls {
    /// The call `user` is in.
    pub fn of(&self, user: &str) -> Option<(CallId, &Call)> {
        let id = *self.by_user.get(user)?;
        self.calls.get(&id).map(|call| (id, call))
    }

    /// Starts a ringing call. Both users must be free.
    pub fn ring(&mut self, caller: Rc<str>, callee: Rc<str>, deadline: Instant) -> CallId {
        debug_assert!(self.of(&caller).is_none() && self.of(&callee).is_none());
        let id = self.next_id;
        self.next_id += 1;
        self.by_user.insert(caller.clone(), id);
        self.by_user.insert(callee.clone(), id);
        self.deadlines.insert((deadline, id));
        self.calls.insert(
            id,
            Call {
                caller,
                callee,
                state: CallState::Ringing { deadline },
            },
        );
        id
    }

    /// Marks a ringing call answered.
    pub fn answer(&mut self, id: CallId, now: Instant) {
        if let Some(call) = self.calls.get_mut(&id)
            && let CallState::Ringing { deadline } = call.state
        {
            self.deadlines.remove(&(deadline, id));
            call.state = CallState::Active { since: now };
        }
    }

    /// Ends a call, freeing both users.
    pub fn end(&mut self, id: CallId) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.by_user.remove(&call.caller);
        self.by_user.remove(&call.callee);
        if let CallState::Ringing { deadline } = call.state {
            self.deadlines.remove(&(deadline, id));
        }
        Some(call)
    }

    /// Ends and returns every ringing call whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Call> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(call) = self.end(id) {
                expired.push(call);
            }
        }
        expired
    }

    /// The earliest deadline of a ringing call.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// How many calls are ringing or active.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether there are no calls.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many calls are ringing.
    pub fn ringing(&self) -> usize {
        self.deadlines.len()
    }

    /// Ends every call, for a shutdown.
    pub fn end_all(&mut self) -> Vec<Call> {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.end(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ring_answer_end() {
        let t0 = Instant::now();
        let mut calls = Calls::default();
        let id = calls.ring("a".into(), "b".into(), t0 + Duration::from_secs(30));
        assert_eq!(calls.of("a").unwrap().0, id);
        assert_eq!(
            calls.of("b").unwrap().1.peer_of("b").map(|p| &**p),
            Some("a")
        );
        assert_eq!(calls.next_deadline(), Some(t0 + Duration::from_secs(30)));
        calls.answer(id, t0);
        assert_eq!(calls.next_deadline(), None);
        assert_eq!(calls.ringing(), 0);
        assert_eq!(calls.len(), 1);
        assert!(calls.end(id).is_some());
        assert!(calls.end(id).is_none());
        assert!(calls.of("a").is_none() && calls.of("b").is_none() && calls.is_empty());
    }

    #[test]
    fn expiry_is_inclusive_and_ordered() {
        let t0 = Instant::now();
        let mut calls = Calls::default();
        calls.ring("a".into(), "b".into(), t0 + Duration::from_secs(2));
        calls.ring("c".into(), "d".into(), t0 + Duration::from_secs(1));
        assert!(calls.expire(t0 + Duration::from_millis(999)).is_empty());
        let expired = calls.expire(t0 + Duration::from_secs(1));
        assert_eq!(expired.len(), 1);
        assert_eq!(&*expired[0].caller, "c");
        assert_eq!(calls.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(calls.expire(t0 + Duration::from_secs(60)).len(), 1);
        assert!(calls.is_empty());
    }
}
