//! The PutMedia client (feature `client`): SigV4-signed HTTP/1.1 requests streaming MKV into a
//! Kinesis Video stream, with the acknowledgements matched back to fragments.
//!
//! [`PutMediaClient`] is built once per process (per account and region) and holds what its
//! sessions share: the HTTP connector and TLS configuration, the SDK client, the credentials
//! cache and the per-stream endpoint cache. [`PutMediaClient::start_session`] (with
//! [`SessionOptions`]: the stream and per-session choices) or [`PutMediaClient::start`] (the
//! stream set on the builder) opens a session and returns a [`PutMediaSink`] (a
//! `futures::Sink<Bytes>` of MKV bytes in any chunking, re-fragmented for KVS) and an
//! [`AckStream`] (a `futures::Stream` of [`SessionEvent`]s: acks matched to fragments by
//! timecode, with fragment number, size and latency).
//!
//! ```no_run
//! use bytes::Bytes;
//! use futures::{SinkExt, StreamExt};
//! use kvs_putmedia::{PutMediaClient, PutMediaClientBuilder, SessionEvent};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Region, credentials and endpoint overrides from the AWS default chain.
//! let client = PutMediaClientBuilder::from_env()
//!     .await
//!     .with_stream_name("my-stream")
//!     .build()?;
//! let (mut sink, mut acks) = client.start().await?;
//!
//! // Report acks while media is sent (full duplex).
//! let reporter = tokio::spawn(async move {
//!     while let Some(event) = acks.next().await {
//!         match event {
//!             Ok(SessionEvent::Fragment(f)) => {
//!                 tracing::info!(timecode = f.timecode, event = %f.event, latency = ?f.latency)
//!             }
//!             Ok(other) => tracing::debug!(?other),
//!             Err(e) => tracing::error!(error = %e, retryable = e.is_retryable()),
//!         }
//!     }
//! });
//!
//! // MKV bytes from anywhere: a file, ffmpeg's stdout, S3. Read from a file this goes out at
//! // real time (the default `Pacing::Realtime`: no producer timestamp in the future); see
//! // `Pacing::Backfill` with `TimecodeMode::backfill` for recordings as fast as the network.
//! let mkv = tokio::fs::read("clip.mkv").await?;
//! for chunk in mkv.chunks(64 * 1024) {
//!     sink.send(Bytes::copy_from_slice(chunk)).await?;
//! }
//! // `Err(Error::Incomplete { summary, .. })` when a fragment was refused, skipped or dropped.
//! let summary = sink.close().await?;
//! tracing::info!(persisted = summary.fragments_persisted, bytes = summary.bytes_sent);
//! reporter.await?;
//! # Ok(()) }
//! ```

mod ack_reader;
mod api;
mod body;
mod config;
mod credentials;
mod driver;
mod error;
mod events;
mod ledger;
mod parse;
mod policy;
mod recovery;
mod session;
mod sign;
mod sink;
mod summary;
mod transport;

pub use api::{PutMediaClient, STREAM_CACHE_CAPACITY};
pub use body::{BodyBuf, ChannelBody};
pub use config::{
    CompletionAck, DEFAULT_BUFFER_BOUND, DEFAULT_BUFFER_DURATION, DEFAULT_PAUSE_FLUSH,
    MIN_BUFFER_BOUND, PutMediaClientBuilder, SessionOptions, StreamId, Timeouts,
};
pub use credentials::{Clock, SharedClock, SystemClock};
pub use error::{BoxError, Error, Result, TimeoutPhase};
pub use events::{DroppedFragment, EVENT_CAPACITY, FragmentAck, SessionEvent};
pub use parse::ParsePolicyError;
pub use policy::{OverflowPolicy, Pacing, RetryPolicy, Rotation};
pub use recovery::ConnectCause;
pub use sign::{PayloadHash, SIGNING_SERVICE};
pub use sink::{AckStream, PutMediaSink};
pub use summary::{FailedFragment, LatencyStats, SessionSummary};
pub use transport::ProxySettings;
