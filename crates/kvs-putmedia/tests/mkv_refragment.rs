//! The re-fragmenter on real ffmpeg and mkvmerge output generated at test time (docs/protocol.md §4,
//! §5): after re-fragmenting, every fragment starts with a keyframe, durations and sizes are
//! within the KVS limits, cluster timecodes rise strictly above the previous last frame, and
//! mkvinfo and ffprobe accept the output and decode as many frames as the input holds.

#[path = "common/mkv_media.rs"]
mod mkv_media;

use std::time::Duration;

use kvs_putmedia::mkv::{RefragmentConfig, TimecodeMode, TrackKind, Warning};
use mkv_media::*;

/// Re-fragment `input`, check the KVS rules, and check mkvinfo/ffprobe accept the output with
/// the same decoded frame counts as the input. Returns the run.
fn full_check(input: &[u8], config: RefragmentConfig, expect_keyframes: bool) -> Run {
    let run = refragment(input, config.clone());
    check_kvs_rules(&run, &config, expect_keyframes);
    let dir = tempfile::tempdir().expect("tempdir");
    let inp = temp_file(dir.path(), "in.mkv", input);
    let outp = temp_file(dir.path(), "out.mkv", &run.bytes);
    mkvinfo_ok(&outp);
    assert_eq!(
        decoded_frames(&outp),
        decoded_frames(&inp),
        "decoded frames differ from the input"
    );
    run
}

#[test]
fn node_sample_settings_are_refragmented_on_keyframes() {
    // x264's default GOP (250 frames at 25 fps) gives keyframes at 0 s and 10 s only; ffmpeg's
    // clusters are cut every second regardless.
    let input = node_sample(12);
    let run = full_check(&input, RefragmentConfig::default(), true);
    assert_eq!(
        run.fragments.len(),
        2,
        "one fragment per keyframe: {:?}",
        run.fragments
    );
    assert_eq!(run.fragments[0].timecode(), 0, "Relative mode starts at 0");
    // The keyframe at 10 s starts the second fragment; video starts one AAC priming delay
    // (1024 samples, 23 ms) after the first audio frame, which is the Relative origin.
    let second = &run.fragments[1];
    assert_eq!(second.first_frame_timecode(), second.timecode());
    assert!(
        (10_000..10_050).contains(&second.timecode()),
        "{}",
        second.timecode()
    );
    let header = run.header.as_ref().expect("header");
    let kinds: Vec<_> = header.tracks().iter().map(|t| t.kind()).collect();
    assert_eq!(kinds, [TrackKind::Video, TrackKind::Audio]);
    assert_eq!(header.tracks()[0].codec_id(), "V_MPEG4/ISO/AVC");
    assert_eq!(header.tracks()[1].codec_id(), "A_AAC");
    // ffmpeg's held-back audio packets are re-assigned by time: no timecode needs raising.
    assert!(
        !run.warnings
            .iter()
            .any(|w| matches!(w, Warning::TimecodeAdjusted { .. })),
        "{:?}",
        run.warnings
    );
}

/// A fixed 1 s GOP (`-g 25 -keyint_min 25 -sc_threshold 0`): fragments of the 2 s target.
fn fixed_gop(seconds: u32, extra: &[&str]) -> Vec<u8> {
    let t = seconds.to_string();
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-keyint_min",
        "25",
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(extra);
    ffmpeg_mkv(&args)
}

#[test]
fn fixed_gop_fragments_follow_the_target_duration() {
    let input = fixed_gop(7, &[]);
    let run = full_check(&input, RefragmentConfig::default(), true);
    // Keyframes every second, target 2 s: cuts at 2, 4, 6 s.
    assert_eq!(run.fragments.len(), 4, "{:?}", run.fragments);
    for f in &run.fragments[..3] {
        let d = f.duration();
        assert!(
            d >= Duration::from_millis(1990) && d <= Duration::from_millis(2050),
            "{d:?}"
        );
        assert_eq!(f.tracks().len(), 2, "video and audio in every fragment");
    }
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
}

#[test]
fn target_duration_is_configurable() {
    let input = fixed_gop(7, &[]);
    let config = RefragmentConfig::builder()
        .with_target_fragment_duration(Duration::from_secs(3))
        .build()
        .expect("valid");
    let run = full_check(&input, config, true);
    let starts: Vec<u64> = run
        .fragments
        .iter()
        .map(|f| f.first_frame_timecode() / 1000)
        .collect();
    assert_eq!(starts, [0, 3, 6]);
}

#[test]
fn audio_only_is_cut_by_duration() {
    let input = ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "7",
        "-c:a",
        "aac",
    ]);
    let run = full_check(&input, RefragmentConfig::default(), true);
    assert_eq!(run.fragments.len(), 4, "{:?}", run.fragments);
    for f in &run.fragments[..3] {
        let d = f.duration();
        assert!(
            d >= Duration::from_secs(2) && d < Duration::from_millis(2030),
            "{d:?}"
        );
    }
}

#[test]
fn video_only_is_cut_on_keyframes() {
    let input = ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "15",
    ]);
    let run = full_check(&input, RefragmentConfig::default(), true);
    assert_eq!(run.fragments.len(), 3, "{:?}", run.fragments);
    assert_eq!(run.fragments[0].frame_count(1), 60);
}

#[test]
fn no_keyframe_before_the_maximum_is_cut_with_a_warning() {
    // One keyframe in 8 s, maximum 3 s: cut anyway, and say so.
    let input = ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "1000",
        "-sc_threshold",
        "0",
    ]);
    let config = RefragmentConfig::builder()
        .with_max_fragment_duration(Duration::from_secs(3))
        .build()
        .expect("valid");
    let run = full_check(&input, config, false);
    assert!(run.fragments.len() >= 3, "{:?}", run.fragments);
    assert!(run.fragments[0].starts_with_keyframe());
    assert!(!run.fragments[1].starts_with_keyframe());
    let forced = run
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::NoKeyframeBeforeMaxDuration { .. }))
        .count();
    assert_eq!(forced, run.fragments.len() - 1, "{:?}", run.warnings);
}

/// Remux `input` with mkvmerge and extra options.
fn mkvmerge(input: &[u8], opts: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = temp_file(dir.path(), "src.mkv", input);
    let dst = dir.path().join("merged.mkv");
    let st = std::process::Command::new("mkvmerge")
        .arg("-q")
        .args(opts)
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .status()
        .expect("mkvmerge runs");
    assert!(st.success(), "mkvmerge failed");
    std::fs::read(&dst).expect("read")
}

#[test]
fn laced_audio_from_mkvmerge_is_unlaced() {
    // mkvmerge laces AAC, 8 frames per SimpleBlock (Xiph lacing).
    let merged = mkvmerge(&fixed_gop(5, &[]), &[]);
    let run = full_check(&merged, RefragmentConfig::default(), true);
    let audio: usize = run.fragments.iter().map(|f| f.frame_count(2)).sum();
    assert!(audio > 200, "one SimpleBlock per AAC frame: {audio}");
}

#[test]
fn blockgroups_from_mkvmerge_become_simpleblocks() {
    // BlockGroups with ReferenceBlock for non-keyframes, laced audio Blocks.
    let merged = mkvmerge(&fixed_gop(5, &[]), &["--engage", "no_simpleblocks"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let text = mkvinfo_all(&temp_file(dir.path(), "in.mkv", &merged));
    assert!(text.contains("Block group") && !text.contains("Simple block"));
    let run = full_check(&merged, RefragmentConfig::default(), true);
    let out = mkvinfo_all(&temp_file(dir.path(), "out.mkv", &run.bytes));
    assert!(!out.contains("Block group") && out.contains("Simple block"));
}

#[test]
fn input_timecode_scale_is_converted_to_1ms() {
    let scaled = mkvmerge(&fixed_gop(5, &[]), &["--timestamp-scale", "100000"]);
    let run = full_check(&scaled, RefragmentConfig::default(), true);
    assert_eq!(
        run.header
            .as_ref()
            .expect("header")
            .input_timecode_scale_ns(),
        100_000
    );
    let starts: Vec<u64> = run
        .fragments
        .iter()
        .map(|f| f.first_frame_timecode() / 100)
        .collect();
    assert_eq!(starts, [0, 20, 40]);
}

#[test]
fn bframes_keep_every_frame() {
    // KVS refuses B-frames (docs/protocol.md §4.8) but the re-fragmenter must not lose them.
    let input = ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "2",
        "-g",
        "25",
        "-sc_threshold",
        "0",
    ]);
    full_check(&input, RefragmentConfig::default(), true);
}

#[test]
fn absolute_mode_adds_the_epoch_origin() {
    let input = fixed_gop(5, &[]);
    let origin = 1_700_000_000_000;
    let config = RefragmentConfig::builder()
        .with_timecode_mode(TimecodeMode::Absolute {
            origin_epoch_ms: origin,
        })
        .build()
        .expect("valid");
    let abs = refragment(&input, config.clone());
    check_kvs_rules(&abs, &config, true);
    let rel = refragment(&input, RefragmentConfig::default());
    assert_eq!(abs.fragments.len(), rel.fragments.len());
    for (a, r) in abs.fragments.iter().zip(&rel.fragments) {
        assert_eq!(a.timecode(), r.timecode() + origin);
        assert_eq!(a.last_frame_timecode(), r.last_frame_timecode() + origin);
    }
    assert_eq!(abs.fragments[0].timecode(), origin);
}

#[test]
fn header_is_what_kvs_wants() {
    let input = fixed_gop(3, &[]);
    let run = refragment(&input, RefragmentConfig::default());
    let h = run.header.as_ref().expect("header");
    let b = h.bytes();
    assert_eq!(&b[..4], &[0x1A, 0x45, 0xDF, 0xA3]);
    // Unknown-size Segment (docs/protocol.md §4.2).
    let seg = b
        .windows(12)
        .position(|w| w == [0x18, 0x53, 0x80, 0x67, 1, 255, 255, 255, 255, 255, 255, 255]);
    assert!(seg.is_some());
    assert_eq!(h.timecode_scale_ns(), 1_000_000);
    // ffmpeg writes a SegmentUID; it is kept, so reconnections reuse it.
    let uid = h.segment_uid();
    assert!(b.windows(16).any(|w| w == uid));
    let text = {
        let dir = tempfile::tempdir().expect("tempdir");
        mkvinfo_ok(&temp_file(dir.path(), "h.mkv", &run.bytes))
    };
    for dropped in ["Seek head", "Cues", "Tags", "CRC-32", "EBML void"] {
        assert!(
            !text.contains(dropped),
            "{dropped} left in the output: {text}"
        );
    }
    // Every fragment is one unknown-size Cluster.
    for f in &run.fragments {
        assert_eq!(
            &f.chunks()[0][..12],
            &[0x1F, 0x43, 0xB6, 0x75, 1, 255, 255, 255, 255, 255, 255, 255]
        );
    }
}

#[test]
fn any_chunking_gives_identical_output_on_real_media() {
    let input = node_sample(3);
    let (whole, r) = refragment_chunked(&input, &[input.len()], RefragmentConfig::default());
    r.expect("ok");
    for sizes in [&[1usize][..], &[7, 1, 4093], &[65536], &[12, 13]] {
        let (run, r) = refragment_chunked(&input, sizes, RefragmentConfig::default());
        r.expect("ok");
        assert!(
            run.bytes == whole.bytes,
            "chunking {sizes:?} changed the output"
        );
    }
}
