//! Several nodes as one intercom, through Redis (`--redis URL`).
//!
//! What Redis holds, under a prefix (`signalbox:` by default):
//!
//! - `<prefix>user:<name>` → `<node> <socket>`: where the user is
//!   connected, with a time to live that node keeps refreshing (a node that
//!   dies loses its users when their keys expire). A registration elsewhere
//!   tells that node to let go of that socket, and no other.
//! - `<prefix>call:<name>` → `caller>called` while the user rings or talks:
//!   the claim that makes "busy" hold across nodes. `called` is the name
//!   the caller called: the callee, or a group (every member ringing, and
//!   the one who answered, holds `caller>group`). Set for the caller and
//!   those rung at once by the caller's node, released by each party's own
//!   node when the call ends for them (and a group member's by the
//!   caller's node when it stops ringing), refreshed like presence.
//! - `<prefix>node:<id>`, a pub/sub channel per node: messages for its users
//!   ([`PeerMessage`] as JSON).
//! - `<prefix>push:<name>` → a list of the user's push subscriptions (as
//!   the browser gave them, JSON), oldest first; `<prefix>missed:<name>`
//!   → a list of their missed calls (JSON); `<prefix>counts` → how many
//!   of each the cluster keeps, for the bounds. A call to a user
//!   registered nowhere who has subscriptions claims them all the same
//!   ([`Claim::Asleep`]); the caller's node pushes and holds the call,
//!   and the registration that finds the claim tells it where they woke
//!   ([`PeerMessage::Woken`]).
//! - `<prefix>vapid-key`: the key every node signs pushes with (see
//!   [`Nodes::agree`]), unless each is given one.
//!
//! Every change is a small Lua script, so each is atomic; every command a
//! node sends goes through one connection in the order the hub decided, in
//! pipelined batches, so messages from one user to another arrive in order.
//! Replies come back to the signaling service as [`Inbound`] items.
//!
//! What the signaling service needs from the other nodes is the [`Nodes`]
//! trait; the Redis link (the `cluster` feature) is its implementation,
//! and the service's tests use a recording fake.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::channel::Receiver;

use super::hub::{Claim, InCall, MemberClaim, Registration, Shared};
use super::peer::PeerMessage;
use super::protocol::MissedCall;
use super::relay::Relay;
use crate::push::{PushMessage, Subscription};

#[cfg(feature = "cluster")]
mod link;
#[cfg(feature = "cluster")]
pub use link::Cluster;

/// What the signaling service needs from the other nodes of a cluster.
/// Answers come back as [`Inbound`] items.
pub trait Nodes {
    /// How long a node's users stay visible after it stops refreshing them.
    fn ttl(&self) -> Duration;
    /// How often presence and claims must be refreshed.
    fn refresh_period(&self) -> Duration;
    /// A user registered here: publish where they are, and have any other node
    /// they were on let go of them.
    fn joined(&self, registration: Registration<Rc<str>>);
    /// A user is no longer registered here.
    fn left(&self, user: Rc<str>);
    /// Sends `message` to the node of its recipient.
    fn route(&self, message: &PeerMessage);
    /// Sends `message` as [`Nodes::route`] does, and says whether a node
    /// took it (false: its recipient is registered nowhere).
    fn deliver(
        &self,
        message: &PeerMessage,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ClusterError>>>>;
    /// Claims `caller` and `callee` for a new call; the answer comes back
    /// as [`Inbound::Claimed`] for `socket`.
    fn claim(&self, socket: Rc<str>, caller: Rc<str>, callee: Rc<str>);
    /// Claims in Redis those of a group's members (or the one user) who
    /// can ring for `claim.caller`'s call, with the caller; the answer
    /// comes back as [`Inbound::MembersClaimed`].
    fn claim_members(&self, socket: Option<Rc<str>>, claim: MemberClaim);
    /// The call `caller → callee` is over: release both parties' claims
    /// (those that are still this call's), or with `member` that member's
    /// alone.
    fn release(&self, caller: &Rc<str>, callee: &Rc<str>, member: Option<&Rc<str>>);
    /// Refreshes the presence of `users` and the claims of `calls`.
    /// Presence that Redis lost is set again; claims only when `restore`
    /// (just after Redis came back).
    fn hold(&self, users: &[Registration<Rc<str>>], calls: &[InCall], restore: bool);
    /// Checks that `peers` (users on other nodes in calls with ours) still
    /// hold their claim on the call; those who do not come back as
    /// [`Inbound::Lost`].
    fn check(&self, peers: Vec<InCall>);
    /// This node's id, which names its channel.
    fn node(&self) -> Rc<str>;
    /// Asks which node is the home of `user`, who may have several devices
    /// (see [`relay`](super::relay)); none yet, or a dead one: this one,
    /// from now on. The answer comes back as [`Inbound::Home`] for `socket`.
    fn home(&self, socket: Rc<str>, user: Rc<str>);
    /// Sends `message` to `node`, about a relayed device.
    fn relay(&self, node: &str, message: &Relay);
    /// Checks that each of `homes` (a user relayed from here, and their
    /// home) still holds them, and that each of `nodes` (those of devices
    /// relayed here) is alive; those that are not come back as
    /// [`Inbound::HomeGone`] and [`Inbound::NodeGone`].
    fn watch(&self, homes: Vec<(Rc<str>, Rc<str>)>, nodes: Vec<Rc<str>>);
    /// This node is shutting down: it stops being anyone's home, so that
    /// their devices find a new one at once.
    fn retire(&self);
    /// Changes or reads what Redis keeps for the whole cluster (push
    /// subscriptions, missed calls); a [`Shared::TellMissed`] is answered
    /// as [`Inbound::MissedCalls`].
    fn shared(&self, shared: Shared<Rc<str>>);
    /// Asks for `user`'s push subscriptions, to push `message` to each;
    /// the answer comes back as [`Inbound::Push`].
    fn push(&self, user: Rc<str>, message: PushMessage);
    /// The cluster's value of `name`: the one a node set first, else
    /// `value`, set now (the VAPID key every node must sign with).
    fn agree(
        &self,
        name: &str,
        value: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, ClusterError>>>>;
    /// Runs `then` once the other nodes have heard everything asked so far.
    fn after(&self, then: Box<dyn FnOnce()>);
    /// Every user and call of the cluster.
    fn overview(&self) -> Pin<Box<dyn Future<Output = Result<Overview, ClusterError>>>>;
    /// Waits until everything asked so far went out, for at most `limit`.
    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = ()>>>;
    /// Figures for metrics.
    fn stats(&self) -> ClusterStats;
}

/// Why the cluster cannot be joined or asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The Redis URL is not one this build can use.
    Url(String),
    /// Redis did not answer at start.
    Unreachable {
        /// Where Redis was looked for (without its password).
        url: String,
        /// What the client said.
        error: String,
    },
    /// This build has no Redis client.
    NotBuilt,
    /// Redis did not answer in time, or the link stopped.
    Unavailable(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Url(why) => f.write_str(why),
            ClusterError::Unreachable { url, error } => write!(
                f,
                "cannot reach Redis at {url}: {error} (start it, or run without --redis)"
            ),
            ClusterError::NotBuilt => f.write_str(
                "this signalbox was built without the `cluster` feature, so --redis is not \
                 available (build it with the default features)",
            ),
            ClusterError::Unavailable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ClusterError {}

/// The link to the other nodes and what it brings back.
pub type NodesLink = (Rc<dyn Nodes>, Receiver<Inbound>);

/// Joins the cluster `config` names: connects to Redis and subscribes to
/// this node's channel. Fails when Redis cannot be reached now, and always
/// in a build without the `cluster` feature.
pub async fn connect(config: &ClusterConfig) -> Result<NodesLink, ClusterError> {
    #[cfg(feature = "cluster")]
    {
        let (cluster, inbound) = Cluster::connect(config).await?;
        Ok((Rc::new(cluster), inbound))
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = config;
        Err(ClusterError::NotBuilt)
    }
}

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

/// The key (under the prefix) of the VAPID key the cluster's nodes share.
pub const VAPID_KEY: &str = "vapid-key";

/// The prefix of keys and channels unless `--redis-prefix` says otherwise.
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

/// What the cluster brings back to the signaling service.
#[derive(Debug)]
pub enum Inbound {
    /// A message for one of our users: from another node, or a kick when
    /// a refresh finds that Redis names another node for them.
    Message(PeerMessage),
    /// The answer to [`Nodes::claim`].
    Claimed {
        /// The socket whose `make_call` waits for it.
        socket: Rc<str>,
        /// Who called, as passed to [`Nodes::claim`].
        caller: Rc<str>,
        /// Who was called, as passed to [`Nodes::claim`].
        callee: Rc<str>,
        /// What Redis said; `Unavailable` when it did not answer (the claim goes back).
        claim: Claim,
    },
    /// The answer to [`Nodes::claim_members`].
    MembersClaimed {
        /// The socket whose `make_call` waits for it, if one does.
        socket: Option<Rc<str>>,
        /// What was asked.
        claim: MemberClaim,
        /// Each member's claim, in the order asked (only up to the first
        /// granted when `first_only`); or why none was made: the caller
        /// is in another call, or Redis did not answer (what may have been
        /// claimed goes back).
        answer: Result<Vec<Claim>, Claim>,
    },
    /// A user on another node is gone: their claim on the call with our
    /// user is no longer there (their node died, or the call ended
    /// without word reaching us).
    Lost(Rc<str>),
    /// The connection to Redis came back: publish everything again now.
    Reconnected,
    /// A message about a relayed device.
    Relay(Relay),
    /// The answer to [`Nodes::home`].
    Home {
        /// The socket whose `register_user` waits for it.
        socket: Rc<str>,
        /// Who it registers.
        user: Rc<str>,
        /// Their home: this node or another; `None` when Redis did not answer.
        node: Option<Rc<str>>,
    },
    /// A user relayed from here is no longer held by their home (it died,
    /// or they left there).
    HomeGone(Rc<str>),
    /// A node whose devices are relayed here is gone.
    NodeGone(Rc<str>),
    /// The answer to a [`Shared::TellMissed`]: `user`'s missed calls,
    /// oldest first, for `socket`.
    MissedCalls {
        /// Whose.
        user: Rc<str>,
        /// The socket they registered on.
        socket: Rc<str>,
        /// Their missed calls; empty when none (or Redis did not answer).
        calls: Vec<MissedCall>,
    },
    /// The answer to [`Nodes::push`]: `user`'s subscriptions, to push
    /// `message` to.
    Push {
        /// Whose.
        user: Rc<str>,
        /// What to push.
        message: PushMessage,
        /// Their subscriptions, oldest first (those that no longer check
        /// are left out).
        subscriptions: Vec<Subscription>,
    },
}

/// When a node refreshes what it holds in Redis (presence and claims, each
/// refreshed every period and living two), and checks that the other
/// parties of its calls still hold their claims (every second, or every
/// period if shorter). No clock: the time is passed in.
#[derive(Debug, Clone)]
pub struct Refresh {
    period: Duration,
    check_every: Duration,
    next_hold: Instant,
    next_check: Instant,
    /// Until when refreshes set lost claims again (after Redis came back,
    /// in case the first restore was lost).
    restore_until: Option<Instant>,
}

/// What a [`Refresh`] asks for when its deadline comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshDue {
    /// Refresh presence and claims; `Some(true)`: set lost claims again.
    pub hold: Option<bool>,
    /// Check that the other parties of our calls still hold their claims.
    pub check: bool,
}

impl Refresh {
    /// A node that joined at `now` and refreshes every `period`.
    pub fn new(period: Duration, now: Instant) -> Refresh {
        let check_every = Duration::from_secs(1).min(period);
        Refresh {
            period,
            check_every,
            next_hold: now + period,
            next_check: now + check_every,
            restore_until: None,
        }
    }

    /// When [`Refresh::due`] next has something to say.
    pub fn next_deadline(&self) -> Instant {
        self.next_hold.min(self.next_check)
    }

    /// Redis came back: refreshes set lost claims again until `until`.
    pub fn restore_until(&mut self, until: Instant) {
        self.restore_until = Some(until);
    }

    /// What is due at `now`.
    pub fn due(&mut self, now: Instant) -> RefreshDue {
        let hold = (now >= self.next_hold).then(|| {
            self.next_hold += self.period;
            self.restore_until.is_some_and(|until| now < until)
        });
        let check = now >= self.next_check;
        if check {
            self.next_check = now + self.check_every;
        }
        RefreshDue { hold, check }
    }
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
    pub fn parse(url: &str) -> Result<RedisTarget, ClusterError> {
        let invalid =
            |why: &str| ClusterError::Url(format!("invalid Redis URL {}: {why}", redact(url)));
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
                    crate::http::percent_decode(text).ok_or_else(|| invalid("bad percent-encoding"))
                };
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                let password = Some(decode(password)?).filter(|p| !p.is_empty());
                (user, password)
            }
        };
        let (host, port) = crate::http::split_host_port(address).map_err(invalid)?;
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
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn a_build_without_the_feature_says_why() {
        let config = ClusterConfig {
            url: "redis://127.0.0.1:6379".into(),
            ..ClusterConfig::default()
        };
        if cfg!(not(feature = "cluster")) {
            match crate::rt::block_on(connect(&config)) {
                Err(error) => assert!(error.to_string().contains("`cluster` feature"), "{error}"),
                Ok(_) => panic!("a cluster without the feature"),
            }
        }
    }

    #[test]
    fn refreshes_and_checks_keep_their_pace() {
        let t0 = Instant::now();
        let secs = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut refresh = Refresh::new(Duration::from_millis(2500), t0);
        assert_eq!(refresh.next_deadline(), secs(1.0));
        let quiet = RefreshDue {
            hold: None,
            check: false,
        };
        assert_eq!(refresh.due(secs(0.5)), quiet);
        assert_eq!(
            refresh.due(secs(1.0)),
            RefreshDue {
                hold: None,
                check: true
            }
        );
        assert_eq!(
            refresh.due(secs(2.0)),
            RefreshDue {
                hold: None,
                check: true
            }
        );
        assert_eq!(
            refresh.due(secs(2.5)),
            RefreshDue {
                hold: Some(false),
                check: false
            }
        );
        assert_eq!(refresh.next_deadline(), secs(3.0));
        // Just after Redis came back: claims are set again for a while.
        refresh.restore_until(secs(6.0));
        assert_eq!(refresh.due(secs(5.0)).hold, Some(true));
        assert_eq!(refresh.due(secs(7.5)).hold, Some(false));
        // A refresh period under a second checks as often.
        let mut fast = Refresh::new(Duration::from_millis(250), t0);
        assert_eq!(fast.next_deadline(), secs(0.25));
        assert_eq!(
            fast.due(secs(0.25)),
            RefreshDue {
                hold: Some(false),
                check: true
            }
        );
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
