//! Per-connection limits for both ports: a cap on open connections, and a write timeout.
//!
//! Every connection costs buffers (hyper's, and rustls' on the webhook port), so the number open at once is
//! capped: a connection over the cap waits (unread, in the kernel) until one closes, and is dropped if none
//! does within the wait. A client that stops reading its reply would otherwise pin the reply in memory for
//! as long as it likes: a write that makes no progress for the write timeout fails, and the connection closes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use super::metrics::{Metrics, Port, PortLabels};

/// Takes a connection slot, then hands on a [`Guarded`] stream (with Nagle off: replies are one write each).
#[derive(Debug, Clone)]
pub struct GuardAcceptor {
    slots: Arc<Semaphore>,
    slot_wait: Duration,
    write_timeout: Duration,
    accepted: Counter,
    open: Gauge,
}

impl GuardAcceptor {
    pub fn new(
        max_connections: usize,
        slot_wait: Duration,
        write_timeout: Duration,
        metrics: &Metrics,
        port: Port,
    ) -> Self {
        let labels = PortLabels { port };
        GuardAcceptor {
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            slot_wait,
            write_timeout,
            accepted: metrics.connections_accepted.get_or_create(&labels).clone(),
            open: metrics.connections_open.get_or_create(&labels).clone(),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for GuardAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let (slots, slot_wait, write_timeout, open) =
            (self.slots.clone(), self.slot_wait, self.write_timeout, self.open.clone());
        self.accepted.inc();
        Box::pin(async move {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => match tokio::time::timeout(slot_wait, slots.acquire_owned()).await {
                    Ok(Ok(slot)) => slot,
                    _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "connection limit reached")),
                },
            };
            stream.set_nodelay(true)?;
            open.inc();
            Ok((Guarded { inner: stream, write_timeout, stalled: None, open, _slot: slot }, service))
        })
    }
}

/// A connection holding its slot, whose writes fail after `write_timeout` without progress.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    write_timeout: Duration,
    /// Armed when a write returns Pending, cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    open: Gauge,
    _slot: OwnedSemaphorePermit,
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<S> Guarded<S> {
    /// Pending for now; an error once the write has been stalled for the whole timeout.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the reply within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(result, cx)
    }
}
