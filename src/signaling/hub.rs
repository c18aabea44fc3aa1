//! The hub: presence and calls, driven by client events. A pure state
//! machine: events and the time in, effects out. It decides *what* to send
//! to *which user*; where that user's socket lives is the I/O side's
//! business.

use crate::id::IdMap;
use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::calls::{CallState, Calls};
use super::limits::{Bucket, Limits};
use super::protocol::{ClientEvent, ServerEvent, SignalError, reason, valid_user_name};

/// What the I/O side must do after the hub handled something. `C`
/// identifies a connection (a socket).
#[derive(Debug, Clone)]
pub enum Effect<C> {
    /// Send `event` to whichever connection `user` is registered on.
    ToUser {
        /// The user.
        user: Rc<str>,
        /// The event.
        event: ServerEvent,
    },
    /// Send `event` to this connection.
    ToConn {
        /// The connection.
        conn: C,
        /// The event.
        event: ServerEvent,
    },
    /// Disconnect this connection (after what was sent to it).
    Disconnect {
        /// The connection.
        conn: C,
    },
}

/// The result of one client event: whether it was accepted, and what follows.
#[derive(Debug)]
pub struct Outcome<C> {
    /// `Ok` when the event did what it asks; the refusal otherwise.
    pub result: Result<(), SignalError>,
    /// What to send and to whom.
    pub effects: Vec<Effect<C>>,
}

/// How calls have ended since start, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallTotals {
    /// Calls answered.
    pub answered: u64,
    /// Calls declined by the callee.
    pub declined: u64,
    /// Calls that rang out.
    pub timeout: u64,
    /// Calls refused because the callee was busy.
    pub busy: u64,
    /// Calls that could not be made (offline, yourself, already in a call).
    pub failed: u64,
}

/// Presence and calls.
#[derive(Debug)]
pub struct Hub<C> {
    users: HashMap<Rc<str>, C>,
    names: IdMap<C, Rc<str>>,
    /// The only name a connection may register, when it proved one with a token.
    allowed: IdMap<C, Rc<str>>,
    calls: Calls,
    call_timeout: Duration,
    totals: CallTotals,
    call_rate: (f64, f64),
    call_buckets: HashMap<Rc<str>, Bucket>,
}

impl<C: Clone + Eq + Hash> Hub<C> {
    /// An empty hub whose calls ring for `call_timeout`, with users' call
    /// rates bounded by `limits`.
    pub fn new(call_timeout: Duration, limits: &Limits) -> Hub<C> {
        Hub {
            users: HashMap::new(),
            names: IdMap::default(),
            allowed: IdMap::default(),
            calls: Calls::default(),
            call_timeout,
            totals: CallTotals::default(),
            call_rate: (limits.calls_per_minute / 60.0, limits.call_burst),
            call_buckets: HashMap::new(),
        }
    }

    /// How calls have ended since start.
    pub fn totals(&self) -> CallTotals {
        self.totals
    }

    /// The registered users, sorted.
    pub fn users(&self) -> Vec<&str> {
        let mut users: Vec<&str> = self.users.keys().map(|u| &**u).collect();
        users.sort();
        users
    }

    /// How many users are registered.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// How many calls are ringing or active.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// How many calls are ringing.
    pub fn ringing_count(&self) -> usize {
        self.calls.ringing()
    }

    /// The connection `user` is registered on.
    pub fn conn_of(&self, user: &str) -> Option<&C> {
        self.users.get(user)
    }

    /// The user registered on `conn`.
    pub fn user_of(&self, conn: &C) -> Option<&Rc<str>> {
        self.names.get(conn)
    }

    /// When the hub next needs [`Hub::expire`] called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls.next_deadline()
    }

    /// Ends the calls whose ringing time is up (deadline at or before `now`).
    pub fn expire(&mut self, now: Instant) -> Vec<Effect<C>> {
        let mut effects = Vec::new();
        for call in self.calls.expire(now) {
            self.totals.timeout += 1;
            log::info!("call {} -> {}: timed out", call.caller, call.callee);
            effects.push(Effect::ToUser {
                user: call.caller.clone(),
                event: ServerEvent::CallTimeout {
                    user: call.callee.clone(),
                },
            });
            effects.push(Effect::ToUser {
                user: call.callee,
                event: ServerEvent::CallTimeout {
                    user: call.caller.clone(),
                },
            });
        }
        effects
    }

    /// Handles one client event from `conn` at `now`.
    pub fn handle(&mut self, conn: &C, event: ClientEvent, now: Instant) -> Outcome<C> {
        // Anything due first: an answer at the very deadline finds the call gone.
        let mut effects = self.expire(now);
        let result = match event {
            ClientEvent::RegisterUser { user_id } => {
                self.register(conn, user_id, now, &mut effects)
            }
            ClientEvent::LogoutUser { user_id } => self.logout(conn, user_id, now, &mut effects),
            event => match self.names.get(conn).cloned() {
                None => Err(SignalError::NotRegistered),
                Some(me) => self.call_event(me, event, now, &mut effects),
            },
        };
        Outcome { result, effects }
    }

    /// Binds `conn` to the name its token proves: it may register only that.
    pub fn authenticate(&mut self, conn: &C, user: &str) {
        self.allowed.insert(conn.clone(), user.into());
    }

    /// The connection closed: its user leaves, and their call ends.
    pub fn disconnected(&mut self, conn: &C, now: Instant) -> Vec<Effect<C>> {
        self.allowed.remove(conn);
        let mut effects = self.expire(now);
        if let Some(user) = self.names.remove(conn) {
            self.users.remove(&user);
            self.forget_rested_buckets(&user, now);
            log::info!("{user} disconnected");
            self.end_call_of(&user, reason::DISCONNECTED, &mut effects);
        }
        effects
    }

    /// Ends every call, telling both parties `reason`.
    pub fn end_all_calls(&mut self, reason: &'static str) -> Vec<Effect<C>> {
        let mut effects = Vec::new();
        for call in self.calls.end_all() {
            log::info!("call {} -> {}: ended ({reason})", call.caller, call.callee);
            for (to, from) in [(&call.caller, &call.callee), (&call.callee, &call.caller)] {
                effects.push(Effect::ToUser {
                    user: to.clone(),
                    event: ServerEvent::CallEnded {
                        from: from.clone(),
                        reason: Some(reason),
                    },
                });
            }
        }
        effects
    }

    fn register(
        &mut self,
        conn: &C,
        name: String,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) -> Result<(), SignalError> {
        let reply = |success: bool, error: Option<String>| Effect::ToConn {
            conn: conn.clone(),
            event: ServerEvent::UserRegistered {
                success,
                user_id: name.clone(),
                error,
            },
        };
        let refusal = if !valid_user_name(&name) {
            Some(SignalError::InvalidUserName)
        } else if self
            .allowed
            .get(conn)
            .is_some_and(|allowed| **allowed != *name)
        {
            Some(SignalError::NotYourToken)
        } else {
            None
        };
        if let Some(error) = refusal {
            effects.push(reply(false, Some(error.to_string())));
            return Err(error);
        }
        match self.names.get(conn) {
            Some(current) if **current == *name => {
                effects.push(reply(true, None));
                return Ok(());
            }
            Some(current) => {
                // The socket takes another name: the old one logs out.
                let current = current.clone();
                self.leave(&current, reason::LOGGED_OUT, now, effects);
            }
            None => {}
        }
        let user: Rc<str> = name.as_str().into();
        if let Some(old) = self.users.get(&user).cloned() {
            // One device per user: the newest registration wins.
            log::info!("{user} registered on another device; disconnecting the old one");
            self.leave(&user, reason::NEW_LOGIN, now, effects);
            effects.push(Effect::ToConn {
                conn: old.clone(),
                event: ServerEvent::ForceDisconnect {
                    reason: reason::NEW_LOGIN,
                },
            });
            effects.push(Effect::Disconnect { conn: old });
        }
        self.users.insert(user.clone(), conn.clone());
        self.names.insert(conn.clone(), user.clone());
        log::info!("{user} registered");
        effects.push(reply(true, None));
        Ok(())
    }

    fn logout(
        &mut self,
        conn: &C,
        name: Option<String>,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) -> Result<(), SignalError> {
        let me = self
            .names
            .get(conn)
            .cloned()
            .ok_or(SignalError::NotRegistered)?;
        if name.is_some_and(|n| *n != *me) {
            return Err(SignalError::NotYourName);
        }
        self.leave(&me, reason::LOGGED_OUT, now, effects);
        Ok(())
    }

    /// Forgets a leaving user's call-rate bucket, unless it still holds
    /// back calls (leaving must not reset a limit).
    fn forget_rested_buckets(&mut self, user: &Rc<str>, now: Instant) {
        if let Some(bucket) = self.call_buckets.get_mut(user)
            && bucket.is_full(now)
        {
            self.call_buckets.remove(user);
        }
    }

    /// `user` stops being registered; their call ends for the peer.
    fn leave(
        &mut self,
        user: &Rc<str>,
        why: &'static str,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) {
        if let Some(conn) = self.users.remove(user) {
            self.names.remove(&conn);
        }
        self.forget_rested_buckets(user, now);
        log::info!("{user} left ({why})");
        self.end_call_of(user, why, effects);
    }

    fn end_call_of(&mut self, user: &Rc<str>, why: &'static str, effects: &mut Vec<Effect<C>>) {
        let Some((id, _)) = self.calls.of(user) else {
            return;
        };
        let Some(call) = self.calls.end(id) else {
            return;
        };
        if let Some(peer) = call.peer_of(user) {
            log::info!(
                "call {} -> {}: ended, {user} {why}",
                call.caller,
                call.callee
            );
            effects.push(Effect::ToUser {
                user: peer.clone(),
                event: ServerEvent::CallEnded {
                    from: user.clone(),
                    reason: Some(why),
                },
            });
        }
    }

    fn call_event(
        &mut self,
        me: Rc<str>,
        event: ClientEvent,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) -> Result<(), SignalError> {
        match event {
            ClientEvent::MakeCall { to, offer } => self.make_call(me, to, offer, now, effects),
            ClientEvent::AnswerCall { to, answer } => {
                let id = self.ringing_from(&me, &to)?;
                self.calls.answer(id, now);
                self.totals.answered += 1;
                log::info!("call {to} -> {me}: answered");
                effects.push(Effect::ToUser {
                    user: to.as_str().into(),
                    event: ServerEvent::CallAnswered {
                        from: me.clone(),
                        answer,
                    },
                });
                Ok(())
            }
            ClientEvent::DeclineCall { to } => {
                let id = self.ringing_from(&me, &to)?;
                self.calls.end(id);
                self.totals.declined += 1;
                log::info!("call {to} -> {me}: declined");
                effects.push(Effect::ToUser {
                    user: to.as_str().into(),
                    event: ServerEvent::CallDeclined { from: me.clone() },
                });
                Ok(())
            }
            ClientEvent::EndCall { to } => {
                let id = self.call_with(&me, &to)?;
                if let Some(call) = self.calls.end(id) {
                    log::info!("call {} -> {}: ended by {me}", call.caller, call.callee);
                }
                effects.push(Effect::ToUser {
                    user: to.as_str().into(),
                    event: ServerEvent::CallEnded {
                        from: me.clone(),
                        reason: None,
                    },
                });
                Ok(())
            }
            ClientEvent::IceCandidate { to, candidate } => {
                self.call_with(&me, &to)?;
                effects.push(Effect::ToUser {
                    user: to.as_str().into(),
                    event: ServerEvent::IceCandidate {
                        from: me.clone(),
                        candidate,
                    },
                });
                Ok(())
            }
            ClientEvent::RegisterUser { .. } | ClientEvent::LogoutUser { .. } => Ok(()),
        }
    }

    fn make_call(
        &mut self,
        me: Rc<str>,
        to: String,
        offer: Box<RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) -> Result<(), SignalError> {
        let (rate, burst) = self.call_rate;
        let allowed = self
            .call_buckets
            .entry(me.clone())
            .or_insert_with(|| Bucket::new(rate, burst, now))
            .take(now);
        let refusal = if !allowed {
            Some(SignalError::TooManyCalls)
        } else if !valid_user_name(&to) {
            Some(SignalError::InvalidUserName)
        } else if *me == *to {
            Some(SignalError::CallingYourself)
        } else if self.calls.of(&me).is_some() {
            Some(SignalError::AlreadyInCall)
        } else if !self.users.contains_key(to.as_str()) {
            Some(SignalError::UserOffline)
        } else {
            None
        };
        if let Some(error) = refusal {
            self.totals.failed += 1;
            log::info!("call {me} -> {to}: failed ({error})");
            effects.push(Effect::ToUser {
                user: me,
                event: ServerEvent::CallFailed {
                    error: error.to_string(),
                    target_user: to.into(),
                },
            });
            return Err(error);
        }
        if self.calls.of(&to).is_some() {
            self.totals.busy += 1;
            log::info!("call {me} -> {to}: busy");
            effects.push(Effect::ToUser {
                user: me,
                event: ServerEvent::CallBusy {
                    target_user: to.into(),
                },
            });
            return Err(SignalError::UserBusy);
        }
        let callee: Rc<str> = to.as_str().into();
        self.calls
            .ring(me.clone(), callee.clone(), now + self.call_timeout);
        log::info!("call {me} -> {callee}: ringing");
        effects.push(Effect::ToUser {
            user: callee,
            event: ServerEvent::IncomingCall {
                from: me.clone(),
                offer,
            },
        });
        Ok(())
    }

    /// The ringing call from `caller` to `me`.
    fn ringing_from(&self, me: &str, caller: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call))
                if call.is_ringing() && *call.callee == *me && *call.caller == *caller =>
            {
                Ok(id)
            }
            _ => Err(SignalError::NoIncomingCall),
        }
    }

    /// The ringing or active call between `me` and `peer`.
    fn call_with(&self, me: &str, peer: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call)) if call.peer_of(me).is_some_and(|p| **p == *peer) => Ok(id),
            _ => Err(SignalError::NoSuchCall),
        }
    }

    /// Whether `user` is in an answered call (for tests and metrics).
    pub fn in_active_call(&self, user: &str) -> bool {
        self.calls
            .of(user)
            .is_some_and(|(_, call)| matches!(call.state, CallState::Active { .. }))
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
