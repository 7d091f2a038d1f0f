//! Watching a client connection's bytes: an I/O wrapper that notes when
//! bytes last moved, so the connection task can close connections that sit
//! idle (HTTP/1 keep-alive and HTTP/2 alike), and hands what the client
//! sends to the [`HeadRecorder`] that keeps header names as sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::wire_head::HeadRecorder;

#[derive(Debug, Clone)]
pub struct ActivityClock {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl ActivityClock {
    pub fn new() -> Self {
        ActivityClock { origin: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Milliseconds since bytes last moved.
    pub fn idle_ms(&self) -> u64 {
        (self.origin.elapsed().as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed))
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
