//! `kvs-get`: save a Kinesis video stream's time range as one playable file, and check it.
//!
//! Works against the real service and the emulator alike, through the unmodified SDK clients:
//! GetDataEndpoint, ListFragments (every page), GetMediaForFragmentList (in batches of 1000),
//! then ffmpeg's concat demuxer joins the fragments into one MKV or MP4 (by the output's
//! extension). The check reports fragments that do not start with a keyframe, gaps between
//! fragments over `--gap-tolerance-ms`, and overlaps; it exits 1 when it finds any (the file is
//! still written), 2 on a usage error and 3 on any other failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kvs_pipeline::readback::{self, Archive, Check, Timestamps};
use serde::Serialize;

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
    #[arg(long, value_name = "producer|server", default_value_t = Timestamps::Producer)]
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
    examples_support::init_logging("kvs_get=info,warn", false);
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
                let c = &report.check;
                eprintln!(
                    "{}: {} fragments, {:.1} s of media over {:.1} s, {} problem(s) -> {}",
                    report.stream,
                    c.fragments,
                    c.media_ms as f64 / 1000.0,
                    c.span_ms as f64 / 1000.0,
                    c.problems.len(),
                    report.file
                );
            }
            ExitCode::from(if report.check.ok { 0 } else { 1 })
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

/// The check's result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    check: Check,
    stream: String,
    file: String,
    /// Media bytes fetched.
    bytes: u64,
}

async fn run(cli: &Cli) -> Result<Report> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let archive = Archive::connect(&loader.load().await, &cli.stream).await?;
    let at = |secs: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
    let mut fragments = archive
        .list(cli.timestamps, (at(cli.start), at(cli.end)))
        .await?;
    if fragments.is_empty() {
        bail!("stream {} has no fragment in the range", cli.stream);
    }
    tracing::info!(fragments = fragments.len(), "listed");
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut list = String::new();
    let bytes = archive
        .fetch(&mut fragments, |f, doc| {
            let path = dir.path().join(format!("{}.mkv", f.number));
            list.push_str(&format!("file '{}'\n", path.display()));
            std::fs::write(&path, doc)
        })
        .await?;
    let list_path = dir.path().join("list.txt");
    std::fs::write(&list_path, list)?;
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "concat", "-safe", "0", "-i"])
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
    Ok(Report {
        check: readback::check(&fragments, cli.gap_tolerance_ms),
        stream: cli.stream.clone(),
        file: cli.output.display().to_string(),
        bytes,
    })
}
