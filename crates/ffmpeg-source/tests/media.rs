//! End-to-end: real ffmpeg on inputs generated with lavfi, output through the KVS re-fragmenter.
//!
//! Each case is small (1-3 s, low resolution, `ultrafast` where we encode) so the whole file
//! stays within a few CPU seconds; cargo runs the cases concurrently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg_source::{
    EncodeSettings, Error, FfmpegJob, FfmpegSource, Input, Mode, Pacing, Profile, Size, Tool,
    X264Preset, probe,
};
use futures::StreamExt;
use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs ffmpeg to make a test input; panics with its stderr on failure.
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

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Cheap transcode settings for tests.
fn quick() -> EncodeSettings {
    EncodeSettings::builder()
        .with_size(Size::Fit {
            width: 320,
            height: 240,
        })
        .with_preset(X264Preset::Ultrafast)
        .build()
        .unwrap()
}

/// True once `pid` no longer exists (zombies count as alive: nobody reaped them). Yields to the
/// runtime between checks so the job's supervisor can reap, and sleeps in real time so it also
/// works under a paused clock.
async fn gone_within(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[derive(Debug, Default)]
struct Fragments {
    tracks: usize,
    count: usize,
    durations: Vec<Duration>,
    sizes: Vec<usize>,
    all_keyframe_first: bool,
}

/// Feeds the job's output through the re-fragmenter and checks what comes out.
async fn refragment(mut job: FfmpegJob) -> Result<(Fragments, u64), Error> {
    let mut r = Refragmenter::new(RefragmentConfig::builder().build().unwrap());
    let mut f = Fragments {
        all_keyframe_first: true,
        ..Fragments::default()
    };
    let take = |r: &mut Refragmenter, f: &mut Fragments| {
        while let Some(out) = r.next_output() {
            match out {
                Output::Header(h) => f.tracks = h.tracks().len(),
                Output::Fragment(frag) => {
                    f.count += 1;
                    f.all_keyframe_first &= frag.starts_with_keyframe();
                    f.durations.push(frag.duration());
                    f.sizes.push(frag.len());
                }
                _ => {}
            }
        }
    };
    let pid = job.pid().expect("ffmpeg has a pid");
    let mut bytes = 0u64;
    while let Some(chunk) = job.next().await {
        let chunk: Bytes = chunk?;
        assert!(chunk.len() <= 64 * 1024, "chunk over the read bound");
        bytes += chunk.len() as u64;
        r.push(chunk)
            .expect("re-fragmenter accepts ffmpeg's output");
        take(&mut r, &mut f);
    }
    r.finish().expect("re-fragmenter finishes");
    take(&mut r, &mut f);
    drop(job);
    assert!(
        gone_within(pid, Duration::from_secs(3)).await,
        "ffmpeg {pid} survived"
    );
    Ok((f, bytes))
}

/// Runs a valid input end to end and checks the KVS fragment rules (docs/protocol.md §3, §4.5).
async fn check_valid(
    input: &Path,
    profile: Profile,
    expect_tracks: usize,
) -> ffmpeg_source::Decision {
    let dir = input.parent().unwrap().to_owned();
    let before = listing(&dir);
    let job = FfmpegSource::builder(Input::path(input))
        .with_profile(profile)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let decision = job.decision().clone();
    let (f, bytes) = refragment(job)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    assert!(bytes > 1024, "{}: only {bytes} bytes", input.display());
    assert!(f.count >= 1, "{}: no fragment", input.display());
    assert!(
        f.all_keyframe_first,
        "{}: a fragment does not start with a keyframe: {f:?}",
        input.display()
    );
    assert_eq!(f.tracks, expect_tracks, "{}: {f:?}", input.display());
    for d in &f.durations {
        assert!(
            *d <= Duration::from_secs(20),
            "{}: fragment of {d:?}",
            input.display()
        );
    }
    for s in &f.sizes {
        assert!(*s <= 50_000_000);
    }
    assert_eq!(listing(&dir), before, "a temporary file was left behind");
    decision
}

/// The Node sample's typical upload: 720p30 H.264 (with B-frames, as phones and editors write
/// it) + AAC in an MP4 with its index at the end.
fn typical_upload(dir: &Path) -> PathBuf {
    make_input(
        dir,
        "upload.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=1280x720:r=30:d=2",
            "-f",
            "lavfi",
            "-i",
            "sine=d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "60",
            "-c:a",
            "aac",
        ],
    )
}

/// Copy-compatible: baseline-like H.264 without B-frames, 1 s GOP, AAC.
fn compatible(dir: &Path) -> PathBuf {
    make_input(
        dir,
        "compatible.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=30:d=3",
            "-f",
            "lavfi",
            "-i",
            "sine=d=3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-c:a",
            "aac",
        ],
    )
}

#[tokio::test]
async fn typical_upload_moov_at_end_is_transcoded_because_of_b_frames() {
    let dir = TempDir::new().unwrap();
    let input = typical_upload(dir.path());
    let p = probe(&Input::path(&input)).await.unwrap();
    assert!(p.has_b_frames());
    assert_eq!(p.video().unwrap().width, Some(1280));
    assert!(p.duration.unwrap() >= Duration::from_millis(1900));
    let d = check_valid(&input, Profile::Auto(quick()), 2).await;
    assert_eq!(d.mode, Mode::Transcode);
    assert!(d.to_string().contains("B-frames"), "{d}");
}

#[tokio::test]
async fn typical_upload_with_sample_parity_defaults() {
    let dir = TempDir::new().unwrap();
    let input = typical_upload(dir.path());
    let d = check_valid(&input, Profile::sample_parity(), 2).await;
    assert_eq!(d.mode, Mode::Transcode);
    // 16:9 fitted into 640x480 and padded, not stretched.
    let job = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::sample_parity())
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let args = job.plan().display_args().to_owned();
    for flag in [
        "-profile:v baseline",
        "-pix_fmt yuv420p",
        "-bf 0",
        "-write_crc32 0",
        "-cluster_time_limit 20",
        "-sc_threshold 0",
        "force_original_aspect_ratio=decrease",
        "pad=640:480",
    ] {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }
    assert!(
        !args.contains(" -re "),
        "Fast pacing must not use -re: {args}"
    );
    let mkv: Vec<u8> = job.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(output_dimensions(&mkv), (640, 480));
}

#[tokio::test]
async fn compatible_input_is_copied_by_auto_and_by_copy() {
    let dir = TempDir::new().unwrap();
    let input = compatible(dir.path());
    let d = check_valid(&input, Profile::auto(), 2).await;
    assert_eq!(d.mode, Mode::Copy, "{d}");
    let d = check_valid(&input, Profile::Copy, 2).await;
    assert_eq!(d.mode, Mode::Copy);
}

#[tokio::test]
async fn b_frames_refuse_copy() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "bframes.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "3",
        ],
    );
    let err = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::Copy)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::CopyIncompatible { reasons, .. } if reasons.iter().any(|r| r.contains("B-frames"))),
        "{err}"
    );
    let d = check_valid(&input, Profile::Auto(quick()), 1).await;
    assert_eq!(d.mode, Mode::Transcode);
}

#[tokio::test]
async fn variable_frame_rate() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "vfr.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=3",
            "-vf",
            "setpts='if(lt(N,30),N/30,1+(N-30)/8)/TB'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    );
    check_valid(&input, Profile::Auto(quick()), 1).await;
}

#[tokio::test]
async fn odd_dimensions() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "odd.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=15:d=1",
            "-vf",
            "scale=321:241",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv444p",
        ],
    );
    let d = check_valid(&input, Profile::Auto(quick()), 1).await;
    assert!(d.to_string().contains("yuv444p"), "{d}");
    // Keeping the source size must still give even dimensions for yuv420p.
    let source = EncodeSettings::builder()
        .with_size(Size::Source)
        .with_preset(X264Preset::Ultrafast)
        .build()
        .unwrap();
    check_valid(&input, Profile::SampleParity(source), 1).await;
}

#[tokio::test]
async fn ten_bit_422() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "prores.mov",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=25:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-c:v",
            "prores_ks",
            "-profile:v",
            "2",
            "-c:a",
            "pcm_s16le",
        ],
    );
    let p = probe(&Input::path(&input)).await.unwrap();
    assert_eq!(p.video().unwrap().pix_fmt.as_deref(), Some("yuv422p10le"));
    let d = check_valid(&input, Profile::Auto(quick()), 2).await;
    assert_eq!(d.mode, Mode::Transcode);
}

#[tokio::test]
async fn audio_only() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "audio.m4a",
        &["-f", "lavfi", "-i", "sine=d=3", "-c:a", "aac"],
    );
    let d = check_valid(&input, Profile::auto(), 1).await;
    assert_eq!(d.mode, Mode::Copy, "{d}");
    assert_eq!(d.video_stream, None);
    check_valid(&input, Profile::sample_parity(), 1).await;
}

#[tokio::test]
async fn video_only() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "video.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ],
    );
    let d = check_valid(&input, Profile::auto(), 1).await;
    assert_eq!(d.mode, Mode::Copy, "{d}");
    assert_eq!(d.audio_stream, None);
}

#[tokio::test]
async fn rotated_phone_video_is_transcoded() {
    let dir = TempDir::new().unwrap();
    let plain = make_input(
        dir.path(),
        "portrait.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x180:r=30:d=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
        ],
    );
    let input = make_input(
        dir.path(),
        "rotated.mp4",
        &[
            "-i",
            plain.to_str().unwrap(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
        ],
    );
    let p = probe(&Input::path(&input)).await.unwrap();
    assert_eq!(p.video().unwrap().rotation, 90);
    let d = check_valid(&input, Profile::Auto(quick()), 1).await;
    assert_eq!(d.mode, Mode::Transcode);
    assert!(d.to_string().contains("rotated"), "{d}");
    // The picture really is turned upright: 320x180 with a 90 degree matrix comes out 180x320.
    let source = EncodeSettings::builder()
        .with_size(Size::Source)
        .with_preset(X264Preset::Ultrafast)
        .build()
        .unwrap();
    let job = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::SampleParity(source))
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let mkv: Vec<u8> = job.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(output_dimensions(&mkv), (180, 320));
}

/// Width and height of the first video stream of an MKV, by ffprobe on stdin.
fn output_dimensions(mkv: &[u8]) -> (u32, u32) {
    use std::io::Write;
    let mut child = StdCommand::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = mkv.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (w, h) = text.trim().split_once(',').expect("width,height");
    (w.parse().unwrap(), h.parse().unwrap())
}

#[tokio::test]
async fn gop_longer_than_20_s() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "longgop.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=2:d=25",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1000",
            "-keyint_min",
            "1000",
            "-sc_threshold",
            "0",
        ],
    );
    let p = probe(&Input::path(&input)).await.unwrap();
    assert!(
        p.keyframe_interval().unwrap() > Duration::from_secs(20),
        "{:?}",
        p.keyframes
    );
    let d = check_valid(&input, Profile::Auto(quick()), 1).await;
    assert_eq!(d.mode, Mode::Transcode);
    assert!(d.to_string().contains("20 s"), "{d}");
}

#[tokio::test]
async fn hevc() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "hevc.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=1",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
        ],
    );
    let err = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::Copy)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedCodec { codec, .. } if codec == "hevc"),
        "{err}"
    );
    let d = check_valid(&input, Profile::Auto(quick()), 1).await;
    assert!(d.to_string().contains("hevc"), "{d}");
}

#[tokio::test]
async fn vp9_opus_webm() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "clip.webm",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-c:a",
            "libopus",
        ],
    );
    let d = check_valid(&input, Profile::Auto(quick()), 2).await;
    assert_eq!(d.mode, Mode::Transcode);
    assert!(
        d.to_string().contains("vp9") && d.to_string().contains("opus"),
        "{d}"
    );
}

#[tokio::test]
async fn surround_5_1_audio() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "surround.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=2",
            "-f",
            "lavfi",
            "-i",
            "aevalsrc=sin(440*2*PI*t)|sin(550*2*PI*t)|0|0|0|0:c=5.1:d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-c:a",
            "aac",
        ],
    );
    let p = probe(&Input::path(&input)).await.unwrap();
    assert_eq!(p.audio().unwrap().channels, Some(6));
    let d = check_valid(&input, Profile::auto(), 2).await;
    assert_eq!(d.mode, Mode::Copy, "{d}");
    check_valid(&input, Profile::SampleParity(quick()), 2).await;
}

#[tokio::test]
async fn more_than_three_streams_map_one_video_and_one_audio() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "many.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=1",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=160x120:r=30:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=f=880:d=1",
            "-map",
            "0",
            "-map",
            "1",
            "-map",
            "2",
            "-map",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    assert_eq!(probe(&Input::path(&input)).await.unwrap().streams.len(), 4);
    let d = check_valid(&input, Profile::Auto(quick()), 2).await;
    assert_eq!((d.video_stream, d.audio_stream), (Some(0), Some(2)));
}

#[tokio::test]
async fn clip_under_one_second() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "short.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=0.4",
            "-f",
            "lavfi",
            "-i",
            "sine=d=0.4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    check_valid(&input, Profile::Auto(quick()), 2).await;
}

/// Deterministic noise (xorshift) so a failure reproduces.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn spawn_err(input: Input) -> Error {
    let start = Instant::now();
    let res = FfmpegSource::builder(input)
        .with_profile(Profile::Auto(quick()))
        .build()
        .unwrap()
        .spawn()
        .await;
    let err = match res {
        Ok(job) => job.wait().await.expect_err("a broken input must fail"),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    err
}

#[tokio::test]
async fn broken_inputs_fail_with_the_right_error() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.mp4"), b"").unwrap();
    std::fs::write(d.join("notes.txt"), b"this is not a video\n".repeat(50)).unwrap();
    std::fs::write(d.join("noise.bin"), noise(200_000)).unwrap();
    let upload = std::fs::read(typical_upload(d)).unwrap();
    std::fs::write(d.join("truncated.mp4"), &upload[..upload.len() * 6 / 10]).unwrap();
    for name in [
        "empty.mp4",
        "notes.txt",
        "noise.bin",
        "truncated.mp4",
        "missing.mp4",
    ] {
        let err = spawn_err(Input::path(d.join(name))).await;
        assert!(
            matches!(err, Error::UnreadableInput { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
        if !["notes.txt", "noise.bin"].contains(&name) {
            assert!(!err.stderr().unwrap().is_empty(), "{name}: no stderr kept");
        }
    }
}

#[tokio::test]
async fn broken_reader_inputs_fail_with_the_right_error() {
    let noise = noise(100_000);
    let err = spawn_err(Input::reader("noise", std::io::Cursor::new(noise))).await;
    assert!(matches!(err, Error::UnreadableInput { .. }), "{err:?}");
    let err = spawn_err(Input::reader("empty", tokio::io::empty())).await;
    assert!(matches!(err, Error::UnreadableInput { .. }), "{err:?}");
}

#[tokio::test]
async fn no_media_stream() {
    let dir = TempDir::new().unwrap();
    let srt = dir.path().join("subs.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:01,000\nhello\n\n").unwrap();
    let input = make_input(dir.path(), "subs.mkv", &["-i", srt.to_str().unwrap()]);
    let err = spawn_err(Input::path(&input)).await;
    assert!(
        matches!(&err, Error::NoMediaStream { found, .. } if found.contains("subtitle")),
        "{err:?}"
    );
}

#[tokio::test]
async fn moov_at_end_on_a_pipe_is_refused_with_advice() {
    let dir = TempDir::new().unwrap();
    let data = std::fs::read(typical_upload(dir.path())).unwrap();
    let err = spawn_err(Input::reader(
        "upload.mp4 via stdin",
        std::io::Cursor::new(data),
    ))
    .await;
    match &err {
        Error::NeedsSeekableInput { reason, .. } => {
            assert!(
                reason.contains("faststart") && reason.contains("URL"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn moov_at_end_beyond_the_peek_window_is_caught_from_ffmpeg() {
    let dir = TempDir::new().unwrap();
    let data = std::fs::read(compatible(dir.path())).unwrap();
    // ftyp, then a 1.2 MB `free` box so the first `mdat` lies beyond what is inspected up front.
    let ftyp = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    let mut padded = data[..ftyp].to_vec();
    padded.extend_from_slice(&(1_200_008u32).to_be_bytes());
    padded.extend_from_slice(b"free");
    padded.resize(padded.len() + 1_200_000, 0);
    padded.extend_from_slice(&data[ftyp..]);
    let err = spawn_err(Input::reader("padded.mp4", std::io::Cursor::new(padded))).await;
    match &err {
        Error::NeedsSeekableInput { stderr, .. } => assert!(!stderr.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pipe_input_of_a_streamable_format_works() {
    let dir = TempDir::new().unwrap();
    let input = make_input(
        dir.path(),
        "stream.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=30:d=2",
            "-f",
            "lavfi",
            "-i",
            "sine=d=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    let file = tokio::fs::File::open(&input).await.unwrap();
    let job = FfmpegSource::builder(Input::reader("stream.mkv", file))
        .with_profile(Profile::Auto(quick()))
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    assert_eq!(job.decision().mode, Mode::Transcode);
    let progress = job.progress();
    let (f, _) = refragment(job).await.unwrap();
    assert!(
        f.all_keyframe_first && f.count >= 1 && f.tracks == 2,
        "{f:?}"
    );
    let p = progress.borrow().clone();
    assert!(p.finished, "{p:?}");
    assert!(p.out_time >= Duration::from_millis(1500), "{p:?}");
    assert!(p.frames >= 50, "{p:?}");
    assert_eq!(p.duration, None);
}

#[tokio::test]
async fn progress_reports_duration_and_time() {
    let dir = TempDir::new().unwrap();
    let input = compatible(dir.path());
    let job = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::SampleParity(quick()))
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let mut progress = job.progress();
    assert!(progress.borrow().duration.unwrap() >= Duration::from_millis(2900));
    let summary = job.wait().await.unwrap();
    assert!(summary.bytes > 1024 && summary.saw_cluster, "{summary:?}");
    let p = progress.borrow_and_update().clone();
    assert!(p.finished && p.fraction().unwrap() > 0.9, "{p:?}");
}

#[tokio::test]
async fn cancel_kills_ffmpeg_and_ends_the_stream() {
    let dir = TempDir::new().unwrap();
    let input = compatible(dir.path());
    let mut job = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::SampleParity(quick()))
        .with_pacing(Pacing::Realtime)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let pid = job.pid().unwrap();
    assert!(job.plan().display_args().contains(" -re "));
    let first = job.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let handle = job.cancel_handle();
    let start = Instant::now();
    handle.cancel();
    let mut last = None;
    while let Some(item) = job.next().await {
        last = Some(item);
    }
    assert!(
        matches!(last, Some(Err(Error::Cancelled { .. }))),
        "{last:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        gone_within(pid, Duration::from_secs(3)).await,
        "ffmpeg {pid} survived cancel"
    );
    assert_eq!(listing(dir.path()).len(), 1);
}

#[tokio::test]
async fn dropping_the_job_kills_ffmpeg() {
    let dir = TempDir::new().unwrap();
    let input = compatible(dir.path());
    let mut job = FfmpegSource::builder(Input::path(&input))
        .with_profile(Profile::SampleParity(quick()))
        .with_pacing(Pacing::Realtime)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let pid = job.pid().unwrap();
    job.next().await.unwrap().unwrap();
    drop(job);
    assert!(
        gone_within(pid, Duration::from_secs(3)).await,
        "ffmpeg {pid} survived drop"
    );
}

/// A stand-in for ffmpeg, to script failures real ffmpeg does not produce on demand.
fn fake_ffmpeg(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-ffmpeg");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(start_paused = true)]
async fn stall_kills_ffmpeg_and_its_process_group() {
    let dir = TempDir::new().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let fake = fake_ffmpeg(
        dir.path(),
        &format!(
            "sleep 1000 &\necho $! > '{}'\nexec sleep 1000",
            pidfile.display()
        ),
    );
    let mut job = FfmpegSource::builder(Input::reader("stdin", tokio::io::empty()))
        .with_ffmpeg_path(&fake)
        .with_stall_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let pid = job.pid().unwrap();
    // Wait (in real time) for the script to start its grandchild.
    let start = Instant::now();
    while std::fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let err = job.next().await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Stalled { waited, .. } if waited == Duration::from_secs(30)),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(job.next().await.is_none());
    assert!(
        gone_within(grandchild, Duration::from_secs(3)).await,
        "grandchild {grandchild} survived"
    );
    drop(job);
    assert!(
        gone_within(pid, Duration::from_secs(3)).await,
        "ffmpeg {pid} survived"
    );
}

#[tokio::test]
async fn exit_zero_without_media_is_an_error() {
    let dir = TempDir::new().unwrap();
    let fake = fake_ffmpeg(dir.path(), "printf 'not mkv at all'\nexit 0");
    let job = FfmpegSource::builder(Input::reader("stdin", tokio::io::empty()))
        .with_ffmpeg_path(&fake)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let pid = job.pid().unwrap();
    let err = job.wait().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoUsableMedia {
                bytes: 14,
                saw_cluster: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(gone_within(pid, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn non_zero_exit_keeps_the_last_stderr_lines() {
    let dir = TempDir::new().unwrap();
    let fake = fake_ffmpeg(
        dir.path(),
        "i=0; while [ $i -lt 500 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\necho 'out_time_us=5' >&2\necho 'the real reason' >&2\nexit 3",
    );
    let job = FfmpegSource::builder(Input::reader("stdin", tokio::io::empty()))
        .with_ffmpeg_path(&fake)
        .with_stderr_lines(5)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let err = job.wait().await.unwrap_err();
    match &err {
        Error::Exit {
            tool: Tool::Ffmpeg,
            status,
            stderr,
            ..
        } => {
            assert!(status.contains('3'), "{status}");
            assert_eq!(stderr.lines().len(), 5);
            assert_eq!(stderr.lines().last().unwrap(), "the real reason");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("the real reason"));
}

#[tokio::test]
async fn missing_tools_name_the_package() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("x.mp4");
    let err = FfmpegSource::builder(Input::path(&input))
        .with_ffprobe_path("/nonexistent/ffprobe")
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ToolMissing {
                tool: Tool::Ffprobe,
                package: "ffmpeg",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("apt-get install ffmpeg"));
    let err = FfmpegSource::builder(Input::reader("stdin", tokio::io::empty()))
        .with_ffmpeg_path("/nonexistent/ffmpeg")
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ToolMissing {
                tool: Tool::Ffmpeg,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A minimal HTTP/1.1 server with Range support, enough for ffmpeg's http protocol: one request
/// per connection. Only `/upload.mp4?...` exists; anything else is a 403 like S3 gives for a bad
/// signature.
async fn range_server(data: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let data = std::sync::Arc::new(data);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let data = data.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                    if req.len() > 65536 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                if !path.starts_with("/upload.mp4?") {
                    let body = "<Error><Code>SignatureDoesNotMatch</Code></Error>";
                    let head = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                    return;
                }
                let total = data.len();
                let range = text.lines().find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    let r = l.strip_prefix("range: bytes=")?;
                    let (a, b) = r.split_once('-')?;
                    let a: usize = a.trim().parse().ok()?;
                    let b: usize = b.trim().parse().unwrap_or(total - 1);
                    Some((a, b.min(total - 1)))
                });
                let (status, start, end) = match range {
                    Some((a, b)) if a < total && a <= b => ("206 Partial Content", a, b),
                    Some(_) => ("416 Range Not Satisfiable", 0, 0),
                    None => ("200 OK", 0, total - 1),
                };
                let len = if status.starts_with("416") {
                    0
                } else {
                    end - start + 1
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\n\
                     Content-Range: bytes {start}-{end}/{total}\r\nContent-Type: video/mp4\r\nConnection: close\r\n\r\n"
                );
                if sock.write_all(head.as_bytes()).await.is_ok() && len > 0 {
                    let _ = sock.write_all(&data[start..=end]).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn presigned_url_with_moov_at_end_streams_and_never_leaks_the_signature() {
    let dir = TempDir::new().unwrap();
    let data = std::fs::read(typical_upload(dir.path())).unwrap();
    let addr = range_server(data).await;
    let secret = "X-Amz-Credential=AKIDEXAMPLE%2F20240101&X-Amz-Signature=deadbeefsecret";
    let url = format!("http://{addr}/upload.mp4?{secret}");
    assert!(
        matches!(Input::url(url.clone()), Err(Error::InvalidConfig { .. })),
        "plain http needs the opt-in"
    );
    let mut source = FfmpegSource::builder(Input::url_allow_http(url).unwrap())
        .with_profile(Profile::Auto(quick()))
        .build()
        .unwrap();
    let plan = source.plan().await.unwrap();
    assert!(!format!("{plan:?}").contains("deadbeef"));
    assert!(
        !plan.display_args().contains("deadbeef"),
        "{}",
        plan.display_args()
    );
    let job = source.spawn().await.unwrap();
    assert!(!format!("{job:?}").contains("deadbeef"));
    let (f, _) = refragment(job).await.unwrap();
    assert!(f.all_keyframe_first && f.tracks == 2, "{f:?}");

    let bad = format!("http://{addr}/other.mp4?{secret}");
    let err = spawn_err(Input::url_allow_http(bad).unwrap()).await;
    assert!(matches!(err, Error::UnreadableInput { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("deadbeef") && !text.contains("AKIDEXAMPLE"),
        "{text}"
    );
    assert!(text.contains("403"), "{text}");
}
