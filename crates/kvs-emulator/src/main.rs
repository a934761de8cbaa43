//! `kvs-emulator`: a local Kinesis Video Streams (with S3 and STS) on one port.
//!
//! The first line of output is `listening on http://HOST:PORT`, followed by the environment a
//! user exports to point AWS tools at it. Ctrl-C or SIGTERM stops it cleanly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kvs_emulator::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY, Emulator, FaultRule, MediaRetention,
    parse_fault_script,
};

/// A faithful local Kinesis Video Streams (control plane, PutMedia, GetMedia, archived media)
/// with S3 and STS, on one port.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "KVS_EMULATOR_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, env = "KVS_EMULATOR_PORT", default_value_t = 0)]
    port: u16,
    /// Keep streams, fragments, S3 objects and SQS queues here so they survive a restart (in memory when absent).
    #[arg(long, env = "KVS_EMULATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Region served.
    #[arg(long, env = "KVS_EMULATOR_REGION", default_value = "us-east-1")]
    region: String,
    /// Access key id accepted.
    #[arg(long, env = "KVS_EMULATOR_ACCESS_KEY_ID", default_value = DEFAULT_ACCESS_KEY_ID)]
    access_key_id: String,
    /// Secret access key accepted.
    #[arg(long, env = "KVS_EMULATOR_SECRET_ACCESS_KEY", default_value = DEFAULT_SECRET_ACCESS_KEY, hide_default_value = true)]
    secret_access_key: String,
    /// Delay between RECEIVED and PERSISTED, in milliseconds.
    #[arg(long, default_value_t = 100)]
    persist_delay_ms: u64,
    /// Interval of IDLE acks while no media flows, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    idle_ack_interval_ms: u64,
    /// Close a PutMedia connection after this many seconds without data.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
    /// Send 4003 and close PutMedia connections older than this many seconds.
    #[arg(long, default_value_t = 45 * 60)]
    max_connection_duration_secs: u64,
    /// Per-stream ingest rate limit in bytes per second.
    #[arg(long, default_value_t = 12_500_000)]
    ingest_rate_limit: u64,
    /// Largest accepted clock skew of signed requests, in seconds.
    #[arg(long, default_value_t = 300)]
    max_clock_skew_secs: u64,
    /// PutMedia requests accepted per stream within one second (0: no limit).
    #[arg(long, default_value_t = 5)]
    put_media_requests_per_second: u32,
    /// Keep fragment metadata only, not media bytes nor the ack log, so a long many-stream load
    /// run stays flat in memory (GetMedia is then refused). Not with --data-dir.
    #[arg(long)]
    metadata_only: bool,
    /// How long a PutMedia superseded by a newer one on its stream (rotation) may keep sending,
    /// in seconds (0: refuse the newer one with ConnectionLimitExceeded instead).
    #[arg(long, default_value_t = kvs_emulator::DEFAULT_ROTATION_OVERLAP.as_secs())]
    rotation_overlap_secs: u64,
    /// Seed of the fault-injection randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A JSON file holding an array of fault rules (see docs/emulator.md).
    #[arg(long)]
    fault_script: Option<PathBuf>,
    /// One fault rule as JSON, e.g. '{"DropAfterBytes":{"bytes":100000}}' (repeatable).
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Log filter (tracing EnvFilter syntax); logs go to stderr.
    #[arg(long, env = "KVS_EMULATOR_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Colour only for a person at a terminal: a log file, a pipe or CI gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();

    let mut rules: Vec<FaultRule> = Vec::new();
    if let Some(path) = &args.fault_script {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        rules.extend(
            parse_fault_script(&text).with_context(|| format!("parsing {}", path.display()))?,
        );
    }
    for f in &args.faults {
        rules.push(serde_json::from_str(f).with_context(|| format!("parsing --fault {f}"))?);
    }

    let mut builder = Emulator::builder()
        .with_bind(SocketAddr::new(args.host, args.port))
        .with_region(&args.region)
        .with_credentials(&args.access_key_id, &args.secret_access_key)
        .with_persist_delay(Duration::from_millis(args.persist_delay_ms))
        .with_idle_ack_interval(Duration::from_millis(args.idle_ack_interval_ms))
        .with_idle_timeout(Duration::from_secs(args.idle_timeout_secs))
        .with_max_connection_duration(Duration::from_secs(args.max_connection_duration_secs))
        .with_ingest_rate_limit(args.ingest_rate_limit)
        .with_max_clock_skew(Duration::from_secs(args.max_clock_skew_secs))
        .with_put_media_requests_per_second(args.put_media_requests_per_second)
        .with_rotation_overlap(Duration::from_secs(args.rotation_overlap_secs))
        .with_media_retention(if args.metadata_only {
            MediaRetention::MetadataOnly
        } else {
            MediaRetention::Full
        })
        .with_seed(args.seed);
    if let Some(d) = &args.data_dir {
        builder = builder.with_data_dir(d);
    }
    let emu = builder.start().await.context("starting the emulator")?;
    for r in rules {
        emu.faults().push(r);
    }

    // Install the signal handlers before saying "listening": a supervisor (or a test) that sends
    // SIGTERM as soon as it reads that line must get a clean stop, not the default action.
    let signal = wait_for_signal()?;

    let url = emu.url();
    let creds = emu.credentials();
    println!("listening on {url}");
    println!("export AWS_ENDPOINT_URL={url}");
    println!("export AWS_ACCESS_KEY_ID={}", creds.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", creds.secret_access_key);
    println!("export AWS_REGION={}", emu.region());
    // boto3 and the AWS CLI v1 read only AWS_DEFAULT_REGION.
    println!("export AWS_DEFAULT_REGION={}", emu.region());
    use std::io::Write as _;
    std::io::stdout().flush().ok();

    signal.await?;
    tracing::info!("stopping");
    emu.shutdown().await;
    Ok(())
}

/// Registers SIGTERM and Ctrl-C now; the returned future completes on either.
fn wait_for_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // `ctrl_c()` registers its handler on first poll: poll it once now through a pinned future.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let _ = futures::FutureExt::now_or_never(&mut ctrl_c);
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            r = &mut ctrl_c => r?,
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        ctrl_c.await?;
        Ok(())
    })
}
