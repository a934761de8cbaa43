//! The incremental PutMedia body validator.

use bytes::Bytes;

/// How cluster timecodes map to producer timestamps (`x-amzn-fragment-timecode-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimecodeType {
    /// Cluster timecodes are epoch time.
    #[default]
    Absolute,
    /// Cluster timecodes are relative to the producer start timestamp.
    Relative,
}

/// Limits and per-request parameters of one ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Maximum fragment (cluster) size in bytes (4001). Default 50 MB.
    pub max_fragment_bytes: u64,
    /// Maximum fragment duration (4002). Default 20 000 ms.
    pub max_fragment_duration_ms: u64,
    /// Maximum fragments per second of producer time. Default 5.
    pub max_fragments_per_second: u32,
    /// Maximum number of tracks (4012). Default 3.
    pub max_tracks: usize,
    /// Maximum size of any buffered non-cluster element (4006 beyond).
    pub max_element_size: u64,
    /// Maximum metadata tags per fragment (4009). Default 10.
    pub max_metadata_tags: usize,
    /// `x-amzn-fragment-timecode-type`.
    pub timecode_type: TimecodeType,
    /// `x-amzn-producer-start-timestamp` in epoch ms.
    pub producer_start_ms: Option<u64>,
    /// Tolerance before a future producer timestamp gets 4007.
    pub max_future_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_fragment_bytes: 50_000_000,
            max_fragment_duration_ms: 20_000,
            max_fragments_per_second: 5,
            max_tracks: 3,
            max_element_size: 1 << 20,
            max_metadata_tags: 10,
            timecode_type: TimecodeType::Absolute,
            producer_start_ms: None,
            max_future_ms: 10_000,
        }
    }
}

/// A track declared in Tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// TrackNumber.
    pub number: u64,
    /// TrackUID.
    pub uid: Option<u64>,
    /// TrackType.
    pub track_type: Option<u64>,
    /// CodecID.
    pub codec_id: Option<String>,
    /// Whether CodecPrivate is present.
    pub has_codec_private: bool,
}

/// A fragment that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedFragment {
    /// Cluster timecode as sent.
    pub timecode: u64,
    /// Producer timestamp in epoch ms.
    pub producer_timestamp_ms: u64,
    /// Duration in ms.
    pub duration_ms: u64,
    /// The Cluster as received, made self-delimiting.
    pub cluster: Bytes,
    /// (track number, frame count).
    pub frames_per_track: Vec<(u64, u32)>,
    /// Whether the first frame is a keyframe.
    pub first_frame_keyframe: bool,
    /// Size of `cluster` in bytes.
    pub size: usize,
    /// Fragment metadata tags.
    pub tags: Vec<(String, String)>,
}

/// What the validator observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEvent {
    /// A fragment started (BUFFERING).
    FragmentStarted {
        /// Cluster timecode as sent.
        timecode: u64,
    },
    /// A fragment ended (RECEIVED).
    FragmentCompleted(CompletedFragment),
    /// An end-of-fragment tag arrived.
    EndOfFragmentTag,
    /// A rule was broken; no more events follow.
    Error {
        /// Error id.
        error_id: u32,
        /// Error code.
        code: &'static str,
        /// Fragment timecode.
        timecode: Option<u64>,
        /// Human-readable reason.
        reason: String,
    },
}

/// Incremental validator of one PutMedia body.
#[derive(Debug)]
pub struct Ingest {
    cfg: IngestConfig,
    consumed: u64,
}

impl Ingest {
    /// A validator for one request.
    pub fn new(cfg: IngestConfig) -> Self {
        Self { cfg, consumed: 0 }
    }

    /// Feed body bytes.
    pub fn push(&mut self, data: &[u8], now_epoch_ms: u64, out: &mut Vec<IngestEvent>) {
        let _ = (now_epoch_ms, out, &self.cfg);
        self.consumed += data.len() as u64;
    }

    /// End of the request body.
    pub fn finish(&mut self, now_epoch_ms: u64, out: &mut Vec<IngestEvent>) {
        let _ = (now_epoch_ms, out);
    }

    /// The stream header.
    pub fn header(&self) -> Option<&[u8]> {
        None
    }

    /// Declared tracks.
    pub fn tracks(&self) -> &[TrackInfo] {
        &[]
    }

    /// Bytes consumed.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }
}
