//! Fair turns over real TCP: while one connection pipelines requests and
//! another floods Engine.IO pongs, a third client's requests and a call's
//! ICE relay keep being answered. (How long they wait is a benchmark's
//! business: benches/run, the fairness rows.)

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::json;
use signalbox::Config;

const FLOOD: Duration = Duration::from_secs(2);

fn pipelining(addr: SocketAddr, flooding: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let stream = TcpStream::connect(addr).expect("connect");
        let mut writer = stream.try_clone().expect("clone");
        let reader = thread::spawn(move || {
            let mut client = Client::over(stream);
            while read_reply(&mut client.reader).is_ok() {}
        });
        let batch = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
        while flooding.load(Ordering::SeqCst) {
            if writer.write_all(batch.as_bytes()).is_err() {
                break;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
        reader.join().expect("reader");
    })
}

fn ponging(addr: SocketAddr, flooding: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut sio = Sio::connect(addr);
        while flooding.load(Ordering::SeqCst) {
            for _ in 0..64 {
                sio.ws.write(Message::text("3")).expect("pong");
            }
            sio.ws.flush().expect("flush");
        }
    })
}

#[test]
fn floods_do_not_starve_a_request_or_a_call() {
    let config = Config::default();
    let addr = start_site(move || signalbox::app::site(&config));
    let mut alice = Sio::register(addr, "alice");
    let mut bob = Sio::register(addr, "bob");
    alice.emit("make_call", json!({ "to": "bob", "offer": { "sdp": "o" } }));
    bob.expect("incoming_call");
    bob.emit(
        "answer_call",
        json!({ "to": "alice", "answer": { "sdp": "a" } }),
    );
    alice.expect("call_answered");

    let flooding = Arc::new(AtomicBool::new(true));
    let floods = [
        pipelining(addr, flooding.clone()),
        ponging(addr, flooding.clone()),
    ];
    // Give the floods a moment to be in full swing.
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (mut answered, mut relayed) = (0, 0);
    while started.elapsed() < FLOOD {
        // Each read waits at most 5 s: a starved probe fails the test.
        assert_eq!(get(addr, "/healthz").status, 200);
        answered += 1;
        alice.emit(
            "ice_candidate",
            json!({ "to": "bob", "candidate": { "n": relayed } }),
        );
        assert_eq!(bob.expect("ice_candidate")["candidate"]["n"], relayed);
        relayed += 1;
    }
    flooding.store(false, Ordering::SeqCst);
    for flood in floods {
        flood.join().expect("flood");
    }
    assert!(answered >= 10, "{answered} requests answered in {FLOOD:?}");
    assert!(relayed >= 10, "{relayed} candidates relayed in {FLOOD:?}");
}
