//! A future polled only when its own waker has fired since its last poll.
//!
//! A client connection's task is woken for every read and write of the
//! client's socket and, since palisade's own upstream client runs in it,
//! the upstream's too. Its watchdogs (shutdown, the grace period's end,
//! the idle check) rarely have anything to say, but a `select!` polls
//! every branch on every wake-up, and polling a `Notified` takes its
//! waiter lock each time. Wrapped in [`Gated`], they are polled once to
//! register, then again only after one of them woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The waker handed to gated futures: it notes that they woke, then
/// wakes the task.
#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// One flag and its waker, made once per connection and reused by every
/// [`Gated`] future of it.
#[derive(Debug, Clone)]
pub struct Gate {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Default for Gate {
    fn default() -> Self {
        let flag = Arc::new(Flag::default());
        Gate { waker: Waker::from(flag.clone()), flag }
    }
}

impl Gate {
    /// Wrap `future`, to be polled first at once and then only when it
    /// woke. One gate serves one gated future at a time.
    pub fn wrap<F: Future>(&self, future: F) -> Gated<'_, F> {
        // A new future has registered nothing yet.
        self.flag.woken.store(true, Ordering::Release);
        Gated { gate: self, future }
    }
}

/// See [`Gate::wrap`].
#[derive(Debug)]
pub struct Gated<'a, F> {
    gate: &'a Gate,
    future: F,
}

impl<F: Future + Unpin> Future for Gated<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let gate = self.gate;
        gate.flag.task.register(cx.waker());
        if !gate.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut inner = Context::from_waker(&gate.waker);
        Pin::new(&mut self.future).poll(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking whoever last
    /// polled it when told to.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    struct Polled<'a>(&'a Probe);

    impl Future for Polled<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.ready.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
        }
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_future_is_polled_only_after_it_woke() {
        let probe = Probe::default();
        let task = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let gate = Gate::default();
        let mut gated = gate.wrap(Polled(&probe));
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "polled once to register");
        // The task woken for something else: the gated future is not polled.
        for _ in 0..3 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1);
        // It wakes: the task is woken, and the next poll reaches it.
        probe.ready.store(true, Ordering::SeqCst);
        let waker = probe.waker.lock().unwrap().take().unwrap();
        waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
        // A new future on the same gate is polled at once.
        let second = Probe::default();
        let mut gated = gate.wrap(Polled(&second));
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(second.polls.load(Ordering::SeqCst), 1);
    }
}
