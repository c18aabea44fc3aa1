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

/// recovery-storm: N registered clients, in N/2 answered calls, all lose
/// their TCP at once and come back at once with their socket's private id
/// (Socket.IO connection state recovery). Measured: the time until every
/// socket is recovered (the same id in the CONNECT answer), and that the
/// calls are all still up, each relaying a candidate both ways.
pub(crate) async fn recovery_storm(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let n = opts.count - opts.count % 2;
    let timeout = opts.timeout;
    eprintln!(
        "loadgen: recovery-storm: connecting {n} clients in {} calls",
        n / 2
    );
    let joined = join_many(&ctx, n, false).await;
    let clients: Vec<Client> = joined.clients.into_iter().flatten().collect();
    if clients.len() != n || clients.iter().any(|c| c.pid.is_none()) {
        let why = if clients.len() != n {
            format!("{} of {n} joined", clients.len())
        } else {
            "the server offers no recovery (no pid)".to_owned()
        };
        eprintln!("loadgen: recovery-storm: {why}");
        return (
            json!({ "scenario": "recovery-storm", "clients": n, "error": why, "ok": false }),
            false,
        );
    }
    for client in &clients {
        client.drain();
    }
    let mut setups = Vec::new();
    for pair in clients.chunks(2) {
        setups.push(calls::ring(&ctx, &pair[0], &pair[1]));
    }
    let mut call_failures = 0;
    for setup in setups {
        if setup.await.is_err() {
            call_failures += 1;
        }
    }
    Timer::after(Duration::from_millis(500)).await;
    let before = ctx.sample();
    let lost: Vec<(String, bool, String, String)> = clients
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.polling,
                c.sid.clone(),
                c.pid.clone().unwrap_or_default(),
            )
        })
        .collect();
    eprintln!("loadgen: recovery-storm: {n} clients in calls; dropping them all");
    drop(clients);
    let start = Instant::now();
    let tasks: Vec<Task<Result<(u64, Client), String>>> = lost
        .into_iter()
        .enumerate()
        .map(|(i, (name, polling, sid, pid))| {
            let ctx = ctx.clone();
            spawn(async move {
                let net = ctx.net_for(i);
                let client = within(
                    timeout,
                    "recover",
                    Client::connect_as(net, name, polling, false, Some(&pid)),
                )
                .await?;
                if client.sid != sid {
                    return Err(format!("not recovered: {} for {sid}", client.sid));
                }
                Ok((start.elapsed().as_nanos() as u64, client))
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
                back.push(Some(client));
            }
            Err(error) => {
                failures += 1;
                back.push(None);
                tally(format!("recovery failed: {error}"));
            }
        }
    }
    let total_ns = times.iter().copied().max().unwrap_or(0);
    let after = ctx.sample();
    // Every call is still up: a candidate each way in every pair.
    let mut kept = 0;
    for pair in back.chunks(2) {
        let [Some(a), Some(b)] = pair else { continue };
        let one = async {
            a.send(&[&calls::candidate_packet(&a.name, &b.name, 1, now_ns())])
                .await?;
            b.expect_skipping(
                "ice_candidate",
                timeout,
                &["peer_reconnecting", "peer_reconnected"],
            )
            .await?;
            b.send(&[&calls::candidate_packet(&b.name, &a.name, 2, now_ns())])
                .await?;
            a.expect_skipping(
                "ice_candidate",
                timeout,
                &["peer_reconnecting", "peer_reconnected"],
            )
            .await?;
            Ok::<(), Fail>(())
        };
        match one.await {
            Ok(()) => kept += 1,
            Err(fail) => tally(format!("call lost: {}", fail.kind())),
        }
    }
    let per_client = summary_ms(&mut times);
    let ok = joined.failures == 0 && call_failures == 0 && failures == 0 && kept == n / 2;
    println!(
        "recovery-storm: {}/{n} recovered in {:.0} ms (per client p50 {} ms, p99 {} ms), {kept}/{} calls kept",
        n - failures,
        ms(total_ns),
        per_client["p50_ms"],
        per_client["p99_ms"],
        n / 2,
    );
    let result = json!({
        "scenario": "recovery-storm",
        "clients": n,
        "recovered": n - failures,
        "failures": failures,
        "calls": n / 2,
        "calls_kept": kept,
        "total_ms": ms(total_ns),
        "per_client": per_client,
        "server_cpu_s": match (before, after) { (Some(b), Some(a)) => Some(round(a.cpu - b.cpu, 2)), _ => None },
        "ok": ok,
    });
    (result, ok)
}
