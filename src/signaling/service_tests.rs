//! The service driven through real Socket.IO and Engine.IO sessions with no
//! transport under them (packets go in and come out of the session state
//! machines by hand), and a recording fake of the other nodes: what it
//! answers, in which order, what waits for what.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::engineio::packet::Frame;
use crate::engineio::{self, Engine, Protocol, SessionRef, Transport};
use crate::signaling::Settings;
use crate::signaling::cluster::{ClusterError, ClusterStats, Overview};
use crate::signaling::hub::{Claim, InCall, Registration};

/// The other nodes, as a log of what the service asked of them.
#[derive(Default)]
struct FakeNodes {
    log: RefCell<Vec<String>>,
    after: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// This node's id ("" unless a test names it).
    id: RefCell<Rc<str>>,
    /// Messages about relayed devices, with the node each is for.
    relays: RefCell<Vec<(Rc<str>, crate::signaling::relay::Relay)>>,
}

impl FakeNodes {
    fn said(&self, line: String) {
        self.log.borrow_mut().push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.log.borrow_mut())
    }

    /// Redis answered everything asked so far.
    fn caught_up(&self) {
        let waiting = std::mem::take(&mut *self.after.borrow_mut());
        for then in waiting {
            then();
        }
    }
}

impl Nodes for FakeNodes {
    fn ttl(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn refresh_period(&self) -> Duration {
        Duration::from_millis(2500)
    }

    fn joined(&self, registration: Registration<Rc<str>>) {
        self.said(format!("joined {}", registration.user));
    }

    fn left(&self, user: Rc<str>) {
        self.said(format!("left {user}"));
    }

    fn route(&self, message: &PeerMessage) {
        self.said(format!("route to {}", message.recipient()));
    }

    fn claim(&self, _socket: Rc<str>, caller: Rc<str>, callee: Rc<str>) {
        self.said(format!("claim {caller} -> {callee}"));
    }

    fn claim_members(&self, _socket: Option<Rc<str>>, claim: MemberClaim) {
        self.said(format!(
            "claim {} -> {}: {}",
            claim.caller,
            claim.called,
            claim.members.join(" ")
        ));
    }

    fn release(&self, caller: &Rc<str>, callee: &Rc<str>, member: Option<&Rc<str>>) {
        match member {
            Some(member) => self.said(format!("release {caller} -> {callee} ({member})")),
            None => self.said(format!("release {caller} -> {callee}")),
        }
    }

    fn hold(&self, users: &[Registration<Rc<str>>], calls: &[InCall], restore: bool) {
        self.said(format!(
            "hold {} users, {} calls, restore {restore}",
            users.len(),
            calls.len()
        ));
    }

    fn check(&self, peers: Vec<InCall>) {
        self.said(format!("check {} peers", peers.len()));
    }

    fn shared(&self, shared: crate::signaling::hub::Shared<Rc<str>>) {
        self.said(shared.to_string());
    }

    fn push(&self, user: Rc<str>, message: crate::push::PushMessage) {
        let message = serde_json::to_string(&message).unwrap();
        self.said(format!("push {user} {message}"));
    }

    fn deliver(
        &self,
        message: &PeerMessage,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, ClusterError>>>> {
        self.said(format!("deliver to {}", message.recipient()));
        Box::pin(async { Ok(true) })
    }

    fn agree(
        &self,
        _name: &str,
        value: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, ClusterError>>>> {
        Box::pin(async { Ok(value) })
    }

    fn after(&self, then: Box<dyn FnOnce()>) {
        self.after.borrow_mut().push(then);
    }

    fn node(&self) -> Rc<str> {
        self.id.borrow().clone()
    }

    fn retire(&self) {
        self.said("retire".to_owned());
    }

    fn home(&self, _socket: Rc<str>, user: Rc<str>) {
        self.said(format!("home {user}"));
    }

    fn relay(&self, node: &str, message: &crate::signaling::relay::Relay) {
        self.relays
            .borrow_mut()
            .push((node.into(), message.clone()));
    }

    fn watch(&self, homes: Vec<(Rc<str>, Rc<str>)>, nodes: Vec<Rc<str>>) {
        if !homes.is_empty() || !nodes.is_empty() {
            self.said(format!(
                "watch {} homes, {} nodes",
                homes.len(),
                nodes.len()
            ));
        }
    }

    fn overview(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Overview, ClusterError>>>> {
        Box::pin(async { Err(ClusterError::NotBuilt) })
    }

    fn flush(&self, _limit: Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(async {})
    }

    fn stats(&self) -> ClusterStats {
        ClusterStats::default()
    }
}

/// The service on an endpoint, one node or one of several.
struct World {
    io: socketio::Server,
    engine: Engine,
    service: Rc<Signaling>,
    nodes: Option<Rc<FakeNodes>>,
}

/// One client: an Engine.IO session joined to `/`.
struct Client {
    session: SessionRef,
    /// Its socket id, as the CONNECT reply said.
    id: Rc<str>,
    /// Its private id, for a recovery.
    pid: Rc<str>,
}

impl World {
    fn new(settings: Settings, several_nodes: bool) -> World {
        World::with(settings, socketio::Config::default(), several_nodes)
    }

    fn with(settings: Settings, config: socketio::Config, several_nodes: bool) -> World {
        let io = socketio::Server::new(config);
        let nodes = several_nodes.then(|| Rc::new(FakeNodes::default()));
        let link = nodes.clone().map(|nodes| {
            let (_keep, inbound) = smol::channel::unbounded();
            std::mem::forget(_keep);
            (nodes as Rc<dyn Nodes>, inbound)
        });
        let service = Signaling::install(&io, &settings, link);
        let engine = Engine::new(engineio::Config::default(), io.handler());
        World {
            io,
            engine,
            service,
            nodes,
        }
    }

    fn one() -> World {
        World::new(Settings::default(), false)
    }

    fn several() -> World {
        World::new(Settings::default(), true)
    }

    fn nodes(&self) -> &FakeNodes {
        self.nodes.as_deref().expect("several nodes")
    }

    fn client(&self) -> Client {
        self.connect("40").0
    }

    /// A new session that sends `connect` (a CONNECT packet); the client,
    /// and what came before the CONNECT answer.
    fn connect(&self, connect: &str) -> (Client, Vec<String>) {
        let session = self.engine.open(
            Protocol::V4,
            Transport::WebSocket,
            "192.168.1.5".parse().unwrap(),
            None,
            "",
        );
        let client = Client {
            session,
            id: "".into(),
            pid: "".into(),
        };
        client.send(connect);
        let mut replies = client.received();
        let at = replies
            .iter()
            .position(|r| r.starts_with("40{"))
            .unwrap_or_else(|| panic!("{replies:?}"));
        let answer: serde_json::Value = serde_json::from_str(&replies[at][2..]).unwrap();
        replies.truncate(at);
        let field = |name: &str| -> Rc<str> { answer[name].as_str().unwrap_or("").into() };
        let client = Client {
            id: field("sid"),
            pid: field("pid"),
            ..client
        };
        (client, replies)
    }

    /// The client's connection is lost; a new one comes back with its pid
    /// (and `offset`): the recovered client, and what came before the
    /// CONNECT answer.
    fn drop_and_recover(&self, client: Client, offset: Option<&str>) -> (Client, Vec<String>) {
        client
            .session
            .terminate(crate::engineio::CloseReason::TransportClose);
        let offset = offset.map_or(String::new(), |o| format!(r#","offset":"{o}""#));
        self.connect(&format!(r#"40{{"pid":"{}"{offset}}}"#, client.pid))
    }

    /// A client registered as `name` (on several nodes, once Redis knows).
    fn registered(&self, name: &str) -> Client {
        let client = self.client();
        client.emit("register_user", &format!(r#"{{"userId":"{name}"}}"#));
        if let Some(nodes) = &self.nodes {
            nodes.caught_up();
            nodes.take();
        }
        assert!(client.received()[0].contains(r#""success":true"#));
        client
    }
}

impl Client {
    /// Sends a WebSocket frame's text (`40`, `42[…]`).
    fn send(&self, frame: &str) {
        let packet = engineio::packet::decode_text(frame).expect("a packet");
        self.session
            .with(|s| s.handle_packet(packet, std::time::Instant::now()));
    }

    fn emit(&self, event: &str, payload: &str) {
        self.send(&format!(r#"42["{event}",{payload}]"#));
    }

    fn emit_ack(&self, id: u32, event: &str, payload: &str) {
        self.send(&format!(r#"42{id}["{event}",{payload}]"#));
    }

    /// What the server sent since last time, as WebSocket frames' text,
    /// but the open packet.
    fn received(&self) -> Vec<String> {
        std::iter::from_fn(|| self.session.with(|s| s.poll_transmit()))
            .filter_map(|packet| match packet.into_frame() {
                Frame::Text(text) if !text.starts_with('0') => Some(text),
                _ => None,
            })
            .collect()
    }

    /// The names of the events received since last time, acks as `ack N`.
    fn events(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|packet| match packet.strip_prefix("42[\"") {
                Some(rest) => rest[..rest.find('"').unwrap_or(0)].to_owned(),
                None => match packet.strip_prefix("43") {
                    Some(rest) => format!("ack {rest}"),
                    None => packet,
                },
            })
            .collect()
    }
}

fn run(test: impl AsyncFnOnce()) {
    crate::rt::block_on(test());
}

#[test]
fn a_registration_is_answered_in_order() {
    run(async || {
        let w = World::one();
        let alice = w.client();
        alice.emit_ack(7, "register_user", r#"{"userId":"alice"}"#);
        assert_eq!(
            alice.events(),
            [
                "user_registered",
                "push_config",
                "ice_servers",
                r#"ack 7[{"ok":true}]"#
            ]
        );
    });
}

#[test]
fn on_several_nodes_a_registration_waits_for_redis() {
    run(async || {
        let w = World::several();
        let alice = w.client();
        alice.emit_ack(1, "register_user", r#"{"userId":"alice"}"#);
        assert_eq!(w.nodes().take(), ["joined alice"]);
        assert!(alice.events().is_empty(), "nothing before Redis knows");
        w.nodes().caught_up();
        assert_eq!(
            alice.events(),
            [
                "user_registered",
                "push_config",
                "ice_servers",
                r#"ack 1[{"ok":true}]"#
            ]
        );
    });
}

#[test]
fn a_socket_that_floods_is_refused_then_disconnected() {
    run(async || {
        let mut settings = Settings::default();
        settings.limits.event_burst = 3.0;
        settings.limits.event_rate = 0.001;
        settings.limits.event_strikes = 4;
        let w = World::new(settings, false);
        let mallory = w.client();
        for _ in 0..3 {
            mallory.emit("logout_user", "{}");
        }
        assert_eq!(
            mallory.events(),
            ["signaling_error"; 3],
            "refused as not registered"
        );
        for i in 0..3 {
            mallory.emit_ack(i, "logout_user", "{}");
        }
        let limited = r#"[{"error":"rate limit exceeded: slow down","ok":false}]"#;
        assert_eq!(
            mallory.events(),
            [0, 1, 2].map(|i| format!("ack {i}{limited}"))
        );
        // The fourth refusal ends it.
        mallory.emit("logout_user", "{}");
        assert_eq!(mallory.events().last().map(String::as_str), Some("41"));
        assert!(!mallory.session.is_open());
    });
}

#[test]
fn events_behind_a_claim_wait_and_follow_in_order() {
    run(async || {
        let w = World::several();
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        alice.emit_ack(1, "make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        alice.emit_ack(2, "ice_candidate", r#"{"to":"bob","candidate":{"n":1}}"#);
        assert_eq!(w.nodes().take(), ["claim alice -> bob"]);
        assert!(alice.events().is_empty() && bob.events().is_empty());
        w.service.inbound(Inbound::Claimed {
            socket: alice.id.clone(),
            caller: "alice".into(),
            callee: "bob".into(),
            claim: Claim::Granted,
        });
        assert_eq!(bob.events(), ["incoming_call", "ice_candidate"]);
        assert_eq!(
            alice.events(),
            [r#"ack 1[{"ok":true}]"#, r#"ack 2[{"ok":true}]"#]
        );
    });
}

#[test]
fn a_refused_claim_is_the_callers_to_hear() {
    run(async || {
        let w = World::several();
        let alice = w.registered("alice");
        alice.emit_ack(1, "make_call", r#"{"to":"bob","offer":{}}"#);
        w.nodes().take();
        w.service.inbound(Inbound::Claimed {
            socket: alice.id.clone(),
            caller: "alice".into(),
            callee: "bob".into(),
            claim: Claim::Offline,
        });
        assert_eq!(
            alice.events(),
            [
                "call_failed",
                r#"ack 1[{"error":"user is offline","ok":false}]"#
            ]
        );
        assert!(w.nodes().take().is_empty(), "nothing was held");
    });
}

#[test]
fn a_claim_for_a_caller_who_left_is_given_back() {
    run(async || {
        let w = World::several();
        let alice = w.registered("alice");
        let _bob = w.registered("bob");
        alice.emit("make_call", r#"{"to":"bob","offer":{}}"#);
        alice
            .session
            .terminate(engineio::CloseReason::TransportClose);
        w.nodes().take();
        w.service.inbound(Inbound::Claimed {
            socket: alice.id.clone(),
            caller: "alice".into(),
            callee: "bob".into(),
            claim: Claim::Granted,
        });
        assert_eq!(w.nodes().take(), ["release alice -> bob"]);
    });
}

#[test]
fn a_socket_may_queue_only_so_much_behind_a_claim() {
    run(async || {
        let mut settings = Settings::default();
        settings.limits.event_burst = 1e6;
        let w = World::new(settings, true);
        let alice = w.registered("alice");
        alice.emit("make_call", r#"{"to":"bob","offer":{}}"#);
        for i in 0..=MAX_WAITING_EVENTS as u32 {
            alice.emit_ack(i, "ice_candidate", r#"{"to":"bob","candidate":{}}"#);
        }
        let limited = format!(
            r#"ack {MAX_WAITING_EVENTS}[{{"error":"rate limit exceeded: slow down","ok":false}}]"#
        );
        assert_eq!(alice.events(), [limited]);
    });
}

#[test]
fn a_stale_kick_changes_nothing() {
    run(async || {
        let w = World::several();
        let alice = w.registered("alice");
        w.service.inbound(Inbound::Message(PeerMessage::Kick {
            user: "alice".into(),
            socket: Some("an older socket".into()),
        }));
        assert!(alice.events().is_empty());
        w.service.inbound(Inbound::Message(PeerMessage::Kick {
            user: "alice".into(),
            socket: Some(alice.id.clone()),
        }));
        assert_eq!(alice.events(), ["force_disconnect", "41"]);
        assert_eq!(w.nodes().take(), ["left alice"]);
    });
}

#[test]
fn after_redis_came_back_this_node_publishes_everything_again() {
    run(async || {
        let w = World::several();
        let _alice = w.registered("alice");
        w.service.inbound(Inbound::Reconnected);
        assert_eq!(w.nodes().take(), ["hold 1 users, 0 calls, restore true"]);
    });
}

/// The event names in packets, as `Client::events` shows them.
fn names(packets: &[String]) -> Vec<&str> {
    packets
        .iter()
        .map(|p| {
            let rest = p.strip_prefix("42[\"").unwrap_or(p);
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
        .collect()
}

#[test]
fn a_lost_socket_comes_back_with_its_pid_and_its_call_goes_on() {
    run(async || {
        let w = World::one();
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        assert_eq!(bob.pid.len(), bob.session.sid().len() + 1 + 22);
        alice.emit("make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        bob.emit("answer_call", r#"{"to":"alice","answer":{"sdp":"a"}}"#);
        assert_eq!(bob.events(), ["incoming_call"]);
        assert_eq!(alice.events(), ["call_answered"]);
        let (id, pid) = (bob.id.clone(), bob.pid.clone());
        bob.session
            .terminate(crate::engineio::CloseReason::TransportClose);
        assert_eq!(alice.events(), ["peer_reconnecting"]);
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":1}}"#);
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":2}}"#);
        let (bob, before) = w.connect(&format!(r#"40{{"pid":"{pid}"}}"#));
        // Same socket (a new pid for its new session), what it missed once
        // and in order, before the answer.
        assert_eq!((&bob.id, &bob.pid), (&id, &pid));
        assert_eq!(
            before,
            [
                r#"42["ice_candidate",{"from":"alice","candidate":{"n":1}}]"#,
                r#"42["ice_candidate",{"from":"alice","candidate":{"n":2}}]"#,
            ]
        );
        assert_eq!(alice.events(), ["peer_reconnected"]);
        assert!(w.service.hub().in_active_call("bob"));
        bob.emit("ice_candidate", r#"{"to":"alice","candidate":{"n":3}}"#);
        assert_eq!(alice.events(), ["ice_candidate"]);
        // Twice in a row, with nothing received in between.
        let (bob, before) = w.drop_and_recover(bob, None);
        assert_eq!((bob.id.clone(), before.len()), (id.clone(), 0));
        let (bob, _) = w.drop_and_recover(bob, None);
        assert_eq!(bob.id, id);
        assert_eq!(
            alice.events(),
            [
                "peer_reconnecting",
                "peer_reconnected",
                "peer_reconnecting",
                "peer_reconnected"
            ]
        );
        // Registering again, as apps do on every connect, changes nothing.
        bob.emit("register_user", r#"{"userId":"bob"}"#);
        assert_eq!(
            bob.events(),
            ["user_registered", "push_config", "ice_servers"]
        );
        assert!(w.service.hub().in_active_call("bob"));
    });
}

#[test]
fn a_socket_that_never_got_an_event_recovers_too() {
    run(async || {
        let w = World::one();
        let carol = w.client();
        let id = carol.id.clone();
        let (carol, before) = w.drop_and_recover(carol, None);
        assert_eq!((carol.id, before.len()), (id, 0));
    });
}

#[test]
fn what_is_not_recoverable_gets_a_fresh_socket() {
    run(async || {
        let w = World::one();
        // A pid that is not one.
        let (stranger, _) = w.connect(r#"40{"pid":"AAAAAAAAAAAAAAAAAAAAAA"}"#);
        assert!(!stranger.id.is_empty());
        // Leaving on purpose (socket.disconnect()): the call ends at once.
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        alice.emit("make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        bob.events();
        bob.send("41");
        assert_eq!(alice.events(), ["call_ended"]);
        let (again, _) = w.connect(&format!(r#"40{{"pid":"{}"}}"#, bob.pid));
        assert_ne!(again.id, bob.id);
        // Closed by the server (a parse error): not recoverable either.
        let carol = w.client();
        carol
            .session
            .terminate(crate::engineio::CloseReason::ParseError);
        let (again, _) = w.connect(&format!(r#"40{{"pid":"{}"}}"#, carol.pid));
        assert_ne!(again.id, carol.id);
        // Past the window: gone, and what it kept with it.
        let dave = w.client();
        dave.session
            .terminate(crate::engineio::CloseReason::PingTimeout);
        assert_eq!(w.service_stats().away, 1);
        let window = socketio::Recovery::default().window;
        w.io.expire(std::time::Instant::now() + window - Duration::from_secs(1));
        assert_eq!(w.service_stats().away, 1, "not yet");
        w.io.expire(std::time::Instant::now() + window + Duration::from_secs(1));
        assert_eq!(
            (w.service_stats().away, w.service_stats().kept_bytes),
            (0, 0)
        );
        let (again, _) = w.connect(&format!(r#"40{{"pid":"{}"}}"#, dave.pid));
        assert_ne!(again.id, dave.id);
    });
}

impl World {
    fn service_stats(&self) -> socketio::Stats {
        self.io.stats()
    }
}

#[test]
fn a_held_user_whose_grace_ran_out_is_not_recovered() {
    run(async || {
        let settings = Settings {
            reconnect_grace: Duration::ZERO,
            ..Settings::default()
        };
        let w = World::new(settings, false);
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        alice.emit("make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        bob.events();
        let id = bob.id.clone();
        // No grace: the call ends at once, and the socket, which the
        // client would think registered, is not handed back.
        let (bob, _) = w.drop_and_recover(bob, None);
        assert_eq!(alice.events(), ["call_ended"]);
        assert_ne!(bob.id, id);
    });
}

#[test]
fn with_offsets_events_in_flight_are_sent_again() {
    run(async || {
        let mut config = socketio::Config::default();
        config.recovery.offsets = true;
        let w = World::with(Settings::default(), config, false);
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        alice.emit("make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        bob.emit("answer_call", r#"{"to":"alice","answer":{"sdp":"a"}}"#);
        // Every event ends with its offset.
        let got = bob.received();
        assert_eq!(names(&got), ["incoming_call"]);
        let offset: Vec<serde_json::Value> = serde_json::from_str(&got[0][2..]).unwrap();
        let offset = offset.last().and_then(|o| o.as_str()).unwrap().to_owned();
        // Two candidates sent, never read: in flight when the transport died.
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":1}}"#);
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":2}}"#);
        let (bob, before) = w.drop_and_recover(bob, Some(&offset));
        assert_eq!(names(&before), ["ice_candidate", "ice_candidate"]);
        assert!(before[0].contains(r#"{"n":1}"#) && before[1].contains(r#"{"n":2}"#));
        // Without the offset (or a stale one), only what came while away.
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":3}}"#);
        bob.received();
        let (_, before) = w.drop_and_recover(bob, Some("nonsense"));
        assert!(before.is_empty(), "{before:?}");
    });
}

#[test]
fn a_socket_whose_old_connection_still_looks_alive_is_taken_over_with_its_pid() {
    run(async || {
        let w = World::one();
        let alice = w.registered("alice");
        let bob = w.registered("bob");
        alice.emit("make_call", r#"{"to":"bob","offer":{"sdp":"o"}}"#);
        bob.emit("answer_call", r#"{"to":"alice","answer":{"sdp":"a"}}"#);
        alice.events();
        // bob's network is gone, but the server has not noticed: what
        // alice sends waits in bob's old session.
        bob.events();
        alice.emit("ice_candidate", r#"{"to":"bob","candidate":{"n":1}}"#);
        let (back, before) = w.connect(&format!(r#"40{{"pid":"{}"}}"#, bob.pid));
        assert_eq!(back.id, bob.id);
        assert_eq!(back.pid, bob.pid, "the socket's pid for its life");
        assert_eq!(names(&before), ["ice_candidate"]);
        assert!(!bob.session.is_open(), "the old session is ended");
        // The call never noticed.
        assert!(alice.events().is_empty());
        assert!(w.service.hub().in_active_call("bob"));
        back.emit("ice_candidate", r#"{"to":"alice","candidate":{"n":2}}"#);
        assert_eq!(alice.events(), ["ice_candidate"]);
        // Taken over again from its new session, then recovered after a loss.
        let (again, _) = w.connect(&format!(r#"40{{"pid":"{}"}}"#, bob.pid));
        assert_eq!(again.id, bob.id);
        assert!(!back.session.is_open());
        let (last, _) = w.drop_and_recover(again, None);
        assert_eq!(last.id, bob.id);
    });
}

/// A node named `id` of several, whose directory lets anna have three
/// devices.
fn node_with_devices(id: &str) -> World {
    let w = World::several();
    *w.nodes().id.borrow_mut() = id.into();
    let text = "[users.anna]\ndevices = 3\n";
    let directory = crate::signaling::directory::Directory::parse("d.toml", text).unwrap();
    w.service.set_directory(Rc::new(directory));
    w
}

/// Carries what `from` relayed to `to`, as Redis would; how many messages.
fn carry(from: &World, to: &World) -> usize {
    let messages: Vec<_> = from.nodes().relays.borrow_mut().drain(..).collect();
    for (node, message) in &messages {
        assert_eq!(*node, to.nodes().node(), "{message:?}");
        to.service.inbound(Inbound::Relay(message.clone()));
    }
    messages.len()
}

/// `client` registers `user` on `w`, and the cluster names `home` theirs.
fn register_with_home(w: &World, client: &Client, user: &str, home: &str) {
    client.emit_ack(1, "register_user", &format!(r#"{{"userId":"{user}"}}"#));
    assert_eq!(w.nodes().take(), [format!("home {user}")]);
    w.service.inbound(Inbound::Home {
        socket: client.id.clone(),
        user: user.into(),
        node: Some(home.into()),
    });
}

/// Nodes n1 and n2, and anna registered on n2 with her home on n1.
fn relayed_anna() -> (World, World, Client) {
    let (n1, n2) = (node_with_devices("n1"), node_with_devices("n2"));
    let anna = n2.client();
    register_with_home(&n2, &anna, "anna", "n1");
    carry(&n2, &n1);
    n1.nodes().caught_up();
    carry(&n1, &n2);
    anna.events();
    (n1, n2, anna)
}

#[test]
fn devices_of_one_user_on_two_nodes_ring_race_and_stop_as_on_one() {
    run(async || {
        let (n1, n2) = (node_with_devices("n1"), node_with_devices("n2"));
        // The first device makes n1 anna's home; the second, on n2, is
        // relayed there, and hears what a local one would.
        let anna1 = n1.client();
        register_with_home(&n1, &anna1, "anna", "n1");
        assert_eq!(n1.nodes().take(), ["joined anna"]);
        n1.nodes().caught_up();
        assert_eq!(anna1.events()[0], "user_registered");
        let anna2 = n2.client();
        register_with_home(&n2, &anna2, "anna", "n1");
        assert!(anna2.events().is_empty(), "answered by the home");
        assert_eq!(carry(&n2, &n1), 1);
        assert_eq!(n1.nodes().take(), ["tell missed anna", "joined anna"]);
        n1.nodes().caught_up();
        carry(&n1, &n2);
        assert_eq!(
            anna2.events(),
            [
                "user_registered",
                "push_config",
                "ice_servers",
                "directory",
                r#"ack 1[{"ok":true}]"#
            ]
        );
        assert_eq!(n1.service.hub().device_count("anna"), 2);
        assert_eq!(n2.service.hub().user_count(), 0, "n2 holds nobody");
        // A call to anna rings both devices; the relayed one answers.
        let door = n1.registered("door");
        door.emit("make_call", r#"{"to":"anna","offer":{"sdp":"o"}}"#);
        assert_eq!(n1.nodes().take(), ["claim door -> anna"]);
        n1.service.inbound(Inbound::Claimed {
            socket: door.id.clone(),
            caller: "door".into(),
            callee: "anna".into(),
            claim: Claim::Granted,
        });
        assert_eq!(anna1.events(), ["incoming_call"]);
        carry(&n1, &n2);
        assert_eq!(anna2.events(), ["incoming_call"]);
        anna2.emit_ack(2, "answer_call", r#"{"to":"door","answer":{"sdp":"a"}}"#);
        carry(&n2, &n1);
        assert_eq!(door.events(), ["call_answered"]);
        let ended = anna1.received();
        assert!(ended[0].contains("answered_elsewhere"), "{ended:?}");
        carry(&n1, &n2);
        assert_eq!(anna2.events(), [r#"ack 2[{"ok":true}]"#]);
        // The call is the relayed device's: ICE reaches it alone, and
        // the other device cannot speak for the call.
        door.emit("ice_candidate", r#"{"to":"anna","candidate":{"n":1}}"#);
        assert!(anna1.events().is_empty());
        carry(&n1, &n2);
        assert_eq!(anna2.events(), ["ice_candidate"]);
        anna1.emit_ack(3, "end_call", r#"{"to":"door"}"#);
        let refused = anna1.events();
        assert!(refused[0].contains("ok\":false"), "{refused:?}");
        // It logs out: the call ends, and n2 stops relaying it.
        anna2.emit("logout_user", "{}");
        carry(&n2, &n1);
        assert_eq!(door.events(), ["call_ended"]);
        assert_eq!(n1.service.hub().device_count("anna"), 1);
        carry(&n1, &n2);
        assert!(n2.service.relayed.borrow().is_empty());
        anna2.emit_ack(4, "end_call", r#"{"to":"door"}"#);
        assert!(
            anna2.events()[0].contains("not registered"),
            "answered here"
        );
    });
}

#[test]
fn a_relayed_device_that_registers_another_name_is_its_own_again() {
    run(async || {
        let (n1, n2, anna) = relayed_anna();
        anna.emit("register_user", r#"{"userId":"ben"}"#);
        // The home hears a logout; ben registers here.
        carry(&n2, &n1);
        assert_eq!(n1.service.hub().device_count("anna"), 0);
        assert_eq!(n2.nodes().take(), ["joined ben"]);
        assert_eq!(
            n2.service.hub().user_of(&anna.id).map(|u| &**u),
            Some("ben")
        );
    });
}

#[test]
fn devices_go_with_their_node_and_with_their_home() {
    run(async || {
        let (n1, n2, anna) = relayed_anna();
        // Each node watches the other.
        n1.service
            .clone()
            .wake(Instant::now() + Duration::from_secs(3));
        n2.service
            .clone()
            .wake(Instant::now() + Duration::from_secs(3));
        assert!(
            n1.nodes()
                .take()
                .contains(&"watch 0 homes, 1 nodes".to_owned())
        );
        assert!(
            n2.nodes()
                .take()
                .contains(&"watch 1 homes, 0 nodes".to_owned())
        );
        // n2 died: n1's hub lets its device go.
        n1.service.inbound(Inbound::NodeGone("n2".into()));
        assert_eq!(n1.service.hub().device_count("anna"), 0);
        assert_eq!(n1.nodes().take(), ["left anna"]);
        // n1 died: n2 disconnects the device, whose client registers again.
        n2.service.inbound(Inbound::HomeGone("anna".into()));
        assert_eq!(anna.events().last().map(String::as_str), Some("41"));
        assert!(n2.service.relayed.borrow().is_empty());
    });
}

#[test]
fn a_home_that_shuts_down_lets_its_relayed_devices_go_at_once() {
    run(async || {
        let (n1, n2, anna) = relayed_anna();
        n1.service.let_hosted_go();
        assert_eq!(n1.service.hub().device_count("anna"), 0);
        carry(&n1, &n2);
        assert_eq!(anna.events().last().map(String::as_str), Some("41"));
        assert!(n2.service.relayed.borrow().is_empty());
    });
}

#[test]
fn a_registration_whose_home_cannot_be_found_fails_clearly() {
    run(async || {
        let n2 = node_with_devices("n2");
        let anna = n2.client();
        anna.emit_ack(1, "register_user", r#"{"userId":"anna"}"#);
        n2.nodes().take();
        n2.service.inbound(Inbound::Home {
            socket: anna.id.clone(),
            user: "anna".into(),
            node: None,
        });
        let got = anna.received();
        assert!(got[0].contains(r#""success":false"#), "{got:?}");
        assert!(got[1].starts_with("431[{\"error\""), "{got:?}");
    });
}
