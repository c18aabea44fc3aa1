//! The `signalbox` command: flags → [`Config`] → serve.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use signalbox::Config;
use signalbox::config::{parse_duration, parse_path, parse_size};

/// signalbox: a WebRTC signaling server for on-premises intercoms, speaking Socket.IO v4.
#[derive(FromArgs)]
struct Args {
    /// address and port to listen on (default 0.0.0.0:3000; the PORT
    /// environment variable overrides the port)
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
    /// how long a new connection may take to join a namespace (default 45s)
    #[argh(option, from_str_fn(parse_duration))]
    connect_timeout: Option<Duration>,
    /// largest message or polling body a client may send, in bytes (default 1000000)
    #[argh(option, from_str_fn(parse_size))]
    max_payload: Option<usize>,
    /// web origin allowed to connect; repeat for several (default: any origin)
    #[argh(option)]
    cors_origin: Vec<String>,
    /// how long a call may ring unanswered (default 30s)
    #[argh(option, from_str_fn(parse_duration))]
    call_timeout: Option<Duration>,
    /// log level: off, error, warn, info, debug, trace (default info)
    #[argh(option, from_str_fn(parse_log_level))]
    log_level: Option<log::LevelFilter>,
}

fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    signalbox::logging::parse_level(text)
}

fn config(args: Args) -> Result<Config, String> {
    let mut config = Config::default();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Ok(port) = std::env::var("PORT") {
        let port = port
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT {port:?}: expected a port number"))?;
        config.listen.set_port(port);
    }
    if let Some(path) = args.path {
        config.path = path;
    }
    if let Some(d) = args.ping_interval {
        config.engine.ping_interval = d;
    }
    if let Some(d) = args.ping_timeout {
        config.engine.ping_timeout = d;
    }
    if let Some(d) = args.connect_timeout {
        config.socketio.connect_timeout = d;
    }
    if let Some(n) = args.max_payload {
        config.engine.max_payload = n;
        config.socketio.max_attachment_bytes = n;
    }
    config.cors_origins = args.cors_origin;
    if let Some(d) = args.call_timeout {
        config.call_timeout = d;
    }
    Ok(config)
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    signalbox::logging::init(args.log_level.unwrap_or(log::LevelFilter::Info));
    let config = match config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("signalbox: {error}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("signalbox: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match signalbox::serve(listener, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signalbox: {error}");
            ExitCode::FAILURE
        }
    }
}
