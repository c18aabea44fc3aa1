//! The hub's cross-node half: what another node's hub tells this one
//! about a call with one of its users, and what this one keeps in Redis
//! (see [`crate::signaling::cluster`]).

use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::groups::LegEnd;
use super::{Effect, Hub, InCall};
use crate::logging::untrusted;
use crate::signaling::calls::{CallId, CallState};
use crate::signaling::peer::{HandedCall, PeerMessage, known_reason, refusal};
use crate::signaling::protocol::{ServerEvent, SignalError, reason};

/// How long past its ring timeout a call whose caller is on another node
/// waits for that node's word before it ends here anyway.
pub(super) const PEER_GRACE: Duration = Duration::from_secs(5);

impl<S: Clone + Eq + Hash> Hub<S> {
    /// A message from another node's hub about one of our users.
    pub fn peer(&mut self, message: PeerMessage, now: Instant) -> Vec<Effect<S>> {
        let mut effects = self.expire(now);
        match message {
            PeerMessage::Ring {
                from,
                to,
                offer,
                group: Some(group),
            } => self.ring_for_group(from, to, group, offer, now, &mut effects),
            PeerMessage::Ring {
                from,
                to,
                offer,
                group: None,
            } => {
                let refusal = if !self.users.contains_key(&to) {
                    Some(SignalError::UserOffline)
                } else if self.calls.of(&to).is_some() || self.calls.of(&from).is_some() {
                    // The cluster thought them free (an end not heard here
                    // yet); the claims go back (released only where they
                    // are this call's).
                    Some(SignalError::UserBusy)
                } else if self.dnd.contains(&to) {
                    Some(SignalError::DoNotDisturb)
                } else {
                    None
                };
                if let Some(error) = refusal {
                    effects.push(Effect::CallOver {
                        caller: from.clone(),
                        callee: to.clone(),
                        member: None,
                    });
                    self.refuse_call(&from, to, &error, &mut effects);
                } else {
                    // The caller's node owns the timeout; this deadline only
                    // cleans up should its word never come.
                    let deadline = now + self.call_timeout + PEER_GRACE;
                    self.calls.ring(from.clone(), to.clone(), deadline);
                    log::info!(
                        "call {} -> {}: ringing (caller on another node)",
                        untrusted(&from),
                        untrusted(&to)
                    );
                    self.ring_devices(&to);
                    let event = ServerEvent::IncomingCall {
                        from,
                        offer,
                        group: None,
                    };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::Refused {
                from,
                to,
                busy,
                dnd,
            } => {
                let error = refusal(busy, dnd);
                if let Some(id) = self.ringing_leg(&to, &from) {
                    self.leg_gone(id, &from, LegEnd::Refused(error), &mut effects);
                } else if let Ok(id) = self.ringing_to(&to, &from) {
                    // The callee's node released the claims.
                    self.refused_by_peer(id, &to, from, error, now, &mut effects);
                }
            }
            PeerMessage::Answered { from, to, answer } => {
                if let Some(id) = self.ringing_leg(&to, &from) {
                    self.answered(id, &from, None, answer, now, &mut effects);
                } else if let Ok(id) = self.ringing_to(&to, &from) {
                    self.calls.answer(id, now);
                    self.started(id, now);
                    log::info!(
                        "call {} -> {}: answered (on another node)",
                        untrusted(&to),
                        untrusted(&from)
                    );
                    let event = ServerEvent::CallAnswered { from, answer };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::Declined { from, to } => {
                if let Some(id) = self.ringing_leg(&to, &from) {
                    log::info!(
                        "call {} -> {}: declined (on another node)",
                        untrusted(&to),
                        untrusted(&from)
                    );
                    self.leg_gone(id, &from, LegEnd::Declined, &mut effects);
                } else if let Ok(id) = self.ringing_to(&to, &from) {
                    self.finish(id);
                    log::info!(
                        "call {} -> {}: declined (on another node)",
                        untrusted(&to),
                        untrusted(&from)
                    );
                    self.tell(&to, ServerEvent::CallDeclined { from }, &mut effects);
                }
            }
            PeerMessage::Ended { from, to, reason } => {
                let why = known_reason(reason.as_deref());
                self.end_with_peer(&to, from, why, false, &mut effects);
            }
            PeerMessage::Candidate {
                from,
                to,
                candidate,
            } => {
                if self.call_between(&to, &from).is_ok() {
                    let event = ServerEvent::IceCandidate { from, candidate };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::Update {
                from,
                to,
                description,
            } => {
                if self.call_between(&to, &from).is_ok() && self.in_active_call(&to) {
                    let event = ServerEvent::CallUpdate { from, description };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::Ending { to, seconds } => {
                if self.in_active_call(&to) {
                    self.tell(&to, ServerEvent::CallEnding { seconds }, &mut effects);
                }
            }
            PeerMessage::DoorOpen { from, to, door } => {
                if self.users.contains_key(&to) {
                    self.tell(&to, ServerEvent::DoorOpen { from, door }, &mut effects);
                }
            }
            PeerMessage::Reconnecting { from, to } => {
                if self.call_between(&to, &from).is_ok() {
                    self.tell(&to, ServerEvent::PeerReconnecting { from }, &mut effects);
                }
            }
            PeerMessage::Reconnected { from, to } => {
                if self.call_between(&to, &from).is_ok() {
                    self.tell(&to, ServerEvent::PeerReconnected { from }, &mut effects);
                }
            }
            PeerMessage::TimedOut { from, to } => {
                if let Some(id) = self.mirror_leg(&to, &from) {
                    self.mirror_leg_gone(id, &to, false, &mut effects);
                    self.tell(&to, ServerEvent::CallTimeout { user: from }, &mut effects);
                } else if let Ok(id) = self.call_between(&to, &from) {
                    // Counted by the caller's node, which owns the timeout.
                    self.finish(id);
                    log::info!(
                        "call {} -> {}: timed out (on another node)",
                        untrusted(&from),
                        untrusted(&to)
                    );
                    self.tell(&to, ServerEvent::CallTimeout { user: from }, &mut effects);
                }
            }
            PeerMessage::Kick { user, .. } if self.held.contains_key(&user) => {
                self.hand_over(&user, now, &mut effects);
            }
            PeerMessage::Woken { from, .. } => self.woken_elsewhere(&from, &mut effects),
            PeerMessage::OpenDoor {
                from,
                to,
                door,
                in_call,
            } => self.open_door_asked(from, to, door, in_call, now, &mut effects),
            PeerMessage::DoorAnswer { .. } => {
                // The service's: the ack it answers waits there.
            }
            PeerMessage::SendAway { user, reason } => {
                let (devices, sent) = self.kick(&user, reason);
                if devices > 0 {
                    log::info!(
                        "{} sent away by the administrator (on another node)",
                        untrusted(&user)
                    );
                }
                effects.extend(sent);
            }
            PeerMessage::Resume { user, call, events } => {
                self.take_over(&user, call, events, now, &mut effects);
            }
            PeerMessage::Kick { user, .. } => {
                if let Some(socket) = self.users.get(&user).cloned() {
                    log::info!(
                        "{} registered on another node; disconnecting this device",
                        untrusted(&user)
                    );
                    self.leave(&user, reason::NEW_LOGIN, &mut effects);
                    effects.push(Effect::ToSocket {
                        socket: socket.clone(),
                        event: ServerEvent::ForceDisconnect {
                            reason: reason::NEW_LOGIN.into(),
                        },
                    });
                    effects.push(Effect::Disconnect { socket });
                }
            }
        }
        effects
    }

    /// `user`, held here, registered again on another node: their call and
    /// what was kept for them go there ([`PeerMessage::Resume`]); the
    /// lost socket is given up. The peer hears `peer_reconnected`.
    fn hand_over(&mut self, user: &Rc<str>, now: Instant, effects: &mut Vec<Effect<S>>) {
        let Some(held) = self.unhold(user) else {
            return;
        };
        let Some(socket) = self.users.remove(user) else {
            return;
        };
        self.names.remove(&socket);
        self.grace_totals.resumed += 1;
        log::info!(
            "{} registered again on another node; their call moves there",
            untrusted(user)
        );
        effects.push(Effect::Disconnect { socket });
        let ringing_group = self.calls.of(user).and_then(|(id, call)| {
            let group = call.group.is_some() && call.is_ringing();
            group.then(|| (id, call.is_leg(user)))
        });
        match ringing_group {
            // A group's ringing stays with the caller's node: the member
            // stops ringing, or the caller's call ends.
            Some((id, true)) => {
                self.leg_gone(id, user, LegEnd::Left(reason::DISCONNECTED), effects)
            }
            Some((_, false)) => self.end_call_of(user, reason::DISCONNECTED, effects),
            None => {}
        }
        let mut peer = None;
        let call = self.calls.of(user).map(|(id, call)| {
            peer = call.peer_of(user).cloned();
            let rings_for_ms = match call.state {
                CallState::Ringing { deadline } => {
                    let left = deadline.saturating_duration_since(now).as_millis();
                    Some(u64::try_from(left).unwrap_or(u64::MAX))
                }
                CallState::Active { .. } => None,
            };
            (
                id,
                HandedCall {
                    caller: call.caller.clone(),
                    callee: call.callee.clone(),
                    rings_for_ms,
                    group: call.group.clone(),
                },
            )
        });
        let call = call.map(|(id, handed)| {
            // Neither party is here any more: the call lives on elsewhere,
            // its claims with it.
            if peer.as_ref().is_some_and(|p| !self.users.contains_key(p)) {
                self.finish(id);
            }
            handed
        });
        let events = held
            .queue
            .into_iter()
            .filter_map(|event| PeerMessage::for_event(user, event))
            .collect();
        effects.push(Effect::ToPeer {
            user: user.clone(),
            message: PeerMessage::Resume {
                user: user.clone(),
                call,
                events,
            },
        });
        if let Some(peer) = peer.filter(|peer| held.told.as_ref() == Some(peer)) {
            let event = ServerEvent::PeerReconnected { from: user.clone() };
            self.tell(&peer, event, effects);
        }
    }

    /// `user`, registered here, was held on another node, which hands over
    /// their call and what was kept for them.
    fn take_over(
        &mut self,
        user: &Rc<str>,
        call: Option<HandedCall>,
        events: Vec<PeerMessage>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let here = self.users.contains_key(user);
        if let Some(call) = call {
            let peer = if *call.caller == **user {
                call.callee.clone()
            } else {
                call.caller.clone()
            };
            let same = |c: &crate::signaling::calls::Call| {
                c.caller == call.caller && c.callee == call.callee
            };
            match self.calls.of(user) {
                // The peer is here: this node had the call all along.
                Some((_, current)) if same(current) => {}
                None if here && self.calls.of(&peer).is_none() => {
                    match call.rings_for_ms {
                        Some(ms) => {
                            // The caller's node owns the timeout; the callee's
                            // deadline only cleans up.
                            let mut left = Duration::from_millis(ms);
                            if *call.callee == **user {
                                left += PEER_GRACE;
                            }
                            self.calls
                                .ring(call.caller.clone(), call.callee.clone(), now + left);
                        }
                        None => {
                            let id = self
                                .calls
                                .ring(call.caller.clone(), call.callee.clone(), now);
                            self.calls.answer(id, now);
                            if let Some(group) = call.group.clone() {
                                self.calls.made_to(id, group);
                            }
                        }
                    }
                    log::info!(
                        "call {} -> {}: moved here with {}",
                        untrusted(&call.caller),
                        untrusted(&call.callee),
                        untrusted(user)
                    );
                }
                // The user left, or started another call, meanwhile: the
                // handed call ends for the peer.
                _ => {
                    let called = call.group.clone().unwrap_or_else(|| call.callee.clone());
                    effects.push(Effect::CallOver {
                        caller: call.caller.clone(),
                        callee: called.clone(),
                        member: None,
                    });
                    if call.group.is_some() {
                        self.release_member(&call.caller, &called, user, effects);
                    }
                    let event = ServerEvent::CallEnded {
                        from: user.clone(),
                        reason: Some(reason::DISCONNECTED),
                    };
                    self.tell(&peer, event, effects);
                    return;
                }
            }
        }
        let Some(socket) = self.users.get(user).cloned() else {
            return;
        };
        effects.extend(events.into_iter().filter_map(|message| {
            Some(Effect::ToSocket {
                socket: socket.clone(),
                event: message.into_event()?,
            })
        }));
    }

    /// `peer`, on another node, is gone (its node died, or it left without
    /// word): the call with them ends.
    pub fn peer_lost(&mut self, peer: &str, now: Instant) -> Vec<Effect<S>> {
        let mut effects = self.expire(now);
        if self.users.contains_key(peer) {
            return effects;
        }
        let locals: Vec<Rc<str>> = self
            .users
            .keys()
            .filter(|user| self.call_between(user, peer).is_ok())
            .cloned()
            .collect();
        let peer: Rc<str> = peer.into();
        for user in locals {
            if let Some(id) = self.ringing_leg(&user, &peer) {
                let end = LegEnd::Left(reason::DISCONNECTED);
                self.leg_gone(id, &peer, end, &mut effects);
                continue;
            }
            let why = Some(reason::DISCONNECTED);
            self.end_with_peer(&user, peer.clone(), why, true, &mut effects);
        }
        effects
    }

    /// The users in calls with our users who are not connected here, each
    /// with the call's caller and the name called: their claim must hold
    /// that. A group's caller checks the members ringing elsewhere.
    pub fn remote_peers(&self) -> Vec<InCall> {
        let mut peers = Vec::new();
        for user in self.users.keys() {
            let Some((_, call)) = self.calls.of(user) else {
                continue;
            };
            let others = if call.caller != *user {
                std::slice::from_ref(&call.caller)
            } else if call.group.is_some() && call.is_ringing() {
                call.legs.as_slice()
            } else {
                std::slice::from_ref(&call.callee)
            };
            for peer in others.iter().filter(|peer| !self.users.contains_key(*peer)) {
                peers.push(InCall {
                    user: peer.clone(),
                    caller: call.caller.clone(),
                    callee: call.called().clone(),
                });
            }
        }
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Our users in calls, each with its call's caller and the name
    /// called, and those our calls are waking: what the cluster holds
    /// claims for.
    pub fn calls_here(&self) -> Vec<InCall> {
        self.users
            .keys()
            .chain(self.waking.keys())
            .filter_map(|user| {
                let (_, call) = self.calls.of(user)?;
                Some(InCall {
                    user: user.clone(),
                    caller: call.caller.clone(),
                    callee: call.called().clone(),
                })
            })
            .collect()
    }

    /// The ringing group call `caller` made here in which `member` (on
    /// another node) rings.
    fn ringing_leg(&self, caller: &str, member: &str) -> Option<CallId> {
        let (id, call) = self.calls.of(caller)?;
        (call.is_ringing() && *call.caller == *caller && !call.mirror && call.is_leg(member))
            .then_some(id)
    }

    /// The mirror here of `caller`'s group call in which our `member` rings.
    fn mirror_leg(&self, member: &str, caller: &str) -> Option<CallId> {
        let (id, call) = self.calls.of(member)?;
        (call.mirror && call.is_ringing() && *call.caller == *caller && call.is_leg(member))
            .then_some(id)
    }

    /// Our `member` stops ringing in a mirror, as the caller's node said
    /// (which releases the claims, unless `release`); the mirror goes when
    /// nobody here rings any more.
    fn mirror_leg_gone(
        &mut self,
        id: CallId,
        member: &Rc<str>,
        release: bool,
        effects: &mut Vec<Effect<S>>,
    ) {
        let Some(call) = self.calls.get(id) else {
            return;
        };
        let (caller, called) = (call.caller.clone(), call.called().clone());
        self.calls.drop_leg(id, member);
        self.routes.remove(member);
        if release {
            self.release_member(&caller, &called, member, effects);
        }
        if self.calls.get(id).is_some_and(|call| call.legs.is_empty()) {
            self.finish(id);
        }
    }

    /// `caller` on another node calls `group`, of which our `member` is
    /// one: it rings here in the mirror of that call (made with the
    /// first member here), or is refused, and only their claim goes back.
    fn ring_for_group(
        &mut self,
        caller: Rc<str>,
        member: Rc<str>,
        group: Rc<str>,
        offer: Box<serde_json::value::RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let mirror = self.calls.of(&caller).and_then(|(id, call)| {
            (call.mirror && call.is_ringing() && call.group.as_ref() == Some(&group)).then_some(id)
        });
        let refusal = if !self.users.contains_key(&member) {
            Some(SignalError::UserOffline)
        } else if self.calls.of(&member).is_some()
            || (mirror.is_none() && self.calls.of(&caller).is_some())
        {
            Some(SignalError::UserBusy)
        } else if self.dnd.contains(&member) {
            Some(SignalError::DoNotDisturb)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.release_member(&caller, &group, &member, effects);
            let event = super::groups::refusal_event(member, &error);
            self.tell(&caller, event, effects);
            return;
        }
        let id = mirror.unwrap_or_else(|| {
            // The caller's node owns the timeout; this deadline only
            // cleans up should its word never come.
            let deadline = now + self.call_timeout + PEER_GRACE;
            self.calls.mirror(caller.clone(), group.clone(), deadline)
        });
        self.calls.add_leg(id, member.clone());
        log::info!(
            "call {} -> {}: ringing {} (caller on another node)",
            untrusted(&caller),
            untrusted(&group),
            untrusted(&member)
        );
        self.ring_devices(&member);
        let event = ServerEvent::IncomingCall {
            from: caller,
            offer,
            group: Some(group),
        };
        self.tell(&member, event, effects);
    }

    /// The callee of `caller`'s call `id`, on another node, could not be
    /// rung: the caller hears why, or, for a callee in do-not-disturb
    /// with forwarding, the call goes on.
    fn refused_by_peer(
        &mut self,
        id: CallId,
        caller: &Rc<str>,
        callee: Rc<str>,
        error: SignalError,
        now: Instant,
        effects: &mut Vec<Effect<S>>,
    ) {
        let directory = self.directory.clone();
        if let Some(mut fork) = self.take_fork(id)
            && error == SignalError::DoNotDisturb
            && let Some(forward) = directory.no_answer(&callee)
            && fork.may_forward()
        {
            log::info!(
                "call {} -> {}: do-not-disturb; forwarded to {}",
                untrusted(caller),
                untrusted(&callee),
                untrusted(&forward.to)
            );
            self.calls.release(id);
            let event = ServerEvent::CallForwarded {
                from: callee,
                to: forward.to.clone(),
            };
            self.tell(caller, event, effects);
            fork.retarget(forward.to.clone());
            // Refused there, the caller hears why through its events.
            let _ = self.dial(caller, fork, Some(id), now, effects);
            return;
        }
        self.finish(id);
        self.refuse_call(caller, callee, &error, effects);
    }

    /// Ends `me`'s call with `peer` (on another node), telling `me` why;
    /// `release`: this node releases the claims (the peer's node cannot).
    fn end_with_peer(
        &mut self,
        me: &Rc<str>,
        peer: Rc<str>,
        why: Option<&'static str>,
        release: bool,
        effects: &mut Vec<Effect<S>>,
    ) {
        let Ok(id) = self.call_between(me, &peer) else {
            return;
        };
        if self.mirror_leg(me, &peer).is_some() {
            self.mirror_leg_gone(id, me, release, effects);
            let event = ServerEvent::CallEnded {
                from: peer,
                reason: why,
            };
            self.tell(me, event, effects);
            return;
        }
        if let Some(call) = self.finish(id) {
            log::info!(
                "call {} -> {}: ended by {} (on another node)",
                untrusted(&call.caller),
                untrusted(&call.callee),
                untrusted(&peer)
            );
            if release {
                self.over(&call, effects);
                // Should the peer's node be alive after all, its side of the
                // call must end too.
                let event = ServerEvent::CallEnded {
                    from: me.clone(),
                    reason: Some(reason::DISCONNECTED),
                };
                self.tell(&peer, event, effects);
            }
        }
        let event = ServerEvent::CallEnded {
            from: peer,
            reason: why,
        };
        self.tell(me, event, effects);
    }
}
