//! The `kvs-put` binary against an emulator started in the test, with the standard AWS
//! environment pointing at it: real SDK clients, real ffmpeg, real PutMedia.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kvs_emulator::Emulator;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "kvs-put-test-secret/0123456789abcdefghijk";

/// A short 320x240 H.264 (keyframe every second) + AAC clip in `dir`, with extension `ext`.
fn clip(dir: &Path, ext: &str, seconds: u32) -> PathBuf {
    let path = dir.join(format!("clip.{ext}"));
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-g", "25", "-bf", "0", "-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

async fn emulator() -> Emulator {
    Emulator::builder()
        .with_credentials("AKIAKVSPUTTEST000000", SECRET)
        .with_persist_delay(Duration::from_millis(20))
        .start()
        .await
        .unwrap()
}

/// The binary with a clean environment: only PATH and the AWS variables for `emu`.
fn command(emu: Option<&Emulator>, secret: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kvs-put"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(emu) = emu {
        let creds = emu.credentials();
        cmd.env("AWS_ENDPOINT_URL", emu.url())
            .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", emu.region());
    }
    cmd
}

async fn run(mut cmd: tokio::process::Command, args: &[&str]) -> Output {
    cmd.args(args);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kvs-put did not finish within 60 s")
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one JSON object `--json` prints; stdout holds nothing else.
fn json(out: &Output) -> Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "stdout must be one JSON line: {stdout:?}\nstderr: {}",
        stderr(out)
    );
    serde_json::from_str(stdout.trim_end()).unwrap()
}

/// ffmpeg processes whose command line mentions `needle` (a test's temp dir or emulator port).
fn ffmpeg_processes(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if (cmdline.starts_with("ffmpeg") || cmdline.starts_with("ffprobe"))
            && cmdline.contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

fn assert_all_persisted(v: &Value, emu: &Emulator, stream: &str) {
    let stored = emu.fragments(stream);
    assert!(!stored.is_empty(), "no fragment stored: {v}");
    assert_eq!(v["outcome"], "ok", "{v}");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["fragments_sent"], stored.len() as u64, "{v}");
    assert_eq!(v["fragments_persisted"], stored.len() as u64, "{v}");
    assert_eq!(v["fragments_failed"], 0);
    assert!(v["bytes_sent"].as_u64().unwrap() > 10_000);
    assert!(v["first_ack_latency_ms"].as_f64().is_some());
    assert_eq!(
        v["first_fragment_number"].as_str().unwrap(),
        stored[0].fragment_number
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_streams_and_json_reports_every_fragment_persisted() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 3);
    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "cam", "--json", path.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_all_persisted(&v, &emu, "cam");
    assert_eq!(
        emu.fragments("cam").len(),
        2,
        "a 3 s clip with 1 s GOPs makes two 2 s fragments"
    );
    assert_eq!(v["media_duration_ms"], 3000);
    assert!(v["decision"].as_str().unwrap().starts_with("copy"), "{v}");
    // Fast pacing backfills with ABSOLUTE timecodes (docs/protocol.md §4.10).
    let conn = &emu.connections("cam")[0];
    assert!(format!("{conn:?}").contains("ABSOLUTE"), "{conn:?}");
    // Not a terminal: plain periodic log lines, no bar; the summary is only on stdout.
    assert!(!stderr(&out).contains('\r'));
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

/// A dropped connection is survived (docs/reliability.md): the run still succeeds, and the
/// summary shows the second connection, the retry and every fragment delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_retried_and_reported() {
    let emu = emulator().await;
    emu.create_stream("drop", 24).await.unwrap();
    emu.faults()
        .push(kvs_emulator::FaultRule::DropAfterFragments {
            scope: kvs_emulator::Scope::stream("drop"),
            fragments: 1,
        });
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 6);
    let out = run(
        command(Some(&emu), SECRET),
        &[
            "--stream-name",
            "drop",
            "--on-full",
            "drop-oldest",
            "--buffer-seconds",
            "30",
            "--json",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["connections"], 2, "{v}");
    assert_eq!(v["retries"], 1, "{v}");
    assert_eq!(v["fragments_dropped"], 0, "{v}");
    assert_eq!(v["fragments_delivered"], v["fragments"], "{v}");
    let mut stored: Vec<u64> = emu
        .fragments("drop")
        .iter()
        .map(|f| f.fragment_timecode)
        .collect();
    stored.dedup();
    assert_eq!(Some(stored.len() as u64), v["fragments"].as_u64(), "{v}");
    assert!(stderr(&out).contains("reconnecting"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoding_in_realtime_uses_relative_timecodes() {
    let emu = emulator().await;
    emu.create_stream("rt", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 2);
    let out = run(
        command(Some(&emu), SECRET),
        &[
            "--stream-name",
            "rt",
            "--pace",
            "realtime",
            "--transcode",
            "always",
            "--size",
            "160x120",
            "--preset",
            "ultrafast",
            "--gop",
            "1",
            "--json",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_all_persisted(&v, &emu, "rt");
    assert!(v["decision"].as_str().unwrap().starts_with("transcode"));
    // Real time: two seconds of media take about two seconds.
    assert!(v["wall_time_ms"].as_u64().unwrap() >= 1500, "{v}");
    let conn = &emu.connections("rt")[0];
    assert!(format!("{conn:?}").contains("RELATIVE"), "{conn:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkv_on_stdin_is_streamed_without_ffmpeg() {
    let emu = emulator().await;
    emu.create_stream("pipe", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mkv = std::fs::read(clip(dir.path(), "mkv", 3)).unwrap();
    let mut cmd = command(Some(&emu), SECRET);
    cmd.args(["--stream-name", "pipe", "--json", "-"])
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Odd-sized writes: the sink re-fragments whatever chunking arrives.
    for chunk in mkv.chunks(7919) {
        stdin.write_all(chunk).await.unwrap();
    }
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_all_persisted(&v, &emu, "pipe");
    assert!(v["decision"].is_null(), "no ffmpeg for stdin: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_object_is_read_through_a_presigned_url() {
    let emu = emulator().await;
    emu.create_stream("s3cam", 24).await.unwrap();
    emu.create_bucket("uploads").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(std::fs::read(clip(dir.path(), "mp4", 3)).unwrap());
    emu.put_object("uploads", "phone/clip 1.mp4", body)
        .await
        .unwrap();
    let out = run(
        command(Some(&emu), SECRET),
        &[
            "--stream-name",
            "s3cam",
            "--json",
            "s3://uploads/phone/clip 1.mp4",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_all_persisted(&json(&out), &emu, "s3cam");
    // Presigned URLs carry credentials in their query string: never in the logs.
    assert!(
        !stderr(&out).contains("X-Amz-Signature"),
        "{}",
        stderr(&out)
    );

    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "s3cam", "s3://uploads/missing.mp4"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("s3://uploads/missing.mp4: no such object"));
    assert!(ffmpeg_processes(&emu.addr().port().to_string()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_flag_alone_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 2);
    let out = run(
        command(None, ""),
        &["--emulator", "--json", path.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["stream"], "kvs-put");
    assert!(v["fragments_sent"].as_u64().unwrap() >= 1);
    assert_eq!(v["fragments_persisted"], v["fragments_sent"]);
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_and_a_text_file_are_bad_input() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.mp4");
    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "cam", missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope.mp4: cannot read the input file"));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a video\n".repeat(100)).unwrap();
    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "cam", "--json", text.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "bad_input");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("ffmpeg cannot read this input"),
        "{v}"
    );
    assert!(emu.fragments("cam").is_empty());
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_exit_4() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 1);
    let out = run(
        command(Some(&emu), "wrong-secret/00000000000000000000000000"),
        &["--stream-name", "cam", path.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("wrong-secret"),
        "no secret in output"
    );
    assert!(emu.fragments("cam").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_is_not_found_unless_created() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 2);
    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "nobody", path.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stream nobody not found; pass --create-stream"),
        "{}",
        stderr(&out)
    );

    // Zero retention: KVS sends no PERSISTED, so success means every fragment RECEIVED.
    let out = run(
        command(Some(&emu), SECRET),
        &[
            "--stream-name",
            "nobody",
            "--create-stream",
            "--retention-hours",
            "0",
            "--json",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["retention_hours"], 0);
    assert_eq!(v["fragments_persisted"], 0);
    assert_eq!(v["fragments_received"], v["fragments_sent"]);
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let out = run(command(None, ""), &["clip.mp4"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--stream-name or --stream-arn"));
    let out = run(command(None, ""), &["--pace", "warp", "clip.mp4"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(command(None, ""), &["--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    for code in ["0  every fragment", "3  bad input", "4  auth", "5  partial"] {
        assert!(help.contains(code), "--help documents exit code {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_fragment_is_a_partial_failure_with_its_error_id() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    // The last fragment of a 3 s clip (2 s fragments) is refused with 4006; earlier ones would
    // race the connection reset that follows an ERROR ack.
    emu.faults().push(kvs_emulator::FaultRule::ErrorAck {
        scope: kvs_emulator::Scope::stream("cam"),
        fragment_index: 1,
        error_id: 4006,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 3);
    let out = run(
        command(Some(&emu), SECRET),
        &["--stream-name", "cam", "--json", path.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "partial");
    assert_eq!(v["fragments_failed"], 1, "{v}");
    assert_eq!(v["failures"][0]["error_id"], 4006, "{v}");
    assert_eq!(v["failures"][0]["error_code"], "INVALID_MKV_DATA", "{v}");
    // Fragment 0 may or may not have been PERSISTED before the service closed the connection.
    assert!(v["fragments_persisted"].as_u64().unwrap() <= 1, "{v}");
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_with_exit_130_and_no_ffmpeg_left() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "mp4", 8);
    let mut cmd = command(Some(&emu), SECRET);
    cmd.args([
        "--stream-name",
        "cam",
        "--pace",
        "realtime",
        "--json",
        path.to_str().unwrap(),
    ]);
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    // Wait until a fragment was stored, i.e. streaming is under way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while emu.fragments("cam").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "nothing streamed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "interrupted");
    assert!(v["fragments_sent"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["fragments_persisted"], v["fragments_sent"], "{v}");
    assert!(v["media_duration_ms"].as_u64().unwrap() > v["wall_time_ms"].as_u64().unwrap());
    assert!(ffmpeg_processes(dir.path().to_str().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_puts_stdin_media_in_the_past() {
    let emu = emulator().await;
    emu.create_stream("old", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mkv = std::fs::read(clip(dir.path(), "mkv", 2)).unwrap();
    let mut cmd = command(Some(&emu), SECRET);
    cmd.args(["--stream-name", "old", "--backfill", "3600", "--json", "-"])
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&mkv).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_all_persisted(&json(&out), &emu, "old");
    let first = &emu.fragments("old")[0];
    let age = first.server_timestamp_ms - first.producer_timestamp_ms;
    assert!(
        (3_590_000..3_610_000).contains(&age),
        "producer time {age} ms in the past"
    );
    let conn = &emu.connections("old")[0];
    assert!(format!("{conn:?}").contains("ABSOLUTE"), "{conn:?}");
}
