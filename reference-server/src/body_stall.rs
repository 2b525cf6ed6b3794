//! A request body that fails when it stops arriving.
//!
//! Every request's body is wrapped in a [`Stalling`] body: once the reader
//! waits for its next frame for longer than `--request-body-timeout`, the
//! body fails with [`Stalled`], the request is answered (REST 408, gRPC
//! `DEADLINE_EXCEEDED`) and what it held is given back. Without it, a
//! client that sent the headers and part of a body, then nothing, held a
//! connection and its gathered bytes of the server's memory budget for as
//! long as it liked: eleven such requests of 99 MiB held the whole default
//! budget, and every other client's request was refused.
//!
//! A reader for whom a silent body is normal (a `ModelStreamInfer` stream
//! between two messages) takes the request's [`StallSwitch`] from its
//! extensions and arms the timer only while a message is partly read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body failed for having sent nothing for the timeout.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body stopped arriving: nothing was received for {after:?} (--request-body-timeout); send the body without pausing"
)]
pub(crate) struct Stalled {
    /// The timeout that passed.
    pub(crate) after: Duration,
}

/// Arms and disarms a request body's stall timer; in the request's
/// extensions. Armed at first.
#[derive(Clone, Debug)]
pub(crate) struct StallSwitch(Arc<AtomicBool>);

impl StallSwitch {
    /// The timer runs while the reader waits for the body.
    pub(crate) fn arm(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// The reader may wait for the body as long as it likes.
    pub(crate) fn disarm(&self) {
        self.0.store(false, Ordering::Release);
    }

    fn armed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A body failing with [`Stalled`] when its reader waits longer than
/// `after` for a frame while its [`StallSwitch`] is armed.
#[derive(Debug)]
pub(crate) struct Stalling<B> {
    inner: B,
    after: Option<Duration>,
    switch: StallSwitch,
    /// The running timer; `fresh` once a frame came, so that the next wait
    /// starts it again.
    timer: Option<Pin<Box<Sleep>>>,
    fresh: bool,
}

impl<B> Stalling<B> {
    /// `inner`, failing after `after` of silence (`None`: never), and the
    /// switch for its reader.
    pub(crate) fn new(inner: B, after: Option<Duration>) -> (Stalling<B>, StallSwitch) {
        let switch = StallSwitch(Arc::new(AtomicBool::new(true)));
        let body = Stalling {
            inner,
            after,
            switch: switch.clone(),
            timer: None,
            fresh: true,
        };
        (body, switch)
    }
}

impl<B> Body for Stalling<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.fresh = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(after) = this.after else {
            return Poll::Pending;
        };
        if !this.switch.armed() {
            // Disarmed: the next armed wait starts the timer afresh.
            this.fresh = true;
            return Poll::Pending;
        }
        let deadline = Instant::now() + after;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut this.fresh) {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled { after })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e`, a body's error, is a [`Stalled`] body, or wraps one (as
/// axum's and tonic's body errors do).
pub(crate) fn is_stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| e.is::<Stalled>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    /// A body that sends what its channel gives.
    fn channel() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        http_body_util::StreamBody<
            impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Unpin,
        >,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        });
        (tx, http_body_util::StreamBody::new(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_silent_for_the_timeout_fails_and_one_that_keeps_coming_does_not() {
        let (tx, inner) = channel();
        let (mut body, _switch) = Stalling::new(inner, Some(Duration::from_secs(10)));
        // A frame every 9 s: never 10 s of silence.
        for _ in 0..5 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(9)).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            });
            let f = body.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "x");
        }
        let started = Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_stalled(&*e), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(e.to_string().contains("--request-body-timeout"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_disarmed_body_waits_as_long_as_it_likes() {
        let (tx, inner) = channel();
        let (mut body, switch) = Stalling::new(inner, Some(Duration::from_secs(10)));
        switch.disarm();
        let open = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            tx.send(Bytes::from_static(b"late")).await.unwrap();
        });
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "late");
        switch.arm();
        let started = Instant::now();
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        drop(open);
    }
}
