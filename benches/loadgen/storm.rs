//! reconnect-storm: registered clients drop their TCP and come back at once.

use super::*;

pub(crate) async fn reconnect_storm(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let n = opts.count;
    eprintln!("loadgen: reconnect-storm: connecting {n} clients");
    let users_before = users_online(&ctx.net).await.unwrap_or(0);
    let joined = join_many(&ctx, n, false).await;
    let present: Vec<usize> = (0..n).filter(|&i| joined.clients[i].is_some()).collect();
    Timer::after(Duration::from_secs(1)).await;
    let before = ctx.sample();
    eprintln!(
        "loadgen: reconnect-storm: {} registered; dropping them all",
        present.len()
    );
    // Reset every connection at once, then all come back at once.
    drop(joined.clients);
    let start = Instant::now();
    let retries = Rc::new(Cell::new(0usize));
    let tasks: Vec<Task<Result<(u64, Client), String>>> = present
        .iter()
        .map(|&i| {
            let (ctx, retries) = (ctx.clone(), retries.clone());
            spawn(async move {
                let mut attempt = 0;
                loop {
                    match join(&ctx, i, false).await {
                        Ok(client) => return Ok((start.elapsed().as_nanos() as u64, client)),
                        Err(error) if attempt < ctx.opts.retries => {
                            tally(format!("storm retry after: {error}"));
                            retries.set(retries.get() + 1);
                            attempt += 1;
                            Timer::after(Duration::from_millis(200)).await;
                        }
                        Err(error) => return Err(error),
                    }
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut back = Vec::with_capacity(n);
    let mut failures = 0;
    for task in tasks {
        match task.await {
            Ok((ns, client)) => {
                times.push(ns);
                back.push(client);
            }
            Err(error) => {
                failures += 1;
                tally(format!("storm gave up: {error}"));
            }
        }
    }
    let total_ns = times.iter().copied().max().unwrap_or(0);
    let after = ctx.sample();
    let users = users_online(&ctx.net).await;
    let users_ok = matches!(users, Ok(u) if u == users_before + n as u64);
    let ok = joined.failures == 0 && failures == 0 && users_ok;
    let per_client = summary_ms(&mut times);
    let per_client_buckets = buckets_ms(&times);
    println!(
        "reconnect-storm: {}/{} back in {:.0} ms (per client p50 {} ms, p99 {} ms, max {} ms), {} retries, {failures} gave up; GET /users {}",
        back.len(),
        present.len(),
        ms(total_ns),
        per_client["p50_ms"],
        per_client["p99_ms"],
        per_client["max_ms"],
        retries.get(),
        users.as_ref().map_or_else(|e| e.clone(), |u| u.to_string()),
    );
    let result = json!({
        "scenario": "reconnect-storm",
        "clients": n,
        "join_failures": joined.failures,
        "reconnected": back.len(),
        "users_before": users_before,
        "gave_up": failures,
        "retries": retries.get(),
        "total_ms": ms(total_ns),
        "per_client": per_client,
        "per_client_buckets_ms": per_client_buckets,
        "users_online": users.as_ref().ok(),
        "users_error": users.as_ref().err(),
        "server_cpu_s": match (before, after) { (Some(b), Some(a)) => Some(round(a.cpu - b.cpu, 2)), _ => None },
        "ok": ok,
    });
    (result, ok)
}
