//! What the re-fragmenter emits: one [`Header`], then [`Fragment`]s, with [`Warning`]s between.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// One item out of [`Refragmenter::next_output`](super::Refragmenter::next_output).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output {
    /// The stream header; emitted once, before the first fragment.
    Header(Header),
    /// One KVS fragment: one unknown-size Cluster.
    Fragment(Fragment),
    /// Something the input forced the re-fragmenter to do that KVS or a player may not like.
    Warning(Warning),
}

/// Kind of a track, from TrackType (Matroska element 0x83).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrackKind {
    /// TrackType 1.
    Video,
    /// TrackType 2.
    Audio,
    /// Any other TrackType (subtitles, metadata, ...), with its value.
    Other(u64),
}

/// A declared track (a TrackEntry of the input, passed through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub(crate) number: u64,
    pub(crate) kind: TrackKind,
    pub(crate) codec_id: String,
    pub(crate) default_duration_ns: Option<u64>,
}

impl Track {
    /// TrackNumber (0xD7), the number blocks refer to.
    pub fn number(&self) -> u64 {
        self.number
    }
    /// Video, audio or other.
    pub fn kind(&self) -> TrackKind {
        self.kind
    }
    /// CodecID (0x86), e.g. `V_MPEG4/ISO/AVC`, `A_AAC`.
    pub fn codec_id(&self) -> &str {
        &self.codec_id
    }
    /// DefaultDuration (0x23E383) in nanoseconds, when declared.
    pub fn default_duration(&self) -> Option<Duration> {
        self.default_duration_ns.map(Duration::from_nanos)
    }
}

/// The MKV header to send at the start of every PutMedia request (docs/protocol.md §4.1): EBML header
/// (DocType matroska), unknown-size Segment, Info (TimecodeScale 1 ms, SegmentUID, MuxingApp,
/// WritingApp) and Tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub(crate) bytes: Bytes,
    pub(crate) tracks: Vec<Track>,
    pub(crate) segment_uid: [u8; 16],
    pub(crate) input_timecode_scale_ns: u64,
}

impl Header {
    /// The header bytes, ready to send.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// The declared tracks, in input order.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }
    /// The output TimecodeScale: always 1 ms (1 000 000 ns), the KVS norm (docs/protocol.md §4.3).
    pub fn timecode_scale_ns(&self) -> u64 {
        super::OUTPUT_TIMECODE_SCALE_NS
    }
    /// The input's TimecodeScale, which the re-fragmenter converts from.
    pub fn input_timecode_scale_ns(&self) -> u64 {
        self.input_timecode_scale_ns
    }
    /// The SegmentUID written (reuse it across the connections of one logical stream).
    pub fn segment_uid(&self) -> [u8; 16] {
        self.segment_uid
    }
}

/// Per-track frame count within a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackFrames {
    /// TrackNumber.
    pub track: u64,
    /// Number of frames (SimpleBlocks) of that track in the fragment.
    pub frames: usize,
}

/// One KVS fragment: one unknown-size Cluster with its Timecode and SimpleBlocks (reference
/// §4.5). All timecodes are in output TimecodeScale units (1 ms), after rebasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub(crate) timecode: u64,
    pub(crate) duration: Duration,
    pub(crate) first_frame_timecode: u64,
    pub(crate) last_frame_timecode: u64,
    pub(crate) starts_with_keyframe: bool,
    pub(crate) len: usize,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) tracks: Vec<TrackFrames>,
}

impl Fragment {
    /// The Cluster timecode as written: what acks carry as `FragmentTimecode`.
    pub fn timecode(&self) -> u64 {
        self.timecode
    }
    /// From the Cluster timecode to the next fragment's (or, for the last one, to the end of its
    /// last frame).
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// Absolute timecode of the first block.
    pub fn first_frame_timecode(&self) -> u64 {
        self.first_frame_timecode
    }
    /// Highest absolute frame timecode in the fragment; the next Cluster timecode is strictly
    /// greater (docs/protocol.md §4.6, error 4004).
    pub fn last_frame_timecode(&self) -> u64 {
        self.last_frame_timecode
    }
    /// Whether the first block is a keyframe of the video track (or, for audio-only media, any
    /// frame of the first track).
    pub fn starts_with_keyframe(&self) -> bool {
        self.starts_with_keyframe
    }
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never true: a fragment holds at least a Cluster header and one block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes to send, in order: the Cluster header with its Timecode, then per block a small
    /// rewritten block header followed by the payload, sliced from the input without copying.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }
    /// Number of frames of `track` in this fragment.
    pub fn frame_count(&self, track: u64) -> usize {
        self.tracks
            .iter()
            .find(|t| t.track == track)
            .map_or(0, |t| t.frames)
    }
    /// Tracks present, with their frame counts, in order of first appearance.
    pub fn tracks(&self) -> &[TrackFrames] {
        &self.tracks
    }
    /// The fragment as one contiguous buffer (copies; for tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.freeze()
    }
}

/// Why frames were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Video frames before the first keyframe cannot be decoded.
    BeforeFirstKeyframe,
    /// The block's track number is not declared in Tracks (KVS would answer 4010).
    UndeclaredTrack,
    /// Video frames between a forced cut ([`Refragmenter::flush`](crate::mkv::Refragmenter::flush),
    /// when the source paused) and the next keyframe: a fragment must start on a keyframe.
    AfterFlushBeforeKeyframe,
}

/// A cut or adjustment the input forced; never silent (the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// No video keyframe arrived before the maximum fragment duration: the fragment was cut at
    /// a frame that is not a keyframe, so the next fragment does not start with one.
    NoKeyframeBeforeMaxDuration {
        /// Timecode (output units) of the fragment that reached the maximum.
        fragment_timecode: u64,
        /// The configured maximum.
        max: Duration,
    },
    /// The fragment would have exceeded the size limit; cut at a frame that may not be a
    /// keyframe.
    FragmentSizeLimit {
        /// Timecode (output units) of the fragment that reached the limit.
        fragment_timecode: u64,
        /// Its size in bytes when cut.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A forced cut came sooner than the minimum fragment interval (5 fragments/s).
    FragmentRateLimit {
        /// Timecode (output units) of the short fragment.
        fragment_timecode: u64,
        /// Its duration.
        duration: Duration,
    },
    /// A declared audio or video track has no frame in this fragment (KVS answers 4011).
    TrackMissingFromFragment {
        /// Timecode (output units) of the fragment.
        fragment_timecode: u64,
        /// The missing TrackNumber.
        track: u64,
    },
    /// Frames were dropped.
    FramesDropped {
        /// TrackNumber.
        track: u64,
        /// How many.
        count: u64,
        /// Why.
        reason: DropReason,
    },
    /// The fragment was closed because the source paused
    /// ([`Refragmenter::flush`](crate::mkv::Refragmenter::flush)), possibly shorter than the
    /// target and than the 1 s minimum the limits page names.
    ClosedByPause {
        /// Timecode (output units) of the fragment.
        fragment_timecode: u64,
        /// Its duration.
        duration: Duration,
    },
    /// A frame's timecode was raised so that it is not below its Cluster's timecode and strictly
    /// above the previous fragment's last frame (docs/protocol.md §4.6: one-tick compensation).
    TimecodeAdjusted {
        /// TrackNumber.
        track: u64,
        /// Timecode the input gave (output units, may be negative after rebasing).
        from: i64,
        /// Timecode written.
        to: u64,
    },
}
