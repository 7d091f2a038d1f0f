//! Watching a client connection's bytes: an I/O wrapper that notes when
//! bytes last moved, so the connection task can close connections that sit
//! idle (HTTP/1 keep-alive and HTTP/2 alike), and hands what the client
//! sends to the [`HeadRecorder`] that keeps header names as sent.
//!
//! It also keeps the request head deadline. hyper's own header read
//! timeout starts only once hyper polls for a head, which is after the
//! protocol is detected (so a connection that never sends a byte was held
//! for the whole idle timeout), and it restarts on every keep-alive wait
//! (so idle keep-alive connections were closed after `header_read_ms`,
//! not `idle_ms`). Here the head clock starts at accept for the first
//! request and at the first byte of each later one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::wire_head::HeadRecorder;

/// When bytes last moved on a connection, to the resolution of the idle
/// check: reads and writes only raise a flag (reading the clock on every
/// one cost more than the rest of this wrapper), and the check, which runs
/// a few times per idle timeout, turns a raised flag into "now".
#[derive(Debug, Clone)]
pub struct ActivityClock {
    origin: Instant,
    shared: Arc<Activity>,
}

#[derive(Debug, Default)]
struct Activity {
    moved: AtomicBool,
    /// Milliseconds after `origin`, as of the check that saw bytes move.
    last_ms: AtomicU64,
    /// Requests handed to the service whose response is not done yet.
    in_flight: AtomicUsize,
    /// Milliseconds after `origin` when the awaited request head began
    /// ([`NO_HEAD`]: none awaited, the connection is between requests).
    head_since_ms: AtomicU64,
    /// HTTP/2 frames its own requests and sends pings and window updates
    /// between them: bytes there do not start a head.
    http2: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

impl ActivityClock {
    /// A clock for a connection accepted at `accepted`: its first request
    /// head is awaited from then on.
    pub fn new(accepted: Instant) -> Self {
        let shared = Activity { head_since_ms: AtomicU64::new(0), ..Activity::default() };
        ActivityClock { origin: accepted, shared: Arc::new(shared) }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        // Read first: a flag already raised is not written again.
        if !self.shared.moved.load(Ordering::Relaxed) {
            self.shared.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes from the client: between requests, they begin the next head.
    fn note_read(&self) {
        self.touch();
        let shared = &self.shared;
        if shared.head_since_ms.load(Ordering::Relaxed) == NO_HEAD
            && shared.in_flight.load(Ordering::Relaxed) == 0
            && !shared.http2.load(Ordering::Relaxed)
        {
            shared.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request head arrived whole and went to the service; the returned
    /// guard, kept with the response body, marks its end when dropped.
    pub fn request_started(&self, http2: bool) -> InFlight {
        if http2 {
            self.shared.http2.store(true, Ordering::Relaxed);
        }
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        self.shared.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        InFlight { shared: self.shared.clone() }
    }

    /// Requests whose response is still being produced or sent.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// How long the awaited request head has been coming, if one is.
    pub fn head_waiting_ms(&self) -> Option<u64> {
        match self.shared.head_since_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            since => Some(self.now_ms().saturating_sub(since)),
        }
    }

    /// Milliseconds since bytes last moved, counted from the first call
    /// that saw them: called every `interval`, the answer is short by less
    /// than one interval.
    pub fn idle_ms(&self) -> u64 {
        let now = self.now_ms();
        if self.shared.moved.swap(false, Ordering::Relaxed) {
            self.shared.last_ms.store(now, Ordering::Relaxed);
        }
        now.saturating_sub(self.shared.last_ms.load(Ordering::Relaxed))
    }
}

/// One request in flight, until its response body is done or dropped.
#[derive(Debug)]
pub struct InFlight {
    shared: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: ActivityClock,
    /// Dropped once it turns itself off, so HTTP/2 and upgraded
    /// connections pay nothing for it.
    recorder: Option<HeadRecorder>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: ActivityClock, recorder: Option<HeadRecorder>) -> Self {
        Tracked { inner, activity, recorder }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.note_read();
            if let Some(recorder) = &mut self.recorder {
                recorder.feed(&buf.filled()[before..]);
                if recorder.is_off() {
                    self.recorder = None;
                }
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_clock_runs_from_accept_and_from_each_later_heads_first_byte() {
        let clock = ActivityClock::new(Instant::now());
        assert!(clock.head_waiting_ms().is_some(), "the first head is awaited from accept");
        let request = clock.request_started(false);
        assert_eq!(clock.head_waiting_ms(), None);
        clock.note_read();
        assert_eq!(clock.head_waiting_ms(), None, "bytes while a request is in flight are its body");
        drop(request);
        assert_eq!(clock.in_flight(), 0);
        assert_eq!(clock.head_waiting_ms(), None, "a quiet keep-alive connection awaits no head");
        clock.note_read();
        assert!(clock.head_waiting_ms().is_some(), "the next head's first byte starts its clock");
        let h2 = clock.request_started(true);
        drop(h2);
        clock.note_read();
        assert_eq!(clock.head_waiting_ms(), None, "HTTP/2 frames between requests are not a head");
    }

    #[test]
    fn moving_bytes_are_noted_by_the_next_check() {
        let clock = ActivityClock::new(Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.idle_ms() >= 20, "nothing moved since the start");
        clock.touch();
        assert_eq!(clock.idle_ms(), 0, "the check that sees the flag counts from now");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.idle_ms() >= 20, "the flag is consumed by one check");
    }
}
