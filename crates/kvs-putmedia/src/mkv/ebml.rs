//! EBML primitives: element ids, variable-size integers, and writers.

use bytes::{BufMut, BytesMut};

/// Matroska element ids used here (Matroska spec, RFC 9559).
pub(crate) mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const TAGS: u32 = 0x1254_C367;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;
    // Info
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const SEGMENT_UID: u32 = 0x73A4;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    // Tracks
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    // Cluster
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const BLOCK_DURATION: u32 = 0x9B;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
    // Tags
    pub const TAG: u32 = 0x7373;
    pub const TARGETS: u32 = 0x63C0;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
}

/// Whether `id` is a level-0 or level-1 element: its appearance closes an unknown-size Cluster.
pub(crate) fn is_top_level(id: u32) -> bool {
    matches!(
        id,
        id::EBML
            | id::SEGMENT
            | id::SEEK_HEAD
            | id::INFO
            | id::TRACKS
            | id::CLUSTER
            | id::CUES
            | id::TAGS
            | id::CHAPTERS
            | id::ATTACHMENTS
    )
}

/// Outcome of parsing an element header from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderParse {
    /// Need more bytes.
    Incomplete,
    /// Malformed id.
    BadId,
    /// Malformed size.
    BadSize,
    /// A header: id, data size (`None` = unknown), header length.
    Ok {
        id: u32,
        size: Option<u64>,
        header_len: usize,
    },
}

/// Parse an element header (id then size vint) from `b`.
pub(crate) fn parse_header(b: &[u8]) -> HeaderParse {
    let Some(&first) = b.first() else {
        return HeaderParse::Incomplete;
    };
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return HeaderParse::BadId;
    }
    if b.len() < id_len + 1 {
        return HeaderParse::Incomplete;
    }
    let mut id = 0u32;
    for &x in &b[..id_len] {
        id = (id << 8) | u32::from(x);
    }
    match parse_vint(&b[id_len..]) {
        VintParse::Incomplete => HeaderParse::Incomplete,
        VintParse::Bad => HeaderParse::BadSize,
        VintParse::Ok {
            value,
            len,
            all_ones,
        } => HeaderParse::Ok {
            id,
            size: if all_ones { None } else { Some(value) },
            header_len: id_len + len,
        },
    }
}

/// Outcome of parsing a variable-size integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VintParse {
    Incomplete,
    Bad,
    Ok {
        value: u64,
        len: usize,
        all_ones: bool,
    },
}

/// Parse a vint (length marker kept out of the value).
pub(crate) fn parse_vint(b: &[u8]) -> VintParse {
    let Some(&first) = b.first() else {
        return VintParse::Incomplete;
    };
    if first == 0 {
        return VintParse::Bad;
    }
    let len = first.leading_zeros() as usize + 1;
    if b.len() < len {
        return VintParse::Incomplete;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for &x in &b[1..len] {
        value = (value << 8) | u64::from(x);
    }
    let all_ones = value == (1u64 << (7 * len)) - 1;
    VintParse::Ok {
        value,
        len,
        all_ones,
    }
}

/// Big-endian unsigned integer element data (0 to 8 bytes).
pub(crate) fn read_uint(b: &[u8]) -> Option<u64> {
    if b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Iterate the children of a master element held contiguously: `(id, data, whole element)`.
/// Stops (returning `Err`) at the first malformed or overrunning child.
pub(crate) fn children(b: &[u8]) -> Children<'_> {
    Children { b, pos: 0 }
}

pub(crate) struct Children<'a> {
    b: &'a [u8],
    pos: usize,
}

/// A child parsed by [`Children`]: id, position of the data, position of the whole element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child {
    pub id: u32,
    pub start: usize,
    pub data_start: usize,
    pub end: usize,
}

impl Iterator for Children<'_> {
    type Item = Result<Child, u32>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.b.len() {
            return None;
        }
        let rest = &self.b[self.pos..];
        let r = match parse_header(rest) {
            HeaderParse::Ok {
                id,
                size: Some(size),
                header_len,
            } => {
                let data_start = self.pos + header_len;
                match usize::try_from(size)
                    .ok()
                    .and_then(|s| data_start.checked_add(s))
                {
                    Some(end) if end <= self.b.len() => Ok(Child {
                        id,
                        start: self.pos,
                        data_start,
                        end,
                    }),
                    _ => Err(id),
                }
            }
            HeaderParse::Ok { id, size: None, .. } => Err(id),
            _ => Err(0),
        };
        match r {
            Ok(c) => {
                self.pos = c.end;
                Some(Ok(c))
            }
            Err(id) => {
                self.pos = self.b.len();
                Some(Err(id))
            }
        }
    }
}

/// Write an element id.
pub(crate) fn put_id(out: &mut BytesMut, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8) as usize;
    out.put_slice(&bytes[skip.min(3)..]);
}

/// Write a size vint in its shortest form.
pub(crate) fn put_size(out: &mut BytesMut, size: u64) {
    let mut len = 1;
    // All ones is reserved for "unknown", hence the `- 1`.
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let v = size | (1u64 << (7 * len));
    out.put_slice(&v.to_be_bytes()[8 - len..]);
}

/// Write a whole unsigned-integer element in its shortest form.
pub(crate) fn put_uint_element(out: &mut BytesMut, id: u32, value: u64) {
    let n = (8 - (value.leading_zeros() / 8) as usize).max(1);
    put_id(out, id);
    put_size(out, n as u64);
    out.put_slice(&value.to_be_bytes()[8 - n..]);
}

/// Write a whole binary or string element.
pub(crate) fn put_bytes_element(out: &mut BytesMut, id: u32, data: &[u8]) {
    put_id(out, id);
    put_size(out, data.len() as u64);
    out.put_slice(data);
}

/// The 8-byte unknown size (docs/protocol.md §4.2: `01 FF FF FF FF FF FF FF`).
pub(crate) const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vint_round_trip_and_unknown() {
        for v in [0u64, 1, 126, 127, 128, 16382, 16383, 1 << 20, (1 << 56) - 2] {
            let mut b = BytesMut::new();
            put_size(&mut b, v);
            match parse_vint(&b) {
                VintParse::Ok {
                    value,
                    len,
                    all_ones,
                } => {
                    assert_eq!((value, len, all_ones), (v, b.len(), false), "{v}");
                }
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_vint(&[0xFF]),
            VintParse::Ok { all_ones: true, .. }
        ));
        assert!(matches!(
            parse_vint(&UNKNOWN_SIZE),
            VintParse::Ok {
                all_ones: true,
                len: 8,
                ..
            }
        ));
        assert_eq!(parse_vint(&[0x00, 1]), VintParse::Bad);
        assert_eq!(parse_vint(&[0x40]), VintParse::Incomplete);
    }

    #[test]
    fn header_parse() {
        assert_eq!(
            parse_header(&[
                0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]),
            HeaderParse::Ok {
                id: id::CLUSTER,
                size: None,
                header_len: 12
            }
        );
        assert_eq!(parse_header(&[0x1F, 0x43]), HeaderParse::Incomplete);
        assert_eq!(parse_header(&[0x08, 0x43]), HeaderParse::BadId);
        assert_eq!(
            parse_header(&[0xA3, 0x84]),
            HeaderParse::Ok {
                id: id::SIMPLE_BLOCK,
                size: Some(4),
                header_len: 2
            }
        );
        let mut b = BytesMut::new();
        put_uint_element(&mut b, id::TIMECODE_SCALE, 1_000_000);
        assert_eq!(&b[..], &[0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40]);
    }
}
