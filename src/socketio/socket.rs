//! A socket: one client in one namespace, and the acks it asks for and is
//! asked for.

use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use super::namespace::Namespace;
use super::recovery::Kept;
use super::server::{Due, ServerInner};
use super::{AckError, DisconnectReason, Message, Server, packet};
use crate::engineio::{Data, SessionRef};

type AckCallback = Box<dyn FnOnce(Result<Message, AckError>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SocketState {
    /// The connect hook is running: emits wait for the CONNECT answer.
    Handshaking,
    /// Coming back on a new connection: what was kept, then the CONNECT
    /// answer, go out in that order.
    Recovering,
    Connected,
    /// Its connection was lost; it is kept, with what it is sent, for its
    /// client to come back (see [`super::recovery`]).
    Away,
    Disconnected,
}

pub(super) struct PendingAck {
    pub(super) callback: AckCallback,
    /// When the answer must have come.
    pub(super) deadline: Instant,
}

pub(super) struct SocketInner {
    pub(super) id: Rc<str>,
    pub(super) nsp: Rc<Namespace>,
    /// The connection it is on; another one after a recovery.
    pub(super) session: RefCell<SessionRef>,
    /// The id of the session it was first on, which its pid names.
    pub(super) origin: Rc<str>,
    pub(super) server: Weak<ServerInner>,
    pub(super) state: Cell<SocketState>,
    pub(super) held: RefCell<Vec<(String, Vec<Vec<u8>>)>>,
    /// What it keeps for its recovery; boxed, since most sockets keep nothing.
    pub(super) kept: RefCell<Option<Box<Kept>>>,
    pub(super) acks: RefCell<HashMap<u64, PendingAck>>,
    pub(super) next_ack: Cell<u64>,
}

/// One client in one namespace. Clones refer to the same socket.
#[derive(Clone)]
pub struct Socket(pub(super) Rc<SocketInner>);

impl PartialEq for Socket {
    fn eq(&self, other: &Socket) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Socket {}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id())
            .field("nsp", &self.namespace())
            .finish()
    }
}

impl Socket {
    /// The socket id, unique per namespace connection.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The socket id, shared.
    pub fn id_rc(&self) -> Rc<str> {
        self.0.id.clone()
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.0.nsp.name
    }

    /// The Engine.IO session underneath (shared by the client's
    /// namespaces); after a recovery, the new one.
    pub fn session(&self) -> SessionRef {
        self.0.session.borrow().clone()
    }

    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub fn address(&self) -> std::net::IpAddr {
        self.0.session.borrow().address()
    }

    /// Whether the socket is in its namespace on a live connection (not
    /// gone, not away waiting for its client to come back).
    pub fn connected(&self) -> bool {
        matches!(
            self.0.state.get(),
            SocketState::Handshaking | SocketState::Recovering | SocketState::Connected
        )
    }

    /// Whether the socket is away: its connection was lost, and it is kept
    /// for its client to recover it.
    pub fn away(&self) -> bool {
        self.0.state.get() == SocketState::Away
    }

    fn count_event(&self) {
        if let Some(server) = self.0.server.upgrade() {
            server.events_sent.set(server.events_sent.get() + 1);
        }
    }

    pub(super) fn send_packet(&self, text: String, attachments: Vec<Vec<u8>>) {
        match self.0.state.get() {
            SocketState::Handshaking => self.0.held.borrow_mut().push((text, attachments)),
            SocketState::Recovering | SocketState::Connected => {
                let session = self.0.session.borrow();
                session.send(Data::Text(text));
                for attachment in attachments {
                    session.send(Data::Binary(attachment));
                }
            }
            SocketState::Away | SocketState::Disconnected => {}
        }
    }

    /// Counts and sends an event (no ack asked): with recovery, kept while
    /// the socket is away, and with offsets, numbered and kept while
    /// connected too. One look at the server serves both, on every emit.
    fn send_event(&self, mut text: String, mut attachments: Vec<Vec<u8>>) {
        let server = self.0.server.upgrade();
        if let Some(server) = &server {
            server.events_sent.set(server.events_sent.get() + 1);
        }
        let Some(server) = server.filter(|s| s.config.recovery.enabled()) else {
            self.send_packet(text, attachments);
            return;
        };
        let state = self.0.state.get();
        let offsets = server.config.recovery.offsets;
        if state == SocketState::Disconnected || (state != SocketState::Away && !offsets) {
            self.send_packet(text, attachments);
            return;
        }
        let offset = server.next_offset();
        if offsets {
            packet::append_offset(&mut text, offset);
        }
        let away = state == SocketState::Away;
        let kept = {
            let mut kept = self.0.kept.borrow_mut();
            let kept = kept.get_or_insert_default();
            // Away, the packet is only kept; connected, it is sent and a
            // copy is the log an offset is looked up in.
            let (copy, copies) = if away {
                (std::mem::take(&mut text), std::mem::take(&mut attachments))
            } else {
                (text.clone(), attachments.clone())
            };
            let mut total = server.kept_total.get();
            let result = kept.push(
                offset,
                Instant::now(),
                copy,
                copies,
                server.config.recovery.window,
                &mut total,
            );
            server.kept_total.set(total);
            result
        };
        if away {
            if let Err(full) = kept {
                log::debug!(
                    "socket {}: too much kept while away ({full:?}); given up",
                    self.id()
                );
                self.forget();
            }
            return;
        }
        self.send_packet(text, attachments);
    }

    /// Emits `event` with JSON arguments.
    pub fn emit(&self, event: &str, args: &[impl Borrow<RawValue>]) {
        self.emit_binary(event, args, Vec::new());
    }

    /// Emits `event` with one argument, serialized straight into the packet.
    pub fn emit_value<T: Serialize + ?Sized>(&self, event: &str, arg: &T) {
        match packet::encode_event_value(self.namespace(), event, arg) {
            Ok(text) => {
                self.send_event(text, Vec::new());
            }
            Err(error) => log::error!("cannot serialize the {event} event: {error}"),
        }
    }

    /// Emits `event` with arguments and binary attachments, which the
    /// arguments refer to with [`placeholder`](super::placeholder)s.
    pub fn emit_binary(
        &self,
        event: &str,
        args: &[impl Borrow<RawValue>],
        attachments: Vec<Vec<u8>>,
    ) {
        let text = packet::encode_event(
            self.namespace(),
            None,
            event,
            args.iter().map(Borrow::borrow),
            attachments.len(),
        );
        self.send_event(text, attachments);
    }

    /// Emits `event` and asks the client to acknowledge it; `callback` gets
    /// the client's answer, or an error after `timeout` or on disconnect.
    pub fn emit_with_ack(
        &self,
        event: &str,
        args: &[impl Borrow<RawValue>],
        attachments: Vec<Vec<u8>>,
        timeout: Duration,
        callback: impl FnOnce(Result<Message, AckError>) + 'static,
    ) {
        if !self.connected() {
            callback(Err(AckError::Disconnected));
            return;
        }
        let id = self.0.next_ack.get();
        self.0.next_ack.set(id + 1);
        let deadline = Instant::now() + timeout;
        if let Some(server) = self.0.server.upgrade() {
            server.arm(deadline, self.ack_due(id));
        }
        self.0.acks.borrow_mut().insert(
            id,
            PendingAck {
                callback: Box::new(callback),
                deadline,
            },
        );
        let text = packet::encode_event(
            self.namespace(),
            Some(id),
            event,
            args.iter().map(Borrow::borrow),
            attachments.len(),
        );
        self.count_event();
        self.send_packet(text, attachments);
    }

    pub(super) fn settle_ack(&self, id: u64, result: Result<Message, AckError>) {
        let pending = self.0.acks.borrow_mut().remove(&id);
        if let Some(pending) = pending {
            self.disarm_ack(id, pending.deadline);
            (pending.callback)(result);
        }
    }

    /// The server's deadline for the answer to ack `id`.
    fn ack_due(&self, id: u64) -> Due {
        Due::Ack {
            sid: self.0.session.borrow().sid_rc(),
            socket: self.id_rc(),
            id,
        }
    }

    fn disarm_ack(&self, id: u64, deadline: Instant) {
        if let Some(server) = self.0.server.upgrade() {
            server.disarm(deadline, &self.ack_due(id));
        }
    }

    /// Removes the socket from its namespace: the client gets a DISCONNECT,
    /// the disconnect hook runs. The connection stays open. A socket that
    /// is away is given up: its client, coming back, gets a fresh one.
    pub fn disconnect(&self) {
        match self.0.state.get() {
            SocketState::Connected => {}
            SocketState::Away => return self.forget(),
            _ => return,
        }
        self.send_packet(packet::encode_disconnect(self.namespace()), Vec::new());
        if let Some(server) = self.0.server.upgrade() {
            Server(server).remove_socket(&self.session(), |s| s == self);
        }
        self.left(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Disconnects the socket, then closes its connection once what is
    /// queued has been delivered (socket.io's `disconnect(true)`).
    pub fn disconnect_and_close(&self) {
        let away = self.away();
        self.disconnect();
        if !away {
            self.session().close();
        }
    }

    /// The socket is gone: fail its pending acks, run the disconnect hook.
    pub(super) fn left(&self, reason: DisconnectReason) {
        match self.0.state.replace(SocketState::Disconnected) {
            SocketState::Disconnected => return,
            SocketState::Away => {
                self.0.state.set(SocketState::Away);
                return self.forget();
            }
            _ => {}
        }
        self.0.held.borrow_mut().clear();
        self.drop_kept();
        if let Some(server) = self.0.server.upgrade() {
            server.forget_move(self);
        }
        self.fail_acks();
        self.run_disconnect_hook(reason);
    }

    /// The connection was lost in a way its client may recover from: the
    /// socket is kept, and what it is sent too, until `until`. For the
    /// application it left (the disconnect hook runs); a recovery brings
    /// it back.
    pub(super) fn go_away(&self, server: &ServerInner, reason: DisconnectReason) {
        if self.0.state.get() != SocketState::Connected {
            return self.left(reason);
        }
        self.0.state.set(SocketState::Away);
        self.0
            .kept
            .borrow_mut()
            .get_or_insert_default()
            .away(server.peek_offset());
        server.keep_away(self);
        self.fail_acks();
        self.run_disconnect_hook(reason);
    }

    /// Gives up a socket that is away: it will not be recovered.
    pub(super) fn forget(&self) {
        if self.0.state.get() != SocketState::Away {
            return;
        }
        self.0.state.set(SocketState::Disconnected);
        self.drop_kept();
        if let Some(server) = self.0.server.upgrade() {
            server.release_away(self);
            server.forget_move(self);
        }
    }

    /// Drops what the socket kept, giving its bytes back to the server's total.
    pub(super) fn drop_kept(&self) {
        if let Some(mut kept) = self.0.kept.borrow_mut().take()
            && let Some(server) = self.0.server.upgrade()
        {
            let mut total = server.kept_total.get();
            kept.clear(&mut total);
            server.kept_total.set(total);
        }
    }

    pub(super) fn fail_acks(&self) {
        let pending: Vec<(u64, PendingAck)> = self.0.acks.borrow_mut().drain().collect();
        for (id, ack) in pending {
            self.disarm_ack(id, ack.deadline);
            (ack.callback)(Err(AckError::Disconnected));
        }
    }

    fn run_disconnect_hook(&self, reason: DisconnectReason) {
        let hook = self.0.nsp.on_disconnect.borrow().clone();
        if let Some(hook) = hook {
            hook(self, reason);
        }
    }
}

/// The means to answer an event the client sent with an ack id.
pub struct Ack {
    pub(super) socket: Socket,
    pub(super) id: u64,
}

impl Ack {
    /// Answers with JSON arguments.
    pub fn send(self, args: &[impl Borrow<RawValue>]) {
        self.send_binary(args, Vec::new());
    }

    /// Answers with arguments and binary attachments.
    pub fn send_binary(self, args: &[impl Borrow<RawValue>], attachments: Vec<Vec<u8>>) {
        let text = packet::encode_ack(
            self.socket.namespace(),
            self.id,
            args.iter().map(Borrow::borrow),
            attachments.len(),
        );
        self.socket.send_packet(text, attachments);
    }
}
