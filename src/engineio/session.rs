//! One Engine.IO session as a state machine, in the manner of quinn-proto:
//! no I/O, no clock, no tasks. Packets from the client, the application's
//! messages and the time go in (`handle_…`, `send`, `close`); what to send
//! ([`Session::poll_transmit`], [`Session::collect`]), what the application
//! must hear ([`Session::poll_event`]) and when to call again
//! ([`Session::next_deadline`]) come out. The transports (polling.rs,
//! websocket.rs) are thin drivers that move bytes between a socket and it.

use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::heartbeat::{Beat, Heartbeat, Rhythm};
use super::packet::{Data, Packet};
use super::{Config, RequestError};
use crate::rt::Fifo;

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

/// The Engine.IO protocol a session speaks, by its handshake's `EIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Engine.IO 3 (Socket.IO 2 clients, `--allow-eio3`): the client pings.
    V3,
    /// Engine.IO 4: the server pings.
    V4,
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
    /// The server closed it ([`Session::close`]), letting the queue drain first.
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

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Open: packets go both ways.
    Open,
    /// Closed by the server: what is queued is still delivered (until the
    /// linger runs out), then `Closed`.
    Closing,
    /// Gone: nothing more goes either way, and the session leaves the table.
    Closed,
}

/// Where an upgrade to WebSocket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// None under way.
    None,
    /// A WebSocket with this sid is open and waiting for `2probe`.
    Probing,
    /// `3probe` was sent; waiting for `5`.
    Probed,
}

/// What the application must hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message (packet `4`) from the client, for the application.
    Message(Data),
    /// The session ended (once per session; not after a server close,
    /// which the application made itself).
    Closed(CloseReason),
}

/// A step of the upgrade, as a packet on the new WebSocket makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Send this on the WebSocket (`3probe`); the polling client's waiting
    /// GET is released with a noop.
    Reply(Packet),
    /// The session is on the WebSocket now.
    Upgraded,
}

/// Why an upgrade could not start or go on: the WebSocket is closed, the
/// session stays as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRefused;

/// The settings a session lives by, the same for every session of an
/// endpoint: shared, not copied into each (56 bytes a session).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub upgrade_timeout: Duration,
    pub max_buffered: usize,
    pub max_payload: usize,
}

impl Limits {
    fn rhythm(&self) -> Rhythm {
        Rhythm {
            interval: self.ping_interval,
            timeout: self.ping_timeout,
        }
    }
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Limits {
        Limits {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            upgrade_timeout: config.upgrade_timeout,
            max_buffered: config.max_buffered(),
            max_payload: config.max_payload,
        }
    }
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct Session {
    limits: Rc<Limits>,
    protocol: Protocol,
    transport: Transport,
    phase: Phase,
    reason: Option<CloseReason>,
    upgrade: Upgrade,
    upgrade_deadline: Option<Instant>,
    outbox: Fifo<Packet>,
    outbox_bytes: usize,
    /// Bytes the application keeps for the session, besides its outbox.
    held: usize,
    heartbeat: Heartbeat,
    /// When a closing session is let go, delivered or not.
    linger_until: Option<Instant>,
    /// A long-polling GET is waiting for packets.
    get_waiting: bool,
    /// A long-polling POST is being read.
    post_reading: bool,
    events: Fifo<Event>,
}

impl Session {
    /// A session opened at `now` on `transport`, speaking `protocol`, its
    /// open packet (with `sid` and the settings) queued.
    pub(crate) fn new(
        sid: &str,
        protocol: Protocol,
        transport: Transport,
        limits: Rc<Limits>,
        now: Instant,
    ) -> Session {
        let upgrades = match transport {
            Transport::Polling => r#"["websocket"]"#,
            Transport::WebSocket => "[]",
        };
        let (interval, timeout) = (limits.ping_interval, limits.ping_timeout);
        // Engine.IO 3 has no maxPayload in its handshake.
        let open = Packet::Open(match protocol {
            Protocol::V4 => format!(
                r#"{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
                interval.as_millis(),
                timeout.as_millis(),
                limits.max_payload,
            ),
            Protocol::V3 => format!(
                r#"{{"sid":"{sid}","upgrades":{upgrades},"pingInterval":{},"pingTimeout":{}}}"#,
                interval.as_millis(),
                timeout.as_millis(),
            ),
        });
        let heartbeat = match protocol {
            Protocol::V4 => Heartbeat::new(limits.rhythm(), now),
            Protocol::V3 => Heartbeat::client_pings(limits.rhythm(), now),
        };
        let mut session = Session {
            limits,
            protocol,
            transport,
            phase: Phase::Open,
            reason: None,
            upgrade: Upgrade::None,
            upgrade_deadline: None,
            outbox: Fifo::default(),
            outbox_bytes: 0,
            held: 0,
            heartbeat,
            linger_until: None,
            get_waiting: false,
            post_reading: false,
            events: Fifo::default(),
        };
        session.push(open);
        session
    }

    /// The Engine.IO protocol it speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The transport in use now; polling becomes WebSocket when an upgrade completes.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Where the session is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Where an upgrade is.
    pub fn upgrade(&self) -> Upgrade {
        self.upgrade
    }

    /// Why it ended (or is ending), once it does.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason
    }

    /// Whether nothing is queued for the client.
    pub fn outbox_is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Bytes queued for the client or held for it by the application, which
    /// the endpoint bounds over all its sessions.
    pub fn pending_bytes(&self) -> usize {
        self.outbox_bytes + self.held
    }

    /// When the session next needs [`Session::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let own = match self.phase {
            Phase::Open => Some(self.heartbeat.deadline()),
            Phase::Closing => self.linger_until,
            Phase::Closed => None,
        };
        match (own, self.upgrade_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the application has something to hear.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next thing the application must hear.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next packet for a WebSocket.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        let packet = self.outbox.pop_front()?;
        self.outbox_bytes -= packet.queued_size();
        Some(packet)
    }

    /// The deadline came, or `now` is past it: ping, end a session whose
    /// pong is late, let a closing one go, give up a stalled upgrade.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.upgrade_deadline.is_some_and(|at| now >= at) {
            self.abandon_upgrade();
        }
        match self.phase {
            Phase::Open => match self.heartbeat.timeout(now, self.limits.rhythm()) {
                Beat::Ping => self.push(Packet::Ping(String::new())),
                Beat::Wait => {}
                Beat::Dead => self.end(CloseReason::PingTimeout),
            },
            Phase::Closing if self.linger_until.is_some_and(|at| now >= at) => self.finish(),
            Phase::Closing | Phase::Closed => {}
        }
    }

    /// A packet from the client, on whichever transport.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) {
        if self.phase != Phase::Open {
            // A client that closes while the server is closing: done.
            if self.phase == Phase::Closing && packet == Packet::Close {
                self.finish();
            }
            return;
        }
        match packet {
            Packet::Message(data) => self.events.push_back(Event::Message(data)),
            Packet::Pong(_) if self.protocol == Protocol::V4 => self.heartbeat.pong(now),
            Packet::Close => self.end(CloseReason::TransportClose),
            // Protocol 3: the client pings, with what it likes, and the
            // server answers with the same.
            Packet::Ping(data) if self.protocol == Protocol::V3 => {
                self.heartbeat.pong(now);
                self.push(Packet::Pong(data));
            }
            // Protocol 4 pings only go from server to client, and protocol
            // 3 pongs from server to client.
            Packet::Ping(_) | Packet::Pong(_) => self.end(CloseReason::TransportError),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Queues a message for the client; past the session's bound on what
    /// it may have queued, it is too slow and ends. Ignored once closing.
    pub fn send(&mut self, data: Data) {
        self.push(Packet::Message(data));
    }

    fn push(&mut self, packet: Packet) {
        if self.phase != Phase::Open {
            return;
        }
        self.outbox_bytes += packet.queued_size();
        self.outbox.push_back(packet);
        if self.outbox_bytes > self.limits.max_buffered {
            self.end(CloseReason::SlowClient);
        }
    }

    /// Counts `bytes` the application keeps for the session.
    pub fn hold(&mut self, bytes: usize) {
        self.held += bytes;
    }

    /// The application no longer keeps `bytes` it held.
    pub fn release(&mut self, bytes: usize) {
        self.held -= bytes.min(self.held);
    }

    /// Closes the session from the server side at `now`: what is queued is
    /// still delivered, for at most `linger`, and never past the moment
    /// the heartbeat would have ended the session (a polling client that
    /// is told nothing reports an error, not a close, so a close packet is
    /// worth the wait).
    pub fn close(&mut self, now: Instant, linger: Duration) {
        if self.phase != Phase::Open {
            return;
        }
        self.phase = Phase::Closing;
        self.reason = Some(CloseReason::ForcedClose);
        self.linger_until = Some((now + linger).min(self.heartbeat.dead_at(self.limits.rhythm())));
    }

    /// Ends the session now, dropping whatever is queued. The application
    /// hears it, unless the server had closed it already.
    pub fn end(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::Open {
            self.events.push_back(Event::Closed(reason));
        }
        self.reason.get_or_insert(reason);
        self.phase = Phase::Closed;
        self.forget();
    }

    /// A closing session's WebSocket sent its last packet: gone.
    pub fn delivered(&mut self) {
        if self.phase == Phase::Closing && self.outbox.is_empty() {
            self.finish();
        }
    }

    /// A server-closed session whose last packets went out, or whose
    /// linger ran out: gone.
    fn finish(&mut self) {
        self.phase = Phase::Closed;
        self.forget();
    }

    fn forget(&mut self) {
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.held = 0;
        self.linger_until = None;
        self.upgrade = Upgrade::None;
        self.upgrade_deadline = None;
    }

    /// Whether a long-polling request may use the session: it is on
    /// polling (after an upgrade, polling is refused).
    pub fn accepts_polling(&self) -> bool {
        self.transport == Transport::Polling
    }

    /// A long-polling GET arrived. Two at once break the order of packets:
    /// the protocol ends the session, and the second GET gets an error.
    pub fn begin_get(&mut self) -> Result<(), RequestError> {
        if self.get_waiting {
            self.end(CloseReason::TransportError);
            return Err(RequestError::BadRequest);
        }
        self.get_waiting = true;
        Ok(())
    }

    /// Whether the waiting GET has something to answer: packets, the end,
    /// or an upgrade that releases it.
    pub fn get_ready(&self) -> bool {
        !self.outbox.is_empty()
            || self.phase != Phase::Open
            || self.upgrade == Upgrade::Probed
            || self.transport != Transport::Polling
    }

    /// The GET is done: answered, or its connection gone (which ends the
    /// session).
    pub fn end_get(&mut self, gone: bool) {
        self.get_waiting = false;
        if gone {
            self.end(CloseReason::TransportClose);
        }
    }

    /// The packets a GET answers with, emptying the queue.
    pub fn collect(&mut self) -> Vec<Packet> {
        match (self.transport, self.phase) {
            // Upgraded while the GET waited: release it.
            (Transport::WebSocket, _) => return vec![Packet::Noop],
            // The client closed the session itself: a noop ends its GET.
            (_, Phase::Closed) if self.reason == Some(CloseReason::TransportClose) => {
                return vec![Packet::Noop];
            }
            _ => {}
        }
        let mut packets: Vec<Packet> = self.outbox.take_all();
        self.outbox_bytes = 0;
        match self.phase {
            Phase::Open if packets.is_empty() => packets.push(Packet::Noop),
            Phase::Open => {}
            // Closed by the server: the last packets go out first, and the
            // close packet with the next GET. In one body,
            // socket.io-client would act on the close before the packets,
            // as it handles them a tick later.
            Phase::Closing if !packets.is_empty() => {}
            Phase::Closing => {
                packets.push(Packet::Close);
                self.finish();
            }
            Phase::Closed => packets.push(Packet::Close),
        }
        packets
    }

    /// A long-polling POST arrived; two at once end the session.
    pub fn begin_post(&mut self) -> Result<(), RequestError> {
        if self.post_reading {
            self.end(CloseReason::TransportError);
            return Err(RequestError::BadRequest);
        }
        self.post_reading = true;
        Ok(())
    }

    /// The POST's body was read (or could not be).
    pub fn end_post(&mut self) {
        self.post_reading = false;
    }

    /// A WebSocket for this session opened at `now`: the upgrade starts,
    /// and must end within the upgrade timeout. Refused when the session
    /// is not on polling, closing, or upgrading already (a second
    /// WebSocket for the same sid).
    pub fn begin_upgrade(&mut self, now: Instant) -> Result<(), UpgradeRefused> {
        if self.transport != Transport::Polling
            || self.upgrade != Upgrade::None
            || self.phase != Phase::Open
        {
            return Err(UpgradeRefused);
        }
        self.upgrade = Upgrade::Probing;
        self.upgrade_deadline = Some(now + self.limits.upgrade_timeout);
        Ok(())
    }

    /// A packet on the upgrading WebSocket: `2probe` (answered with
    /// `3probe`), then `5`. Anything else, or those out of turn, refuses
    /// the upgrade.
    pub fn handle_upgrade_packet(&mut self, packet: Packet) -> Result<UpgradeStep, UpgradeRefused> {
        if self.phase != Phase::Open {
            self.abandon_upgrade();
            return Err(UpgradeRefused);
        }
        match (packet, self.upgrade) {
            (Packet::Ping(data), Upgrade::Probing) if data == "probe" => {
                self.upgrade = Upgrade::Probed;
                Ok(UpgradeStep::Reply(Packet::Pong("probe".into())))
            }
            (Packet::Upgrade, Upgrade::Probed) => {
                self.transport = Transport::WebSocket;
                self.upgrade = Upgrade::None;
                self.upgrade_deadline = None;
                Ok(UpgradeStep::Upgraded)
            }
            _ => {
                self.abandon_upgrade();
                Err(UpgradeRefused)
            }
        }
    }

    /// The upgrading WebSocket went away, or broke the handshake: the
    /// session stays on polling.
    pub fn abandon_upgrade(&mut self) {
        self.upgrade = Upgrade::None;
        self.upgrade_deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session under a fake clock.
    struct World {
        session: Session,
        t0: Instant,
        now: Instant,
    }

    impl World {
        fn new(transport: Transport) -> World {
            World::with(transport, Config::default())
        }

        fn with(transport: Transport, config: Config) -> World {
            World::speaking(Protocol::V4, transport, config)
        }

        fn speaking(protocol: Protocol, transport: Transport, config: Config) -> World {
            let t0 = Instant::now();
            let limits = Rc::new((&config).into());
            let mut session = Session::new("sid", protocol, transport, limits, t0);
            let open = match transport {
                Transport::Polling => session.collect().pop(),
                Transport::WebSocket => session.poll_transmit(),
            };
            assert!(matches!(open, Some(Packet::Open(_))));
            World {
                session,
                t0,
                now: t0,
            }
        }

        /// Moves the clock to `secs` after the start and lets every
        /// deadline up to then come, in order.
        fn at(&mut self, secs: f64) -> &mut Session {
            let until = self.t0 + Duration::from_secs_f64(secs);
            while let Some(at) = self.session.next_deadline().filter(|at| *at <= until) {
                self.session.handle_timeout(at);
            }
            self.now = until;
            &mut self.session
        }

        fn events(&mut self) -> Vec<Event> {
            std::iter::from_fn(|| self.session.poll_event()).collect()
        }
    }

    fn text(s: &str) -> Data {
        Data::Text(s.into())
    }

    #[test]
    fn the_open_packet_says_the_settings() {
        let limits = Rc::new(Limits::from(&Config::default()));
        let session = &mut Session::new(
            "abc",
            Protocol::V4,
            Transport::Polling,
            limits.clone(),
            Instant::now(),
        );
        let packets = session.collect();
        let [Packet::Open(json)] = packets.as_slice() else {
            panic!("{packets:?}")
        };
        assert_eq!(
            json,
            r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let ws = &mut Session::new(
            "abc",
            Protocol::V4,
            Transport::WebSocket,
            limits,
            Instant::now(),
        );
        assert!(
            matches!(ws.poll_transmit(), Some(Packet::Open(j)) if j.contains(r#""upgrades":[]"#))
        );
    }

    #[test]
    fn engineio_3_the_client_pings_and_the_server_answers() {
        let limits = Rc::new(Limits::from(&Config::default()));
        let v3 = &mut Session::new(
            "abc",
            Protocol::V3,
            Transport::WebSocket,
            limits,
            Instant::now(),
        );
        assert_eq!(
            v3.poll_transmit(),
            Some(Packet::Open(
                r#"{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#.into()
            ))
        );
        let mut w = World::speaking(Protocol::V3, Transport::WebSocket, Config::default());
        // The server never pings.
        assert_eq!(w.at(44.9).poll_transmit(), None);
        assert_eq!(w.session.phase(), Phase::Open);
        let now = w.now;
        w.session.handle_packet(Packet::Ping("probe?".into()), now);
        assert_eq!(
            w.session.poll_transmit(),
            Some(Packet::Pong("probe?".into()))
        );
        // Alive an interval and a timeout after that ping, not later.
        assert_eq!(w.at(44.9 + 44.9).phase(), Phase::Open);
        assert_eq!(w.at(44.9 + 45.0).phase(), Phase::Closed);
        assert_eq!(w.events(), [Event::Closed(CloseReason::PingTimeout)]);
        // A pong from an Engine.IO 3 client breaks the protocol.
        let mut w = World::speaking(Protocol::V3, Transport::WebSocket, Config::default());
        let now = w.now;
        w.session.handle_packet(Packet::Pong(String::new()), now);
        assert_eq!(w.events(), [Event::Closed(CloseReason::TransportError)]);
    }

    #[test]
    fn heartbeat_pings_every_interval_and_ends_a_silent_client() {
        let mut w = World::new(Transport::WebSocket);
        assert_eq!(
            w.session.next_deadline(),
            Some(w.t0 + Duration::from_secs(25))
        );
        assert_eq!(w.at(24.9).poll_transmit(), None);
        assert_eq!(
            w.at(25.0).poll_transmit(),
            Some(Packet::Ping(String::new()))
        );
        let now = w.now;
        w.session
            .handle_packet(Packet::Pong(String::new()), now + Duration::from_secs(1));
        assert_eq!(w.at(45.0).phase(), Phase::Open);
        assert_eq!(
            w.at(51.0).poll_transmit(),
            Some(Packet::Ping(String::new()))
        );
        // Silent from now on: dead at the pong check, 20 s later.
        assert_eq!(w.at(70.9).phase(), Phase::Open);
        assert_eq!(w.at(71.0).phase(), Phase::Closed);
        assert_eq!(w.events(), [Event::Closed(CloseReason::PingTimeout)]);
        assert_eq!(w.session.next_deadline(), None);
    }

    #[test]
    fn messages_reach_the_application_in_order() {
        let mut w = World::new(Transport::WebSocket);
        let now = w.now;
        for packet in [
            Packet::Message(text("a")),
            Packet::Noop,
            Packet::Message(Data::Binary(vec![1])),
        ] {
            w.session.handle_packet(packet, now);
        }
        assert_eq!(
            w.events(),
            [
                Event::Message(text("a")),
                Event::Message(Data::Binary(vec![1]))
            ]
        );
        // A ping from the client breaks protocol 4; a close is a close.
        w.session.handle_packet(Packet::Ping(String::new()), now);
        assert_eq!(w.events(), [Event::Closed(CloseReason::TransportError)]);
        let mut w = World::new(Transport::Polling);
        w.session.handle_packet(Packet::Close, now);
        assert_eq!(w.events(), [Event::Closed(CloseReason::TransportClose)]);
        // A GET after the client's own close is released with a noop.
        assert_eq!(w.session.collect(), [Packet::Noop]);
    }

    #[test]
    fn a_second_get_ends_the_session() {
        let mut w = World::new(Transport::Polling);
        w.session.begin_get().unwrap();
        assert!(!w.session.get_ready(), "nothing to answer yet");
        assert_eq!(w.session.begin_get(), Err(RequestError::BadRequest));
        assert_eq!(w.events(), [Event::Closed(CloseReason::TransportError)]);
        // The first GET is released and answers with a close packet.
        assert!(w.session.get_ready());
        w.session.end_get(false);
        assert_eq!(w.session.collect(), [Packet::Close]);
    }

    #[test]
    fn a_get_that_goes_away_ends_the_session() {
        let mut w = World::new(Transport::Polling);
        w.session.begin_get().unwrap();
        w.session.end_get(true);
        assert_eq!(w.events(), [Event::Closed(CloseReason::TransportClose)]);
        assert_eq!(w.session.begin_post(), Ok(()));
        assert_eq!(w.session.begin_post(), Err(RequestError::BadRequest));
    }

    #[test]
    fn a_server_close_delivers_first_then_closes() {
        let mut w = World::new(Transport::Polling);
        w.session.send(text("last"));
        w.session.begin_get().unwrap();
        let now = w.now;
        w.session.close(now, Duration::from_secs(20));
        assert!(w.session.get_ready(), "the waiting GET is released");
        w.session.end_get(false);
        assert_eq!(w.session.collect(), [Packet::Message(text("last"))]);
        assert_eq!(w.session.phase(), Phase::Closing);
        // The next GET gets the close packet, and the session is gone.
        assert_eq!(w.session.collect(), [Packet::Close]);
        assert_eq!(w.session.phase(), Phase::Closed);
        assert!(w.events().is_empty(), "the server knows it closed it");
        // Nothing more goes out after a close.
        w.session.send(text("too late"));
        assert!(w.session.outbox_is_empty());
    }

    #[test]
    fn a_closing_session_lingers_at_most_until_the_heartbeat_would_end_it() {
        let mut w = World::new(Transport::Polling);
        w.at(44.0).send(text("never collected"));
        let now = w.now;
        w.session.close(now, Duration::from_secs(20));
        // Its last pong was the open: dead at 45 s, not at 44 + 20.
        assert_eq!(
            w.session.next_deadline(),
            Some(w.t0 + Duration::from_secs(45))
        );
        assert_eq!(w.at(45.0).phase(), Phase::Closed);
        // A closing client's own close ends it at once.
        let mut w = World::new(Transport::WebSocket);
        let now = w.now;
        w.session.close(now, Duration::from_secs(20));
        w.session.handle_packet(Packet::Close, now);
        assert_eq!(w.session.phase(), Phase::Closed);
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_at_its_bound() {
        let config = Config {
            buffer_limit: Some(100),
            ..Config::default()
        };
        let mut w = World::with(Transport::WebSocket, config);
        w.session.send(text(&"x".repeat(60)));
        assert_eq!(w.session.pending_bytes(), 61);
        w.session.send(text(&"y".repeat(60)));
        assert_eq!(w.session.phase(), Phase::Closed);
        assert_eq!(w.session.pending_bytes(), 0, "its queue is freed");
        assert_eq!(w.events(), [Event::Closed(CloseReason::SlowClient)]);
    }

    #[test]
    fn an_upgrade_probes_releases_the_get_and_moves_over() {
        let mut w = World::new(Transport::Polling);
        w.session.begin_get().unwrap();
        let now = w.now;
        w.session.begin_upgrade(now).unwrap();
        assert_eq!(
            w.session.begin_upgrade(now),
            Err(UpgradeRefused),
            "one WebSocket at a time"
        );
        assert!(!w.session.get_ready());
        assert_eq!(
            w.session
                .handle_upgrade_packet(Packet::Ping("probe".into())),
            Ok(UpgradeStep::Reply(Packet::Pong("probe".into())))
        );
        // The waiting GET is released with a noop, so the client pauses.
        assert!(w.session.get_ready());
        w.session.end_get(false);
        assert_eq!(w.session.collect(), [Packet::Noop]);
        w.session.send(text("queued meanwhile"));
        assert_eq!(
            w.session.handle_upgrade_packet(Packet::Upgrade),
            Ok(UpgradeStep::Upgraded)
        );
        assert_eq!(w.session.transport(), Transport::WebSocket);
        assert!(
            !w.session.accepts_polling(),
            "polling is refused from now on"
        );
        assert_eq!(
            w.session.poll_transmit(),
            Some(Packet::Message(text("queued meanwhile")))
        );
        assert_eq!(
            w.session.next_deadline(),
            Some(w.t0 + Duration::from_secs(25))
        );
    }

    #[test]
    fn an_upgrade_out_of_turn_or_too_slow_is_given_up() {
        let mut w = World::new(Transport::Polling);
        let now = w.now;
        w.session.begin_upgrade(now).unwrap();
        assert_eq!(
            w.session.handle_upgrade_packet(Packet::Upgrade),
            Err(UpgradeRefused)
        );
        assert_eq!(w.session.upgrade(), Upgrade::None);
        // Probed, then silent: given up at the upgrade timeout (10 s).
        w.session.begin_upgrade(now).unwrap();
        w.session
            .handle_upgrade_packet(Packet::Ping("probe".into()))
            .unwrap();
        assert_eq!(
            w.session.next_deadline(),
            Some(w.t0 + Duration::from_secs(10))
        );
        assert_eq!(w.at(10.0).upgrade(), Upgrade::None);
        assert_eq!(w.session.transport(), Transport::Polling);
        assert_eq!(w.session.phase(), Phase::Open);
        // And the session still ends on its heartbeat, at 45 s.
        assert_eq!(w.at(45.0).phase(), Phase::Closed);
        // A session that closed meanwhile cannot be upgraded.
        let mut w = World::new(Transport::Polling);
        let now = w.now;
        w.session.begin_upgrade(now).unwrap();
        w.session.close(now, Duration::from_secs(1));
        assert_eq!(
            w.session
                .handle_upgrade_packet(Packet::Ping("probe".into())),
            Err(UpgradeRefused)
        );
    }

    #[test]
    fn held_bytes_count_until_released_or_the_end() {
        let mut w = World::new(Transport::WebSocket);
        w.session.hold(500);
        assert_eq!(w.session.pending_bytes(), 500);
        w.session.release(200);
        assert_eq!(w.session.pending_bytes(), 300);
        w.session.end(CloseReason::TransportClose);
        assert_eq!(w.session.pending_bytes(), 0);
    }
}
