//! Errors of the MKV reader and re-fragmenter.

use std::fmt;

/// Why a byte stream is not acceptable Matroska. Carried by [`MkvError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// An element id whose first byte has no length marker in its top four bits.
    BadElementId,
    /// A size vint whose first byte is 0 (longer than 8 bytes).
    BadSize,
    /// An unknown (all ones) size on an element that must have a known size.
    UnknownSizeNotAllowed {
        /// The element id.
        id: u32,
    },
    /// A child element extends past the end of its parent.
    ChildOverrunsParent {
        /// The child's element id.
        id: u32,
    },
    /// The stream does not start with an EBML header.
    ExpectedEbmlHeader {
        /// The element id found instead.
        found: u32,
    },
    /// A DocType other than `matroska` or `webm`.
    UnsupportedDocType(String),
    /// A Cluster arrived before the Tracks element.
    ClusterBeforeTracks,
    /// A block arrived before its Cluster's Timecode element.
    MissingClusterTimecode,
    /// A SimpleBlock or Block too short or with a malformed header.
    BadBlock(&'static str),
    /// Lacing sizes that do not add up to the block size.
    BadLacing(&'static str),
    /// An integer element longer than 8 bytes or otherwise malformed.
    BadInteger {
        /// The element id.
        id: u32,
    },
    /// A TrackEntry without a valid TrackNumber, or two entries with the same number.
    BadTrackEntry(&'static str),
    /// A TimecodeScale of 0.
    ZeroTimecodeScale,
    /// A timecode outside the representable range.
    TimecodeOverflow,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadElementId => f.write_str("invalid EBML element id"),
            Self::BadSize => f.write_str("invalid EBML size (vint longer than 8 bytes)"),
            Self::UnknownSizeNotAllowed { id } => {
                write!(
                    f,
                    "element {id:#X} has unknown size, only Segment and Cluster may"
                )
            }
            Self::ChildOverrunsParent { id } => {
                write!(f, "element {id:#X} extends past the end of its parent")
            }
            Self::ExpectedEbmlHeader { found } => {
                write!(
                    f,
                    "expected an EBML header (0x1A45DFA3), found element {found:#X}"
                )
            }
            Self::UnsupportedDocType(d) => write!(f, "DocType {d:?} is neither matroska nor webm"),
            Self::ClusterBeforeTracks => f.write_str("Cluster before Tracks"),
            Self::MissingClusterTimecode => f.write_str("block before its Cluster's Timecode"),
            Self::BadBlock(why) => write!(f, "malformed block: {why}"),
            Self::BadLacing(why) => write!(f, "malformed lacing: {why}"),
            Self::BadInteger { id } => write!(f, "malformed integer in element {id:#X}"),
            Self::BadTrackEntry(why) => write!(f, "malformed TrackEntry: {why}"),
            Self::ZeroTimecodeScale => f.write_str("TimecodeScale is 0"),
            Self::TimecodeOverflow => f.write_str("timecode out of range"),
        }
    }
}

/// An MKV input the re-fragmenter cannot turn into KVS media.
///
/// Every variant carries `offset`, the byte offset in the input stream (counted over all pushed
/// chunks) of the element at fault. After an error the [`Refragmenter`](super::Refragmenter) is
/// poisoned: every later call returns the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MkvError {
    /// The bytes are not valid Matroska.
    #[error("invalid MKV at byte {offset}: {reason}")]
    Invalid {
        /// Input byte offset of the offending element.
        offset: u64,
        /// What is wrong.
        reason: InvalidReason,
    },
    /// An element that must be buffered whole declares more than the configured cap; a forged
    /// size must never make the reader allocate.
    #[error("element {id:#X} at byte {offset} declares {size} bytes, over the {limit}-byte limit")]
    ElementTooLarge {
        /// Input byte offset of the element.
        offset: u64,
        /// Element id.
        id: u32,
        /// Declared size of the element's data.
        size: u64,
        /// The configured `max_element_size`.
        limit: u64,
    },
    /// The input ended in the middle of an element.
    #[error("input truncated: element starting at byte {offset} is incomplete at end of input")]
    Truncated {
        /// Input byte offset of the incomplete element.
        offset: u64,
    },
    /// A second EBML header or Segment: one PutMedia request carries exactly one Segment
    /// (docs/protocol.md §4.1), and joining segments would need their tracks to match.
    #[error("a second EBML header or Segment at byte {offset}: one input must hold one Segment")]
    MultipleSegments {
        /// Input byte offset of the second header.
        offset: u64,
    },
    /// More tracks than KVS accepts (at most 3, docs/protocol.md §3, error 4012).
    #[error("Tracks at byte {offset} declares {count} tracks; KVS accepts at most {limit}")]
    TooManyTracks {
        /// Input byte offset of the Tracks element.
        offset: u64,
        /// Number of TrackEntry elements.
        count: usize,
        /// The KVS limit (3).
        limit: usize,
    },
    /// The input ended before any Tracks element.
    #[error("input ended at byte {offset} before a Tracks element")]
    NoTracks {
        /// Input length.
        offset: u64,
    },
    /// `push` after `finish`.
    #[error("push after finish")]
    Finished,
}

impl MkvError {
    /// The input byte offset the error refers to, when it has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Invalid { offset, .. }
            | Self::ElementTooLarge { offset, .. }
            | Self::Truncated { offset }
            | Self::MultipleSegments { offset }
            | Self::TooManyTracks { offset, .. }
            | Self::NoTracks { offset } => Some(*offset),
            Self::Finished => None,
        }
    }
}

/// A [`RefragmentConfig`](super::RefragmentConfig) that breaks a KVS limit or contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value over the KVS hard limit.
    #[error("{field} = {value} exceeds the KVS limit {limit}")]
    OverLimit {
        /// The builder field.
        field: &'static str,
        /// The value given, printed.
        value: String,
        /// The limit, printed.
        limit: String,
    },
    /// A zero or otherwise unusable value.
    #[error("{field} = {value} is invalid: {why}")]
    Invalid {
        /// The builder field.
        field: &'static str,
        /// The value given, printed.
        value: String,
        /// Why.
        why: &'static str,
    },
}
