//! A namespace: the hooks an application sets for the sockets that join it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::value::RawValue;

use super::{Ack, ConnectError, DisconnectReason, Message, Socket};

type ConnectHook = dyn Fn(&Socket, Option<&RawValue>) -> Result<(), ConnectError>;
type GuardHook = dyn Fn(&Socket, Incoming<'_>) -> bool;
type EventHook = dyn Fn(&Socket, Message, Option<Ack>);
type FallbackHook = dyn Fn(&Socket, &str, Message, Option<Ack>);
type DisconnectHook = dyn Fn(&Socket, DisconnectReason);
type RecoverHook = dyn Fn(&Socket);

/// What a connected socket sent, as its namespace's guard sees it.
pub enum Incoming<'a> {
    /// An event, whether a handler takes it or not. A guard that refuses
    /// it may take the ack to answer.
    Event {
        /// The event's name as decoded: a string, or the JSON text of a number.
        name: &'a str,
        /// The ack the client asked for.
        ack: &'a mut Option<Ack>,
    },
    /// A CONNECT to the namespace the socket is already in.
    Reconnect,
}

/// A namespace: the hooks that run for its sockets.
pub struct Namespace {
    pub(super) name: String,
    pub(super) on_connect: RefCell<Option<Rc<ConnectHook>>>,
    pub(super) on_disconnect: RefCell<Option<Rc<DisconnectHook>>>,
    pub(super) on_recover: RefCell<Option<Rc<RecoverHook>>>,
    pub(super) guard: RefCell<Option<Rc<GuardHook>>>,
    pub(super) events: RefCell<HashMap<String, Rc<EventHook>>>,
    pub(super) fallback: RefCell<Option<Rc<FallbackHook>>>,
}

impl Namespace {
    /// The namespace's name, such as `/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the hook that runs when a client joins; it sees the auth payload
    /// and may refuse. Events it emits reach the client right after the
    /// CONNECT answer.
    pub fn on_connect(
        &self,
        hook: impl Fn(&Socket, Option<&RawValue>) -> Result<(), ConnectError> + 'static,
    ) -> &Self {
        *self.on_connect.borrow_mut() = Some(Rc::new(hook));
        self
    }

    /// Sets the handler of `event`; the [`Ack`] is there when the client
    /// asked for one.
    pub fn on(
        &self,
        event: &str,
        handler: impl Fn(&Socket, Message, Option<Ack>) + 'static,
    ) -> &Self {
        self.events
            .borrow_mut()
            .insert(event.to_owned(), Rc::new(handler));
        self
    }

    /// Sets the hook that runs first for whatever a connected socket sends:
    /// every event, handled or not, and a repeated CONNECT. Returning false
    /// drops it; answering the client is then the guard's business.
    pub fn guard(&self, hook: impl Fn(&Socket, Incoming<'_>) -> bool + 'static) -> &Self {
        *self.guard.borrow_mut() = Some(Rc::new(hook));
        self
    }

    /// Sets the handler of the events no [`on`](Self::on) handler takes; it
    /// gets the event name too. Without one, such events are dropped.
    pub fn on_fallback(
        &self,
        handler: impl Fn(&Socket, &str, Message, Option<Ack>) + 'static,
    ) -> &Self {
        *self.fallback.borrow_mut() = Some(Rc::new(handler));
        self
    }

    /// Whether the guard lets `incoming` through (true without a guard).
    pub(super) fn admits(&self, socket: &Socket, incoming: Incoming<'_>) -> bool {
        let guard = self.guard.borrow().clone();
        guard.is_none_or(|guard| guard(socket, incoming))
    }

    /// Sets the hook that runs when a socket whose connection was lost is
    /// recovered by its client (after the connect hook passed it again):
    /// what it emits reaches the client after what the socket kept and
    /// before the CONNECT answer.
    pub fn on_recover(&self, hook: impl Fn(&Socket) + 'static) -> &Self {
        *self.on_recover.borrow_mut() = Some(Rc::new(hook));
        self
    }

    /// Sets the hook that runs when a socket leaves, for any reason; for a
    /// lost connection, also when the socket may be recovered later.
    pub fn on_disconnect(&self, hook: impl Fn(&Socket, DisconnectReason) + 'static) -> &Self {
        *self.on_disconnect.borrow_mut() = Some(Rc::new(hook));
        self
    }
}
