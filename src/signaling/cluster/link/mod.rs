//! The link to Redis, [`Nodes`] for a real cluster: [`scripts`] (the Lua),
//! [`ops`] (the pure mapping of what to do to commands, and of replies to
//! what follows), the writer task that sends them in order, and the
//! listener task that receives this node's channel.

mod listener;
mod ops;
mod scripts;
mod writer;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use smol::Timer;
use smol::channel::{Receiver, Sender, unbounded};

use super::{
    ClusterConfig, ClusterError, ClusterStats, Inbound, Nodes, Overview, RedisTarget, redact,
};
use crate::push::PushMessage;
use crate::rt;
use crate::signaling::hub::{InCall, MemberClaim, Registration, Shared};
use crate::signaling::peer::PeerMessage;
use crate::signaling::relay::Relay;
use listener::{Listener, subscribe};
use ops::{Encoder, Held, Keys, Op, claim_of, claim_ttl, presence_value};
use writer::{Settled, Writer};

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
    /// Shutting down: no longer says it is alive.
    retired: Cell<bool>,
}

type OverviewWaiter = Sender<Result<Overview, ClusterError>>;

/// Who waits for the cluster overview being made, and for the next.
#[derive(Default)]
struct OverviewState {
    in_flight: bool,
    current: Vec<OverviewWaiter>,
    next: Vec<OverviewWaiter>,
}

/// Waits for what `answer` brings, at most twice Redis's response timeout.
fn answered<T: 'static>(
    answer: Receiver<Result<T, ClusterError>>,
) -> Pin<Box<dyn Future<Output = Result<T, ClusterError>>>> {
    Box::pin(async move {
        let timeout = async {
            Timer::after(RESPONSE_TIMEOUT * 2).await;
            Err(ClusterError::Unavailable(
                "Redis did not answer in time".to_owned(),
            ))
        };
        let answer = async {
            answer.recv().await.unwrap_or_else(|_| {
                Err(ClusterError::Unavailable(
                    "the cluster link stopped".to_owned(),
                ))
            })
        };
        futures_lite::future::or(answer, timeout).await
    })
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
    pub async fn connect(
        config: &ClusterConfig,
    ) -> Result<(Cluster, Receiver<Inbound>), ClusterError> {
        let url = &config.url;
        let target = RedisTarget::parse(url)?;
        let client = target
            .connection_info()
            .and_then(Client::open)
            .map_err(|error| {
                ClusterError::Url(format!("invalid Redis URL {}: {error}", redact(url)))
            })?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let unreachable = |error: redis::RedisError| ClusterError::Unreachable {
            url: redact(url),
            error: error.to_string(),
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
            retired: Cell::new(false),
        };
        let subscription = subscribe(&client, &keys.channel(&node))
            .await
            .map_err(unreachable)?;
        cluster.up_since.set(Some(Instant::now()));
        let writer = Writer {
            encoder: Encoder {
                node: node.clone(),
                keys: keys.clone(),
                ttl_ms: config.presence_ttl.as_millis().to_string(),
                claim_ttl_ms: claim_ttl(config.presence_ttl).as_millis().to_string(),
            },
            connection,
            inbound: inbound.clone(),
            settled: Settled {
                up_since: cluster.up_since.clone(),
                settled_after: cluster.settled_after.clone(),
            },
            counters: cluster.counters.clone(),
            healthy: true,
            retry: Vec::new(),
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
        cluster.hold(&[], &[], false);
        log::info!("cluster node {node} on Redis {}", redact(url));
        Ok((cluster, inbound_rx))
    }

    /// This node's id: random, new at each start; it names the node's channel.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sends the op `make` builds around its answer's callback, and
    /// waits for that answer.
    fn ask<T: 'static>(
        &self,
        make: impl FnOnce(Box<dyn FnOnce(Result<T, ClusterError>)>) -> Op,
    ) -> Pin<Box<dyn Future<Output = Result<T, ClusterError>>>> {
        let (reply, answer) = smol::channel::bounded(1);
        self.send(make(Box::new(move |result| {
            let _ = reply.try_send(result);
        })));
        answered(answer)
    }

    fn send(&self, op: Op) {
        if matches!(op, Op::Route { .. } | Op::Publish { .. }) && self.ops.len() >= MAX_QUEUED {
            // Redis is not keeping up (or hangs): shed messages, not memory.
            self.counters.dropped.set(self.counters.dropped.get() + 1);
            return;
        }
        // The writer lives as long as the executor: a send cannot fail
        // while anyone is here to ask.
        let _ = self.ops.try_send(op);
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
}

impl Nodes for Cluster {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn refresh_period(&self) -> Duration {
        // A claim lives two periods, so one late refresh does not lose it.
        claim_ttl(self.ttl) / 2
    }

    fn joined(&self, registration: Registration<Rc<str>>) {
        self.send(Op::Joined(registration));
    }

    fn left(&self, user: Rc<str>) {
        self.send(Op::Left(user));
    }

    fn route(&self, message: &PeerMessage) {
        match serde_json::to_string(message) {
            Ok(json) => self.send(Op::Route {
                to: message.recipient().clone(),
                message: json,
            }),
            Err(error) => log::error!("cannot encode a message for another node: {error}"),
        }
    }

    fn claim(&self, socket: Rc<str>, caller: Rc<str>, callee: Rc<str>) {
        self.send(Op::Claim {
            socket,
            caller,
            callee,
        });
    }

    fn claim_members(&self, socket: Option<Rc<str>>, claim: MemberClaim) {
        self.send(Op::ClaimMembers { socket, claim });
    }

    fn release(&self, caller: &Rc<str>, callee: &Rc<str>, member: Option<&Rc<str>>) {
        self.send(Op::Release {
            caller: caller.clone(),
            callee: callee.clone(),
            member: member.cloned(),
        });
    }

    fn hold(&self, users: &[Registration<Rc<str>>], calls: &[InCall], restore: bool) {
        let alive = (!self.retired.get()).then(|| Held {
            key: self.keys.alive(&self.node),
            value: "1".to_owned(),
            user: None,
        });
        let presence = users.iter().map(|registration| Held {
            key: self.keys.user(&registration.user),
            value: presence_value(&self.node, &registration.socket),
            user: Some(registration.clone()),
        });
        self.hold_chunks(alive.into_iter().chain(presence).collect(), true, false);
        let claims = calls.iter().map(|call| Held {
            key: self.keys.call(&call.user),
            value: claim_of(call),
            user: None,
        });
        self.hold_chunks(claims.collect(), restore, true);
    }

    fn check(&self, peers: Vec<InCall>) {
        if !peers.is_empty() {
            let peers = peers
                .into_iter()
                .map(|call| {
                    let claim = claim_of(&call);
                    (call.user, claim)
                })
                .collect();
            self.send(Op::Check(peers));
        }
    }

    fn overview(&self) -> Pin<Box<dyn Future<Output = Result<Overview, ClusterError>>>> {
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
        answered(answer)
    }

    fn shared(&self, shared: Shared<Rc<str>>) {
        self.send(Op::Shared(shared));
    }

    fn push(&self, user: Rc<str>, message: PushMessage) {
        self.send(Op::Push { user, message });
    }

    fn agree(
        &self,
        name: &str,
        value: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, ClusterError>>>> {
        let name = name.to_owned();
        self.ask(move |answer| Op::Agree {
            name,
            value,
            answer,
        })
    }

    fn deliver(
        &self,
        message: &PeerMessage,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ClusterError>>>> {
        let to = message.recipient().clone();
        let message = match serde_json::to_string(message) {
            Ok(json) => json,
            Err(error) => {
                let error = ClusterError::Unavailable(error.to_string());
                return Box::pin(async move { Err(error) });
            }
        };
        self.ask(move |answer| Op::Deliver {
            to,
            message,
            answer,
        })
    }

    fn after(&self, then: Box<dyn FnOnce()>) {
        self.send(Op::Then(then));
    }

    fn node(&self) -> Rc<str> {
        self.node.clone()
    }

    fn retire(&self) {
        self.retired.set(true);
        self.send(Op::Retire);
    }

    fn home(&self, socket: Rc<str>, user: Rc<str>) {
        self.send(Op::Home { socket, user });
    }

    fn relay(&self, node: &str, message: &Relay) {
        match serde_json::to_string(message) {
            Ok(json) => self.send(Op::Publish {
                node: node.into(),
                message: json,
            }),
            Err(error) => log::error!("cannot encode a message for another node: {error}"),
        }
    }

    fn watch(&self, homes: Vec<(Rc<str>, Rc<str>)>, nodes: Vec<Rc<str>>) {
        if !homes.is_empty() || !nodes.is_empty() {
            self.send(Op::Watch { homes, nodes });
        }
    }

    fn flush(&self, limit: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        let (done, finished) = smol::channel::bounded(1);
        self.after(Box::new(move || {
            let _ = done.try_send(());
        }));
        Box::pin(futures_lite::future::or(
            async move {
                let _ = finished.recv().await;
            },
            async move {
                Timer::after(limit).await;
            },
        ))
    }

    fn stats(&self) -> ClusterStats {
        ClusterStats {
            up: self.up_since.get().is_some(),
            sent: self.counters.sent.get(),
            received: self.counters.received.get(),
            failed_batches: self.counters.failed_batches.get(),
            dropped: self.counters.dropped.get(),
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
