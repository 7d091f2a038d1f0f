//! Watching a client connection's bytes: an I/O wrapper that notes when
//! bytes last moved, so the connection task can close connections that sit
//! idle (HTTP/1 keep-alive and HTTP/2 alike), and hands what the client
//! sends to the [`HeadRecorder`] that keeps header names as sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

impl ActivityClock {
    pub fn new() -> Self {
        ActivityClock { origin: Instant::now(), shared: Arc::default() }
    }

    fn touch(&self) {
        // Read first: a flag already raised is not written again.
        if !self.shared.moved.load(Ordering::Relaxed) {
            self.shared.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Milliseconds since bytes last moved, counted from the first call
    /// that saw them: called every `interval`, the answer is short by less
    /// than one interval.
    pub fn idle_ms(&self) -> u64 {
        let now = self.origin.elapsed().as_millis() as u64;
        if self.shared.moved.swap(false, Ordering::Relaxed) {
            self.shared.last_ms.store(now, Ordering::Relaxed);
        }
        now.saturating_sub(self.shared.last_ms.load(Ordering::Relaxed))
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
            self.activity.touch();
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
    fn moving_bytes_are_noted_by_the_next_check() {
        let clock = ActivityClock::new();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.idle_ms() >= 20, "nothing moved since the start");
        clock.touch();
        assert_eq!(clock.idle_ms(), 0, "the check that sees the flag counts from now");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(clock.idle_ms() >= 20, "the flag is consumed by one check");
    }
}
