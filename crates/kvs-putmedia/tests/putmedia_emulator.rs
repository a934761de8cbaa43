//! PutMedia client against the kvs-emulator over real HTTP on 127.0.0.1: signature verified by
//! the emulator, GetDataEndpoint, STS AssumeRole, error answers, ERROR acks, a real ffmpeg clip,
//! and the memory bound.
#![cfg(feature = "client")]

#[path = "common/putmedia.rs"]
mod putmedia_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_emulator::{Emulator, FaultRule, Scope};
use kvs_putmedia::ack::{AckErrorId, AckEventType};
use kvs_putmedia::mkv::{RefragmentConfig, TimecodeMode};
use kvs_putmedia::{
    CompletionAck, Error, MIN_BUFFER_BOUND, Pacing, PayloadHash, PutMediaClient,
    PutMediaClientBuilder, SessionEvent,
};
use putmedia_common::{SynthMkv, chunks, ffmpeg_clip};

async fn emulator() -> Emulator {
    Emulator::builder()
        .with_persist_delay(Duration::from_millis(5))
        .with_ingest_rate_limit(1 << 40)
        .start()
        .await
        .unwrap()
}

fn client(emu: &Emulator, stream: &str) -> PutMediaClientBuilder {
    // These clips (RELATIVE from now) are shorter than the emulator's 10 s tolerance for
    // producer timestamps in the future, so they go out at once; tests/putmedia_pacing.rs
    // covers pacing.
    putmedia_common::emulator_client(emu, stream).with_pacing(Pacing::Backfill)
}

/// `frames` frames of 40 ms (a keyframe every second, one Cluster per second) of
/// `frame_bytes` each: synthetic media that is quick to make.
fn synth(frames: u32, frame_bytes: usize) -> Bytes {
    SynthMkv {
        frames,
        frame_ms: 40,
        gop: 25,
        frame_bytes,
        cluster_frames: 25,
    }
    .build()
}

/// Six 1 s fragments of synthetic media, and a client cutting them at 1 s.
fn six_fragments(emu: &Emulator, stream: &str) -> (Bytes, PutMediaClientBuilder) {
    let mkv = synth(150, 200);
    let b = client(emu, stream).with_refragment_config(
        RefragmentConfig::builder()
            .with_target_fragment_duration(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    (mkv, b)
}

/// Streams `mkv` in `chunk`-byte pieces; returns the close result and the events.
async fn stream_all(
    b: PutMediaClientBuilder,
    mkv: &Bytes,
    chunk: usize,
) -> (
    kvs_putmedia::Result<kvs_putmedia::SessionSummary>,
    Vec<kvs_putmedia::Result<SessionEvent>>,
) {
    let (result, events, summary) = stream_all_summarized(b, mkv, chunk).await;
    (result.map(|()| summary), events)
}

/// [`stream_all`], plus the session's final summary even when it failed.
async fn stream_all_summarized(
    b: PutMediaClientBuilder,
    mkv: &Bytes,
    chunk: usize,
) -> (
    kvs_putmedia::Result<()>,
    Vec<kvs_putmedia::Result<SessionEvent>>,
    kvs_putmedia::SessionSummary,
) {
    let client = b.build().unwrap();
    let (mut sink, mut acks) = client.start().await.unwrap();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = acks.next().await {
            events.push(e);
        }
        (events, acks.summary())
    });
    let mut result = Ok(());
    for c in chunks(mkv, chunk) {
        if let Err(e) = sink.send(c).await {
            result = Err(e);
            break;
        }
    }
    let result = match result {
        Ok(()) => sink.close().await.map(drop),
        Err(e) => Err(e),
    };
    let (events, summary) = collector.await.unwrap();
    (result, events, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putmedia_ffmpeg_clip_streams_end_to_end_and_every_fragment_persists() {
    let emu = emulator().await;
    emu.create_stream("clip", 24).await.unwrap();
    let clip = tokio::task::spawn_blocking(|| ffmpeg_clip(4))
        .await
        .unwrap();
    let b = client(&emu, "clip").with_refragment_config(
        RefragmentConfig::builder()
            .with_target_fragment_duration(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let (summary, events) = stream_all(b, &clip, 8192).await;
    let summary = summary.unwrap();
    let stored = emu.fragments("clip");
    assert!(stored.len() >= 3, "{stored:?}");
    assert!(stored.iter().all(|f| f.persisted), "{stored:?}");
    assert_eq!(summary.fragments_sent, stored.len() as u64);
    assert_eq!(summary.fragments_received, stored.len() as u64);
    assert_eq!(summary.fragments_persisted, stored.len() as u64);
    assert!(summary.fragments_failed.is_empty());
    assert!(summary.first_ack_latency.is_some());
    // Every PERSISTED event names a stored fragment by timecode and number, with its size.
    let persisted: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(SessionEvent::Fragment(f)) if f.event == AckEventType::Persisted => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(persisted.len(), stored.len());
    for p in persisted {
        let s = stored
            .iter()
            .find(|s| s.fragment_timecode == p.timecode)
            .expect("ack for a stored fragment");
        assert_eq!(
            p.fragment_number.as_ref().map(|n| n.as_str()),
            Some(s.fragment_number.as_str())
        );
        // The emulator stores the Cluster with a known size, re-encoding the 8-byte
        // unknown-size field the client sends; the rest is byte for byte.
        assert!(p.size.abs_diff(s.size) <= 8, "{} vs {}", p.size, s.size);
        assert!(p.latency.is_some());
    }
    let conns = emu.connections("clip");
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].bytes_received, summary.bytes_sent);
}

#[tokio::test]
async fn putmedia_emulator_sees_reference_headers_and_accepts_signature() {
    let emu = emulator().await;
    emu.create_stream("hdr", 0).await.unwrap();
    let mkv = synth(75, 200);
    // Zero retention: no PERSISTED ever comes, so RECEIVED completes fragments.
    let b = client(&emu, "hdr")
        .with_completion_ack(CompletionAck::Received)
        .with_payload_hash(PayloadHash::Unsigned);
    let (summary, _) = stream_all(b, &mkv, 1000).await;
    let summary = summary.unwrap();
    // 3 s of media, 2 s target fragments: two.
    assert_eq!(summary.fragments, 2);
    assert_eq!(summary.fragments_received, 2);
    assert_eq!(summary.fragments_persisted, 0);
    let headers = &emu.connections("hdr")[0].headers;
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-amzn-stream-name"), Some("hdr"));
    assert_eq!(get("x-amzn-fragment-timecode-type"), Some("RELATIVE"));
    assert_eq!(get("x-amzn-fragment-acknowledgment-required"), Some("1"));
    assert_eq!(get("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    assert_eq!(get("transfer-encoding"), Some("chunked"));
    assert!(get("x-amz-date").is_some());
}

#[tokio::test]
async fn putmedia_zero_retention_stream_completes_on_received_by_default() {
    // CompletionAck::Auto asks DescribeStream: retention 0 means no PERSISTED will come.
    let emu = emulator().await;
    emu.create_stream("noretain", 0).await.unwrap();
    let mkv = synth(75, 200);
    let (summary, _) = stream_all(client(&emu, "noretain"), &mkv, 1000).await;
    let summary = summary.unwrap();
    assert_eq!(summary.fragments, 2);
    assert_eq!(summary.fragments_received, 2);
    assert_eq!(summary.fragments_delivered, 2);
    assert_eq!(summary.fragments_persisted, 0);
}

#[tokio::test]
async fn putmedia_assumed_role_temporary_credentials_work() {
    let emu = emulator().await;
    emu.create_stream("role", 24).await.unwrap();
    let mkv = synth(50, 200);
    let b = client(&emu, "role").with_assume_role("arn:aws:iam::123456789012:role/kvs-producer");
    let (summary, _) = stream_all(b, &mkv, 4096).await;
    assert!(summary.unwrap().fragments_persisted >= 1);
    let headers = &emu.connections("role")[0].headers;
    // The emulator strips the token from its record; the access key must be the assumed one.
    assert!(headers.iter().all(|(k, _)| k != "x-amz-security-token"));
    assert!(emu.fragments("role").iter().all(|f| f.persisted));
}

#[tokio::test]
async fn putmedia_wrong_credentials_fail_with_auth_error_before_media() {
    let emu = emulator().await;
    emu.create_stream("auth", 24).await.unwrap();
    let bad = |b: PutMediaClientBuilder| {
        b.with_credentials(Credentials::new(
            emu.credentials().access_key_id,
            "not-the-secret",
            None,
            None,
            "wrong",
        ))
    };
    // Through GetDataEndpoint.
    let err = bad(client(&emu, "auth"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    // Straight to PutMedia: refused on the response head, before any media.
    let err = bad(client(&emu, "auth").with_data_endpoint(emu.url()))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    let Error::Auth {
        status, ref stream, ..
    } = err
    else {
        panic!("expected Auth, got {err:?}");
    };
    assert_eq!(status, 403);
    assert_eq!(stream, "auth");
    assert!(
        emu.connections("auth")
            .iter()
            .all(|c| c.bytes_received == 0)
    );
}

#[tokio::test]
async fn putmedia_sdk_config_endpoint_and_credentials_are_used() {
    // What `from_env()` produces: an SdkConfig whose endpoint URL comes from AWS_ENDPOINT_URL.
    let emu = emulator().await;
    emu.create_stream("sdk", 24).await.unwrap();
    let c = emu.credentials();
    let sdk = aws_types::SdkConfig::builder()
        .region(aws_types::region::Region::new(emu.region().to_owned()))
        .endpoint_url(emu.url())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "sdk",
            )),
        )
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let plain = PutMediaClient::builder()
        .with_stream_name("sdk")
        .with_sdk_config(sdk.clone());
    // Plain http from the environment still needs the explicit opt-in.
    assert!(matches!(plain.clone().build(), Err(Error::Config { .. })));
    let client = plain.with_allow_http(true).build().unwrap();
    let endpoint = client
        .data_endpoint(&kvs_putmedia::StreamId::from("sdk"))
        .await
        .unwrap();
    assert_eq!(
        endpoint.authority().unwrap().as_str(),
        emu.addr().to_string()
    );
    let (sink, _acks) = client.start().await.unwrap();
    drop(sink);
}

#[tokio::test]
async fn putmedia_unknown_stream_is_not_found() {
    let emu = emulator().await;
    let err = client(&emu, "missing")
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StreamNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
    let err = client(&emu, "missing")
        .with_data_endpoint(emu.url())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StreamNotFound { .. }), "{err:?}");
}

/// docs/protocol.md §6: "Fragments rejected with a non-retryable error are skipped, never resent." A
/// 4006 on the third of six fragments is reported (event and summary, naming the fragment) and
/// the session reconnects and delivers the rest.
#[tokio::test]
async fn putmedia_4006_fragment_is_skipped_reported_and_the_rest_persists() {
    let emu = emulator().await;
    emu.create_stream("err", 24).await.unwrap();
    emu.faults().push(FaultRule::ErrorAck {
        scope: Scope::stream("err"),
        fragment_index: 2,
        error_id: 4006,
    });
    let (mkv, b) = six_fragments(&emu, "err");
    let (summary, events) = stream_all(b, &mkv, 1000).await;
    // Issue 12: a refused fragment makes close() an error that carries the summary.
    let summary = match summary {
        Err(Error::Incomplete { summary, .. }) => *summary,
        other => panic!("expected Error::Incomplete, got {other:?}"),
    };
    assert_eq!(summary.fragments_delivered, 5, "{summary:?}");
    assert_eq!(summary.fragments_skipped, 1, "{summary:?}");
    let failed = &summary.fragments_failed[0];
    assert_eq!(failed.timecode, Some(2000));
    assert_eq!(failed.error.id, AckErrorId::from_id(4006));
    assert_eq!(failed.error.code, "INVALID_MKV_DATA");
    assert!(events.iter().any(|e| matches!(
        e,
        Ok(SessionEvent::Skipped(f)) if f.timecode == Some(2000)
    )));
    assert!(events.iter().all(|e| e.is_ok()), "no session error");
    // Never resent, and every other fragment stored once.
    let stored: Vec<u64> = emu
        .fragments("err")
        .iter()
        .map(|f| f.fragment_timecode)
        .collect();
    assert_eq!(stored, [0, 1000, 3000, 4000, 5000]);
    // 0 and 1000 were RECEIVED on the first connection; their PERSISTED acks went with it.
    assert_eq!(summary.fragments_received, 5);
    assert_eq!(
        summary.fragments_resent, 3,
        "3000, 4000, 5000 followed the refused one"
    );
    assert_eq!(emu.connections("err").len(), 2);
}

/// docs/protocol.md §2 table: 4008 STREAM_NOT_ACTIVE means stop: the session ends with a typed error
/// naming the fragment, without retrying.
#[tokio::test]
async fn putmedia_4008_ends_the_session_with_a_typed_error() {
    let emu = emulator().await;
    emu.create_stream("gone", 24).await.unwrap();
    emu.faults().push(FaultRule::ErrorAck {
        scope: Scope::stream("gone"),
        fragment_index: 1,
        error_id: 4008,
    });
    let (mkv, b) = six_fragments(&emu, "gone");
    let (result, events, summary) = stream_all_summarized(b, &mkv, 1000).await;
    let err = result.unwrap_err();
    // The summary names the refused fragment too, not only the error.
    assert_eq!(summary.fragments_failed.len(), 1, "{summary:?}");
    assert_eq!(summary.fragments_failed[0].timecode, Some(1000));
    assert_eq!(
        summary.fragments_failed[0].error.id,
        AckErrorId::from_id(4008)
    );
    match &err {
        Error::Ack {
            id,
            code,
            fragment_timecode,
            stream,
            ..
        } => {
            assert_eq!(*id, AckErrorId::from_id(4008));
            assert_eq!(code, "STREAM_NOT_ACTIVE");
            assert_eq!(*fragment_timecode, Some(1000));
            assert_eq!(stream, "gone");
        }
        other => panic!("expected an Ack error, got {other:?}"),
    }
    assert!(err.to_string().contains("1000"), "{err}");
    assert!(!err.is_retryable());
    assert!(matches!(events.last(), Some(Err(Error::Ack { .. }))));
    assert_eq!(emu.connections("gone").len(), 1, "no retry after 4008");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putmedia_memory_stays_under_bound_over_100x_the_bound() {
    let emu = emulator().await;
    emu.create_stream("mem", 24).await.unwrap();
    let bound = MIN_BUFFER_BOUND;
    // 100x the bound: 6.5 MB of media, 1 s fragments of ~12.5 KB. Absolute timecodes an hour
    // in the past so 520 s of media is never "in the future" (docs/protocol.md §4.10, error 4007).
    let mkv = synth(13_000, 500);
    assert!(mkv.len() >= 100 * bound, "{}", mkv.len());
    let origin = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let b = client(&emu, "mem")
        .with_buffer_bound(bound)
        .with_timecode_mode(TimecodeMode::Absolute {
            origin_epoch_ms: origin,
        })
        .with_refragment_config(
            RefragmentConfig::builder()
                .with_target_fragment_duration(Duration::from_secs(1))
                .build()
                .unwrap(),
        );
    let (summary, _) = stream_all(b, &mkv, 4096).await;
    let summary = summary.unwrap();
    assert!(summary.fragments_persisted >= 500, "{summary:?}");
    assert_eq!(summary.fragments_persisted, summary.fragments_sent);
    assert!(
        summary.peak_buffered_bytes <= bound,
        "peak {} over bound {bound}",
        summary.peak_buffered_bytes
    );
    // The bound actually bit: more than one fragment was in flight at the peak.
    assert!(summary.peak_buffered_bytes > 2 * 12_500, "{summary:?}");
    assert_eq!(
        emu.fragments("mem").len() as u64,
        summary.fragments_persisted
    );
}

/// The error that ends a session reaches the `AckStream` even when nobody read the stream and
/// its channel is full (`EVENT_CAPACITY`): it comes last, after the events that fit.
#[tokio::test]
async fn the_ending_error_survives_a_full_event_channel() {
    let emu = emulator().await;
    emu.create_stream("full", 24).await.unwrap();
    // 400 one-second fragments: BUFFERING, RECEIVED, PERSISTED each, far over 1024 events.
    emu.faults().push(FaultRule::ErrorAck {
        scope: Scope::stream("full"),
        fragment_index: 380,
        error_id: 4008,
    });
    let mkv = synth(10_000, 20);
    // 400 s of media sent at once: backfilled, or the service refuses future timestamps (4007).
    let mode = TimecodeMode::backfill(Duration::from_secs(400), SystemTime::now());
    let b = client(&emu, "full")
        .with_timecode_mode(mode)
        .with_refragment_config(
            RefragmentConfig::builder()
                .with_target_fragment_duration(Duration::from_secs(1))
                .build()
                .unwrap(),
        );
    let session = b.build().unwrap();
    let (mut sink, acks) = session.start().await.unwrap();
    let mut result = Ok(());
    for c in chunks(&mkv, 64 * 1024) {
        if let Err(e) = sink.send(c).await {
            result = Err(e);
            break;
        }
    }
    let closed = match result {
        Ok(()) => sink.close().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(matches!(closed, Err(Error::Ack { .. })), "{closed:?}");
    // Only now is the stream read.
    let events: Vec<_> = acks.collect().await;
    assert_eq!(events.len(), kvs_putmedia::EVENT_CAPACITY + 1);
    assert!(
        matches!(events.last(), Some(Err(Error::Ack { id, .. })) if id.id() == 4008),
        "{:?}",
        events.last()
    );
}
