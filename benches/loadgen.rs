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
//! cargo bench --bench loadgen -- soak 1000 --duration 10m --sample 10s --server-pid 1234
//! ```
//!
//! It has its own minimal Engine.IO 4 / Socket.IO 5 client: WebSocket through
//! async-tungstenite's client handshake, and HTTP long-polling over a tiny
//! HTTP/1.1 client for a share of the clients (`--polling-share`). It talks
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
use smol::lock::Mutex;
use smol::{Async, LocalExecutor, Task, Timer, channel};

const USAGE: &str = "\
usage: cargo bench --bench loadgen -- <scenario> [COUNT] [options]

scenarios:
  hold N               N clients connect, register and stay through a ping cycle
  calls [P]            P caller/callee pairs make --repeat calls each (default 50)
  relay [P]            P pairs in calls relay ICE candidates flat out (default 50)
  reconnect-storm N    N registered clients drop their TCP and come back at once
  soak N               N clients churn (connect, register, call, leave, again) for
                       --duration, sampling the server every --sample (default 1000)

options (anywhere on the line):
  --url URL            server to load, loopback only (http://127.0.0.1:3000)
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
  --repeat N           calls: calls per pair (20)
  --ice K              calls: ICE candidates each way per call (5)
  --duration D         relay: how long to send (10s); soak: how long to churn (10m)
  --window N           relay: candidates in flight per direction of a pair (16)
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

Durations: 500ms, 30s, 5m; a bare number is seconds.";

const WS_READ_BUFFER: usize = 4096;

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Hold,
    Calls,
    Relay,
    ReconnectStorm,
    Soak,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Hold => "hold",
            Scenario::Calls => "calls",
            Scenario::Relay => "relay",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::Soak => "soak",
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
    ice: usize,
    duration: Duration,
    window: usize,
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
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("not a duration: {text:?} (write 500ms, 30s, 5m)");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: not a number: {text:?}"))
}

/// Resolves `url` (`http://host:port`, `ws://…`) and refuses anything that is
/// not a loopback address: this tool sends load, and only to this machine.
fn resolve_loopback(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("--url must start with http:// or ws://, got {url:?}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("--url has no host: {url:?}"));
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
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
        Some("soak") => Scenario::Soak,
        Some(other) => return Err(format!("unknown scenario {other:?}")),
        None => return Err("which scenario?".into()),
    };
    if positional.len() > 2 {
        return Err(format!("unexpected argument {:?}", positional[2]));
    }
    let count = match positional.get(1) {
        Some(n) => parse_number("COUNT", n)?,
        None => match scenario {
            Scenario::Calls | Scenario::Relay => 50,
            Scenario::Hold | Scenario::ReconnectStorm | Scenario::Soak => 1000,
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
    let run_for = duration(take("duration"), if soak { "10m" } else { "10s" })?;
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
        ice: number("--ice", take("ice"), 5)?,
        duration: run_for,
        window: number("--window", take("window"), 16)?.max(1),
        sdp_bytes: number("--sdp-bytes", take("sdp-bytes"), 2000)?,
        retries: number("--retries", take("retries"), 3)?,
        prefix: take("prefix").unwrap_or_else(|| format!("lg{}-", std::process::id() % 100_000)),
        sample: duration(take("sample"), "10s")?,
        dwell: duration(take("dwell"), "5s")?,
        talk: duration(take("talk"), "2s")?,
        gap: duration(take("gap"), "200ms")?,
        ring_timeout,
        drain,
        seed,
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

// ---------------------------------------------------------------------------
// The operating system: open-files limit, clock ticks, sockets bound to a
// source address, resets on close. Linux only, through a few declarations
// of libc functions (no extra crate).

mod sys {
    use std::ffi::{c_int, c_long, c_ulong, c_void};
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    #[repr(C)]
    struct RLimit {
        cur: c_ulong,
        max: c_ulong,
    }

    #[repr(C)]
    struct SockAddrIn {
        family: u16,
        port: u16,
        addr: [u8; 4],
        zero: [u8; 8],
    }

    #[repr(C)]
    struct Linger {
        onoff: c_int,
        linger: c_int,
    }

    const RLIMIT_NOFILE: c_int = 7;
    const SC_CLK_TCK: c_int = 2;
    const AF_INET: c_int = 2;
    const SOCK_STREAM: c_int = 1;
    const SOCK_NONBLOCK: c_int = 0o4000;
    const SOCK_CLOEXEC: c_int = 0o2000000;
    const SOL_SOCKET: c_int = 1;
    const SO_LINGER: c_int = 13;
    const IPPROTO_IP: c_int = 0;
    const IP_BIND_ADDRESS_NO_PORT: c_int = 24;
    const EINPROGRESS: i32 = 115;

    unsafe extern "C" {
        fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
        fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
        fn sysconf(name: c_int) -> c_long;
        fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
        fn bind(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
        fn connect(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
        fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
    }

    /// Raises the soft limit on open files to the hard one; returns both.
    pub fn raise_nofile() -> io::Result<(u64, u64)> {
        let mut limit = RLimit { cur: 0, max: 0 };
        // SAFETY: getrlimit fills in the one RLimit it is given.
        if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.cur < limit.max {
            let raised = RLimit {
                cur: limit.max,
                max: limit.max,
            };
            // SAFETY: setrlimit only reads the RLimit it is given.
            if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } != 0 {
                return Err(io::Error::last_os_error());
            }
            limit.cur = limit.max;
        }
        // rlim_t is 32 bits wide on 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        Ok((limit.cur as u64, limit.max as u64))
    }

    /// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
    pub fn clock_ticks() -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { sysconf(SC_CLK_TCK) };
        if ticks > 0 { ticks as f64 } else { 100.0 }
    }

    fn sockaddr(addr: SocketAddrV4) -> SockAddrIn {
        SockAddrIn {
            family: AF_INET as u16,
            port: addr.port().to_be(),
            addr: addr.ip().octets(),
            zero: [0; 8],
        }
    }

    fn check(result: c_int) -> io::Result<()> {
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// A non-blocking TCP socket bound to `source` whose connect to `dest`
    /// has started; wait until it is writable, then check `take_error`.
    /// Binding first lets connections come from 127.0.0.2, 127.0.0.3, …, each
    /// with its own ~28k ephemeral ports.
    pub fn start_connect(source: Ipv4Addr, dest: SocketAddrV4) -> io::Result<TcpStream> {
        // SAFETY: socket has no preconditions.
        let fd = unsafe { socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a socket just made that nothing else owns; the
        // TcpStream closes it, on the error paths below too.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let len = size_of::<SockAddrIn>() as u32;
        let one: c_int = 1;
        // Pick the port at connect time, per destination, rather than at bind
        // time for all of them. Best effort: older kernels lack it.
        // SAFETY: the option value is one c_int, as its length says.
        let _ = unsafe {
            setsockopt(
                fd,
                IPPROTO_IP,
                IP_BIND_ADDRESS_NO_PORT,
                (&raw const one).cast(),
                size_of::<c_int>() as u32,
            )
        };
        let from = sockaddr(SocketAddrV4::new(source, 0));
        // SAFETY: `from` is a sockaddr_in of `len` bytes.
        check(unsafe { bind(fd, &from, len) })?;
        let to = sockaddr(dest);
        // SAFETY: `to` is a sockaddr_in of `len` bytes.
        if let Err(error) = check(unsafe { connect(fd, &to, len) })
            && error.raw_os_error() != Some(EINPROGRESS)
        {
            return Err(error);
        }
        Ok(stream)
    }

    /// Makes closing `stream` reset the connection (RST), as a client that
    /// vanishes does, and leaves no TIME_WAIT behind.
    pub fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
        let linger = Linger {
            onoff: 1,
            linger: 0,
        };
        // SAFETY: the option value is one struct linger, as its length says.
        check(unsafe {
            setsockopt(
                stream.as_raw_fd(),
                SOL_SOCKET,
                SO_LINGER,
                (&raw const linger).cast(),
                size_of::<Linger>() as u32,
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Process figures from /proc

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss: u64,
    cpu: f64,
}

fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / sys::clock_ticks())
}

fn sample_process(pid: Option<u32>) -> Option<Sample> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Sample {
        rss: rss_kb * 1024,
        cpu: cpu_seconds(&format!("/proc/{pid}/stat"))?,
    })
}

/// Per-CPU jiffies from /proc/stat: (busy, total) for each CPU.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = fields.iter().take(8).sum();
            // idle and iowait are not busy.
            let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

/// How busy each CPU of the machine was between two `cpu_jiffies` readings,
/// all processes together (steal counts as busy): tells whether something
/// else competed with the server or the load generator.
fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1);
            if total == 0 {
                0.0
            } else {
                round(a.0.saturating_sub(b.0) as f64 / total as f64, 2)
            }
        })
        .collect()
}

/// The kernel's count of connections dropped because a listening socket's
/// accept queue was full (TcpExt ListenOverflows), machine-wide: on a quiet
/// loopback run, the server's accept backlog overflowing.
fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
}

fn own_cpu() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since this process started measuring: the send timestamps.
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------
// Connections

thread_local! {
    static EX: LocalExecutor<'static> = const { LocalExecutor::new() };
    static TALLY: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    EX.with(|ex| ex.spawn(future))
}

/// Counts something odd that happened (an unexpected event, an error), by kind.
fn tally(kind: impl Into<String>) {
    let mut kind = kind.into();
    if kind.len() > 80 {
        let mut end = 80;
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        kind.truncate(end);
    }
    TALLY.with(|t| *t.borrow_mut().entry(kind).or_default() += 1);
}

fn take_tally() -> BTreeMap<String, u64> {
    TALLY.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    future::or(work, async {
        Timer::after(limit).await;
        Err(format!("timeout: {what}"))
    })
    .await
}

/// Where to connect, and from which loopback source address.
struct Net {
    addr: SocketAddr,
    host: String,
    path: String,
    per_source: usize,
    opened: Cell<usize>,
    sources: Cell<usize>,
}

impl Net {
    /// A TCP connection to the server, with Nagle off and reset-on-close.
    /// Every `per_source` connections move to the next source address
    /// (127.0.0.1, then .2, .3, …), so a run past ~28k connections does not
    /// run out of ephemeral ports.
    async fn connect(&self) -> io::Result<Async<TcpStream>> {
        let n = self.opened.get();
        self.opened.set(n + 1);
        let block = n / self.per_source;
        let stream = match self.addr {
            SocketAddr::V4(dest) if block > 0 => {
                let source = Ipv4Addr::new(127, 0, (block / 254) as u8, (block % 254 + 1) as u8);
                self.sources.set(self.sources.get().max(block + 1));
                let stream = Async::new(sys::start_connect(source, dest)?)?;
                stream.writable().await?;
                if let Some(error) = stream.get_ref().take_error()? {
                    return Err(error);
                }
                stream.get_ref().peer_addr()?;
                stream
            }
            _ => {
                self.sources.set(self.sources.get().max(1));
                Async::<TcpStream>::connect(self.addr).await?
            }
        };
        stream.get_ref().set_nodelay(true)?;
        sys::reset_on_close(stream.get_ref())?;
        Ok(stream)
    }
}

fn io_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

/// An HTTP/1.1 response: status, body, and whether the server closes the
/// connection after it.
struct Reply {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

/// One HTTP/1.1 client connection: requests one after the other.
struct Http {
    stream: Async<TcpStream>,
    buf: Vec<u8>,
}

impl Http {
    async fn open(net: &Net) -> io::Result<Http> {
        Ok(Http {
            stream: net.connect().await?,
            buf: Vec::new(),
        })
    }

    async fn request(
        &mut self,
        net: &Net,
        method: &str,
        target: &str,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<Reply> {
        let mut out = String::with_capacity(128 + target.len());
        let _ = write!(out, "{method} {target} HTTP/1.1\r\nHost: {}\r\n", net.host);
        if method == "POST" {
            let _ = write!(
                out,
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        out.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).await?;
        let mut reply = self.read_reply().await?;
        reply.close |= !keep_alive;
        Ok(reply)
    }

    /// Reads more bytes into the buffer; an error at end of stream.
    async fn fill(&mut self) -> io::Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + 4096, 0);
        let read = self.stream.read(&mut self.buf[old..]).await;
        self.buf.truncate(old + *read.as_ref().unwrap_or(&0));
        match read? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    async fn need(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(())
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io_error("chunk size line too long"));
            }
            self.fill().await?;
        }
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf).map_err(io_error)? {
                httparse::Status::Partial => {
                    if self.buf.len() > 64 * 1024 {
                        return Err(io_error("response head too long"));
                    }
                    self.fill().await?;
                }
                httparse::Status::Complete(head_len) => {
                    let status = response.code.unwrap_or(0);
                    let mut close = response.version == Some(0);
                    let mut length = None;
                    let mut chunked = false;
                    for header in response.headers.iter() {
                        let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                        if header.name.eq_ignore_ascii_case("content-length") {
                            length = Some(value.trim().parse::<usize>().map_err(io_error)?);
                        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.contains("chunked");
                        } else if header.name.eq_ignore_ascii_case("connection") {
                            if value.contains("close") {
                                close = true;
                            } else if value.contains("keep-alive") {
                                close = false;
                            }
                        }
                    }
                    self.buf.drain(..head_len);
                    let body = if chunked {
                        self.read_chunked().await?
                    } else if let Some(length) = length {
                        self.need(length).await?;
                        self.buf.drain(..length).collect()
                    } else {
                        close = true;
                        while self.fill().await.is_ok() {}
                        std::mem::take(&mut self.buf)
                    };
                    return Ok(Reply {
                        status,
                        body,
                        close,
                    });
                }
            }
        }
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(io_error)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            self.need(size + 2).await?;
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// GET `path` and parse the JSON body.
async fn get_json(net: &Net, path: &str) -> Result<Value, String> {
    let mut http = Http::open(net).await.map_err(|e| e.to_string())?;
    let reply = http
        .request(net, "GET", path, b"", false)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("GET {path} answered {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("GET {path}: {e}"))
}

/// The number of registered users according to GET /users.
async fn users_online(net: &Net) -> Result<u64, String> {
    let users = get_json(net, "/users").await?;
    users["totalUsers"]
        .as_u64()
        .or_else(|| users["connectedUsers"].as_array().map(|a| a.len() as u64))
        .ok_or_else(|| format!("GET /users: no totalUsers in {users}"))
}

type WsStream = Async<TcpStream>;

/// The sending half of one Engine.IO session.
enum Tx {
    Ws(WebSocketSender<WsStream>),
    Polling {
        net: Rc<Net>,
        target: String,
        conn: Option<Http>,
        keep: bool,
    },
}

impl Tx {
    /// Sends Engine.IO packets (type digit and data each): one WebSocket
    /// message per packet, or one POST for all of them.
    async fn send(&mut self, packets: &[&str]) -> io::Result<()> {
        match self {
            Tx::Ws(ws) => {
                // Frames are gathered and flushed once, so a burst costs one
                // system call: the generator must not be what limits a run.
                for packet in packets {
                    future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
                        .await
                        .map_err(io_error)?;
                    Pin::new(&mut *ws)
                        .start_send(Message::text(*packet))
                        .map_err(io_error)?;
                }
                future::poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
                    .await
                    .map_err(io_error)
            }
            Tx::Polling {
                net,
                target,
                conn,
                keep,
            } => {
                let body = packets.join("\x1e");
                let reused = conn.is_some();
                let mut http = match conn.take() {
                    Some(http) => http,
                    None => Http::open(net).await?,
                };
                let reply = match http
                    .request(net, "POST", target, body.as_bytes(), *keep)
                    .await
                {
                    Ok(reply) => reply,
                    // A kept connection the server closed while it idled:
                    // once more on a fresh one.
                    Err(_) if reused => {
                        http = Http::open(net).await?;
                        http.request(net, "POST", target, body.as_bytes(), *keep)
                            .await?
                    }
                    Err(error) => return Err(error),
                };
                if reply.status != 200 {
                    return Err(io_error(format!(
                        "POST answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    )));
                }
                if !reply.close {
                    *conn = Some(http);
                }
                Ok(())
            }
        }
    }
}

/// The receiving half of one Engine.IO session.
enum Rx {
    Ws(WebSocketReceiver<WsStream>),
    Polling {
        net: Rc<Net>,
        target: String,
        conn: Option<Http>,
        queue: VecDeque<String>,
    },
}

impl Rx {
    /// The next Engine.IO packet; an error once the session is gone.
    async fn next(&mut self) -> io::Result<String> {
        match self {
            Rx::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                    Some(Ok(Message::Close(_))) | None => {
                        return Err(io_error("websocket closed"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(io_error(error)),
                }
            },
            Rx::Polling {
                net,
                target,
                conn,
                queue,
            } => loop {
                if let Some(packet) = queue.pop_front() {
                    return Ok(packet);
                }
                let mut http = match conn.take() {
                    Some(http) => http,
                    None => Http::open(net).await?,
                };
                let reply = http.request(net, "GET", target, b"", true).await?;
                if reply.status != 200 {
                    return Err(io_error(format!(
                        "poll answered {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    )));
                }
                let body = String::from_utf8(reply.body).map_err(io_error)?;
                queue.extend(
                    body.split('\x1e')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                );
                if !reply.close {
                    *conn = Some(http);
                }
            },
        }
    }
}

/// What a client's reader saw: pings answered, and why the session ended.
#[derive(Default)]
struct ClientState {
    pings: Cell<u32>,
    closed: RefCell<Option<String>>,
}

/// One Socket.IO client on the default namespace. A reader task answers
/// pings and queues the Socket.IO packets (`42[…]`) for whoever waits on
/// `events`; dropping the client resets its TCP connections.
struct Client {
    name: String,
    polling: bool,
    tx: Rc<Mutex<Tx>>,
    events: channel::Receiver<String>,
    state: Rc<ClientState>,
    ping_interval: Duration,
    _reader: Task<()>,
}

#[derive(Debug)]
enum Fail {
    Timeout(String),
    Closed(String),
    Unexpected(String),
    Send(String),
}

impl Fail {
    fn kind(&self) -> String {
        match self {
            Fail::Timeout(what) => format!("timeout waiting for {what}"),
            Fail::Closed(why) => format!("session closed: {why}"),
            Fail::Unexpected(event) => format!("unexpected {event}"),
            Fail::Send(why) => format!("send failed: {why}"),
        }
    }
}

/// Events that mean a call step failed, when another one was awaited.
const FAILURE_EVENTS: &[&str] = &[
    "call_failed",
    "call_busy",
    "call_declined",
    "call_timeout",
    "force_disconnect",
    "signaling_error",
];

/// The event name of a Socket.IO EVENT packet as queued (`42["name",…]`).
fn event_name(packet: &str) -> Option<&str> {
    let rest = packet.strip_prefix("42")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix("[\"")?;
    Some(&rest[..rest.find('"')?])
}

/// The first argument of an EVENT packet.
fn event_payload(packet: &str) -> Option<Value> {
    let start = packet.find('[')?;
    match serde_json::from_str::<Value>(&packet[start..]).ok()? {
        Value::Array(mut items) if items.len() > 1 => Some(items.swap_remove(1)),
        _ => None,
    }
}

/// `42["event",payload]`.
fn event_packet(event: &str, payload: &Value) -> String {
    format!("42[\"{event}\",{payload}]")
}

impl Client {
    /// Opens an Engine.IO session (WebSocket or polling), joins the default
    /// namespace and starts the reader. `keep_posts` keeps a polling client's
    /// POST connection open between sends (else each POST has its own).
    async fn connect(
        net: &Rc<Net>,
        name: String,
        polling: bool,
        keep_posts: bool,
    ) -> Result<Client, String> {
        let (mut tx, mut rx, open) = if polling {
            let target = format!("{}?EIO=4&transport=polling", net.path);
            let mut http = Http::open(net).await.map_err(|e| format!("connect: {e}"))?;
            let reply = http
                .request(net, "GET", &target, b"", true)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if reply.status != 200 {
                return Err(format!("handshake answered {}", reply.status));
            }
            let body = String::from_utf8(reply.body).map_err(|e| e.to_string())?;
            let mut packets = body.split('\x1e').map(str::to_owned);
            let open = packets.next().unwrap_or_default();
            let sid = open
                .strip_prefix('0')
                .and_then(|o| serde_json::from_str::<Value>(o).ok())
                .and_then(|o| o["sid"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("bad open packet {open:?}"))?;
            let target = format!("{target}&sid={sid}");
            let tx = Tx::Polling {
                net: net.clone(),
                target: target.clone(),
                conn: None,
                keep: keep_posts,
            };
            let rx = Rx::Polling {
                net: net.clone(),
                target,
                conn: (!reply.close).then_some(http),
                queue: packets.collect(),
            };
            (tx, rx, open)
        } else {
            let stream = net.connect().await.map_err(|e| format!("connect: {e}"))?;
            let url = format!("ws://{}{}?EIO=4&transport=websocket", net.host, net.path);
            let config = WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(0);
            let (ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(config))
                .await
                .map_err(|e| format!("websocket handshake: {e}"))?;
            let (sender, receiver) = ws.split();
            let mut rx = Rx::Ws(receiver);
            let open = rx.next().await.map_err(|e| format!("open packet: {e}"))?;
            (Tx::Ws(sender), rx, open)
        };
        let ping_interval = open
            .strip_prefix('0')
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
            .and_then(|o| o["pingInterval"].as_u64())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("bad open packet {open:?}"))?;

        tx.send(&["40"])
            .await
            .map_err(|e| format!("namespace connect: {e}"))?;
        loop {
            let packet = rx
                .next()
                .await
                .map_err(|e| format!("namespace connect: {e}"))?;
            if packet.starts_with("40") {
                break;
            } else if packet.starts_with("44") {
                return Err(format!("namespace refused: {packet}"));
            } else if packet == "2" {
                tx.send(&["3"]).await.map_err(|e| format!("pong: {e}"))?;
            } else if packet.starts_with('1') {
                return Err("session closed during connect".into());
            }
        }

        let tx = Rc::new(Mutex::new(tx));
        let state = Rc::new(ClientState::default());
        let (queue, events) = channel::unbounded();
        let reader = spawn(read_loop(rx, tx.clone(), queue, state.clone()));
        Ok(Client {
            name,
            polling,
            tx,
            events,
            state,
            ping_interval,
            _reader: reader,
        })
    }

    async fn send(&self, packets: &[&str]) -> Result<(), Fail> {
        self.tx
            .lock()
            .await
            .send(packets)
            .await
            .map_err(|e| Fail::Send(e.to_string()))
    }

    async fn emit(&self, event: &str, payload: Value) -> Result<(), Fail> {
        self.send(&[&event_packet(event, &payload)]).await
    }

    /// Waits for `event`; other events are tallied and skipped, except the
    /// ones that say a call failed.
    async fn expect(&self, event: &str, timeout: Duration) -> Result<String, Fail> {
        self.expect_skipping(event, timeout, &[]).await
    }

    /// `expect`, skipping the `benign` events without tallying them.
    async fn expect_skipping(
        &self,
        event: &str,
        timeout: Duration,
        benign: &[&str],
    ) -> Result<String, Fail> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = future::or(async { Some(self.events.recv().await) }, async {
                Timer::at(deadline).await;
                None
            })
            .await;
            let packet = match next {
                None => return Err(Fail::Timeout(event.to_owned())),
                Some(Err(_)) => {
                    let why = self.state.closed.borrow().clone().unwrap_or_default();
                    return Err(Fail::Closed(why));
                }
                Some(Ok(packet)) => packet,
            };
            match event_name(&packet) {
                Some(name) if name == event => return Ok(packet),
                Some(name) if FAILURE_EVENTS.contains(&name) => {
                    return Err(Fail::Unexpected(format!("{name} awaiting {event}")));
                }
                Some(name) if benign.contains(&name) => {}
                Some(name) => tally(format!("skipped {name} awaiting {event}")),
                None => tally(format!("skipped packet {}", &packet[..packet.len().min(8)])),
            }
        }
    }

    /// Drops whatever events are queued.
    fn drain(&self) {
        while self.events.try_recv().is_ok() {}
    }

    /// register_user, then waits for a successful user_registered.
    async fn register(&self, timeout: Duration) -> Result<(), Fail> {
        self.emit("register_user", json!({ "userId": self.name }))
            .await?;
        let packet = self.expect("user_registered", timeout).await?;
        match event_payload(&packet) {
            Some(reply) if reply["success"] == Value::Bool(true) => Ok(()),
            _ => Err(Fail::Unexpected(format!("registration refused: {packet}"))),
        }
    }

    fn closed(&self) -> Option<String> {
        self.state.closed.borrow().clone()
    }

    /// Leaves as `socket.disconnect()` does: a namespace disconnect (`41`),
    /// then the Engine.IO close (a WebSocket close frame, or a `1` packet
    /// over polling); then waits until the server has closed the session,
    /// dropping whatever events were still queued.
    async fn close_politely(&self, timeout: Duration) -> Result<(), Fail> {
        within(timeout, "polite close", async {
            let mut tx = self.tx.lock().await;
            match &mut *tx {
                Tx::Ws(ws) => {
                    for message in [Message::text("41"), Message::Close(None)] {
                        future::poll_fn(|cx| Pin::new(&mut *ws).poll_ready(cx))
                            .await
                            .map_err(|e| e.to_string())?;
                        Pin::new(&mut *ws)
                            .start_send(message)
                            .map_err(|e| e.to_string())?;
                    }
                    future::poll_fn(|cx| Pin::new(&mut *ws).poll_flush(cx))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Tx::Polling { .. } => tx.send(&["41", "1"]).await.map_err(|e| e.to_string())?,
            }
            drop(tx);
            while self.events.recv().await.is_ok() {}
            Ok(())
        })
        .await
        .map_err(|e| {
            if e.starts_with("timeout") {
                Fail::Timeout("the server to close the session".into())
            } else {
                Fail::Send(e)
            }
        })
    }
}

async fn read_loop(
    mut rx: Rx,
    tx: Rc<Mutex<Tx>>,
    queue: channel::Sender<String>,
    state: Rc<ClientState>,
) {
    let why = loop {
        let packet = match rx.next().await {
            Ok(packet) => packet,
            Err(error) => break error.to_string(),
        };
        match packet.as_bytes().first() {
            Some(b'2') => {
                if let Err(error) = tx.lock().await.send(&["3"]).await {
                    break format!("pong: {error}");
                }
                state.pings.set(state.pings.get() + 1);
            }
            Some(b'4') => {
                if packet.starts_with("41") {
                    break "server disconnected the namespace".into();
                }
                let _ = queue.try_send(packet);
            }
            Some(b'1') => break "server closed the session".into(),
            _ => {}
        }
    };
    state.closed.replace(Some(why));
    queue.close();
}

// ---------------------------------------------------------------------------
// Statistics

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// p50/p99/max of nanosecond samples, in milliseconds.
fn summary_ms(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    json!({
        "n": samples.len(),
        "p50_ms": ms(percentile(samples, 50.0)),
        "p99_ms": ms(percentile(samples, 99.0)),
        "max_ms": ms(samples.last().copied().unwrap_or(0)),
    })
}

/// How many samples fall between each pair of edges (in ms), the key
/// naming the upper edge: shows steps such as the 1 s and 3 s of TCP SYN
/// retransmissions.
fn buckets_ms(samples: &[u64]) -> Value {
    const EDGES: [u64; 7] = [10, 100, 500, 1000, 2000, 3000, 5000];
    let mut counts = [0u64; EDGES.len() + 1];
    for &ns in samples {
        let ms = ns / 1_000_000;
        counts[EDGES
            .iter()
            .position(|&edge| ms < edge)
            .unwrap_or(EDGES.len())] += 1;
    }
    let mut out = serde_json::Map::new();
    for (i, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let label = match EDGES.get(i) {
            Some(edge) => format!("<{edge}"),
            None => format!(">={}", EDGES[EDGES.len() - 1]),
        };
        out.insert(label, n.into());
    }
    Value::Object(out)
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

// ---------------------------------------------------------------------------
// Scenarios

struct Ctx {
    opts: Opts,
    net: Rc<Net>,
    /// Cross-node: the callees' server.
    callee_net: Option<Rc<Net>>,
    sdp: String,
}

impl Ctx {
    fn name(&self, i: usize) -> String {
        format!("{}{i}", self.opts.prefix)
    }

    /// Spreads polling clients evenly: client `i` polls when the running
    /// count of polling clients steps up at `i`.
    fn polling(&self, i: usize) -> bool {
        let share = self.opts.polling_share;
        ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
    }

    fn sample(&self) -> Option<Sample> {
        sample_process(self.opts.server_pid)
    }

    /// The server client `i` connects to: callees (odd) go to the other
    /// node in cross-node runs.
    fn net_for(&self, i: usize) -> &Rc<Net> {
        match &self.callee_net {
            Some(net) if i % 2 == 1 => net,
            _ => &self.net,
        }
    }
}

/// Connects and registers one client, within the timeout.
async fn join(ctx: &Ctx, i: usize, keep_posts: bool) -> Result<Client, String> {
    let timeout = ctx.opts.timeout;
    within(timeout, "connect and register", async {
        let net = ctx.net_for(i);
        let client = Client::connect(net, ctx.name(i), ctx.polling(i), keep_posts).await?;
        client
            .register(timeout)
            .await
            .map_err(|f| format!("register: {}", f.kind()))?;
        Ok(client)
    })
    .await
}

struct Joined {
    clients: Vec<Option<Client>>,
    setup_ns: Vec<u64>,
    failures: usize,
}

/// Connects and registers clients 0..n, `--concurrency` at a time.
async fn join_many(ctx: &Rc<Ctx>, n: usize, keep_posts: bool) -> Joined {
    let slots: Rc<RefCell<Vec<Option<Client>>>> =
        Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let setup_ns = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let failures = Rc::new(Cell::new(0));
    let next = Rc::new(Cell::new(0));
    let workers: Vec<Task<()>> = (0..ctx.opts.concurrency.min(n))
        .map(|_| {
            let (ctx, slots, setup_ns, failures, next) = (
                ctx.clone(),
                slots.clone(),
                setup_ns.clone(),
                failures.clone(),
                next.clone(),
            );
            spawn(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        break;
                    }
                    next.set(i + 1);
                    let start = Instant::now();
                    match join(&ctx, i, keep_posts).await {
                        Ok(client) => {
                            setup_ns
                                .borrow_mut()
                                .push(start.elapsed().as_nanos() as u64);
                            slots.borrow_mut()[i] = Some(client);
                        }
                        Err(error) => {
                            failures.set(failures.get() + 1);
                            tally(format!("join: {error}"));
                        }
                    }
                }
            })
        })
        .collect();
    let mut last_report = Instant::now();
    for worker in workers {
        worker.await;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("loadgen: {} of {n} clients set up", next.get());
            last_report = Instant::now();
        }
    }
    let clients = std::mem::take(&mut *slots.borrow_mut());
    let setup_ns = std::mem::take(&mut *setup_ns.borrow_mut());
    Joined {
        clients,
        setup_ns,
        failures: failures.get(),
    }
}

fn fd_budget(opts: &Opts, clients: usize, keep_posts: bool, soft: u64) -> Result<(), String> {
    let per_client = if keep_posts {
        1.0 + opts.polling_share
    } else {
        1.0
    };
    let needed = (clients as f64 * per_client).ceil() as u64 + opts.concurrency as u64 + 64;
    if needed > soft {
        return Err(format!(
            "{clients} clients need about {needed} file descriptors, and this process may open {soft} \
             (ulimit -Hn): use fewer clients"
        ));
    }
    Ok(())
}

async fn hold(ctx: Rc<Ctx>) -> (Value, bool) {
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

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

/// A plausible SDP of about `bytes` bytes.
fn fake_sdp(bytes: usize) -> String {
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
async fn ring(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<u64, Fail> {
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

fn candidate_packet(from: &str, to: &str, seq: u64, ts: u64) -> String {
    format!(
        "42[\"ice_candidate\",{{\"to\":\"{to}\",\"from\":\"{from}\",\"candidate\":{{\"candidate\":\
         \"candidate:842163049 1 udp 1677729535 127.0.0.1 {port} typ srflx raddr 0.0.0.0 rport 0 \
         generation 0 ufrag Xk3f network-cost 999\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0,\
         \"usernameFragment\":\"Xk3f\",\"seq\":{seq},\"ts\":{ts}}}}}]",
        port = 40000 + seq % 20000
    )
}

/// The send timestamp inside a relayed candidate.
fn candidate_ts(packet: &str) -> Option<u64> {
    let at = packet.rfind("\"ts\":")? + 5;
    let digits = &packet[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn one_call(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<u64, Fail> {
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

async fn calls(ctx: Rc<Ctx>) -> (Value, bool) {
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

/// Per-direction relay state: the window of candidates in flight (a token
/// each) and how many were sent.
struct Lane {
    tokens: (channel::Sender<()>, channel::Receiver<()>),
    sent: Cell<u64>,
}

struct RelayStats {
    latencies: RefCell<Vec<u64>>,
    per_pair: RefCell<Vec<u64>>,
    in_window: Cell<u64>,
    received: Cell<u64>,
}

async fn relay_sender(
    from: Rc<Client>,
    to_name: String,
    lane: Rc<Lane>,
    end: Instant,
    window: usize,
) {
    let mut seq = 0u64;
    let mut batch: Vec<String> = Vec::with_capacity(window);
    loop {
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
        while n < window && lane.tokens.0.try_send(()).is_ok() {
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

async fn relay_receiver(
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

async fn relay(ctx: Rc<Ctx>) -> (Value, bool) {
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
    for &p in &active {
        let (Some(a), Some(b)) = (clients[2 * p].clone(), clients[2 * p + 1].clone()) else {
            continue;
        };
        for (from, to) in [(a.clone(), b.clone()), (b, a)] {
            let lane = Rc::new(Lane {
                tokens: channel::bounded(opts.window),
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
    println!(
        "relay: {} pairs ({polling_pairs} with a polling client), {:.1}s: {rate:.0} msgs/s relayed, {received}/{sent} received; \
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

async fn reconnect_storm(ctx: Rc<Ctx>) -> (Value, bool) {
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

// ---------------------------------------------------------------------------
// Soak: clients churn for a long time while the server is sampled

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

fn seed_rng(seed: u64) {
    RNG.with(|r| r.set(seed));
}

/// splitmix64: enough randomness for choosing what a client does next.
fn rand_u64() -> u64 {
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
fn rand_f64() -> f64 {
    (rand_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn chance(p: f64) -> bool {
    rand_f64() < p
}

/// Uniform in [0, max].
fn rand_duration(max: Duration) -> Duration {
    max.mul_f64(rand_f64())
}

/// Uniform in 1..=max (0 when max is 0).
fn rand_count(max: usize) -> usize {
    if max == 0 {
        0
    } else {
        1 + (rand_u64() % max as u64) as usize
    }
}

/// Soak clients come in pairs: the two ends of each call.
fn soak_pairs(count: usize) -> usize {
    count.div_ceil(2)
}

/// What a call is made to do. Each exercises another way for a call, and
/// its state in the server, to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
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

    fn name(self) -> &'static str {
        match self {
            Plan::Answered => "answered",
            Plan::Declined => "declined",
            Plan::HungUpRinging => "hung_up_ringing",
            Plan::DroppedMidCall => "dropped_mid_call",
            Plan::RangOut => "rang_out",
        }
    }

    fn pick() -> Plan {
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

    fn index(self) -> usize {
        Plan::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// Running counts shared by the soak's clients and its sampler.
#[derive(Default)]
struct SoakStats {
    /// Clients connected and registered right now.
    live: Cell<usize>,
    /// Sessions opened (connect + register succeeded).
    connects: Cell<u64>,
    /// Connect + register attempts that failed.
    join_errors: Cell<u64>,
    /// Calls that went as planned, all plans together, and per plan.
    calls: Cell<u64>,
    by_plan: RefCell<[u64; 5]>,
    /// Calls that did not, and how many of those were timeouts.
    call_errors: Cell<u64>,
    timeouts: Cell<u64>,
    /// How sessions ended: politely, or by dropping the TCP connection.
    polite: Cell<u64>,
    dropped: Cell<u64>,
    /// Polite closes the server did not finish within the timeout.
    close_errors: Cell<u64>,
    /// Call setup (make_call sent → call_answered received), since the
    /// last sample and in all.
    setup_recent: RefCell<Vec<u64>>,
    setup_all: RefCell<Vec<u64>>,
    join_all: RefCell<Vec<u64>>,
}

impl SoakStats {
    fn errors(&self) -> u64 {
        self.join_errors.get() + self.call_errors.get() + self.close_errors.get()
    }
}

/// A connected soak client; counts itself out of `live` when dropped
/// (which resets its TCP connections).
struct SoakClient {
    client: Client,
    stats: Rc<SoakStats>,
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
const SOAK_BENIGN: &[&str] = &["ice_servers"];

impl Client {
    /// Drops queued events, tallying any but the benign ones.
    fn drain_idle(&self) {
        while let Ok(packet) = self.events.try_recv() {
            match event_name(&packet) {
                Some(name) if SOAK_BENIGN.contains(&name) => {}
                Some(name) => tally(format!("soak: unexpected {name} while idle")),
                None => tally("soak: unexpected packet while idle"),
            }
        }
    }

    async fn soak_expect(&self, event: &str, timeout: Duration) -> Result<String, Fail> {
        self.expect_skipping(event, timeout, SOAK_BENIGN).await
    }
}

/// Connects and registers one soak client, at most `--concurrency` setting
/// up at once.
async fn soak_join(
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
async fn soak_ice(a: &Client, b: &Client, k: usize, timeout: Duration) -> Result<(), Fail> {
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
async fn soak_ring(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<(), Fail> {
    caller
        .emit(
            "make_call",
            json!({"to": callee.name, "from": caller.name, "offer": {"type": "offer", "sdp": ctx.sdp}}),
        )
        .await?;
    callee
        .soak_expect("incoming_call", ctx.opts.timeout)
        .await?;
    Ok(())
}

/// answer_call → call_answered.
async fn soak_answer(ctx: &Ctx, caller: &Client, callee: &Client) -> Result<(), Fail> {
    callee
        .emit(
            "answer_call",
            json!({"to": caller.name, "from": callee.name, "answer": {"type": "answer", "sdp": ctx.sdp}}),
        )
        .await?;
    caller
        .soak_expect("call_answered", ctx.opts.timeout)
        .await?;
    Ok(())
}

/// Ends a soak client's session: politely (namespace disconnect, then the
/// Engine.IO close, and the server closes its side) or by resetting the
/// TCP connection, as a device that loses power or network does.
async fn soak_leave(ctx: &Ctx, stats: &SoakStats, client: SoakClient, polite: bool) {
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
async fn soak_call(
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
async fn soak_pair(
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
struct SoakSample {
    t_s: f64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    cpu_s: Option<f64>,
    fds: Option<u64>,
    sessions: Option<u64>,
    users: Option<u64>,
    active_calls: Option<u64>,
    live: usize,
    connects: u64,
    calls: u64,
    errors: u64,
    setup_p99_ms: Option<f64>,
    loadgen_cpu_s: f64,
}

impl SoakSample {
    fn json(&self) -> Value {
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
fn status_kib(status: &str, field: &str) -> Option<u64> {
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
async fn get_text(net: &Net, path: &str) -> Result<(u16, String), String> {
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
async fn soak_server_sample(ctx: &Ctx, start: Instant) -> SoakSample {
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

async fn soak(ctx: Rc<Ctx>) -> (Value, bool) {
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

async fn run(opts: Opts, nofile: (u64, u64)) -> bool {
    let net = Rc::new(Net {
        addr: opts.addr,
        host: opts.host.clone(),
        path: opts.path.clone(),
        per_source: opts.per_source,
        opened: Cell::new(0),
        sources: Cell::new(0),
    });
    // The server must be there before anything is measured.
    if let Err(error) = within(opts.timeout, "GET /", get_json(&net, "/")).await {
        eprintln!("loadgen: no server at {}: {error}", opts.url);
        return false;
    }
    let callee_net = opts.callee.as_ref().map(|(_, addr, host)| {
        Rc::new(Net {
            addr: *addr,
            host: host.clone(),
            path: opts.path.clone(),
            per_source: opts.per_source,
            opened: Cell::new(0),
            sources: Cell::new(0),
        })
    });
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
        Scenario::Hold => hold(ctx.clone()).await,
        Scenario::Calls => calls(ctx.clone()).await,
        Scenario::Relay => relay(ctx.clone()).await,
        Scenario::ReconnectStorm => reconnect_storm(ctx.clone()).await,
        Scenario::Soak => soak(ctx.clone()).await,
    };
    let extra = json!({
        "url": ctx.opts.url,
        "callee_url": ctx.opts.callee.as_ref().map(|(url, ..)| url),
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
        Scenario::Hold | Scenario::ReconnectStorm => opts.count,
        Scenario::Soak => soak_pairs(opts.count) * 2,
    };
    let keep_posts = matches!(
        opts.scenario,
        Scenario::Calls | Scenario::Relay | Scenario::Soak
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
