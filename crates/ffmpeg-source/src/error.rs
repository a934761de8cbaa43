//! The one error type of this crate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The last lines ffmpeg (or ffprobe) wrote to stderr, oldest first.
///
/// Bounded by [`crate::FfmpegSourceBuilder::with_stderr_lines`]; query strings of URL inputs
/// (presigned S3 URLs carry credentials there) are redacted before a line is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StderrTail(pub Vec<String>);

impl StderrTail {
    /// The lines, oldest first.
    pub fn lines(&self) -> &[String] {
        &self.0
    }

    /// True when nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str("; ffmpeg's last words:")?;
        for line in &self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Which external program an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tool {
    /// The encoder.
    Ffmpeg,
    /// The prober, used to decide copy against transcode and to learn the duration.
    Ffprobe,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        })
    }
}

/// Everything that can go wrong turning an input into MKV bytes.
///
/// Every variant about a job names the input (URL query strings redacted) and, where ffmpeg ran,
/// carries its last stderr lines, so the message alone is enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given values that cannot work.
    #[error("invalid ffmpeg-source configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// `ffmpeg` or `ffprobe` is not installed (or not at the configured path).
    #[error(
        "{tool} not found at {path:?}: install the Debian package `{package}` \
         (apt-get install {package}) or set its path on the builder"
    )]
    ToolMissing {
        /// The missing program.
        tool: Tool,
        /// The path or name that was tried.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// Starting the program failed for another reason than it being absent.
    #[error("{input}: could not start {tool}: {source}")]
    Spawn {
        /// The input.
        input: String,
        /// The program.
        tool: Tool,
        /// The OS error.
        source: std::io::Error,
    },

    /// ffprobe or ffmpeg could not open or parse the input (missing file, HTTP error, not a media
    /// file, truncated MP4 without its index).
    #[error("{input}: ffmpeg cannot read this input: {reason}{stderr}")]
    UnreadableInput {
        /// The input.
        input: String,
        /// A short explanation.
        reason: String,
        /// ffprobe's or ffmpeg's last stderr lines.
        stderr: StderrTail,
    },

    /// The input has neither an audio nor a video stream (cover art alone does not count).
    #[error("{input}: no audio or video stream found (streams: {found}){stderr}")]
    NoMediaStream {
        /// The input.
        input: String,
        /// A summary of the streams that were found, e.g. `subtitle, data`.
        found: String,
        /// ffprobe's or ffmpeg's last stderr lines.
        stderr: StderrTail,
    },

    /// A stream's codec cannot be used: ffmpeg has no decoder for it, or `Profile::Copy` was asked
    /// for a codec KVS playback does not accept.
    #[error("{input}: stream #{stream} uses codec `{codec}`, {reason}{stderr}")]
    UnsupportedCodec {
        /// The input.
        input: String,
        /// The stream index in the input.
        stream: usize,
        /// ffprobe's codec name (`unknown` when it has none).
        codec: String,
        /// Why it cannot be used and what to do.
        reason: String,
        /// ffprobe's or ffmpeg's last stderr lines.
        stderr: StderrTail,
    },

    /// `Profile::Copy` was requested but the input is not compatible with KVS as it is.
    #[error(
        "{input}: cannot stream-copy: {}; use Profile::Auto or Profile::SampleParity to transcode",
        reasons.join("; ")
    )]
    CopyIncompatible {
        /// The input.
        input: String,
        /// Every reason found, e.g. `video has B-frames`.
        reasons: Vec<String>,
    },

    /// The input comes from a pipe but its container needs seeking (MP4 with the index at the
    /// end), found from its first bytes or from ffmpeg's complaint.
    #[error("{input}: {reason}{stderr}")]
    NeedsSeekableInput {
        /// The input.
        input: String,
        /// What was found and what to do about it.
        reason: String,
        /// ffmpeg's last stderr lines, when ffmpeg found it (empty when refused up front).
        stderr: StderrTail,
    },

    /// ffmpeg or ffprobe exited with a non-zero status or was killed by a signal.
    #[error("{input}: {tool} failed ({status}){stderr}")]
    Exit {
        /// The input.
        input: String,
        /// The program.
        tool: Tool,
        /// The exit status, e.g. `exit status: 1`.
        status: String,
        /// The last stderr lines.
        stderr: StderrTail,
    },

    /// ffmpeg exited 0 but what came out cannot be media: fewer bytes than the minimum, or no
    /// Matroska Cluster (`1F 43 B6 75`) at all. ffmpeg exits 0 on a moov-at-end MP4 read from a
    /// pipe after writing a few hundred bytes (docs/protocol.md §5), so exit 0 alone proves nothing.
    #[error(
        "{input}: ffmpeg exited successfully but produced no usable media \
         ({bytes} bytes, a cluster seen: {saw_cluster}; need at least {min_bytes} bytes and one cluster){stderr}"
    )]
    NoUsableMedia {
        /// The input.
        input: String,
        /// Bytes ffmpeg wrote.
        bytes: u64,
        /// Whether any Matroska Cluster id was seen.
        saw_cluster: bool,
        /// The configured minimum.
        min_bytes: u64,
        /// ffmpeg's last stderr lines.
        stderr: StderrTail,
    },

    /// ffmpeg wrote nothing for the configured stall timeout while the consumer was waiting; it
    /// has been killed.
    #[error(
        "{input}: ffmpeg produced no output for {waited:?} after {bytes} bytes; killed it{stderr}"
    )]
    Stalled {
        /// The input.
        input: String,
        /// The configured stall timeout.
        waited: Duration,
        /// Bytes received before the stall.
        bytes: u64,
        /// ffmpeg's last stderr lines.
        stderr: StderrTail,
    },

    /// ffprobe did not answer within the probe timeout (a slow or hung HTTP server, usually).
    #[error("{input}: ffprobe did not finish within {waited:?}")]
    ProbeTimeout {
        /// The input.
        input: String,
        /// The configured probe timeout.
        waited: Duration,
    },

    /// ffprobe's JSON could not be understood.
    #[error("{input}: unexpected ffprobe output: {source}")]
    ProbeOutput {
        /// The input.
        input: String,
        /// The parse error.
        source: serde_json::Error,
    },

    /// The job was cancelled with [`crate::FfmpegJob::cancel`] or a [`crate::CancelHandle`].
    #[error("{input}: cancelled")]
    Cancelled {
        /// The input.
        input: String,
    },

    /// Reading ffmpeg's output failed.
    #[error("{input}: reading ffmpeg's output failed after {bytes} bytes: {source}")]
    Io {
        /// The input.
        input: String,
        /// Bytes received before the failure.
        bytes: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// True when running the same job again may succeed (a stall or an I/O error, typically a
    /// network input); false for errors about the input itself or the configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Stalled { .. } | Error::ProbeTimeout { .. } | Error::Io { .. }
        )
    }

    /// True when the input itself is the problem (not media, no stream, a codec or container this
    /// job cannot use, ffmpeg refusing it): what a service answers with `422` and a CLI reports as
    /// bad input. One list here, so every caller classifies the same way.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::UnreadableInput { .. }
                | Error::NoMediaStream { .. }
                | Error::UnsupportedCodec { .. }
                | Error::CopyIncompatible { .. }
                | Error::NeedsSeekableInput { .. }
                | Error::NoUsableMedia { .. }
                | Error::Exit { .. }
        )
    }

    /// ffmpeg's (or ffprobe's) last stderr lines, when the error has them.
    pub fn stderr(&self) -> Option<&StderrTail> {
        match self {
            Error::UnreadableInput { stderr, .. }
            | Error::NoMediaStream { stderr, .. }
            | Error::NeedsSeekableInput { stderr, .. }
            | Error::UnsupportedCodec { stderr, .. }
            | Error::Exit { stderr, .. }
            | Error::NoUsableMedia { stderr, .. }
            | Error::Stalled { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// The error for a tool that could not be started: missing, or failing to spawn.
pub(crate) fn spawn_error(tool: Tool, path: &Path, input: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::ToolMissing {
            tool,
            path: path.to_owned(),
            package: "ffmpeg",
        }
    } else {
        Error::Spawn {
            input: input.to_owned(),
            tool,
            source: e,
        }
    }
}
