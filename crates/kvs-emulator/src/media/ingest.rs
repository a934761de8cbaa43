//! The incremental PutMedia body validator.

use std::collections::VecDeque;

use bytes::Bytes;

use super::ebml::{self, Decoded, Header, id};

/// `AWS_KINESISVIDEO_END_OF_FRAGMENT`: a level-1 Tags element holding this SimpleTag completes the
/// open fragment (reference section 3, "Idle").
pub const END_OF_FRAGMENT_TAG: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";

/// Reserved tag names the service recognises as fragment metadata and a producer may send: the
/// official producer's `putKinesisVideoEventMetadata` writes them to ask for an S3 notification
/// or image generation for the fragment (AWS docs: "Using Streaming Metadata", "Amazon Kinesis
/// Video Streams notifications" and "Image generation", e.g.
/// <https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/notifications.html>). Every other
/// name starting with `AWS` is refused with 4009 (docs/protocol.md §4.9). They do not count
/// towards the limit of 10 tags: the official producer adds them beside up to 10 custom pairs.
pub const RECOGNISED_RESERVED_TAGS: [&str; 3] = [
    "AWS_KINESISVIDEO_NOTIFICATION",
    "AWS_KINESISVIDEO_IMAGE_GENERATION",
    "AWS_KINESISVIDEO_IMAGE_PREFIX",
];

/// Largest EBML header accepted; real ones are about 40 bytes.
const MAX_EBML_HEADER_BYTES: u64 = 4096;

/// Longest fragment metadata tag name (reference section 4.9).
pub const MAX_TAG_NAME_BYTES: usize = 128;
/// Longest fragment metadata tag value (reference section 4.9).
pub const MAX_TAG_VALUE_BYTES: usize = 256;

/// How cluster timecodes map to producer timestamps (`x-amzn-fragment-timecode-type`,
/// reference section 4.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimecodeType {
    /// "ABSOLUTE means the cluster timecode itself is epoch time (ms at 1 ms scale)."
    #[default]
    Absolute,
    /// "RELATIVE means producer timestamp = `x-amzn-producer-start-timestamp` + cluster timecode."
    Relative,
}

/// Limits and per-request parameters of one ingest. Defaults are the service's limits
/// (reference section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Largest fragment (Cluster, header included) in bytes; beyond it 4001. Default 50 MB
    /// ("Fragment: ... 50 MB max"). A fragment is buffered up to this size, never more.
    pub max_fragment_bytes: u64,
    /// Longest fragment, from the Cluster timecode to its last frame; beyond it 4002.
    /// Default 20 000 ms ("1 s minimum and 20 s maximum duration").
    pub max_fragment_duration_ms: u64,
    /// Most fragments whose producer timestamps fall within any one second ("at most 5 fragments
    /// per second"). Default 5. Which error exceeding it gets is an inference, see the module docs.
    pub max_fragments_per_second: u32,
    /// Most TrackEntry elements in Tracks; beyond it 4012. Default 3.
    pub max_tracks: usize,
    /// Largest buffered element outside Clusters (Info, Tracks, Tags), and the largest element
    /// skipped unread (SeekHead, Cues, Void, ...) is `max_fragment_bytes`. Beyond it 4006.
    /// Default 1 MiB.
    pub max_element_size: u64,
    /// Most fragment metadata tags applying to one fragment; beyond it 4009. Default 10.
    pub max_metadata_tags: usize,
    /// `x-amzn-fragment-timecode-type`.
    pub timecode_type: TimecodeType,
    /// `x-amzn-producer-start-timestamp` in epoch ms. With [`TimecodeType::Relative`] and no
    /// value, the `now_epoch_ms` of the first [`Ingest::push`] is used (an inference: the service
    /// must anchor relative timecodes somewhere).
    pub producer_start_ms: Option<u64>,
    /// How far in the future (relative to `now_epoch_ms`) a producer timestamp may be before
    /// 4007. Default 10 000 ms (an inference: the protocol account (docs/protocol.md) only says "in the future"; clocks of
    /// real producers drift, so the emulator tolerates a little).
    pub max_future_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_fragment_bytes: 50 * 1024 * 1024,
            max_fragment_duration_ms: 20_000,
            max_fragments_per_second: 5,
            max_tracks: 3,
            max_element_size: 1024 * 1024,
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
    /// TrackNumber (0xD7), the number blocks refer to.
    pub number: u64,
    /// TrackUID (0x73C5), when present.
    pub uid: Option<u64>,
    /// TrackType (0x83): 1 video, 2 audio, ...
    pub track_type: Option<u64>,
    /// CodecID (0x86), e.g. `V_MPEG4/ISO/AVC`.
    pub codec_id: Option<String>,
    /// CodecPrivate (0x63A2) length in bytes; KVS does not validate it at ingestion
    /// (reference section 4.4).
    pub codec_private_len: usize,
    /// DefaultDuration (0x23E383), in ns: how long each frame lasts when its block gives no
    /// BlockDuration.
    pub default_duration_ns: Option<u64>,
}

/// A fragment that ended (RECEIVED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedFragment {
    /// The Cluster timecode as sent, in TimecodeScale units (the ack's `FragmentTimecode`).
    pub timecode: u64,
    /// Producer timestamp in epoch ms (reference section 4.10).
    pub producer_timestamp_ms: u64,
    /// From the Cluster timecode to the end of its latest frame, in ms: the playback duration
    /// ListFragments reports as `FragmentLengthInMilliseconds`
    /// (<https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_reader_Fragment.html>).
    /// A frame ends after its BlockDuration, else its track's DefaultDuration, else the
    /// interval since the track's previous frame (a SimpleBlock carries no duration).
    pub duration_ms: u64,
    /// The Cluster as received; an unknown-size Cluster gets its real size written so the bytes
    /// are self-delimiting.
    pub cluster: Bytes,
    /// `(track number, frames)` for every declared track, in Tracks order.
    pub frames_per_track: Vec<(u64, u32)>,
    /// Whether the first frame is a keyframe (KVS wants fragments to start with one, section 4.5,
    /// but does not refuse those that do not).
    pub first_frame_keyframe: bool,
    /// `cluster.len()`.
    pub size: usize,
    /// Fragment metadata: the SimpleTags of the level-1 Tags elements sent before this Cluster.
    pub tags: Vec<(String, String)>,
}

/// What the validator observed, in body order.
///
/// An `Error` with `timecode: Some(t)` always follows `FragmentStarted { timecode: t }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEvent {
    /// The first bytes of a fragment arrived (ack BUFFERING). Emitted once the Cluster's
    /// Timecode element is read, since the ack needs the timecode.
    FragmentStarted {
        /// The Cluster timecode as sent.
        timecode: u64,
    },
    /// A fragment ended: next Cluster, end-of-fragment tag, or end of body (ack RECEIVED).
    FragmentCompleted(CompletedFragment),
    /// A Tags element holding `AWS_KINESISVIDEO_END_OF_FRAGMENT` arrived. It comes before the
    /// `FragmentCompleted` it causes (if a fragment was open).
    EndOfFragmentTag,
    /// A rule was broken (ack ERROR). The connection then closes; no more events follow.
    Error {
        /// The ack's `ErrorId` (reference section 2).
        error_id: u32,
        /// The ack's `ErrorCode`.
        code: &'static str,
        /// The fragment concerned, when one had started.
        timecode: Option<u64>,
        /// What was wrong and at which byte offset of the body.
        reason: String,
    },
}

/// A broken rule: its error id (reference section 2, "Error ids"). The ack's `ErrorCode` is always
/// [`super::error_code`] of the id, so the two can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    id: u32,
}

const MAX_FRAGMENT_SIZE_REACHED: Rule = Rule { id: 4001 };
const MAX_FRAGMENT_DURATION_REACHED: Rule = Rule { id: 4002 };
const FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS: Rule = Rule { id: 4004 };
const INVALID_MKV_DATA: Rule = Rule { id: 4006 };
const INVALID_PRODUCER_TIMESTAMP: Rule = Rule { id: 4007 };
const FRAGMENT_METADATA_LIMIT_REACHED: Rule = Rule { id: 4009 };
const TRACK_NUMBER_MISMATCH: Rule = Rule { id: 4010 };
const FRAMES_MISSING_FOR_TRACK: Rule = Rule { id: 4011 };
const MORE_THAN_ALLOWED_TRACKS_FOUND: Rule = Rule { id: 4012 };
/// Inference: the protocol account (docs/protocol.md) names no error id for "more than 5 fragments per second" (the limits
/// page's MIN_FRAGMENT_DURATION_REACHED has no known numeric id). Fragments that close together
/// are fragments shorter than 200 ms, so the emulator answers with the fragment-duration id 4002,
/// and with that id's own code (`MAX_FRAGMENT_DURATION_REACHED`): a client that maps `ErrorId`
/// to `ErrorCode` (the official producer acts on the id) sees a consistent pair. The reason is
/// in the emulator's log.
const TOO_MANY_FRAGMENTS_PER_SECOND: Rule = MAX_FRAGMENT_DURATION_REACHED;

/// Where the parser is in the element tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Before the EBML header.
    Start,
    /// After the EBML header, before the Segment.
    BeforeSegment,
    /// Inside the Segment, at level 1.
    Segment,
    /// Inside a Cluster, reading its children.
    Cluster,
    /// A known-size Segment ended: nothing may follow (one Segment per request, section 4.1).
    AfterSegment,
    /// An error was reported; everything else is ignored.
    Failed,
    /// [`Ingest::finish`] was called; later input is ignored.
    Finished,
}

/// What the next bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// An element header.
    Header,
    /// The whole body of this element, to be buffered then handled.
    Body(Header),
    /// Bytes to discard unread.
    Skip(u64),
}

/// The fragment being received.
#[derive(Debug)]
struct OpenFragment {
    /// Absolute body offset of the Cluster's first byte, for error messages.
    offset: u64,
    /// The Cluster header as received when it had a known size.
    known_header: Option<Vec<u8>>,
    /// The Cluster's children as received.
    body: Vec<u8>,
    timecode: Option<u64>,
    producer_timestamp_ms: u64,
    /// Declared content size, when known.
    declared_size: Option<u64>,
    frames: Vec<u32>,
    last_frame_per_track: Vec<Option<i128>>,
    /// Latest frame timestamp and latest frame end, absolute, in TimecodeScale units.
    max_frame: Option<i128>,
    max_frame_end: Option<i128>,
    first_frame_keyframe: Option<bool>,
    tags: Vec<(String, String)>,
}

/// Incremental validator of one PutMedia request body.
///
/// Feed the body with [`push`](Self::push) in chunks of any size and call
/// [`finish`](Self::finish) at its end: the events are the same for every chunking.
///
/// Memory: besides the open fragment (at most `max_fragment_bytes`, then 4001), it holds at most
/// one partly received element outside Clusters (at most `max_element_size`) plus the header. A
/// declared size is never used to allocate; elements that are not needed are skipped unread.
/// Each byte is looked at a bounded number of times: an incomplete element header (at most 12
/// bytes) is re-read when more bytes arrive, nothing else is.
#[derive(Debug)]
pub struct Ingest {
    cfg: IngestConfig,
    level: Level,
    need: Need,
    /// Bytes received but not yet handled.
    buf: Vec<u8>,
    /// Absolute body offset of `buf[0]`.
    offset: u64,
    /// Total bytes handed to `push`.
    received: u64,
    /// Absolute offset where a known-size Segment ends.
    segment_end: Option<u64>,
    /// Absolute offset where the current known-size Cluster ends.
    cluster_end: Option<u64>,
    ebml_header: Option<Vec<u8>>,
    info: Option<Vec<u8>>,
    tracks_element: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
    tracks: Vec<TrackInfo>,
    timecode_scale_ns: u64,
    relative_anchor_ms: Option<u64>,
    fragment: Option<OpenFragment>,
    fragments_seen: u64,
    /// Latest frame (absolute, TimecodeScale units) and Cluster timecode of the previous fragment.
    previous_last_frame: Option<i128>,
    previous_cluster_timecode: Option<u64>,
    /// Per track (in Tracks order), across fragments: the latest frame's timestamp and the
    /// interval before it, for the duration of a frame that states none.
    track_last_frame: Vec<Option<i128>>,
    track_frame_interval: Vec<Option<i128>>,
    /// Producer timestamps of recent fragment starts, for the fragments-per-second rule.
    recent_starts: VecDeque<u64>,
    /// Metadata tags waiting for the next Cluster.
    pending_tags: Vec<(String, String)>,
    /// Why the tags waiting for the next Cluster break the rules (4009). Reported once that
    /// Cluster's Timecode arrives, so the ERROR names the fragment the tags belong to, and the
    /// fragment still open when the Tags arrived completes normally.
    pending_tag_problem: Option<String>,
}

impl Ingest {
    /// A validator for one request.
    pub fn new(cfg: IngestConfig) -> Self {
        let relative_anchor_ms = cfg.producer_start_ms;
        Self {
            cfg,
            level: Level::Start,
            need: Need::Header,
            buf: Vec::new(),
            offset: 0,
            received: 0,
            segment_end: None,
            cluster_end: None,
            ebml_header: None,
            info: None,
            tracks_element: None,
            header: None,
            tracks: Vec::new(),
            timecode_scale_ns: 1_000_000,
            relative_anchor_ms,
            fragment: None,
            fragments_seen: 0,
            previous_last_frame: None,
            previous_cluster_timecode: None,
            track_last_frame: Vec::new(),
            track_frame_interval: Vec::new(),
            recent_starts: VecDeque::new(),
            pending_tags: Vec::new(),
            pending_tag_problem: None,
        }
    }

    /// Feeds the next bytes of the body; events are appended to `out`. After an `Error` event,
    /// further input is ignored.
    pub fn push(&mut self, data: &[u8], now_epoch_ms: u64, out: &mut Vec<IngestEvent>) {
        self.received += data.len() as u64;
        if matches!(self.level, Level::Failed | Level::Finished) {
            return;
        }
        if self.relative_anchor_ms.is_none() {
            self.relative_anchor_ms = Some(now_epoch_ms);
        }
        let mut data = data;
        // Skipped elements are consumed straight from the input, never copied.
        if let Need::Skip(left) = self.need
            && self.buf.is_empty()
        {
            let n = left.min(data.len() as u64);
            self.need = if n == left {
                Need::Header
            } else {
                Need::Skip(left - n)
            };
            self.offset += n;
            data = &data[n as usize..];
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0usize;
        while self.level != Level::Failed {
            match self.step(pos, now_epoch_ms, out) {
                Some(used) => pos += used,
                None => break,
            }
        }
        if self.level == Level::Failed {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..pos);
            self.offset += pos as u64;
        }
    }

    /// Ends the body: completes the open fragment (RECEIVED at end of body) or reports a
    /// truncated element. Idempotent.
    pub fn finish(&mut self, now_epoch_ms: u64, out: &mut Vec<IngestEvent>) {
        let _ = now_epoch_ms;
        if matches!(self.level, Level::Failed | Level::Finished) {
            return;
        }
        let truncated = match self.need {
            Need::Header => !self.buf.is_empty(),
            Need::Body(_) | Need::Skip(_) => true,
        };
        if truncated {
            let at = self.offset;
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("body ends inside an element at byte {at}"),
            );
            return;
        }
        if let Some(end) = self.cluster_end
            && self.offset < end
        {
            let at = self.offset;
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("body ends at byte {at}, inside a Cluster declared to end at {end}"),
            );
            return;
        }
        self.complete_fragment(out);
        if self.level == Level::Failed {
            return;
        }
        // Metadata that broke the rules and never reached a Cluster: refused all the same (no
        // fragment to name, since none followed).
        if let Some(reason) = self.pending_tag_problem.take() {
            self.fail(out, FRAGMENT_METADATA_LIMIT_REACHED, reason);
            return;
        }
        self.level = Level::Finished;
    }

    /// The stream header as the producer sent it: EBML header, Segment (written with unknown
    /// size), Info and Tracks with their Void and CRC-32 children dropped. `None` until Tracks
    /// has arrived.
    pub fn header(&self) -> Option<&[u8]> {
        self.header.as_deref()
    }

    /// The tracks declared in Tracks (empty until it arrived).
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// Bytes handed to [`push`](Self::push) so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.received
    }

    /// Bytes held right now: the partly received element plus the open fragment. Bounded by
    /// `max_fragment_bytes` + `max_element_size` + the last chunk pushed.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + self.fragment.as_ref().map_or(0, |f| f.body.len())
    }

    /// The Segment's TimecodeScale in nanoseconds (1 000 000 until Info says otherwise).
    pub fn timecode_scale_ns(&self) -> u64 {
        self.timecode_scale_ns
    }

    /// Reports an error and stops.
    fn fail(&mut self, out: &mut Vec<IngestEvent>, rule: Rule, reason: String) {
        let timecode = self.fragment.as_ref().and_then(|f| f.timecode);
        let code = super::error_code(rule.id);
        tracing::debug!(error_id = rule.id, code, ?timecode, %reason, "media rejected");
        out.push(IngestEvent::Error {
            error_id: rule.id,
            code,
            timecode,
            reason,
        });
        self.level = Level::Failed;
        self.fragment = None;
    }

    /// Handles what `buf[pos..]` allows; returns the bytes used, or `None` to wait for input.
    fn step(&mut self, pos: usize, now: u64, out: &mut Vec<IngestEvent>) -> Option<usize> {
        let at = self.offset + pos as u64;
        match self.need {
            Need::Skip(left) => {
                let avail = (self.buf.len() - pos) as u64;
                if avail == 0 {
                    return None;
                }
                let n = left.min(avail);
                self.need = if n == left {
                    Need::Header
                } else {
                    Need::Skip(left - n)
                };
                Some(n as usize)
            }
            Need::Body(header) => {
                let size = header.size.unwrap_or(0) as usize;
                if self.buf.len() - pos < header.len + size {
                    return None;
                }
                self.need = Need::Header;
                // Taken out for the call so the element is not copied; put back right after.
                let buf = std::mem::take(&mut self.buf);
                self.on_element(header, &buf[pos..pos + header.len + size], at, now, out);
                self.buf = buf;
                Some(header.len + size)
            }
            Need::Header => {
                // Structural ends first: they need no bytes.
                if self.level == Level::Cluster && self.cluster_end == Some(at) {
                    self.cluster_end = None;
                    self.level = Level::Segment;
                    return Some(0);
                }
                if matches!(self.level, Level::Segment | Level::Cluster)
                    && self.segment_end == Some(at)
                {
                    self.level = Level::AfterSegment;
                    return Some(0);
                }
                let header = match ebml::read_header(&self.buf[pos..]) {
                    Decoded::Incomplete => return None,
                    Decoded::Invalid(reason) => {
                        self.fail(out, INVALID_MKV_DATA, format!("{reason} at byte {at}"));
                        return None;
                    }
                    Decoded::Ok(h) => h,
                };
                // Copied so the Cluster header can be kept as received without borrowing `buf`.
                let mut raw = [0u8; 12];
                raw[..header.len].copy_from_slice(&self.buf[pos..pos + header.len]);
                let used = self.on_header(header, &raw[..header.len], at, out);
                (self.level != Level::Failed).then_some(used)
            }
        }
    }
}

/// Milliseconds in `ticks` TimecodeScale units, saturating.
fn ticks_to_ms(ticks: i128, scale_ns: u64) -> u64 {
    // A hostile timecode times a hostile TimecodeScale overflows even i128.
    match ticks.max(0).checked_mul(i128::from(scale_ns)) {
        Some(ns) => u64::try_from(ns / 1_000_000).unwrap_or(u64::MAX),
        None => u64::MAX,
    }
}

/// Parses a Block or SimpleBlock header (Matroska "Block Structure"): track number vint, int16
/// timecode relative to the Cluster, flags.
fn block_header(body: &[u8]) -> Result<(u64, i16, u8), &'static str> {
    let (track, len) = match ebml::read_vint(body) {
        Decoded::Ok((track, len, _)) => (track, len),
        Decoded::Incomplete => return Err("block too short for its track number"),
        Decoded::Invalid(reason) => return Err(reason),
    };
    let rest = &body[len..];
    if rest.len() < 3 {
        return Err("block too short for its timecode and flags");
    }
    Ok((track, i16::from_be_bytes([rest[0], rest[1]]), rest[2]))
}

impl Ingest {
    /// Where the element being read must end, if its parent has a known size.
    fn parent_end(&self) -> Option<u64> {
        match self.level {
            Level::Cluster => self.cluster_end.or(self.segment_end),
            _ => self.segment_end,
        }
    }

    /// Decides what to do with an element whose header was just read; returns the header bytes
    /// consumed (0 when the element is to be buffered whole, or read again at another level).
    fn on_header(&mut self, h: Header, raw: &[u8], at: u64, out: &mut Vec<IngestEvent>) -> usize {
        let end = match h.size {
            Some(size) => match at
                .checked_add(h.len as u64)
                .and_then(|v| v.checked_add(size))
            {
                Some(end) => Some(end),
                None => {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("element size overflows at byte {at}"),
                    );
                    return 0;
                }
            },
            None => None,
        };
        // An unknown-size Cluster ends at the first id that cannot be its child.
        if self.level == Level::Cluster
            && self.cluster_end.is_none()
            && ebml::ends_unknown_size_cluster(h.id)
        {
            self.level = Level::Segment;
            return 0;
        }
        if self.level != Level::Start
            && let (Some(end), Some(parent_end)) = (end, self.parent_end())
            && end > parent_end
        {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!(
                    "element 0x{:X} at byte {at} ends at {end}, beyond its parent's end {parent_end}",
                    h.id
                ),
            );
            return 0;
        }
        match self.level {
            Level::Start => {
                if h.id != id::EBML {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("body does not start with an EBML header (id 0x{:X})", h.id),
                    );
                    return 0;
                }
                self.buffer(h, MAX_EBML_HEADER_BYTES, at, out)
            }
            Level::BeforeSegment => match h.id {
                id::SEGMENT => {
                    // Section 4.2: producers send unknown size; a known size is accepted too.
                    self.segment_end = end;
                    self.level = Level::Segment;
                    h.len
                }
                id::VOID | id::CRC32 => self.skip(h, at, out),
                id::EBML => {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("second EBML header at byte {at}"),
                    );
                    0
                }
                other => {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("expected a Segment after the EBML header, found 0x{other:X} at byte {at}"),
                    );
                    0
                }
            },
            Level::AfterSegment => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!(
                        "element 0x{:X} at byte {at} after the end of the Segment (one Segment per request)",
                        h.id
                    ),
                );
                0
            }
            Level::Segment => self.on_level1_header(h, raw, at, end, out),
            Level::Cluster => self.on_cluster_child_header(h, at, out),
            Level::Failed | Level::Finished => 0,
        }
    }

    /// Arranges for an element to be buffered whole, within `cap`.
    fn buffer(&mut self, h: Header, cap: u64, at: u64, out: &mut Vec<IngestEvent>) -> usize {
        match h.size {
            None => self.fail(
                out,
                INVALID_MKV_DATA,
                format!("element 0x{:X} at byte {at} has unknown size", h.id),
            ),
            Some(size) if size > cap => self.fail(
                out,
                INVALID_MKV_DATA,
                format!(
                    "element 0x{:X} at byte {at} declares {size} bytes, over the cap of {cap}",
                    h.id
                ),
            ),
            Some(_) => self.need = Need::Body(h),
        }
        0
    }

    /// Arranges for an element to be skipped unread.
    fn skip(&mut self, h: Header, at: u64, out: &mut Vec<IngestEvent>) -> usize {
        let cap = self.cfg.max_fragment_bytes;
        match h.size {
            None => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("element 0x{:X} at byte {at} has unknown size", h.id),
                );
                0
            }
            Some(size) if size > cap => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!(
                        "element 0x{:X} at byte {at} declares {size} bytes, over the cap of {cap}",
                        h.id
                    ),
                );
                0
            }
            Some(size) => {
                if size > 0 {
                    self.need = Need::Skip(size);
                }
                h.len
            }
        }
    }

    fn on_level1_header(
        &mut self,
        h: Header,
        raw: &[u8],
        at: u64,
        end: Option<u64>,
        out: &mut Vec<IngestEvent>,
    ) -> usize {
        match h.id {
            id::EBML => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("second EBML header at byte {at} (one per request, section 4.1)"),
                );
                0
            }
            id::SEGMENT => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("second Segment at byte {at} (one per request, section 4.1)"),
                );
                0
            }
            id::CLUSTER => {
                if self.tracks.is_empty() {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("Cluster at byte {at} before Tracks"),
                    );
                    return 0;
                }
                // Section 2: a fragment ends at the next Cluster.
                self.complete_fragment(out);
                if self.level == Level::Failed {
                    return 0;
                }
                self.fragment = Some(OpenFragment {
                    offset: at,
                    known_header: h.size.map(|_| raw.to_vec()),
                    body: Vec::new(),
                    timecode: None,
                    producer_timestamp_ms: 0,
                    declared_size: h.size,
                    frames: vec![0; self.tracks.len()],
                    last_frame_per_track: vec![None; self.tracks.len()],
                    max_frame: None,
                    max_frame_end: None,
                    first_frame_keyframe: None,
                    tags: Vec::new(),
                });
                self.cluster_end = end;
                self.level = Level::Cluster;
                h.len
            }
            id::INFO | id::TRACKS | id::TAGS => {
                let cap = self.cfg.max_element_size;
                self.buffer(h, cap, at, out)
            }
            // SeekHead, Cues, Chapters, Attachments, Void, CRC-32 and unknown elements carry
            // nothing KVS ingests.
            _ => self.skip(h, at, out),
        }
    }

    fn on_cluster_child_header(&mut self, h: Header, at: u64, out: &mut Vec<IngestEvent>) -> usize {
        let Some(size) = h.size else {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("Cluster child 0x{:X} at byte {at} has unknown size", h.id),
            );
            return 0;
        };
        let Some(frag) = self.fragment.as_ref() else {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("Cluster child at byte {at} outside a Cluster"),
            );
            return 0;
        };
        let header_len = frag.known_header.as_ref().map_or(12, Vec::len) as u64;
        let total = header_len + frag.body.len() as u64 + h.len as u64 + size;
        let has_timecode = frag.timecode.is_some();
        let cluster_at = frag.offset;
        if total > self.cfg.max_fragment_bytes {
            let max = self.cfg.max_fragment_bytes;
            self.fail(
                out,
                MAX_FRAGMENT_SIZE_REACHED,
                format!(
                    "fragment at byte {cluster_at} reaches {total} bytes at byte {at}, over {max}"
                ),
            );
            return 0;
        }
        match h.id {
            id::SIMPLE_BLOCK | id::BLOCK_GROUP if !has_timecode => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("block at byte {at} before the Cluster's Timecode"),
                );
                0
            }
            id::TIMECODE if has_timecode => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("second Cluster Timecode at byte {at}"),
                );
                0
            }
            _ => {
                self.need = Need::Body(h);
                0
            }
        }
    }

    /// Handles a fully buffered element (`element` includes its header).
    fn on_element(
        &mut self,
        h: Header,
        element: &[u8],
        at: u64,
        now: u64,
        out: &mut Vec<IngestEvent>,
    ) {
        let body = &element[h.len..];
        match self.level {
            Level::Start => self.on_ebml_header(element, body, at, out),
            Level::Segment => match h.id {
                id::INFO => self.on_info(body, at, out),
                id::TRACKS => self.on_tracks(body, at, out),
                id::TAGS => self.on_tags(body, at, out),
                _ => {}
            },
            Level::Cluster => {
                match h.id {
                    id::TIMECODE => match ebml::read_uint(body) {
                        Ok(tc) => self.start_fragment(tc, now, out),
                        Err(reason) => {
                            self.fail(out, INVALID_MKV_DATA, format!("{reason} at byte {at}"));
                        }
                    },
                    id::SIMPLE_BLOCK => match block_header(body) {
                        Ok((track, rel, flags)) => {
                            self.on_frame(track, rel, flags, flags & 0x80 != 0, None, at, out);
                        }
                        Err(reason) => {
                            self.fail(out, INVALID_MKV_DATA, format!("{reason} at byte {at}"));
                        }
                    },
                    id::BLOCK_GROUP => self.on_block_group(body, at, out),
                    _ => {}
                }
                if self.level != Level::Failed
                    && let Some(frag) = self.fragment.as_mut()
                {
                    frag.body.extend_from_slice(element);
                }
            }
            _ => {}
        }
    }

    fn on_ebml_header(&mut self, element: &[u8], body: &[u8], at: u64, out: &mut Vec<IngestEvent>) {
        let children = match ebml::children(body) {
            Ok(c) => c,
            Err(reason) => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("EBML header at byte {at}: {reason}"),
                );
                return;
            }
        };
        let mut doc_type = None;
        for child in children {
            let limit = match child.id {
                id::DOC_TYPE => {
                    doc_type = Some(ebml::read_string(child.body));
                    continue;
                }
                id::EBML_MAX_ID_LENGTH => 4,
                id::EBML_MAX_SIZE_LENGTH => 8,
                _ => continue,
            };
            if ebml::read_uint(child.body).map_or(true, |v| v > limit) {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("EBML header at byte {at}: id or size length limit above {limit}"),
                );
                return;
            }
        }
        match doc_type.as_deref() {
            Some("matroska" | "webm") => {
                self.ebml_header = Some(element.to_vec());
                self.level = Level::BeforeSegment;
            }
            other => self.fail(
                out,
                INVALID_MKV_DATA,
                format!("EBML DocType {other:?} is not matroska"),
            ),
        }
    }

    /// Re-encodes a master element without its Void and CRC-32 children (the CRC would no longer
    /// match once anything changes, and Void is padding).
    fn without_padding(element_id: u32, children: &[ebml::Child<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for child in children
            .iter()
            .filter(|c| !matches!(c.id, id::VOID | id::CRC32))
        {
            body.extend_from_slice(child.raw);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        ebml::write_element(&mut out, element_id, &body);
        out
    }

    fn header_element_misplaced(
        &mut self,
        name: &str,
        at: u64,
        out: &mut Vec<IngestEvent>,
    ) -> bool {
        if self.fragments_seen > 0 || self.fragment.is_some() {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("{name} at byte {at} after the first Cluster (the header comes once, section 4.1)"),
            );
            return true;
        }
        false
    }

    fn on_info(&mut self, body: &[u8], at: u64, out: &mut Vec<IngestEvent>) {
        if self.header_element_misplaced("Info", at, out) {
            return;
        }
        if self.info.is_some() {
            self.fail(out, INVALID_MKV_DATA, format!("second Info at byte {at}"));
            return;
        }
        let children = match ebml::children(body) {
            Ok(c) => c,
            Err(reason) => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("Info at byte {at}: {reason}"),
                );
                return;
            }
        };
        for child in &children {
            if child.id == id::TIMECODE_SCALE {
                match ebml::read_uint(child.body) {
                    Ok(scale) if scale > 0 => self.timecode_scale_ns = scale,
                    _ => {
                        self.fail(
                            out,
                            INVALID_MKV_DATA,
                            format!("Info at byte {at}: TimecodeScale must be a positive integer"),
                        );
                        return;
                    }
                }
            }
        }
        self.info = Some(Self::without_padding(id::INFO, &children));
        self.rebuild_header();
    }

    fn on_tracks(&mut self, body: &[u8], at: u64, out: &mut Vec<IngestEvent>) {
        if self.header_element_misplaced("Tracks", at, out) {
            return;
        }
        if self.tracks_element.is_some() {
            self.fail(out, INVALID_MKV_DATA, format!("second Tracks at byte {at}"));
            return;
        }
        let children = match ebml::children(body) {
            Ok(c) => c,
            Err(reason) => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("Tracks at byte {at}: {reason}"),
                );
                return;
            }
        };
        let entries: Vec<_> = children
            .iter()
            .filter(|c| c.id == id::TRACK_ENTRY)
            .collect();
        if entries.len() > self.cfg.max_tracks {
            let (n, max) = (entries.len(), self.cfg.max_tracks);
            self.fail(
                out,
                MORE_THAN_ALLOWED_TRACKS_FOUND,
                format!("Tracks at byte {at} declares {n} tracks, more than {max}"),
            );
            return;
        }
        let mut tracks: Vec<TrackInfo> = Vec::with_capacity(entries.len());
        for entry in entries {
            match Self::track_entry(entry.body) {
                Ok(track) if tracks.iter().any(|t| t.number == track.number) => {
                    let n = track.number;
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("Tracks at byte {at}: track {n} twice"),
                    );
                    return;
                }
                Ok(track) => tracks.push(track),
                Err(reason) => {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("TrackEntry in Tracks at byte {at}: {reason}"),
                    );
                    return;
                }
            }
        }
        if tracks.is_empty() {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("Tracks at byte {at} declares no track"),
            );
            return;
        }
        self.track_last_frame = vec![None; tracks.len()];
        self.track_frame_interval = vec![None; tracks.len()];
        self.tracks = tracks;
        self.tracks_element = Some(Self::without_padding(id::TRACKS, &children));
        self.rebuild_header();
    }

    fn track_entry(body: &[u8]) -> Result<TrackInfo, &'static str> {
        let mut track = TrackInfo {
            number: 0,
            uid: None,
            track_type: None,
            codec_id: None,
            codec_private_len: 0,
            default_duration_ns: None,
        };
        for child in ebml::children(body)? {
            match child.id {
                id::TRACK_NUMBER => track.number = ebml::read_uint(child.body)?,
                id::TRACK_UID => track.uid = Some(ebml::read_uint(child.body)?),
                id::TRACK_TYPE => track.track_type = Some(ebml::read_uint(child.body)?),
                id::CODEC_ID => track.codec_id = Some(ebml::read_string(child.body)),
                id::CODEC_PRIVATE => track.codec_private_len = child.body.len(),
                id::DEFAULT_DURATION => {
                    track.default_duration_ns = Some(ebml::read_uint(child.body)?)
                }
                _ => {}
            }
        }
        if track.number == 0 {
            return Err("missing or zero TrackNumber");
        }
        Ok(track)
    }

    fn rebuild_header(&mut self) {
        let (Some(ebml_header), Some(tracks)) = (&self.ebml_header, &self.tracks_element) else {
            return;
        };
        let mut header = ebml_header.clone();
        ebml::write_id(&mut header, id::SEGMENT);
        // Section 4.2: the 8-byte unknown size.
        header.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        if let Some(info) = &self.info {
            header.extend_from_slice(info);
        }
        header.extend_from_slice(tracks);
        self.header = Some(header);
    }

    /// A level-1 Tags element: the end-of-fragment marker or fragment metadata (section 4.9).
    fn on_tags(&mut self, body: &[u8], at: u64, out: &mut Vec<IngestEvent>) {
        let pairs = match Self::simple_tags(body) {
            Ok(p) => p,
            Err(reason) => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("Tags at byte {at}: {reason}"),
                );
                return;
            }
        };
        let mut end_of_fragment = false;
        for (name, value, targeted) in pairs {
            if name == END_OF_FRAGMENT_TAG {
                end_of_fragment = true;
                continue;
            }
            if targeted {
                // Inference: tags aimed at a track, edition, chapter or attachment (ffmpeg writes
                // one ENCODER tag per track) describe that target, not the fragment.
                continue;
            }
            if self.pending_tag_problem.is_some() {
                continue;
            }
            let reserved = RECOGNISED_RESERVED_TAGS.contains(&name.as_str());
            let problem = if name.starts_with("AWS") && !reserved {
                Some("names starting with AWS are reserved")
            } else if name.len() > MAX_TAG_NAME_BYTES {
                Some("name longer than 128 bytes")
            } else if value.len() > MAX_TAG_VALUE_BYTES {
                Some("value longer than 256 bytes")
            } else {
                None
            };
            if let Some(problem) = problem {
                self.pending_tag_problem = Some(format!(
                    "metadata tag {name:?} in Tags at byte {at}: {problem}"
                ));
                continue;
            }
            self.pending_tags.push((name, value));
            let counted = self
                .pending_tags
                .iter()
                .filter(|(n, _)| !RECOGNISED_RESERVED_TAGS.contains(&n.as_str()))
                .count();
            if counted > self.cfg.max_metadata_tags {
                let max = self.cfg.max_metadata_tags;
                self.pending_tag_problem = Some(format!(
                    "more than {max} metadata tags for one fragment (Tags at byte {at})"
                ));
            }
        }
        if end_of_fragment {
            out.push(IngestEvent::EndOfFragmentTag);
            self.complete_fragment(out);
        }
    }

    /// The direct SimpleTags of every Tag: `(TagName, TagString or TagBinary, whether the Tag's
    /// Targets name a track, edition, chapter or attachment)`.
    fn simple_tags(body: &[u8]) -> Result<Vec<(String, String, bool)>, &'static str> {
        let mut pairs = Vec::new();
        for tag in ebml::children(body)?
            .into_iter()
            .filter(|c| c.id == id::TAG)
        {
            let children = ebml::children(tag.body)?;
            let mut targeted = false;
            for targets in children.iter().filter(|c| c.id == id::TARGETS) {
                for target in ebml::children(targets.body)? {
                    if matches!(
                        target.id,
                        id::TAG_TRACK_UID
                            | id::TAG_EDITION_UID
                            | id::TAG_CHAPTER_UID
                            | id::TAG_ATTACHMENT_UID
                    ) && ebml::read_uint(target.body)? != 0
                    {
                        targeted = true;
                    }
                }
            }
            for simple in children.iter().filter(|c| c.id == id::SIMPLE_TAG) {
                let mut name = None;
                let mut value = String::new();
                for field in ebml::children(simple.body)? {
                    match field.id {
                        id::TAG_NAME => name = Some(ebml::read_string(field.body)),
                        id::TAG_STRING => value = ebml::read_string(field.body),
                        id::TAG_BINARY => value = String::from_utf8_lossy(field.body).into_owned(),
                        _ => {}
                    }
                }
                pairs.push((name.ok_or("SimpleTag without TagName")?, value, targeted));
            }
        }
        Ok(pairs)
    }

    fn producer_timestamp_ms(&self, timecode: u64) -> u64 {
        let ms = ticks_to_ms(i128::from(timecode), self.timecode_scale_ns);
        match self.cfg.timecode_type {
            TimecodeType::Absolute => ms,
            TimecodeType::Relative => self.relative_anchor_ms.unwrap_or(0).saturating_add(ms),
        }
    }

    /// The Cluster Timecode arrived: BUFFERING, then the checks that concern the fragment start.
    fn start_fragment(&mut self, timecode: u64, now: u64, out: &mut Vec<IngestEvent>) {
        let producer_ms = self.producer_timestamp_ms(timecode);
        let tags = std::mem::take(&mut self.pending_tags);
        let Some(frag) = self.fragment.as_mut() else {
            return;
        };
        frag.timecode = Some(timecode);
        frag.producer_timestamp_ms = producer_ms;
        frag.tags = tags;
        let cluster_at = frag.offset;
        let declared = frag.declared_size;
        let header_len = frag.known_header.as_ref().map_or(0, Vec::len) as u64;
        self.fragments_seen += 1;
        out.push(IngestEvent::FragmentStarted { timecode });

        // Section 4.9: the metadata placed before this Cluster is this fragment's.
        if let Some(reason) = self.pending_tag_problem.take() {
            self.fail(
                out,
                FRAGMENT_METADATA_LIMIT_REACHED,
                format!("{reason}, for the fragment at byte {cluster_at}"),
            );
            return;
        }

        // Section 4.6: strictly greater than the previous fragment's last frame.
        if let Some(prev) = self.previous_cluster_timecode
            && timecode <= prev
        {
            self.fail(
                out,
                FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS,
                format!(
                    "Cluster at byte {cluster_at}: timecode {timecode} not above the previous Cluster's {prev}"
                ),
            );
            return;
        }
        if let Some(last) = self.previous_last_frame
            && i128::from(timecode) <= last
        {
            self.fail(
                out,
                FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS,
                format!(
                    "Cluster at byte {cluster_at}: timecode {timecode} not above the previous fragment's last frame {last}"
                ),
            );
            return;
        }
        // Section 4.10: no producer timestamps in the future.
        let limit = now.saturating_add(self.cfg.max_future_ms);
        if producer_ms > limit {
            self.fail(
                out,
                INVALID_PRODUCER_TIMESTAMP,
                format!("Cluster at byte {cluster_at}: producer timestamp {producer_ms} ms is more than {} ms after now ({now})", self.cfg.max_future_ms),
            );
            return;
        }
        // Section 3: at most 5 fragments per second (of producer time: see the module docs).
        while self
            .recent_starts
            .front()
            .is_some_and(|&t| t.saturating_add(1000) <= producer_ms)
        {
            self.recent_starts.pop_front();
        }
        if self.recent_starts.len() >= self.cfg.max_fragments_per_second as usize {
            let max = self.cfg.max_fragments_per_second;
            self.fail(
                out,
                TOO_MANY_FRAGMENTS_PER_SECOND,
                format!("Cluster at byte {cluster_at}: more than {max} fragments within one second of producer time"),
            );
            return;
        }
        self.recent_starts.push_back(producer_ms);
        if let Some(size) = declared {
            let total = header_len.saturating_add(size);
            if total > self.cfg.max_fragment_bytes {
                let max = self.cfg.max_fragment_bytes;
                self.fail(
                    out,
                    MAX_FRAGMENT_SIZE_REACHED,
                    format!("Cluster at byte {cluster_at} declares {total} bytes, over {max}"),
                );
            }
        }
    }

    fn on_block_group(&mut self, body: &[u8], at: u64, out: &mut Vec<IngestEvent>) {
        let children = match ebml::children(body) {
            Ok(c) => c,
            Err(reason) => {
                self.fail(
                    out,
                    INVALID_MKV_DATA,
                    format!("BlockGroup at byte {at}: {reason}"),
                );
                return;
            }
        };
        let mut block = None;
        let mut duration = None;
        let mut referenced = false;
        for child in &children {
            match child.id {
                id::BLOCK if block.is_some() => {
                    self.fail(
                        out,
                        INVALID_MKV_DATA,
                        format!("BlockGroup at byte {at}: two Blocks"),
                    );
                    return;
                }
                id::BLOCK => block = Some(child.body),
                id::BLOCK_DURATION => match ebml::read_uint(child.body) {
                    Ok(d) => duration = Some(d),
                    Err(reason) => {
                        self.fail(
                            out,
                            INVALID_MKV_DATA,
                            format!("BlockGroup at byte {at}: {reason}"),
                        );
                        return;
                    }
                },
                id::REFERENCE_BLOCK => referenced = true,
                _ => {}
            }
        }
        let Some(block) = block else {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("BlockGroup at byte {at} without a Block"),
            );
            return;
        };
        match block_header(block) {
            Ok((track, rel, flags)) => {
                self.on_frame(track, rel, flags, !referenced, duration, at, out)
            }
            Err(reason) => self.fail(out, INVALID_MKV_DATA, format!("{reason} at byte {at}")),
        }
    }

    /// One frame of the open fragment.
    #[allow(clippy::too_many_arguments)]
    fn on_frame(
        &mut self,
        track: u64,
        relative: i16,
        flags: u8,
        keyframe: bool,
        duration: Option<u64>,
        at: u64,
        out: &mut Vec<IngestEvent>,
    ) {
        // Section 4.8: no lacing.
        if flags & 0x06 != 0 {
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("laced block at byte {at} (KVS takes one frame per block)"),
            );
            return;
        }
        // Section 4.7: block track numbers must be declared.
        let Some(index) = self.tracks.iter().position(|t| t.number == track) else {
            self.fail(
                out,
                TRACK_NUMBER_MISMATCH,
                format!("block at byte {at} for track {track}, which Tracks does not declare"),
            );
            return;
        };
        let previous_last = self.previous_last_frame;
        let scale = self.timecode_scale_ns;
        let default_duration = self.tracks[index]
            .default_duration_ns
            .map(|ns| i128::from(ns) / i128::from(scale.max(1)));
        let track_last = self.track_last_frame.get(index).copied().flatten();
        let track_interval = self.track_frame_interval.get(index).copied().flatten();
        let max_duration = self.cfg.max_fragment_duration_ms;
        let Some(frag) = self.fragment.as_mut() else {
            return;
        };
        let Some(cluster_tc) = frag.timecode else {
            return;
        };
        let absolute = i128::from(cluster_tc) + i128::from(relative);
        // Section 4.6 and 4.8: frames overlapping the previous fragment, or going back in time
        // within a track (B-frames), are 4004.
        let problem = if absolute < 0 || previous_last.is_some_and(|p| absolute <= p) {
            Some(format!(
                "frame at byte {at} (track {track}, timecode {absolute}) not after the previous fragment's last frame {previous_last:?}"
            ))
        } else {
            frag.last_frame_per_track[index]
                .filter(|&last| absolute < last)
                .map(|last| {
                    format!(
                        "frame at byte {at} (track {track}, timecode {absolute}) before the track's previous frame {last}: out-of-order presentation timestamps (B-frames)"
                    )
                })
        };
        if let Some(reason) = problem {
            self.fail(out, FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS, reason);
            return;
        }
        frag.last_frame_per_track[index] = Some(absolute);
        let interval = track_last
            .map(|last| absolute - last)
            .filter(|&gap| gap > 0)
            .or(track_interval);
        if let Some(slot) = self.track_last_frame.get_mut(index) {
            *slot = Some(absolute);
        }
        if let Some(slot) = self.track_frame_interval.get_mut(index) {
            *slot = interval;
        }
        frag.frames[index] = frag.frames[index].saturating_add(1);
        frag.first_frame_keyframe.get_or_insert(keyframe);
        let max_frame = frag.max_frame.map_or(absolute, |m| m.max(absolute));
        frag.max_frame = Some(max_frame);
        // The fragment's playback duration includes its last frame's own duration: the block's
        // BlockDuration, else the track's DefaultDuration, else (a SimpleBlock states none) the
        // track's frame interval so far.
        let frame_duration = duration
            .map(i128::from)
            .or(default_duration)
            .or(interval)
            .unwrap_or(0);
        let end = absolute.saturating_add(frame_duration);
        frag.max_frame_end = Some(frag.max_frame_end.map_or(end, |m| m.max(end)));
        // Section 3: at most 20 s per fragment.
        let span_ms = ticks_to_ms(max_frame - i128::from(cluster_tc), scale);
        if span_ms > max_duration {
            self.fail(
                out,
                MAX_FRAGMENT_DURATION_REACHED,
                format!("frame at byte {at} is {span_ms} ms after the Cluster timecode, over {max_duration} ms"),
            );
        }
    }

    /// Ends the open fragment (RECEIVED), checking that every declared track had a frame.
    fn complete_fragment(&mut self, out: &mut Vec<IngestEvent>) {
        let Some(frag) = self.fragment.take() else {
            return;
        };
        let Some(timecode) = frag.timecode else {
            let at = frag.offset;
            self.fail(
                out,
                INVALID_MKV_DATA,
                format!("Cluster at byte {at} has no Timecode"),
            );
            return;
        };
        // Section 4.7: every declared track needs a frame in every fragment.
        if let Some(index) = frag.frames.iter().position(|&n| n == 0) {
            let track = self.tracks[index].number;
            let at = frag.offset;
            self.fragment = Some(frag);
            self.fail(
                out,
                FRAMES_MISSING_FOR_TRACK,
                format!(
                    "fragment at byte {at} (timecode {timecode}) has no frame for track {track}"
                ),
            );
            return;
        }
        let cluster = match frag.known_header {
            Some(mut header) => {
                header.extend_from_slice(&frag.body);
                header
            }
            None => {
                let mut bytes = Vec::with_capacity(frag.body.len() + 12);
                ebml::write_element(&mut bytes, id::CLUSTER, &frag.body);
                bytes
            }
        };
        let duration_ms = frag.max_frame_end.map_or(0, |end| {
            ticks_to_ms(end - i128::from(timecode), self.timecode_scale_ns)
        });
        self.previous_last_frame = frag.max_frame.or(self.previous_last_frame);
        self.previous_cluster_timecode = Some(timecode);
        let frames_per_track = self
            .tracks
            .iter()
            .zip(&frag.frames)
            .map(|(t, &n)| (t.number, n))
            .collect();
        out.push(IngestEvent::FragmentCompleted(CompletedFragment {
            timecode,
            producer_timestamp_ms: frag.producer_timestamp_ms,
            duration_ms,
            size: cluster.len(),
            cluster: Bytes::from(cluster),
            frames_per_track,
            first_frame_keyframe: frag.first_frame_keyframe.unwrap_or(false),
            tags: frag.tags,
        }));
    }
}
