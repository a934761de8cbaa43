//! Minimal EBML primitives: element ids, variable-size integers, a reader over a fully buffered
//! element body and a writer.
//!
//! Written from RFC 8794 (EBML) and the Matroska element table, on purpose without looking at
//! `kvs-putmedia`'s MKV code, so that a misreading in one of them shows up as a disagreement.

/// Matroska element ids (RFC 8794 section 17 and the Matroska element table), marker bits kept.
pub(crate) mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TAGS: u32 = 0x1254_C367;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const ATTACHMENTS: u32 = 0x1941_A469;

    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;

    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;

    pub const TAG: u32 = 0x7373;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;
    pub const TAG_BINARY: u32 = 0x4485;
    pub const TARGETS: u32 = 0x63C0;
    pub const TAG_TRACK_UID: u32 = 0x63C5;
    pub const TAG_EDITION_UID: u32 = 0x63C9;
    pub const TAG_CHAPTER_UID: u32 = 0x63C4;
    pub const TAG_ATTACHMENT_UID: u32 = 0x63C6;

    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const BLOCK_DURATION: u32 = 0x9B;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
}

/// Whether `element_id` is a top-level or Segment-level id: inside an unknown-size Cluster such an
/// id ends the Cluster (RFC 8794 section 6.2: an unknown-size element ends at the first element
/// that is not a valid child).
pub(crate) fn ends_unknown_size_cluster(element_id: u32) -> bool {
    matches!(
        element_id,
        id::EBML
            | id::SEGMENT
            | id::SEEK_HEAD
            | id::INFO
            | id::TRACKS
            | id::TAGS
            | id::CLUSTER
            | id::CUES
            | id::CHAPTERS
            | id::ATTACHMENTS
    )
}

/// Outcome of decoding something that may not be fully buffered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded<T> {
    /// More bytes are needed.
    Incomplete,
    /// The bytes can never decode; the reason says why.
    Invalid(&'static str),
    /// Decoded.
    Ok(T),
}

/// An element header: id, data size (`None` for the reserved unknown size) and header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub id: u32,
    pub size: Option<u64>,
    pub len: usize,
}

/// Reads an element id (RFC 8794 section 5: 1 to 4 bytes given `EBMLMaxIDLength` 4, marker kept).
fn read_id(buf: &[u8]) -> Decoded<(u32, usize)> {
    let Some(&first) = buf.first() else {
        return Decoded::Incomplete;
    };
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return Decoded::Invalid("element id longer than 4 bytes (EBMLMaxIDLength is 4)");
    }
    if buf.len() < len {
        return Decoded::Incomplete;
    }
    let mut value = 0u32;
    for &b in &buf[..len] {
        value = (value << 8) | u32::from(b);
    }
    // All value bits set is reserved (RFC 8794 section 5).
    let value_bits = 7 * len as u32;
    let mask = (1u32 << value_bits) - 1;
    if value & mask == mask {
        return Decoded::Invalid("reserved element id (all value bits set)");
    }
    Decoded::Ok((value, len))
}

/// Reads a variable-size integer (RFC 8794 section 4), returning the value without its marker,
/// its length and whether all value bits were set (the "unknown size" pattern for sizes).
pub(crate) fn read_vint(buf: &[u8]) -> Decoded<(u64, usize, bool)> {
    let Some(&first) = buf.first() else {
        return Decoded::Incomplete;
    };
    if first == 0 {
        return Decoded::Invalid("variable-size integer longer than 8 bytes");
    }
    let len = first.leading_zeros() as usize + 1;
    if buf.len() < len {
        return Decoded::Incomplete;
    }
    let mut value = u64::from(first) & (0xFFu64 >> len);
    for &b in &buf[1..len] {
        value = (value << 8) | u64::from(b);
    }
    let all_ones = value == (1u64 << (7 * len)) - 1;
    Decoded::Ok((value, len, all_ones))
}

/// Reads an element header. Unknown sizes are returned as `size: None`; the caller decides
/// whether the element may have one.
pub(crate) fn read_header(buf: &[u8]) -> Decoded<Header> {
    let (id, id_len) = match read_id(buf) {
        Decoded::Ok(v) => v,
        Decoded::Incomplete => return Decoded::Incomplete,
        Decoded::Invalid(r) => return Decoded::Invalid(r),
    };
    match read_vint(&buf[id_len..]) {
        Decoded::Ok((size, size_len, unknown)) => Decoded::Ok(Header {
            id,
            size: (!unknown).then_some(size),
            len: id_len + size_len,
        }),
        Decoded::Incomplete => Decoded::Incomplete,
        Decoded::Invalid(r) => Decoded::Invalid(r),
    }
}

/// One child of a fully buffered master element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child<'a> {
    pub id: u32,
    /// The element's data.
    pub body: &'a [u8],
    /// The whole element, header included, exactly as received.
    pub raw: &'a [u8],
}

/// Splits a fully buffered master element body into its children. Fails on truncation, unknown
/// sizes (not allowed below level 1 here) and bad vints.
pub(crate) fn children(mut body: &[u8]) -> Result<Vec<Child<'_>>, &'static str> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let header = match read_header(body) {
            Decoded::Ok(h) => h,
            Decoded::Incomplete => return Err("truncated child element header"),
            Decoded::Invalid(r) => return Err(r),
        };
        let Some(size) = header.size else {
            return Err("unknown size on an element that must have a known size");
        };
        let end = u64::try_from(header.len)
            .ok()
            .and_then(|l| l.checked_add(size))
            .filter(|&end| end <= body.len() as u64)
            .ok_or("child element overruns its parent")? as usize;
        out.push(Child {
            id: header.id,
            body: &body[header.len..end],
            raw: &body[..end],
        });
        body = &body[end..];
    }
    Ok(out)
}

/// Decodes an unsigned integer element (RFC 8794 section 7.2: 0 to 8 bytes, big-endian).
pub(crate) fn read_uint(body: &[u8]) -> Result<u64, &'static str> {
    if body.len() > 8 {
        return Err("unsigned integer element longer than 8 bytes");
    }
    Ok(body.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Decodes a string element: trailing NUL padding is allowed (RFC 8794 section 7.4).
pub(crate) fn read_string(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Appends the shortest encoding of an element id (ids are stored with their marker bits).
pub(crate) fn write_id(out: &mut Vec<u8>, element_id: u32) {
    let bytes = element_id.to_be_bytes();
    let skip = (element_id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&bytes[skip.min(3)..]);
}

/// Appends the shortest variable-size integer holding `size` (never the all-ones pattern,
/// which means "unknown").
pub(crate) fn write_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1usize;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Appends a whole element.
pub(crate) fn write_element(out: &mut Vec<u8>, element_id: u32, body: &[u8]) {
    write_id(out, element_id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vint_round_trip_at_every_length_boundary() {
        for size in [
            0u64,
            1,
            126,
            127,
            128,
            16_382,
            16_383,
            1 << 20,
            (1 << 56) - 2,
        ] {
            let mut out = Vec::new();
            write_size(&mut out, size);
            match read_vint(&out) {
                Decoded::Ok((v, len, unknown)) => {
                    assert_eq!((v, len, unknown), (size, out.len(), false), "size {size}");
                }
                other => panic!("size {size}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_size_is_recognised_in_one_and_eight_byte_forms() {
        assert_eq!(read_vint(&[0xFF]), Decoded::Ok((127, 1, true)));
        let eight = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(read_vint(&eight), Decoded::Ok((_, 8, true))));
    }

    #[test]
    fn bad_vints_and_ids_are_invalid_not_incomplete() {
        assert!(matches!(read_vint(&[0x00, 1, 2]), Decoded::Invalid(_)));
        assert!(matches!(
            read_header(&[0x08, 0, 0, 0, 0]),
            Decoded::Invalid(_)
        ));
        assert!(matches!(read_header(&[0xFF, 0x81]), Decoded::Invalid(_)));
        assert_eq!(read_header(&[0x1A, 0x45]), Decoded::Incomplete);
    }

    #[test]
    fn ids_write_in_their_natural_length() {
        let mut out = Vec::new();
        write_id(&mut out, id::CLUSTER);
        write_id(&mut out, id::TIMECODE);
        write_id(&mut out, id::TAG_NAME);
        assert_eq!(out, [0x1F, 0x43, 0xB6, 0x75, 0xE7, 0x45, 0xA3]);
    }
}
