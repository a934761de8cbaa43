//! The re-fragmenter on hand-made Matroska: exact timestamps for the timecode rules of
//! docs/protocol.md §4.6-4.8 and §5, odd layouts, and the limits of §3.

#[path = "common/mkv_media.rs"]
mod mkv_media;
#[path = "common/mkv_synth.rs"]
mod mkv_synth;

use std::time::Duration;

use bytes::Bytes;
use kvs_putmedia::mkv::{
    DropReason, InvalidReason, MkvError, Output, RefragmentConfig, Refragmenter, TimecodeMode,
    Warning, end_of_fragment_tag,
};
use mkv_media::*;
use mkv_synth::*;

fn run_default(input: &[u8]) -> Run {
    refragment(input, RefragmentConfig::default())
}

#[test]
fn ffmpeg_held_back_audio_joins_the_fragment_it_belongs_to() {
    // docs/protocol.md §5: the muxer holds one audio packet back, so in file order an audio frame timed
    // below a keyframe follows it. Move each audio frame just below a keyframe after it.
    let mut frames = av_frames(5000, 25);
    let mut i = 1;
    while i < frames.len() {
        let (a, b) = (frames[i - 1], frames[i]);
        if a.track == 2 && b.track == 1 && b.key && a.time < b.time {
            frames.swap(i - 1, i);
            i += 1;
        }
        i += 1;
    }
    let run = run_default(&av_stream(&frames, 7));
    check_kvs_rules(&run, &RefragmentConfig::default(), true);
    assert_eq!(run.fragments.len(), 3);
    // Fragments start at the 2 s and 4 s keyframes, and each holds exactly the audio timed
    // inside it: 100 frames of 20 ms per 2 s.
    let starts: Vec<u64> = run.fragments.iter().map(|f| f.timecode()).collect();
    assert_eq!(starts, [0, 2000, 4000]);
    assert_eq!(run.fragments[0].frame_count(2), 100);
    assert_eq!(run.fragments[1].frame_count(2), 100);
    assert_eq!(run.fragments[0].last_frame_timecode(), 1980);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
}

#[test]
fn audio_ahead_of_video_moves_to_the_next_fragment() {
    // Audio written before the keyframe in file order but timed after it belongs to the next
    // fragment, else the next Cluster timecode would not exceed the previous last frame (4004).
    let mut frames = av_frames(4100, 25);
    let k = frames
        .iter()
        .position(|f| f.track == 1 && f.time == 2000)
        .expect("keyframe");
    let late: Vec<F> = (0..3)
        .map(|j| F {
            track: 2,
            time: 2000 + 20 * j,
            key: true,
            size: 50,
        })
        .collect();
    frames.retain(|f| !(f.track == 2 && (2000..2060).contains(&f.time)));
    for (j, f) in late.into_iter().enumerate() {
        frames.insert(k - 3 + j, f);
    }
    let run = run_default(&av_stream(&frames, 5));
    check_kvs_rules(&run, &RefragmentConfig::default(), true);
    assert_eq!(run.fragments[0].last_frame_timecode(), 1980);
    assert_eq!(run.fragments[1].timecode(), 2000);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
}

#[test]
fn equal_timestamps_get_one_tick_compensation() {
    // A video frame before the keyframe in decode order with the keyframe's own timestamp:
    // the next Cluster must be strictly greater (docs/protocol.md §4.6), so the keyframe moves one tick.
    let mut frames = av_frames(4000, 25);
    let k = frames
        .iter()
        .position(|f| f.track == 1 && f.time == 2000)
        .expect("keyframe");
    frames.insert(
        k,
        F {
            track: 1,
            time: 2000,
            key: false,
            size: 200,
        },
    );
    let run = run_default(&av_stream(&frames, 9));
    check_kvs_rules(&run, &RefragmentConfig::default(), true);
    assert_eq!(run.fragments[0].last_frame_timecode(), 2000);
    assert_eq!(run.fragments[1].timecode(), 2001);
    assert!(
        run.warnings.iter().any(|w| matches!(
            w,
            Warning::TimecodeAdjusted {
                track: 1,
                from: 2000,
                to: 2001
            }
        )),
        "{:?}",
        run.warnings
    );
}

#[test]
fn a_declared_track_without_frames_is_reported_per_fragment() {
    let frames: Vec<F> = av_frames(4500, 25)
        .into_iter()
        .filter(|f| f.track == 1)
        .collect();
    let run = run_default(&av_stream(&frames, 10));
    let missing: Vec<u64> = run
        .warnings
        .iter()
        .filter_map(|w| match w {
            Warning::TrackMissingFromFragment {
                fragment_timecode,
                track: 2,
            } => Some(*fragment_timecode),
            _ => None,
        })
        .collect();
    assert_eq!(missing, [0, 2000, 4000]);
}

#[test]
fn undeclared_tracks_and_leading_non_keyframes_are_dropped_with_warnings() {
    let mut frames = vec![
        F {
            track: 1,
            time: 0,
            key: false,
            size: 10,
        },
        F {
            track: 1,
            time: 40,
            key: false,
            size: 10,
        },
    ];
    frames.extend(av_frames(3000, 25).into_iter().map(|mut f| {
        f.time += 80;
        f
    }));
    frames.insert(
        10,
        F {
            track: 5,
            time: 300,
            key: true,
            size: 10,
        },
    );
    let run = run_default(&av_stream(&frames, 10));
    check_kvs_rules(&run, &RefragmentConfig::default(), true);
    assert!(run.warnings.contains(&Warning::FramesDropped {
        track: 1,
        count: 2,
        reason: DropReason::BeforeFirstKeyframe
    }));
    assert!(run.warnings.contains(&Warning::FramesDropped {
        track: 5,
        count: 1,
        reason: DropReason::UndeclaredTrack
    }));
    let tracks: Vec<u64> = run
        .fragments
        .iter()
        .flat_map(|f| f.tracks().iter().map(|t| t.track))
        .collect();
    assert!(!tracks.contains(&5));
}

#[test]
fn unknown_size_clusters_are_read() {
    let frames = av_frames(3000, 25);
    let mut v = ebml_header("webm");
    v.extend(segment_start());
    v.extend(info(1_000_000));
    v.extend(tracks(&[(1, 1, "V_VP8"), (2, 2, "A_OPUS")]));
    for c in frames.chunks(6) {
        let base = c[0].time.min(c.iter().map(|f| f.time).min().unwrap_or(0));
        v.extend(cluster_start_unknown(base));
        for f in c {
            v.extend(simple_block(
                f.track,
                (f.time - base) as i16,
                f.key,
                &[7; 30],
            ));
        }
        // Void and Cues between clusters close the unknown-size Cluster too.
        v.extend(el(0xEC, &[0; 5]));
    }
    v.extend(el(0x1C53_BB6B, &[0; 16]));
    let run = run_default(&v);
    check_kvs_rules(&run, &RefragmentConfig::default(), true);
    let total: usize = run
        .fragments
        .iter()
        .map(|f| f.frame_count(1) + f.frame_count(2))
        .sum();
    assert_eq!(total, frames.len());
}

#[test]
fn fragment_rate_never_exceeds_five_per_second() {
    // Keyframe on every video frame (40 ms): the 200 ms minimum interval still holds.
    let frames = av_frames(3000, 1);
    let config = RefragmentConfig::builder()
        .with_target_fragment_duration(Duration::from_millis(200))
        .build()
        .expect("valid");
    let run = refragment(&av_stream(&frames, 10), config.clone());
    check_kvs_rules(&run, &config, true);
    assert_eq!(run.fragments.len(), 15);
}

#[test]
fn size_limit_cuts_before_the_maximum_bytes() {
    let frames: Vec<F> = av_frames(6000, 1000)
        .into_iter()
        .map(|mut f| {
            f.size = 2000;
            f
        })
        .collect();
    let config = RefragmentConfig::builder()
        .with_max_fragment_bytes(100_000)
        .build()
        .expect("valid");
    let run = refragment(&av_stream(&frames, 10), config.clone());
    check_kvs_rules(&run, &config, false);
    assert!(run.fragments.len() >= 8);
    assert!(
        run.warnings
            .iter()
            .any(|w| matches!(w, Warning::FragmentSizeLimit { limit: 100_000, .. }))
    );
}

#[test]
fn timecodes_rebase_from_a_late_start() {
    // Input timestamps starting at 1 h: Relative starts at 0, Absolute at the origin.
    let frames: Vec<F> = av_frames(3000, 25)
        .into_iter()
        .map(|mut f| {
            f.time += 3_600_000;
            f
        })
        .collect();
    let input = av_stream(&frames, 8);
    let rel = run_default(&input);
    assert_eq!(rel.fragments[0].timecode(), 0);
    assert_eq!(rel.fragments[1].timecode(), 2000);
    let abs = refragment(
        &input,
        RefragmentConfig::builder()
            .with_timecode_mode(TimecodeMode::Absolute {
                origin_epoch_ms: 1_700_000_000_000,
            })
            .build()
            .expect("valid"),
    );
    assert_eq!(abs.fragments[1].timecode(), 1_700_000_002_000);
}

#[test]
fn the_segment_uid_is_stable_and_can_be_forced() {
    let input = av_stream(&av_frames(1000, 25), 8);
    let a = run_default(&input).header.expect("header");
    let b = run_default(&input).header.expect("header");
    assert_eq!(a.segment_uid(), b.segment_uid());
    let uid = [9u8; 16];
    let forced = refragment(
        &input,
        RefragmentConfig::builder()
            .with_segment_uid(uid)
            .build()
            .expect("valid"),
    );
    let h = forced.header.expect("header");
    assert_eq!(h.segment_uid(), uid);
    assert!(h.bytes().windows(16).any(|w| w == uid));
}

#[test]
fn end_of_fragment_tag_is_a_level1_tags_element() {
    let t = end_of_fragment_tag();
    assert_eq!(&t[..4], &[0x12, 0x54, 0xC3, 0x67]);
    let name = b"AWS_KINESISVIDEO_END_OF_FRAGMENT";
    let at = t
        .windows(name.len())
        .position(|w| w == name)
        .expect("tag name");
    // TagString (0x4487) with an empty value right after the name.
    assert_eq!(&t[at + name.len()..], &[0x44, 0x87, 0x80]);
    // mkvinfo accepts a header followed by the tag and a fragment.
    let run = run_default(&av_stream(&av_frames(3000, 25), 8));
    let mut bytes = run.header.as_ref().expect("header").bytes().to_vec();
    bytes.extend_from_slice(&run.fragments[0].to_bytes());
    bytes.extend_from_slice(&t);
    bytes.extend_from_slice(&run.fragments[1].to_bytes());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = temp_file(dir.path(), "t.mkv", &bytes);
    mkvinfo_ok(&path);
    let text = mkvinfo_all(&path);
    assert!(
        text.contains("Name: AWS_KINESISVIDEO_END_OF_FRAGMENT"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_end() == "|+ Cluster")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn config_refuses_values_over_kvs_limits() {
    let b = RefragmentConfig::builder;
    assert!(
        b().with_max_fragment_duration(Duration::from_secs(21))
            .build()
            .is_err()
    );
    assert!(b().with_max_fragment_bytes(50_000_001).build().is_err());
    assert!(
        b().with_min_fragment_interval(Duration::from_millis(199))
            .build()
            .is_err()
    );
    assert!(
        b().with_target_fragment_duration(Duration::from_secs(30))
            .build()
            .is_err()
    );
    assert!(
        b().with_target_fragment_duration(Duration::from_millis(100))
            .build()
            .is_err()
    );
    assert!(b().with_max_element_size(10).build().is_err());
    let ok = b()
        .with_target_fragment_duration(Duration::from_secs(4))
        .build()
        .expect("valid");
    assert_eq!(ok.target_fragment_duration(), Duration::from_secs(4));
    assert_eq!(
        RefragmentConfig::default().max_fragment_duration(),
        Duration::from_secs(20)
    );
}

// ---- hostile input: typed errors with offsets, no panic, no allocation from forged sizes ----

fn push_all(input: &[u8]) -> (Refragmenter, Result<(), MkvError>) {
    let mut r = Refragmenter::new(RefragmentConfig::default());
    let res = r
        .push(Bytes::copy_from_slice(input))
        .and_then(|()| r.finish());
    (r, res)
}

fn prefix() -> Vec<u8> {
    let mut v = ebml_header("matroska");
    v.extend(segment_start());
    v.extend(info(1_000_000));
    v.extend(tracks(&[(1, 1, "V_MPEG4/ISO/AVC")]));
    v
}

#[test]
fn garbage_is_an_error_at_offset_zero() {
    let (_, r) = push_all(b"GET / HTTP/1.1\r\n\r\n");
    let e = r.expect_err("garbage");
    assert_eq!(e.offset(), Some(0), "{e}");
}

#[test]
fn truncated_input_emits_what_is_complete_then_errors() {
    let input = av_stream(&av_frames(3000, 25), 8);
    let cut = input.len() - 100;
    let mut r = Refragmenter::new(RefragmentConfig::default());
    r.push(Bytes::copy_from_slice(&input[..cut]))
        .expect("prefix is fine");
    let e = r.finish().expect_err("truncated");
    assert!(
        matches!(e, MkvError::Truncated { offset } if offset > 0 && offset < cut as u64),
        "{e}"
    );
    let mut frags = 0;
    while let Some(o) = r.next_output() {
        frags += usize::from(matches!(o, Output::Fragment(_)));
    }
    assert_eq!(frags, 2);
    // Poisoned: the same error again.
    assert_eq!(r.push(Bytes::from_static(b"x")), Err(e));
}

#[test]
fn forged_huge_block_size_is_refused_before_buffering() {
    let mut v = prefix();
    v.extend(cluster_start_unknown(0));
    let block_at = v.len() as u64;
    v.extend([0xA3, 0x01, 0x00, 0x10, 0, 0, 0, 0, 0]); // SimpleBlock of 2^44 bytes
    let (_, r) = push_all(&v);
    match r {
        Err(MkvError::ElementTooLarge {
            offset,
            id: 0xA3,
            size,
            ..
        }) => {
            assert_eq!(offset, block_at);
            assert_eq!(size, 1 << 44);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_skipped_elements_stream_through_without_buffering() {
    // A 4 GiB Void: skipped as it streams, from one reused 1 MiB chunk.
    let mut r = Refragmenter::new(RefragmentConfig::default());
    let mut v = prefix();
    v.extend([0xEC, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
    r.push(Bytes::from(v)).expect("ok");
    let mut chunk = Bytes::from(vec![0u8; 1 << 20]);
    for _ in 0..4096 {
        r.push(chunk.clone()).expect("ok");
        // Nothing of a skipped element is kept: the re-fragmenter holds no slice of the chunk
        // once the push returned (a kept slice would make this buffer shared).
        assert!(chunk.is_unique(), "a skipped element's bytes were kept");
        chunk = Bytes::from(Vec::from(chunk));
    }
    let mut tail = cluster(
        0,
        &[
            simple_block(1, 0, true, &[1; 100]),
            simple_block(1, 40, false, &[2; 100]),
        ],
    );
    tail.extend(cluster(80, &[simple_block(1, 0, false, &[3; 100])]));
    r.push(Bytes::from(tail)).expect("ok");
    r.finish().expect("ok");
    let outs: Vec<Output> = std::iter::from_fn(|| r.next_output()).collect();
    let f = outs.iter().find_map(|o| {
        if let Output::Fragment(f) = o {
            Some(f)
        } else {
            None
        }
    });
    assert_eq!(f.expect("a fragment").frame_count(1), 3);
}

#[test]
fn structural_errors_are_typed() {
    // Not starting with EBML.
    let (_, r) = push_all(&segment_start());
    assert!(
        matches!(r, Err(MkvError::Invalid { offset: 0, .. })),
        "{r:?}"
    );
    // Wrong DocType.
    let (_, r) = push_all(&ebml_header("avi"));
    assert!(
        matches!(r, Err(MkvError::Invalid { offset: 0, .. })),
        "{r:?}"
    );
    // Cluster before Tracks.
    let mut v = ebml_header("matroska");
    v.extend(segment_start());
    let at = v.len() as u64;
    v.extend(cluster(0, &[simple_block(1, 0, true, &[0; 4])]));
    let (_, r) = push_all(&v);
    assert!(
        matches!(r, Err(MkvError::Invalid { offset, .. }) if offset == at),
        "{r:?}"
    );
    // Four tracks (KVS: at most three, 4012).
    let mut v = ebml_header("matroska");
    v.extend(segment_start());
    v.extend(tracks(&[
        (1, 1, "V"),
        (2, 2, "A"),
        (3, 2, "A"),
        (4, 2, "A"),
    ]));
    let (_, r) = push_all(&v);
    assert!(
        matches!(
            r,
            Err(MkvError::TooManyTracks {
                count: 4,
                limit: 3,
                ..
            })
        ),
        "{r:?}"
    );
    // A second EBML header.
    let mut v = av_stream(&av_frames(500, 25), 8);
    let at = v.len() as u64;
    v.extend(ebml_header("matroska"));
    let (_, r) = push_all(&v);
    assert_eq!(r, Err(MkvError::MultipleSegments { offset: at }));
    // A block before its Cluster's Timecode.
    let mut v = prefix();
    v.extend(el(0x1F43_B675, &simple_block(1, 0, true, &[0; 4])));
    let (_, r) = push_all(&v);
    assert!(matches!(r, Err(MkvError::Invalid { .. })), "{r:?}");
    // A child overrunning its known-size Cluster.
    let mut v = prefix();
    let mut c = uint(0xE7, 0);
    c.extend([0xA3, 0x90]);
    v.extend(el(0x1F43_B675, &c));
    v.extend([0; 20]);
    let (_, r) = push_all(&v);
    assert!(matches!(r, Err(MkvError::Invalid { .. })), "{r:?}");
    // No Tracks at all.
    let (_, r) = push_all(&ebml_header("matroska"));
    assert!(matches!(r, Err(MkvError::NoTracks { .. })), "{r:?}");
    // Push after finish.
    let mut r = Refragmenter::new(RefragmentConfig::default());
    r.push(Bytes::from(av_stream(&av_frames(500, 25), 8)))
        .expect("ok");
    r.finish().expect("ok");
    assert_eq!(r.push(Bytes::new()), Err(MkvError::Finished));
}

#[test]
fn video_that_never_has_a_keyframe_is_reported_not_buffered_forever() {
    let frames: Vec<F> = av_frames(14_000, 25)
        .into_iter()
        .map(|mut f| {
            f.key = f.track == 2;
            f
        })
        .collect();
    let run = run_default(&av_stream(&frames, 10));
    assert!(!run.fragments.is_empty());
    assert!(
        run.warnings
            .iter()
            .any(|w| matches!(w, Warning::NoKeyframeBeforeMaxDuration { .. })),
        "{:?}",
        run.warnings
    );
    assert!(run.warnings.iter().any(|w| matches!(
        w,
        Warning::FramesDropped {
            track: 1,
            reason: DropReason::BeforeFirstKeyframe,
            ..
        }
    )));
    let audio: usize = run.fragments.iter().map(|f| f.frame_count(2)).sum();
    assert_eq!(audio, 700, "no audio lost");
}

#[test]
fn a_silent_track_does_not_hold_fragments_back() {
    // Audio stops after 1 s: fragments waiting for late audio are released after the late-frame
    // window (1 s of media), not at end of input, so a live stream keeps flowing.
    let frames: Vec<F> = av_frames(8000, 25)
        .into_iter()
        .filter(|f| f.track == 1 || f.time < 1000)
        .collect();
    let mut r = Refragmenter::new(RefragmentConfig::default());
    r.push(Bytes::from(av_stream(&frames, 10))).expect("ok");
    let before_finish = std::iter::from_fn(|| r.next_output())
        .filter(|o| matches!(o, Output::Fragment(_)))
        .count();
    // Fragments at 0, 2, 4 s are out; the one at 6 s is open, waiting for the end of input.
    assert_eq!(before_finish, 3);
    r.finish().expect("ok");
}

#[test]
fn absurd_timecodes_are_refused_not_overflowed() {
    for tc in [u64::MAX, 1 << 62] {
        let mut v = prefix();
        let at = v.len() as u64;
        v.extend(cluster(tc, &[simple_block(1, -5, true, &[0; 4])]));
        let (_, r) = push_all(&v);
        assert!(
            matches!(r, Err(MkvError::Invalid { offset, reason: InvalidReason::TimecodeOverflow }) if offset > at),
            "{r:?}"
        );
    }
}

/// docs/protocol.md §3 "Idle": when the source pauses, the open fragment is closed so it can be
/// acknowledged at once. Input that resumes mid-GOP restarts at the next keyframe; the video in
/// between is dropped and reported, no audio is lost, timecodes keep increasing.
#[test]
fn flush_closes_the_open_fragment_and_input_resumes_at_the_next_keyframe() {
    let frames = av_frames(8000, 50);
    let all = av_stream(&frames, 10);
    // Cut the input after the first whole cluster that reaches 3 s.
    let k = frames
        .iter()
        .position(|f| f.time >= 3000)
        .expect("3 s")
        .div_ceil(10)
        * 10;
    let prefix = av_stream(&frames[..k], 10);
    assert_eq!(
        &all[..prefix.len()],
        &prefix[..],
        "same bytes up to the cut"
    );
    let cut_time = frames[..k].iter().map(|f| f.time).max().expect("frames");

    let mut r = Refragmenter::new(RefragmentConfig::default());
    r.push(Bytes::from(prefix.clone())).expect("prefix");
    let mut outputs: Vec<Output> = std::iter::from_fn(|| r.next_output()).collect();
    let before = outputs
        .iter()
        .filter(|o| matches!(o, Output::Fragment(_)))
        .count();
    assert!(r.flush().expect("flush"), "the open fragment is emitted");
    let flushed: Vec<Output> = std::iter::from_fn(|| r.next_output()).collect();
    let Some(Output::Fragment(last)) = flushed
        .iter()
        .rev()
        .find(|o| matches!(o, Output::Fragment(_)))
    else {
        panic!("no fragment after flush: {flushed:?}");
    };
    assert_eq!(last.last_frame_timecode(), cut_time);
    assert!(
        flushed.iter().any(|o| matches!(
            o,
            Output::Warning(Warning::ClosedByPause { fragment_timecode, .. })
                if *fragment_timecode == last.timecode()
        )),
        "a cut by pause is reported: {flushed:?}"
    );
    assert!(!r.flush().expect("flush again"), "nothing open any more");
    outputs.extend(flushed);
    assert!(before >= 1);

    r.push(Bytes::copy_from_slice(&all[prefix.len()..]))
        .expect("rest");
    r.finish().expect("finish");
    outputs.extend(std::iter::from_fn(|| r.next_output()));
    let frags: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Fragment(f) => Some(f),
            _ => None,
        })
        .collect();
    let tcs: Vec<u64> = frags.iter().map(|f| f.timecode()).collect();
    assert!(tcs.windows(2).all(|w| w[0] < w[1]), "{tcs:?}");
    for w in frags.windows(2) {
        assert!(
            w[1].timecode() > w[0].last_frame_timecode(),
            "docs/protocol.md §4.6"
        );
    }
    let skipped_video = frames
        .iter()
        .filter(|f| f.track == 1 && f.time > cut_time && f.time < 4000)
        .count() as u64;
    let dropped: u64 = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::FramesDropped {
                track: 1,
                reason: DropReason::AfterFlushBeforeKeyframe,
                count,
            }) => Some(*count),
            _ => None,
        })
        .sum();
    assert!(skipped_video > 0);
    assert_eq!(dropped, skipped_video);
    let video: usize = frags.iter().map(|f| f.frame_count(1)).sum();
    let audio: usize = frags.iter().map(|f| f.frame_count(2)).sum();
    assert_eq!(
        video as u64 + dropped,
        frames.iter().filter(|f| f.track == 1).count() as u64
    );
    assert_eq!(
        audio,
        frames.iter().filter(|f| f.track == 2).count(),
        "no audio lost"
    );
    // The fragment after the pause holds the 4 s keyframe.
    assert!(
        frags.iter().any(|f| f.timecode() <= 4000
            && f.last_frame_timecode() >= 4000
            && f.frame_count(1) > 0)
    );
}
