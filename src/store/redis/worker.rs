//! One Redis connection per worker thread, for the requests' own calls.
//!
//! The proxy serves each connection on a worker thread with a runtime of
//! its own (`src/listen/server.rs`). A Redis connection runs a driver task
//! on the runtime that opened it, so a request on a worker that calls
//! through the store's shared connection hands its command to another
//! thread and is woken from there when the answer comes: two thread
//! wake-ups per request, which cost more CPU than the call itself. Here a
//! request on a single-threaded runtime uses a connection opened on that
//! runtime, whose driver runs between the thread's own requests.
//!
//! The shared connection stays what decides whether Redis is up (the
//! probe, the health check, the writer and the admin paths use it): a
//! worker's connection only carries requests while Redis is up, is opened
//! in the background on the worker's first request (which, like every
//! request until it is ready, uses the shared connection, so no request
//! waits on a connect) and is dropped when Redis is marked down, so that
//! after an outage every worker starts again on a fresh connection instead
//! of failing once on a dead one.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;

use super::{Connection, Shared};

thread_local! {
    /// This thread's connections, one per store: a process serves one
    /// store, tests start several.
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// One store's connection on this thread.
struct Slot {
    store: Weak<Shared>,
    /// The [`Shared::generation`] the connection was opened in.
    generation: u64,
    /// A task that never ends on its own: it is finished once the runtime
    /// that runs this slot's connection has shut down (a thread may run
    /// one runtime after another), and the connection is dead with it.
    runtime: JoinHandle<()>,
    state: State,
}

enum State {
    Connecting,
    Ready(Connection),
    /// The connect failed; the next one is not tried before this.
    Failed(Instant),
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.runtime.abort();
    }
}

impl Slot {
    fn belongs_to(&self, shared: &Arc<Shared>) -> bool {
        std::ptr::eq(self.store.as_ptr(), Arc::as_ptr(shared))
    }
}

/// This thread's connection to `shared`'s Redis, when the caller runs on a
/// single-threaded runtime and the connection is open; `None` (use the
/// shared connection) otherwise, after starting to open one if there is
/// none. Call only while Redis is up.
pub(super) fn connection(shared: &Arc<Shared>) -> Option<Connection> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        // A multi-threaded runtime moves tasks between its threads: a
        // connection per thread would not save the hand-off.
        return None;
    }
    let generation = shared.generation.load(Ordering::Acquire);
    SLOTS.with_borrow_mut(|slots| {
        if let Some(index) = slots.iter().position(|slot| slot.belongs_to(shared)) {
            let slot = &slots[index];
            if slot.generation == generation && !slot.runtime.is_finished() {
                match &slot.state {
                    State::Ready(connection) => return Some(connection.clone()),
                    State::Connecting => return None,
                    State::Failed(until) if Instant::now() < *until => return None,
                    State::Failed(_) => {}
                }
            }
            slots.swap_remove(index);
        }
        // Connections of stores that are gone are closed here rather than
        // kept until the thread ends.
        slots.retain(|slot| slot.store.strong_count() > 0);
        slots.push(Slot {
            store: Arc::downgrade(shared),
            generation,
            runtime: handle.spawn(std::future::pending()),
            state: State::Connecting,
        });
        handle.spawn(open(Arc::downgrade(shared), generation));
        None
    })
}

/// Open this thread's connection and put it in its slot (the task runs on
/// the thread's own runtime, so on this thread).
async fn open(store: Weak<Shared>, generation: u64) {
    let Some(shared) = store.upgrade() else { return };
    let opened = tokio::time::timeout(shared.settings.connect_timeout, shared.connect(false)).await;
    let state = match opened {
        Ok(Ok(connection)) => State::Ready(connection),
        Ok(Err(error)) => {
            tracing::debug!(%error, "Redis connect for a worker failed");
            State::Failed(Instant::now() + shared.settings.retry_interval)
        }
        Err(_) => State::Failed(Instant::now() + shared.settings.retry_interval),
    };
    SLOTS.with_borrow_mut(|slots| {
        let slot = slots.iter_mut().find(|slot| slot.belongs_to(&shared) && slot.generation == generation);
        if let Some(slot) = slot {
            slot.state = state;
        }
    });
}
