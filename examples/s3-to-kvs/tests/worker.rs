//! `s3-to-kvs worker` against the emulator: real processes, real SQS/S3/KVS SDK clients, real
//! ffmpeg. The crash test kills a worker with SIGKILL mid-object and proves that a second worker
//! finishes the object with every fragment stored exactly once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use kvs_emulator::Emulator;
use kvs_test_support::emu::aws_env;
use kvs_test_support::media::Clip;
use kvs_test_support::sqs::create_queue;

const BUCKET: &str = "uploads";

/// A `seconds`-long 320x240 H.264 + AAC MP4 recorded an hour ago (its `creation_time`).
fn clip(seconds: u32) -> Bytes {
    // ISO 8601, as phones write it.
    let created = "2024-05-01T12:00:00.000000Z";
    Clip::new(seconds)
        .with_pattern("testsrc2")
        .with_audio(true)
        .with_args(&["-metadata".to_owned(), format!("creation_time={created}")])
        .with_extension("mp4")
        .bytes()
        .into()
}

struct Env {
    emu: Emulator,
    sqs: aws_sdk_sqs::Client,
}

impl Env {
    async fn start() -> Env {
        let emu = Emulator::builder()
            .with_persist_delay(Duration::from_millis(20))
            .start()
            .await
            .unwrap();
        emu.create_bucket(BUCKET).await.unwrap();
        Env {
            sqs: aws_sdk_sqs::Client::new(&emu.sdk_config()),
            emu,
        }
    }

    async fn fifo(&self, name: &str) -> String {
        create_queue(&self.sqs, name, &[(QueueAttributeName::FifoQueue, "true")]).await
    }

    async fn send(&self, queue: &str, group: &str, key: &str) {
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(serde_json::json!({ "bucketName": BUCKET, "keyName": key }).to_string())
            .message_group_id(group)
            .message_deduplication_id(format!("{group}-{key}"))
            .send()
            .await
            .unwrap();
    }

    async fn messages_left(&self, queue: &str) -> u64 {
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        a.values().map(|v| v.parse::<u64>().unwrap_or(0)).sum()
    }

    fn worker(&self, queue: &str, stream: &str, pace: &str) -> std::process::Child {
        self.worker_with(queue, stream, pace, &[])
    }

    /// [`worker`](Self::worker) with more (or overriding) environment variables.
    fn worker_with(
        &self,
        queue: &str,
        stream: &str,
        pace: &str,
        extra: &[(&str, &str)],
    ) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_s3-to-kvs"))
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(aws_env(&self.emu))
            .env("QUEUE_URL", queue)
            // No stream name: `extra` sets STREAM_TEMPLATE.
            .envs((!stream.is_empty()).then_some(("STREAM_NAME", stream)))
            .env("CREATE_STREAMS", "true")
            .env("VISIBILITY_SECONDS", "4")
            .env("PACE", pace)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    async fn wait_until(&self, what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn producer_times(emu: &Emulator, stream: &str) -> Vec<u64> {
    emu.fragments(stream)
        .iter()
        .filter(|f| f.persisted)
        .map(|f| f.producer_timestamp_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_object_is_finished_by_the_next_with_every_fragment_once() {
    let env = Env::start().await;
    env.emu
        .put_object(BUCKET, "cam/long.mp4", clip(16))
        .await
        .unwrap();

    // A clean run into a reference stream: the fragments the object makes.
    let clean_q = env.fifo("clean.fifo").await;
    env.send(&clean_q, "ref", "cam/long.mp4").await;
    let mut clean = env.worker(&clean_q, "ref", "fast");
    env.wait_until(
        "the clean run is done",
        Duration::from_secs(90),
        async || env.messages_left(&clean_q).await == 0,
    )
    .await;
    clean.kill().unwrap();
    clean.wait().unwrap();
    let reference = producer_times(&env.emu, "ref");
    assert!(
        reference.len() >= 6,
        "a 16 s clip makes ~8 fragments: {reference:?}"
    );

    // Worker A streams at native rate and is killed (SIGKILL: no cleanup) mid-object.
    let q = env.fifo("work.fifo").await;
    env.send(&q, "crash", "cam/long.mp4").await;
    let mut a = env.worker(&q, "crash", "realtime");
    env.wait_until(
        "A stored 3 fragments",
        Duration::from_secs(60),
        async || producer_times(&env.emu, "crash").len() >= 3,
    )
    .await;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let partial = producer_times(&env.emu, "crash").len();
    assert!(partial < reference.len(), "A was killed mid-object");

    // Worker B gets the message back after its visibility timeout and finishes it.
    let mut b = env.worker(&q, "crash", "fast");
    env.wait_until(
        "B finished and deleted the message",
        Duration::from_secs(90),
        async || env.messages_left(&q).await == 0,
    )
    .await;
    b.kill().unwrap();
    b.wait().unwrap();

    let got = producer_times(&env.emu, "crash");
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "a fragment was stored twice: {got:?}"
    );
    assert_eq!(
        unique,
        reference.iter().copied().collect::<BTreeSet<u64>>(),
        "every fragment of the object exactly once (A stored {partial})"
    );
    let all = env.emu.fragments("crash");
    assert!(all.iter().all(|f| f.persisted), "{} stored", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_media_and_missing_objects_are_dead_lettered_at_once_with_the_reason() {
    let env = Env::start().await;
    env.emu
        .put_object(
            BUCKET,
            "cam/notes.mp4",
            Bytes::from_static(b"not a video at all"),
        )
        .await
        .unwrap();
    let dlq = env.fifo("dlq.fifo").await;
    let dlq_arn = env
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let q = env.fifo("dl-work.fifo").await;
    env.sqs
        .set_queue_attributes()
        .queue_url(&q)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5 }).to_string(),
        )
        .send()
        .await
        .unwrap();
    env.send(&q, "dl", "cam/notes.mp4").await;
    env.send(&q, "dl", "cam/missing.mp4").await;
    let mut w = env.worker(&q, "dl", "fast");
    env.wait_until(
        "both messages left the work queue",
        Duration::from_secs(60),
        async || env.messages_left(&q).await == 0,
    )
    .await;
    w.kill().unwrap();
    w.wait().unwrap();
    let got = env
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 2, "{got:?}");
    let reasons: Vec<String> = got
        .iter()
        .map(|m| {
            m.message_attributes.as_ref().unwrap()["Reason"]
                .string_value()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cam/missing.mp4: no such object")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("cam/notes.mp4")),
        "{reasons:?}"
    );
    assert!(env.emu.fragments("dl").is_empty());
}

/// The ffmpeg processes whose parent is `pid` (from /proc: `PID (COMM) STATE PPID ...`).
fn ffmpeg_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if head.ends_with("(ffmpeg") && ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Sends SIGTERM to `pid` (what ECS and Kubernetes send on scale-in).
#[allow(unsafe_code)]
fn sigterm(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// True when `pid` is gone: no such process, a zombie, or the pid reused by something other
/// than ffmpeg.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let (head, rest) = stat.rsplit_once(')').unwrap_or((&stat, ""));
            !head.ends_with("(ffmpeg") || rest.split_whitespace().next() == Some("Z")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_receiving_and_returns_what_is_in_flight_within_the_drain_time() {
    const DRAIN_SECONDS: u64 = 4;
    let env = Env::start().await;
    env.emu
        .put_object(BUCKET, "cam/long.mp4", clip(20))
        .await
        .unwrap();
    let q = env.fifo("drain.fifo").await;
    env.send(&q, "drain", "cam/long.mp4").await;
    // A long visibility timeout: the message is visible right after the exit only if the worker
    // returned it (visibility 0), not because its timeout ran out.
    let drain = DRAIN_SECONDS.to_string();
    let mut w = env.worker_with(
        &q,
        "drain",
        "realtime",
        &[("DRAIN_SECONDS", &drain), ("VISIBILITY_SECONDS", "120")],
    );
    let pid = w.id();
    env.wait_until(
        "the worker stored 2 fragments",
        Duration::from_secs(60),
        async || producer_times(&env.emu, "drain").len() >= 2,
    )
    .await;
    let ffmpeg = ffmpeg_children(pid);
    assert!(
        !ffmpeg.is_empty(),
        "the worker streams through an ffmpeg child"
    );

    sigterm(pid);
    let signalled = Instant::now();
    // Sent after the signal: the worker's last long poll, still open, may take it (as SQS would
    // hand it to that open poll), but hands it straight back instead of working on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.send(&q, "later", "cam/long.mp4").await;

    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(DRAIN_SECONDS + 10) {
            w.kill().unwrap();
            panic!("the worker did not exit within the drain time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took < Duration::from_secs(DRAIN_SECONDS + 3),
        "exit {took:?} after SIGTERM, drain is {DRAIN_SECONDS} s"
    );
    for p in &ffmpeg {
        assert!(process_gone(*p), "ffmpeg {p} outlived its worker");
    }
    assert!(ffmpeg_children(pid).is_empty());

    // A 20 s object at native rate cannot finish within the drain: its message is back at once.
    let stored = producer_times(&env.emu, "drain");
    assert!(stored.len() < 10, "stopped mid-object: {stored:?}");
    let left = env.emu.queue_messages(&q);
    assert_eq!(left.len(), 2, "{left:?}");
    let first = left
        .iter()
        .find(|m| m.group_id.as_deref() == Some("drain"))
        .unwrap();
    assert!(!first.in_flight, "returned with visibility 0: {first:?}");
    assert_eq!(first.receive_count, 1);
    let later = left
        .iter()
        .find(|m| m.group_id.as_deref() == Some("later"))
        .unwrap();
    assert!(
        later.receive_count <= 1 && !later.in_flight,
        "received after SIGTERM and kept: {later:?}"
    );
    let all = env.emu.fragments("drain");
    assert!(
        all.iter().all(|f| f.persisted),
        "what was sent before the stop was persisted: {} stored, {} persisted",
        all.len(),
        stored.len()
    );
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`); 0 when the process is gone.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The proportional set size in KiB (shared pages divided among their users, so a sum over
/// processes does not count ffmpeg's libraries once per process); 0 when the process is gone.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The worker's figures (docs/performance.md, "Worker"): objects per minute for many short
/// uploads, upload -> first persisted fragment, and peak memory with `CONCURRENCY` objects in
/// flight. Each object has its own stream, so its first persisted fragment is the first one
/// its stream holds. It panics instead of printing when an object was not streamed completely
/// or fewer objects than asked were ever in flight at once.
///
/// `FIGURES_OBJECTS=24 FIGURES_CONCURRENCY=4 cargo test -p s3-to-kvs --test worker -- --ignored --nocapture figures`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on purpose, see docs/performance.md"]
async fn figures() {
    let var = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .map_or(default, |v| v.parse().expect(name))
    };
    let objects = var("FIGURES_OBJECTS", 24);
    let concurrency = var("FIGURES_CONCURRENCY", 4);
    let seconds = var("FIGURES_SECONDS", 2) as u32;
    assert!(objects >= concurrency && concurrency >= 1);
    let env = Env::start().await;
    let media = clip(seconds);
    let q = env.fifo("figures.fifo").await;
    let conc = concurrency.to_string();
    let mut w = env.worker_with(
        &q,
        "",
        "fast",
        &[
            ("STREAM_TEMPLATE", "{key_dir}"),
            ("CONCURRENCY", &conc),
            ("VISIBILITY_SECONDS", "120"),
            ("RUST_LOG", "warn"),
        ],
    );
    let pid = w.id();
    let first_persisted = |stream: &str| env.emu.fragments(stream).iter().any(|f| f.persisted);

    // Idle latency: one object at a time, each into a fresh stream.
    let mut idle = Vec::new();
    for i in 0..3 {
        let (key, stream) = (format!("idle{i}/clip.mp4"), format!("idle{i}"));
        let t0 = Instant::now();
        env.emu
            .put_object(BUCKET, &key, media.clone())
            .await
            .unwrap();
        env.send(&q, &stream, &key).await;
        env.wait_until(
            "the idle object's first fragment",
            Duration::from_secs(60),
            async || first_persisted(&stream),
        )
        .await;
        idle.push(t0.elapsed());
        env.wait_until(
            "the idle object is done",
            Duration::from_secs(60),
            async || env.messages_left(&q).await == 0,
        )
        .await;
    }

    // A burst: every upload at once; each object into its own stream.
    let start = Instant::now();
    let mut uploaded = Vec::new();
    for i in 0..objects {
        let (key, stream) = (format!("s{i}/clip.mp4"), format!("s{i}"));
        env.emu
            .put_object(BUCKET, &key, media.clone())
            .await
            .unwrap();
        env.send(&q, &stream, &key).await;
        uploaded.push((stream, Instant::now()));
    }
    let mut first: Vec<Option<Duration>> = vec![None; objects];
    let (mut peak_children, mut peak_total_kib, mut peak_pss_kib) = (0usize, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for (i, (stream, t)) in uploaded.iter().enumerate() {
            if first[i].is_none() && first_persisted(stream) {
                first[i] = Some(t.elapsed());
            }
        }
        let children = ffmpeg_children(pid);
        let total = status_kib(pid, "VmRSS")
            + children
                .iter()
                .map(|c| status_kib(*c, "VmRSS"))
                .sum::<u64>();
        peak_children = peak_children.max(children.len());
        peak_total_kib = peak_total_kib.max(total);
        let pss = pss_kib(pid) + children.iter().map(|c| pss_kib(*c)).sum::<u64>();
        peak_pss_kib = peak_pss_kib.max(pss);
        if first.iter().all(Option::is_some) && env.messages_left(&q).await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the burst did not finish");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took = start.elapsed();
    let worker_hwm = status_kib(pid, "VmHWM");
    w.kill().unwrap();
    w.wait().unwrap();

    // Refuse to report a run that did not stream everything, or never had N in flight.
    for (stream, _) in &uploaded {
        let f = env.emu.fragments(stream);
        assert!(
            !f.is_empty() && f.iter().all(|f| f.persisted),
            "{stream}: {} fragments, not all persisted",
            f.len()
        );
    }
    assert!(
        env.emu.queue_messages(&q).is_empty(),
        "a message was not deleted"
    );
    assert_eq!(
        peak_children, concurrency,
        "{concurrency} objects were never in flight at once (at most {peak_children}): \
         use longer objects (FIGURES_SECONDS)"
    );
    assert!(worker_hwm > 0);

    let mut burst: Vec<Duration> = first.into_iter().flatten().collect();
    burst.sort();
    idle.sort();
    let per_minute = objects as f64 / took.as_secs_f64() * 60.0;
    println!(
        "{objects} uploads of {seconds} s 320x240 H.264+AAC, --concurrency {concurrency}, fast pacing, \
         each object into its own stream"
    );
    println!(
        "throughput: {objects} objects in {:.1} s = {per_minute:.0} objects/minute (one worker process)",
        took.as_secs_f64()
    );
    println!(
        "upload -> first persisted fragment, idle worker: p50 {:.2} s, max {:.2} s (n={})",
        percentile(&idle, 0.5).as_secs_f64(),
        idle.last().unwrap().as_secs_f64(),
        idle.len()
    );
    println!(
        "upload -> first persisted fragment, burst of {objects}: p50 {:.2} s, max {:.2} s",
        percentile(&burst, 0.5).as_secs_f64(),
        burst.last().unwrap().as_secs_f64()
    );
    println!(
        "memory, {peak_children} objects in flight: worker peak RSS (VmHWM) {:.1} MiB; \
         worker + ffmpeg children, peak of samples every 25 ms: RSS {:.1} MiB, PSS {:.1} MiB",
        worker_hwm as f64 / 1024.0,
        peak_total_kib as f64 / 1024.0,
        peak_pss_kib as f64 / 1024.0
    );
}
