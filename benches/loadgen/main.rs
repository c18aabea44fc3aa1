//! The load generator: many Socket.IO clients in one process, speaking the
//! seed's signaling events (`register_user`, `make_call`, `answer_call`,
//! `ice_candidate`, `end_call`) and nothing else, so it measures signalbox
//! and the original Node.js server alike.
//!
//! ```text
//! cargo bench --bench loadgen -- hold 10000 --server-pid 1234
//! cargo bench --bench loadgen -- calls 50 --repeat 20 --ice 5
//! cargo bench --bench loadgen -- relay 50 --duration 10s
//! cargo bench --bench loadgen -- reconnect-storm 2000
//! cargo bench --bench loadgen -- handshakes 64 --duration 10s --tls --url https://127.0.0.1:3000
//! cargo bench --bench loadgen -- soak 1000 --duration 10m --sample 10s --server-pid 1234
//! ```
//!
//! It has its own minimal Engine.IO 4 / Socket.IO 5 client: WebSocket through
//! async-tungstenite's client handshake, and HTTP long-polling over a tiny
//! HTTP/1.1 client for a share of the clients (`--polling-share`); with
//! `--tls`, both over TLS (rustls, no session resumption). It talks
//! to loopback addresses only, bounds every wait, and exits by itself at
//! `--deadline`. Each scenario prints one JSON line starting with
//! `{"scenario":` and a short summary for people; see benches/README.md.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use futures_sink::Sink;
use serde_json::{Value, json};
use signalbox::config::{parse_duration, parse_size};
use smol::lock::Mutex;
use smol::{Async, LocalExecutor, Task, Timer, channel};

const USAGE: &str = "\
usage: cargo bench --bench loadgen -- <scenario> [COUNT] [options]

scenarios:
  hold N               N clients connect, register and stay through a ping cycle
  calls [P]            P caller/callee pairs make --repeat calls each (default 50)
  group-calls [G]      G doors call a ring group each, --members answering at
                       once, --repeat times (default 50; the server's directory
                       must hold the groups: see `directory`)
  directory [G]        prints the directory file group-calls needs, for
                       --members and --prefix, and exits
  relay [P]            P pairs in calls relay ICE candidates flat out (default 50)
  reconnect-storm N    N registered clients drop their TCP and come back at once
  recovery-storm N     N clients in N/2 calls drop their TCP and come back at once
                       with their socket's pid (connection state recovery)
  soak N               N clients churn (connect, register, call, leave, again) for
                       --duration, sampling the server every --sample (default 1000)
  fairness             a probe's request and a canary call's candidate, every
                       --probe-every, through phases of --duration: quiet, then
                       one connection flooding pipelined HTTP, WebSocket pongs,
                       events past their budget
  churn N              N names connect, register, make one call and leave; the
                       server's RSS before, after, and after --settle (default 100000)
  handshakes [W]       W workers (default 64) each connect, GET / and close, over
                       and over for --duration: with --tls, a full TLS handshake
                       each time; the server's CPU per connection

options (anywhere on the line):
  --url URL            server to load, loopback only (http://127.0.0.1:3000;
                       https:// or wss:// imply --tls)
  --tls                every connection over TLS: WSS, and HTTPS for polling and
                       GET requests; trusts any certificate (benchmark only) and
                       never resumes a session, so each is a full handshake; not
                       for fairness, whose floods are plain sockets
  --callee-url URL     cross-node: odd-numbered clients (the callees of calls
                       and relay) connect to this server instead, another node
                       of the same cluster
  --path PATH          Socket.IO endpoint (/socket.io/)
  --server-pid PID     read the server's RSS and CPU time from /proc/PID
  --polling-share F    share of clients on HTTP long-polling (0.1)
  --concurrency N      connections being set up at once (256)
  --timeout D          longest wait for one answer (10s)
  --deadline D         the whole run ends by then, whatever happens (600s)
  --per-source N       connections per loopback source address (25000)
  --hold D             hold: how long to stay connected (30s; at least one ping cycle)
  --ping-interval D    hold: the server's ping interval (default: from its handshake)
  --repeat N           calls: calls per pair (20); group-calls: per group
  --members N          group-calls, directory: members per group (10)
  --ice K              calls: ICE candidates each way per call (5)
  --duration D         relay: how long to send (10s); soak: how long to churn (10m);
                       handshakes: how long to connect (10s)
  --window N           relay: candidates in flight per direction of a pair (16);
                       with --rate, in flight over all pairs
  --rate R             relay: R candidates a second in all, each in a write of
                       its own, the pairs taking turns (default: flat out)
  --sdp-bytes N        size of the fake SDP offer and answer (2000)
  --retries N          reconnect-storm: attempts after a failed reconnect (3)
  --prefix NAME        user name prefix (lg<pid>-)
  --sample D           soak: how often to sample the server (10s)
  --dwell D            soak: longest idle time, registered, before the call (5s)
  --talk D             soak: longest time in an answered call before hang-up (2s)
  --gap D              soak: longest wait between a client's sessions (200ms)
  --ring-timeout D     soak: the server's ring timeout, for calls left to ring out (30s)
  --drain D            soak: after the run, how long to wait for the server to
                       forget every session, user and call (60s)
  --seed N             soak: seed of the random choices (from the clock)
  --probe-every D      fairness: the probe's and the canary's pace (25ms: within
                       the default event budget of 50 a second)
  --settle D           churn: how long the server may take to sweep (30s)

Durations as the server takes them: 500ms, 30s, 5m; sizes: 2000, 64k.";

const WS_READ_BUFFER: usize = 4096;

mod calls;
mod churn;
mod client;
mod ctx;
mod fairness;
mod groups;
mod handshakes;
mod hold;
mod process;
mod relay;
mod soak;
mod stats;
mod storm;
mod sys;
mod tls;

use calls::*;
use client::*;
use ctx::*;
use process::*;
use soak::*;
use stats::*;
use tls::Stream;

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Hold,
    Calls,
    Relay,
    ReconnectStorm,
    RecoveryStorm,
    Soak,
    Fairness,
    Churn,
    GroupCalls,
    Directory,
    Handshakes,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Hold => "hold",
            Scenario::Calls => "calls",
            Scenario::Relay => "relay",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::RecoveryStorm => "recovery-storm",
            Scenario::Soak => "soak",
            Scenario::Fairness => "fairness",
            Scenario::Churn => "churn",
            Scenario::GroupCalls => "group-calls",
            Scenario::Directory => "directory",
            Scenario::Handshakes => "handshakes",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    scenario: Scenario,
    count: usize,
    url: String,
    addr: SocketAddr,
    host: String,
    /// Cross-node: where callees connect (URL, address, host).
    callee: Option<(String, SocketAddr, String)>,
    tls: bool,
    path: String,
    server_pid: Option<u32>,
    polling_share: f64,
    concurrency: usize,
    timeout: Duration,
    deadline: Duration,
    per_source: usize,
    hold: Duration,
    ping_interval: Option<Duration>,
    repeat: usize,
    members: usize,
    ice: usize,
    duration: Duration,
    window: usize,
    /// relay: candidates a second in all; 0 is flat out.
    rate: f64,
    sdp_bytes: usize,
    retries: usize,
    prefix: String,
    sample: Duration,
    dwell: Duration,
    talk: Duration,
    gap: Duration,
    ring_timeout: Duration,
    drain: Duration,
    seed: u64,
    probe_every: Duration,
    settle: Duration,
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a number: {text:?}"))
}

/// Whether `url` names a TLS scheme (`https://`, `wss://`).
fn tls_scheme(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("wss://")
}

/// Resolves `url` (`http://host:port`, `ws://…`, `https://…`, `wss://…`)
/// and refuses anything that is not a loopback address: this tool sends
/// load, and only to this machine.
fn resolve_loopback(url: &str) -> Result<(SocketAddr, String), String> {
    let (rest, default_port) = if let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
    {
        (rest, 80)
    } else if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("wss://"))
    {
        (rest, 443)
    } else {
        return Err(format!(
            "--url must start with http://, ws://, https:// or wss://, got {url:?}"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("--url has no host: {url:?}"));
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:{default_port}")
    } else {
        authority.to_owned()
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{authority} resolves to nothing"));
    }
    if let Some(far) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing to load {far}: the load generator only targets loopback addresses"
        ));
    }
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]);
    Ok((addr, authority.to_owned()))
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut positional = Vec::new();
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        // The one option without a value.
        if arg == "--tls" {
            flags.insert("tls".into(), "true".into());
            i += 1;
            continue;
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => {
                    i += 1;
                    let value = args.get(i).ok_or(format!("--{flag} needs a value"))?;
                    (flag.to_owned(), value.clone())
                }
            };
            flags.insert(name, value);
        } else {
            positional.push(arg.clone());
        }
        i += 1;
    }
    let scenario = match positional.first().map(String::as_str) {
        Some("hold") => Scenario::Hold,
        Some("calls") => Scenario::Calls,
        Some("relay") => Scenario::Relay,
        Some("reconnect-storm" | "storm") => Scenario::ReconnectStorm,
        Some("recovery-storm") => Scenario::RecoveryStorm,
        Some("soak") => Scenario::Soak,
        Some("fairness") => Scenario::Fairness,
        Some("churn") => Scenario::Churn,
        Some("group-calls") => Scenario::GroupCalls,
        Some("directory") => Scenario::Directory,
        Some("handshakes") => Scenario::Handshakes,
        Some(other) => return Err(format!("unknown scenario {other:?}")),
        None => return Err("which scenario?".into()),
    };
    if positional.len() > 2 {
        return Err(format!("unexpected argument {:?}", positional[2]));
    }
    let count = match positional.get(1) {
        Some(n) => parse_number("COUNT", n)?,
        None => match scenario {
            Scenario::Calls | Scenario::Relay | Scenario::GroupCalls | Scenario::Directory => 50,
            Scenario::Hold
            | Scenario::ReconnectStorm
            | Scenario::RecoveryStorm
            | Scenario::Soak => 1000,
            Scenario::Fairness => 1,
            Scenario::Churn => 100_000,
            Scenario::Handshakes => 64,
        },
    };
    if count == 0 || count > 1_000_000 {
        return Err(format!("COUNT must be 1 to 1000000, got {count}"));
    }

    let mut take = |name: &str| flags.remove(name);
    let url = take("url").unwrap_or_else(|| "http://127.0.0.1:3000".into());
    let (addr, host) = resolve_loopback(&url)?;
    let callee = match take("callee-url") {
        Some(url) => {
            let (addr, host) = resolve_loopback(&url)?;
            Some((url, addr, host))
        }
        None => None,
    };
    let tls_flag = match take("tls").as_deref() {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => return Err(format!("--tls is on or off, got --tls={other}")),
    };
    let tls =
        tls_flag || tls_scheme(&url) || callee.as_ref().is_some_and(|(url, ..)| tls_scheme(url));
    if tls && scenario == Scenario::Fairness {
        return Err("--tls: the fairness floods are plain sockets; run fairness without it".into());
    }
    let mut path = take("path").unwrap_or_else(|| "/socket.io/".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if !path.ends_with('/') {
        path.push('/');
    }
    let duration =
        |v: Option<String>, default: &str| parse_duration(v.as_deref().unwrap_or(default));
    let number = |name: &str, v: Option<String>, default: usize| -> Result<usize, String> {
        v.map_or(Ok(default), |v| parse_number(name, &v))
    };
    let soak = scenario == Scenario::Soak;
    let run_for = duration(
        take("duration"),
        match scenario {
            Scenario::Soak => "10m",
            Scenario::Fairness => "5s",
            _ => "10s",
        },
    )?;
    let drain = duration(take("drain"), "60s")?;
    let ring_timeout = duration(take("ring-timeout"), "30s")?;
    let timeout = duration(take("timeout"), "10s")?;
    // A soak outlives the usual deadline: its own length, the drain, and
    // the longest call still running at the end, with a margin.
    let deadline = match take("deadline") {
        Some(v) => parse_duration(&v)?,
        None if soak => run_for + drain + ring_timeout + timeout * 3 + Duration::from_secs(60),
        None => Duration::from_secs(600),
    };
    let seed = match take("seed") {
        Some(v) => parse_number("--seed", &v)?,
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    };
    let opts = Opts {
        scenario,
        count,
        url,
        addr,
        host,
        callee,
        tls,
        path,
        server_pid: take("server-pid")
            .map(|v| parse_number("--server-pid", &v))
            .transpose()?,
        polling_share: take("polling-share")
            .map_or(Ok(0.1), |v| parse_number("--polling-share", &v))?,
        concurrency: number("--concurrency", take("concurrency"), 256)?.max(1),
        timeout,
        deadline,
        per_source: number("--per-source", take("per-source"), 25_000)?.max(1),
        hold: duration(take("hold"), "30s")?,
        ping_interval: take("ping-interval")
            .map(|v| parse_duration(&v))
            .transpose()?,
        repeat: number("--repeat", take("repeat"), 20)?,
        members: number("--members", take("members"), 10)?.clamp(1, 64),
        ice: number("--ice", take("ice"), 5)?,
        duration: run_for,
        window: number("--window", take("window"), 16)?.max(1),
        rate: number("--rate", take("rate"), 0)? as f64,
        sdp_bytes: take("sdp-bytes").map_or(Ok(2000), |v| parse_size(&v))?,
        retries: number("--retries", take("retries"), 3)?,
        prefix: take("prefix").unwrap_or_else(|| format!("lg{}-", std::process::id() % 100_000)),
        sample: duration(take("sample"), "10s")?,
        dwell: duration(take("dwell"), "5s")?,
        talk: duration(take("talk"), "2s")?,
        gap: duration(take("gap"), "200ms")?,
        ring_timeout,
        drain,
        seed,
        probe_every: duration(take("probe-every"), "25ms")?,
        settle: duration(take("settle"), "30s")?,
    };
    if let Some(extra) = flags.keys().next() {
        return Err(format!("unknown option --{extra}"));
    }
    if !(0.0..=1.0).contains(&opts.polling_share) {
        return Err("--polling-share must be between 0 and 1".into());
    }
    if !opts
        .prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
    {
        return Err("--prefix may hold only A-Z a-z 0-9 _ - . @".into());
    }
    if opts.repeat > 100_000 || opts.ice > 10_000 || opts.window > 10_000 {
        return Err("--repeat, --ice or --window is unreasonably large".into());
    }
    if soak && opts.sample.is_zero() {
        return Err("--sample must be longer than zero".into());
    }
    if soak && opts.duration > Duration::from_secs(7 * 24 * 3600) {
        return Err("--duration: a soak lasts at most a week".into());
    }
    Ok(opts)
}

async fn run(opts: Opts, nofile: (u64, u64)) -> bool {
    if opts.scenario == Scenario::Directory {
        print!(
            "{}",
            groups::directory(&opts.prefix, opts.count, opts.members)
        );
        return true;
    }
    let tls_for = |host: &str| opts.tls.then(|| tls::Client::new(host)).transpose();
    let net = match tls_for(&opts.host) {
        Ok(tls) => Rc::new(Net {
            addr: opts.addr,
            host: opts.host.clone(),
            path: opts.path.clone(),
            per_source: opts.per_source,
            opened: Cell::new(0),
            sources: Cell::new(0),
            tls,
        }),
        Err(error) => {
            eprintln!("loadgen: {error}");
            return false;
        }
    };
    // The server must be there before anything is measured.
    if let Err(error) = within(opts.timeout, "GET /", get_json(&net, "/")).await {
        eprintln!("loadgen: no server at {}: {error}", opts.url);
        return false;
    }
    let callee_net = match &opts.callee {
        None => None,
        Some((_, addr, host)) => match tls_for(host) {
            Ok(tls) => Some(Rc::new(Net {
                addr: *addr,
                host: host.clone(),
                path: opts.path.clone(),
                per_source: opts.per_source,
                opened: Cell::new(0),
                sources: Cell::new(0),
                tls,
            })),
            Err(error) => {
                eprintln!("loadgen: {error}");
                return false;
            }
        },
    };
    if let Some((url, ..)) = &opts.callee
        && let Some(callee_net) = &callee_net
        && let Err(error) = within(opts.timeout, "GET /", get_json(callee_net, "/")).await
    {
        eprintln!("loadgen: no server at {url}: {error}");
        return false;
    }
    let ctx = Rc::new(Ctx {
        sdp: fake_sdp(opts.sdp_bytes),
        opts,
        net: net.clone(),
        callee_net,
    });
    let scenario = ctx.opts.scenario;
    let own_before = own_cpu();
    let machine_before = cpu_jiffies();
    let overflows_before = listen_overflows();
    let start = Instant::now();
    let (mut result, ok) = match scenario {
        Scenario::Hold => hold::hold(ctx.clone()).await,
        Scenario::Calls => calls::calls(ctx.clone()).await,
        Scenario::Relay => relay::relay(ctx.clone()).await,
        Scenario::ReconnectStorm => storm::reconnect_storm(ctx.clone()).await,
        Scenario::RecoveryStorm => storm::recovery_storm(ctx.clone()).await,
        Scenario::Soak => soak::soak(ctx.clone()).await,
        Scenario::Fairness => fairness::fairness(ctx.clone()).await,
        Scenario::Churn => churn::churn(ctx.clone()).await,
        Scenario::GroupCalls => groups::group_calls(ctx.clone()).await,
        Scenario::Handshakes => handshakes::handshakes(ctx.clone()).await,
        Scenario::Directory => unreachable!("printed before any server is asked"),
    };
    let extra = json!({
        "url": ctx.opts.url,
        "callee_url": ctx.opts.callee.as_ref().map(|(url, ..)| url),
        "tls": ctx.opts.tls,
        "tls_negotiated": net.tls.as_ref().and_then(|t| t.negotiated.get()),
        "polling_share": ctx.opts.polling_share,
        "server_pid": ctx.opts.server_pid,
        "run_s": round(start.elapsed().as_secs_f64(), 3),
        "loadgen_cpu_s": round(own_cpu() - own_before, 3),
        "machine_cpu_busy": cpu_busy(&machine_before, &cpu_jiffies()),
        "listen_overflows": listen_overflows()
            .zip(overflows_before)
            .map(|(after, before)| after.saturating_sub(before)),
        "connections_opened": net.opened.get(),
        "source_addresses": net.sources.get(),
        "nofile_limit": nofile.0,
        "oddities": take_tally(),
    });
    if let (Value::Object(map), Value::Object(more)) = (&mut result, extra) {
        map.extend(more);
    }
    let oddities = &result["oddities"];
    if oddities.as_object().is_some_and(|o| !o.is_empty()) {
        println!("{} oddities: {oddities}", scenario.name());
    }
    println!("{result}");
    ok
}

fn main() {
    epoch();
    // `cargo bench` adds --bench to the command line of every bench target.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opts = match parse_args(&args) {
        Ok(opts) => opts,
        Err(error) => {
            if error.is_empty() {
                println!("{USAGE}");
                return;
            }
            eprintln!("loadgen: {error}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let nofile = match sys::raise_nofile() {
        Ok(limits) => limits,
        Err(error) => {
            eprintln!("loadgen: cannot raise the open-files limit: {error}");
            (1024, 1024)
        }
    };
    let clients = match opts.scenario {
        Scenario::Calls | Scenario::Relay => opts.count * 2,
        Scenario::Hold | Scenario::ReconnectStorm | Scenario::RecoveryStorm => opts.count,
        Scenario::Soak => soak_pairs(opts.count) * 2,
        Scenario::Fairness => 8,
        Scenario::Churn => opts.concurrency,
        Scenario::Handshakes => opts.count,
        Scenario::GroupCalls => opts.count * (opts.members + 1),
        Scenario::Directory => 0,
    };
    let keep_posts = matches!(
        opts.scenario,
        Scenario::Calls | Scenario::Relay | Scenario::Soak | Scenario::GroupCalls
    );
    if let Err(error) = fd_budget(&opts, clients, keep_posts, nofile.0) {
        eprintln!("loadgen: {error}");
        std::process::exit(2);
    }
    // The hard deadline: whatever is stuck, the process ends.
    let deadline = opts.deadline;
    let scenario = opts.scenario.name();
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!(
            "loadgen: {scenario}: deadline of {}s reached, giving up",
            deadline.as_secs()
        );
        println!(
            "{}",
            json!({"scenario": scenario, "ok": false, "error": "deadline reached"})
        );
        std::process::exit(3);
    });
    let ok = EX.with(|ex| smol::block_on(ex.run(run(opts, nofile))));
    std::process::exit(if ok { 0 } else { 1 });
}
