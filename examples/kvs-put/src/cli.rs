//! Command-line flags.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use ffmpeg_source::{EncodeSettings, Pacing, Size, X264Preset};
use kvs_putmedia::OverflowPolicy;

const AFTER_HELP: &str = "\
INPUT:
  path/to/file.mp4        a local file (any container ffmpeg reads)
  https://host/clip.mp4   a URL ffmpeg can read with Range requests
  s3://bucket/key         an S3 object, read by ffmpeg through a presigned URL
  -                       Matroska on stdin, sent as is (re-fragmented, no ffmpeg)

ENVIRONMENT:
  The standard AWS environment, through aws-config: the credential chain (AWS_ACCESS_KEY_ID,
  AWS_PROFILE, web identity, ECS, IMDS), AWS_REGION, AWS_ENDPOINT_URL and the per-service
  AWS_ENDPOINT_URL_KINESIS_VIDEO / AWS_ENDPOINT_URL_S3. An http:// endpoint set there (or with
  --endpoint-url) is the explicit opt-in to plain HTTP; otherwise TLS is required and verified.
  FFMPEG_PATH / FFPROBE_PATH override the ffmpeg and ffprobe programs. RUST_LOG sets log levels.

EXIT CODES:
  0  every fragment was persisted (or received, on a stream with zero retention)
  1  any other error (network, service, ffmpeg missing...)
  2  usage error (bad flags)
  3  bad input: missing file or object, not media, codec that cannot be used
  4  authentication or authorization refused (credentials, signature, permissions)
  5  partial failure: some fragments were sent but not all were persisted
  6  the stream does not exist (pass --create-stream to create it)
  130 interrupted (Ctrl-C or SIGTERM); what was sent before is still acknowledged";

/// Stream a video file, URL, S3 object or MKV on stdin into Kinesis Video Streams (PutMedia).
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to stream: a file path, an http(s):// URL, s3://bucket/key, or `-` for MKV on stdin.
    pub input: String,

    /// Target stream name.
    #[arg(long, conflicts_with = "stream_arn")]
    pub stream_name: Option<String>,

    /// Target stream ARN.
    #[arg(long)]
    pub stream_arn: Option<String>,

    /// Create the stream (by name) when it does not exist.
    #[arg(long, conflicts_with = "stream_arn")]
    pub create_stream: bool,

    /// Data retention of a stream created by --create-stream, in hours. With 0, KVS keeps
    /// nothing and sends no PERSISTED acks; success then means every fragment was RECEIVED.
    #[arg(long, default_value_t = 24, requires = "create_stream")]
    pub retention_hours: u32,

    /// AWS region (default: the AWS environment's).
    #[arg(long)]
    pub region: Option<String>,

    /// Endpoint for every AWS service (default: the AWS environment's); `http://` allows plain
    /// HTTP.
    #[arg(long)]
    pub endpoint_url: Option<String>,

    /// Pacing. `fast` (the default) reads as fast as ffmpeg and KVS allow and backfills: the
    /// timestamps start one media duration in the past, so none lies in the future. `realtime`
    /// reads at the native frame rate like the Node sample (`-re`): the stream looks live.
    #[arg(long, value_name = "realtime|fast", default_value_t = Pacing::Fast)]
    pub pace: Pacing,

    /// `auto` copies H.264/AAC that KVS accepts as is and transcodes anything else; `always`
    /// transcodes (the Node sample's behaviour); `never` copies or fails.
    #[arg(long, value_enum, default_value_t = Transcode::Auto)]
    pub transcode: Transcode,

    /// Output size when transcoding: `WIDTHxHEIGHT` (fitted, aspect kept, padded) or `source`.
    #[arg(long, default_value = "640x480", value_parser = parse_size)]
    pub size: SizeArg,

    /// Output frame rate when transcoding (default: the source's).
    #[arg(long)]
    pub fps: Option<u32>,

    /// Video bit rate in kbit/s when transcoding (default: constant quality, CRF 23).
    #[arg(long)]
    pub video_bitrate: Option<u32>,

    /// AAC bit rate in kbit/s when transcoding.
    #[arg(long, default_value_t = 128)]
    pub audio_bitrate: u32,

    /// x264 preset when transcoding: ultrafast, superfast, veryfast, faster, fast, medium, slow,
    /// slower or veryslow.
    #[arg(long, value_name = "PRESET", default_value_t = X264Preset::Veryfast)]
    pub preset: X264Preset,

    /// Keyframe interval in seconds when transcoding, which is also the fragment length (1-20).
    #[arg(long, default_value_t = 2)]
    pub gop: u64,

    /// Fragment timecodes: `absolute` (epoch milliseconds) or `relative` (to the producer start
    /// timestamp). Default: absolute with `--pace fast` (backfill), relative with `realtime`
    /// and for stdin.
    #[arg(long, value_enum)]
    pub timecode: Option<Timecode>,

    /// Backfill: the first frame's timestamp is this many seconds in the past (ABSOLUTE
    /// timecodes). KVS refuses producer timestamps in the future (4007), so recorded MKV sent on
    /// stdin faster than real time needs this when it is longer than a few seconds. Default
    /// with `--pace fast`: the media duration plus one second.
    #[arg(long, value_name = "SECONDS", conflicts_with = "timecode")]
    pub backfill: Option<u64>,

    /// Start an embedded KVS/S3/STS emulator on 127.0.0.1 and stream to it (creates the
    /// stream; no AWS account needed). The stream name defaults to `kvs-put`.
    #[arg(long)]
    pub emulator: bool,

    /// Cap, in MiB, on the fragments kept until acknowledged so they can be resent after a
    /// failure.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub buffer_mib: u64,

    /// Cap, in seconds of media, on the fragments kept until acknowledged.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub buffer_seconds: u64,

    /// What to do when a buffer cap is reached: `backpressure` (or `wait`: nothing lost; right
    /// for files) or `drop-oldest` whole fragments (live sources; each drop is reported).
    #[arg(long, value_name = "backpressure|drop-oldest", default_value_t = OverflowPolicy::Backpressure)]
    pub on_full: OverflowPolicy,

    /// Consecutive failed attempts without progress before giving up (0: never retry).
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,

    /// Print one JSON summary object on stdout (and nothing else there).
    #[arg(long)]
    pub json: bool,
}

/// Copy or transcode.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Transcode {
    /// Copy when KVS accepts the input as is, otherwise transcode.
    Auto,
    /// Always transcode.
    Always,
    /// Never transcode.
    Never,
}

/// Fragment timecode type.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Timecode {
    /// Epoch milliseconds.
    Absolute,
    /// Relative to the producer start timestamp.
    Relative,
}

/// `--size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeArg(pub Size);

fn parse_size(s: &str) -> Result<SizeArg, String> {
    if s.eq_ignore_ascii_case("source") {
        return Ok(SizeArg(Size::Source));
    }
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT (e.g. 640x480) or `source`"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}`: `{v}` is not a number"))
    };
    Ok(SizeArg(Size::Fit {
        width: parse(w)?,
        height: parse(h)?,
    }))
}

impl Cli {
    /// The encoder settings the flags describe (validated by ffmpeg-source).
    pub fn encode_settings(&self) -> ffmpeg_source::Result<EncodeSettings> {
        let mut b = EncodeSettings::builder()
            .with_size(self.size.0)
            .with_audio_bitrate_kbps(self.audio_bitrate)
            .with_preset(self.preset)
            .with_gop(Duration::from_secs(self.gop));
        if let Some(fps) = self.fps {
            b = b.with_fps(fps);
        }
        if let Some(kbps) = self.video_bitrate {
            b = b.with_video_bitrate_kbps(kbps);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn policies_parse_with_the_libraries_from_str() {
        let cli = Cli::try_parse_from([
            "kvs-put",
            "--pace",
            "realtime",
            "--on-full",
            "drop-oldest",
            "--preset",
            "slow",
            "x.mp4",
        ])
        .unwrap();
        assert_eq!(cli.pace, Pacing::Realtime);
        assert_eq!(cli.on_full, OverflowPolicy::DropOldest);
        assert_eq!(cli.preset, X264Preset::Slow);
        let cli = Cli::try_parse_from(["kvs-put", "--on-full", "wait", "x.mp4"]).unwrap();
        assert_eq!(cli.on_full, OverflowPolicy::Backpressure);
        let e = Cli::try_parse_from(["kvs-put", "--pace", "warp", "x.mp4"]).unwrap_err();
        assert!(
            e.to_string().contains("expected one of: realtime, fast"),
            "{e}"
        );
    }

    #[test]
    fn size_parses() {
        assert_eq!(parse_size("source").unwrap().0, Size::Source);
        assert_eq!(
            parse_size("320x240").unwrap().0,
            Size::Fit {
                width: 320,
                height: 240
            }
        );
        assert!(parse_size("320").is_err());
        assert!(parse_size("ax240").is_err());
    }

    #[test]
    fn bad_encode_settings_are_refused() {
        let cli = Cli::try_parse_from(["kvs-put", "--gop", "30", "x.mp4"]).unwrap();
        assert!(
            cli.encode_settings().is_err(),
            "a 30 s GOP exceeds KVS's 20 s fragments"
        );
        let cli = Cli::try_parse_from(["kvs-put", "--size", "321x240", "x.mp4"]).unwrap();
        assert!(cli.encode_settings().is_err(), "odd width");
    }
}
