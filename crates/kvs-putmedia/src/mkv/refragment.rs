//! The re-fragmenter: an incremental EBML reader feeding a KVS cut policy.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::ebml::{self, HeaderParse, UNKNOWN_SIZE, id};
use super::input::{Input, Payload};
use super::{
    DropReason, Fragment, Header, InvalidReason, KVS_MAX_TRACKS, MkvError,
    OUTPUT_TIMECODE_SCALE_NS, Output, RefragmentConfig, TimecodeMode, Track, TrackFrames,
    TrackKind, Warning,
};

/// Longest element header: a 4-byte id and an 8-byte size.
const MAX_HEADER_LEN: usize = 12;
/// Upper bound of a SimpleBlock's bytes besides its payload: id, 8-byte size, 8-byte track
/// number vint, int16 timecode, flags. Used to keep fragments under the size limit.
const BLOCK_OVERHEAD: usize = 20;
/// Cluster id, 8-byte unknown size, Timecode element of up to 10 bytes.
const CLUSTER_OVERHEAD: usize = 24;
/// Block timecodes are int16 relative to their Cluster (docs/protocol.md §4.8).
const MAX_RELATIVE_TIMECODE: i64 = i16::MAX as i64;

/// Turns an MKV byte stream, in any chunking, into KVS-shaped media: one [`Header`], then
/// [`Fragment`]s, each one unknown-size Cluster.
///
/// Cut policy (docs/protocol.md §3 and §4.5): a fragment starts on a keyframe of the first video track
/// (for audio-only media, on any frame of the first track); it is cut at the first keyframe once
/// it lasts [`target_fragment_duration`](RefragmentConfig::target_fragment_duration), never
/// lasts more than the maximum (20 s) nor holds more than the maximum bytes (50 MB), and two
/// fragment starts are at least 200 ms apart (5 fragments/s). When no keyframe comes before a
/// limit the fragment is cut anyway and a [`Warning`] says so.
///
/// Timecodes (docs/protocol.md §4.6, §5): frames of the other tracks are assigned to fragments by
/// timestamp, not by position, so ffmpeg's held-back audio packet (timed below the keyframe that
/// follows it) joins the fragment it belongs to; a fragment waits for such late frames for at
/// most [`late_frame_window`](RefragmentConfig::late_frame_window) of media time. Every Cluster
/// timecode is strictly greater than the previous fragment's last frame; a frame that would
/// break that is raised by the missing ticks (the official producer's one-tick compensation)
/// and reported.
///
/// Memory: one buffered element (capped by `max_element_size`) plus at most two fragments
/// (open, and waiting for late frames), each capped by `max_fragment_bytes`, held as slices of
/// the input.
#[derive(Debug)]
pub struct Refragmenter {
    config: RefragmentConfig,
    input: Input,
    state: State,
    /// Open master elements (Segment, Cluster), innermost last.
    stack: Vec<Open>,
    seen_ebml: bool,
    seen_segment: bool,
    info: Info,
    tracks: Option<ParsedTracks>,
    header: Option<Header>,
    cluster_timecode: Option<u64>,
    failed: Option<MkvError>,
    finished: bool,
    out: VecDeque<Output>,
    cutter: Cutter,
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

#[derive(Debug)]
struct Info {
    timecode_scale_ns: u64,
    segment_uid: Option<[u8; 16]>,
    writing_app: Option<Bytes>,
}

#[derive(Debug)]
struct ParsedTracks {
    tracks: Vec<Track>,
    /// The Tracks element to write: children filtered of Void and CRC-32.
    element: Bytes,
}

impl Refragmenter {
    /// A re-fragmenter with a validated configuration.
    pub fn new(config: RefragmentConfig) -> Self {
        Self {
            cutter: Cutter::new(&config),
            config,
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
            header: None,
            cluster_timecode: None,
            failed: None,
            finished: false,
            out: VecDeque::new(),
        }
    }

    /// Feed the next chunk of input, of any size. Outputs become available through
    /// [`next_output`](Self::next_output).
    ///
    /// # Errors
    /// A typed [`MkvError`] with the input byte offset; the re-fragmenter then stays failed.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished {
            return Err(MkvError::Finished);
        }
        self.input.push(chunk);
        let r = self.drive();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// End of input: emits the last fragment(s).
    ///
    /// # Errors
    /// [`MkvError::Truncated`] when the input stops inside an element (the complete frames
    /// before it are still emitted), [`MkvError::NoTracks`] when no Tracks element came.
    pub fn finish(&mut self) -> Result<(), MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let truncated = match self.state {
            State::Header if self.input.len() == 0 => None,
            _ => Some(MkvError::Truncated {
                offset: self.input.offset(),
            }),
        };
        let r = if self.tracks.is_some() {
            self.emit_header();
            let tracks = &self.tracks.as_ref().expect("checked").tracks;
            self.cutter.finish(tracks, &mut self.out);
            truncated.map_or(Ok(()), Err)
        } else {
            Err(truncated.unwrap_or(MkvError::NoTracks {
                offset: self.input.offset(),
            }))
        };
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Closes the open fragment now, because the source paused: the fragment waiting for late
    /// frames and the open one are emitted, so that they can be sent and acknowledged without
    /// waiting for media that may not come soon (docs/protocol.md §3, "Idle"). Input may continue
    /// afterwards: the next fragment starts at the next keyframe (for audio-only media, the next
    /// frame); video frames before it are dropped and reported
    /// ([`DropReason::AfterFlushBeforeKeyframe`]), and audio frames join that fragment.
    ///
    /// Returns whether a fragment was emitted. Does nothing before the Tracks element or after
    /// [`finish`](Self::finish).
    ///
    /// # Errors
    /// The error that failed the re-fragmenter earlier, if any.
    pub fn flush(&mut self) -> Result<bool, MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished || self.tracks.is_none() {
            return Ok(false);
        }
        self.emit_header();
        let before = self.out.len();
        let tracks = &self.tracks.as_ref().expect("checked").tracks;
        self.cutter.flush(tracks, &mut self.out);
        Ok(self
            .out
            .iter()
            .skip(before)
            .any(|o| matches!(o, Output::Fragment(_))))
    }

    /// The next output item; drain after every `push` and `finish`.
    pub fn next_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The stream header, once parsed; re-send it at the start of every new connection.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    fn invalid(&self, offset: u64, reason: InvalidReason) -> MkvError {
        MkvError::Invalid { offset, reason }
    }

    fn drive(&mut self) -> Result<(), MkvError> {
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
                    self.on_whole(id, size, header_len)?;
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
                            self.on_element(id, size, header_len)?;
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
            (None, id::EBML) => {
                self.need_whole(eid, size, header_len, self.config.max_element_size)
            }
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
                self.need_whole(eid, size, header_len, self.config.max_element_size)
            }
            (Some(id::SEGMENT), id::CLUSTER) => {
                if self.tracks.is_none() {
                    return Err(self.invalid(offset, InvalidReason::ClusterBeforeTracks));
                }
                self.emit_header();
                self.enter(eid, end, header_len);
                self.cluster_timecode = None;
                Ok(())
            }
            (Some(id::CLUSTER), id::TIMECODE) => self.need_whole(eid, size, header_len, 8),
            (Some(id::CLUSTER), id::SIMPLE_BLOCK | id::BLOCK_GROUP) => {
                let cap = self
                    .config
                    .max_element_size
                    .min(self.config.max_fragment_bytes as u64);
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

    fn on_whole(&mut self, eid: u32, size: usize, header_len: usize) -> Result<(), MkvError> {
        let offset = self.input.offset();
        match eid {
            id::SIMPLE_BLOCK => return self.on_simple_block(offset, size, header_len),
            id::EBML => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                self.on_ebml_header(offset, &data)?;
            }
            id::INFO => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                // Info after the first Cluster cannot change what was already converted.
                if self.header.is_none() {
                    self.on_info(offset, &data)?;
                }
            }
            id::TRACKS => {
                self.input.skip(header_len);
                let data = self.input.take_contiguous(size);
                if self.header.is_none() {
                    self.on_tracks(offset, &data)?;
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
                self.on_block_group(offset, data)?;
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

    fn on_tracks(&mut self, offset: u64, data: &Bytes) -> Result<(), MkvError> {
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
        self.cutter.set_tracks(&tracks, primary);
        self.tracks = Some(ParsedTracks {
            tracks,
            element: element.freeze(),
        });
        Ok(())
    }

    fn emit_header(&mut self) {
        if self.header.is_some() {
            return;
        }
        let Some(t) = &self.tracks else { return };
        let uid = self
            .config
            .segment_uid
            .or(self.info.segment_uid)
            .unwrap_or_else(|| stable_uid(&t.element));
        let mut b = BytesMut::with_capacity(128 + t.element.len());
        let mut e = BytesMut::new();
        ebml::put_uint_element(&mut e, 0x4286, 1); // EBMLVersion
        ebml::put_uint_element(&mut e, 0x42F7, 1); // EBMLReadVersion
        ebml::put_uint_element(&mut e, 0x42F2, 4); // EBMLMaxIDLength
        ebml::put_uint_element(&mut e, 0x42F3, 8); // EBMLMaxSizeLength
        ebml::put_bytes_element(&mut e, id::DOC_TYPE, b"matroska");
        ebml::put_uint_element(&mut e, 0x4287, 4); // DocTypeVersion
        ebml::put_uint_element(&mut e, 0x4285, 2); // DocTypeReadVersion
        ebml::put_bytes_element(&mut b, id::EBML, &e);
        ebml::put_id(&mut b, id::SEGMENT);
        b.put_slice(&UNKNOWN_SIZE);
        let mut info = BytesMut::new();
        ebml::put_uint_element(&mut info, id::TIMECODE_SCALE, OUTPUT_TIMECODE_SCALE_NS);
        ebml::put_bytes_element(&mut info, id::SEGMENT_UID, &uid);
        ebml::put_bytes_element(&mut info, id::MUXING_APP, b"kvs-putmedia");
        let app = self.info.writing_app.as_deref().unwrap_or(b"kvs-putmedia");
        ebml::put_bytes_element(&mut info, id::WRITING_APP, app);
        ebml::put_bytes_element(&mut b, id::INFO, &info);
        b.put_slice(&t.element);
        let h = Header {
            bytes: b.freeze(),
            tracks: t.tracks.clone(),
            segment_uid: uid,
            input_timecode_scale_ns: self.info.timecode_scale_ns,
        };
        self.header = Some(h.clone());
        self.out.push_back(Output::Header(h));
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
    ) -> Result<(), MkvError> {
        let mut hb = [0u8; 12];
        let n = self.input.peek_at(header_len, &mut hb[..size.min(12)]);
        let bh = parse_block_header(&hb[..n])
            .map_err(|why| self.invalid(offset, InvalidReason::BadBlock(why)))?;
        if bh.flags & 0x06 != 0 {
            self.input.skip(header_len);
            let data = self.input.take_contiguous(size);
            let keyframe = bh.flags & 0x80 != 0;
            return self.on_laced(offset, &bh, data, keyframe, None);
        }
        let time = self.media_ms(offset, bh.rel)?;
        self.input.skip(header_len + bh.len);
        let payload = self.input.take_payload(size - bh.len);
        let Some(idx) = self.track_index(bh.track) else {
            self.cutter
                .drop_frame(bh.track, DropReason::UndeclaredTrack);
            return Ok(());
        };
        let dur = self.cutter.default_dur[idx];
        let frame = Frame {
            track: idx as u8,
            time,
            dur,
            keyframe: bh.flags & 0x80 != 0,
            flags: (bh.flags & 0x89) | u8::from(bh.flags & 0x80 != 0) << 7,
            payload,
        };
        self.push_frame(frame);
        Ok(())
    }

    fn on_block_group(&mut self, offset: u64, data: Bytes) -> Result<(), MkvError> {
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
        self.on_laced(offset, &bh, block, !has_reference, duration)
    }

    /// A block held contiguously, laced or not.
    fn on_laced(
        &mut self,
        offset: u64,
        bh: &BlockHeader,
        data: Bytes,
        keyframe: bool,
        block_duration: Option<u64>,
    ) -> Result<(), MkvError> {
        let time = self.media_ms(offset, bh.rel)?;
        let Some(idx) = self.track_index(bh.track) else {
            self.cutter
                .drop_frame(bh.track, DropReason::UndeclaredTrack);
            return Ok(());
        };
        let scale = self.info.timecode_scale_ns;
        let block_dur = block_duration.and_then(|d| ticks_to_ms(i128::from(d), scale));
        let flags = (bh.flags & 0x09) | u8::from(keyframe) << 7;
        let body = data.slice(bh.len..);
        let lacing = bh.flags & 0x06;
        if lacing == 0 {
            let dur = block_dur.unwrap_or(self.cutter.default_dur[idx]);
            let payload = Payload::One(body);
            self.push_frame(Frame {
                track: idx as u8,
                time,
                dur,
                keyframe,
                flags,
                payload,
            });
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
        let total_dur =
            block_dur.or_else(|| self.cutter.default_dur[idx].checked_mul(count as i64));
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
            self.push_frame(Frame {
                track: idx as u8,
                time: t,
                dur: per,
                keyframe: kf,
                flags: fl,
                payload,
            });
        }
        Ok(())
    }

    fn push_frame(&mut self, f: Frame) {
        let tracks = &self
            .tracks
            .as_ref()
            .expect("frames only after Tracks")
            .tracks;
        self.cutter.on_frame(f, tracks, &mut self.out);
    }
}

/// A stable SegmentUID for inputs without one: a hash of the Tracks element, so that every
/// connection of one input gets the same (docs/protocol.md §4.3).
fn stable_uid(tracks: &[u8]) -> [u8; 16] {
    let fnv = |seed: u64| {
        tracks.iter().fold(seed, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        })
    };
    let mut uid = [0u8; 16];
    uid[..8].copy_from_slice(&fnv(0xCBF2_9CE4_8422_2325).to_be_bytes());
    uid[8..].copy_from_slice(&fnv(0x6C62_272E_07BB_0142).to_be_bytes());
    uid
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
struct Frame {
    /// Index into the declared tracks.
    track: u8,
    /// Media time, ms, before rebasing.
    time: i64,
    /// Duration in ms when known (BlockDuration or DefaultDuration), else 0.
    dur: i64,
    keyframe: bool,
    /// Output SimpleBlock flags: keyframe, invisible, discardable; never lacing.
    flags: u8,
    payload: Payload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forced {
    Duration,
    Size(usize),
}

/// A fragment being assembled.
#[derive(Debug)]
struct Frag {
    frames: Vec<Frame>,
    /// Media time of the frame that started it.
    start: i64,
    min_time: i64,
    max_end: i64,
    /// Upper bound of the bytes it will take.
    bytes: usize,
    starts_on_cut_point: bool,
    /// Why it was cut before its natural end, reported when it is emitted.
    forced: Option<Forced>,
}

impl Frag {
    fn new(first: Frame, starts_on_cut_point: bool) -> Self {
        let mut f = Self {
            start: first.time,
            min_time: first.time,
            max_end: first.time,
            frames: Vec::with_capacity(64),
            bytes: CLUSTER_OVERHEAD,
            starts_on_cut_point,
            forced: None,
        };
        f.push(first);
        f
    }

    fn push(&mut self, f: Frame) {
        self.min_time = self.min_time.min(f.time);
        self.max_end = self.max_end.max(f.time.saturating_add(f.dur));
        self.bytes += f.payload.len() + BLOCK_OVERHEAD;
        self.frames.push(f);
    }

    fn recompute(&mut self) {
        self.min_time = self
            .frames
            .iter()
            .map(|f| f.time)
            .min()
            .unwrap_or(self.start);
        self.max_end = self
            .frames
            .iter()
            .map(|f| f.time.saturating_add(f.dur))
            .max()
            .unwrap_or(self.start);
        self.bytes = CLUSTER_OVERHEAD
            + self
                .frames
                .iter()
                .map(|f| f.payload.len() + BLOCK_OVERHEAD)
                .sum::<usize>();
    }
}

#[derive(Debug)]
struct Pending {
    frag: Frag,
    /// Media time of the cut that closed it (the next fragment's start).
    cut: i64,
    /// Track whose frame made the cut.
    cut_track: u8,
    /// Tracks (bit per index) that have not yet shown a frame at or after the cut.
    need: u8,
}

/// The cut policy.
#[derive(Debug)]
struct Cutter {
    target_ms: i64,
    max_ms: i64,
    max_bytes: usize,
    min_interval_ms: i64,
    late_window_ms: i64,
    mode: TimecodeMode,
    primary: usize,
    primary_is_video: bool,
    kinds: Vec<TrackKind>,
    numbers: Vec<u64>,
    /// Track numbers encoded as vints, as blocks carry them.
    number_vints: Vec<Bytes>,
    default_dur: Vec<i64>,
    /// Tracks (bit per index) seen so far.
    seen: u8,
    /// Frames before the first cut point.
    preroll: Vec<Frame>,
    open: Option<Frag>,
    pending: Option<Pending>,
    /// Highest frame time (media ms) of the last emitted fragment.
    last_max: Option<i64>,
    /// Media time that maps to output 0 (Relative) or `origin_epoch_ms` (Absolute).
    origin: Option<i64>,
    drops: Vec<(u64, DropReason, u64)>,
    /// A flush closed the last fragment and no cut point came since.
    after_flush: bool,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Cutter {
    fn new(c: &RefragmentConfig) -> Self {
        Self {
            target_ms: ms(c.target_fragment_duration),
            max_ms: ms(c.max_fragment_duration),
            max_bytes: c.max_fragment_bytes,
            min_interval_ms: ms(c.min_fragment_interval),
            late_window_ms: ms(c.late_frame_window),
            mode: c.timecode_mode,
            primary: 0,
            primary_is_video: false,
            kinds: Vec::new(),
            numbers: Vec::new(),
            number_vints: Vec::new(),
            default_dur: Vec::new(),
            seen: 0,
            preroll: Vec::new(),
            open: None,
            pending: None,
            last_max: None,
            origin: None,
            drops: Vec::new(),
            after_flush: false,
        }
    }

    fn set_tracks(&mut self, tracks: &[Track], primary: usize) {
        self.primary = primary;
        self.primary_is_video = tracks[primary].kind == TrackKind::Video;
        self.kinds = tracks.iter().map(|t| t.kind).collect();
        self.numbers = tracks.iter().map(|t| t.number).collect();
        self.number_vints = tracks
            .iter()
            .map(|t| {
                let mut b = BytesMut::with_capacity(8);
                ebml::put_size(&mut b, t.number);
                b.freeze()
            })
            .collect();
        self.default_dur = tracks
            .iter()
            .map(|t| {
                t.default_duration_ns
                    .map_or(0, |ns| i64::try_from(ns / 1_000_000).unwrap_or(0))
            })
            .collect();
    }

    fn drop_frame(&mut self, track: u64, reason: DropReason) {
        match self
            .drops
            .iter_mut()
            .find(|d| d.0 == track && d.1 == reason)
        {
            Some(d) => d.2 += 1,
            None => self.drops.push((track, reason, 1)),
        }
    }

    fn is_cut_point(&self, f: &Frame) -> bool {
        usize::from(f.track) == self.primary && (f.keyframe || !self.primary_is_video)
    }

    /// Whether adding `f` to `frag` would break a limit.
    fn exceeds(&self, frag: &Frag, f: &Frame) -> Option<Forced> {
        exceeds(self.max_bytes, self.max_ms, frag, f)
    }

    fn on_frame(&mut self, f: Frame, tracks: &[Track], out: &mut VecDeque<Output>) {
        self.seen |= 1 << f.track;
        if self.open.is_none() {
            return self.on_preroll(f);
        }
        if let Some(p) = &mut self.pending
            && f.track != p.cut_track
        {
            if f.time < p.cut
                && f.time >= p.frag.start
                && exceeds(self.max_bytes, self.max_ms, &p.frag, &f).is_none()
            {
                p.frag.push(f);
                return;
            }
            if f.time >= p.cut {
                p.need &= !(1 << f.track);
            }
        }
        if let Some(p) = &self.pending
            && (p.need == 0
                || self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.max_end >= p.cut + self.late_window_ms))
        {
            self.release_pending(tracks, out);
        }
        let open = self.open.as_ref().expect("checked");
        let span = f.time - open.start;
        let exceeds = self.exceeds(open, &f);
        if self.is_cut_point(&f)
            && span >= self.min_interval_ms
            && (span >= self.target_ms || exceeds.is_some())
        {
            self.cut(f, None, tracks, out);
        } else if let Some(why) = exceeds {
            self.cut(f, Some(why), tracks, out);
        } else {
            self.open.as_mut().expect("checked").push(f);
        }
    }

    fn on_preroll(&mut self, f: Frame) {
        if self.is_cut_point(&f) {
            self.after_flush = false;
            let mut frag = Frag::new(f, true);
            for p in self.preroll.drain(..) {
                frag.push(p);
            }
            self.open = Some(frag);
            return;
        }
        if usize::from(f.track) == self.primary {
            // Video before the first keyframe cannot be decoded.
            let reason = if self.after_flush {
                DropReason::AfterFlushBeforeKeyframe
            } else {
                DropReason::BeforeFirstKeyframe
            };
            self.drop_frame(self.numbers[usize::from(f.track)], reason);
            return;
        }
        self.preroll.push(f);
        let first = self.preroll[0].time;
        let last = self.preroll.last().map_or(first, |l| l.time);
        let bytes: usize = self
            .preroll
            .iter()
            .map(|p| p.payload.len() + BLOCK_OVERHEAD)
            .sum();
        if last - first > self.max_ms.min(MAX_RELATIVE_TIMECODE) / 2 || bytes > self.max_bytes / 2 {
            // No keyframe for long: start without one rather than buffer without bound.
            let mut it = self.preroll.drain(..);
            let mut frag = Frag::new(it.next().expect("non-empty"), false);
            for p in it {
                frag.push(p);
            }
            // Reported with this fragment: it starts without a keyframe.
            frag.forced = Some(Forced::Duration);
            self.open = Some(frag);
        }
    }

    fn cut(
        &mut self,
        f: Frame,
        forced: Option<Forced>,
        tracks: &[Track],
        out: &mut VecDeque<Output>,
    ) {
        let cut = f.time;
        let cut_track = f.track;
        let starts_on_cut_point = self.is_cut_point(&f);
        let mut new = Frag::new(f, starts_on_cut_point);
        let mut old = self.open.take().expect("cut with an open fragment");
        old.forced = forced;
        // Frames of other tracks timed at or after the cut belong to the new fragment.
        let mut moved = 0u8;
        if old
            .frames
            .iter()
            .any(|x| x.track != cut_track && x.time >= cut)
        {
            let mut keep = Vec::with_capacity(old.frames.len());
            for x in old.frames.drain(..) {
                if x.track != cut_track && x.time >= cut {
                    moved |= 1 << x.track;
                    new.push(x);
                } else {
                    keep.push(x);
                }
            }
            old.frames = keep;
            old.recompute();
        }
        self.open = Some(new);
        if self.pending.is_some() {
            self.release_pending(tracks, out);
        }
        let need = self.seen & !(1 << cut_track) & !moved;
        self.pending = Some(Pending {
            frag: old,
            cut,
            cut_track,
            need,
        });
        if need == 0 {
            self.release_pending(tracks, out);
        }
    }

    fn release_pending(&mut self, tracks: &[Track], out: &mut VecDeque<Output>) {
        if let Some(p) = self.pending.take() {
            self.emit(p.frag, Some(p.cut), tracks, out);
        }
    }

    fn finish(&mut self, tracks: &[Track], out: &mut VecDeque<Output>) {
        if self.open.is_none() && !self.preroll.is_empty() {
            let mut it = std::mem::take(&mut self.preroll).into_iter();
            let mut frag = Frag::new(it.next().expect("non-empty"), false);
            for p in it {
                frag.push(p);
            }
            self.open = Some(frag);
        }
        self.release_pending(tracks, out);
        if let Some(o) = self.open.take() {
            self.emit(o, None, tracks, out);
        }
        self.flush_drops(out);
    }

    /// A forced cut with no next frame (see [`Refragmenter::flush`]).
    fn flush(&mut self, tracks: &[Track], out: &mut VecDeque<Output>) {
        self.release_pending(tracks, out);
        if let Some(o) = self.open.take() {
            self.emit(o, None, tracks, out);
            self.after_flush = true;
            if let Some(Output::Fragment(f)) = out.back() {
                let w = Warning::ClosedByPause {
                    fragment_timecode: f.timecode(),
                    duration: f.duration(),
                };
                out.push_back(Output::Warning(w));
            }
        }
    }

    fn flush_drops(&mut self, out: &mut VecDeque<Output>) {
        for (track, reason, count) in self.drops.drain(..) {
            out.push_back(Output::Warning(Warning::FramesDropped {
                track,
                count,
                reason,
            }));
        }
    }

    fn emit(
        &mut self,
        mut frag: Frag,
        next_start: Option<i64>,
        tracks: &[Track],
        out: &mut VecDeque<Output>,
    ) {
        self.flush_drops(out);
        if frag.frames.is_empty() {
            return;
        }
        // docs/protocol.md §4.6: strictly above the previous fragment's last frame.
        let floor = self.last_max.map(|m| m + 1);
        let c = floor.map_or(frag.min_time, |fl| frag.min_time.max(fl));
        let origin = *self.origin.get_or_insert(c);
        let base: i64 = match self.mode {
            TimecodeMode::Relative => 0,
            TimecodeMode::Absolute { origin_epoch_ms } => {
                i64::try_from(origin_epoch_ms).unwrap_or(i64::MAX)
            }
        };
        // One conversion from input time to output timecode, saturating: hostile timecodes must
        // not overflow (debug and fuzz builds would panic).
        let signed_out = |t: i64| base.saturating_add(t.saturating_sub(origin));
        let to_out = |t: i64| u64::try_from(signed_out(t)).unwrap_or(0);
        let cluster_tc = to_out(c);
        if let Some(why) = frag.forced {
            out.push_back(Output::Warning(match why {
                Forced::Duration => Warning::NoKeyframeBeforeMaxDuration {
                    fragment_timecode: cluster_tc,
                    max: Duration::from_millis(self.max_ms as u64),
                },
                Forced::Size(bytes) => Warning::FragmentSizeLimit {
                    fragment_timecode: cluster_tc,
                    bytes,
                    limit: self.max_bytes,
                },
            }));
        }
        let mut arena =
            BytesMut::with_capacity(CLUSTER_OVERHEAD + frag.frames.len() * BLOCK_OVERHEAD);
        ebml::put_id(&mut arena, id::CLUSTER);
        arena.put_slice(&UNKNOWN_SIZE);
        ebml::put_uint_element(&mut arena, id::TIMECODE, cluster_tc);
        let mut chunks = Vec::with_capacity(1 + frag.frames.len() * 2);
        chunks.push(arena.split().freeze());
        let mut max_time = c;
        let mut counts: Vec<TrackFrames> = Vec::with_capacity(tracks.len());
        let mut adjusted = Vec::new();
        for f in &mut frag.frames {
            if f.time < c {
                adjusted.push((
                    self.numbers[usize::from(f.track)],
                    signed_out(f.time),
                    cluster_tc,
                ));
                f.time = c;
            }
            max_time = max_time.max(f.time);
            let rel = (f.time - c).min(MAX_RELATIVE_TIMECODE) as i16;
            let number = self.numbers[usize::from(f.track)];
            let tn = &self.number_vints[usize::from(f.track)];
            let body_len = tn.len() + 3 + f.payload.len();
            ebml::put_id(&mut arena, id::SIMPLE_BLOCK);
            ebml::put_size(&mut arena, body_len as u64);
            arena.put_slice(tn);
            arena.put_i16(rel);
            arena.put_u8(f.flags);
            chunks.push(arena.split().freeze());
            f.payload.append_to(&mut chunks);
            match counts.iter_mut().find(|t| t.track == number) {
                Some(t) => t.frames += 1,
                None => counts.push(TrackFrames {
                    track: number,
                    frames: 1,
                }),
            }
        }
        for (track, from, to) in adjusted {
            out.push_back(Output::Warning(Warning::TimecodeAdjusted {
                track,
                from,
                to,
            }));
        }
        let end = next_start.unwrap_or(frag.max_end).max(max_time);
        let duration = Duration::from_millis(u64::try_from(end - c).unwrap_or(0));
        if frag.forced.is_some() && ms(duration) < self.min_interval_ms {
            out.push_back(Output::Warning(Warning::FragmentRateLimit {
                fragment_timecode: cluster_tc,
                duration,
            }));
        }
        for (i, t) in tracks.iter().enumerate() {
            if matches!(self.kinds[i], TrackKind::Video | TrackKind::Audio)
                && !counts.iter().any(|c| c.track == t.number)
            {
                out.push_back(Output::Warning(Warning::TrackMissingFromFragment {
                    fragment_timecode: cluster_tc,
                    track: t.number,
                }));
            }
        }
        self.last_max = Some(max_time);
        let len = chunks.iter().map(Bytes::len).sum();
        let first = &frag.frames[0];
        out.push_back(Output::Fragment(Fragment {
            timecode: cluster_tc,
            duration,
            first_frame_timecode: to_out(first.time),
            last_frame_timecode: to_out(max_time),
            starts_with_keyframe: frag.starts_on_cut_point && first.keyframe,
            len,
            chunks,
            tracks: counts,
        }));
    }
}

/// Whether adding `f` to `frag` would break the size limit, the duration limit, or the int16
/// range of block timecodes (docs/protocol.md §4.8).
fn exceeds(max_bytes: usize, max_ms: i64, frag: &Frag, f: &Frame) -> Option<Forced> {
    if frag.bytes + f.payload.len() + BLOCK_OVERHEAD > max_bytes {
        return Some(Forced::Size(frag.bytes));
    }
    let end = frag.max_end.max(f.time.saturating_add(f.dur));
    if end.saturating_sub(frag.start) > max_ms
        || f.time.saturating_sub(frag.min_time) > MAX_RELATIVE_TIMECODE
        || frag.max_end.saturating_sub(f.time.min(frag.min_time)) > MAX_RELATIVE_TIMECODE
    {
        return Some(Forced::Duration);
    }
    None
}
