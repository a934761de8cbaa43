//! One run: input -> (ffmpeg) -> PutMedia sink, acknowledgements -> report and exit code.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesisvideo::config::http::HttpResponse;
use aws_sdk_kinesisvideo::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use bytes::{Bytes, BytesMut};
use ffmpeg_source::{FfmpegJob, FfmpegSource, Input, Pacing, Profile};
use futures::{SinkExt, StreamExt};
use kvs_emulator::Emulator;
use kvs_putmedia::ack::AckEventType;
use kvs_putmedia::mkv::TimecodeMode;
use kvs_putmedia::{CompletionAck, PutMediaClientBuilder, PutMediaSink, RetryPolicy, SessionEvent};
use tokio::io::AsyncReadExt;

use crate::cli::{Cli, Timecode, Transcode};
use crate::report::{FailedFragment, Live, Outcome, Progress, Report};

/// Stream name used with `--emulator` when none is given.
const EMULATOR_STREAM: &str = "kvs-put";

/// How long a presigned URL stays valid: long enough for ffmpeg to read a long file at native
/// rate, short enough not to be a standing credential.
const PRESIGN_VALIDITY: Duration = Duration::from_secs(6 * 3600);

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
    S3 { bucket: String, key: String },
}

impl Source {
    fn parse(input: &str) -> Result<Source> {
        if input == "-" {
            return Ok(Source::Stdin);
        }
        if let Some(rest) = input.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok(Source::S3 {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }),
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
    let mut report = Report::new(&cli.input);
    let outcome = match execute(&cli, &mut report).await {
        Ok(outcome) => outcome,
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

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An SDK configuration pointing every AWS client at `emu`.
async fn emulator_sdk_config(emu: &Emulator) -> SdkConfig {
    let c = emu.credentials();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(emu.region().to_owned()))
        .endpoint_url(emu.url())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "kvs-emulator",
        ))
        .load()
        .await
}

/// True when the user pointed S3 at plain HTTP (the library decides for Kinesis Video, see
/// `PutMediaClientBuilder::from_env_with`): that is the explicit opt-in for presigned URLs.
fn s3_endpoint_is_http() -> bool {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .is_ok_and(|u| u.to_ascii_lowercase().starts_with("http://"))
}

/// Maps an AWS SDK error to an exit outcome and a message naming `what`.
fn sdk_failure<E>(what: &str, e: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or("");
    let text = DisplayErrorContext(e).to_string();
    let outcome = match (status, code) {
        (_, "ResourceNotFoundException") => Outcome::StreamNotFound,
        (Some(401 | 403), _)
        | (
            _,
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "NotAuthorizedException"
            | "AccessDeniedException"
            | "ExpiredTokenException"
            | "SignatureDoesNotMatch"
            | "InvalidAccessKeyId",
        ) => Outcome::Auth,
        _ if text.to_ascii_lowercase().contains("credentials") => Outcome::Auth,
        _ => Outcome::Error,
    };
    Failure::new(outcome, format!("{what}: {text}"))
}

fn ffmpeg_failure(e: ffmpeg_source::Error) -> Failure {
    let outcome = match &e {
        ffmpeg_source::Error::InvalidConfig { .. } => Outcome::Usage,
        e if e.is_input_error() => Outcome::BadInput,
        _ => Outcome::Error,
    };
    Failure::new(outcome, e.to_string())
}

fn kvs_failure(e: &kvs_putmedia::Error) -> Failure {
    use kvs_putmedia::Error as E;
    let outcome = match e {
        E::Config { .. } => Outcome::Usage,
        E::Auth { .. } | E::Credentials { .. } => Outcome::Auth,
        E::StreamNotFound { .. } => Outcome::StreamNotFound,
        E::InvalidMedia { .. } => Outcome::BadInput,
        E::Ack { .. } | E::Incomplete { .. } => Outcome::Partial,
        _ => Outcome::Error,
    };
    let mut message = e.to_string();
    if outcome == Outcome::StreamNotFound {
        message.push_str("; pass --create-stream to create it");
    }
    Failure::new(outcome, message)
}

/// The stream, by name or ARN.
#[derive(Debug, Clone)]
enum Target {
    Name(String),
    Arn(String),
}

impl Target {
    fn as_str(&self) -> &str {
        match self {
            Target::Name(s) | Target::Arn(s) => s,
        }
    }
}

/// Learns the stream's retention (which ack completes a fragment), creating the stream when
/// asked. Returns `None` when DescribeStream is not allowed: PutMedia alone needs only
/// `kinesisvideo:GetDataEndpoint` and `kinesisvideo:PutMedia`.
async fn prepare_stream(
    kv: &aws_sdk_kinesisvideo::Client,
    target: &Target,
    create: Option<u32>,
) -> Result<Option<u32>> {
    let req = kv.describe_stream();
    let req = match target {
        Target::Name(n) => req.stream_name(n),
        Target::Arn(a) => req.stream_arn(a),
    };
    match req.send().await {
        Ok(out) => Ok(Some(
            out.stream_info
                .and_then(|i| i.data_retention_in_hours)
                .unwrap_or(0)
                .max(0) as u32,
        )),
        Err(e) => {
            let f = sdk_failure(&format!("DescribeStream({})", target.as_str()), &e);
            match (f.outcome, target, create) {
                (Outcome::StreamNotFound, Target::Name(name), Some(hours)) => {
                    kv.create_stream()
                        .stream_name(name)
                        .data_retention_in_hours(hours as i32)
                        .send()
                        .await
                        .map_err(|e| sdk_failure(&format!("CreateStream({name})"), &e))?;
                    tracing::info!(stream = %name, retention_hours = hours, "created the stream");
                    Ok(Some(hours))
                }
                (Outcome::StreamNotFound, _, _) => Err(Failure::new(
                    Outcome::StreamNotFound,
                    format!(
                        "stream {} not found; pass --create-stream to create it",
                        target.as_str()
                    ),
                )),
                (Outcome::Auth, _, _) if e.code() == Some("AccessDeniedException") => {
                    tracing::warn!(
                        "DescribeStream is not allowed; assuming the stream keeps data (PERSISTED acks)"
                    );
                    Ok(None)
                }
                _ => Err(f),
            }
        }
    }
}

async fn presign(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    allow_http: bool,
) -> Result<Input> {
    let name = format!("s3://{bucket}/{key}");
    // A HEAD first turns "no such object" and "access denied" into clear messages and exit
    // codes instead of an ffmpeg HTTP error.
    if let Err(e) = s3.head_object().bucket(bucket).key(key).send().await {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let mut f = sdk_failure(&name, &e);
        if status == Some(404) {
            f = Failure::new(Outcome::BadInput, format!("{name}: no such object"));
        }
        return Err(f);
    }
    let cfg = PresigningConfig::expires_in(PRESIGN_VALIDITY)
        .map_err(|e| Failure::new(Outcome::Error, format!("presigning: {e}")))?;
    let req = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(cfg)
        .await
        .map_err(|e| sdk_failure(&format!("presigning {name}"), &e))?;
    Input::url_with(req.uri().to_string(), allow_http).map_err(ffmpeg_failure)
}

/// Body of [`run`].
async fn execute(cli: &Cli, report: &mut Report) -> Result<Outcome> {
    let source = Source::parse(&cli.input)?;
    if source == Source::Stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Failure::new(
            Outcome::Usage,
            "INPUT `-` reads Matroska from stdin, but stdin is a terminal: pipe MKV into kvs-put",
        ));
    }
    let settings = cli
        .encode_settings()
        .map_err(|e| Failure::new(Outcome::Usage, e.to_string()))?;
    let target = match (&cli.stream_name, &cli.stream_arn) {
        (Some(n), None) => Target::Name(n.clone()),
        (None, Some(a)) => Target::Arn(a.clone()),
        (None, None) if cli.emulator => Target::Name(EMULATOR_STREAM.to_owned()),
        _ => {
            return Err(Failure::new(
                Outcome::Usage,
                "set --stream-name or --stream-arn (or --emulator)",
            ));
        }
    };
    report.stream = Some(target.as_str().to_owned());

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
        Some(emu) => emulator_sdk_config(emu).await,
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

    let kv = aws_sdk_kinesisvideo::Client::new(&config);
    let create = (cli.create_stream || emulator.is_some()).then_some(cli.retention_hours);
    let retention = prepare_stream(&kv, &target, create).await?;
    report.retention_hours = retention;
    let completion = if retention == Some(0) {
        CompletionAck::Received
    } else {
        CompletionAck::Persisted
    };

    let pacing = cli.pace;
    let profile = match cli.transcode {
        Transcode::Auto => Profile::Auto(settings),
        Transcode::Always => Profile::SampleParity(settings),
        Transcode::Never => Profile::Copy,
    };
    let input = match &source {
        Source::Stdin => None,
        Source::File(p) => Some(Input::path(p)),
        Source::Url(u) => {
            if u.to_ascii_lowercase().starts_with("http://") {
                tracing::warn!("reading the input over plain HTTP, as the URL given asks");
            }
            Some(Input::url_allow_http(u.clone()).map_err(ffmpeg_failure)?)
        }
        Source::S3 { bucket, key } => {
            Some(presign(&aws_sdk_s3::Client::new(&config), bucket, key, allow_http).await?)
        }
    };
    let ffmpeg = match input {
        Some(input) => {
            let job = FfmpegSource::builder(input)
                .profile(profile)
                .pacing(pacing)
                .from_env()
                .build()
                .map_err(ffmpeg_failure)?
                .spawn()
                .await
                .map_err(ffmpeg_failure)?;
            report.decision = Some(job.decision().to_string());
            tracing::info!(decision = %job.decision(), "ffmpeg started");
            Some(job)
        }
        None => None,
    };
    let duration = ffmpeg.as_ref().and_then(|j| j.progress().borrow().duration);
    report.media_duration_ms = duration.map(|d| d.as_millis() as u64);

    // Reference §4.10: RELATIVE producer timestamps are start + cluster timecode, so a file sent
    // faster than real time would run into the future (4007). Fast pacing therefore backfills
    // with ABSOLUTE timecodes starting one media duration (plus a second) in the past.
    let timecode = cli.timecode.unwrap_or(match (&source, cli.pace) {
        (Source::Stdin, _) | (_, Pacing::Realtime) => Timecode::Relative,
        _ => Timecode::Absolute,
    });
    let mode = match (cli.backfill, timecode, cli.pace, duration) {
        (Some(secs), ..) => TimecodeMode::Absolute {
            origin_epoch_ms: epoch_ms().saturating_sub(secs.saturating_mul(1000)),
        },
        (None, timecode, pace, duration) => {
            timecode_mode(timecode, pace, duration, ffmpeg.is_some())
        }
    };

    let mut builder = PutMediaClientBuilder::from_env_with(config.clone())
        .with_timecode_mode(mode)
        .with_allow_http(allow_http)
        .with_completion_ack(completion)
        .with_buffer_bound(usize::try_from(cli.buffer_mib << 20).unwrap_or(usize::MAX))
        .with_buffer_duration(Duration::from_secs(cli.buffer_seconds))
        .with_overflow_policy(cli.on_full)
        .with_retry_policy(RetryPolicy::default().with_max_attempts(cli.max_retries));
    builder = match &target {
        Target::Name(n) => builder.with_stream_name(n),
        Target::Arn(a) => builder.with_stream_arn(a),
    };
    let client = builder.build().map_err(|e| kvs_failure(&e))?;
    let (sink, mut acks) = client.start().await.map_err(|e| kvs_failure(&e))?;

    let live = Arc::new(Mutex::new(Live::default()));
    let ack_live = live.clone();
    let ack_task = tokio::spawn(async move {
        let mut first_number = None;
        let mut last_error = None;
        while let Some(event) = acks.next().await {
            match event {
                Ok(SessionEvent::Fragment(f)) => {
                    let mut l = ack_live.lock().unwrap_or_else(|e| e.into_inner());
                    if first_number.is_none() {
                        first_number = f.fragment_number.as_ref().map(|n| n.as_str().to_owned());
                    }
                    match f.event {
                        AckEventType::Received => l.received += 1,
                        AckEventType::Persisted => l.persisted += 1,
                        _ => {}
                    }
                    if f.latency.is_some() {
                        l.last_latency = f.latency;
                    }
                }
                Ok(SessionEvent::Warning(w)) => tracing::warn!(warning = ?w, "media adjusted"),
                Ok(SessionEvent::Skipped(_)) => {
                    ack_live.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                }
                // Reconnects, rotations and drops are logged by the library.
                Ok(_) => {}
                Err(e) => {
                    ack_live.lock().unwrap_or_else(|e| e.into_inner()).failed += 1;
                    tracing::warn!(error = %e, "stream error");
                    last_error = Some(e);
                }
            }
        }
        // The stream has ended: its summary holds every ack, later than the sink's snapshot
        // taken when a send failed.
        (first_number, last_error, acks.summary())
    });
    let progress = Progress::start(live.clone(), ffmpeg.as_ref().map(|j| j.progress()));
    let ffmpeg_progress = ffmpeg.as_ref().map(|j| j.progress());

    let pumped = pump(sink, ffmpeg, &live).await;
    progress.stop();
    // ffmpeg refused to copy and the job restarted as a transcode: report what ran.
    if let Some(cause) = ffmpeg_progress.and_then(|p| p.borrow().copy_refused.clone()) {
        report.decision = Some(format!(
            "transcode: ffmpeg refused to copy the streams ({cause}), so the job restarted as a transcode"
        ));
    }
    let (first_number, ack_error, ack_summary) =
        match tokio::time::timeout(Duration::from_secs(10), ack_task).await {
            Ok(Ok((n, e, s))) => (n, e, Some(s)),
            _ => (None, None, None),
        };
    report.first_fragment_number = first_number;

    let (sink_summary, ended) = pumped;
    // The ack stream's summary is taken after the session ended: the latest snapshot of the same
    // session; the sink's only stands in when the ack task did not finish in time.
    let summary = ack_summary.unwrap_or(sink_summary);
    report.fragments = summary.fragments;
    report.fragments_delivered = summary.fragments_delivered;
    report.fragments_sent = summary.fragments_sent;
    report.fragments_resent = summary.fragments_resent;
    report.fragments_received = summary.fragments_received;
    report.fragments_persisted = summary.fragments_persisted;
    // The list also names the fragment whose error ended the session; past 1024 only the
    // skipped count grows.
    report.fragments_failed = summary
        .fragments_skipped
        .max(summary.fragments_failed.len() as u64);
    report.fragments_dropped = summary.fragments_dropped;
    report.connections = summary.connections;
    report.retries = summary.retries;
    report.rotations = summary.rotations;
    report.bytes_sent = summary.bytes_sent;
    report.first_ack_latency_ms = summary.first_ack_latency.map(|d| d.as_secs_f64() * 1000.0);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if summary.received_latency.count > 0 {
        report.received_latency_ms = Some([
            ms(summary.received_latency.p50),
            ms(summary.received_latency.p99),
        ]);
    }
    report.failures = summary
        .fragments_failed
        .iter()
        .map(|f| FailedFragment {
            timecode: f.timecode,
            fragment_number: f.fragment_number.as_ref().map(|n| n.as_str().to_owned()),
            error_id: f.error.id.id(),
            error_code: f.error.code.clone(),
        })
        .collect();
    drop(emulator);

    match ended {
        Ended::Interrupted => {
            return Err(Failure::new(
                Outcome::Interrupted,
                "interrupted: stopped reading the input; what was sent was acknowledged",
            ));
        }
        Ended::Failed(f) => return Err(f),
        Ended::Done => {}
    }
    let completed = summary.fragments_delivered;
    if summary.fragments == 0 {
        return Err(Failure::new(
            Outcome::BadInput,
            "no fragment was sent: the input holds no usable media",
        ));
    }
    if !summary.fragments_failed.is_empty() || completed < summary.fragments {
        let ids: Vec<String> = report
            .failures
            .iter()
            .map(|f| format!("{} ({})", f.error_code, f.error_id))
            .collect();
        return Err(Failure::new(
            Outcome::Partial,
            format!(
                "{} of {} fragments {}; rejected: [{}]; dropped: {}{}",
                completed,
                summary.fragments,
                if completion == CompletionAck::Received {
                    "received"
                } else {
                    "persisted"
                },
                ids.join(", "),
                summary.fragments_dropped,
                ack_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(Outcome::Ok)
}

/// The timecode mode without `--backfill`.
fn timecode_mode(
    timecode: Timecode,
    pace: Pacing,
    duration: Option<Duration>,
    has_ffmpeg: bool,
) -> TimecodeMode {
    match (timecode, pace, duration) {
        (Timecode::Relative, _, _) => TimecodeMode::Relative,
        (Timecode::Absolute, Pacing::Fast, Some(d)) => TimecodeMode::backfill(d, SystemTime::now()),
        (Timecode::Absolute, Pacing::Fast, None) if has_ffmpeg => {
            tracing::warn!(
                "the input's duration is unknown: timestamps start now, and media sent faster \
                 than real time may be refused as in the future (4007); consider --backfill or --pace realtime"
            );
            TimecodeMode::Absolute {
                origin_epoch_ms: epoch_ms(),
            }
        }
        (Timecode::Absolute, _, _) => TimecodeMode::Absolute {
            origin_epoch_ms: epoch_ms(),
        },
    }
}

/// How the pump ended.
enum Ended {
    Done,
    Interrupted,
    Failed(Failure),
}

/// Moves bytes from ffmpeg (or stdin) into the sink, then closes it. Returns the session's
/// summary (also after a failure) and how it ended.
async fn pump(
    mut sink: PutMediaSink,
    mut ffmpeg: Option<FfmpegJob>,
    live: &Mutex<Live>,
) -> (kvs_putmedia::SessionSummary, Ended) {
    let mut stdin = tokio::io::stdin();
    let mut buf = BytesMut::with_capacity(STDIN_CHUNK);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let ended = loop {
        let next: Option<Result<Bytes>> = tokio::select! {
            biased;
            _ = &mut interrupt => break Ended::Interrupted,
            chunk = async {
                match ffmpeg.as_mut() {
                    Some(job) => job.next().await.map(|r| r.map_err(ffmpeg_failure)),
                    None => {
                        ffmpeg_source::read_block(&mut buf, STDIN_CHUNK);
                        match stdin.read_buf(&mut buf).await {
                            Ok(0) => None,
                            Ok(_) => Some(Ok(buf.split().freeze())),
                            Err(e) => Some(Err(Failure::new(
                                Outcome::Error,
                                format!("reading stdin: {e}"),
                            ))),
                        }
                    }
                }
            } => chunk,
        };
        match next {
            None => break Ended::Done,
            Some(Err(f)) => break Ended::Failed(f),
            Some(Ok(bytes)) => {
                let n = bytes.len() as u64;
                if let Err(e) = sink.send(bytes).await {
                    let summary = sink.summary();
                    // Dropping the sink aborts the request; dropping the job kills ffmpeg.
                    drop(sink);
                    drop(ffmpeg);
                    return (summary, Ended::Failed(kvs_failure(&e)));
                }
                live.lock().unwrap_or_else(|e| e.into_inner()).bytes_in += n;
            }
        }
    };
    if let Some(job) = &ffmpeg {
        // Interrupted or failed: stop ffmpeg now; what was already sent is still acknowledged.
        if !matches!(ended, Ended::Done) {
            job.cancel();
        }
    }
    drop(ffmpeg);
    let snapshot = sink.summary();
    match sink.close().await {
        Ok(summary) => (summary, ended),
        // Fragments refused, skipped or dropped: the caller reports the loss (exit 5).
        Err(kvs_putmedia::Error::Incomplete { summary, .. }) => (*summary, ended),
        Err(e) => {
            let ended = match ended {
                Ended::Done => Ended::Failed(kvs_failure(&e)),
                other => other,
            };
            (snapshot, ended)
        }
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
            Source::S3 {
                bucket: "b".into(),
                key: "dir/k.mp4".into()
            }
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
    fn fast_pacing_backfills_one_duration_plus_a_second() {
        let before = epoch_ms();
        let TimecodeMode::Absolute { origin_epoch_ms } = timecode_mode(
            Timecode::Absolute,
            Pacing::Fast,
            Some(Duration::from_secs(60)),
            true,
        ) else {
            panic!("fast pacing uses ABSOLUTE timecodes");
        };
        // Reference §4.10: the last frame (origin + 60 s) lies a second before now, not after.
        assert!(origin_epoch_ms + 61_000 >= before && origin_epoch_ms + 61_000 <= epoch_ms());
        assert_eq!(
            timecode_mode(Timecode::Relative, Pacing::Fast, None, true),
            TimecodeMode::Relative
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
