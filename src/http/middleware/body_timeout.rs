//! A deadline for the whole request body, counted from when the headers are
//! in. tower-http's `RequestBodyTimeoutLayer` restarts its timer on every
//! chunk, so a client sending one byte every few seconds would hold a
//! connection (and a handler) for hours; this one does not restart.
//!
//! The handler that reads the body sees an error it can recognise with
//! [`is_body_timeout`] and answers 408.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::BoxError;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct BodyTimeoutLayer {
    timeout: Duration,
}

impl BodyTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for BodyTimeoutLayer {
    type Service = BodyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BodyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Request> for BodyTimeout<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Most requests (GET, HEAD, empty POSTs) have no body: leave them
        // alone rather than pay for a boxed body they never read.
        if req.body().is_end_stream() {
            return self.inner.call(req);
        }
        let deadline = Instant::now() + self.timeout;
        self.inner.call(req.map(|body| {
            Body::new(DeadlineBody {
                body,
                deadline,
                sleep: None,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    struct DeadlineBody {
        body: Body,
        deadline: Instant,
        // Made on the first read, so a handler that never reads the body
        // never arms a timer.
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        // Whatever already arrived is taken, even at the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut *this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            this.sleep
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        let sleep = this.sleep.as_pin_mut().expect("armed just above");
        match sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The body did not arrive before HTTP_BODY_TIMEOUT.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// True when `err`, or anything it wraps, is a body deadline.
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}
