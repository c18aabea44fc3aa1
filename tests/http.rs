//! HTTP/1.1 over real TCP: routing, keep-alive, bodies, limits, CORS and
//! the WebSocket handshake.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::*;
use signalbox::Config;
use signalbox::http::Limits;

fn signalbox_with(config: Config) -> std::net::SocketAddr {
    start_site(move || signalbox::app::site(&config))
}

fn signalbox() -> std::net::SocketAddr {
    signalbox_with(Config::default())
}

#[test]
fn health_and_users_pages() {
    let addr = signalbox();
    let reply = get(addr, "/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let health: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(health["status"], "WebRTC Signaling Server Running");
    assert_eq!(health["connectedUsers"], 0);
    assert_eq!(health["activeCalls"], 0);
    let stamp = health["timestamp"].as_str().unwrap();
    assert_eq!(stamp.len(), 24, "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );

    let users: serde_json::Value = serde_json::from_str(&get(addr, "/users").body).unwrap();
    assert_eq!(
        users,
        serde_json::json!({"connectedUsers": [], "totalUsers": 0})
    );
}

#[test]
fn not_found_method_not_allowed_and_head() {
    let addr = signalbox();
    let reply = get(addr, "/nothing-here");
    assert_eq!((reply.status, reply.body.as_str()), (404, "Not Found\n"));
    let reply = post(addr, "/", "x");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));

    let mut client = Client::connect(addr);
    client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /users HTTP/1.1\r\nHost: t\r\n\r\n");
    // read_reply trusts Content-Length, so read the HEAD answer's head by hand.
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut client.reader, &mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        !head.contains("Content-Length: 0"),
        "HEAD keeps the GET's length: {head}"
    );
    assert_eq!(
        client.reply().status,
        200,
        "the next response follows at once"
    );
}

#[test]
fn keep_alive_and_pipelining() {
    let addr = signalbox();
    let mut client = Client::connect(addr);
    for _ in 0..3 {
        client.send(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\n");
        let reply = client.reply();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
    client.send(b"GET /users HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(client.reply().body.contains("totalUsers"));
    assert!(client.reply().body.contains("activeCalls"));

    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(client.reply().header("connection"), Some("close"));
    assert!(client.closed());

    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.reply().status, 200);
    assert!(client.closed(), "HTTP/1.0 closes by default");
}

#[test]
fn chunked_request_bodies() {
    let addr = signalbox();
    let sid = polling_handshake(addr, "/socket.io/");
    let mut client = Client::connect(addr);
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    client.send(
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n4\r\n1\r\n0\r\n0\r\n\r\n")
            .as_bytes(),
    );
    let reply = client.reply();
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    // The socket.io layer answers the CONNECT that arrived in chunks.
    client.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert!(client.reply().body.starts_with("40{\"sid\":"));

    let mut client = Client::connect(addr);
    client.send(
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .as_bytes(),
    );
    assert_eq!(client.reply().status, 400);
    assert!(client.closed());

    let reply = request(addr, "POST", &target, "Transfer-Encoding: gzip\r\n", "");
    assert_eq!(reply.status, 501);
}

#[test]
fn oversized_bodies_get_413() {
    let addr = signalbox();
    let sid = polling_handshake(addr, "/socket.io/");
    let target = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut client = Client::connect(addr);
    client.send(
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000001\r\n\r\n").as_bytes(),
    );
    let reply = client.reply();
    assert_eq!(reply.status, 413);
    assert!(client.closed());

    let mut client = Client::connect(addr);
    let chunk = "x".repeat(600_000);
    client.send(
        format!(
            "POST {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len(),
            chunk.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.reply().status, 413);
}

#[test]
fn bad_heads_are_answered_and_closed() {
    let addr = signalbox();
    let mut client = Client::connect(addr);
    client.send(b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert_eq!(client.reply().status, 400);
    assert!(client.closed());

    let mut client = Client::connect(addr);
    let huge = "a".repeat(20_000);
    client.send(format!("GET / HTTP/1.1\r\nX-Big: {huge}\r\n\r\n").as_bytes());
    assert_eq!(client.reply().status, 431);

    let many: String = (0..60).map(|i| format!("X-{i}: v\r\n")).collect();
    let mut client = Client::connect(addr);
    client.send(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(client.reply().status, 431);

    let reply = request(
        addr,
        "GET",
        "/",
        "Content-Length: 1\r\nContent-Length: 2\r\n",
        "",
    );
    assert_eq!(reply.status, 400);

    // The server is still fine.
    assert_eq!(get(addr, "/").status, 200);
}

#[test]
fn a_head_that_never_ends_is_dropped() {
    let config = Config {
        http: Limits {
            request_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Config::default()
    };
    let addr = signalbox_with(config);
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
    let started = std::time::Instant::now();
    let reply = client.reply();
    assert_eq!(reply.status, 408);
    assert!(client.closed());
    assert!(started.elapsed() < Duration::from_secs(2));

    // Slowloris: one byte at a time does not extend the deadline.
    let mut client = Client::connect(addr);
    let trickle = thread::spawn({
        let mut stream = client.reader.get_ref().try_clone().unwrap();
        move || {
            for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa" {
                if stream.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    });
    assert_eq!(client.reply().status, 408);
    trickle.join().unwrap();

    // An idle kept-alive connection is closed quietly.
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.reply().status, 200);
    assert!(client.closed());
}

#[test]
fn cors_preflight_and_origins() {
    let addr = signalbox();
    let reply = request(
        addr,
        "OPTIONS",
        "/socket.io/?EIO=4&transport=polling",
        "Origin: http://a.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n",
        "",
    );
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        reply
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("content-type")
    );

    let config = Config {
        cors_origins: vec!["http://door.example".into()],
        ..Config::default()
    };
    let addr = signalbox_with(config);
    let allowed = request(addr, "GET", "/", "Origin: http://door.example\r\n", "");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://door.example")
    );
    let other = request(addr, "GET", "/", "Origin: http://evil.example\r\n", "");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let error = request(addr, "GET", "/nope", "Origin: http://door.example\r\n", "");
    assert_eq!(error.status, 404);
    assert_eq!(
        error.header("access-control-allow-origin"),
        Some("http://door.example")
    );

    // Engine.IO refuses other origins outright, polling and WebSocket alike;
    // requests without an Origin (apps, devices) are served.
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let refused = request(
        addr,
        "GET",
        handshake,
        "Origin: http://evil.example\r\n",
        "",
    );
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (403, r#"{"code":4,"message":"Forbidden"}"#)
    );
    let allowed = request(
        addr,
        "GET",
        handshake,
        "Origin: http://door.example\r\n",
        "",
    );
    assert_eq!(allowed.status, 200);
    assert_eq!(get(addr, handshake).status, 200);
    let mut client = Client::connect(addr);
    client.send(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Origin: http://evil.example\r\n\r\n",
    );
    assert_eq!(client.reply().status, 403);
}

#[test]
fn pages_of_the_server_itself_pass_the_origin_check() {
    let config = Config {
        cors_origins: vec!["https://elsewhere.example".into()],
        ..Config::default()
    };
    let addr = signalbox_with(config);
    let own = format!("127.0.0.1:{}", addr.port());
    let upgrade = |host: &str, origin: &str| {
        let mut client = Client::connect(addr);
        client.send(
            format!(
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Origin: {origin}\r\n\r\n"
            )
            .as_bytes(),
        );
        client.reply().status
    };
    let polling = |host: &str, origin: &str| {
        let mut client = Client::connect(addr);
        client.send(
            format!(
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\r\n"
            )
            .as_bytes(),
        );
        client.reply().status
    };

    // The page at /app/ connects back to the server it came from.
    assert_eq!(upgrade(&own, &format!("http://{own}")), 101);
    assert_eq!(polling(&own, &format!("http://{own}")), 200);
    // Host and scheme without regard to case, default port or not.
    assert_eq!(upgrade("Intercom.Local", "http://intercom.local:80"), 101);
    assert_eq!(polling("intercom.local:80", "HTTP://INTERCOM.local"), 200);
    // The listed origin still works.
    assert_eq!(upgrade(&own, "https://elsewhere.example"), 101);

    // Every other origin is still refused (cross-site WebSocket hijacking).
    for origin in [
        "http://evil.example".to_string(),
        format!("https://{own}"),
        format!("http://127.0.0.1:{}", addr.port().wrapping_add(1)),
        format!("http://{own}.evil.example"),
        "null".to_string(),
    ] {
        assert_eq!(upgrade(&own, &origin), 403, "{origin}");
        assert_eq!(polling(&own, &origin), 403, "{origin}");
    }
    assert_eq!(upgrade("intercom.local:3000", "http://intercom.local"), 403);
}

#[test]
fn websocket_handshake_checks() {
    let addr = signalbox();
    let upgrade = |extra: &str| {
        let mut client = Client::connect(addr);
        client.send(
            format!(
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
            )
            .as_bytes(),
        );
        client.reply()
    };
    let reply =
        upgrade("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    assert_eq!(reply.status, 101);
    assert_eq!(
        reply.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(upgrade("Sec-WebSocket-Version: 13\r\n").status, 400);
    assert_eq!(
        upgrade("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n").status,
        400
    );
    let reply =
        upgrade("Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    assert_eq!(reply.status, 426);
    assert_eq!(reply.header("sec-websocket-version"), Some("13"));
}

#[test]
fn expect_100_continue_is_answered() {
    let addr = signalbox();
    let sid = polling_handshake(addr, "/socket.io/");
    let mut client = Client::connect(addr);
    client.send(
        format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(client.reply().status, 100);
    client.send(b"40");
    assert_eq!(client.reply().body, "ok");
}
