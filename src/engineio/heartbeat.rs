//! One timer for every session of an endpoint: each session has exactly one
//! deadline at a time (its next ping, its pong check, or the end of its
//! closing linger), kept in a heap and served by a single task. A task and a
//! reactor timer per session would cost several hundred bytes each.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_lite::future;
use smol::Timer;

/// What a session's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send a ping.
    Ping,
    /// The pong for the ping sent at this instant must have come.
    PongCheck(Instant),
    /// A server-closed session's last packets were not collected in time.
    Linger,
}

/// Something with deadlines: told when one comes.
pub(crate) trait Deadlines {
    /// The deadline `at` came; `at` tells stale entries from the current one.
    fn due(self: Rc<Self>, at: Instant);
}

struct Entry<T> {
    at: Instant,
    seq: u64,
    target: Weak<T>,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The shared timer: a heap of (deadline, target) and the task serving it.
pub(crate) struct Scheduler<T> {
    heap: RefCell<BinaryHeap<Reverse<Entry<T>>>>,
    seq: Cell<u64>,
    /// Wakes the task when a deadline earlier than its sleep arrives.
    waker: Cell<Option<Waker>>,
    sleeping_until: Cell<Option<Instant>>,
    running: Cell<bool>,
}

impl<T: Deadlines + 'static> Scheduler<T> {
    pub fn new() -> Rc<Scheduler<T>> {
        Rc::new(Scheduler {
            heap: RefCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            waker: Cell::new(None),
            sleeping_until: Cell::new(None),
            running: Cell::new(false),
        })
    }

    /// Calls `target.due(at)` at `at`; the task starts with the first entry.
    pub fn schedule(self: &Rc<Self>, at: Instant, target: Weak<T>) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.heap
            .borrow_mut()
            .push(Reverse(Entry { at, seq, target }));
        if !self.running.replace(true) {
            crate::rt::spawn(run(Rc::downgrade(self))).detach();
        } else if self.sleeping_until.get().is_none_or(|until| at < until)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }

    /// Takes the entries due at `now`.
    fn take_due(&self, now: Instant) -> Vec<(Instant, Weak<T>)> {
        let mut heap = self.heap.borrow_mut();
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push((entry.at, entry.target));
            }
        }
        due
    }

    fn next(&self) -> Option<Instant> {
        self.heap.borrow().peek().map(|Reverse(e)| e.at)
    }
}

async fn run<T: Deadlines + 'static>(scheduler: Weak<Scheduler<T>>) {
    loop {
        let Some(this) = scheduler.upgrade() else {
            return;
        };
        let next = this.next();
        this.sleeping_until.set(next);
        drop(this);
        let woken = future::poll_fn(|cx| {
            let Some(this) = scheduler.upgrade() else {
                return Poll::Ready(());
            };
            if this.next() != this.sleeping_until.get() {
                return Poll::Ready(());
            }
            this.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        });
        match next {
            Some(at) => {
                future::or(
                    async {
                        Timer::at(at).await;
                    },
                    woken,
                )
                .await
            }
            None => woken.await,
        }
        let Some(this) = scheduler.upgrade() else {
            return;
        };
        this.sleeping_until.set(None);
        let due = this.take_due(Instant::now());
        drop(this);
        // No borrow is held while targets act: they schedule again.
        for (at, target) in due {
            if let Some(target) = target.upgrade() {
                target.due(at);
            }
        }
    }
}
