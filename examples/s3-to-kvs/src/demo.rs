//! The main job on an embedded emulator: the whole mission with no AWS account.
//!
//! 1. start the emulator (KVS, S3, STS on one port of 127.0.0.1);
//! 2. make a clip the way phones upload them (H.264 with B-frames + AAC, MP4 with its index at
//!    the end) and upload it with the real S3 client;
//! 3. start this service in-process and `POST /processObject` to it, as the Lambda would;
//! 4. wait for the job, then read the stream back through `ListFragments` and
//!    `GetMediaForFragmentList` and check each fragment with ffprobe: persisted, and starting
//!    with a video keyframe.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kvs_emulator::Emulator;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::Pace;
use crate::http::{self, App};
use crate::jobs::{Limits, Registry};
use crate::pipeline::{Pipeline, Target};

/// Stream the demo (and `serve --emulator` without a stream flag) puts media on.
pub const DEMO_STREAM: &str = "demo-stream";
const DEMO_BUCKET: &str = "uploads";
const DEMO_KEY: &str = "phone/clip 1.mp4";

/// Options of the main job.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Length of the generated clip, in seconds.
    #[arg(long, default_value_t = 12)]
    seconds: u32,
    /// Pacing: `realtime` streams at native rate like the Node sample; `fast` backfills.
    #[arg(long, value_enum, default_value_t = Pace::Realtime)]
    pace: Pace,
}

/// Starts an emulator on 127.0.0.1 with a free port.
pub async fn start_emulator() -> anyhow::Result<Emulator> {
    Emulator::builder()
        .start()
        .await
        .context("starting the embedded emulator")
}

/// An SDK configuration pointing every AWS client at `emu`.
pub async fn emulator_sdk_config(emu: &Emulator) -> SdkConfig {
    let c = emu.credentials();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(emu.region().to_owned()))
        .endpoint_url(emu.url())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "kvs-emulator",
        ))
        .load()
        .await
}

/// Creates `name` on a freshly started emulator, with 24 h retention so fragments are
/// PERSISTED.
pub async fn create_stream(emu: &Emulator, name: &str) -> anyhow::Result<()> {
    emu.create_stream(name, 24)
        .await
        .with_context(|| format!("creating stream {name}"))?;
    Ok(())
}

async fn make_clip(seconds: u32) -> anyhow::Result<Bytes> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("clip.mp4");
    // What phones upload: 720p30 H.264 High (B-frames) + AAC in an MP4 whose index is written at
    // the end (no faststart), the case a pipe-fed ffmpeg gets wrong.
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=1280x720:rate=30:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={seconds}"
        ))
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running ffmpeg to make the demo clip (is the ffmpeg package installed?)")?;
    ensure!(
        status.success(),
        "ffmpeg could not make the demo clip: {status}"
    );
    let bytes = tokio::fs::read(&path).await?;
    ensure!(
        bytes.len() > 10_000,
        "ffmpeg made a {}-byte clip",
        bytes.len()
    );
    Ok(Bytes::from(bytes))
    // `dir` is removed here: no temp file outlives the job.
}

async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}

struct Checked {
    number: String,
    producer_ms: i64,
    duration_ms: i64,
    size: i64,
    keyframe_first: bool,
}

/// ffprobe's verdict on the first video frame of a standalone fragment.
async fn first_video_frame_is_key(media: Bytes) -> anyhow::Result<bool> {
    let mut child = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "frame=key_frame",
            "-of",
            "csv=p=0",
            "-i",
            "pipe:0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("running ffprobe")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        // ffprobe stops reading after the first frame; a broken pipe then is expected.
        let _ = stdin.write_all(&media).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    // One CSV line per frame; a frame with side data gets extra (empty) fields: "1,".
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.split(',').next().map(|f| f.trim() == "1"));
    Ok(first == Some(true))
}

async fn read_back(config: &SdkConfig, stream: &str) -> anyhow::Result<Vec<Checked>> {
    let kv = aws_sdk_kinesisvideo::Client::new(config);
    let endpoint = kv
        .get_data_endpoint()
        .stream_name(stream)
        .api_name(ApiName::ListFragments)
        .send()
        .await
        .context("GetDataEndpoint(LIST_FRAGMENTS)")?
        .data_endpoint
        .context("GetDataEndpoint returned no endpoint")?;
    let archived = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
        aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build(),
    );
    let now = aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime::from(
        std::time::SystemTime::now() + Duration::from_secs(3600),
    );
    let listed = archived
        .list_fragments()
        .stream_name(stream)
        .fragment_selector(
            FragmentSelector::builder()
                .fragment_selector_type(FragmentSelectorType::ProducerTimestamp)
                .timestamp_range(
                    TimestampRange::builder()
                        .start_timestamp(
                            aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime::from_secs(0),
                        )
                        .end_timestamp(now)
                        .build()?,
                )
                .build()?,
        )
        .send()
        .await
        .context("ListFragments")?;
    let mut fragments = listed.fragments.unwrap_or_default();
    fragments.sort_by_key(|f| f.producer_timestamp.map(|t| t.to_millis().unwrap_or(0)));
    let mut checked = Vec::with_capacity(fragments.len());
    for f in fragments {
        let number = f.fragment_number.clone().unwrap_or_default();
        let media = archived
            .get_media_for_fragment_list()
            .stream_name(stream)
            .fragments(&number)
            .send()
            .await
            .with_context(|| format!("GetMediaForFragmentList({number})"))?
            .payload
            .collect()
            .await?
            .into_bytes();
        checked.push(Checked {
            keyframe_first: first_video_frame_is_key(media).await?,
            number,
            producer_ms: f
                .producer_timestamp
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
            duration_ms: f.fragment_length_in_milliseconds,
            size: f.fragment_size_in_bytes,
        });
    }
    Ok(checked)
}

/// Runs the main job.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let emu = start_emulator().await?;
    println!(
        "emulator      {} (KVS, S3, STS; region {})",
        emu.url(),
        emu.region()
    );
    let config = emulator_sdk_config(&emu).await;
    create_stream(&emu, DEMO_STREAM).await?;

    let clip = make_clip(args.seconds).await?;
    let s3 = aws_sdk_s3::Client::new(&config);
    s3.create_bucket()
        .bucket(DEMO_BUCKET)
        .send()
        .await
        .context("CreateBucket")?;
    s3.put_object()
        .bucket(DEMO_BUCKET)
        .key(DEMO_KEY)
        .body(clip.clone().into())
        .send()
        .await
        .context("PutObject")?;
    println!(
        "uploaded      s3://{DEMO_BUCKET}/{DEMO_KEY} ({} KiB, {} s of 720p30 H.264 + AAC, index at the end)",
        clip.len() / 1024,
        args.seconds
    );

    let app = Arc::new(App {
        registry: Arc::new(Registry::new(Limits {
            concurrency: 1,
            queue: 4,
            history: 100,
        })),
        runner: Arc::new(Pipeline::new(
            &config,
            Target::Name(DEMO_STREAM.into()),
            args.pace,
            true,
            None,
        )),
        stop: CancellationToken::new(),
        first_ack_wait: Duration::from_secs(60),
    });
    let listener = http::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let stop_service = CancellationToken::new();
    let service = tokio::spawn(http::serve(
        listener,
        app,
        stop_service.clone().cancelled_owned(),
        Duration::from_secs(10),
    ));
    println!("service       http://{addr}");

    let body = serde_json::json!({ "bucketName": DEMO_BUCKET, "keyName": DEMO_KEY });
    let posted = Instant::now();
    let (status, answer) = http_request(addr, "POST", "/processObject", Some(body.clone())).await?;
    println!(
        "POST /processObject {body}\n  -> {status} {answer}\n  answered at the first acknowledged fragment, after {:.2} s",
        posted.elapsed().as_secs_f64()
    );
    ensure!(status == 200, "processObject answered {status}: {answer}");
    let job_id = answer["jobId"].as_str().context("no jobId")?.to_owned();

    let final_view = loop {
        let (_, view) = http_request(addr, "GET", &format!("/jobs/{job_id}"), None).await?;
        let p = &view["progress"];
        println!(
            "job {}  media {:>5.1}s  received {:>3}  persisted {:>3}  failed {}",
            view["state"].as_str().unwrap_or("?"),
            p["media_time_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            p["fragments_received"],
            p["fragments_persisted"],
            p["fragments_failed"],
        );
        if !matches!(view["state"].as_str(), Some("queued" | "running")) {
            break view;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    stop_service.cancel();
    service.await??;
    if final_view["state"] != "succeeded" {
        bail!(
            "the job ended {}: {}",
            final_view["state"],
            final_view["error"]
        );
    }

    let fragments = read_back(&config, DEMO_STREAM).await?;
    println!("\nListFragments + GetMediaForFragmentList on {DEMO_STREAM}:");
    println!(
        "  #  fragment number                                  producer time  duration   size      keyframe-first"
    );
    for (i, f) in fragments.iter().enumerate() {
        println!(
            "{:>3}  {:<47}  {:>13}  {:>6} ms  {:>7} B  {}",
            i + 1,
            f.number,
            f.producer_ms,
            f.duration_ms,
            f.size,
            if f.keyframe_first { "yes" } else { "NO" }
        );
    }
    let persisted = final_view["progress"]["fragments_persisted"]
        .as_u64()
        .unwrap_or(0);
    let aligned = fragments.iter().filter(|f| f.keyframe_first).count();
    println!(
        "\n{} fragments stored, {} persisted acks, {} keyframe-aligned, in {:.1} s",
        fragments.len(),
        persisted,
        aligned,
        started.elapsed().as_secs_f64()
    );
    ensure!(!fragments.is_empty(), "no fragment was stored");
    ensure!(
        persisted as usize == fragments.len(),
        "{} fragments stored but {persisted} PERSISTED acks",
        fragments.len()
    );
    ensure!(
        aligned == fragments.len(),
        "a fragment does not start with a keyframe"
    );
    println!("OK: every fragment persisted and keyframe-aligned");
    emu.shutdown().await;
    Ok(())
}
