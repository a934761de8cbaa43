//! ffmpeg as a clean, bounded, cancellable stream of Matroska bytes for Kinesis Video Streams.
//!
//! A builder over `tokio::process` (no FFI): pick an [`Input`] (a file, an `https://` URL such as
//! a presigned S3 GET URL, or an `AsyncRead` fed to stdin), a [`Profile`] (the Node sample's
//! settings done right, stream copy, or automatic), and a [`Pacing`]; [`FfmpegSource::spawn`]
//! probes the input with ffprobe, decides, and returns an [`FfmpegJob`]: a
//! `Stream<Item = Result<Bytes, Error>>` of MKV bytes with progress, cancel and wait.
//!
//! ffmpeg's Matroska is *not* what KVS accepts as is (reference §5: "do not forward ffmpeg's
//! bytes unchanged"); feed it to `kvs_putmedia::mkv::Refragmenter`.
//!
//! ```no_run
//! use ffmpeg_source::{FfmpegSource, Input, Pacing, Profile};
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), ffmpeg_source::Error> {
//! let mut job = FfmpegSource::builder(Input::path("upload.mp4"))
//!     .profile(Profile::auto())
//!     .pacing(Pacing::Fast)
//!     .from_env()
//!     .build()?
//!     .spawn()
//!     .await?;
//! tracing::info!(decision = %job.decision(), "ffmpeg started");
//! let progress = job.progress();
//! while let Some(chunk) = job.next().await {
//!     let chunk = chunk?; // MKV bytes: push them into the re-fragmenter
//!     let _ = (chunk, progress.borrow().fraction());
//! }
//! # Ok(()) }
//! ```
#![forbid(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod input;
mod job;
mod probe;
mod profile;
mod progress;

pub use error::{Error, Result, StderrTail, Tool};
pub use input::{Input, UrlInput};
pub use job::{CancelHandle, FfmpegJob, FfmpegSource, FfmpegSourceBuilder, Plan, Summary};
pub use probe::{
    KEYFRAME_SCAN_WINDOW, KeyframeStats, MAX_FRAGMENT_DURATION, Probe, StreamInfo, StreamKind,
    probe,
};
pub use profile::{
    AudioChannels, Decision, EncodeSettings, EncodeSettingsBuilder, Mode, Pacing, Profile, Size,
    X264Preset, X264Tune, copy_blockers,
};
pub use progress::{MAX_LINE_LEN, Progress};
