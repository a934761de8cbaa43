//! What ffprobe says about an input.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::error::{Error, Result, StderrTail, Tool};
use crate::input::Input;

/// How much of the input the keyframe scan reads. Longer than the 20 s KVS fragment maximum
/// (docs/protocol.md §3) so a GOP over the limit is seen as such.
pub const KEYFRAME_SCAN_WINDOW: Duration = Duration::from_secs(30);

/// The KVS maximum fragment duration (docs/protocol.md §3: fragments last 1 s to 20 s).
pub const MAX_FRAGMENT_DURATION: Duration = Duration::from_secs(20);

/// Kind of an input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamKind {
    /// Video (cover art is video with [`StreamInfo::attached_pic`] set).
    Video,
    /// Audio.
    Audio,
    /// Subtitles.
    Subtitle,
    /// Data (timecode tracks, GPS...).
    Data,
    /// Attachments (fonts...).
    Attachment,
    /// Anything else ffprobe reports.
    Other,
}

/// One stream of the input, as ffprobe reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// Index in the input (`-map 0:INDEX`).
    pub index: usize,
    /// Stream kind.
    pub kind: StreamKind,
    /// ffprobe's codec name (`h264`, `aac`, `hevc`, `vp9`, `opus`...); `None` when ffmpeg has no
    /// decoder for it.
    pub codec: Option<String>,
    /// Codec profile (`Baseline`, `High`, `LC`...).
    pub profile: Option<String>,
    /// Video width.
    pub width: Option<u32>,
    /// Video height.
    pub height: Option<u32>,
    /// Pixel format (`yuv420p`, `yuv422p10le`...).
    pub pix_fmt: Option<String>,
    /// ffprobe's `has_b_frames` (the decoder's reorder delay; above 0 means B-frames).
    pub has_b_frames: u32,
    /// Average frame rate, frames per second.
    pub avg_frame_rate: Option<f64>,
    /// Audio channels.
    pub channels: Option<u32>,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Display rotation in degrees, normalised to 0, 90, 180 or 270 (phone videos).
    pub rotation: u32,
    /// True for cover art (`disposition.attached_pic`), which is not a video track.
    pub attached_pic: bool,
    /// Size of the codec's out-of-band configuration (ffprobe's `extradata_size`; 0 when
    /// ffprobe prints none). AAC read from ADTS framing (MPEG-TS, `.aac` files) has none: the
    /// configuration travels in every frame header instead of once in the container.
    pub extradata_size: u32,
}

/// Keyframe statistics from reading the packets of the first video stream (no decoding).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyframeStats {
    /// Media time covered by the scan (at most [`KEYFRAME_SCAN_WINDOW`]).
    pub scanned: Duration,
    /// Video packets read.
    pub packets: usize,
    /// Keyframes seen.
    pub keyframes: usize,
    /// Longest distance between keyframes, including from the last keyframe to the end of the
    /// scan (a lower bound for an open GOP); `None` without packets.
    pub max_interval: Option<Duration>,
    /// True when presentation timestamps go backwards in decode order, i.e. frames are
    /// reordered (B-frames), which KVS refuses (docs/protocol.md §4.8).
    pub reordered: bool,
}

/// The result of [`probe`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Probe {
    /// Container format as ffprobe names it (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`...).
    pub format: String,
    /// Total duration, when the container says.
    pub duration: Option<Duration>,
    /// Overall bit rate in bit/s, when known.
    pub bit_rate: Option<u64>,
    /// When the media was recorded: the container's `creation_time` tag (MP4/MOV `mvhd`,
    /// Matroska `DateUTC`), when present and valid.
    pub creation_time: Option<std::time::SystemTime>,
    /// All streams, in input order.
    pub streams: Vec<StreamInfo>,
    /// Keyframe statistics of [`Probe::video`]; `None` without video, or when the job's profile
    /// is `SampleParity` (which always transcodes, so the scan is skipped).
    pub keyframes: Option<KeyframeStats>,
}

impl Probe {
    /// The first real video stream (cover art excluded).
    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams
            .iter()
            .find(|s| s.kind == StreamKind::Video && !s.attached_pic)
    }

    /// The first audio stream.
    pub fn audio(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.kind == StreamKind::Audio)
    }

    /// True when the video has B-frames (by the decoder's reorder delay or by the packets).
    pub fn has_b_frames(&self) -> bool {
        self.video().is_some_and(|v| v.has_b_frames > 0)
            || self.keyframes.as_ref().is_some_and(|k| k.reordered)
    }

    /// The estimated keyframe interval (see [`KeyframeStats::max_interval`]).
    pub fn keyframe_interval(&self) -> Option<Duration> {
        self.keyframes.as_ref().and_then(|k| k.max_interval)
    }
}

#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    format: Option<RawFormat>,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Deserialize)]
struct RawFormat {
    #[serde(default)]
    format_name: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    bit_rate: Option<String>,
    #[serde(default)]
    tags: Option<RawFormatTags>,
}

#[derive(Deserialize)]
struct RawFormatTags {
    #[serde(default)]
    creation_time: Option<String>,
}

#[derive(Deserialize)]
struct RawStream {
    index: usize,
    #[serde(default)]
    codec_type: Option<String>,
    #[serde(default)]
    codec_name: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
    #[serde(default)]
    pix_fmt: Option<String>,
    #[serde(default)]
    has_b_frames: Option<u32>,
    #[serde(default)]
    avg_frame_rate: Option<String>,
    #[serde(default)]
    channels: Option<u32>,
    #[serde(default)]
    sample_rate: Option<String>,
    #[serde(default)]
    disposition: Option<RawDisposition>,
    #[serde(default)]
    tags: Option<RawTags>,
    #[serde(default)]
    side_data_list: Vec<RawSideData>,
    #[serde(default)]
    extradata_size: Option<u32>,
}

#[derive(Deserialize)]
struct RawDisposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct RawTags {
    #[serde(default)]
    rotate: Option<String>,
}

#[derive(Deserialize)]
struct RawSideData {
    #[serde(default)]
    rotation: Option<f64>,
}

fn parse_rate(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (d != 0.0 && n > 0.0 && (n / d).is_finite()).then_some(n / d)
}

fn parse_secs(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..1e12).contains(&v).then(|| Duration::from_secs_f64(v))
}

fn normalise_rotation(deg: f64) -> u32 {
    if !deg.is_finite() {
        return 0;
    }
    // Display matrices say -90 for a phone held upright; the picture turns 90 either way.
    let r = (deg.round() as i64).rem_euclid(360);
    u32::try_from(r).unwrap_or(0)
}

/// Parses `ffprobe -print_format json -show_format -show_streams` output.
pub(crate) fn parse_probe_json(json: &[u8]) -> std::result::Result<Probe, serde_json::Error> {
    let raw: RawProbe = serde_json::from_slice(json)?;
    let format = raw.format.as_ref();
    let streams = raw
        .streams
        .into_iter()
        .map(|s| {
            let kind = match s.codec_type.as_deref() {
                Some("video") => StreamKind::Video,
                Some("audio") => StreamKind::Audio,
                Some("subtitle") => StreamKind::Subtitle,
                Some("data") => StreamKind::Data,
                Some("attachment") => StreamKind::Attachment,
                _ => StreamKind::Other,
            };
            let rotation = s
                .side_data_list
                .iter()
                .find_map(|d| d.rotation)
                .or_else(|| s.tags.as_ref()?.rotate.as_deref()?.trim().parse().ok())
                .map_or(0, normalise_rotation);
            StreamInfo {
                index: s.index,
                kind,
                codec: s.codec_name.filter(|c| !c.is_empty() && c != "none"),
                profile: s.profile,
                width: s.width.filter(|w| *w > 0),
                height: s.height.filter(|h| *h > 0),
                pix_fmt: s.pix_fmt,
                has_b_frames: s.has_b_frames.unwrap_or(0),
                avg_frame_rate: s.avg_frame_rate.as_deref().and_then(parse_rate),
                channels: s.channels,
                sample_rate: s.sample_rate.as_deref().and_then(|r| r.parse().ok()),
                rotation,
                attached_pic: s.disposition.is_some_and(|d| d.attached_pic != 0),
                extradata_size: s.extradata_size.unwrap_or(0),
            }
        })
        .collect();
    Ok(Probe {
        format: format
            .and_then(|f| f.format_name.clone())
            .unwrap_or_default(),
        duration: format
            .and_then(|f| f.duration.as_deref())
            .and_then(parse_secs),
        bit_rate: format
            .and_then(|f| f.bit_rate.as_deref())
            .and_then(|b| b.parse().ok()),
        creation_time: format
            .and_then(|f| f.tags.as_ref()?.creation_time.as_deref())
            .and_then(parse_utc),
        streams,
        keyframes: None,
    })
}

/// Parses ffprobe's `creation_time` (`2024-05-01T12:34:56.123456Z`, UTC) into a time; `None`
/// for anything else (a crafted file can put any text there).
fn parse_utc(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let num = |v: &str| -> Option<i64> {
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse().ok())?
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (hh, mm, ss) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
        num(&digits)?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    Some(
        std::time::UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_micros(u64::try_from(micros).ok()?),
    )
}

/// Parses `ffprobe -show_entries packet=pts_time,dts_time,flags -of compact=p=0` lines.
pub(crate) fn parse_packets(text: &str) -> KeyframeStats {
    let mut packets = 0usize;
    let mut keyframes = 0usize;
    let mut first: Option<f64> = None;
    let mut last_time: Option<f64> = None;
    let mut last_key: Option<f64> = None;
    let mut max_gap = 0f64;
    let mut max_pts = f64::NEG_INFINITY;
    let mut reordered = false;
    for line in text.lines() {
        let mut pts = None;
        let mut dts = None;
        let mut key = false;
        for field in line.split('|') {
            match field.split_once('=') {
                Some(("pts_time", v)) => pts = v.parse::<f64>().ok().filter(|v| v.is_finite()),
                Some(("dts_time", v)) => dts = v.parse::<f64>().ok().filter(|v| v.is_finite()),
                Some(("flags", v)) => key = v.starts_with('K'),
                _ => {}
            }
        }
        let Some(t) = pts.or(dts) else { continue };
        packets += 1;
        if let Some(p) = pts {
            if p < max_pts {
                reordered = true;
            }
            max_pts = max_pts.max(p);
        }
        first = Some(first.map_or(t, |f: f64| f.min(t)));
        last_time = Some(last_time.map_or(t, |l: f64| l.max(t)));
        if key {
            keyframes += 1;
            if let Some(k) = last_key {
                max_gap = max_gap.max(t - k);
            }
            last_key = Some(t);
        }
    }
    let (scanned, max_interval) = match (first, last_time) {
        (Some(f), Some(l)) => {
            let open_gap = l - last_key.unwrap_or(f);
            let gap = max_gap.max(open_gap);
            (
                Duration::from_secs_f64((l - f).clamp(0.0, 1e9)),
                Some(Duration::from_secs_f64(gap.clamp(0.0, 1e9))),
            )
        }
        _ => (Duration::ZERO, None),
    };
    KeyframeStats {
        scanned,
        packets,
        keyframes,
        max_interval,
        reordered,
    }
}

pub(crate) struct ProbeConfig<'a> {
    pub ffprobe: &'a Path,
    pub timeout: Duration,
    pub stderr_lines: usize,
    /// Read video packets to estimate the keyframe interval; only copy decisions need it, and
    /// on a URL it downloads up to [`KEYFRAME_SCAN_WINDOW`] of media.
    pub scan_keyframes: bool,
}

/// Bound on what ffprobe may print: a hostile input with thousands of streams must not make us
/// buffer without limit.
const MAX_PROBE_OUTPUT: u64 = 8 << 20;

async fn run_ffprobe(
    cfg: &ProbeConfig<'_>,
    input: &Input,
    args: &[&str],
) -> Result<(std::process::ExitStatus, Vec<u8>, StderrTail)> {
    let name = input.name();
    let arg = crate::input::input_arg(input);
    let mut cmd = Command::new(cfg.ffprobe);
    cmd.args(["-v", "error", "-hide_banner"])
        .args(args)
        .args(crate::input::url_args(input))
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| crate::error::spawn_error(Tool::Ffprobe, cfg.ffprobe, &name, e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let redact = crate::input::Redactor::new(input);
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut so = (&mut stdout).take(MAX_PROBE_OUTPUT);
        let mut se = (&mut stderr).take(MAX_PROBE_OUTPUT);
        let (r1, r2) = tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err));
        r1.and(r2).map_err(|e| Error::Io {
            input: name.clone(),
            bytes: 0,
            source: e,
        })?;
        let status = child.wait().await.map_err(|e| Error::Io {
            input: name.clone(),
            bytes: 0,
            source: e,
        })?;
        Ok((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(cfg.timeout, work).await {
        Ok(r) => r?,
        // `child` is dropped here with kill_on_drop.
        Err(_) => {
            return Err(Error::ProbeTimeout {
                input: name,
                waited: cfg.timeout,
            });
        }
    };
    let text = String::from_utf8_lossy(&err);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| redact.apply(&crate::progress::truncate_line(l)))
        .collect();
    if lines.len() > cfg.stderr_lines {
        lines.drain(..lines.len() - cfg.stderr_lines);
    }
    Ok((status, out, StderrTail(lines)))
}

/// Runs ffprobe on `input`: format, streams, and a packet scan of the first video stream over
/// [`KEYFRAME_SCAN_WINDOW`] (demuxing only, no decoding, so it is cheap even for HD).
///
/// Errors: [`Error::ToolMissing`], [`Error::UnreadableInput`] when ffprobe cannot open the input,
/// [`Error::ProbeTimeout`]. A [`Input::Reader`] cannot be probed without consuming it and gives
/// [`Error::InvalidConfig`].
pub async fn probe(input: &Input) -> Result<Probe> {
    probe_with(
        &ProbeConfig {
            ffprobe: Path::new("ffprobe"),
            timeout: Duration::from_secs(30),
            stderr_lines: 20,
            scan_keyframes: true,
        },
        input,
    )
    .await
}

pub(crate) async fn probe_with(cfg: &ProbeConfig<'_>, input: &Input) -> Result<Probe> {
    let name = input.name();
    if !input.is_probeable() {
        return Err(Error::InvalidConfig {
            reason: format!("{name}: a reader input cannot be probed without consuming it"),
        });
    }
    let (status, out, stderr) = run_ffprobe(
        cfg,
        input,
        &["-print_format", "json", "-show_format", "-show_streams"],
    )
    .await?;
    if !status.success() {
        let reason = stderr
            .lines()
            .last()
            .cloned()
            .unwrap_or_else(|| format!("ffprobe {status}"));
        return Err(Error::UnreadableInput {
            input: name,
            reason,
            stderr,
        });
    }
    let mut probe = parse_probe_json(&out).map_err(|source| Error::ProbeOutput {
        input: name.clone(),
        source,
    })?;
    if let Some(video) = probe.video().filter(|_| cfg.scan_keyframes) {
        let window = format!("%+{}", KEYFRAME_SCAN_WINDOW.as_secs());
        let index = video.index.to_string();
        let (status, out, _) = run_ffprobe(
            cfg,
            input,
            &[
                "-select_streams",
                &index,
                "-read_intervals",
                &window,
                "-show_entries",
                "packet=pts_time,dts_time,flags",
                "-of",
                "compact=p=0",
            ],
        )
        .await?;
        if status.success() {
            probe.keyframes = Some(parse_packets(&String::from_utf8_lossy(&out)));
        }
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_time_is_parsed_as_utc_and_garbage_is_none() {
        let t = parse_utc("2024-05-01T12:34:56.123456Z").unwrap();
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_714_566_896);
        assert_eq!(d.subsec_micros(), 123_456);
        assert_eq!(
            parse_utc("1970-01-01T00:00:00Z"),
            Some(std::time::UNIX_EPOCH)
        );
        assert_eq!(
            parse_utc("2000-03-01T00:00:00.5Z")
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            951_868_800_500
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-05-01 12:00:00",
            "x-y-zTa:b:cZ",
            "2024-05-01T12:34:56+02:00",
            "-1-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
        let json = br#"{"streams":[],"format":{"format_name":"mov","tags":{"creation_time":"2024-05-01T12:34:56.000000Z"}}}"#;
        assert_eq!(
            parse_probe_json(json).unwrap().creation_time,
            parse_utc("2024-05-01T12:34:56Z")
        );
    }

    #[test]
    fn parses_ffprobe_json() {
        let json = br#"{"streams":[
          {"index":0,"codec_name":"h264","codec_type":"video","profile":"High","width":1280,"height":720,
           "pix_fmt":"yuv420p","has_b_frames":2,"avg_frame_rate":"30/1",
           "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]},
          {"index":1,"codec_name":"aac","codec_type":"audio","channels":6,"sample_rate":"48000"},
          {"index":2,"codec_name":"mjpeg","codec_type":"video","disposition":{"attached_pic":1}}],
          "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"2.005000","bit_rate":"1234"}}"#;
        let p = parse_probe_json(json).unwrap();
        let v = p.video().unwrap();
        assert_eq!((v.index, v.rotation, v.has_b_frames), (0, 270, 2));
        assert_eq!(v.avg_frame_rate, Some(30.0));
        assert_eq!(p.audio().unwrap().channels, Some(6));
        assert!(p.streams[2].attached_pic);
        assert_eq!(p.duration, Some(Duration::from_millis(2005)));
        assert_eq!(p.creation_time, None);
        assert!(p.has_b_frames());
    }

    #[test]
    fn cover_art_is_not_video() {
        let json = br#"{"streams":[{"index":0,"codec_name":"mjpeg","codec_type":"video","disposition":{"attached_pic":1}},
            {"index":1,"codec_name":"mp3","codec_type":"audio"}],"format":{}}"#;
        let p = parse_probe_json(json).unwrap();
        assert!(p.video().is_none());
        assert_eq!(p.audio().unwrap().index, 1);
        assert_eq!(p.duration, None);
    }

    #[test]
    fn packet_scan_finds_gop_and_reordering() {
        let text = "pts_time=0.000000|dts_time=-0.066|flags=K__\n\
                    pts_time=0.133|dts_time=-0.033|flags=___\n\
                    pts_time=0.066|dts_time=0.0|flags=___\n\
                    pts_time=2.0|dts_time=1.9|flags=K__\n\
                    pts_time=6.5|dts_time=6.4|flags=___\n\
                    garbage\n";
        let k = parse_packets(text);
        assert_eq!((k.packets, k.keyframes), (5, 2));
        assert!(k.reordered);
        // The open GOP from 2.0 to 6.5 is the longest.
        assert_eq!(k.max_interval, Some(Duration::from_secs_f64(4.5)));
        let k =
            parse_packets("pts_time=N/A|dts_time=0.5|flags=K_\npts_time=N/A|dts_time=1.0|flags=__");
        assert_eq!(k.packets, 2);
        assert!(!k.reordered);
        assert_eq!(parse_packets("").max_interval, None);
    }

    proptest::proptest! {
        /// Hostile ffprobe output (a crafted file can put anything in tags) never panics.
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_probe_json(&data);
            let _ = parse_packets(&String::from_utf8_lossy(&data));
        }

        #[test]
        fn packet_fields_in_any_order(t in 0.0f64..1000.0, key: bool) {
            let flags = if key { "K__" } else { "___" };
            let a = parse_packets(&format!("pts_time={t}|dts_time={t}|flags={flags}"));
            let b = parse_packets(&format!("flags={flags}|dts_time={t}|pts_time={t}"));
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert_eq!(a.packets, 1);
            proptest::prop_assert_eq!(a.keyframes, usize::from(key));
        }
    }

    #[test]
    fn rotation_is_normalised() {
        assert_eq!(normalise_rotation(-90.0), 270);
        assert_eq!(normalise_rotation(90.00001), 90);
        assert_eq!(normalise_rotation(f64::NAN), 0);
        assert_eq!(normalise_rotation(-180.0), 180);
    }
}
