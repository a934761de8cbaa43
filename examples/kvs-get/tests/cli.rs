//! `kvs-get` against the emulator: real ffmpeg media streamed with the kvs-putmedia library,
//! read back through the SDK by the binary, the file checked by ffprobe.

use std::process::Output;
use std::time::Duration;

use kvs_emulator::Emulator;
use kvs_putmedia::mkv::TimecodeMode;
use kvs_test_support::emu::{aws_env, now_ms, put_mkv};
use kvs_test_support::media::{Clip, clean_video_frames};
use serde_json::Value;

/// `seconds` of H.264 (a keyframe every second) as Matroska.
fn clip(seconds: u32) -> Vec<u8> {
    Clip::new(seconds).with_keyframe_every_second(true).bytes()
}

async fn put(emu: &Emulator, stream: &str, mkv: Vec<u8>, origin_epoch_ms: u64) {
    put_mkv(emu, stream, mkv, TimecodeMode::Absolute { origin_epoch_ms }).await;
}

async fn kvs_get(emu: &Emulator, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-get"))
        .args(args)
        .envs(aws_env(emu))
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap()
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
    put(&emu, "cam", clip(4), origin).await;
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
    assert_eq!(clean_video_frames(&out_path), Ok(100));

    // A second recording five seconds after the first ends: one gap, exit 1, file still there.
    put(&emu, "cam", clip(2), origin + 9_000).await;
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
    assert_eq!(clean_video_frames(&mkv_path), Ok(150));
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
