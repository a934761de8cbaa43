//! Byte-exact golden files for the builders, so a change in layout is a visible diff, and the
//! golden files themselves checked by mkvinfo.

mod media_support;

use std::path::PathBuf;

use kvs_emulator::media::{GetMediaTags, fragment_list_chunk, fragment_to_mkv, getmedia_chunk};
use media_support::*;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/media")
        .join(name)
}

/// Ingests a hand-built stream and returns its header and first fragment's Cluster.
fn header_and_cluster() -> (Vec<u8>, Vec<u8>) {
    use kvs_emulator::media::{Ingest, IngestConfig, IngestEvent};
    let bytes = cat(&[
        header(&[1]),
        tags(&[("camera", "front")]),
        cluster_unknown(
            1_700_000_000_000,
            &[simple_block(1, 0, true), simple_block(1, 40, false)],
        ),
    ]);
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut out = Vec::new();
    ingest.push(&bytes, NOW, &mut out);
    ingest.finish(NOW, &mut out);
    let cluster = out
        .into_iter()
        .find_map(|e| match e {
            IngestEvent::FragmentCompleted(f) => Some(f.cluster.to_vec()),
            _ => None,
        })
        .expect("one fragment");
    (ingest.header().unwrap().to_vec(), cluster)
}

fn tags_for_golden() -> GetMediaTags {
    GetMediaTags {
        fragment_number: "91343852333181432511524306419788296366724229586".into(),
        server_timestamp_ms: 1_700_000_000_123,
        producer_timestamp_ms: 1_700_000_000_000,
        millis_behind_now: Some(78_569),
        continuation_token: Some("91343852333181432511524306419788296366724229586".into()),
        metadata: vec![("camera".into(), "front".into())],
    }
}

#[track_caller]
fn assert_golden(name: &str, actual: &[u8]) {
    let expected = std::fs::read(golden(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    if expected != actual {
        let at = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(actual.len()));
        let window =
            |b: &[u8]| hex::encode(&b[at.saturating_sub(8).min(b.len())..(at + 16).min(b.len())]);
        panic!(
            "{name} differs at byte {at} (len {} vs {}):\n expected …{}\n actual   …{}",
            expected.len(),
            actual.len(),
            window(&expected),
            window(actual)
        );
    }
}

#[test]
fn getmedia_chunk_matches_golden() {
    let (header, cluster) = header_and_cluster();
    assert_golden(
        "getmedia_chunk.mkv",
        &getmedia_chunk(&header, &cluster, &tags_for_golden()),
    );
}

#[test]
fn fragment_list_chunk_matches_golden() {
    let (header, cluster) = header_and_cluster();
    assert_golden(
        "fragment_list_chunk.mkv",
        &fragment_list_chunk(&header, &cluster, &tags_for_golden()),
    );
}

#[test]
fn fragment_mkv_matches_golden() {
    let (header, cluster) = header_and_cluster();
    assert_golden("fragment.mkv", &fragment_to_mkv(&header, &cluster));
}

#[test]
fn golden_files_are_valid_matroska_for_mkvinfo() {
    for name in [
        "getmedia_chunk.mkv",
        "fragment_list_chunk.mkv",
        "fragment.mkv",
    ] {
        let output = std::process::Command::new("mkvinfo")
            .arg("-v")
            .arg(golden(name))
            .output();
        // scripts/test.sh installs mkvtoolnix: a missing mkvinfo must fail, not pass silently.
        let output = output.expect("mkvinfo (mkvtoolnix) is required by this test");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name}: {text}");
        assert!(!text.contains("Error"), "{name}: {text}");
        assert!(
            text.contains("Simple block: key, track number 1"),
            "{name}: {text}"
        );
    }
}
