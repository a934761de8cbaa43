//! The two halves of a session handed to the caller: [`PutMediaSink`] (MKV bytes in) and
//! [`AckStream`] (events out), and the input side of [`Shared`]: the re-fragmenter's output
//! into the ledger, overflow eviction and the pause flush.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::time::Instant;

#[cfg(doc)]
use super::config::{CompletionAck, Timeouts};
use super::error::{Error, Result};
use super::events::{DroppedFragment, SessionEvent};
use super::ledger::NewFragment;
use super::policy::OverflowPolicy;
use super::session::{Shared, State};
use super::summary::SessionSummary;
use crate::mkv::{Output, Refragmenter};

impl Shared {
    /// Moves everything the re-fragmenter has ready into the ledger. Called with the
    /// re-fragmenter locked (by the sink, or by the driver for a pause flush).
    pub(crate) fn absorb(
        &self,
        refragmenter: &mut Refragmenter,
        input_offset: u64,
        input: bool,
    ) -> Result<()> {
        let mut st = self.lock();
        if input {
            st.note_input(Instant::now());
        }
        let mut added = false;
        while let Some(out) = refragmenter.next_output() {
            match out {
                Output::Header(h) => st.ledger.set_header(h.bytes()),
                Output::Fragment(mut f) => {
                    let tc = f.timecode();
                    // One HTTP chunk per fragment, written with vectored I/O straight from the
                    // re-fragmenter's slices: no copy, one chunk-size line per fragment. The
                    // list is moved, not cloned: no second allocation and reference count per
                    // slice, per fragment.
                    let mut data = std::mem::take(&mut f.chunks);
                    data.retain(|c| !c.is_empty());
                    let scale_ns = refragmenter
                        .header()
                        .map_or(1_000_000, |h| h.timecode_scale_ns());
                    let start_ms = u64::try_from(u128::from(tc) * u128::from(scale_ns) / 1_000_000)
                        .unwrap_or(u64::MAX);
                    let end_ms = start_ms.saturating_add(
                        u64::try_from(f.duration().as_millis()).unwrap_or(u64::MAX),
                    );
                    let last_frame_ms = u64::try_from(
                        u128::from(f.last_frame_timecode()) * u128::from(scale_ns) / 1_000_000,
                    )
                    .unwrap_or(u64::MAX)
                    .max(start_ms);
                    let fragment = NewFragment {
                        timecode: tc,
                        data,
                        start_ms,
                        end_ms,
                        last_frame_ms,
                    };
                    if st.ledger.add(fragment).is_err() {
                        let err = Error::InvalidMedia {
                            stream: self.stream.clone(),
                            offset: input_offset,
                            reason: format!("two fragments with timecode {tc}"),
                        };
                        self.fail(&mut st, err.clone());
                        return Err(err);
                    }
                    added = true;
                    if self.overflow == OverflowPolicy::DropOldest {
                        self.drop_oldest(&mut st);
                    }
                }
                Output::Warning(w) => {
                    tracing::debug!(stream = %self.stream, warning = ?w, "re-fragmenter warning");
                    st.count_warning();
                    st.emit(Ok(SessionEvent::Warning(w)));
                }
            }
        }
        drop(st);
        if added {
            self.driver.notify_one();
        }
        Ok(())
    }

    /// Evicts the oldest whole fragments while the replay buffer is over a cap
    /// ([`OverflowPolicy::DropOldest`]), reporting each.
    fn drop_oldest(&self, st: &mut State) {
        for dropped in st.ledger.evict_oldest() {
            let DroppedFragment {
                timecode,
                size,
                received,
            } = dropped;
            tracing::warn!(stream = %self.stream, timecode, size, received, "replay buffer full: dropped the oldest fragment");
            st.emit(Ok(SessionEvent::Dropped(dropped)));
        }
    }

    /// The source paused (no input for `after`): close the open fragment. Checked again under
    /// the locks, since input may have come since the driver decided.
    pub(crate) fn pause_flush(&self, after: Duration) {
        let mut r = self.lock_refragmenter();
        if !self.lock().claim_pause_flush(after, Instant::now()) {
            return;
        }
        match r.flush() {
            Ok(true) => {
                tracing::debug!(stream = %self.stream, "input paused: closed the open fragment");
                let _ = self.absorb(&mut r, 0, false);
            }
            Ok(false) => {}
            // The sink reports a failed re-fragmenter with its input offset on the next push.
            Err(_) => {}
        }
    }
}

/// Aborts the driver (and with it every reader) when both halves of the session are gone.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds the two halves of a session whose driver task is `driver`.
pub(crate) fn halves(
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
) -> (PutMediaSink, AckStream) {
    let guard = Arc::new(TaskGuard(driver));
    let sink = PutMediaSink {
        shared: shared.clone(),
        input_offset: 0,
        close: CloseState::Open,
        _guard: guard.clone(),
    };
    let stream = AckStream {
        shared,
        _guard: guard,
    };
    (sink, stream)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseState {
    Open,
    Draining,
    Closed,
}

/// The media side of a PutMedia session: a [`futures::Sink`] of MKV bytes in any chunking.
///
/// Bytes go through the re-fragmenter ([`crate::mkv::Refragmenter`]); each fragment it completes
/// enters the session's ledger and goes out on the current connection at once, followed by an
/// end-of-fragment tag so the service acknowledges it without waiting for the next one.
///
/// **Reliability** (docs/protocol.md §6). The session survives its connections: after a dropped
/// connection, a timeout, a retryable ERROR ack or HTTP error it backs off
/// ([`RetryPolicy`](crate::RetryPolicy)), opens a new request (the data endpoint is resolved
/// again when the failure calls for it), sends the MKV header, and resends, whole, every
/// fragment not RECEIVED (not PERSISTED when the service was unreachable). Fragments refused
/// with a non-retryable id are skipped and reported; 4008, KMS errors, and authorization or
/// missing-stream errors that persist after a credential refresh end the session. Connections
/// are rotated before the service's 45-minute limit and before the credentials expire
/// ([`Rotation`](crate::Rotation)).
///
/// **Memory bound.** Fragments are kept, for replay, from the moment they are complete until
/// their completion ack ([`CompletionAck`]), capped in bytes and media duration. At a cap the
/// [`OverflowPolicy`] decides: `poll_ready` waits (default) or the oldest whole fragments are
/// dropped. The re-fragmenter holds at most the open fragment and one waiting for late frames
/// on top.
///
/// **Pacing** ([`Pacing`](crate::Pacing)). By default a fragment is not sent before the
/// producer timestamp of its last frame (docs/protocol.md §4.10: the service refuses
/// timestamps in the future with 4007); [`Pacing::Backfill`](crate::Pacing::Backfill) sends at
/// once, for timecodes that lie in the past.
///
/// **Closing.** [`close`](Self::close) completes the last fragment, waits until every fragment
/// has its completion ack (or was skipped or dropped), ends the body (the terminating
/// zero-length chunk) and returns the [`SessionSummary`], or [`Error::Incomplete`] carrying it
/// when a fragment was skipped or dropped. An acknowledgement stall or a dropped connection
/// while it waits is recovered like any other (reconnect, resend what is owed), so the wait is
/// bounded by the [`RetryPolicy`](crate::RetryPolicy) and [`Timeouts::final_drain`]: the
/// session fails with the last error only when the retry budget is spent.
/// `SinkExt::close` does the same without the summary.
#[derive(Debug)]
pub struct PutMediaSink {
    shared: Arc<Shared>,
    input_offset: u64,
    close: CloseState,
    _guard: Arc<TaskGuard>,
}

impl PutMediaSink {
    /// The stream this session puts media on.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// Bytes of fragments kept for replay now (see the type's memory bound).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().ledger.held()
    }

    /// A snapshot of the session's metrics.
    pub fn summary(&self) -> SessionSummary {
        self.shared.lock().snapshot()
    }

    /// Completes the last fragment, waits for every completion ack and ends the request;
    /// returns what the session did.
    ///
    /// # Errors
    ///
    /// [`Error::Incomplete`], carrying the summary, when any fragment was refused and skipped,
    /// dropped from a full replay buffer or is still owed ([`SessionSummary::is_complete`]);
    /// the error that ended the session when it failed; [`Error::InvalidMedia`] when the input
    /// ended mid-element.
    pub async fn close(mut self) -> Result<SessionSummary> {
        futures::SinkExt::close(&mut self).await?;
        Ok(self.summary())
    }

    fn closed_error(&self) -> Error {
        Error::SessionClosed {
            stream: self.shared.stream.clone(),
        }
    }

    fn media_error(&self, e: crate::mkv::MkvError) -> Error {
        Error::InvalidMedia {
            stream: self.shared.stream.clone(),
            offset: e.offset().unwrap_or(self.input_offset),
            reason: e.to_string(),
        }
    }

    /// No more input: the driver finishes what is in the ledger, then stops.
    fn end_input(&self) {
        self.shared.lock().input_ended();
        self.shared.driver.notify_one();
    }
}

impl Drop for PutMediaSink {
    fn drop(&mut self) {
        self.shared.lock().sink_dropped();
        self.shared.driver.notify_one();
    }
}

impl Sink<Bytes> for PutMediaSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.close != CloseState::Open {
            return Poll::Ready(Err(self.closed_error()));
        }
        let shared = &self.shared;
        let blocked = |st: &State| {
            shared.overflow == OverflowPolicy::Backpressure
                && st.ledger.over(st.ledger.largest_fragment())
        };
        {
            let st = shared.lock();
            if let Some(e) = st.failure() {
                return Poll::Ready(Err(e.clone()));
            }
            if !blocked(&st) && !st.sink_waiting() {
                return Poll::Ready(Ok(()));
            }
        }
        shared.register_sink(cx.waker());
        // Re-check after registering so a wake between the check and the registration is not lost.
        let mut st = shared.lock();
        if let Some(e) = st.failure() {
            return Poll::Ready(Err(e.clone()));
        }
        let waiting = blocked(&st);
        if st.set_sink_waiting(waiting, Instant::now()) {
            drop(st);
            // The driver's pause detection depends on it.
            shared.driver.notify_one();
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        if self.close != CloseState::Open {
            return Err(self.closed_error());
        }
        if let Some(e) = self.shared.lock().failure() {
            return Err(e.clone());
        }
        let len = item.len() as u64;
        let shared = self.shared.clone();
        let mut r = shared.lock_refragmenter();
        if let Err(e) = r.push(item) {
            drop(r);
            return Err(self.media_error(e));
        }
        self.input_offset += len;
        shared.absorb(&mut r, self.input_offset, true)
    }

    /// Completes at once unless the session failed: everything given to `start_send` is in the
    /// session's care (the ledger, bounded by `poll_ready`), and the driver sends it whether or
    /// not a connection is up right now. Waiting here for a connection would make every
    /// `SinkExt::send` block through a reconnect, which a live source cannot afford.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.shared.lock().failure() {
            Some(e) => Poll::Ready(Err(e.clone())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match self.close {
                CloseState::Open => {
                    let failed = self.shared.lock().failure().cloned();
                    if let Some(e) = failed {
                        self.close = CloseState::Closed;
                        return Poll::Ready(Err(e));
                    }
                    let shared = self.shared.clone();
                    let finished = {
                        let mut r = shared.lock_refragmenter();
                        let f = r.finish();
                        let absorbed = shared.absorb(&mut r, self.input_offset, false);
                        f.map_err(|e| self.media_error(e)).and(absorbed)
                    };
                    // The driver delivers what is in the ledger either way.
                    self.end_input();
                    if let Err(e) = finished {
                        self.close = CloseState::Closed;
                        return Poll::Ready(Err(e));
                    }
                    self.close = CloseState::Draining;
                }
                CloseState::Draining => {
                    self.shared.register_sink(cx.waker());
                    let result = {
                        let st = self.shared.lock();
                        if let Some(e) = st.failure() {
                            Some(Err(e.clone()))
                        } else if st.ledger.outstanding() == 0 && st.driver_done() {
                            // Every fragment is accounted for and the request ended cleanly;
                            // a session that skipped or dropped some must not look complete.
                            let summary = st.snapshot();
                            if summary.is_complete() {
                                Some(Ok(()))
                            } else {
                                Some(Err(Error::Incomplete {
                                    stream: self.shared.stream.clone(),
                                    summary: Box::new(summary),
                                }))
                            }
                        } else {
                            None
                        }
                    };
                    // No timer here: a stall while draining is a connection's stall like any
                    // other (the reader ends it, the driver reconnects and resends), so the
                    // wait is bounded by the retry budget, not cut off with fragments owed.
                    if let Some(r) = result {
                        self.close = CloseState::Closed;
                        return Poll::Ready(r);
                    }
                    return Poll::Pending;
                }
                CloseState::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The acknowledgement side of a PutMedia session: a [`futures::Stream`] of per-fragment and
/// per-connection events. An `Err` item is the error that ended the session; the stream ends
/// after it, or once the session completed (every fragment accounted for after `close`), or
/// when the sink was dropped without closing.
#[derive(Debug)]
pub struct AckStream {
    shared: Arc<Shared>,
    _guard: Arc<TaskGuard>,
}

impl AckStream {
    /// A snapshot of the session's metrics.
    pub fn summary(&self) -> SessionSummary {
        self.shared.lock().snapshot()
    }
}

impl Stream for AckStream {
    type Item = Result<SessionEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.shared.lock();
        match st.events().poll_next(cx) {
            // The error that ended the session is never lost to a full queue: it comes last.
            Poll::Ready(None) => Poll::Ready(st.take_failure_to_report().map(Err)),
            other => other,
        }
    }
}

impl Drop for AckStream {
    fn drop(&mut self) {
        // Nobody reads any more: later events are counted as dropped, none kept.
        self.shared.lock().events().close();
    }
}
