//! fairness: how long a probe client's request and a canary call's relayed
//! candidate wait while one connection floods the server, beside the same
//! probe with no flood, in one run.
//!
//! Phases of `--duration` each: quiet; a keep-alive connection pipelining
//! `GET /healthz` without pause; a WebSocket flooding Engine.IO pongs; a
//! socket flooding events past its budget (reconnecting whenever it is
//! disconnected for it). All the while the probe sends `GET /healthz` on a
//! kept-alive connection and the canary's caller an ICE candidate, each
//! every `--probe-every`, and records how long each took to come back. The
//! flood runs on threads of its own with blocking sockets, so that the
//! probe's measurements do not wait for it on this side.

use std::io::{Read, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

/// What a flood did, counted by its threads.
#[derive(Default)]
struct Flooded {
    /// Requests, pongs or events sent.
    sent: AtomicU64,
    /// Answers the server sent back to the flooding connection.
    answered: AtomicU64,
    /// Times the event flood was disconnected and came back.
    reconnects: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flood {
    Quiet,
    Pipelined,
    Pongs,
    Events,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::Quiet => "quiet",
            Flood::Pipelined => "pipelined_http",
            Flood::Pongs => "websocket_pongs",
            Flood::Events => "events_past_budget",
        }
    }
}

pub(crate) async fn fairness(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let timeout = opts.timeout;
    let canary = async {
        let caller = join(&ctx, 0, true).await?;
        let callee = join(&ctx, 1, true).await?;
        ring(&ctx, &caller, &callee)
            .await
            .map_err(|fail| format!("canary call: {}", fail.kind()))?;
        Ok::<_, String>((caller, callee))
    };
    let (caller, callee) = match canary.await {
        Ok(pair) => pair,
        Err(error) => {
            return (
                json!({"scenario": "fairness", "ok": false, "error": error}),
                false,
            );
        }
    };
    let mut probe = match Http::open(&ctx.net).await {
        Ok(http) => http,
        Err(error) => {
            return (
                json!({"scenario": "fairness", "ok": false, "error": format!("probe: {error}")}),
                false,
            );
        }
    };
    let mut phases = serde_json::Map::new();
    let mut ok = true;
    for flood in [Flood::Quiet, Flood::Pipelined, Flood::Pongs, Flood::Events] {
        eprintln!(
            "loadgen: fairness: {} for {:?}",
            flood.name(),
            opts.duration
        );
        let running = Arc::new(AtomicBool::new(true));
        let flooded = Arc::new(Flooded::default());
        let threads = start(flood, &ctx.opts, running.clone(), flooded.clone());
        // Let the flood get going before measuring.
        Timer::after(Duration::from_millis(300)).await;
        let (mut requests, mut candidates) = (Vec::new(), Vec::new());
        let mut failures = 0usize;
        let started = Instant::now();
        let mut seq = 0;
        while started.elapsed() < opts.duration {
            let sent = Instant::now();
            match within(timeout, "probe", async {
                probe
                    .request(&ctx.net, "GET", "/healthz", b"", true)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            {
                Ok(reply) if reply.status == 200 => requests.push(sent.elapsed().as_nanos() as u64),
                Ok(reply) => {
                    failures += 1;
                    tally(format!("probe: status {}", reply.status));
                }
                Err(error) => {
                    failures += 1;
                    tally(format!("probe: {error}"));
                    if let Ok(http) = Http::open(&ctx.net).await {
                        probe = http;
                    }
                }
            }
            seq += 1;
            let packet = candidate_packet(&caller.name, &callee.name, seq, now_ns());
            let relayed = async {
                caller.send(&[&packet]).await?;
                callee.expect("ice_candidate", timeout).await
            };
            match relayed.await {
                Ok(packet) => match candidate_ts(&packet) {
                    Some(ts) => candidates.push(now_ns().saturating_sub(ts)),
                    None => failures += 1,
                },
                Err(fail) => {
                    failures += 1;
                    tally(format!("canary: {}", fail.kind()));
                }
            }
            Timer::after(opts.probe_every).await;
        }
        running.store(false, Ordering::SeqCst);
        for thread in threads {
            let _ = thread.join();
        }
        let flood_served = match flood {
            Flood::Quiet => true,
            _ => flooded.answered.load(Ordering::SeqCst) > 0,
        };
        ok &= failures == 0 && flood_served;
        phases.insert(
            flood.name().into(),
            json!({
                "probe": summary_ms(&mut requests),
                "canary": summary_ms(&mut candidates),
                "failures": failures,
                "flood": {
                    "sent": flooded.sent.load(Ordering::SeqCst),
                    "answered": flooded.answered.load(Ordering::SeqCst),
                    "reconnects": flooded.reconnects.load(Ordering::SeqCst),
                    "served": flood_served,
                },
            }),
        );
    }
    let worst = |field: &str, key: &str| {
        phases
            .iter()
            .filter(|(name, _)| *name != "quiet")
            .filter_map(|(_, phase)| phase[field][key].as_f64())
            .fold(0.0, f64::max)
    };
    let result = json!({
        "scenario": "fairness",
        "phase_s": opts.duration.as_secs_f64(),
        "probe_every_ms": opts.probe_every.as_millis() as u64,
        "phases": phases.clone(),
        "flooded_probe_p99_ms": round(worst("probe", "p99_ms"), 2),
        "flooded_probe_max_ms": round(worst("probe", "max_ms"), 2),
        "flooded_canary_p99_ms": round(worst("canary", "p99_ms"), 2),
        "flooded_canary_max_ms": round(worst("canary", "max_ms"), 2),
        "ok": ok,
    });
    let quiet = &phases["quiet"];
    eprintln!(
        "loadgen: fairness: probe p99 {} ms quiet, {} ms flooded (worst {} ms); canary p99 {} ms quiet, {} ms flooded (worst {} ms)",
        quiet["probe"]["p99_ms"],
        result["flooded_probe_p99_ms"],
        result["flooded_probe_max_ms"],
        quiet["canary"]["p99_ms"],
        result["flooded_canary_p99_ms"],
        result["flooded_canary_max_ms"],
    );
    (result, ok)
}

/// Starts the threads of `flood`; they stop once `running` is false.
fn start(
    flood: Flood,
    opts: &Opts,
    running: Arc<AtomicBool>,
    flooded: Arc<Flooded>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (addr, host, path) = (opts.addr, opts.host.clone(), opts.path.clone());
    match flood {
        Flood::Quiet => Vec::new(),
        Flood::Pipelined => pipelined(addr, host, running, flooded),
        Flood::Pongs => vec![std::thread::spawn(move || {
            pongs(addr, &host, &path, &running, &flooded)
        })],
        Flood::Events => vec![std::thread::spawn(move || {
            events(addr, &host, &path, &running, &flooded)
        })],
    }
}

/// A keep-alive connection pipelining `GET /healthz`; a second thread
/// counts the answers.
fn pipelined(
    addr: SocketAddr,
    host: String,
    running: Arc<AtomicBool>,
    flooded: Arc<Flooded>,
) -> Vec<std::thread::JoinHandle<()>> {
    let Ok(stream) = TcpStream::connect(addr) else {
        tally("pipelined flood: cannot connect");
        return Vec::new();
    };
    let Ok(mut reader) = stream.try_clone() else {
        return Vec::new();
    };
    let counter = flooded.clone();
    let reading = std::thread::spawn(move || {
        const STATUS: &[u8] = b"HTTP/1.1 200";
        let mut buf = vec![0u8; 64 * 1024];
        // The last bytes of the previous read: a status line may straddle
        // two reads, and one shorter than it cannot hold a whole one.
        let mut carry: Vec<u8> = Vec::new();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            carry.extend_from_slice(&buf[..n]);
            let count = carry.windows(STATUS.len()).filter(|w| *w == STATUS).count();
            counter.answered.fetch_add(count as u64, Ordering::SeqCst);
            let keep = carry.len().min(STATUS.len() - 1);
            carry.drain(..carry.len() - keep);
        }
    });
    let writing = std::thread::spawn(move || {
        let mut writer = stream;
        let batch = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").repeat(64);
        while running.load(Ordering::SeqCst) {
            if writer.write_all(batch.as_bytes()).is_err() {
                break;
            }
            flooded.sent.fetch_add(64, Ordering::SeqCst);
        }
        let _ = writer.shutdown(std::net::Shutdown::Both);
    });
    vec![writing, reading]
}

type SyncWs = async_tungstenite::tungstenite::WebSocket<TcpStream>;

/// A Socket.IO client over a blocking WebSocket, joined to `/`.
fn socketio(addr: SocketAddr, host: &str, path: &str) -> Option<SyncWs> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    let url = format!("ws://{host}{path}?EIO=4&transport=websocket");
    let (mut ws, _) = async_tungstenite::tungstenite::client::client(url.as_str(), stream).ok()?;
    ws.read().ok()?;
    ws.send(Message::text("40")).ok()?;
    loop {
        if ws.read().ok()?.to_text().ok()?.starts_with("40") {
            return Some(ws);
        }
    }
}

/// A WebSocket session sending `3` as fast as it can; at the end, one
/// event shows whether it is still served.
fn pongs(addr: SocketAddr, host: &str, path: &str, running: &AtomicBool, flooded: &Flooded) {
    let Some(mut ws) = socketio(addr, host, path) else {
        tally("pong flood: cannot connect");
        return;
    };
    while running.load(Ordering::SeqCst) {
        for _ in 0..64 {
            if ws.write(Message::text("3")).is_err() {
                return;
            }
        }
        if ws.flush().is_err() {
            return;
        }
        flooded.sent.fetch_add(64, Ordering::SeqCst);
    }
    let still = ws
        .send(Message::text(
            r#"42["register_user",{"userId":"pong-flood"}]"#,
        ))
        .is_ok();
    if still {
        let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        while let Ok(message) = ws.read() {
            if message
                .to_text()
                .is_ok_and(|t| t.contains("user_registered"))
            {
                flooded.answered.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
}

/// A registered socket sending `ice_candidate` to nobody as fast as it can:
/// past its budget the server refuses the events and, if it keeps on,
/// disconnects it; it comes back after a pause and floods again.
fn events(addr: SocketAddr, host: &str, path: &str, running: &AtomicBool, flooded: &Flooded) {
    let event = r#"42["ice_candidate",{"to":"nobody-here","candidate":{"candidate":"x"}}]"#;
    while running.load(Ordering::SeqCst) {
        let Some(mut ws) = socketio(addr, host, path) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = ws.get_ref().set_nonblocking(false);
        let _ = ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(1)));
        'flood: while running.load(Ordering::SeqCst) {
            for _ in 0..64 {
                if ws.write(Message::text(event)).is_err() {
                    break 'flood;
                }
            }
            if ws.flush().is_err() {
                break;
            }
            flooded.sent.fetch_add(64, Ordering::SeqCst);
            loop {
                match ws.read() {
                    Ok(Message::Text(text)) if text.as_str() == "41" => break 'flood,
                    Ok(Message::Text(text)) if text.starts_with("42") => {
                        flooded.answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Message::Close(_)) => break 'flood,
                    Ok(_) => {}
                    Err(async_tungstenite::tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(_) => break 'flood,
                }
            }
        }
        flooded.reconnects.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }
}
