//! `kvs-put`: stream a file, an `http(s)://` URL, an `s3://bucket/key` object or MKV on stdin
//! into an Amazon Kinesis Video Streams stream over PutMedia.
//!
//! A thin binary: ffmpeg handling lives in `ffmpeg-source`, re-fragmenting, signing and the
//! acknowledgement ledger in `kvs-putmedia`, the offline service in `kvs-emulator`. This crate
//! only parses flags, wires them together, shows progress and maps outcomes to exit codes.

mod cli;
mod report;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn init_logging() {
    // Progress and diagnostics go to stderr; stdout is reserved for the `--json` summary.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("kvs_put=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // No colour codes in log files and CI output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    let json = cli.json;
    let report = run::run(cli).await;
    report::finish(&report, json);
    ExitCode::from(report.exit_code as u8)
}
