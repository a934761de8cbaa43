//! Differential test against an independent EBML implementation (`webm-iterable`): the blocks
//! of our output, unlaced, carry the same payloads per track as the input, at the same times
//! rebased to the first frame, and every output Cluster starts with a keyframe.

#[path = "common/mkv_media.rs"]
mod mkv_media;

use std::collections::BTreeMap;
use std::io::Cursor;

use kvs_putmedia::mkv::RefragmentConfig;
use mkv_media::*;
use webm_iterable::WebmIterator;
use webm_iterable::matroska_spec::{Block, MatroskaSpec, SimpleBlock};

/// One frame as webm-iterable sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    time: i64,
    payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct Parsed {
    frames: BTreeMap<u64, Vec<Seen>>,
    /// Per Cluster: the Cluster timestamp and whether its first block is a keyframe.
    clusters: Vec<(u64, Option<bool>)>,
    timestamp_scale: u64,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parsed {
        timestamp_scale: 1_000_000,
        ..Parsed::default()
    };
    let mut cluster_tc = 0u64;
    for tag in WebmIterator::new(Cursor::new(bytes), &[]) {
        let tag = tag.expect("webm-iterable parses it");
        match &tag {
            MatroskaSpec::TimestampScale(s) => p.timestamp_scale = *s,
            MatroskaSpec::Timestamp(t) => {
                cluster_tc = *t;
                p.clusters.push((*t, None));
            }
            MatroskaSpec::SimpleBlock(_) => {
                let b = SimpleBlock::try_from(&tag).expect("SimpleBlock");
                if let Some(c) = p.clusters.last_mut().filter(|c| c.1.is_none()) {
                    c.1 = Some(b.keyframe);
                }
                let t = cluster_tc as i64 + i64::from(b.timestamp);
                add(
                    &mut p,
                    b.track,
                    t,
                    b.read_frame_data().expect("frames").iter().map(|f| f.data),
                );
            }
            MatroskaSpec::Block(_) => {
                let b = Block::try_from(&tag).expect("Block");
                let t = cluster_tc as i64 + i64::from(b.timestamp);
                add(
                    &mut p,
                    b.track,
                    t,
                    b.read_frame_data().expect("frames").iter().map(|f| f.data),
                );
            }
            _ => {}
        }
    }
    p
}

fn add<'a>(p: &mut Parsed, track: u64, time: i64, frames: impl Iterator<Item = &'a [u8]>) {
    let scale = p.timestamp_scale as i64;
    for (i, data) in frames.enumerate() {
        // Laced frames share the block's time; only the first is compared by time.
        let time = if i == 0 {
            time * scale / 1_000_000
        } else {
            i64::MIN
        };
        p.frames.entry(track).or_default().push(Seen {
            time,
            payload: data.to_vec(),
        });
    }
}

fn compare(input: &[u8]) {
    let run = refragment(input, RefragmentConfig::default());
    let a = parse(input);
    let b = parse(&run.bytes);
    assert_eq!(b.timestamp_scale, 1_000_000);
    assert_eq!(b.clusters.len(), run.fragments.len());
    for ((tc, key), f) in b.clusters.iter().zip(&run.fragments) {
        assert_eq!(*tc, f.timecode());
        assert_eq!(*key, Some(true), "cluster {tc} starts without a keyframe");
    }
    let origin = a
        .frames
        .values()
        .flatten()
        .map(|s| s.time)
        .filter(|&t| t != i64::MIN)
        .min()
        .expect("frames");
    assert_eq!(
        a.frames.keys().collect::<Vec<_>>(),
        b.frames.keys().collect::<Vec<_>>()
    );
    for (track, ours) in &b.frames {
        let theirs = &a.frames[track];
        assert_eq!(ours.len(), theirs.len(), "track {track}: frame count");
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                o.payload == t.payload,
                "track {track} frame {i}: payload differs"
            );
            if t.time != i64::MIN {
                assert_eq!(o.time, t.time - origin, "track {track} frame {i}: time");
            }
        }
    }
}

#[test]
fn node_sample_output_matches_input_block_for_block() {
    compare(&node_sample(4));
}

#[test]
fn fixed_gop_output_matches_input_block_for_block() {
    compare(&ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-t",
        "5",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-c:a",
        "aac",
    ]));
}
