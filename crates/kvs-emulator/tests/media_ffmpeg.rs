//! The validator on real ffmpeg 5.1 output (generated at test time with lavfi, a few seconds of
//! 320x240), and the builders' output checked by ffprobe and mkvinfo.

mod media_support;

use std::io::Write;
use std::process::Command;

use kvs_emulator::media::{
    GetMediaTags, Ingest, IngestConfig, IngestEvent, fragment_list_chunk, fragment_to_mkv,
    getmedia_chunk,
};
use media_support::*;

/// Runs the validator over `bytes` in 4 KiB chunks and returns the ingest and its events.
fn ingest_all(bytes: &[u8]) -> (Ingest, Vec<IngestEvent>) {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut out = Vec::new();
    for chunk in bytes.chunks(4096) {
        ingest.push(chunk, NOW, &mut out);
    }
    ingest.finish(NOW, &mut out);
    (ingest, out)
}

fn tool_output(tool: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.mkv");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(input)
        .unwrap();
    Command::new(tool)
        .args(args)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn video_clip() -> Vec<u8> {
    ffmpeg_clip(false, &[])
}

#[test]
fn ffmpeg_video_only_output_is_accepted_cluster_by_cluster() {
    let bytes = video_clip();
    let (ingest, events) = ingest_all(&bytes);
    assert_eq!(error_of(&events), None, "{events:#?}");
    let frags = completed(&events);
    // 3 s at 25 fps with a 1 s GOP: ffmpeg cuts a Cluster at each keyframe after 1 s.
    assert_eq!(
        frags.iter().map(|f| f.timecode).collect::<Vec<_>>(),
        [0, 1000, 2000]
    );
    for f in &frags {
        assert_eq!(f.frames_per_track, vec![(1, 25)]);
        assert!(f.first_frame_keyframe);
        // The last frame's 40 ms included: fragments tile the timeline.
        assert_eq!(f.duration_ms, 1000);
        // ffmpeg wrote known-size Clusters with a CRC-32: kept as received.
        assert_eq!(&f.cluster[..4], &[0x1F, 0x43, 0xB6, 0x75]);
    }
    let tracks = ingest.tracks();
    assert_eq!(tracks.len(), 1);
    assert_eq!(tracks[0].codec_id.as_deref(), Some("V_MPEG4/ISO/AVC"));
    assert!(tracks[0].codec_private_len > 0);
    // ffmpeg's header Tags (ENCODER, per track) are metadata of the first fragment.
    assert!(
        frags[0].tags.iter().any(|(name, _)| name == "ENCODER"),
        "{:?}",
        frags[0].tags
    );
    assert_eq!(ingest.bytes_consumed(), bytes.len() as u64);
}

#[test]
fn ffmpeg_audio_video_output_ends_with_an_audio_only_cluster_which_gets_4011() {
    // Reference section 5: ffmpeg's clusters are not cut for KVS. Its last Cluster holds only
    // the trailing audio packets, so forwarding ffmpeg's bytes unchanged fails with 4011; this is
    // one reason the producer re-clusters.
    let bytes = ffmpeg_clip(true, &["-write_crc32", "0"]);
    let (_, events) = ingest_all(&bytes);
    assert!(completed(&events).len() >= 2, "{events:#?}");
    assert_error(&events, 4011, "FRAMES_MISSING_FOR_TRACK");
    assert!(reason_of(&events).contains("track 1"));
}

#[test]
fn fragment_to_mkv_is_decodable_by_ffprobe_and_mkvinfo() {
    let bytes = video_clip();
    let (ingest, events) = ingest_all(&bytes);
    let header = ingest.header().expect("header after Tracks");
    let frag = completed(&events)[1];
    let mkv = fragment_to_mkv(header, &frag.cluster);
    let probe = tool_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ],
        &mkv,
    );
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "h264,320,240,25"
    );
    assert!(
        probe.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let info = tool_output("mkvinfo", &[], &mkv);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("Cluster"), "{text}");
    assert!(!text.contains("Error"), "{text}");
}

#[test]
fn getmedia_chunks_carry_the_kvs_tags_and_are_readable() {
    let bytes = video_clip();
    let (ingest, events) = ingest_all(&bytes);
    let header = ingest.header().unwrap();
    let mut body = Vec::new();
    for (i, frag) in completed(&events).iter().enumerate() {
        let tags = GetMediaTags {
            fragment_number: format!("9134385233318143251152430641978829636672422958{i}"),
            server_timestamp_ms: 1_700_000_000_005 + i as u64 * 1000,
            producer_timestamp_ms: frag.producer_timestamp_ms,
            millis_behind_now: Some(1234),
            continuation_token: Some(format!("9134385233318143251152430641978829636672422958{i}")),
            metadata: vec![("camera".into(), "front".into())],
        };
        body.extend(getmedia_chunk(header, &frag.cluster, &tags));
    }
    // One chunk on its own: mkvinfo shows every tag, ffprobe decodes the frames.
    let frag = completed(&events)[0];
    let one = getmedia_chunk(
        header,
        &frag.cluster,
        &GetMediaTags {
            fragment_number: "91343852333181432511524306419788296366724229586".into(),
            server_timestamp_ms: 1_700_000_000_005,
            producer_timestamp_ms: 1_700_000_000_000,
            millis_behind_now: Some(78_569),
            continuation_token: Some("91343852333181432511524306419788296366724229586".into()),
            metadata: vec![("camera".into(), "front".into())],
        },
    );
    // `-v`: without it mkvinfo stops at the first Cluster.
    let info = tool_output("mkvinfo", &["-v"], &one);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{text}");
    for expected in [
        "AWS_KINESISVIDEO_FRAGMENT_NUMBER",
        "91343852333181432511524306419788296366724229586",
        "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
        "1700000000.005",
        "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
        "1700000000.000",
        "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW",
        "78569",
        "AWS_KINESISVIDEO_CONTINUATION_TOKEN",
        "camera",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    // Order as in real GetMedia: KVS tags, Cluster, metadata, then the trailer.
    let pos = |needle: &str| text.find(needle).unwrap();
    assert!(pos("AWS_KINESISVIDEO_FRAGMENT_NUMBER") < pos("Cluster"));
    assert!(pos("Cluster") < pos("camera"));
    assert!(pos("camera") < pos("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"));
    let probe = tool_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ],
        &one,
    );
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "25");
    // A whole GetMedia body (chunks back to back) is read by ffprobe too.
    let probe = tool_output(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=format_name",
            "-of",
            "csv=p=0",
        ],
        &body,
    );
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

#[test]
fn fragment_list_chunks_use_the_side_timestamp_names() {
    let bytes = video_clip();
    let (ingest, events) = ingest_all(&bytes);
    let chunk = fragment_list_chunk(
        ingest.header().unwrap(),
        &completed(&events)[0].cluster,
        &GetMediaTags {
            fragment_number: "1".into(),
            server_timestamp_ms: 1_700_000_000_005,
            producer_timestamp_ms: 1_700_000_000_000,
            millis_behind_now: Some(5),
            ..GetMediaTags::default()
        },
    );
    let info = tool_output("mkvinfo", &["-v"], &chunk);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "{text}");
    assert!(
        text.contains("AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP"),
        "{text}"
    );
    assert!(
        text.contains("AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP"),
        "{text}"
    );
    assert!(!text.contains("MILLIS_BEHIND_NOW"), "{text}");
}
