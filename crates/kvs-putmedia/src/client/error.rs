//! The client's error type.

use std::sync::Arc;
use std::time::Duration;

use super::summary::SessionSummary;

/// Result alias used by the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed, shareable error source (shareable so a session failure can be reported to both the
/// sink and the acknowledgement stream).
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The phase a [`Error::Timeout`] happened in; each has its own configurable limit
/// (see [`Timeouts`](crate::Timeouts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the TCP (and TLS) connection to the data endpoint.
    Connect,
    /// Waiting for the PutMedia response status and headers.
    ResponseHead,
    /// Waiting for the first acknowledgement after the first media byte was sent.
    FirstAck,
    /// No acknowledgement of any kind (not even IDLE) for too long; docs/protocol.md §6 "Staleness".
    Staleness,
    /// Waiting, after the body ended, for the last fragment to be acknowledged.
    FinalDrain,
    /// A control-plane call (GetDataEndpoint, STS).
    ControlPlane,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::ResponseHead => "response head",
            Self::FirstAck => "first acknowledgement",
            Self::Staleness => "acknowledgement staleness",
            Self::FinalDrain => "final drain",
            Self::ControlPlane => "control plane call",
        })
    }
}

/// Every way the PutMedia client can fail.
///
/// Messages name the stream, the fragment timecode or the byte offset when known, which is what a
/// person needs to act. [`Error::is_retryable`] says whether reconnecting and resending can help.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to a builder is invalid.
    #[error("invalid PutMedia client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// Credentials could not be obtained, or they expire too soon to start a session.
    #[error("credentials unavailable for stream {stream}: {reason}")]
    Credentials {
        /// The stream the session was for.
        stream: String,
        /// What went wrong.
        reason: String,
        /// Whether asking again may succeed: false when no provider is configured, the
        /// configuration is wrong, or STS refused the request (a bad web-identity token, a role
        /// that may not be assumed). Such errors end a session at once.
        retryable: bool,
        /// The provider's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// The service refused the credentials or signature (HTTP 401/403, `NotAuthorizedException`,
    /// expired signature, invalid token). Raised before any media is sent.
    #[error(
        "not authorized to put media on stream {stream}: HTTP {status} {error_type}: {message} (request id {request_id})"
    )]
    Auth {
        /// The stream.
        stream: String,
        /// The HTTP status (401 or 403), or 400 when the control plane reported it.
        status: u16,
        /// The AWS error type (`x-amzn-ErrorType`), empty when absent.
        error_type: String,
        /// The service's message.
        message: String,
        /// The AWS request id, empty when absent.
        request_id: String,
    },

    /// The stream does not exist (`ResourceNotFoundException`, HTTP 404).
    #[error("stream {stream} not found: {message} (request id {request_id})")]
    StreamNotFound {
        /// The stream.
        stream: String,
        /// The service's message.
        message: String,
        /// The AWS request id, empty when absent.
        request_id: String,
    },

    /// Too many requests (`ClientLimitExceededException`); back off and retry.
    #[error("throttled on stream {stream}: {message} (request id {request_id})")]
    Throttled {
        /// The stream.
        stream: String,
        /// The service's message.
        message: String,
        /// The AWS request id, empty when absent.
        request_id: String,
    },

    /// Another PutMedia connection is open on the stream (`ConnectionLimitExceededException`;
    /// docs/protocol.md §3: one connection per stream).
    #[error(
        "another connection is already putting media on stream {stream}: {message} (request id {request_id})"
    )]
    ConnectionLimit {
        /// The stream.
        stream: String,
        /// The service's message.
        message: String,
        /// The AWS request id, empty when absent.
        request_id: String,
    },

    /// Any other HTTP error status from the data or control plane.
    #[error("HTTP {status} {error_type} on stream {stream}: {message} (request id {request_id})")]
    Http {
        /// The stream.
        stream: String,
        /// The HTTP status.
        status: u16,
        /// The AWS error type (`x-amzn-ErrorType`), empty when absent.
        error_type: String,
        /// The service's message.
        message: String,
        /// The AWS request id, empty when absent.
        request_id: String,
    },

    /// The service sent an ERROR acknowledgement; it ends the connection after one (docs/protocol.md §2).
    #[error(
        "stream {stream}: fragment {} (number {}) rejected with error {code} ({})",
        fragment_timecode.map_or_else(|| "?".to_owned(), |t| t.to_string()),
        fragment_number.as_deref().unwrap_or("?"),
        id.id()
    )]
    Ack {
        /// The stream.
        stream: String,
        /// The numeric error id (4000-5001, docs/protocol.md §2 table).
        id: crate::ack::AckErrorId,
        /// The symbolic error code as sent (`INVALID_MKV_DATA`...).
        code: String,
        /// The fragment's cluster timecode, when the ack carried one.
        fragment_timecode: Option<u64>,
        /// The fragment number, when the ack carried one.
        fragment_number: Option<String>,
    },

    /// A phase took longer than its configured limit.
    #[error("stream {stream}: timed out in {phase} after {waited:?}")]
    Timeout {
        /// The stream.
        stream: String,
        /// What was being waited for.
        phase: TimeoutPhase,
        /// How long was waited.
        waited: Duration,
    },

    /// The MKV given to the sink cannot be streamed.
    #[error("stream {stream}: invalid media at input byte offset {offset}: {reason}")]
    InvalidMedia {
        /// The stream.
        stream: String,
        /// Offset in the caller's input bytes, when known.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The acknowledgement stream could not be decoded.
    #[error("stream {stream}: undecodable acknowledgement stream: {reason}")]
    AckStream {
        /// The stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },

    /// The connection failed (DNS, TCP, TLS, HTTP framing, reset by the peer).
    #[error("stream {stream}: transport error while {during}")]
    Transport {
        /// The stream.
        stream: String,
        /// What the client was doing.
        during: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// A control-plane call (GetDataEndpoint, AssumeRole) failed for a reason not covered above.
    #[error("stream {stream}: {operation} failed: {message}")]
    ControlPlane {
        /// The stream.
        stream: String,
        /// The operation (`GetDataEndpoint`, `AssumeRole`).
        operation: &'static str,
        /// The error as reported by the SDK.
        message: String,
        /// The SDK error.
        #[source]
        source: Option<BoxError>,
    },

    /// The session ended without delivering every fragment: some were refused for good and
    /// skipped (4007 for a producer timestamp in the future, 4006...), dropped from a full
    /// replay buffer, or are still owed. Returned by
    /// [`PutMediaSink::close`](crate::PutMediaSink::close) in place of the summary, which it
    /// carries, so a lossy session never looks like a success.
    #[error(
        "stream {stream}: {} of {} fragments delivered ({} refused and skipped, {} dropped from a full replay buffer, {} undelivered in all)",
        summary.fragments_delivered,
        summary.fragments,
        summary.fragments_skipped,
        summary.fragments_dropped,
        summary.undelivered()
    )]
    Incomplete {
        /// The stream.
        stream: String,
        /// What the session did; [`SessionSummary::fragments_failed`] names the refused fragments.
        summary: Box<SessionSummary>,
    },

    /// The session already ended (closed, or failed earlier with the error reported then).
    #[error("stream {stream}: the session is closed")]
    SessionClosed {
        /// The stream.
        stream: String,
    },
}

impl Error {
    /// Whether reconnecting and resending can help (docs/protocol.md §2 "official producer on replay"
    /// and the HTTP error list).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config { .. }
            | Self::Auth { .. }
            | Self::StreamNotFound { .. }
            | Self::InvalidMedia { .. }
            | Self::SessionClosed { .. }
            // The session is over; what was refused would be refused again.
            | Self::Incomplete { .. } => false,
            Self::Credentials { retryable, .. } => *retryable,
            Self::Throttled { .. } | Self::ConnectionLimit { .. } => true,
            // docs/protocol.md §2: InvalidEndpointException means "call GetDataEndpoint again".
            Self::Http {
                status, error_type, ..
            } => *status >= 500 || *status == 429 || error_type == "InvalidEndpointException",
            Self::Ack { id, .. } => id.is_retryable(),
            Self::Timeout { .. } | Self::Transport { .. } | Self::AckStream { .. } => true,
            Self::ControlPlane { .. } => true,
        }
    }

    /// The stream this error is about (empty for configuration errors).
    pub fn stream(&self) -> &str {
        match self {
            Self::Config { .. } => "",
            Self::Credentials { stream, .. }
            | Self::Auth { stream, .. }
            | Self::StreamNotFound { stream, .. }
            | Self::Throttled { stream, .. }
            | Self::ConnectionLimit { stream, .. }
            | Self::Http { stream, .. }
            | Self::Ack { stream, .. }
            | Self::Timeout { stream, .. }
            | Self::InvalidMedia { stream, .. }
            | Self::AckStream { stream, .. }
            | Self::Transport { stream, .. }
            | Self::ControlPlane { stream, .. }
            | Self::Incomplete { stream, .. }
            | Self::SessionClosed { stream } => stream,
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }

    /// Maps an HTTP error answer (status, `x-amzn-ErrorType`, JSON `message`, request id) to
    /// the semantic variant (docs/protocol.md §2 "HTTP-level errors").
    pub(crate) fn from_http(
        stream: &str,
        status: u16,
        error_type: &str,
        message: String,
        request_id: String,
    ) -> Self {
        // The header may carry a suffix like `:http://internal.amazon.com/...`.
        let short = error_type.split(':').next().unwrap_or("").trim();
        let stream = stream.to_owned();
        match (status, short) {
            (_, "ResourceNotFoundException") | (404, _) => Self::StreamNotFound {
                stream,
                message,
                request_id,
            },
            (_, "ClientLimitExceededException") => Self::Throttled {
                stream,
                message,
                request_id,
            },
            (_, "ConnectionLimitExceededException") => Self::ConnectionLimit {
                stream,
                message,
                request_id,
            },
            (
                _,
                "NotAuthorizedException" | "AccessDeniedException" | "UnrecognizedClientException",
            )
            | (401 | 403, _) => Self::Auth {
                stream,
                status,
                error_type: short.to_owned(),
                message,
                request_id,
            },
            _ => Self::Http {
                stream,
                status,
                error_type: short.to_owned(),
                message,
                request_id,
            },
        }
    }
}
