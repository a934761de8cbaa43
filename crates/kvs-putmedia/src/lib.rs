//! Stream Matroska into Amazon Kinesis Video Streams over PutMedia.
//!
//! PutMedia has no SDK call: it is a SigV4-signed, chunked HTTP/1.1 `POST` whose body is one MKV
//! stream and whose response is a stream of JSON acknowledgements, one per fragment event. This
//! crate is that client, in three layers usable on their own:
//!
//! | module | what | I/O |
//! |---|---|---|
//! | [`ack`] | the acknowledgement types (event, fragment number, every error id with its retry policy) and an incremental, capped line decoder | none |
//! | [`mkv`] | an incremental EBML reader and the re-fragmenter that turns any MKV (ffmpeg's pipe output included) into the fragments KVS accepts: one Cluster per fragment, keyframe first, 1-20 s, under 50 MB, timecodes strictly increasing | none |
//! | root (feature `client`, default) | [`PutMediaClient`]: credentials with refresh-before-expiry, GetDataEndpoint, SigV4, the full-duplex HTTP session as a [`PutMediaSink`] (`futures::Sink<Bytes>`) and an [`AckStream`] of per-fragment outcomes matched by timecode | tokio, hyper |
//!
//! The parsers build without the `client` feature (`default-features = false`), which is how the
//! fuzz targets build them.
//!
//! # The whole pipeline
//!
//! ffmpeg's Matroska on stdout, streamed into a Kinesis video stream. The crate `ffmpeg-source`
//! in this workspace wraps the ffmpeg side (probing, presets, progress, clean errors, no orphan
//! process); here it is a plain child process to keep the example self-contained.
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use futures::{SinkExt, StreamExt};
//! use kvs_putmedia::{PutMediaClientBuilder, SessionEvent};
//! use tokio::io::AsyncReadExt;
//!
//! let client = PutMediaClientBuilder::from_env() // region, credentials, AWS_ENDPOINT_URL...
//!     .await
//!     .with_stream_name("front-door")
//!     .build()?;
//! let (mut sink, mut acks) = client.start().await?;
//! let acks = tokio::spawn(async move {
//!     while let Some(event) = acks.next().await {
//!         match event {
//!             Ok(SessionEvent::Fragment(f)) => tracing::info!(f.timecode, %f.event, ?f.latency),
//!             Ok(_) => {}
//!             Err(e) => tracing::error!(error = %e, retryable = e.is_retryable()),
//!         }
//!     }
//! });
//!
//! let mut ffmpeg = tokio::process::Command::new("ffmpeg")
//!     .args(["-nostdin", "-re", "-i", "upload.mp4", "-c:v", "libx264", "-bf", "0"])
//!     .args(["-c:a", "aac", "-f", "matroska", "pipe:1"])
//!     .stdout(std::process::Stdio::piped())
//!     .kill_on_drop(true)
//!     .spawn()?;
//! let mut stdout = ffmpeg.stdout.take().expect("piped");
//! let mut buf = vec![0; 64 * 1024];
//! loop {
//!     let n = stdout.read(&mut buf).await?;
//!     if n == 0 {
//!         break;
//!     }
//!     // Any chunking: the sink re-fragments. Backpressure: `send` waits at the buffer bound.
//!     sink.send(Bytes::copy_from_slice(&buf[..n])).await?;
//! }
//! // Waits for the last PERSISTED ack; `Err(Error::Incomplete { summary, .. })` when any
//! // fragment was refused, skipped or dropped: a lossy session never looks like a success.
//! let summary = sink.close().await?;
//! tracing::info!(persisted = summary.fragments_persisted);
//! acks.await?;
//! # Ok(()) }
//! ```
//!
//! # Pacing: live media, and recordings
//!
//! The service refuses a fragment whose producer timestamp lies in the future (4007,
//! docs/protocol.md §4.10). By default ([`Pacing::Realtime`]) a session never sends one: each
//! fragment waits until its last frame's producer time has passed. A live source (ffmpeg `-re`,
//! a camera) is never held; a file read faster than real time goes out at real time.
//!
//! A recording of known duration can go as fast as the network allows instead: give it
//! timecodes that lie in the past ([`mkv::TimecodeMode::backfill`]) and say so with
//! [`Pacing::Backfill`].
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, SystemTime};
//!
//! use bytes::Bytes;
//! use futures::SinkExt;
//! use kvs_putmedia::mkv::TimecodeMode;
//! use kvs_putmedia::{Error, Pacing, PutMediaClientBuilder};
//!
//! let recording = tokio::fs::read("recording.mkv").await?;
//! let duration = Duration::from_secs(40); // from ffprobe, or the container's Duration
//! let client = PutMediaClientBuilder::from_env()
//!     .await
//!     .with_stream_name("archive")
//!     // ABSOLUTE timecodes that end one second before now: every one lies in the past.
//!     .with_timecode_mode(TimecodeMode::backfill(duration, SystemTime::now()))
//!     .with_pacing(Pacing::Backfill)
//!     .build()?;
//! let (mut sink, _acks) = client.start().await?;
//! for chunk in recording.chunks(64 * 1024) {
//!     sink.send(Bytes::copy_from_slice(chunk)).await?;
//! }
//! match sink.close().await {
//!     Ok(summary) => tracing::info!(persisted = summary.fragments_persisted),
//!     Err(Error::Incomplete { summary, .. }) => {
//!         for f in &summary.fragments_failed {
//!             tracing::error!(timecode = ?f.timecode, error = %f.error.id, "refused");
//!         }
//!         return Err("the recording was not stored whole".into());
//!     }
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod ack;
pub mod mkv;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::*;
