//! Fuzzes `kvs_emulator::media::Ingest`, the emulator's own MKV validator: whatever the bytes and
//! wherever the reads split them, it must not panic, must give the same events as one push, must
//! report at most one error and nothing after it, and every completed fragment must round-trip:
//! `fragment_to_mkv(header, cluster)` ingested afresh gives that same fragment back.
//!
//! Input layout: byte 0 holds flags (bit 0: prepend a valid EBML header, Segment, Tracks and an
//! unknown-size Cluster so the fuzzer starts inside the Cluster parser), byte 1 the number of cut
//! points (mod 16), then two bytes per cut point (little-endian, modulo the body length), then
//! the body.

#![no_main]

use kvs_emulator::media::{Ingest, IngestConfig, IngestEvent, fragment_to_mkv};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;

/// EBML header (matroska), unknown-size Segment, Tracks (1: video), unknown-size Cluster with
/// Timecode 0.
const PREFIX: &[u8] = &[
    0x1A, 0x45, 0xDF, 0xA3, 0x8B, 0x42, 0x82, 0x88, b'm', b'a', b't', b'r', b'o', b's', b'k', b'a',
    0x18, 0x53, 0x80, 0x67, 0xFF, // Segment, unknown size
    0x16, 0x54, 0xAE, 0x6B, 0x88, // Tracks
    0xAE, 0x86, 0xD7, 0x81, 0x01, 0x83, 0x81, 0x01, // TrackEntry 1 video
    0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00, // Cluster, unknown size, Timecode 0
];

fn config() -> IngestConfig {
    // Small caps so the fuzzer reaches them.
    IngestConfig {
        max_fragment_bytes: 64 * 1024,
        max_element_size: 4096,
        ..IngestConfig::default()
    }
}

fn run(chunks: &[&[u8]]) -> (Vec<IngestEvent>, Option<Vec<u8>>) {
    let mut ingest = Ingest::new(config());
    let mut out = Vec::new();
    for chunk in chunks {
        ingest.push(chunk, NOW, &mut out);
    }
    ingest.finish(NOW, &mut out);
    (out, ingest.header().map(<[u8]>::to_vec))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 16);
    if rest.len() < ncuts * 2 {
        return;
    }
    let (cut_bytes, body) = rest.split_at(ncuts * 2);
    let mut bytes = Vec::with_capacity(PREFIX.len() + body.len());
    if flags & 1 != 0 {
        bytes.extend_from_slice(PREFIX);
    }
    bytes.extend_from_slice(body);

    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts {
        chunks.push(&bytes[start..c]);
        start = c;
    }
    chunks.push(&bytes[start..]);

    let (whole, header) = run(&[&bytes]);
    let (split, _) = run(&chunks);
    assert_eq!(whole, split, "chunking changed the events");

    let errors = whole
        .iter()
        .filter(|e| matches!(e, IngestEvent::Error { .. }))
        .count();
    assert!(errors <= 1);
    if errors == 1 {
        assert!(
            matches!(whole.last(), Some(IngestEvent::Error { .. })),
            "events after an error"
        );
    }
    // An error naming a fragment comes after that fragment's BUFFERING.
    if let Some(IngestEvent::Error {
        timecode: Some(t), ..
    }) = whole.last()
    {
        assert!(whole.contains(&IngestEvent::FragmentStarted { timecode: *t }));
    }

    for event in &whole {
        if let IngestEvent::FragmentCompleted(frag) = event {
            assert!(frag.size as u64 <= config().max_fragment_bytes);
            let header = header
                .as_deref()
                .expect("a fragment completed without a header");
            let mkv = fragment_to_mkv(header, &frag.cluster);
            let (again, _) = run(&[&mkv]);
            let round_trip: Vec<_> = again
                .iter()
                .filter_map(|e| match e {
                    IngestEvent::FragmentCompleted(f) => Some(f),
                    _ => None,
                })
                .collect();
            assert_eq!(
                round_trip.len(),
                1,
                "fragment did not round-trip: {again:?}"
            );
            assert_eq!(round_trip[0].cluster, frag.cluster);
            assert_eq!(round_trip[0].frames_per_track, frag.frames_per_track);
        }
    }
});
