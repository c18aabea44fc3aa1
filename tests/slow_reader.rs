//! A client that stops reading, over a real WebSocket on TCP: once what
//! waits for it passes `--max-buffered`, it is dropped, its call ends for
//! the peer with a reason, and the server serves everyone else on.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use signalbox::Config;

/// The bound on bytes queued for one client.
const MAX_BUFFERED: usize = 64 * 1024;

fn server() -> SocketAddr {
    let mut config = Config::default();
    config.engine.buffer_limit = Some(MAX_BUFFERED);
    config.engine.max_payload = 100_000;
    // Heartbeats far off: only the buffer bound can drop a client here.
    config.engine.ping_interval = Duration::from_secs(60);
    config.engine.ping_timeout = Duration::from_secs(60);
    // Big candidates, as fast as the peer sends them: the test is the
    // reader, not the sender's budget.
    config.signaling.limits.max_candidate_bytes = 32 * 1024;
    config.signaling.limits.event_rate = 1e6;
    config.signaling.limits.event_burst = 1e6;
    start_site(move || signalbox::app::site(&config))
}

/// A TCP connection whose receive buffer is as small as the kernel allows,
/// set before the handshake so that the advertised window stays small.
fn connect_small(addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, connect, socket, sockopt};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
    connect(&fd, &addr).expect("connect");
    TcpStream::from(fd)
}

fn users(addr: SocketAddr) -> Vec<String> {
    let users: Value = serde_json::from_str(&get(addr, "/users").body).expect("users JSON");
    serde_json::from_value(users["connectedUsers"].clone()).expect("user list")
}

fn call(addr: SocketAddr, caller: &mut Sio, callee: &mut Sio, from: &str, to: &str) {
    caller.emit("make_call", json!({ "to": to, "offer": { "sdp": "o" } }));
    assert_eq!(callee.expect("incoming_call")["from"], from);
    callee.emit(
        "answer_call",
        json!({ "to": from, "answer": { "sdp": "a" } }),
    );
    assert_eq!(caller.expect("call_answered")["from"], to);
    let health: Value = serde_json::from_str(&get(addr, "/").body).expect("health JSON");
    assert_eq!(health["activeCalls"], 1);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_its_call_ends() {
    let addr = server();
    let mut slow = Sio::over(addr, connect_small(addr)).registered("slow");
    let mut fast = Sio::connect(addr).registered("fast");
    call(addr, &mut fast, &mut slow, "fast", "slow");

    // From here on `slow` reads nothing, and `fast` floods it with ICE.
    let candidate = json!({ "candidate": "x".repeat(30_000) });
    let started = Instant::now();
    let mut sent = 0usize;
    let ended = 'flood: loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow client is still served after {sent} candidates"
        );
        for _ in 0..20 {
            fast.emit(
                "ice_candidate",
                json!({ "to": "slow", "candidate": candidate }),
            );
            sent += 1;
        }
        while let Some((event, payload)) = fast.next(Duration::from_millis(5)) {
            if event == "call_ended" {
                break 'flood payload;
            }
        }
    };
    assert_eq!(ended, json!({ "from": "slow", "reason": "disconnected" }));
    // Far more than the bound went out: the drop was the bound's doing.
    assert!(sent * 30_000 > MAX_BUFFERED, "{sent} candidates");

    assert!(
        eventually(Duration::from_secs(5), || users(addr) == ["fast"]),
        "users: {:?}",
        users(addr)
    );
    assert!(
        eventually(Duration::from_secs(5), || metric_sessions(addr) == 1),
        "sessions: {}",
        metric_sessions(addr)
    );
    assert!(
        matches!(
            slow.read_to_end(Duration::from_secs(15)),
            Some((_, End::Closed))
        ),
        "the slow client's connection is still open"
    );

    // Everyone else is served: a new user calls in and relays ICE.
    let mut third = Sio::connect(addr).registered("third");
    call(addr, &mut third, &mut fast, "third", "fast");
    fast.emit(
        "ice_candidate",
        json!({ "to": "third", "candidate": { "candidate": "after" } }),
    );
    assert_eq!(
        third.expect("ice_candidate"),
        json!({ "from": "fast", "candidate": { "candidate": "after" } })
    );
}
