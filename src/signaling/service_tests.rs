//! The service driven through real Socket.IO and Engine.IO sessions with no
//! transport under them (packets go in and come out of the session state
//! machines by hand), and a recording fake of the other nodes: what it
//! answers, in which order, what waits for what.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::engineio::packet::Frame;
use crate::engineio::{self, Engine, SessionRef, Transport};
use crate::signaling::Settings;
use crate::signaling::cluster::{ClusterError, ClusterStats, Overview};
use crate::signaling::hub::{Claim, InCall, Registration};

/// The other nodes, as a log of what the service asked of them.
#[derive(Default)]
struct FakeNodes {
    log: RefCell<Vec<String>>,
    after: RefCell<Vec<Box<dyn FnOnce()>>>,
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

    fn release(&self, caller: &Rc<str>, callee: &Rc<str>) {
        self.said(format!("release {caller} -> {callee}"));
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

    fn after(&self, then: Box<dyn FnOnce()>) {
        self.after.borrow_mut().push(then);
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
    engine: Engine,
    service: Rc<Signaling>,
    nodes: Option<Rc<FakeNodes>>,
}

/// One client: an Engine.IO session joined to `/`.
struct Client {
    session: SessionRef,
    /// Its socket id, as the CONNECT reply said.
    id: Rc<str>,
}

impl World {
    fn new(settings: Settings, several_nodes: bool) -> World {
        let io = socketio::Server::new(socketio::Config::default());
        let nodes = several_nodes.then(|| Rc::new(FakeNodes::default()));
        let link = nodes.clone().map(|nodes| {
            let (_keep, inbound) = smol::channel::unbounded();
            std::mem::forget(_keep);
            (nodes as Rc<dyn Nodes>, inbound)
        });
        let service = Signaling::install(&io, &settings, link);
        let engine = Engine::new(engineio::Config::default(), io.handler());
        World {
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
        let session = self
            .engine
            .open(Transport::WebSocket, "192.168.1.5".parse().unwrap(), None);
        let client = Client {
            session,
            id: "".into(),
        };
        client.send("40");
        let replies = client.received();
        let connected = replies
            .iter()
            .find_map(|r| r.strip_prefix("40{\"sid\":\""))
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("{replies:?}"));
        Client {
            id: connected.into(),
            ..client
        }
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
            ["user_registered", "ice_servers", r#"ack 7[{"ok":true}]"#]
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
            ["user_registered", "ice_servers", r#"ack 1[{"ok":true}]"#]
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
