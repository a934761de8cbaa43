//! The re-fragmenter: the incremental Matroska reader ([`demux`](super::demux)) feeding the KVS
//! cut policy ([`cut`](super::cut)), and the output header.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::cut::Cutter;
use super::demux::{Demuxer, Frame, Info, ParsedTracks, Sink};
use super::ebml::{self, UNKNOWN_SIZE, id};
use super::{
    DropReason, Header, MkvError, OUTPUT_TIMECODE_SCALE_NS, Output, RefragmentConfig, Track,
};

/// Turns an MKV byte stream, in any chunking, into KVS-shaped media: one [`Header`], then
/// [`Fragment`](super::Fragment)s, each one unknown-size Cluster.
///
/// Cut policy (docs/protocol.md §3 and §4.5): a fragment starts on a keyframe of the first video track
/// (for audio-only media, on any frame of the first track); it is cut at the first keyframe once
/// it lasts [`target_fragment_duration`](RefragmentConfig::target_fragment_duration), never
/// lasts more than the maximum (20 s) nor holds more than the maximum bytes (50 MB), and two
/// fragment starts are at least 200 ms apart (5 fragments/s). When no keyframe comes before a
/// limit the fragment is cut anyway and a [`Warning`](super::Warning) says so.
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
    demux: Demuxer,
    emitter: Emitter,
    failed: Option<MkvError>,
    finished: bool,
}

/// The output side: the header, the cut policy and the outputs not yet taken.
#[derive(Debug)]
struct Emitter {
    /// Forced SegmentUID, from the configuration.
    segment_uid: Option<[u8; 16]>,
    header: Option<Header>,
    cutter: Cutter,
    out: VecDeque<Output>,
}

impl Refragmenter {
    /// A re-fragmenter with a validated configuration.
    pub fn new(config: RefragmentConfig) -> Self {
        Self {
            demux: Demuxer::new(&config),
            emitter: Emitter {
                segment_uid: config.segment_uid,
                header: None,
                cutter: Cutter::new(&config),
                out: VecDeque::new(),
            },
            failed: None,
            finished: false,
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
        self.demux.push(chunk);
        let r = self.demux.drive(&mut self.emitter);
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
        let truncated = self.demux.truncated();
        let r = if let Some(tracks) = self.demux.tracks() {
            let e = &mut self.emitter;
            e.emit_header(self.demux.info(), tracks);
            e.cutter.finish(&tracks.tracks, &mut e.out);
            truncated.map_or(Ok(()), Err)
        } else {
            Err(truncated.unwrap_or(MkvError::NoTracks {
                offset: self.demux.offset(),
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
        if self.finished {
            return Ok(false);
        }
        let Some(tracks) = self.demux.tracks() else {
            return Ok(false);
        };
        let e = &mut self.emitter;
        e.emit_header(self.demux.info(), tracks);
        let before = e.out.len();
        e.cutter.flush(&tracks.tracks, &mut e.out);
        Ok(e.out
            .iter()
            .skip(before)
            .any(|o| matches!(o, Output::Fragment(_))))
    }

    /// The next output item; drain after every `push` and `finish`.
    pub fn next_output(&mut self) -> Option<Output> {
        self.emitter.out.pop_front()
    }

    /// The stream header, once parsed; re-send it at the start of every new connection.
    pub fn header(&self) -> Option<&Header> {
        self.emitter.header.as_ref()
    }
}

impl Emitter {
    /// Writes the header once, from the input's Info and Tracks.
    fn emit_header(&mut self, input: &Info, t: &ParsedTracks) {
        if self.header.is_some() {
            return;
        }
        let uid = self
            .segment_uid
            .or(input.segment_uid)
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
        let app = input.writing_app.as_deref().unwrap_or(b"kvs-putmedia");
        ebml::put_bytes_element(&mut info, id::WRITING_APP, app);
        ebml::put_bytes_element(&mut b, id::INFO, &info);
        b.put_slice(&t.element);
        let h = Header {
            bytes: b.freeze(),
            tracks: t.tracks.clone(),
            segment_uid: uid,
            input_timecode_scale_ns: input.timecode_scale_ns,
        };
        self.header = Some(h.clone());
        self.out.push_back(Output::Header(h));
    }
}

impl Sink for Emitter {
    fn header_written(&self) -> bool {
        self.header.is_some()
    }

    fn on_tracks(&mut self, tracks: &[Track], primary: usize) {
        self.cutter.set_tracks(tracks, primary);
    }

    fn on_cluster(&mut self, info: &Info, tracks: &ParsedTracks) {
        self.emit_header(info, tracks);
    }

    fn on_frame(&mut self, frame: Frame, tracks: &[Track]) {
        self.cutter.on_frame(frame, tracks, &mut self.out);
    }

    fn on_drop(&mut self, track: u64, reason: DropReason) {
        self.cutter.drop_frame(track, reason);
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
