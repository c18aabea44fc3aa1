//! The link to Redis: the commands, scripts and tasks behind [`Cluster`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use smol::Timer;
use smol::channel::{Receiver, Sender, TryRecvError, unbounded};

use super::{Claim, ClusterConfig, ClusterStats, Inbound, Overview, RedisTarget, redact};
use crate::logging::untrusted;
use crate::rt;
use crate::signaling::peer::PeerMessage;

/// One thing to do in Redis: one command each, but `Then`.
enum Op {
    /// A user and their connection.
    Joined(Rc<str>, Rc<str>),
    Left(Rc<str>),
    Route {
        to: Rc<str>,
        message: String,
    },
    Claim {
        conn: Rc<str>,
        caller: Rc<str>,
        callee: Rc<str>,
    },
    Release {
        caller: Rc<str>,
        callee: Rc<str>,
    },
    Hold {
        held: Vec<Held>,
        create: bool,
        /// Call claims (which live half as long as presence), not presence.
        claims: bool,
    },
    /// Peers and the claim each must still hold.
    Check(Vec<(Rc<str>, String)>),
    Overview(Box<dyn FnOnce(Result<Overview, String>)>),
    /// Runs once Redis answered everything asked before it.
    Then(Box<dyn FnOnce()>),
    /// Wakes the command connection after Redis came back, so that its
    /// first real command does not meet the broken old one.
    Ping,
}

/// A key this node holds, and its value; for a presence key, the user and
/// the connection they were on when the refresh was asked for.
struct Held {
    key: String,
    value: String,
    user: Option<(Rc<str>, Rc<str>)>,
}

impl Op {
    /// Whether sending it twice does no harm (so a batch of these may be
    /// sent again when the connection broke).
    fn repeatable(&self) -> bool {
        !matches!(self, Op::Route { .. } | Op::Claim { .. })
    }
}

/// Sets where a user is (`<node> <connection>`) and, when they were on
/// another node, tells that node to let go of that connection. KEYS: user
/// key. ARGV: node, connection, ttl ms, channel prefix, then the kick
/// message before and after the old connection id (a JSON string).
const JOIN: &str = r"
local old = redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3], 'GET')
if old then
  local node, conn = string.match(old, '^(%S+) (%S+)$')
  if node and node ~= ARGV[1] then
    redis.call('PUBLISH', ARGV[4] .. node, ARGV[5] .. cjson.encode(conn) .. ARGV[6])
  end
end
return 0";

/// Deletes a user's key if it still says they are on node ARGV[1].
const LEAVE: &str = r"
local now = redis.call('GET', KEYS[1])
if now and string.match(now, '^%S+') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Deletes each key that still holds ARGV[1] (a call's claim).
const RELEASE: &str = r"
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    deleted = deleted + redis.call('DEL', key)
  end
end
return deleted";

/// Publishes a message on the channel of the node `KEYS[1]` names.
/// ARGV: channel prefix, message. -1: no such user; else the receivers.
const ROUTE: &str = r"
local now = redis.call('GET', KEYS[1])
if not now then return -1 end
return redis.call('PUBLISH', ARGV[1] .. string.match(now, '^%S+'), ARGV[2])";

/// Claims caller and callee for a call. KEYS: callee's user key, caller's
/// call key, callee's call key. ARGV: claim, ttl ms. 0 granted, 1 callee
/// offline, 2 caller busy, 3 callee busy.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 3 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return 0";

/// Refreshes keys this node owns; sets them again where they vanished
/// if ARGV[2] is 1 (presence always; claims only just after Redis came
/// back, as a refresh that crossed a release must not bring a claim back);
/// leaves alone a key someone else took meanwhile, and returns the
/// positions (from 1) of those. KEYS: the keys. ARGV: ttl ms, 1 or 0, then
/// each key's value.
const HOLD: &str = r"
local taken = {}
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 2]
  local now = redis.call('GET', key)
  if now == value or (not now and ARGV[2] == '1') then
    redis.call('SET', key, value, 'PX', ARGV[1])
  elseif now then
    taken[#taken + 1] = i
  end
end
return taken";

/// Every user and the number of distinct calls claimed. ARGV: key prefix.
const OVERVIEW: &str = r"
local users, calls, seen = {}, 0, {}
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. 'user:*', 'COUNT', 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do users[#users + 1] = key end
until cursor == '0'
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. 'call:*', 'COUNT', 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do
    local claim = redis.call('GET', key)
    if claim and not seen[claim] then
      seen[claim] = true
      calls = calls + 1
    end
  end
until cursor == '0'
return {users, calls}";

/// How long a call claim lives unrefreshed: half the presence TTL, so
/// that a dead node's calls end for their peers within the presence TTL
/// (claim expiry, then the next check, which runs every quarter TTL).
fn claim_ttl(presence_ttl: Duration) -> Duration {
    presence_ttl / 2
}

/// The most commands in one pipelined batch.
const MAX_BATCH: usize = 512;
/// The most commands waiting for Redis before messages for other nodes
/// are dropped.
const MAX_QUEUED: usize = 100_000;
/// The most keys refreshed by one script call.
pub const HOLD_CHUNK: usize = 256;
/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long an answer from Redis may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Key names under a prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn user(&self, name: &str) -> String {
        format!("{}user:{name}", self.prefix)
    }

    fn call(&self, name: &str) -> String {
        format!("{}call:{name}", self.prefix)
    }

    fn channels(&self) -> String {
        format!("{}node:", self.prefix)
    }

    fn channel(&self, node: &str) -> String {
        format!("{}{node}", self.channels())
    }
}

/// The claim a call holds on both parties.
pub fn claim_value(caller: &str, callee: &str) -> String {
    format!("{caller}>{callee}")
}

/// Counts for metrics.
#[derive(Debug, Default)]
struct Counters {
    sent: Cell<u64>,
    received: Cell<u64>,
    failed_batches: Cell<u64>,
    dropped: Cell<u64>,
}

/// This node's link to the cluster.
pub struct Cluster {
    node: Rc<str>,
    keys: Keys,
    ttl: Duration,
    ops: Sender<Op>,
    /// Since when the subscription is up (`None`: down); after a reconnect,
    /// when other nodes may not have published again yet, nobody is
    /// declared lost until a whole time to live has passed.
    up_since: Rc<Cell<Option<Instant>>>,
    settled_after: Rc<Cell<Option<Instant>>>,
    counters: Rc<Counters>,
    overview: Rc<RefCell<OverviewState>>,
}

/// Who waits for the cluster overview being made, and for the next.
#[derive(Default)]
struct OverviewState {
    in_flight: bool,
    current: Vec<Sender<Result<Overview, String>>>,
    next: Vec<Sender<Result<Overview, String>>>,
}

/// Asks Redis for an overview for those waiting now; then, if more came
/// meanwhile, once more for them.
fn scan_overview(ops: Sender<Op>, state: Rc<RefCell<OverviewState>>) {
    let again = ops.clone();
    let _ = ops.try_send(Op::Overview(Box::new(move |result| {
        let more = {
            let mut waiting = state.borrow_mut();
            for waiter in waiting.current.drain(..) {
                let _ = waiter.try_send(result.clone());
            }
            waiting.current = std::mem::take(&mut waiting.next);
            waiting.in_flight = !waiting.current.is_empty();
            waiting.in_flight
        };
        if more {
            scan_overview(again, state);
        }
    })));
}

impl Cluster {
    /// Connects to Redis, subscribes to this node's channel, and starts the
    /// tasks that talk to it. Fails when Redis cannot be reached now.
    pub async fn connect(config: &ClusterConfig) -> Result<(Cluster, Receiver<Inbound>), String> {
        let url = &config.url;
        let target = RedisTarget::parse(url)?;
        let client = target
            .connection_info()
            .and_then(Client::open)
            .map_err(|error| format!("invalid Redis URL {}: {error}", redact(url)))?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |error: redis::RedisError| {
            format!("cannot reach Redis at {url}: {error} (start it, or run without --redis)")
        };
        let mut connection = ConnectionManager::new_with_config(client.clone(), settings)
            .await
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        let node: Rc<str> = crate::id::random().into();
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let (inbound, inbound_rx) = unbounded();
        let (ops, ops_rx) = unbounded();
        let cluster = Cluster {
            node: node.clone(),
            keys: keys.clone(),
            ttl: config.presence_ttl,
            ops,
            up_since: Rc::default(),
            settled_after: Rc::default(),
            counters: Rc::default(),
            overview: Rc::default(),
        };
        let subscription = subscribe(&client, &keys.channel(&node))
            .await
            .map_err(unreachable)?;
        cluster.up_since.set(Some(Instant::now()));
        let writer = Writer {
            node: node.clone(),
            keys: keys.clone(),
            ttl_ms: config.presence_ttl.as_millis().to_string(),
            claim_ttl_ms: claim_ttl(config.presence_ttl).as_millis().to_string(),
            connection,
            inbound: inbound.clone(),
            settled: cluster.settled_check(),
            counters: cluster.counters.clone(),
            healthy: true,
            retry: RefCell::default(),
        };
        rt::spawn(writer.run(ops_rx)).detach();
        let listener = Listener {
            client,
            channel: keys.channel(&node),
            inbound,
            ops: cluster.ops.clone(),
            up_since: cluster.up_since.clone(),
            settled_after: cluster.settled_after.clone(),
            ttl: config.presence_ttl,
            counters: cluster.counters.clone(),
        };
        rt::spawn(listener.run(subscription)).detach();
        log::info!("cluster node {node} on Redis {}", redact(url));
        Ok((cluster, inbound_rx))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The presence TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often presence and claims must be refreshed: a claim lives two
    /// periods, so one late refresh does not lose it.
    pub fn refresh_period(&self) -> Duration {
        claim_ttl(self.ttl) / 2
    }

    fn settled_check(&self) -> Settled {
        Settled {
            up_since: self.up_since.clone(),
            settled_after: self.settled_after.clone(),
        }
    }

    fn send(&self, op: Op) {
        if matches!(op, Op::Route { .. }) && self.ops.len() >= MAX_QUEUED {
            // Redis is not keeping up (or hangs): shed messages, not memory.
            self.counters.dropped.set(self.counters.dropped.get() + 1);
            return;
        }
        // The writer lives as long as the executor: a send cannot fail
        // while anyone is here to ask.
        let _ = self.ops.try_send(op);
    }

    /// `user` registered here.
    pub fn joined(&self, user: Rc<str>, conn: Rc<str>) {
        self.send(Op::Joined(user, conn));
    }

    /// `user` is no longer registered here.
    pub fn left(&self, user: Rc<str>) {
        self.send(Op::Left(user));
    }

    /// Sends `message` to the node of its recipient.
    pub fn route(&self, message: &PeerMessage) {
        match serde_json::to_string(message) {
            Ok(json) => self.send(Op::Route {
                to: message.recipient().clone(),
                message: json,
            }),
            Err(error) => log::error!("cannot encode a message for another node: {error}"),
        }
    }

    /// Claims `caller` and `callee` for a new call; the answer comes back
    /// as [`Inbound::Claimed`] for `conn`.
    pub fn claim(&self, conn: Rc<str>, caller: Rc<str>, callee: Rc<str>) {
        self.send(Op::Claim {
            conn,
            caller,
            callee,
        });
    }

    /// The call `caller → callee` is over: release both parties' claims
    /// (those that are still this call's).
    pub fn release(&self, caller: &Rc<str>, callee: &Rc<str>) {
        self.send(Op::Release {
            caller: caller.clone(),
            callee: callee.clone(),
        });
    }

    /// Refreshes the presence of `users` (each with its connection) and the
    /// claims of `calls` (user, caller, callee). Presence that Redis lost
    /// is set again; claims only when `restore` (just after Redis came back).
    pub fn hold(
        &self,
        users: &[(Rc<str>, Rc<str>)],
        calls: &[(Rc<str>, Rc<str>, Rc<str>)],
        restore: bool,
    ) {
        let presence = users.iter().map(|(user, conn)| Held {
            key: self.keys.user(user),
            value: presence_value(&self.node, conn),
            user: Some((user.clone(), conn.clone())),
        });
        self.hold_chunks(presence.collect(), true, false);
        let claims = calls.iter().map(|(user, caller, callee)| Held {
            key: self.keys.call(user),
            value: claim_value(caller, callee),
            user: None,
        });
        self.hold_chunks(claims.collect(), restore, true);
    }

    fn hold_chunks(&self, mut held: Vec<Held>, create: bool, claims: bool) {
        while !held.is_empty() {
            let rest = held.split_off(held.len().min(HOLD_CHUNK));
            let chunk = std::mem::replace(&mut held, rest);
            self.send(Op::Hold {
                held: chunk,
                create,
                claims,
            });
        }
    }

    /// Checks that `peers` (users on other nodes in calls with ours: peer,
    /// caller, callee) still hold their claim on the call, which their node
    /// keeps refreshing while it lives; those who do not come back as
    /// [`Inbound::Lost`].
    pub fn check(&self, peers: Vec<(Rc<str>, Rc<str>, Rc<str>)>) {
        if !peers.is_empty() {
            let peers = peers
                .into_iter()
                .map(|(peer, caller, callee)| (peer, claim_value(&caller, &callee)))
                .collect();
            self.send(Op::Check(peers));
        }
    }

    /// Every user and call in the cluster.
    pub async fn overview(&self) -> Result<Overview, String> {
        let (reply, answer) = smol::channel::bounded(1);
        let start = {
            let mut state = self.overview.borrow_mut();
            if state.in_flight {
                // One scan at a time: a flood of GET / waits for the next,
                // which starts after this request (so it sees what it
                // should), and which they all share.
                state.next.push(reply);
                false
            } else {
                state.in_flight = true;
                state.current.push(reply);
                true
            }
        };
        if start {
            scan_overview(self.ops.clone(), self.overview.clone());
        }
        let timeout = async {
            Timer::after(RESPONSE_TIMEOUT * 2).await;
            Err("Redis did not answer in time".to_owned())
        };
        let answer = async {
            answer
                .recv()
                .await
                .unwrap_or_else(|_| Err("the cluster link stopped".to_owned()))
        };
        futures_lite::future::or(answer, timeout).await
    }

    /// Runs `then` once Redis answered everything asked so far (or failed to).
    pub fn after(&self, then: impl FnOnce() + 'static) {
        self.send(Op::Then(Box::new(then)));
    }

    /// Waits until everything asked so far went to Redis, for at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let (done, finished) = smol::channel::bounded(1);
        self.after(move || {
            let _ = done.try_send(());
        });
        let timeout = async {
            Timer::after(limit).await;
        };
        futures_lite::future::or(
            async {
                let _ = finished.recv().await;
            },
            timeout,
        )
        .await;
    }

    /// Figures for metrics.
    pub fn stats(&self) -> ClusterStats {
        ClusterStats {
            up: self.up_since.get().is_some(),
            sent: self.counters.sent.get(),
            received: self.counters.received.get(),
            failed_batches: self.counters.failed_batches.get(),
            dropped: self.counters.dropped.get(),
        }
    }
}

/// Whether a missing user may be declared lost now: the subscription is
/// up, and not so freshly back that other nodes might not have published
/// their users again.
#[derive(Clone)]
struct Settled {
    up_since: Rc<Cell<Option<Instant>>>,
    settled_after: Rc<Cell<Option<Instant>>>,
}

impl Settled {
    fn now(&self) -> bool {
        self.up_since.get().is_some()
            && self
                .settled_after
                .get()
                .is_none_or(|after| Instant::now() >= after)
    }
}

/// The task that sends commands to Redis in order, in batches.
struct Writer {
    node: Rc<str>,
    keys: Keys,
    ttl_ms: String,
    claim_ttl_ms: String,
    connection: ConnectionManager,
    inbound: Sender<Inbound>,
    settled: Settled,
    counters: Rc<Counters>,
    healthy: bool,
    /// Ops the last batch's replies asked for, sent first in the next.
    retry: RefCell<Vec<Op>>,
}

impl Writer {
    async fn run(mut self, ops: Receiver<Op>) {
        loop {
            let mut batch = std::mem::take(&mut *self.retry.borrow_mut());
            if batch.is_empty() {
                match ops.recv().await {
                    Ok(op) => batch.push(op),
                    Err(_) => return,
                }
            }
            while batch.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
            self.execute(batch).await;
        }
    }

    async fn execute(&mut self, batch: Vec<Op>) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut commands = 0;
        for op in &batch {
            if let Some(command) = self.command(op) {
                pipe.add_command(command);
                commands += 1;
            }
        }
        let replies: Vec<Result<Value, String>> = if commands == 0 {
            Vec::new()
        } else {
            self.counters.sent.set(self.counters.sent.get() + commands);
            let mut sent = pipe
                .query_async::<Vec<redis::RedisResult<Value>>>(&mut self.connection)
                .await;
            if let Err(error) = &sent
                && (error.is_connection_dropped() || error.is_io_error())
                && batch.iter().all(Op::repeatable)
            {
                // The connection broke (Redis restarted); the manager has
                // reconnected, or is reconnecting: once more.
                log::debug!("Redis: {error}; sending the batch again");
                sent = pipe
                    .query_async::<Vec<redis::RedisResult<Value>>>(&mut self.connection)
                    .await;
            }
            match sent {
                Ok(replies) => {
                    if !self.healthy {
                        log::info!("Redis answers again");
                        self.healthy = true;
                    }
                    replies
                        .into_iter()
                        .map(|reply| reply.map_err(|error| error.to_string()))
                        .collect()
                }
                Err(error) => {
                    self.counters
                        .failed_batches
                        .set(self.counters.failed_batches.get() + 1);
                    if self.healthy {
                        log::warn!("Redis did not take {commands} commands: {error}");
                        self.healthy = false;
                    }
                    let error = error.to_string();
                    (0..commands).map(|_| Err(error.clone())).collect()
                }
            }
        };
        let mut replies = replies.into_iter();
        for op in batch {
            let reply = if matches!(op, Op::Then(_)) {
                Ok(Value::Nil)
            } else {
                replies.next().unwrap_or_else(|| Err("no reply".to_owned()))
            };
            self.settle(op, reply);
        }
    }

    /// The command for `op`, if it needs one.
    fn command(&self, op: &Op) -> Option<redis::Cmd> {
        let keys = &self.keys;
        Some(match op {
            Op::Joined(user, conn) => {
                let (before, after) = kick_around_conn(user);
                script(JOIN, &[keys.user(user)])
                    .arg(&*self.node)
                    .arg(&**conn)
                    .arg(&self.ttl_ms)
                    .arg(keys.channels())
                    .arg(before)
                    .arg(after)
                    .clone()
            }
            Op::Left(user) => script(LEAVE, &[keys.user(user)]).arg(&*self.node).clone(),
            Op::Route { to, message } => script(ROUTE, &[keys.user(to)])
                .arg(keys.channels())
                .arg(message)
                .clone(),
            Op::Claim { caller, callee, .. } => {
                let claim_keys = [keys.user(callee), keys.call(caller), keys.call(callee)];
                script(CLAIM, &claim_keys)
                    .arg(claim_value(caller, callee))
                    .arg(&self.claim_ttl_ms)
                    .clone()
            }
            Op::Release { caller, callee } => {
                script(RELEASE, &[keys.call(caller), keys.call(callee)])
                    .arg(claim_value(caller, callee))
                    .clone()
            }
            Op::Hold {
                held,
                create,
                claims,
            } => {
                let hold_keys: Vec<String> = held.iter().map(|h| h.key.clone()).collect();
                let mut command = script(HOLD, &hold_keys);
                command
                    .arg(if *claims {
                        &self.claim_ttl_ms
                    } else {
                        &self.ttl_ms
                    })
                    .arg(if *create { "1" } else { "0" });
                for h in held {
                    command.arg(&h.value);
                }
                command
            }
            Op::Check(peers) => {
                let mut command = redis::cmd("MGET");
                for (peer, _) in peers {
                    command.arg(keys.call(peer));
                }
                command
            }
            Op::Overview(_) => script(OVERVIEW, &[]).arg(&keys.prefix).clone(),
            Op::Ping => redis::cmd("PING"),
            Op::Then(_) => return None,
        })
    }

    /// Acts on the reply to `op`.
    fn settle(&self, op: Op, reply: Result<Value, String>) {
        match op {
            Op::Hold { held, .. } => match reply {
                Ok(Value::Array(taken)) => {
                    for position in taken {
                        let Value::Int(position) = position else {
                            continue;
                        };
                        let entry = usize::try_from(position - 1).ok().and_then(|i| held.get(i));
                        if let Some(Held {
                            user: Some((user, conn)),
                            ..
                        }) = entry
                        {
                            // Redis names another node: a registration
                            // elsewhere whose word was lost (Redis was
                            // down). This device goes, as if kicked, unless
                            // the user has since registered here again.
                            self.back(Inbound::Message(PeerMessage::Kick {
                                user: user.clone(),
                                conn: Some(conn.clone()),
                            }));
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => log::debug!("Redis: {error}"),
            },
            Op::Joined(..) | Op::Left(_) | Op::Release { .. } | Op::Ping => {
                if let Err(error) = reply {
                    log::debug!("Redis: {error}");
                }
            }
            Op::Route { to, .. } => {
                // -1: nobody of that name; 0: their node is not listening.
                // Not proof of a loss (a subscription may be coming back):
                // the claim check decides.
                if let Ok(Value::Int(receivers)) = reply
                    && receivers < 1
                {
                    log::debug!("a message for {} found no node", untrusted(&to));
                }
            }
            Op::Claim {
                conn,
                caller,
                callee,
            } => {
                let claim = match reply {
                    Ok(Value::Int(0)) => Claim::Granted,
                    Ok(Value::Int(1)) => Claim::Offline,
                    Ok(Value::Int(2)) => Claim::CallerBusy,
                    Ok(Value::Int(3)) => Claim::Busy,
                    _ => {
                        // The claim may have been made and its answer lost:
                        // give it back (only if it is still this call's).
                        self.retry.borrow_mut().push(Op::Release {
                            caller: caller.clone(),
                            callee: callee.clone(),
                        });
                        Claim::Unavailable
                    }
                };
                self.back(Inbound::Claimed {
                    conn,
                    caller,
                    callee,
                    claim,
                });
            }
            Op::Check(peers) => {
                if let Ok(Value::Array(claims)) = reply
                    && self.settled.now()
                {
                    for ((peer, expected), claim) in peers.into_iter().zip(claims) {
                        let holds = matches!(&claim, Value::BulkString(bytes) if *bytes == expected.as_bytes());
                        if !holds {
                            self.back(Inbound::Lost(peer));
                        }
                    }
                }
            }
            Op::Overview(answer) => answer(reply.and_then(|value| overview(&self.keys, value))),
            Op::Then(then) => then(),
        }
    }

    fn back(&self, inbound: Inbound) {
        let _ = self.inbound.try_send(inbound);
    }
}

/// An `EVAL` of `body` on `keys`; arguments follow.
/// What a user's key holds: their node and connection.
fn presence_value(node: &str, conn: &str) -> String {
    format!("{node} {conn}")
}

/// The JSON of a kick for `user`, cut where the replaced connection's id
/// goes (as a JSON string), which the JOIN script puts in.
fn kick_around_conn(user: &str) -> (String, String) {
    let user = serde_json::to_string(user).unwrap_or_else(|_| "\"\"".to_owned());
    (
        format!(r#"{{"Kick":{{"user":{user},"conn":"#),
        "}}".to_owned(),
    )
}

fn script(body: &str, keys: &[String]) -> redis::Cmd {
    let mut command = redis::cmd("EVAL");
    command.arg(body).arg(keys.len());
    for key in keys {
        command.arg(key);
    }
    command
}

/// Reads the reply of the overview script.
fn overview(keys: &Keys, value: Value) -> Result<Overview, String> {
    let strange = || "unexpected reply from Redis".to_owned();
    let Value::Array(parts) = value else {
        return Err(strange());
    };
    let mut parts = parts.into_iter();
    let (Some(Value::Array(user_keys)), Some(Value::Int(calls))) = (parts.next(), parts.next())
    else {
        return Err(strange());
    };
    let prefix = keys.user("");
    let mut users: Vec<String> = user_keys
        .into_iter()
        .filter_map(|key| match key {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            _ => None,
        })
        .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    users.sort();
    users.dedup();
    Ok(Overview {
        users,
        calls: usize::try_from(calls).unwrap_or(0),
    })
}

/// Opens the pub/sub connection and subscribes to `channel`.
async fn subscribe(
    client: &Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// The task that receives this node's messages, and subscribes again
/// whenever the connection to Redis broke.
struct Listener {
    client: Client,
    channel: String,
    inbound: Sender<Inbound>,
    ops: Sender<Op>,
    up_since: Rc<Cell<Option<Instant>>>,
    settled_after: Rc<Cell<Option<Instant>>>,
    ttl: Duration,
    counters: Rc<Counters>,
}

impl Listener {
    async fn run(self, first: redis::aio::PubSub) {
        let mut subscription = Some(first);
        let mut delay = Duration::from_millis(100);
        loop {
            if let Some(pubsub) = subscription.take() {
                delay = Duration::from_millis(100);
                self.receive(pubsub).await;
                self.up_since.set(None);
                log::warn!("lost the Redis subscription; subscribing again");
            }
            Timer::after(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
            match subscribe(&self.client, &self.channel).await {
                Ok(pubsub) => {
                    let now = Instant::now();
                    self.up_since.set(Some(now));
                    // Redis may have restarted empty: give every node a
                    // whole time to live to publish its users again, after
                    // its own subscription is back (up to MAX_BACKOFF apart).
                    self.settled_after.set(Some(now + self.ttl + MAX_BACKOFF));
                    log::info!("subscribed to Redis again");
                    let _ = self.ops.try_send(Op::Ping);
                    let _ = self.inbound.try_send(Inbound::Reconnected);
                    subscription = Some(pubsub);
                }
                Err(error) => log::debug!("Redis subscription: {error}"),
            }
        }
    }

    async fn receive(&self, pubsub: redis::aio::PubSub) {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            self.counters.received.set(self.counters.received.get() + 1);
            match serde_json::from_slice::<PeerMessage>(message.get_payload_bytes()) {
                Ok(message) => {
                    if self.inbound.try_send(Inbound::Message(message)).is_err() {
                        return;
                    }
                }
                Err(error) => log::warn!("ignored a malformed message from another node: {error}"),
            }
        }
    }
}

impl RedisTarget {
    fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        let mut settings = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let address = redis::ConnectionAddr::Tcp(self.host.clone(), self.port);
        // Cross-node ICE goes through this connection: no Nagle delay.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        redis::IntoConnectionInfo::into_connection_info(address)
            .map(|info| info.set_redis_settings(settings).set_tcp_settings(tcp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_names_the_connection_it_replaces() {
        let (before, after) = kick_around_conn("fl\"at");
        let wire = format!("{before}{}{after}", serde_json::json!("c-1"));
        match serde_json::from_str::<PeerMessage>(&wire) {
            Ok(PeerMessage::Kick { user, conn }) => {
                assert_eq!(&*user, "fl\"at");
                assert_eq!(conn.as_deref(), Some("c-1"));
            }
            other => panic!("{wire}: {other:?}"),
        }
        assert_eq!(presence_value("n1", "c-1"), "n1 c-1");
    }

    #[test]
    fn keys_and_claims() {
        let keys = Keys {
            prefix: "p:".into(),
        };
        assert_eq!(keys.user("door"), "p:user:door");
        assert_eq!(keys.call("door"), "p:call:door");
        assert_eq!(keys.channel("n1"), "p:node:n1");
        assert_eq!(claim_value("door", "flat"), "door>flat");
    }

    #[test]
    fn overview_replies_are_read_and_checked() {
        let keys = Keys {
            prefix: "p:".into(),
        };
        let key = |k: &str| Value::BulkString(k.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![key("p:user:flat"), key("p:user:door"), key("other")]),
            Value::Int(1),
        ]);
        assert_eq!(
            overview(&keys, reply),
            Ok(Overview {
                users: vec!["door".into(), "flat".into()],
                calls: 1
            })
        );
        assert!(overview(&keys, Value::Int(3)).is_err());
        assert!(overview(&keys, Value::Array(vec![Value::Nil])).is_err());
    }
}
