//! `s3-to-kvs`: the Node sample's Fargate container, done right.
//!
//! `serve` (the default) answers `POST /processObject {"bucketName","keyName"}` (or an S3 event
//! notification) by streaming the object through ffmpeg into Kinesis Video Streams; `demo` runs the
//! whole job on an embedded emulator, no AWS account needed.

mod demo;
// Called by the queue worker (issue 14); until it lands only the tests use it.
#[allow(dead_code)]
mod emf;
mod healthcheck;
mod http;
mod jobs;
mod pipeline;
mod request;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
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
    /// The main job on an embedded emulator: make a clip, upload it to S3, POST /processObject,
    /// stream it, read the fragments back and print a summary.
    Demo(demo::DemoArgs),
    /// Exit 0 when the service on this host answers `GET /health` with 200 (container health check).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for CloudWatch and other collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Pacing of ffmpeg's output.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Pace {
    /// Native frame rate, as the Node sample (`-re`): a live-like stream.
    Realtime,
    /// As fast as ffmpeg and the KVS per-stream rate allow; timestamps start in the past.
    Fast,
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
    /// ConnectionLimitExceededException, reference §3).
    #[arg(long, env = "MAX_QUEUED_OBJECTS", default_value_t = 16)]
    pub queue: usize,
    /// On SIGTERM, how long running streams get to end cleanly (ECS waits 30 s by default).
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = 25)]
    pub drain_seconds: u64,
    /// How long `processObject` waits for the first acknowledgement before answering `202`.
    #[arg(long, env = "FIRST_ACK_WAIT_SECONDS", default_value_t = 60)]
    pub first_ack_wait_seconds: u64,
    /// Pacing of the stream.
    #[arg(long, env = "PACE", value_enum, default_value_t = Pace::Realtime)]
    pub pace: Pace,
    /// Start an embedded emulator (KVS, S3, STS) and stream to it: no AWS account needed.
    #[arg(long)]
    pub emulator: bool,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Demo(args)) => {
            // The demo prints its own report on stdout; logs only for what went wrong.
            init_logging(LogFormat::Text, "warn");
            demo::run(args).await
        }
        Some(Command::Healthcheck(args)) => healthcheck::run(args).await,
        Some(Command::Serve) | None => {
            init_logging(cli.serve.log_format, "info");
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
        Some(emu) => demo::emulator_sdk_config(emu).await,
        None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
    };
    let target = match (&args.stream_name, &args.stream_arn) {
        (Some(n), None) => pipeline::Target::Name(n.clone()),
        (None, Some(a)) => pipeline::Target::Arn(a.clone()),
        (None, None) if emulator.is_some() => pipeline::Target::Name(demo::DEMO_STREAM.into()),
        _ => bail!(
            "set exactly one of KVS_STREAM_NAME (--stream-name) or KVS_STREAM_ARN (--stream-arn)"
        ),
    };
    if let (Some(emu), pipeline::Target::Name(name)) = (&emulator, &target) {
        demo::create_stream(emu, name).await?;
    }
    // An http:// endpoint the user set (the AWS environment or profile, or --emulator) is the
    // explicit opt-in to plain HTTP; otherwise TLS is required and verified.
    let allow_http = emulator.is_some()
        || kvs_putmedia::PutMediaClientBuilder::from_env_with(config.clone()).allows_http();
    let runner = pipeline::Pipeline::new(
        &config,
        target,
        args.pace,
        allow_http,
        args.assume_role.clone(),
    );
    let app = Arc::new(http::App {
        registry: Arc::new(jobs::Registry::new(jobs::Limits {
            concurrency: 1,
            queue: args.queue,
            history: 1000,
        })),
        runner: Arc::new(runner),
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
