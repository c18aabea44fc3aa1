//! Socket.IO protocol 5 on top of Engine.IO: namespaces, events, acks both
//! ways and binary attachments.
//!
//! An application registers namespaces on a [`Server`] and handles events on
//! [`Socket`]s; it knows nothing of transports. The server is the
//! Engine.IO [`Handler`] of the endpoint it runs on.
//!
//! ```
//! use signalbox::socketio::{Config, Server};
//! let io = Server::new(Config::default());
//! io.of("/").on("ping", |socket, message, ack| {
//!     if let Some(ack) = ack {
//!         ack.send(&message.args);
//!     }
//! });
//! ```

pub mod packet;

use crate::id::IdMap;
use std::borrow::Borrow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use smol::{Task, Timer};

use crate::engineio::{CloseReason, Data, Handler, SessionRef};
use crate::rt::{self, Alarm, Wake};
use packet::Packet;

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a new connection may take to join a namespace before it is
    /// closed.
    pub connect_timeout: Duration,
    /// The most bytes of binary attachments one packet may carry.
    pub max_attachment_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(45),
            max_attachment_bytes: 1_000_000,
        }
    }
}

/// The arguments of an event or ack, as raw JSON, and its binary
/// attachments (which `{"_placeholder":true,"num":N}` objects in the
/// arguments refer to).
#[derive(Debug, Default)]
pub struct Message {
    /// The arguments.
    pub args: Vec<Box<RawValue>>,
    /// The binary attachments.
    pub attachments: Vec<Vec<u8>>,
}

impl Message {
    /// The argument at `index`.
    pub fn arg(&self, index: usize) -> Option<&RawValue> {
        self.args.get(index).map(|a| &**a)
    }

    /// Deserializes the argument at `index`.
    pub fn parse<T: DeserializeOwned>(&self, index: usize) -> Result<T, serde_json::Error> {
        let raw = self.arg(index).map_or("null", RawValue::get);
        serde_json::from_str(raw)
    }
}

/// Serializes `value` as one argument.
///
/// ```
/// let arg = signalbox::socketio::to_arg(&serde_json::json!({"ok": true}));
/// assert_eq!(arg.get(), r#"{"ok":true}"#);
/// ```
pub fn to_arg<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|error| {
        log::error!("cannot serialize an event argument: {error}");
        RawValue::NULL.to_owned()
    })
}

/// A placeholder argument standing for attachment `num`.
pub fn placeholder(num: usize) -> Box<RawValue> {
    to_arg(&serde_json::json!({ "_placeholder": true, "num": num }))
}

/// A connect hook's refusal, sent to the client as CONNECT_ERROR.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// The message the client sees in its `connect_error` event.
    pub message: String,
    /// Optional details, as JSON.
    pub data: Option<Box<RawValue>>,
}

impl ConnectError {
    /// A refusal with `message`.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The underlying connection ended.
    Connection(CloseReason),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => {
                f.write_str("client namespace disconnect")
            }
            DisconnectReason::ServerNamespaceDisconnect => {
                f.write_str("server namespace disconnect")
            }
            DisconnectReason::Connection(reason) => reason.fmt(f),
        }
    }
}

/// Why an ack the server asked for did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The client did not answer in time.
    Timeout,
    /// The socket disconnected first.
    Disconnected,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckError::Timeout => "ack timed out",
            AckError::Disconnected => "socket disconnected",
        })
    }
}

impl std::error::Error for AckError {}

type ConnectHook = dyn Fn(&Socket, Option<&RawValue>) -> Result<(), ConnectError>;
type GuardHook = dyn Fn(&Socket, Incoming<'_>) -> bool;
type EventHook = dyn Fn(&Socket, Message, Option<Ack>);
type FallbackHook = dyn Fn(&Socket, &str, Message, Option<Ack>);
type DisconnectHook = dyn Fn(&Socket, DisconnectReason);
type AckCallback = Box<dyn FnOnce(Result<Message, AckError>)>;

/// What a connected socket sent, as its namespace's guard sees it.
pub enum Incoming<'a> {
    /// An event, whether a handler takes it or not. A guard that refuses
    /// it may take the ack to answer.
    Event {
        /// The event name.
        name: &'a str,
        /// The ack the client asked for.
        ack: &'a mut Option<Ack>,
    },
    /// A CONNECT to the namespace the socket is already in.
    Reconnect,
}

/// A namespace: the hooks that run for its sockets.
pub struct Namespace {
    name: String,
    on_connect: RefCell<Option<Rc<ConnectHook>>>,
    on_disconnect: RefCell<Option<Rc<DisconnectHook>>>,
    guard: RefCell<Option<Rc<GuardHook>>>,
    events: RefCell<HashMap<String, Rc<EventHook>>>,
    fallback: RefCell<Option<Rc<FallbackHook>>>,
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
    fn admits(&self, socket: &Socket, incoming: Incoming<'_>) -> bool {
        let guard = self.guard.borrow().clone();
        guard.is_none_or(|guard| guard(socket, incoming))
    }

    /// Sets the hook that runs when a socket leaves, for any reason.
    pub fn on_disconnect(&self, hook: impl Fn(&Socket, DisconnectReason) + 'static) -> &Self {
        *self.on_disconnect.borrow_mut() = Some(Rc::new(hook));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketState {
    /// The connect hook is running: emits wait for the CONNECT answer.
    Handshaking,
    Connected,
    Disconnected,
}

struct PendingAck {
    callback: AckCallback,
    _timer: Option<Task<()>>,
}

struct SocketInner {
    id: Rc<str>,
    nsp: Rc<Namespace>,
    session: SessionRef,
    server: Weak<ServerInner>,
    state: Cell<SocketState>,
    held: RefCell<Vec<(String, Vec<Vec<u8>>)>>,
    acks: RefCell<HashMap<u64, PendingAck>>,
    next_ack: Cell<u64>,
}

/// One client in one namespace. Clones refer to the same socket.
#[derive(Clone)]
pub struct Socket(Rc<SocketInner>);

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

    /// The Engine.IO session underneath (shared by the client's namespaces).
    pub fn session(&self) -> &SessionRef {
        &self.0.session
    }

    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub fn address(&self) -> std::net::IpAddr {
        self.0.session.address()
    }

    /// Whether the socket is still in its namespace.
    pub fn connected(&self) -> bool {
        self.0.state.get() != SocketState::Disconnected
    }

    fn count_event(&self) {
        if let Some(server) = self.0.server.upgrade() {
            server.events_sent.set(server.events_sent.get() + 1);
        }
    }

    fn send_packet(&self, text: String, attachments: Vec<Vec<u8>>) {
        match self.0.state.get() {
            SocketState::Handshaking => self.0.held.borrow_mut().push((text, attachments)),
            SocketState::Connected => {
                self.0.session.send(Data::Text(text));
                for attachment in attachments {
                    self.0.session.send(Data::Binary(attachment));
                }
            }
            SocketState::Disconnected => {}
        }
    }

    /// Emits `event` with JSON arguments.
    pub fn emit(&self, event: &str, args: &[impl Borrow<RawValue>]) {
        self.emit_binary(event, args, Vec::new());
    }

    /// Emits `event` with one argument, serialized straight into the packet.
    pub fn emit_value<T: Serialize + ?Sized>(&self, event: &str, arg: &T) {
        match packet::encode_event_value(self.namespace(), event, arg) {
            Ok(text) => {
                self.count_event();
                self.send_packet(text, Vec::new());
            }
            Err(error) => log::error!("cannot serialize the {event} event: {error}"),
        }
    }

    /// Emits `event` with arguments and binary attachments, which the
    /// arguments refer to with [`placeholder`]s.
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
        self.count_event();
        self.send_packet(text, attachments);
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
        let weak = Rc::downgrade(&self.0);
        let timer = rt::spawn(async move {
            Timer::after(timeout).await;
            if let Some(inner) = weak.upgrade() {
                Socket(inner).settle_ack(id, Err(AckError::Timeout));
            }
        });
        self.0.acks.borrow_mut().insert(
            id,
            PendingAck {
                callback: Box::new(callback),
                _timer: Some(timer),
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

    fn settle_ack(&self, id: u64, result: Result<Message, AckError>) {
        let pending = self.0.acks.borrow_mut().remove(&id);
        if let Some(pending) = pending {
            (pending.callback)(result);
        }
    }

    /// Removes the socket from its namespace: the client gets a DISCONNECT,
    /// the disconnect hook runs. The connection stays open.
    pub fn disconnect(&self) {
        if self.0.state.get() != SocketState::Connected {
            return;
        }
        self.send_packet(packet::encode_disconnect(self.namespace()), Vec::new());
        if let Some(server) = self.0.server.upgrade() {
            Server(server).remove_socket(&self.0.session, |s| s == self);
        }
        self.left(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Disconnects the socket, then closes its connection once what is
    /// queued has been delivered (socket.io's `disconnect(true)`).
    pub fn disconnect_and_close(&self) {
        self.disconnect();
        self.0.session.close();
    }

    /// The socket is gone: fail its pending acks, run the disconnect hook.
    fn left(&self, reason: DisconnectReason) {
        if self.0.state.replace(SocketState::Disconnected) == SocketState::Disconnected {
            return;
        }
        self.0.held.borrow_mut().clear();
        let pending: Vec<PendingAck> = self.0.acks.borrow_mut().drain().map(|(_, p)| p).collect();
        for ack in pending {
            (ack.callback)(Err(AckError::Disconnected));
        }
        let hook = self.0.nsp.on_disconnect.borrow().clone();
        if let Some(hook) = hook {
            hook(self, reason);
        }
    }
}

/// The means to answer an event the client sent with an ack id.
pub struct Ack {
    socket: Socket,
    id: u64,
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

/// A binary packet waiting for its attachments.
pub(crate) struct Partial {
    packet: Packet,
    needed: usize,
    attachments: Vec<Vec<u8>>,
    bytes: usize,
}

/// Why a message broke the protocol; the session is closed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssemblyError {
    /// The text is no packet.
    Decode(packet::DecodeError),
    /// A text packet while a binary one awaits its attachments.
    TextWhileAwaiting,
    /// A binary message no packet announced.
    UnexpectedBinary,
    /// Attachments past `max_attachment_bytes`.
    TooLarge,
}

impl fmt::Display for AssemblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssemblyError::Decode(error) => error.fmt(f),
            AssemblyError::TextWhileAwaiting => {
                f.write_str("text packet while awaiting attachments")
            }
            AssemblyError::UnexpectedBinary => {
                f.write_str("binary message without a packet awaiting it")
            }
            AssemblyError::TooLarge => f.write_str("attachments too large"),
        }
    }
}

/// A complete packet and its attachments.
pub(crate) type Assembled = (Packet, Vec<Vec<u8>>);

/// Takes one Engine.IO message of a session: a packet is complete when it
/// needs no attachments or its last one arrived; until then it waits in
/// `partial`.
pub(crate) fn assemble(
    partial: &mut Option<Box<Partial>>,
    data: Data,
    max_attachment_bytes: usize,
) -> Result<Option<Assembled>, AssemblyError> {
    match data {
        Data::Text(text) => {
            if partial.is_some() {
                return Err(AssemblyError::TextWhileAwaiting);
            }
            let packet = packet::decode(&text).map_err(AssemblyError::Decode)?;
            let needed = match &packet {
                Packet::Event { attachments, .. } | Packet::Ack { attachments, .. } => *attachments,
                _ => 0,
            };
            if needed == 0 {
                return Ok(Some((packet, Vec::new())));
            }
            *partial = Some(Box::new(Partial {
                packet,
                needed,
                attachments: Vec::with_capacity(needed),
                bytes: 0,
            }));
            Ok(None)
        }
        Data::Binary(bytes) => {
            let waiting = partial.as_mut().ok_or(AssemblyError::UnexpectedBinary)?;
            if waiting.bytes + bytes.len() > max_attachment_bytes {
                return Err(AssemblyError::TooLarge);
            }
            waiting.bytes += bytes.len();
            waiting.attachments.push(bytes);
            if waiting.attachments.len() < waiting.needed {
                return Ok(None);
            }
            Ok(partial.take().map(|done| (done.packet, done.attachments)))
        }
    }
}

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

/// How long a session closed at its connect timeout may take to collect
/// what is queued for it.
const CONNECT_TIMEOUT_LINGER: Duration = Duration::from_secs(1);

/// The most CONNECT packets one Engine.IO session may send. A client joins
/// each namespace once (again after leaving it, rarely); leaving and
/// joining over and over would also start a fresh socket, and whatever the
/// application counts per socket, each time.
const MAX_CONNECTS: u32 = 32;

struct ServerInner {
    config: Config,
    namespaces: RefCell<HashMap<String, Rc<Namespace>>>,
    clients: RefCell<IdMap<Rc<str>, Client>>,
    /// The clients in no namespace, by the time their connect timeout
    /// runs out; the alarm is set to the first.
    connect_deadlines: RefCell<BTreeSet<(Instant, Rc<str>)>>,
    alarm: Alarm,
    events_received: Cell<u64>,
    events_sent: Cell<u64>,
}

/// Event counts, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Events received from clients.
    pub events_received: u64,
    /// Events emitted to clients.
    pub events_sent: u64,
}

/// A Socket.IO server: its namespaces and connected clients.
#[derive(Clone)]
pub struct Server(Rc<ServerInner>);

impl Server {
    /// A server with no namespaces.
    pub fn new(config: Config) -> Server {
        Server(Rc::new_cyclic(|me: &Weak<ServerInner>| ServerInner {
            config,
            namespaces: RefCell::new(HashMap::new()),
            clients: RefCell::new(IdMap::default()),
            connect_deadlines: RefCell::new(BTreeSet::new()),
            alarm: Alarm::new(me.clone()),
            events_received: Cell::new(0),
            events_sent: Cell::new(0),
        }))
    }

    /// Event counts.
    pub fn stats(&self) -> Stats {
        Stats {
            events_received: self.0.events_received.get(),
            events_sent: self.0.events_sent.get(),
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
    fn remove_socket(
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
                client.connect_by = Some(self.0.arm_connect_timeout(session.sid_rc()));
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
            let text = packet::encode_connect_error(nsp, "Invalid namespace", None);
            session.send(Data::Text(text));
            return;
        };
        // A CONNECT to a namespace the session is in passes the guard and
        // gets the same socket again: a fresh socket per packet would also
        // be a fresh start for whatever the application counts per socket.
        if let Some(current) = self.socket_of(session, nsp) {
            if namespace.admits(&current, Incoming::Reconnect) && current.connected() {
                session.send(Data::Text(packet::encode_connect(nsp, current.id())));
            }
            return;
        }

        let socket = Socket(Rc::new(SocketInner {
            id: crate::id::random().into(),
            nsp: namespace.clone(),
            session: session.clone(),
            server: Rc::downgrade(&self.0),
            state: Cell::new(SocketState::Handshaking),
            held: RefCell::new(Vec::new()),
            acks: RefCell::new(HashMap::new()),
            next_ack: Cell::new(0),
        }));
        let hook = namespace.on_connect.borrow().clone();
        // The auth payload is the hook's to read, not the socket's to keep.
        let verdict = match hook {
            Some(hook) => hook(&socket, auth.as_deref()),
            None => Ok(()),
        };
        drop(auth);
        if let Err(refusal) = verdict {
            socket.0.state.set(SocketState::Disconnected);
            socket.0.held.borrow_mut().clear();
            let text = packet::encode_connect_error(nsp, &refusal.message, refusal.data.as_deref());
            session.send(Data::Text(text));
            return;
        }
        if socket.0.state.get() != SocketState::Handshaking || !session.is_open() {
            return;
        }
        {
            let mut clients = self.0.clients.borrow_mut();
            let Some(client) = clients.get_mut(session.sid()) else {
                return;
            };
            client.sockets.push(socket.clone());
            if let Some(at) = client.connect_by.take() {
                self.0.disarm_connect_timeout(at, session.sid());
            }
        }
        session.set_joined(true);
        session.send(Data::Text(packet::encode_connect(nsp, socket.id())));
        socket.0.state.set(SocketState::Connected);
        let held = std::mem::take(&mut *socket.0.held.borrow_mut());
        for (text, attachments) in held {
            socket.send_packet(text, attachments);
        }
    }

    fn protocol_error(&self, session: &SessionRef, what: &dyn fmt::Display) {
        log::debug!("session {}: {what}; closing", session.sid());
        session.terminate(CloseReason::ParseError);
    }
}

impl Handler for Server {
    fn on_open(&self, session: &SessionRef) {
        let connect_by = self.0.arm_connect_timeout(session.sid_rc());
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
            self.0.disarm_connect_timeout(at, session.sid());
        }
        for socket in client.sockets {
            socket.left(DisconnectReason::Connection(reason));
        }
    }
}

impl ServerInner {
    /// Starts the connect timeout of session `sid`: when it runs out.
    fn arm_connect_timeout(&self, sid: Rc<str>) -> Instant {
        let at = Instant::now() + self.config.connect_timeout;
        let mut deadlines = self.connect_deadlines.borrow_mut();
        deadlines.insert((at, sid));
        self.alarm.set(deadlines.first().map(|(at, _)| *at));
        at
    }

    /// Stops the connect timeout of session `sid`, set for `at`.
    fn disarm_connect_timeout(&self, at: Instant, sid: &str) {
        let mut deadlines = self.connect_deadlines.borrow_mut();
        deadlines.remove(&(at, Rc::from(sid)));
        self.alarm.set(deadlines.first().map(|(at, _)| *at));
    }
}

impl Wake for ServerInner {
    /// Closes the sessions whose connect timeout ran out in no namespace.
    fn wake(self: Rc<Self>, now: Instant) {
        let due: Vec<SessionRef> = {
            let mut deadlines = self.connect_deadlines.borrow_mut();
            let later = deadlines.split_off(&(now, Rc::from("\u{10ffff}")));
            let due = std::mem::replace(&mut *deadlines, later);
            self.alarm.set(deadlines.first().map(|(at, _)| *at));
            let mut clients = self.clients.borrow_mut();
            due.into_iter()
                .filter_map(|(_, sid)| {
                    let client = clients.get_mut(&sid)?;
                    client.connect_by = None;
                    Some(client.session.clone())
                })
                .collect()
        };
        for session in due {
            log::debug!(
                "session {}: in no namespace in time; closing",
                session.sid()
            );
            // Nothing it waits for is queued: it ends now, or within a
            // second if a packet is on its way.
            session.close_within(CONNECT_TIMEOUT_LINGER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Data {
        Data::Text(s.to_owned())
    }

    #[test]
    fn a_binary_event_completes_with_its_last_attachment() {
        let mut partial = None;
        let header = r#"52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
        assert!(matches!(assemble(&mut partial, text(header), 10), Ok(None)));
        let first = assemble(&mut partial, Data::Binary(vec![1, 2]), 10);
        assert!(matches!(first, Ok(None)));
        let Ok(Some((Packet::Event { event, .. }, attachments))) =
            assemble(&mut partial, Data::Binary(vec![3]), 10)
        else {
            panic!("the event is not complete");
        };
        assert_eq!(
            (event.as_str(), attachments),
            ("m", vec![vec![1, 2], vec![3]])
        );
        assert!(partial.is_none());
        assert!(matches!(
            assemble(&mut partial, text(r#"2["plain"]"#), 10),
            Ok(Some((Packet::Event { attachments: 0, .. }, _)))
        ));
    }

    #[test]
    fn reassembly_refuses_what_breaks_the_protocol() {
        let header = r#"51-["m",{"_placeholder":true,"num":0}]"#;
        let mut partial = None;
        let stray = assemble(&mut partial, Data::Binary(vec![0]), 10);
        assert_eq!(stray.err(), Some(AssemblyError::UnexpectedBinary));
        assert!(matches!(assemble(&mut partial, text(header), 10), Ok(None)));
        let early = assemble(&mut partial, text(r#"2["x"]"#), 10);
        assert_eq!(early.err(), Some(AssemblyError::TextWhileAwaiting));
        let big = assemble(&mut partial, Data::Binary(vec![0; 11]), 10);
        assert_eq!(big.err(), Some(AssemblyError::TooLarge));
        let mut partial = None;
        let garbage = assemble(&mut partial, text("9"), 10);
        assert!(matches!(garbage, Err(AssemblyError::Decode(_))));
    }
}
