//! PutMedia over a raw full-duplex HTTP/1.1 connection: the ack timeline, errors, limits and
//! fault injection (docs/protocol.md §1-§3).

mod support;

use std::time::{Duration, Instant, SystemTime};

use kvs_emulator::{AckEventType, ConnectionEnd, Emulator, FaultRule, Refusal, Scope};
use serde_json::Value;
use support::*;

fn event(a: &Value) -> &str {
    a["EventType"].as_str().unwrap()
}

/// Sends the clip in 1000-byte chunks and ends the body.
async fn send_clip(pm: &mut PutMedia, data: &[u8]) {
    for c in data.chunks(1000) {
        if pm.send(c).await.is_err() {
            return;
        }
    }
    let _ = pm.end().await;
}

#[tokio::test]
async fn happy_path_acks_timeline_and_stored_fragments() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "cam");
    let start = producer_start_secs(60);
    o.producer_start = Some(start.clone());
    let mut pm = PutMedia::open(&emu, o).await;
    // docs/protocol.md §1.7: 200 before any media was sent.
    assert_eq!(pm.status, 200, "{}", pm.head);
    assert!(pm.header("x-amzn-requestid").is_some());
    let clip = clip();
    let writer = async { send_clip(&mut pm, clip).await };
    writer.await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();

    let frags = emu.fragments("cam");
    assert_eq!(
        frags.len(),
        6,
        "one fragment per keyframe cluster: {frags:?}"
    );
    // Per fragment: BUFFERING, RECEIVED, PERSISTED, matched by timecode (docs/protocol.md §2).
    for f in &frags {
        let mine: Vec<&str> = acks
            .iter()
            .filter(|a| a["FragmentTimecode"].as_u64() == Some(f.fragment_timecode))
            .map(event)
            .collect();
        assert_eq!(
            mine,
            ["BUFFERING", "RECEIVED", "PERSISTED"],
            "fragment {}",
            f.fragment_timecode
        );
        assert!(f.persisted);
        assert_eq!(f.fragment_number.len(), 47);
        assert!(f.fragment_number.bytes().all(|b| b.is_ascii_digit()));
        let start_ms = kvs_emulator::api::parse_producer_timestamp(&start).unwrap();
        assert_eq!(f.producer_timestamp_ms, start_ms + f.fragment_timecode);
        assert!(f.server_timestamp_ms >= f.producer_timestamp_ms);
        let ack_numbers: Vec<&str> = acks
            .iter()
            .filter(|a| a["FragmentTimecode"].as_u64() == Some(f.fragment_timecode))
            .map(|a| a["FragmentNumber"].as_str().unwrap())
            .collect();
        assert!(ack_numbers.iter().all(|n| *n == f.fragment_number));
    }
    assert!(
        frags
            .windows(2)
            .all(|w| w[0].fragment_number < w[1].fragment_number)
    );
    // The last ack is the last PERSISTED: the emulator keeps the connection until then.
    assert_eq!(event(acks.last().unwrap()), "PERSISTED");
    // A stored fragment is a standalone playable MKV.
    assert_eq!(ffprobe_frames(&frags[1].media).unwrap(), 25);

    let recorded = emu.acks("cam");
    assert_eq!(recorded.len(), acks.len());
    assert!(recorded.iter().all(|a| a.line.ends_with('\n')));
    assert_eq!(recorded[0].event, AckEventType::Buffering);
    let conns = emu.connections("cam");
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].end, Some(ConnectionEnd::EndOfBody));
    assert_eq!(conns[0].bytes_received, clip.len() as u64);
    assert_eq!(conns[0].fragments, 6);
    assert!(
        conns[0]
            .headers
            .iter()
            .all(|(k, _)| k != "authorization" && k != "x-amz-security-token")
    );
    assert!(
        conns[0]
            .headers
            .iter()
            .any(|(k, _)| k == "x-amzn-stream-name")
    );
}

#[tokio::test]
async fn retention_zero_sends_no_persisted() {
    let emu = emulator().await;
    emu.create_stream("live", 0).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "live")).await;
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    assert!(acks.iter().all(|a| event(a) != "PERSISTED"));
    assert_eq!(acks.iter().filter(|a| event(a) == "RECEIVED").count(), 6);
    assert!(emu.fragments("live").iter().all(|f| !f.persisted));
}

#[tokio::test]
async fn all_three_payload_hash_forms_verify() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    for payload in [Payload::EmptyHash, Payload::Unsigned, Payload::Streaming] {
        for declare in [true, false] {
            if matches!(payload, Payload::Streaming) && !declare {
                continue; // the streaming form is always declared in the header
            }
            let mut o = PutMediaOptions::new(&emu, "s");
            o.payload = payload;
            o.declare_sha256_header = declare;
            let mut pm = PutMedia::open(&emu, o).await;
            assert_eq!(
                pm.status, 200,
                "{payload:?} declared={declare}: {}",
                pm.head
            );
            pm.end().await.unwrap();
            let (_, end) = pm.all_acks().await;
            end.unwrap();
        }
    }
}

#[tokio::test]
async fn bad_signature_unknown_key_and_clock_skew_are_403() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "s");
    o.creds = aws_credential_types::Credentials::new(
        emu.credentials().access_key_id,
        "wrong",
        None,
        None,
        "t",
    );
    let mut pm = PutMedia::open(&emu, o).await;
    assert_eq!(pm.status, 403);
    assert_eq!(
        pm.header("x-amzn-errortype").as_deref(),
        Some("InvalidSignatureException")
    );
    assert!(pm.header("x-amzn-requestid").is_some());
    assert!(
        pm.error_body().await["message"]
            .as_str()
            .unwrap()
            .contains("signature")
    );

    let mut o = PutMediaOptions::new(&emu, "s");
    o.creds = aws_credential_types::Credentials::new("AKIDUNKNOWN", "x", None, None, "t");
    let pm = PutMedia::open(&emu, o).await;
    assert_eq!(pm.status, 403);
    assert_eq!(
        pm.header("x-amzn-errortype").as_deref(),
        Some("UnrecognizedClientException")
    );

    // docs/protocol.md §1.6: more than 5 minutes of skew is refused with "Signature expired".
    let mut o = PutMediaOptions::new(&emu, "s");
    o.time = SystemTime::now() - Duration::from_secs(6 * 60);
    let mut pm = PutMedia::open(&emu, o).await;
    assert_eq!(pm.status, 403);
    let msg = pm.error_body().await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.starts_with("Signature expired"), "{msg}");
    // Four minutes is within the allowance.
    let mut o = PutMediaOptions::new(&emu, "s");
    o.time = SystemTime::now() - Duration::from_secs(4 * 60);
    assert_eq!(PutMedia::open(&emu, o).await.status, 200);
}

type Edit = Box<dyn Fn(&mut PutMediaOptions)>;

#[tokio::test]
async fn header_validation_and_missing_stream() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    let cases: Vec<(Edit, u16, &str)> = vec![
        (
            Box::new(|o| o.stream_header = vec![("x-amzn-stream-name".into(), "nope".into())]),
            404,
            "ResourceNotFoundException",
        ),
        (
            Box::new(|o| {
                o.stream_header.push((
                    "x-amzn-stream-arn".into(),
                    "arn:aws:kinesisvideo:us-east-1:123456789012:stream/s/1".into(),
                ))
            }),
            400,
            "InvalidArgumentException",
        ),
        (
            Box::new(|o| o.stream_header.clear()),
            400,
            "InvalidArgumentException",
        ),
        (
            Box::new(|o| o.stream_header = vec![("x-amzn-stream-name".into(), "bad name!".into())]),
            400,
            "InvalidArgumentException",
        ),
        (
            Box::new(|o| o.timecode_type = "SOMETIMES"),
            400,
            "InvalidArgumentException",
        ),
        (
            Box::new(|o| o.producer_start = Some("12:00".into())),
            400,
            "InvalidArgumentException",
        ),
        (
            Box::new(|o| o.producer_start = None),
            400,
            "InvalidArgumentException",
        ),
    ];
    for (i, (edit, status, kind)) in cases.into_iter().enumerate() {
        let mut o = PutMediaOptions::new(&emu, "s");
        edit(&mut o);
        let mut pm = PutMedia::open(&emu, o).await;
        assert_eq!(pm.status, status, "case {i}: {}", pm.head);
        assert_eq!(
            pm.header("x-amzn-errortype").as_deref(),
            Some(kind),
            "case {i}"
        );
        assert!(pm.error_body().await["message"].is_string());
    }
    // By ARN works.
    let arn = emu.create_stream("by-arn", 1).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "x");
    o.stream_header = vec![("x-amzn-stream-arn".into(), arn)];
    assert_eq!(PutMedia::open(&emu, o).await.status, 200);
}

#[tokio::test]
async fn invalid_mkv_gets_4006_then_close_and_stream_is_free_again() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    pm.send(b"this is not matroska at all").await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(event(&acks[0]), "ERROR");
    assert_eq!(acks[0]["ErrorId"], 4006);
    assert_eq!(acks[0]["ErrorCode"], "INVALID_MKV_DATA");
    assert_eq!(
        emu.connections("s")[0].end,
        Some(ConnectionEnd::ErrorAck { error_id: 4006 })
    );
    let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 200);
}

/// docs/protocol.md §3: one connection per stream, with a brief rotation overlap: a second request
/// supersedes the first (see `official_producer.rs`), a third while both are open is refused.
#[tokio::test]
async fn third_concurrent_connection_is_refused() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    let first = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(first.status, 200);
    let second = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(second.status, 200, "rotation overlap");
    let mut third = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(third.status, 400);
    assert_eq!(
        third.header("x-amzn-errortype").as_deref(),
        Some("ConnectionLimitExceededException")
    );
    assert!(third.error_body().await["message"].is_string());
}

/// docs/protocol.md §3: "a brief overlap during rotation is tolerated". Once the first request's body
/// has ended, a new connection is accepted while the first response still owes PERSISTED acks.
#[tokio::test]
async fn rotation_overlap_is_accepted_once_the_old_body_ended() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_secs(2))
        .with_put_media_requests_per_second(0)
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut first = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(first.status, 200);
    first.send(clip()).await.unwrap();
    first.end().await.unwrap();
    // The slot frees once the emulator has read the body to its end; PERSISTED is due 2 s
    // after each RECEIVED, so the two connections overlap.
    let mut second = None;
    for _ in 0..30 {
        let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
        if pm.status == 200 {
            second = Some(pm);
            break;
        }
        assert_eq!(
            pm.header("x-amzn-errortype").as_deref(),
            Some("ConnectionLimitExceededException")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.is_some(), "the slot never freed");
    assert!(
        emu.connections("s")[0].ended_ms.is_none(),
        "the first connection must still be open (owing PERSISTED acks)"
    );
    // The old response still delivers its PERSISTED acks and ends cleanly.
    let (acks, end) = first.all_acks().await;
    end.unwrap();
    assert!(acks.iter().any(|a| event(a) == "PERSISTED"), "{acks:?}");
}

#[tokio::test]
async fn idle_acks_then_idle_timeout_closes() {
    let emu = Emulator::builder()
        .with_idle_ack_interval(Duration::from_millis(100))
        .with_idle_timeout(Duration::from_millis(550))
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = Instant::now();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert!(
        acks.len() >= 3
            && acks
                .iter()
                .all(|a| event(a) == "IDLE" && a.as_object().unwrap().len() == 1),
        "{acks:?}"
    );
    assert_eq!(
        emu.connections("s")[0].end,
        Some(ConnectionEnd::IdleTimeout)
    );
}

#[tokio::test]
async fn max_connection_duration_sends_4003() {
    let emu = Emulator::builder()
        .with_max_connection_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    pm.send(&clip()[..3000]).await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let last = acks.last().unwrap();
    assert_eq!(event(last), "ERROR");
    assert_eq!(last["ErrorId"], 4003);
    assert_eq!(last["ErrorCode"], "MAX_CONNECTION_DURATION_REACHED");
}

#[tokio::test]
async fn fault_drop_after_fragments_aborts_the_response() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::DropAfterFragments {
        scope: Scope::stream("s"),
        fragments: 2,
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    assert!(end.is_err(), "aborted, no terminating chunk");
    assert_eq!(acks.iter().filter(|a| event(a) == "RECEIVED").count(), 2);
    assert_eq!(emu.fragments("s").len(), 2);
    assert!(emu.fragments("s").iter().all(|f| f.persisted));
    assert_eq!(emu.connections("s")[0].end, Some(ConnectionEnd::FaultDrop));
    // One-shot: the next connection is not dropped.
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    pm.end().await.unwrap();
    pm.all_acks().await.1.unwrap();
}

#[tokio::test]
async fn fault_drop_after_bytes() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::DropAfterBytes {
        scope: Scope::any(),
        bytes: 5000,
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    send_clip(&mut pm, clip()).await;
    let (_, end) = pm.all_acks().await;
    assert!(end.is_err());
    let c = &emu.connections("s")[0];
    assert_eq!(c.bytes_received, 5000);
    assert_eq!(c.end, Some(ConnectionEnd::FaultDrop));
}

#[tokio::test]
async fn fault_error_ack_on_fragment_k() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::ErrorAck {
        scope: Scope::stream("s").with_connection(1),
        fragment_index: 1,
        error_id: 5000,
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let events: Vec<&str> = acks.iter().map(event).collect();
    assert!(events.ends_with(&["BUFFERING", "ERROR"]), "{events:?}");
    let last = acks.last().unwrap();
    assert_eq!(last["ErrorId"], 5000);
    assert_eq!(last["ErrorCode"], "INTERNAL_ERROR");
    assert_eq!(
        last["FragmentTimecode"],
        acks[acks.len() - 2]["FragmentTimecode"]
    );
    assert_eq!(emu.fragments("s").len(), 1);
}

#[tokio::test]
async fn fault_refuse_then_accept() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::RefuseConnections {
        scope: Scope::any(),
        status: Refusal::ServiceUnavailable,
        count: 1,
    });
    emu.faults().push(FaultRule::RefuseConnections {
        scope: Scope::any(),
        status: Refusal::Throttle,
        count: 1,
    });
    let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 503);
    let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 400);
    assert_eq!(
        pm.header("x-amzn-errortype").as_deref(),
        Some("ClientLimitExceededException")
    );
    assert_eq!(
        PutMedia::open(&emu, PutMediaOptions::new(&emu, "s"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn fault_delay_and_stall_acks() {
    let emu = emulator().await;
    emu.create_stream("s", 0).await.unwrap();
    emu.faults().push(FaultRule::DelayAcks {
        scope: Scope::any(),
        delay: Duration::from_millis(300),
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = Instant::now();
    pm.send(&clip()[..20_000]).await.unwrap();
    let mut first = pm.next_ack().await.unwrap().unwrap();
    while event(&first) == "IDLE" {
        first = pm.next_ack().await.unwrap().unwrap();
    }
    assert_eq!(event(&first), "BUFFERING");
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    drop(pm);

    let emu = emulator().await;
    emu.create_stream("s", 0).await.unwrap();
    emu.faults().push(FaultRule::StallAcks {
        scope: Scope::any(),
        after_fragments: 1,
        duration: Duration::from_millis(400),
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = Instant::now();
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    assert_eq!(acks.len(), 12);
    assert!(t0.elapsed() >= Duration::from_millis(390));
    let recorded = emu.acks("s");
    // The first fragment's acks flowed at once; the rest were held back about 400 ms.
    assert!(recorded[2].at_ms >= recorded[1].at_ms + 350, "{recorded:?}");
}

#[tokio::test]
async fn ingest_rate_limit_slows_the_body() {
    let emu = Emulator::builder()
        .with_ingest_rate_limit(200_000)
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 0).await.unwrap();
    let data = clip();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = Instant::now();
    send_clip(&mut pm, data).await;
    pm.all_acks().await.1.unwrap();
    let min = Duration::from_secs_f64(data.len() as f64 / 200_000.0);
    assert!(
        t0.elapsed() >= min.mul_f64(0.9),
        "{} bytes in {:?}",
        data.len(),
        t0.elapsed()
    );
}

#[tokio::test]
async fn clock_skew_fault_makes_requests_expire() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::ClockSkew {
        offset_ms: 10 * 60 * 1000,
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 403);
    assert!(
        pm.error_body().await["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired")
    );
    emu.faults().clear();
    assert_eq!(
        PutMedia::open(&emu, PutMediaOptions::new(&emu, "s"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn deleting_the_stream_under_a_connection_gives_4008() {
    let emu = emulator().await;
    let arn = emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let data = clip();
    let second_cluster = data
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0x1F, 0x43, 0xB6, 0x75])
        .nth(1)
        .unwrap()
        .0;
    pm.send(&data[..second_cluster - 10]).await.unwrap();
    let kv = aws_sdk_kinesisvideo::Client::new(&sdk_config(&emu).await);
    kv.delete_stream().stream_arn(arn).send().await.unwrap();
    pm.send(&data[second_cluster - 10..]).await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let last = acks.last().unwrap();
    assert_eq!(last["ErrorId"], 4008, "{acks:?}");
    assert_eq!(last["ErrorCode"], "STREAM_NOT_ACTIVE");
}

#[tokio::test]
async fn absolute_timecodes_and_future_producer_timestamps() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    // ABSOLUTE: the cluster timecode is the producer timestamp (ref §4.10); past times are fine.
    let mut o = PutMediaOptions::new(&emu, "s");
    o.timecode_type = "ABSOLUTE";
    o.producer_start = None;
    let mut pm = PutMedia::open(&emu, o).await;
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    assert!(acks.iter().all(|a| event(a) != "ERROR"), "{acks:?}");
    for f in emu.fragments("s") {
        assert_eq!(f.producer_timestamp_ms, f.fragment_timecode);
    }

    // RELATIVE with a start one hour ahead: producer timestamps in the future get 4007.
    let ahead = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    let mut o = PutMediaOptions::new(&emu, "s");
    o.producer_start = Some(format!("{}.{:03}", ahead / 1000, ahead % 1000));
    let mut pm = PutMedia::open(&emu, o).await;
    send_clip(&mut pm, clip()).await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let last = acks.last().unwrap();
    assert_eq!(last["ErrorId"], 4007, "{acks:?}");
    assert_eq!(last["ErrorCode"], "INVALID_PRODUCER_TIMESTAMP");
}

/// With tokio's clock paused, the default limits (3 s IDLE interval, 30 s idle timeout, 45 min
/// connection age) are exercised at their real values in milliseconds of wall time.
#[tokio::test(start_paused = true)]
async fn default_idle_timeout_and_connection_age_under_paused_time() {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = tokio::time::Instant::now();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(34),
        "{waited:?}"
    );
    assert_eq!(
        acks.len(),
        9,
        "IDLE every 3 s until the 30 s idle timeout: {acks:?}"
    );
    assert_eq!(
        emu.connections("s")[0].end,
        Some(ConnectionEnd::IdleTimeout)
    );

    // A producer that keeps sending (a tiny chunk every 20 s) is cut at 45 minutes with 4003.
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let t0 = tokio::time::Instant::now();
    let data = clip();
    let mut sent = 0;
    let last = loop {
        let step = 100.min(data.len() - sent);
        if step > 0 {
            pm.send(&data[sent..sent + step]).await.unwrap();
            sent += step;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut done = None;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, pm.next_ack()).await {
                Err(_) => break,
                Ok(Ok(Some(a))) if event(&a) == "ERROR" => {
                    done = Some(a);
                    break;
                }
                Ok(Ok(Some(_))) => {}
                Ok(other) => panic!("{other:?}"),
            }
        }
        if let Some(a) = done {
            break a;
        }
    };
    assert_eq!(last["ErrorId"], 4003, "{last}");
    let age = t0.elapsed();
    assert!(
        age >= Duration::from_secs(45 * 60) && age < Duration::from_secs(45 * 60 + 25),
        "{age:?}"
    );
}

#[tokio::test]
async fn more_than_five_put_media_requests_per_second_are_throttled() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    for i in 0..5 {
        let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
        assert_eq!(pm.status, 200, "request {i}");
        pm.end().await.unwrap();
        pm.all_acks().await.1.unwrap();
    }
    let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 400);
    assert_eq!(
        pm.header("x-amzn-errortype").as_deref(),
        Some("ClientLimitExceededException")
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        PutMedia::open(&emu, PutMediaOptions::new(&emu, "s"))
            .await
            .status,
        200
    );
}

/// Writes `total` bytes of filler as 64 KiB chunks, as a producer that keeps streaming after a
/// bad fragment (it has not read the ERROR ack yet). Returns false once a write fails.
async fn keep_streaming(pm: &mut PutMedia, total: usize) -> bool {
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        if pm.send(&chunk).await.is_err() {
            return false;
        }
        sent += chunk.len();
    }
    true
}

/// docs/protocol.md §2: "After any ERROR ack the service ends the connection": the service ends the
/// response (ERROR ack, then the terminating chunk). The emulator drains the rest of the body
/// after the ERROR, so closing the socket with unread bytes (a TCP RST) cannot destroy the ack
/// before the client reads it. Without the drain this failed with "Connection reset by peer".
#[tokio::test]
async fn error_ack_reaches_a_client_that_keeps_sending() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(20))
        .with_put_media_requests_per_second(0)
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    for i in 0..5 {
        // 4006 on the first bytes, then several MB more.
        let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
        assert_eq!(pm.status, 200);
        pm.send(b"this is not matroska at all").await.unwrap();
        assert!(
            keep_streaming(&mut pm, 6 << 20).await,
            "iteration {i}: the emulator stopped reading the body"
        );
        pm.end().await.unwrap();
        let (acks, end) = pm.all_acks().await;
        assert_eq!(end, Ok(()), "iteration {i}: {acks:?}");
        assert_eq!(acks.len(), 1, "iteration {i}: {acks:?}");
        assert_eq!(acks[0]["ErrorId"], 4006);
        // Then a FIN, not a reset (a reset is what HTTP clients report as a transport error).
        assert_eq!(
            pm.next_chunk().await,
            Err("connection closed".to_owned()),
            "iteration {i}"
        );

        // The injected ERROR on fragment 1 behaves the same (it imitates the service).
        emu.faults().push(FaultRule::ErrorAck {
            scope: Scope::stream("s"),
            fragment_index: 1,
            error_id: 5000,
        });
        let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
        let _ = pm.send(clip()).await;
        assert!(keep_streaming(&mut pm, 6 << 20).await, "iteration {i}");
        let (acks, end) = pm.all_acks().await;
        assert_eq!(end, Ok(()), "iteration {i}: {acks:?}");
        let last = acks.last().unwrap();
        assert_eq!((event(last), &last["ErrorId"]), ("ERROR", &5000.into()));
        pm.end().await.unwrap();
        assert_eq!(
            pm.next_chunk().await,
            Err("connection closed".to_owned()),
            "iteration {i}"
        );
    }
    let conns = emu.connections("s");
    assert_eq!(conns.len(), 10);
    assert!(
        conns
            .iter()
            .all(|c| matches!(c.end, Some(ConnectionEnd::ErrorAck { .. })))
    );
}

/// The connection slot is released when the ERROR is sent, not when the drain ends: a producer
/// that reconnects at once is accepted while its old body is still being discarded.
#[tokio::test]
async fn reconnecting_right_after_an_error_ack_is_accepted_while_the_old_body_drains() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(20))
        .with_error_drain_timeout(Duration::from_secs(20))
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut old = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    old.send(b"this is not matroska at all").await.unwrap();
    let ack = old.next_ack().await.unwrap().unwrap();
    assert_eq!(ack["ErrorId"], 4006);
    // The response is complete although the request body is still open.
    assert_eq!(old.next_chunk().await, Ok(None));
    assert!(keep_streaming(&mut old, 1 << 20).await);

    let mut new = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(new.status, 200, "{}", new.head);
    send_clip(&mut new, clip()).await;
    let (acks, end) = new.all_acks().await;
    end.unwrap();
    assert_eq!(acks.iter().filter(|a| event(a) == "PERSISTED").count(), 6);

    // The old body is still drained, then ends cleanly.
    assert!(keep_streaming(&mut old, 1 << 20).await);
    old.end().await.unwrap();
    assert_eq!(old.next_chunk().await, Err("connection closed".to_owned()));
    let conns = emu.connections("s");
    assert_eq!(
        conns[0].end,
        Some(ConnectionEnd::ErrorAck { error_id: 4006 })
    );
    assert_eq!(conns[1].end, Some(ConnectionEnd::EndOfBody));
}

/// A producer cannot hold a connection open by streaming after an ERROR: the drain stops after
/// `error_drain_timeout` or `error_drain_limit` bytes, whichever comes first.
#[tokio::test]
async fn the_drain_after_an_error_ack_is_bounded_in_time_and_bytes() {
    // Time: the producer keeps its body open without ending it.
    let emu = Emulator::builder()
        .with_error_drain_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    pm.send(b"this is not matroska at all").await.unwrap();
    assert_eq!(pm.next_ack().await.unwrap().unwrap()["ErrorId"], 4006);
    assert_eq!(pm.next_chunk().await, Ok(None));
    let t0 = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), pm.next_chunk()).await;
    assert_eq!(closed, Ok(Err("connection closed".to_owned())));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Bytes: a producer streaming without end is cut after the limit, long before the timeout.
    let emu = Emulator::builder()
        .with_error_drain_timeout(Duration::from_secs(60))
        .with_error_drain_limit(1 << 20)
        .start()
        .await
        .unwrap();
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    pm.send(b"this is not matroska at all").await.unwrap();
    let cut =
        tokio::time::timeout(Duration::from_secs(10), keep_streaming(&mut pm, 256 << 20)).await;
    assert_eq!(cut, Ok(false), "writes fail once the emulator closes");
}

/// The injected drops stay abrupt: no drain, no terminating chunk, even while the producer
/// keeps sending.
#[tokio::test]
async fn fault_drops_are_not_drained() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    emu.faults().push(FaultRule::DropAfterBytes {
        scope: Scope::any(),
        bytes: 5000,
    });
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    let _ = pm.send(&clip()[..6000]).await;
    let t0 = Instant::now();
    let kept_reading = keep_streaming(&mut pm, 256 << 20).await;
    assert!(!kept_reading);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let (_, end) = pm.all_acks().await;
    assert!(end.is_err(), "aborted, no terminating chunk");
}
