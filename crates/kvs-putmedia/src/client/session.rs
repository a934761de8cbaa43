//! A PutMedia session: the [`PutMediaSink`] taking MKV bytes, the [`AckStream`] of per-fragment
//! outcomes, and the per-fragment ledger that joins them across connections.
//!
//! A session outlives its connections. The sink feeds the re-fragmenter and puts each fragment in
//! the ledger; a driver task (see `driver.rs`) sends the ledger's fragments over one PutMedia
//! request after another, and one reader task per request applies its acknowledgements to the
//! ledger. docs/protocol.md §6: "Ledger per fragment, keyed by cluster timecode: sent -> buffering ->
//! received -> persisted | error. A fragment's bytes are freed on PERSISTED (or on RECEIVED when
//! the stream keeps no data)."

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::config::{CompletionAck, Timeouts};
use super::error::{BoxError, Error, Result, TimeoutPhase};
use super::policy::OverflowPolicy;
use super::recovery::{ConnectCause, Replay};
use super::summary::{FAILED_KEPT, FailedFragment, Latencies, SessionSummary};
use crate::ack::{
    Ack, AckDecoder, AckError, AckErrorId, AckEventType, ErrorAction, FragmentNumber,
};
use crate::mkv::{Output, Refragmenter, Warning};

/// Capacity of the event channel behind [`AckStream`]. Events beyond it, when the caller does not
/// read the stream, are dropped and counted in [`SessionSummary::events_dropped`]: acks are still
/// processed, so an unread stream never stalls the session.
pub const EVENT_CAPACITY: usize = 1024;

/// Completed fragments whose metadata is kept to match late acks (e.g. PERSISTED after RECEIVED
/// completed them); older ones are forgotten so the ledger stays bounded.
const COMPLETED_KEPT: usize = 64;

/// What happened to a fragment, to a connection, or to the session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SessionEvent {
    /// An acknowledgement matched, by timecode, to a fragment this session sent.
    Fragment(FragmentAck),
    /// An IDLE acknowledgement: the connection is alive, no media is arriving.
    Idle,
    /// The re-fragmenter had to adjust the media (docs/protocol.md §5: never silent).
    Warning(Warning),
    /// An acknowledgement naming no fragment this session knows (or none at all), kept as is.
    UnmatchedAck(Ack),
    /// A line of the acknowledgement stream that is not a valid acknowledgement; the decoder
    /// skips it and carries on.
    UndecodableAck {
        /// What was wrong with it.
        reason: String,
    },
    /// The service refused a fragment with a non-retryable error id (4001, 4002, 4004, 4006,
    /// 4007, 4009-4012): it is never resent (docs/protocol.md §6) and the stream carries on.
    Skipped(FailedFragment),
    /// A whole fragment left the replay buffer under [`OverflowPolicy::DropOldest`].
    Dropped(DroppedFragment),
    /// A connection failed (or could not be opened); the session retries after `delay`.
    Reconnecting {
        /// Consecutive failures without progress, this one included.
        attempt: u32,
        /// Backoff before the next attempt.
        delay: Duration,
        /// What failed.
        error: Error,
    },
    /// A new PutMedia request is open and will carry the next fragments, after the MKV header.
    Connected {
        /// 1-based connection number within the session.
        connection: u32,
        /// Why this connection was opened.
        cause: ConnectCause,
        /// Fragments already sent once that go out again on it (replay).
        replay: u64,
    },
}

/// A non-ERROR acknowledgement of one fragment. Rejections arrive as
/// [`SessionEvent::Skipped`], or as an `Err` that ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FragmentAck {
    /// BUFFERING, RECEIVED, PERSISTED (or an unknown type, kept).
    pub event: AckEventType,
    /// The fragment's Cluster timecode, as sent and as acknowledged.
    pub timecode: u64,
    /// The service's fragment number, when the ack carried one.
    pub fragment_number: Option<FragmentNumber>,
    /// The fragment's size in bytes.
    pub size: usize,
    /// Time from the fragment's last byte handed to the socket (on its latest send) to this ack;
    /// `None` for acks that arrive before it (BUFFERING).
    pub latency: Option<Duration>,
}

/// A fragment freed from the replay buffer because the buffer was full
/// ([`OverflowPolicy::DropOldest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedFragment {
    /// Its timecode.
    pub timecode: u64,
    /// Its size in bytes.
    pub size: usize,
    /// Whether the service had acknowledged it RECEIVED: then only its replay copy is gone.
    pub received: bool,
}

/// Where a fragment is (docs/protocol.md §6: "sent -> buffering -> received -> persisted | error").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// Waiting to be taken by a connection.
    Queued,
    /// Handed to a connection.
    Sent,
    /// BUFFERING acknowledged.
    Buffering,
    /// RECEIVED acknowledged.
    Received,
    /// PERSISTED acknowledged.
    Persisted,
    /// Refused with a non-retryable error id; never resent.
    Failed,
    /// Freed from the replay buffer by [`OverflowPolicy::DropOldest`].
    Dropped,
}

/// One fragment in the ledger, keyed by its Cluster timecode.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The fragment's bytes while it may have to be resent; `None` once freed.
    pub(crate) data: Option<Vec<Bytes>>,
    pub(crate) size: usize,
    /// Media time span in milliseconds, for the duration cap.
    start_ms: u64,
    end_ms: u64,
    /// Timecode of its last frame in milliseconds: with the producer start (RELATIVE) or as is
    /// (ABSOLUTE), the latest producer timestamp it carries, which pacing compares with the
    /// wall clock.
    pub(crate) last_frame_ms: u64,
    pub(crate) status: Status,
    /// Done: its completion ack came, or it failed or was dropped. Nothing more is owed.
    done: bool,
    /// Waits for the current connection to send it.
    pub(crate) needs_send: bool,
    /// The connection that last took it (0: none yet).
    pub(crate) sent_on: u32,
    sends: u32,
    last_byte_sent: Option<Instant>,
    /// Counted in the summary already (a resend is acknowledged again).
    counted_received: bool,
    counted_persisted: bool,
}

/// An ERROR ack that ended a connection, with what the session made of it.
#[derive(Debug, Clone)]
pub(crate) struct EndingError {
    pub(crate) error: AckError,
    pub(crate) timecode: Option<u64>,
    /// The action taken: the id's action, except that a "skip" naming no fragment of this
    /// session is retried (there is nothing to skip).
    pub(crate) action: ErrorAction,
}

impl Entry {
    /// Taken by request `conn` and not acknowledged RECEIVED there yet (nor settled).
    pub(crate) fn unreceived_on(&self, conn: u32) -> bool {
        self.sent_on == conn && !self.done && !self.needs_send && self.status < Status::Received
    }

    /// Sent on a request other than `current`, still owed there: neither acknowledged RECEIVED
    /// nor requeued.
    pub(crate) fn in_flight_elsewhere(&self, current: u32) -> bool {
        self.sent_on != 0
            && self.sent_on != current
            && !self.done
            && !self.needs_send
            && self.status < Status::Received
    }
}

/// How a connection ended, reported by its reader to the driver.
#[derive(Debug, Clone)]
pub(crate) enum ConnEnd {
    /// The response ended, after an ERROR ack or not: the service was reachable.
    Closed {
        /// The ERROR ack that ended it, if one did.
        error: Option<EndingError>,
    },
    /// The service acknowledged over this connection, then went silent (staleness, or no
    /// fragment acknowledged for the final-drain limit after the input ended). The transport
    /// stayed up and what was RECEIVED was received while the service was reachable
    /// (docs/protocol.md §6), so only what was not RECEIVED goes again.
    Stalled(Error),
    /// Transport failure, or a timeout before any acknowledgement: whether the service kept
    /// what it acknowledged is unknown.
    Failed(Error),
}

#[derive(Debug)]
pub(crate) struct State {
    /// The MKV header every connection starts with (docs/protocol.md §2: "resend the MKV header before
    /// any further cluster"), and a version that changes if the input's header changes.
    pub(crate) header: Option<Bytes>,
    pub(crate) header_version: u64,
    pub(crate) ledger: BTreeMap<u64, Entry>,
    /// Timecodes of the entries that still hold their bytes, oldest first.
    retained: BTreeSet<u64>,
    /// Bytes of the retained entries.
    held: usize,
    /// Entries not done.
    pub(crate) outstanding: usize,
    /// Entries waiting to be sent.
    pub(crate) unsent: usize,
    largest_fragment: usize,
    pub(crate) failure: Option<Error>,
    /// The failure went into the event channel (else the stream yields it at its end).
    failure_reported: bool,
    /// The sink finished its input (the re-fragmenter's last fragment is in the ledger).
    pub(crate) input_done: bool,
    pub(crate) sink_gone: bool,
    /// The driver stopped: the last request's body has ended.
    driver_done: bool,
    pub(crate) last_input: Instant,
    /// `poll_ready` is waiting at the replay-buffer cap.
    pub(crate) sink_waiting: bool,
    /// A pause flush happened and no input came since.
    pub(crate) flushed: bool,
    /// Connection ends not yet handled by the driver.
    pub(crate) ended: Vec<(u32, ConnEnd)>,
    first_byte_at: Option<Instant>,
    first_ack_at: Option<Instant>,
    /// Increases on every fragment newly RECEIVED or skipped: the driver's "progress".
    pub(crate) progress: u64,
    events: Option<mpsc::Sender<Result<SessionEvent>>>,
    pub(crate) summary: SessionSummary,
    received_latency: Latencies,
    persisted_latency: Latencies,
}

impl State {
    fn held_duration(&self) -> Duration {
        let (Some(first), Some(last)) = (self.retained.first(), self.retained.last()) else {
            return Duration::ZERO;
        };
        let start = self.ledger.get(first).map_or(0, |e| e.start_ms);
        let end = self.ledger.get(last).map_or(0, |e| e.end_ms);
        Duration::from_millis(end.saturating_sub(start))
    }

    /// Frees an entry's bytes.
    fn release(&mut self, tc: u64) {
        if let Some(e) = self.ledger.get_mut(&tc)
            && e.data.take().is_some()
        {
            self.held -= e.size;
            self.retained.remove(&tc);
        }
    }

    /// Marks an entry done (nothing more owed) and frees its bytes.
    fn finish_entry(&mut self, tc: u64) {
        let Some(e) = self.ledger.get_mut(&tc) else {
            return;
        };
        if e.done {
            return;
        }
        e.done = true;
        if e.needs_send {
            e.needs_send = false;
            self.unsent -= 1;
        }
        self.outstanding -= 1;
        self.release(tc);
    }

    pub(crate) fn set_needs_send(&mut self, tc: u64, needs: bool) {
        if let Some(e) = self.ledger.get_mut(&tc)
            && e.needs_send != needs
        {
            e.needs_send = needs;
            if needs {
                self.unsent += 1;
            } else {
                self.unsent -= 1;
            }
        }
    }

    /// Settles the fragments a connection that ended had taken (docs/protocol.md §6: "replay from the
    /// first fragment not RECEIVED when the service was reachable, or not PERSISTED when it was
    /// not"). When the service was reachable (the response ended, possibly after an ERROR ack),
    /// a RECEIVED fragment is delivered even if its PERSISTED ack was lost with the connection;
    /// the others are marked for sending again. When it was not (transport failure, timeout),
    /// every fragment not PERSISTED goes again (with zero retention RECEIVED is all there is).
    /// Returns the smallest timecode marked.
    pub(crate) fn requeue(
        &mut self,
        conn: u32,
        replay: Replay,
        completion: CompletionAck,
    ) -> Option<u64> {
        let limit = match replay {
            Replay::Nothing => return None,
            Replay::NotPersisted if completion != CompletionAck::Received => Status::Persisted,
            Replay::NotReceived | Replay::NotPersisted => Status::Received,
        };
        let mut first = None;
        let mut settled = Vec::new();
        let mut marked = 0;
        for (tc, e) in self.ledger.iter_mut() {
            if e.sent_on != conn || e.done || e.needs_send || e.data.is_none() {
                continue;
            }
            if e.status < limit {
                e.needs_send = true;
                marked += 1;
                first.get_or_insert(*tc);
            } else if e.status <= Status::Persisted {
                settled.push(*tc);
            }
        }
        self.unsent += marked;
        let any_settled = !settled.is_empty();
        for tc in settled {
            self.finish_entry(tc);
            self.summary.fragments_delivered += 1;
        }
        if any_settled {
            self.prune();
        }
        first
    }

    /// Whether connection `conn` carried fragments it did not acknowledge RECEIVED and that are
    /// still owed.
    pub(crate) fn owes_unreceived(&self, conn: u32) -> bool {
        self.ledger
            .values()
            .any(|e| e.data.is_some() && e.unreceived_on(conn))
    }

    /// Marks an entry as taken by connection `conn`; returns its body chunk.
    pub(crate) fn take_for_send(&mut self, tc: u64, conn: u32, eofr: &Bytes) -> Option<BodyChunk> {
        let e = self.ledger.get_mut(&tc)?;
        let data = e.data.as_ref()?;
        let mut parts = Vec::with_capacity(data.len() + 1);
        parts.extend(data.iter().cloned());
        // docs/protocol.md §3 "Idle" and §2: a fragment ends "at an end-of-fragment tag", so the tag
        // after each whole fragment gets it RECEIVED at once instead of when the next one
        // starts (one fragment duration later).
        parts.push(eofr.clone());
        e.sent_on = conn;
        e.sends += 1;
        // Set again when this send's last byte goes out; until then the drain check counts
        // the fragment as still being written.
        e.last_byte_sent = None;
        // Acks from an earlier connection say nothing about this send: if this request fails
        // too, only its own acks decide what is resent.
        e.status = Status::Sent;
        let resend = e.sends > 1;
        if e.needs_send {
            e.needs_send = false;
            self.unsent -= 1;
        }
        self.summary.fragments_resent += u64::from(resend);
        Some(BodyChunk {
            data: BodyBuf::new(parts),
            ends_fragment: Some(tc),
        })
    }

    /// Counts the entries sent before that wait to go out again.
    pub(crate) fn replay_count(&self) -> u64 {
        self.ledger
            .values()
            .filter(|e| e.needs_send && e.sends > 0)
            .count() as u64
    }

    fn prune(&mut self) {
        let done = self.ledger.len() - self.outstanding;
        if done <= COMPLETED_KEPT {
            return;
        }
        let mut excess = done - COMPLETED_KEPT;
        self.ledger.retain(|_, e| {
            if excess > 0 && e.done {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn snapshot(&self) -> SessionSummary {
        let mut s = self.summary.clone();
        s.buffered_bytes = self.held;
        s.buffered_duration = self.held_duration();
        s.received_latency = self.received_latency.stats();
        s.persisted_latency = self.persisted_latency.stats();
        s
    }
}

/// Per-connection state shared by its request body and its reader.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) id: u32,
    first_byte: Notify,
    first_byte_sent: AtomicBool,
    /// The request is given up: its body fails instead of ending, so hyper drops the
    /// connection without the terminating chunk and the service does not take the stream as
    /// cleanly ended.
    aborted: AtomicBool,
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
    pub(crate) completion: CompletionAck,
    state: Mutex<State>,
    /// Lock order: `refragmenter` before `state`.
    refragmenter: Mutex<Refragmenter>,
    sink_waker: AtomicWaker,
    /// Wakes the driver: new fragment, connection end, input done, failure.
    pub(crate) driver: Notify,
    bound: usize,
    bound_duration: Duration,
    overflow: OverflowPolicy,
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
            completion,
            state: Mutex::new(State {
                header: None,
                header_version: 0,
                ledger: BTreeMap::new(),
                retained: BTreeSet::new(),
                held: 0,
                outstanding: 0,
                unsent: 0,
                largest_fragment: 0,
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
                progress: 0,
                events: Some(events),
                summary: SessionSummary::default(),
                received_latency: Latencies::default(),
                persisted_latency: Latencies::default(),
            }),
            refragmenter: Mutex::new(refragmenter),
            sink_waker: AtomicWaker::new(),
            driver: Notify::new(),
            bound: limits.bytes,
            bound_duration: limits.duration,
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

    fn lock_refragmenter(&self) -> MutexGuard<'_, Refragmenter> {
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

    /// Whether the replay buffer is over a cap with `extra` more bytes.
    fn over(&self, st: &State, extra: usize) -> bool {
        st.outstanding > 0
            && (st.held + extra > self.bound || st.held_duration() > self.bound_duration)
    }

    /// Moves everything the re-fragmenter has ready into the ledger. Called with the
    /// re-fragmenter locked (by the sink, or by the driver for a pause flush).
    fn absorb(
        &self,
        refragmenter: &mut Refragmenter,
        input_offset: u64,
        input: bool,
    ) -> Result<()> {
        let mut st = self.lock();
        if input {
            st.last_input = Instant::now();
            st.flushed = false;
        }
        let mut added = false;
        while let Some(out) = refragmenter.next_output() {
            match out {
                Output::Header(h) => {
                    if st.header.as_ref() != Some(h.bytes()) {
                        st.header = Some(h.bytes().clone());
                        st.header_version += 1;
                    }
                }
                Output::Fragment(f) => {
                    let tc = f.timecode();
                    if st.ledger.contains_key(&tc) {
                        let err = Error::InvalidMedia {
                            stream: self.stream.clone(),
                            offset: input_offset,
                            reason: format!("two fragments with timecode {tc}"),
                        };
                        self.fail(&mut st, err.clone());
                        return Err(err);
                    }
                    // One HTTP chunk per fragment, written with vectored I/O straight from the
                    // re-fragmenter's slices: no copy, one chunk-size line per fragment.
                    let data: Vec<Bytes> = f
                        .chunks()
                        .iter()
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .collect();
                    let size: usize = data.iter().map(Bytes::len).sum();
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
                    st.ledger.insert(
                        tc,
                        Entry {
                            data: Some(data),
                            size,
                            start_ms,
                            end_ms,
                            last_frame_ms,
                            status: Status::Queued,
                            done: false,
                            needs_send: true,
                            sent_on: 0,
                            sends: 0,
                            last_byte_sent: None,
                            counted_received: false,
                            counted_persisted: false,
                        },
                    );
                    st.retained.insert(tc);
                    st.summary.fragments += 1;
                    st.held += size;
                    st.outstanding += 1;
                    st.unsent += 1;
                    st.largest_fragment = st.largest_fragment.max(size);
                    st.summary.peak_buffered_bytes = st.summary.peak_buffered_bytes.max(st.held);
                    added = true;
                    if self.overflow == OverflowPolicy::DropOldest {
                        self.drop_oldest(&mut st);
                    }
                }
                Output::Warning(w) => {
                    tracing::debug!(stream = %self.stream, warning = ?w, "re-fragmenter warning");
                    st.summary.warnings += 1;
                    self.emit(&mut st, Ok(SessionEvent::Warning(w)));
                }
            }
        }
        drop(st);
        if added {
            self.driver.notify_one();
        }
        Ok(())
    }

    /// docs/protocol.md §6: "on pressure the producer reports and drops whole fragments, oldest first,
    /// never partial ones". The newest fragment always stays.
    fn drop_oldest(&self, st: &mut State) {
        while st.retained.len() > 1 && self.over(st, 0) {
            let Some(tc) = st.retained.first().copied() else {
                break;
            };
            let (size, received) = match st.ledger.get_mut(&tc) {
                Some(e) => {
                    let received = e.status >= Status::Received;
                    if !e.done {
                        e.status = Status::Dropped;
                    }
                    (e.size, received)
                }
                None => break,
            };
            st.finish_entry(tc);
            st.release(tc);
            st.summary.fragments_dropped += 1;
            tracing::warn!(stream = %self.stream, timecode = tc, size, received, "replay buffer full: dropped the oldest fragment");
            self.emit(
                st,
                Ok(SessionEvent::Dropped(DroppedFragment {
                    timecode: tc,
                    size,
                    received,
                })),
            );
        }
        st.prune();
    }

    /// The source paused (no input for `after`): close the open fragment. Checked again under
    /// the locks, since input may have come since the driver decided.
    pub(crate) fn pause_flush(&self, after: Duration) {
        let mut r = self.lock_refragmenter();
        {
            let mut st = self.lock();
            if st.input_done
                || st.flushed
                || st.failure.is_some()
                || st.sink_waiting
                || st.last_input.elapsed() < after
            {
                return;
            }
            st.flushed = true;
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

    /// After the input ended: when connection `conn` owes acknowledgements for fragments it
    /// carried, the time from which their silence counts (the last of their last bytes handed to
    /// the socket; now while one is still being written). `None` while the input goes on or
    /// when the connection owes nothing.
    fn drain_owed_since(&self, conn: u32) -> Option<Instant> {
        let st = self.lock();
        if !st.input_done {
            return None;
        }
        let mut since: Option<Instant> = None;
        for e in st.ledger.values() {
            if e.sent_on != conn || e.done || e.needs_send {
                continue;
            }
            let t = e.last_byte_sent.unwrap_or_else(Instant::now);
            since = Some(since.map_or(t, |s| s.max(t)));
        }
        since
    }

    fn on_sent(&self, chunk: &BodyChunk, conn: &ConnShared) {
        let now = Instant::now();
        let mut st = self.lock();
        st.summary.bytes_sent += chunk.data.remaining() as u64;
        if st.first_byte_at.is_none() {
            st.first_byte_at = Some(now);
        }
        if !conn.first_byte_sent.swap(true, Ordering::Relaxed) {
            conn.first_byte.notify_one();
        }
        if let Some(tc) = chunk.ends_fragment {
            st.summary.fragments_sent += 1;
            if let Some(e) = st.ledger.get_mut(&tc) {
                e.last_byte_sent = Some(now);
                if e.status == Status::Queued {
                    e.status = Status::Sent;
                }
            }
        }
    }

    /// Applies one acknowledgement to the ledger. Matching is by `FragmentTimecode`, never by
    /// arrival order (docs/protocol.md §2). Returns the error of an ERROR ack, which ends the
    /// connection.
    fn on_ack(&self, ack: Ack) -> Option<EndingError> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.first_ack_at.is_none() {
            st.first_ack_at = Some(now);
            let from = st.first_byte_at;
            st.summary.first_ack_latency = from.map(|t| now.saturating_duration_since(t));
        }
        match (&ack.event, ack.fragment_timecode) {
            (AckEventType::Idle, _) => self.emit(&mut st, Ok(SessionEvent::Idle)),
            (AckEventType::Error, tc) => {
                let error = ack
                    .error
                    .clone()
                    .unwrap_or_else(|| AckError::new(AckErrorId::Unknown(0)));
                return Some(self.on_error_ack(&mut st, error, tc, ack.fragment_number));
            }
            (event, Some(tc)) => {
                let completion = self.completion;
                let Some(e) = st.ledger.get_mut(&tc) else {
                    self.emit(&mut st, Ok(SessionEvent::UnmatchedAck(ack)));
                    return None;
                };
                let latency = match event {
                    AckEventType::Received | AckEventType::Persisted => {
                        e.last_byte_sent.map(|t| now.saturating_duration_since(t))
                    }
                    _ => None,
                };
                let rank = match event {
                    AckEventType::Buffering => Some(Status::Buffering),
                    AckEventType::Received => Some(Status::Received),
                    AckEventType::Persisted => Some(Status::Persisted),
                    _ => None,
                };
                let mut newly = false;
                if let Some(rank) = rank
                    && e.status < rank
                    && e.status <= Status::Persisted
                {
                    e.status = rank;
                }
                match event {
                    AckEventType::Received if !e.counted_received => {
                        e.counted_received = true;
                        newly = true;
                    }
                    AckEventType::Persisted if !e.counted_persisted => {
                        e.counted_persisted = true;
                        newly = true;
                    }
                    _ => {}
                }
                if matches!(event, AckEventType::Received) {
                    // The driver may hold sends for this RECEIVED (a resend's too): the
                    // request's window of unreceived fragments, or an older request's barrier.
                    self.driver.notify_one();
                }
                let size = e.size;
                let completes = match completion {
                    CompletionAck::Received => e.status >= Status::Received,
                    // `Auto` is resolved before a session starts.
                    CompletionAck::Persisted | CompletionAck::Auto => e.status >= Status::Persisted,
                } && e.status <= Status::Persisted;
                if newly {
                    match event {
                        AckEventType::Received => {
                            st.summary.fragments_received += 1;
                            st.progress += 1;
                            if let Some(l) = latency {
                                st.received_latency.record(l);
                            }
                        }
                        AckEventType::Persisted => {
                            st.summary.fragments_persisted += 1;
                            if let Some(l) = latency {
                                st.persisted_latency.record(l);
                            }
                        }
                        _ => {}
                    }
                }
                if completes && st.ledger.get(&tc).is_some_and(|e| !e.done) {
                    st.finish_entry(tc);
                    st.summary.fragments_delivered += 1;
                    st.prune();
                    self.sink_waker.wake();
                    self.driver.notify_one();
                }
                let fa = FragmentAck {
                    event: event.clone(),
                    timecode: tc,
                    fragment_number: ack.fragment_number,
                    size,
                    latency,
                };
                self.emit(&mut st, Ok(SessionEvent::Fragment(fa)));
            }
            (_, None) => self.emit(&mut st, Ok(SessionEvent::UnmatchedAck(ack))),
        }
        None
    }

    fn on_error_ack(
        &self,
        st: &mut State,
        error: AckError,
        tc: Option<u64>,
        fragment_number: Option<FragmentNumber>,
    ) -> EndingError {
        let mut action = error.id.action();
        match action {
            // docs/protocol.md §2 table: 4008, KMS errors and 4507 mean the stream cannot take data.
            ErrorAction::Stop => {
                // The refused fragment is reported like a skipped one, so every caller's
                // summary names it, not only the error.
                if st.summary.fragments_failed.len() < FAILED_KEPT {
                    st.summary.fragments_failed.push(FailedFragment {
                        timecode: tc,
                        fragment_number: fragment_number.clone(),
                        error: error.clone(),
                    });
                }
                let err = Error::Ack {
                    stream: self.stream.clone(),
                    id: error.id,
                    code: error.code.clone(),
                    fragment_timecode: tc,
                    fragment_number: fragment_number.map(FragmentNumber::into_string),
                };
                self.fail(st, err);
            }
            // docs/protocol.md §6: "Fragments rejected with a non-retryable error are skipped, never
            // resent."
            ErrorAction::Skip => {
                let named = tc.filter(|t| st.ledger.get(t).is_some_and(|e| !e.done));
                if let Some(tc) = named {
                    if let Some(e) = st.ledger.get_mut(&tc) {
                        e.status = Status::Failed;
                    }
                    st.finish_entry(tc);
                    st.progress += 1;
                    st.prune();
                    self.sink_waker.wake();
                    let failed = FailedFragment {
                        timecode: Some(tc),
                        fragment_number,
                        error: error.clone(),
                    };
                    st.summary.fragments_skipped += 1;
                    if st.summary.fragments_failed.len() < FAILED_KEPT {
                        st.summary.fragments_failed.push(failed.clone());
                    }
                    tracing::warn!(stream = %self.stream, timecode = tc, error = %error.id, "fragment refused for good; skipped");
                    self.emit(st, Ok(SessionEvent::Skipped(failed)));
                } else {
                    // Nothing to skip: no timecode, or none of ours still owed. Retrying under
                    // the backoff and budget is the only safe reading.
                    tracing::warn!(stream = %self.stream, timecode = ?tc, error = %error.id, "ERROR ack names no fragment of this session; retrying");
                    action = ErrorAction::Retry;
                }
            }
            ErrorAction::Retry | ErrorAction::Reconnect => {
                // A retryable error naming a fragment already RECEIVED (5001 ARCHIVAL_ERROR:
                // "failed to persist") means it is not safe: send it again.
                if let Some(tc) = tc
                    && let Some(e) = st.ledger.get_mut(&tc)
                    && !e.done
                    && e.status >= Status::Received
                    && e.status <= Status::Persisted
                {
                    e.status = Status::Sent;
                }
                tracing::debug!(stream = %self.stream, timecode = ?tc, error = %error.id, "retryable ERROR ack");
            }
        }
        EndingError {
            error,
            timecode: tc,
            action,
        }
    }
}

/// One piece of the request body.
#[derive(Debug)]
pub(crate) struct BodyChunk {
    pub(crate) data: BodyBuf,
    /// Set on the chunk that carries a whole fragment: its timecode.
    pub(crate) ends_fragment: Option<u64>,
}

impl BodyChunk {
    pub(crate) fn header(bytes: Bytes) -> Self {
        Self {
            data: BodyBuf::new(vec![bytes]),
            ends_fragment: None,
        }
    }
}

/// The chunked request body of one connection: whatever the driver queued, as it is queued.
/// Ends (hyper then writes the terminating zero-length chunk) when the driver drops its sender.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<BodyChunk>,
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
}

impl Body for ChannelBody {
    type Data = BodyBuf;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<BodyBuf>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.shared.on_sent(&chunk, &self.conn);
                Poll::Ready(Some(Ok(Frame::data(chunk.data))))
            }
            Poll::Ready(None) if self.conn.aborted.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(std::io::Error::other(
                    "PutMedia request abandoned after a failure",
                ))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) fn channel_body(
    shared: &Arc<Shared>,
    conn: &Arc<ConnShared>,
) -> (mpsc::UnboundedSender<BodyChunk>, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        ChannelBody {
            rx,
            shared: shared.clone(),
            conn: conn.clone(),
        },
    )
}
/// One piece of the request body: a fragment's slices (or the header), sent as one HTTP chunk
/// with vectored writes, without copying them together.
#[derive(Debug, Default)]
pub struct BodyBuf {
    parts: Vec<Bytes>,
    idx: usize,
    remaining: usize,
}

impl BodyBuf {
    fn new(mut parts: Vec<Bytes>) -> Self {
        parts.retain(|p| !p.is_empty());
        let remaining = parts.iter().map(Bytes::len).sum();
        Self {
            parts,
            idx: 0,
            remaining,
        }
    }
}

impl Buf for BodyBuf {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.get(self.idx).map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a BodyBuf");
        self.remaining -= cnt;
        while cnt > 0 {
            let part = &mut self.parts[self.idx];
            if cnt < part.len() {
                part.advance(cnt);
                return;
            }
            cnt -= part.len();
            self.idx += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts[self.idx..]) {
            *slot = std::io::IoSlice::new(part);
            n += 1;
        }
        n
    }
}

/// Reads one connection's acknowledgement stream until the response ends, an ERROR ack ends the
/// connection, or a time limit passes; then reports how it ended to the driver.
///
/// Limits: the first ack must come within `first_ack` of the connection's first media byte, and
/// then some ack (IDLE included) at least every `staleness`; docs/protocol.md §6: "if no
/// BUFFERING/IDLE ack arrives for a configured time (60 s default), reset the connection".
/// Once the input has ended, a connection that owes acknowledgements for fragments it carried
/// and acknowledges none for `final_drain` (IDLE acks do not count: they only say the
/// connection is open) is reset too, checked at least every quarter of that limit: a stall at
/// the end is recovered like one in the middle, not left to fail the session.
pub(crate) async fn read_acks(
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
    mut body: hyper::body::Incoming,
    timeouts: Timeouts,
) {
    let mut decoder = AckDecoder::new();
    let mut last_ack = Instant::now();
    let mut got_ack = false;
    let mut first_byte_at: Option<Instant> = None;
    let drain = timeouts.final_drain;
    let mut last_fragment_ack = Instant::now();
    let mut drain_check = Instant::now() + drain / 4;
    let stalled = |got_ack: bool, e: Error| {
        if got_ack {
            ConnEnd::Stalled(e)
        } else {
            ConnEnd::Failed(e)
        }
    };
    let end = loop {
        if first_byte_at.is_none() && conn.first_byte_sent.load(Ordering::Relaxed) {
            first_byte_at = Some(Instant::now());
        }
        let (deadline, phase, waited) = match first_byte_at {
            Some(first)
                if !got_ack && first + timeouts.first_ack < last_ack + timeouts.staleness =>
            {
                (
                    first + timeouts.first_ack,
                    TimeoutPhase::FirstAck,
                    timeouts.first_ack,
                )
            }
            _ => (
                last_ack + timeouts.staleness,
                TimeoutPhase::Staleness,
                timeouts.staleness,
            ),
        };
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    decoder.push(&data);
                    let mut ended = None;
                    while let Some(item) = decoder.next_ack() {
                        last_ack = Instant::now();
                        got_ack = true;
                        if item.as_ref().is_ok_and(|a| a.fragment_timecode.is_some()) {
                            last_fragment_ack = last_ack;
                        }
                        if let Some(err) = handle_decoded(&shared, conn.id, item) {
                            ended = Some(err);
                            break;
                        }
                    }
                    // docs/protocol.md §2: "After any ERROR ack the service ends the connection".
                    if let Some(err) = ended {
                        break ConnEnd::Closed { error: Some(err) };
                    }
                }
                Some(Err(e)) => break ConnEnd::Failed(Error::Transport {
                    stream: shared.stream.clone(),
                    during: "reading acknowledgements",
                    source: BoxError::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                }),
                None => {
                    let mut error = None;
                    while let Some(item) = decoder.finish() {
                        if let Some(e) = handle_decoded(&shared, conn.id, item) {
                            error = Some(e);
                        }
                    }
                    break ConnEnd::Closed { error };
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                let e = Error::Timeout { stream: shared.stream.clone(), phase, waited };
                break match phase {
                    TimeoutPhase::Staleness => stalled(got_ack, e),
                    _ => ConnEnd::Failed(e),
                };
            }
            () = tokio::time::sleep_until(drain_check) => {
                let now = Instant::now();
                match shared.drain_owed_since(conn.id) {
                    Some(since) => {
                        let since = since.max(last_fragment_ack);
                        if now >= since + drain {
                            let e = Error::Timeout {
                                stream: shared.stream.clone(),
                                phase: TimeoutPhase::FinalDrain,
                                waited: drain,
                            };
                            break stalled(got_ack, e);
                        }
                        drain_check = since + drain;
                    }
                    None => drain_check = now + drain / 4,
                }
            }
            () = conn.first_byte.notified(), if first_byte_at.is_none() => {}
        }
    };
    drop(body);
    tracing::debug!(stream = %shared.stream, connection = conn.id, end = ?end, "PutMedia connection ended");
    shared.lock().ended.push((conn.id, end));
    shared.driver.notify_one();
}

fn handle_decoded(
    shared: &Shared,
    conn: u32,
    item: std::result::Result<Ack, crate::ack::AckDecodeError>,
) -> Option<EndingError> {
    match item {
        Ok(ack) => {
            tracing::trace!(connection = conn, event = %ack.event, timecode = ?ack.fragment_timecode, "ack");
            shared.on_ack(ack)
        }
        // The decoder recovers after a bad line: report it and keep reading.
        Err(e) => {
            tracing::debug!(error = %e, "undecodable ack line");
            let mut st = shared.lock();
            let ev = SessionEvent::UndecodableAck {
                reason: e.to_string(),
            };
            shared.emit(&mut st, Ok(ev));
            None
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
    events: mpsc::Receiver<Result<SessionEvent>>,
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
        events,
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
        self.shared.lock().held
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
        let mut st = self.shared.lock();
        st.input_done = true;
        drop(st);
        self.shared.driver.notify_one();
    }
}

impl Drop for PutMediaSink {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.sink_gone = true;
        drop(st);
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
            shared.overflow == OverflowPolicy::Backpressure && shared.over(st, st.largest_fragment)
        };
        {
            let st = shared.lock();
            if let Some(e) = &st.failure {
                return Poll::Ready(Err(e.clone()));
            }
            if !blocked(&st) && !st.sink_waiting {
                return Poll::Ready(Ok(()));
            }
        }
        shared.sink_waker.register(cx.waker());
        // Re-check after registering so a wake between the check and the registration is not lost.
        let mut st = shared.lock();
        if let Some(e) = &st.failure {
            return Poll::Ready(Err(e.clone()));
        }
        let waiting = blocked(&st);
        if waiting != st.sink_waiting {
            st.sink_waiting = waiting;
            // Time spent waiting at the cap does not count towards a pause.
            st.last_input = Instant::now();
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
        if let Some(e) = &self.shared.lock().failure {
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
        match &self.shared.lock().failure {
            Some(e) => Poll::Ready(Err(e.clone())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match self.close {
                CloseState::Open => {
                    let failed = self.shared.lock().failure.clone();
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
                    self.shared.sink_waker.register(cx.waker());
                    let result = {
                        let st = self.shared.lock();
                        if let Some(e) = &st.failure {
                            Some(Err(e.clone()))
                        } else if st.outstanding == 0 && st.driver_done {
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
    events: mpsc::Receiver<Result<SessionEvent>>,
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

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.events.poll_recv(cx) {
            // The error that ended the session is never lost to a full channel: it comes last.
            Poll::Ready(None) => {
                let mut st = self.shared.lock();
                match &st.failure {
                    Some(e) if !st.failure_reported => {
                        let e = e.clone();
                        st.failure_reported = true;
                        Poll::Ready(Some(Err(e)))
                    }
                    _ => Poll::Ready(None),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_buf_walks_all_parts_in_order() {
        let parts = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"fghij"),
        ];
        let mut b = BodyBuf::new(parts);
        assert_eq!(b.remaining(), 10);
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        assert_eq!(b.chunks_vectored(&mut slices), 3);
        b.advance(4);
        assert_eq!(b.chunk(), b"e");
        let mut out = Vec::new();
        while b.has_remaining() {
            let c = b.chunk().to_vec();
            b.advance(c.len());
            out.extend(c);
        }
        assert_eq!(out, b"efghij");
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.chunk(), b"");
    }
}
