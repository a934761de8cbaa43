//! What a session reports on its [`AckStream`](crate::AckStream): per-fragment acknowledgements,
//! connection changes, re-fragmenter warnings, skipped and dropped fragments.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::error::{Error, Result};
use super::recovery::ConnectCause;
use super::summary::FailedFragment;
#[cfg(doc)]
use super::{policy::OverflowPolicy, summary::SessionSummary};
use crate::ack::{Ack, AckEventType, FragmentNumber};
use crate::mkv::Warning;

/// Capacity of the event queue behind [`AckStream`](crate::AckStream). Events beyond it, when the
/// caller does not read the stream, are dropped and counted in
/// [`SessionSummary::events_dropped`]: acks are still processed, so an unread stream never
/// stalls the session.
pub const EVENT_CAPACITY: usize = 1024;

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

/// The events waiting for the [`AckStream`](crate::AckStream), kept under the session's lock.
///
/// A queue rather than a channel: a bounded tokio channel allocates its slots in blocks of 32
/// events (4 KiB here) and keeps two of them once events flow, for each session; the queue
/// holds what is actually waiting, usually an event or two (docs/performance.md, fleet).
#[derive(Debug)]
pub(crate) struct EventQueue {
    queue: VecDeque<Result<SessionEvent>>,
    capacity: usize,
    waker: Option<Waker>,
    /// No more events will come: the stream ends once the queue is empty.
    ended: bool,
    /// The stream was dropped: nobody reads, so nothing is kept.
    closed: bool,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity,
            waker: None,
            ended: false,
            closed: false,
        }
    }

    /// Queues `ev` and wakes the reader; `false` (the event is lost) when the queue is full,
    /// ended or no longer read.
    pub(crate) fn push(&mut self, ev: Result<SessionEvent>) -> bool {
        if self.ended || self.closed || self.queue.len() >= self.capacity {
            return false;
        }
        self.queue.push_back(ev);
        self.wake();
        true
    }

    /// No more events: the reader sees the end once it has taken what is queued.
    pub(crate) fn end(&mut self) {
        self.ended = true;
        self.wake();
    }

    /// The reader is gone.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.queue = VecDeque::new();
        self.waker = None;
    }

    /// The next event, without waiting.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<Result<SessionEvent>> {
        self.queue.pop_front()
    }

    /// The next event; `Ready(None)` once ended and empty; else `Pending`, woken by the next
    /// [`push`](Self::push) or [`end`](Self::end).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<SessionEvent>>> {
        if let Some(ev) = self.queue.pop_front() {
            return Poll::Ready(Some(ev));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_queue_wakes_its_reader_keeps_order_bounds_itself_and_ends() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut q = EventQueue::new(2);
        assert!(q.poll_next(&mut cx).is_pending());
        assert!(q.push(Ok(SessionEvent::Idle)));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a push wakes the waiting reader"
        );
        assert!(q.push(Err(Error::SessionClosed { stream: "s".into() })));
        assert!(
            !q.push(Ok(SessionEvent::Idle)),
            "full: the event is refused"
        );
        assert!(matches!(
            q.poll_next(&mut cx),
            Poll::Ready(Some(Ok(SessionEvent::Idle)))
        ));
        q.end();
        assert!(
            !q.push(Ok(SessionEvent::Idle)),
            "ended: nothing more is queued"
        );
        assert!(
            matches!(q.poll_next(&mut cx), Poll::Ready(Some(Err(_)))),
            "queued events outlive the end"
        );
        assert!(matches!(q.poll_next(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_closed_queue_keeps_nothing() {
        let mut q = EventQueue::new(8);
        assert!(q.push(Ok(SessionEvent::Idle)));
        q.close();
        assert!(q.pop().is_none());
        assert!(!q.push(Ok(SessionEvent::Idle)));
    }
}
