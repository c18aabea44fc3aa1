//! The task that sends commands to Redis in the order the hub decided, in
//! pipelined batches, and hands each reply to [`Encoder::settle`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use redis::Value;
use redis::aio::ConnectionManager;
use smol::channel::{Receiver, Sender, TryRecvError};

use super::ops::{Encoder, Op};
use super::{Counters, MAX_BATCH};
use crate::signaling::cluster::Inbound;

/// Whether a missing user may be declared lost now: the subscription is
/// up, and not so freshly back that other nodes might not have published
/// their users again.
#[derive(Clone)]
pub(super) struct Settled {
    pub up_since: Rc<Cell<Option<Instant>>>,
    pub settled_after: Rc<Cell<Option<Instant>>>,
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

pub(super) struct Writer {
    pub encoder: Encoder,
    pub connection: ConnectionManager,
    pub inbound: Sender<Inbound>,
    pub settled: Settled,
    pub counters: Rc<Counters>,
    pub healthy: bool,
    /// Ops the last batch's replies asked for, sent first in the next.
    pub retry: Vec<Op>,
}

impl Writer {
    pub async fn run(mut self, ops: Receiver<Op>) {
        loop {
            let mut batch = std::mem::take(&mut self.retry);
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
            if let Some(command) = self.encoder.command(op) {
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
        let settled = self.settled.now();
        let mut replies = replies.into_iter();
        for op in batch {
            let reply = if matches!(op, Op::Then(_)) {
                Ok(Value::Nil)
            } else {
                replies.next().unwrap_or_else(|| Err("no reply".to_owned()))
            };
            let out = self.encoder.settle(op, reply, settled);
            for inbound in out.inbound {
                let _ = self.inbound.try_send(inbound);
            }
            self.retry.extend(out.retry);
            if let Some(then) = out.then {
                then();
            }
        }
    }
}
