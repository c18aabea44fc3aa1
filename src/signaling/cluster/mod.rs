//! Several nodes as one intercom, through Redis (`--redis URL`).
//!
//! What Redis holds, under a prefix (`signalbox:` by default):
//!
//! - `<prefix>user:<name>` → `<node> <connection>`: where the user is
//!   connected, with a time to live that node keeps refreshing (a node that
//!   dies loses its users when their keys expire). A registration elsewhere
//!   tells that node to let go of that connection, and no other.
//! - `<prefix>call:<name>` → `caller>callee` while the user rings or talks:
//!   the claim that makes "busy" hold across nodes. Set for both parties at
//!   once by the caller's node, released by each party's own node when the
//!   call ends for them, refreshed like presence.
//! - `<prefix>node:<id>`, a pub/sub channel per node: messages for its users
//!   ([`PeerMessage`] as JSON).
//!
//! Every change is a small Lua script, so each is atomic; every command a
//! node sends goes through one connection in the order the hub decided, in
//! pipelined batches, so messages from one user to another arrive in order.
//! Replies come back to the signaling service as [`Inbound`] items.

use std::rc::Rc;
use std::time::Duration;

use super::peer::PeerMessage;

#[cfg(feature = "cluster")]
mod link;
#[cfg(feature = "cluster")]
pub use link::Cluster;

#[cfg(not(feature = "cluster"))]
mod absent;
#[cfg(not(feature = "cluster"))]
pub use absent::Cluster;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// Prefix of every key and channel, so that several intercoms can share
    /// one Redis.
    pub prefix: String,
    /// How long a node's users stay visible after it stops refreshing them.
    pub presence_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            url: String::new(),
            prefix: DEFAULT_PREFIX.into(),
            presence_ttl: Duration::from_secs(10),
        }
    }
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "signalbox:";

/// Checks a key prefix: letters, digits and `:_.-`, so it never means
/// anything to a `SCAN` pattern.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    let fine = text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.-".contains(&b));
    if fine {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid key prefix {text:?}: use up to 64 of A-Z a-z 0-9 : _ . -"
        ))
    }
}

/// The answer to a claim for a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Both users are now held for the call.
    Granted,
    /// The callee is not registered on any node.
    Offline,
    /// The caller is already ringing or in a call (on some node).
    CallerBusy,
    /// The callee is ringing or in a call.
    Busy,
    /// Redis could not be asked.
    Unavailable,
}

/// What the cluster brings back to the signaling service.
#[derive(Debug)]
pub enum Inbound {
    /// A message for one of our users: from another node, or a kick when
    /// a refresh finds that Redis names another node for them.
    Message(PeerMessage),
    /// The answer to [`Cluster::claim`].
    Claimed {
        /// The connection whose `make_call` waits for it.
        conn: Rc<str>,
        /// The caller.
        caller: Rc<str>,
        /// The callee.
        callee: Rc<str>,
        /// The answer.
        claim: Claim,
    },
    /// A user on another node is gone: their claim on the call with our
    /// user is no longer there (their node died, or the call ended
    /// without word reaching us).
    Lost(Rc<str>),
    /// The connection to Redis came back: publish everything again now.
    Reconnected,
}

/// Who is online and how many calls there are, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// Every registered user, sorted.
    pub users: Vec<String>,
    /// Calls ringing or active.
    pub calls: usize,
}

/// Figures for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterStats {
    /// Whether this node is subscribed to its channel now.
    pub up: bool,
    /// Commands sent to Redis.
    pub sent: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Batches of commands Redis did not answer.
    pub failed_batches: u64,
    /// Messages for other nodes dropped because too many waited for Redis.
    pub dropped: u64,
}

/// Where Redis is, from a `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct RedisTarget {
    host: String,
    port: u16,
    db: i64,
    username: Option<String>,
    password: Option<String>,
}

impl RedisTarget {
    /// Reads a `redis://` URL (TCP, no TLS); port 6379 and database 0
    /// unless it says otherwise. User and password may be percent-encoded.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let invalid = |why: &str| format!("invalid Redis URL {}: {why}", redact(url));
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| invalid("expected redis://host[:port][/db]"))?;
        let (authority, db) = match rest.split_once('/') {
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => (
                authority,
                db.parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| invalid("the database must be a number"))?,
            ),
            None => (rest, 0),
        };
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(credentials) => {
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                let decode = |text: &str| {
                    percent_decode(text).ok_or_else(|| invalid("bad percent-encoding"))
                };
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                let password = Some(decode(password)?).filter(|p| !p.is_empty());
                (user, password)
            }
        };
        let (host, port) = if let Some(v6) = address.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => 6379,
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port must be a number up to 65535"))?,
        };
        Ok(RedisTarget {
            host: host.to_owned(),
            port,
            db,
            username,
            password,
        })
    }
}

/// Decodes `%XX` escapes; `None` for a broken one or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// `url` without its password, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(parse_prefix("signalbox:").as_deref(), Ok("signalbox:"));
        assert_eq!(parse_prefix("site-2.a_b:").as_deref(), Ok("site-2.a_b:"));
        for bad in ["a*", "a?", "[x]", "a b", "a\\b"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls() {
        let target = |host: &str, port, db, user: Option<&str>, password: Option<&str>| {
            Ok(RedisTarget {
                host: host.into(),
                port,
                db,
                username: user.map(Into::into),
                password: password.map(Into::into),
            })
        };
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1"),
            target("127.0.0.1", 6379, 0, None, None)
        );
        assert_eq!(
            RedisTarget::parse("redis://redis.lan:6380/2"),
            target("redis.lan", 6380, 2, None, None)
        );
        assert_eq!(
            RedisTarget::parse("redis://:s%40cret@10.0.0.5/"),
            target("10.0.0.5", 6379, 0, None, Some("s@cret"))
        );
        assert_eq!(
            RedisTarget::parse("redis://box:pw@[::1]:7000/1"),
            target("::1", 7000, 1, Some("box"), Some("pw"))
        );
        for bad in [
            "http://x",
            "redis://",
            "redis://host:port",
            "redis://host:70000",
            "redis://host/x",
            "redis://host/-1",
            "redis://u:%zz@host",
            "redis://[::1",
            "rediss://host",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
        let error = RedisTarget::parse("redis://:secret@host:x").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn passwords_stay_out_of_the_log() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://…@host:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
