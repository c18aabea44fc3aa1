//! One Engine.IO session: its outbound queue, transport, upgrade and
//! heartbeat state. Transports move bytes; the session decides.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;

use super::heartbeat::Due;
use super::packet::{Data, Packet};
use super::{Shared, Unjoined};
use crate::rt;
use crate::rt::{Alarm, Wake};
use std::net::IpAddr;

/// The transport a session currently uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl Transport {
    /// The transport's name in the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it: a close packet, or the connection went away.
    TransportClose,
    /// The transport failed or broke the protocol's rules.
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent a packet that could not be decoded.
    ParseError,
    /// The server closed it.
    ForcedClose,
    /// The client did not read what it was sent, and the queue filled up.
    SlowClient,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SlowClient => "slow client",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// Closed by the server: what is queued is still delivered, then `Closed`.
    Closing,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    None,
    /// A WebSocket with this sid is open and waiting for `2probe`.
    Probing,
    /// `3probe` was sent; waiting for `5`.
    Probed,
}

pub(crate) struct State {
    pub transport: Transport,
    pub phase: Phase,
    pub reason: Option<CloseReason>,
    pub upgrade: Upgrade,
    pub outbox: VecDeque<Packet>,
    outbox_bytes: usize,
    /// Bytes the application keeps for the session, besides its outbox.
    held: usize,
    /// A long-polling GET is waiting for packets.
    pub polling_get: bool,
    /// A long-polling POST is being read.
    pub polling_post: bool,
    waiters: Vec<Waker>,
    /// The last sign of life: the open, then each pong. The session is
    /// dead a ping interval and a ping timeout after it.
    last_pong: Instant,
    /// The session's one deadline: its next ping, its pong check, or the end
    /// of its closing linger.
    due: Option<(Instant, Due)>,
    /// Its place among the sessions that joined no namespace, until the
    /// application says it joined one.
    unjoined: Option<Unjoined>,
}

pub(crate) struct Inner {
    sid: Rc<str>,
    address: IpAddr,
    engine: Weak<Shared>,
    /// Set to the session's one deadline.
    alarm: Alarm,
    state: RefCell<State>,
}

/// A handle to one Engine.IO session; clones refer to the same session.
#[derive(Clone)]
pub struct Session(Rc<Inner>);

impl PartialEq for Session {
    fn eq(&self, other: &Session) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Session {}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("sid", &self.sid()).finish()
    }
}

impl Session {
    pub(crate) fn new(
        sid: Rc<str>,
        engine: &Rc<Shared>,
        transport: Transport,
        address: IpAddr,
        unjoined: Option<Unjoined>,
    ) -> Session {
        Session(Rc::new_cyclic(|me: &Weak<Inner>| Inner {
            sid,
            address,
            engine: Rc::downgrade(engine),
            alarm: Alarm::new(me.clone()),
            state: RefCell::new(State {
                transport,
                phase: Phase::Open,
                reason: None,
                upgrade: Upgrade::None,
                outbox: VecDeque::new(),
                outbox_bytes: 0,
                held: 0,
                polling_get: false,
                polling_post: false,
                waiters: Vec::new(),
                last_pong: Instant::now(),
                due: None,
                unjoined,
            }),
        }))
    }

    /// The session id.
    pub fn sid(&self) -> &str {
        &self.0.sid
    }

    pub(crate) fn sid_rc(&self) -> Rc<str> {
        self.0.sid.clone()
    }

    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub fn address(&self) -> IpAddr {
        self.0.address
    }

    /// The application tells whether the session is in use (joined a
    /// namespace, for Socket.IO): until it is, it counts against its
    /// client's limit on such sessions.
    pub fn set_joined(&self, joined: bool) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        let mut st = self.0.state.borrow_mut();
        if st.phase == Phase::Closed {
            return;
        }
        if joined {
            // Dropping the place gives it back.
            st.unjoined = None;
        } else if st.unjoined.is_none() {
            engine
                .handshakes
                .borrow_mut()
                .unjoined(self.0.address, Instant::now());
            st.unjoined = Some(Unjoined {
                address: self.0.address,
                connection: Weak::new(),
                engine: Rc::downgrade(&engine),
            });
        }
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        self.0.state.borrow().transport
    }

    /// Whether the session is open (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.0.state.borrow().phase == Phase::Open
    }

    /// Queues a message for the client. Ignored once the session is closing.
    pub fn send(&self, data: Data) {
        self.push(Packet::Message(data));
    }

    /// Closes the session from the server side: what is queued is still
    /// delivered, then the transport is closed.
    pub fn close(&self) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        self.close_within(engine.config.ping_timeout);
    }

    /// Closes the session from the server side, waiting at most `linger`
    /// for its last packets to be collected.
    pub(crate) fn close_within(&self, linger: Duration) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        let config = &engine.config;
        let last_pong = {
            let mut st = self.0.state.borrow_mut();
            if st.phase != Phase::Open {
                return;
            }
            st.phase = Phase::Closing;
            st.reason = Some(CloseReason::ForcedClose);
            wake_all(&mut st);
            st.last_pong
        };
        // Lingers for the client to collect its close packet (a polling
        // client that is told nothing reports an error, not a close), but
        // never past the moment the heartbeat would have ended it.
        let dead = last_pong + config.ping_interval + config.ping_timeout;
        self.schedule((Instant::now() + linger).min(dead), Due::Linger);
        engine.handler.on_close(self, CloseReason::ForcedClose);
    }

    /// Sets the session's one deadline.
    fn schedule(&self, at: Instant, due: Due) {
        self.0.state.borrow_mut().due = Some((at, due));
        self.0.alarm.set(Some(at));
    }

    /// Starts the heartbeat: a ping every interval after the last pong, and
    /// the session ends when a pong is late.
    pub(crate) fn start_heartbeat(&self, interval: Duration) {
        self.schedule(Instant::now() + interval, Due::Ping);
    }

    pub(crate) fn borrow(&self) -> std::cell::Ref<'_, State> {
        self.0.state.borrow()
    }

    pub(crate) fn borrow_mut(&self) -> std::cell::RefMut<'_, State> {
        self.0.state.borrow_mut()
    }

    /// Queues a packet and wakes the transport. A queue past its bound, or
    /// one that takes the endpoint past its bound on all that sessions hold,
    /// ends the session (later, outside the caller's stack).
    pub(crate) fn push(&self, packet: Packet) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        let mut st = self.0.state.borrow_mut();
        if st.phase != Phase::Open {
            return;
        }
        let size = packet.queued_size();
        st.outbox_bytes += size;
        engine.pending.set(engine.pending.get() + size);
        st.outbox.push_back(packet);
        if st.outbox_bytes > engine.config.max_buffered()
            || engine.pending.get() > engine.config.max_pending_bytes
        {
            st.phase = Phase::Closed;
            forget_outbox(&engine, &mut st);
            wake_all(&mut st);
            drop(st);
            let session = self.clone();
            rt::spawn(async move { session.end(CloseReason::SlowClient, true) }).detach();
            return;
        }
        wake_all(&mut st);
    }

    /// Takes every queued packet.
    pub(crate) fn drain(&self) -> Vec<Packet> {
        let mut st = self.0.state.borrow_mut();
        if let Some(engine) = self.0.engine.upgrade() {
            engine.pending.set(engine.pending.get() - st.outbox_bytes);
        }
        st.outbox_bytes = 0;
        st.outbox.drain(..).collect()
    }

    /// Takes the next queued packet.
    pub(crate) fn pop(&self) -> Option<Packet> {
        let mut st = self.0.state.borrow_mut();
        let packet = st.outbox.pop_front()?;
        let size = packet.queued_size();
        st.outbox_bytes -= size;
        if let Some(engine) = self.0.engine.upgrade() {
            engine.pending.set(engine.pending.get() - size);
        }
        Some(packet)
    }

    /// Counts `bytes` the application keeps for this session (the parts of
    /// a message still waiting for the rest) against the endpoint's bound
    /// on what all sessions hold. False, and nothing counted, past it.
    pub fn hold(&self, bytes: usize) -> bool {
        let Some(engine) = self.0.engine.upgrade() else {
            return false;
        };
        let mut st = self.0.state.borrow_mut();
        if st.phase == Phase::Closed
            || engine.pending.get() + bytes > engine.config.max_pending_bytes
        {
            return false;
        }
        st.held += bytes;
        engine.pending.set(engine.pending.get() + bytes);
        true
    }

    /// The application no longer keeps `bytes` it [held](Session::hold).
    pub fn release(&self, bytes: usize) {
        let mut st = self.0.state.borrow_mut();
        let bytes = bytes.min(st.held);
        st.held -= bytes;
        if let Some(engine) = self.0.engine.upgrade() {
            engine.pending.set(engine.pending.get() - bytes);
        }
    }

    /// Resolves once `ready` holds for the state; re-checked on every change.
    pub(crate) async fn wait(&self, ready: impl Fn(&State) -> bool) {
        future::poll_fn(|cx| {
            let mut st = self.0.state.borrow_mut();
            if ready(&st) {
                return Poll::Ready(());
            }
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes `waker` at the session's next change.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut st = self.0.state.borrow_mut();
        if !st.waiters.iter().any(|w| w.will_wake(waker)) {
            st.waiters.push(waker.clone());
        }
    }

    /// Wakes everything waiting on the session.
    pub(crate) fn notify(&self) {
        wake_all(&mut self.0.state.borrow_mut());
    }

    /// Handles a packet from the client.
    pub(crate) fn receive(&self, packet: Packet) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        let phase = self.0.state.borrow().phase;
        if phase != Phase::Open {
            // A client that closes while the server is closing: done.
            if phase == Phase::Closing && packet == Packet::Close {
                self.finish();
            }
            return;
        }
        match packet {
            Packet::Message(data) => engine.handler.on_message(self, data),
            Packet::Pong(_) => self.0.state.borrow_mut().last_pong = Instant::now(),
            Packet::Close => self.terminate(CloseReason::TransportClose),
            // Protocol 4 pings only go from server to client.
            Packet::Ping(_) => self.terminate(CloseReason::TransportError),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Ends the session now, dropping whatever is queued.
    pub(crate) fn terminate(&self, reason: CloseReason) {
        self.end(reason, false);
    }

    fn end(&self, reason: CloseReason, already_closed: bool) {
        let was_open = {
            let mut st = self.0.state.borrow_mut();
            let was_open = st.phase == Phase::Open || already_closed;
            if st.phase == Phase::Closed && !already_closed {
                return;
            }
            st.phase = Phase::Closed;
            if st.reason.is_none() {
                st.reason = Some(reason);
            }
            st.due = None;
            st.unjoined = None;
            if let Some(engine) = self.0.engine.upgrade() {
                forget_outbox(&engine, &mut st);
            }
            wake_all(&mut st);
            was_open
        };
        self.0.alarm.set(None);
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        engine.sessions.borrow_mut().remove(self.sid());
        if was_open {
            engine.handler.on_close(self, reason);
        }
    }

    /// A server-closed session whose last packets went out: forget it.
    pub(crate) fn finish(&self) {
        {
            let mut st = self.0.state.borrow_mut();
            if st.phase == Phase::Closed {
                return;
            }
            st.phase = Phase::Closed;
            st.due = None;
            st.unjoined = None;
            if let Some(engine) = self.0.engine.upgrade() {
                forget_outbox(&engine, &mut st);
            }
            wake_all(&mut st);
        }
        self.0.alarm.set(None);
        if let Some(engine) = self.0.engine.upgrade() {
            engine.sessions.borrow_mut().remove(self.sid());
        }
    }
}

impl Wake for Inner {
    fn wake(self: Rc<Self>, now: Instant) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let due = match self.state.borrow().due {
            Some((when, due)) if when <= now => due,
            // Rescheduled or ended since.
            _ => return,
        };
        let session = Session(self);
        let config = &engine.config;
        match due {
            Due::Ping => {
                session.push(Packet::Ping(String::new()));
                session.schedule(now + config.ping_timeout, Due::PongCheck(now));
            }
            Due::PongCheck(sent) => {
                let pong = Some(session.borrow().last_pong).filter(|&p| p >= sent);
                match pong {
                    Some(pong) => {
                        session.schedule((pong + config.ping_interval).max(now), Due::Ping)
                    }
                    None => session.terminate(CloseReason::PingTimeout),
                }
            }
            Due::Linger => session.finish(),
        }
    }
}

/// Drops what a closed session still had queued or held, and stops
/// counting it against the endpoint.
fn forget_outbox(engine: &Shared, st: &mut State) {
    engine
        .pending
        .set(engine.pending.get() - st.outbox_bytes - st.held);
    st.outbox.clear();
    st.outbox_bytes = 0;
    st.held = 0;
}

fn wake_all(st: &mut State) {
    for waker in st.waiters.drain(..) {
        waker.wake();
    }
}
