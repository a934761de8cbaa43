//! ffmpeg CPU seconds per second of media: the Node sample's exact command line, our
//! `Profile::SampleParity` preset, and copy mode, all on the same 720p30 H.264 + AAC MP4.
//!
//! Not a criterion bench: the figure is child CPU time (`getrusage(RUSAGE_CHILDREN)`), not wall
//! time. Run with `cargo bench -p kvs-benches --bench ffmpeg`; `FFMPEG_BENCH_SECONDS` sets the
//! clip length (default 10), `FFMPEG_BENCH_RUNS` the runs per mode (default 3, best kept).
//! Without `--bench` (as `cargo test --benches` runs it) it does one quick 2 s pass.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ffmpeg_source::{EncodeSettings, FfmpegSource, Input, Mode, Profile, X264Preset};

/// Child user+system CPU time so far (reaped children only).
#[allow(unsafe_code)]
fn children_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given, which is valid.
    let ru = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()), 0);
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs ffmpeg with `args`, its MKV going to a pipe that is drained and discarded, and returns
/// (CPU, wall) time.
fn measure(args: &[std::ffi::OsString]) -> (Duration, Duration) {
    let before = children_cpu();
    let start = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg runs");
    let mut out = child.stdout.take().unwrap();
    let bytes = std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() && bytes > 1024,
        "ffmpeg failed: {status}, {bytes} bytes"
    );
    (children_cpu() - before, start.elapsed())
}

fn make_input(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join(format!("bench-720p30-{seconds}s.mp4"));
    if path.exists() {
        return path;
    }
    // A copy-compatible upload: H.264 without B-frames, a keyframe every 2 s, AAC, index at the
    // end (the default for ffmpeg's MP4 muxer, as for most phones).
    let d = seconds.to_string();
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=s=1280x720:r=30:d={d}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=f=440:d={d}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "0",
            "-g",
            "60",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ])
        .arg(&path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    path
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env_u32 = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (seconds, runs) = if full {
        (
            env_u32("FFMPEG_BENCH_SECONDS", 10),
            env_u32("FFMPEG_BENCH_RUNS", 3),
        )
    } else {
        (2, 1)
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let input = make_input(&dir, seconds);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = |profile: Profile| {
        rt.block_on(async {
            let mut source = FfmpegSource::builder(Input::path(&input))
                .with_profile(profile)
                .build()
                .unwrap();
            source.plan().await.unwrap().clone()
        })
    };
    let parity = plan(Profile::sample_parity());
    // The same preset as the sample, to show what the correct filters and GOP cost on their own.
    let parity_medium = plan(Profile::SampleParity(
        EncodeSettings::builder()
            .with_preset(X264Preset::Medium)
            .build()
            .unwrap(),
    ));
    let copy = plan(Profile::Copy);
    assert_eq!(copy.decision().mode, Mode::Copy);
    // The Node sample's command line, minus `-re` (pacing changes wall time, not CPU per media
    // second) and with its output on a pipe as the sample had it.
    let sample: Vec<std::ffi::OsString> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-i"]
        .iter()
        .map(Into::into)
        .chain([input.clone().into_os_string()])
        .chain(
            [
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-s",
                "640x480",
                "-c:a",
                "aac",
                "-f",
                "matroska",
                "pipe:1",
            ]
            .iter()
            .map(Into::into),
        )
        .collect();

    println!(
        "input: {} ({seconds} s of 1280x720 30 fps H.264 + AAC), best of {runs}",
        input.display()
    );
    println!(
        "{:<34} {:>10} {:>14} {:>10}",
        "mode", "cpu s", "cpu s/media s", "speed"
    );
    let mut results = Vec::new();
    for (name, args) in [
        ("node sample (libx264 medium)", sample.as_slice()),
        ("SampleParity (libx264 veryfast)", parity.args()),
        ("Copy", copy.args()),
        ("SampleParity, preset medium", parity_medium.args()),
    ] {
        let (cpu, wall) = (0..runs)
            .map(|_| measure(args))
            .min_by_key(|(cpu, _)| *cpu)
            .unwrap();
        let per = cpu.as_secs_f64() / f64::from(seconds);
        let speed = f64::from(seconds) / wall.as_secs_f64();
        println!(
            "{name:<34} {:>10.3} {per:>14.4} {speed:>9.1}x",
            cpu.as_secs_f64()
        );
        results.push(per);
    }
    println!(
        "copy / sample = {:.2}%   parity / sample = {:.1}%",
        100.0 * results[2] / results[0],
        100.0 * results[1] / results[0]
    );
    println!("parity command: {}", parity.display_args());
    println!("copy command:   {}", copy.display_args());
}
