//! `Pipeline` against the emulator with real ffmpeg output: the outcome, progress, cancellation,
//! the failure kinds, and resume (leaving out what the stream holds gives every fragment once).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ffmpeg_source::{FfmpegSource, Input, Profile};
use kvs_emulator::Emulator;
use kvs_pipeline::streams::Sessions;
use kvs_pipeline::{ByteStream, FailureKind, Pipeline, PipelineError, Timing};
use kvs_putmedia::{PutMediaClientBuilder, StreamId};

/// `seconds` of 320x240 H.264 (a keyframe every second) + AAC as Matroska.
fn mkv(dir: &Path, seconds: u32) -> Vec<u8> {
    let path = dir.join("clip.mkv");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=sample_rate=44100:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

async fn emulator() -> (Emulator, Sessions) {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let c = emu.credentials();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(emu.region().to_owned()))
        .endpoint_url(emu.url())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let sessions = Sessions::new(
        PutMediaClientBuilder::new()
            .with_sdk_config(config)
            .with_allow_http(true),
    )
    .unwrap();
    (emu, sessions)
}

/// The bytes in 7 KiB chunks, as a stream.
fn chunks(
    data: &[u8],
) -> ByteStream<futures::stream::Iter<std::vec::IntoIter<std::io::Result<Bytes>>>> {
    let v: Vec<std::io::Result<Bytes>> = data
        .chunks(7 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    ByteStream::new(futures::stream::iter(v))
}

fn stored(emu: &Emulator, stream: &str) -> Vec<u64> {
    emu.fragments(stream)
        .iter()
        .map(|f| f.producer_timestamp_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_byte_stream_runs_into_a_session_with_progress_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let data = mkv(dir.path(), 4);
    let (emu, sessions) = emulator().await;
    emu.create_stream("s", 24).await.unwrap();
    let id = StreamId::Name("s".into());
    let pipeline = Pipeline::new(chunks(&data).with_duration(Duration::from_secs(4)))
        .with_timing(Timing::Backfill);
    let progress = pipeline.progress();
    let outcome = pipeline.run(|mode| sessions.open(&id, mode, None)).await;
    outcome.result.unwrap();
    let s = &outcome.summary;
    assert!(s.fragments >= 2, "2 s fragments: {s:?}");
    assert_eq!(s.fragments_persisted, s.fragments);
    assert_eq!(stored(&emu, "s").len() as u64, s.fragments);
    assert!(outcome.first_fragment_number.is_some());
    let p = progress.borrow().clone();
    assert_eq!(p.bytes_in, data.len() as u64);
    assert_eq!(
        p.session.fragments_persisted, s.fragments,
        "progress ends with the outcome"
    );
    // Backfill: the last fragment starts in the past.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(stored(&emu, "s").iter().all(|t| *t < now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_leaves_out_what_the_stream_holds_and_the_rest_completes_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = mkv(dir.path(), 10);
    let (emu, sessions) = emulator().await;
    let anchor = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    for s in ["clean", "resumed"] {
        emu.create_stream(s, 24).await.unwrap();
    }
    let run = async |stream: &str, skip: BTreeSet<u64>| {
        let id = StreamId::Name(stream.into());
        Pipeline::new(chunks(&data))
            .with_timing(Timing::Anchored(anchor))
            .with_skip(skip)
            .run(|mode| sessions.open(&id, mode, None))
            .await
    };
    let clean = run("clean", BTreeSet::new()).await;
    clean.result.unwrap();
    let all = stored(&emu, "clean");
    assert_eq!(
        all[0], 1_700_000_000_123,
        "the anchor is the first frame's time"
    );
    assert!(all.len() >= 5, "{all:?}");

    // A first attempt stored the first three fragments, then died.
    let first_three: BTreeSet<u64> = all[..3].iter().copied().collect();
    assert!(all.len() > 3);
    let resumed = run("resumed", first_three.clone()).await;
    resumed.result.unwrap();
    assert_eq!(resumed.already_persisted, 3);
    assert_eq!(resumed.summary.fragments as usize, all.len() - 3);
    let mut got: Vec<u64> = first_three.into_iter().collect();
    got.extend(stored(&emu, "resumed"));
    assert_eq!(got, all, "every fragment once, with the same timestamps");

    // Everything stored already: nothing is sent, no session is opened, and that is success.
    let done = run("resumed", all.iter().copied().collect()).await;
    done.result.unwrap();
    assert_eq!(done.summary.connections, 0);
    assert_eq!(done.already_persisted as usize, all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_have_kinds_and_cancellation_stops_cleanly() {
    let (emu, sessions) = emulator().await;
    emu.create_stream("s", 24).await.unwrap();
    let id = StreamId::Name("s".into());

    // Not media: a bad-input failure (the session refuses it before anything is stored).
    let text = b"this is not a video".repeat(1000);
    let o = Pipeline::new(chunks(&text))
        .run(|mode| sessions.open(&id, mode, None))
        .await;
    assert_eq!(o.result.unwrap_err().kind(), FailureKind::BadInput);

    // An unknown stream.
    let missing = StreamId::Name("nobody".into());
    let dir = tempfile::tempdir().unwrap();
    let data = mkv(dir.path(), 6);
    let o = Pipeline::new(chunks(&data))
        .run(|mode| sessions.open(&missing, mode, None))
        .await;
    assert_eq!(o.result.unwrap_err().kind(), FailureKind::StreamNotFound);

    // ffmpeg at native rate, cancelled after the first fragment: what was sent is persisted.
    let path = dir.path().join("clip.mkv");
    let job = FfmpegSource::builder(Input::path(&path))
        .with_profile(Profile::Copy)
        .with_pacing(ffmpeg_source::Pacing::Realtime)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let pipeline = Pipeline::new(job).with_timing(Timing::Live);
    let cancel = tokio_util::sync::CancellationToken::new();
    let pipeline = pipeline.with_cancel(cancel.clone());
    let mut progress = pipeline.progress();
    let stopper = tokio::spawn(async move {
        progress
            .wait_for(|p| p.session.fragments_sent >= 1)
            .await
            .unwrap();
        cancel.cancel();
    });
    let o = pipeline.run(|mode| sessions.open(&id, mode, None)).await;
    stopper.await.unwrap();
    assert!(
        matches!(o.result, Err(PipelineError::Cancelled)),
        "{:?}",
        o.result
    );
    assert_eq!(
        o.result.as_ref().unwrap_err().kind(),
        FailureKind::Cancelled
    );
    assert_eq!(
        o.summary.fragments_persisted, o.summary.fragments,
        "{:?}",
        o.summary
    );
}
