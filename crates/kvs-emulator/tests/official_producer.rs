//! The emulator as the official KVS C producer (producer-c and its PIC core) sees it (issue 12,
//! item 4): reserved event-metadata tags, the fragment an ERROR names, the rotation overlap,
//! `x-amzn-RequestId` spelled exactly, `Expect: 100-continue`, and ErrorCode matching ErrorId.
//! Everything over raw sockets, so the bytes on the wire are what is checked.

mod media_support;
mod support;

use std::time::{Duration, Instant};

use kvs_emulator::{ConnectionEnd, Emulator};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn event(a: &Value) -> &str {
    a["EventType"].as_str().unwrap()
}

fn blocks(n: i16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|f| media_support::simple_block(1, f * 40, f == 0))
        .collect()
}

/// Sends `body` in 1000-byte HTTP chunks, ends it, and returns every ack.
async fn put_all(pm: &mut PutMedia, body: &[u8]) -> Vec<Value> {
    for c in body.chunks(1000) {
        if pm.send(c).await.is_err() {
            break;
        }
    }
    let _ = pm.end().await;
    let (acks, end) = pm.all_acks().await;
    end.unwrap();
    acks
}

#[tokio::test]
async fn event_metadata_tags_are_accepted_and_stored() {
    use media_support::{cat, cluster, header, tags};
    let emu = emulator().await;
    emu.create_stream("events", 1).await.unwrap();
    // What putKinesisVideoEventMetadata(NOTIFICATION | IMAGE_GENERATION) puts before a fragment.
    let body = cat(&[
        header(&[1]),
        cluster(0, &blocks(25)),
        tags(&[
            ("AWS_KINESISVIDEO_NOTIFICATION", ""),
            ("AWS_KINESISVIDEO_IMAGE_GENERATION", ""),
            ("AWS_KINESISVIDEO_IMAGE_PREFIX", "cam-1/"),
            ("label", "door"),
        ]),
        cluster(1000, &blocks(25)),
        cluster(2000, &blocks(25)),
    ]);
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "events")).await;
    let acks = put_all(&mut pm, &body).await;
    assert!(acks.iter().all(|a| event(a) != "ERROR"), "{acks:?}");
    let frags = emu.fragments("events");
    assert_eq!(frags.len(), 3, "no media lost");
    assert_eq!(frags[1].tags.len(), 4);
    assert_eq!(frags[1].tags[2].1, "cam-1/");
    assert!(frags[0].tags.is_empty() && frags[2].tags.is_empty());
}

#[tokio::test]
async fn an_error_caused_by_a_fragment_names_it_and_the_fragment_before_is_kept() {
    use media_support::{cat, cluster_unknown, header, tags};
    let emu = emulator().await;
    emu.create_stream("tagged", 1).await.unwrap();
    let body = cat(&[
        header(&[1]),
        cluster_unknown(0, &blocks(25)),
        tags(&[("AWS_NOT_RECOGNISED", "x")]),
        cluster_unknown(1000, &blocks(25)),
    ]);
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "tagged")).await;
    let acks = put_all(&mut pm, &body).await;
    let error = acks.iter().find(|a| event(a) == "ERROR").expect("an ERROR");
    assert_eq!(error["ErrorId"], 4009);
    assert_eq!(error["ErrorCode"], "FRAGMENT_METADATA_LIMIT_REACHED");
    assert_eq!(error["FragmentTimecode"], 1000, "{error}");
    let buffering = acks
        .iter()
        .find(|a| event(a) == "BUFFERING" && a["FragmentTimecode"] == 1000)
        .unwrap();
    assert_eq!(error["FragmentNumber"], buffering["FragmentNumber"]);
    // The fragment open when the Tags arrived is received and stored, not lost with it.
    assert!(
        acks.iter()
            .any(|a| event(a) == "RECEIVED" && a["FragmentTimecode"] == 0)
    );
    let frags = emu.fragments("tagged");
    assert_eq!(frags.len(), 1);
    assert_eq!(frags[0].fragment_timecode, 0);
}

#[tokio::test]
async fn the_fragment_rate_error_code_is_the_code_of_its_id() {
    use media_support::{cat, cluster, header};
    let emu = emulator().await;
    emu.create_stream("fast", 1).await.unwrap();
    let frags: Vec<Vec<u8>> = (0..6)
        .map(|i| cluster(i * 150, &[media_support::simple_block(1, 0, true)]))
        .collect();
    let body = cat(&[header(&[1]), cat(&frags)]);
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "fast")).await;
    let acks = put_all(&mut pm, &body).await;
    let error = acks.iter().find(|a| event(a) == "ERROR").expect("an ERROR");
    assert_eq!(error["ErrorId"], 4002);
    assert_eq!(
        error["ErrorCode"],
        kvs_emulator::error_code(4002),
        "{error}"
    );
    assert_eq!(error["FragmentTimecode"], 750);
    let recorded = emu.acks("fast");
    let sent = recorded.iter().find(|a| a.error_id.is_some()).unwrap();
    assert_eq!(
        sent.error_code.as_deref(),
        Some("MAX_FRAGMENT_DURATION_REACHED")
    );
}

// ---- rotation overlap ------------------------------------------------------------------------

/// The official producer opens the next PutMedia while the old body still sends; the new one is
/// accepted, a third is not, and the old one finishes normally inside the window.
#[tokio::test]
async fn a_new_put_media_while_the_old_still_sends_is_accepted_for_the_overlap() {
    let emu = emulator().await;
    emu.create_stream("rot", 1).await.unwrap();
    let clip = clip();
    let (head, tail) = clip.split_at(clip.len() / 2);
    let mut old = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    assert_eq!(old.status, 200);
    old.send(head).await.unwrap();
    // Wait until the emulator has read some of it, so the old one is "still sending".
    let t0 = Instant::now();
    while emu.acks("rot").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut new = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    assert_eq!(new.status, 200, "{}", new.head);
    let third = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    assert_eq!(third.status, 400);
    assert_eq!(
        third.header("x-amzn-errortype").as_deref(),
        Some("ConnectionLimitExceededException")
    );
    // The old request finishes its media and gets every ack, PERSISTED last.
    let old_acks = put_all(&mut old, tail).await;
    assert!(old_acks.iter().all(|a| event(a) != "ERROR"), "{old_acks:?}");
    assert_eq!(event(old_acks.last().unwrap()), "PERSISTED");
    assert_eq!(
        emu.connections("rot")[0].end,
        Some(ConnectionEnd::EndOfBody)
    );
    // The new one works as any connection does.
    let new_acks = put_all(&mut new, clip).await;
    assert_eq!(
        new_acks.iter().filter(|a| event(a) == "PERSISTED").count(),
        6
    );
    assert_eq!(emu.fragments("rot").len(), 12);
    // Once the old one ended, the overlap slot is free again.
    let again = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    assert_eq!(again.status, 200);
}

/// The window is bounded: a superseded request still sending when it ends is closed, after
/// its received fragments got PERSISTED.
#[tokio::test]
async fn a_superseded_request_still_sending_after_the_window_is_closed() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_secs(30))
        .with_rotation_overlap(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    emu.create_stream("rot", 1).await.unwrap();
    let clip = clip();
    let mut old = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    old.send(&clip[..clip.len() / 2]).await.unwrap();
    let t0 = Instant::now();
    while emu.fragments("rot").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new = PutMedia::open(&emu, PutMediaOptions::new(&emu, "rot")).await;
    assert_eq!(new.status, 200);
    let opened = Instant::now();
    // The old one keeps its body open and says nothing more: the window ends it.
    let (acks, end) = old.all_acks().await;
    end.unwrap();
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed {waited:?} after the new request"
    );
    let received: Vec<&Value> = acks.iter().filter(|a| event(a) == "RECEIVED").collect();
    assert!(!received.is_empty());
    // PERSISTED for each received fragment although the persist delay is 30 s.
    for r in &received {
        assert!(
            acks.iter()
                .any(|a| event(a) == "PERSISTED" && a["FragmentTimecode"] == r["FragmentTimecode"]),
            "{acks:?}"
        );
    }
    assert_eq!(
        emu.connections("rot")[0].end,
        Some(ConnectionEnd::RotationOverlapEnded)
    );
}

#[tokio::test]
async fn without_an_overlap_window_the_second_connection_is_refused() {
    let emu = Emulator::builder()
        .with_rotation_overlap(Duration::ZERO)
        .start()
        .await
        .unwrap();
    emu.create_stream("one", 1).await.unwrap();
    let first = PutMedia::open(&emu, PutMediaOptions::new(&emu, "one")).await;
    assert_eq!(first.status, 200);
    let second = PutMedia::open(&emu, PutMediaOptions::new(&emu, "one")).await;
    assert_eq!(second.status, 400);
    assert_eq!(
        second.header("x-amzn-errortype").as_deref(),
        Some("ConnectionLimitExceededException")
    );
}

// ---- the request id header, byte for byte ----------------------------------------------------

async fn raw_head(emu: &Emulator, request: &[u8]) -> String {
    let (_, text) = raw_exchange(emu, request).await;
    let end = text.find("\r\n\r\n").expect("a response head");
    text[..end].to_owned()
}

#[track_caller]
fn assert_request_id_cased(head: &str) {
    let lines: Vec<&str> = head.lines().collect();
    let ids: Vec<&&str> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-amzn-requestid:"))
        .collect();
    assert_eq!(ids.len(), 1, "{head}");
    assert!(ids[0].starts_with("x-amzn-RequestId: "), "{head}");
    assert!(ids[0].len() > "x-amzn-RequestId: ".len() + 8, "{head}");
}

#[tokio::test]
async fn every_response_spells_x_amzn_request_id_exactly() {
    let emu = emulator().await;
    emu.create_stream("ids", 1).await.unwrap();
    // PutMedia's 200 (read off the socket by the raw client).
    let pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "ids")).await;
    assert_request_id_cased(&pm.head);
    drop(pm);
    // A signed KVS JSON call.
    let ok = raw_head(&emu, &signed_json_request(&emu, "/listStreams", b"{}")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_request_id_cased(&ok);
    // A KVS error, with x-amzn-ErrorType as AWS spells it too.
    let err = raw_head(
        &emu,
        &signed_json_request(&emu, "/describeStream", br#"{"StreamName":"missing"}"#),
    )
    .await;
    assert!(err.starts_with("HTTP/1.1 404"), "{err}");
    assert_request_id_cased(&err);
    assert!(
        err.contains("\r\nx-amzn-ErrorType: ResourceNotFoundException"),
        "{err}"
    );
    // Unsigned, S3 and the health check.
    for request in [
        &b"POST /listStreams HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
        b"GET /bucket/key?X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fs3%2Faws4_request HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    ] {
        assert_request_id_cased(&raw_head(&emu, request).await);
    }
}

// ---- Expect: 100-continue --------------------------------------------------------------------

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_200() {
    let emu = emulator().await;
    emu.create_stream("cont", 1).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "cont");
    o.extra_headers
        .push(("expect".into(), "100-continue".into()));
    o.extra_headers.push(("connection".into(), "close".into()));
    let head = put_media_head(&emu, &o);
    let mut tcp = TcpStream::connect(emu.addr()).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Nothing of the body is sent until the 100 arrives, as curl and the C producer do.
    let mut buf = Vec::new();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        while buf.len() < interim.len() {
            let mut tmp = [0u8; 256];
            let n = tcp.read(&mut tmp).await.unwrap();
            assert!(n > 0, "closed");
            buf.extend_from_slice(&tmp[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 2 s: {buf:?}");
    assert_eq!(
        &buf[..interim.len()],
        interim,
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Then the body, and the 200 with its acks.
    for c in clip().chunks(4096) {
        tcp.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(c).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    buf.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&buf[interim.len()..]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(text.matches("\"PERSISTED\"").count(), 6, "{text}");
}

#[tokio::test]
async fn curl_does_not_wait_for_a_100_continue() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: skipped");
        return;
    }
    let emu = emulator().await;
    emu.create_stream("curl", 1).await.unwrap();
    let o = PutMediaOptions::new(&emu, "curl");
    let head = put_media_head(&emu, &o);
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("clip.mkv");
    std::fs::write(&media, clip()).unwrap();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-v", "--http1.1", "--expect100-timeout", "5"])
        .args(["-X", "POST", &format!("{}/putMedia", emu.url())]);
    for line in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let (name, _) = line.split_once(':').unwrap();
        if name.eq_ignore_ascii_case("host") {
            continue; // curl writes the same Host itself
        }
        cmd.args(["-H", line]);
    }
    cmd.args(["-H", "Expect: 100-continue", "-H", "Content-Type:"])
        .arg("--data-binary")
        .arg(format!("@{}", media.display()))
        .kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("curl finished")
        .unwrap();
    let elapsed = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("< HTTP/1.1 100 Continue"), "{stderr}");
    assert_eq!(stdout.matches("\"PERSISTED\"").count(), 6, "{stdout}");
    // Without the 100, curl sits out its 5 s expect timeout first.
    assert!(elapsed < Duration::from_secs(3), "curl took {elapsed:?}");
}
