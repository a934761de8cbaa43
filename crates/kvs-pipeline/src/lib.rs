//! The layer services build on: one pipeline from a media source into a Kinesis Video Streams
//! PutMedia session, and a queue-driven worker that streams S3 uploads with it.
//!
//! | module | what |
//! |---|---|
//! | [`Pipeline`] | any [`MediaSource`] (an `ffmpeg_source::FfmpegJob`, or any stream of MKV bytes through [`ByteStream`]) into one session: progress, cancellation, the final [`Outcome`] with a [`FailureKind`] |
//! | [`Delivery`] | what a session delivered, flat: the fields every report (`--json`, a job view) prints, and a `Display` for people |
//! | [`timing`] | the one rule that picks producer timestamps: live, backfill, or anchored to the object (deterministic, for exactly-once resume) |
//! | [`resume`] | what a stream already holds for an object's time range (`ListFragments`), so a second attempt sends only the rest |
//! | [`readback`] | reading a stream back (`ListFragments`, `GetMediaForFragmentList`) and checking it: keyframe-first fragments, no gap or overlap |
//! | [`object`] | S3 objects: the request and event bodies, HEAD, presigned URLs for ffmpeg |
//! | [`streams`] | routing an object to a stream (name or template, validated), preparing the stream, opening sessions (one place) |
//! | [`service`] | the `s3-to-kvs` HTTP API: `processObject` (streams, or enqueues in worker mode), health, jobs |
//! | [`emf`] | CloudWatch Embedded Metric Format lines for the worker's metrics |
//! | [`worker`] | SQS worker: routing objects to streams, one object per stream at a time, visibility, dead letters, drain |
//!
//! `kvs-putmedia` cuts and sends; `ffmpeg-source` reads and transcodes; this crate joins them, so
//! the binaries hold only flags, wiring and output.
#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod delivery;
pub mod emf;
pub mod object;
mod pipeline;
pub mod readback;
pub mod resume;
pub mod service;
mod source;
pub mod streams;
pub mod timing;
pub mod worker;

pub use delivery::{Delivery, RefusedFragment};
pub use pipeline::{FailureKind, Outcome, Pipeline, PipelineError, Progress};
pub use source::{BoxError, ByteStream, MediaSource, SourceError};
pub use timing::Timing;
