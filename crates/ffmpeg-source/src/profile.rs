//! Output profiles, pacing, and the copy-or-transcode decision.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result, StderrTail};
use crate::probe::{MAX_FRAGMENT_DURATION, Probe};

/// How fast ffmpeg reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pacing {
    /// At the media's native rate (`-re`), like the Node sample: a file behaves like a live
    /// camera.
    Realtime,
    /// As fast as ffmpeg (and the consumer, through pipe backpressure) allows. Timestamps of a
    /// file uploaded this way start in the past, as for a backfilled recording (docs/protocol.md §4.10:
    /// past producer timestamps are accepted, future ones are refused with 4007).
    #[default]
    Fast,
}

/// x264 `-preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum X264Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
}

impl X264Preset {
    /// The name x264 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            X264Preset::Ultrafast => "ultrafast",
            X264Preset::Superfast => "superfast",
            X264Preset::Veryfast => "veryfast",
            X264Preset::Faster => "faster",
            X264Preset::Fast => "fast",
            X264Preset::Medium => "medium",
            X264Preset::Slow => "slow",
            X264Preset::Slower => "slower",
            X264Preset::Veryslow => "veryslow",
        }
    }
}

/// x264 `-tune`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum X264Tune {
    Film,
    Animation,
    Grain,
    Stillimage,
    Fastdecode,
    Zerolatency,
}

impl X264Tune {
    /// The name x264 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            X264Tune::Film => "film",
            X264Tune::Animation => "animation",
            X264Tune::Grain => "grain",
            X264Tune::Stillimage => "stillimage",
            X264Tune::Fastdecode => "fastdecode",
            X264Tune::Zerolatency => "zerolatency",
        }
    }
}

/// Output picture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Size {
    /// Exactly this size; the picture is scaled to fit with its aspect ratio kept and padded
    /// with black (the Node sample's `-s 640x480` stretched it instead).
    Fit {
        /// Width, even.
        width: u32,
        /// Height, even.
        height: u32,
    },
    /// The source size, rounded down to even dimensions (yuv420p needs them).
    Source,
}

/// How many audio channels the AAC output gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioChannels {
    /// Down-mix anything above stereo to stereo (5.1 AAC plays poorly in browsers' HLS).
    AtMostStereo,
    /// Keep the source layout.
    Source,
}

/// Transcoding settings; build with [`EncodeSettings::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeSettings {
    pub(crate) size: Size,
    pub(crate) fps: Option<u32>,
    pub(crate) video_bitrate_kbps: Option<u32>,
    pub(crate) audio_bitrate_kbps: u32,
    pub(crate) audio_channels: AudioChannels,
    pub(crate) preset: X264Preset,
    pub(crate) tune: Option<X264Tune>,
    pub(crate) gop: Duration,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            size: Size::Fit {
                width: 640,
                height: 480,
            },
            fps: None,
            video_bitrate_kbps: None,
            audio_bitrate_kbps: 128,
            audio_channels: AudioChannels::AtMostStereo,
            // The sample used x264's default (medium); veryfast keeps a 720p30 source well above
            // real time on one core, which `Pacing::Realtime` needs. See docs/performance.md.
            preset: X264Preset::Veryfast,
            tune: None,
            gop: Duration::from_secs(2),
        }
    }
}

impl EncodeSettings {
    /// Starts from the sample-parity defaults: 640x480 fitted, source frame rate, x264 CRF 23
    /// (no fixed bitrate), preset `veryfast`, AAC 128 kbit/s stereo, a keyframe every 2 s.
    pub fn builder() -> EncodeSettingsBuilder {
        EncodeSettingsBuilder(EncodeSettings::default())
    }

    /// Output size.
    pub fn size(&self) -> Size {
        self.size
    }

    /// Output frame rate, `None` to keep the source's.
    pub fn fps(&self) -> Option<u32> {
        self.fps
    }

    /// Keyframe interval, which is also the fragment target.
    pub fn gop(&self) -> Duration {
        self.gop
    }

    /// x264 preset.
    pub fn preset(&self) -> X264Preset {
        self.preset
    }
}

/// Builder for [`EncodeSettings`]; [`EncodeSettingsBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct EncodeSettingsBuilder(EncodeSettings);

impl EncodeSettingsBuilder {
    /// Output size (default `Fit { 640, 480 }`).
    pub fn with_size(mut self, size: Size) -> Self {
        self.0.size = size;
        self
    }

    /// Constant output frame rate (default: the source's).
    pub fn with_fps(mut self, fps: u32) -> Self {
        self.0.fps = Some(fps);
        self
    }

    /// Target video bit rate in kbit/s (default: constant quality, CRF 23).
    pub fn with_video_bitrate_kbps(mut self, kbps: u32) -> Self {
        self.0.video_bitrate_kbps = Some(kbps);
        self
    }

    /// AAC bit rate in kbit/s (default 128).
    pub fn with_audio_bitrate_kbps(mut self, kbps: u32) -> Self {
        self.0.audio_bitrate_kbps = kbps;
        self
    }

    /// Audio channel policy (default [`AudioChannels::AtMostStereo`]).
    pub fn with_audio_channels(mut self, channels: AudioChannels) -> Self {
        self.0.audio_channels = channels;
        self
    }

    /// x264 preset (default `veryfast`).
    pub fn with_preset(mut self, preset: X264Preset) -> Self {
        self.0.preset = preset;
        self
    }

    /// x264 tune (default none).
    pub fn with_tune(mut self, tune: X264Tune) -> Self {
        self.0.tune = Some(tune);
        self
    }

    /// Keyframe interval = fragment target (default 2 s). Must lie within KVS's 1-20 s fragment
    /// duration (docs/protocol.md §3).
    pub fn with_gop(mut self, gop: Duration) -> Self {
        self.0.gop = gop;
        self
    }

    /// Validates and returns the settings.
    pub fn build(self) -> Result<EncodeSettings> {
        let s = self.0;
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if let Size::Fit { width, height } = s.size
            && (!(16..=8192).contains(&width)
                || !(16..=8192).contains(&height)
                || width % 2 != 0
                || height % 2 != 0)
        {
            return bad(format!(
                "size {width}x{height}: width and height must be even and within 16..=8192"
            ));
        }
        if let Some(fps) = s.fps
            && !(1..=240).contains(&fps)
        {
            return bad(format!("fps {fps}: must be within 1..=240"));
        }
        if s.video_bitrate_kbps
            .is_some_and(|b| !(50..=100_000).contains(&b))
        {
            return bad("video bitrate must be within 50..=100000 kbit/s".into());
        }
        if !(16..=512).contains(&s.audio_bitrate_kbps) {
            return bad("audio bitrate must be within 16..=512 kbit/s".into());
        }
        if s.gop < Duration::from_secs(1) || s.gop > MAX_FRAGMENT_DURATION {
            return bad(format!(
                "gop {:?}: KVS fragments last 1 s to 20 s, so the keyframe interval must too",
                s.gop
            ));
        }
        Ok(s)
    }
}

/// What ffmpeg does to the media.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Profile {
    /// The Node sample's settings done right: H.264 constrained baseline (no B-frames),
    /// yuv420p, aspect kept with scale+pad, AAC, a keyframe every `gop`, CRC-32 off, clusters
    /// cut only at keyframes. Always transcodes.
    SampleParity(EncodeSettings),
    /// Stream copy. Refused unless ffprobe shows H.264 without B-frames, 8-bit 4:2:0, no
    /// rotation, AAC, and keyframes at most 20 s apart.
    Copy,
    /// Copy when [`Profile::Copy`] would be accepted, otherwise transcode with these settings;
    /// the [`Decision`] says which and why.
    Auto(EncodeSettings),
}

impl Profile {
    /// `SampleParity` with default settings.
    pub fn sample_parity() -> Self {
        Profile::SampleParity(EncodeSettings::default())
    }

    /// `Auto` with default settings.
    pub fn auto() -> Self {
        Profile::Auto(EncodeSettings::default())
    }
}

/// Copy or transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-c copy`.
    Copy,
    /// libx264 + aac.
    Transcode,
}

/// What a job will do, and why.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decision {
    /// Copy or transcode.
    pub mode: Mode,
    /// Human-readable reasons, e.g. `video is hevc, not h264`.
    pub reasons: Vec<String>,
    /// Input stream index of the video mapped to the output, if any.
    pub video_stream: Option<usize>,
    /// Input stream index of the audio mapped to the output, if any.
    pub audio_stream: Option<usize>,
    /// Set when the job planned to copy, ffmpeg refused the copied streams before writing any
    /// media (no Matroska Cluster yet), and the job restarted as a transcode: ffmpeg's first
    /// complaint, e.g. `Error parsing AAC extradata`. Only [`Profile::Auto`] falls back
    /// ([`Profile::Copy`] forbids transcoding and fails instead).
    pub copy_refused: Option<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mode, self.reasons.join("; "))
    }
}

/// Reasons why the probed input cannot be stream-copied into what KVS accepts; empty when it
/// can. The rules: H.264 video (track 1 must be `V_MPEG4/ISO/AVC` for playback, docs/protocol.md
/// §4.4) without B-frames (§4.8), 8-bit 4:2:0, no rotation (Matroska cannot carry the display
/// matrix), keyframes at most 20 s apart (§3), and AAC audio that carries its configuration out of
/// band (not ADTS: see below).
///
/// ADTS AAC (MPEG-TS, `.aac` files) has no AudioSpecificConfig outside its frame headers, and
/// ffmpeg 5.1's Matroska muxer needs one for `CodecPrivate` when it writes the header. To a pipe
/// it cannot go back and fill it in, so it fails with "Error parsing AAC extradata" before
/// writing any media; the `aac_adtstoasc` bitstream filter does not help there (it provides the
/// config only with the first packet, after the header). Such audio is therefore transcoded.
/// Anything else ffmpeg refuses at copy time is caught by the job's fallback (see
/// [`Decision::copy_refused`]).
pub fn copy_blockers(probe: &Probe) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(v) = probe.video() {
        let codec = v.codec.as_deref().unwrap_or("unknown");
        if codec != "h264" {
            reasons.push(format!("video is {codec}, not h264"));
        } else {
            if probe.has_b_frames() {
                reasons.push(
                    "video has B-frames (KVS needs presentation order = decode order)".into(),
                );
            }
            if v.pix_fmt.as_deref() != Some("yuv420p") && v.pix_fmt.as_deref() != Some("yuvj420p") {
                reasons.push(format!(
                    "video pixel format is {}, not 8-bit 4:2:0",
                    v.pix_fmt.as_deref().unwrap_or("unknown")
                ));
            }
        }
        if v.rotation != 0 {
            reasons.push(format!(
                "video is rotated {} degrees and Matroska cannot carry the rotation",
                v.rotation
            ));
        }
        match probe.keyframe_interval() {
            Some(i) if i > MAX_FRAGMENT_DURATION => reasons.push(format!(
                "keyframes are up to {:.1} s apart, over the 20 s fragment limit",
                i.as_secs_f64()
            )),
            Some(_) => {}
            None => reasons.push("keyframe interval unknown (no video packets read)".into()),
        }
    }
    if let Some(a) = probe.audio() {
        let codec = a.codec.as_deref().unwrap_or("unknown");
        if codec != "aac" {
            reasons.push(format!("audio is {codec}, not aac"));
        } else if a.extradata_size == 0 {
            reasons.push(
                "audio is ADTS aac (no AudioSpecificConfig), which ffmpeg cannot copy into \
                 Matroska on a pipe"
                    .into(),
            );
        }
    }
    reasons
}

/// Checks that the probed input has something to stream and that ffmpeg can decode it.
pub(crate) fn check_streams(input: &str, probe: &Probe) -> Result<()> {
    let (video, audio) = (probe.video(), probe.audio());
    // ffmpeg picks its text-art demuxers (tty, bin, xbin, adf, idf) for `.txt`, `.bin`, `.ans`...
    // by extension alone and would render any bytes as a video of text; a lone picture would
    // become a one-frame video. Neither is an upload.
    let text_art = ["tty", "bin", "xbin", "adf", "idf"].contains(&probe.format.as_str());
    let still = probe.format == "image2" || probe.format.ends_with("_pipe");
    if text_art || (still && audio.is_none()) {
        return Err(Error::UnreadableInput {
            input: input.to_owned(),
            reason: format!(
                "not a video or audio file (ffmpeg reads it as `{}`)",
                probe.format
            ),
            stderr: StderrTail::default(),
        });
    }
    if video.is_none() && audio.is_none() {
        let mut found: Vec<String> = probe
            .streams
            .iter()
            .map(|s| format!("{:?}", s.kind).to_lowercase())
            .collect();
        if found.is_empty() {
            found.push("none".into());
        }
        return Err(Error::NoMediaStream {
            input: input.to_owned(),
            found: found.join(", "),
            stderr: StderrTail::default(),
        });
    }
    for s in [video, audio].into_iter().flatten() {
        if s.codec.is_none() {
            return Err(Error::UnsupportedCodec {
                input: input.to_owned(),
                stream: s.index,
                codec: "unknown".into(),
                reason: "which this ffmpeg cannot decode".into(),
                stderr: StderrTail::default(),
            });
        }
    }
    Ok(())
}

/// Decides copy or transcode for a probed input.
pub(crate) fn decide(input: &str, profile: &Profile, probe: Option<&Probe>) -> Result<Decision> {
    let (video_stream, audio_stream) = probe.map_or((None, None), |p| {
        (p.video().map(|s| s.index), p.audio().map(|s| s.index))
    });
    let decision = |mode, reasons| Decision {
        mode,
        reasons,
        video_stream,
        audio_stream,
        copy_refused: None,
    };
    match (profile, probe) {
        (Profile::SampleParity(_), _) => Ok(decision(
            Mode::Transcode,
            vec!["profile SampleParity always transcodes".into()],
        )),
        (Profile::Copy | Profile::Auto(_), None) => match profile {
            Profile::Copy => Err(Error::InvalidConfig {
                reason: format!(
                    "{input}: Profile::Copy needs ffprobe to check the input, \
                     which a reader input does not allow; use a path or URL, or Profile::Auto"
                ),
            }),
            _ => Ok(decision(
                Mode::Transcode,
                vec!["a reader input cannot be probed, so copy cannot be proven safe".into()],
            )),
        },
        (Profile::Copy, Some(p)) => {
            if let Some(v) = p.video()
                && v.codec.as_deref() != Some("h264")
            {
                return Err(Error::UnsupportedCodec {
                    input: input.to_owned(),
                    stream: v.index,
                    codec: v.codec.clone().unwrap_or_else(|| "unknown".into()),
                    reason: "but Profile::Copy needs h264 (KVS playback); use Profile::Auto to transcode".into(),
                    stderr: StderrTail::default(),
                });
            }
            if let Some(a) = p.audio()
                && a.codec.as_deref() != Some("aac")
            {
                return Err(Error::UnsupportedCodec {
                    input: input.to_owned(),
                    stream: a.index,
                    codec: a.codec.clone().unwrap_or_else(|| "unknown".into()),
                    reason:
                        "but Profile::Copy needs aac (KVS playback); use Profile::Auto to transcode"
                            .into(),
                    stderr: StderrTail::default(),
                });
            }
            let reasons = copy_blockers(p);
            if reasons.is_empty() {
                Ok(decision(
                    Mode::Copy,
                    vec!["input is h264 without B-frames + aac with keyframes within 20 s".into()],
                ))
            } else {
                Err(Error::CopyIncompatible {
                    input: input.to_owned(),
                    reasons,
                })
            }
        }
        (Profile::Auto(_), Some(p)) => {
            let reasons = copy_blockers(p);
            if reasons.is_empty() {
                let gop = p.keyframe_interval().map_or(String::new(), |i| {
                    format!(", keyframes at most {:.1} s apart", i.as_secs_f64())
                });
                Ok(decision(
                    Mode::Copy,
                    vec![format!(
                        "input is compatible (h264 without B-frames, aac{gop})"
                    )],
                ))
            } else {
                Ok(decision(Mode::Transcode, reasons))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::parse_probe_json;

    fn probe(json: &str, gop_s: f64, reordered: bool) -> Probe {
        let mut p = parse_probe_json(json.as_bytes()).unwrap();
        let text = format!(
            "pts_time=0|flags=K_\npts_time={gop_s}|flags=K_\npts_time={}|flags=__\n",
            gop_s + 0.5
        );
        let mut k = crate::probe::parse_packets(&text);
        k.reordered = reordered;
        p.keyframes = Some(k);
        p
    }

    const GOOD: &str = r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","pix_fmt":"yuv420p","has_b_frames":0},
        {"index":1,"codec_type":"audio","codec_name":"aac","extradata_size":2}],"format":{}}"#;

    /// What ffprobe 5.1 prints for MPEG-TS with H.264 + AAC: the AAC has no `extradata_size`.
    const TS_ADTS: &str = r#"{"streams":[{"index":0,"codec_type":"video","codec_name":"h264","pix_fmt":"yuv420p","has_b_frames":0,"extradata_size":37},
        {"index":1,"codec_type":"audio","codec_name":"aac","profile":"LC"}],"format":{"format_name":"mpegts"}}"#;

    #[test]
    fn adts_aac_is_not_copyable() {
        let d = decide("x", &Profile::auto(), Some(&probe(TS_ADTS, 1.0, false))).unwrap();
        assert_eq!(d.mode, Mode::Transcode);
        assert!(d.reasons[0].contains("ADTS"), "{d}");
        assert!(matches!(
            decide("x", &Profile::Copy, Some(&probe(TS_ADTS, 1.0, false))),
            Err(Error::CopyIncompatible { reasons, .. }) if reasons.len() == 1
        ));
    }

    #[test]
    fn auto_copies_compatible_input_and_says_why() {
        let d = decide("x", &Profile::auto(), Some(&probe(GOOD, 2.0, false))).unwrap();
        assert_eq!(d.mode, Mode::Copy);
        assert_eq!((d.video_stream, d.audio_stream), (Some(0), Some(1)));
        assert!(
            d.to_string().starts_with("copy: input is compatible"),
            "{d}"
        );
    }

    #[test]
    fn auto_transcodes_with_reasons() {
        let d = decide("x", &Profile::auto(), Some(&probe(GOOD, 25.0, true))).unwrap();
        assert_eq!(d.mode, Mode::Transcode);
        let text = d.to_string();
        assert!(text.contains("B-frames") && text.contains("20 s"), "{text}");
        let hevc = GOOD.replace("h264", "hevc").replace("\"aac\"", "\"opus\"");
        let d = decide("x", &Profile::auto(), Some(&probe(&hevc, 2.0, false))).unwrap();
        assert_eq!(
            d.reasons,
            ["video is hevc, not h264", "audio is opus, not aac"]
        );
    }

    #[test]
    fn copy_refuses_with_semantic_errors() {
        let hevc = GOOD.replace("h264", "hevc");
        assert!(matches!(
            decide("x", &Profile::Copy, Some(&probe(&hevc, 2.0, false))),
            Err(Error::UnsupportedCodec { stream: 0, .. })
        ));
        assert!(matches!(
            decide("x", &Profile::Copy, Some(&probe(GOOD, 2.0, true))),
            Err(Error::CopyIncompatible { .. })
        ));
        assert!(matches!(
            decide("x", &Profile::Copy, None),
            Err(Error::InvalidConfig { .. })
        ));
        assert_eq!(
            decide("x", &Profile::Copy, Some(&probe(GOOD, 2.0, false)))
                .unwrap()
                .mode,
            Mode::Copy
        );
    }

    #[test]
    fn text_and_still_images_are_not_media() {
        for format in ["tty", "bin", "image2", "png_pipe"] {
            let json = format!(
                r#"{{"streams":[{{"index":0,"codec_type":"video","codec_name":"x"}}],"format":{{"format_name":"{format}"}}}}"#
            );
            let p = parse_probe_json(json.as_bytes()).unwrap();
            assert!(
                matches!(check_streams("x", &p), Err(Error::UnreadableInput { .. })),
                "{format}"
            );
        }
    }

    #[test]
    fn no_media_stream_is_an_error() {
        let p =
            parse_probe_json(br#"{"streams":[{"index":0,"codec_type":"subtitle"}],"format":{}}"#)
                .unwrap();
        assert!(matches!(
            check_streams("x", &p),
            Err(Error::NoMediaStream { .. })
        ));
        let p = parse_probe_json(br#"{"streams":[{"index":0,"codec_type":"video"}],"format":{}}"#)
            .unwrap();
        assert!(matches!(
            check_streams("x", &p),
            Err(Error::UnsupportedCodec { .. })
        ));
    }

    #[test]
    fn settings_are_validated() {
        assert!(
            EncodeSettings::builder()
                .with_size(Size::Fit {
                    width: 641,
                    height: 480
                })
                .build()
                .is_err()
        );
        assert!(
            EncodeSettings::builder()
                .with_gop(Duration::from_secs(21))
                .build()
                .is_err()
        );
        assert!(
            EncodeSettings::builder()
                .with_gop(Duration::from_millis(500))
                .build()
                .is_err()
        );
        assert!(EncodeSettings::builder().with_fps(0).build().is_err());
        let s = EncodeSettings::builder()
            .with_size(Size::Source)
            .with_fps(25)
            .with_video_bitrate_kbps(800)
            .with_tune(X264Tune::Zerolatency)
            .with_preset(X264Preset::Ultrafast)
            .build()
            .unwrap();
        assert_eq!((s.fps(), s.preset()), (Some(25), X264Preset::Ultrafast));
    }
}
