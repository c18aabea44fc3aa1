//! The Socket.IO server: the Engine.IO handler of an endpoint, its
//! clients (one per Engine.IO session), their namespaces and connect
//! timeouts.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::assembly::{AssemblyError, Partial, assemble};
use super::namespace::Namespace;
use super::recovery::{Pids, Returning};
use super::socket::{SocketInner, SocketState};
use super::{Ack, AckError, Config, DisconnectReason, Incoming, Message, Socket, packet};
use crate::engineio::{CloseReason, Data, Handler, Protocol, Session, SessionRef};
use crate::id::IdMap;
use crate::rt::{Alarm, Wake};
use packet::Packet;

/// One Engine.IO session's Socket.IO state.
struct Client {
    session: SessionRef,
    sockets: Vec<Socket>,
    /// Boxed: rare, and inline it would widen every client's map slot.
    partial: Option<Box<Partial>>,
    /// When the session is closed unless it joins a namespace by then;
    /// `None` while it is in one.
    connect_by: Option<Instant>,
    /// CONNECT packets so far; past [`MAX_CONNECTS`] the session is closed.
    connects: u32,
}

/// How many away sockets must have been given up for their memory to be
/// handed back to the system (a few MiB).
const EXPIRED_ENOUGH_TO_GIVE_BACK: usize = 4096;

/// How long a session closed at its connect timeout may take to collect
/// what is queued for it.
const CONNECT_TIMEOUT_LINGER: Duration = Duration::from_secs(1);

/// The most CONNECT packets one Engine.IO session may send. A client joins
/// each namespace once (again after leaving it, rarely); leaving and
/// joining over and over would also start a fresh socket, and whatever the
/// application counts per socket, each time.
const MAX_CONNECTS: u32 = 32;

pub(super) struct ServerInner {
    pub(super) config: Config,
    namespaces: RefCell<HashMap<String, Rc<Namespace>>>,
    clients: RefCell<IdMap<Rc<str>, Client>>,
    /// The clients in no namespace, by the time their connect timeout
    /// runs out; the alarm is set to the first.
    deadlines: RefCell<BTreeSet<(Instant, Due)>>,
    alarm: Alarm,
    events_received: Cell<u64>,
    pub(super) events_sent: Cell<u64>,
    /// The sockets that are away, by private id, each with the time it is
    /// given up at.
    away: RefCell<HashMap<Rc<str>, (Socket, Instant)>>,
    /// The key private ids are made with.
    pids: Pids,
    /// Recovered sockets: the session each was first on (which its pid
    /// names) → the session it is on now.
    moved: RefCell<HashMap<Rc<str>, Rc<str>>>,
    /// What every socket keeps for its recovery, in bytes.
    pub(super) kept_total: Cell<usize>,
    /// The offset of the next event kept.
    offset: Cell<u64>,
    recoveries: Cell<u64>,
    /// Away sockets given up at the end of their window since memory was
    /// last handed back.
    expired_since_give_back: Cell<usize>,
}

/// Event counts, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Events received from clients.
    pub events_received: u64,
    /// Events emitted to clients.
    pub events_sent: u64,
    /// Sockets away now, waiting for their client to come back.
    pub away: usize,
    /// Sockets recovered since start.
    pub recovered: u64,
    /// Bytes kept for recoveries now.
    pub kept_bytes: usize,
}

/// A Socket.IO server: its namespaces and connected clients.
#[derive(Clone)]
pub struct Server(pub(super) Rc<ServerInner>);

impl Server {
    /// A server with no namespaces.
    pub fn new(config: Config) -> Server {
        Server(Rc::new_cyclic(|me: &Weak<ServerInner>| ServerInner {
            config,
            namespaces: RefCell::new(HashMap::new()),
            clients: RefCell::new(IdMap::default()),
            deadlines: RefCell::new(BTreeSet::new()),
            alarm: Alarm::new(me.clone()),
            events_received: Cell::new(0),
            events_sent: Cell::new(0),
            away: RefCell::new(HashMap::new()),
            pids: Pids::new(),
            moved: RefCell::new(HashMap::new()),
            kept_total: Cell::new(0),
            offset: Cell::new(0),
            recoveries: Cell::new(0),
            expired_since_give_back: Cell::new(0),
        }))
    }

    /// Event counts.
    pub fn stats(&self) -> Stats {
        Stats {
            events_received: self.0.events_received.get(),
            events_sent: self.0.events_sent.get(),
            away: self.0.away.borrow().len(),
            recovered: self.0.recoveries.get(),
            kept_bytes: self.0.kept_total.get(),
        }
    }

    /// The namespace `name`, registered on first use.
    pub fn of(&self, name: &str) -> Rc<Namespace> {
        self.0
            .namespaces
            .borrow_mut()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Rc::new(Namespace {
                    name: name.to_owned(),
                    on_connect: RefCell::new(None),
                    on_disconnect: RefCell::new(None),
                    on_recover: RefCell::new(None),
                    guard: RefCell::new(None),
                    events: RefCell::new(HashMap::new()),
                    fallback: RefCell::new(None),
                })
            })
            .clone()
    }

    /// The server as the Engine.IO handler of an endpoint.
    pub fn handler(&self) -> Rc<dyn Handler> {
        Rc::new(self.clone())
    }

    /// Runs the server's deadlines due by `now` (connect timeouts, acks,
    /// recovery windows), as its alarm would: for tests with a fake clock.
    #[cfg(test)]
    pub(crate) fn expire(&self, now: Instant) {
        Wake::wake(self.0.clone(), now);
    }

    /// How many Engine.IO sessions the server holds.
    pub fn client_count(&self) -> usize {
        self.0.clients.borrow().len()
    }

    fn socket_of(&self, session: &SessionRef, nsp: &str) -> Option<Socket> {
        let clients = self.0.clients.borrow();
        let client = clients.get(session.sid())?;
        client
            .sockets
            .iter()
            .find(|s| s.namespace() == nsp)
            .cloned()
    }

    /// Takes the session's socket that `which` picks out of its client; a
    /// client left in no namespace has the connect timeout again.
    pub(super) fn remove_socket(
        &self,
        session: &SessionRef,
        which: impl Fn(&Socket) -> bool,
    ) -> Option<Socket> {
        let (socket, emptied) = {
            let mut clients = self.0.clients.borrow_mut();
            let client = clients.get_mut(session.sid())?;
            let index = client.sockets.iter().position(which)?;
            let socket = client.sockets.remove(index);
            let emptied = client.sockets.is_empty();
            if emptied {
                let at = Instant::now() + self.0.config.connect_timeout;
                self.0.arm(at, Due::Connect(session.sid_rc()));
                client.connect_by = Some(at);
            }
            (socket, emptied)
        };
        if emptied {
            session.set_joined(false);
        }
        Some(socket)
    }

    fn dispatch(&self, session: &SessionRef, packet: Packet, attachments: Vec<Vec<u8>>) {
        match packet {
            Packet::Connect { nsp, auth } if is_v4(session) => {
                // A Socket.IO 2 client puts its query after the namespace.
                let (nsp, query) = nsp.split_once('?').unwrap_or((&nsp, ""));
                self.connect(session, nsp, query_auth(query));
                drop(auth);
            }
            Packet::Connect { nsp, auth } => self.connect(session, &nsp, auth),
            Packet::Disconnect { nsp } => {
                let socket = self.remove_socket(session, |s| s.namespace() == nsp);
                if let Some(socket) = socket {
                    socket.left(DisconnectReason::ClientNamespaceDisconnect);
                }
            }
            Packet::Event {
                nsp,
                id,
                event,
                args,
                ..
            } => {
                let Some(socket) = self.socket_of(session, &nsp) else {
                    return;
                };
                self.0.events_received.set(self.0.events_received.get() + 1);
                let mut ack = id.map(|id| Ack {
                    socket: socket.clone(),
                    id,
                });
                let namespace = &socket.0.nsp;
                let incoming = Incoming::Event {
                    name: &event,
                    ack: &mut ack,
                };
                if !namespace.admits(&socket, incoming) || !socket.connected() {
                    return;
                }
                let message = Message { args, attachments };
                let handler = namespace.events.borrow().get(&event).cloned();
                let fallback = namespace.fallback.borrow().clone();
                match (handler, fallback) {
                    (Some(handler), _) => handler(&socket, message, ack),
                    (None, Some(fallback)) => fallback(&socket, &event, message, ack),
                    (None, None) => {}
                }
            }
            Packet::Ack { nsp, id, args, .. } => {
                if let Some(socket) = self.socket_of(session, &nsp) {
                    socket.settle_ack(id, Ok(Message { args, attachments }));
                }
            }
            // Only servers send these; a client's is ignored, as the
            // reference server does.
            Packet::ConnectError { .. } => {}
        }
    }

    fn connect(&self, session: &SessionRef, nsp: &str, auth: Option<Box<RawValue>>) {
        let too_many = {
            let mut clients = self.0.clients.borrow_mut();
            let Some(client) = clients.get_mut(session.sid()) else {
                return;
            };
            client.connects += 1;
            client.connects > MAX_CONNECTS
        };
        if too_many {
            self.protocol_error(session, &"too many CONNECT packets");
            return;
        }
        let namespace = self.0.namespaces.borrow().get(nsp).cloned();
        let Some(namespace) = namespace else {
            let text = connect_error(session, nsp, "Invalid namespace", None);
            session.send(Data::Text(text));
            return;
        };
        if self.0.config.recovery.enabled() && !is_v4(session) {
            let returning = Returning::read(auth.as_deref());
            let found = returning.pid.as_deref().and_then(|pid| {
                let away = self.take_away(pid, nsp).map(|socket| (socket, Vec::new()));
                away.or_else(|| self.take_over(pid, nsp, session))
            });
            if let Some((socket, unsent)) = found {
                return self.recover(session, socket, auth, returning.last_offset(), unsent);
            }
        }
        // A CONNECT to a namespace the session is in passes the guard and
        // gets the same socket again: a fresh socket per packet would also
        // be a fresh start for whatever the application counts per socket.
        if let Some(current) = self.socket_of(session, nsp) {
            if namespace.admits(&current, Incoming::Reconnect) && current.connected() {
                session.send(Data::Text(self.connect_answer(&current)));
            }
            return;
        }

        let socket = Socket(Rc::new(SocketInner {
            id: crate::id::random().into(),
            origin: session.sid_rc(),
            nsp: namespace.clone(),
            session: RefCell::new(session.clone()),
            server: Rc::downgrade(&self.0),
            state: Cell::new(SocketState::Handshaking),
            held: RefCell::new(Vec::new()),
            kept: RefCell::new(None),
            acks: RefCell::new(HashMap::new()),
            next_ack: Cell::new(0),
        }));
        if !self.run_connect_hook(session, &socket, auth) {
            return;
        }
        if socket.0.state.get() != SocketState::Handshaking || !session.is_open() {
            return;
        }
        if !self.join(session, &socket) {
            return;
        }
        session.send(Data::Text(self.connect_answer(&socket)));
        socket.0.state.set(SocketState::Connected);
        let held = std::mem::take(&mut *socket.0.held.borrow_mut());
        for (text, attachments) in held {
            socket.send_packet(text, attachments);
        }
    }

    /// Runs the namespace's connect hook for `socket`; a refusal is the
    /// client's CONNECT_ERROR, and the socket is gone.
    fn run_connect_hook(
        &self,
        session: &SessionRef,
        socket: &Socket,
        auth: Option<Box<RawValue>>,
    ) -> bool {
        let hook = socket.0.nsp.on_connect.borrow().clone();
        // The auth payload is the hook's to read, not the socket's to keep.
        let verdict = match hook {
            Some(hook) => hook(socket, auth.as_deref()),
            None => Ok(()),
        };
        drop(auth);
        let Err(refusal) = verdict else {
            return true;
        };
        socket.0.state.set(SocketState::Disconnected);
        socket.0.held.borrow_mut().clear();
        socket.drop_kept();
        let text = connect_error(
            session,
            socket.namespace(),
            &refusal.message,
            refusal.data.as_deref(),
        );
        session.send(Data::Text(text));
        false
    }

    /// Puts `socket` in `session`'s client: the connect timeout is over.
    fn join(&self, session: &SessionRef, socket: &Socket) -> bool {
        {
            let mut clients = self.0.clients.borrow_mut();
            let Some(client) = clients.get_mut(session.sid()) else {
                return false;
            };
            client.sockets.push(socket.clone());
            if let Some(at) = client.connect_by.take() {
                self.0.disarm(at, &Due::Connect(session.sid_rc()));
            }
        }
        session.set_joined(true);
        true
    }

    /// The CONNECT answer: the socket's id, and with recovery its private
    /// id; for a Socket.IO 2 client, nothing.
    fn connect_answer(&self, socket: &Socket) -> String {
        if socket.0.session.borrow().read(Session::protocol) == Protocol::V3 {
            return packet::encode_connect_v4(socket.namespace());
        }
        let pid = self
            .0
            .config
            .recovery
            .enabled()
            .then(|| self.0.pid_of(socket));
        packet::encode_connect(socket.namespace(), socket.id(), pid.as_deref())
    }

    /// The socket that is away with private id `pid`, if it is in `nsp`;
    /// it is no longer away.
    fn take_away(&self, pid: &str, nsp: &str) -> Option<Socket> {
        let mut away = self.0.away.borrow_mut();
        if away.get(pid)?.0.namespace() != nsp {
            return None;
        }
        let (pid, (socket, until)) = away.remove_entry(pid)?;
        drop(away);
        self.0.disarm(until, &Due::Recovery(pid));
        Some(socket)
    }

    /// The socket with private id `pid` in `nsp`, still on a session of its
    /// own that looks alive (a polling client that stopped polling, a TCP
    /// connection lost without a word: the server hears of it only at the
    /// ping timeout), taken from it for the client that has come back with
    /// the pid. That session ends; what it had not sent yet comes along, if
    /// the socket was all it carried.
    fn take_over(&self, pid: &str, nsp: &str, session: &SessionRef) -> Option<(Socket, Vec<Data>)> {
        let origin = Pids::origin_of(pid)?;
        let old = self.0.moved.borrow().get(origin).cloned();
        let old = old.as_deref().unwrap_or(origin);
        if old == session.sid() {
            return None;
        }
        let (socket, old_session, alone) = {
            let mut clients = self.0.clients.borrow_mut();
            let client = clients.get_mut(old)?;
            let index = client
                .sockets
                .iter()
                .position(|s| s.namespace() == nsp && s.connected() && self.0.pid_of(s) == pid)?;
            let socket = client.sockets.remove(index);
            (socket, client.session.clone(), client.sockets.is_empty())
        };
        log::debug!(
            "session {}: socket {} taken over by session {}",
            old_session.sid(),
            socket.id(),
            session.sid()
        );
        let unsent = if alone {
            old_session.take_messages()
        } else {
            Vec::new()
        };
        socket.fail_acks();
        old_session.terminate(CloseReason::TransportClose);
        Some((socket, unsent))
    }

    /// Brings `socket` back on `session`: the connect hook checks the
    /// client again, then what was kept for it goes out, then what the
    /// recover hook sends, then the CONNECT answer (so the client has it
    /// all before its `connect` event, and reports `recovered`).
    fn recover(
        &self,
        session: &SessionRef,
        socket: Socket,
        auth: Option<Box<RawValue>>,
        last_offset: Option<u64>,
        unsent: Vec<Data>,
    ) {
        *socket.0.session.borrow_mut() = session.clone();
        socket.0.state.set(SocketState::Recovering);
        let nsp = socket.0.nsp.clone();
        if !self.run_connect_hook(session, &socket, auth) {
            return;
        }
        if socket.0.state.get() != SocketState::Recovering
            || !session.is_open()
            || !self.join(session, &socket)
        {
            socket.0.state.set(SocketState::Disconnected);
            socket.drop_kept();
            return;
        }
        self.0.recoveries.set(self.0.recoveries.get() + 1);
        if *socket.0.origin != *session.sid() {
            self.0
                .moved
                .borrow_mut()
                .insert(socket.0.origin.clone(), session.sid_rc());
        }
        let (found, replay) = {
            let mut kept = socket.0.kept.borrow_mut();
            let mut total = self.0.kept_total.get();
            let offsets = self.0.config.recovery.offsets;
            let replay = kept
                .as_mut()
                .map(|kept| kept.recover(last_offset, offsets, &mut total))
                .unwrap_or_default();
            if !offsets {
                *kept = None;
            }
            self.0.kept_total.set(total);
            replay
        };
        log::debug!(
            "session {}: socket {} recovered, {} events sent again",
            session.sid(),
            socket.id(),
            replay.len() + if found { 0 } else { unsent.len() }
        );
        // What the old session had not sent, unless the client's offset
        // found it all in the log (which holds every event sent).
        if !found {
            for data in unsent {
                session.send(data);
            }
        }
        for (text, attachments) in replay {
            socket.send_packet(text, attachments);
        }
        let hook = nsp.on_recover.borrow().clone();
        if let Some(hook) = hook {
            hook(&socket);
        }
        if socket.0.state.get() != SocketState::Recovering {
            return;
        }
        session.send(Data::Text(self.connect_answer(&socket)));
        socket.0.state.set(SocketState::Connected);
    }

    fn protocol_error(&self, session: &SessionRef, what: &dyn fmt::Display) {
        log::debug!("session {}: {what}; closing", session.sid());
        session.terminate(CloseReason::ParseError);
    }
}

/// Whether `session`'s client speaks Socket.IO protocol 4 (Socket.IO 2,
/// on Engine.IO 3), not 5.
fn is_v4(session: &SessionRef) -> bool {
    session.read(Session::protocol) == Protocol::V3
}

/// What a Socket.IO 2 client puts in its query (`io(url, {query:
/// {token}})`), as the auth a Socket.IO 3+ client sends in its CONNECT:
/// an object of its parameters, decoded, but Engine.IO's own; `None`
/// without any.
fn query_auth(query: &str) -> Option<Box<RawValue>> {
    const ENGINE_IO: [&str; 6] = ["EIO", "transport", "sid", "t", "b64", "j"];
    let mut auth = serde_json::Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if ENGINE_IO.contains(&key) {
            continue;
        }
        let (Some(key), Some(value)) = (
            crate::http::percent_decode(key),
            crate::http::percent_decode(value),
        ) else {
            continue;
        };
        auth.entry(key).or_insert(serde_json::Value::String(value));
    }
    (!auth.is_empty()).then(|| super::to_arg(&auth))
}

/// A refused CONNECT, as `session`'s protocol says it.
fn connect_error(
    session: &SessionRef,
    nsp: &str,
    message: &str,
    data: Option<&RawValue>,
) -> String {
    if is_v4(session) {
        packet::encode_connect_error_v4(nsp, message)
    } else {
        packet::encode_connect_error(nsp, message, data)
    }
}

impl Handler for Server {
    fn on_open(&self, session: &SessionRef, query: &str) {
        let connect_by = Instant::now() + self.0.config.connect_timeout;
        self.0.arm(connect_by, Due::Connect(session.sid_rc()));
        self.0.clients.borrow_mut().insert(
            session.sid_rc(),
            Client {
                session: session.clone(),
                sockets: Vec::new(),
                partial: None,
                connect_by: Some(connect_by),
                connects: 0,
            },
        );
        // Socket.IO 2 clients are in the main namespace from the open on,
        // without a CONNECT of theirs.
        if is_v4(session) {
            self.connect(session, "/", query_auth(query));
        }
    }

    fn on_message(&self, session: &SessionRef, data: Data) {
        let outcome = {
            let mut clients = self.0.clients.borrow_mut();
            let Some(client) = clients.get_mut(session.sid()) else {
                return;
            };
            let waiting = |partial: &Option<Box<Partial>>| partial.as_ref().map_or(0, |p| p.bytes);
            let before = waiting(&client.partial);
            let outcome = assemble(
                &mut client.partial,
                data,
                self.0.config.max_attachment_bytes,
            );
            // What waits for the rest of its packet counts against the
            // endpoint's bound on what all sessions hold.
            let after = waiting(&client.partial);
            if after > before && !session.hold(after - before) {
                Err(AssemblyError::TooLarge)
            } else {
                session.release(before.saturating_sub(after));
                outcome
            }
        };
        match outcome {
            Ok(Some((packet, attachments))) => self.dispatch(session, packet, attachments),
            Ok(None) => {}
            Err(error) => self.protocol_error(session, &error),
        }
    }

    fn on_close(&self, session: &SessionRef, reason: CloseReason) {
        let client = self.0.clients.borrow_mut().remove(session.sid());
        let Some(client) = client else { return };
        if let Some(at) = client.connect_by {
            self.0.disarm(at, &Due::Connect(session.sid_rc()));
        }
        let recovery = self.0.config.recovery.enabled();
        for socket in client.sockets {
            let reason = DisconnectReason::Connection(reason);
            if recovery && reason.recoverable() {
                socket.go_away(&self.0, reason);
            } else {
                socket.left(reason);
            }
        }
    }
}

/// What a deadline of the server is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// Session `sid` must have joined a namespace by then.
    Connect(Rc<str>),
    /// Socket `socket` of session `sid` must have had the answer to its
    /// ack `id` by then.
    Ack {
        sid: Rc<str>,
        socket: Rc<str>,
        id: u64,
    },
    /// The socket that is away with this private id is given up then.
    Recovery(Rc<str>),
}

impl ServerInner {
    /// The offset the next kept event gets.
    pub(super) fn peek_offset(&self) -> u64 {
        self.offset.get()
    }

    /// A fresh offset for a kept event.
    pub(super) fn next_offset(&self) -> u64 {
        let offset = self.offset.get();
        self.offset.set(offset + 1);
        offset
    }

    /// The private id of `socket`.
    pub(super) fn pid_of(&self, socket: &Socket) -> String {
        self.pids
            .of(socket.namespace(), socket.id(), &socket.0.origin)
    }

    /// `socket` is gone for good: where it moved is no longer needed.
    pub(super) fn forget_move(&self, socket: &Socket) {
        if *socket.0.origin != *socket.session().sid() {
            self.moved.borrow_mut().remove(&socket.0.origin);
        }
    }

    /// Keeps `socket`, whose connection was lost, for its client to come
    /// back within the recovery window.
    pub(super) fn keep_away(&self, socket: &Socket) {
        let pid: Rc<str> = self.pid_of(socket).into();
        let until = Instant::now() + self.config.recovery.window;
        self.away
            .borrow_mut()
            .insert(pid.clone(), (socket.clone(), until));
        self.arm(until, Due::Recovery(pid));
    }

    /// `socket` is no longer away (given up): forgets it.
    pub(super) fn release_away(&self, socket: &Socket) {
        let pid = self.pid_of(socket);
        let entry = self.away.borrow_mut().remove_entry(pid.as_str());
        if let Some((pid, (_, until))) = entry {
            self.disarm(until, &Due::Recovery(pid));
        }
    }

    /// Adds a deadline (a connect timeout or an ack's); the alarm follows the earliest.
    pub(super) fn arm(&self, at: Instant, due: Due) {
        let mut deadlines = self.deadlines.borrow_mut();
        deadlines.insert((at, due));
        self.alarm.set(deadlines.first().map(|(at, _)| *at));
    }

    /// Removes a deadline no longer needed; the alarm follows the earliest left.
    pub(super) fn disarm(&self, at: Instant, due: &Due) {
        let mut deadlines = self.deadlines.borrow_mut();
        deadlines.remove(&(at, due.clone()));
        self.alarm.set(deadlines.first().map(|(at, _)| *at));
    }
}

impl Wake for ServerInner {
    /// Closes the sessions whose connect timeout ran out in no namespace,
    /// and fails the acks that did not come in time.
    fn wake(self: Rc<Self>, now: Instant) {
        let due: Vec<Due> = {
            let mut deadlines = self.deadlines.borrow_mut();
            let later =
                deadlines.split_off(&(now + Duration::from_nanos(1), Due::Connect("".into())));
            let due = std::mem::replace(&mut *deadlines, later);
            self.alarm.set(deadlines.first().map(|(at, _)| *at));
            due.into_iter().map(|(_, due)| due).collect()
        };
        for due in due {
            match due {
                Due::Connect(sid) => {
                    let session = self.clients.borrow_mut().get_mut(&sid).map(|client| {
                        client.connect_by = None;
                        client.session.clone()
                    });
                    if let Some(session) = session {
                        log::debug!("session {sid}: in no namespace in time; closing");
                        // Nothing it waits for is queued: it ends now, or
                        // within a second if a packet is on its way.
                        session.close_within(CONNECT_TIMEOUT_LINGER);
                    }
                }
                Due::Recovery(pid) => {
                    let entry = self.away.borrow_mut().remove(&pid);
                    if let Some((socket, _)) = entry {
                        log::debug!("socket {}: not recovered in time", socket.id());
                        socket.forget();
                        // Thousands of sockets lost in a burst and never
                        // recovered: their memory goes back to the system.
                        let expired = self.expired_since_give_back.get() + 1;
                        crate::id::shrink_when_sparse(&mut self.away.borrow_mut());
                        crate::id::shrink_when_sparse(&mut self.moved.borrow_mut());
                        crate::id::shrink_when_sparse(&mut self.clients.borrow_mut());
                        let burst_over = expired >= 256 && self.away.borrow().is_empty();
                        if expired >= EXPIRED_ENOUGH_TO_GIVE_BACK || burst_over {
                            crate::rt::give_back_memory();
                            self.expired_since_give_back.set(0);
                        } else {
                            self.expired_since_give_back.set(expired);
                        }
                    }
                }
                Due::Ack { sid, socket, id } => {
                    let socket = self.clients.borrow().get(&sid).and_then(|client| {
                        client.sockets.iter().find(|s| s.id_rc() == socket).cloned()
                    });
                    if let Some(socket) = socket {
                        socket.settle_ack(id, Err(AckError::Timeout));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::query_auth;

    #[test]
    fn a_socket_io_2_query_becomes_the_auth_of_its_connect() {
        let auth = |query: &str| query_auth(query).map(|raw| raw.get().to_owned());
        assert_eq!(
            auth("EIO=3&transport=polling&t=Nx1&token=YW5uYQ.1700000000.c2ln").as_deref(),
            Some(r#"{"token":"YW5uYQ.1700000000.c2ln"}"#)
        );
        assert_eq!(
            auth("token=a%2Bb&room=flat%2012&token=second").as_deref(),
            Some(r#"{"room":"flat 12","token":"a+b"}"#),
            "decoded; the first of a repeated key wins"
        );
        assert_eq!(auth("EIO=3&transport=websocket&sid=x&b64=1"), None);
        assert_eq!(auth(""), None);
        assert_eq!(auth("token=%zz&flag").as_deref(), Some(r#"{"flag":""}"#));
    }
}
