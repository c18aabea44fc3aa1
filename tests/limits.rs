//! The per-client limits on sessions over real TCP: how many sessions that
//! joined no namespace one address and one connection may hold, the
//! handshake rate, and the client address behind `--trusted-proxy`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use signalbox::Config;
use signalbox::http::forwarded::Network;

/// A signalbox site with small session limits and a heartbeat too slow to
/// end anything during a test.
fn server(trusted: &[&str]) -> SocketAddr {
    let mut config = Config::default();
    config.engine.ping_interval = Duration::from_secs(20);
    config.engine.ping_timeout = Duration::from_secs(20);
    config.socketio.connect_timeout = Duration::from_secs(30);
    let limits = &mut config.engine.handshakes;
    limits.max_unjoined_per_ip = 5;
    limits.max_unjoined_per_connection = 2;
    limits.rate = 1000.0;
    limits.burst = 1000.0;
    config.trusted_proxies = trusted
        .iter()
        .map(|t| t.parse::<Network>().unwrap())
        .collect();
    start_site(move || signalbox::app::site(&config))
}

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

fn handshake(client: &mut Client, headers: &str) -> Reply {
    client.send(format!("GET {POLLING} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    client.reply()
}

fn from(last: u8, addr: SocketAddr) -> Client {
    Client::over(connect_from(Ipv4Addr::new(127, 0, 0, last), addr))
}

#[test]
fn a_connection_and_an_address_hold_few_sessions_that_joined_nothing() {
    let addr = server(&[]);
    let mut first = from(10, addr);
    assert_eq!(handshake(&mut first, "").status, 200);
    assert_eq!(handshake(&mut first, "").status, 200);
    let refused = handshake(&mut first, "");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.body,
        r#"{"code":4,"message":"Too many sessions on this connection that joined no namespace"}"#
    );
    // Three more from other connections of the same address, then no more.
    for _ in 0..3 {
        assert_eq!(handshake(&mut from(10, addr), "").status, 200);
    }
    let refused = handshake(&mut from(10, addr), "");
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.contains("from this address"),
        "{}",
        refused.body
    );
    // Another address is not held back.
    assert_eq!(handshake(&mut from(11, addr), "").status, 200);
    // A session that joins a namespace gives its place back.
    let sid = polling_handshake_on(&mut from(12, addr));
    let mut joining = from(12, addr);
    joining.send(
        format!("POST {POLLING}&sid={sid} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n40")
            .as_bytes(),
    );
    assert_eq!(joining.reply().status, 200);
    for _ in 0..5 {
        assert_eq!(handshake(&mut from(12, addr), "").status, 200);
    }
    assert_eq!(handshake(&mut from(12, addr), "").status, 429);
}

/// Opens a polling session on `client`; its sid.
fn polling_handshake_on(client: &mut Client) -> String {
    let reply = handshake(client, "");
    assert_eq!(reply.status, 200, "{reply:?}");
    let open: serde_json::Value = serde_json::from_str(&reply.body[1..]).expect("open JSON");
    open["sid"].as_str().expect("sid").to_owned()
}

#[test]
fn behind_a_trusted_proxy_the_limits_apply_to_the_forwarded_address() {
    let addr = server(&["127.0.0.20"]);
    let proxy = || from(20, addr);
    let forwarded = |client: &str| format!("X-Forwarded-For: 6.6.6.6, {client}\r\n");
    for _ in 0..5 {
        assert_eq!(
            handshake(&mut proxy(), &forwarded("192.168.1.5")).status,
            200
        );
    }
    assert_eq!(
        handshake(&mut proxy(), &forwarded("192.168.1.5")).status,
        429
    );
    // The proxy's other clients, and the proxy itself, each have their own.
    assert_eq!(
        handshake(&mut proxy(), &forwarded("192.168.1.6")).status,
        200
    );
    assert_eq!(handshake(&mut proxy(), "").status, 200);
    // An untrusted peer cannot pick its address with the header.
    for _ in 0..5 {
        assert_eq!(
            handshake(&mut from(21, addr), &forwarded("10.1.1.1")).status,
            200
        );
    }
    assert_eq!(
        handshake(&mut from(21, addr), &forwarded("10.1.1.2")).status,
        429
    );
}

#[test]
fn without_a_trusted_proxy_the_header_is_ignored() {
    let addr = server(&[]);
    for n in 0..5 {
        let header = format!("X-Forwarded-For: 10.0.0.{n}\r\n");
        assert_eq!(handshake(&mut from(30, addr), &header).status, 200);
    }
    let refused = handshake(&mut from(30, addr), "X-Forwarded-For: 10.0.0.99\r\n");
    assert_eq!(refused.status, 429);
}
