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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // Progress and diagnostics go to stderr; stdout is reserved for the `--json` summary.
    examples_support::init_logging("kvs_put=info,warn", false);
    let json = cli.json;
    let report = run::run(cli).await;
    report::finish(&report, json);
    ExitCode::from(report.exit_code as u8)
}
