//! relay: pairs in calls relay ICE candidates flat out, or with `--rate`
//! at a steady rate in all, each candidate in a write of its own.

use super::*;

/// Per-direction relay state: the window of candidates in flight (a token
/// each) and how many were sent.
pub(crate) struct Lane {
    pub(crate) tokens: (channel::Sender<()>, channel::Receiver<()>),
    pub(crate) sent: Cell<u64>,
}

pub(crate) struct RelayStats {
    pub(crate) latencies: RefCell<Vec<u64>>,
    pub(crate) per_pair: RefCell<Vec<u64>>,
    pub(crate) in_window: Cell<u64>,
    pub(crate) received: Cell<u64>,
}

/// When a paced lane sends: every `period`, from its own phase, so the
/// lanes' sends spread over the period rather than coming together.
pub(crate) struct Pace {
    pub(crate) next: Instant,
    pub(crate) period: Duration,
}

pub(crate) async fn relay_sender(
    from: Rc<Client>,
    to_name: String,
    lane: Rc<Lane>,
    end: Instant,
    window: usize,
    mut pace: Option<Pace>,
) {
    let mut seq = 0u64;
    let mut batch: Vec<String> = Vec::with_capacity(window);
    loop {
        if let Some(pace) = pace.as_mut() {
            // Paced: one candidate at its time. A lane that fell behind
            // skips what it missed rather than sending a burst.
            Timer::at(pace.next.min(end)).await;
            let now = Instant::now();
            pace.next += pace.period;
            if pace.next < now {
                pace.next = now + pace.period;
            }
        }
        // Wait for room in the window, or the end.
        let room = future::or(async { lane.tokens.0.send(()).await.is_ok() }, async {
            Timer::at(end).await;
            false
        })
        .await;
        if !room || Instant::now() >= end {
            // A token taken at the very end stands for nothing sent.
            if room {
                let _ = lane.tokens.1.try_recv();
            }
            break;
        }
        let mut n = 1;
        while pace.is_none() && n < window && lane.tokens.0.try_send(()).is_ok() {
            n += 1;
        }
        batch.clear();
        let ts = now_ns();
        for _ in 0..n {
            batch.push(candidate_packet(&from.name, &to_name, seq, ts));
            seq += 1;
        }
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        if let Err(fail) = from.send(&refs).await {
            tally(format!("relay: {}", fail.kind()));
            break;
        }
        lane.sent.set(lane.sent.get() + n as u64);
    }
}

pub(crate) async fn relay_receiver(
    to: Rc<Client>,
    pair: usize,
    lane: Rc<Lane>,
    stats: Rc<RelayStats>,
    end: Instant,
    drain_until: Instant,
) {
    loop {
        let deadline = if Instant::now() < end {
            end
        } else {
            // After the end, wait only for what is still in flight.
            if lane.tokens.1.is_empty() {
                break;
            }
            drain_until
        };
        let next = future::or(async { Some(to.events.recv().await) }, async {
            Timer::at(deadline).await;
            None
        })
        .await;
        let packet = match next {
            None if deadline == drain_until => break,
            None => continue,
            Some(Err(_)) => {
                tally(format!(
                    "relay: session closed: {}",
                    to.closed().unwrap_or_default()
                ));
                break;
            }
            Some(Ok(packet)) => packet,
        };
        if event_name(&packet) != Some("ice_candidate") {
            tally(format!(
                "relay: unexpected {}",
                event_name(&packet).unwrap_or("packet")
            ));
            continue;
        }
        let now = now_ns();
        if let Some(ts) = candidate_ts(&packet) {
            stats.latencies.borrow_mut().push(now.saturating_sub(ts));
        }
        let _ = lane.tokens.1.try_recv();
        stats.per_pair.borrow_mut()[pair] += 1;
        stats.received.set(stats.received.get() + 1);
        if Instant::now() <= end {
            stats.in_window.set(stats.in_window.get() + 1);
        }
    }
}

pub(crate) async fn relay(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let pairs = opts.count;
    eprintln!("loadgen: relay: connecting {} clients", pairs * 2);
    let joined = join_many(&ctx, pairs * 2, true).await;
    let clients: Vec<Option<Rc<Client>>> =
        joined.clients.into_iter().map(|c| c.map(Rc::new)).collect();

    // Every pair in a call first: ICE is relayed between the parties of one.
    let setups: Vec<Task<bool>> = (0..pairs)
        .map(|p| {
            let (ctx, caller, callee) = (
                ctx.clone(),
                clients[2 * p].clone(),
                clients[2 * p + 1].clone(),
            );
            spawn(async move {
                let (Some(caller), Some(callee)) = (caller, callee) else {
                    return false;
                };
                match ring(&ctx, &caller, &callee).await {
                    Ok(_) => true,
                    Err(fail) => {
                        tally(format!("relay call setup: {}", fail.kind()));
                        false
                    }
                }
            })
        })
        .collect();
    let mut in_call = Vec::with_capacity(pairs);
    for task in setups {
        in_call.push(task.await);
    }
    let active: Vec<usize> = (0..pairs).filter(|&p| in_call[p]).collect();
    eprintln!(
        "loadgen: relay: {} pairs in calls; relaying for {:.0}s",
        active.len(),
        opts.duration.as_secs_f64()
    );

    let stats = Rc::new(RelayStats {
        latencies: RefCell::new(Vec::with_capacity(1 << 20)),
        per_pair: RefCell::new(vec![0; pairs]),
        in_window: Cell::new(0),
        received: Cell::new(0),
    });
    let before = ctx.sample();
    let own_before = own_cpu();
    let start = Instant::now();
    let end = start + opts.duration;
    let drain_until = end + opts.timeout.min(Duration::from_secs(5));
    let mut tasks = Vec::new();
    let mut lanes = Vec::new();
    // Paced, the window is for all lanes together: one set of tokens.
    let shared = channel::bounded(opts.window);
    let lane_count = active.len() * 2;
    for &p in &active {
        let (Some(a), Some(b)) = (clients[2 * p].clone(), clients[2 * p + 1].clone()) else {
            continue;
        };
        for (from, to) in [(a.clone(), b.clone()), (b, a)] {
            let pace = (opts.rate > 0.0).then(|| {
                let period = Duration::from_secs_f64(lane_count as f64 / opts.rate);
                Pace {
                    next: start + period.mul_f64(lanes.len() as f64 / lane_count as f64),
                    period,
                }
            });
            let lane = Rc::new(Lane {
                tokens: if pace.is_some() {
                    shared.clone()
                } else {
                    channel::bounded(opts.window)
                },
                sent: Cell::new(0),
            });
            lanes.push(lane.clone());
            tasks.push(spawn(relay_receiver(
                to.clone(),
                p,
                lane.clone(),
                stats.clone(),
                end,
                drain_until,
            )));
            tasks.push(spawn(relay_sender(
                from,
                to.name.clone(),
                lane,
                end,
                opts.window,
                pace,
            )));
        }
    }
    for task in tasks {
        task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = ctx.sample();
    let own = own_cpu() - own_before;

    let sent: u64 = lanes.iter().map(|l| l.sent.get()).sum();
    let received = stats.received.get();
    let in_window = stats.in_window.get();
    let rate = in_window as f64 / opts.duration.as_secs_f64();
    let server_cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu - b.cpu),
        _ => None,
    };
    // A lane's receiver stops at the end only once the shared tokens are
    // all back, so every lane sees what is in flight arrive.
    drop(shared);
    let cpu_us_per_msg = server_cpu
        .filter(|_| received > 0)
        .map(|cpu| round(cpu * 1e6 / received as f64, 2));
    let mut latencies = std::mem::take(&mut *stats.latencies.borrow_mut());
    let latency = {
        latencies.sort_unstable();
        let us = |ns: u64| round(ns as f64 / 1e3, 1);
        json!({
            "n": latencies.len(),
            "p50_us": us(percentile(&latencies, 50.0)),
            "p99_us": us(percentile(&latencies, 99.0)),
            "max_us": us(latencies.last().copied().unwrap_or(0)),
        })
    };
    let per_pair = stats.per_pair.borrow();
    let fairness = |ps: &[usize]| -> Value {
        let mut counts: Vec<u64> = ps.iter().map(|&p| per_pair[p]).collect();
        counts.sort_unstable();
        let min = counts.first().copied().unwrap_or(0);
        let median = percentile(&counts, 50.0);
        json!({
            "pairs": counts.len(),
            "min": min,
            "median": median,
            "max": counts.last().copied().unwrap_or(0),
            "ratio": if median > 0 { round(min as f64 / median as f64, 3) } else { 0.0 },
        })
    };
    let ws_pairs: Vec<usize> = active
        .iter()
        .copied()
        .filter(|&p| !ctx.polling(2 * p) && !ctx.polling(2 * p + 1))
        .collect();
    let polling_pairs = active.len() - ws_pairs.len();
    let all = fairness(&active);
    let lost = sent.saturating_sub(received);
    let ok = joined.failures == 0 && active.len() == pairs && lost == 0;
    let paced = if opts.rate > 0.0 {
        format!(" paced at {:.0}/s", opts.rate)
    } else {
        String::new()
    };
    println!(
        "relay{paced}: {} pairs ({polling_pairs} with a polling client), {:.1}s: {rate:.0} msgs/s relayed, {received}/{sent} received; \
         latency p50 {} us, p99 {} us; per pair min {} / median {} (ratio {}); server CPU {} s = {} us/msg; loadgen CPU {:.0}%",
        active.len(),
        opts.duration.as_secs_f64(),
        latency["p50_us"],
        latency["p99_us"],
        all["min"],
        all["median"],
        all["ratio"],
        server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        cpu_us_per_msg.map_or("?".into(), |c| c.to_string()),
        own / elapsed * 100.0,
    );
    let result = json!({
        "scenario": "relay",
        "pairs": pairs,
        "pairs_in_call": active.len(),
        "polling_pairs": polling_pairs,
        "window": opts.window,
        "rate": (opts.rate > 0.0).then_some(opts.rate),
        "duration_s": opts.duration.as_secs_f64(),
        "sent": sent,
        "received": received,
        "lost": lost,
        "msgs_per_s": round(rate, 1),
        "latency": latency,
        "fairness": all,
        "fairness_websocket": fairness(&ws_pairs),
        "server_cpu_s": server_cpu.map(|c| round(c, 3)),
        "cpu_us_per_msg": cpu_us_per_msg,
        "loadgen_cpu_share": round(own / elapsed, 3),
        "ok": ok,
    });
    (result, ok)
}
