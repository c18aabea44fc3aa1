//! Engine.IO over real TCP: the proof that the transports drive the
//! session (engineio/session.rs, whose logic its unit tests check under a
//! fake clock): polling, WebSocket, upgrade, heartbeat, errors.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

const EIO: &str = "/engine.io/?EIO=4&transport=polling";

#[test]
fn polling_handshake_post_then_get() {
    let addr = start(Options::default());
    let reply = get(addr, EIO);
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
    let sid = open["sid"].as_str().unwrap();

    let url = format!("{EIO}&sid={sid}");
    let reply = post(addr, &url, "4hello\x1e4\u{e9}t\u{e9}\x1ebAQIDBA==");
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = get(addr, &url);
    assert_eq!(reply.body, "4hello\x1e4\u{e9}t\u{e9}\x1ebAQIDBA==");
}

#[test]
fn websocket_session_echoes_text_and_binary() {
    let addr = start(Options::default());
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    let open = ws_next(&mut ws).unwrap();
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    ws_send(&mut ws, "4hello");
    assert_eq!(ws_next_data(&mut ws).as_deref(), Some("4hello"));
    ws.send(async_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .unwrap();
    assert_eq!(ws_next_data(&mut ws).as_deref(), Some("bin:010203"));
    assert_eq!(session_count(addr), 1);
    ws.close(None).unwrap();
    assert!(eventually(Duration::from_secs(2), || session_count(addr) == 0));
}

#[test]
fn upgrade_with_probe() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");

    // A GET waiting when the probe arrives is released with a noop.
    let pending = thread::spawn(move || get(addr, &url));
    thread::sleep(Duration::from_millis(50));
    let mut ws = ws_connect(
        addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .unwrap();
    ws_send(&mut ws, "2probe");
    assert_eq!(ws_next(&mut ws).as_deref(), Some("3probe"));
    assert_eq!(pending.join().unwrap().body, "6");

    let url = format!("{EIO}&sid={sid}");
    assert_eq!(
        get(addr, &url).body,
        "6",
        "a GET during the upgrade gets a noop"
    );
    ws_send(&mut ws, "5");
    ws_send(&mut ws, "4after upgrade");
    assert_eq!(ws_next_data(&mut ws).as_deref(), Some("4after upgrade"));

    // Polling is refused for an upgraded session, and so is a second WebSocket.
    let reply = get(addr, &url);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );
    let mut second = ws_connect(
        addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .unwrap();
    assert_eq!(
        ws_next(&mut second),
        None,
        "a second WebSocket is closed at once"
    );
    ws_send(&mut ws, "4still here");
    assert_eq!(ws_next_data(&mut ws).as_deref(), Some("4still here"));
}

#[test]
fn heartbeat_keeps_an_answering_client() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");
    // Two pings: longer than an interval and a timeout (the heartbeat's own
    // cases are unit tests in engineio/session.rs).
    for _ in 0..2 {
        assert_eq!(get(addr, &url).body, "2");
        assert_eq!(post(addr, &url, "3").status, 200);
    }
    assert_eq!(session_count(addr), 1);
}

#[test]
fn heartbeat_timeout_closes_a_silent_websocket() {
    let addr = start(Options::default());
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    assert!(ws_next(&mut ws).unwrap().starts_with('0'));
    assert_eq!(ws_next(&mut ws).as_deref(), Some("2"));
    // Not answering: the server closes the socket.
    assert_eq!(ws_next(&mut ws), None);
    assert!(eventually(Duration::from_secs(1), || session_count(addr) == 0));
}

#[test]
fn an_abandoned_upgrade_is_freed() {
    let addr = start(Options::default());
    // Probed, then silent: no `5`, no pong, no more requests.
    let sid = polling_handshake(addr, "/engine.io/");
    let mut probed = ws_connect(
        addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .unwrap();
    ws_send(&mut probed, "2probe");
    assert_eq!(ws_next(&mut probed).as_deref(), Some("3probe"));
    // Opened with the sid, then nothing at all.
    let sid = polling_handshake(addr, "/engine.io/");
    let mut silent = ws_connect(
        addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .unwrap();
    assert_eq!(session_count(addr), 2);

    // Both sessions end within ping interval + timeout, and their sockets close.
    assert!(eventually(Duration::from_secs(2), || session_count(addr) == 0));
    assert_eq!(ws_next(&mut probed), None);
    assert_eq!(ws_next(&mut silent), None);
}

#[test]
fn sessions_in_no_namespace_end_at_the_connect_timeout() {
    // A slow heartbeat: only the connect timeout can end these.
    let mut options = Options {
        connect_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    options.engine.ping_interval = Duration::from_secs(20);
    options.engine.ping_timeout = Duration::from_secs(20);
    let addr = start(options);
    let sio = |sid: &str| format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    // Never joined, with a packet queued that it never collects.
    let refused = polling_handshake(addr, "/socket.io/");
    assert_eq!(post(addr, &sio(&refused), "40/nowhere,").status, 200);
    // Joined, then left its last namespace.
    let left = polling_handshake(addr, "/socket.io/");
    assert_eq!(post(addr, &sio(&left), "40").status, 200);
    assert!(get(addr, &sio(&left)).body.starts_with("40{"));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        post(addr, &sio(&left), "41").status,
        200,
        "a joined session stays"
    );
    // Probed for an upgrade, then abandoned.
    let probed = polling_handshake(addr, "/socket.io/");
    let mut ws = ws_connect(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={probed}"),
    )
    .unwrap();
    ws_send(&mut ws, "2probe");
    assert_eq!(ws_next(&mut ws).as_deref(), Some("3probe"));
    assert!(
        eventually(Duration::from_secs(2), || session_count(addr) == 0),
        "{} sessions outlived their connect timeout",
        session_count(addr)
    );
}

#[test]
fn a_failed_probe_leaves_the_session_on_polling() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/engine.io/");
    let mut ws = ws_connect(
        addr,
        &format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .unwrap();
    ws_send(&mut ws, "4not a probe");
    assert_eq!(ws_next(&mut ws), None, "the probe socket is closed");
    let url = format!("{EIO}&sid={sid}");
    assert_eq!(post(addr, &url, "4still polling").status, 200);
    assert_eq!(get(addr, &url).body, "4still polling");
}

#[test]
fn request_errors_are_engineio_json_with_cors() {
    let addr = start(Options::default());
    let origin = "Origin: http://app.example\r\n";
    let cases = [
        (
            "GET",
            "/engine.io/?EIO=4&transport=polling&sid=nope",
            1,
            "Session ID unknown",
        ),
        (
            "POST",
            "/engine.io/?EIO=4&transport=polling&sid=nope",
            1,
            "Session ID unknown",
        ),
        (
            "GET",
            "/engine.io/?EIO=4&transport=carrier-pigeon",
            0,
            "Transport unknown",
        ),
        ("GET", "/engine.io/?EIO=4", 0, "Transport unknown"),
        (
            "GET",
            "/engine.io/?EIO=3&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "GET",
            "/engine.io/?transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "GET",
            "/engine.io/?EIO=abc&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "POST",
            "/engine.io/?EIO=4&transport=polling",
            2,
            "Bad handshake method",
        ),
        (
            "PUT",
            "/engine.io/?EIO=4&transport=polling",
            2,
            "Bad handshake method",
        ),
        (
            "GET",
            "/engine.io/?EIO=4&transport=websocket",
            3,
            "Bad request",
        ),
    ];
    for (method, target, code, message) in cases {
        let reply = request(addr, method, target, origin, "");
        assert_eq!(reply.status, 400, "{method} {target}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.body,
            format!(r#"{{"code":{code},"message":"{message}"}}"#),
            "{target}"
        );
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("http://app.example")
        );
    }
    // A WebSocket upgrade with a bad query is refused before the handshake.
    let error = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket&sid=nope").unwrap_err();
    match error {
        async_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 400);
            let body = response.body().as_deref().unwrap_or_default();
            assert_eq!(body, br#"{"code":1,"message":"Session ID unknown"}"#);
        }
        other => panic!("{other:?}"),
    }
    assert!(ws_connect(addr, "/engine.io/?EIO=3&transport=websocket").is_err());
}

#[test]
fn close_packet_releases_the_waiting_get_with_a_noop() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");
    let waiting = {
        let url = url.clone();
        thread::spawn(move || get(addr, &url))
    };
    thread::sleep(Duration::from_millis(50));
    assert_eq!(post(addr, &url, "1").status, 200);
    assert_eq!(waiting.join().unwrap().body, "6");
    assert_eq!(get(addr, &url).status, 400);
}

#[test]
fn a_cancelled_get_closes_the_session() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");
    let mut client = Client::connect(addr);
    client.send(format!("GET {url} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    thread::sleep(Duration::from_millis(50));
    drop(client);
    assert!(eventually(Duration::from_millis(250), || session_count(
        addr
    ) == 0));
}

#[test]
fn invalid_packets_close_the_session() {
    let addr = start(Options::default());
    for body in ["abc", "", "4a\x1e", "bnot base64!"] {
        let sid = polling_handshake(addr, "/engine.io/");
        let url = format!("{EIO}&sid={sid}");
        assert_eq!(post(addr, &url, body).status, 400, "{body:?}");
        assert_eq!(get(addr, &url).status, 400, "{body:?}");
    }
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    ws_next(&mut ws);
    ws_send(&mut ws, "abc");
    assert_eq!(ws_next(&mut ws), None);
    // A ping from the client is not protocol 4 either.
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    ws_next(&mut ws);
    ws_send(&mut ws, "2");
    assert_eq!(ws_next(&mut ws), None);
}

#[test]
fn max_payload_holds_on_both_transports() {
    let mut options = Options::default();
    options.engine.max_payload = 1000;
    let addr = start(options);
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");
    let big = format!("4{}", "x".repeat(1000));
    let reply = post(addr, &url, &big);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("connection"), Some("close"));
    let fits = format!("4{}", "x".repeat(999));
    assert_eq!(post(addr, &url, &fits).status, 200);

    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    ws_next(&mut ws);
    ws_send(&mut ws, &fits);
    assert_eq!(ws_next_data(&mut ws).as_deref(), Some(fits.as_str()));
    ws_send(&mut ws, &big);
    assert_eq!(
        ws_close_code(&mut ws),
        Some(1009),
        "an oversized message closes the socket with 1009, message too big"
    );
}

#[test]
fn a_server_close_over_polling_delivers_before_it_closes() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/socket.io/");
    let url = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(addr, &url, "40").status, 200);
    assert!(get(addr, &url).body.starts_with("40{\"sid\""));
    assert_eq!(post(addr, &url, r#"42["bye"]"#).status, 200);
    // The last packets first, the close packet with the next GET: clients
    // act on a close before packets that came with it.
    assert_eq!(get(addr, &url).body, "42[\"bye-back\"]\x1e41");
    assert_eq!(get(addr, &url).body, "1");
    assert_eq!(get(addr, &url).status, 400);
    assert_eq!(session_count(addr), 0);
}

#[test]
fn a_client_close_ends_a_closing_session_at_once() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/socket.io/");
    let url = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    post(addr, &url, "40");
    get(addr, &url);
    post(addr, &url, r#"42["bye"]"#);
    assert_eq!(get(addr, &url).body, "42[\"bye-back\"]\x1e41");
    // socket.io-client closes on the DISCONNECT instead of polling again.
    assert_eq!(post(addr, &url, "1").status, 200);
    assert_eq!(session_count(addr), 0);
}

#[test]
fn a_non_ascii_socketio_packet_closes_only_that_connection() {
    let addr = start(Options::default());
    let sid = polling_handshake(addr, "/socket.io/");
    let url = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(addr, &url, "4\u{e9}t\u{e9}").status, 200);
    assert_eq!(get(addr, &url).status, 400, "the session is closed at once");

    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").unwrap();
    ws_next(&mut ws);
    ws_send(&mut ws, "4\u{1f600}");
    assert_eq!(ws_next(&mut ws), None);
    assert_eq!(session_count(addr), 0);
}

#[test]
fn a_client_that_does_not_collect_its_packets_is_dropped() {
    let mut options = Options::default();
    options.engine.buffer_limit = Some(50_000);
    options.engine.ping_interval = Duration::from_secs(30);
    let addr = start(options);
    let sid = polling_handshake(addr, "/engine.io/");
    let url = format!("{EIO}&sid={sid}");
    let chunk = format!("4{}", "x".repeat(10_000));
    for _ in 0..6 {
        post(addr, &url, &chunk);
    }
    // Sixty kilobytes of echoes wait: over the bound, the session is gone.
    assert!(eventually(Duration::from_secs(1), || session_count(addr) == 0));
    assert_eq!(get(addr, &url).status, 400);
}

#[test]
fn what_all_sessions_hold_together_is_bounded() {
    let mut options = Options::default();
    // Each session could hold 1 MB; all of them together only 100 kB.
    options.engine.buffer_limit = Some(1_000_000);
    options.engine.max_pending_bytes = 100_000;
    options.engine.ping_interval = Duration::from_secs(30);
    let addr = start(options);
    let chunk = format!("4{}", "x".repeat(10_000));
    let first = polling_handshake(addr, "/engine.io/");
    let second = polling_handshake(addr, "/engine.io/");
    for _ in 0..6 {
        post(addr, &format!("{EIO}&sid={first}"), &chunk);
    }
    assert_eq!(session_count(addr), 2, "60 kB waiting is within the bound");
    for _ in 0..6 {
        post(addr, &format!("{EIO}&sid={second}"), &chunk);
    }
    // The session whose echoes took the total past 100 kB goes; the other
    // keeps what it has waiting and collects it.
    assert!(eventually(Duration::from_secs(1), || session_count(addr) == 1));
    assert_eq!(get(addr, &format!("{EIO}&sid={second}")).status, 400);
    let collected = get(addr, &format!("{EIO}&sid={first}"));
    assert_eq!(collected.status, 200);
    assert!(
        collected.body.len() >= 60_000,
        "{} bytes",
        collected.body.len()
    );
}

#[test]
fn polling_sessions_are_bounded() {
    let mut options = Options::default();
    options.engine.max_polling_sessions = 2;
    let addr = start(options);
    polling_handshake(addr, "/engine.io/");
    polling_handshake(addr, "/engine.io/");
    assert_eq!(get(addr, EIO).status, 503);
    // WebSocket sessions are not polling sessions.
    let mut ws = ws_connect(addr, "/engine.io/?EIO=4&transport=websocket").unwrap();
    assert!(ws_next(&mut ws).unwrap().starts_with('0'));
}

#[test]
fn connections_are_bounded() {
    let mut options = Options::default();
    options.limits.max_connections = 3;
    let addr = start(options);
    let held: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    let mut extra = Client::connect(addr);
    let reply = extra.reply();
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (503, Some("5"))
    );
    assert!(extra.closed());
    drop(held);
    // Places come back as connections close.
    assert!(eventually(Duration::from_secs(1), || {
        let mut client = Client::connect(addr);
        client.send(b"GET /sessions HTTP/1.1\r\nHost: t\r\n\r\n");
        client.reply().status == 200
    }));
}

#[test]
fn an_ack_the_server_asked_for_comes_or_times_out() {
    let addr = start(Options::default());
    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").unwrap();
    ws_next(&mut ws);
    ws_send(&mut ws, "40");
    assert!(ws_next_data(&mut ws).unwrap().starts_with("40"));
    // Answered: the callback hears the answer.
    ws_send(&mut ws, r#"42["ask"]"#);
    let question = ws_next_data(&mut ws).unwrap();
    let id = question
        .strip_prefix("42")
        .and_then(|rest| rest.strip_suffix(r#"["question"]"#))
        .expect("an event asking for an ack");
    ws_send(&mut ws, &format!("43{id}[]"));
    assert_eq!(
        ws_next_data(&mut ws).as_deref(),
        Some(r#"42["asked","answered"]"#)
    );
    // Not answered: the callback hears the timeout, 200 ms later.
    ws_send(&mut ws, r#"42["ask"]"#);
    assert!(ws_next_data(&mut ws).unwrap().ends_with(r#"["question"]"#));
    assert_eq!(
        ws_next_data(&mut ws).as_deref(),
        Some(r#"42["asked","ack timed out"]"#)
    );
}
