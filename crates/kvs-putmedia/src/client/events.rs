//! What a session reports on its [`AckStream`](crate::AckStream): per-fragment acknowledgements,
//! connection changes, re-fragmenter warnings, skipped and dropped fragments.

use std::time::Duration;

use super::error::Error;
use super::recovery::ConnectCause;
use super::summary::FailedFragment;
#[cfg(doc)]
use super::{policy::OverflowPolicy, summary::SessionSummary};
use crate::ack::{Ack, AckEventType, FragmentNumber};
use crate::mkv::Warning;

/// Capacity of the event channel behind [`AckStream`](crate::AckStream). Events beyond it, when the caller does not
/// read the stream, are dropped and counted in [`SessionSummary::events_dropped`]: acks are still
/// processed, so an unread stream never stalls the session.
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
