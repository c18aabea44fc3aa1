//! Settings, with an embedded default for every one, and the parsers for
//! the values flags and environment variables carry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::forwarded::Network;
use crate::signaling::cluster::ClusterConfig;
use crate::{engineio, http, signaling, socketio};

/// Everything the server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The Socket.IO endpoint's path prefix.
    pub path: String,
    /// Engine.IO settings: heartbeat, payload size.
    pub engine: engineio::Config,
    /// Socket.IO settings: connect timeout.
    pub socketio: socketio::Config,
    /// Allowed web origins; empty means any.
    pub cors_origins: Vec<String>,
    /// HTTP limits: head size, timeouts, connections at once and per address.
    pub http: http::Limits,
    /// How long a graceful shutdown may take to end calls and close sessions.
    pub shutdown_timeout: Duration,
    /// The signaling service: ring time, limits, ICE servers, tokens.
    pub signaling: signaling::Settings,
    /// Certificate chain and private key (PEM) to serve HTTPS and WSS with.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Several nodes as one, through Redis; `None`: a single node.
    pub cluster: Option<ClusterConfig>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Network>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            path: "/socket.io/".into(),
            engine: engineio::Config::default(),
            socketio: socketio::Config::default(),
            cors_origins: Vec::new(),
            http: http::Limits::default(),
            shutdown_timeout: Duration::from_secs(5),
            signaling: signaling::Settings::default(),
            tls: None,
            cluster: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The longest delay a JavaScript timer can wait (2^31 − 1 ms): clients
/// arm one for the ping interval plus the ping timeout, and a longer one
/// fires at once, so every browser would drop its connection.
pub const MAX_CLIENT_TIMER: Duration = Duration::from_millis((1 << 31) - 1);

impl Config {
    /// Checks settings that are fine one by one but not together.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut config = signalbox::Config::default();
    /// assert!(config.check().is_ok());
    /// config.engine.ping_interval = Duration::from_secs(30 * 86_400);
    /// assert!(config.check().unwrap_err().to_string().contains("2147483647 ms"));
    /// ```
    pub fn check(&self) -> Result<(), ConfigError> {
        let heartbeat = self
            .engine
            .ping_interval
            .saturating_add(self.engine.ping_timeout);
        if heartbeat > MAX_CLIENT_TIMER {
            return Err(ConfigError::HeartbeatPastTimers(heartbeat));
        }
        Ok(())
    }
}

/// Settings that are fine one by one but not together. (A value that does
/// not parse is refused by its parser below, with a `String` as argh's
/// `from_str_fn` wants.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Ping interval plus ping timeout, longer than [`MAX_CLIENT_TIMER`]:
    /// a browser's timer fires at once, and every client drops.
    HeartbeatPastTimers(Duration),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::HeartbeatPastTimers(heartbeat) => write!(
                f,
                "--ping-interval plus --ping-timeout is {} ms, more than the {} ms a \
                 JavaScript timer can wait: browsers would drop every connection at once",
                heartbeat.as_millis(),
                MAX_CLIENT_TIMER.as_millis()
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a duration: a whole number with a unit, `ms`, `s`, `m`, `h` or `d`.
///
/// ```
/// use std::time::Duration;
/// use signalbox::config::parse_duration;
/// assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
/// assert_eq!(parse_duration("25s"), Ok(Duration::from_secs(25)));
/// assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
/// assert!(parse_duration("25").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected a whole number and a unit (ms, s, m, h, d), such as 25s"
        )
    };
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(invalid)
}

/// Parses a size in bytes: a whole number, optionally with `k`/`kb`/`kib`,
/// `m`/`mb`/`mib` (powers of 1024).
///
/// ```
/// use signalbox::config::parse_size;
/// assert_eq!(parse_size("1000000"), Ok(1_000_000));
/// assert_eq!(parse_size("64k"), Ok(65_536));
/// assert_eq!(parse_size("1MiB"), Ok(1_048_576));
/// assert!(parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid size {text:?}: expected bytes, such as 1000000 or 64k");
    let n: usize = number.parse().map_err(|_| invalid())?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    n.checked_mul(factor).ok_or_else(invalid)
}

/// Parses an engine path: it must start with `/`; a trailing `/` is added.
///
/// ```
/// assert_eq!(signalbox::config::parse_path("/socket.io"), Ok("/socket.io/".to_string()));
/// assert!(signalbox::config::parse_path("socket.io").is_err());
/// ```
pub fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
        return Err(format!(
            "invalid path {text:?}: expected an absolute path such as /socket.io/"
        ));
    }
    let mut path = text.to_owned();
    if !path.ends_with('/') {
        path.push('/');
    }
    Ok(path)
}

/// Parses a count: a whole number.
///
/// ```
/// assert_eq!(signalbox::config::parse_count("500"), Ok(500));
/// assert!(signalbox::config::parse_count("-1").is_err());
/// ```
pub fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid number {text:?}: expected a whole number"))
}

/// Parses a rate: a positive number, fractions allowed.
///
/// ```
/// assert_eq!(signalbox::config::parse_rate("2.5"), Ok(2.5));
/// assert!(signalbox::config::parse_rate("0").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("invalid rate {text:?}: expected a positive number")),
    }
}
