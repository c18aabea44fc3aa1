//! Calls to the directory's names: a group rings its members at once or
//! in turn, the first answer wins, and a call nobody answers is forwarded.
//! The plan of each such call is its [`Fork`].

use std::hash::Hash;
use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::{Effect, Hub};
use crate::logging::untrusted;
use crate::signaling::calls::CallId;
use crate::signaling::directory::Ring;
use crate::signaling::fork::{Due, Fork};
use crate::signaling::protocol::{ServerEvent, SignalError, reason};

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Rings `fork.target` for `caller`: a new call (`id` `None`), or the
    /// call `id` going on to someone else (its old callees freed). When
    /// nobody there can ring, the call is refused (busy, or offline), but
    /// for two cases where the directory's forwarding applies at once: a
    /// user in do-not-disturb, and a target the call was forwarded to.
    pub(super) fn dial(
        &mut self,
        caller: &Rc<str>,
        mut fork: Fork,
        id: Option<CallId>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let directory = self.directory.clone();
        loop {
            let name = fork.target.clone();
            let group = directory.group(&name);
            let (mut ringable, refusal) = self.ringable(caller, &name, group.is_some());
            if ringable.is_empty() {
                let forwards = refusal == SignalError::DoNotDisturb || fork.hops > 0;
                if forwards
                    && let Some(forward) = directory.no_answer(&name)
                    && fork.may_forward()
                {
                    log::info!(
                        "call {} -> {}: nobody can answer; forwarded to {}",
                        untrusted(caller),
                        untrusted(&name),
                        untrusted(&forward.to)
                    );
                    let event = ServerEvent::CallForwarded {
                        from: name,
                        to: forward.to.clone(),
                    };
                    self.tell(caller, event, effects);
                    fork.retarget(forward.to.clone());
                    continue;
                }
                if let Some(id) = id
                    && let Some(call) = self.finish(id)
                {
                    self.over(&call, effects);
                }
                self.refuse_call(caller, name, &refusal, effects);
                return Err(refusal);
            }
            let deadline = now + self.call_timeout;
            let id = match id {
                Some(id) => {
                    self.calls
                        .redirect(id, name.clone(), group.is_some(), deadline);
                    id
                }
                None if group.is_some() => {
                    self.calls
                        .ring_group(caller.clone(), name.clone(), deadline)
                }
                None => self.calls.ring(caller.clone(), name.clone(), deadline),
            };
            if let Some(group) = group
                && group.ring == Ring::InOrder
            {
                // The first free member rings; the others get their turn
                // when it comes (and are skipped if not free by then).
                let members = directory.members_of(&name);
                let first = ringable.swap_remove(0);
                let after = members
                    .iter()
                    .position(|m| *m == first)
                    .map_or(0, |at| at + 1);
                fork.in_order(members[after..].iter().cloned(), group.step, now);
                ringable = vec![first];
            }
            if let Some(forward) = directory.no_answer(&name) {
                let after = forward.after.unwrap_or(self.call_timeout);
                fork.forward_at(forward.to.clone(), now + after);
            }
            log::info!(
                "call {} -> {}: ringing{}",
                untrusted(caller),
                untrusted(&name),
                if group.is_some() { " its members" } else { "" }
            );
            let group = group.map(|_| name.clone());
            for member in ringable {
                self.ring_member(id, caller, &member, group.as_ref(), &fork, effects);
            }
            self.put_fork(id, fork);
            return Ok(());
        }
    }

    /// Who at `name` can ring for `caller` now (registered, free, not in
    /// do-not-disturb), in the directory's order; and should nobody, why.
    fn ringable(
        &self,
        caller: &Rc<str>,
        name: &Rc<str>,
        group: bool,
    ) -> (Vec<Rc<str>>, SignalError) {
        if !group {
            let refusal = if !self.users.contains_key(name) || name == caller {
                SignalError::UserOffline
            } else if self.calls.of(name).is_some() {
                SignalError::UserBusy
            } else if self.dnd.contains(name) {
                SignalError::DoNotDisturb
            } else {
                return (vec![name.clone()], SignalError::UserOffline);
            };
            return (Vec::new(), refusal);
        }
        let mut busy = false;
        let ringable = self
            .directory
            .members_of(name)
            .into_iter()
            .filter(|member| {
                if member == caller || !self.users.contains_key(member) {
                    return false;
                }
                let free = self.calls.of(member).is_none();
                busy |= !free;
                free && !self.dnd.contains(member)
            })
            .collect();
        let refusal = if busy {
            SignalError::UserBusy
        } else {
            SignalError::UserOffline
        };
        (ringable, refusal)
    }

    /// `member` rings for call `id`: the offer, then the caller's
    /// candidates so far.
    fn ring_member(
        &mut self,
        id: CallId,
        caller: &Rc<str>,
        member: &Rc<str>,
        group: Option<&Rc<str>>,
        fork: &Fork,
        effects: &mut Vec<Effect<S>>,
    ) {
        if group.is_some() {
            self.calls.add_leg(id, member.clone());
        }
        self.ring_devices(member);
        let event = ServerEvent::IncomingCall {
            from: caller.clone(),
            offer: fork.offer.clone(),
            group: group.cloned(),
        };
        self.tell(member, event, effects);
        for candidate in fork.candidates() {
            let event = ServerEvent::IceCandidate {
                from: caller.clone(),
                candidate: candidate.clone(),
            };
            self.tell(member, event, effects);
        }
    }

    /// `me`, on `socket`, answered call `id`: the others who rang stop
    /// (`answered_elsewhere`), the caller hears who answered.
    pub(super) fn answered(
        &mut self,
        id: CallId,
        me: &Rc<str>,
        socket: &S,
        answer: Box<RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let Some(caller) = self.calls.get(id).map(|call| call.caller.clone()) else {
            return;
        };
        self.take_fork(id);
        let others = self.calls.answer_by(id, me, now);
        self.totals.answered += 1;
        log::info!("call {} -> {}: answered", untrusted(&caller), untrusted(me));
        for other in others {
            self.routes_end(&other, &caller, reason::ANSWERED_ELSEWHERE, effects);
        }
        self.bind(me, socket, &caller, effects);
        let event = ServerEvent::CallAnswered {
            from: me.clone(),
            answer,
        };
        self.tell(&caller, event, effects);
    }

    /// Tells `user`, who rang for `caller`'s call and no longer does, why.
    fn routes_end(
        &mut self,
        user: &Rc<str>,
        caller: &Rc<str>,
        why: &'static str,
        effects: &mut Vec<Effect<S>>,
    ) {
        let event = ServerEvent::CallEnded {
            from: caller.clone(),
            reason: Some(why),
        };
        self.tell(user, event, effects);
        self.routes.remove(user);
    }

    /// Member `user` stopped ringing for call `id` (declined with `why`
    /// `None`, or left). The next in turn rings; when nobody rings any
    /// more, the caller hears that the group declined, or why it ended.
    pub(super) fn leg_gone(
        &mut self,
        id: CallId,
        user: &Rc<str>,
        why: Option<&'static str>,
        effects: &mut Vec<Effect<S>>,
    ) {
        if !self.calls.drop_leg(id, user) {
            return;
        }
        self.routes.remove(user);
        if self.calls.get(id).is_some_and(|call| !call.legs.is_empty()) {
            return;
        }
        if let Some(mut fork) = self.take_fork(id) {
            let rang = self.ring_next(id, &mut fork, effects);
            self.put_fork(id, fork);
            if rang {
                return;
            }
        }
        let Some(call) = self.finish(id) else {
            return;
        };
        self.over(&call, effects);
        let event = match why {
            None => {
                self.totals.declined += 1;
                log::info!(
                    "call {} -> {}: declined by every member",
                    untrusted(&call.caller),
                    untrusted(&call.callee)
                );
                ServerEvent::CallDeclined { from: call.callee }
            }
            Some(why) => ServerEvent::CallEnded {
                from: call.callee,
                reason: Some(why),
            },
        };
        self.tell(&call.caller, event, effects);
    }

    /// Rings the next member in turn who can ring now, skipping the
    /// others; whether there was one.
    fn ring_next(&mut self, id: CallId, fork: &mut Fork, effects: &mut Vec<Effect<S>>) -> bool {
        let Some(call) = self.calls.get(id) else {
            return false;
        };
        let (caller, group) = (call.caller.clone(), call.group.clone());
        while let Some(member) = fork.next_member() {
            let free = self.users.contains_key(&member)
                && member != caller
                && self.calls.of(&member).is_none()
                && !self.dnd.contains(&member);
            if free {
                log::info!(
                    "call {} -> {}: now ringing {}",
                    untrusted(&caller),
                    untrusted(&fork.target),
                    untrusted(&member)
                );
                self.ring_member(id, &caller, &member, group.as_ref(), fork, effects);
                fork.stepped(self.now);
                return true;
            }
        }
        false
    }

    /// Something in call `id`'s plan is due: the next member's turn, or
    /// forwarding.
    pub(super) fn fork_due(&mut self, id: CallId, now: Instant, effects: &mut Vec<Effect<S>>) {
        let Some(mut fork) = self.take_fork(id) else {
            return;
        };
        let Some(call) = self.calls.get(id).filter(|call| call.is_ringing()) else {
            return;
        };
        let (caller, ringing) = (call.caller.clone(), call.others(&call.caller));
        match fork.due(now) {
            None => {}
            Some(Due::Step) => {
                // The member ringing gives way to the next, if one can ring.
                let before = ringing.clone();
                if self.ring_next(id, &mut fork, effects) {
                    for member in before {
                        self.calls.drop_leg(id, &member);
                        let event = ServerEvent::CallTimeout {
                            user: caller.clone(),
                        };
                        self.tell(&member, event, effects);
                        self.routes.remove(&member);
                    }
                }
            }
            Some(Due::Forward(to)) => {
                log::info!(
                    "call {} -> {}: no answer; forwarded to {}",
                    untrusted(&caller),
                    untrusted(&fork.target),
                    untrusted(&to)
                );
                self.calls.release(id);
                for member in &ringing {
                    self.routes_end(member, &caller, reason::FORWARDED, effects);
                }
                let event = ServerEvent::CallForwarded {
                    from: fork.target.clone(),
                    to: to.clone(),
                };
                self.tell(&caller, event, effects);
                fork.retarget(to);
                // Refused here, the caller hears why through its events.
                let _ = self.dial(&caller, fork, Some(id), now, effects);
                return;
            }
        }
        self.put_fork(id, fork);
    }

    /// Takes call `id`'s plan out (with its deadline), to change it.
    pub(super) fn take_fork(&mut self, id: CallId) -> Option<Fork> {
        let fork = self.forks.remove(&id)?;
        if let Some(at) = fork.next_deadline() {
            self.fork_deadlines.remove(&(at, id));
        }
        Some(fork)
    }

    /// Puts call `id`'s plan back, while the call rings and the plan has
    /// something left to do (a turn or a forward).
    pub(super) fn put_fork(&mut self, id: CallId, fork: Fork) {
        let ringing = self.calls.get(id).is_some_and(|call| call.is_ringing());
        if !ringing {
            return;
        }
        // Nothing left to do: the offer and candidates are for nobody.
        let Some(at) = fork.next_deadline() else {
            return;
        };
        self.fork_deadlines.insert((at, id));
        self.forks.insert(id, fork);
    }
}
