//! Network behaviour of remote caches: connect timeouts and stall detection.
//!
//! A download that makes no progress for `stall_timeout` fails with
//! [`std::io::ErrorKind::TimedOut`], however long it has already run: a
//! whole-request deadline would kill large NARs on slow links, while a
//! silent server must not hang a build. Retries are the caller's business
//! (the substituter counts `download-attempts`), so the object-store
//! client's own retry loop is switched off when options are given.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

/// How remote caches are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest time without receiving a byte (headers or body).
    pub stall_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(300),
        }
    }
}

/// The error a stall turns into.
pub fn stalled(what: &str, after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{what}: no data received for {} s (stalled-download-timeout)",
            after.as_secs_f64()
        ),
    )
}

/// Runs `fut`, failing with a stall error if it takes longer than `limit`.
pub async fn within<F: Future>(
    limit: Option<Duration>,
    what: &str,
    fut: F,
) -> io::Result<F::Output> {
    match limit {
        None => Ok(fut.await),
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .map_err(|_| stalled(what, d)),
    }
}

/// A byte stream that fails when no item arrives for `limit`.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    what: String,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration, what: impl Into<String>) -> Self {
        StallGuard {
            inner,
            limit,
            what: what.into(),
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl<S, T> Stream for StallGuard<S>
where
    S: Stream<Item = io::Result<T>> + Unpin,
{
    type Item = io::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                let next = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(stalled(&this.what, this.limit)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_fails_after_the_limit() {
        let s = futures::stream::pending::<io::Result<u8>>();
        let mut g = StallGuard::new(s, Duration::from_secs(3), "x");
        let e = g.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("no data received for 3 s"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_stream_is_not_a_stall() {
        // Ten items, 2 s apart: 20 s in total, never 3 s silent.
        let s = futures::stream::unfold(0u8, |n| async move {
            if n == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some((Ok::<u8, io::Error>(n), n + 1))
        });
        let g = StallGuard::new(Box::pin(s), Duration::from_secs(3), "x");
        let got: Vec<u8> = g.map(|r| r.unwrap()).collect().await;
        assert_eq!(got.len(), 10);
    }
}
