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

use super::calls::{Call, CallState, Calls};
use super::limits::Limits;
use super::peer::{PeerMessage, known_reason};
use super::protocol::{ClientEvent, ServerEvent, SignalError, reason, valid_user_name};
use crate::logging::untrusted;
use crate::rate::Bucket;

/// What the I/O side must do after the hub handled something. `C`
/// identifies a connection (a socket).
#[derive(Debug, Clone)]
pub enum Effect<C> {
    /// Send `event` to this connection: the one its user was registered
    /// on when the hub decided, whoever is registered there by the time
    /// it is carried out.
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
    /// Send `message` to the node where `user` is connected (several
    /// nodes): the other party of a call is not here.
    ToPeer {
        /// The user on the other node.
        user: Rc<str>,
        /// What their hub must know.
        message: PeerMessage,
    },
    /// `user` registered here: the I/O side logs it with the client's
    /// address; several nodes publish where the user is.
    Joined {
        /// The user.
        user: Rc<str>,
        /// Their connection.
        conn: C,
    },
    /// `user` is no longer registered here (several nodes: withdraw it).
    Left {
        /// The user.
        user: Rc<str>,
    },
    /// The call between `caller` and `callee` ended here (several nodes:
    /// release what the cluster holds for both parties). The node where a
    /// call ends says so, before it tells the other party's node, which
    /// does not.
    CallOver {
        /// The call's caller.
        caller: Rc<str>,
        /// The call's callee.
        callee: Rc<str>,
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

/// How long past its ring timeout a call whose caller is on another node
/// waits for that node's word before it ends here anyway.
const PEER_GRACE: Duration = Duration::from_secs(5);

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
    /// Call-rate buckets of users who called lately, online or not: kept
    /// until full again, so that leaving does not reset a limit, then
    /// swept, so that the map follows the callers of the last minute, not
    /// every name ever seen.
    call_buckets: HashMap<Rc<str>, Bucket>,
    /// When the buckets are next swept; `None` while there are none.
    next_sweep: Option<Instant>,
    /// Bucket places the sweeps gave back since [`Hub::take_swept`].
    swept: usize,
}

/// How often full call-rate buckets are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

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
            next_sweep: None,
            swept: 0,
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

    /// Every registered user with their connection.
    pub fn registrations(&self) -> Vec<(Rc<str>, C)> {
        self.users
            .iter()
            .map(|(user, conn)| (user.clone(), conn.clone()))
            .collect()
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
        match (self.calls.next_deadline(), self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the calls whose ringing time is up (deadline at or before
    /// `now`), and sweeps the call-rate buckets when that is due.
    pub fn expire(&mut self, now: Instant) -> Vec<Effect<C>> {
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        let mut effects = Vec::new();
        for call in self.calls.expire(now) {
            self.totals.timeout += 1;
            log::info!(
                "call {} -> {}: timed out",
                untrusted(&call.caller),
                untrusted(&call.callee)
            );
            self.over(&call, &mut effects);
            for (to, other) in [(&call.caller, &call.callee), (&call.callee, &call.caller)] {
                let event = ServerEvent::CallTimeout {
                    user: other.clone(),
                };
                self.tell(to, event, &mut effects);
            }
        }
        effects
    }

    /// Forgets the call-rate buckets that are full again (a fresh one is
    /// the same), and gives the map's room back once it emptied out.
    fn sweep(&mut self, now: Instant) {
        self.call_buckets.retain(|_, bucket| !bucket.is_full(now));
        let capacity = self.call_buckets.capacity();
        if capacity > 2 * self.call_buckets.len() + 16 {
            self.call_buckets.shrink_to_fit();
            self.swept += capacity - self.call_buckets.capacity();
        }
        self.next_sweep = (!self.call_buckets.is_empty()).then(|| now + SWEEP_EVERY);
    }

    /// How many places for call-rate buckets the sweeps gave back since the
    /// last call: the I/O side may hand the memory back to the system.
    pub fn take_swept(&mut self) -> usize {
        std::mem::take(&mut self.swept)
    }

    /// How many call-rate buckets the hub keeps (for tests and benchmarks).
    pub fn call_bucket_count(&self) -> usize {
        self.call_buckets.len()
    }

    /// Handles one client event from `conn` at `now`.
    pub fn handle(&mut self, conn: &C, event: ClientEvent, now: Instant) -> Outcome<C> {
        // Anything due first: an answer at the very deadline finds the call gone.
        let mut effects = self.expire(now);
        let result = match event {
            ClientEvent::RegisterUser { user_id } => self.register(conn, user_id, &mut effects),
            ClientEvent::LogoutUser { user_id } => self.logout(conn, user_id, &mut effects),
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
            log::info!("{} disconnected", untrusted(&user));
            self.end_call_of(&user, reason::DISCONNECTED, &mut effects);
            effects.push(Effect::Left { user });
        }
        effects
    }

    /// Ends every call, telling both parties `reason`.
    pub fn end_all_calls(&mut self, reason: &'static str) -> Vec<Effect<C>> {
        let mut effects = Vec::new();
        for call in self.calls.end_all() {
            log::info!(
                "call {} -> {}: ended ({reason})",
                untrusted(&call.caller),
                untrusted(&call.callee)
            );
            self.over(&call, &mut effects);
            for (to, from) in [(&call.caller, &call.callee), (&call.callee, &call.caller)] {
                let event = ServerEvent::CallEnded {
                    from: from.clone(),
                    reason: Some(reason),
                };
                self.tell(to, event, &mut effects);
            }
        }
        effects
    }

    /// Sends `event` to `user`: to their socket when they are connected
    /// here, else as a message to the node that has them.
    fn tell(&self, user: &Rc<str>, event: ServerEvent, effects: &mut Vec<Effect<C>>) {
        if let Some(conn) = self.users.get(user) {
            effects.push(Effect::ToConn {
                conn: conn.clone(),
                event,
            });
        } else if let Some(message) = PeerMessage::for_event(user, event) {
            effects.push(Effect::ToPeer {
                user: user.clone(),
                message,
            });
        }
    }

    /// A call ended here: both parties are free again.
    fn over(&self, call: &Call, effects: &mut Vec<Effect<C>>) {
        effects.push(Effect::CallOver {
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        });
    }

    fn register(
        &mut self,
        conn: &C,
        name: String,
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
                self.leave(&current, reason::LOGGED_OUT, effects);
            }
            None => {}
        }
        let user: Rc<str> = name.as_str().into();
        if let Some(old) = self.users.get(&user).cloned() {
            // One device per user: the newest registration wins.
            log::info!(
                "{} registered on another device; disconnecting the old one",
                untrusted(&user)
            );
            self.leave(&user, reason::NEW_LOGIN, effects);
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
        effects.push(Effect::Joined {
            user,
            conn: conn.clone(),
        });
        effects.push(reply(true, None));
        Ok(())
    }

    fn logout(
        &mut self,
        conn: &C,
        name: Option<String>,
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
        self.leave(&me, reason::LOGGED_OUT, effects);
        Ok(())
    }

    /// `user` stops being registered; their call ends for the peer.
    fn leave(&mut self, user: &Rc<str>, why: &'static str, effects: &mut Vec<Effect<C>>) {
        let present = self.users.remove(user).inspect(|conn| {
            self.names.remove(conn);
        });
        log::info!("{} left ({why})", untrusted(user));
        self.end_call_of(user, why, effects);
        // Withdrawn after the call's end went out: a message from the peer
        // meanwhile still finds the user, and the peer hears `why`.
        if present.is_some() {
            effects.push(Effect::Left { user: user.clone() });
        }
    }

    fn end_call_of(&mut self, user: &Rc<str>, why: &'static str, effects: &mut Vec<Effect<C>>) {
        let Some((id, _)) = self.calls.of(user) else {
            return;
        };
        let Some(call) = self.calls.end(id) else {
            return;
        };
        log::info!(
            "call {} -> {}: ended, {} {why}",
            untrusted(&call.caller),
            untrusted(&call.callee),
            untrusted(user)
        );
        self.over(&call, effects);
        if let Some(peer) = call.peer_of(user) {
            let event = ServerEvent::CallEnded {
                from: user.clone(),
                reason: Some(why),
            };
            self.tell(peer, event, effects);
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
            ClientEvent::MakeCall { to, offer } => {
                let refusal = self.call_refusal(&me, &to, now).or_else(|| {
                    if !self.users.contains_key(to.as_str()) {
                        Some(SignalError::UserOffline)
                    } else if self.calls.of(&to).is_some() {
                        Some(SignalError::UserBusy)
                    } else {
                        None
                    }
                });
                match refusal {
                    Some(error) => {
                        self.refuse_call(&me, to.into(), &error, effects);
                        Err(error)
                    }
                    None => {
                        self.start_call(me, to.into(), offer, now, effects);
                        Ok(())
                    }
                }
            }
            ClientEvent::AnswerCall { to, answer } => {
                let id = self.ringing_from(&me, &to)?;
                self.calls.answer(id, now);
                self.totals.answered += 1;
                log::info!("call {} -> {}: answered", untrusted(&to), untrusted(&me));
                let event = ServerEvent::CallAnswered {
                    from: me.clone(),
                    answer,
                };
                self.tell(&to.into(), event, effects);
                Ok(())
            }
            ClientEvent::DeclineCall { to } => {
                let id = self.ringing_from(&me, &to)?;
                if let Some(call) = self.calls.end(id) {
                    self.over(&call, effects);
                }
                self.totals.declined += 1;
                log::info!("call {} -> {}: declined", untrusted(&to), untrusted(&me));
                let event = ServerEvent::CallDeclined { from: me.clone() };
                self.tell(&to.into(), event, effects);
                Ok(())
            }
            ClientEvent::EndCall { to } => {
                let id = self.call_with(&me, &to)?;
                if let Some(call) = self.calls.end(id) {
                    log::info!(
                        "call {} -> {}: ended by {}",
                        untrusted(&call.caller),
                        untrusted(&call.callee),
                        untrusted(&me)
                    );
                    self.over(&call, effects);
                }
                let event = ServerEvent::CallEnded {
                    from: me.clone(),
                    reason: None,
                };
                self.tell(&to.into(), event, effects);
                Ok(())
            }
            ClientEvent::IceCandidate { to, candidate } => {
                self.call_with(&me, &to)?;
                let event = ServerEvent::IceCandidate {
                    from: me.clone(),
                    candidate,
                };
                self.tell(&to.into(), event, effects);
                Ok(())
            }
            ClientEvent::RegisterUser { .. } | ClientEvent::LogoutUser { .. } => Ok(()),
        }
    }

    /// What refuses a call from `me` to `to` before anyone else is asked:
    /// the caller's rate, the name, calling oneself, being in a call already.
    fn call_refusal(&mut self, me: &Rc<str>, to: &str, now: Instant) -> Option<SignalError> {
        let (rate, burst) = self.call_rate;
        let allowed = self
            .call_buckets
            .entry(me.clone())
            .or_insert_with(|| Bucket::new(rate, burst, now))
            .take(now);
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        if !allowed {
            Some(SignalError::TooManyCalls)
        } else if !valid_user_name(to) {
            Some(SignalError::InvalidUserName)
        } else if **me == *to {
            Some(SignalError::CallingYourself)
        } else if self.calls.of(me).is_some() {
            Some(SignalError::AlreadyInCall)
        } else {
            None
        }
    }

    /// Tells the caller why their call was not made.
    /// (Counted in the totals of the caller's node only.)
    fn refuse_call(
        &mut self,
        me: &Rc<str>,
        to: Rc<str>,
        error: &SignalError,
        effects: &mut Vec<Effect<C>>,
    ) {
        let here = self.users.contains_key(me);
        let event = if *error == SignalError::UserBusy {
            self.totals.busy += u64::from(here);
            log::info!("call {} -> {}: busy", untrusted(me), untrusted(&to));
            ServerEvent::CallBusy { target_user: to }
        } else {
            self.totals.failed += u64::from(here);
            log::info!(
                "call {} -> {}: failed ({error})",
                untrusted(me),
                untrusted(&to)
            );
            ServerEvent::CallFailed {
                error: error.to_string(),
                target_user: to,
            }
        };
        self.tell(me, event, effects);
    }

    /// Rings `callee` for `me`.
    fn start_call(
        &mut self,
        me: Rc<str>,
        callee: Rc<str>,
        offer: Box<RawValue>,
        now: Instant,
        effects: &mut Vec<Effect<C>>,
    ) {
        self.calls
            .ring(me.clone(), callee.clone(), now + self.call_timeout);
        log::info!("call {} -> {}: ringing", untrusted(&me), untrusted(&callee));
        let event = ServerEvent::IncomingCall { from: me, offer };
        self.tell(&callee, event, effects);
    }

    /// The first half of `make_call` on several nodes: the checks this node
    /// can make alone. `Ok(caller)`: claim both users in the cluster, then
    /// finish with [`Hub::call_claimed`] or [`Hub::call_refused`].
    pub fn begin_call(&mut self, conn: &C, to: &str, now: Instant) -> Result<Rc<str>, Outcome<C>> {
        let mut effects = self.expire(now);
        let Some(me) = self.names.get(conn).cloned() else {
            return Err(Outcome {
                result: Err(SignalError::NotRegistered),
                effects,
            });
        };
        match self.call_refusal(&me, to, now) {
            None => Ok(me),
            Some(error) => {
                self.refuse_call(&me, to.into(), &error, &mut effects);
                Err(Outcome {
                    result: Err(error),
                    effects,
                })
            }
        }
    }

    /// The cluster claimed both users for the call: ring the callee. Should
    /// the caller have left or started another call meanwhile, the claims
    /// go back.
    pub fn call_claimed(
        &mut self,
        caller: Rc<str>,
        callee: &str,
        offer: Box<RawValue>,
        now: Instant,
    ) -> Outcome<C> {
        let mut effects = self.expire(now);
        let callee: Rc<str> = callee.into();
        if !self.users.contains_key(&caller) || self.calls.of(&caller).is_some() {
            effects.push(Effect::CallOver { caller, callee });
            return Outcome {
                result: Err(SignalError::AlreadyInCall),
                effects,
            };
        }
        if self.users.contains_key(&callee) && self.calls.of(&callee).is_some() {
            // Redis found the callee free, but the end of their last call
            // (decided on another node) has not reached this one yet: busy
            // for a moment more.
            effects.push(Effect::CallOver {
                caller: caller.clone(),
                callee: callee.clone(),
            });
            let error = SignalError::UserBusy;
            self.refuse_call(&caller, callee, &error, &mut effects);
            return Outcome {
                result: Err(error),
                effects,
            };
        }
        self.start_call(caller, callee, offer, now, &mut effects);
        Outcome {
            result: Ok(()),
            effects,
        }
    }

    /// The cluster refused the call (`UserOffline`, `UserBusy`,
    /// `AlreadyInCall`): tell the caller.
    pub fn call_refused(
        &mut self,
        caller: Rc<str>,
        callee: &str,
        error: SignalError,
    ) -> Outcome<C> {
        let mut effects = Vec::new();
        self.refuse_call(&caller, callee.into(), &error, &mut effects);
        Outcome {
            result: Err(error),
            effects,
        }
    }

    /// A message from another node's hub about one of our users.
    pub fn peer(&mut self, message: PeerMessage, now: Instant) -> Vec<Effect<C>> {
        let mut effects = self.expire(now);
        match message {
            PeerMessage::Ring { from, to, offer } => {
                let refusal = if !self.users.contains_key(&to) {
                    Some(SignalError::UserOffline)
                } else if self.calls.of(&to).is_some() || self.calls.of(&from).is_some() {
                    // The cluster thought them free (an end not heard here
                    // yet); the claims go back (released only where they
                    // are this call's).
                    Some(SignalError::UserBusy)
                } else {
                    None
                };
                if let Some(error) = refusal {
                    effects.push(Effect::CallOver {
                        caller: from.clone(),
                        callee: to.clone(),
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
                    let event = ServerEvent::IncomingCall { from, offer };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::Refused { from, to, busy } => {
                if let Ok(id) = self.ringing_to(&to, &from) {
                    // The callee's node released the claims.
                    self.calls.end(id);
                    let error = if busy {
                        SignalError::UserBusy
                    } else {
                        SignalError::UserOffline
                    };
                    self.refuse_call(&to, from, &error, &mut effects);
                }
            }
            PeerMessage::Answered { from, to, answer } => {
                if let Ok(id) = self.ringing_to(&to, &from) {
                    self.calls.answer(id, now);
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
                if let Ok(id) = self.ringing_to(&to, &from) {
                    self.calls.end(id);
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
                if self.call_with(&to, &from).is_ok() {
                    let event = ServerEvent::IceCandidate { from, candidate };
                    self.tell(&to, event, &mut effects);
                }
            }
            PeerMessage::TimedOut { from, to } => {
                if let Ok(id) = self.call_with(&to, &from) {
                    // Counted by the caller's node, which owns the timeout.
                    self.calls.end(id);
                    log::info!(
                        "call {} -> {}: timed out (on another node)",
                        untrusted(&from),
                        untrusted(&to)
                    );
                    self.tell(&to, ServerEvent::CallTimeout { user: from }, &mut effects);
                }
            }
            PeerMessage::Kick { user, .. } => {
                if let Some(conn) = self.users.get(&user).cloned() {
                    log::info!(
                        "{} registered on another node; disconnecting this device",
                        untrusted(&user)
                    );
                    self.leave(&user, reason::NEW_LOGIN, &mut effects);
                    effects.push(Effect::ToConn {
                        conn: conn.clone(),
                        event: ServerEvent::ForceDisconnect {
                            reason: reason::NEW_LOGIN,
                        },
                    });
                    effects.push(Effect::Disconnect { conn });
                }
            }
        }
        effects
    }

    /// `peer`, on another node, is gone (its node died, or it left without
    /// word): the call with them ends.
    pub fn peer_lost(&mut self, peer: &str, now: Instant) -> Vec<Effect<C>> {
        let mut effects = self.expire(now);
        if self.users.contains_key(peer) {
            return effects;
        }
        let locals: Vec<Rc<str>> = self
            .users
            .keys()
            .filter(|user| self.call_with(user, peer).is_ok())
            .cloned()
            .collect();
        for user in locals {
            let why = Some(reason::DISCONNECTED);
            self.end_with_peer(&user, peer.into(), why, true, &mut effects);
        }
        effects
    }

    /// The users in calls with our users who are not connected here, each
    /// with the call's caller and callee: their claim must hold that.
    pub fn remote_peers(&self) -> Vec<(Rc<str>, Rc<str>, Rc<str>)> {
        let mut peers: Vec<(Rc<str>, Rc<str>, Rc<str>)> = self
            .users
            .keys()
            .filter_map(|user| {
                let (_, call) = self.calls.of(user)?;
                let peer = call.peer_of(user)?;
                (!self.users.contains_key(peer))
                    .then(|| (peer.clone(), call.caller.clone(), call.callee.clone()))
            })
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Our users in calls, each with its call's caller and callee: what the
    /// cluster holds claims for.
    pub fn calls_here(&self) -> Vec<(Rc<str>, Rc<str>, Rc<str>)> {
        self.users
            .keys()
            .filter_map(|user| {
                let (_, call) = self.calls.of(user)?;
                Some((user.clone(), call.caller.clone(), call.callee.clone()))
            })
            .collect()
    }

    /// Ends `me`'s call with `peer` (on another node), telling `me` why;
    /// `release`: this node releases the claims (the peer's node cannot).
    fn end_with_peer(
        &mut self,
        me: &Rc<str>,
        peer: Rc<str>,
        why: Option<&'static str>,
        release: bool,
        effects: &mut Vec<Effect<C>>,
    ) {
        let Ok(id) = self.call_with(me, &peer) else {
            return;
        };
        if let Some(call) = self.calls.end(id) {
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

    /// The ringing call `me` made to `callee`.
    fn ringing_to(&self, me: &str, callee: &str) -> Result<u64, SignalError> {
        match self.calls.of(me) {
            Some((id, call))
                if call.is_ringing() && *call.caller == *me && *call.callee == *callee =>
            {
                Ok(id)
            }
            _ => Err(SignalError::NoSuchCall),
        }
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
