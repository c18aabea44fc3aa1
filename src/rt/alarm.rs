//! One timer for every deadline on the thread. Each component with
//! deadlines (a session's heartbeat, Socket.IO's connect timeouts, the
//! hub's ring timeouts) keeps an [`Alarm`] set to its next one; the alarms
//! live in one ordered set that a single task serves, and a component is
//! [woken](Wake::wake) with the time when its alarm comes due.
//!
//! Why one set: a task and a reactor timer per deadline cost several
//! hundred bytes each (a smol task with its future, an async-io timer entry
//! and its waker), which a server holding 10,000 idle clients pays 10,000
//! times over. And why an ordered set rather than a heap: an alarm that is
//! moved or dropped leaves its place at once. The heap it replaces kept
//! every ended session's entry until its deadline passed: a churn of 12,000
//! sessions a second kept 300,000 of them, and the heap's memory for good.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use futures_lite::future;
use smol::Timer;

/// Something with deadlines.
pub trait Wake {
    /// Its alarm came due at or before `now`: handle what is due, and set
    /// the alarm again for the next deadline, if any.
    fn wake(self: Rc<Self>, now: Instant);
}

/// A place in the thread's queue of deadlines: at most one deadline at a
/// time, for the target it was made for. Dropping it takes the deadline
/// out.
pub struct Alarm {
    target: Weak<dyn Wake>,
    key: Cell<Option<(Instant, u64)>>,
}

impl std::fmt::Debug for Alarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm").field("at", &self.at()).finish()
    }
}

impl Alarm {
    /// An alarm, not set, that wakes `target`.
    pub fn new(target: Weak<dyn Wake>) -> Alarm {
        Alarm {
            target,
            key: Cell::new(None),
        }
    }

    /// When it comes due, if set (an alarm that came due is set no more).
    pub fn at(&self) -> Option<Instant> {
        QUEUE.with(|queue| self.current(&queue.borrow()))
    }

    /// The alarm's deadline, if it is still in the queue.
    fn current(&self, queue: &Queue) -> Option<Instant> {
        self.key
            .get()
            .filter(|key| queue.entries.contains_key(key))
            .map(|(at, _)| at)
    }

    /// Sets the alarm for `at` (`None`: not at all), in place of whatever
    /// it was set for. Setting it for the moment it is already set for
    /// changes nothing.
    pub fn set(&self, at: Option<Instant>) {
        QUEUE.with(|queue| {
            let mut queue = queue.borrow_mut();
            if self.current(&queue) == at {
                return;
            }
            if let Some(key) = self.key.take() {
                queue.entries.remove(&key);
            }
            if let Some(at) = at {
                let key = (at, queue.next_id);
                queue.next_id += 1;
                queue.entries.insert(key, self.target.clone());
                self.key.set(Some(key));
                queue.wake_for(at);
            }
        });
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // The queue outlives every alarm but at thread exit, when it
            // may be gone already.
            let _ = QUEUE.try_with(|queue| {
                if let Ok(mut queue) = queue.try_borrow_mut() {
                    queue.entries.remove(&key);
                }
            });
        }
    }
}

/// The thread's deadlines, and the task that serves them.
struct Queue {
    entries: BTreeMap<(Instant, u64), Weak<dyn Wake>>,
    next_id: u64,
    /// The serving task runs (it starts with the first alarm).
    running: bool,
    /// Until when the serving task sleeps, and how to wake it sooner.
    sleeping_until: Option<Instant>,
    waker: Option<Waker>,
}

impl Queue {
    /// An empty queue, its task not started. (A `const fn`, so the
    /// thread-local needs no lazy start: every access to it was inlined
    /// with one, 3 KB of the binary.)
    const fn new() -> Queue {
        Queue {
            entries: BTreeMap::new(),
            next_id: 0,
            running: false,
            sleeping_until: None,
            waker: None,
        }
    }

    /// A deadline at `at` was added: the serving task starts, or wakes if
    /// it sleeps past it.
    fn wake_for(&mut self, at: Instant) {
        if !self.running {
            self.running = true;
            crate::rt::spawn(serve()).detach();
        } else if self.sleeping_until.is_none_or(|until| at < until)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }

    fn first(&self) -> Option<Instant> {
        self.entries.keys().next().map(|(at, _)| *at)
    }

    /// Takes the entries due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Weak<dyn Wake>> {
        let later = self.entries.split_off(&(now, u64::MAX));
        std::mem::replace(&mut self.entries, later)
            .into_values()
            .collect()
    }
}

thread_local! {
    static QUEUE: RefCell<Queue> = const { RefCell::new(Queue::new()) };
}

/// Sleeps until the first deadline, or until an earlier one is added; then
/// wakes every target that is due, a round at a time (a target that sets
/// its alarm for now again is woken in the next round, after a yield).
async fn serve() {
    loop {
        let first = QUEUE.with(|queue| {
            let mut queue = queue.borrow_mut();
            let first = queue.first();
            queue.sleeping_until = first;
            first
        });
        let earlier = future::poll_fn(|cx| {
            QUEUE.with(|queue| {
                let mut queue = queue.borrow_mut();
                if queue.first() != queue.sleeping_until {
                    return Poll::Ready(());
                }
                queue.waker = Some(cx.waker().clone());
                Poll::Pending
            })
        });
        match first {
            Some(at) => {
                future::or(
                    async {
                        Timer::at(at).await;
                    },
                    earlier,
                )
                .await
            }
            None => earlier.await,
        }
        let now = Instant::now();
        let due = QUEUE.with(|queue| {
            let mut queue = queue.borrow_mut();
            queue.sleeping_until = None;
            queue.waker = None;
            queue.take_due(now)
        });
        // No borrow is held while targets act: they set alarms again.
        for target in due {
            if let Some(target) = target.upgrade() {
                target.wake(now);
            }
        }
        futures_lite::future::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Counts its wake-ups; sets itself again while `again` says so.
    struct Counter {
        alarm: Alarm,
        woken: Cell<u32>,
        again: Cell<Option<Duration>>,
    }

    impl Wake for Counter {
        fn wake(self: Rc<Self>, now: Instant) {
            self.woken.set(self.woken.get() + 1);
            self.alarm.set(self.again.get().map(|d| now + d));
        }
    }

    fn counter(again: Option<Duration>) -> Rc<Counter> {
        Rc::new_cyclic(|me: &Weak<Counter>| Counter {
            alarm: Alarm::new(me.clone()),
            woken: Cell::new(0),
            again: Cell::new(again),
        })
    }

    fn queued() -> usize {
        QUEUE.with(|queue| queue.borrow().entries.len())
    }

    #[test]
    fn alarms_wake_their_targets_in_order_and_leave_no_trace() {
        crate::rt::block_on(async {
            let base = queued();
            let soon = counter(None);
            let later = counter(None);
            let now = Instant::now();
            later.alarm.set(Some(now + Duration::from_millis(40)));
            soon.alarm.set(Some(now + Duration::from_millis(10)));
            assert_eq!(queued(), base + 2);
            Timer::after(Duration::from_millis(25)).await;
            assert_eq!((soon.woken.get(), later.woken.get()), (1, 0));
            Timer::after(Duration::from_millis(40)).await;
            assert_eq!((soon.woken.get(), later.woken.get()), (1, 1));
            assert_eq!(queued(), base);
        });
    }

    #[test]
    fn a_moved_or_dropped_alarm_leaves_its_place() {
        crate::rt::block_on(async {
            let base = queued();
            let now = Instant::now();
            let moved = counter(None);
            moved.alarm.set(Some(now + Duration::from_secs(3600)));
            moved.alarm.set(Some(now + Duration::from_secs(7200)));
            assert_eq!(queued(), base + 1);
            moved.alarm.set(None);
            assert_eq!(queued(), base);
            let dropped = counter(None);
            dropped.alarm.set(Some(now + Duration::from_secs(3600)));
            assert_eq!(queued(), base + 1);
            drop(dropped);
            assert_eq!(queued(), base);
            // An alarm set earlier than the one the task sleeps for wakes it.
            let far = counter(None);
            far.alarm.set(Some(now + Duration::from_secs(3600)));
            let near = counter(Some(Duration::from_millis(5)));
            near.alarm
                .set(Some(Instant::now() + Duration::from_millis(5)));
            Timer::after(Duration::from_millis(60)).await;
            assert!(near.woken.get() >= 3, "{}", near.woken.get());
            assert_eq!(far.woken.get(), 0);
            near.again.set(None);
        });
    }
}
