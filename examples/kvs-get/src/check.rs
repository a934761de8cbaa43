//! The read-back check and the little Matroska reading it needs: where each fragment's
//! document starts, and whether its first block is a keyframe (SimpleBlock flag 0x80, or a
//! BlockGroup without ReferenceBlock; Matroska element ids from RFC 9559).

use anyhow::{Result, bail};
use serde::Serialize;

/// One listed fragment.
#[derive(Debug, Clone, Serialize)]
pub struct FragmentInfo {
    /// Fragment number.
    pub number: String,
    /// Producer timestamp, epoch ms.
    pub producer_ms: i64,
    /// Server timestamp, epoch ms.
    pub server_ms: i64,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Whether the first frame is a keyframe (`None`: not read).
    pub keyframe_first: Option<bool>,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The fragment does not start with a keyframe: players cannot start there.
    NotKeyframeFirst { fragment: String },
    /// Media missing between two fragments.
    Gap {
        after: String,
        before: String,
        ms: i64,
    },
    /// Two fragments cover the same time.
    Overlap {
        after: String,
        before: String,
        ms: i64,
    },
}

/// The check's result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no problem was found.
    pub ok: bool,
    /// The stream.
    pub stream: String,
    /// The file written.
    pub file: String,
    /// Fragments saved.
    pub fragments: usize,
    /// Media bytes fetched.
    pub bytes: u64,
    /// First producer timestamp to the end of the last fragment, ms.
    pub span_ms: i64,
    /// Sum of the fragments' durations, ms.
    pub media_ms: i64,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

impl Report {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} fragments, {:.1} s of media over {:.1} s, {} problem(s) -> {}",
            self.stream,
            self.fragments,
            self.media_ms as f64 / 1000.0,
            self.span_ms as f64 / 1000.0,
            self.problems.len(),
            self.file
        )
    }
}

/// Checks fragments sorted by producer timestamp.
pub fn check(fragments: &[FragmentInfo], gap_tolerance_ms: u64) -> Report {
    let mut problems = Vec::new();
    for f in fragments {
        if f.keyframe_first == Some(false) {
            problems.push(Problem::NotKeyframeFirst {
                fragment: f.number.clone(),
            });
        }
    }
    for w in fragments.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let delta = b.producer_ms - (a.producer_ms + a.duration_ms);
        if delta > gap_tolerance_ms as i64 {
            problems.push(Problem::Gap {
                after: a.number.clone(),
                before: b.number.clone(),
                ms: delta,
            });
        } else if delta < 0 {
            problems.push(Problem::Overlap {
                after: a.number.clone(),
                before: b.number.clone(),
                ms: -delta,
            });
        }
    }
    let span_ms = match (fragments.first(), fragments.last()) {
        (Some(a), Some(b)) => b.producer_ms + b.duration_ms - a.producer_ms,
        _ => 0,
    };
    Report {
        ok: problems.is_empty(),
        stream: String::new(),
        file: String::new(),
        fragments: fragments.len(),
        bytes: 0,
        span_ms,
        media_ms: fragments.iter().map(|f| f.duration_ms).sum(),
        problems,
    }
}

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const CLUSTER: u32 = 0x1F43_B675;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const REFERENCE_BLOCK: u32 = 0xFB;

/// An element header at `at`: (id, header length, body size; `None` for unknown size).
fn header(data: &[u8], at: usize) -> Result<(u32, usize, Option<u64>)> {
    let vint = |at: usize, keep_marker: bool| -> Result<(u64, usize)> {
        let first = *data
            .get(at)
            .ok_or_else(|| anyhow::anyhow!("truncated at {at}"))?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 || at + len > data.len() {
            bail!("bad element header at byte {at}");
        }
        // An 8-byte vint keeps no bits of its first byte (and `0xFF >> 8` would overflow).
        let mask = 0xFFu8.checked_shr(len as u32).unwrap_or(0);
        let mut v = u64::from(if keep_marker { first } else { first & mask });
        for b in &data[at + 1..at + len] {
            v = (v << 8) | u64::from(*b);
        }
        Ok((v, len))
    };
    let (id, id_len) = vint(at, true)?;
    if id_len > 4 {
        bail!("element id longer than 4 bytes at byte {at}");
    }
    let (size, size_len) = vint(at + id_len, false)?;
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    Ok((id as u32, id_len + size_len, (!unknown).then_some(size)))
}

/// Splits a GetMediaForFragmentList body into its Matroska documents (each starts with an
/// EBML header; a Segment of unknown size runs to the next EBML header).
pub fn split_documents(data: &[u8]) -> Result<Vec<&[u8]>> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (id, hlen, size) = header(data, at)?;
        if id == EBML {
            starts.push(at);
        } else if starts.is_empty() {
            bail!("media does not start with an EBML header (byte {at})");
        }
        match (id, size) {
            // Step into unknown-size Segments and Clusters: their end is the next top element.
            (SEGMENT | CLUSTER, None) => at += hlen,
            (_, Some(s)) => {
                at = at
                    .checked_add(hlen + s as usize)
                    .filter(|e| *e <= data.len())
                    .ok_or_else(|| anyhow::anyhow!("element at byte {at} runs past the end"))?;
            }
            (_, None) => bail!("unknown size on element {id:#x} at byte {at}"),
        }
        // Inside a Segment, children follow; an EBML id ends the document.
    }
    let mut docs = Vec::new();
    for (k, s) in starts.iter().enumerate() {
        docs.push(&data[*s..starts.get(k + 1).copied().unwrap_or(data.len())]);
    }
    Ok(docs)
}

/// Whether the first block of the first Cluster in `doc` is a keyframe.
pub fn first_block_is_keyframe(doc: &[u8]) -> Result<bool> {
    let mut at = 0;
    while at < doc.len() {
        let (id, hlen, size) = header(doc, at)?;
        let body = at + hlen;
        match id {
            SEGMENT | CLUSTER => {
                at = body;
                continue;
            }
            SIMPLE_BLOCK => {
                // Track number (a vint), a 2-byte relative timecode, then the flags byte.
                let flags = *doc
                    .get(body + block_track_len(doc, body)? + 2)
                    .ok_or_else(|| anyhow::anyhow!("SimpleBlock at byte {at} too short"))?;
                return Ok(flags & 0x80 != 0);
            }
            BLOCK_GROUP => {
                let end = body
                    + size.ok_or_else(|| anyhow::anyhow!("BlockGroup of unknown size"))? as usize;
                let mut p = body;
                let mut has_block = false;
                while p < end.min(doc.len()) {
                    let (cid, chlen, csize) = header(doc, p)?;
                    has_block |= cid == BLOCK;
                    if cid == REFERENCE_BLOCK {
                        return Ok(false);
                    }
                    p += chlen + csize.unwrap_or(0) as usize;
                }
                if !has_block {
                    bail!("BlockGroup at byte {at} without a Block");
                }
                return Ok(true);
            }
            _ => {}
        }
        at = body
            + size.ok_or_else(|| anyhow::anyhow!("unknown size on element {id:#x} at byte {at}"))?
                as usize;
    }
    bail!("no block in the fragment")
}

fn block_track_len(doc: &[u8], at: usize) -> Result<usize> {
    let first = *doc
        .get(at)
        .ok_or_else(|| anyhow::anyhow!("block truncated at {at}"))?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        bail!("bad track number in block at byte {at}");
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn el(id: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.push(0x80 | body.len() as u8);
        v.extend_from_slice(body);
        v
    }

    fn doc(flags: u8) -> Vec<u8> {
        let block = el(&[0xA3], &[0x81, 0, 0, flags, 1, 2, 3]);
        let cluster = el(
            &[0x1F, 0x43, 0xB6, 0x75],
            &[el(&[0xE7], &[0]), block].concat(),
        );
        [
            el(&[0x1A, 0x45, 0xDF, 0xA3], &el(&[0x42, 0x82], b"matroska")),
            el(&[0x18, 0x53, 0x80, 0x67], &cluster),
        ]
        .concat()
    }

    fn frag(n: &str, at: i64, dur: i64) -> FragmentInfo {
        FragmentInfo {
            number: n.into(),
            producer_ms: at,
            server_ms: at,
            duration_ms: dur,
            keyframe_first: Some(true),
        }
    }

    #[test]
    fn documents_and_keyframes() {
        let data = [doc(0x80), doc(0x00)].concat();
        let docs = split_documents(&data).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(first_block_is_keyframe(docs[0]).unwrap());
        assert!(!first_block_is_keyframe(docs[1]).unwrap());
        assert!(split_documents(b"\xA3\x80").is_err());
    }

    #[test]
    fn eight_byte_sizes_and_unknown_sizes() {
        let known = [
            0x1A, 0x45, 0xDF, 0xA3, 0x01, 0, 0, 0, 0, 0, 0, 0x02, 0xEC, 0x80,
        ];
        assert_eq!(header(&known, 0).unwrap(), (EBML, 12, Some(2)));
        let unknown = [
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(header(&unknown, 0).unwrap(), (SEGMENT, 12, None));
        assert!(header(&[0x00, 0x80], 0).is_err());
    }

    #[test]
    fn gaps_and_overlaps() {
        let r = check(
            &[
                frag("a", 0, 1000),
                frag("b", 1000, 1000),
                frag("c", 2050, 1000),
            ],
            100,
        );
        assert!(r.ok, "{:?}", r.problems);
        assert_eq!((r.span_ms, r.media_ms), (3050, 3000));
        let r = check(
            &[
                frag("a", 0, 1000),
                frag("b", 1500, 1000),
                frag("c", 2400, 100),
            ],
            100,
        );
        assert_eq!(
            r.problems,
            vec![
                Problem::Gap {
                    after: "a".into(),
                    before: "b".into(),
                    ms: 500
                },
                Problem::Overlap {
                    after: "b".into(),
                    before: "c".into(),
                    ms: 100
                },
            ]
        );
        let mut k = frag("k", 0, 1);
        k.keyframe_first = Some(false);
        assert!(!check(&[k], 100).ok);
    }

    proptest! {
        #[test]
        fn readers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = split_documents(&data);
            let _ = first_block_is_keyframe(&data);
        }

        #[test]
        fn split_finds_every_document(flags in proptest::collection::vec(any::<bool>(), 1..20)) {
            let docs: Vec<Vec<u8>> = flags.iter().map(|k| doc(if *k { 0x80 } else { 0 })).collect();
            let data = docs.concat();
            let got = split_documents(&data).unwrap();
            prop_assert_eq!(got.len(), flags.len());
            for (d, k) in got.iter().zip(&flags) {
                prop_assert_eq!(first_block_is_keyframe(d).unwrap(), *k);
            }
        }
    }
}
