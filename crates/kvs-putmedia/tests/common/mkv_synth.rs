//! A tiny Matroska writer for hand-made inputs: exact timestamps, odd layouts, hostile sizes.
#![allow(dead_code)]

/// Encode an element id (already carrying its length marker).
pub fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    b[skip..].to_vec()
}

/// Encode a size vint in 8 bytes (always valid, simple).
pub fn size8(n: u64) -> Vec<u8> {
    let mut v = (n | (1u64 << 56)).to_be_bytes().to_vec();
    v[0] = 0x01;
    v
}

/// A whole element with an 8-byte size.
pub fn el(id: u32, data: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.extend(size8(data.len() as u64));
    v.extend_from_slice(data);
    v
}

/// An unsigned-integer element.
pub fn uint(id: u32, value: u64) -> Vec<u8> {
    el(id, &value.to_be_bytes())
}

pub fn ebml_header(doc_type: &str) -> Vec<u8> {
    let mut d = uint(0x4286, 1);
    d.extend(el(0x4282, doc_type.as_bytes()));
    d.extend(uint(0x4287, 4));
    el(0x1A45_DFA3, &d)
}

/// Segment start with unknown size.
pub fn segment_start() -> Vec<u8> {
    vec![
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]
}

pub fn info(timecode_scale: u64) -> Vec<u8> {
    let mut d = uint(0x2A_D7B1, timecode_scale);
    d.extend(el(0x4D80, b"synth"));
    el(0x1549_A966, &d)
}

/// Tracks from (number, type, codec id).
pub fn tracks(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut d = Vec::new();
    for &(n, t, c) in entries {
        let mut e = uint(0xD7, n);
        e.extend(uint(0x73C5, n));
        e.extend(uint(0x83, t));
        e.extend(el(0x86, c.as_bytes()));
        d.extend(el(0xAE, &e));
    }
    el(0x1654_AE6B, &d)
}

/// A SimpleBlock.
pub fn simple_block(track: u8, rel: i16, keyframe: bool, payload: &[u8]) -> Vec<u8> {
    assert!(track < 127);
    let mut d = vec![0x80 | track];
    d.extend(rel.to_be_bytes());
    d.push(if keyframe { 0x80 } else { 0 });
    d.extend_from_slice(payload);
    el(0xA3, &d)
}

/// A known-size Cluster with its Timecode and blocks.
pub fn cluster(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut d = uint(0xE7, timecode);
    for b in blocks {
        d.extend_from_slice(b);
    }
    el(0x1F43_B675, &d)
}

/// An unknown-size Cluster start with its Timecode; blocks follow.
pub fn cluster_start_unknown(timecode: u64) -> Vec<u8> {
    let mut v = vec![
        0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    v.extend(uint(0xE7, timecode));
    v
}

/// A frame to lay out: track, absolute time in ms, keyframe, payload byte.
#[derive(Debug, Clone, Copy)]
pub struct F {
    pub track: u8,
    pub time: u64,
    pub key: bool,
    pub size: usize,
}

/// Header (EBML, Segment, Info 1 ms, Tracks: 1 = video H.264, 2 = audio AAC) then the frames in
/// the given order, cut into known-size clusters every `per_cluster` frames regardless of
/// keyframes (like ffmpeg on a pipe). Payloads encode the frame index, so they are distinct.
pub fn av_stream(frames: &[F], per_cluster: usize) -> Vec<u8> {
    let mut v = ebml_header("matroska");
    v.extend(segment_start());
    v.extend(info(1_000_000));
    v.extend(tracks(&[(1, 1, "V_MPEG4/ISO/AVC"), (2, 2, "A_AAC")]));
    for (ci, chunk) in frames.chunks(per_cluster.max(1)).enumerate() {
        let base = chunk.iter().map(|f| f.time).min().unwrap_or(0);
        let blocks: Vec<Vec<u8>> = chunk
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let idx = (ci * per_cluster + i) as u32;
                let mut p = idx.to_be_bytes().to_vec();
                p.resize(f.size.max(4), f.track);
                simple_block(f.track, (f.time - base) as i16, f.key, &p)
            })
            .collect();
        v.extend(cluster(base, &blocks));
    }
    v
}

/// Video at 25 fps (keyframe every `gop` frames) and audio every 20 ms, for `ms` milliseconds,
/// interleaved by time, with each keyframe preceded in file order by nothing special.
pub fn av_frames(ms: u64, gop: u64) -> Vec<F> {
    let mut out = Vec::new();
    let (mut v, mut a) = (0u64, 0u64);
    while v * 40 < ms || a * 20 < ms {
        if v * 40 <= a * 20 && v * 40 < ms {
            out.push(F {
                track: 1,
                time: v * 40,
                key: v % gop == 0,
                size: 200,
            });
            v += 1;
        } else {
            out.push(F {
                track: 2,
                time: a * 20,
                key: true,
                size: 50,
            });
            a += 1;
        }
    }
    out
}
