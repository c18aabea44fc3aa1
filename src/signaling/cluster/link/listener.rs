//! The task that receives this node's messages from other nodes, and
//! subscribes again whenever the connection to Redis broke.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use redis::Client;
use smol::Timer;
use smol::channel::Sender;

use super::ops::Op;
use super::{Counters, MAX_BACKOFF};
use crate::signaling::cluster::Inbound;
use crate::signaling::peer::PeerMessage;
use crate::signaling::relay::Relay;

/// Opens the pub/sub connection and subscribes to `channel`.
pub(super) async fn subscribe(
    client: &Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// The task that receives this node's messages, and subscribes again
/// whenever the connection to Redis broke.
pub(super) struct Listener {
    pub client: Client,
    pub channel: String,
    pub inbound: Sender<Inbound>,
    pub ops: Sender<Op>,
    pub up_since: Rc<Cell<Option<Instant>>>,
    pub settled_after: Rc<Cell<Option<Instant>>>,
    pub ttl: Duration,
    pub counters: Rc<Counters>,
}

impl Listener {
    pub async fn run(self, first: redis::aio::PubSub) {
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
            let payload = message.get_payload_bytes();
            let inbound = match serde_json::from_slice::<PeerMessage>(payload) {
                Ok(message) => Inbound::Message(message),
                Err(error) => match serde_json::from_slice::<Relay>(payload) {
                    Ok(relay) => Inbound::Relay(relay),
                    Err(_) => {
                        log::warn!("ignored a malformed message from another node: {error}");
                        continue;
                    }
                },
            };
            if self.inbound.try_send(inbound).is_err() {
                return;
            }
        }
    }
}
