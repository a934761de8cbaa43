//! `kvs-get` against the emulator: real ffmpeg media streamed with the kvs-putmedia library,
//! read back through the SDK by the binary, the file checked by ffprobe.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::SinkExt;
use kvs_emulator::Emulator;
use kvs_putmedia::PutMediaClientBuilder;
use kvs_putmedia::mkv::TimecodeMode;
use serde_json::Value;

fn clip(dir: &Path, seconds: u32) -> Vec<u8> {
    let out = dir.join(format!("clip{seconds}.mkv"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "matroska",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

async fn put(emu: &Emulator, stream: &str, mkv: Vec<u8>, origin_epoch_ms: u64) {
    let c = emu.credentials();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(emu.region().to_owned()))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    c.access_key_id,
                    c.secret_access_key,
                    None,
                    None,
                    "t",
                ),
            ),
        )
        .build();
    let client = PutMediaClientBuilder::new()
        .with_sdk_config(sdk)
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        .with_stream_name(stream)
        .with_timecode_mode(TimecodeMode::Absolute { origin_epoch_ms })
        .build()
        .unwrap();
    let (mut sink, mut acks) = client.start().await.unwrap();
    let drain =
        tokio::spawn(async move { while futures::StreamExt::next(&mut acks).await.is_some() {} });
    sink.send(Bytes::from(mkv)).await.unwrap();
    let summary = sink.close().await.unwrap();
    drain.await.unwrap();
    assert!(summary.fragments_failed.is_empty());
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn kvs_get(emu: &Emulator, args: &[&str]) -> Output {
    let c = emu.credentials();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-get"))
        .args(args)
        .env("AWS_ENDPOINT_URL", emu.url())
        .env("AWS_REGION", emu.region())
        .env("AWS_ACCESS_KEY_ID", c.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", c.secret_access_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap()
}

fn frames(path: &Path) -> u64 {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn saves_a_range_as_one_playable_file_and_checks_it() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    emu.create_stream("cam", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let origin = now_ms() - 120_000;
    put(&emu, "cam", clip(dir.path(), 4), origin).await;
    let stored = emu.fragments("cam");
    assert!(stored.len() >= 2, "{} fragments", stored.len());
    let out_path = dir.path().join("out.mp4");
    let start = format!("{}", origin as f64 / 1000.0);
    let end = format!("{}", (origin + 60_000) as f64 / 1000.0);
    let out = kvs_get(
        &emu,
        &[
            "--stream",
            "cam",
            "--start",
            &start,
            "--end",
            &end,
            "-o",
            out_path.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["fragments"].as_u64().unwrap() as usize, stored.len());
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert_eq!(frames(&out_path), 100);

    // A second recording five seconds after the first ends: one gap, exit 1, file still there.
    put(&emu, "cam", clip(dir.path(), 2), origin + 9_000).await;
    let mkv_path = dir.path().join("out.mkv");
    let out = kvs_get(
        &emu,
        &[
            "--stream",
            "cam",
            "--start",
            &start,
            "--end",
            &end,
            "-o",
            mkv_path.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["kind"], "gap");
    // Five seconds, plus at most the one frame a fragment's listed length may leave out.
    let gap = problems[0]["ms"].as_i64().unwrap();
    assert!((5000..=5040).contains(&gap), "{gap}");
    assert_eq!(frames(&mkv_path), 150);
}

#[tokio::test]
async fn an_empty_range_and_an_unknown_stream_fail_clearly() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("empty", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("x.mkv");
    let out = kvs_get(
        &emu,
        &[
            "--stream",
            "empty",
            "--start",
            "0",
            "--end",
            "10",
            "-o",
            o.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no fragment in the range"));
    assert!(!o.exists());
    let out = kvs_get(
        &emu,
        &[
            "--stream",
            "nope",
            "--start",
            "2024-01-01T00:00:00Z",
            "--end",
            "2024-01-01T00:01:00Z",
            "-o",
            o.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
    let out = kvs_get(
        &emu,
        &[
            "--stream",
            "x",
            "--start",
            "yesterday",
            "--end",
            "1",
            "-o",
            "x.mkv",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}
