//! The state a session's tasks share: [`Shared`] (behind one lock, [`State`]) and, per
//! connection, [`ConnShared`].
//!
//! A session outlives its connections. The sink (`sink.rs`) feeds the re-fragmenter and puts
//! each fragment in the ledger (`ledger.rs`); a driver task (`driver.rs`) sends the ledger's
//! fragments over one PutMedia request (`body.rs`) after another, and one reader task per
//! request (`ack_reader.rs`) applies its acknowledgements to the ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::CompletionAck;
use super::error::{Error, Result};
use super::events::{EVENT_CAPACITY, EventQueue, SessionEvent};
use super::ledger::{Caps, Ledger};
use super::policy::OverflowPolicy;
use super::recovery::ConnEnd;
use super::summary::{FAILED_KEPT, FailedFragment, Latencies, SessionSummary};
use crate::ack::AckEventType;
use crate::mkv::Refragmenter;

/// Everything about a session behind its one lock: the ledger of fragments, the session's
/// lifecycle, and what the summary reports beyond the ledger's counts. Only the ledger is
/// reachable from outside, and it guards its own invariants; everything else changes through
/// the transitions below, named for what happened.
#[derive(Debug)]
pub(crate) struct State {
    /// The fragments and the counts derived from them; changed only through its methods.
    pub(crate) ledger: Ledger,
    failure: Failure,
    ends: Ends,
    input: InputActivity,
    /// Connection ends not yet handled by the driver.
    ended: Vec<(u32, ConnEnd)>,
    timing: AckTiming,
    events: EventQueue,
    /// The summary's fields counted here rather than derived (see [`State::snapshot`]).
    summary: SessionSummary,
}

/// The error that ended the session, if any: the first one wins.
#[derive(Debug, Default)]
struct Failure {
    error: Option<Error>,
    /// The error went into the event queue (else the stream yields it at its end).
    reported: bool,
}

/// Which parts of the session have finished.
#[derive(Debug, Default)]
struct Ends {
    /// The sink finished its input (the re-fragmenter's last fragment is in the ledger).
    input: bool,
    /// The sink was dropped (with or without closing).
    sink_gone: bool,
    /// The driver stopped: the last request's body has ended.
    driver: bool,
}

/// What the pause flush needs to tell a paused source from a waiting one.
#[derive(Debug)]
struct InputActivity {
    /// The last input, or the last change of `sink_waiting` (waiting at the cap is no pause).
    last: Instant,
    /// `poll_ready` is waiting at the replay-buffer cap.
    sink_waiting: bool,
    /// A pause flush happened and no input came since.
    flushed: bool,
}

/// When the first byte went out and the first ack came back, and the ack latencies.
#[derive(Debug, Default)]
struct AckTiming {
    first_byte_at: Option<Instant>,
    first_ack_at: Option<Instant>,
    received: Latencies,
    persisted: Latencies,
}

impl State {
    fn new(ledger: Ledger, events: EventQueue) -> Self {
        Self {
            ledger,
            failure: Failure::default(),
            ends: Ends::default(),
            input: InputActivity {
                last: Instant::now(),
                sink_waiting: false,
                flushed: false,
            },
            ended: Vec::new(),
            timing: AckTiming::default(),
            events,
            summary: SessionSummary::default(),
        }
    }

    /// The session's summary now: the ledger's counts and buffer, the latencies, the rest.
    pub(crate) fn snapshot(&self) -> SessionSummary {
        let mut s = self.summary.clone();
        let c = self.ledger.counts();
        s.fragments = c.fragments;
        s.fragments_sent = c.sent;
        s.fragments_resent = c.resent;
        s.fragments_received = c.received;
        s.fragments_persisted = c.persisted;
        s.fragments_delivered = c.delivered;
        s.fragments_skipped = c.skipped;
        s.fragments_dropped = c.dropped;
        s.peak_buffered_bytes = c.peak_held;
        s.buffered_bytes = self.ledger.held();
        s.buffered_duration = self.ledger.held_duration();
        s.received_latency = self.timing.received.stats();
        s.persisted_latency = self.timing.persisted.stats();
        s
    }

    /// Sends `ev` to the [`AckStream`](crate::AckStream), counting it as dropped when the
    /// queue is full or no longer read.
    pub(crate) fn emit(&mut self, ev: Result<SessionEvent>) {
        self.send_event(ev);
    }

    /// [`Self::emit`], telling whether the event was delivered.
    fn send_event(&mut self, ev: Result<SessionEvent>) -> bool {
        let delivered = self.events.push(ev);
        if !delivered {
            self.summary.events_dropped += 1;
        }
        delivered
    }

    /// The event queue the [`AckStream`](crate::AckStream) reads.
    pub(crate) fn events(&mut self) -> &mut EventQueue {
        &mut self.events
    }

    /// The error that ended the session, if it failed.
    pub(crate) fn failure(&self) -> Option<&Error> {
        self.failure.error.as_ref()
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure.error.is_some()
    }

    /// Records `err` as the session's end unless it already failed, and reports it as an event.
    fn fail(&mut self, err: Error) {
        if self.failed() {
            return;
        }
        self.failure.error = Some(err.clone());
        self.failure.reported = self.send_event(Err(err));
    }

    /// The event stream ended: the failure, if the event queue did not carry it (once).
    pub(crate) fn take_failure_to_report(&mut self) -> Option<Error> {
        if self.failure.reported {
            return None;
        }
        let e = self.failure.error.clone()?;
        self.failure.reported = true;
        Some(e)
    }

    /// The sink's input ended: the last fragment is in the ledger.
    pub(crate) fn input_ended(&mut self) {
        self.ends.input = true;
    }

    pub(crate) fn input_done(&self) -> bool {
        self.ends.input
    }

    /// The sink was dropped.
    pub(crate) fn sink_dropped(&mut self) {
        self.ends.sink_gone = true;
    }

    /// The sink was dropped before its input ended: nobody will finish the session.
    pub(crate) fn abandoned(&self) -> bool {
        self.ends.sink_gone && !self.ends.input
    }

    /// The input ended and the ledger owes nothing more: the driver's work is done.
    pub(crate) fn drained(&self) -> bool {
        self.ends.input && self.ledger.outstanding() == 0
    }

    /// The driver has stopped (no request body left open).
    pub(crate) fn driver_done(&self) -> bool {
        self.ends.driver
    }

    /// Input came at `now`: a pause starts counting again.
    pub(crate) fn note_input(&mut self, now: Instant) {
        self.input.last = now;
        self.input.flushed = false;
    }

    pub(crate) fn sink_waiting(&self) -> bool {
        self.input.sink_waiting
    }

    /// `poll_ready` starts or stops waiting at the replay-buffer cap. Returns whether that
    /// changed; a change restarts the pause clock, since time spent waiting at the cap does
    /// not count towards a pause.
    pub(crate) fn set_sink_waiting(&mut self, waiting: bool, now: Instant) -> bool {
        if waiting == self.input.sink_waiting {
            return false;
        }
        self.input.sink_waiting = waiting;
        self.input.last = now;
        true
    }

    /// When a pause of `after` without input is reached, if one can be: not after the input
    /// ended, not twice for one pause, not while the sink waits on our own backpressure.
    pub(crate) fn pause_at(&self, after: Duration) -> Option<Instant> {
        (!self.ends.input && !self.input.flushed && !self.input.sink_waiting)
            .then(|| self.input.last + after)
    }

    /// Claims the pause flush due at `now` (see [`Self::pause_at`]); false when the session
    /// failed or no flush is due.
    pub(crate) fn claim_pause_flush(&mut self, after: Duration, now: Instant) -> bool {
        if self.failed() || self.pause_at(after).is_none_or(|t| now < t) {
            return false;
        }
        self.input.flushed = true;
        true
    }

    /// Connection `id` ended with `end`; the driver handles it ([`Self::take_ended`]).
    pub(crate) fn connection_ended(&mut self, id: u32, end: ConnEnd) {
        self.ended.push((id, end));
    }

    /// The connection ends not yet handled, oldest first.
    pub(crate) fn take_ended(&mut self) -> Vec<(u32, ConnEnd)> {
        std::mem::take(&mut self.ended)
    }

    /// `bytes` of a request body went to hyper at `now`.
    pub(crate) fn record_sent(&mut self, bytes: u64, now: Instant) {
        self.summary.bytes_sent += bytes;
        self.timing.first_byte_at.get_or_insert(now);
    }

    /// An acknowledgement arrived at `now`: the first one dates the first-ack latency.
    pub(crate) fn record_ack(&mut self, now: Instant) {
        if self.timing.first_ack_at.is_none() {
            self.timing.first_ack_at = Some(now);
            self.summary.first_ack_latency = self
                .timing
                .first_byte_at
                .map(|t| now.saturating_duration_since(t));
        }
    }

    /// The latency of a fragment's first `event` ack (RECEIVED or PERSISTED).
    pub(crate) fn record_latency(&mut self, event: &AckEventType, latency: Duration) {
        match event {
            AckEventType::Received => self.timing.received.record(latency),
            AckEventType::Persisted => self.timing.persisted.record(latency),
            _ => {}
        }
    }

    /// A fragment refused for good; the summary lists the first [`FAILED_KEPT`].
    pub(crate) fn record_failed(&mut self, failed: FailedFragment) {
        if self.summary.fragments_failed.len() < FAILED_KEPT {
            self.summary.fragments_failed.push(failed);
        }
    }

    pub(crate) fn count_warning(&mut self) {
        self.summary.warnings += 1;
    }

    /// A failure is retried after a backoff.
    pub(crate) fn count_retry(&mut self) {
        self.summary.retries += 1;
    }

    /// A connection is replaced by rotation (or after a 4003).
    pub(crate) fn count_rotation(&mut self) {
        self.summary.rotations += 1;
    }

    /// Request `id` (counted from 1) is open.
    pub(crate) fn connection_opened(&mut self, id: u32) {
        self.summary.connections = id;
    }
}

/// Per-connection state shared by its request body and its reader.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) id: u32,
    pub(crate) first_byte: Notify,
    pub(crate) first_byte_sent: AtomicBool,
    /// The request is given up: its body fails instead of ending, so hyper drops the
    /// connection without the terminating chunk and the service does not take the stream as
    /// cleanly ended.
    pub(crate) aborted: AtomicBool,
}

impl ConnShared {
    pub(crate) fn new(id: u32) -> Arc<Self> {
        Arc::new(Self {
            id,
            first_byte: Notify::new(),
            first_byte_sent: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        })
    }

    /// Marks the request as given up; takes effect when its body sender is dropped.
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }
}

/// What the sink, the driver, the bodies and the readers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stream: String,
    state: Mutex<State>,
    /// Lock order: `refragmenter` before `state`.
    refragmenter: Mutex<Refragmenter>,
    sink_waker: AtomicWaker,
    /// Wakes the driver: new fragment, connection end, input done, failure.
    pub(crate) driver: Notify,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) eofr: Bytes,
}

/// Limits of a session's replay buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufferLimits {
    pub(crate) bytes: usize,
    pub(crate) duration: Duration,
    pub(crate) overflow: OverflowPolicy,
}

impl Shared {
    pub(crate) fn new(
        stream: String,
        completion: CompletionAck,
        refragmenter: Refragmenter,
        limits: BufferLimits,
    ) -> Arc<Self> {
        let events = EventQueue::new(EVENT_CAPACITY);
        Arc::new(Self {
            stream,
            state: Mutex::new(State::new(
                Ledger::new(
                    completion,
                    Caps {
                        bytes: limits.bytes,
                        duration: limits.duration,
                    },
                ),
                events,
            )),
            refragmenter: Mutex::new(refragmenter),
            sink_waker: AtomicWaker::new(),
            driver: Notify::new(),
            overflow: limits.overflow,
            eofr: crate::mkv::end_of_fragment_tag(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing the session, so keep going with the inner value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_refragmenter(&self) -> MutexGuard<'_, Refragmenter> {
        self.refragmenter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the session with `err` (the first failure wins), waking everyone.
    pub(crate) fn fail(&self, st: &mut State, err: Error) {
        if !st.failed() {
            tracing::warn!(stream = %self.stream, error = %err, "PutMedia session failed");
            st.fail(err);
        }
        self.sink_waker.wake();
        self.driver.notify_one();
    }

    /// No more events: the driver has stopped.
    pub(crate) fn end_events(&self) {
        let mut st = self.lock();
        st.events.end();
        st.ends.driver = true;
        drop(st);
        self.sink_waker.wake();
    }

    pub(crate) fn wake_sink(&self) {
        self.sink_waker.wake();
    }

    /// Registers the sink's waker (`poll_ready`, `poll_close`), woken by [`Self::wake_sink`].
    pub(crate) fn register_sink(&self, waker: &std::task::Waker) {
        self.sink_waker.register(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckError, AckErrorId};

    fn state(capacity: usize) -> State {
        let caps = Caps {
            bytes: 1 << 20,
            duration: Duration::from_secs(60),
        };
        State::new(
            Ledger::new(CompletionAck::Persisted, caps),
            EventQueue::new(capacity),
        )
    }

    fn closed(stream: &str) -> Error {
        Error::SessionClosed {
            stream: stream.into(),
        }
    }

    #[test]
    fn the_first_failure_wins_and_is_reported_once() {
        let mut st = state(4);
        st.fail(closed("a"));
        st.fail(closed("b"));
        assert!(matches!(st.failure(), Some(Error::SessionClosed { stream }) if stream == "a"));
        assert!(
            matches!(st.events.pop(), Some(Err(Error::SessionClosed { stream })) if stream == "a")
        );
        assert!(
            st.events.pop().is_none(),
            "the second failure is not an event"
        );
        // The queue carried it, so the end of the stream does not repeat it.
        assert!(st.take_failure_to_report().is_none());
    }

    #[test]
    fn a_failure_the_full_queue_lost_comes_at_the_end_once() {
        let mut st = state(1);
        st.emit(Ok(SessionEvent::Idle));
        st.fail(closed("a"));
        assert_eq!(st.snapshot().events_dropped, 1);
        assert!(st.take_failure_to_report().is_some());
        assert!(st.take_failure_to_report().is_none());
    }

    #[test]
    fn a_pause_flush_is_due_once_per_pause_and_never_while_the_sink_waits() {
        let mut st = state(4);
        let t0 = Instant::now();
        let after = Duration::from_secs(1);
        st.note_input(t0);
        assert_eq!(st.pause_at(after), Some(t0 + after));
        assert!(!st.claim_pause_flush(after, t0 + after / 2));
        assert!(st.claim_pause_flush(after, t0 + after));
        assert!(
            !st.claim_pause_flush(after, t0 + after * 2),
            "once per pause"
        );
        assert_eq!(st.pause_at(after), None);

        let t1 = t0 + after * 3;
        st.note_input(t1);
        assert!(st.set_sink_waiting(true, t1));
        assert!(!st.set_sink_waiting(true, t1), "no change");
        assert_eq!(st.pause_at(after), None);
        assert!(!st.claim_pause_flush(after, t1 + after * 10));
        // Waiting at the cap does not count towards a pause.
        let t2 = t1 + after * 10;
        assert!(st.set_sink_waiting(false, t2));
        assert_eq!(st.pause_at(after), Some(t2 + after));

        st.input_ended();
        assert_eq!(st.pause_at(after), None);
        assert!(!st.claim_pause_flush(after, t2 + after * 10));
    }

    #[test]
    fn no_pause_flush_after_a_failure() {
        let mut st = state(4);
        let t0 = Instant::now();
        st.note_input(t0);
        st.fail(closed("a"));
        assert!(!st.claim_pause_flush(Duration::ZERO, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn a_sink_dropped_before_its_input_ended_abandons_the_session() {
        let mut st = state(4);
        assert!(!st.abandoned());
        st.sink_dropped();
        assert!(st.abandoned());
        st.input_ended();
        assert!(!st.abandoned(), "closed, then dropped: the driver finishes");
        assert!(st.drained(), "nothing owed");
    }

    #[test]
    fn the_first_ack_latency_counts_from_the_first_byte() {
        let mut st = state(4);
        let t0 = Instant::now();
        st.record_sent(10, t0);
        st.record_sent(5, t0 + Duration::from_millis(50));
        st.record_ack(t0 + Duration::from_millis(200));
        st.record_ack(t0 + Duration::from_millis(900));
        let s = st.snapshot();
        assert_eq!(s.bytes_sent, 15);
        assert_eq!(s.first_ack_latency, Some(Duration::from_millis(200)));
    }

    #[test]
    fn connection_ends_are_taken_in_order_and_once() {
        let mut st = state(4);
        st.connection_ended(1, ConnEnd::Closed { error: None });
        st.connection_ended(2, ConnEnd::Failed(closed("a")));
        let ids: Vec<u32> = st.take_ended().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(st.take_ended().is_empty());
    }

    #[test]
    fn the_summary_lists_at_most_failed_kept_refused_fragments() {
        let mut st = state(4);
        for tc in 0..FAILED_KEPT as u64 + 5 {
            st.record_failed(FailedFragment {
                timecode: Some(tc),
                fragment_number: None,
                error: AckError::new(AckErrorId::Unknown(0)),
            });
        }
        let s = st.snapshot();
        assert_eq!(s.fragments_failed.len(), FAILED_KEPT);
        assert_eq!(s.fragments_failed[0].timecode, Some(0));
    }
}
