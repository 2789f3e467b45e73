//! What a connection is doing, for its timeouts: requests in flight, when bytes last moved,
//! and when the request head being read began.
//!
//! [`Tracked`] wraps the socket and records reads and writes; [`Counted`] wraps the service
//! and counts requests in flight (a dropped request future counts as finished, so a client
//! that disconnects mid-request frees nothing twice and leaks nothing). Times are kept as
//! milliseconds since the connection began (on Tokio's clock, which tests can pause), in atomics: the service future and the socket are
//! polled from the same task, but hyper requires both to be `Send`.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use crate::Limits;

/// No head is being read (as `head_since_ms`).
const NO_HEAD: u64 = u64::MAX;

/// The activity of one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicU32,
    /// When bytes last moved, or a request began or ended.
    last_ms: AtomicU64,
    /// When the first byte of the request head now being read arrived ([`NO_HEAD`] if none).
    head_since_ms: AtomicU64,
}

impl Activity {
    /// A connection that has just been accepted: its first head is due from now.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        // Bytes with no request in flight start a head (bytes read while a request is in
        // flight belong to its body or are pipelined: the idle timeout still bounds those).
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_since_ms.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn wrote(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NO_HEAD, Ordering::Relaxed);
        self.wrote();
        InFlight(self.clone())
    }

    /// Resolves once the connection has broken one of `limits`, with the reason.
    pub(crate) async fn expired(&self, limits: Limits) -> &'static str {
        let header = millis(limits.header_read_timeout);
        let idle = millis(limits.idle_timeout);
        loop {
            let now = self.now_ms();
            let next = if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Not idle: look again once an idle period could have passed.
                now.saturating_add(idle)
            } else {
                let head = self.head_since_ms.load(Ordering::Relaxed);
                let head_due = if head == NO_HEAD {
                    u64::MAX
                } else {
                    head.saturating_add(header)
                };
                let idle_due = self.last_ms.load(Ordering::Relaxed).saturating_add(idle);
                if now >= head_due {
                    return "the request head was not complete in time";
                }
                if now >= idle_due {
                    return "idle";
                }
                head_due.min(idle_due)
            };
            let wait = Duration::from_millis(next.saturating_sub(now).max(1));
            tokio::time::sleep(wait).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One request in flight; finished when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.wrote();
    }
}

pin_project_lite::pin_project! {
    /// A socket that reports its reads and writes to an [`Activity`].
    pub(crate) struct Tracked<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
    }
}

impl<I> Tracked<I> {
    pub(crate) fn new(io: I, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.io.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A hyper service that counts its requests in flight on an [`Activity`].
#[derive(Debug, Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, R> hyper::service::Service<R> for Counted<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        let in_flight = self.activity.begin();
        CountedFuture {
            inner: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future; its request stops counting as in flight when it resolves or is
    /// dropped.
    pub(crate) struct CountedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = this.inner.poll(cx);
        if polled.is_ready() {
            this.in_flight.take();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_s: u64, idle_s: u64) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(header_s),
            idle_timeout: Duration::from_secs(idle_s),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_head_expires_at_the_header_deadline() {
        let activity = Activity::new();
        let started = tokio::time::Instant::now();
        let reason = activity.expired(limits(30, 60)).await;
        assert_eq!(reason, "the request head was not complete in time");
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(31));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_never_expires() {
        let activity = Activity::new();
        let in_flight = activity.begin();
        let waited =
            tokio::time::timeout(Duration::from_secs(600), activity.expired(limits(30, 60))).await;
        assert!(waited.is_err(), "a long request was treated as idle");
        drop(in_flight);
        let reason = activity.expired(limits(30, 60)).await;
        assert_eq!(reason, "idle");
    }
}
