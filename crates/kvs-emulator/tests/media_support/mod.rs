//! Test-only helpers for the media tests: a tiny EBML writer (deliberately not the crate's own,
//! so a shared misreading cannot hide), canned stream pieces, and runners.
#![allow(dead_code, unused_imports)]

use kvs_emulator::media::{CompletedFragment, Ingest, IngestConfig, IngestEvent};

/// "Now" used by tests: 2023-11-14T22:13:20Z.
pub const NOW: u64 = 1_700_000_000_000;

/// Element id bytes: the id as written, without leading zero bytes.
pub fn id_bytes(id: u32) -> Vec<u8> {
    id.to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect()
}

/// Size vint: one byte below 127, else the 8-byte form.
pub fn size_bytes(size: usize) -> Vec<u8> {
    if size < 127 {
        vec![0x80 | size as u8]
    } else {
        let mut v = vec![0x01];
        v.extend_from_slice(&(size as u64).to_be_bytes()[1..]);
        v
    }
}

/// A known-size element.
pub fn el(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.extend(size_bytes(body.len()));
    v.extend_from_slice(body);
    v
}

/// The start of an unknown-size element (8-byte all-ones size).
pub fn el_unknown(id: u32) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    v
}

/// An unsigned integer element (always 8 bytes: legal, and not the crate's shortest form).
pub fn uint(id: u32, value: u64) -> Vec<u8> {
    el(id, &value.to_be_bytes())
}

/// Concatenates parts.
pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

pub const EBML: u32 = 0x1A45DFA3;
pub const SEGMENT: u32 = 0x18538067;
pub const INFO: u32 = 0x1549A966;
pub const TRACKS: u32 = 0x1654AE6B;
pub const TRACK_ENTRY: u32 = 0xAE;
pub const TAGS: u32 = 0x1254C367;
pub const CLUSTER: u32 = 0x1F43B675;
pub const TIMECODE: u32 = 0xE7;
pub const SIMPLE_BLOCK: u32 = 0xA3;
pub const BLOCK_GROUP: u32 = 0xA0;
pub const BLOCK: u32 = 0xA1;
pub const BLOCK_DURATION: u32 = 0x9B;
pub const REFERENCE_BLOCK: u32 = 0xFB;
pub const VOID: u32 = 0xEC;
pub const CRC32: u32 = 0xBF;
pub const SEEK_HEAD: u32 = 0x114D9B74;

pub fn ebml_header() -> Vec<u8> {
    el(
        EBML,
        &cat(&[
            uint(0x4286, 1),
            uint(0x42F7, 1),
            uint(0x42F2, 4),
            uint(0x42F3, 8),
            el(0x4282, b"matroska"),
            uint(0x4287, 4),
            uint(0x4285, 2),
        ]),
    )
}

pub fn info() -> Vec<u8> {
    el(
        INFO,
        &cat(&[
            uint(0x2AD7B1, 1_000_000),
            el(0x4D80, b"test"),
            el(0x5741, b"test"),
        ]),
    )
}

pub fn track_entry(number: u64, codec: &str) -> Vec<u8> {
    el(
        TRACK_ENTRY,
        &cat(&[
            uint(0xD7, number),
            uint(0x73C5, number),
            uint(0x83, if codec.starts_with('V') { 1 } else { 2 }),
            el(0x86, codec.as_bytes()),
        ]),
    )
}

/// Tracks declaring these track numbers (the first is video, the rest audio).
pub fn tracks(numbers: &[u64]) -> Vec<u8> {
    let entries: Vec<_> = numbers
        .iter()
        .enumerate()
        .map(|(i, &n)| track_entry(n, if i == 0 { "V_MPEG4/ISO/AVC" } else { "A_AAC" }))
        .collect();
    el(TRACKS, &cat(&entries))
}

/// EBML header, unknown-size Segment, Info, Tracks.
pub fn header(numbers: &[u64]) -> Vec<u8> {
    cat(&[ebml_header(), el_unknown(SEGMENT), info(), tracks(numbers)])
}

/// A SimpleBlock body: track vint (one byte), relative timecode, flags, payload.
pub fn block_body(track: u64, relative: i16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80 | track as u8];
    v.extend_from_slice(&relative.to_be_bytes());
    v.push(flags);
    v.extend_from_slice(payload);
    v
}

pub fn simple_block(track: u64, relative: i16, key: bool) -> Vec<u8> {
    el(
        SIMPLE_BLOCK,
        &block_body(track, relative, if key { 0x80 } else { 0 }, b"frame"),
    )
}

/// A known-size Cluster.
pub fn cluster(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = uint(TIMECODE, timecode);
    body.extend(cat(blocks));
    el(CLUSTER, &body)
}

/// An unknown-size Cluster.
pub fn cluster_unknown(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut v = el_unknown(CLUSTER);
    v.extend(uint(TIMECODE, timecode));
    v.extend(cat(blocks));
    v
}

/// A level-1 Tags element with one Tag holding these SimpleTags.
pub fn tags(pairs: &[(&str, &str)]) -> Vec<u8> {
    let simple: Vec<_> = pairs
        .iter()
        .map(|(n, v)| {
            el(
                0x67C8,
                &cat(&[el(0x45A3, n.as_bytes()), el(0x4487, v.as_bytes())]),
            )
        })
        .collect();
    el(TAGS, &el(0x7373, &cat(&simple)))
}

pub fn end_of_fragment() -> Vec<u8> {
    tags(&[("AWS_KINESISVIDEO_END_OF_FRAGMENT", "")])
}

/// A valid one-track stream: `n` unknown-size clusters of 1 s, 25 frames each, starting at
/// `start` ms.
pub fn valid_stream(start: u64, n: u64) -> Vec<u8> {
    let mut v = header(&[1]);
    for i in 0..n {
        let blocks: Vec<_> = (0..25).map(|f| simple_block(1, f * 40, f == 0)).collect();
        v.extend(cluster_unknown(start + i * 1000, &blocks));
    }
    v
}

/// Pushes everything in one call, then finishes.
pub fn run_with(cfg: IngestConfig, bytes: &[u8]) -> Vec<IngestEvent> {
    run_chunks(cfg, &[bytes])
}

pub fn run(bytes: &[u8]) -> Vec<IngestEvent> {
    run_with(IngestConfig::default(), bytes)
}

/// Pushes the given chunks in order, then finishes.
pub fn run_chunks(cfg: IngestConfig, chunks: &[&[u8]]) -> Vec<IngestEvent> {
    let mut ingest = Ingest::new(cfg);
    let mut out = Vec::new();
    for chunk in chunks {
        ingest.push(chunk, NOW, &mut out);
    }
    ingest.finish(NOW, &mut out);
    out
}

/// Splits `bytes` at the given cut points (sorted, deduplicated, clamped).
pub fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        out.push(&bytes[start..c]);
        start = c;
    }
    out.push(&bytes[start..]);
    out
}

/// The error event, if any: `(id, code, timecode)`.
pub fn error_of(events: &[IngestEvent]) -> Option<(u32, &'static str, Option<u64>)> {
    events.iter().find_map(|e| match e {
        IngestEvent::Error {
            error_id,
            code,
            timecode,
            ..
        } => Some((*error_id, *code, *timecode)),
        _ => None,
    })
}

/// The error reason, if any.
pub fn reason_of(events: &[IngestEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            IngestEvent::Error { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub fn completed(events: &[IngestEvent]) -> Vec<&CompletedFragment> {
    events
        .iter()
        .filter_map(|e| match e {
            IngestEvent::FragmentCompleted(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// Asserts the events end with exactly this error and nothing follows it.
#[track_caller]
pub fn assert_error(events: &[IngestEvent], id: u32, code: &str) {
    match events.last() {
        Some(IngestEvent::Error {
            error_id, code: c, ..
        }) => {
            assert_eq!((*error_id, *c), (id, code), "events: {events:#?}");
        }
        _ => panic!("expected error {id} {code} last, got {events:#?}"),
    }
    let errors = events
        .iter()
        .filter(|e| matches!(e, IngestEvent::Error { .. }))
        .count();
    assert_eq!(errors, 1, "exactly one error: {events:#?}");
}

pub use kvs_test_support::media::ffmpeg_mkv;

/// 3 s of 320x240 H.264 at 25 fps (GOP 25, no B-frames), optionally with AAC audio.
pub fn ffmpeg_clip(audio: bool, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=3",
    ];
    if audio {
        args.extend([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
            "-c:a",
            "aac",
        ]);
    }
    args.extend([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bf",
        "0",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
    ]);
    args.extend_from_slice(extra);
    ffmpeg_mkv(&args)
}
