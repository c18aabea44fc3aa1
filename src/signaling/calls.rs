//! Calls: who rings whom, who talks to whom, and when a ringing call times
//! out. A call is a caller and what they called: one user, or a group whose
//! ringing members are the call's *legs* until one of them answers and
//! becomes the callee. No I/O and no clock: time is passed in, and expiry
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
    /// Who was called: the user ringing or answering; while a group rings,
    /// the group's name.
    pub callee: Rc<str>,
    /// The group called, kept after the answer: the caller may still
    /// address the call by it.
    pub group: Option<Rc<str>>,
    /// The group's members ringing now (empty for a call to one user).
    pub legs: Vec<Rc<str>>,
    /// Ringing or active.
    pub state: CallState,
    /// Several nodes: a copy of a group's call whose caller is on another
    /// node, which decides it; here ring only the members on this node.
    pub mirror: bool,
}

impl Call {
    /// The other party, if `user` is in this call: for a ringing member,
    /// the caller; for the caller, the callee (or the group's name).
    pub fn peer_of(&self, user: &str) -> Option<&Rc<str>> {
        if *self.caller == *user {
            Some(&self.callee)
        } else if *self.callee == *user || self.legs.iter().any(|leg| **leg == *user) {
            Some(&self.caller)
        } else {
            None
        }
    }

    /// Whether `user` may address this call's other party as `name`: the
    /// caller by the callee, the group or a ringing member; anyone else by
    /// the caller.
    pub fn is_between(&self, user: &str, name: &str) -> bool {
        if *self.caller == *user {
            *self.callee == *name
                || self.group.as_deref() == Some(name)
                || self.legs.iter().any(|leg| **leg == *name)
        } else {
            self.peer_of(user).is_some_and(|peer| **peer == *name)
        }
    }

    /// The name the caller called: the group, or the user. A claim in
    /// Redis holds `caller>called` for every party of the call.
    pub fn called(&self) -> &Rc<str> {
        self.group.as_ref().unwrap_or(&self.callee)
    }

    /// Whether `user` is one of the members ringing for a group.
    pub fn is_leg(&self, user: &str) -> bool {
        self.legs.iter().any(|leg| **leg == *user)
    }

    /// Who hears what `user` does in this call: the caller for anyone
    /// else; for the caller, the members ringing, or the callee.
    pub fn others(&self, user: &str) -> Vec<Rc<str>> {
        if *self.caller != *user {
            vec![self.caller.clone()]
        } else if self.legs.is_empty() {
            vec![self.callee.clone()]
        } else {
            self.legs.clone()
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
        debug_assert!(self.of(&callee).is_none());
        let id = self.start(caller, callee.clone(), None, deadline);
        self.by_user.insert(callee, id);
        id
    }

    /// Starts a ringing call to `group`, with no member ringing yet (see
    /// [`Calls::add_leg`]). The caller must be free.
    pub fn ring_group(&mut self, caller: Rc<str>, group: Rc<str>, deadline: Instant) -> CallId {
        self.start(caller, group.clone(), Some(group), deadline)
    }

    fn start(
        &mut self,
        caller: Rc<str>,
        callee: Rc<str>,
        group: Option<Rc<str>>,
        deadline: Instant,
    ) -> CallId {
        debug_assert!(self.of(&caller).is_none());
        let id = self.next_id;
        self.next_id += 1;
        self.by_user.insert(caller.clone(), id);
        self.deadlines.insert((deadline, id));
        let state = CallState::Ringing { deadline };
        let legs = Vec::new();
        let call = Call {
            caller,
            callee,
            group,
            legs,
            state,
            mirror: false,
        };
        self.calls.insert(id, call);
        id
    }

    /// Starts the copy of `caller`'s ringing call to `group` whose caller
    /// is on another node (see [`Call::mirror`]); members are added with
    /// [`Calls::add_leg`].
    pub fn mirror(&mut self, caller: Rc<str>, group: Rc<str>, deadline: Instant) -> CallId {
        let id = self.ring_group(caller, group, deadline);
        if let Some(call) = self.calls.get_mut(&id) {
            call.mirror = true;
        }
        id
    }

    /// A member of the group starts ringing. They must be free.
    pub fn add_leg(&mut self, id: CallId, member: Rc<str>) {
        if let Some(call) = self.calls.get_mut(&id)
            && !self.by_user.contains_key(&member)
        {
            self.by_user.insert(member.clone(), id);
            call.legs.push(member);
        }
    }

    /// A member stops ringing (declined, left); whether they were.
    pub fn drop_leg(&mut self, id: CallId, member: &str) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let Some(at) = call.legs.iter().position(|leg| **leg == *member) else {
            return false;
        };
        call.legs.remove(at);
        self.by_user.remove(member);
        true
    }

    /// A ringing member answered: they are the callee now, and the other
    /// members, returned, are free.
    pub fn answer_by(&mut self, id: CallId, member: &str, now: Instant) -> Vec<Rc<str>> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        let mut others = std::mem::take(&mut call.legs);
        if let Some(at) = others.iter().position(|leg| **leg == *member) {
            call.callee = others.remove(at);
        }
        for other in &others {
            self.by_user.remove(other);
        }
        self.answer(id, now);
        others
    }

    /// Frees whoever the call rings (its members, or its one callee),
    /// returned, so that it can go on to someone else with
    /// [`Calls::redirect`].
    pub fn release(&mut self, id: CallId) -> Vec<Rc<str>> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Vec::new();
        };
        let mut freed = std::mem::take(&mut call.legs);
        if call.group.is_none() && self.by_user.get(&call.callee) == Some(&id) {
            freed.push(call.callee.clone());
        }
        for user in &freed {
            self.by_user.remove(user);
        }
        freed
    }

    /// A released ringing call goes on to `callee`, a user (who must be
    /// free) or with `group` a group (members added with
    /// [`Calls::add_leg`]), and rings until `deadline`.
    pub fn redirect(&mut self, id: CallId, callee: Rc<str>, group: bool, deadline: Instant) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let CallState::Ringing { deadline: old } = call.state {
            self.deadlines.remove(&(old, id));
        }
        call.state = CallState::Ringing { deadline };
        self.deadlines.insert((deadline, id));
        call.callee = callee.clone();
        if group {
            call.group = Some(callee);
        } else {
            call.group = None;
            self.by_user.insert(callee, id);
        }
    }

    /// Call `id`, moved here from another node, was made to `group`.
    pub fn made_to(&mut self, id: CallId, group: Rc<str>) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.group = Some(group);
        }
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
        // Only this call's entries: a group's name is nobody's.
        for user in [&call.caller, &call.callee].into_iter().chain(&call.legs) {
            if self.by_user.get(user) == Some(&id) {
                self.by_user.remove(user);
            }
        }
        if let CallState::Ringing { deadline } = call.state {
            self.deadlines.remove(&(deadline, id));
        }
        Some(call)
    }

    /// Ends and returns every ringing call whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(CallId, Call)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(call) = self.end(id) {
                expired.push((id, call));
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

    /// Every call ringing or active, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (CallId, &Call)> {
        self.calls.iter().map(|(id, call)| (*id, call))
    }

    /// The call `id`, if it is ringing or active.
    pub fn get(&self, id: CallId) -> Option<&Call> {
        self.calls.get(&id)
    }

    /// Ends every call, for a shutdown.
    pub fn end_all(&mut self) -> Vec<(CallId, Call)> {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.end(id).map(|call| (id, call)))
            .collect()
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
        assert_eq!(&*expired[0].1.caller, "c");
        assert_eq!(calls.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(calls.expire(t0 + Duration::from_secs(60)).len(), 1);
        assert!(calls.is_empty());
    }
}
