//! calls: pairs make calls; the fake SDP, ringing and one call, which the
//! other scenarios use too.

use super::*;

/// A plausible SDP of about `bytes` bytes.
pub(crate) fn fake_sdp(bytes: usize) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\na=msid-semantic: WMS stream\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Xk3f\r\na=ice-pwd:v8Yp1cM2mWq0aLJ7rT5sN4bE\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 5B:8E:41:0C:7A:92:3D:F4:6E:11:B0:C7:\
         29:AA:58:03:DE:71:94:2F:6B:C8:E0:15:3A:9D:47:B2:F1:60:0E:8C\r\na=setup:actpass\r\n\
         a=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\n",
    );
    let mut line = 0;
    while sdp.len() + 40 < bytes {
        let _ = write!(
            sdp,
            "a=ssrc:{} cname:loadgen{line:08}\r\n",
            1_000_000 + line
        );
        line += 1;
    }
    sdp
}

/// One call from `caller` to `callee`, up to `call_answered`; returns the
/// setup time (make_call sent → call_answered received).
pub(crate) async fn ring(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<u64, Fail> {
    let timeout = ctx.opts.timeout;
    let start = Instant::now();
    caller
        .emit(
            "make_call",
            json!({"to": callee.name, "from": caller.name, "offer": {"type": "offer", "sdp": ctx.sdp}}),
        )
        .await?;
    callee.expect("incoming_call", timeout).await?;
    callee
        .emit(
            "answer_call",
            json!({"to": caller.name, "from": callee.name, "answer": {"type": "answer", "sdp": ctx.sdp}}),
        )
        .await?;
    caller.expect("call_answered", timeout).await?;
    Ok(start.elapsed().as_nanos() as u64)
}

pub(crate) fn candidate_packet(from: &str, to: &str, seq: u64, ts: u64) -> String {
    format!(
        "42[\"ice_candidate\",{{\"to\":\"{to}\",\"from\":\"{from}\",\"candidate\":{{\"candidate\":\
         \"candidate:842163049 1 udp 1677729535 127.0.0.1 {port} typ srflx raddr 0.0.0.0 rport 0 \
         generation 0 ufrag Xk3f network-cost 999\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0,\
         \"usernameFragment\":\"Xk3f\",\"seq\":{seq},\"ts\":{ts}}}}}]",
        port = 40000 + seq % 20000
    )
}

/// The send timestamp inside a relayed candidate.
pub(crate) fn candidate_ts(packet: &str) -> Option<u64> {
    let at = packet.rfind("\"ts\":")? + 5;
    let digits = &packet[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

pub(crate) async fn one_call(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<u64, Fail> {
    let timeout = ctx.opts.timeout;
    let setup = ring(ctx, caller, callee).await?;
    let k = ctx.opts.ice;
    let from_caller: Vec<String> = (0..k)
        .map(|s| candidate_packet(&caller.name, &callee.name, s as u64, now_ns()))
        .collect();
    let from_callee: Vec<String> = (0..k)
        .map(|s| candidate_packet(&callee.name, &caller.name, s as u64, now_ns()))
        .collect();
    for (a, b) in from_caller.iter().zip(&from_callee) {
        caller.send(&[a]).await?;
        callee.send(&[b]).await?;
    }
    for _ in 0..k {
        callee.expect("ice_candidate", timeout).await?;
    }
    for _ in 0..k {
        caller.expect("ice_candidate", timeout).await?;
    }
    caller
        .emit("end_call", json!({"to": callee.name, "from": caller.name}))
        .await?;
    callee.expect("call_ended", timeout).await?;
    Ok(setup)
}

pub(crate) async fn calls(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let pairs = opts.count;
    eprintln!("loadgen: calls: connecting {} clients", pairs * 2);
    let joined = join_many(&ctx, pairs * 2, true).await;
    let clients = Rc::new(joined.clients);
    let setups = Rc::new(RefCell::new(Vec::with_capacity(pairs * opts.repeat)));
    let errors = Rc::new(Cell::new(0usize));
    let timeouts = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let tasks: Vec<Task<()>> = (0..pairs)
        .map(|p| {
            let (ctx, clients, setups, errors, timeouts) = (
                ctx.clone(),
                clients.clone(),
                setups.clone(),
                errors.clone(),
                timeouts.clone(),
            );
            spawn(async move {
                let repeat = ctx.opts.repeat;
                let (Some(caller), Some(callee)) = (&clients[2 * p], &clients[2 * p + 1]) else {
                    errors.set(errors.get() + repeat);
                    tally("pair not connected");
                    return;
                };
                for round in 0..repeat {
                    match one_call(&ctx, caller, callee).await {
                        Ok(setup) => setups.borrow_mut().push(setup),
                        Err(fail) => {
                            if matches!(fail, Fail::Timeout(_)) {
                                timeouts.set(timeouts.get() + 1);
                            } else {
                                errors.set(errors.get() + 1);
                            }
                            tally(format!("call: {}", fail.kind()));
                            if caller.closed().is_some() || callee.closed().is_some() {
                                errors.set(errors.get() + repeat - round - 1);
                                return;
                            }
                            // Hang up both ways and start clean.
                            for (a, b) in [(caller, callee), (callee, caller)] {
                                let _ = a
                                    .emit("end_call", json!({"to": b.name, "from": a.name}))
                                    .await;
                            }
                            Timer::after(Duration::from_millis(300)).await;
                            caller.drain();
                            callee.drain();
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut setups = std::mem::take(&mut *setups.borrow_mut());
    let completed = setups.len();
    let attempted = pairs * opts.repeat;
    let ok = completed == attempted && joined.failures == 0;
    let setup = summary_ms(&mut setups);
    println!(
        "calls: {completed}/{attempted} calls completed in {elapsed:.1}s ({:.0} calls/s), {} errors, {} timeouts; \
         call setup p50 {} ms, p99 {} ms, max {} ms",
        completed as f64 / elapsed,
        errors.get(),
        timeouts.get(),
        setup["p50_ms"],
        setup["p99_ms"],
        setup["max_ms"],
    );
    let result = json!({
        "scenario": "calls",
        "pairs": pairs,
        "repeat": opts.repeat,
        "ice": opts.ice,
        "join_failures": joined.failures,
        "attempted": attempted,
        "completed": completed,
        "errors": errors.get(),
        "timeouts": timeouts.get(),
        "elapsed_s": round(elapsed, 3),
        "calls_per_s": round(completed as f64 / elapsed, 1),
        "setup": setup,
        "ok": ok,
    });
    (result, ok)
}
