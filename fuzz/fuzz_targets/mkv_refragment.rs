//! Fuzzes `kvs_putmedia::mkv::Refragmenter`: whatever the bytes and wherever the reads split
//! them, it must not panic, must give byte-identical output (and the same warnings and error)
//! as one push, and every fragment must respect the KVS rules it promises: size within the
//! limit, Cluster timecode strictly above the previous fragment's last frame.
//!
//! With flag bit 1, the re-fragmenter is also flushed (a source pause) at every cut point:
//! output then legitimately differs from one push, but the KVS rules must still hold.
//!
//! Input layout: byte 0 holds flags (bit 0: prepend a valid EBML header, Segment, Tracks and an
//! unknown-size Cluster so the fuzzer starts inside the block parser; bit 1: flush at the cut
//! points), byte 1 the number of cut
//! points (mod 16), then two bytes per cut point (little-endian, modulo the body length), then
//! the body.

#![no_main]

use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};
use libfuzzer_sys::fuzz_target;

/// EBML header (matroska), unknown-size Segment, Tracks (1: video, 2: audio), unknown-size
/// Cluster with Timecode 0.
const PREFIX: &[u8] = &[
    0x1A, 0x45, 0xDF, 0xA3, 0x8B, 0x42, 0x82, 0x88, b'm', b'a', b't', b'r', b'o', b's', b'k', b'a',
    0x18, 0x53, 0x80, 0x67, 0xFF, // Segment, unknown size
    0x16, 0x54, 0xAE, 0x6B, 0x90, // Tracks
    0xAE, 0x86, 0xD7, 0x81, 0x01, 0x83, 0x81, 0x01, // TrackEntry 1 video
    0xAE, 0x86, 0xD7, 0x81, 0x02, 0x83, 0x81, 0x02, // TrackEntry 2 audio
    0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00, // Cluster, unknown size, Timecode 0
];

#[derive(Debug, PartialEq)]
struct Outcome {
    bytes: Vec<u8>,
    warnings: Vec<String>,
    result: Result<(), String>,
}

fn run(body: &[u8], cuts: &[usize], flush: bool) -> Outcome {
    let config = RefragmentConfig::builder()
        .with_max_element_size(1 << 20)
        .with_max_fragment_bytes(1 << 20)
        .build()
        .expect("valid config");
    let max_bytes = config.max_fragment_bytes();
    let mut r = Refragmenter::new(config);
    let mut out = Outcome {
        bytes: Vec::new(),
        warnings: Vec::new(),
        result: Ok(()),
    };
    let mut last_frame: Option<u64> = None;
    let mut drain = |r: &mut Refragmenter, out: &mut Outcome| {
        while let Some(o) = r.next_output() {
            match o {
                Output::Header(h) => out.bytes.extend_from_slice(h.bytes()),
                Output::Fragment(f) => {
                    assert!(f.len() <= max_bytes, "fragment of {} bytes", f.len());
                    assert_eq!(f.chunks().iter().map(|c| c.len()).sum::<usize>(), f.len());
                    if let Some(l) = last_frame {
                        assert!(f.timecode() > l, "cluster {} not above {l}", f.timecode());
                    }
                    assert!(f.last_frame_timecode() >= f.timecode());
                    last_frame = Some(f.last_frame_timecode());
                    for c in f.chunks() {
                        out.bytes.extend_from_slice(c);
                    }
                }
                Output::Warning(w) => out.warnings.push(format!("{w:?}")),
                other => out.warnings.push(format!("{other:?}")),
            }
        }
    };
    let mut prev = 0;
    for &cut in cuts.iter().chain(&[body.len()]) {
        // `Bytes` from a Vec, without naming the bytes crate (not a dependency of this crate).
        let pushed = r.push(body[prev..cut].to_vec().into());
        prev = cut;
        drain(&mut r, &mut out);
        if let Err(e) = pushed {
            out.result = Err(e.to_string());
            return out;
        }
        if flush {
            let flushed = r.flush();
            drain(&mut r, &mut out);
            if let Err(e) = flushed {
                out.result = Err(e.to_string());
                return out;
            }
        }
    }
    out.result = r.finish().map_err(|e| e.to_string());
    drain(&mut r, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let ncuts = usize::from(data[1] % 16);
    let Some(rest) = data.get(2 + 2 * ncuts..) else {
        return;
    };
    let mut body = Vec::with_capacity(PREFIX.len() + rest.len());
    if flags & 1 == 1 {
        body.extend_from_slice(PREFIX);
    }
    body.extend_from_slice(rest);
    let mut cuts: Vec<usize> = data[2..2 + 2 * ncuts]
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    if flags & 2 == 2 {
        // The invariants are asserted inside `run`.
        run(&body, &cuts, true);
        return;
    }
    let whole = run(&body, &[], false);
    let split = run(&body, &cuts, false);
    if whole != split {
        let at = whole
            .bytes
            .iter()
            .zip(&split.bytes)
            .position(|(a, b)| a != b);
        panic!(
            "cuts {cuts:?} change the output (first differing byte {at:?}, {} vs {} bytes)\n whole: {:?} {:?}\n split: {:?} {:?}",
            whole.bytes.len(),
            split.bytes.len(),
            whole.result,
            whole.warnings,
            split.result,
            split.warnings
        );
    }
});
