//! Engine.IO protocol 4 (and 3, with [`Config::allow_eio3`]): sessions over
//! HTTP long-polling and WebSocket, the upgrade between them, and the
//! heartbeat.
//!
//! An [`Engine`] serves one path. It knows nothing of Socket.IO: it hands
//! whole messages to a [`Handler`] and sends what the handler queues.

mod frames;
mod handshakes;
mod heartbeat;
pub mod packet;
pub mod payload3;
mod polling;
pub mod session;
mod session_ref;
mod websocket;

use crate::id::IdMap;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_lite::{AsyncRead, AsyncWrite};

pub use handshakes::{HandshakeLimits, HandshakeRefusal};
pub use packet::Data;
pub use session::{CloseReason, Protocol, Session, Transport};
pub use session_ref::SessionRef;

use crate::http::{Conn, Method, Request, Response, query_param};

/// Engine.IO settings, announced to clients in the handshake.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the server pings (`pingInterval`), counted from the last pong.
    pub ping_interval: Duration,
    /// How long a client has to answer a ping.
    pub ping_timeout: Duration,
    /// The largest message or polling body a client may send, in bytes.
    pub max_payload: usize,
    /// How long an upgrade may take from `2probe` to `5`.
    pub upgrade_timeout: Duration,
    /// The most bytes queued for one client before it counts as too slow
    /// and is disconnected; `None` for twice `max_payload` (at least 64 KiB).
    pub buffer_limit: Option<usize>,
    /// The most sessions on long-polling at once; more handshakes get 503.
    pub max_polling_sessions: usize,
    /// How many sessions one client may open.
    pub handshakes: HandshakeLimits,
    /// The most bytes all sessions together may have queued, or held by
    /// the application (parts of messages waiting for the rest); past it,
    /// the session that adds more is dropped as too slow, or its message
    /// refused.
    pub max_pending_bytes: usize,
    /// Whether Engine.IO 3 clients are served too (`--allow-eio3`): `EIO=3`,
    /// or no `EIO` at all, as engine.io takes it.
    pub allow_eio3: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            buffer_limit: None,
            max_polling_sessions: 5000,
            handshakes: HandshakeLimits::default(),
            // An eighth of a 512 MB box.
            max_pending_bytes: 64 * 1024 * 1024,
            allow_eio3: false,
        }
    }
}

impl Config {
    /// The bound on bytes queued for one client: past it, the client is
    /// too slow and is disconnected.
    pub fn max_buffered(&self) -> usize {
        self.buffer_limit
            .unwrap_or_else(|| self.max_payload.saturating_mul(2).max(64 * 1024))
    }

    /// WebSocket limits: a small read buffer (tungstenite's default of
    /// 128 KiB would cost that much per idle client; signaling messages are
    /// small, and a bigger one grows it), messages and frames no larger than
    /// `max_payload`. Frames are gathered up to 4 KiB and written with one
    /// system call when the session's queue is drained (the transport always
    /// flushes then, so nothing waits): one `send` per message cost more
    /// than everything else a relayed message takes.
    pub fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(256)
            .write_buffer_size(4096)
            .max_write_buffer_size(self.max_buffered())
            .max_message_size(Some(self.max_payload))
            .max_frame_size(Some(self.max_payload))
    }
}

/// What an application on top of Engine.IO is told.
///
/// Callbacks run on the server thread with no borrow held, so they may send
/// to or close any session, including the one they are called for.
pub trait Handler {
    /// A session opened; its `open` packet is queued, and it may be sent
    /// to. `query` is its handshake's (for an Engine.IO 3 session; empty
    /// otherwise), where Socket.IO 2 clients put their credentials.
    fn on_open(&self, session: &SessionRef, query: &str);
    /// A message (packet `4`) came from the client, text or binary.
    fn on_message(&self, session: &SessionRef, data: Data);
    /// A session closed; called once per session.
    fn on_close(&self, session: &SessionRef, reason: CloseReason);
}

/// The Engine.IO errors a request can get, as the reference server numbers
/// them, and the refusals of a server at one of its limits (code 4, as the
/// reference server's `allowRequest` refusals, with a message that says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// `transport` is missing or not `polling`/`websocket`.
    UnknownTransport,
    /// No session has this `sid`.
    UnknownSid,
    /// A handshake that is not a GET.
    BadHandshakeMethod,
    /// Anything else wrong with the request.
    BadRequest,
    /// An `Origin` that is neither allowed nor the site's own (403).
    Forbidden,
    /// `EIO` is missing or not `4` (nor `3` with [`Config::allow_eio3`]).
    UnsupportedProtocolVersion,
    /// A client past one of its own limits on sessions (429).
    Limited(HandshakeRefusal),
    /// Every place for a long-polling session is taken (503).
    PollingFull,
    /// No new sessions now: the endpoint is shutting down (503).
    ShuttingDown,
}

impl RequestError {
    /// The error code in the JSON body.
    pub fn code(self) -> u8 {
        match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::Forbidden
            | RequestError::Limited(_)
            | RequestError::PollingFull
            | RequestError::ShuttingDown => 4,
            RequestError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            RequestError::Forbidden => 403,
            RequestError::Limited(_) => 429,
            RequestError::PollingFull | RequestError::ShuttingDown => 503,
            _ => 400,
        }
    }

    /// The JSON error response: `{"code":N,"message":"…"}`; refusals for now
    /// say when to try again.
    ///
    /// ```
    /// use signalbox::engineio::RequestError;
    /// let resp = RequestError::UnknownSid.response();
    /// assert_eq!((resp.status, resp.body.as_slice()), (400, &br#"{"code":1,"message":"Session ID unknown"}"#[..]));
    /// assert_eq!(RequestError::ShuttingDown.response().status, 503);
    /// ```
    pub fn response(self) -> Response {
        let response = Response::json(
            self.status(),
            format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self),
        );
        match self.status() {
            429 | 503 => response.header("Retry-After", "1"),
            _ => response,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::UnknownTransport => "Transport unknown",
            RequestError::UnknownSid => "Session ID unknown",
            RequestError::BadHandshakeMethod => "Bad handshake method",
            RequestError::BadRequest => "Bad request",
            RequestError::Forbidden => "Forbidden",
            RequestError::UnsupportedProtocolVersion => "Unsupported protocol version",
            RequestError::Limited(refusal) => return refusal.fmt(f),
            RequestError::PollingFull => "Too many long-polling sessions: try again later",
            RequestError::ShuttingDown => "The server is shutting down",
        })
    }
}

impl std::error::Error for RequestError {}

/// Where a request comes from: the client's address (behind a trusted
/// proxy, the one it forwarded) and the count of sessions that joined no
/// namespace yet among those opened on its TCP connection.
#[derive(Debug, Clone)]
pub struct Source {
    /// The client's address, by which handshakes are limited.
    pub address: IpAddr,
    /// Shared by every request of one connection.
    pub unjoined: Rc<Cell<usize>>,
}

impl Source {
    /// A source for a connection of its own, from `address`.
    pub fn new(address: IpAddr) -> Source {
        Source {
            address,
            unjoined: Rc::default(),
        }
    }
}

/// A session's place among those that joined no namespace: given back
/// when it joins one, or ends.
pub(crate) struct Unjoined {
    address: IpAddr,
    connection: std::rc::Weak<Cell<usize>>,
    engine: std::rc::Weak<Shared>,
}

impl Drop for Unjoined {
    fn drop(&mut self) {
        if let Some(count) = self.connection.upgrade() {
            count.set(count.get().saturating_sub(1));
        }
        if let Some(engine) = self.engine.upgrade() {
            engine.handshakes.borrow_mut().joined(self.address);
        }
    }
}

/// An accepted WebSocket request: the session it upgrades, or the place of
/// the session it opens.
pub struct Admission {
    sid: Option<Rc<str>>,
    protocol: Protocol,
    place: Option<Unjoined>,
    address: IpAddr,
    /// The handshake's query, for an Engine.IO 3 session it opens.
    query: String,
}

pub(crate) struct Shared {
    pub config: Config,
    /// What each session lives by, from `config`, shared by all.
    limits: Rc<session::Limits>,
    pub handler: Rc<dyn Handler>,
    pub sessions: RefCell<IdMap<Rc<str>, SessionRef>>,
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    closed: Cell<bool>,
    handshakes: RefCell<handshakes::Handshakes>,
    /// Bytes queued in or held for every session.
    pending: Cell<usize>,
    /// Notified when a session leaves the table, for [`Engine::no_sessions`].
    forgotten: crate::rt::Notify,
}

impl Shared {
    pub fn received(&self, bytes: usize) {
        self.bytes_received
            .set(self.bytes_received.get() + bytes as u64);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.set(self.bytes_sent.get() + bytes as u64);
    }

    /// A session ended: it leaves the table (unless another took its sid).
    pub fn forget(&self, sid: &str, session: &SessionRef) {
        let mut sessions = self.sessions.borrow_mut();
        if sessions.get(sid) == Some(session) {
            sessions.remove(sid);
            drop(sessions);
            self.forgotten.notify();
        }
    }

    /// A session from `address` left its last namespace: it joined nothing
    /// again, and takes a place among such sessions.
    pub fn unjoined_again(self: &Rc<Shared>, address: IpAddr) -> Unjoined {
        self.handshakes
            .borrow_mut()
            .unjoined(address, Instant::now());
        Unjoined {
            address,
            connection: std::rc::Weak::new(),
            engine: Rc::downgrade(self),
        }
    }
}

/// What an endpoint is doing, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Open sessions on long-polling.
    pub polling: usize,
    /// Open sessions on WebSocket.
    pub websocket: usize,
    /// Bytes of packets received, as sent on the wire by clients.
    pub bytes_received: u64,
    /// Bytes of packets sent.
    pub bytes_sent: u64,
    /// Bytes queued for, or held for, all sessions now.
    pub bytes_pending: usize,
}

/// An Engine.IO endpoint and its sessions.
#[derive(Clone)]
pub struct Engine(Rc<Shared>);

impl Engine {
    /// An endpoint with `config` that reports to `handler`.
    pub fn new(config: Config, handler: Rc<dyn Handler>) -> Engine {
        Engine(Rc::new(Shared {
            handler,
            sessions: RefCell::new(IdMap::default()),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            closed: Cell::new(false),
            handshakes: RefCell::new(handshakes::Handshakes::new(
                config.handshakes.clone(),
                Instant::now(),
            )),
            pending: Cell::new(0),
            forgotten: crate::rt::Notify::default(),
            limits: Rc::new(session::Limits::from(&config)),
            config,
        }))
    }

    /// Stops opening sessions (new ones get 503) and closes every open one
    /// once what is queued for it went out: the endpoint's part of a
    /// graceful shutdown.
    pub fn close_all(&self) {
        self.0.closed.set(true);
        // A polling client that is still there collects its last packets
        // within milliseconds; one that is gone must not hold the shutdown.
        let linger = self.0.config.ping_timeout.min(Duration::from_secs(1));
        for session in self.sessions() {
            session.close_within(linger);
        }
    }

    /// Session and traffic counts.
    pub fn stats(&self) -> Stats {
        let sessions = self.0.sessions.borrow();
        let websocket = sessions
            .values()
            .filter(|s| s.transport() == Transport::WebSocket)
            .count();
        Stats {
            polling: sessions.len() - websocket,
            websocket,
            bytes_received: self.0.bytes_received.get(),
            bytes_sent: self.0.bytes_sent.get(),
            bytes_pending: self.0.pending.get(),
        }
    }

    /// The settings given to [`Engine::new`]; they do not change.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Handles to the open sessions, copied out: the table may change as they close.
    pub fn sessions(&self) -> Vec<SessionRef> {
        self.0.sessions.borrow().values().cloned().collect()
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.0.sessions.borrow().len()
    }

    /// Waits until every session has ended.
    pub async fn no_sessions(&self) {
        self.0.forgotten.until(|| self.session_count() == 0).await
    }

    /// The session with `sid`, if open.
    pub fn session(&self, sid: &str) -> Option<SessionRef> {
        self.0.sessions.borrow().get(sid).cloned()
    }

    /// Takes a place for a new session from `source`, if its limits allow.
    fn admit(&self, source: &Source) -> Result<Unjoined, RequestError> {
        if self.0.closed.get() {
            return Err(RequestError::ShuttingDown);
        }
        self.0
            .handshakes
            .borrow_mut()
            .admit(source.address, source.unjoined.get(), Instant::now())
            .map_err(|refusal| {
                log::debug!("handshake from {} refused: {refusal}", source.address);
                RequestError::Limited(refusal)
            })?;
        source.unjoined.set(source.unjoined.get() + 1);
        Ok(Unjoined {
            address: source.address,
            connection: Rc::downgrade(&source.unjoined),
            engine: Rc::downgrade(&self.0),
        })
    }

    pub(crate) fn open(
        &self,
        protocol: Protocol,
        transport: Transport,
        address: IpAddr,
        place: Option<Unjoined>,
        query: &str,
    ) -> SessionRef {
        let sid: Rc<str> = crate::id::random().into();
        let limits = self.0.limits.clone();
        let state = Session::new(&sid, protocol, transport, limits, Instant::now());
        let session = SessionRef::new(sid.clone(), address, &self.0, state, place);
        self.0.sessions.borrow_mut().insert(sid, session.clone());
        // Counts the open packet and sets the first alarm.
        session.with(|_| ());
        let query = if protocol == Protocol::V3 { query } else { "" };
        self.0.handler.on_open(&session, query);
        session
    }

    /// The protocol a request's `EIO` asks for, if this endpoint speaks it.
    fn protocol(&self, request: &Request) -> Result<Protocol, RequestError> {
        match query_param(&request.query, "EIO") {
            Some("4") => Ok(Protocol::V4),
            // engine.io takes a missing EIO as 3 (old Swift clients send none).
            Some("3") | None if self.0.config.allow_eio3 => Ok(Protocol::V3),
            _ => Err(RequestError::UnsupportedProtocolVersion),
        }
    }

    /// Checks a request's query against the protocol; returns the protocol
    /// and the session it names, or `None` for a handshake.
    fn verify(
        &self,
        request: &Request,
        upgrade: bool,
    ) -> Result<(Protocol, Option<SessionRef>), RequestError> {
        let transport = match query_param(&request.query, "transport") {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return Err(RequestError::UnknownTransport),
        };
        let protocol = self.protocol(request)?;
        // Engine.IO 3's JSONP polling (`j`), for browsers without XHR, is
        // not served.
        if protocol == Protocol::V3 && query_param(&request.query, "j").is_some() {
            return Err(RequestError::BadRequest);
        }
        if upgrade != (transport == Transport::WebSocket) {
            return Err(RequestError::BadRequest);
        }
        match query_param(&request.query, "sid") {
            Some(sid) => {
                let session = self.session(sid).ok_or(RequestError::UnknownSid)?;
                if !upgrade && !session.read(Session::accepts_polling) {
                    return Err(RequestError::BadRequest);
                }
                if session.read(Session::protocol) != protocol {
                    return Err(RequestError::BadRequest);
                }
                Ok((protocol, Some(session)))
            }
            None if request.method != Method::Get => Err(RequestError::BadHandshakeMethod),
            None => Ok((protocol, None)),
        }
    }

    /// Serves a long-polling request from `source`. `None` means the
    /// connection must be closed without an answer (the client went away).
    pub async fn serve_polling<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        request: &Request,
        source: &Source,
        conn: &mut Conn<S>,
    ) -> Option<Response> {
        let (protocol, session) = match self.verify(request, false) {
            Ok(verified) => verified,
            Err(error) => return Some(error.response()),
        };
        match (session, &request.method) {
            (None, _) if self.polling_full() && !self.0.closed.get() => {
                Some(RequestError::PollingFull.response())
            }
            (None, _) => Some(match self.admit(source) {
                Ok(place) => polling::handshake(self, protocol, request, source.address, place),
                Err(error) => error.response(),
            }),
            (Some(session), Method::Get) => polling::get(self, &session, request, conn).await,
            (Some(session), Method::Post) => polling::post(self, &session, request, conn).await,
            (Some(_), _) => Some(RequestError::BadRequest.response()),
        }
    }

    /// Whether the polling sessions reached their limit. Counting walks the
    /// sessions, so it only happens when there could be that many.
    fn polling_full(&self) -> bool {
        let max = self.0.config.max_polling_sessions;
        let sessions = self.0.sessions.borrow();
        sessions.len() >= max
            && sessions
                .values()
                .filter(|s| s.transport() == Transport::Polling)
                .count()
                >= max
    }

    /// Checks a WebSocket upgrade request from `source` before it is
    /// accepted: the polling session it upgrades, or a place for the new
    /// session it opens. A new session while shutting down gets 503, as a
    /// polling handshake does. A second WebSocket for a session that
    /// already has one passes here and is closed right after the
    /// handshake, as the reference server does.
    pub fn check_websocket(
        &self,
        request: &Request,
        source: &Source,
    ) -> Result<Admission, RequestError> {
        let (protocol, session) = self.verify(request, true)?;
        let place = match &session {
            Some(_) => None,
            None => Some(self.admit(source)?),
        };
        let query = if session.is_none() && protocol == Protocol::V3 {
            request.query.clone()
        } else {
            String::new()
        };
        Ok(Admission {
            sid: session.map(|session| session.sid_rc()),
            protocol,
            place,
            address: source.address,
            query,
        })
    }

    /// Serves an accepted WebSocket over `stream` until it closes: a new
    /// session, or the upgrade of a polling session. `read` is what was read
    /// from the stream past the upgrade request.
    pub fn serve_websocket<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        &self,
        stream: S,
        read: Vec<u8>,
        admission: Admission,
    ) -> impl std::future::Future<Output = ()> + Unpin + use<S> {
        websocket::run(self, stream, read, admission)
    }
}
