//! The single-threaded runtime: one `LocalExecutor` per server thread.
//!
//! Every task of a server runs on the thread that called [`block_on`], so
//! state is shared with `Rc<RefCell<…>>` and never locked.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use smol::{LocalExecutor, Task};

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
