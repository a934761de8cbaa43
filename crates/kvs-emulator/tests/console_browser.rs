//! The web console in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (`tests/browser/console.mjs`) against a stream that the kvs-putmedia library
//! filled with ffmpeg's H.264. Needs `npm ci` in `tests/browser` and `/usr/bin/chromium`, so it
//! is opt-in: `scripts/test.sh` installs both and runs it with `--ignored`.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::SinkExt;
use kvs_emulator::Emulator;
use kvs_putmedia::PutMediaClientBuilder;
use kvs_putmedia::mkv::TimecodeMode;
use serde_json::Value;

async fn fill(emu: &Emulator, stream: &str, seconds: u32) {
    let origin_epoch_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - u64::from(seconds) * 1000
        - 1000;
    let client = PutMediaClientBuilder::new()
        .with_sdk_config(support::sdk_config(emu).await)
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        .with_stream_name(stream)
        .with_timecode_mode(TimecodeMode::Absolute { origin_epoch_ms })
        .build()
        .unwrap();
    let (mut sink, mut acks) = client.start().await.unwrap();
    let drain =
        tokio::spawn(async move { while futures::StreamExt::next(&mut acks).await.is_some() {} });
    sink.send(Bytes::from(support::make_clip(seconds)))
        .await
        .unwrap();
    let summary = sink.close().await.unwrap();
    drain.await.unwrap();
    assert!(summary.fragments_failed.is_empty());
}

async fn drive(url: &str, mode: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("node")
            .arg("console.mjs")
            .arg(url)
            .arg(mode)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends within 90 s")
    .expect("node runs (npm ci in tests/browser first)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "console.mjs failed: {stderr}");
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {line} / {stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium and `npm ci` in tests/browser; scripts/test.sh runs it"]
async fn console_plays_and_shows_the_timeline_in_chromium() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    emu.create_stream("cam", 24).await.unwrap();
    fill(&emu, "cam", 8).await;
    let am = aws_sdk_kinesisvideoarchivedmedia::Client::new(&support::sdk_config(&emu).await);
    let listed = am
        .list_fragments()
        .stream_name("cam")
        .send()
        .await
        .unwrap()
        .fragments()
        .len();
    assert!(listed >= 3, "{listed}");
    let url = emu.console_url("cam");
    for mode in ["ON_DEMAND", "LIVE"] {
        let v = drive(&url, mode).await;
        let t0 = v["time0"].as_f64().unwrap_or(0.0);
        let t1 = v["time1"].as_f64().unwrap_or(0.0);
        assert!(t1 > t0 + 0.5, "{mode}: currentTime did not advance: {v}");
        assert_eq!(
            (v["frameWidth"].as_u64(), v["frameHeight"].as_u64()),
            (Some(320), Some(240)),
            "{v}"
        );
        assert!(
            v["variance"].as_f64().unwrap() > 100.0,
            "{mode}: the captured frame is blank: {v}"
        );
        assert_eq!(
            v["timelineFragments"].as_u64().unwrap() as usize,
            listed,
            "{v}"
        );
        assert_eq!(
            v["fragmentCountLabel"].as_u64().unwrap() as usize,
            listed,
            "{v}"
        );
        assert_eq!(
            v["thumbnailsLoaded"].as_u64().unwrap() as usize,
            listed,
            "{v}"
        );
        assert!(v["ackRows"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["pageErrors"], serde_json::json!([]), "{v}");
        assert_eq!(v["streams"], serde_json::json!(["cam"]), "{v}");
    }
}
