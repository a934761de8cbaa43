//! `s3-to-kvs`: the Node sample's Fargate container, done right.
//!
//! `serve` (the default) answers `POST /processObject {"bucketName","keyName"}` (or an S3 event
//! notification) by streaming the object through ffmpeg into Kinesis Video Streams; `worker`
//! consumes an SQS queue of S3 uploads and streams each into its stream (`kvs_pipeline::worker`);
//! `demo` runs the whole system on an embedded emulator, no AWS account needed.

mod demo;
mod healthcheck;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use aws_config::SdkConfig;
use clap::{Parser, Subcommand, ValueEnum};
use examples_support::{init_logging, shutdown_signal};
use ffmpeg_source::Pacing;
use kvs_pipeline::emf::{Emf, Metric};
use kvs_pipeline::service::{self as http, jobs};
use kvs_pipeline::streams::{Route, Sessions};
use kvs_pipeline::worker::{ObjectMetrics, Worker, WorkerConfig};
use kvs_putmedia::{PutMediaClientBuilder, StreamId};
use tokio_util::sync::CancellationToken;

/// Stream S3 objects into Kinesis Video Streams through ffmpeg.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Consume an SQS queue of S3 uploads: each object streamed into its stream, in upload
    /// order per stream, deleted from the queue only when every fragment was persisted.
    Worker(WorkerArgs),
    /// The main job on an embedded emulator: make a clip, upload it to S3, POST /processObject,
    /// stream it, read the fragments back and print a summary.
    Demo(demo::DemoArgs),
    /// Exit 0 when the service on this host answers `GET /health` with 200 (container health check).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for CloudWatch and other collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Worker configuration: flags, each mirrored by an environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The work queue: FIFO with MessageGroupId = target stream (one object per stream at a
    /// time, in order, across workers), or standard when every object has its own stream.
    #[arg(long, env = "QUEUE_URL")]
    pub queue_url: String,
    /// A standard queue S3 event notifications go to: each event is forwarded into QUEUE_URL
    /// grouped by its stream, then deleted (S3 cannot notify a FIFO queue).
    #[arg(long, env = "INTAKE_QUEUE_URL")]
    pub intake_queue_url: Option<String>,
    /// Every object into this stream.
    #[arg(
        long,
        env = "STREAM_NAME",
        conflicts_with = "stream_template",
        required_unless_present = "stream_template"
    )]
    pub stream_name: Option<String>,
    /// Stream per object: `{key_dir}` (the key's first path segment) and `{bucket}`, e.g.
    /// `cam-{key_dir}`.
    #[arg(long, env = "STREAM_TEMPLATE")]
    pub stream_template: Option<String>,
    /// Create a missing stream on first use.
    #[arg(long, env = "CREATE_STREAMS")]
    pub create_streams: bool,
    /// Data retention of created streams, in hours.
    #[arg(long, env = "RETENTION_HOURS", default_value_t = 24)]
    pub retention_hours: u32,
    /// Objects streamed at once (each into a different stream) over one client.
    #[arg(long, env = "CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// On SIGTERM, how long in-flight objects get before they are stopped and their messages
    /// returned (ECS waits 30 s by default).
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
    /// Visibility timeout taken on receive and renewed while an object streams.
    #[arg(long, env = "VISIBILITY_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..=43200))]
    pub visibility_seconds: u64,
    /// Pacing (fast: timestamps anchored in the past, see docs/operations.md).
    #[arg(long, env = "PACE", default_value_t = Pacing::Fast)]
    pub pace: Pacing,
    /// Port of the HTTP API (GET /health, /jobs; POST /processObject enqueues).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Role to assume through STS (once per process; refreshed before expiry).
    #[arg(long, env = "ECS_ROLE")]
    pub assume_role: Option<String>,
    /// CloudWatch namespace of the metrics (EMF lines on stdout).
    #[arg(long, env = "METRICS_NAMESPACE", default_value = kvs_pipeline::emf::DEFAULT_NAMESPACE)]
    pub metrics_namespace: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

/// Service configuration: flags, each mirrored by the environment variable the Node sample used
/// or a new one.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Target stream ARN (the Node sample's variable).
    #[arg(long, env = "KVS_STREAM_ARN", conflicts_with = "stream_name")]
    pub stream_arn: Option<String>,
    /// Target stream name, instead of an ARN.
    #[arg(long, env = "KVS_STREAM_NAME")]
    pub stream_name: Option<String>,
    /// Role to assume through STS before streaming (the Node sample's `ECS_ROLE`).
    #[arg(long, env = "ECS_ROLE")]
    pub assume_role: Option<String>,
    /// Objects admitted while another one streams, waiting their turn; more get `429` with
    /// `Retry-After`. Jobs run one at a time: they all target the one configured stream, and KVS
    /// allows one PutMedia connection per stream (a second is refused with
    /// ConnectionLimitExceededException, docs/protocol.md §3).
    #[arg(long, env = "MAX_QUEUED_OBJECTS", default_value_t = 16)]
    pub queue: usize,
    /// On SIGTERM, how long running streams get to end cleanly (ECS waits 30 s by default).
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
    /// How long `processObject` waits for the first acknowledgement before answering `202`.
    #[arg(long, env = "FIRST_ACK_WAIT_SECONDS", default_value_t = 60)]
    pub first_ack_wait_seconds: u64,
    /// Pacing of the stream.
    #[arg(long, env = "PACE", default_value_t = Pacing::Realtime)]
    pub pace: Pacing,
    /// Start an embedded emulator (KVS, S3, STS) and stream to it: no AWS account needed.
    #[arg(long)]
    pub emulator: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Demo(args)) => {
            // The demo prints its own report on stdout; logs only for what went wrong.
            init_logging("warn", false);
            demo::run(args).await
        }
        Some(Command::Worker(args)) => {
            init_logging("info", args.log_format == LogFormat::Json);
            worker(args).await
        }
        Some(Command::Healthcheck(args)) => healthcheck::run(args).await,
        Some(Command::Serve) | None => {
            init_logging("info", cli.serve.log_format == LogFormat::Json);
            serve(cli.serve).await
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if std::env::var_os("COUNT_FREQUENCY").is_some() {
        tracing::info!(
            "COUNT_FREQUENCY is ignored: acknowledgements are tracked per fragment, see GET /jobs"
        );
    }
    let emulator = if args.emulator {
        Some(demo::start_emulator().await?)
    } else {
        None
    };
    let config = match &emulator {
        Some(emu) => emu.sdk_config(),
        None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
    };
    let stream = match (&args.stream_name, &args.stream_arn) {
        (Some(n), None) => StreamId::Name(n.clone()),
        (None, Some(a)) => StreamId::Arn(a.clone()),
        (None, None) if emulator.is_some() => StreamId::Name(demo::DEMO_STREAM.into()),
        _ => bail!(
            "set exactly one of KVS_STREAM_NAME (--stream-name) or KVS_STREAM_ARN (--stream-arn)"
        ),
    };
    if let (Some(emu), StreamId::Name(name)) = (&emulator, &stream) {
        demo::create_stream(emu, name).await?;
    }
    // An http:// endpoint the user set (the AWS environment or profile, or --emulator) is the
    // explicit opt-in to plain HTTP; otherwise TLS is required and verified.
    let allow_http = emulator.is_some() || http_endpoint(&config);
    let sessions = sessions(&config, allow_http, args.assume_role.as_deref())?;
    let runner = http::Runner::new(&config, sessions, stream, args.pace, allow_http);
    let app = Arc::new(http::App {
        registry: Arc::new(jobs::Registry::new(jobs::Limits {
            concurrency: 1,
            queue: args.queue,
            history: 1000,
        })),
        runner: Some(Arc::new(runner)),
        worker: None,
        stop: CancellationToken::new(),
        first_ack_wait: Duration::from_secs(args.first_ack_wait_seconds),
    });
    let listener = http::bind(SocketAddr::new(args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    http::serve(
        listener,
        app,
        shutdown_signal(),
        Duration::from_secs(args.drain_seconds),
    )
    .await?;
    drop(emulator);
    Ok(())
}

/// An http:// endpoint the user set (the AWS environment or profile) is the explicit opt-in to
/// plain HTTP (the library's rule, `PutMediaClientBuilder::allows_http`).
fn http_endpoint(config: &SdkConfig) -> bool {
    PutMediaClientBuilder::from_env_with(config.clone()).allows_http()
}

/// The one place sessions are configured: one builder (SDK config, role) for every session.
fn sessions(config: &SdkConfig, allow_http: bool, role: Option<&str>) -> anyhow::Result<Sessions> {
    let mut b = PutMediaClientBuilder::from_env_with(config.clone()).with_allow_http(allow_http);
    if let Some(role) = role {
        b = b.with_assume_role(role);
    }
    Ok(Sessions::new(b)?)
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let route = match (&args.stream_name, &args.stream_template) {
        (Some(n), None) => {
            kvs_pipeline::streams::validate_name(n).map_err(anyhow::Error::msg)?;
            Route::Fixed(StreamId::Name(n.clone()))
        }
        (None, Some(t)) => Route::template(t).map_err(anyhow::Error::msg)?,
        _ => bail!(
            "set exactly one of STREAM_NAME (--stream-name) or STREAM_TEMPLATE (--stream-template)"
        ),
    };
    let allow_http = http_endpoint(&config);
    let mut cfg = WorkerConfig::new(&args.queue_url, route);
    cfg.intake_queue_url = args.intake_queue_url.clone();
    cfg.create_streams = args.create_streams.then_some(args.retention_hours);
    cfg.concurrency = args.concurrency as usize;
    cfg.drain = Duration::from_secs(args.drain_seconds);
    cfg.visibility = Duration::from_secs(args.visibility_seconds);
    cfg.pacing = args.pace;
    cfg.allow_http = allow_http;
    let sessions = sessions(&config, allow_http, args.assume_role.as_deref())?;
    let emf = Emf::new(&args.metrics_namespace, std::io::stdout())?;
    let metrics = move |m: &ObjectMetrics| {
        let mut values = vec![
            (Metric::FragmentsPersisted, m.fragments_persisted as f64),
            (Metric::FragmentsFailed, m.fragments_failed as f64),
            (
                if m.ok {
                    Metric::ObjectsDone
                } else {
                    Metric::ObjectsFailed
                },
                1.0,
            ),
        ];
        if let Some(l) = m.persisted_latency_p50 {
            values.push((Metric::PutMediaLatency, l.as_secs_f64() * 1000.0));
        }
        if let Some(a) = m.message_age {
            values.push((Metric::MessageAgeSeconds, a.as_secs_f64()));
        }
        if let Err(e) = emf.emit(&m.stream, &values) {
            tracing::warn!(error = %e, "writing metrics failed");
        }
    };
    let worker = Arc::new(Worker::new(cfg, &config, sessions).with_metrics(Arc::new(metrics)));
    let app = Arc::new(http::App {
        registry: Arc::new(jobs::Registry::new(jobs::Limits {
            concurrency: 1,
            queue: 0,
            history: 0,
        })),
        runner: None::<Arc<http::Runner>>,
        worker: Some(worker.clone()),
        stop: CancellationToken::new(),
        first_ack_wait: Duration::ZERO,
    });
    let listener = http::bind(SocketAddr::new(args.host, args.port)).await?;
    tracing::info!(addr = %listener.local_addr()?, queue = %args.queue_url, "listening");
    let stop = CancellationToken::new();
    let http = tokio::spawn(http::serve(
        listener,
        app,
        stop.clone().cancelled_owned(),
        Duration::ZERO,
    ));
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    worker.run(stop.clone()).await;
    stop.cancel();
    http.await??;
    Ok(())
}
