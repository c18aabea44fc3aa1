//! Users whose phones sleep: their push subscriptions, and the calls that
//! ring them while no device of theirs is connected. Such a user rings as
//! if they were there: each subscription is pushed `incoming_call`, what
//! the call sends them meanwhile is kept, and the first device of theirs
//! to register within the ring time gets it all, the offer first. When the
//! call ends before that (the caller hangs up, it rings out, another
//! member answers), each subscription is pushed `call_cancelled`, so that
//! no ghost call rings later.

use std::collections::VecDeque;
use std::hash::Hash;
use std::rc::Rc;

use super::{Effect, Hub, MAX_HELD_BYTES, MAX_HELD_EVENTS, Shared};
use crate::logging::untrusted;
use crate::push::{PushMessage, Subscription};
use crate::signaling::calls::CallId;
use crate::signaling::peer::PeerMessage;
use crate::signaling::protocol::MissedCall;
use crate::signaling::protocol::{ServerEvent, SignalError};

/// The most push subscriptions a user keeps (one per device); a new one
/// past it replaces their oldest.
pub const MAX_SUBSCRIPTIONS_PER_USER: usize = 8;

/// The most push subscriptions the server keeps in all.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// A call ringing a user none of whose devices is connected.
#[derive(Debug)]
pub(super) struct Waking {
    /// The call, as its pushes name it.
    call: CallId,
    /// What it sent the user meanwhile, in order.
    queue: VecDeque<ServerEvent>,
    /// About how many bytes `queue` holds.
    bytes: usize,
}

/// The id a call has in its pushes: `incoming_call` and `call_cancelled`
/// repeat it, and it is their Topic.
pub fn push_call_id(call: CallId) -> String {
    format!("c{call}")
}

impl<S: Clone + Eq + Hash> Hub<S> {
    /// `register_push`: keeps `subscription` for `user` (the same endpoint
    /// again replaces its keys).
    pub(super) fn add_subscription(
        &mut self,
        user: &Rc<str>,
        subscription: Subscription,
        effects: &mut Vec<Effect<S>>,
    ) -> Result<(), SignalError> {
        self.push_policy
            .check(&subscription.target)
            .map_err(|error| SignalError::Push(error.to_string()))?;
        if self.several_nodes {
            log::info!("{} subscribed to pushes", untrusted(user));
            let user = user.clone();
            effects.push(Effect::Shared(Shared::Subscribe { user, subscription }));
            return Ok(());
        }
        let total = self.subscription_count;
        let theirs = self.subscriptions.entry(user.clone()).or_default();
        if let Some(same) = theirs
            .iter_mut()
            .find(|s| s.endpoint == subscription.endpoint)
        {
            *same = subscription;
            self.state_changed = true;
            return Ok(());
        }
        if theirs.len() >= MAX_SUBSCRIPTIONS_PER_USER {
            theirs.remove(0);
        } else if total >= MAX_SUBSCRIPTIONS {
            if theirs.is_empty() {
                self.subscriptions.remove(user);
            }
            return Err(SignalError::Push(
                "too many push subscriptions on this server".to_owned(),
            ));
        } else {
            self.subscription_count += 1;
        }
        theirs.push(subscription);
        self.state_changed = true;
        log::info!(
            "{} subscribed to pushes ({} now)",
            untrusted(user),
            theirs.len()
        );
        Ok(())
    }

    /// `unregister_push`, or a push service that said the subscription is
    /// gone: forgets it.
    pub fn remove_subscription(
        &mut self,
        user: &Rc<str>,
        endpoint: &str,
        effects: &mut Vec<Effect<S>>,
    ) -> bool {
        if self.several_nodes {
            effects.push(Effect::Shared(Shared::Unsubscribe {
                user: user.clone(),
                endpoint: endpoint.to_owned(),
            }));
            return true;
        }
        let Some(theirs) = self.subscriptions.get_mut(user) else {
            return false;
        };
        let before = theirs.len();
        theirs.retain(|s| s.endpoint != endpoint);
        let removed = before - theirs.len();
        self.subscription_count -= removed;
        if theirs.is_empty() {
            self.subscriptions.remove(user);
        }
        self.state_changed |= removed > 0;
        removed > 0
    }

    /// `user`'s push subscriptions.
    pub fn subscriptions_of(&self, user: &str) -> &[Subscription] {
        self.subscriptions.get(user).map_or(&[], Vec::as_slice)
    }

    /// How many push subscriptions the hub keeps.
    pub fn subscription_count(&self) -> usize {
        self.subscription_count
    }

    /// Whether `user` may be rung though no device of theirs is here: they
    /// have push subscriptions (on several nodes: Redis just said so, in
    /// the claim being settled).
    pub(super) fn pushable(&self, user: &str) -> bool {
        if self.several_nodes {
            self.asleep.contains(user)
        } else {
            self.subscriptions.contains_key(user)
        }
    }

    /// Whether `user` is being woken for a call.
    pub fn is_waking(&self, user: &str) -> bool {
        self.waking.contains_key(user)
    }

    /// Call `id` rings `user`, none of whose devices is here: their
    /// subscriptions are pushed, and what the call sends them is kept.
    pub(super) fn wake(
        &mut self,
        id: CallId,
        caller: &Rc<str>,
        user: &Rc<str>,
        group: Option<&Rc<str>>,
        effects: &mut Vec<Effect<S>>,
    ) {
        log::info!(
            "call {} -> {}: no device connected; pushing",
            untrusted(caller),
            untrusted(user)
        );
        self.waking.insert(
            user.clone(),
            Waking {
                call: id,
                queue: VecDeque::new(),
                bytes: 0,
            },
        );
        effects.push(Effect::Push {
            user: user.clone(),
            message: PushMessage::IncomingCall {
                from: caller.clone(),
                group: group.cloned(),
                call: push_call_id(id),
            },
        });
    }

    /// Keeps `event` for a user being woken (true), or pushes
    /// `call_cancelled` when it ends their call (then `missed_call`, the
    /// call it made `missed`); false when they are not being woken.
    pub(super) fn keep_for_waking(
        &mut self,
        user: &Rc<str>,
        event: ServerEvent,
        missed: Option<MissedCall>,
        effects: &mut Vec<Effect<S>>,
    ) -> bool {
        let Some(waking) = self.waking.get_mut(user) else {
            return false;
        };
        let reason: Rc<str> = match &event {
            ServerEvent::CallEnded { reason, .. } => reason.unwrap_or("ended").into(),
            ServerEvent::CallTimeout { .. } => "timeout".into(),
            _ => {
                let size = event.size();
                if waking.queue.len() < MAX_HELD_EVENTS && waking.bytes + size <= MAX_HELD_BYTES {
                    waking.bytes += size;
                    waking.queue.push_back(event);
                }
                return true;
            }
        };
        let call = waking.call;
        self.waking.remove(user);
        log::info!(
            "{}: the call it was woken for is over ({reason})",
            untrusted(user)
        );
        effects.push(Effect::Push {
            user: user.clone(),
            message: PushMessage::CallCancelled {
                call: push_call_id(call),
                reason,
            },
        });
        if let Some(MissedCall {
            from,
            group,
            at,
            reason,
        }) = missed
        {
            let call = push_call_id(call);
            let message = PushMessage::MissedCall {
                from,
                group,
                at,
                reason,
                call,
            };
            effects.push(Effect::Push {
                user: user.clone(),
                message,
            });
        }
        true
    }

    /// Several nodes: a device of `user`, whom a call here was waking,
    /// registered on another node. The call rings them there now: what it
    /// sent meanwhile goes to that node, the offer first, as it would
    /// have had they been there (and their claim is that node's to hold).
    pub(super) fn woken_elsewhere(&mut self, user: &Rc<str>, effects: &mut Vec<Effect<S>>) {
        if self.users.contains_key(user) {
            // Registered here after all: `welcome` gave them the call.
            return;
        }
        let Some(queue) = self.take_woken(user, "on another node ") else {
            return;
        };
        for event in queue {
            if let Some(message) = PeerMessage::for_event(user, event) {
                effects.push(Effect::ToPeer {
                    user: user.clone(),
                    message,
                });
            }
        }
    }

    /// A device of `user` registered on `socket`: a call that was waking
    /// them is theirs now, with what it sent meanwhile.
    pub(super) fn woken(&mut self, user: &Rc<str>, socket: &S, effects: &mut Vec<Effect<S>>) {
        let Some(queue) = self.take_woken(user, "") else {
            return;
        };
        effects.extend(queue.into_iter().map(|event| Effect::ToSocket {
            socket: socket.clone(),
            event,
        }));
    }

    /// `user` woke up (`where_` says where, for the log): what the call
    /// that was waking them sent meanwhile, if it is still on. One that
    /// ended without word reaching them (every end tells them, and is
    /// pushed) leaves nothing of it theirs.
    fn take_woken(&mut self, user: &Rc<str>, where_: &str) -> Option<VecDeque<ServerEvent>> {
        let waking = self.waking.remove(user)?;
        self.calls.get(waking.call)?;
        log::info!(
            "{} woke up {where_}for its call ({} events kept)",
            untrusted(user),
            waking.queue.len()
        );
        Some(waking.queue)
    }
}
