//! Reading the input Matroska: the EBML header, the Segment, its Info and Tracks, Clusters and
//! their blocks, turned into [`Frame`]s with media times in milliseconds. What to do with them
//! (cut points, limits, output timecodes) is the consumer's business, behind [`Sink`].

use bytes::{Bytes, BytesMut};

use super::ebml::{self, HeaderParse, id};
use super::input::{Input, Payload};
use super::{
    DropReason, InvalidReason, KVS_MAX_TRACKS, MkvError, OUTPUT_TIMECODE_SCALE_NS,
    RefragmentConfig, Track, TrackKind,
};

/// Longest element header: a 4-byte id and an 8-byte size.
const MAX_HEADER_LEN: usize = 12;

/// The consumer of what [`Demuxer::drive`] finds, in input order.
pub(super) trait Sink {
    /// Whether the output header was written. From then on Info and Tracks are ignored: they
    /// cannot change what was already converted.
    fn header_written(&self) -> bool;
    /// A Tracks element was parsed; `primary` indexes the track that fragments start on (the
    /// first video track, else the first track).
    fn on_tracks(&mut self, tracks: &[Track], primary: usize);
    /// A Cluster starts; Info and Tracks are known.
    fn on_cluster(&mut self, info: &Info, tracks: &ParsedTracks);
    /// A frame of the declared `tracks`.
    fn on_frame(&mut self, frame: Frame, tracks: &[Track]);
    /// A frame of `track` (a track number) was dropped.
    fn on_drop(&mut self, track: u64, reason: DropReason);
}

/// An incremental Matroska reader: buffers at most one element whole (capped by
/// `max_element_size`, blocks also by `max_fragment_bytes`) and skips everything it does not
/// need without buffering it.
#[derive(Debug)]
pub(super) struct Demuxer {
    max_element_size: u64,
    max_fragment_bytes: usize,
    input: Input,
    state: State,
    /// Open master elements (Segment, Cluster), innermost last.
    stack: Vec<Open>,
    seen_ebml: bool,
    seen_segment: bool,
    info: Info,
    tracks: Option<ParsedTracks>,
    /// Per track index: DefaultDuration in ms, 0 when unknown.
    default_dur: Vec<i64>,
    cluster_timecode: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Expecting an element header.
    Header,
    /// Skipping an element's data without buffering it.
    Skip { remaining: u64 },
    /// Waiting until a whole element is buffered.
    Whole {
        id: u32,
        size: usize,
        header_len: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Open {
    id: u32,
    /// Input offset where the element ends; `None` for unknown size.
    end: Option<u64>,
}

/// What the input's Info says about the stream.
#[derive(Debug)]
pub(super) struct Info {
    /// Nanoseconds per input timecode tick.
    pub(super) timecode_scale_ns: u64,
    pub(super) segment_uid: Option<[u8; 16]>,
    pub(super) writing_app: Option<Bytes>,
}

/// The input's Tracks, parsed.
#[derive(Debug)]
pub(super) struct ParsedTracks {
    pub(super) tracks: Vec<Track>,
    /// The Tracks element to write: children filtered of Void and CRC-32.
    pub(super) element: Bytes,
}

impl Demuxer {
    pub(super) fn new(config: &RefragmentConfig) -> Self {
        Self {
            max_element_size: config.max_element_size,
            max_fragment_bytes: config.max_fragment_bytes,
            input: Input::default(),
            state: State::Header,
            stack: Vec::new(),
            seen_ebml: false,
            seen_segment: false,
            info: Info {
                timecode_scale_ns: 1_000_000,
                segment_uid: None,
                writing_app: None,
            },
            tracks: None,
            default_dur: Vec::new(),
            cluster_timecode: None,
        }
    }

    /// Appends a chunk of input; [`drive`](Self::drive) parses it.
    pub(super) fn push(&mut self, chunk: Bytes) {
        self.input.push(chunk);
    }

    /// Input offset of the next unparsed byte.
    pub(super) fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// At the end of input: [`MkvError::Truncated`] if it stopped inside an element.
    pub(super) fn truncated(&self) -> Option<MkvError> {
        match self.state {
            State::Header if self.input.len() == 0 => None,
            _ => Some(MkvError::Truncated {
                offset: self.input.offset(),
            }),
        }
    }

    /// The stream's Info (defaults until an Info element was read).
    pub(super) fn info(&self) -> &Info {
        &self.info
    }

    /// The Tracks, once parsed.
    pub(super) fn tracks(&self) -> Option<&ParsedTracks> {
        self.tracks.as_ref()
    }

    fn invalid(&self, offset: u64, reason: InvalidReason) -> MkvError {
        MkvError::Invalid { offset, reason }
    }

    /// Parses as much of the buffered input as is complete, handing what it finds to `sink`.
    pub(super) fn drive(&mut self, sink: &mut impl Sink) -> Result<(), MkvError> {
        loop {
            match self.state {
                State::Skip { remaining } => {
                    let n = remaining.min(self.input.len() as u64);
                    self.input.skip(n as usize);
                    if n < remaining {
                        self.state = State::Skip {
                            remaining: remaining - n,
                        };
                        return Ok(());
                    }
                    self.state = State::Header;
                }
                State::Whole {
                    id,
                    size,
                    header_len,
                } => {
                    if self.input.len() < header_len + size {
                        return Ok(());
                    }
                    self.state = State::Header;
                    self.on_whole(id, size, header_len, sink)?;
                }
                State::Header => {
                    self.close_ended();
                    if self.input.len() == 0 {
                        return Ok(());
                    }
                    let mut hb = [0u8; MAX_HEADER_LEN];
                    let n = self.input.peek(&mut hb);
                    let offset = self.input.offset();
                    match ebml::parse_header(&hb[..n]) {
                        HeaderParse::Incomplete => return Ok(()),
                        HeaderParse::BadId => {
                            return Err(self.invalid(offset, InvalidReason::BadElementId));
                        }
                        HeaderParse::BadSize => {
                            return Err(self.invalid(offset, InvalidReason::BadSize));
                        }
                        HeaderParse::Ok {
                            id,
                            size,
                            header_len,
                        } => {
                            self.on_element(id, size, header_len, sink)?;
                        }
                    }
                }
            }
        }
    }

    /// Pop known-size masters that end at the current offset.
    fn close_ended(&mut self) {
        let offset = self.input.offset();
        while let Some(top) = self.stack.last() {
            if top.end.is_some_and(|e| e <= offset) {
                self.pop();
            } else {
                break;
            }
        }
    }

    fn pop(&mut self) {
        if let Some(o) = self.stack.pop()
            && o.id == id::CLUSTER
        {
            self.cluster_timecode = None;
        }
    }

    fn on_element(
        &mut self,
        eid: u32,
        size: Option<u64>,
        header_len: usize,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let offset = self.input.offset();
        let parent = self.stack.last().copied();
        // An unknown-size Cluster ends at the first element that cannot be its child.
        if let Some(p) = parent
            && p.id == id::CLUSTER
            && p.end.is_none()
            && ebml::is_top_level(eid)
        {
            self.pop();
            return Ok(());
        }
        if (eid == id::EBML || eid == id::SEGMENT)
            && (self.seen_segment || (eid == id::EBML && self.seen_ebml) || !self.stack.is_empty())
        {
            return Err(MkvError::MultipleSegments { offset });
        }
        let data_start = offset + header_len as u64;
        let end = match size {
            Some(s) => {
                let end = data_start.checked_add(s);
                if let Some(pe) = parent.and_then(|p| p.end)
                    && end.is_none_or(|e| e > pe)
                {
                    return Err(
                        self.invalid(offset, InvalidReason::ChildOverrunsParent { id: eid })
                    );
                }
                end
            }
            None => parent.and_then(|p| p.end),
        };
        let parent_id = parent.map(|p| p.id);
        match (parent_id, eid) {
            (None, id::EBML) => self.need_whole(eid, size, header_len, self.max_element_size),
            (None, id::SEGMENT) => {
                if !self.seen_ebml {
                    return Err(
                        self.invalid(offset, InvalidReason::ExpectedEbmlHeader { found: eid })
                    );
                }
                self.seen_segment = true;
                self.enter(eid, end, header_len);
                Ok(())
            }
            (None, _) if !self.seen_ebml => {
                Err(self.invalid(offset, InvalidReason::ExpectedEbmlHeader { found: eid }))
            }
            (Some(id::SEGMENT), id::INFO | id::TRACKS) => {
                self.need_whole(eid, size, header_len, self.max_element_size)
            }
            (Some(id::SEGMENT), id::CLUSTER) => {
                let Some(tracks) = &self.tracks else {
                    return Err(self.invalid(offset, InvalidReason::ClusterBeforeTracks));
                };
                sink.on_cluster(&self.info, tracks);
                self.enter(eid, end, header_len);
                self.cluster_timecode = None;
                Ok(())
            }
            (Some(id::CLUSTER), id::TIMECODE) => self.need_whole(eid, size, header_len, 8),
            (Some(id::CLUSTER), id::SIMPLE_BLOCK | id::BLOCK_GROUP) => {
                let cap = self.max_element_size.min(self.max_fragment_bytes as u64);
                self.need_whole(eid, size, header_len, cap)
            }
            _ => {
                // Everything else is dropped (docs/protocol.md §5: SeekHead, Void, CRC-32, Cues, Tags,
                // Chapters, Attachments) without buffering, whatever its size.
                let Some(s) = size else {
                    return Err(
                        self.invalid(offset, InvalidReason::UnknownSizeNotAllowed { id: eid })
                    );
                };
                self.input.skip(header_len);
                self.state = State::Skip { remaining: s };
                Ok(())
            }
        }
    }

    fn enter(&mut self, eid: u32, end: Option<u64>, header_len: usize) {
        self.input.skip(header_len);
        self.stack.push(Open { id: eid, end });
    }

    fn need_whole(
        &mut self,
        eid: u32,
        size: Option<u64>,
        header_len: usize,
        cap: u64,
    ) -> Result<(), MkvError> {
        let offset = self.input.offset();
        let Some(size) = size else {
            return Err(self.invalid(offset, InvalidReason::UnknownSizeNotAllowed { id: eid }));
        };
        if size > cap {
            if eid == id::TIMECODE {
                return Err(self.invalid(offset, InvalidReason::BadInteger { id: eid }));
            }
            return Err(MkvError::ElementTooLarge {
                offset,
                id: eid,
                size,
                limit: cap,
            });
        }
        // `size <= cap`, which the builder keeps far below usize::MAX.
        self.state = State::Whole {
            id: eid,
            size: size as usize,
            header_len,
        };
        Ok(())
    }

    fn on_whole(
        &mut self,
        eid: u32,
        size: usize,
        header_len: usize,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let offset = self.input.offset();
        match eid {
            id::SIMPLE_BLOCK => return self.on_simple_block(offset, size, header_len, sink),
            id::EBML => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                self.on_ebml_header(offset, &data)?;
            }
            id::INFO => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                // Info after the first Cluster cannot change what was already converted.
                if !sink.header_written() {
                    self.on_info(offset, &data)?;
                }
            }
            id::TRACKS => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                if !sink.header_written() {
                    self.on_tracks(offset, &data, sink)?;
                }
            }
            id::TIMECODE => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                let tc = ebml::read_uint(&data)
                    .ok_or_else(|| self.invalid(offset, InvalidReason::BadInteger { id: eid }))?;
                self.cluster_timecode = Some(tc);
            }
            id::BLOCK_GROUP => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                self.on_block_group(offset, data, sink)?;
            }
            _ => self.input.skip(header_len + size),
        }
        Ok(())
    }

    fn on_ebml_header(&mut self, offset: u64, data: &[u8]) -> Result<(), MkvError> {
        let mut doc_type: Option<&[u8]> = None;
        for child in ebml::children(data) {
            let c = child.map_err(|eid| {
                self.invalid(offset, InvalidReason::ChildOverrunsParent { id: eid })
            })?;
            if c.id == id::DOC_TYPE {
                doc_type = Some(&data[c.data_start..c.end]);
            }
        }
        // DocType defaults to "matroska" when absent (EBML spec).
        let dt = doc_type.unwrap_or(b"matroska");
        let dt = dt.split(|&b| b == 0).next().unwrap_or_default();
        if dt != b"matroska" && dt != b"webm" {
            return Err(self.invalid(
                offset,
                InvalidReason::UnsupportedDocType(String::from_utf8_lossy(dt).into_owned()),
            ));
        }
        self.seen_ebml = true;
        Ok(())
    }

    fn on_info(&mut self, offset: u64, data: &Bytes) -> Result<(), MkvError> {
        for child in ebml::children(data) {
            let c = child.map_err(|eid| {
                self.invalid(offset, InvalidReason::ChildOverrunsParent { id: eid })
            })?;
            let d = &data[c.data_start..c.end];
            match c.id {
                id::TIMECODE_SCALE => {
                    let s = ebml::read_uint(d).ok_or_else(|| {
                        self.invalid(offset, InvalidReason::BadInteger { id: c.id })
                    })?;
                    if s == 0 {
                        return Err(self.invalid(offset, InvalidReason::ZeroTimecodeScale));
                    }
                    self.info.timecode_scale_ns = s;
                }
                id::SEGMENT_UID if d.len() == 16 => {
                    let mut uid = [0u8; 16];
                    uid.copy_from_slice(d);
                    self.info.segment_uid = Some(uid);
                }
                id::WRITING_APP => self.info.writing_app = Some(data.slice(c.data_start..c.end)),
                _ => {}
            }
        }
        Ok(())
    }

    fn on_tracks(
        &mut self,
        offset: u64,
        data: &Bytes,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let bad = |why| MkvError::Invalid {
            offset,
            reason: InvalidReason::BadTrackEntry(why),
        };
        let overrun = |eid| MkvError::Invalid {
            offset,
            reason: InvalidReason::ChildOverrunsParent { id: eid },
        };
        let mut tracks = Vec::new();
        let mut body = BytesMut::new();
        for child in ebml::children(data) {
            let c = child.map_err(overrun)?;
            if c.id != id::TRACK_ENTRY {
                continue;
            }
            let entry = &data[c.data_start..c.end];
            let mut number = None;
            let mut kind = TrackKind::Other(0);
            let mut codec_id = String::new();
            let mut default_duration_ns = None;
            let mut filtered = BytesMut::with_capacity(entry.len());
            for ec in ebml::children(entry) {
                let ec = ec.map_err(overrun)?;
                let d = &entry[ec.data_start..ec.end];
                match ec.id {
                    id::VOID | id::CRC32 => continue,
                    id::TRACK_NUMBER => number = ebml::read_uint(d),
                    id::TRACK_TYPE => {
                        kind = match ebml::read_uint(d) {
                            Some(1) => TrackKind::Video,
                            Some(2) => TrackKind::Audio,
                            Some(n) => TrackKind::Other(n),
                            None => return Err(bad("TrackType")),
                        }
                    }
                    id::CODEC_ID => {
                        let s = d.split(|&b| b == 0).next().unwrap_or_default();
                        codec_id = String::from_utf8_lossy(s).into_owned();
                    }
                    id::DEFAULT_DURATION => {
                        default_duration_ns = ebml::read_uint(d).filter(|&n| n > 0)
                    }
                    _ => {}
                }
                filtered.extend_from_slice(&entry[ec.start..ec.end]);
            }
            let number = number
                .filter(|&n| n > 0)
                .ok_or_else(|| bad("TrackNumber missing or 0"))?;
            if tracks.iter().any(|t: &Track| t.number == number) {
                return Err(bad("duplicate TrackNumber"));
            }
            tracks.push(Track {
                number,
                kind,
                codec_id,
                default_duration_ns,
            });
            ebml::put_bytes_element(&mut body, id::TRACK_ENTRY, &filtered);
        }
        if tracks.is_empty() {
            return Err(bad("Tracks holds no TrackEntry"));
        }
        if tracks.len() > KVS_MAX_TRACKS {
            return Err(MkvError::TooManyTracks {
                offset,
                count: tracks.len(),
                limit: KVS_MAX_TRACKS,
            });
        }
        let primary = tracks
            .iter()
            .position(|t| t.kind == TrackKind::Video)
            .unwrap_or(0);
        let mut element = BytesMut::with_capacity(body.len() + 12);
        ebml::put_bytes_element(&mut element, id::TRACKS, &body);
        self.default_dur = tracks
            .iter()
            .map(|t| {
                t.default_duration_ns
                    .map_or(0, |ns| i64::try_from(ns / 1_000_000).unwrap_or(0))
            })
            .collect();
        sink.on_tracks(&tracks, primary);
        self.tracks = Some(ParsedTracks {
            tracks,
            element: element.freeze(),
        });
        Ok(())
    }

    fn track_index(&self, number: u64) -> Option<usize> {
        self.tracks
            .as_ref()?
            .tracks
            .iter()
            .position(|t| t.number == number)
    }

    /// Media time in milliseconds of a block: (cluster timecode + relative) x TimecodeScale.
    fn media_ms(&self, offset: u64, rel: i16) -> Result<i64, MkvError> {
        let ctc = self
            .cluster_timecode
            .ok_or_else(|| self.invalid(offset, InvalidReason::MissingClusterTimecode))?;
        let ticks = i128::from(ctc) + i128::from(rel);
        ticks_to_ms(ticks, self.info.timecode_scale_ns)
            .ok_or_else(|| self.invalid(offset, InvalidReason::TimecodeOverflow))
    }

    fn on_simple_block(
        &mut self,
        offset: u64,
        size: usize,
        header_len: usize,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let mut hb = [0u8; 12];
        let n = self.input.peek_at(header_len, &mut hb[..size.min(12)]);
        let bh = parse_block_header(&hb[..n])
            .map_err(|why| self.invalid(offset, InvalidReason::BadBlock(why)))?;
        if bh.flags & 0x06 != 0 {
            self.input.skip(header_len);
            let data = self.input.take_contiguous(size);
            let keyframe = bh.flags & 0x80 != 0;
            return self.on_laced(offset, &bh, data, keyframe, None, sink);
        }
        let time = self.media_ms(offset, bh.rel)?;
        self.input.skip(header_len + bh.len);
        let payload = self.input.take_payload(size - bh.len);
        let Some(idx) = self.track_index(bh.track) else {
            sink.on_drop(bh.track, DropReason::UndeclaredTrack);
            return Ok(());
        };
        let dur = self.default_dur[idx];
        let frame = Frame {
            track: idx as u8,
            time,
            dur,
            keyframe: bh.flags & 0x80 != 0,
            flags: (bh.flags & 0x89) | u8::from(bh.flags & 0x80 != 0) << 7,
            payload,
        };
        self.push_frame(frame, sink);
        Ok(())
    }

    fn on_block_group(
        &mut self,
        offset: u64,
        data: Bytes,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let mut block = None;
        let mut has_reference = false;
        let mut duration = None;
        for child in ebml::children(&data) {
            let c = child.map_err(|eid| {
                self.invalid(offset, InvalidReason::ChildOverrunsParent { id: eid })
            })?;
            match c.id {
                id::BLOCK => block = Some(data.slice(c.data_start..c.end)),
                id::REFERENCE_BLOCK => has_reference = true,
                id::BLOCK_DURATION => duration = ebml::read_uint(&data[c.data_start..c.end]),
                _ => {}
            }
        }
        let Some(block) = block else {
            return Err(self.invalid(offset, InvalidReason::BadBlock("BlockGroup without Block")));
        };
        let bh = parse_block_header(&block)
            .map_err(|why| self.invalid(offset, InvalidReason::BadBlock(why)))?;
        // A Block's keyframe-ness is the absence of ReferenceBlock (Matroska spec).
        self.on_laced(offset, &bh, block, !has_reference, duration, sink)
    }

    /// A block held contiguously, laced or not.
    fn on_laced(
        &mut self,
        offset: u64,
        bh: &BlockHeader,
        data: Bytes,
        keyframe: bool,
        block_duration: Option<u64>,
        sink: &mut impl Sink,
    ) -> Result<(), MkvError> {
        let time = self.media_ms(offset, bh.rel)?;
        let Some(idx) = self.track_index(bh.track) else {
            sink.on_drop(bh.track, DropReason::UndeclaredTrack);
            return Ok(());
        };
        let scale = self.info.timecode_scale_ns;
        let block_dur = block_duration.and_then(|d| ticks_to_ms(i128::from(d), scale));
        let flags = (bh.flags & 0x09) | u8::from(keyframe) << 7;
        let body = data.slice(bh.len..);
        let lacing = bh.flags & 0x06;
        if lacing == 0 {
            let dur = block_dur.unwrap_or(self.default_dur[idx]);
            let payload = Payload::One(body);
            self.push_frame(
                Frame {
                    track: idx as u8,
                    time,
                    dur,
                    keyframe,
                    flags,
                    payload,
                },
                sink,
            );
            return Ok(());
        }
        let bad = |why| MkvError::Invalid {
            offset,
            reason: InvalidReason::BadLacing(why),
        };
        let (&count_minus_one, rest) = body.split_first().ok_or_else(|| bad("no frame count"))?;
        let count = usize::from(count_minus_one) + 1;
        let mut sizes = [0usize; 256];
        let mut pos = 1usize; // into body
        match lacing {
            0x02 => {
                for s in sizes.iter_mut().take(count - 1) {
                    loop {
                        let &b = body.get(pos).ok_or_else(|| bad("Xiph sizes truncated"))?;
                        pos += 1;
                        *s += usize::from(b);
                        if b != 255 {
                            break;
                        }
                    }
                }
            }
            0x06 => {
                if count > 1 {
                    let ebml::VintParse::Ok { value, len, .. } = ebml::parse_vint(&body[pos..])
                    else {
                        return Err(bad("EBML lace size"));
                    };
                    pos += len;
                    let mut prev = i64::try_from(value).map_err(|_| bad("EBML lace size"))?;
                    sizes[0] = usize::try_from(prev).map_err(|_| bad("EBML lace size"))?;
                    for s in sizes.iter_mut().take(count - 1).skip(1) {
                        let ebml::VintParse::Ok { value, len, .. } = ebml::parse_vint(&body[pos..])
                        else {
                            return Err(bad("EBML lace size"));
                        };
                        pos += len;
                        let bias = (1i64 << (7 * len - 1)) - 1;
                        prev = prev
                            .checked_add(value as i64 - bias)
                            .filter(|&v| v >= 0)
                            .ok_or_else(|| bad("negative EBML lace size"))?;
                        *s = prev as usize;
                    }
                }
            }
            _ => {
                if rest.len() % count != 0 {
                    return Err(bad("fixed lacing does not divide the block"));
                }
                sizes[..count].fill(rest.len() / count);
            }
        }
        let total: usize = sizes[..count - 1]
            .iter()
            .try_fold(0usize, |a, &s| a.checked_add(s))
            .ok_or_else(|| bad("sizes overflow"))?;
        let last = (body.len() - pos)
            .checked_sub(total)
            .ok_or_else(|| bad("sizes exceed the block"))?;
        sizes[count - 1] = last;
        let total_dur = block_dur.or_else(|| self.default_dur[idx].checked_mul(count as i64));
        let per = total_dur.map_or(0, |d| d / count as i64);
        for (i, &s) in sizes[..count].iter().enumerate() {
            let payload = Payload::One(body.slice(pos..pos + s));
            pos += s;
            let t = time + per * i as i64;
            // Only the first frame of a keyframe block is a random access point.
            let kf = keyframe
                && (i == 0
                    || self
                        .tracks
                        .as_ref()
                        .is_some_and(|t| t.tracks[idx].kind != TrackKind::Video));
            let fl = (flags & 0x7F) | u8::from(kf) << 7;
            self.push_frame(
                Frame {
                    track: idx as u8,
                    time: t,
                    dur: per,
                    keyframe: kf,
                    flags: fl,
                    payload,
                },
                sink,
            );
        }
        Ok(())
    }

    fn push_frame(&self, f: Frame, sink: &mut impl Sink) {
        let tracks = &self
            .tracks
            .as_ref()
            .expect("frames only after Tracks")
            .tracks;
        sink.on_frame(f, tracks);
    }
}

/// Media times beyond this many milliseconds (about 285 000 years) are refused, so that sums
/// and differences of a few times can never overflow `i64`.
const MAX_MEDIA_MS: i64 = 1 << 53;

fn ticks_to_ms(ticks: i128, scale_ns: u64) -> Option<i64> {
    let ms = if scale_ns == OUTPUT_TIMECODE_SCALE_NS {
        ticks
    } else {
        let ns = ticks.checked_mul(i128::from(scale_ns))?;
        // Round to nearest: monotonic, so frame order survives the conversion.
        (ns + i128::from(OUTPUT_TIMECODE_SCALE_NS / 2))
            .div_euclid(i128::from(OUTPUT_TIMECODE_SCALE_NS))
    };
    i64::try_from(ms).ok().filter(|m| m.abs() <= MAX_MEDIA_MS)
}

#[derive(Debug, Clone, Copy)]
struct BlockHeader {
    track: u64,
    rel: i16,
    flags: u8,
    /// Bytes of track vint, timecode and flags.
    len: usize,
}

fn parse_block_header(b: &[u8]) -> Result<BlockHeader, &'static str> {
    let (track, vlen) = match ebml::parse_vint(b) {
        ebml::VintParse::Ok { value, len, .. } => (value, len),
        ebml::VintParse::Incomplete => return Err("shorter than its header"),
        ebml::VintParse::Bad => return Err("invalid track number"),
    };
    let rest = b.get(vlen..vlen + 3).ok_or("shorter than its header")?;
    Ok(BlockHeader {
        track,
        rel: i16::from_be_bytes([rest[0], rest[1]]),
        flags: rest[2],
        len: vlen + 3,
    })
}

/// One frame on its way to a fragment.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    /// Index into the declared tracks.
    pub(super) track: u8,
    /// Media time, ms, before rebasing.
    pub(super) time: i64,
    /// Duration in ms when known (BlockDuration or DefaultDuration), else 0.
    pub(super) dur: i64,
    pub(super) keyframe: bool,
    /// Output SimpleBlock flags: keyframe, invisible, discardable; never lacing.
    pub(super) flags: u8,
    pub(super) payload: Payload,
}
