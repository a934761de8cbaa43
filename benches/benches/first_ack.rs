//! First acknowledgement: real ffmpeg (`ffmpeg-source`, `Pacing::Realtime`) -> `PutMediaSink`
//! -> kvs-emulator on loopback. Measures, per run, from the first byte ffmpeg writes to the first
//! RECEIVED ack, and breaks it down. Target (issue 8): under 50 ms plus one fragment duration.
//!
//! Run: `cargo bench -p kvs-benches --bench first_ack` (`FIRST_ACK_RUNS=N`, default 5 per
//! profile); figures in docs/performance.md.
//!
//! Per run, in order:
//! - the session starts first (`PutMediaClient::start`: DescribeStream, GetDataEndpoint, the 200),
//!   as an application would before it starts its source;
//! - `spawn`: `FfmpegSource::spawn()` (ffprobe, then ffmpeg) until the first MKV byte arrives;
//! - `fragment`: from that first byte until a re-fragmenter fed the same chunks (a shadow copy,
//!   same default config) emits its first fragment, i.e. when the sink could first send one;
//! - `ack`: from then until the first RECEIVED ack arrives on the `AckStream`.
//!
//! The input is a 6 s clip made once by ffmpeg (640x360 25 fps H.264 baseline, 2 s GOP, AAC) in
//! an MP4 with its index first; `Profile::Copy` streams it as is, `Profile::sample_parity()`
//! transcodes it (x264 veryfast, 2 s GOP), and again with `X264Tune::Zerolatency` (no lookahead).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use ffmpeg_source::{EncodeSettings, FfmpegSource, Input, Pacing, Profile, X264Tune};
use futures::{SinkExt, StreamExt};
use kvs_emulator::Emulator;
use kvs_putmedia::ack::AckEventType;
use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};
use kvs_putmedia::{PutMediaClient, SessionEvent};

fn make_clip(dir: &Path) -> PathBuf {
    let path = dir.join("first-ack-6s-gop2.mp4");
    if path.exists() {
        return path;
    }
    let tmp = dir.join("first-ack-6s-gop2.part.mp4");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "6", "-c:v", "libx264", "-profile:v", "baseline"])
        .args(["-preset", "veryfast", "-b:v", "900k", "-g", "50"])
        .args(["-keyint_min", "50", "-sc_threshold", "0", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"])
        .args(["-movflags", "+faststart"])
        .arg(&tmp)
        .status()
        .expect("running ffmpeg");
    assert!(status.success(), "ffmpeg failed: {status}");
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[derive(Debug, Clone, Copy)]
struct Run {
    spawn: Duration,
    fragment: Duration,
    ack: Duration,
    fragment_duration: Duration,
}

impl Run {
    fn total(&self) -> Duration {
        self.fragment + self.ack
    }
}

async fn one_run(emu: &Emulator, stream: &str, clip: &Path, profile: Profile) -> Run {
    emu.create_stream(stream, 24).await.unwrap();
    let c = emu.credentials();
    let client = PutMediaClient::builder()
        .with_stream_name(stream)
        .with_region(emu.region())
        .with_credentials(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "bench",
        ))
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        .build()
        .unwrap();
    let (mut sink, mut acks) = client.start().await.unwrap();
    let (tx, mut first_received) = tokio::sync::mpsc::channel::<Instant>(1);
    let ack_task = tokio::spawn(async move {
        let mut sent = false;
        while let Some(ev) = acks.next().await {
            if let Ok(SessionEvent::Fragment(f)) = ev
                && f.event == AckEventType::Received
                && !sent
            {
                sent = true;
                let _ = tx.send(Instant::now()).await;
            }
        }
    });
    let mut shadow = Refragmenter::new(RefragmentConfig::default());

    let t0 = Instant::now();
    let mut job = FfmpegSource::builder(Input::path(clip))
        .with_profile(profile)
        .with_pacing(Pacing::Realtime)
        .build()
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let mut first_byte = None;
    let mut first_fragment: Option<(Instant, Duration)> = None;
    let received = loop {
        tokio::select! {
            biased;
            at = first_received.recv() => break at.expect("a RECEIVED ack before the session ended"),
            chunk = job.next() => {
                let Some(chunk) = chunk else {
                    // The clip ended before its first fragment was acknowledged (a clip shorter
                    // than two GOPs): the session's pause flush closes that fragment; wait.
                    let _ = sink.flush().await;
                    break first_received.recv().await.expect("a RECEIVED ack");
                };
                let chunk = chunk.unwrap();
                first_byte.get_or_insert_with(Instant::now);
                shadow.push(chunk.clone()).unwrap();
                while let Some(out) = shadow.next_output() {
                    if let Output::Fragment(f) = out
                        && first_fragment.is_none()
                    {
                        first_fragment = Some((Instant::now(), f.duration()));
                    }
                }
                sink.send(chunk).await.unwrap();
            }
        }
    };
    let first_byte = first_byte.expect("ffmpeg wrote something");
    let (fragment_at, fragment_duration) = first_fragment.expect("a fragment before the ack");
    job.cancel();
    drop(job);
    drop(sink);
    ack_task.abort();
    Run {
        spawn: first_byte - t0,
        fragment: fragment_at - first_byte,
        ack: received.saturating_duration_since(fragment_at),
        fragment_duration,
    }
}

fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    let runs: usize = std::env::var("FIRST_ACK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = make_clip(&dir);
    let emu_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = emu_rt.block_on(async { Emulator::builder().start().await.unwrap() });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| profile | runs | first byte -> RECEIVED p50 / max | spawn (probe + start) p50 | first byte -> first fragment complete p50 | fragment complete -> RECEIVED p50 | fragment duration | target (50 ms + fragment) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let zerolatency = EncodeSettings::builder()
        .with_tune(X264Tune::Zerolatency)
        .build()
        .unwrap();
    for (name, profile) in [
        ("Copy", Profile::Copy),
        ("SampleParity", Profile::sample_parity()),
        (
            "SampleParity+zerolatency",
            Profile::SampleParity(zerolatency),
        ),
    ] {
        let mut all = Vec::new();
        for i in 0..runs {
            let stream = format!("first-ack-{}-{i}", name.replace('+', "-"));
            let r = rt.block_on(one_run(&emu, &stream, &clip, profile.clone()));
            eprintln!(
                "first_ack/{name} run {i}: total {:.1} ms = fragment {:.1} + ack {:.1} (spawn {:.1}, fragment duration {:.0} ms)",
                ms(r.total()),
                ms(r.fragment),
                ms(r.ack),
                ms(r.spawn),
                ms(r.fragment_duration)
            );
            all.push(r);
        }
        let col = |f: fn(&Run) -> Duration| all.iter().map(f).collect::<Vec<_>>();
        let frag = quantile(col(|r| r.fragment_duration), 0.5);
        println!(
            "| {name} | {runs} | {:.0} / {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms(quantile(col(Run::total), 0.5)),
            ms(quantile(col(Run::total), 1.0)),
            ms(quantile(col(|r| r.spawn), 0.5)),
            ms(quantile(col(|r| r.fragment), 0.5)),
            ms(quantile(col(|r| r.ack), 0.5)),
            ms(frag),
            50.0 + ms(frag),
        );
    }
    drop(rt);
    emu_rt.block_on(emu.shutdown());
}
