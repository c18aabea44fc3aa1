//! The single-threaded runtime: one `LocalExecutor` per server thread.
//!
//! Every task of a server runs on the thread that called [`block_on`], so
//! state is shared with `Rc<RefCell<…>>` and never locked.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use smol::{LocalExecutor, Task};

mod alarm;
mod fifo;
mod notify;
mod socket;
pub use alarm::{Alarm, Wake};
pub(crate) use fifo::Fifo;
pub use notify::Notify;
pub use socket::Socket;

thread_local! {
    static EXECUTOR: RefCell<Option<Rc<LocalExecutor<'static>>>> = const { RefCell::new(None) };
}

/// Runs `future` to completion on this thread's executor, creating it if
/// needed; tasks started with [`spawn`] run alongside it.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    let executor = EXECUTOR.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| Rc::new(LocalExecutor::new()))
            .clone()
    });
    smol::block_on(executor.run(future))
}

/// Starts a task on this thread's executor. Dropping the returned handle
/// cancels the task; `detach` it to let it run on its own.
///
/// # Panics
///
/// When called outside [`block_on`]: that is a programming error, never a
/// consequence of network input.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    EXECUTOR.with(|cell| {
        let executor = cell.borrow();
        let executor = executor
            .as_ref()
            .expect("rt::spawn called outside rt::block_on");
        executor.spawn(future)
    })
}

/// A task's share of the thread: how much work it may do before it gives
/// the executor back. A socket with bytes waiting is always ready, so a loop
/// that reads while it can holds the one thread for as long as its client
/// keeps sending (a keep-alive connection pipelining requests held it for
/// seconds). Every loop that works for one client spends a turn and yields
/// when it is used up: other tasks run, then it goes on. A yield costs a
/// trip through the executor's queue, well under a microsecond; a turn is
/// tens of microseconds of work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Turn {
    units: u32,
    bytes: usize,
}

impl Turn {
    /// Requests, messages or packets in one turn.
    pub const UNITS: u32 = 32;
    /// Bytes read in one turn.
    pub const BYTES: usize = 64 * 1024;

    /// A turn with nothing spent: [`Turn::UNITS`] units and [`Turn::BYTES`] bytes to go.
    pub fn new() -> Turn {
        Turn::default()
    }

    /// Charges `units` pieces of work and `bytes` read; true when that
    /// used the turn up, and a fresh one begins.
    ///
    /// ```
    /// use signalbox::rt::Turn;
    /// let mut turn = Turn::new();
    /// assert!((1..Turn::UNITS).all(|_| !turn.spend(1, 10)));
    /// assert!(turn.spend(1, 10), "the last unit ends the turn");
    /// assert!(!turn.spend(1, 0), "and a new one begins");
    /// assert!(turn.spend(0, Turn::BYTES), "bytes end it too");
    /// ```
    pub fn spend(&mut self, units: u32, bytes: usize) -> bool {
        self.units += units;
        self.bytes += bytes;
        let over = self.units >= Turn::UNITS || self.bytes >= Turn::BYTES;
        if over {
            *self = Turn::new();
        }
        over
    }

    /// Charges work, and lets the other tasks run first when that used the
    /// turn up.
    pub async fn take(&mut self, units: u32, bytes: usize) {
        if self.spend(units, bytes) {
            futures_lite::future::yield_now().await;
        }
    }

    /// [`Turn::take`] for a hand-written future: `Poll::Pending`, with the
    /// task woken again, when the turn is used up.
    pub fn poll_take(
        &mut self,
        cx: &mut std::task::Context<'_>,
        units: u32,
        bytes: usize,
    ) -> std::task::Poll<()> {
        if self.spend(units, bytes) {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

/// A peer for tests: sends `pattern` over and over, always ready, up to
/// `limit` bytes (then the end of the stream), and takes whatever it is
/// sent. `read` counts the bytes it gave.
#[cfg(test)]
pub(crate) struct Endless {
    pattern: &'static [u8],
    at: usize,
    limit: usize,
    pub read: Rc<std::cell::Cell<usize>>,
}

#[cfg(test)]
impl Endless {
    pub fn new(pattern: &'static [u8], limit: usize) -> Endless {
        Endless {
            pattern,
            at: 0,
            limit,
            read: Rc::default(),
        }
    }
}

#[cfg(test)]
impl futures_lite::AsyncRead for Endless {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut n = 0;
        while n < buf.len() && self.read.get() < self.limit {
            buf[n] = self.pattern[self.at];
            self.at = (self.at + 1) % self.pattern.len();
            n += 1;
            self.read.set(self.read.get() + 1);
        }
        std::task::Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
impl futures_lite::AsyncWrite for Endless {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Gives the memory the allocator keeps free back to the system. glibc's
/// malloc keeps what a burst freed (a churn of 100,000 names left 3 MiB
/// resident with 100 KiB of it in use); `malloc_trim` hands the free pages
/// back, at the cost of a walk over the heap (a millisecond or so for a few
/// MiB). Called after a sweep that forgot much; a no-op elsewhere than glibc
/// (musl's allocator gives memory back by itself).
pub fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer and may be called at any
        // time; it only returns free pages to the system.
        unsafe {
            malloc_trim(0);
        }
    }
}
