//! One test per media rule of `docs/protocol.md` that the emulator enforces, on
//! hand-built MKV byte strings (written by the test-only writer in `media_support`).

mod media_support;

use kvs_emulator::media::{Ingest, IngestConfig, IngestEvent, TimecodeType};
use media_support::*;

fn video_blocks(n: i16, step: i16) -> Vec<Vec<u8>> {
    (0..n).map(|f| simple_block(1, f * step, f == 0)).collect()
}

/// Compact event names: `S<tc>` started, `C<tc>` completed, `EOF`, `E<id>`.
fn kinds(events: &[IngestEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            IngestEvent::FragmentStarted { timecode } => format!("S{timecode}"),
            IngestEvent::FragmentCompleted(f) => format!("C{}", f.timecode),
            IngestEvent::EndOfFragmentTag => "EOF".to_string(),
            IngestEvent::Error { error_id, .. } => format!("E{error_id}"),
        })
        .collect()
}

fn cfg() -> IngestConfig {
    IngestConfig::default()
}

// ---- accepted input -------------------------------------------------------------------------

#[test]
fn valid_stream_gives_started_then_completed_per_fragment() {
    let events = run(&valid_stream(1000, 3));
    assert_eq!(
        kinds(&events),
        ["S1000", "C1000", "S2000", "C2000", "S3000", "C3000"]
    );
    let frags = completed(&events);
    assert_eq!(frags[0].frames_per_track, vec![(1, 25)]);
    assert!(frags[0].first_frame_keyframe);
    // 25 SimpleBlocks 40 ms apart: the last one plays for 40 ms too (its track's frame
    // interval, as a SimpleBlock states no duration), so the fragment lasts 1000 ms, not 960.
    assert_eq!(frags[0].duration_ms, 1000);
    assert_eq!(frags[0].producer_timestamp_ms, 1000);
    assert_eq!(frags[0].size, frags[0].cluster.len());
}

#[test]
fn a_single_frame_fragment_lasts_its_tracks_default_duration() {
    // DefaultDuration (0x23E383) 33_366_667 ns: a frame of 29.97 fps video, 33 ms at the 1 ms
    // TimecodeScale. With one frame there is no interval to go by, so only the track says.
    let entry = el(
        TRACK_ENTRY,
        &cat(&[
            uint(0xD7, 1),
            uint(0x73C5, 1),
            uint(0x83, 1),
            el(0x86, b"V_MPEG4/ISO/AVC"),
            uint(0x23E383, 33_366_667),
        ]),
    );
    let bytes = cat(&[
        ebml_header(),
        el_unknown(SEGMENT),
        info(),
        el(TRACKS, &entry),
        cluster(1000, &[simple_block(1, 0, true)]),
        cluster(
            2000,
            &[simple_block(1, 0, true), simple_block(1, 500, false)],
        ),
    ]);
    let events = run(&bytes);
    let frags = completed(&events);
    assert_eq!(frags[0].duration_ms, 33);
    // Two frames 500 ms apart: the declared DefaultDuration still wins over the interval.
    assert_eq!(frags[1].duration_ms, 533);
}

#[test]
fn unknown_size_cluster_is_made_self_delimiting() {
    let blocks = video_blocks(3, 40);
    let events = run(&cat(&[header(&[1]), cluster_unknown(500, &blocks)]));
    let frag = completed(&events)[0].clone();
    // Same children, now behind a known-size Cluster header.
    let mut children = uint(TIMECODE, 500);
    children.extend(cat(&blocks));
    assert_eq!(&frag.cluster[..4], &id_bytes(CLUSTER)[..]);
    assert!(frag.cluster.ends_with(&children));
    let size_len = frag.cluster.len() - 4 - children.len();
    assert!((1..=8).contains(&size_len));
}

#[test]
fn known_size_cluster_is_kept_byte_for_byte() {
    let c = cluster(500, &video_blocks(3, 40));
    let events = run(&cat(&[header(&[1]), c.clone()]));
    assert_eq!(&completed(&events)[0].cluster[..], &c[..]);
}

#[test]
fn known_size_segment_with_crc_void_seekhead_and_block_groups_is_accepted() {
    let group = |rel: i16, reference: bool| {
        let mut body = el(BLOCK, &block_body(1, rel, 0, b"x"));
        body.extend(uint(BLOCK_DURATION, 40));
        if reference {
            body.extend(el(REFERENCE_BLOCK, &[0xD8]));
        }
        el(BLOCK_GROUP, &body)
    };
    let cluster_body = cat(&[
        el(CRC32, &[0, 0, 0, 0]),
        uint(TIMECODE, 100),
        group(0, false),
        el(VOID, &[0; 3]),
        group(40, true),
    ]);
    let segment_body = cat(&[
        el(SEEK_HEAD, &[0; 10]),
        el(VOID, &[0; 20]),
        info(),
        tracks(&[1]),
        el(CLUSTER, &cluster_body),
    ]);
    let bytes = cat(&[ebml_header(), el(SEGMENT, &segment_body)]);
    let events = run(&bytes);
    assert_eq!(kinds(&events), ["S100", "C100"]);
    let frag = completed(&events)[0];
    assert_eq!(frag.frames_per_track, vec![(1, 2)]);
    assert!(frag.first_frame_keyframe);
    assert_eq!(
        frag.duration_ms, 80,
        "last frame at +40 plus its BlockDuration 40"
    );
}

#[test]
fn header_is_ebml_unknown_segment_info_tracks_without_padding() {
    let with_padding = el(
        INFO,
        &cat(&[
            el(CRC32, &[1, 2, 3, 4]),
            uint(0x2AD7B1, 1_000_000),
            el(VOID, &[0; 5]),
        ]),
    );
    let bytes = cat(&[
        ebml_header(),
        el_unknown(SEGMENT),
        el(SEEK_HEAD, &[0; 4]),
        with_padding,
        tracks(&[1, 2]),
    ]);
    let mut ingest = Ingest::new(cfg());
    let mut out = Vec::new();
    ingest.push(&bytes, NOW, &mut out);
    assert!(out.is_empty(), "{out:#?}");
    let expected = cat(&[
        ebml_header(),
        el_unknown(SEGMENT),
        el(INFO, &uint(0x2AD7B1, 1_000_000)),
        tracks(&[1, 2]),
    ]);
    assert_eq!(ingest.header(), Some(&expected[..]));
    let numbers: Vec<_> = ingest.tracks().iter().map(|t| t.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        ingest.tracks()[0].codec_id.as_deref(),
        Some("V_MPEG4/ISO/AVC")
    );
    assert_eq!(ingest.bytes_consumed(), bytes.len() as u64);
}

#[test]
fn end_of_fragment_tag_completes_the_open_fragment_at_once() {
    let mut ingest = Ingest::new(cfg());
    let mut out = Vec::new();
    ingest.push(
        &cat(&[header(&[1]), cluster_unknown(0, &video_blocks(3, 40))]),
        NOW,
        &mut out,
    );
    assert_eq!(kinds(&out), ["S0"]);
    ingest.push(&end_of_fragment(), NOW, &mut out);
    assert_eq!(kinds(&out), ["S0", "EOF", "C0"]);
    // The stream goes on after the tag.
    ingest.push(&cluster_unknown(1000, &video_blocks(3, 40)), NOW, &mut out);
    ingest.finish(NOW, &mut out);
    assert_eq!(kinds(&out), ["S0", "EOF", "C0", "S1000", "C1000"]);
}

#[test]
fn end_of_fragment_tag_without_open_fragment_is_harmless() {
    let events = run(&cat(&[
        header(&[1]),
        end_of_fragment(),
        cluster(0, &video_blocks(2, 40)),
    ]));
    assert_eq!(kinds(&events), ["EOF", "S0", "C0"]);
}

#[test]
fn metadata_tags_before_a_cluster_belong_to_that_fragment() {
    let bytes = cat(&[
        header(&[1]),
        tags(&[("camera", "front"), ("site", "lab")]),
        cluster(0, &video_blocks(2, 40)),
        cluster(1000, &video_blocks(2, 40)),
    ]);
    let events = run(&bytes);
    let frags = completed(&events);
    assert_eq!(
        frags[0].tags,
        vec![
            ("camera".into(), "front".into()),
            ("site".into(), "lab".into())
        ]
    );
    assert!(frags[1].tags.is_empty());
}

#[test]
fn track_targeted_tags_are_not_fragment_metadata() {
    // Tag { Targets { TagTrackUID 1 }, SimpleTag ENCODER } as ffmpeg writes per track, plus
    // twelve of them: none counts towards the limit of 10, none is reserved-name checked.
    let simple = |name: &str| {
        el(
            0x67C8,
            &cat(&[el(0x45A3, name.as_bytes()), el(0x4487, b"x")]),
        )
    };
    let targeted = |name: &str| el(0x7373, &cat(&[el(0x63C0, &uint(0x63C5, 1)), simple(name)]));
    let mut tag_list: Vec<Vec<u8>> = (0..12).map(|i| targeted(&format!("T{i}"))).collect();
    tag_list.push(targeted("AWS_TRACK_THING"));
    // An empty Targets still means the whole segment: counted.
    tag_list.push(el(0x7373, &cat(&[el(0x63C0, &[]), simple("global")])));
    let bytes = cat(&[
        header(&[1]),
        el(TAGS, &cat(&tag_list)),
        cluster(0, &video_blocks(2, 40)),
    ]);
    let events = run(&bytes);
    assert_eq!(error_of(&events), None, "{events:#?}");
    assert_eq!(
        completed(&events)[0].tags,
        vec![("global".into(), "x".into())]
    );
}

#[test]
fn ten_metadata_tags_are_accepted() {
    let names: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let events = run(&cat(&[
        header(&[1]),
        tags(&pairs),
        cluster(0, &video_blocks(2, 40)),
    ]));
    assert_eq!(completed(&events)[0].tags.len(), 10);
}

#[test]
fn past_producer_timestamps_are_accepted_for_backfill() {
    // Section 4.10: a recording from years ago uploads fine.
    let events = run(&valid_stream(1_500_000_000_000, 2));
    assert_eq!(error_of(&events), None);
}

#[test]
fn relative_timecodes_add_the_producer_start() {
    let config = IngestConfig {
        timecode_type: TimecodeType::Relative,
        producer_start_ms: Some(NOW - 60_000),
        ..cfg()
    };
    let events = run_with(config, &valid_stream(0, 2));
    let frags = completed(&events);
    assert_eq!(frags[0].producer_timestamp_ms, NOW - 60_000);
    assert_eq!(frags[1].producer_timestamp_ms, NOW - 59_000);
}

#[test]
fn fragment_not_starting_with_a_keyframe_is_accepted_but_flagged() {
    let blocks = vec![simple_block(1, 0, false), simple_block(1, 40, true)];
    let events = run(&cat(&[header(&[1]), cluster(0, &blocks)]));
    assert!(!completed(&events)[0].first_frame_keyframe);
}

// ---- 4006 INVALID_MKV_DATA ------------------------------------------------------------------

#[test]
fn e4006_garbage_body() {
    assert_error(&run(b"GET / HTTP/1.1\r\n\r\n"), 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_cluster_before_tracks() {
    let bytes = cat(&[
        ebml_header(),
        el_unknown(SEGMENT),
        info(),
        cluster(0, &video_blocks(1, 40)),
    ]);
    let events = run(&bytes);
    assert_error(&events, 4006, "INVALID_MKV_DATA");
    assert!(reason_of(&events).contains("before Tracks"));
}

#[test]
fn e4006_second_ebml_header_in_the_segment() {
    let bytes = cat(&[valid_stream(0, 1), ebml_header()]);
    let events = run(&bytes);
    assert_error(&events, 4006, "INVALID_MKV_DATA");
    // The fragment that was open when the second header came is completed first (the header
    // ends the unknown-size Cluster).
    assert_eq!(kinds(&events), ["S0", "E4006"]);
}

#[test]
fn e4006_second_segment() {
    assert_error(
        &run(&cat(&[header(&[1]), el_unknown(SEGMENT)])),
        4006,
        "INVALID_MKV_DATA",
    );
}

#[test]
fn e4006_bad_vint_size() {
    let mut bytes = header(&[1]);
    bytes.extend(id_bytes(CLUSTER));
    bytes.push(0x00); // a size vint longer than 8 bytes
    bytes.extend([0; 8]);
    let events = run(&bytes);
    assert_error(&events, 4006, "INVALID_MKV_DATA");
    assert!(reason_of(&events).contains(&format!("byte {}", header(&[1]).len())));
}

#[test]
fn e4006_id_longer_than_four_bytes() {
    let mut bytes = header(&[1]);
    bytes.extend([0x08, 0, 0, 0, 1, 0x80]);
    assert_error(&run(&bytes), 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_not_matroska_doctype() {
    let bytes = cat(&[el(EBML, &el(0x4282, b"webp")), el_unknown(SEGMENT)]);
    assert_error(&run(&bytes), 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_element_beyond_its_cap_is_refused_without_buffering() {
    // A Tracks declaring 2^50 bytes: refused at its header, nothing allocated.
    let mut bytes = cat(&[ebml_header(), el_unknown(SEGMENT), info()]);
    bytes.extend(id_bytes(TRACKS));
    bytes.extend([0x01, 0x04, 0, 0, 0, 0, 0, 0]);
    let events = run(&bytes);
    assert_error(&events, 4006, "INVALID_MKV_DATA");
    assert!(reason_of(&events).contains("over the cap"));
}

#[test]
fn e4006_unknown_size_where_not_allowed() {
    let bytes = cat(&[ebml_header(), el_unknown(SEGMENT), el_unknown(TRACKS)]);
    assert_error(&run(&bytes), 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_child_overrunning_a_known_size_cluster() {
    let mut body = uint(TIMECODE, 0);
    body.extend(simple_block(1, 0, true));
    let mut c = el(CLUSTER, &body);
    // Shrink the declared size by one: the last block now overruns the Cluster.
    let size_at = 4;
    c[size_at] -= 1;
    let events = run(&cat(&[header(&[1]), c]));
    assert_error(&events, 4006, "INVALID_MKV_DATA");
    assert!(reason_of(&events).contains("beyond its parent"));
}

#[test]
fn e4006_data_after_a_known_size_segment() {
    let segment = el(
        SEGMENT,
        &cat(&[info(), tracks(&[1]), cluster(0, &video_blocks(2, 40))]),
    );
    let bytes = cat(&[ebml_header(), segment, ebml_header()]);
    let events = run(&bytes);
    assert_error(&events, 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_laced_block() {
    let laced = el(SIMPLE_BLOCK, &block_body(1, 0, 0x80 | 0x02, &[1, 5, 5, 5]));
    assert_error(
        &run(&cat(&[header(&[1]), cluster(0, &[laced])])),
        4006,
        "INVALID_MKV_DATA",
    );
}

#[test]
fn e4006_block_before_cluster_timecode() {
    let mut c = el_unknown(CLUSTER);
    c.extend(simple_block(1, 0, true));
    assert_error(&run(&cat(&[header(&[1]), c])), 4006, "INVALID_MKV_DATA");
}

#[test]
fn e4006_body_truncated_inside_an_element() {
    let mut bytes = cat(&[header(&[1]), cluster_unknown(0, &video_blocks(2, 40))]);
    bytes.truncate(bytes.len() - 2);
    let events = run(&bytes);
    assert_eq!(kinds(&events), ["S0", "E4006"]);
    assert_eq!(error_of(&events), Some((4006, "INVALID_MKV_DATA", Some(0))));
}

#[test]
fn e4006_second_tracks_after_first_cluster() {
    let bytes = cat(&[valid_stream(0, 1), tracks(&[1])]);
    assert_error(&run(&bytes), 4006, "INVALID_MKV_DATA");
}

// ---- 4001 MAX_FRAGMENT_SIZE_REACHED ----------------------------------------------------------

#[test]
fn e4001_fragment_over_max_bytes_is_refused_before_it_is_buffered() {
    let config = IngestConfig {
        max_fragment_bytes: 2_000,
        ..cfg()
    };
    let big = el(SIMPLE_BLOCK, &block_body(1, 0, 0x80, &[7; 3_000]));
    let bytes = cat(&[header(&[1]), cluster_unknown(0, &[big])]);
    // Feed only the block's header: the error comes before the 3000 bytes.
    let cut = bytes.len() - 3_000 + 1;
    let mut ingest = Ingest::new(config);
    let mut out = Vec::new();
    ingest.push(&bytes[..cut], NOW, &mut out);
    assert_error(&out, 4001, "MAX_FRAGMENT_SIZE_REACHED");
    assert_eq!(error_of(&out).unwrap().2, Some(0));
}

#[test]
fn e4001_many_small_blocks_add_up() {
    let config = IngestConfig {
        max_fragment_bytes: 600,
        ..cfg()
    };
    let events = run_with(
        config,
        &cat(&[header(&[1]), cluster_unknown(0, &video_blocks(100, 1))]),
    );
    assert_error(&events, 4001, "MAX_FRAGMENT_SIZE_REACHED");
}

#[test]
fn e4001_known_cluster_size_over_the_cap() {
    let config = IngestConfig {
        max_fragment_bytes: 100,
        ..cfg()
    };
    let mut bytes = header(&[1]);
    bytes.extend(id_bytes(CLUSTER));
    bytes.extend(size_bytes(10_000));
    bytes.extend(uint(TIMECODE, 0));
    assert_error(&run_with(config, &bytes), 4001, "MAX_FRAGMENT_SIZE_REACHED");
}

// ---- 4002 MAX_FRAGMENT_DURATION_REACHED -----------------------------------------------------

#[test]
fn e4002_fragment_longer_than_the_configured_maximum() {
    let config = IngestConfig {
        max_fragment_duration_ms: 1_000,
        ..cfg()
    };
    let ok = run_with(
        config.clone(),
        &cat(&[header(&[1]), cluster(0, &video_blocks(26, 40))]),
    );
    assert_eq!(error_of(&ok), None, "a frame exactly at the limit is fine");
    let events = run_with(
        config,
        &cat(&[header(&[1]), cluster(0, &video_blocks(27, 40))]),
    );
    assert_error(&events, 4002, "MAX_FRAGMENT_DURATION_REACHED");
}

#[test]
fn e4002_default_limit_is_20_seconds_at_a_coarse_timecode_scale() {
    // TimecodeScale 10 ms: relative timecode 2001 is 20 010 ms.
    let info_10ms = el(INFO, &uint(0x2AD7B1, 10_000_000));
    let head = cat(&[ebml_header(), el_unknown(SEGMENT), info_10ms, tracks(&[1])]);
    let ok = run(&cat(&[
        head.clone(),
        cluster(0, &[simple_block(1, 0, true), simple_block(1, 2000, false)]),
    ]));
    assert_eq!(error_of(&ok), None);
    let bad = run(&cat(&[
        head,
        cluster(0, &[simple_block(1, 0, true), simple_block(1, 2001, false)]),
    ]));
    assert_error(&bad, 4002, "MAX_FRAGMENT_DURATION_REACHED");
}

// ---- 4004 FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS --------------------------------------------

#[test]
fn e4004_cluster_timecode_equal_to_previous_last_frame() {
    // Previous fragment's last frame is at 0 + 960.
    let bytes = cat(&[
        header(&[1]),
        cluster(0, &video_blocks(25, 40)),
        cluster(960, &video_blocks(2, 40)),
    ]);
    let events = run(&bytes);
    assert_eq!(kinds(&events), ["S0", "C0", "S960", "E4004"]);
    assert_eq!(
        error_of(&events),
        Some((4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", Some(960)))
    );
    // One more millisecond is fine.
    let ok = run(&cat(&[
        header(&[1]),
        cluster(0, &video_blocks(25, 40)),
        cluster(961, &video_blocks(2, 40)),
    ]));
    assert_eq!(error_of(&ok), None);
}

#[test]
fn e4004_cluster_timecode_going_back() {
    let bytes = cat(&[
        header(&[1]),
        cluster(5000, &video_blocks(2, 40)),
        cluster(1000, &video_blocks(2, 40)),
    ]);
    assert_error(&run(&bytes), 4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS");
}

#[test]
fn e4004_b_frames_out_of_order_inside_a_fragment() {
    let blocks = vec![
        simple_block(1, 0, true),
        simple_block(1, 80, false),
        simple_block(1, 40, false),
    ];
    let events = run(&cat(&[header(&[1]), cluster(0, &blocks)]));
    assert_error(&events, 4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS");
    assert!(reason_of(&events).contains("B-frames"));
}

#[test]
fn e4004_block_overlapping_the_previous_fragment() {
    // Section 5: ffmpeg's held-back audio block timed below the previous fragment's end.
    let second = vec![simple_block(1, 0, true), simple_block(2, -100, true)];
    let first = vec![simple_block(1, 0, true), simple_block(2, 950, true)];
    let bytes = cat(&[header(&[1, 2]), cluster(0, &first), cluster(1000, &second)]);
    assert_error(&run(&bytes), 4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS");
}

#[test]
fn interleaved_tracks_may_go_back_across_tracks() {
    // Per-track order is what matters: audio at 20 after video at 40 is not a B-frame.
    let blocks = vec![
        simple_block(1, 0, true),
        simple_block(1, 40, false),
        simple_block(2, 20, true),
    ];
    assert_eq!(
        error_of(&run(&cat(&[header(&[1, 2]), cluster(0, &blocks)]))),
        None
    );
}

// ---- 4007 INVALID_PRODUCER_TIMESTAMP --------------------------------------------------------

#[test]
fn e4007_absolute_timestamp_in_the_future() {
    let config = IngestConfig {
        max_future_ms: 5_000,
        ..cfg()
    };
    let ok = run_with(
        config.clone(),
        &cat(&[header(&[1]), cluster(NOW + 5_000, &video_blocks(2, 40))]),
    );
    assert_eq!(error_of(&ok), None);
    let events = run_with(
        config,
        &cat(&[header(&[1]), cluster(NOW + 5_001, &video_blocks(2, 40))]),
    );
    assert_error(&events, 4007, "INVALID_PRODUCER_TIMESTAMP");
    assert_eq!(error_of(&events).unwrap().2, Some(NOW + 5_001));
}

#[test]
fn e4007_relative_timestamp_in_the_future() {
    let config = IngestConfig {
        timecode_type: TimecodeType::Relative,
        producer_start_ms: Some(NOW),
        max_future_ms: 1_000,
        ..cfg()
    };
    let bytes = cat(&[
        header(&[1]),
        cluster(0, &video_blocks(2, 40)),
        cluster(2_000, &video_blocks(2, 40)),
    ]);
    let events = run_with(config, &bytes);
    assert_eq!(kinds(&events), ["S0", "C0", "S2000", "E4007"]);
}

#[test]
fn relative_without_start_header_anchors_at_first_push() {
    let config = IngestConfig {
        timecode_type: TimecodeType::Relative,
        ..cfg()
    };
    let events = run_with(config, &valid_stream(0, 1));
    assert_eq!(completed(&events)[0].producer_timestamp_ms, NOW);
}

// ---- 4009 FRAGMENT_METADATA_LIMIT_REACHED ---------------------------------------------------

#[test]
fn e4009_more_than_ten_tags_on_a_fragment() {
    let names: Vec<String> = (0..11).map(|i| format!("k{i}")).collect();
    // Spread over two Tags elements: the limit is per fragment, not per element.
    let first: Vec<(&str, &str)> = names[..6].iter().map(|n| (n.as_str(), "v")).collect();
    let second: Vec<(&str, &str)> = names[6..].iter().map(|n| (n.as_str(), "v")).collect();
    let bytes = cat(&[
        header(&[1]),
        tags(&first),
        tags(&second),
        cluster(0, &video_blocks(2, 40)),
    ]);
    assert_error(&run(&bytes), 4009, "FRAGMENT_METADATA_LIMIT_REACHED");
}

#[test]
fn e4009_reserved_aws_prefix() {
    let bytes = cat(&[
        header(&[1]),
        tags(&[("AWS_MINE", "x")]),
        cluster(0, &video_blocks(2, 40)),
    ]);
    assert_error(&run(&bytes), 4009, "FRAGMENT_METADATA_LIMIT_REACHED");
}

#[test]
fn e4009_names_the_fragment_its_tags_belong_to_and_the_open_fragment_is_received() {
    // Issue 12: the ERROR carried no FragmentTimecode and the fragment open when the Tags
    // arrived was lost with it. The Tags apply to the next Cluster (section 4.9).
    let bytes = cat(&[
        header(&[1]),
        cluster_unknown(0, &video_blocks(2, 40)),
        tags(&[("AWS_MINE", "x")]),
        cluster_unknown(1000, &video_blocks(2, 40)),
    ]);
    let events = run(&bytes);
    assert_eq!(kinds(&events), ["S0", "C0", "S1000", "E4009"]);
    assert_eq!(
        error_of(&events),
        Some((4009, "FRAGMENT_METADATA_LIMIT_REACHED", Some(1000)))
    );
}

#[test]
fn bad_tags_with_no_cluster_after_them_are_still_refused() {
    let bytes = cat(&[
        header(&[1]),
        cluster(0, &video_blocks(2, 40)),
        tags(&[("AWS_MINE", "x")]),
    ]);
    let events = run(&bytes);
    assert_eq!(kinds(&events), ["S0", "C0", "E4009"]);
}

#[test]
fn the_reserved_tags_the_service_recognises_are_accepted_and_not_counted() {
    // What `putKinesisVideoEventMetadata` writes for a notification plus image generation,
    // beside ten custom pairs (the official producer's maximum).
    let names: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("AWS_KINESISVIDEO_NOTIFICATION", ""),
        ("AWS_KINESISVIDEO_IMAGE_GENERATION", ""),
        ("AWS_KINESISVIDEO_IMAGE_PREFIX", "images/cam-1"),
    ];
    pairs.extend(names.iter().map(|n| (n.as_str(), "v")));
    let events = run(&cat(&[
        header(&[1]),
        tags(&pairs),
        cluster(0, &video_blocks(2, 40)),
    ]));
    assert_eq!(error_of(&events), None, "{events:#?}");
    let stored = &completed(&events)[0].tags;
    assert_eq!(stored.len(), 13);
    assert_eq!(
        stored[2],
        (
            "AWS_KINESISVIDEO_IMAGE_PREFIX".to_string(),
            "images/cam-1".to_string()
        )
    );
    // Another name in the same family stays reserved.
    let events = run(&cat(&[
        header(&[1]),
        tags(&[("AWS_KINESISVIDEO_SOMETHING_ELSE", "")]),
        cluster(0, &video_blocks(2, 40)),
    ]));
    assert_error(&events, 4009, "FRAGMENT_METADATA_LIMIT_REACHED");
}

#[test]
fn every_error_code_is_the_tables_code_for_its_id() {
    let cases = [
        cat(&[
            header(&[1]),
            tags(&[("AWS_MINE", "x")]),
            cluster(0, &video_blocks(2, 40)),
        ]),
        cat(&[header(&[1]), vec![0x1A, 0x45, 0xDF, 0xA3, 0x80]]),
        b"not mkv at all".to_vec(),
    ];
    for bytes in cases {
        for e in run(&bytes) {
            if let IngestEvent::Error { error_id, code, .. } = e {
                assert_eq!(code, kvs_emulator::media::error_code(error_id));
            }
        }
    }
}

#[test]
fn e4009_name_or_value_too_long() {
    let long_name = "n".repeat(129);
    let bytes = cat(&[header(&[1]), tags(&[(&long_name, "x")])]);
    assert_error(&run(&bytes), 4009, "FRAGMENT_METADATA_LIMIT_REACHED");
    let long_value = "v".repeat(257);
    let bytes = cat(&[header(&[1]), tags(&[("name", &long_value)])]);
    assert_error(&run(&bytes), 4009, "FRAGMENT_METADATA_LIMIT_REACHED");
    let ok = cat(&[
        header(&[1]),
        tags(&[(&"n".repeat(128), &"v".repeat(256))]),
        cluster(0, &video_blocks(1, 40)),
    ]);
    assert_eq!(error_of(&run(&ok)), None);
}

// ---- 4010, 4011, 4012 -----------------------------------------------------------------------

#[test]
fn e4010_block_for_undeclared_track() {
    let blocks = vec![simple_block(1, 0, true), simple_block(3, 10, true)];
    let events = run(&cat(&[header(&[1, 2]), cluster(0, &blocks)]));
    assert_error(&events, 4010, "TRACK_NUMBER_MISMATCH");
    assert!(reason_of(&events).contains("track 3"));
}

#[test]
fn e4011_declared_track_without_frames() {
    let blocks = vec![simple_block(1, 0, true), simple_block(1, 40, false)];
    let events = run(&cat(&[header(&[1, 2]), cluster(0, &blocks)]));
    assert_eq!(kinds(&events), ["S0", "E4011"]);
    assert!(reason_of(&events).contains("track 2"));
}

#[test]
fn e4011_is_checked_when_the_next_cluster_starts() {
    let good = vec![simple_block(1, 0, true), simple_block(2, 0, true)];
    let bad = vec![simple_block(1, 0, true)];
    let bytes = cat(&[
        header(&[1, 2]),
        cluster(0, &good),
        cluster(1000, &bad),
        cluster(2000, &good),
    ]);
    assert_eq!(kinds(&run(&bytes)), ["S0", "C0", "S1000", "E4011"]);
}

#[test]
fn e4012_more_than_three_tracks() {
    assert_eq!(error_of(&run(&header(&[1, 2, 3]))), None);
    assert_error(
        &run(&header(&[1, 2, 3, 4])),
        4012,
        "MORE_THAN_ALLOWED_TRACKS_FOUND",
    );
}

// ---- fragments per second -------------------------------------------------------------------

#[test]
fn more_than_five_fragments_per_second_is_refused() {
    let frag = |tc: u64| cluster(tc, &[simple_block(1, 0, true)]);
    let five: Vec<_> = (0..5).map(|i| frag(i * 199)).collect();
    let ok = run(&cat(&[header(&[1]), cat(&five), frag(1000)]));
    assert_eq!(error_of(&ok), None, "5 in [0, 1000) then one at 1000");
    let six: Vec<_> = (0..6).map(|i| frag(i * 190)).collect();
    let events = run(&cat(&[header(&[1]), cat(&six)]));
    // The code is the one the table gives 4002 (docs/protocol.md §2): id and code agree.
    assert_error(&events, 4002, "MAX_FRAGMENT_DURATION_REACHED");
    assert_eq!(error_of(&events).unwrap().2, Some(950));
}

// ---- after an error ------------------------------------------------------------------------

#[test]
fn nothing_follows_an_error() {
    let mut ingest = Ingest::new(cfg());
    let mut out = Vec::new();
    ingest.push(b"\x00\x00garbage", NOW, &mut out);
    ingest.push(&valid_stream(0, 2), NOW, &mut out);
    ingest.finish(NOW, &mut out);
    assert_eq!(kinds(&out), ["E4006"]);
}

#[test]
fn hostile_timecode_and_scale_saturate_instead_of_overflowing() {
    let info_max = el(INFO, &uint(0x2AD7B1, u64::MAX));
    let head = cat(&[ebml_header(), el_unknown(SEGMENT), info_max, tracks(&[1])]);
    let events = run(&cat(&[
        head,
        cluster(u64::MAX, &[simple_block(1, i16::MAX, true)]),
    ]));
    assert_error(&events, 4007, "INVALID_PRODUCER_TIMESTAMP");
}
