//! ISO BMFF boxes (ISO/IEC 14496-12): just enough to split ffmpeg's fragmented MP4 into the
//! initialization segment (`ftyp` + `moov`) and the media part (`moof` + `mdat` pairs), to read
//! each track's timescale, and to shift each `traf`'s `tfdt` (baseMediaDecodeTime, §8.8.12).
//!
//! Every reader checks sizes against its parent and fails with [`Mp4Error`] naming the box and
//! the offset, never panicking on hostile input (the fuzz target `mp4_boxes` checks that).

use std::ops::Range;

/// What was wrong with an MP4 byte string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mp4Error {
    /// A box header or body runs past its parent's end.
    #[error("mp4 box at offset {offset}: {reason}")]
    Malformed {
        /// Byte offset of the box in the input.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A box this code needs is missing.
    #[error("mp4: no {what} box")]
    Missing {
        /// The box type, e.g. `moov`.
        what: &'static str,
    },
    /// A shifted `tfdt` does not fit its field.
    #[error("mp4 tfdt at offset {offset}: shifted time {value} does not fit a version 0 box")]
    TfdtOverflow {
        /// Byte offset of the `tfdt` box.
        offset: usize,
        /// The time that did not fit.
        value: u64,
    },
}

/// One box: its four-character type and where it and its payload lie in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxRef {
    /// The type, e.g. `*b"moof"`.
    pub kind: [u8; 4],
    /// The whole box (header included).
    pub range: Range<usize>,
    /// The payload (after the 8- or 16-byte header).
    pub body: Range<usize>,
}

/// The boxes directly inside `data[within]`, in order.
pub fn children(data: &[u8], within: Range<usize>) -> Result<Vec<BoxRef>, Mp4Error> {
    let mut out = Vec::new();
    let mut at = within.start;
    let end = within.end.min(data.len());
    while at < end {
        let bad = |reason| Mp4Error::Malformed { offset: at, reason };
        if end - at < 8 {
            return Err(bad("box header truncated"));
        }
        let size32 = u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().expect("4 bytes");
        let (size, header) = match size32 {
            0 => ((end - at) as u64, 8),
            1 => {
                if end - at < 16 {
                    return Err(bad("largesize header truncated"));
                }
                (
                    u64::from_be_bytes(data[at + 8..at + 16].try_into().expect("8 bytes")),
                    16,
                )
            }
            n => (u64::from(n), 8),
        };
        if size < header as u64 {
            return Err(bad("box size smaller than its header"));
        }
        if size > (end - at) as u64 {
            return Err(bad("box runs past its parent"));
        }
        let size = size as usize;
        out.push(BoxRef {
            kind,
            range: at..at + size,
            body: at + header..at + size,
        });
        at += size;
    }
    Ok(out)
}

fn find<'a>(boxes: &'a [BoxRef], kind: &[u8; 4]) -> Option<&'a BoxRef> {
    boxes.iter().find(|b| &b.kind == kind)
}

/// ffmpeg's fragmented MP4 split in two: the initialization segment (every box before the
/// first `moof`: `ftyp`, `moov`) and the media segment (the first `moof` to the end).
pub fn split_init(data: &[u8]) -> Result<(Range<usize>, Range<usize>), Mp4Error> {
    let top = children(data, 0..data.len())?;
    find(&top, b"moov").ok_or(Mp4Error::Missing { what: "moov" })?;
    let first_moof = find(&top, b"moof")
        .map(|b| b.range.start)
        .unwrap_or(data.len());
    Ok((0..first_moof, first_moof..data.len()))
}

/// `(track_ID, timescale)` of every `trak` in an initialization segment.
pub fn track_timescales(init: &[u8]) -> Result<Vec<(u32, u32)>, Mp4Error> {
    let top = children(init, 0..init.len())?;
    let moov = find(&top, b"moov").ok_or(Mp4Error::Missing { what: "moov" })?;
    let mut out = Vec::new();
    for trak in children(init, moov.body.clone())?
        .iter()
        .filter(|b| &b.kind == b"trak")
    {
        let inner = children(init, trak.body.clone())?;
        let tkhd = find(&inner, b"tkhd").ok_or(Mp4Error::Missing { what: "tkhd" })?;
        let mdia = find(&inner, b"mdia").ok_or(Mp4Error::Missing { what: "mdia" })?;
        let mdhd = find(&children(init, mdia.body.clone())?, b"mdhd")
            .cloned()
            .ok_or(Mp4Error::Missing { what: "mdhd" })?;
        // tkhd: version(1) flags(3) then v1: ctime(8) mtime(8) track_ID; v0: 4 + 4.
        let track_id = full_box_field(init, &tkhd.body, 8, 16)?;
        // mdhd: v1: ctime(8) mtime(8) timescale; v0: 4 + 4.
        let timescale = full_box_field(init, &mdhd.body, 8, 16)?;
        out.push((track_id, timescale));
    }
    Ok(out)
}

/// The u32 after a full box header at `v0_offset`/`v1_offset` bytes past version+flags.
fn full_box_field(
    data: &[u8],
    body: &Range<usize>,
    v0_offset: usize,
    v1_offset: usize,
) -> Result<u32, Mp4Error> {
    let b = &data[body.clone()];
    let bad = Mp4Error::Malformed {
        offset: body.start,
        reason: "full box too short",
    };
    let version = *b.first().ok_or(bad.clone())?;
    let at = 4 + if version == 1 { v1_offset } else { v0_offset };
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")))
        .ok_or(bad)
}

/// Adds `shift(track_ID)` to the baseMediaDecodeTime of every `traf` in a media segment
/// (`moof`/`mdat` pairs), in place. A track the closure does not know (`None`) is an error
/// the caller chooses; here it leaves that `tfdt` alone.
pub fn shift_tfdt(data: &mut [u8], shift: impl Fn(u32) -> Option<u64>) -> Result<usize, Mp4Error> {
    let mut shifted = 0;
    let top = children(data, 0..data.len())?;
    for moof in top.iter().filter(|b| &b.kind == b"moof") {
        for traf in children(data, moof.body.clone())?
            .into_iter()
            .filter(|b| &b.kind == b"traf")
        {
            let inner = children(data, traf.body.clone())?;
            let tfhd = find(&inner, b"tfhd").ok_or(Mp4Error::Missing { what: "tfhd" })?;
            let track_id = data
                .get(tfhd.body.start + 4..tfhd.body.start + 8)
                .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")))
                .ok_or(Mp4Error::Malformed {
                    offset: tfhd.range.start,
                    reason: "tfhd too short",
                })?;
            let Some(tfdt) = find(&inner, b"tfdt").cloned() else {
                continue;
            };
            let Some(by) = shift(track_id) else {
                continue;
            };
            let b = tfdt.body.start;
            let short = Mp4Error::Malformed {
                offset: tfdt.range.start,
                reason: "tfdt too short",
            };
            match data.get(b).copied() {
                Some(1) if tfdt.body.len() >= 12 => {
                    let v = u64::from_be_bytes(data[b + 4..b + 12].try_into().expect("8 bytes"));
                    data[b + 4..b + 12].copy_from_slice(&v.wrapping_add(by).to_be_bytes());
                }
                Some(0) if tfdt.body.len() >= 8 => {
                    let v = u32::from_be_bytes(data[b + 4..b + 8].try_into().expect("4 bytes"));
                    let n = u64::from(v) + by;
                    let n32 = u32::try_from(n).map_err(|_| Mp4Error::TfdtOverflow {
                        offset: tfdt.range.start,
                        value: n,
                    })?;
                    data[b + 4..b + 8].copy_from_slice(&n32.to_be_bytes());
                }
                _ => return Err(short),
            }
            shifted += 1;
        }
    }
    Ok(shifted)
}

/// The baseMediaDecodeTime of each `traf`, as `(track_ID, time)`, in order (for tests and
/// for checking continuity).
pub fn tfdts(data: &[u8]) -> Result<Vec<(u32, u64)>, Mp4Error> {
    let mut out = Vec::new();
    for moof in children(data, 0..data.len())?
        .iter()
        .filter(|b| &b.kind == b"moof")
    {
        for traf in children(data, moof.body.clone())?
            .into_iter()
            .filter(|b| &b.kind == b"traf")
        {
            let inner = children(data, traf.body.clone())?;
            let (Some(tfhd), Some(tfdt)) = (find(&inner, b"tfhd"), find(&inner, b"tfdt")) else {
                continue;
            };
            let id = data
                .get(tfhd.body.start + 4..tfhd.body.start + 8)
                .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")));
            let b = tfdt.body.start;
            let t = match data.get(b) {
                Some(1) => data
                    .get(b + 4..b + 12)
                    .map(|x| u64::from_be_bytes(x.try_into().expect("8 bytes"))),
                Some(0) => data
                    .get(b + 4..b + 8)
                    .map(|x| u64::from(u32::from_be_bytes(x.try_into().expect("4 bytes")))),
                _ => None,
            };
            if let (Some(id), Some(t)) = (id, t) {
                out.push((id, t));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![version, 0, 0, 0];
        v.extend_from_slice(rest);
        v
    }

    fn segment(track: u32, tfdt_v1: u64) -> Vec<u8> {
        let tfhd = bx(b"tfhd", &full(0, &track.to_be_bytes()));
        let tfdt = bx(b"tfdt", &full(1, &tfdt_v1.to_be_bytes()));
        let traf = bx(b"traf", &[tfhd, tfdt].concat());
        let moof = bx(
            b"moof",
            &[bx(b"mfhd", &full(0, &1u32.to_be_bytes())), traf].concat(),
        );
        [moof, bx(b"mdat", b"frames")].concat()
    }

    #[test]
    fn shifts_every_traf_and_reads_back() {
        let mut seg = [segment(1, 100), segment(2, 7)].concat();
        let n = shift_tfdt(&mut seg, |id| Some(u64::from(id) * 1000)).unwrap();
        assert_eq!(n, 2);
        assert_eq!(tfdts(&seg).unwrap(), vec![(1, 1100), (2, 2007)]);
    }

    #[test]
    fn version0_overflow_is_an_error() {
        let tfhd = bx(b"tfhd", &full(0, &1u32.to_be_bytes()));
        let tfdt = bx(b"tfdt", &full(0, &u32::MAX.to_be_bytes()));
        let mut seg = bx(b"moof", &bx(b"traf", &[tfhd, tfdt].concat()));
        assert!(matches!(
            shift_tfdt(&mut seg, |_| Some(1)),
            Err(Mp4Error::TfdtOverflow { .. })
        ));
    }

    #[test]
    fn split_and_timescales() {
        let tkhd = bx(
            b"tkhd",
            &full(0, &[[0u8; 8].as_slice(), &3u32.to_be_bytes()].concat()),
        );
        let mdhd = bx(
            b"mdhd",
            &full(0, &[[0u8; 8].as_slice(), &16000u32.to_be_bytes()].concat()),
        );
        let trak = bx(b"trak", &[tkhd, bx(b"mdia", &mdhd)].concat());
        let init = [bx(b"ftyp", b"isom"), bx(b"moov", &trak)].concat();
        let data = [init.clone(), segment(3, 0)].concat();
        let (i, m) = split_init(&data).unwrap();
        assert_eq!(&data[i], &init[..]);
        assert_eq!(m.end, data.len());
        assert_eq!(track_timescales(&init).unwrap(), vec![(3, 16000)]);
    }

    #[test]
    fn malformed_boxes_name_the_offset() {
        let mut data = bx(b"moof", b"");
        data.extend_from_slice(&[0, 0, 0, 99, b'm', b'd', b'a', b't']);
        assert_eq!(
            children(&data, 0..data.len()),
            Err(Mp4Error::Malformed {
                offset: 8,
                reason: "box runs past its parent"
            })
        );
        assert!(split_init(b"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_boxes_tile_the_input(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(boxes) = children(&data, 0..data.len()) {
                let mut at = 0;
                for b in boxes {
                    prop_assert_eq!(b.range.start, at);
                    at = b.range.end;
                }
                prop_assert_eq!(at, data.len());
            }
            let mut copy = data.clone();
            let _ = shift_tfdt(&mut copy, |_| Some(5));
            let _ = track_timescales(&data);
            let _ = tfdts(&data);
        }

        #[test]
        fn shift_round_trips(t in 0u64..u64::MAX / 2, by in 0u64..u64::MAX / 2, track in 1u32..10) {
            let mut seg = segment(track, t);
            shift_tfdt(&mut seg, |_| Some(by)).unwrap();
            prop_assert_eq!(tfdts(&seg).unwrap(), vec![(track, t + by)]);
        }
    }
}
