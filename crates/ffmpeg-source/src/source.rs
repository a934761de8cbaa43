//! Configuring an ffmpeg job: the builder, and the plan (probe, copy or transcode, command
//! line) made before ffmpeg starts.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use crate::command::Plan;
use crate::error::{Error, Result, StderrTail};
use crate::input::{Input, MOOV_AT_END_ADVICE, Mp4Layout, mp4_layout};
use crate::job::{FfmpegJob, JobOptions};
use crate::probe::{ProbeConfig, probe_with};
use crate::profile::{Pacing, Profile, check_streams, decide};

/// How much of a reader input is inspected for an MP4 index before handing it to ffmpeg.
const PEEK_LIMIT: usize = 1 << 20;

/// Builder for [`FfmpegSource`]; [`FfmpegSourceBuilder::build`] validates.
#[derive(Debug)]
pub struct FfmpegSourceBuilder {
    input: Input,
    profile: Profile,
    pacing: Pacing,
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    stall_timeout: Duration,
    probe_timeout: Duration,
    chunk_size: usize,
    stderr_lines: usize,
    min_output_bytes: u64,
}

impl FfmpegSourceBuilder {
    /// Output profile (default [`Profile::auto`]).
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// Pacing (default [`Pacing::Fast`]).
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    /// Path or name of `ffmpeg` (default `ffmpeg`, looked up on `PATH`).
    pub fn with_ffmpeg_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ffmpeg = path.into();
        self
    }

    /// Path or name of `ffprobe` (default `ffprobe`).
    pub fn with_ffprobe_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ffprobe = path.into();
        self
    }

    /// Kill ffmpeg and fail with [`Error::Stalled`] when it writes nothing for this long while
    /// the consumer waits (default 30 s). Time spent while the consumer is not polling does not
    /// count: that is backpressure, not a stall.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Give up on ffprobe after this long (default 30 s).
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Largest chunk read from ffmpeg's stdout at once (default 64 KiB). With the pipe buffer
    /// this bounds the bytes in flight between ffmpeg and the consumer.
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// How many of ffmpeg's last stderr lines are kept for error messages (default 20).
    pub fn with_stderr_lines(mut self, lines: usize) -> Self {
        self.stderr_lines = lines;
        self
    }

    /// Below this many output bytes a successful exit is reported as
    /// [`Error::NoUsableMedia`] (default 1024).
    pub fn with_min_output_bytes(mut self, bytes: u64) -> Self {
        self.min_output_bytes = bytes;
        self
    }

    /// Reads `FFMPEG_PATH` and `FFPROBE_PATH` when set. The only place this crate reads the
    /// environment; binaries call it, libraries and tests do not.
    pub fn from_env(mut self) -> Self {
        if let Some(p) = std::env::var_os("FFMPEG_PATH").filter(|p| !p.is_empty()) {
            self.ffmpeg = p.into();
        }
        if let Some(p) = std::env::var_os("FFPROBE_PATH").filter(|p| !p.is_empty()) {
            self.ffprobe = p.into();
        }
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<FfmpegSource> {
        let bad = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_owned(),
            })
        };
        if !(4096..=(16 << 20)).contains(&self.chunk_size) {
            return bad("chunk_size must be within 4 KiB..=16 MiB");
        }
        if self.stall_timeout.is_zero() || self.probe_timeout.is_zero() {
            return bad("stall and probe timeouts must be above zero");
        }
        if !(1..=1000).contains(&self.stderr_lines) {
            return bad("stderr_lines must be within 1..=1000");
        }
        Ok(FfmpegSource {
            cfg: self,
            plan: None,
            prefix: None,
        })
    }
}

/// A configured, not yet started ffmpeg job. Create with [`FfmpegSource::builder`].
#[derive(Debug)]
pub struct FfmpegSource {
    cfg: FfmpegSourceBuilder,
    plan: Option<Plan>,
    /// Bytes already read from a reader input while looking for an MP4 index.
    prefix: Option<Bytes>,
}

impl FfmpegSource {
    /// Starts configuring a job for `input`.
    pub fn builder(input: Input) -> FfmpegSourceBuilder {
        FfmpegSourceBuilder {
            input,
            profile: Profile::auto(),
            pacing: Pacing::Fast,
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            stall_timeout: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(30),
            chunk_size: 64 * 1024,
            stderr_lines: 20,
            min_output_bytes: 1024,
        }
    }

    /// Probes the input (paths and URLs) or inspects its first bytes (readers), decides copy or
    /// transcode, and builds the command line, without starting ffmpeg. Called by
    /// [`FfmpegSource::spawn`]; call it first to show the decision or the command.
    pub async fn plan(&mut self) -> Result<&Plan> {
        if self.plan.is_none() {
            let plan = self.make_plan().await?;
            self.plan = Some(plan);
        }
        Ok(self.plan.as_ref().expect("just set"))
    }

    async fn make_plan(&mut self) -> Result<Plan> {
        let name = self.cfg.input.name();
        let probe = if self.cfg.input.is_probeable() {
            let cfg = ProbeConfig {
                ffprobe: &self.cfg.ffprobe,
                timeout: self.cfg.probe_timeout,
                stderr_lines: self.cfg.stderr_lines,
                scan_keyframes: !matches!(self.cfg.profile, Profile::SampleParity(_)),
            };
            let p = probe_with(&cfg, &self.cfg.input).await?;
            check_streams(&name, &p)?;
            Some(p)
        } else {
            self.peek_reader().await?;
            None
        };
        let decision = decide(&name, &self.cfg.profile, probe.as_ref())?;
        let plan = Plan::new(
            &self.cfg.input,
            self.cfg.pacing,
            &self.cfg.profile,
            decision,
            probe,
        );
        tracing::info!(
            input = %name, decision = %plan.decision(), command = %plan.display_args(),
            "ffmpeg plan"
        );
        Ok(plan)
    }

    /// Reads the start of a reader input: an MP4 whose `mdat` precedes its `moov` cannot be read
    /// from a pipe (docs/protocol.md §5: "a few hundred bytes and exit code 0"), so refuse it here.
    async fn peek_reader(&mut self) -> Result<()> {
        if self.prefix.is_some() {
            return Ok(());
        }
        let name = self.cfg.input.name();
        let Input::Reader { reader, .. } = &mut self.cfg.input else {
            return Ok(());
        };
        let mut buf = BytesMut::with_capacity(8192);
        loop {
            let complete = if buf.len() >= PEEK_LIMIT {
                false
            } else {
                let room = PEEK_LIMIT - buf.len();
                let mut lim = (&mut buf).limit(room);
                let n = reader
                    .read_buf(&mut lim)
                    .await
                    .map_err(|e| Error::UnreadableInput {
                        input: name.clone(),
                        reason: format!("reading the input failed: {e}"),
                        stderr: StderrTail::default(),
                    })?;
                n == 0
            };
            match mp4_layout(&buf, complete) {
                Mp4Layout::IndexAtEnd => {
                    return Err(Error::NeedsSeekableInput {
                        input: name,
                        reason: MOOV_AT_END_ADVICE.into(),
                        stderr: StderrTail::default(),
                    });
                }
                Mp4Layout::NeedMore if !complete && buf.len() < PEEK_LIMIT => continue,
                // Undecided after the limit: let ffmpeg try; the output check still catches a
                // header-only result.
                _ => break,
            }
        }
        self.prefix = Some(buf.freeze());
        Ok(())
    }

    /// Starts ffmpeg. The job is a [`Stream`](futures::Stream) of MKV bytes; see [`FfmpegJob`].
    pub async fn spawn(mut self) -> Result<FfmpegJob> {
        self.plan().await?;
        let plan = self.plan.take().expect("planned");
        let FfmpegSource { cfg, prefix, .. } = self;
        let options = JobOptions {
            ffmpeg: cfg.ffmpeg,
            stall_timeout: cfg.stall_timeout,
            chunk_size: cfg.chunk_size,
            stderr_lines: cfg.stderr_lines,
            min_output_bytes: cfg.min_output_bytes,
        };
        FfmpegJob::start(cfg.input, prefix, plan, options)
    }
}

#[cfg(test)]
impl FfmpegSource {
    /// Replaces the plan with one this crate would not make, to test what the job does with it.
    pub(crate) fn set_plan(&mut self, plan: Plan) {
        self.plan = Some(plan);
    }
}
