//! The endpoint's side of a session: the [`Session`] state machine, shared
//! by its transports and the application, and everything that happens
//! after each call into it.
//!
//! Every call goes through [`SessionRef::update`], which then settles what
//! the call changed, in quinn's manner: the endpoint's count of pending
//! bytes, the alarm (set to [`Session::next_deadline`]), the transports
//! waiting for a change (woken), the endpoint's table (a session that ended
//! leaves it), and the application, which hears the session's events.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::packet::Data;
use super::session::{CloseReason, Event, Phase, Session, Transport, Upgrade};
use super::{Shared, Unjoined};
use crate::rt::{self, Alarm, Wake};

pub(crate) struct Link {
    sid: Rc<str>,
    address: IpAddr,
    engine: Weak<Shared>,
    session: RefCell<Session>,
    /// Transports waiting for the session to change: one, nearly always
    /// (two while an upgrade is under way), held inline.
    waiters: rt::Notify,
    /// Set to the session's next deadline, which `deadline` repeats: most
    /// calls leave it as it was, and comparing is cheaper than asking the
    /// queue.
    alarm: Alarm,
    deadline: Cell<Option<Instant>>,
    /// Its place among the sessions that joined no namespace, until the
    /// application says it joined one.
    /// Boxed: most sessions join at once, and then the place is gone.
    unjoined: RefCell<Option<Box<Unjoined>>>,
    /// What the session holds, as last counted in the endpoint's total.
    counted: Cell<usize>,
}

/// A handle to one Engine.IO session of an endpoint; clones refer to the
/// same session.
#[derive(Clone)]
pub struct SessionRef(Rc<Link>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &SessionRef) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SessionRef {}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRef")
            .field("sid", &self.sid())
            .finish()
    }
}

/// When the application hears what a call into the session made happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hear {
    /// At once: the call came from a transport.
    Now,
    /// From a task of its own: the call came from the application, which
    /// may be in the middle of something (a session that its own message
    /// made too slow ends outside its stack).
    Later,
}

/// What of a session its transports wait on.
fn outline(session: &Session) -> (bool, Phase, Upgrade, Transport) {
    (
        session.outbox_is_empty(),
        session.phase(),
        session.upgrade(),
        session.transport(),
    )
}

impl SessionRef {
    pub(crate) fn new(
        sid: Rc<str>,
        address: IpAddr,
        engine: &Rc<Shared>,
        session: Session,
        unjoined: Option<Unjoined>,
    ) -> SessionRef {
        SessionRef(Rc::new_cyclic(|me: &Weak<Link>| Link {
            sid,
            address,
            engine: Rc::downgrade(engine),
            session: RefCell::new(session),
            waiters: rt::Notify::default(),
            alarm: Alarm::new(me.clone()),
            deadline: Cell::new(None),
            unjoined: RefCell::new(unjoined.map(Box::new)),
            counted: Cell::new(0),
        }))
    }

    /// The session id: 20 random URL-safe characters, sent in the `open` packet.
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

    /// The transport in use now; polling becomes WebSocket when an upgrade completes.
    pub fn transport(&self) -> Transport {
        self.0.session.borrow().transport()
    }

    /// Whether the session is open (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.0.session.borrow().phase() == Phase::Open
    }

    /// Queues a message for the client. Ignored once the session is
    /// closing; a client too slow to take it is dropped.
    pub fn send(&self, data: Data) {
        self.update(|session| session.send(data), Hear::Later);
    }

    /// Closes the session from the server side: what is queued is still
    /// delivered, then the transport is closed.
    pub fn close(&self) {
        let linger = match self.0.engine.upgrade() {
            Some(engine) => engine.config.ping_timeout,
            None => return,
        };
        self.close_within(linger);
    }

    /// Closes the session from the server side, waiting at most `linger`
    /// for its last packets to be collected.
    pub fn close_within(&self, linger: Duration) {
        let closed = self.update(
            |session| {
                let open = session.phase() == Phase::Open;
                session.close(Instant::now(), linger);
                open
            },
            Hear::Now,
        );
        if closed && let Some(engine) = self.0.engine.upgrade() {
            engine.handler.on_close(self, CloseReason::ForcedClose);
        }
    }

    /// Takes the messages queued and not yet sent (for a socket that moves
    /// to another session); the rest of the queue is dropped.
    pub fn take_messages(&self) -> Vec<Data> {
        self.with(|session| {
            std::iter::from_fn(|| session.poll_transmit())
                .filter_map(|packet| match packet {
                    super::packet::Packet::Message(data) => Some(data),
                    _ => None,
                })
                .collect()
        })
    }

    /// Ends the session now, dropping whatever is queued.
    pub(crate) fn terminate(&self, reason: CloseReason) {
        self.update(|session| session.end(reason), Hear::Now);
    }

    /// The application tells whether the session is in use (joined a
    /// namespace, for Socket.IO): until it is, it counts against its
    /// client's limit on such sessions.
    pub fn set_joined(&self, joined: bool) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        if !self.is_open() && !joined {
            return;
        }
        let mut place = self.0.unjoined.borrow_mut();
        if joined {
            // Dropping the place gives it back.
            *place = None;
        } else if place.is_none() {
            *place = Some(Box::new(engine.unjoined_again(self.0.address)));
        }
    }

    /// Counts `bytes` the application keeps for this session (the parts of
    /// a message still waiting for the rest) against the endpoint's bound
    /// on what all sessions hold. False, and nothing counted, past it.
    pub fn hold(&self, bytes: usize) -> bool {
        let Some(engine) = self.0.engine.upgrade() else {
            return false;
        };
        if !self.is_open() || engine.pending.get() + bytes > engine.config.max_pending_bytes {
            return false;
        }
        self.update(|session| session.hold(bytes), Hear::Later);
        true
    }

    /// The application no longer keeps `bytes` it [held](SessionRef::hold).
    pub fn release(&self, bytes: usize) {
        self.update(|session| session.release(bytes), Hear::Later);
    }

    /// Calls into the session from a transport (the application hears what
    /// follows at once).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        self.update(f, Hear::Now)
    }

    /// Reads the session without changing it, so nothing needs settling.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Session) -> R) -> R {
        f(&self.0.session.borrow())
    }

    /// Runs `f` on the session, then settles what it changed (see the
    /// module's doc).
    fn update<R>(&self, f: impl FnOnce(&mut Session) -> R, hear: Hear) -> R {
        let (result, before) = {
            let mut session = self.0.session.borrow_mut();
            let before = outline(&session);
            (f(&mut session), before)
        };
        self.settle(before, hear);
        result
    }

    /// What follows every call into the session; `before` is what the
    /// transports wait on, as it was before the call.
    fn settle(&self, before: (bool, Phase, Upgrade, Transport), hear: Hear) {
        let Some(engine) = self.0.engine.upgrade() else {
            return;
        };
        let (changed, closed, events) = {
            let mut session = self.0.session.borrow_mut();
            let held = session.pending_bytes();
            let counted = self.0.counted.replace(held);
            // The total is the sum of what each session counted: never
            // less than this one's share. The session whose call took it
            // past the bound is the one that goes.
            let total = engine.pending.get() - counted + held;
            engine.pending.set(total);
            if held > counted && total > engine.config.max_pending_bytes {
                session.end(CloseReason::SlowClient);
                engine.pending.set(total - held);
                self.0.counted.set(0);
            }
            let deadline = session.next_deadline();
            if self.0.deadline.replace(deadline) != deadline {
                self.0.alarm.set(deadline);
            }
            let events: Vec<Event> = match hear {
                Hear::Now => std::iter::from_fn(|| session.poll_event()).collect(),
                Hear::Later => {
                    if session.has_events() {
                        let me = self.clone();
                        rt::spawn(async move {
                            let before = outline(&me.0.session.borrow());
                            me.settle(before, Hear::Now);
                        })
                        .detach();
                    }
                    Vec::new()
                }
            };
            (
                outline(&session) != before,
                session.phase() == Phase::Closed,
                events,
            )
        };
        if changed {
            self.0.waiters.notify();
        }
        if closed {
            self.0.unjoined.borrow_mut().take();
            engine.forget(&self.0.sid, self);
        }
        for event in events {
            match event {
                Event::Message(data) => engine.handler.on_message(self, data),
                Event::Closed(reason) => engine.handler.on_close(self, reason),
            }
        }
    }

    /// Resolves once `ready` holds for the session; checked again at every
    /// change the transports wait on.
    pub(crate) async fn wait(&self, ready: impl Fn(&Session) -> bool) {
        self.0
            .waiters
            .until(|| ready(&self.0.session.borrow()))
            .await
    }

    /// Wakes `waker` at the session's next change that transports wait on.
    pub(crate) fn register(&self, waker: &Waker) {
        self.0.waiters.register(waker);
    }
}

impl Wake for Link {
    fn wake(self: Rc<Self>, now: Instant) {
        // The alarm came due: it is set no more, whatever the cache says.
        self.deadline.set(None);
        SessionRef(self).with(|session| session.handle_timeout(now));
    }
}
