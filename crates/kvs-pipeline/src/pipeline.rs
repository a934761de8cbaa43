//! [`Pipeline`]: a [`MediaSource`] into a PutMedia session, with progress, cancellation and the
//! final [`Outcome`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter, TimecodeMode};
use kvs_putmedia::{AckStream, PutMediaSink, SessionEvent, SessionSummary};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::source::{MediaSource, SourceError};
use crate::timing::Timing;

/// Live progress of a [`Pipeline`]: the session's own metrics (a snapshot taken at each
/// event, never counted by hand) and the source's media time.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Media time the source produced so far.
    pub media_time: Option<Duration>,
    /// The media's duration, when known.
    pub duration: Option<Duration>,
    /// Bytes read from the source.
    pub bytes_in: u64,
    /// The session's metrics.
    pub session: SessionSummary,
    /// The first fragment number the service assigned.
    pub first_fragment_number: Option<String>,
    /// Latency of the latest acknowledgement that had one.
    pub last_latency: Option<Duration>,
    /// Fragments not sent because the stream already holds them (resume).
    pub already_persisted: u64,
    /// The timecode mode the session was opened with.
    pub timecode_mode: Option<TimecodeMode>,
}

/// How a failure should be treated: an exit code, an HTTP status, retry or dead-letter. Every
/// error a pipeline's wiring meets converts into one (`FailureKind::from(&e)`): the pipeline's,
/// the session's, ffmpeg's, an S3 object's and a stream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The input is not usable media: retrying cannot help.
    BadInput,
    /// The configuration is invalid.
    Config,
    /// Credentials, signature or permissions refused.
    Auth,
    /// The stream does not exist.
    StreamNotFound,
    /// Some fragments were refused, dropped or not acknowledged.
    Partial,
    /// Stopped by the caller.
    Cancelled,
    /// Network, service or process failure: retrying may help.
    Transient,
}

/// Why a pipeline did not deliver every fragment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source failed.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The session failed (opening, sending or closing).
    #[error("{0}")]
    Session(kvs_putmedia::Error),
    /// Stopped by the cancellation token; what was sent was acknowledged.
    #[error("stopped before the end of the input; what was sent was acknowledged")]
    Cancelled,
    /// The source ended without a single fragment.
    #[error("no fragment was sent: the input holds no usable media")]
    NoMedia,
    /// The session ended with fragments refused, dropped or unacknowledged.
    #[error(
        "{delivered} of {fragments} fragments delivered; refused: [{refused}]; dropped: {dropped}{}",
        last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    Incomplete {
        /// Fragments with their completion ack.
        delivered: u64,
        /// Fragments cut from the input.
        fragments: u64,
        /// The refusals, `CODE (id)` each.
        refused: String,
        /// Fragments dropped from a full replay buffer.
        dropped: u64,
        /// The last error the session reported.
        last_error: Option<kvs_putmedia::Error>,
    },
}

impl PipelineError {
    /// How to treat the failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            PipelineError::Source(e) if e.bad_input => FailureKind::BadInput,
            PipelineError::Source(_) => FailureKind::Transient,
            PipelineError::Session(e) => e.into(),
            PipelineError::Cancelled => FailureKind::Cancelled,
            PipelineError::NoMedia => FailureKind::BadInput,
            PipelineError::Incomplete { .. } => FailureKind::Partial,
        }
    }
}

impl From<&kvs_putmedia::Error> for FailureKind {
    fn from(e: &kvs_putmedia::Error) -> FailureKind {
        use kvs_putmedia::Error as E;
        match e {
            E::Config { .. } => FailureKind::Config,
            E::Auth { .. } | E::Credentials { .. } => FailureKind::Auth,
            E::StreamNotFound { .. } => FailureKind::StreamNotFound,
            E::InvalidMedia { .. } => FailureKind::BadInput,
            E::Ack { .. } | E::Incomplete { .. } => FailureKind::Partial,
            _ => FailureKind::Transient,
        }
    }
}

impl From<&ffmpeg_source::Error> for FailureKind {
    fn from(e: &ffmpeg_source::Error) -> FailureKind {
        match e {
            ffmpeg_source::Error::InvalidConfig { .. } => FailureKind::Config,
            e if e.is_input_error() => FailureKind::BadInput,
            _ => FailureKind::Transient,
        }
    }
}

impl From<&crate::object::ObjectError> for FailureKind {
    fn from(e: &crate::object::ObjectError) -> FailureKind {
        use crate::object::ObjectError as E;
        match e {
            E::NotFound { .. } => FailureKind::BadInput,
            E::Other {
                status: Some(401 | 403),
                ..
            } => FailureKind::Auth,
            E::Other { .. } => FailureKind::Transient,
        }
    }
}

impl From<&crate::streams::StreamError> for FailureKind {
    fn from(e: &crate::streams::StreamError) -> FailureKind {
        use crate::streams::StreamError as E;
        match e {
            E::NotFound(_) => FailureKind::StreamNotFound,
            E::Auth(_) => FailureKind::Auth,
            _ => FailureKind::Transient,
        }
    }
}

/// What a [`Pipeline`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// `Ok` only when every fragment cut from the input was delivered (or was already in the
    /// stream, on resume).
    pub result: Result<(), PipelineError>,
    /// The session's final metrics (empty when no session was opened).
    pub summary: SessionSummary,
    /// The first fragment number the service assigned.
    pub first_fragment_number: Option<String>,
    /// Fragments not sent because the stream already held them.
    pub already_persisted: u64,
    /// The timecode mode the session was opened with.
    pub timecode_mode: Option<TimecodeMode>,
}

/// Runs a [`MediaSource`] into one PutMedia session.
///
/// The session is opened by the caller's `open` function (so any client, stream or session
/// option works) with the timecode mode chosen by the [`Timing`] rule. With
/// [`with_skip`](Self::with_skip) (resume after a crash) the input is cut into fragments here,
/// the ones the stream already holds are left out, and the session opens only when there is a
/// fragment to send.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use ffmpeg_source::{FfmpegSource, Input, Pacing};
/// use kvs_pipeline::{Pipeline, Timing};
/// use kvs_putmedia::PutMediaClientBuilder;
///
/// let builder = PutMediaClientBuilder::from_env().await.with_stream_name("front-door");
/// let job = FfmpegSource::builder(Input::path("upload.mp4")).build()?.spawn().await?;
/// let outcome = Pipeline::new(job)
///     .with_timing(Timing::for_pace(Pacing::Fast, None))
///     .run(|mode| async move { builder.with_timecode_mode(mode).build()?.start().await })
///     .await;
/// outcome.result?;
/// tracing::info!(persisted = outcome.summary.fragments_persisted);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipeline<S> {
    source: S,
    timing: Timing,
    cancel: CancellationToken,
    progress: watch::Sender<Progress>,
    skip: Option<BTreeSet<u64>>,
}

/// How long the acknowledgement reader may take to end after the session closed.
const ACK_READER_GRACE: Duration = Duration::from_secs(10);

enum Ended {
    Done,
    Cancelled,
    Failed(PipelineError),
}

impl<S: MediaSource> Pipeline<S> {
    /// A pipeline reading `source`, with [`Timing::Live`] until told otherwise.
    pub fn new(source: S) -> Self {
        let duration = source.duration();
        Pipeline {
            source,
            timing: Timing::Live,
            cancel: CancellationToken::new(),
            progress: watch::Sender::new(Progress {
                duration,
                ..Progress::default()
            }),
            skip: None,
        }
    }

    /// The timecode rule.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Stops the source when `token` is cancelled; what was sent is still acknowledged.
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Resume: leave out the fragments whose timecode (epoch ms) is in `persisted`. Needs
    /// ABSOLUTE timecodes ([`Timing::Anchored`] in practice); ignored with [`Timing::Live`].
    pub fn with_skip(mut self, persisted: BTreeSet<u64>) -> Self {
        self.skip = Some(persisted);
        self
    }

    /// Live progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Runs to the end of the source, a failure or cancellation; then closes the session
    /// (waiting for the acknowledgements) and reports.
    pub async fn run<F, Fut>(mut self, open: F) -> Outcome
    where
        F: FnOnce(TimecodeMode) -> Fut,
        Fut: Future<Output = kvs_putmedia::Result<(PutMediaSink, AckStream)>>,
    {
        let mode = self.timing.mode(self.source.duration(), SystemTime::now());
        let mut session = Session {
            open: Some(open),
            sink: None,
            reader: None,
            progress: self.progress.clone(),
        };
        let mut resume = match (&self.skip, mode) {
            (Some(skip), TimecodeMode::Absolute { .. }) => {
                let config = RefragmentConfig::builder()
                    .with_timecode_mode(mode)
                    .build()
                    .expect("the default re-fragmenter settings with a timecode mode are valid");
                Some(Resume {
                    cutter: Refragmenter::new(config),
                    skip: skip.clone(),
                    header: None,
                    skipped: 0,
                })
            }
            _ => None,
        };
        let ended = match resume.as_mut() {
            Some(r) => self.pump_resume(r, &mut session).await,
            None => match session.open(mode).await {
                Ok(()) => self.pump(&mut session).await,
                Err(e) => Ended::Failed(e),
            },
        };
        let already_persisted = resume.as_ref().map_or(0, |r| r.skipped);
        session.finish(ended, already_persisted).await
    }

    async fn next(&mut self) -> Result<Option<Bytes>, Ended> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => {
                self.source.stop();
                Err(Ended::Cancelled)
            }
            chunk = self.source.next_chunk() => match chunk {
                None => Ok(None),
                Some(Err(e)) => Err(Ended::Failed(e.into())),
                Some(Ok(bytes)) => {
                    let media_time = self.source.media_time();
                    self.progress.send_modify(|p| {
                        p.bytes_in += bytes.len() as u64;
                        p.media_time = media_time.or(p.media_time);
                    });
                    Ok(Some(bytes))
                }
            }
        }
    }

    async fn pump<F, Fut>(&mut self, session: &mut Session<F>) -> Ended
    where
        F: FnOnce(TimecodeMode) -> Fut,
        Fut: Future<Output = kvs_putmedia::Result<(PutMediaSink, AckStream)>>,
    {
        loop {
            match self.next().await {
                Ok(None) => return Ended::Done,
                Ok(Some(bytes)) => {
                    if let Err(e) = session.send(bytes).await {
                        return Ended::Failed(e);
                    }
                }
                Err(ended) => return ended,
            }
        }
    }

    async fn pump_resume<F, Fut>(&mut self, r: &mut Resume, session: &mut Session<F>) -> Ended
    where
        F: FnOnce(TimecodeMode) -> Fut,
        Fut: Future<Output = kvs_putmedia::Result<(PutMediaSink, AckStream)>>,
    {
        loop {
            let (pushed, done) = match self.next().await {
                Ok(Some(bytes)) => (r.cutter.push(bytes), false),
                Ok(None) => (r.cutter.finish(), true),
                Err(ended) => return ended,
            };
            if let Err(e) = pushed {
                return Ended::Failed(PipelineError::Source(SourceError {
                    bad_input: true,
                    error: Box::new(e),
                }));
            }
            while let Some(out) = r.cutter.next_output() {
                if let Err(e) = r.forward(out, session).await {
                    return Ended::Failed(e);
                }
            }
            self.progress
                .send_modify(|p| p.already_persisted = r.skipped);
            if done {
                return Ended::Done;
            }
        }
    }
}

/// The fragments cut here on resume, and which ones the stream already holds.
struct Resume {
    cutter: Refragmenter,
    skip: BTreeSet<u64>,
    header: Option<Bytes>,
    skipped: u64,
}

impl Resume {
    async fn forward<F, Fut>(
        &mut self,
        out: Output,
        session: &mut Session<F>,
    ) -> Result<(), PipelineError>
    where
        F: FnOnce(TimecodeMode) -> Fut,
        Fut: Future<Output = kvs_putmedia::Result<(PutMediaSink, AckStream)>>,
    {
        match out {
            Output::Header(h) => {
                self.header = Some(h.bytes().clone());
                Ok(())
            }
            Output::Fragment(f) => {
                let scale = self
                    .cutter
                    .header()
                    .map_or(1_000_000, |h| h.timecode_scale_ns());
                let ms = u64::try_from(u128::from(f.timecode()) * u128::from(scale) / 1_000_000)
                    .unwrap_or(u64::MAX);
                if self.skip.contains(&ms) {
                    self.skipped += 1;
                    tracing::debug!(timecode = ms, "fragment already in the stream; not sent");
                    return Ok(());
                }
                if session.sink.is_none() {
                    // The session re-cuts what it gets; starting it at this fragment's own
                    // timecode keeps every timecode as cut here.
                    tracing::info!(
                        resume_at = ms,
                        already_persisted = self.skipped,
                        "resuming after the fragments the stream holds"
                    );
                    session
                        .open(TimecodeMode::Absolute {
                            origin_epoch_ms: ms,
                        })
                        .await?;
                    if let Some(h) = &self.header {
                        session.send(h.clone()).await?;
                    }
                }
                session.send(f.to_bytes()).await
            }
            Output::Warning(w) => {
                tracing::debug!(warning = ?w, "re-fragmenter warning (resume cut)");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

type Reader = tokio::task::JoinHandle<(Option<kvs_putmedia::Error>, SessionSummary)>;

struct Session<F> {
    open: Option<F>,
    sink: Option<PutMediaSink>,
    reader: Option<Reader>,
    progress: watch::Sender<Progress>,
}

impl<F, Fut> Session<F>
where
    F: FnOnce(TimecodeMode) -> Fut,
    Fut: Future<Output = kvs_putmedia::Result<(PutMediaSink, AckStream)>>,
{
    async fn open(&mut self, mode: TimecodeMode) -> Result<(), PipelineError> {
        let open = self.open.take().expect("a session is opened once");
        let (sink, acks) = open(mode).await.map_err(PipelineError::Session)?;
        self.progress.send_modify(|p| p.timecode_mode = Some(mode));
        self.sink = Some(sink);
        self.reader = Some(tokio::spawn(read_acks(acks, self.progress.clone())));
        Ok(())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), PipelineError> {
        let sink = self.sink.as_mut().expect("sending on an open session");
        sink.send(bytes).await.map_err(PipelineError::Session)
    }

    async fn finish(mut self, ended: Ended, already_persisted: u64) -> Outcome {
        let timecode_mode = self.progress.borrow().timecode_mode;
        let mut result = match ended {
            Ended::Done => Ok(()),
            Ended::Cancelled => Err(PipelineError::Cancelled),
            Ended::Failed(e) => Err(e),
        };
        let mut summary = SessionSummary::default();
        if let Some(sink) = self.sink.take() {
            if result.is_ok() {
                summary = sink.summary();
                match sink.close().await {
                    Ok(s) => summary = s,
                    Err(e) => result = Err(PipelineError::Session(e)),
                }
            } else {
                summary = sink.summary();
                if matches!(result, Err(PipelineError::Cancelled)) {
                    // Stopped on purpose: what was sent is still acknowledged.
                    let _ = sink.close().await;
                }
                // Otherwise dropping the sink aborts the request.
            }
        }
        let mut last_error = None;
        if let Some(reader) = self.reader.take()
            && let Ok(Ok((e, s))) = tokio::time::timeout(ACK_READER_GRACE, reader).await
        {
            // Taken after the session ended: the latest snapshot of the same session.
            summary = s;
            last_error = e;
        }
        self.progress.send_modify(|p| p.session = summary.clone());
        let incomplete =
            !summary.fragments_failed.is_empty() || summary.fragments_delivered < summary.fragments;
        result = match result {
            Ok(()) if summary.fragments == 0 && already_persisted == 0 => {
                Err(PipelineError::NoMedia)
            }
            Ok(()) if incomplete => Err(incomplete_error(&summary, last_error)),
            // A session error after fragments were refused or lost is a partial failure.
            Err(PipelineError::Session(e))
                if incomplete
                    && summary.fragments > 0
                    && PipelineError::Session(e.clone()).kind() == FailureKind::Transient =>
            {
                Err(incomplete_error(&summary, Some(e)))
            }
            other => other,
        };
        let first_fragment_number = self.progress.borrow().first_fragment_number.clone();
        Outcome {
            result,
            summary,
            first_fragment_number,
            already_persisted,
            timecode_mode,
        }
    }
}

fn incomplete_error(s: &SessionSummary, last_error: Option<kvs_putmedia::Error>) -> PipelineError {
    let refused: Vec<String> = s
        .fragments_failed
        .iter()
        .map(|f| format!("{} ({})", f.error.code, f.error.id.id()))
        .collect();
    PipelineError::Incomplete {
        delivered: s.fragments_delivered,
        fragments: s.fragments,
        refused: refused.join(", "),
        dropped: s.fragments_dropped,
        last_error,
    }
}

async fn read_acks(
    mut acks: AckStream,
    progress: watch::Sender<Progress>,
) -> (Option<kvs_putmedia::Error>, SessionSummary) {
    let mut last_error = None;
    while let Some(event) = acks.next().await {
        let mut first = None;
        let mut latency = None;
        match event {
            Ok(SessionEvent::Fragment(f)) => {
                first = f.fragment_number.map(|n| n.as_str().to_owned());
                latency = f.latency;
            }
            Ok(SessionEvent::Warning(w)) => tracing::warn!(warning = ?w, "media adjusted"),
            // Reconnects, rotations, skips and drops are logged by the session.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "stream error");
                last_error = Some(e);
            }
        }
        let session = acks.summary();
        progress.send_modify(|p| {
            p.session = session;
            if p.first_fragment_number.is_none() {
                p.first_fragment_number = first;
            }
            p.last_latency = latency.or(p.last_latency);
        });
    }
    (last_error, acks.summary())
}
