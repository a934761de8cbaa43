//! `-progress pipe:2 -nostats` parsing and the bounded stderr ring.

use std::collections::VecDeque;
use std::time::Duration;

/// Longest stderr line kept; longer lines are cut (with `…`) so a hostile input that makes
/// ffmpeg print a huge line cannot grow memory.
pub const MAX_LINE_LEN: usize = 1024;

/// Where a job stands, from ffmpeg's `-progress` blocks (one about every 0.5 s).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Media time written so far (`out_time_us`).
    pub out_time: Duration,
    /// Input duration, when ffprobe knew it (never for reader inputs).
    pub duration: Option<Duration>,
    /// Video frames written (`frame`).
    pub frames: u64,
    /// Output bit rate in kbit/s (`bitrate`), when ffmpeg knows it.
    pub bitrate_kbps: Option<f64>,
    /// Bytes written (`total_size`).
    pub total_size: u64,
    /// Encoding speed as a multiple of real time (`speed`), when known.
    pub speed: Option<f64>,
    /// True once ffmpeg printed `progress=end`.
    pub finished: bool,
    /// Set when ffmpeg refused to copy the streams and the job restarted as a transcode:
    /// ffmpeg's reason (the same as [`crate::Decision::copy_refused`]). The other fields then
    /// count the transcode, from zero.
    pub copy_refused: Option<String>,
}

impl Progress {
    /// `out_time / duration`, clamped to `0..=1`, when the duration is known.
    pub fn fraction(&self) -> Option<f64> {
        let d = self.duration?.as_secs_f64();
        (d > 0.0).then(|| (self.out_time.as_secs_f64() / d).clamp(0.0, 1.0))
    }
}

/// What one stderr line was.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// A `key=value` progress line; `true` when it closed a block (`progress=...`).
    Progress(bool),
    /// Anything else: an ffmpeg log line.
    Log,
}

/// Applies one `-progress` line to `p`.
pub(crate) fn apply_progress_line(p: &mut Progress, line: &str) -> Line {
    let Some((key, value)) = line.split_once('=') else {
        return Line::Log;
    };
    let value = value.trim();
    match key {
        "frame" => p.frames = value.parse().unwrap_or(p.frames),
        "bitrate" => {
            p.bitrate_kbps = value
                .strip_suffix("kbits/s")
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| v.is_finite());
        }
        "total_size" => p.total_size = value.parse().unwrap_or(p.total_size),
        // out_time_ms is also microseconds (an ffmpeg quirk); out_time_us says so.
        "out_time_us" => {
            if let Ok(us) = value.parse::<i64>() {
                p.out_time = Duration::from_micros(u64::try_from(us).unwrap_or(0));
            }
        }
        "speed" => {
            p.speed = value
                .strip_suffix('x')
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| v.is_finite() && *v > 0.0);
        }
        "progress" => {
            p.finished = value == "end";
            return Line::Progress(true);
        }
        "fps" | "out_time_ms" | "out_time" | "dup_frames" | "drop_frames" => {}
        k if k.starts_with("stream_") && k.ends_with("_q") => {}
        _ => return Line::Log,
    }
    Line::Progress(false)
}

/// Cuts a line to [`MAX_LINE_LEN`] bytes on a char boundary.
pub(crate) fn truncate_line(line: &str) -> String {
    if line.len() <= MAX_LINE_LEN {
        return line.to_owned();
    }
    let mut end = MAX_LINE_LEN;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// The last `capacity` log lines.
#[derive(Debug)]
pub(crate) struct StderrRing {
    lines: VecDeque<String>,
    capacity: usize,
}

impl StderrRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(crate) fn clear(&mut self) {
        self.lines.clear();
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// Splits a byte stream into lines on `\n` or `\r`, holding at most [`MAX_LINE_LEN`] bytes of a
/// line: the rest of an overlong line is dropped until its end.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete, non-empty line.
    pub(crate) fn push(&mut self, data: &[u8], mut emit: impl FnMut(&str)) {
        for &b in data {
            if b == b'\n' || b == b'\r' {
                self.flush(&mut emit);
            } else if self.buf.len() < MAX_LINE_LEN {
                self.buf.push(b);
            } else {
                self.overlong = true;
            }
        }
    }

    /// Emits what is left (EOF without a final newline).
    pub(crate) fn flush(&mut self, mut emit: impl FnMut(&str)) {
        if !self.buf.is_empty() {
            let mut s = String::from_utf8_lossy(&self.buf).into_owned();
            if self.overlong {
                s.push('…');
            }
            if !s.trim().is_empty() {
                emit(s.trim_end());
            }
        }
        self.buf.clear();
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BLOCK: &str = "frame=30\nfps=0.00\nstream_0_0_q=-1.0\nbitrate= 873.5kbits/s\n\
        total_size=111475\nout_time_us=1021000\nout_time_ms=1021000\nout_time=00:00:01.021000\n\
        dup_frames=0\ndrop_frames=0\nspeed=   2.5x\nprogress=continue\n";

    #[test]
    fn parses_a_progress_block() {
        let mut p = Progress::default();
        let mut ends = 0;
        for line in BLOCK.lines() {
            match apply_progress_line(&mut p, line) {
                Line::Progress(true) => ends += 1,
                Line::Progress(false) => {}
                Line::Log => panic!("{line} taken for a log line"),
            }
        }
        assert_eq!(ends, 1);
        assert_eq!(p.frames, 30);
        assert_eq!(p.out_time, Duration::from_micros(1_021_000));
        assert_eq!(p.bitrate_kbps, Some(873.5));
        assert_eq!(p.speed, Some(2.5));
        assert_eq!(p.total_size, 111_475);
        assert!(!p.finished);
        apply_progress_line(&mut p, "bitrate=N/A");
        apply_progress_line(&mut p, "speed=N/A");
        apply_progress_line(&mut p, "progress=end");
        assert_eq!((p.bitrate_kbps, p.speed, p.finished), (None, None, true));
    }

    #[test]
    fn log_lines_are_not_progress() {
        let mut p = Progress::default();
        for l in [
            "[mov,mp4 @ 0x1] moov atom not found",
            "x.mp4: Invalid data found when processing input",
            "Metadata: title=a=b",
            "",
        ] {
            assert_eq!(apply_progress_line(&mut p, l), Line::Log, "{l}");
        }
        assert_eq!(p, Progress::default());
    }

    #[test]
    fn fraction_needs_duration() {
        let mut p = Progress {
            out_time: Duration::from_secs(3),
            ..Progress::default()
        };
        assert_eq!(p.fraction(), None);
        p.duration = Some(Duration::from_secs(2));
        assert_eq!(p.fraction(), Some(1.0));
    }

    #[test]
    fn ring_keeps_the_last_lines() {
        let mut r = StderrRing::new(3);
        for i in 0..10 {
            r.push(i.to_string());
        }
        assert_eq!(r.snapshot(), ["7", "8", "9"]);
        let mut z = StderrRing::new(0);
        z.push("x".into());
        assert!(z.snapshot().is_empty());
    }

    #[test]
    fn overlong_lines_are_capped() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        let long = vec![b'a'; MAX_LINE_LEN * 10];
        s.push(&long, |l| out.push(l.to_owned()));
        s.push(b"\nok\n", |l| out.push(l.to_owned()));
        assert_eq!(out.len(), 2);
        assert!(out[0].len() <= MAX_LINE_LEN + '…'.len_utf8());
        assert_eq!(out[1], "ok");
        assert!(truncate_line(&"é".repeat(MAX_LINE_LEN)).len() <= MAX_LINE_LEN + 3);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_lines(cuts in proptest::collection::vec(0usize..BLOCK.len(), 0..20)) {
            let text = format!("[x @ 0x1] warning one\r{BLOCK}tail");
            let mut whole = Vec::new();
            let mut s = LineSplitter::default();
            s.push(text.as_bytes(), |l| whole.push(l.to_owned()));
            s.flush(|l| whole.push(l.to_owned()));
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut s = LineSplitter::default();
            let mut prev = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                s.push(&text.as_bytes()[prev..c], |l| parts.push(l.to_owned()));
                prev = c;
            }
            s.flush(|l| parts.push(l.to_owned()));
            prop_assert_eq!(whole, parts);
        }
    }
}
