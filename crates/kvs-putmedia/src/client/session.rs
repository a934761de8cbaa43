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
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::config::CompletionAck;
use super::error::{Error, Result};
use super::events::{EVENT_CAPACITY, SessionEvent};
use super::ledger::{Caps, Ledger};
use super::policy::OverflowPolicy;
use super::recovery::ConnEnd;
use super::summary::{Latencies, SessionSummary};
use crate::mkv::Refragmenter;

/// Everything about a session behind its one lock: the ledger of fragments, the session's
/// lifecycle flags, and what the summary reports beyond the ledger's counts.
#[derive(Debug)]
pub(crate) struct State {
    /// The fragments and the counts derived from them; changed only through its methods.
    pub(crate) ledger: Ledger,
    pub(crate) failure: Option<Error>,
    /// The failure went into the event channel (else the stream yields it at its end).
    pub(crate) failure_reported: bool,
    /// The sink finished its input (the re-fragmenter's last fragment is in the ledger).
    pub(crate) input_done: bool,
    pub(crate) sink_gone: bool,
    /// The driver stopped: the last request's body has ended.
    pub(crate) driver_done: bool,
    pub(crate) last_input: Instant,
    /// `poll_ready` is waiting at the replay-buffer cap.
    pub(crate) sink_waiting: bool,
    /// A pause flush happened and no input came since.
    pub(crate) flushed: bool,
    /// Connection ends not yet handled by the driver.
    pub(crate) ended: Vec<(u32, ConnEnd)>,
    pub(crate) first_byte_at: Option<Instant>,
    pub(crate) first_ack_at: Option<Instant>,
    events: Option<mpsc::Sender<Result<SessionEvent>>>,
    /// The summary's fields the ledger does not count (see [`State::snapshot`]).
    pub(crate) summary: SessionSummary,
    pub(crate) received_latency: Latencies,
    pub(crate) persisted_latency: Latencies,
}

impl State {
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
        s.received_latency = self.received_latency.stats();
        s.persisted_latency = self.persisted_latency.stats();
        s
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
    ) -> (Arc<Self>, mpsc::Receiver<Result<SessionEvent>>) {
        let (events, rx) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Self {
            stream,
            state: Mutex::new(State {
                ledger: Ledger::new(
                    completion,
                    Caps {
                        bytes: limits.bytes,
                        duration: limits.duration,
                    },
                ),
                failure: None,
                failure_reported: false,
                input_done: false,
                sink_gone: false,
                driver_done: false,
                last_input: Instant::now(),
                sink_waiting: false,
                flushed: false,
                ended: Vec::new(),
                first_byte_at: None,
                first_ack_at: None,
                events: Some(events),
                summary: SessionSummary::default(),
                received_latency: Latencies::default(),
                persisted_latency: Latencies::default(),
            }),
            refragmenter: Mutex::new(refragmenter),
            sink_waker: AtomicWaker::new(),
            driver: Notify::new(),
            overflow: limits.overflow,
            eofr: crate::mkv::end_of_fragment_tag(),
        });
        (shared, rx)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing the session, so keep going with the inner value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_refragmenter(&self) -> MutexGuard<'_, Refragmenter> {
        self.refragmenter.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn emit(&self, st: &mut State, ev: Result<SessionEvent>) {
        let delivered = st.events.as_ref().is_some_and(|tx| tx.try_send(ev).is_ok());
        if !delivered {
            st.summary.events_dropped += 1;
        }
    }

    /// Ends the session with `err` (the first failure wins), waking everyone.
    pub(crate) fn fail(&self, st: &mut State, err: Error) {
        if st.failure.is_none() {
            tracing::warn!(stream = %self.stream, error = %err, "PutMedia session failed");
            st.failure = Some(err.clone());
            let delivered = st
                .events
                .as_ref()
                .is_some_and(|tx| tx.try_send(Err(err)).is_ok());
            st.failure_reported = delivered;
            if !delivered {
                st.summary.events_dropped += 1;
            }
        }
        self.sink_waker.wake();
        self.driver.notify_one();
    }

    /// No more events: the driver has stopped.
    pub(crate) fn end_events(&self) {
        let mut st = self.lock();
        st.events = None;
        st.driver_done = true;
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
