//! ffmpeg as a clean, bounded, cancellable stream of Matroska bytes for Kinesis Video Streams.
//!
//! A builder over `tokio::process` (no FFI): pick an [`Input`] (a file, an `https://` URL such as
//! a presigned S3 GET URL, or an `AsyncRead` fed to stdin), a [`Profile`] (the Node sample's
//! settings done right, stream copy, or automatic), and a [`Pacing`]; [`FfmpegSource::spawn`]
//! probes the input with ffprobe, decides, and returns an [`FfmpegJob`]: a
//! `Stream<Item = Result<Bytes, Error>>` of MKV bytes with progress, cancel and wait.
//!
//! ffmpeg's Matroska is *not* what KVS accepts as is (docs/protocol.md §5: "do not forward ffmpeg's
//! bytes unchanged"); feed it to `kvs_putmedia::mkv::Refragmenter`.
//!
//! ```no_run
//! use ffmpeg_source::{FfmpegSource, Input, Pacing, Profile};
//! use futures::StreamExt;
//!
//! # async fn run() -> Result<(), ffmpeg_source::Error> {
//! let mut job = FfmpegSource::builder(Input::path("upload.mp4"))
//!     .with_profile(Profile::auto())
//!     .with_pacing(Pacing::Fast)
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

mod command;
mod error;
mod input;
mod job;
mod parse;
mod probe;
mod profile;
mod progress;
mod source;

pub use command::Plan;
pub use error::{Error, Result, StderrTail, Tool};
pub use input::{Input, UrlInput};
pub use job::{CancelHandle, FfmpegJob, Summary};
pub use parse::ParseEnumError;
pub use probe::{
    KEYFRAME_SCAN_WINDOW, KeyframeStats, MAX_FRAGMENT_DURATION, Probe, StreamInfo, StreamKind,
    probe,
};
pub use profile::{
    AudioChannels, Decision, EncodeSettings, EncodeSettingsBuilder, Mode, Pacing, Profile, Size,
    X264Preset, X264Tune, copy_blockers,
};
pub use progress::{MAX_LINE_LEN, Progress};
pub use source::{FfmpegSource, FfmpegSourceBuilder};

/// Reads smaller than this start a new block instead of filling the rest of the current one.
const MIN_READ: usize = 4096;

/// Prepares `buf` (empty, after `split()` handed the last read out) for the next read of a
/// pipe: the read goes into what is left of the current block, and a new `block`-byte one is
/// allocated only when under 4 KiB are left. Chunks handed out are slices of the block, so a
/// fresh block per read would pin a whole `block` allocation behind every small pipe read for
/// as long as the consumer keeps the chunk (a PutMedia session keeps fragments until they are
/// acknowledged): up to 16x the media in memory at real-time pace.
pub fn read_block(buf: &mut bytes::BytesMut, block: usize) {
    if buf.capacity() - buf.len() < MIN_READ {
        *buf = bytes::BytesMut::with_capacity(block.max(MIN_READ));
    }
}

#[cfg(test)]
mod read_block_tests {
    use bytes::BufMut;

    #[test]
    fn small_reads_share_one_block_and_a_nearly_full_block_is_replaced() {
        let mut buf = bytes::BytesMut::new();
        let mut chunks = Vec::new();
        for _ in 0..10 {
            super::read_block(&mut buf, 64 * 1024);
            buf.put_slice(&[7; 1000]);
            chunks.push(buf.split().freeze());
        }
        // Ten 1000-byte reads are consecutive slices of one allocation.
        for w in chunks.windows(2) {
            assert_eq!(w[0].as_ptr().wrapping_add(1000), w[1].as_ptr());
        }
        // Under 4 KiB left: the next read gets a new block.
        buf.put_slice(&vec![0; buf.capacity() - 3000]);
        let _full = buf.split();
        super::read_block(&mut buf, 64 * 1024);
        assert!(buf.capacity() >= 64 * 1024);
    }
}
