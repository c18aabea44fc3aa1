//! Missed calls: a call that rang a user and ended without them answering
//! or declining it (it rang out, the caller gave up, another member or
//! device answered, it was forwarded) is one for them, told to their next
//! registration as `missed_calls` until they say `missed_calls_seen`.
//! Every ring passes through [`Hub::tell`], and so does every end: that
//! is where a ring is noted and, when it ends unanswered, missed.

use std::collections::VecDeque;
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Effect, Hub, Shared};
use crate::signaling::protocol::{MissedCall, ServerEvent};

/// The most missed calls kept for a user; past it the oldest goes.
pub const MAX_MISSED_PER_USER: usize = 50;

/// The most missed calls kept in all; past it new ones are not kept.
pub const MAX_MISSED: usize = 100_000;

/// A ring that has not been answered or declined yet.
#[derive(Debug, Clone)]
pub(super) struct Ringing {
    from: Rc<str>,
    group: Option<Rc<str>>,
    since: Instant,
}

/// A missed call, as it is told and kept (in the state directory too).
pub(super) type Missed = MissedCall;

/// When the hub's clock started, on the wall: missed calls say when.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// An instant of the hub's clock…
    pub instant: Instant,
    /// …and the wall time then.
    pub system: std::time::SystemTime,
}

impl WallClock {
    /// Now, both ways.
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            system: std::time::SystemTime::now(),
        }
    }

    pub(super) fn at(&self, instant: Instant) -> std::time::SystemTime {
        match instant.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - (self.instant - instant).min(Duration::from_secs(1 << 32)),
        }
    }
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// Notes what `event` means for `user`'s rings, when `user` is here:
    /// a ring starts, or ends missed (called before they are told; the
    /// missed call is returned). The event is looked at first: most
    /// (relayed candidates) are neither.
    pub(super) fn note_ring(
        &mut self,
        user: &Rc<str>,
        event: &ServerEvent,
        effects: &mut Vec<Effect<S>>,
    ) -> Option<MissedCall> {
        let rings = matches!(
            event,
            ServerEvent::IncomingCall { .. }
                | ServerEvent::CallTimeout { .. }
                | ServerEvent::CallEnded { .. }
        );
        if !rings
            || !(self.users.contains_key(user)
                || self.held.contains_key(user)
                || self.waking.contains_key(user))
        {
            return None;
        }
        let reason: Rc<str> = match event {
            ServerEvent::IncomingCall { from, group, .. } => {
                let ringing = Ringing {
                    from: from.clone(),
                    group: group.clone(),
                    since: self.now,
                };
                self.ringing.insert(user.clone(), ringing);
                return None;
            }
            ServerEvent::CallTimeout { .. } => "timeout".into(),
            ServerEvent::CallEnded { reason, .. } => reason.unwrap_or("cancelled").into(),
            _ => return None,
        };
        let ringing = self.ringing.remove(user)?;
        let call = MissedCall {
            from: ringing.from,
            group: ringing.group,
            at: crate::timestamp::iso8601(self.wall.at(ringing.since)),
            reason,
        };
        if self.several_nodes {
            let user = user.clone();
            effects.push(Effect::Shared(Shared::Missed {
                user,
                call: call.clone(),
            }));
            return Some(call);
        }
        if self.missed_count >= MAX_MISSED {
            log::warn!("{MAX_MISSED} missed calls kept: not keeping more");
            return Some(call);
        }
        let theirs = self.missed.entry(user.clone()).or_default();
        if theirs.len() >= MAX_MISSED_PER_USER {
            theirs.pop_front();
        } else {
            self.missed_count += 1;
        }
        theirs.push_back(call.clone());
        self.state_changed = true;
        Some(call)
    }

    /// `user` answered or declined: their ring is no longer one to miss.
    pub(super) fn ring_taken(&mut self, user: &str) {
        self.ringing.remove(user);
    }

    /// Tells a device of `user` that just registered its missed calls, if
    /// there are any.
    pub(super) fn tell_missed(&self, user: &Rc<str>, socket: &S, effects: &mut Vec<Effect<S>>) {
        if self.several_nodes {
            effects.push(Effect::Shared(Shared::TellMissed {
                user: user.clone(),
                socket: socket.clone(),
            }));
            return;
        }
        let Some(theirs) = self.missed.get(user).filter(|m| !m.is_empty()) else {
            return;
        };
        let calls = theirs.iter().cloned().collect();
        effects.push(Effect::ToSocket {
            socket: socket.clone(),
            event: ServerEvent::MissedCalls { calls },
        });
    }

    /// `missed_calls_seen`: forgets `user`'s missed calls.
    pub(super) fn missed_seen(&mut self, user: &Rc<str>, effects: &mut Vec<Effect<S>>) {
        if self.several_nodes {
            let user = user.clone();
            effects.push(Effect::Shared(Shared::MissedSeen { user }));
            return;
        }
        if let Some(theirs) = self.missed.remove(user) {
            self.missed_count -= theirs.len();
            self.state_changed = true;
        }
    }

    /// How many missed calls `user` has.
    pub fn missed_count_of(&self, user: &str) -> usize {
        self.missed.get(user).map_or(0, VecDeque::len)
    }
}
