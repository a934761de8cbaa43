//! Issue 12, item 1: a recording read from a file as fast as possible into a client built with
//! the library's defaults. The service refuses producer timestamps in the future with 4007
//! (docs/protocol.md §4.10); the session must not send such fragments (it paces to the wall
//! clock by default), and a session that lost fragments must not close with `Ok`.
//!
//! Against the emulator over HTTP on 127.0.0.1, with a real ffmpeg recording. The emulator
//! refuses a fragment whose producer timestamp is more than 10 s after its clock.
#![cfg(feature = "client")]

#[path = "common/putmedia.rs"]
mod putmedia_common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_emulator::Emulator;
use kvs_putmedia::mkv::TimecodeMode;
use kvs_putmedia::{Error, Pacing, PutMediaSink, SessionEvent};
use tokio::io::AsyncReadExt;

/// Seconds of the recording: well past the emulator's 10 s tolerance for the future.
const SECONDS: u32 = 24;

/// The recording written to a file, as a user has it.
fn recording(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("recording.mkv");
    std::fs::write(&path, putmedia_common::ffmpeg_clip(SECONDS)).unwrap();
    path
}

/// Reads the file in 64 KiB pieces and sends each at once, as the crate's example does.
async fn feed_file(sink: &mut PutMediaSink, path: &std::path::Path) {
    let mut file = tokio::fs::File::open(path).await.unwrap();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        sink.send(Bytes::copy_from_slice(&buf[..n])).await.unwrap();
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The scenario with the defaults (RELATIVE timecodes from the session's start,
/// realtime pacing): every fragment is stored, none is refused, `close()` is `Ok`, and no
/// fragment reached the service before its producer timestamp. Before pacing, the fragments
/// past the first 10 s were refused with 4007 and `close()` still said `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_fed_from_a_file_with_defaults_is_stored_whole() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("recording", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = recording(&dir);

    let client = putmedia_common::emulator_client(&emu, "recording")
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let (mut sink, acks) = client.start().await.unwrap();
    let events = tokio::spawn(acks.collect::<Vec<_>>());
    feed_file(&mut sink, &path).await;
    let fed = started.elapsed();
    let summary = sink
        .close()
        .await
        .expect("every fragment delivered: close() is Ok");
    let took = started.elapsed();
    let events = events.await.unwrap();

    assert!(summary.is_complete(), "{summary:?}");
    assert!(summary.fragments >= 10, "{summary:?}");
    assert_eq!(summary.fragments_delivered, summary.fragments);
    let refused: Vec<_> = emu
        .acks("recording")
        .into_iter()
        .filter(|a| a.error_id.is_some())
        .collect();
    assert!(refused.is_empty(), "ERROR acks: {refused:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(SessionEvent::Skipped(_)) | Err(_))),
        "{events:?}"
    );
    let stored = emu.fragments("recording");
    assert_eq!(stored.len() as u64, summary.fragments);
    for f in &stored {
        // Docs/protocol.md §4.10: never a producer timestamp after the service's clock. The
        // last frame is at most one frame (40 ms) before the fragment's end.
        assert!(
            f.server_timestamp_ms >= f.producer_timestamp_ms + f.duration_ms.saturating_sub(40),
            "fragment {} arrived at {} before its last frame's time {} + {}",
            f.fragment_timecode,
            f.server_timestamp_ms,
            f.producer_timestamp_ms,
            f.duration_ms
        );
    }
    // The sink took the file at once (the replay buffer holds 120 s); the session then sent it
    // at the media's pace.
    assert!(fed < Duration::from_secs(5), "feeding took {fed:?}");
    assert!(
        took >= Duration::from_secs(u64::from(SECONDS) - 3),
        "{SECONDS} s of media delivered in {took:?}"
    );
    eprintln!(
        "PACING fragments={} fed_in={fed:?} closed_after={took:?} connections={}",
        summary.fragments, summary.connections
    );
}

/// The fast choice with timecodes that lie in the past: the same recording goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_past_timecodes_goes_at_network_speed() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("backfill", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = recording(&dir);
    let client = putmedia_common::emulator_client(&emu, "backfill")
        .with_timecode_mode(TimecodeMode::backfill(
            Duration::from_secs(u64::from(SECONDS)),
            SystemTime::now(),
        ))
        .with_pacing(Pacing::Backfill)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let (mut sink, _acks) = client.start().await.unwrap();
    feed_file(&mut sink, &path).await;
    let summary = sink.close().await.unwrap();
    let took = started.elapsed();
    assert!(summary.is_complete(), "{summary:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let now = epoch_ms(SystemTime::now());
    for f in emu.fragments("backfill") {
        assert!(f.producer_timestamp_ms + f.duration_ms <= now);
    }
}

/// The second half: fragments refused for good make `close()` an error that carries
/// the summary and names the counts. Here RELATIVE timecodes from now sent without pacing: the
/// emulator refuses everything past 10 s with 4007.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_fragments_make_close_an_incomplete_error() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("refused", 24).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = recording(&dir);
    let client = putmedia_common::emulator_client(&emu, "refused")
        .with_pacing(Pacing::Backfill)
        .build()
        .unwrap();
    let (mut sink, _acks) = client.start().await.unwrap();
    feed_file(&mut sink, &path).await;
    let err = sink.close().await.unwrap_err();
    let Error::Incomplete { summary, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(!summary.is_complete());
    assert!(summary.fragments_skipped > 0, "{summary:?}");
    assert_eq!(
        summary.fragments_delivered + summary.fragments_skipped,
        summary.fragments
    );
    assert!(
        summary
            .fragments_failed
            .iter()
            .all(|f| f.error.id.id() == 4007),
        "{:?}",
        summary.fragments_failed
    );
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "{} of {} fragments delivered ({} refused and skipped",
            summary.fragments_delivered, summary.fragments, summary.fragments_skipped
        )),
        "{message}"
    );
    let stored = emu.fragments("refused").len() as u64;
    assert_eq!(stored, summary.fragments_delivered);
}
