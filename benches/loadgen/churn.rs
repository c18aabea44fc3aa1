//! churn: N names, one after another (`--concurrency` at a time), connect,
//! register, make one call and leave. What the server keeps afterwards must
//! follow the users online, not every name it has seen: its RSS is read
//! before, at the end, and after `--settle` (its timers sweep what the
//! names left behind).

use super::*;

pub(crate) async fn churn(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let n = opts.count;
    let users_before = users_online(&ctx.net).await.unwrap_or(0);
    // A first round of a few hundred names grows the server's pools to
    // their working size; what comes after is what the names leave.
    let warmup = (n / 100).clamp(1, 500);
    eprintln!("loadgen: churn: {warmup} names to warm up, then {n}");
    let mut failures = names(&ctx, 0, warmup).await;
    settle(&ctx, users_before).await;
    let before = ctx.sample();
    let started = Instant::now();
    failures += names(&ctx, warmup, warmup + n).await;
    let churn_s = started.elapsed().as_secs_f64();
    let at_end = ctx.sample();
    let online = settle(&ctx, users_before).await;
    Timer::after(opts.settle).await;
    let after = ctx.sample();
    let rss = |s: &Option<Sample>| s.as_ref().map(|s| s.rss / 1024);
    let growth = rss(&after)
        .zip(rss(&before))
        .map(|(a, b)| a as i64 - b as i64);
    let ok = failures == 0 && online == Some(users_before);
    eprintln!(
        "loadgen: churn: {n} names in {churn_s:.1}s; RSS {:?} kB before, {:?} at the end, {:?} after {:?} ({:?} kB more)",
        rss(&before),
        rss(&at_end),
        rss(&after),
        opts.settle,
        growth
    );
    let result = json!({
        "scenario": "churn",
        "names": n,
        "churn_s": round(churn_s, 2),
        "names_per_s": round(n as f64 / churn_s, 0),
        "failures": failures,
        "rss_before_kib": rss(&before),
        "rss_at_end_kib": rss(&at_end),
        "rss_after_kib": rss(&after),
        "rss_growth_kib": growth,
        "settle_s": opts.settle.as_secs_f64(),
        "users_online_after": online,
        "ok": ok,
    });
    (result, ok)
}

/// Names `from..to` go through their cycle, `--concurrency` at a time; how
/// many failed.
async fn names(ctx: &Rc<Ctx>, from: usize, to: usize) -> usize {
    let failures = Rc::new(Cell::new(0usize));
    let next = Rc::new(Cell::new(from));
    let workers: Vec<Task<()>> = (0..ctx.opts.concurrency.min(to - from))
        .map(|_| {
            let (ctx, failures, next) = (ctx.clone(), failures.clone(), next.clone());
            spawn(async move {
                loop {
                    let i = next.get();
                    if i >= to {
                        break;
                    }
                    next.set(i + 1);
                    if let Err(error) = cycle(&ctx, i).await {
                        failures.set(failures.get() + 1);
                        tally(format!("churn: {error}"));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
    failures.get()
}

/// One name: connect, register, call someone absent, leave.
async fn cycle(ctx: &Ctx, i: usize) -> Result<(), String> {
    let timeout = ctx.opts.timeout;
    let client = Client::connect(ctx.net_for(0), ctx.name(i), ctx.polling(i), false)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    client
        .register(timeout)
        .await
        .map_err(|f| format!("register: {}", f.kind()))?;
    let absent = format!("{}absent", ctx.opts.prefix);
    client
        .emit(
            "make_call",
            json!({"to": absent, "offer": {"type": "offer", "sdp": "v=0"}}),
        )
        .await
        .map_err(|f| f.kind())?;
    client
        .expect("call_failed", timeout)
        .await
        .map_err(|fail| format!("make_call: {}", fail.kind()))?;
    // Dropping the client resets its connection: the user leaves.
    Ok(())
}

/// Waits (up to the timeout) until the server lists as many users as
/// before; how many it lists then.
async fn settle(ctx: &Ctx, users_before: u64) -> Option<u64> {
    let deadline = Instant::now() + ctx.opts.timeout;
    loop {
        let online = users_online(&ctx.net).await.ok();
        if online == Some(users_before) || Instant::now() >= deadline {
            return online;
        }
        Timer::after(Duration::from_millis(100)).await;
    }
}
