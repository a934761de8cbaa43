//! Copy or transcode, over the containers uploads come in: every one must stream out Matroska
//! that ffprobe reads back, whatever `Profile::Auto` decided (issue 12: copy mode must never fail
//! where a transcode would succeed).
//!
//! The inputs are made here by real ffmpeg from lavfi (1 s, 160x120), so a new ffmpeg that
//! writes a container differently is tested as it is. One test runs the table so the copied and
//! transcoded lists are printed together (`cargo test -p ffmpeg-source --test containers --
//! --nocapture` shows them).

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use ffmpeg_source::{EncodeSettings, Error, FfmpegSource, Input, Mode, Profile, Size, X264Preset};
use futures::StreamExt;
use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};
use tempfile::TempDir;

const VIDEO: &[&str] = &["-f", "lavfi", "-i", "testsrc=s=160x120:r=15:d=1"];
const AUDIO: &[&str] = &["-f", "lavfi", "-i", "sine=d=1"];
/// Copy-compatible H.264: no B-frames, a keyframe every second.
const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-bf",
    "0",
    "-g",
    "15",
    "-pix_fmt",
    "yuv420p",
];
const AAC: &[&str] = &["-c:a", "aac"];

/// One input: how to make it, and what `Profile::Auto` must decide.
struct Case {
    file: &'static str,
    args: Vec<&'static str>,
    expect: Mode,
    /// Streams ffprobe must find in the output, by codec.
    codecs: &'static [&'static str],
}

fn case(
    file: &'static str,
    parts: &[&[&'static str]],
    expect: Mode,
    codecs: &'static [&'static str],
) -> Case {
    Case {
        file,
        args: parts.iter().flat_map(|p| p.iter().copied()).collect(),
        expect,
        codecs,
    }
}

fn cases() -> Vec<Case> {
    use Mode::{Copy, Transcode};
    let av: &[&str] = &["h264", "aac"];
    vec![
        case(
            "index-first.mp4",
            &[VIDEO, AUDIO, H264, AAC, &["-movflags", "+faststart"]],
            Copy,
            av,
        ),
        case("index-last.mp4", &[VIDEO, AUDIO, H264, AAC], Copy, av),
        case("clip.mov", &[VIDEO, AUDIO, H264, AAC], Copy, av),
        case("clip.mkv", &[VIDEO, AUDIO, H264, AAC], Copy, av),
        case("clip.flv", &[VIDEO, AUDIO, H264, AAC], Copy, av),
        // ADTS AAC: ffmpeg 5.1 cannot write its CodecPrivate to a pipe (the issue-12 failure).
        case("clip.ts", &[VIDEO, AUDIO, H264, AAC], Transcode, av),
        case(
            "clip.webm",
            &[
                VIDEO,
                AUDIO,
                &[
                    "-c:v",
                    "libvpx",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-c:a",
                    "libopus",
                ],
            ],
            Transcode,
            av,
        ),
        case("audio.m4a", &[AUDIO, AAC], Copy, &["aac"]),
        case("audio.aac", &[AUDIO, AAC], Transcode, &["aac"]),
        case("video-only.mp4", &[VIDEO, H264], Copy, &["h264"]),
        case(
            "video-only.ts",
            &[VIDEO, H264, &["-f", "mpegts"]],
            Copy,
            &["h264"],
        ),
        case(
            "audio-only.ts",
            &[AUDIO, AAC, &["-f", "mpegts"]],
            Transcode,
            &["aac"],
        ),
    ]
}

fn make_input(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let res = StdCommand::new("ffmpeg")
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

fn quick() -> EncodeSettings {
    EncodeSettings::builder()
        .with_size(Size::Fit {
            width: 160,
            height: 120,
        })
        .with_preset(X264Preset::Ultrafast)
        .build()
        .unwrap()
}

/// ffprobe's view of an MKV file: the container name and the codecs of its streams.
fn ffprobe_mkv(path: &Path) -> (String, Vec<String>) {
    let out = StdCommand::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name:stream=codec_name",
        ])
        .args(["-of", "default=nw=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut format = String::new();
    let mut codecs = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("format_name=") {
            format = f.to_owned();
        } else if let Some(c) = line.strip_prefix("codec_name=") {
            codecs.push(c.to_owned());
        }
    }
    (format, codecs)
}

/// Runs `Profile::Auto` on one input to the end; returns the decision and the MKV bytes, after
/// checking that the re-fragmenter cuts KVS fragments out of them.
async fn stream(input: &Path) -> Result<(ffmpeg_source::Decision, Vec<u8>), Error> {
    let mut job = FfmpegSource::builder(Input::path(input))
        .with_profile(Profile::Auto(quick()))
        .build()?
        .spawn()
        .await?;
    let mut mkv = Vec::new();
    let mut r = Refragmenter::new(RefragmentConfig::builder().build().unwrap());
    let mut fragments = 0;
    while let Some(chunk) = job.next().await {
        let chunk = chunk?;
        mkv.extend_from_slice(&chunk);
        r.push(chunk)
            .expect("the re-fragmenter accepts ffmpeg's output");
        while let Some(out) = r.next_output() {
            fragments += usize::from(matches!(out, Output::Fragment(_)));
        }
    }
    r.finish().expect("the re-fragmenter finishes");
    while let Some(out) = r.next_output() {
        fragments += usize::from(matches!(out, Output::Fragment(_)));
    }
    assert!(fragments >= 1, "{}: no KVS fragment", input.display());
    Ok((job.decision().clone(), mkv))
}

#[tokio::test]
async fn every_container_streams_valid_mkv_copied_or_transcoded() {
    let dir = TempDir::new().unwrap();
    let cases = cases();
    let inputs: Vec<PathBuf> = cases
        .iter()
        .map(|c| make_input(dir.path(), c.file, &c.args))
        .collect();
    // Stream concurrently: each is a second of tiny media, so the table takes about as long as
    // its slowest case.
    let runs = futures::future::join_all(
        cases
            .iter()
            .zip(&inputs)
            .map(|(c, input)| async move { (c, input, stream(input).await) }),
    )
    .await;
    let mut copied = Vec::new();
    let mut transcoded = Vec::new();
    let mut wrong = Vec::new();
    for (c, _input, result) in runs {
        let (decision, mkv) = result.unwrap_or_else(|e| panic!("{}: the job failed: {e}", c.file));
        let out = dir.path().join(format!("{}.out.mkv", c.file));
        std::fs::write(&out, &mkv).unwrap();
        let (format, codecs) = ffprobe_mkv(&out);
        assert!(
            format.starts_with("matroska"),
            "{}: output is {format}",
            c.file
        );
        assert_eq!(codecs, c.codecs, "{}: output streams", c.file);
        assert!(decision.copy_refused.is_none(), "{}: {decision}", c.file);
        match decision.mode {
            Mode::Copy => copied.push(c.file),
            Mode::Transcode => {
                transcoded.push(format!("{} ({})", c.file, decision.reasons.join("; ")))
            }
        }
        if decision.mode != c.expect {
            wrong.push(format!(
                "{}: expected {:?}, got {decision}",
                c.file, c.expect
            ));
        }
    }
    eprintln!("copied: {}", copied.join(", "));
    eprintln!("transcoded:\n  {}", transcoded.join("\n  "));
    assert!(
        wrong.is_empty(),
        "unexpected decisions:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn copy_profile_refuses_adts_aac_up_front() {
    let dir = TempDir::new().unwrap();
    let input = make_input(dir.path(), "clip.ts", &[VIDEO, AUDIO, H264, AAC].concat());
    let err = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::Copy)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CopyIncompatible { reasons, .. } if reasons.iter().any(|r| r.contains("ADTS"))),
        "{err}"
    );
    assert!(err.is_input_error());
}
