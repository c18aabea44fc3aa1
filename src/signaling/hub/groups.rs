//! Calls to the directory's names: a group rings its members at once or
//! in turn, the first answer wins, and a call nobody answers is forwarded.
//! The plan of each such call is its [`Fork`].

use std::hash::Hash;
use std::rc::Rc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::{Claim, Effect, Hub, MemberClaim, Outcome};
use crate::logging::untrusted;
use crate::signaling::calls::CallId;
use crate::signaling::directory::Ring;
use crate::signaling::fork::{Due, Fork};
use crate::signaling::protocol::{ServerEvent, SignalError, reason};

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Rings `fork.target` for `caller`: a new call (`id` `None`), or the
    /// call `id` going on to someone else (its old callees freed). On
    /// several nodes, Redis is asked first who can ring
    /// ([`Hub::members_claimed`] goes on).
    pub(super) fn dial(
        &mut self,
        caller: &Rc<str>,
        mut fork: Fork,
        id: Option<CallId>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        loop {
            if self.several_nodes {
                self.claim_round(caller, fork, id, Round::Dial, None, effects);
                return Ok(());
            }
            let group = self.directory.group(&fork.target).is_some();
            let (ringable, refusal) = self.ringable(caller, &fork.target, group);
            match self.place(caller, fork, id, ringable, refusal, now, effects) {
                Placed::Forwarded(next) => fork = next,
                Placed::Done(result) => return result,
            }
        }
    }

    /// Rings those of `fork.target` who can (`ringable`, in the
    /// directory's order) for `caller`. When nobody can, the call is
    /// refused (busy, or offline), but for two cases where the
    /// directory's forwarding applies at once: a user in do-not-disturb,
    /// and a target the call was forwarded to.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        caller: &Rc<str>,
        mut fork: Fork,
        id: Option<CallId>,
        mut ringable: Vec<Rc<str>>,
        refusal: SignalError,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Placed {
        let directory = self.directory.clone();
        let name = fork.target.clone();
        let group = directory.group(&name);
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
                return Placed::Forwarded(fork);
            }
            if let Some(id) = id
                && let Some(call) = self.finish(id)
            {
                self.over(&call, effects);
            }
            self.refuse_call(caller, name, &refusal, effects);
            return Placed::Done(Err(refusal));
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
        Placed::Done(Ok(()))
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
            let here = self.users.contains_key(name) || self.pushable(name);
            let refusal = if !here || name == caller {
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
                if member == caller || !(self.users.contains_key(member) || self.pushable(member)) {
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
        self.fact_rang(id, member);
        self.ring_devices(member);
        if !self.users.contains_key(member) && self.pushable(member) {
            self.wake(id, caller, member, group, effects);
        }
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

    /// `me` answered call `id` (here on `socket`, or on another node):
    /// the others who rang stop (`answered_elsewhere`), the caller hears
    /// who answered. In a mirror, the caller's node decides whether `me`
    /// was first.
    pub(super) fn answered(
        &mut self,
        id: CallId,
        me: &Rc<str>,
        socket: Option<&S>,
        answer: Box<RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (caller, called, mirror) = (call.caller.clone(), call.called().clone(), call.mirror);
        self.take_fork(id);
        let others = self.calls.answer_by(id, me, now);
        self.started(id, now);
        if socket.is_some() {
            self.totals.answered += 1;
        }
        log::info!("call {} -> {}: answered", untrusted(&caller), untrusted(me));
        for other in others {
            if self.several_nodes && !mirror {
                self.release_member(&caller, &called, &other, effects);
            }
            self.routes_end(&other, &caller, reason::ANSWERED_ELSEWHERE, effects);
        }
        if let Some(socket) = socket {
            self.bind(me, socket, &caller, effects);
        }
        let event = ServerEvent::CallAnswered {
            from: me.clone(),
            answer,
        };
        self.tell(&caller, event, effects);
    }

    /// Several nodes: `member`'s claim on `caller`'s call to `called` goes
    /// back, as the call goes on without them.
    pub(super) fn release_member(
        &self,
        caller: &Rc<str>,
        called: &Rc<str>,
        member: &Rc<str>,
        effects: &mut Vec<Effect<S>>,
    ) {
        effects.push(Effect::CallOver {
            caller: caller.clone(),
            callee: called.clone(),
            member: Some(member.clone()),
        });
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

    /// Member `user` stopped ringing for call `id` (see [`LegEnd`]). The
    /// next in turn rings; when nobody rings any more, the caller hears
    /// that the group declined, or why it ended. In a mirror, the
    /// caller's node hears of that member, and decides.
    pub(super) fn leg_gone(
        &mut self,
        id: CallId,
        user: &Rc<str>,
        end: LegEnd,
        effects: &mut Vec<Effect<S>>,
    ) {
        if !self.calls.drop_leg(id, user) {
            return;
        }
        self.routes.remove(user);
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (caller, called, mirror) = (call.caller.clone(), call.called().clone(), call.mirror);
        let empty = call.legs.is_empty();
        if self.several_nodes {
            self.release_member(&caller, &called, user, effects);
        }
        if mirror {
            let event = match &end {
                LegEnd::Declined => ServerEvent::CallDeclined { from: user.clone() },
                LegEnd::Left(why) => ServerEvent::CallEnded {
                    from: user.clone(),
                    reason: Some(why),
                },
                LegEnd::Refused(error) => refusal_event(user.clone(), error),
            };
            self.tell(&caller, event, effects);
            if empty {
                self.finish(id);
            }
            return;
        }
        if !empty {
            return;
        }
        if let Some(mut fork) = self.take_fork(id) {
            if self.several_nodes && fork.waiting().next().is_some() {
                self.claim_round(&caller, fork, Some(id), Round::Next(end), None, effects);
                return;
            }
            let rang = self.ring_next(id, &mut fork, effects);
            self.put_fork(id, fork);
            if rang {
                return;
            }
        }
        self.nobody_rings(id, end, effects);
    }

    /// Call `id`'s last member stopped ringing, for `end`, and nobody is
    /// left to ring: it ends, and the caller hears why.
    fn nobody_rings(&mut self, id: CallId, end: LegEnd, effects: &mut Vec<Effect<S>>) {
        let ending = match &end {
            LegEnd::Declined => super::records::Ending::Declined {
                by: self
                    .calls
                    .get(id)
                    .map_or_else(|| "".into(), |c| c.called().clone()),
            },
            LegEnd::Left(why) => super::records::Ending::Ended {
                by: None,
                reason: Some((*why).into()),
            },
            LegEnd::Refused(_) => super::records::Ending::Ended {
                by: None,
                reason: None,
            },
        };
        self.ending(ending);
        let Some(call) = self.finish(id) else {
            return;
        };
        self.over(&call, effects);
        let called = call.called().clone();
        let event = match end {
            LegEnd::Declined => {
                self.totals.declined += 1;
                log::info!(
                    "call {} -> {}: declined by every member",
                    untrusted(&call.caller),
                    untrusted(&called)
                );
                ServerEvent::CallDeclined { from: called }
            }
            LegEnd::Left(why) => ServerEvent::CallEnded {
                from: called,
                reason: Some(why),
            },
            LegEnd::Refused(error) => {
                self.refuse_call(&call.caller, called, &error, effects);
                return;
            }
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
            Some(Due::Step) if self.several_nodes => {
                // Redis says who of those waiting can ring.
                self.claim_round(&caller, fork, Some(id), Round::Step, None, effects);
                return;
            }
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
                    if self.several_nodes {
                        self.release_member(&caller, &fork.target, member, effects);
                    }
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

/// What [`Hub::place`] did.
enum Placed {
    /// Nobody could ring, and the call goes on to the fork's new target.
    Forwarded(Fork),
    /// It rang, or the caller was told why not.
    Done(Result<(), SignalError>),
}

/// Why a member stopped ringing for a group's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LegEnd {
    /// They declined (or hung up while it rang).
    Declined,
    /// They left, for this reason.
    Left(&'static str),
    /// Their node refused to ring them (busy, offline, do-not-disturb).
    Refused(SignalError),
}

/// Several nodes: what a round of member claims is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Round {
    /// Ring the fork's target: a new call, or one forwarded.
    Dial,
    /// An in-order group's turn came: the next who can ring takes over.
    Step,
    /// The members ringing are gone (the last for this reason): the next
    /// who can ring, or the call ends.
    Next(LegEnd),
}

/// Several nodes: a call whose members Redis is asked to claim.
#[derive(Debug)]
pub(super) struct Claiming {
    /// The call that goes on; `None` for a new one.
    id: Option<CallId>,
    /// Its plan, here while Redis answers (a candidate meanwhile joins it).
    pub(super) fork: Fork,
    round: Round,
    /// The round's number ([`MemberClaim::round`]).
    number: u64,
    /// Members left out as busy, or in do-not-disturb, here.
    busy: bool,
    dnd: bool,
}

/// The event that tells a caller why `target` cannot ring.
pub(super) fn refusal_event(target: Rc<str>, error: &SignalError) -> ServerEvent {
    if *error == SignalError::UserBusy {
        ServerEvent::CallBusy {
            target_user: target,
        }
    } else {
        ServerEvent::CallFailed {
            error: error.to_string(),
            target_user: target,
        }
    }
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Several nodes: asks Redis to claim, for `caller`'s call (`id`, or
    /// a new one from `socket`), those of `fork.target` that `round` may
    /// ring, all of them or the first who can; [`Hub::members_claimed`]
    /// goes on. Members here who are busy or in do-not-disturb are left
    /// out at once.
    pub(super) fn claim_round(
        &mut self,
        caller: &Rc<str>,
        fork: Fork,
        id: Option<CallId>,
        round: Round,
        socket: Option<&S>,
        effects: &mut Vec<Effect<S>>,
    ) {
        let target = fork.target.clone();
        let group = self.directory.group(&target);
        let candidates: Vec<Rc<str>> = match round {
            Round::Dial if group.is_some() => self.directory.members_of(&target),
            Round::Dial => vec![target.clone()],
            Round::Step | Round::Next(_) => fork.waiting().cloned().collect(),
        };
        let (mut busy, mut dnd) = (false, false);
        let members = candidates
            .into_iter()
            .filter(|member| {
                if member == caller {
                    return false;
                }
                if !self.users.contains_key(member) {
                    return true;
                }
                busy |= self.calls.of(member).is_some();
                dnd |= self.dnd.contains(member);
                self.calls.of(member).is_none() && !self.dnd.contains(member)
            })
            .collect();
        let first_only = round != Round::Dial || group.is_some_and(|g| g.ring == Ring::InOrder);
        let previous = id
            .and_then(|id| self.calls.get(id))
            .map(|call| call.called().clone());
        self.rounds += 1;
        let claim = MemberClaim {
            round: self.rounds,
            caller: caller.clone(),
            called: target,
            previous,
            members,
            first_only,
        };
        let claiming = Claiming {
            id,
            fork,
            round,
            number: self.rounds,
            busy,
            dnd,
        };
        self.claiming.insert(caller.clone(), claiming);
        effects.push(Effect::ClaimMembers {
            socket: socket.cloned(),
            claim,
        });
    }

    /// Redis answered a round of member claims ([`Effect::ClaimMembers`]):
    /// each member's claim, or why none was made. Those granted ring, or
    /// the call goes on as it would on one node when nobody can. Should
    /// the call have ended (or a newer round begun) meanwhile, what was
    /// claimed goes back.
    pub fn members_claimed(
        &mut self,
        claim: MemberClaim,
        answer: Result<Vec<Claim>, Claim>,
        now: Instant,
    ) -> Outcome<S> {
        let mut effects = self.expire(now);
        let result = self.settle_round(claim, answer, now, &mut effects);
        Outcome { result, effects }
    }

    fn settle_round(
        &mut self,
        claim: MemberClaim,
        answer: Result<Vec<Claim>, Claim>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let MemberClaim {
            round: number,
            caller,
            called,
            members,
            ..
        } = claim;
        let claims = answer.as_ref().map_or(&[][..], Vec::as_slice);
        let granted: Vec<Rc<str>> = members
            .iter()
            .zip(claims)
            .filter(|(_, claim)| claim.claimed())
            .map(|(member, _)| member.clone())
            .collect();
        let asleep = members.iter().zip(claims).filter(|(member, claim)| {
            **claim == Claim::Asleep && !self.users.contains_key(*member)
        });
        self.asleep = asleep.map(|(member, _)| member.clone()).collect();
        let result = self.settle_claimed(number, caller, called, answer, granted, now, effects);
        self.asleep.clear();
        result
    }

    /// [`Hub::settle_round`] once the members claimed are known.
    #[allow(clippy::too_many_arguments)]
    fn settle_claimed(
        &mut self,
        number: u64,
        caller: Rc<str>,
        called: Rc<str>,
        answer: Result<Vec<Claim>, Claim>,
        granted: Vec<Rc<str>>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let claims = answer.as_ref().map_or(&[][..], Vec::as_slice);
        let current = self
            .claiming
            .get(&caller)
            .is_some_and(|claiming| claiming.number == number);
        let Some(claiming) = self.claiming.remove(&caller).filter(|_| current) else {
            for member in &granted {
                self.release_member(&caller, &called, member, effects);
            }
            return Err(SignalError::AlreadyInCall);
        };
        let Claiming {
            id,
            mut fork,
            round,
            mut busy,
            mut dnd,
            ..
        } = claiming;
        let goes_on = match id {
            None => self.users.contains_key(&caller) && self.calls.of(&caller).is_none(),
            Some(id) => self
                .calls
                .get(id)
                .is_some_and(|call| call.is_ringing() && call.caller == caller),
        };
        if !goes_on {
            effects.push(Effect::CallOver {
                caller: caller.clone(),
                callee: called.clone(),
                member: None,
            });
            for member in &granted {
                self.release_member(&caller, &called, member, effects);
            }
            self.routes.remove(&caller);
            return Err(SignalError::AlreadyInCall);
        }
        if let Err(whole) = answer {
            let error = match whole {
                Claim::CallerBusy => SignalError::AlreadyInCall,
                _ => SignalError::Unavailable,
            };
            return self.round_failed(&caller, id, fork, round, error, effects);
        }
        busy |= claims.contains(&Claim::Busy);
        // Redis found them free, but the end of their last call (decided
        // on another node) has not reached this one yet, or they turned
        // do-not-disturb on meanwhile.
        let mut ringable = Vec::with_capacity(granted.len());
        for member in granted {
            let here = self.users.contains_key(&member);
            let taken = here && self.calls.of(&member).is_some();
            let away = here && self.dnd.contains(&member);
            if taken || away {
                busy |= taken;
                dnd |= away;
                self.release_member(&caller, &called, &member, effects);
            } else {
                ringable.push(member);
            }
        }
        if ringable.is_empty() && round == Round::Dial && claims.iter().any(|c| c.claimed()) {
            // The caller's claim was taken for nobody.
            effects.push(Effect::CallOver {
                caller: caller.clone(),
                callee: called.clone(),
                member: None,
            });
        }
        let group = self.directory.group(&called).map(|_| called.clone());
        let refusal = if busy {
            SignalError::UserBusy
        } else if dnd && group.is_none() {
            SignalError::DoNotDisturb
        } else {
            SignalError::UserOffline
        };
        let Some(id) = id.filter(|_| round != Round::Dial) else {
            let placed = self.place(&caller, fork, id, ringable, refusal, now, effects);
            return match placed {
                Placed::Forwarded(next) => {
                    self.claim_round(&caller, next, id, Round::Dial, None, effects);
                    Ok(())
                }
                Placed::Done(result) => {
                    if result.is_err() {
                        self.routes.remove(&caller);
                    }
                    result
                }
            };
        };
        // A turn: the first of those waiting who can ring takes it.
        if let Some(next) = ringable.first() {
            fork.skip_to(next);
            if round == Round::Step {
                let before = self.calls.release(id);
                for member in before {
                    self.release_member(&caller, &called, &member, effects);
                    let event = ServerEvent::CallTimeout {
                        user: caller.clone(),
                    };
                    self.tell(&member, event, effects);
                    self.routes.remove(&member);
                }
            }
            log::info!(
                "call {} -> {}: now ringing {}",
                untrusted(&caller),
                untrusted(&called),
                untrusted(next)
            );
            self.ring_member(id, &caller, next, group.as_ref(), &fork, effects);
            fork.stepped(now);
        } else {
            while fork.next_member().is_some() {}
        }
        match round {
            Round::Next(end) if ringable.is_empty() => self.nobody_rings(id, end, effects),
            _ => self.put_fork(id, fork),
        }
        Ok(())
    }

    /// Redis could not answer a round (or found the caller in another
    /// call): a new call is refused, a turn is skipped (the member
    /// ringing rings on), and a call with nobody left to ring ends.
    fn round_failed(
        &mut self,
        caller: &Rc<str>,
        id: Option<CallId>,
        fork: Fork,
        round: Round,
        error: SignalError,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let target = fork.target.clone();
        match (id, round) {
            (Some(id), Round::Step) => {
                let mut fork = fork;
                while fork.next_member().is_some() {}
                self.put_fork(id, fork);
                return Ok(());
            }
            (Some(id), Round::Next(_)) => {
                self.nobody_rings(id, LegEnd::Refused(error.clone()), effects);
            }
            (Some(id), Round::Dial) => {
                if let Some(call) = self.finish(id) {
                    self.over(&call, effects);
                }
                self.refuse_call(caller, target, &error, effects);
            }
            (None, _) => {
                self.routes.remove(caller);
                self.refuse_call(caller, target, &error, effects);
            }
        }
        Err(error)
    }
}
