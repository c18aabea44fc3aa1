//! Waiting for a condition that another task makes true, without polling
//! for it: the task that changes the state calls [`Notify::notify`], and
//! every waiter looks at its condition again.

use std::cell::RefCell;
use std::task::{Poll, Waker};

use super::Fifo;

/// The tasks waiting for something on this thread to change; one is held
/// without allocating.
#[derive(Debug, Default)]
pub struct Notify {
    waiters: RefCell<Fifo<Waker>>,
}

impl Notify {
    /// Something changed: every waiter checks its condition again.
    pub fn notify(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waiter in waiters {
            waiter.wake();
        }
    }

    /// Wakes `waker` at the next [`notify`](Notify::notify), once however
    /// often it is registered.
    pub fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push_back(waker.clone());
        }
    }

    /// Waits until `done()` is true, checking it now and after every
    /// [`notify`](Notify::notify).
    pub async fn until(&self, mut done: impl FnMut() -> bool) {
        futures_lite::future::poll_fn(|cx| {
            if done() {
                return Poll::Ready(());
            }
            self.register(cx.waker());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_waiter_wakes_when_notified_and_its_condition_holds() {
        crate::rt::block_on(async {
            let notify = Rc::new(Notify::default());
            let count = Rc::new(Cell::new(2));
            let waiter = {
                let (notify, count) = (notify.clone(), count.clone());
                crate::rt::spawn(async move { notify.until(|| count.get() == 0).await })
            };
            futures_lite::future::yield_now().await;
            assert_eq!(notify.waiters.borrow().iter().count(), 1, "it waits");
            count.set(1);
            notify.notify();
            futures_lite::future::yield_now().await;
            assert!(!waiter.is_finished(), "not yet: one is left");
            assert_eq!(
                notify.waiters.borrow().iter().count(),
                1,
                "one waker, not one per look"
            );
            count.set(0);
            notify.notify();
            waiter.await;
        });
    }
}
