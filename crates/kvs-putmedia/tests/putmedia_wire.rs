//! Wire-level PutMedia client tests against a scripted server on 127.0.0.1: ack chunking,
//! interleaving, headers, and secrets kept out of logs and `Debug`.
#![cfg(feature = "client")]

#[path = "common/putmedia.rs"]
mod putmedia_common;

use std::time::Duration;

use aws_credential_types::Credentials;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_putmedia::ack::AckEventType;
use kvs_putmedia::mkv::RefragmentConfig;
use kvs_putmedia::{
    CompletionAck, ConnectCause, Error, FragmentAck, Pacing, PutMediaClient, PutMediaClientBuilder,
    RetryPolicy, SessionEvent, TimeoutPhase, Timeouts,
};
use putmedia_common::{SynthMkv, ack, ack_all, chunks, scripted_server, scripted_server_seq};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
const TOKEN: &str = "FwoGZXIvYXdzEJr//////////SESSIONTOKENVALUE";

fn mkv() -> Bytes {
    // 6 s of 25 fps, a keyframe every second, so 1 s fragments: 6 fragments.
    SynthMkv {
        frames: 150,
        frame_ms: 40,
        gop: 25,
        frame_bytes: 300,
        cluster_frames: 10,
    }
    .build()
}

fn client(addr: std::net::SocketAddr) -> PutMediaClientBuilder {
    PutMediaClient::builder()
        .with_stream_name("wire-test")
        .with_region("us-west-2")
        .with_credentials(Credentials::new(
            "AKIDWIRETEST",
            SECRET,
            Some(TOKEN.to_owned()),
            None,
            "test",
        ))
        .with_data_endpoint(format!("http://{addr}"))
        .with_allow_http(true)
        // The scripted server checks no producer timestamp, and answers once the body goes
        // quiet: media goes out at once.
        .with_pacing(Pacing::Backfill)
        // No control plane here to answer DescribeStream.
        .with_completion_ack(CompletionAck::Persisted)
        .with_refragment_config(
            RefragmentConfig::builder()
                .with_target_fragment_duration(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
}

/// Sends the clip, closes, and returns the close result and every event.
async fn run(
    b: PutMediaClientBuilder,
) -> (
    kvs_putmedia::Result<kvs_putmedia::SessionSummary>,
    Vec<kvs_putmedia::Result<SessionEvent>>,
) {
    let client = b.build().unwrap();
    let (mut sink, acks) = client.start().await.unwrap();
    let collector = tokio::spawn(acks.collect::<Vec<_>>());
    for c in chunks(&mkv(), 1000) {
        sink.send(c).await.unwrap();
    }
    let summary = sink.close().await;
    let events = collector.await.unwrap();
    (summary, events)
}

/// The server records the end of the body shortly after the client wrote it.
async fn wait_body_complete(seen: &std::sync::Arc<std::sync::Mutex<putmedia_common::Seen>>) {
    for _ in 0..200 {
        if seen.lock().unwrap().body_complete {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the request body never ended with its terminating chunk");
}

/// The session reconnected exactly once, after a `phase` timeout of `waited`.
fn assert_one_timeout(
    events: &[kvs_putmedia::Result<SessionEvent>],
    phase: TimeoutPhase,
    waited: Duration,
) {
    let errors = reconnect_errors(events);
    assert!(
        matches!(
            errors.as_slice(),
            [Error::Timeout { phase: p, waited: w, .. }] if *p == phase && *w == waited
        ),
        "{errors:?}"
    );
}

/// The `Reconnecting` events' errors.
fn reconnect_errors(events: &[kvs_putmedia::Result<SessionEvent>]) -> Vec<Error> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(SessionEvent::Reconnecting { error, .. }) => Some(error.clone()),
            _ => None,
        })
        .collect()
}

fn fragment_acks(events: &[kvs_putmedia::Result<SessionEvent>]) -> Vec<FragmentAck> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(SessionEvent::Fragment(f)) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn putmedia_interleaved_acks_two_per_chunk_and_split_are_matched_by_timecode() {
    let (addr, seen) = scripted_server(Box::new(|clusters| {
        // Interleaved as in docs/protocol.md §2, then re-chunked: two acks in one chunk, one ack split
        // across two chunks, and the rest one byte per chunk for the last ack.
        let tcs: Vec<u64> = clusters.iter().map(|c| c.0).collect();
        let mut lines = String::new();
        for w in tcs.windows(2) {
            lines += &ack("BUFFERING", w[1]);
            lines += &ack("RECEIVED", w[0]);
        }
        lines = ack("BUFFERING", tcs[0]) + &lines;
        lines += &ack("RECEIVED", *tcs.last().unwrap());
        // PERSISTED in reverse order: only the timecode can match them.
        for &tc in tcs.iter().rev() {
            lines += &ack("PERSISTED", tc);
        }
        let bytes = lines.into_bytes();
        let first_two = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(1)
            .unwrap()
            .0
            + 1;
        let mut out = vec![bytes[..first_two].to_vec()];
        let rest = &bytes[first_two..];
        let half = 30;
        out.push(rest[..half].to_vec());
        out.push(rest[half..rest.len() - 40].to_vec());
        out.extend(rest[rest.len() - 40..].iter().map(|b| vec![*b]));
        out
    }))
    .await;
    let (summary, events) = run(client(addr)).await;
    let summary = summary.unwrap();
    wait_body_complete(&seen).await;
    let seen = seen.lock().unwrap();
    let sent = putmedia_common::clusters(&seen.body);
    assert!(sent.len() >= 5, "expected several fragments, got {sent:?}");
    assert!(seen.later.is_empty(), "one connection");
    let acks = fragment_acks(&events);
    assert_eq!(acks.len(), sent.len() * 3);
    for a in &acks {
        let size = sent.iter().find(|c| c.0 == a.timecode).unwrap().1;
        assert_eq!(a.size, size, "ack {a:?} matched to the wrong fragment");
        if a.event != AckEventType::Buffering {
            assert!(a.latency.is_some());
        }
    }
    assert_eq!(summary.fragments_sent, sent.len() as u64);
    assert_eq!(summary.fragments_received, sent.len() as u64);
    assert_eq!(summary.fragments_persisted, sent.len() as u64);
    assert_eq!(summary.bytes_sent, seen.body.len() as u64);
    assert!(summary.first_ack_latency.is_some());
    assert!(summary.fragments_failed.is_empty());
}

#[tokio::test]
async fn putmedia_request_headers_follow_the_reference() {
    let (addr, seen) = scripted_server(ack_all()).await;
    let (summary, _) = run(client(addr)).await;
    summary.unwrap();
    let seen = seen.lock().unwrap();
    let get = |n: &str| {
        seen.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let mut names: Vec<&str> = seen.headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authorization",
            "host",
            "transfer-encoding",
            "x-amz-date",
            "x-amz-security-token",
            "x-amzn-fragment-acknowledgment-required",
            "x-amzn-fragment-timecode-type",
            "x-amzn-producer-start-timestamp",
            "x-amzn-stream-name",
        ]
    );
    assert_eq!(get("x-amzn-stream-name").unwrap(), "wire-test");
    assert_eq!(get("x-amzn-fragment-timecode-type").unwrap(), "RELATIVE");
    assert_eq!(get("x-amzn-fragment-acknowledgment-required").unwrap(), "1");
    assert_eq!(get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(get("host").unwrap(), addr.to_string());
    let ts = get("x-amzn-producer-start-timestamp").unwrap();
    let (secs, frac) = ts.split_once('.').unwrap();
    assert_eq!(frac.len(), 3, "{ts}");
    assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
    let auth = get("authorization").unwrap();
    assert!(
        auth.contains("/us-west-2/kinesisvideo/aws4_request"),
        "{auth}"
    );
    assert!(
        auth.contains(
            "SignedHeaders=host;x-amz-date;x-amz-security-token;\
             x-amzn-fragment-acknowledgment-required;x-amzn-fragment-timecode-type;\
             x-amzn-producer-start-timestamp;x-amzn-stream-name,"
        ),
        "{auth}"
    );
    assert_eq!(get("x-amz-security-token").unwrap(), TOKEN);
}

/// docs/protocol.md §6: a fragment refused with a non-retryable id (4006) is reported and skipped; the
/// session reconnects and resends, whole, the fragments after it that were not RECEIVED.
#[tokio::test]
async fn putmedia_error_ack_skips_the_fragment_and_replays_the_rest_on_a_new_connection() {
    let (addr, seen) = scripted_server(Box::new(|clusters| {
        let tc = clusters[2].0;
        vec![
            ack("RECEIVED", clusters[0].0).into_bytes(),
            ack("PERSISTED", clusters[0].0).into_bytes(),
            format!(
                "{{\"EventType\":\"ERROR\",\"FragmentTimecode\":{tc},\"FragmentNumber\":\"123\",\"ErrorCode\":\"INVALID_MKV_DATA\",\"ErrorId\":4006}}\n"
            )
            .into_bytes(),
        ]
    }))
    .await;
    let (summary, events) = run(client(addr)).await;
    // A fragment refused for good: close() says so, with the summary.
    let summary = match summary {
        Err(Error::Incomplete { summary, .. }) => *summary,
        other => panic!("a skipped fragment must make close() fail: {other:?}"),
    };
    assert!(!summary.is_complete());
    let skipped: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ok(SessionEvent::Skipped(f)) => Some(f.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1);
    let f = &skipped[0];
    assert_eq!(f.error.id.id(), 4006);
    assert_eq!(f.error.code, "INVALID_MKV_DATA");
    assert_eq!(f.timecode, Some(2000));
    assert_eq!(f.fragment_number.as_ref().map(|n| n.as_str()), Some("123"));
    assert_eq!(summary.fragments_failed, skipped);
    assert_eq!(summary.fragments_skipped, 1);
    assert!(events.iter().all(Result::is_ok), "no session error");
    assert!(events.iter().any(|e| matches!(
        e,
        Ok(SessionEvent::Connected {
            connection: 2,
            cause: ConnectCause::Retry,
            replay: 4
        })
    )));
    // The second request starts with the header and carries every fragment not RECEIVED
    // except the refused one, each whole.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.later.len(), 1);
    let first = putmedia_common::clusters(&seen.body);
    let second = putmedia_common::clusters(&seen.later[0]);
    let tcs: Vec<u64> = second.iter().map(|c| c.0).collect();
    assert_eq!(tcs, [1000, 3000, 4000, 5000]);
    for c in &second {
        assert!(first.contains(c), "resent whole: {c:?}");
    }
    assert!(
        seen.later[0].starts_with(&[0x1A, 0x45, 0xDF, 0xA3]),
        "EBML header first"
    );
    assert_eq!(summary.fragments_resent, 4);
    assert_eq!(summary.connections, 2);
}

#[tokio::test(start_paused = true)]
async fn putmedia_no_ack_hits_the_first_ack_limit_and_the_session_reconnects() {
    // The first connection never acks and keeps the response open: the first-ack limit fires
    // (paused time makes the wait instant), and the session resends everything on a new one.
    let (addr, seen) = scripted_server(Box::new(|_| vec![vec![]])).await;
    let t = Timeouts::default().with_first_ack(Duration::from_secs(3));
    let (summary, events) = run(client(addr).with_timeouts(t)).await;
    let summary = summary.unwrap();
    assert_one_timeout(&events, TimeoutPhase::FirstAck, Duration::from_secs(3));
    let seen = seen.lock().unwrap();
    assert_eq!(
        putmedia_common::clusters(&seen.later[0]).len() as u64,
        summary.fragments_persisted
    );
    assert_eq!(summary.retries, 1);
}

/// With retries disabled the first failure ends the session with its typed error.
#[tokio::test(start_paused = true)]
async fn putmedia_without_retries_the_first_ack_timeout_ends_the_session() {
    let (addr, _seen) = scripted_server(Box::new(|_| vec![vec![]])).await;
    let t = Timeouts::default()
        .with_first_ack(Duration::from_secs(3))
        .with_final_drain(Duration::from_secs(100));
    let (summary, events) = run(client(addr)
        .with_timeouts(t)
        .with_retry_policy(RetryPolicy::none()))
    .await;
    match summary {
        Err(Error::Timeout {
            phase: TimeoutPhase::FirstAck,
            waited,
            ..
        }) => assert_eq!(waited, Duration::from_secs(3)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(events.last(), Some(Err(Error::Timeout { .. }))));
}

#[tokio::test]
async fn putmedia_secrets_stay_out_of_logs_and_debug() {
    let logs = putmedia_common::LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (addr, seen) = scripted_server(Box::new(|clusters| {
        let mut out: Vec<Vec<u8>> = clusters
            .iter()
            .map(|c| (ack("RECEIVED", c.0) + &ack("PERSISTED", c.0)).into_bytes())
            .collect();
        out.push(b"{\"EventType\":\"IDLE\"}\n".to_vec());
        out
    }))
    .await;
    let builder = client(addr);
    let mut debug = format!("{builder:?}");
    let client = builder.build().unwrap();
    debug += &format!("{client:?}");
    let (mut sink, mut acks) = client.start().await.unwrap();
    debug += &format!("{sink:?}{acks:?}");
    for c in chunks(&mkv(), 4096) {
        sink.send(c).await.unwrap();
    }
    debug += &format!("{sink:?}");
    let reader = tokio::spawn(async move {
        let mut d = String::new();
        while let Some(e) = acks.next().await {
            d += &format!("{e:?}");
        }
        d += &format!("{:?}", acks.summary());
        d
    });
    let summary = sink.close().await.unwrap();
    debug += &format!("{summary:?}");
    debug += &reader.await.unwrap();
    let auth = seen
        .lock()
        .unwrap()
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1
        .clone();
    let signature = auth.rsplit("Signature=").next().unwrap().to_owned();
    assert_eq!(signature.len(), 64);
    let logged = logs.contents();
    assert!(
        !logged.is_empty(),
        "the capture must see the session's logs"
    );
    for secret in [SECRET, TOKEN, signature.as_str()] {
        assert!(!logged.contains(secret), "a secret reached the logs");
        assert!(!debug.contains(secret), "a secret reached Debug output");
    }
    assert!(debug.contains("AKIDWIRETEST") || debug.contains("wire-test"));
}

/// Docs/protocol.md §6: "if no BUFFERING/IDLE ack arrives for a configured time (60 s
/// default), reset the connection". The service acknowledged over a healthy connection before
/// it went silent, so what it RECEIVED was received while it was reachable: only the fragments
/// not RECEIVED are resent (§6: "replay from the first fragment not RECEIVED when the service
/// was reachable").
#[tokio::test(start_paused = true)]
async fn putmedia_silent_service_is_reset_on_staleness_and_fragments_not_received_resent() {
    // One RECEIVED, then silence with the response open.
    let (addr, seen) = scripted_server(Box::new(|clusters| {
        vec![ack("RECEIVED", clusters[0].0).into_bytes(), vec![]]
    }))
    .await;
    let t = Timeouts::default().with_staleness(Duration::from_secs(7));
    let (summary, events) = run(client(addr).with_timeouts(t)).await;
    let summary = summary.unwrap();
    assert_one_timeout(&events, TimeoutPhase::Staleness, Duration::from_secs(7));
    let seen = seen.lock().unwrap();
    let first = putmedia_common::clusters(&seen.body);
    let second = putmedia_common::clusters(&seen.later[0]);
    // All but the one RECEIVED before the silence.
    assert_eq!(&first[1..], &second[..]);
    assert_eq!(summary.fragments_persisted, second.len() as u64);
    assert_eq!(summary.fragments_delivered, first.len() as u64);
    assert!(summary.is_complete());
}

/// Issue 12, item 2: acknowledgements stop after the input ended, for longer than the final
/// drain limit while the staleness limit (60 s) is far away. The stall is recovered like any
/// other: the connection is reset and what was not acknowledged is resent on a new one, within
/// the retry budget; `close()` succeeds. It used to fail with "timed out in final drain" with
/// the fragments undelivered.
#[tokio::test(start_paused = true)]
async fn putmedia_ack_stall_after_the_last_byte_reconnects_and_resends() {
    // The first fragment acknowledged, then silence with the response open.
    let (addr, seen) = scripted_server(Box::new(|clusters| {
        let c = clusters[0].0;
        vec![
            (ack("RECEIVED", c) + &ack("PERSISTED", c)).into_bytes(),
            vec![],
        ]
    }))
    .await;
    let t = Timeouts::default().with_final_drain(Duration::from_secs(5));
    let (summary, events) = run(client(addr).with_timeouts(t)).await;
    let summary = summary.expect("the stall is recovered, not the end of the session");
    assert_one_timeout(&events, TimeoutPhase::FinalDrain, Duration::from_secs(5));
    let seen = seen.lock().unwrap();
    let first = putmedia_common::clusters(&seen.body);
    let second = putmedia_common::clusters(&seen.later[0]);
    assert!(first.len() >= 3, "{first:?}");
    assert_eq!(&first[1..], &second[..], "what was not acknowledged, again");
    assert!(summary.is_complete(), "{summary:?}");
    assert_eq!(summary.fragments_persisted, first.len() as u64);
    assert_eq!(summary.retries, 1);
}

/// The same stall with the retry budget spent: the session ends with the drain timeout, and
/// nothing is reported delivered that was not.
#[tokio::test(start_paused = true)]
async fn putmedia_ack_stall_after_the_last_byte_without_retries_fails_the_session() {
    let (addr, _seen) = scripted_server(Box::new(|clusters| {
        let c = clusters[0].0;
        vec![
            (ack("RECEIVED", c) + &ack("PERSISTED", c)).into_bytes(),
            vec![],
        ]
    }))
    .await;
    let t = Timeouts::default().with_final_drain(Duration::from_secs(5));
    let (summary, _events) = run(client(addr)
        .with_timeouts(t)
        .with_retry_policy(RetryPolicy::none()))
    .await;
    match summary {
        Err(Error::Timeout {
            phase: TimeoutPhase::FinalDrain,
            waited,
            ..
        }) => assert_eq!(waited, Duration::from_secs(5)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn putmedia_unanswered_request_times_out_on_response_head() {
    // Accepts the connection and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let t = Timeouts::default()
        .with_connect(Duration::from_secs(1))
        .with_response_head(Duration::from_secs(2));
    let err = client(addr)
        .with_timeouts(t)
        .with_retry_policy(RetryPolicy::none())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                phase: TimeoutPhase::ResponseHead,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    holder.abort();
}

#[tokio::test]
async fn putmedia_error_status_is_typed_with_aws_error_type_and_request_id() {
    // A 400 ConnectionLimitExceededException answered before any media.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let body = r#"{"message":"already connected"}"#;
        let resp = format!(
            "HTTP/1.1 400 Bad Request\r\nx-amzn-ErrorType: ConnectionLimitExceededException:http://internal.amazon.com/coral/com.amazonaws.kinesis.video/\r\nx-amzn-RequestId: req-123\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(resp.as_bytes()).await.unwrap();
        let _ = tcp.read(&mut buf).await;
    });
    let err = client(addr)
        .with_retry_policy(RetryPolicy::none())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    match &err {
        Error::ConnectionLimit {
            stream,
            message,
            request_id,
        } => {
            assert_eq!(stream, "wire-test");
            assert_eq!(message, "already connected");
            assert_eq!(request_id, "req-123");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn putmedia_ack_stream_ends_after_sinkext_close_without_dropping_the_sink() {
    let (addr, _seen) = scripted_server(ack_all()).await;
    let client = client(addr).build().unwrap();
    let (mut sink, acks) = client.start().await.unwrap();
    for c in chunks(&mkv(), 8192) {
        sink.feed(c).await.unwrap();
    }
    SinkExt::close(&mut sink).await.unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), acks.collect::<Vec<_>>())
        .await
        .expect("the ack stream must end once the sink is closed and the response ended");
    assert_eq!(
        fragment_acks(&events).len() as u64,
        sink.summary().fragments_sent * 2
    );
    // The sink refuses media after close.
    assert!(matches!(
        sink.send(Bytes::from_static(b"x")).await,
        Err(Error::SessionClosed { .. })
    ));
}

#[tokio::test]
async fn putmedia_data_endpoint_is_cached_and_refetched_after_a_connection_failure() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // The PutMedia side: a scripted server acking every fragment.
    let (data_addr, _seen) = scripted_server(ack_all()).await;
    // A port nothing listens on: bind, note it, close.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // The control plane: GetDataEndpoint answers the dead endpoint first, then the live one.
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = listener.local_addr().unwrap();
    let calls2 = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let calls = calls2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let calls = calls.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/getDataEndpoint");
                            let n = calls.fetch_add(1, Ordering::SeqCst);
                            let url = if n == 0 { dead } else { data_addr };
                            let body = format!("{{\"DataEndpoint\":\"http://{url}\"}}");
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let client = PutMediaClient::builder()
        .with_stream_name("wire-test")
        .with_region("us-west-2")
        .with_credentials(Credentials::new("AKID", SECRET, None, None, "test"))
        .with_endpoint_url(format!("http://{cp_addr}"))
        .with_allow_http(true)
        .with_completion_ack(CompletionAck::Persisted)
        .build()
        .unwrap();
    // The first attempt fails on the dead endpoint; `start` forgets it, backs off, asks again,
    // and connects to the live one, which is then cached.
    let (sink, _acks) = client.start().await.unwrap();
    assert_eq!(sink.summary().retries, 1);
    assert_eq!(sink.summary().connections, 1);
    drop(sink);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        client
            .data_endpoint(client.stream().unwrap())
            .await
            .unwrap()
            .authority()
            .unwrap()
            .as_str(),
        data_addr.to_string()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Large fragments (about 75 KB each, 6 of them) for tests of the replay-buffer cap.
fn big_mkv() -> Bytes {
    SynthMkv {
        frames: 150,
        frame_ms: 40,
        gop: 25,
        frame_bytes: 3000,
        cluster_frames: 10,
    }
    .build()
}

/// Streams `mkv` and closes, bounded by `limit`, returning the close result and the events.
async fn run_mkv(
    b: PutMediaClientBuilder,
    mkv: Bytes,
    limit: Duration,
) -> (
    kvs_putmedia::Result<kvs_putmedia::SessionSummary>,
    Vec<kvs_putmedia::Result<SessionEvent>>,
) {
    tokio::time::timeout(limit, async move {
        let client = b.build().unwrap();
        let (mut sink, acks) = client.start().await.unwrap();
        let collector = tokio::spawn(acks.collect::<Vec<_>>());
        for c in chunks(&mkv, 4096) {
            sink.send(c).await.unwrap();
        }
        let summary = sink.close().await;
        (summary, collector.await.unwrap())
    })
    .await
    .expect("the session must not hang")
}

/// A sink waiting at the cap is woken when a connection that ends cleanly settles its RECEIVED
/// fragments as delivered (their PERSISTED acks went with the connection).
#[tokio::test]
async fn a_sink_waiting_at_the_cap_wakes_when_a_connection_end_settles_fragments() {
    let (addr, _seen) = scripted_server_seq(vec![Box::new(|clusters| {
        // RECEIVED only, then the response ends.
        vec![
            clusters
                .iter()
                .map(|c| ack("RECEIVED", c.0))
                .collect::<String>()
                .into_bytes(),
        ]
    })])
    .await;
    let b = client(addr).with_buffer_bound(kvs_putmedia::MIN_BUFFER_BOUND);
    let (summary, _) = run_mkv(b, big_mkv(), Duration::from_secs(20)).await;
    let summary = summary.unwrap();
    assert_eq!(
        summary.fragments_delivered, summary.fragments,
        "{summary:?}"
    );
    assert!(summary.connections >= 2, "{summary:?}");
}

/// docs/protocol.md §2 table: 5001 ARCHIVAL_ERROR ("failed to persist") is retried. Naming a fragment
/// already RECEIVED, it means that fragment is not safe: it is resent.
#[tokio::test]
async fn a_retryable_error_naming_a_received_fragment_resends_it() {
    let (addr, seen) = scripted_server_seq(vec![Box::new(|clusters| {
        vec![
            ack("RECEIVED", clusters[0].0).into_bytes(),
            putmedia_common::error_ack(5001, "ARCHIVAL_ERROR", Some(clusters[0].0)).into_bytes(),
        ]
    })])
    .await;
    let (summary, events) = run(client(addr)).await;
    let summary = summary.unwrap();
    let seen = seen.lock().unwrap();
    let second: Vec<u64> = putmedia_common::clusters(&seen.later[0])
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(second.first(), Some(&0), "fragment 0 resent: {second:?}");
    assert_eq!(summary.fragments_delivered, summary.fragments);
    assert!(
        reconnect_errors(&events)
            .iter()
            .any(|e| matches!(e, Error::Ack { id, .. } if id.id() == 5001))
    );
}

/// A fragment RECEIVED on one request and resent on the next (after a dropped connection) is
/// judged by the acks of its latest send: when that request fails before acknowledging it, it is
/// sent again.
#[tokio::test(start_paused = true)]
async fn acks_of_an_earlier_request_do_not_count_for_a_resend() {
    let (addr, seen) = scripted_server_seq(vec![
        // All RECEIVED, none PERSISTED, then the connection is aborted: the service was
        // unreachable, so everything not PERSISTED is resent.
        Box::new(|clusters| {
            vec![
                clusters
                    .iter()
                    .map(|c| ack("RECEIVED", c.0))
                    .collect::<String>()
                    .into_bytes(),
                putmedia_common::ABORT.to_vec(),
            ]
        }),
        // The second request acknowledges two, then fails on the third.
        Box::new(|clusters| {
            vec![
                (ack("RECEIVED", clusters[0].0)
                    + &ack("PERSISTED", clusters[0].0)
                    + &ack("RECEIVED", clusters[1].0)
                    + &ack("PERSISTED", clusters[1].0))
                    .into_bytes(),
                putmedia_common::error_ack(5000, "INTERNAL_ERROR", Some(clusters[2].0))
                    .into_bytes(),
            ]
        }),
    ])
    .await;
    let (summary, _) = run(client(addr)).await;
    let summary = summary.unwrap();
    let seen = seen.lock().unwrap();
    let third: Vec<u64> = putmedia_common::clusters(&seen.later[1])
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(third, [2000, 3000, 4000, 5000]);
    assert_eq!(summary.fragments_delivered, 6);
    assert_eq!(summary.fragments_received, 6, "each fragment counted once");
}

/// A skip-class ERROR that names no fragment has nothing to skip: it is retried with backoff,
/// under the retry budget, and nothing is reported skipped.
#[tokio::test(start_paused = true)]
async fn a_skip_error_without_a_timecode_is_retried_not_skipped() {
    let (addr, _seen) = scripted_server_seq(vec![Box::new(|_| {
        vec![putmedia_common::error_ack(4006, "INVALID_MKV_DATA", None).into_bytes()]
    })])
    .await;
    let (summary, events) = run(client(addr)).await;
    let summary = summary.unwrap();
    assert_eq!(summary.fragments_skipped, 0);
    assert_eq!(summary.retries, 1, "{summary:?}");
    assert_eq!(summary.fragments_delivered, summary.fragments);
    assert!(matches!(
        reconnect_errors(&events).as_slice(),
        [Error::Ack { id, .. }] if id.id() == 4006
    ));
}

/// docs/protocol.md §2: InvalidEndpointException means "call GetDataEndpoint again": retryable.
#[test]
fn invalid_endpoint_is_retryable() {
    let e = Error::Http {
        stream: "s".into(),
        status: 400,
        error_type: "InvalidEndpointException".into(),
        message: String::new(),
        request_id: String::new(),
    };
    assert!(e.is_retryable());
    let other = Error::Http {
        stream: "s".into(),
        status: 400,
        error_type: "InvalidArgumentException".into(),
        message: String::new(),
        request_id: String::new(),
    };
    assert!(!other.is_retryable());
}
