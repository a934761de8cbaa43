//! `MediaRetention::MetadataOnly`: the load-run mode keeps fragment metadata and still writes
//! every ack, but drops media bytes and the ack log, and refuses to serve media.

mod support;

use std::time::Duration;

use kvs_emulator::{Emulator, MediaRetention};
use support::*;

#[tokio::test]
async fn metadata_only_keeps_metadata_and_acks_but_no_media() {
    let emu = Emulator::builder()
        .with_persist_delay(Duration::from_millis(20))
        .with_idle_ack_interval(Duration::from_millis(200))
        .with_idle_timeout(Duration::from_secs(5))
        .with_media_retention(MediaRetention::MetadataOnly)
        .start()
        .await
        .unwrap();
    emu.create_stream("cam", 24).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "cam");
    o.producer_start = Some(producer_start_secs(60));
    let mut pm = PutMedia::open(&emu, o).await;
    assert_eq!(pm.status, 200, "{}", pm.head);
    for c in clip().chunks(1000) {
        pm.send(c).await.unwrap();
    }
    pm.end().await.unwrap();
    let (acks, end) = pm.all_acks().await;
    end.unwrap();

    let frags = emu.fragments("cam");
    assert_eq!(frags.len(), 6, "one fragment per keyframe cluster");
    for f in &frags {
        assert!(f.persisted, "{f:?}");
        assert!(f.size > 0, "the size is kept: {f:?}");
        assert!(f.media.is_empty(), "no media bytes kept: {f:?}");
    }
    // Every ack still goes to the producer, but none is logged.
    let persisted = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .count();
    assert_eq!(persisted, 6);
    assert!(emu.acks("cam").is_empty());

    // ListFragments answers from the metadata; GetMediaForFragmentList refuses.
    let list = signed_json_request(
        &emu,
        "/listFragments",
        br#"{"StreamName":"cam","MaxResults":100}"#,
    );
    let (status, text) = raw_exchange(&emu, &list).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("FragmentNumber").count(), 6, "{text}");
    let body = format!(
        r#"{{"StreamName":"cam","Fragments":["{}"]}}"#,
        frags[0].fragment_number
    );
    let get = signed_json_request(&emu, "/getMediaForFragmentList", body.as_bytes());
    let (status, text) = raw_exchange(&emu, &get).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("InvalidArgumentException"), "{text}");
}

#[tokio::test]
async fn metadata_only_with_a_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = Emulator::builder()
        .with_media_retention(MediaRetention::MetadataOnly)
        .with_data_dir(dir.path())
        .start()
        .await;
    assert!(matches!(r, Err(kvs_emulator::Error::InvalidConfig { .. })));
}
