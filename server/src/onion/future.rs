//! The futures the steps return: concrete types, so the whole onion is one future per request
//! whose size the compiler knows, with no allocation per step.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use pin_project_lite::pin_project;

use crate::route::{BoxResponse, Handled};

pub type Answered = Result<Response, Infallible>;

pin_project! {
    /// The inside's response, with one header set on the way out.
    pub struct WithHeader<F> {
        #[pin]
        inner: F,
        name: &'static HeaderName,
        value: Option<HeaderValue>,
    }
}

impl<F> WithHeader<F> {
    pub fn new(inner: F, name: &'static HeaderName, value: HeaderValue) -> Self {
        Self { inner, name, value: Some(value) }
    }
}

impl<F: Future<Output = Answered>> Future for WithHeader<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(value) = this.value.take() {
            res.headers_mut().insert(this.name.clone(), value);
        }
        Poll::Ready(Ok(res))
    }
}

/// A handler's answer: at once, or the future of a handler that waits.
pub enum Answer {
    Now(Option<Response>),
    Later(BoxResponse),
}

impl From<Handled> for Answer {
    fn from(handled: Handled) -> Self {
        match handled {
            Handled::Now(res) => Answer::Now(Some(res)),
            Handled::Later(fut) => Answer::Later(fut),
        }
    }
}

impl Future for Answer {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        match self.get_mut() {
            // Polled once: a future is not polled again after it is ready.
            Answer::Now(res) => Poll::Ready(Ok(res.take().unwrap_or_default())),
            Answer::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}
