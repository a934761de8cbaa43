//! Real media made by ffmpeg at test time, and checks with ffprobe. Test helpers panic with
//! the tool's stderr when a tool fails: a failed setup is a failed test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `ffmpeg -v error -nostdin -y ARGS DIR/NAME` (ARGS: inputs and output options) and
/// returns the path written; panics with ffmpeg's stderr if it fails.
pub fn ffmpeg_file<S: AsRef<OsStr>>(dir: &Path, name: &str, args: &[S]) -> PathBuf {
    let out = dir.join(name);
    let res = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .arg(&out)
        .output()
        .expect("ffmpeg runs");
    assert!(
        res.status.success(),
        "generating {name}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Runs `ffmpeg -nostdin -v error ARGS -f matroska pipe:1` (ARGS: inputs and codec options)
/// and returns the Matroska it writes; panics with ffmpeg's stderr if it fails or writes next to
/// nothing.
pub fn ffmpeg_mkv(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error"])
        .args(args)
        .args(["-f", "matroska", "pipe:1"])
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() > 1000,
        "ffmpeg wrote only {} bytes",
        out.stdout.len()
    );
    out.stdout
}

/// A lavfi test clip encoded with x264 `ultrafast`, 320x240 at 25 fps, `yuv420p`: the media
/// most tests stream. The defaults are a Matroska file of the `testsrc` pattern without audio;
/// the `with_*` setters choose the rest.
#[derive(Debug, Clone)]
pub struct Clip {
    seconds: u32,
    pattern: &'static str,
    audio: bool,
    keyframe_every_second: bool,
    cluster_per_keyframe: bool,
    extra: Vec<String>,
    extension: String,
}

impl Clip {
    /// `seconds` of video.
    pub fn new(seconds: u32) -> Self {
        Self {
            seconds,
            pattern: "testsrc",
            audio: false,
            keyframe_every_second: false,
            cluster_per_keyframe: false,
            extra: Vec::new(),
            extension: "mkv".into(),
        }
    }
    /// The lavfi video source (`testsrc`, `testsrc2`, ...).
    pub fn with_pattern(mut self, pattern: &'static str) -> Self {
        self.pattern = pattern;
        self
    }
    /// Adds a 440 Hz sine as AAC (and `-shortest`).
    pub fn with_audio(mut self, audio: bool) -> Self {
        self.audio = audio;
        self
    }
    /// A keyframe every 25 frames (every second) and no B-frames: what the KVS fragmenter
    /// expects of copied H.264.
    pub fn with_keyframe_every_second(mut self, on: bool) -> Self {
        self.keyframe_every_second = on;
        self
    }
    /// Keyframes exactly every second (no scene-cut keyframes) and one Matroska Cluster per
    /// keyframe (no CRC-32 elements), so each Cluster is one KVS fragment. Implies
    /// [`with_keyframe_every_second`](Self::with_keyframe_every_second).
    pub fn with_cluster_per_keyframe(mut self, on: bool) -> Self {
        self.cluster_per_keyframe = on;
        self
    }
    /// More output options, after the encoder's (e.g. `-metadata creation_time=...`).
    pub fn with_args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.extra
            .extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }
    /// The file extension, which picks the container (default `mkv`).
    pub fn with_extension(mut self, extension: impl Into<String>) -> Self {
        self.extension = extension.into();
        self
    }

    /// The ffmpeg arguments (inputs and output options, no output path).
    pub fn args(&self) -> Vec<String> {
        let s = self.seconds;
        let mut a: Vec<String> = vec![
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("{}=size=320x240:rate=25:duration={s}", self.pattern),
        ];
        if self.audio {
            a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
            a.push(format!("sine=frequency=440:sample_rate=44100:duration={s}"));
        }
        a.extend(["-c:v", "libx264", "-preset", "ultrafast"].map(String::from));
        if self.keyframe_every_second || self.cluster_per_keyframe {
            a.extend(["-bf", "0", "-g", "25"].map(String::from));
        }
        if self.cluster_per_keyframe {
            a.extend(["-keyint_min", "25", "-sc_threshold", "0"].map(String::from));
        }
        a.extend(["-pix_fmt", "yuv420p"].map(String::from));
        if self.audio {
            a.extend(["-c:a", "aac", "-shortest"].map(String::from));
        }
        if self.cluster_per_keyframe {
            a.extend(
                [
                    "-write_crc32",
                    "0",
                    "-cluster_time_limit",
                    "100000",
                    "-cluster_size_limit",
                    "50000000",
                ]
                .map(String::from),
            );
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Writes the clip into `dir` (as `clip{seconds}.{extension}`) and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let name = format!("clip{}.{}", self.seconds, self.extension);
        ffmpeg_file(dir, &name, &self.args())
    }

    /// The clip's bytes (made in a temporary directory that is removed again).
    pub fn bytes(&self) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::read(self.write(dir.path())).expect("read the clip")
    }
}

/// Runs `ffprobe -v error ARGS -of csv=p=0 TARGET` (a path or URL) and returns its stdout, or
/// its stderr as the error when it fails. With `clean`, any error ffprobe reports fails too (a
/// file ffprobe complains about is not a clean file, even where it still counts frames).
pub fn ffprobe_csv(
    target: impl AsRef<OsStr>,
    args: &[&str],
    clean: bool,
) -> Result<String, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .args(["-of", "csv=p=0"])
        .arg(target)
        .output()
        .expect("ffprobe runs");
    if !out.status.success() || (clean && !out.stderr.is_empty()) {
        return Err(format!(
            "ffprobe ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How many frames of the first video stream ffprobe decodes in `target` (a path or URL): the
/// playability check. Err with ffprobe's stderr when it fails.
pub fn video_frames(target: impl AsRef<OsStr>) -> Result<u64, String> {
    count_frames(target, false)
}

/// [`video_frames`], and Err as well when ffprobe reports any error on the way.
pub fn clean_video_frames(target: impl AsRef<OsStr>) -> Result<u64, String> {
    count_frames(target, true)
}

fn count_frames(target: impl AsRef<OsStr>, clean: bool) -> Result<u64, String> {
    let out = ffprobe_csv(
        target,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
        ],
        clean,
    )?;
    out.trim()
        .parse()
        .map_err(|e| format!("{e}: ffprobe printed {out:?}"))
}

/// [`video_frames`] of MKV bytes (written to a temporary file first).
pub fn video_frames_of(mkv: &[u8]) -> Result<u64, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.mkv");
    std::fs::write(&path, mkv).expect("write the MKV");
    video_frames(&path)
}

/// `seconds` of H.264 MKV whose Clusters are one keyframe (one second) each, so each Cluster is
/// one KVS fragment: what the emulator and client tests stream.
pub fn fragment_clip(seconds: u32) -> Vec<u8> {
    Clip::new(seconds).with_cluster_per_keyframe(true).bytes()
}
