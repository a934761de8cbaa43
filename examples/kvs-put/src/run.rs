//! One run: flags -> source and session options -> `kvs_pipeline::Pipeline` -> report and exit code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use bytes::{Bytes, BytesMut};
use ffmpeg_source::{FfmpegSource, Input, Profile};
use kvs_emulator::Emulator;
use kvs_pipeline::object::{self, ObjectRef};
use kvs_pipeline::streams::{self, Sessions};
use kvs_pipeline::{ByteStream, FailureKind, MediaSource, Pipeline, Timing};
use kvs_putmedia::{PutMediaClientBuilder, RetryPolicy, StreamId};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Timecode, Transcode};
use crate::report::{Outcome, Progress, Report};

/// Stream name used with `--emulator` when none is given.
const EMULATOR_STREAM: &str = "kvs-put";
/// Read size for MKV on stdin.
const STDIN_CHUNK: usize = 64 * 1024;

/// A failure with the exit code it maps to.
#[derive(Debug)]
struct Failure {
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn new(outcome: Outcome, message: impl Into<String>) -> Self {
        Failure {
            outcome,
            message: message.into(),
        }
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Where the media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Stdin,
    File(PathBuf),
    Url(String),
    S3(ObjectRef),
}

impl Source {
    fn parse(input: &str) -> Result<Source> {
        if input == "-" {
            return Ok(Source::Stdin);
        }
        if let Some(rest) = input.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    Ok(Source::S3(ObjectRef::new(bucket, key)))
                }
                _ => Err(Failure::new(
                    Outcome::Usage,
                    format!("{input}: an S3 input is s3://BUCKET/KEY"),
                )),
            };
        }
        let lower = input.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Ok(Source::Url(input.to_owned()));
        }
        Ok(Source::File(PathBuf::from(input)))
    }
}

/// Runs everything and returns the report (never panics on bad input; the exit code is in it).
pub async fn run(cli: Cli) -> Report {
    let started = Instant::now();
    let mut report = Report {
        input: cli.input.clone(),
        ..Report::default()
    };
    let outcome = match execute(&cli, &mut report).await {
        Ok(()) => Outcome::Ok,
        Err(f) => {
            report.error = Some(f.message);
            f.outcome
        }
    };
    report.outcome = outcome;
    report.exit_code = outcome.code();
    report.wall_time_ms = started.elapsed().as_millis() as u64;
    report
}

/// True when the user pointed S3 at plain HTTP (the library decides for Kinesis Video, see
/// `PutMediaClientBuilder::from_env_with`): that is the explicit opt-in for presigned URLs.
fn s3_endpoint_is_http() -> bool {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .is_ok_and(|u| u.to_ascii_lowercase().starts_with("http://"))
}

fn kind_outcome(kind: FailureKind) -> Outcome {
    match kind {
        FailureKind::BadInput => Outcome::BadInput,
        FailureKind::Config => Outcome::Usage,
        FailureKind::Auth => Outcome::Auth,
        FailureKind::StreamNotFound => Outcome::StreamNotFound,
        FailureKind::Partial => Outcome::Partial,
        FailureKind::Cancelled => Outcome::Interrupted,
        _ => Outcome::Error,
    }
}

/// Any error the wiring meets, with the exit code of its kind.
fn fail<'a, E: std::fmt::Display>(e: &'a E) -> Failure
where
    FailureKind: From<&'a E>,
{
    Failure::new(kind_outcome(FailureKind::from(e)), e.to_string())
}

/// Body of [`run`].
async fn execute(cli: &Cli, report: &mut Report) -> Result<()> {
    let source = Source::parse(&cli.input)?;
    if source == Source::Stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Failure::new(
            Outcome::Usage,
            "INPUT `-` reads Matroska from stdin, but stdin is a terminal: pipe MKV into kvs-put",
        ));
    }
    let settings = cli.encode_settings().map_err(|e| fail(&e))?;
    let stream = match (&cli.stream_name, &cli.stream_arn) {
        (Some(n), None) => StreamId::Name(n.clone()),
        (None, Some(a)) => StreamId::Arn(a.clone()),
        (None, None) if cli.emulator => StreamId::Name(EMULATOR_STREAM.to_owned()),
        _ => {
            return Err(Failure::new(
                Outcome::Usage,
                "set --stream-name or --stream-arn (or --emulator)",
            ));
        }
    };
    report.stream = Some(stream.to_string());
    if let Source::File(path) = &source {
        match std::fs::metadata(path) {
            Err(e) => {
                return Err(Failure::new(
                    Outcome::BadInput,
                    format!("{}: cannot read the input file: {e}", path.display()),
                ));
            }
            Ok(m) if m.is_dir() => {
                return Err(Failure::new(
                    Outcome::BadInput,
                    format!("{}: is a directory, not a media file", path.display()),
                ));
            }
            Ok(_) => {}
        }
    }

    // The emulator lives until the end of this function: the session needs it.
    let emulator = if cli.emulator {
        let emu = Emulator::builder().start().await.map_err(|e| {
            Failure::new(
                Outcome::Error,
                format!("starting the embedded emulator: {e}"),
            )
        })?;
        tracing::info!(url = %emu.url(), "embedded emulator started");
        Some(emu)
    } else {
        None
    };
    let config = match &emulator {
        Some(emu) => emu.sdk_config(),
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(r) = &cli.region {
                loader = loader.region(Region::new(r.clone()));
            }
            if let Some(u) = &cli.endpoint_url {
                loader = loader.endpoint_url(u);
            }
            loader.load().await
        }
    };
    if config.region().is_none() {
        return Err(Failure::new(
            Outcome::Usage,
            "no AWS region: set AWS_REGION, a profile region, or --region",
        ));
    }
    report.region = config.region().map(|r| r.to_string());
    let allow_http = emulator.is_some()
        || PutMediaClientBuilder::from_env_with(config.clone()).allows_http()
        || s3_endpoint_is_http();

    let create = (cli.create_stream || emulator.is_some()).then_some(cli.retention_hours);
    let kv = aws_sdk_kinesisvideo::Client::new(&config);
    let retention = streams::prepare(&kv, &stream, create)
        .await
        .map_err(|e| fail(&e))?;
    report.retention_hours = retention;

    let pacing = cli.pace;
    let input = match &source {
        Source::Stdin => None,
        Source::File(p) => Some(Input::path(p)),
        Source::Url(u) => {
            if u.to_ascii_lowercase().starts_with("http://") {
                tracing::warn!("reading the input over plain HTTP, as the URL given asks");
            }
            Some(Input::url_allow_http(u.clone()).map_err(|e| fail(&e))?)
        }
        Source::S3(o) => {
            let s3 = aws_sdk_s3::Client::new(&config);
            object::head(&s3, o).await.map_err(|e| fail(&e))?;
            let url = object::presign(&s3, o).await.map_err(|e| fail(&e))?;
            Some(Input::url_with(url, allow_http).map_err(|e| fail(&e))?)
        }
    };
    // The one timecode rule (kvs_pipeline::timing); stdin has no pacing and defaults to live.
    let timing = match (cli.backfill, cli.timecode, &source) {
        (Some(secs), ..) => Timing::BackfillBy(Duration::from_secs(secs)),
        (None, None, Source::Stdin) => Timing::Live,
        (None, t, _) => Timing::for_pace(pacing, t.map(|t| t == Timecode::Absolute)),
    };
    let builder = PutMediaClientBuilder::from_env_with(config.clone())
        .with_allow_http(allow_http)
        .with_buffer_bound(usize::try_from(cli.buffer_mib << 20).unwrap_or(usize::MAX))
        .with_buffer_duration(Duration::from_secs(cli.buffer_seconds))
        .with_overflow_policy(cli.on_full)
        .with_retry_policy(RetryPolicy::default().with_max_attempts(cli.max_retries));
    let run = Run {
        sessions: Sessions::new(builder).map_err(|e| fail(&e))?,
        stream,
        completion: Some(streams::completion_for(retention)),
        timing,
    };
    let outcome = match input {
        Some(input) => {
            let profile = match cli.transcode {
                Transcode::Auto => Profile::Auto(settings),
                Transcode::Always => Profile::SampleParity(settings),
                Transcode::Never => Profile::Copy,
            };
            let job = FfmpegSource::builder(input)
                .with_profile(profile)
                .with_pacing(pacing)
                .from_env()
                .build()
                .map_err(|e| fail(&e))?
                .spawn()
                .await
                .map_err(|e| fail(&e))?;
            report.decision = Some(job.decision().to_string());
            tracing::info!(decision = %job.decision(), "ffmpeg started");
            run.stream(job, report).await
        }
        None => run.stream(ByteStream::new(stdin_chunks()), report).await,
    };
    drop(emulator);
    outcome
}

/// MKV on stdin, in pipe-sized blocks (see `ffmpeg_source::read_block`).
fn stdin_chunks() -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin {
    let state = (tokio::io::stdin(), BytesMut::new());
    Box::pin(futures::stream::unfold(
        state,
        |(mut stdin, mut buf)| async move {
            ffmpeg_source::read_block(&mut buf, STDIN_CHUNK);
            match stdin.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.split().freeze()), (stdin, buf))),
                Err(e) => Some((Err(e), (stdin, buf))),
            }
        },
    ))
}

struct Run {
    sessions: Sessions,
    stream: StreamId,
    completion: Option<kvs_putmedia::CompletionAck>,
    timing: Timing,
}

impl Run {
    async fn stream<S: MediaSource>(self, source: S, report: &mut Report) -> Result<()> {
        report.media_duration_ms = source.duration().map(|d| d.as_millis() as u64);
        let stop = CancellationToken::new();
        let on_interrupt = stop.clone();
        let interrupt = tokio::spawn(async move {
            examples_support::shutdown_signal().await;
            on_interrupt.cancel();
        });
        let pipeline = Pipeline::new(source)
            .with_timing(self.timing)
            .with_cancel(stop);
        let progress = Progress::start(pipeline.progress());
        let (sessions, stream, completion) = (&self.sessions, &self.stream, self.completion);
        let outcome = pipeline
            .run(|mode| sessions.open(stream, mode, completion))
            .await;
        progress.stop();
        interrupt.abort();
        report.delivery = (&outcome).into();
        outcome.result.map_err(|e| {
            let outcome = kind_outcome(e.kind());
            let mut message = e.to_string();
            if outcome == Outcome::StreamNotFound {
                message.push_str("; pass --create-stream to create it");
            }
            if outcome == Outcome::Interrupted {
                message =
                    "interrupted: stopped reading the input; what was sent was acknowledged".into();
            }
            Failure::new(outcome, message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(Source::parse("-").unwrap(), Source::Stdin);
        assert_eq!(
            Source::parse("s3://b/dir/k.mp4").unwrap(),
            Source::S3(ObjectRef::new("b", "dir/k.mp4"))
        );
        assert_eq!(Source::parse("s3://b").unwrap_err().outcome, Outcome::Usage);
        assert_eq!(
            Source::parse("s3://b/").unwrap_err().outcome,
            Outcome::Usage
        );
        assert_eq!(
            Source::parse("HTTPS://h/x.mp4").unwrap(),
            Source::Url("HTTPS://h/x.mp4".into())
        );
        assert_eq!(
            Source::parse("clip.mp4").unwrap(),
            Source::File("clip.mp4".into())
        );
    }

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Usage,
            Outcome::BadInput,
            Outcome::Auth,
            Outcome::Partial,
            Outcome::StreamNotFound,
            Outcome::Interrupted,
        ];
        let mut codes: Vec<i32> = all.iter().map(|o| o.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(Outcome::Ok.code(), 0);
        assert_eq!(Outcome::Usage.code(), 2, "clap's own usage errors exit 2");
    }
}
