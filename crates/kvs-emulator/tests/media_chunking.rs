//! Incrementality: any chunking of the body gives the same events as one push (proptest), and
//! memory stays bounded while streaming many times the bounds.

mod media_support;

use std::sync::OnceLock;

use kvs_emulator::media::{Ingest, IngestConfig, IngestEvent};
use media_support::*;
use proptest::prelude::*;

/// Hand-built bodies covering every path: valid ones and one per error family.
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let blocks =
            |n: i16| -> Vec<Vec<u8>> { (0..n).map(|f| simple_block(1, f * 40, f == 0)).collect() };
        let av = |tc: u64| cluster(tc, &[simple_block(1, 0, true), simple_block(2, 10, true)]);
        vec![
            valid_stream(1000, 4),
            cat(&[
                header(&[1]),
                tags(&[("a", "b")]),
                cluster(0, &blocks(5)),
                end_of_fragment(),
                cluster_unknown(1000, &blocks(5)),
            ]),
            cat(&[header(&[1, 2]), av(0), av(1000), av(2000)]),
            cat(&[header(&[1, 2]), av(0), cluster(1000, &blocks(3))]), // 4011
            cat(&[
                header(&[1]),
                cluster(0, &blocks(25)),
                cluster(960, &blocks(2)),
            ]), // 4004
            cat(&[header(&[1]), cluster(0, &[simple_block(4, 0, true)])]), // 4010
            header(&[1, 2, 3, 4]),                                     // 4012
            cat(&[header(&[1]), cluster(NOW + 60_000, &blocks(2))]),   // 4007
            cat(&[header(&[1]), tags(&[("AWS_X", "1")])]),             // 4009
            cat(&[
                header(&[1]),
                cluster_unknown(0, &blocks(5)),
                tags(&[("AWS_X", "1")]),
                cluster_unknown(1000, &blocks(5)),
            ]), // 4009 naming the second fragment
            cat(&[
                header(&[1]),
                tags(&[
                    ("AWS_KINESISVIDEO_NOTIFICATION", ""),
                    ("AWS_KINESISVIDEO_IMAGE_PREFIX", "p/"),
                ]),
                cluster(0, &blocks(5)),
            ]), // reserved event-metadata tags
            cat(&[header(&[1]), cluster(0, &blocks(10))[..40].to_vec()]), // truncated: 4006
            cat(&[valid_stream(0, 1), ebml_header()]),                 // 4006
            (0..8)
                .map(|i| cluster(i * 100, &blocks(1)))
                .fold(header(&[1]), |mut v, c| {
                    v.extend(c);
                    v
                }), // fragments per second
        ]
    })
}

fn ffmpeg_sample() -> &'static [u8] {
    static CLIP: OnceLock<Vec<u8>> = OnceLock::new();
    CLIP.get_or_init(|| ffmpeg_clip(false, &[]))
}

fn one_push(bytes: &[u8]) -> Vec<IngestEvent> {
    run_chunks(IngestConfig::default(), &[bytes])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_hand_built_bodies_gives_the_same_events(
        index in 0..12usize,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let bytes = &samples()[index];
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        let expected = one_push(bytes);
        prop_assert_eq!(run_chunks(IngestConfig::default(), &split_at(bytes, &cuts)), expected);
    }

    #[test]
    fn any_chunking_of_ffmpeg_output_gives_the_same_events(
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..60),
    ) {
        let bytes = ffmpeg_sample();
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        prop_assert_eq!(run_chunks(IngestConfig::default(), &split_at(bytes, &cuts)), one_push(bytes));
    }

    #[test]
    fn corrupted_bodies_never_panic_and_chunk_the_same(
        index in 0..12usize,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut bytes = samples()[index].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        let events = one_push(&bytes);
        let errors = events.iter().filter(|e| matches!(e, IngestEvent::Error { .. })).count();
        prop_assert!(errors <= 1);
        if errors == 1 {
            prop_assert!(matches!(events.last(), Some(IngestEvent::Error { .. })), "error is last");
        }
        // An error naming a fragment comes after that fragment's BUFFERING.
        if let Some(IngestEvent::Error { timecode: Some(t), .. }) = events.last() {
            let started = IngestEvent::FragmentStarted { timecode: *t };
            prop_assert!(events.contains(&started), "error without BUFFERING first");
        }
        prop_assert_eq!(run_chunks(IngestConfig::default(), &split_at(&bytes, &cuts)), events);
    }
}

#[test]
fn byte_by_byte_equals_one_push_on_every_sample() {
    for (i, bytes) in samples().iter().enumerate() {
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            run_chunks(IngestConfig::default(), &single),
            one_push(bytes),
            "sample {i}"
        );
    }
}

#[test]
fn memory_stays_bounded_while_streaming_many_times_the_bounds() {
    // 400 fragments of ~10 KiB with a 16 KiB fragment cap: 4 MB through, 250 times the cap.
    let cfg = IngestConfig {
        max_fragment_bytes: 16 * 1024,
        max_element_size: 4096,
        ..IngestConfig::default()
    };
    let mut ingest = Ingest::new(cfg);
    let mut out = Vec::new();
    let mut high_water = 0;
    let chunk = 1000;
    let mut feed = |bytes: &[u8], ingest: &mut Ingest, out: &mut Vec<IngestEvent>| {
        for c in bytes.chunks(chunk) {
            ingest.push(c, NOW, out);
            high_water = high_water.max(ingest.buffered_bytes());
        }
    };
    feed(&header(&[1]), &mut ingest, &mut out);
    for i in 0..400u64 {
        let blocks: Vec<Vec<u8>> = (0..10)
            .map(|f| {
                el(
                    SIMPLE_BLOCK,
                    &block_body(1, f * 100, if f == 0 { 0x80 } else { 0 }, &[f as u8; 1000]),
                )
            })
            .collect();
        feed(&cluster(i * 1000, &blocks), &mut ingest, &mut out);
        // A large Void between fragments (at level 1, after a known-size Cluster) is skipped,
        // never buffered.
        let mut void = id_bytes(VOID);
        void.extend(size_bytes(15_000));
        void.extend(vec![0; 15_000]);
        feed(&void, &mut ingest, &mut out);
    }
    ingest.finish(NOW, &mut out);
    assert_eq!(error_of(&out), None);
    assert_eq!(completed(&out).len(), 400);
    assert!(high_water <= 16 * 1024 + chunk, "high water {high_water}");
}

#[test]
fn hostile_declared_sizes_never_allocate() {
    // A Cluster child declaring 2^55 bytes: refused with 4001 at its header, nothing buffered.
    let mut bytes = cat(&[header(&[1]), el_unknown(CLUSTER), uint(TIMECODE, 0)]);
    bytes.extend(id_bytes(SIMPLE_BLOCK));
    bytes.extend([0x01, 0x80, 0, 0, 0, 0, 0, 0]);
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut out = Vec::new();
    ingest.push(&bytes, NOW, &mut out);
    assert_error(&out, 4001, "MAX_FRAGMENT_SIZE_REACHED");
    assert_eq!(ingest.buffered_bytes(), 0);
}
