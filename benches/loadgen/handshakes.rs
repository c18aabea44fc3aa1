//! handshakes: connections that each do one cheap request and go, flat out:
//! with `--tls`, what a full TLS handshake costs the server.

use super::*;

/// The request each connection makes: the seed's health JSON, which both
/// servers answer from a few counters.
const TARGET: &str = "/";

#[derive(Default)]
struct Tally {
    completed: Cell<u64>,
    errors: Cell<u64>,
    connect_ns: RefCell<Vec<u64>>,
    total_ns: RefCell<Vec<u64>>,
}

/// One connection: TCP connect (and the TLS handshake), `GET /`, the
/// whole reply, then the connection is dropped (a reset, as every client
/// of the generator closes). Returns how long the connect took.
async fn one(net: &Net) -> Result<Duration, String> {
    let start = Instant::now();
    let stream = net.connect().await.map_err(|e| format!("connect: {e}"))?;
    let connected = start.elapsed();
    let mut http = Http {
        stream,
        buf: Vec::new(),
    };
    let reply = http
        .request(net, "GET", TARGET, b"", true)
        .await
        .map_err(|e| format!("GET {TARGET}: {e}"))?;
    if reply.status != 200 {
        return Err(format!("GET {TARGET} answered {}", reply.status));
    }
    Ok(connected)
}

async fn worker(ctx: Rc<Ctx>, tally_: Rc<Tally>, end: Instant) {
    while Instant::now() < end {
        let start = Instant::now();
        match within(ctx.opts.timeout, "connection", one(&ctx.net)).await {
            Ok(connected) => {
                tally_.completed.set(tally_.completed.get() + 1);
                tally_
                    .connect_ns
                    .borrow_mut()
                    .push(connected.as_nanos() as u64);
                tally_
                    .total_ns
                    .borrow_mut()
                    .push(start.elapsed().as_nanos() as u64);
            }
            Err(error) => {
                tally_.errors.set(tally_.errors.get() + 1);
                tally(format!("handshakes: {error}"));
            }
        }
    }
}

pub(crate) async fn handshakes(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let workers = opts.count;
    eprintln!(
        "loadgen: handshakes: {workers} workers for {:.0}s{}",
        opts.duration.as_secs_f64(),
        if opts.tls { ", TLS" } else { ", plain TCP" }
    );
    let stats = Rc::new(Tally::default());
    let before = ctx.sample();
    let own_before = own_cpu();
    let start = Instant::now();
    let end = start + opts.duration;
    let tasks: Vec<Task<()>> = (0..workers)
        .map(|_| spawn(worker(ctx.clone(), stats.clone(), end)))
        .collect();
    for task in tasks {
        task.await;
    }
    // Connections still open at the end finish first: the CPU figures and
    // the count cover the same connections.
    let elapsed = start.elapsed().as_secs_f64();
    let after = ctx.sample();
    let own = own_cpu() - own_before;

    let completed = stats.completed.get();
    let errors = stats.errors.get();
    let rate = completed as f64 / elapsed;
    let server_cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu - b.cpu),
        _ => None,
    };
    let us_per = server_cpu
        .filter(|_| completed > 0)
        .map(|cpu| cpu * 1e6 / completed as f64);
    let per_core = us_per.filter(|us| *us > 0.0).map(|us| round(1e6 / us, 0));
    let connect = summary_ms(&mut stats.connect_ns.borrow_mut());
    let total = summary_ms(&mut stats.total_ns.borrow_mut());
    let ok = completed > 0 && errors == 0;
    println!(
        "handshakes: {workers} workers, {}, {elapsed:.1}s: {completed} connections ({rate:.0}/s), {errors} errors; \
         connect p50 {} ms, p99 {} ms; server CPU {} s = {} us per connection ({}/s per core); \
         server CPU {:.0}%, loadgen CPU {:.0}%",
        if opts.tls { "TLS" } else { "plain" },
        connect["p50_ms"],
        connect["p99_ms"],
        server_cpu.map_or("?".into(), |c| format!("{c:.2}")),
        us_per.map_or("?".into(), |c| format!("{c:.1}")),
        per_core.map_or("?".into(), |c| c.to_string()),
        server_cpu.map_or(0.0, |c| c / elapsed * 100.0),
        own / elapsed * 100.0,
    );
    let result = json!({
        "scenario": "handshakes",
        "workers": workers,
        "duration_s": opts.duration.as_secs_f64(),
        "elapsed_s": round(elapsed, 3),
        "request": format!("GET {TARGET}"),
        "completed": completed,
        "errors": errors,
        "handshakes_per_s": round(rate, 1),
        "connect": connect,
        "connection": total,
        "server_cpu_s": server_cpu.map(|c| round(c, 3)),
        "server_cpu_share": server_cpu.map(|c| round(c / elapsed, 3)),
        "server_cpu_us_per_handshake": us_per.map(|us| round(us, 2)),
        "server_handshakes_per_core_s": per_core,
        "loadgen_cpu_share": round(own / elapsed, 3),
        "ok": ok,
    });
    (result, ok)
}
