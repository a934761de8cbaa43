//! The cut policy: where a fragment starts and ends (cut points, the size, duration and rate
//! limits, late frames of other tracks), which timecodes it gets, and writing one fragment as one
//! unknown-size Cluster.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::demux::Frame;
use super::ebml::{self, UNKNOWN_SIZE, id};
use super::{
    DropReason, Fragment, Output, RefragmentConfig, TimecodeMode, Track, TrackFrames, TrackKind,
    Warning,
};

/// Upper bound of a SimpleBlock's bytes besides its payload: id, 8-byte size, 8-byte track
/// number vint, int16 timecode, flags. Used to keep fragments under the size limit.
const BLOCK_OVERHEAD: usize = 20;
/// Cluster id, 8-byte unknown size, Timecode element of up to 10 bytes.
const CLUSTER_OVERHEAD: usize = 24;
/// Block timecodes are int16 relative to their Cluster (docs/protocol.md §4.8).
const MAX_RELATIVE_TIMECODE: i64 = i16::MAX as i64;

/// Why a fragment was cut before its natural end.
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
pub(super) struct Cutter {
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
    pub(super) fn new(c: &RefragmentConfig) -> Self {
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

    pub(super) fn set_tracks(&mut self, tracks: &[Track], primary: usize) {
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
    }

    pub(super) fn drop_frame(&mut self, track: u64, reason: DropReason) {
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

    pub(super) fn on_frame(&mut self, f: Frame, tracks: &[Track], out: &mut VecDeque<Output>) {
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
        for x in old
            .frames
            .extract_if(.., |x| x.track != cut_track && x.time >= cut)
        {
            moved |= 1 << x.track;
            new.push(x);
        }
        if moved != 0 {
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

    pub(super) fn finish(&mut self, tracks: &[Track], out: &mut VecDeque<Output>) {
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

    /// A forced cut with no next frame (see `Refragmenter::flush`).
    pub(super) fn flush(&mut self, tracks: &[Track], out: &mut VecDeque<Output>) {
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
            f.payload.move_to(&mut chunks);
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
