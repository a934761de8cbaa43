//! `kvs-get`: save a Kinesis video stream's time range as one playable file, and check it.
//!
//! Works against the real service and the emulator alike, through the unmodified SDK clients:
//! GetDataEndpoint, ListFragments (every page), GetMediaForFragmentList (in batches of 1000),
//! then ffmpeg's concat demuxer joins the fragments into one MKV or MP4 (by the output's
//! extension). The check reports fragments that do not start with a keyframe, gaps between
//! fragments over `--gap-tolerance-ms`, and overlaps; it exits 1 when it finds any (the file is
//! still written), 2 on a usage error and 3 on any other failure.

mod check;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};
use clap::{Parser, ValueEnum};

use crate::check::{FragmentInfo, Report};

/// Save a stream's time range as one playable file and check it.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The stream's name.
    #[arg(long)]
    stream: String,
    /// Start of the range: RFC 3339 (`2024-05-01T10:00:00Z`) or epoch seconds.
    #[arg(long, value_parser = parse_time)]
    start: f64,
    /// End of the range (inclusive), same forms as `--start`.
    #[arg(long, value_parser = parse_time)]
    end: f64,
    /// Which timestamps the range selects.
    #[arg(long, value_enum, default_value_t = Timestamps::Producer)]
    timestamps: Timestamps,
    /// The file to write; `.mp4` gives MP4, anything else Matroska.
    #[arg(short, long)]
    output: PathBuf,
    /// Largest gap between consecutive fragments that is not reported, in ms.
    #[arg(long, default_value_t = 100)]
    gap_tolerance_ms: u64,
    /// KVS endpoint (default: the SDK's, including AWS_ENDPOINT_URL).
    #[arg(long, env = "KVS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Timestamps {
    Producer,
    Server,
}

fn parse_time(s: &str) -> Result<f64, String> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(secs);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        .map_err(|e| format!("{s:?} is neither epoch seconds nor RFC 3339: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kvs_get=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli.end < cli.start {
        eprintln!("kvs-get: --end is before --start");
        return ExitCode::from(2);
    }
    match run(&cli).await {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                eprintln!("{}", report.summary());
            }
            ExitCode::from(if report.ok { 0 } else { 1 })
        }
        Err(e) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": format!("{e:#}") })
                );
            }
            eprintln!("kvs-get: {e:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: &Cli) -> Result<Report> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let kv = aws_sdk_kinesisvideo::Client::new(&sdk);
    let endpoint = kv
        .get_data_endpoint()
        .stream_name(&cli.stream)
        .api_name(ApiName::ListFragments)
        .send()
        .await
        .with_context(|| format!("GetDataEndpoint for stream {}", cli.stream))?
        .data_endpoint
        .context("GetDataEndpoint answered no endpoint")?;
    let am = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
        aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .build(),
    );
    let selector = FragmentSelector::builder()
        .fragment_selector_type(match cli.timestamps {
            Timestamps::Producer => FragmentSelectorType::ProducerTimestamp,
            Timestamps::Server => FragmentSelectorType::ServerTimestamp,
        })
        .timestamp_range(
            TimestampRange::builder()
                .start_timestamp(DateTime::from_secs_f64(cli.start))
                .end_timestamp(DateTime::from_secs_f64(cli.end))
                .build()?,
        )
        .build()?;
    let mut fragments = Vec::new();
    let mut token = None;
    loop {
        let page = am
            .list_fragments()
            .stream_name(&cli.stream)
            .fragment_selector(selector.clone())
            .set_next_token(token)
            .send()
            .await
            .with_context(|| format!("ListFragments of stream {}", cli.stream))?;
        for f in page.fragments() {
            fragments.push(FragmentInfo {
                number: f.fragment_number().unwrap_or_default().to_owned(),
                producer_ms: f
                    .producer_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                server_ms: f
                    .server_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                duration_ms: f.fragment_length_in_milliseconds(),
                keyframe_first: None,
            });
        }
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    if fragments.is_empty() {
        bail!("stream {} has no fragment in the range", cli.stream);
    }
    // ListFragments does not promise an order.
    fragments.sort_by_key(|f| (f.producer_ms, f.number.clone()));
    tracing::info!(fragments = fragments.len(), "listed");
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut list = String::new();
    let mut bytes = 0u64;
    for batch in fragments.chunks_mut(1000) {
        let numbers: Vec<String> = batch.iter().map(|f| f.number.clone()).collect();
        let out = am
            .get_media_for_fragment_list()
            .stream_name(&cli.stream)
            .set_fragments(Some(numbers))
            .send()
            .await
            .context("GetMediaForFragmentList")?;
        let media = out
            .payload
            .collect()
            .await
            .context("reading GetMediaForFragmentList")?
            .into_bytes();
        bytes += media.len() as u64;
        // Each fragment comes as its own Matroska document (EBML header, Segment, one Cluster).
        let docs = check::split_documents(&media)?;
        if docs.len() != batch.len() {
            bail!(
                "GetMediaForFragmentList returned {} fragments for {} requested",
                docs.len(),
                batch.len()
            );
        }
        for (f, doc) in batch.iter_mut().zip(docs) {
            f.keyframe_first = Some(check::first_block_is_keyframe(doc)?);
            let path = dir.path().join(format!("{}.mkv", f.number));
            std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
            list.push_str(&format!("file '{}'\n", path.display()));
        }
    }
    let list_path = dir.path().join("list.txt");
    std::fs::write(&list_path, list)?;
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
        ])
        .arg(&list_path)
        .args(["-map", "0", "-c", "copy"])
        .arg(&cli.output)
        .kill_on_drop(true)
        .status()
        .await
        .context("running ffmpeg")?;
    if !status.success() {
        bail!(
            "ffmpeg could not join the fragments into {} ({status})",
            cli.output.display()
        );
    }
    let mut report = check::check(&fragments, cli.gap_tolerance_ms);
    report.stream = cli.stream.clone();
    report.file = cli.output.display().to_string();
    report.bytes = bytes;
    Ok(report)
}
