//! The abuse battery, over real TCP against the signalbox site: slowloris
//! heads and bodies, a 1 MB head, garbage, bad WebSocket handshakes,
//! oversized and fragmented frames, abandoned upgrades, handshakes that
//! never join a namespace (one per connection, and thousands pipelined on
//! one connection), a register storm for one name, forged `from` fields,
//! floods of unknown events and of repeated CONNECTs, a keep-alive
//! connection pipelining requests without pause, a WebSocket flooding
//! pongs, and names that register, call and leave one after another.
//! All the while two well-behaved clients in a call keep relaying ICE;
//! afterwards the session count is back to theirs.
//!
//! `ABUSE_ONLY=pong,churn cargo test --test abuse` runs only the attacks
//! whose names contain one of those words.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use common::*;
use serde_json::{Value, json};
use signalbox::Config;
use signalbox::engineio::HandshakeLimits;
use signalbox::http::Limits;

/// Whether the server closes the connection (after whatever answer it
/// writes) within the client's read timeout.
fn ends(client: &mut Client) -> bool {
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client.reader, &mut rest).is_ok()
}

fn server() -> SocketAddr {
    let mut config = Config::default();
    config.engine.ping_interval = Duration::from_millis(300);
    config.engine.ping_timeout = Duration::from_millis(200);
    config.engine.max_payload = 100_000;
    config.socketio.connect_timeout = Duration::from_secs(1);
    // A name whose connection drops is held for the reconnect grace, then
    // freed: short here, so that the churn sees every name go.
    config.signaling.reconnect_grace = Duration::from_secs(1);
    // Every attack but the handshake floods comes from 127.0.0.1, hundreds
    // of sessions in a second: not what the handshake rate is about. The
    // floods come from addresses of their own and meet the defaults.
    config.engine.handshakes.rate = 100_000.0;
    config.engine.handshakes.burst = 100_000.0;
    config.engine.handshakes.max_unjoined_per_ip = UNJOINED_PER_IP;
    config.http = Limits {
        request_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    start_site(move || signalbox::app::site(&config))
}

/// An attack's name and what it does to the server at an address.
type Attack = (&'static str, fn(SocketAddr));

/// Runs each abuse concurrently; returns when all are done.
fn abuse(addr: SocketAddr) {
    let attacks: [Attack; 15] = [
        ("slowloris heads", slowloris_heads),
        ("slow body", slow_body),
        ("1 MB head", huge_head),
        ("garbage", garbage),
        ("bad websocket handshakes", bad_upgrades),
        ("oversized and fragmented frames", frames),
        ("abandoned upgrades", abandoned_upgrades),
        ("handshakes without a namespace", idle_handshakes),
        ("register storm", register_storm),
        ("forged from", forged_from),
        ("unhandled floods", unhandled_floods),
        ("pipelined flood", pipelined_flood),
        ("pong flood", pong_flood),
        ("handshake flood", handshake_flood),
        ("register-call-leave churn", churn),
    ];
    let only = std::env::var("ABUSE_ONLY").ok();
    let handles: Vec<_> = attacks
        .into_iter()
        .filter(|(name, _)| {
            only.as_deref()
                .is_none_or(|only| only.split(',').any(|o| name.contains(o)))
        })
        .map(|(name, attack)| (name, thread::spawn(move || attack(addr))))
        .collect();
    for (name, handle) in handles {
        if handle.join().is_err() {
            panic!("the {name} attack failed its checks");
        }
    }
}

fn slowloris_heads(addr: SocketAddr) {
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(addr)).collect();
    for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaa" {
        for client in &mut clients {
            let _ = client.reader.get_mut().write_all(&[*byte]);
        }
        thread::sleep(Duration::from_millis(40));
    }
    for client in &mut clients {
        assert!(ends(client), "a slow head outlived the request timeout");
    }
}

fn slow_body(addr: SocketAddr) {
    let sid = polling_handshake(addr, "/socket.io/");
    let mut client = Client::connect(addr);
    client.send(
        format!("POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n4")
            .as_bytes(),
    );
    for _ in 0..20 {
        let _ = client.reader.get_mut().write_all(b"x");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ends(&mut client),
        "a slow body outlived the request timeout"
    );
}

fn huge_head(addr: SocketAddr) {
    let mut client = Client::connect(addr);
    let big = "a".repeat(1 << 20);
    let _ = client
        .reader
        .get_mut()
        .write_all(format!("GET / HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes());
    assert_eq!(client.reply().status, 431);
}

fn garbage(addr: SocketAddr) {
    for junk in [
        &b"\x00\x01\x02\x03\r\n\r\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00",
        b"HELO\r\n\r\n",
    ] {
        let mut client = Client::connect(addr);
        client.send(junk);
        assert!(ends(&mut client));
    }
}

fn bad_upgrades(addr: SocketAddr) {
    for headers in [
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: nope\r\n",
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ] {
        let mut client = Client::connect(addr);
        client.send(
            format!(
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{headers}\r\n"
            )
            .as_bytes(),
        );
        let status = client.reply().status;
        assert!(status == 400 || status == 426, "{status}");
    }
}

fn frames(addr: SocketAddr) {
    // Oversized: past --max-payload the socket is closed.
    let mut sio = Sio::connect(addr);
    let big = format!(
        "42{}",
        json!(["register_user", { "userId": "x".repeat(200_000) }])
    );
    let _ = sio.ws.send(Message::text(big));
    assert!(sio.next(Duration::from_secs(2)).is_none());
    // Fragmented: a message in many small frames is reassembled and served.
    let mut sio = Sio::connect(addr);
    let text = format!("42{}", json!(["register_user", { "userId": "fragmented" }]));
    let bytes = text.as_bytes();
    let pieces: Vec<&[u8]> = bytes.chunks(5).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(piece.to_vec(), OpCode::Data(opcode), i + 1 == pieces.len());
        sio.ws.send(Message::Frame(frame)).expect("frame");
    }
    assert_eq!(sio.expect("user_registered")["userId"], "fragmented");
    // Fragments adding up past the limit close the socket too.
    let mut sio = Sio::connect(addr);
    for i in 0..30 {
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(vec![b'4'; 10_000], OpCode::Data(opcode), false);
        if sio.ws.send(Message::Frame(frame)).is_err() {
            break;
        }
    }
    assert!(sio.next(Duration::from_secs(2)).is_none());
}

fn abandoned_upgrades(addr: SocketAddr) {
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let sid = polling_handshake(addr, "/socket.io/");
        let mut ws = ws_connect(
            addr,
            &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
        )
        .unwrap();
        ws_send(&mut ws, "2probe");
        assert_eq!(ws_next(&mut ws).as_deref(), Some("3probe"));
        sockets.push(ws);
    }
    // Silent from now on: the server must close every one of them.
    for mut ws in sockets {
        assert_eq!(ws_next(&mut ws), None);
    }
}

const HANDSHAKE: &str = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n";

/// A handshake on a fresh connection from `from`.
fn handshake_from(from: Ipv4Addr, addr: SocketAddr) -> Reply {
    let mut client = Client::over(connect_from(from, addr));
    client.send(HANDSHAKE.as_bytes());
    client.reply()
}

/// Handshakes that never join a namespace, each on its own connection,
/// from one address: past its share of such sessions it is refused with
/// the Engine.IO error and 429, and it connects again once the connect
/// timeout closed them. (How many it may hold at once is tested where the
/// heartbeat does not end them meanwhile: tests/limits.rs.)
fn idle_handshakes(addr: SocketAddr) {
    let from = Ipv4Addr::new(127, 0, 0, 3);
    let limit = UNJOINED_PER_IP;
    // Ten at a time: the abuse server's heartbeat ends them in half a second.
    let batches: Vec<_> = (0..10)
        .map(|_| {
            thread::spawn(move || {
                let mut clients: Vec<Client> = (0..limit / 3)
                    .map(|_| {
                        let mut client = Client::over(connect_from(from, addr));
                        client.send(HANDSHAKE.as_bytes());
                        client
                    })
                    .collect();
                clients
                    .iter_mut()
                    .map(Client::reply)
                    .collect::<Vec<Reply>>()
            })
        })
        .collect();
    let replies: Vec<Reply> = batches
        .into_iter()
        .flat_map(|batch| batch.join().expect("handshakes"))
        .collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(!refused.is_empty(), "every handshake opened a session");
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(
        refused[0].body.contains(r#""code":4"#) && refused[0].body.contains("joined no namespace"),
        "{:?}",
        refused[0]
    );
    assert!(eventually(Duration::from_secs(5), || {
        handshake_from(from, addr).status == 200
    }));
}

/// One connection pipelines thousands of handshakes: it gets a handful of
/// sessions and 429 for the rest, and other connections from its address
/// connect as ever.
fn handshake_flood(addr: SocketAddr) {
    let from = Ipv4Addr::new(127, 0, 0, 2);
    let stream = connect_from(from, addr);
    let mut writer = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let batch = HANDSHAKE.repeat(100);
        for _ in 0..50 {
            if writer.write_all(batch.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut client = Client::over(stream);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..5000 {
        let Ok(reply) = read_reply(&mut client.reader) else {
            break;
        };
        *statuses.entry(reply.status).or_insert(0) += 1;
    }
    sender.join().expect("sender");
    // A handful at a time: the abuse server's heartbeat ends them within
    // half a second, and frees their places. (The exact count is tested
    // where it does not: tests/limits.rs.)
    let opened = statuses.get(&200).copied().unwrap_or(0);
    assert!(
        opened <= 10 * HandshakeLimits::default().max_unjoined_per_connection,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0) + opened,
        5000,
        "{statuses:?}"
    );
    assert_eq!(handshake_from(from, addr).status, 200);
    let mut sio = Sio::over(addr, connect_from(from, addr));
    sio.emit("register_user", json!({ "userId": "after-the-flood" }));
    assert_eq!(sio.expect("user_registered")["success"], true);
}

/// A keep-alive connection pipelines `GET /healthz` without pause; every
/// request of its own is answered, and nobody else waits for it.
fn pipelined_flood(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let batch = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < FLOOD {
            if writer.write_all(batch.as_bytes()).is_err() {
                break;
            }
            sent += 64;
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
        sent
    });
    let mut client = Client::over(stream);
    let mut answered = 0;
    while let Ok(reply) = read_reply(&mut client.reader) {
        assert_eq!(reply.status, 200);
        answered += 1;
    }
    let sent = sender.join().expect("sender");
    assert!(sent > 0);
    assert_eq!(answered, sent, "the flood's own requests were all answered");
}

/// A WebSocket session floods Engine.IO pongs; it stays served.
fn pong_flood(addr: SocketAddr) {
    let mut sio = Sio::connect(addr);
    let started = Instant::now();
    while started.elapsed() < FLOOD {
        for _ in 0..64 {
            sio.ws.write(Message::text("3")).expect("pong");
        }
        sio.ws.flush().expect("flush");
    }
    sio.emit("register_user", json!({ "userId": "ponger" }));
    assert_eq!(sio.expect("user_registered")["success"], true);
}

/// Names register, make a call and leave, one after another: each call is
/// answered, and none of the names stays behind.
fn churn(addr: SocketAddr) {
    for i in 0..300 {
        let mut sio = Sio::register(addr, &format!("churn-{i}"));
        sio.emit(
            "make_call",
            json!({ "to": "nobody-here", "offer": { "sdp": "o" } }),
        );
        assert_eq!(sio.expect("call_failed")["error"], "user is offline");
    }
    assert!(eventually(Duration::from_secs(5), || {
        !get(addr, "/users").body.contains("churn-")
    }));
}

/// Sessions that joined no namespace one address may hold on the abuse
/// server: a tenth of the default, so that the battery reaches it quickly.
const UNJOINED_PER_IP: usize = 100;

/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(2);

fn register_storm(addr: SocketAddr) {
    let connected = Arc::new(AtomicUsize::new(0));
    let survivors = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let connected = connected.clone();
            let survivors = survivors.clone();
            thread::spawn(move || {
                let mut sio = Sio::connect(addr);
                // All at once, answering pings while the others connect.
                connected.fetch_add(1, Ordering::SeqCst);
                while connected.load(Ordering::SeqCst) < 50 {
                    sio.next(Duration::from_millis(10));
                }
                sio.emit("register_user", json!({ "userId": "concierge" }));
                let mut forced = false;
                while let Some((event, _)) = sio.next(Duration::from_millis(1500)) {
                    forced |= event == "force_disconnect";
                }
                if !forced {
                    survivors.fetch_add(1, Ordering::SeqCst);
                }
                sio
            })
        })
        .collect();
    // Joined but kept open, so the survivor is still registered below.
    let _sockets: Vec<Sio> = handles
        .into_iter()
        .map(|h| h.join().expect("storm client"))
        .collect();
    assert_eq!(
        survivors.load(Ordering::SeqCst),
        1,
        "exactly one device keeps the name"
    );
    let users: Value = serde_json::from_str(&get(addr, "/users").body).unwrap();
    assert!(
        users["connectedUsers"]
            .as_array()
            .unwrap()
            .contains(&json!("concierge"))
    );
}

fn forged_from(addr: SocketAddr) {
    let mut mallory = Sio::register(addr, "mallory");
    for (event, payload) in [
        ("end_call", json!({ "to": "bob", "from": "alice" })),
        ("end_call", json!({ "to": "alice", "from": "bob" })),
        (
            "ice_candidate",
            json!({ "to": "bob", "from": "alice", "candidate": { "candidate": "evil" } }),
        ),
        (
            "answer_call",
            json!({ "to": "alice", "from": "bob", "answer": {} }),
        ),
        ("logout_user", json!({ "userId": "alice" })),
    ] {
        mallory.emit(event, payload);
        let error = mallory.expect("signaling_error");
        assert_eq!(error["event"], event);
    }
    mallory.emit(
        "make_call",
        json!({ "to": "bob", "from": "alice", "offer": {} }),
    );
    assert_eq!(mallory.expect("call_busy")["targetUser"], "bob");
}

/// What no handler takes costs the same budget: a flood of unknown events
/// is refused past it and then disconnected (`41`). CONNECTs cannot buy a
/// fresh budget: repeated ones get the same socket, and a session that
/// keeps joining (or leaving and joining again) is closed.
fn unhandled_floods(addr: SocketAddr) {
    let unknown = format!(
        "42{}",
        json!(["no_such_event", { "pad": "x".repeat(1000) }])
    );
    let mut sio = Sio::connect(addr);
    for _ in 0..400 {
        if sio.ws.send(Message::text(unknown.as_str())).is_err() {
            break;
        }
    }
    let answers = until_disconnected(&mut sio).expect("a flood of unknown events was not cut off");
    let errors: Vec<&String> = answers.iter().filter(|a| a.starts_with("42")).collect();
    assert!(
        errors[0].contains(r#""error":"unknown event""#),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("rate limit exceeded")));

    for cycle in [&["40"][..], &["41", "40"][..]] {
        let mut sio = Sio::connect(addr);
        'flood: for _ in 0..200 {
            for packet in cycle {
                if sio.ws.send(Message::text(*packet)).is_err() {
                    break 'flood;
                }
            }
        }
        let answers = until_closed(&mut sio)
            .unwrap_or_else(|| panic!("a flood of {cycle:?} was not cut off"));
        let sids: Vec<&String> = answers.iter().filter(|a| a.starts_with("40")).collect();
        assert!(!sids.is_empty());
        assert!(sids.len() <= 32, "{} CONNECTs answered", sids.len());
        if cycle.len() == 1 {
            assert!(sids.iter().all(|sid| *sid == sids[0]), "{sids:?}");
        }
    }
}

/// The packets before the server disconnects the socket (`41`); None when
/// it does not within 5 s.
fn until_disconnected(sio: &mut Sio) -> Option<Vec<String>> {
    sio.read_to_end(Duration::from_secs(5))
        .filter(|(_, end)| *end == End::Disconnected)
        .map(|(packets, _)| packets)
}

/// The packets before the connection closes; None when it does not within
/// 5 s.
fn until_closed(sio: &mut Sio) -> Option<Vec<String>> {
    sio.read_to_end(Duration::from_secs(5))
        .filter(|(_, end)| *end == End::Closed)
        .map(|(packets, _)| packets)
}

#[test]
fn a_call_survives_the_abuse_battery() {
    let addr = server();
    let mut alice = Sio::register(addr, "alice");
    let mut bob = Sio::register(addr, "bob");
    alice.emit(
        "make_call",
        json!({ "to": "bob", "from": "alice", "offer": { "sdp": "o" } }),
    );
    assert_eq!(bob.expect("incoming_call")["from"], "alice");
    bob.emit(
        "answer_call",
        json!({ "to": "alice", "from": "bob", "answer": { "sdp": "a" } }),
    );
    assert_eq!(alice.expect("call_answered")["from"], "bob");
    let baseline = metric_sessions(addr);
    assert_eq!(baseline, 2);

    // The call relays ICE both ways for the whole battery.
    let done = Arc::new(AtomicBool::new(false));
    let relayed = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (done, relayed) = (done.clone(), relayed.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                n += 1;
                alice.emit(
                    "ice_candidate",
                    json!({ "to": "bob", "candidate": { "n": n } }),
                );
                if let Some((event, payload)) = alice.next(Duration::from_millis(50)) {
                    assert_ne!(event, "call_ended", "{payload}");
                    if event == "ice_candidate" {
                        relayed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            alice
        })
    };
    let callee = {
        let (done, relayed) = (done.clone(), relayed.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                n += 1;
                bob.emit(
                    "ice_candidate",
                    json!({ "to": "alice", "candidate": { "n": n } }),
                );
                if let Some((event, payload)) = bob.next(Duration::from_millis(50)) {
                    assert_ne!(event, "call_ended", "{payload}");
                    assert_ne!(payload["candidate"]["candidate"], "evil");
                    if event == "ice_candidate" {
                        relayed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            bob
        })
    };

    let started = Instant::now();
    abuse(addr);
    let relayed_during = relayed.load(Ordering::SeqCst);
    // Every attacker is gone or closed: only the call's sessions are left.
    assert!(
        eventually(Duration::from_secs(5), || metric_sessions(addr) == baseline),
        "sessions left after the battery: {}",
        metric_sessions(addr)
    );
    done.store(true, Ordering::SeqCst);
    let _alice = caller.join().expect("alice kept her call");
    let _bob = callee.join().expect("bob kept his call");
    let elapsed = started.elapsed();
    assert!(
        relayed_during as f64 >= elapsed.as_secs_f64() * 10.0,
        "only {relayed_during} candidates relayed in {elapsed:?}"
    );
    let health: Value = serde_json::from_str(&get(addr, "/").body).unwrap();
    assert_eq!(health["activeCalls"], 1);
}
