//! The main job on an embedded emulator: the whole system with no AWS account.
//!
//! 1. start the emulator (KVS, S3, SQS, STS on one port of 127.0.0.1): a bucket that notifies
//!    a standard intake queue, a FIFO work queue with a dead-letter queue;
//! 2. start the worker in-process (forwarder + `--stream-template cam-{key_dir}`, streams
//!    created on first use, several objects at once);
//! 3. upload clips the way phones do (H.264 with B-frames + AAC, MP4 with its index at the end,
//!    each with its recording time) under a few prefixes, all at once;
//! 4. wait for every object, then read each stream back (`kvs_pipeline::readback`:
//!    `ListFragments` and `GetMediaForFragmentList`) and check every fragment: stored once, in
//!    upload order, starting with a video keyframe.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use aws_config::SdkConfig;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use kvs_emulator::Emulator;
use kvs_pipeline::readback::{Archive, StoredFragment, Timestamps};
use kvs_pipeline::streams::{Route, Sessions};
use kvs_pipeline::worker::{JobState, Worker, WorkerConfig};
use kvs_putmedia::PutMediaClientBuilder;
use tokio_util::sync::CancellationToken;

use ffmpeg_source::Pacing;

/// Stream the demo (and `serve --emulator` without a stream flag) puts media on.
pub const DEMO_STREAM: &str = "demo-stream";
const DEMO_BUCKET: &str = "uploads";
const TEMPLATE: &str = "cam-{key_dir}";

/// Options of the main job.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Length of each generated clip, in seconds.
    #[arg(long, default_value_t = 6)]
    seconds: u32,
    /// Prefixes uploaded to (one stream each).
    #[arg(long, value_delimiter = ',', default_value = "front,back,garage")]
    prefixes: Vec<String>,
    /// Uploads per prefix.
    #[arg(long, default_value_t = 2)]
    per_prefix: u32,
    /// Objects the worker streams at once.
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// Pacing: `fast` backfills (the worker's default); `realtime` streams at native rate.
    #[arg(long, default_value_t = Pacing::Fast)]
    pace: Pacing,
    /// Keep the emulator (and the worker) running after the summary, until Ctrl-C, so a
    /// person can watch the streams.
    #[arg(long)]
    keep_running: bool,
}

/// Starts an emulator on 127.0.0.1 with a free port.
pub async fn start_emulator() -> anyhow::Result<Emulator> {
    Emulator::builder()
        .start()
        .await
        .context("starting the embedded emulator")
}

/// Creates `name` on a freshly started emulator, with 24 h retention so fragments are
/// PERSISTED.
pub async fn create_stream(emu: &Emulator, name: &str) -> anyhow::Result<()> {
    emu.create_stream(name, 24)
        .await
        .with_context(|| format!("creating stream {name}"))?;
    Ok(())
}

/// Every fragment of `stream` with its media read, in arrival order: producer times then show
/// whether objects went in upload order.
async fn read_back(config: &SdkConfig, stream: &str) -> anyhow::Result<Vec<StoredFragment>> {
    let archive = Archive::connect(config, stream).await?;
    let range = (
        SystemTime::UNIX_EPOCH,
        SystemTime::now() + Duration::from_secs(3600),
    );
    let mut stored = archive.list(Timestamps::Producer, range).await?;
    archive.fetch(&mut stored, |_, _| Ok(())).await?;
    stored.sort_by_key(|f| f.server_ms);
    Ok(stored)
}

/// Makes a phone-like clip recorded at `recorded` (its `creation_time`), `variant` changing
/// the picture so every clip differs.
async fn make_clip(seconds: u32, variant: u32, recorded: SystemTime) -> anyhow::Result<Bytes> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("clip.mp4");
    let created = time::OffsetDateTime::from(recorded)
        .format(&time::format_description::well_known::Rfc3339)?;
    // What phones upload: H.264 High (B-frames) + AAC in an MP4 whose index is written at the
    // end (no faststart), the case a pipe-fed ffmpeg gets wrong.
    let status = tokio::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={}:sample_rate=48000:duration={seconds}",
            220 + 110 * variant
        ))
        .args(["-vf", &format!("hue=h={}", variant * 40)])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest", "-metadata"])
        .arg(format!("creation_time={created}"))
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running ffmpeg to make a demo clip (is the ffmpeg package installed?)")?;
    ensure!(
        status.success(),
        "ffmpeg could not make a demo clip: {status}"
    );
    Ok(Bytes::from(tokio::fs::read(&path).await?))
    // `dir` is removed here: no temp file outlives the job.
}

/// The bucket -> intake queue -> FIFO work queue (+ DLQ) wiring; returns (intake, work) URLs.
async fn wire_queues(config: &SdkConfig) -> anyhow::Result<(String, String)> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let s3 = aws_sdk_s3::Client::new(config);
    s3.create_bucket()
        .bucket(DEMO_BUCKET)
        .send()
        .await
        .context("CreateBucket")?;
    let create = |name: &str, fifo: bool| {
        let mut req = sqs.create_queue().queue_name(name);
        if fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        req.send()
    };
    let intake = create("uploads-intake", false)
        .await
        .context("CreateQueue(intake)")?;
    let intake = intake.queue_url.context("no queue URL")?;
    let dlq = create("work-dlq.fifo", true)
        .await
        .context("CreateQueue(dlq)")?;
    let arn = |url: String| {
        let sqs = sqs.clone();
        async move {
            let a = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .context("GetQueueAttributes(QueueArn)")?;
            a.attributes
                .and_then(|mut m| m.remove(&QueueAttributeName::QueueArn))
                .context("no QueueArn")
        }
    };
    let dlq_arn = arn(dlq.queue_url.context("no queue URL")?).await?;
    let work = sqs
        .create_queue()
        .queue_name("work.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3 }).to_string(),
        )
        .send()
        .await
        .context("CreateQueue(work)")?
        .queue_url
        .context("no queue URL")?;
    let intake_arn = arn(intake.clone()).await?;
    s3.put_bucket_notification_configuration()
        .bucket(DEMO_BUCKET)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(intake_arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .build()?,
                )
                .build(),
        )
        .send()
        .await
        .context("PutBucketNotificationConfiguration")?;
    Ok((intake, work))
}

/// Runs the main job.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let emu = start_emulator().await?;
    println!(
        "emulator      {} (KVS, S3, SQS, STS; region {})",
        emu.url(),
        emu.region()
    );
    let config = emu.sdk_config();
    let (intake, work) = wire_queues(&config).await?;
    println!(
        "bucket        s3://{DEMO_BUCKET} notifies {intake}\nwork queue    {work} (FIFO, group = stream; DLQ after 3 receives)"
    );

    let mut cfg = WorkerConfig::new(
        &work,
        Route::template(TEMPLATE).map_err(anyhow::Error::msg)?,
    );
    cfg.intake_queue_url = Some(intake);
    cfg.create_streams = Some(24);
    cfg.concurrency = args.concurrency;
    cfg.pacing = args.pace;
    cfg.allow_http = true;
    let sessions = Sessions::new(
        PutMediaClientBuilder::new()
            .with_sdk_config(config.clone())
            .with_allow_http(true),
    )?;
    let worker = Arc::new(Worker::new(cfg, &config, sessions));
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.clone().run(stop.clone()));
    println!(
        "worker        --stream-template '{TEMPLATE}' --create-streams --concurrency {}",
        args.concurrency
    );

    // Clips recorded one after another per prefix (creation_time), uploaded all at once.
    let now = SystemTime::now();
    let mut uploads = Vec::new();
    for (p, prefix) in args.prefixes.iter().enumerate() {
        for i in 0..args.per_prefix {
            let recorded = now - Duration::from_secs(600) + Duration::from_secs(u64::from(i) * 60);
            let clip = make_clip(args.seconds, p as u32 * args.per_prefix + i, recorded).await?;
            uploads.push((format!("{prefix}/clip {}.mp4", i + 1), clip));
        }
    }
    let s3 = aws_sdk_s3::Client::new(&config);
    let uploaded = Instant::now();
    for (key, clip) in &uploads {
        s3.put_object()
            .bucket(DEMO_BUCKET)
            .key(key)
            .body(clip.clone().into())
            .send()
            .await
            .with_context(|| format!("PutObject({key})"))?;
        println!(
            "uploaded      s3://{DEMO_BUCKET}/{key} ({} KiB)",
            clip.len() / 1024
        );
    }

    let deadline = Instant::now() + Duration::from_secs(120 + 10 * uploads.len() as u64);
    let jobs = loop {
        let jobs = worker.jobs();
        let done = jobs
            .iter()
            .filter(|j| j.state == JobState::Succeeded)
            .count();
        let bad: Vec<_> = jobs
            .iter()
            .filter(|j| matches!(j.state, JobState::DeadLettered | JobState::Retrying))
            .collect();
        ensure!(bad.is_empty(), "a job failed: {:?}", bad[0]);
        println!(
            "t+{:>4.1}s       {done}/{} objects streamed, {} running",
            uploaded.elapsed().as_secs_f64(),
            uploads.len(),
            jobs.iter().filter(|j| j.state == JobState::Running).count()
        );
        if done == uploads.len() {
            break jobs;
        }
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for the worker"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    println!("\nstream        objects  fragments  stored  keyframe-first  in upload order");
    let mut per_stream: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for j in &jobs {
        per_stream
            .entry(j.stream.clone().unwrap_or_default())
            .or_default()
            .push(j);
    }
    let mut total = 0;
    for (stream, objs) in &per_stream {
        let stored = read_back(&config, stream).await?;
        let expected: u64 = objs.iter().map(|j| j.fragments).sum();
        let aligned = stored
            .iter()
            .filter(|f| f.keyframe_first == Some(true))
            .count();
        // Producer times of each object's fragments follow its recording time (upload order).
        let ordered = stored
            .windows(2)
            .all(|w| w[0].producer_ms < w[1].producer_ms);
        println!(
            "{stream:<13} {:>7}  {expected:>9}  {:>6}  {aligned:>14}  {}",
            objs.len(),
            stored.len(),
            if ordered { "yes" } else { "NO" }
        );
        ensure!(
            stored.len() as u64 == expected,
            "{stream}: {} fragments stored, {expected} expected",
            stored.len()
        );
        ensure!(
            ordered,
            "{stream}: objects were not streamed in upload order"
        );
        ensure!(
            aligned == stored.len(),
            "{stream}: a fragment does not start with a keyframe"
        );
        total += stored.len();
    }
    println!(
        "\nOK: {} objects from {} prefixes into {} streams, {total} fragments, each stored once and keyframe-aligned, in {:.1} s",
        uploads.len(),
        args.prefixes.len(),
        per_stream.len(),
        started.elapsed().as_secs_f64()
    );
    for stream in per_stream.keys() {
        println!("watch         {}", emu.console_url(stream));
    }
    if args.keep_running {
        println!(
            "keep running: the emulator stays up at {} until Ctrl-C",
            emu.url()
        );
        examples_support::shutdown_signal().await;
    }
    stop.cancel();
    running.await?;
    emu.shutdown().await;
    Ok(())
}
