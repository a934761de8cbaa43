//! A PutMedia session: the [`PutMediaSink`] taking MKV bytes, the [`AckStream`] of per-fragment
//! outcomes, and the per-fragment ledger that joins them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::task::AtomicWaker;
use futures::{Sink, Stream};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, Sleep};

use super::config::{CompletionAck, Timeouts};
use super::error::{BoxError, Error, Result, TimeoutPhase};
use crate::ack::{Ack, AckDecoder, AckError, AckEventType, FragmentNumber};
use crate::mkv::{Output, Refragmenter, Warning};

/// Capacity of the event channel behind [`AckStream`]. Events beyond it, when the caller does not
/// read the stream, are dropped and counted in [`SessionSummary::events_dropped`]: acks are still
/// processed, so an unread stream never stalls the session.
pub const EVENT_CAPACITY: usize = 1024;

/// Completed fragments whose metadata is kept to match late acks (e.g. PERSISTED after RECEIVED
/// completed them); older ones are forgotten so the ledger stays bounded.
const COMPLETED_KEPT: usize = 256;

/// What happened to a fragment, or to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// An acknowledgement matched, by timecode, to a fragment this session sent.
    Fragment(FragmentAck),
    /// An IDLE acknowledgement: the connection is alive, no media is arriving.
    Idle,
    /// The re-fragmenter had to adjust the media (reference §5: never silent).
    Warning(Warning),
    /// An acknowledgement naming no fragment this session knows (or none at all), kept as is.
    UnmatchedAck(Ack),
}

/// A non-ERROR acknowledgement of one fragment. ERROR acks arrive as [`Error::Ack`] items.
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
    /// Time from the fragment's last byte handed to the socket to this ack; `None` for acks that
    /// arrive before it (BUFFERING).
    pub latency: Option<Duration>,
}

/// A fragment the service rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedFragment {
    /// Its timecode, when the ERROR ack named one.
    pub timecode: Option<u64>,
    /// Its fragment number, when the ERROR ack carried one.
    pub fragment_number: Option<FragmentNumber>,
    /// The error id and code.
    pub error: AckError,
}

/// What a session did, from [`PutMediaSink::close`] or [`AckStream::summary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSummary {
    /// Fragments fully handed to the socket.
    pub fragments_sent: u64,
    /// Fragments acknowledged RECEIVED.
    pub fragments_received: u64,
    /// Fragments acknowledged PERSISTED.
    pub fragments_persisted: u64,
    /// Fragments (or the stream) rejected by ERROR acks.
    pub fragments_failed: Vec<FailedFragment>,
    /// Body bytes handed to the socket (header and fragments).
    pub bytes_sent: u64,
    /// From the first media byte handed to the socket to the first acknowledgement.
    pub first_ack_latency: Option<Duration>,
    /// Highest number of bytes the session held at once (see the buffer bound).
    pub peak_buffered_bytes: usize,
    /// Re-fragmenter warnings.
    pub warnings: u64,
    /// Events not delivered because the [`AckStream`] was not read.
    pub events_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FragmentStatus {
    Queued,
    Sent,
    Complete,
    Failed,
}

/// Per-fragment state, keyed by Cluster timecode in the ledger. The bytes stay here until the
/// completion ack so that a replay (reference §6) can resend them whole.
#[derive(Debug)]
struct Entry {
    data: Vec<Bytes>,
    size: usize,
    status: FragmentStatus,
    last_byte_sent: Option<Instant>,
    received: bool,
    persisted: bool,
}

#[derive(Debug)]
struct State {
    ledger: BTreeMap<u64, Entry>,
    /// Fragments not yet complete (or failed).
    outstanding: usize,
    /// Bytes held: fragments in the ledger not yet complete, plus header/tag bytes queued.
    held: usize,
    /// Bytes in the body channel not yet taken by hyper.
    queued: usize,
    failure: Option<Error>,
    first_byte_at: Option<Instant>,
    first_ack_at: Option<Instant>,
    response_ended: bool,
    sink_gone: bool,
    /// Taken (ending the [`AckStream`]) once the response ended and the sink is gone.
    events: Option<mpsc::Sender<Result<SessionEvent>>>,
    summary: SessionSummary,
}

impl State {
    fn end_events_if_done(&mut self) {
        if self.response_ended && self.sink_gone {
            self.events = None;
        }
    }
}

/// State shared by the sink, the body and the ack reader.
#[derive(Debug)]
pub(crate) struct Shared {
    stream: String,
    completion: CompletionAck,
    state: Mutex<State>,
    sink_waker: AtomicWaker,
    first_byte: Notify,
}

impl Shared {
    pub(crate) fn new(
        stream: String,
        completion: CompletionAck,
    ) -> (Arc<Self>, mpsc::Receiver<Result<SessionEvent>>) {
        let (events, rx) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Self {
            stream,
            completion,
            state: Mutex::new(State {
                ledger: BTreeMap::new(),
                outstanding: 0,
                held: 0,
                queued: 0,
                failure: None,
                first_byte_at: None,
                first_ack_at: None,
                response_ended: false,
                sink_gone: false,
                events: Some(events),
                summary: SessionSummary::default(),
            }),
            sink_waker: AtomicWaker::new(),
            first_byte: Notify::new(),
        });
        (shared, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than losing the session, so keep going with the inner value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, st: &mut State, ev: Result<SessionEvent>) {
        let delivered = st.events.as_ref().is_some_and(|tx| tx.try_send(ev).is_ok());
        if !delivered {
            st.summary.events_dropped += 1;
        }
    }

    fn fail(&self, st: &mut State, err: Error) {
        if st.failure.is_none() {
            tracing::debug!(stream = %self.stream, error = %err, "session failed");
            st.failure = Some(err.clone());
            self.emit(st, Err(err));
        }
        self.sink_waker.wake();
    }

    fn on_sent(&self, chunk: &BodyChunk) {
        let now = Instant::now();
        let mut st = self.lock();
        st.queued -= chunk.data.remaining();
        st.held -= chunk.accounted;
        st.summary.bytes_sent += chunk.data.remaining() as u64;
        if st.first_byte_at.is_none() {
            st.first_byte_at = Some(now);
            self.first_byte.notify_one();
        }
        if let Some(tc) = chunk.ends_fragment {
            st.summary.fragments_sent += 1;
            if let Some(e) = st.ledger.get_mut(&tc) {
                e.last_byte_sent = Some(now);
                if e.status == FragmentStatus::Queued {
                    e.status = FragmentStatus::Sent;
                }
            }
        }
        drop(st);
        self.sink_waker.wake();
    }

    /// Applies one acknowledgement to the ledger. Matching is by `FragmentTimecode`, never by
    /// arrival order (reference §2).
    fn on_ack(&self, ack: Ack) {
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
                    .unwrap_or_else(|| AckError::new(crate::ack::AckErrorId::Unknown(0)));
                if let Some(tc) = tc
                    && let Some(e) = st.ledger.get_mut(&tc)
                    && matches!(e.status, FragmentStatus::Queued | FragmentStatus::Sent)
                {
                    e.status = FragmentStatus::Failed;
                    let size = e.size;
                    e.data = Vec::new();
                    st.held -= size;
                    st.outstanding -= 1;
                }
                st.summary.fragments_failed.push(FailedFragment {
                    timecode: tc,
                    fragment_number: ack.fragment_number.clone(),
                    error: error.clone(),
                });
                let err = Error::Ack {
                    stream: self.stream.clone(),
                    id: error.id,
                    code: error.code,
                    fragment_timecode: tc,
                    fragment_number: ack.fragment_number.map(FragmentNumber::into_string),
                };
                // The service ends the connection after any ERROR ack (reference §2).
                self.fail(&mut st, err);
            }
            (event, Some(tc)) => {
                let completion = self.completion;
                let Some(e) = st.ledger.get_mut(&tc) else {
                    self.emit(&mut st, Ok(SessionEvent::UnmatchedAck(ack)));
                    return;
                };
                let latency = match event {
                    AckEventType::Received | AckEventType::Persisted => {
                        e.last_byte_sent.map(|t| now.saturating_duration_since(t))
                    }
                    _ => None,
                };
                let (mut newly_received, mut newly_persisted) = (false, false);
                match event {
                    AckEventType::Received if !e.received => {
                        e.received = true;
                        newly_received = true;
                    }
                    AckEventType::Persisted if !e.persisted => {
                        e.persisted = true;
                        newly_persisted = true;
                    }
                    _ => {}
                }
                let completes = match completion {
                    CompletionAck::Received => newly_received,
                    // `Auto` is resolved before a session starts.
                    CompletionAck::Persisted | CompletionAck::Auto => newly_persisted,
                };
                let mut freed = 0;
                if completes && matches!(e.status, FragmentStatus::Queued | FragmentStatus::Sent) {
                    e.status = FragmentStatus::Complete;
                    e.data = Vec::new();
                    freed = e.size;
                }
                let size = e.size;
                st.summary.fragments_received += u64::from(newly_received);
                st.summary.fragments_persisted += u64::from(newly_persisted);
                if freed > 0 {
                    st.held -= freed;
                    st.outstanding -= 1;
                    prune(&mut st.ledger);
                    self.sink_waker.wake();
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
    }
}

/// Forgets the oldest completed fragments beyond [`COMPLETED_KEPT`].
fn prune(ledger: &mut BTreeMap<u64, Entry>) {
    let done = ledger
        .values()
        .filter(|e| matches!(e.status, FragmentStatus::Complete | FragmentStatus::Failed))
        .count();
    if done <= COMPLETED_KEPT {
        return;
    }
    let mut excess = done - COMPLETED_KEPT;
    ledger.retain(|_, e| {
        if excess > 0 && matches!(e.status, FragmentStatus::Complete | FragmentStatus::Failed) {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

/// One piece of the request body.
#[derive(Debug)]
pub(crate) struct BodyChunk {
    data: BodyBuf,
    /// Set on the last chunk of a fragment: its timecode.
    ends_fragment: Option<u64>,
    /// Bytes of `held` this chunk accounts for (header and tags; fragments are accounted in the
    /// ledger).
    accounted: usize,
}

/// The chunked request body: whatever the sink queued, as it is queued. Ends (hyper then writes
/// the terminating zero-length chunk) when the sink drops its sender.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<BodyChunk>,
    shared: Arc<Shared>,
}

impl Body for ChannelBody {
    type Data = BodyBuf;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<BodyBuf>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                self.shared.on_sent(&chunk);
                Poll::Ready(Some(Ok(Frame::data(chunk.data))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
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

/// Aborts the ack reader when both the sink and the stream are gone.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn channel_body(
    shared: &Arc<Shared>,
) -> (mpsc::UnboundedSender<BodyChunk>, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        ChannelBody {
            rx,
            shared: shared.clone(),
        },
    )
}

/// Starts the ack reader on `body` and returns the session's two halves.
pub(crate) fn start_session(
    shared: Arc<Shared>,
    events: mpsc::Receiver<Result<SessionEvent>>,
    tx: mpsc::UnboundedSender<BodyChunk>,
    response: hyper::body::Incoming,
    refragmenter: Refragmenter,
    timeouts: Timeouts,
    bound: usize,
) -> (PutMediaSink, AckStream) {
    let task = tokio::spawn(read_acks(shared.clone(), response, timeouts));
    let guard = Arc::new(TaskGuard(task));
    let sink = PutMediaSink {
        shared: shared.clone(),
        refragmenter,
        tx: Some(tx),
        input_offset: 0,
        close: CloseState::Open,
        drain: None,
        final_drain: timeouts.final_drain,
        bound,
        largest_fragment: 0,
        _guard: guard.clone(),
    };
    let stream = AckStream {
        shared,
        events,
        _guard: guard,
    };
    (sink, stream)
}

/// Reads the acknowledgement stream until the response ends, enforcing the first-ack and
/// staleness limits.
async fn read_acks(shared: Arc<Shared>, mut body: hyper::body::Incoming, timeouts: Timeouts) {
    let mut decoder = AckDecoder::new();
    let mut last_ack = Instant::now();
    loop {
        let (deadline, phase, waited) = {
            let st = shared.lock();
            match (st.first_ack_at, st.first_byte_at) {
                (None, Some(first))
                    if first + timeouts.first_ack < last_ack + timeouts.staleness =>
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
            }
        };
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    decoder.push(&data);
                    while let Some(item) = decoder.next_ack() {
                        last_ack = Instant::now();
                        handle_decoded(&shared, item);
                    }
                }
                Some(Err(e)) => {
                    let mut st = shared.lock();
                    shared.fail(&mut st, Error::Transport {
                        stream: shared.stream.clone(),
                        during: "reading acknowledgements",
                        source: BoxError::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                    });
                    break;
                }
                None => {
                    while let Some(item) = decoder.finish() {
                        handle_decoded(&shared, item);
                    }
                    break;
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                let mut st = shared.lock();
                shared.fail(&mut st, Error::Timeout { stream: shared.stream.clone(), phase, waited });
                break;
            }
            () = shared.first_byte.notified() => {}
        }
    }
    let mut st = shared.lock();
    st.response_ended = true;
    st.end_events_if_done();
    drop(st);
    shared.sink_waker.wake();
}

fn handle_decoded(shared: &Shared, item: std::result::Result<Ack, crate::ack::AckDecodeError>) {
    match item {
        Ok(ack) => {
            tracing::trace!(event = %ack.event, timecode = ?ack.fragment_timecode, "ack");
            shared.on_ack(ack);
        }
        // The decoder recovers after a bad line: report it and keep reading.
        Err(e) => {
            tracing::debug!(error = %e, "undecodable ack line");
            let mut st = shared.lock();
            let err = Error::AckStream {
                stream: shared.stream.clone(),
                reason: e.to_string(),
            };
            shared.emit(&mut st, Err(err));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseState {
    Open,
    Draining,
    Closed,
}

/// The media side of a PutMedia session: a [`futures::Sink`] of MKV bytes in any chunking.
///
/// Bytes go through the re-fragmenter ([`crate::mkv::Refragmenter`]); its header and fragments
/// stream out as the chunked request body as soon as they are produced.
///
/// **Memory bound.** The session holds the bytes queued for the socket and every fragment until
/// its completion ack ([`CompletionAck`]), so that a replay can resend it whole. `poll_ready`
/// waits while that total, plus room for one more fragment as large as the largest seen so far,
/// exceeds the configured bound ([`PutMediaClientBuilder::with_buffer_bound`](crate::PutMediaClientBuilder::with_buffer_bound)).
/// The re-fragmenter itself holds at most the open fragment and one waiting for late frames, on
/// top. A single fragment larger than the bound is still accepted.
///
/// **Closing.** [`close`](Self::close) ends the body (the terminating zero-length chunk), then
/// waits, at most the final-drain timeout, for every fragment's completion ack, and returns the
/// [`SessionSummary`]. `SinkExt::close` does the same without the summary.
#[derive(Debug)]
pub struct PutMediaSink {
    shared: Arc<Shared>,
    refragmenter: Refragmenter,
    tx: Option<mpsc::UnboundedSender<BodyChunk>>,
    input_offset: u64,
    close: CloseState,
    drain: Option<Pin<Box<Sleep>>>,
    final_drain: Duration,
    bound: usize,
    largest_fragment: usize,
    _guard: Arc<TaskGuard>,
}

impl PutMediaSink {
    /// The stream this session puts media on.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// Bytes the session holds now (see the type's memory bound).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().held
    }

    /// A snapshot of the session's counters.
    pub fn summary(&self) -> SessionSummary {
        self.shared.lock().summary.clone()
    }

    /// Ends the body and waits for the last completion ack (bounded by the final-drain timeout);
    /// returns what the session did.
    pub async fn close(mut self) -> Result<SessionSummary> {
        futures::SinkExt::close(&mut self).await?;
        Ok(self.summary())
    }

    /// No more events will come from the sink side: the ack stream may end with the response.
    fn mark_sink_gone(&self) {
        let mut st = self.shared.lock();
        st.sink_gone = true;
        st.end_events_if_done();
    }

    fn closed_error(&self) -> Error {
        Error::SessionClosed {
            stream: self.shared.stream.clone(),
        }
    }

    fn check_failure(&self) -> Result<()> {
        match &self.shared.lock().failure {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn queue(&mut self, data: BodyBuf, ends_fragment: Option<u64>, accounted: usize) -> Result<()> {
        if data.remaining() == 0 {
            return Ok(());
        }
        let len = data.remaining();
        let tx = self.tx.as_ref().ok_or_else(|| self.closed_error())?;
        {
            let mut st = self.shared.lock();
            st.queued += len;
            st.held += accounted;
            st.summary.peak_buffered_bytes = st.summary.peak_buffered_bytes.max(st.held);
        }
        if tx
            .send(BodyChunk {
                data,
                ends_fragment,
                accounted,
            })
            .is_err()
        {
            // hyper dropped the body: the connection is gone; the reader reports why.
            let mut st = self.shared.lock();
            st.queued -= len;
            st.held -= accounted;
            let err = st.failure.clone().unwrap_or_else(|| Error::Transport {
                stream: self.shared.stream.clone(),
                during: "sending media",
                source: BoxError::from(Box::<dyn std::error::Error + Send + Sync>::from(
                    "the connection closed the request body",
                )),
            });
            return Err(err);
        }
        Ok(())
    }

    /// Moves everything the re-fragmenter has ready into the body.
    fn drain_outputs(&mut self) -> Result<()> {
        while let Some(out) = self.refragmenter.next_output() {
            match out {
                Output::Header(h) => {
                    let b = h.bytes().clone();
                    let n = b.len();
                    self.queue(BodyBuf::new(vec![b]), None, n)?;
                }
                Output::Fragment(f) => {
                    let tc = f.timecode();
                    // One HTTP chunk per fragment, written with vectored I/O straight from
                    // the re-fragmenter's slices: no copy, one chunk-size line per fragment.
                    let data: Vec<Bytes> = f
                        .chunks()
                        .iter()
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .collect();
                    let size: usize = data.iter().map(Bytes::len).sum();
                    self.largest_fragment = self.largest_fragment.max(size);
                    {
                        let mut st = self.shared.lock();
                        if st.ledger.contains_key(&tc) {
                            return Err(Error::InvalidMedia {
                                stream: self.shared.stream.clone(),
                                offset: self.input_offset,
                                reason: format!("two fragments with timecode {tc}"),
                            });
                        }
                        st.ledger.insert(
                            tc,
                            Entry {
                                data: data.clone(),
                                size,
                                status: FragmentStatus::Queued,
                                last_byte_sent: None,
                                received: false,
                                persisted: false,
                            },
                        );
                        st.outstanding += 1;
                        st.held += size;
                    }
                    self.queue(BodyBuf::new(data), Some(tc), 0)?;
                }
                Output::Warning(w) => {
                    tracing::debug!(stream = %self.shared.stream, warning = ?w, "re-fragmenter warning");
                    let mut st = self.shared.lock();
                    st.summary.warnings += 1;
                    self.shared.emit(&mut st, Ok(SessionEvent::Warning(w)));
                }
            }
        }
        Ok(())
    }

    fn media_error(&self, e: crate::mkv::MkvError) -> Error {
        Error::InvalidMedia {
            stream: self.shared.stream.clone(),
            offset: e.offset().unwrap_or(self.input_offset),
            reason: e.to_string(),
        }
    }
}

impl Drop for PutMediaSink {
    fn drop(&mut self) {
        self.mark_sink_gone();
    }
}

impl Sink<Bytes> for PutMediaSink {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.close != CloseState::Open {
            return Poll::Ready(Err(self.closed_error()));
        }
        let over = |st: &State| st.outstanding > 0 && st.held + self.largest_fragment > self.bound;
        {
            let st = self.shared.lock();
            if let Some(e) = &st.failure {
                return Poll::Ready(Err(e.clone()));
            }
            if !over(&st) {
                return Poll::Ready(Ok(()));
            }
        }
        self.shared.sink_waker.register(cx.waker());
        // Re-check after registering so a wake between the check and the registration is not lost.
        let st = self.shared.lock();
        if let Some(e) = &st.failure {
            return Poll::Ready(Err(e.clone()));
        }
        if over(&st) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        if self.close != CloseState::Open {
            return Err(self.closed_error());
        }
        self.check_failure()?;
        let len = item.len() as u64;
        if let Err(e) = self.refragmenter.push(item) {
            return Err(self.media_error(e));
        }
        self.input_offset += len;
        self.drain_outputs()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let done = |st: &State| st.queued == 0 || st.response_ended;
        {
            let st = self.shared.lock();
            if let Some(e) = &st.failure {
                return Poll::Ready(Err(e.clone()));
            }
            if done(&st) {
                return Poll::Ready(Ok(()));
            }
        }
        self.shared.sink_waker.register(cx.waker());
        let st = self.shared.lock();
        if let Some(e) = &st.failure {
            Poll::Ready(Err(e.clone()))
        } else if done(&st) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match self.close {
                CloseState::Open => {
                    self.check_failure()?;
                    if let Err(e) = self.refragmenter.finish() {
                        self.close = CloseState::Closed;
                        self.mark_sink_gone();
                        self.tx = None;
                        return Poll::Ready(Err(self.media_error(e)));
                    }
                    let drained = self.drain_outputs();
                    // Dropping the sender ends the body: hyper writes the zero-length chunk.
                    self.tx = None;
                    if let Err(e) = drained {
                        self.close = CloseState::Closed;
                        self.mark_sink_gone();
                        return Poll::Ready(Err(e));
                    }
                    let d = self.final_drain;
                    self.drain = Some(Box::pin(tokio::time::sleep(d)));
                    self.close = CloseState::Draining;
                }
                CloseState::Draining => {
                    self.shared.sink_waker.register(cx.waker());
                    let result = {
                        let st = self.shared.lock();
                        if let Some(e) = &st.failure {
                            Some(Err(e.clone()))
                        } else if st.outstanding == 0 {
                            Some(Ok(()))
                        } else if st.response_ended {
                            Some(Err(Error::Transport {
                                stream: self.shared.stream.clone(),
                                during: "waiting for the last acknowledgements",
                                source: BoxError::from(
                                    Box::<dyn std::error::Error + Send + Sync>::from(format!(
                                        "the response ended with {} fragment(s) not acknowledged",
                                        st.outstanding
                                    )),
                                ),
                            }))
                        } else {
                            None
                        }
                    };
                    if let Some(r) = result {
                        self.close = CloseState::Closed;
                        self.mark_sink_gone();
                        self.drain = None;
                        return Poll::Ready(r);
                    }
                    let fired = self
                        .drain
                        .as_mut()
                        .is_some_and(|s| s.as_mut().poll(cx).is_ready());
                    if fired {
                        self.close = CloseState::Closed;
                        self.mark_sink_gone();
                        self.drain = None;
                        return Poll::Ready(Err(Error::Timeout {
                            stream: self.shared.stream.clone(),
                            phase: TimeoutPhase::FinalDrain,
                            waited: self.final_drain,
                        }));
                    }
                    return Poll::Pending;
                }
                CloseState::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The acknowledgement side of a PutMedia session: a [`futures::Stream`] of per-fragment
/// outcomes. ERROR acks, timeouts and transport failures arrive as `Err` items (the session is
/// over after one of those). Ends when the response has ended and the sink is closed or dropped.
#[derive(Debug)]
pub struct AckStream {
    shared: Arc<Shared>,
    events: mpsc::Receiver<Result<SessionEvent>>,
    _guard: Arc<TaskGuard>,
}

impl AckStream {
    /// A snapshot of the session's counters.
    pub fn summary(&self) -> SessionSummary {
        self.shared.lock().summary.clone()
    }
}

impl Stream for AckStream {
    type Item = Result<SessionEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

use std::future::Future as _;

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
