//! What the admin API asks of the hub: the calls in progress, and sending
//! a user's devices away.

use std::hash::Hash;
use std::rc::Rc;

use serde::Serialize;

use super::{Effect, Hub};
use crate::signaling::calls::CallState;
use crate::signaling::protocol::{ServerEvent, reason};

/// A call ringing or active, for `GET /api/calls/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveCall {
    /// Its id, as its record and pushes name it.
    pub call: String,
    /// Who called.
    pub caller: Rc<str>,
    /// The name called: a user, or a group.
    pub called: Rc<str>,
    /// `ringing` or `active`.
    pub state: &'static str,
    /// Who rings now (a group's members, or the one user).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ringing: Vec<Rc<str>>,
    /// Who answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<Rc<str>>,
    /// When it started ringing (ISO 8601, UTC).
    pub started: String,
    /// Its parties whose connection was lost, held for the reconnect grace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Rc<str>>,
    /// Users of it being woken by a push, no device of theirs connected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waking: Vec<Rc<str>>,
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// The calls ringing and active on this node (its own, not mirrors),
    /// oldest first.
    pub fn live_calls(&self) -> Vec<LiveCall> {
        let mut calls: Vec<LiveCall> = self
            .calls
            .iter()
            .filter(|(_, call)| !call.mirror)
            .map(|(id, call)| {
                let active = matches!(call.state, CallState::Active { .. });
                let ringing: Vec<Rc<str>> = if active {
                    Vec::new()
                } else if call.group.is_some() {
                    call.legs.clone()
                } else {
                    vec![call.callee.clone()]
                };
                let parties: Vec<&Rc<str>> = [&call.caller, &call.callee]
                    .into_iter()
                    .chain(&call.legs)
                    .collect();
                let held = parties
                    .iter()
                    .filter(|user| self.held.contains_key(**user))
                    .map(|user| (*user).clone())
                    .collect();
                let waking = parties
                    .iter()
                    .filter(|user| self.waking.contains_key(**user))
                    .map(|user| (*user).clone())
                    .collect();
                let started = self
                    .facts
                    .get(&id)
                    .and_then(|facts| facts.started())
                    .unwrap_or(self.now);
                LiveCall {
                    call: super::push_call_id(id),
                    caller: call.caller.clone(),
                    called: call.called().clone(),
                    state: if active { "active" } else { "ringing" },
                    ringing,
                    answered_by: active.then(|| call.callee.clone()),
                    started: crate::timestamp::iso8601(self.wall.at(started)),
                    held,
                    waking,
                }
            })
            .collect();
        calls.sort_by(|a, b| a.started.cmp(&b.started).then(a.call.cmp(&b.call)));
        calls
    }

    /// Sends every device of `user` away: each hears `force_disconnect
    /// {reason}` and is disconnected, and the user leaves (their call ends
    /// for the other party with `disconnected`). How many devices went.
    pub fn kick(&mut self, user: &str, why: Rc<str>) -> (usize, Vec<Effect<S>>) {
        let mut effects = Vec::new();
        let Some(name) = self.users.get_key_value(user).map(|(name, _)| name.clone()) else {
            return (0, effects);
        };
        let devices = self.devices_of(user);
        self.leave(&name, reason::DISCONNECTED, &mut effects);
        for socket in &devices {
            effects.push(Effect::ToSocket {
                socket: socket.clone(),
                event: ServerEvent::ForceDisconnect {
                    reason: why.clone(),
                },
            });
            effects.push(Effect::Disconnect {
                socket: socket.clone(),
            });
        }
        (devices.len(), effects)
    }
}
