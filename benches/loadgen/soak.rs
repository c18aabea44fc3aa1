//! soak: clients churn for a long time while the server is sampled.

use super::*;

thread_local! {
    pub(crate) static RNG: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

pub(crate) fn seed_rng(seed: u64) {
    RNG.with(|r| r.set(seed));
}

/// splitmix64: enough randomness for choosing what a client does next.
pub(crate) fn rand_u64() -> u64 {
    RNG.with(|r| {
        let next = r.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        r.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Uniform in [0, 1).
pub(crate) fn rand_f64() -> f64 {
    (rand_u64() >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn chance(p: f64) -> bool {
    rand_f64() < p
}

/// Uniform in [0, max].
pub(crate) fn rand_duration(max: Duration) -> Duration {
    max.mul_f64(rand_f64())
}

/// Uniform in 1..=max (0 when max is 0).
pub(crate) fn rand_count(max: usize) -> usize {
    if max == 0 {
        0
    } else {
        1 + (rand_u64() % max as u64) as usize
    }
}

/// Soak clients come in pairs: the two ends of each call.
pub(crate) fn soak_pairs(count: usize) -> usize {
    count.div_ceil(2)
}

/// What a call is made to do. Each exercises another way for a call, and
/// its state in the server, to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Answered, ICE both ways, a short talk, then either side hangs up.
    Answered,
    /// The callee declines the ringing call.
    Declined,
    /// The caller hangs up while it rings (after some early ICE).
    HungUpRinging,
    /// Answered, then one side's connection goes away mid-call.
    DroppedMidCall,
    /// Nobody answers: the server's ring timeout ends it.
    RangOut,
}

impl Plan {
    const ALL: [Plan; 5] = [
        Plan::Answered,
        Plan::Declined,
        Plan::HungUpRinging,
        Plan::DroppedMidCall,
        Plan::RangOut,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Plan::Answered => "answered",
            Plan::Declined => "declined",
            Plan::HungUpRinging => "hung_up_ringing",
            Plan::DroppedMidCall => "dropped_mid_call",
            Plan::RangOut => "rang_out",
        }
    }

    pub(crate) fn pick() -> Plan {
        let x = rand_f64();
        if x < 0.70 {
            Plan::Answered
        } else if x < 0.80 {
            Plan::Declined
        } else if x < 0.90 {
            Plan::HungUpRinging
        } else if x < 0.99 {
            Plan::DroppedMidCall
        } else {
            Plan::RangOut
        }
    }

    pub(crate) fn index(self) -> usize {
        Plan::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// Running counts shared by the soak's clients and its sampler.
#[derive(Default)]
pub(crate) struct SoakStats {
    /// Clients connected and registered right now.
    pub(crate) live: Cell<usize>,
    /// Sessions opened (connect + register succeeded).
    pub(crate) connects: Cell<u64>,
    /// Connect + register attempts that failed.
    pub(crate) join_errors: Cell<u64>,
    /// Calls that went as planned, all plans together, and per plan.
    pub(crate) calls: Cell<u64>,
    pub(crate) by_plan: RefCell<[u64; 5]>,
    /// Calls that did not, and how many of those were timeouts.
    pub(crate) call_errors: Cell<u64>,
    pub(crate) timeouts: Cell<u64>,
    /// How sessions ended: politely, or by dropping the TCP connection.
    pub(crate) polite: Cell<u64>,
    pub(crate) dropped: Cell<u64>,
    /// Polite closes the server did not finish within the timeout.
    pub(crate) close_errors: Cell<u64>,
    /// Call setup (make_call sent → call_answered received), since the
    /// last sample and in all.
    pub(crate) setup_recent: RefCell<Vec<u64>>,
    pub(crate) setup_all: RefCell<Vec<u64>>,
    pub(crate) join_all: RefCell<Vec<u64>>,
}

impl SoakStats {
    pub(crate) fn errors(&self) -> u64 {
        self.join_errors.get() + self.call_errors.get() + self.close_errors.get()
    }
}

/// A connected soak client; counts itself out of `live` when dropped
/// (which resets its TCP connections).
pub(crate) struct SoakClient {
    pub(crate) client: Client,
    pub(crate) stats: Rc<SoakStats>,
}

impl Drop for SoakClient {
    fn drop(&mut self) {
        self.stats.live.set(self.stats.live.get() - 1);
    }
}

impl std::ops::Deref for SoakClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Events a soak client may receive outside a call step: signalbox sends
/// `ice_servers` after each registration.
pub(crate) const SOAK_BENIGN: &[&str] = &["ice_servers"];

impl Client {
    /// Drops queued events, tallying any but the benign ones.
    pub(crate) fn drain_idle(&self) {
        while let Ok(packet) = self.events.try_recv() {
            match event_name(&packet) {
                Some(name) if SOAK_BENIGN.contains(&name) => {}
                Some(name) => tally(format!("soak: unexpected {name} while idle")),
                None => tally("soak: unexpected packet while idle"),
            }
        }
    }

    pub(crate) async fn soak_expect(&self, event: &str, timeout: Duration) -> Result<String, Fail> {
        self.expect_skipping(event, timeout, SOAK_BENIGN).await
    }
}

/// Connects and registers one soak client, at most `--concurrency` setting
/// up at once.
pub(crate) async fn soak_join(
    ctx: &Ctx,
    stats: &Rc<SoakStats>,
    gate: &smol::lock::Semaphore,
    name: String,
) -> Result<SoakClient, String> {
    let polling = chance(ctx.opts.polling_share);
    let _permit = gate.acquire().await;
    let start = Instant::now();
    let timeout = ctx.opts.timeout;
    let client = within(timeout, "connect and register", async {
        let client = Client::connect(&ctx.net, name, polling, true).await?;
        client
            .register(timeout)
            .await
            .map_err(|f| format!("register: {}", f.kind()))?;
        Ok(client)
    })
    .await?;
    stats
        .join_all
        .borrow_mut()
        .push(start.elapsed().as_nanos() as u64);
    stats.connects.set(stats.connects.get() + 1);
    stats.live.set(stats.live.get() + 1);
    Ok(SoakClient {
        client,
        stats: stats.clone(),
    })
}

/// Sends `k` ICE candidates each way between `a` and `b` and waits for
/// them all to arrive.
pub(crate) async fn soak_ice(
    a: &Client,
    b: &Client,
    k: usize,
    timeout: Duration,
) -> Result<(), Fail> {
    for s in 0..k as u64 {
        a.send(&[&candidate_packet(&a.name, &b.name, s, now_ns())])
            .await?;
        b.send(&[&candidate_packet(&b.name, &a.name, s, now_ns())])
            .await?;
    }
    for _ in 0..k {
        b.soak_expect("ice_candidate", timeout).await?;
    }
    for _ in 0..k {
        a.soak_expect("ice_candidate", timeout).await?;
    }
    Ok(())
}

/// make_call → incoming_call.
pub(crate) async fn soak_ring(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<(), Fail> {
    soak_sdp(ctx, caller, callee, ("make_call", "offer"), "incoming_call").await
}

/// answer_call → call_answered.
pub(crate) async fn soak_answer(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<(), Fail> {
    soak_sdp(
        ctx,
        callee,
        caller,
        ("answer_call", "answer"),
        "call_answered",
    )
    .await
}

/// `event` from `from` to `to` with an SDP of `kind` (`offer`, `answer`),
/// then `reply` at `to`.
async fn soak_sdp(
    ctx: &Ctx,
    from: &Client,
    to: &Client,
    (event, kind): (&str, &str),
    reply: &str,
) -> Result<(), Fail> {
    let payload = json!({"to": to.name, "from": from.name, kind: {"type": kind, "sdp": ctx.sdp}});
    from.emit(event, payload).await?;
    to.soak_expect(reply, ctx.opts.timeout).await?;
    Ok(())
}

/// Ends a soak client's session: politely (namespace disconnect, then the
/// Engine.IO close, and the server closes its side) or by resetting the
/// TCP connection, as a device that loses power or network does.
pub(crate) async fn soak_leave(ctx: &Ctx, stats: &SoakStats, client: SoakClient, polite: bool) {
    if polite {
        stats.polite.set(stats.polite.get() + 1);
        if let Err(fail) = client.close_politely(ctx.opts.timeout).await {
            stats.close_errors.set(stats.close_errors.get() + 1);
            tally(format!("soak: polite close: {}", fail.kind()));
        }
    } else {
        stats.dropped.set(stats.dropped.get() + 1);
    }
    drop(client);
}

/// One call between the two clients of a pair, following `plan`. The
/// caller is `pair[0]`. A client that leaves during the call (the
/// DroppedMidCall plan) is taken out of its slot.
pub(crate) async fn soak_call(
    ctx: &Ctx,
    stats: &Rc<SoakStats>,
    pair: &mut [Option<SoakClient>; 2],
    plan: Plan,
) -> Result<(), Fail> {
    let timeout = ctx.opts.timeout;
    let [Some(caller), Some(callee)] = &*pair else {
        return Err(Fail::Closed("pair not connected".into()));
    };
    let ice = rand_count(ctx.opts.ice);
    match plan {
        Plan::Answered => {
            let start = Instant::now();
            soak_ring(ctx, caller, callee).await?;
            soak_answer(ctx, caller, callee).await?;
            let setup = start.elapsed().as_nanos() as u64;
            stats.setup_recent.borrow_mut().push(setup);
            soak_ice(caller, callee, ice, timeout).await?;
            Timer::after(rand_duration(ctx.opts.talk)).await;
            let (hanger, other) = if chance(0.5) {
                (caller, callee)
            } else {
                (callee, caller)
            };
            hanger
                .emit("end_call", json!({"to": other.name, "from": hanger.name}))
                .await?;
            other.soak_expect("call_ended", timeout).await?;
        }
        Plan::Declined => {
            soak_ring(ctx, caller, callee).await?;
            Timer::after(rand_duration(Duration::from_millis(500))).await;
            callee
                .emit(
                    "decline_call",
                    json!({"to": caller.name, "from": callee.name}),
                )
                .await?;
            caller.soak_expect("call_declined", timeout).await?;
        }
        Plan::HungUpRinging => {
            soak_ring(ctx, caller, callee).await?;
            // Trickle ICE starts before the answer.
            let early = rand_count(ice.min(2));
            for s in 0..early as u64 {
                caller
                    .send(&[&candidate_packet(&caller.name, &callee.name, s, now_ns())])
                    .await?;
            }
            for _ in 0..early {
                callee.soak_expect("ice_candidate", timeout).await?;
            }
            Timer::after(rand_duration(Duration::from_millis(500))).await;
            caller
                .emit("end_call", json!({"to": callee.name, "from": caller.name}))
                .await?;
            callee.soak_expect("call_ended", timeout).await?;
        }
        Plan::RangOut => {
            soak_ring(ctx, caller, callee).await?;
            let wait = ctx.opts.ring_timeout + timeout;
            caller.soak_expect("call_timeout", wait).await?;
            callee.soak_expect("call_timeout", timeout).await?;
        }
        Plan::DroppedMidCall => {
            let start = Instant::now();
            soak_ring(ctx, caller, callee).await?;
            soak_answer(ctx, caller, callee).await?;
            let setup = start.elapsed().as_nanos() as u64;
            stats.setup_recent.borrow_mut().push(setup);
            soak_ice(caller, callee, ice, timeout).await?;
            Timer::after(rand_duration(ctx.opts.talk)).await;
            let leaver = usize::from(chance(0.5));
            let gone = pair[leaver].take().expect("both connected");
            // A polling client that vanishes between two polls is noticed
            // only at the ping timeout (45 s): mid-call it leaves politely.
            let polite = gone.polling || chance(0.5);
            soak_leave(ctx, stats, gone, polite).await;
            let Some(survivor) = &pair[1 - leaver] else {
                return Err(Fail::Closed("pair not connected".into()));
            };
            let packet = survivor.soak_expect("call_ended", timeout).await?;
            let reason = event_payload(&packet)
                .and_then(|p| p["reason"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if reason != "disconnected" {
                tally(format!(
                    "soak: call_ended reason {reason:?} after the peer left"
                ));
            }
        }
    }
    Ok(())
}

/// One pair of soak clients, over and over until `stop` closes: both
/// connect and register, idle a while, make one call, leave, wait a little.
pub(crate) async fn soak_pair(
    ctx: Rc<Ctx>,
    stats: Rc<SoakStats>,
    gate: Rc<smol::lock::Semaphore>,
    index: usize,
    stop: channel::Receiver<()>,
) {
    let opts = &ctx.opts;
    // Sleeps end early when the soak stops (the channel closes).
    let sleep_until = |at: Instant| {
        let stop = stop.clone();
        future::or(
            async move {
                Timer::at(at).await;
            },
            async move {
                let _ = stop.recv().await;
            },
        )
    };
    let running = || !stop.is_closed();
    // Spread the first connections over the first second.
    sleep_until(Instant::now() + rand_duration(Duration::from_secs(1))).await;
    let mut generation = 0u64;
    while running() {
        generation += 1;
        // Half the sessions reuse the client's own name (a device coming
        // back), half take a name never seen before (names must not pile
        // up in the server).
        let names = [2 * index, 2 * index + 1].map(|i| {
            if chance(0.5) {
                format!("{}{i}", opts.prefix)
            } else {
                format!("{}{i}.{generation}", opts.prefix)
            }
        });
        let [a, b] = names;
        let (a, b) = future::zip(
            soak_join(&ctx, &stats, &gate, a),
            soak_join(&ctx, &stats, &gate, b),
        )
        .await;
        let mut pair = [None, None];
        for (slot, joined) in pair.iter_mut().zip([a, b]) {
            match joined {
                Ok(client) => *slot = Some(client),
                Err(error) => {
                    stats.join_errors.set(stats.join_errors.get() + 1);
                    tally(format!("soak: join: {error}"));
                }
            }
        }
        if pair.iter().all(Option::is_some) {
            sleep_until(Instant::now() + rand_duration(opts.dwell)).await;
            for client in pair.iter().flatten() {
                client.drain_idle();
            }
            if running() {
                if chance(0.5) {
                    pair.swap(0, 1);
                }
                let plan = Plan::pick();
                match soak_call(&ctx, &stats, &mut pair, plan).await {
                    Ok(()) => {
                        stats.calls.set(stats.calls.get() + 1);
                        stats.by_plan.borrow_mut()[plan.index()] += 1;
                    }
                    Err(fail) => {
                        if matches!(fail, Fail::Timeout(_)) {
                            stats.timeouts.set(stats.timeouts.get() + 1);
                        }
                        stats.call_errors.set(stats.call_errors.get() + 1);
                        tally(format!("soak: {}: {}", plan.name(), fail.kind()));
                        // Start clean: whatever state is left, reset.
                        for slot in &mut pair {
                            if let Some(client) = slot.take() {
                                stats.dropped.set(stats.dropped.get() + 1);
                                drop(client);
                            }
                        }
                    }
                }
            }
        }
        let leaving: Vec<Task<()>> = pair
            .iter_mut()
            .filter_map(Option::take)
            .map(|client| {
                let (ctx, stats) = (ctx.clone(), stats.clone());
                spawn(async move {
                    let polite = chance(0.5);
                    soak_leave(&ctx, &stats, client, polite).await;
                })
            })
            .collect();
        for task in leaving {
            task.await;
        }
        sleep_until(Instant::now() + rand_duration(opts.gap)).await;
    }
}

/// One reading of the server and of the soak.
#[derive(Debug, Clone, Default)]
pub(crate) struct SoakSample {
    pub(crate) t_s: f64,
    pub(crate) rss_kib: Option<u64>,
    pub(crate) hwm_kib: Option<u64>,
    pub(crate) cpu_s: Option<f64>,
    pub(crate) fds: Option<u64>,
    pub(crate) sessions: Option<u64>,
    pub(crate) users: Option<u64>,
    pub(crate) active_calls: Option<u64>,
    pub(crate) live: usize,
    pub(crate) connects: u64,
    pub(crate) calls: u64,
    pub(crate) errors: u64,
    pub(crate) setup_p99_ms: Option<f64>,
    pub(crate) loadgen_cpu_s: f64,
}

impl SoakSample {
    pub(crate) fn json(&self) -> Value {
        json!({
            "t_s": round(self.t_s, 1),
            "rss_kib": self.rss_kib,
            "hwm_kib": self.hwm_kib,
            "cpu_s": self.cpu_s.map(|c| round(c, 2)),
            "fds": self.fds,
            "sessions": self.sessions,
            "users": self.users,
            "active_calls": self.active_calls,
            "live": self.live,
            "connects": self.connects,
            "calls": self.calls,
            "errors": self.errors,
            "setup_p99_ms": self.setup_p99_ms,
            "loadgen_cpu_s": round(self.loadgen_cpu_s, 2),
        })
    }
}

/// A `kB` field of /proc/PID/status.
pub(crate) fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// GET `path` and return the status and body.
pub(crate) async fn get_text(net: &Net, path: &str) -> Result<(u16, String), String> {
    let mut http = Http::open(net).await.map_err(|e| e.to_string())?;
    let reply = http
        .request(net, "GET", path, b"", false)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    ))
}

/// The server's figures: from /proc (RSS, peak RSS, CPU, open files), from
/// `GET /metrics` (Engine.IO sessions: signalbox only) and from `GET /`
/// (registered users and calls, which every seed-compatible server has).
pub(crate) async fn soak_server_sample(ctx: &Ctx, start: Instant) -> SoakSample {
    let mut sample = SoakSample {
        t_s: start.elapsed().as_secs_f64(),
        loadgen_cpu_s: own_cpu(),
        ..SoakSample::default()
    };
    if let Some(pid) = ctx.opts.server_pid {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            sample.rss_kib = status_kib(&status, "VmRSS:");
            sample.hwm_kib = status_kib(&status, "VmHWM:");
        }
        sample.cpu_s = cpu_seconds(&format!("/proc/{pid}/stat"));
        sample.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|dir| dir.count() as u64);
    }
    let timeout = ctx.opts.timeout;
    if let Ok((200, text)) = within(timeout, "GET /metrics", get_text(&ctx.net, "/metrics")).await {
        let mut found = false;
        let mut sum = 0.0;
        for line in text.lines() {
            if line.starts_with("signalbox_sessions{") || line.starts_with("signalbox_sessions ") {
                if let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                    sum += value;
                    found = true;
                }
            }
        }
        if found {
            sample.sessions = Some(sum as u64);
        }
    }
    if let Ok(health) = within(timeout, "GET /", get_json(&ctx.net, "/")).await {
        sample.users = health["connectedUsers"].as_u64();
        sample.active_calls = health["activeCalls"].as_u64();
    }
    sample
}

/// The least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("–".into(), |v| v.to_string())
}

/// The curve, for people.
fn soak_table(samples: &[SoakSample], warmup_s: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>7} {:>8} {:>8} {:>6} {:>6} {:>8} {:>6} {:>6} {:>5} {:>8} {:>8} {:>6} {:>9} {:>6}",
        "t_s",
        "rss_MiB",
        "hwm_MiB",
        "cpu%",
        "fds",
        "sessions",
        "users",
        "calls",
        "live",
        "connects",
        "calls_ok",
        "errors",
        "setup_p99",
        "lg%"
    );
    let mut previous: Option<&SoakSample> = None;
    for s in samples {
        let mib =
            |kib: Option<u64>| kib.map_or("–".into(), |k| format!("{:.2}", k as f64 / 1024.0));
        let (cpu, lg) = match previous {
            Some(p) if s.t_s > p.t_s => {
                let dt = s.t_s - p.t_s;
                (
                    match (s.cpu_s, p.cpu_s) {
                        (Some(a), Some(b)) => format!("{:.0}", (a - b) / dt * 100.0),
                        _ => "–".into(),
                    },
                    format!("{:.0}", (s.loadgen_cpu_s - p.loadgen_cpu_s) / dt * 100.0),
                )
            }
            _ => ("–".into(), "–".into()),
        };
        let mark = if s.t_s + 1e-9 >= warmup_s { ' ' } else { 'w' };
        let _ = writeln!(
            out,
            "{:>6.0}{mark} {:>8} {:>8} {:>6} {:>6} {:>8} {:>6} {:>6} {:>5} {:>8} {:>8} {:>6} {:>9} {:>6}",
            s.t_s,
            mib(s.rss_kib),
            mib(s.hwm_kib),
            cpu,
            opt(s.fds),
            opt(s.sessions),
            opt(s.users),
            opt(s.active_calls),
            s.live,
            s.connects,
            s.calls,
            s.errors,
            s.setup_p99_ms.map_or("–".into(), |v| format!("{v:.1}")),
            lg,
        );
        previous = Some(s);
    }
    out
}

pub(crate) async fn soak(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    seed_rng(opts.seed);
    let pairs = soak_pairs(opts.count);
    let clients = pairs * 2;
    let duration = opts.duration;
    let warmup = Duration::from_secs(120).min(duration.mul_f64(0.2));
    eprintln!(
        "loadgen: soak: {clients} clients ({pairs} pairs) for {:.0}s, sampling every {:.0}s, warm-up {:.0}s, seed {}",
        duration.as_secs_f64(),
        opts.sample.as_secs_f64(),
        warmup.as_secs_f64(),
        opts.seed
    );
    let stats = Rc::new(SoakStats::default());
    let gate = Rc::new(smol::lock::Semaphore::new(opts.concurrency));
    let (stop, stopped) = channel::bounded::<()>(1);
    let start = Instant::now();
    let end = start + duration;
    let mut samples = vec![soak_server_sample(&ctx, start).await];
    let idle = samples[0].clone();
    let workers: Vec<Task<()>> = (0..pairs)
        .map(|p| {
            spawn(soak_pair(
                ctx.clone(),
                stats.clone(),
                gate.clone(),
                p,
                stopped.clone(),
            ))
        })
        .collect();
    drop(stopped);

    // The sampler: every --sample, and once more at the end.
    let mut k = 1u32;
    loop {
        let at = (start + opts.sample * k).min(end);
        Timer::at(at).await;
        let mut sample = soak_server_sample(&ctx, start).await;
        sample.live = stats.live.get();
        sample.connects = stats.connects.get();
        sample.calls = stats.calls.get();
        sample.errors = stats.errors();
        let mut recent = std::mem::take(&mut *stats.setup_recent.borrow_mut());
        if !recent.is_empty() {
            recent.sort_unstable();
            sample.setup_p99_ms = Some(ms(percentile(&recent, 99.0)));
            stats.setup_all.borrow_mut().extend_from_slice(&recent);
        }
        eprintln!(
            "loadgen: soak t={:.0}s rss={} KiB fds={} sessions={} users={} live={} calls={} errors={}",
            sample.t_s,
            opt(sample.rss_kib),
            opt(sample.fds),
            opt(sample.sessions),
            opt(sample.users),
            sample.live,
            sample.calls,
            sample.errors
        );
        samples.push(sample);
        if at >= end {
            break;
        }
        k += 1;
    }

    // The last sample is taken: clients finish the call they are in and
    // leave.
    drop(stop);
    eprintln!("loadgen: soak: time is up; waiting for the last calls to end");
    for worker in workers {
        worker.await;
    }
    let stopped_s = start.elapsed().as_secs_f64();
    stats
        .setup_all
        .borrow_mut()
        .extend(stats.setup_recent.borrow_mut().drain(..));

    // Every client is gone: the server must forget them all. Polling
    // clients that vanished are noticed at the ping timeout.
    eprintln!(
        "loadgen: soak: all clients gone; waiting up to {:.0}s for the server to forget them",
        opts.drain.as_secs_f64()
    );
    let drain_start = Instant::now();
    let drained = loop {
        let sample = soak_server_sample(&ctx, start).await;
        let clear = sample.sessions.unwrap_or(0) == 0
            && sample.users.unwrap_or(0) == idle.users.unwrap_or(0)
            && sample.active_calls.unwrap_or(0) == 0;
        if clear || drain_start.elapsed() >= opts.drain {
            break (sample, clear);
        }
        Timer::after(Duration::from_secs(1)).await;
    };
    let (after, cleared) = drained;
    let drain_s = drain_start.elapsed().as_secs_f64();

    // The curve after warm-up.
    let warmup_s = warmup.as_secs_f64();
    let steady: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.t_s + 1e-9 >= warmup_s && s.rss_kib.is_some())
        .collect();
    let rss_points: Vec<(f64, f64)> = steady
        .iter()
        .map(|s| (s.t_s / 60.0, s.rss_kib.unwrap_or(0) as f64))
        .collect();
    let rss_slope = slope(&rss_points).map(|s| round(s, 1));
    let first = steady.first();
    let last = steady.last();
    let growth = |f: fn(&SoakSample) -> Option<u64>| -> Option<i64> {
        Some(f(last?)? as i64 - f(first?)? as i64)
    };
    let rss_growth = growth(|s| s.rss_kib);
    let rss_max = steady.iter().filter_map(|s| s.rss_kib).max();
    let rss_min = steady.iter().filter_map(|s| s.rss_kib).min();
    let rss_spread = rss_max.zip(rss_min).map(|(a, b)| a - b);
    let fds_points: Vec<(f64, f64)> = steady
        .iter()
        .filter_map(|s| Some((s.t_s / 60.0, s.fds? as f64)))
        .collect();
    let session_points: Vec<(f64, f64)> = steady
        .iter()
        .filter_map(|s| Some((s.t_s / 60.0, s.sessions? as f64)))
        .collect();

    let mut setup_all = std::mem::take(&mut *stats.setup_all.borrow_mut());
    let mut join_all = std::mem::take(&mut *stats.join_all.borrow_mut());
    let by_plan = *stats.by_plan.borrow();
    let outcomes: serde_json::Map<String, Value> = Plan::ALL
        .iter()
        .map(|p| (p.name().to_owned(), by_plan[p.index()].into()))
        .collect();
    let run_s = samples.last().map_or(0.0, |s| s.t_s);
    let calls = stats.calls.get();
    let errors = stats.errors();
    let fds_back = match (after.fds, idle.fds) {
        (Some(a), Some(b)) => a <= b,
        _ => true,
    };
    // Descriptors the server opened once for good (Node's thread pool, say)
    // are not a leak; fds_after_drain against fds_idle tells.
    let ok = errors == 0 && cleared;

    let table = soak_table(&samples, warmup_s);
    println!(
        "soak curve: {clients} clients, {:.0}s, a sample every {:.0}s; w = warm-up (first {:.0}s); \
         cpu% and lg% (load generator) over the interval before; calls = ringing or active now, \
         calls_ok = calls done as planned so far; setup_p99 in ms, over the interval",
        duration.as_secs_f64(),
        opts.sample.as_secs_f64(),
        warmup_s
    );
    print!("{table}");
    println!(
        "soak: {calls} calls as planned ({}), {errors} errors ({} joins, {} calls of which {} timeouts, {} polite closes); \
         {} sessions opened, {} left politely, {} dropped; call setup p50 {} ms, p99 {} ms",
        Plan::ALL
            .iter()
            .map(|p| format!("{} {}", p.name(), by_plan[p.index()]))
            .collect::<Vec<_>>()
            .join(", "),
        stats.join_errors.get(),
        stats.call_errors.get(),
        stats.timeouts.get(),
        stats.close_errors.get(),
        stats.connects.get(),
        stats.polite.get(),
        stats.dropped.get(),
        summary_ms(&mut setup_all)["p50_ms"],
        summary_ms(&mut setup_all)["p99_ms"],
    );
    println!(
        "soak: RSS after warm-up {} -> {} KiB: growth {} KiB, slope {} KiB/min, spread (max-min) {} KiB; peak RSS {} KiB",
        opt(first.and_then(|s| s.rss_kib)),
        opt(last.and_then(|s| s.rss_kib)),
        opt(rss_growth),
        opt(rss_slope),
        opt(rss_spread),
        opt(samples.last().and_then(|s| s.hwm_kib)),
    );
    println!(
        "soak: after the run: {} in {drain_s:.0}s: sessions {} (idle {}), users {} (idle {}), calls {}, fds {} (idle {}), RSS {} KiB (idle {} KiB)",
        if cleared {
            "server forgot every client"
        } else {
            "SERVER STILL HOLDS STATE"
        },
        opt(after.sessions),
        opt(idle.sessions),
        opt(after.users),
        opt(idle.users),
        opt(after.active_calls),
        opt(after.fds),
        opt(idle.fds),
        opt(after.rss_kib),
        opt(idle.rss_kib),
    );

    let mut result = json!({
        "scenario": "soak",
        "clients": clients,
        "duration_s": duration.as_secs_f64(),
        "sample_s": opts.sample.as_secs_f64(),
        "seed": opts.seed,
        "dwell_s": opts.dwell.as_secs_f64(),
        "talk_s": opts.talk.as_secs_f64(),
        "gap_s": opts.gap.as_secs_f64(),
        "samples": samples.iter().map(SoakSample::json).collect::<Vec<_>>(),
        "warmup_s": warmup_s,
        "rss_first_after_warmup_kib": first.and_then(|s| s.rss_kib),
        "rss_last_kib": last.and_then(|s| s.rss_kib),
        "rss_growth_after_warmup_kib": rss_growth,
        "rss_slope_kib_per_min": rss_slope,
        "rss_spread_after_warmup_kib": rss_spread,
        "rss_peak_kib": samples.last().and_then(|s| s.hwm_kib),
        "fds_growth_after_warmup": growth(|s| s.fds),
        "fds_slope_per_min": slope(&fds_points).map(|s| round(s, 2)),
        "sessions_growth_after_warmup": growth(|s| s.sessions),
        "sessions_slope_per_min": slope(&session_points).map(|s| round(s, 2)),
    });
    let more = json!({
        "calls_completed": calls,
        "calls_by_outcome": outcomes,
        "calls_per_s": round(calls as f64 / run_s.max(1e-9), 1),
        "errors": errors,
        "join_errors": stats.join_errors.get(),
        "call_errors": stats.call_errors.get(),
        "call_timeouts": stats.timeouts.get(),
        "close_errors": stats.close_errors.get(),
        "sessions_opened": stats.connects.get(),
        "left_politely": stats.polite.get(),
        "left_dropped": stats.dropped.get(),
        "join_latency": summary_ms(&mut join_all),
        "setup": summary_ms(&mut setup_all),
        "stopped_s": round(stopped_s, 1),
        "rss_idle_kib": idle.rss_kib,
        "rss_after_drain_kib": after.rss_kib,
        "fds_idle": idle.fds,
        "fds_after_drain": after.fds,
        "sessions_after_drain": after.sessions,
        "users_after_drain": after.users,
        "idle": idle.json(),
        "drain": {
            "waited_s": round(drain_s, 1),
            "cleared": cleared,
            "fds_back": fds_back,
            "after": after.json(),
        },
        "ok": ok,
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut result, more) {
        map.extend(more);
    }
    (result, ok)
}
