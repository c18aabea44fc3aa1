//! Several devices under one name (the directory's `devices`): each
//! registers without replacing the others, a call rings them all, and once
//! one of them makes or answers it, the call's events go to that one.

use std::hash::Hash;
use std::rc::Rc;

use super::{Effect, Hub, Route, to_each};
use crate::logging::untrusted;
use crate::signaling::protocol::{ServerEvent, SignalError, reason};

impl<S: Clone + Eq + Hash> Hub<S> {
    /// How many devices `user` has registered here.
    pub fn device_count(&self, user: &str) -> usize {
        usize::from(self.users.contains_key(user)) + self.more.get(user).map_or(0, Vec::len)
    }

    /// `user`'s devices here, oldest first.
    pub fn devices_of(&self, user: &str) -> Vec<S> {
        let first = self.users.get(user).into_iter();
        first
            .chain(self.more.get(user).into_iter().flatten())
            .cloned()
            .collect()
    }

    /// Whether a call event from `socket` speaks for `user`: the device in
    /// their call, or one still ringing (any device, outside a call).
    pub(super) fn routes_to(&self, user: &str, socket: &S) -> bool {
        match self.routes.get(user) {
            Some(Route::Bound(bound)) => bound == socket,
            Some(Route::Ringing(ringing)) => ringing.contains(socket),
            None => true,
        }
    }

    /// `socket` declines while `user`'s other devices still ring: only it
    /// stops (true). False when it is the last, and the user declines.
    pub(super) fn device_declines(&mut self, user: &str, socket: &S) -> bool {
        match self.routes.get_mut(user) {
            Some(Route::Ringing(ringing)) if ringing.len() > 1 => {
                ringing.retain(|s| s != socket);
                true
            }
            _ => false,
        }
    }

    /// `user` starts ringing: on every device they have now.
    pub(super) fn ring_devices(&mut self, user: &Rc<str>) {
        if self.more.get(user).is_some_and(|more| !more.is_empty()) {
            let devices = self.devices_of(user);
            self.routes.insert(user.clone(), Route::Ringing(devices));
        }
    }

    /// `socket` answered for `user`: the call is its; the user's other
    /// devices stop ringing.
    pub(super) fn bind(
        &mut self,
        user: &Rc<str>,
        socket: &S,
        caller: &Rc<str>,
        effects: &mut Vec<Effect<S>>,
    ) {
        let Some(Route::Ringing(ringing)) = self.routes.remove(user) else {
            return;
        };
        let others: Vec<S> = ringing.into_iter().filter(|s| s != socket).collect();
        let event = ServerEvent::CallEnded {
            from: caller.clone(),
            reason: Some(reason::ANSWERED_ELSEWHERE),
        };
        to_each(&others, event, effects);
        self.routes
            .insert(user.clone(), Route::Bound(socket.clone()));
    }

    /// Registers `socket` as one more device of `user`, who may have
    /// several; past the directory's count the oldest is replaced.
    pub(super) fn add_device(
        &mut self,
        user: &Rc<str>,
        socket: &S,
        reply: impl Fn(bool, Option<String>) -> Effect<S>,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        let allowed = self.directory.devices(user).max(1);
        while self.device_count(user) >= allowed {
            let Some(oldest) = self.users.get(user).cloned() else {
                break;
            };
            log::info!(
                "{} registered one device more than its {allowed}; disconnecting the oldest",
                untrusted(user)
            );
            if !self.remove_device(user, &oldest, reason::NEW_LOGIN, effects) {
                self.leave(user, reason::NEW_LOGIN, effects);
            }
            effects.push(Effect::ToSocket {
                socket: oldest.clone(),
                event: ServerEvent::ForceDisconnect {
                    reason: reason::NEW_LOGIN.into(),
                },
            });
            effects.push(Effect::Disconnect { socket: oldest });
        }
        if let Some(first) = self.users.get(user).cloned() {
            if self.calls.of(user).is_some() && !self.routes.contains_key(user) {
                // In a call from when it had one device: the call stays
                // that device's (ringing, or answered), not the new one's.
                let route = match self.calls.of(user).map(|(_, call)| call.is_ringing()) {
                    Some(true) => Route::Ringing(vec![first]),
                    _ => Route::Bound(first),
                };
                self.routes.insert(user.clone(), route);
            }
            self.more
                .entry(user.clone())
                .or_default()
                .push(socket.clone());
        } else {
            self.users.insert(user.clone(), socket.clone());
        }
        self.joined(user, socket, reply(true, None), effects);
        self.tell_dnd(user, Some(socket), effects);
        Ok(())
    }

    /// Takes `socket` away from `user`, who has other devices (true);
    /// false, and nothing done, when it is their last. A call on it ends
    /// with `why`; a ringing device just stops.
    pub(super) fn remove_device(
        &mut self,
        user: &Rc<str>,
        socket: &S,
        why: &'static str,
        effects: &mut Vec<Effect<S>>,
    ) -> bool {
        if self.device_count(user) <= 1 || self.names.get(socket) != Some(user) {
            return false;
        }
        let Some(more) = self.more.get_mut(user) else {
            return false;
        };
        if self.users.get(user) == Some(socket) {
            // The oldest goes: the next oldest takes its place.
            let next = more.remove(0);
            self.users.insert(user.clone(), next);
        } else {
            more.retain(|s| s != socket);
        }
        if more.is_empty() {
            self.more.remove(user);
        }
        self.names.remove(socket);
        let call_goes = match self.routes.get_mut(user) {
            Some(Route::Bound(bound)) => bound == socket,
            Some(Route::Ringing(ringing)) => {
                ringing.retain(|s| s != socket);
                ringing.is_empty()
            }
            None => false,
        };
        if call_goes {
            self.routes.remove(user);
            self.end_call_of(user, why, effects);
        }
        true
    }

    /// `user`'s device `old` is replaced by `new` (a held device back on a
    /// new socket), in the call too.
    pub(super) fn replace_device(&mut self, user: &Rc<str>, old: &S, new: &S) {
        if self.users.get(user) == Some(old) {
            self.users.insert(user.clone(), new.clone());
        } else if let Some(more) = self.more.get_mut(user) {
            for s in more.iter_mut().filter(|s| *s == old) {
                *s = new.clone();
            }
        }
        match self.routes.get_mut(user) {
            Some(Route::Bound(bound)) if bound == old => *bound = new.clone(),
            Some(Route::Ringing(ringing)) => {
                for s in ringing.iter_mut().filter(|s| *s == old) {
                    *s = new.clone();
                }
            }
            _ => {}
        }
    }

    /// Tells `user`'s devices their do-not-disturb: every device, or with
    /// `only` that one, and only when it is on.
    pub(super) fn tell_dnd(&self, user: &str, only: Option<&S>, effects: &mut Vec<Effect<S>>) {
        let on = self.dnd.contains(user);
        let event = ServerEvent::Dnd { on };
        match only {
            Some(socket) if on => to_each(std::slice::from_ref(socket), event, effects),
            Some(_) => {}
            None => to_each(&self.devices_of(user), event, effects),
        }
    }
}
