//! Building ffmpeg's command line: the arguments for a decided [`Plan`] (copy or transcode,
//! the Matroska muxer settings KVS needs), their redacted display, and the transcode a refused
//! copy falls back to.

use std::ffi::OsString;

use crate::input::{Input, Redactor, input_arg, url_args};
use crate::probe::Probe;
use crate::profile::{AudioChannels, Decision, EncodeSettings, Mode, Pacing, Profile, Size};

/// What [`FfmpegSource::plan`](crate::FfmpegSource::plan) decided: the probe, copy or transcode, and the command line.
#[derive(Clone)]
pub struct Plan {
    probe: Option<Probe>,
    decision: Decision,
    args: Vec<OsString>,
    display: String,
    /// The transcode a copying [`Profile::Auto`] job restarts as when ffmpeg refuses to copy.
    fallback: Option<Fallback>,
}

/// The transcoding command line of a copy plan; see [`Decision::copy_refused`].
#[derive(Clone)]
pub(crate) struct Fallback {
    args: Vec<OsString>,
    display: String,
}

impl Plan {
    /// The command line for `decision` and, for a copy of a probed input under
    /// [`Profile::Auto`], the transcode to fall back to.
    pub(crate) fn new(
        input: &Input,
        pacing: Pacing,
        profile: &Profile,
        decision: Decision,
        probe: Option<Probe>,
    ) -> Self {
        let settings = match profile {
            Profile::SampleParity(s) | Profile::Auto(s) => Some(s),
            Profile::Copy => None,
        };
        let args = ffmpeg_args(input, pacing, settings, &decision, probe.as_ref());
        let display = display_args(&args, &Redactor::new(input));
        let fallback = fallback_for(input, pacing, profile, &decision, probe.as_ref());
        Plan {
            probe,
            decision,
            args,
            display,
            fallback,
        }
    }

    /// ffprobe's view of the input (`None` for reader inputs).
    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    /// Copy or transcode, and why.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// ffmpeg's arguments (without the program name). They include the full input URL, query
    /// string credentials too: do not log them; use [`Plan::display_args`].
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The arguments as one shell-like line, URL query strings redacted.
    pub fn display_args(&self) -> &str {
        &self.display
    }

    /// The transcoding command line (redacted) this job restarts with if ffmpeg refuses the
    /// copied streams before writing media; `None` unless the plan copies under
    /// [`Profile::Auto`].
    pub fn fallback_display_args(&self) -> Option<&str> {
        self.fallback.as_ref().map(|f| f.display.as_str())
    }

    /// The transcode to restart as if ffmpeg refuses to copy.
    pub(crate) fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// ffmpeg refused to copy (`cause`, its words) and the job restarted as `fallback`: the plan
    /// becomes that transcode, and its decision says why.
    pub(crate) fn fall_back(&mut self, fallback: Fallback, cause: String) {
        self.decision = Decision {
            mode: Mode::Transcode,
            reasons: vec![format!(
                "ffmpeg refused to copy the streams ({cause}), so the job restarted as a transcode"
            )],
            copy_refused: Some(cause),
            ..self.decision.clone()
        };
        self.args = fallback.args;
        self.display = fallback.display;
        self.fallback = None;
    }
}

impl Fallback {
    /// ffmpeg's arguments for the transcode.
    pub(crate) fn args(&self) -> &[OsString] {
        &self.args
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("decision", &self.decision)
            .field("args", &self.display)
            .finish_non_exhaustive()
    }
}

/// ffmpeg's arguments for a decided job.
fn ffmpeg_args(
    input: &Input,
    pacing: Pacing,
    settings: Option<&EncodeSettings>,
    decision: &Decision,
    probe: Option<&Probe>,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-nostats",
        "-progress",
        "pipe:2",
    ]);
    if pacing == Pacing::Realtime {
        push(&["-re"]);
    }
    push(&url_args(input));
    push(&["-i"]);
    a.push(input_arg(input));
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    // KVS allows at most 3 tracks (docs/protocol.md §3) and plays track 1 H.264 + track 2 AAC (§4.4):
    // map exactly one video and one audio stream.
    let (has_video, has_audio) = match probe {
        Some(_) => {
            for s in [decision.video_stream, decision.audio_stream]
                .into_iter()
                .flatten()
            {
                push(&["-map", &format!("0:{s}")]);
            }
            (
                decision.video_stream.is_some(),
                decision.audio_stream.is_some(),
            )
        }
        None => {
            push(&["-map", "0:v:0?", "-map", "0:a:0?"]);
            (true, true)
        }
    };
    // Input tags would become a Tags element (docs/protocol.md §5); KVS needs none of them.
    push(&["-map_metadata", "-1", "-map_chapters", "-1"]);
    match (decision.mode, settings) {
        (Mode::Copy, _) | (Mode::Transcode, None) => push(&["-c", "copy"]),
        (Mode::Transcode, Some(s)) => {
            if has_video {
                let mut filters = Vec::new();
                match s.size() {
                    Size::Fit { width, height } => {
                        // Keep the aspect ratio and pad, where the sample's `-s` stretched.
                        filters.push(format!(
                            "scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"
                        ));
                        filters.push(format!("pad={width}:{height}:(ow-iw)/2:(oh-ih)/2"));
                        filters.push("setsar=1".into());
                    }
                    Size::Source => filters.push("scale=trunc(iw/2)*2:trunc(ih/2)*2".into()),
                }
                if let Some(fps) = s.fps() {
                    filters.push(format!("fps={fps}"));
                }
                let gop = s.gop().as_secs_f64();
                let fps_est = s
                    .fps()
                    .map(f64::from)
                    .or_else(|| probe.and_then(|p| p.video()).and_then(|v| v.avg_frame_rate))
                    .unwrap_or(60.0)
                    .clamp(1.0, 240.0);
                // Forced keyframes set the cadence; -g is only a backstop well beyond it so
                // x264 never adds a keyframe of its own between two forced ones.
                let keyint = ((fps_est * gop * 2.0).ceil() as u64).max(2);
                push(&[
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "baseline",
                    "-preset",
                    s.preset().as_str(),
                ]);
                if let Some(t) = s.tune {
                    push(&["-tune", t.as_str()]);
                }
                push(&[
                    "-pix_fmt",
                    "yuv420p",
                    "-vf",
                    &filters.join(","),
                    "-bf",
                    "0",
                    "-force_key_frames",
                    &format!("expr:gte(t,n_forced*{gop})"),
                    "-sc_threshold",
                    "0",
                    "-g",
                    &keyint.to_string(),
                ]);
                if let Some(kbps) = s.video_bitrate_kbps {
                    push(&[
                        "-b:v",
                        &format!("{kbps}k"),
                        "-maxrate",
                        &format!("{kbps}k"),
                        "-bufsize",
                        &format!("{}k", kbps.saturating_mul(2)),
                    ]);
                }
            }
            if has_audio {
                push(&["-c:a", "aac", "-b:a", &format!("{}k", s.audio_bitrate_kbps)]);
                let channels = probe.and_then(|p| p.audio()).and_then(|a| a.channels);
                if s.audio_channels == AudioChannels::AtMostStereo && channels.is_none_or(|c| c > 2)
                {
                    push(&["-ac", "2"]);
                }
            }
        }
    }
    // docs/protocol.md §5: CRC-32 off. Clusters are kept SHORT on purpose: the muxer holds a whole
    // cluster until it is cut, so the keyframe that completes a fragment reaches the pipe up to
    // one cluster late (clusters cut only at keyframes: one whole GOP late). 20 ms keeps the
    // first acknowledgement within 50 ms of one fragment; docs/performance.md ("First
    // acknowledgement") has the measurements. The cost is a Cluster header per frame or two. Nothing is lost: the output is always re-clustered at keyframes by
    // `kvs_putmedia::mkv::Refragmenter` ("do not forward ffmpeg's bytes unchanged"), which is
    // what decides the fragments KVS sees.
    push(&[
        "-f",
        "matroska",
        "-write_crc32",
        "0",
        "-cluster_time_limit",
        "20",
        "-cluster_size_limit",
        "1048576",
        "-flush_packets",
        "1",
        "pipe:1",
    ]);
    a
}

fn display_args(args: &[OsString], redactor: &Redactor) -> String {
    let line = args
        .iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(' ') || s.is_empty() {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    redactor.apply(&format!("ffmpeg {line}"))
}

/// A copy that ffmpeg refuses at run time (a codec parameter the muxer cannot write to a pipe)
/// restarts as this transcode: [`Profile::Auto`] copy plans of inputs that can be read again
/// (probed ones, not readers).
fn fallback_for(
    input: &Input,
    pacing: Pacing,
    profile: &Profile,
    decision: &Decision,
    probe: Option<&Probe>,
) -> Option<Fallback> {
    match (profile, decision.mode, probe) {
        (Profile::Auto(s), Mode::Copy, Some(p)) => {
            let transcode = Decision {
                mode: Mode::Transcode,
                ..decision.clone()
            };
            let args = ffmpeg_args(input, pacing, Some(s), &transcode, Some(p));
            Some(Fallback {
                display: display_args(&args, &Redactor::new(input)),
                args,
            })
        }
        _ => None,
    }
}
