//! Hostile input: each case gets the AWS-shaped error, memory stays bounded, and the emulator
//! keeps serving other clients.

mod support;

use std::time::{Duration, Instant};

use kvs_emulator::{ConnectionEnd, Emulator};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The emulator still answers a normal SDK call.
async fn still_serving(emu: &Emulator) {
    let kv = aws_sdk_kinesisvideo::Client::new(&sdk_config(emu).await);
    kv.list_streams()
        .send()
        .await
        .expect("emulator keeps serving");
}

#[tokio::test]
async fn garbage_instead_of_http() {
    let emu = emulator().await;
    let (status, _) = raw_exchange(&emu, b"\x00\x01\x02 this is not HTTP\r\n\r\n").await;
    assert!(status == 0 || status == 400, "{status}");
    let (status, text) = raw_exchange(
        &emu,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "unsigned request: {text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-amzn-errortype: missingauthenticationtokenexception")
    );
    still_serving(&emu).await;
}

#[tokio::test]
async fn malformed_json_and_unknown_operation() {
    let emu = emulator().await;
    let (status, text) = raw_exchange(
        &emu,
        &signed_json_request(&emu, "/createStream", b"{\"StreamName\": "),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-amzn-errortype: serializationexception"),
        "{text}"
    );
    assert!(text.contains("\"message\""));
    let (status, text) = raw_exchange(
        &emu,
        &signed_json_request(&emu, "/createStream", b"[1,2,3]"),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = raw_exchange(
        &emu,
        &signed_json_request(&emu, "/describeStream", br#"{"StreamName":"../../etc"}"#),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("invalidargumentexception"),
        "{text}"
    );
    let (status, text) =
        raw_exchange(&emu, &signed_json_request(&emu, "/dropDatabase", b"{}")).await;
    assert_eq!(status, 404, "{text}");
    still_serving(&emu).await;
}

#[tokio::test]
async fn gigantic_declared_sizes() {
    let emu = emulator().await;
    // A JSON request declaring a terabyte is refused before any of it is read.
    let head = format!(
        "POST /createStream HTTP/1.1\r\nhost: {}\r\nauthorization: AWS4-HMAC-SHA256 Credential=AKIAEMULATOR00000000/20240101/us-east-1/kinesisvideo/aws4_request, SignedHeaders=host, Signature={}\r\ncontent-length: 1000000000000\r\n\r\n",
        emu.addr(),
        "0".repeat(64)
    );
    let t0 = Instant::now();
    let (status, text) = raw_exchange(&emu, head.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // A PutMedia chunk declaring 2^48 bytes, then a Cluster declaring 2^55: refused by the
    // validator as soon as the size is seen, not buffered.
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 200);
    let header_len = {
        // The clip's header: everything before the first Cluster id.
        let c = clip();
        c.windows(4)
            .position(|w| w == [0x1F, 0x43, 0xB6, 0x75])
            .unwrap()
    };
    let mut body = clip()[..header_len].to_vec();
    body.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0x01, 0x80, 0, 0, 0, 0, 0, 0]);
    body.extend(std::iter::repeat_n(0u8, 100_000));
    pm.send(&body).await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let last = acks.last().unwrap();
    assert_eq!(last["EventType"], "ERROR", "{acks:?}");
    assert!(
        matches!(last["ErrorId"].as_u64(), Some(4001 | 4006)),
        "{last}"
    );

    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    assert_eq!(pm.status, 200);
    // Raw chunk header with an absurd size, then garbage.
    let mut w = Vec::new();
    w.extend_from_slice(b"ffffffffffff\r\n");
    w.extend(std::iter::repeat_n(0x42u8, 200_000));
    let _ = pm.send_raw(&w).await;
    let (acks, _) = pm.all_acks().await;
    assert_eq!(acks.last().unwrap()["ErrorId"], 4006, "{acks:?}");
    still_serving(&emu).await;
}

#[tokio::test]
async fn truncated_chunked_body_frees_the_stream() {
    let emu = emulator().await;
    emu.create_stream("s", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "s")).await;
    // A chunk that promises 4096 bytes and delivers 100, then the client vanishes.
    let mut w = b"1000\r\n".to_vec();
    w.extend_from_slice(&clip()[..100]);
    pm.send_raw(&w).await.unwrap();
    drop(pm);
    let t0 = Instant::now();
    loop {
        let c = emu.connections("s");
        if let Some(end) = c[0].end.clone() {
            assert!(
                matches!(
                    end,
                    ConnectionEnd::BodyError { .. } | ConnectionEnd::ClientGone
                ),
                "{end:?}"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "connection end noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        PutMedia::open(&emu, PutMediaOptions::new(&emu, "s"))
            .await
            .status,
        200
    );
    still_serving(&emu).await;
}

#[tokio::test]
async fn slowloris_headers_and_stalled_bodies_are_cut() {
    let emu = Emulator::builder()
        .with_header_read_timeout(Duration::from_millis(300))
        .with_idle_timeout(Duration::from_millis(400))
        .start()
        .await
        .unwrap();
    let mut tcp = TcpStream::connect(emu.addr()).await.unwrap();
    tcp.write_all(b"POST /putMedia HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "server closed the slow connection");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // A JSON request whose body never arrives gets 408 after the idle timeout.
    let full = signed_json_request(&emu, "/listStreams", b"{}");
    let cut = full.len() - 2;
    let mut tcp = TcpStream::connect(emu.addr()).await.unwrap();
    tcp.write_all(&full[..cut]).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    still_serving(&emu).await;
}

#[tokio::test]
async fn path_traversal_in_s3_keys_and_stream_names() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let emu = Emulator::builder()
        .with_data_dir(&data)
        .start()
        .await
        .unwrap();
    let s3 = aws_sdk_s3::Client::new(&sdk_config(&emu).await);
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    for key in ["../../escape.txt", "../escape.txt", "a/../../../escape.txt"] {
        let _ = s3
            .put_object()
            .bucket("bkt")
            .key(key)
            .body(bytes::Bytes::from_static(b"x").into())
            .send()
            .await;
    }
    assert!(!root.path().join("escape.txt").exists());
    assert!(!data.join("escape.txt").exists());
    assert!(!root.path().parent().unwrap().join("escape.txt").exists());

    // ".." is a legal stream name by the regex; it must stay a plain name on disk.
    emu.create_stream("..", 1).await.unwrap();
    emu.create_stream(".", 1).await.unwrap();
    assert!(
        data.join("streams")
            .join("s-..")
            .join("stream.json")
            .exists()
    );
    assert!(emu.create_stream("../x", 1).await.is_err());
    assert!(emu.create_stream("a/b", 1).await.is_err());
    still_serving(&emu).await;
}

#[tokio::test]
async fn persisted_fragments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::builder()
        .with_data_dir(dir.path())
        .with_persist_delay(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    emu.create_stream("cam", 24).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "cam")).await;
    for c in clip().chunks(8192) {
        pm.send(c).await.unwrap();
    }
    pm.end().await.unwrap();
    pm.all_acks().await.1.unwrap();
    let before = emu.fragments("cam");
    emu.shutdown().await;

    let emu = Emulator::builder()
        .with_data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let after = emu.fragments("cam");
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a.fragment_number, b.fragment_number);
        assert_eq!(a.producer_timestamp_ms, b.producer_timestamp_ms);
        assert_eq!(a.media, b.media);
    }
    // New fragment numbers keep increasing across the restart.
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "cam")).await;
    for c in clip().chunks(8192) {
        pm.send(c).await.unwrap();
    }
    pm.end().await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    let err = acks.iter().find(|a| a["EventType"] == "ERROR");
    // Same producer timestamps again: KVS accepts a resend on a new connection.
    assert!(err.is_none(), "{err:?}");
    let all = emu.fragments("cam");
    assert!(
        all.windows(2)
            .all(|w| w[0].fragment_number < w[1].fragment_number)
    );
}

#[tokio::test]
async fn drop_stops_the_server() {
    let emu = emulator().await;
    let addr = emu.addr();
    drop(emu);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener closed on drop"
    );
}
