//! The `signalbox` command: flags and environment → [`Config`] → serve.

use std::env;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use signalbox::Config;
use signalbox::config::{parse_count, parse_duration, parse_path, parse_rate, parse_size};
use signalbox::http::forwarded::Network;
use signalbox::signaling::cluster::{ClusterConfig, parse_prefix};
use signalbox::signaling::ice::parse_ice_url;

/// signalbox: a WebRTC signaling server for on-premises intercoms, speaking
/// Socket.IO v4. Every option can also be set with the environment variable
/// named after it (SIGNALBOX_LISTEN, SIGNALBOX_PING_INTERVAL, ...); a flag
/// wins over its variable.
#[derive(FromArgs)]
struct Args {
    /// address and port to listen on (default 0.0.0.0:3000; the PORT
    /// environment variable overrides the port; ignored when systemd passes
    /// a socket)
    #[argh(option)]
    listen: Option<SocketAddr>,
    /// path of the Socket.IO endpoint (default /socket.io/)
    #[argh(option, from_str_fn(parse_path))]
    path: Option<String>,
    /// how often the server pings each client (default 25s)
    #[argh(option, from_str_fn(parse_duration))]
    ping_interval: Option<Duration>,
    /// how long a client has to answer a ping (default 20s)
    #[argh(option, from_str_fn(parse_duration))]
    ping_timeout: Option<Duration>,
    /// also serve Engine.IO 3 / Socket.IO 2 clients (EIO=3, or no EIO)
    #[argh(switch)]
    allow_eio3: bool,
    /// how long a new connection may take to join a namespace (default 45s)
    #[argh(option, from_str_fn(parse_duration))]
    connect_timeout: Option<Duration>,
    /// largest message or polling body a client may send, in bytes (default 1000000)
    #[argh(option, from_str_fn(parse_size))]
    max_payload: Option<usize>,
    /// web origin allowed to connect; repeat for several (default: any
    /// origin; the variable takes a comma-separated list)
    #[argh(option)]
    cors_origin: Vec<String>,
    /// how long a call may ring unanswered (default 30s)
    #[argh(option, from_str_fn(parse_duration))]
    call_timeout: Option<Duration>,
    /// how long a socket whose connection was lost is kept for its client to
    /// recover it, with the events sent to it meanwhile (Socket.IO
    /// connection state recovery; default 2m, 0s turns it off)
    #[argh(option, from_str_fn(parse_duration))]
    recovery_window: Option<Duration>,
    /// events carry socket.io's offset as an extra last argument, so that
    /// those in flight when a connection died are sent again on recovery
    /// (handlers see one argument more)
    #[argh(switch)]
    recovery_offsets: bool,
    /// how long a user whose connection was lost stays registered, and in
    /// their call, for their client to come back (default 10s, 0s: they
    /// leave at once)
    #[argh(option, from_str_fn(parse_duration))]
    reconnect_grace: Option<Duration>,
    /// the longest an answered call may last; both parties hear
    /// call_ending ten seconds before (default: no limit; a user's max_call
    /// in the directory may be shorter)
    #[argh(option, from_str_fn(parse_duration))]
    max_call_duration: Option<Duration>,
    /// the directory file (TOML): users with several devices, ring groups,
    /// forwarding when nobody answers, who may call whom; SIGHUP reloads it
    /// (default: none, each name is one device)
    #[argh(option)]
    directory: Option<PathBuf>,
    /// where what outlives a restart is kept: the VAPID key (default: none,
    /// in memory)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// the VAPID key that signs Web Push messages, PEM or public=/private=
    /// lines (default: made once and kept in --state-dir, or in memory)
    #[argh(option)]
    vapid_key_file: Option<PathBuf>,
    /// a push service that may be reached over http or at a private
    /// address, such as a LAN ntfy (repeatable; default: public https only)
    #[argh(option)]
    push_allow: Vec<String>,
    /// how push services reach whoever runs this server: the VAPID `sub`,
    /// a mailto: or https: URL (default mailto:admin@localhost)
    #[argh(option)]
    push_contact: Option<String>,
    /// how long a shutdown may take to end calls and close sessions (default 5s)
    #[argh(option, from_str_fn(parse_duration))]
    shutdown_timeout: Option<Duration>,
    /// a STUN or TURN server for clients, such as stun:stun.example.org:3478;
    /// repeat for several (the variable takes a comma-separated list)
    #[argh(option, from_str_fn(parse_ice_url))]
    ice_server: Vec<String>,
    /// file holding the secret shared with coturn (use-auth-secret); TURN
    /// servers then get short-lived credentials per user
    #[argh(option)]
    turn_secret_file: Option<PathBuf>,
    /// how long minted TURN credentials stay valid (default 24h)
    #[argh(option, from_str_fn(parse_duration))]
    turn_ttl: Option<Duration>,
    /// certificate chain (PEM) to serve HTTPS and WSS with; needs --tls-key;
    /// SIGHUP reloads it
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// private key (PEM) of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// file holding the secret that signs client tokens; with it, clients
    /// must connect with a token (auth {token}) and may register only the
    /// name inside it (default: no tokens)
    #[argh(option)]
    auth_secret_file: Option<PathBuf>,
    /// the most connections open at once (default 25000)
    #[argh(option, from_str_fn(parse_count))]
    max_connections: Option<usize>,
    /// the most connections from one IP address; loopback and trusted proxies are exempt (default 500)
    #[argh(option, from_str_fn(parse_count))]
    max_connections_per_ip: Option<usize>,
    /// time allowed for a request head or body once it started (default 10s)
    #[argh(option, from_str_fn(parse_duration))]
    request_timeout: Option<Duration>,
    /// time an idle kept-alive HTTP connection stays open (default 60s)
    #[argh(option, from_str_fn(parse_duration))]
    idle_timeout: Option<Duration>,
    /// a reverse proxy (address or network, such as 127.0.0.1 or
    /// 10.0.0.0/8) whose X-Forwarded-For names the client for every
    /// per-address limit and the logs; repeat for several (default: none,
    /// the header is ignored; the variable takes a comma-separated list)
    #[argh(option, from_str_fn(parse_network))]
    trusted_proxy: Vec<Network>,
    /// handshakes (new Engine.IO sessions) one client address may make per second on
    /// average (default 100)
    #[argh(option, from_str_fn(parse_rate))]
    handshake_rate: Option<f64>,
    /// handshakes one client address may make in a burst (default 1000)
    #[argh(option, from_str_fn(parse_rate))]
    handshake_burst: Option<f64>,
    /// sessions that joined no namespace one client address may hold (default 1000)
    #[argh(option, from_str_fn(parse_count))]
    max_unjoined_per_ip: Option<usize>,
    /// sessions that joined no namespace one TCP connection may hold (default 8)
    #[argh(option, from_str_fn(parse_count))]
    max_unjoined_per_connection: Option<usize>,
    /// the most sessions on long-polling at once (default 5000)
    #[argh(option, from_str_fn(parse_count))]
    max_polling_sessions: Option<usize>,
    /// the most bytes queued for one client before it is dropped as too
    /// slow (default twice --max-payload)
    #[argh(option, from_str_fn(parse_size))]
    max_buffered: Option<usize>,
    /// the most bytes all sessions together may have queued or waiting for
    /// the rest of a message; past it, the session that adds more is
    /// dropped as too slow (default 64m)
    #[argh(option, from_str_fn(parse_size))]
    max_pending_bytes: Option<usize>,
    /// largest SDP offer or answer, in bytes of JSON (default 64k)
    #[argh(option, from_str_fn(parse_size))]
    max_sdp_bytes: Option<usize>,
    /// largest ICE candidate, in bytes of JSON (default 4k)
    #[argh(option, from_str_fn(parse_size))]
    max_candidate_bytes: Option<usize>,
    /// events a socket may send per second on average (default 50)
    #[argh(option, from_str_fn(parse_rate))]
    event_rate: Option<f64>,
    /// events a socket may send in a burst (default 100)
    #[argh(option, from_str_fn(parse_rate))]
    event_burst: Option<f64>,
    /// calls a user may start per minute on average, in bursts of as many (default 10)
    #[argh(option, from_str_fn(parse_rate))]
    calls_per_minute: Option<f64>,
    /// the Redis server that joins several signalbox nodes into one intercom,
    /// such as redis://10.0.0.5:6379/0 (default: none, a single node)
    #[argh(option)]
    redis: Option<String>,
    /// prefix of every Redis key and channel, for several intercoms on one
    /// Redis (default signalbox:)
    #[argh(option, from_str_fn(parse_prefix))]
    redis_prefix: Option<String>,
    /// how long a node's users stay listed in Redis after the node stops
    /// refreshing them, as when it died (default 10s)
    #[argh(option, from_str_fn(parse_duration))]
    presence_ttl: Option<Duration>,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, from_str_fn(parse_log_level))]
    log_level: Option<log::LevelFilter>,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Token(TokenArgs),
    VapidKey(VapidKeyArgs),
}

/// Print a new VAPID key (PEM, for --vapid-key-file) and its public part.
#[derive(FromArgs)]
#[argh(subcommand, name = "vapid-key")]
struct VapidKeyArgs {}

/// `signalbox vapid-key`: a new key on stdout, PEM then its public part.
fn print_vapid_key() -> Result<(), String> {
    let key = signalbox::push::crypto::VapidKey::generate().map_err(|error| error.to_string())?;
    print!("{}", key.to_pem());
    println!("# public={}", key.public_key_base64url());
    Ok(())
}

/// Print a client token for a user, signed with the auth secret.
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
struct TokenArgs {
    /// the user name the token lets its holder register
    #[argh(option)]
    user: Option<String>,
    /// a token for the installer's pages instead (GET /directory), which
    /// registers no name
    #[argh(switch)]
    admin: bool,
    /// how long the token stays valid (default 30d)
    #[argh(
        option,
        from_str_fn(parse_duration),
        default = "Duration::from_secs(30 * 86_400)"
    )]
    ttl: Duration,
    /// file holding the auth secret (default: SIGNALBOX_AUTH_SECRET_FILE, or the
    /// --auth-secret-file given before `token`)
    #[argh(option)]
    auth_secret_file: Option<PathBuf>,
}

/// `signalbox token`: prints a token on stdout.
fn print_token(args: TokenArgs, outer: Option<PathBuf>) -> Result<(), String> {
    let user = match (args.user, args.admin) {
        (None, true) => signalbox::auth::ADMIN.to_owned(),
        (Some(_), true) => return Err("give --user or --admin, not both".into()),
        (None, false) => return Err("give --user NAME (or --admin)".into()),
        (Some(user), false) if !signalbox::signaling::protocol::valid_user_name(&user) => {
            return Err(format!(
                "invalid user name {user:?}: use 1 to 64 characters from A-Z a-z 0-9 _ - . @"
            ));
        }
        (Some(user), false) => user,
    };
    let secret = secret(
        args.auth_secret_file.or(outer),
        "SIGNALBOX_AUTH_SECRET_FILE",
    )?
    .ok_or("no auth secret: give --auth-secret-file or set SIGNALBOX_AUTH_SECRET_FILE")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expiry = now.saturating_add(args.ttl.as_secs());
    println!("{}", signalbox::auth::mint(&secret, &user, expiry));
    Ok(())
}

fn parse_contact(text: &str) -> Result<String, String> {
    let fine = (text.starts_with("mailto:") || text.starts_with("https://"))
        && !text.bytes().any(|b| b <= b' ' || b == b'"' || b == b'\\');
    if fine {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid push contact {text:?}: expected a mailto: or https: URL"
        ))
    }
}

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid switch {text:?}: expected true or false")),
    }
}

fn parse_network(text: &str) -> Result<Network, String> {
    text.parse()
}

fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    signalbox::logging::parse_level(text)
}

/// The flag's value, else its environment variable's, parsed.
fn or_env<T>(
    flag: Option<T>,
    variable: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env::var(variable) {
        Ok(value) if !value.trim().is_empty() => parse(value.trim())
            .map(Some)
            .map_err(|error| format!("{variable}: {error}")),
        _ => Ok(None),
    }
}

/// The secret in the file the flag or variable names.
fn secret(flag: Option<PathBuf>, variable: &str) -> Result<Option<Vec<u8>>, String> {
    or_env(flag, variable, |v| Ok(PathBuf::from(v)))?
        .map(|path| signalbox::auth::read_secret(&path).map_err(|e| e.to_string()))
        .transpose()
}

/// The secret in the file the flag or variable names, which must be text.
fn text_secret(flag: Option<PathBuf>, variable: &str) -> Result<Option<String>, String> {
    or_env(flag, variable, |v| Ok(PathBuf::from(v)))?
        .map(|path| signalbox::auth::read_text_secret(&path).map_err(|e| e.to_string()))
        .transpose()
}

/// A list variable: items separated by commas or spaces.
fn list_env(variable: &str) -> Vec<String> {
    env::var(variable)
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The variable of a flag: `SIGNALBOX_` and its name in capitals
/// (`ping_interval` → `SIGNALBOX_PING_INTERVAL`).
fn variable(flag: &str) -> String {
    format!("SIGNALBOX_{}", flag.to_ascii_uppercase())
}

/// One setting: the flag's value, else its variable's, parsed, into `$slot`.
macro_rules! setting {
    ($args:ident.$flag:ident => $slot:expr, $parse:expr) => {
        if let Some(value) = or_env($args.$flag.take(), &variable(stringify!($flag)), $parse)? {
            $slot = value;
        }
    };
}

/// An on/off setting: the switch, else its variable (`true`/`false`,
/// `1`/`0`, `yes`/`no`, `on`/`off`).
macro_rules! switch_setting {
    ($args:ident.$flag:ident => $slot:expr) => {
        if $args.$flag {
            $slot = true;
        } else if let Some(value) = or_env(None, &variable(stringify!($flag)), parse_switch)? {
            $slot = value;
        }
    };
}

/// A repeatable setting: the flags, else its variable's comma-separated
/// items, each parsed, into `$slot`.
macro_rules! list_setting {
    ($args:ident.$flag:ident => $slot:expr, $parse:expr) => {
        let given = std::mem::take(&mut $args.$flag);
        $slot = if given.is_empty() {
            let name = variable(stringify!($flag));
            list_env(&name)
                .iter()
                .map(|item| $parse(item))
                .collect::<Result<_, String>>()
                .map_err(|error| format!("{name}: {error}"))?
        } else {
            given
        };
    };
}

fn config(mut args: Args) -> Result<Config, String> {
    let mut c = Config::default();
    let address = |v: &str| {
        v.parse()
            .map_err(|_| format!("invalid address {v:?}: expected ADDR:PORT"))
    };
    let path = |v: &str| Ok(PathBuf::from(v));
    let text = |v: &str| Ok(v.to_owned());

    // Each line: flag (and variable) => where it goes, how it is read.
    setting!(args.listen => c.listen, address);
    setting!(args.path => c.path, parse_path);
    setting!(args.ping_interval => c.engine.ping_interval, parse_duration);
    switch_setting!(args.allow_eio3 => c.engine.allow_eio3);
    setting!(args.ping_timeout => c.engine.ping_timeout, parse_duration);
    setting!(args.connect_timeout => c.socketio.connect_timeout, parse_duration);
    setting!(args.max_payload => c.engine.max_payload, parse_size);
    list_setting!(args.cors_origin => c.cors_origins, text);
    setting!(args.call_timeout => c.signaling.call_timeout, parse_duration);
    setting!(args.recovery_window => c.socketio.recovery.window, parse_duration);
    switch_setting!(args.recovery_offsets => c.socketio.recovery.offsets);
    setting!(args.reconnect_grace => c.signaling.reconnect_grace, parse_duration);
    let mut max_call = Duration::ZERO;
    setting!(args.max_call_duration => max_call, parse_duration);
    c.signaling.max_call_duration = Some(max_call).filter(|max| !max.is_zero());
    setting!(args.shutdown_timeout => c.shutdown_timeout, parse_duration);
    list_setting!(args.ice_server => c.signaling.ice.urls, parse_ice_url);
    setting!(args.turn_ttl => c.signaling.ice.turn_ttl, parse_duration);
    setting!(args.max_connections => c.http.max_connections, parse_count);
    setting!(args.max_connections_per_ip => c.http.max_connections_per_ip, parse_count);
    setting!(args.request_timeout => c.http.request_timeout, parse_duration);
    setting!(args.idle_timeout => c.http.idle_timeout, parse_duration);
    list_setting!(args.trusted_proxy => c.trusted_proxies, parse_network);
    setting!(args.handshake_rate => c.engine.handshakes.rate, parse_rate);
    setting!(args.handshake_burst => c.engine.handshakes.burst, parse_rate);
    setting!(args.max_unjoined_per_ip => c.engine.handshakes.max_unjoined_per_ip, parse_count);
    setting!(args.max_unjoined_per_connection => c.engine.handshakes.max_unjoined_per_connection, parse_count);
    setting!(args.max_polling_sessions => c.engine.max_polling_sessions, parse_count);
    if let Some(limit) = or_env(
        args.max_buffered.take(),
        &variable("max_buffered"),
        parse_size,
    )? {
        c.engine.buffer_limit = Some(limit);
    }
    setting!(args.max_pending_bytes => c.engine.max_pending_bytes, parse_size);
    setting!(args.max_sdp_bytes => c.signaling.limits.max_sdp_bytes, parse_size);
    setting!(args.max_candidate_bytes => c.signaling.limits.max_candidate_bytes, parse_size);
    setting!(args.event_rate => c.signaling.limits.event_rate, parse_rate);
    setting!(args.event_burst => c.signaling.limits.event_burst, parse_rate);
    setting!(args.calls_per_minute => c.signaling.limits.calls_per_minute, parse_rate);

    // Settings that take more than one slot, or read a file.
    // Binary attachments are bounded as messages are.
    c.socketio.max_attachment_bytes = c.engine.max_payload;
    // Calls come in bursts of as many as a minute allows.
    c.signaling.limits.call_burst = c.signaling.limits.calls_per_minute;
    if let Ok(port) = env::var("PORT").map(|p| p.trim().to_owned())
        && !port.is_empty()
    {
        let port = port
            .parse()
            .map_err(|_| format!("invalid PORT {port:?}: expected a port number"))?;
        c.listen.set_port(port);
    }
    c.signaling.directory = or_env(args.directory, &variable("directory"), path)?;
    c.signaling.state_dir = or_env(args.state_dir, &variable("state_dir"), path)?;
    c.signaling.push.vapid_key_file =
        or_env(args.vapid_key_file, &variable("vapid_key_file"), path)?;
    list_setting!(args.push_allow => c.signaling.push.allow, text);
    setting!(args.push_contact => c.signaling.push.contact, parse_contact);
    let cert = or_env(args.tls_cert, &variable("tls_cert"), path)?;
    let key = or_env(args.tls_key, &variable("tls_key"), path)?;
    c.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    c.signaling.ice.turn_secret =
        text_secret(args.turn_secret_file, &variable("turn_secret_file"))?;
    c.signaling.auth_secret = secret(args.auth_secret_file, &variable("auth_secret_file"))?;
    if let Some(url) = or_env(args.redis, &variable("redis"), text)? {
        let mut cluster = ClusterConfig {
            url,
            ..ClusterConfig::default()
        };
        setting!(args.redis_prefix => cluster.prefix, parse_prefix);
        setting!(args.presence_ttl => cluster.presence_ttl, parse_duration);
        if cluster.presence_ttl < Duration::from_secs(1) {
            return Err("--presence-ttl must be at least 1s".into());
        }
        c.cluster = Some(cluster);
    }
    c.check().map_err(|error| error.to_string())?;
    Ok(c)
}

/// Lets the process open as many files as its hard limit allows: every
/// client is a socket, and the usual soft limit of 1024 would hold a server
/// started by hand to about a thousand clients. (The systemd unit sets both
/// limits with LimitNOFILE.)
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return;
    };
    if current >= maximum {
        return;
    }
    let raised = Rlimit {
        current: Some(maximum),
        maximum: Some(maximum),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => log::debug!("open files limit raised from {current} to {maximum}"),
        Err(error) => log::warn!("cannot raise the open files limit from {current}: {error}"),
    }
}

fn main() -> ExitCode {
    let mut args: Args = argh::from_env();
    if args.version {
        println!("signalbox {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let command = match args.command.take() {
        Some(Command::Token(token)) => {
            Some(("token", print_token(token, args.auth_secret_file.take())))
        }
        Some(Command::VapidKey(_)) => Some(("vapid-key", print_vapid_key())),
        None => None,
    };
    if let Some((name, result)) = command {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("signalbox {name}: {error}");
                ExitCode::from(2)
            }
        };
    }
    let level = match or_env(
        args.log_level.take(),
        "SIGNALBOX_LOG_LEVEL",
        parse_log_level,
    ) {
        Ok(level) => level.unwrap_or(log::LevelFilter::Info),
        Err(error) => {
            // Logged like every other start-up error, so that the journal
            // files it as an error.
            signalbox::logging::init(log::LevelFilter::Error);
            log::error!("{error}");
            return ExitCode::from(2);
        }
    };
    signalbox::logging::init(level);
    raise_open_files_limit();
    let config = match config(args) {
        Ok(config) => config,
        Err(error) => {
            log::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let listener = match signalbox::systemd::inherited_listener() {
        Some(listener) => listener,
        None => match signalbox::server::listen(config.listen) {
            Ok(listener) => listener,
            Err(error) => {
                log::error!("cannot listen on {}: {error}", config.listen);
                return ExitCode::FAILURE;
            }
        },
    };
    match signalbox::serve(listener, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
