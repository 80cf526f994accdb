//! The memory reviews in flight may use together.
//!
//! A review needs its body, the decoded facts, the mutation and the reply at once; for hostile input (tens of
//! thousands of tiny annotations) that is many times the body. Each review reserves [`WORK_FACTOR`] times its
//! declared body size (at most the whole budget) before a byte of its body is read, and keeps the reservation
//! until its reply has been handed to the connection, so neither bodies nor replies pile up beyond the budget.
//! One reservation per review, taken in one step: no review waits while holding part of the budget.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Peak heap of answering a review, as a multiple of its body size, for the most expensive shapes known (a pod
/// with tens of thousands of removable annotations, or of hinted emptyDirs). `tests/serve_memory.rs` measures
/// both and fails when this is too low.
pub const WORK_FACTOR: usize = 20;
/// Reserved on top, for the fixed part of a review (a few small allocations).
const BASE_BYTES: usize = 16 * 1024;
/// The reply is handed to the connection in pieces of this size, so that a reply the client does not read
/// stays in this body (and reserved) instead of in the connection's write buffer.
const REPLY_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct ReviewBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Bytes reserved right now, for the metrics.
    reserved: Gauge,
}

/// A review's share of the budget, returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    reserved: Gauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved.dec_by(self.permit.num_permits() as i64);
    }
}

impl ReviewBudget {
    pub fn new(total: usize, reserved: Gauge) -> Self {
        let total = total.clamp(1, u32::MAX as usize);
        ReviewBudget { bytes: Arc::new(Semaphore::new(total)), total, reserved }
    }

    /// What a review with a body of `body_len` bytes reserves.
    pub fn charge(&self, body_len: usize) -> usize {
        body_len.saturating_mul(WORK_FACTOR).saturating_add(BASE_BYTES).min(self.total)
    }

    pub async fn reserve(&self, body_len: usize) -> Reservation {
        let charge = u32::try_from(self.charge(body_len)).expect("the total fits in u32");
        let permit = self.bytes.clone().acquire_many_owned(charge).await.expect("the budget is never closed");
        self.reserved.inc_by(i64::from(charge));
        Reservation { permit, reserved: self.reserved.clone() }
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// A reply body that keeps its review's reservation until the last piece has been taken by the connection.
#[derive(Debug)]
pub struct ReplyBody {
    rest: Bytes,
    reservation: Option<Reservation>,
}

impl ReplyBody {
    pub fn new(reply: Vec<u8>, reservation: Option<Reservation>) -> Self {
        ReplyBody { rest: Bytes::from(reply), reservation }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            this.reservation = None;
            return Poll::Ready(None);
        }
        let piece = this.rest.split_to(this.rest.len().min(REPLY_CHUNK));
        if this.rest.is_empty() {
            this.reservation = None;
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_reservation_lasts_until_the_reply_is_taken() {
        let budget = ReviewBudget::new(10 * 1024 * 1024, Gauge::default());
        assert_eq!(budget.charge(100 * 1024 * 1024), 10 * 1024 * 1024, "never more than the whole budget");
        let reservation = budget.reserve(1000).await;
        assert_eq!(budget.available(), 10 * 1024 * 1024 - budget.charge(1000));
        assert_eq!(budget.reserved.get(), budget.charge(1000) as i64);
        let mut body = ReplyBody::new(vec![b'x'; 3 * REPLY_CHUNK / 2], Some(reservation));
        assert_eq!(body.size_hint().exact(), Some(3 * REPLY_CHUNK as u64 / 2));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), REPLY_CHUNK);
        assert!(budget.available() < 10 * 1024 * 1024, "still reserved while a piece is left");
        let last = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(last.len(), REPLY_CHUNK / 2);
        assert_eq!(budget.available(), 10 * 1024 * 1024);
        assert_eq!(budget.reserved.get(), 0);
        assert!(body.frame().await.is_none());
    }
}
