//! What the pipeline reads: MKV bytes, and what the source knows about them.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use ffmpeg_source::FfmpegJob;
use futures::{Stream, StreamExt};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A source failed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SourceError {
    /// True when the input itself is at fault (not media, missing, unusable codec): retrying
    /// cannot help.
    pub bad_input: bool,
    /// What went wrong.
    #[source]
    pub error: BoxError,
}

/// A source of Matroska bytes for [`Pipeline`](crate::Pipeline): an [`FfmpegJob`], or any
/// `Stream<Item = Result<Bytes, E>>` wrapped in [`ByteStream`].
pub trait MediaSource: Send {
    /// The next chunk (any chunking), `None` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Option<Result<Bytes, SourceError>>> + Send;
    /// The media's duration, when known before streaming (it picks the backfill timecodes).
    fn duration(&self) -> Option<Duration> {
        None
    }
    /// Media time produced so far, for progress.
    fn media_time(&self) -> Option<Duration> {
        None
    }
    /// Stop producing: what was produced is still sent, then the stream ends.
    fn stop(&mut self) {}
}

impl MediaSource for FfmpegJob {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>> {
        self.next().await.map(|r| {
            r.map_err(|e| SourceError {
                bad_input: e.is_input_error(),
                error: Box::new(e),
            })
        })
    }

    fn duration(&self) -> Option<Duration> {
        self.progress().borrow().duration
    }

    fn media_time(&self) -> Option<Duration> {
        Some(self.progress().borrow().out_time)
    }

    fn stop(&mut self) {
        self.cancel();
    }
}

/// Any stream of MKV bytes as a [`MediaSource`]: a file, stdin, a socket. Its errors are not the
/// input's fault (I/O), and stopping ends it at once.
#[derive(Debug)]
pub struct ByteStream<S> {
    inner: S,
    duration: Option<Duration>,
    stopped: bool,
}

impl<S> ByteStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ByteStream {
            inner,
            duration: None,
            stopped: false,
        }
    }

    /// Declares the media's duration (picks backfill timecodes).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }
}

impl<S, E> MediaSource for ByteStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Into<BoxError>,
{
    async fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>> {
        if self.stopped {
            return None;
        }
        self.inner.next().await.map(|r| {
            r.map_err(|e| SourceError {
                bad_input: false,
                error: e.into(),
            })
        })
    }

    fn duration(&self) -> Option<Duration> {
        self.duration
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}
