//! hold: many clients connect, register and stay through a ping cycle.

use super::*;

pub(crate) async fn hold(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let n = opts.count;
    let users_before = users_online(&ctx.net).await.unwrap_or(0);
    let before = ctx.sample();
    eprintln!(
        "loadgen: hold: connecting {n} clients, {} at a time",
        opts.concurrency
    );
    let start = Instant::now();
    let mut joined = join_many(&ctx, n, false).await;
    let connect_s = start.elapsed().as_secs_f64();
    let connected = joined.clients.iter().flatten().count();
    let rss_connected = ctx.sample();

    let interval = opts.ping_interval.unwrap_or_else(|| {
        joined
            .clients
            .iter()
            .flatten()
            .map(|c| c.ping_interval)
            .next()
            .unwrap_or(Duration::from_secs(25))
    });
    // At least one full ping cycle, with a margin for the answer.
    let held = opts.hold.max(interval + Duration::from_secs(3));
    eprintln!(
        "loadgen: hold: {connected} connected in {connect_s:.1}s; holding {:.0}s (ping interval {:.0}s)",
        held.as_secs_f64(),
        interval.as_secs_f64()
    );
    Timer::after(held).await;
    let after = ctx.sample();

    let clients: Rc<Vec<Client>> = Rc::new(joined.clients.drain(..).flatten().collect());
    let dropped = clients.iter().filter(|c| c.closed().is_some()).count();
    for client in clients.iter() {
        if let Some(why) = client.closed() {
            tally(format!("dropped: {why}"));
        }
    }
    let unpinged = clients.iter().filter(|c| c.state.pings.get() == 0).count();
    let min_pings = clients
        .iter()
        .map(|c| c.state.pings.get())
        .min()
        .unwrap_or(0);

    // Each client must still answer: register again (same name, same
    // socket) and get user_registered back.
    let silent = Rc::new(Cell::new(0usize));
    let next = Rc::new(Cell::new(0usize));
    let workers: Vec<Task<()>> = (0..opts.concurrency.min(clients.len()))
        .map(|_| {
            let (clients, silent, next, timeout) =
                (clients.clone(), silent.clone(), next.clone(), opts.timeout);
            spawn(async move {
                loop {
                    let i = next.get();
                    if i >= clients.len() {
                        break;
                    }
                    next.set(i + 1);
                    if let Err(fail) = clients[i].register(timeout).await {
                        silent.set(silent.get() + 1);
                        tally(format!("liveness: {}", fail.kind()));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
    let users = users_online(&ctx.net).await;
    let users_ok = matches!(users, Ok(u) if u == users_before + n as u64);
    let ok = joined.failures == 0 && dropped == 0 && unpinged == 0 && silent.get() == 0 && users_ok;

    let mut setup = joined.setup_ns;
    let bytes_per_client = match (before, after) {
        (Some(b), Some(a)) if connected > 0 => {
            Some(((a.rss as f64 - b.rss as f64) / connected as f64).round())
        }
        _ => None,
    };
    let result = json!({
        "scenario": "hold",
        "clients": n,
        "connected": connected,
        "join_failures": joined.failures,
        "polling_clients": clients.iter().filter(|c| c.polling).count(),
        "connect_s": round(connect_s, 3),
        "connect_rate": round(connected as f64 / connect_s, 1),
        "join_latency": summary_ms(&mut setup),
        "join_latency_buckets_ms": buckets_ms(&setup),
        "held_s": held.as_secs_f64(),
        "ping_interval_s": interval.as_secs_f64(),
        "dropped": dropped,
        "unpinged": unpinged,
        "min_pings": min_pings,
        "not_answering": silent.get(),
        "users_before": users_before,
        "users_online": users.as_ref().ok(),
        "users_error": users.as_ref().err(),
        "rss_before": before.map(|s| s.rss),
        "rss_connected": rss_connected.map(|s| s.rss),
        "rss_after": after.map(|s| s.rss),
        "bytes_per_client": bytes_per_client,
        "server_cpu_s": match (before, after) { (Some(b), Some(a)) => Some(round(a.cpu - b.cpu, 2)), _ => None },
        "ok": ok,
    });
    println!(
        "hold: {connected}/{n} clients in {connect_s:.1}s ({:.0}/s); held {:.0}s: {dropped} dropped, \
         {} not answering, {unpinged} never pinged; GET /users {}; server RSS {} -> {} ({} B/client)",
        connected as f64 / connect_s,
        held.as_secs_f64(),
        silent.get(),
        users.map_or_else(|e| e, |u| u.to_string()),
        mib(before.map(|s| s.rss)),
        mib(after.map(|s| s.rss)),
        bytes_per_client.map_or("?".into(), |b| format!("{b:.0}")),
    );
    (result, ok)
}

pub(crate) fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}
